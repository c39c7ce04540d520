//! The scheduler owns timing: one task per probe (interval, start spread), the global
//! concurrency limit, per-attempt timeouts, retries, latency levels, and recording outcomes.
//! Probe kinds only make single attempts.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Semaphore, broadcast};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::{Instrument, info, warn};

use crate::config::{Config, ProbeDef, Timing};
use crate::history::{History, unix_ms};
use crate::live;
use crate::poison::LockUnpoisoned;
use crate::probe::{CheckContext, Level, Observed, Probe, Reason, Verdict};
use crate::state::{Outcome, ProbeHandle, State, lock};

mod workers;

/// Applies the latency thresholds to an attempt's verdict.
pub fn apply_latency(mut verdict: Verdict, took: Duration, timing: &Timing) -> Verdict {
    let show = |d: Duration| format!("{:.3}s", d.as_secs_f64());
    if verdict.level != Level::Down && took > timing.down_after {
        verdict.level = Level::Down;
        verdict.reason = Some(Reason::Latency);
        verdict.detail = format!("took {} (down_after {})", show(took), show(timing.down_after));
    } else if verdict.level == Level::Up && took > timing.degraded_after {
        verdict.level = Level::Degraded;
        verdict.reason = Some(Reason::Latency);
        verdict.detail = format!("took {} (degraded_after {})", show(took), show(timing.degraded_after));
    }
    verdict
}

/// One attempt under a timeout. A panic fails this attempt alone; at the timeout the attempt is
/// dropped, and what it had observed until then stays in `obs`.
async fn attempt(
    probe: &Probe,
    target: &str,
    timeout: Duration,
    context: &CheckContext,
    obs: &mut Observed,
) -> (Verdict, Duration) {
    use futures::FutureExt;
    let started = Instant::now();
    *obs = probe.observed();
    // Boxed: an attempt's future is large (every kind's state machine, the HTTP client's
    // buffers), and the task of each probe would otherwise hold that much between runs too.
    let run = std::panic::AssertUnwindSafe(Box::pin(crate::probe::with_deadline(
        started + timeout,
        probe.check(target, context, obs),
    )))
    .catch_unwind();
    let result = tokio::time::timeout(timeout, run).await;
    let verdict = match result {
        Ok(Ok(verdict)) => verdict,
        Ok(Err(_)) => Verdict::down(Reason::Internal, "the probe panicked (a bug in vigil)"),
        Err(_) => {
            obs.interrupted();
            obs.timed_out().unwrap_or_else(|| {
                Verdict::down(
                    Reason::Timeout,
                    format!("no result within {}", humantime::format_duration(timeout)),
                )
            })
        }
    };
    let took = verdict.latency.unwrap_or_else(|| started.elapsed());
    (verdict, took)
}

/// The grid, in milliseconds, that probes' first runs (and so their later ones) fall on.
const START_SLOT_MS: u64 = 10;

/// Runs `probe` against `target` with `timing`'s timeout, retries and thresholds.
pub async fn execute(
    probe: &Probe,
    target: &str,
    timing: &Timing,
    limiter: Option<&Semaphore>,
    context: &CheckContext,
) -> Outcome {
    let mut retries = 0;
    let mut obs = probe.observed();
    loop {
        let permit = match limiter {
            Some(l) => l.acquire().await.ok(),
            None => None,
        };
        let (verdict, took) = attempt(probe, target, timing.timeout, context, &mut obs).await;
        drop(permit);
        let verdict = apply_latency(verdict, took, timing);
        if verdict.level == Level::Down && retries < timing.retries {
            retries += 1;
            tokio::time::sleep(timing.retry_delay).await;
            continue;
        }
        return Outcome {
            level: verdict.level,
            reason: verdict.reason,
            detail: verdict.detail,
            duration: took,
            observations: obs,
            at: SystemTime::now(),
            retries,
            pending: verdict.pending,
        };
    }
}

/// What is wrong with a `--shard` value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// Not `i/n`.
    #[error("`{0}` is not i/n (e.g. 0/3)")]
    Form(String),
    /// `i` is not a number.
    #[error("`{0}` is not a shard index")]
    Index(String),
    /// `n` is not a number.
    #[error("`{0}` is not a shard count")]
    Count(String),
    /// `i` is not below `n`.
    #[error("shard index must be below the count (got {index}/{count})")]
    OutOfRange {
        /// `i`.
        index: u32,
        /// `n`.
        count: u32,
    },
}

/// `--shard i/n`: this replica runs the probes whose name hashes to `i` modulo `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This replica's index, from 0.
    pub index: u32,
    /// How many replicas share the probes.
    pub count: u32,
}

impl Shard {
    /// Parses `i/n`.
    pub fn parse(text: &str) -> Result<Shard, ShardError> {
        let (i, n) = text.split_once('/').ok_or_else(|| ShardError::Form(text.to_string()))?;
        let index: u32 = i.trim().parse().map_err(|_| ShardError::Index(i.to_string()))?;
        let count: u32 = n.trim().parse().map_err(|_| ShardError::Count(n.to_string()))?;
        if count == 0 || index >= count {
            return Err(ShardError::OutOfRange { index, count });
        }
        Ok(Shard { index, count })
    }

    /// Whether this shard runs the probe named `name` (FNV-1a: stable across versions and hosts).
    pub fn owns(&self, name: &str) -> bool {
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        hash % u64::from(self.count) == u64::from(self.index)
    }
}

struct Task {
    fingerprint: u64,
    handle: JoinHandle<()>,
}

/// Where a finished run goes besides the probe's state.
#[derive(Clone)]
pub struct Sinks {
    /// The uptime history and its store.
    pub history: Arc<History>,
    /// Live updates for the status page.
    pub live: broadcast::Sender<live::Event>,
}

/// Runs the self-scheduled probes of the current config.
pub struct Scheduler {
    state: Arc<State>,
    workers: workers::Workers,
    sinks: Sinks,
    shard: Option<Shard>,
    inner: Mutex<Inner>,
}

struct Inner {
    tasks: HashMap<String, Task>,
    limiter: Arc<Semaphore>,
    concurrency: usize,
}

/// What a config change did to the running probes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Probes started.
    pub started: usize,
    /// Probes restarted with a changed definition.
    pub restarted: usize,
    /// Probes stopped.
    pub stopped: usize,
    /// Probes left running.
    pub unchanged: usize,
}

impl Scheduler {
    /// A scheduler with no probes; its probe threads start now (see [`workers`]).
    pub fn new(state: Arc<State>, context: CheckContext, shard: Option<Shard>, sinks: Sinks) -> Self {
        Self {
            state,
            workers: workers::Workers::start(&context),
            sinks,
            shard,
            inner: Mutex::new(Inner {
                tasks: HashMap::new(),
                limiter: Arc::new(Semaphore::new(1)),
                concurrency: 0,
            }),
        }
    }

    /// Makes the running probes match `config`: starts new ones, restarts changed ones, stops
    /// removed ones (their series vanish) and leaves the rest running undisturbed.
    pub fn apply(&self, config: &Config) -> Applied {
        let mut inner = self.inner.lock_unpoisoned();
        let mut applied = Applied::default();
        let restart_all = inner.concurrency != config.concurrency;
        if restart_all {
            inner.limiter = Arc::new(Semaphore::new(config.concurrency));
            inner.concurrency = config.concurrency;
        }
        let owned: Vec<&Arc<ProbeDef>> = config
            .probes
            .iter()
            .filter(|p| self.shard.is_none_or(|s| s.owns(&p.name)))
            .collect();
        let names: HashSet<&str> = owned.iter().map(|p| p.name.as_str()).collect();
        inner.tasks.retain(|name, task| {
            let keep = names.contains(name.as_str());
            if !keep {
                task.handle.abort();
                applied.stopped += 1;
            }
            keep
        });
        self.state.retain(&names);
        self.state.set_detail(config.metrics.detail);
        // New probes start spread over up to one interval, at most ~1000 starts a second, so a
        // large config does not stampede its targets while a small one reports at once.
        let count = owned.len() as u64;
        let spread = |interval: Duration| interval.min(Duration::from_millis(count));
        for def in owned {
            let running = inner.tasks.get(&def.name);
            if let Some(task) = running {
                if task.fingerprint == def.fingerprint && !restart_all && !task.handle.is_finished() {
                    applied.unchanged += 1;
                    continue;
                }
                task.handle.abort();
                applied.restarted += 1;
            } else {
                applied.started += 1;
            }
            let handle = self.state.upsert(def);
            // Starts fall on 10 ms slots: the probes of one slot wake together at every
            // interval, so the runtime wakes a hundred times a second for 10,000 probes rather
            // than at each run (its wake-ups cost more than a run's own work).
            let delay = spread(def.timing.interval).mul_f64(fastrand::f64());
            let delay = Duration::from_millis(delay.as_millis() as u64 / START_SLOT_MS * START_SLOT_MS);
            let (probe, sinks, limiter) = (def.clone(), self.sinks.clone(), inner.limiter.clone());
            let task = self
                .workers
                .spawn(move |context| run_loop(probe, handle, sinks, limiter, context, delay));
            inner.tasks.insert(
                def.name.clone(),
                Task {
                    fingerprint: def.fingerprint,
                    handle: task,
                },
            );
        }
        applied
    }

    /// Stops every probe.
    pub fn stop(&self) {
        let mut inner = self.inner.lock_unpoisoned();
        for (_, task) in inner.tasks.drain() {
            task.handle.abort();
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn run_loop(
    def: Arc<ProbeDef>,
    handle: ProbeHandle,
    sinks: Sinks,
    limiter: Arc<Semaphore>,
    context: CheckContext,
    delay: Duration,
) {
    let name: Arc<str> = Arc::from(def.name.as_str());
    let recorder = sinks.history.recorder(&def.name);
    tokio::time::sleep(delay).await;
    let mut ticker = tokio::time::interval(def.timing.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let span = tracing::info_span!("probe", probe = %def.name, kind = %def.kind());
    loop {
        ticker.tick().await;
        // Boxed for the length of a run: inline, a run's state (its observations, the permit,
        // the retry timer) would stay in every probe's task between runs too.
        let outcome = Box::pin(execute(&def.probe, &def.target, &def.timing, Some(&limiter), &context))
            .instrument(span.clone())
            .await;
        if outcome.pending {
            // Nothing to judge yet: the probe stays pending on /metrics and the page.
            continue;
        }
        let (level, reason, detail) = (outcome.level, outcome.reason, outcome.detail.clone());
        let at_ms = unix_ms(outcome.at);
        sinks.history.record_with(&recorder, &outcome);
        let previous = lock(&handle).record(outcome);
        // Nobody listening is fine.
        let _ = sinks.live.send(live::Event {
            probe: name.clone(),
            level,
            at_ms,
        });
        if previous != Some(level) {
            let _enter = span.enter();
            let reason = reason.map(Reason::as_str).unwrap_or("");
            match (previous, level) {
                (None, Level::Up) => info!(level = %level, "first result"),
                (_, Level::Up) => info!(level = %level, "recovered"),
                (_, _) => warn!(level = %level, reason, detail = %detail, "level changed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_names() {
        let shards: Vec<Shard> = (0..3).map(|i| Shard { index: i, count: 3 }).collect();
        for n in 0..100 {
            let name = format!("probe-{n}");
            assert_eq!(shards.iter().filter(|s| s.owns(&name)).count(), 1);
        }
        assert!(Shard::parse("3/3").is_err());
        assert_eq!(Shard::parse("1/2"), Ok(Shard { index: 1, count: 2 }));
    }

    #[test]
    fn latency_levels() {
        let timing = Timing {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            degraded_after: Duration::from_secs(1),
            down_after: Duration::from_secs(5),
            retries: 0,
            retry_delay: Duration::from_secs(1),
        };
        let up = Verdict::up();
        assert_eq!(
            apply_latency(up.clone(), Duration::from_millis(500), &timing).level,
            Level::Up
        );
        let slow = apply_latency(up.clone(), Duration::from_secs(2), &timing);
        assert_eq!((slow.level, slow.reason), (Level::Degraded, Some(Reason::Latency)));
        let very = apply_latency(up, Duration::from_secs(6), &timing);
        assert_eq!((very.level, very.reason), (Level::Down, Some(Reason::Latency)));
        let failed = Verdict::down(Reason::Status, "500");
        assert_eq!(
            apply_latency(failed, Duration::from_secs(6), &timing).reason,
            Some(Reason::Status)
        );
    }

    #[tokio::test]
    async fn probes_run_on_their_own_threads_in_turn_and_stop_with_them() {
        let workers = workers::Workers::start(&CheckContext::default());
        assert_ne!(workers.len(), 0, "at least one probe thread");
        let mut seen = HashSet::new();
        for _ in 0..workers.len() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            workers.spawn(move |_| async move {
                let _ = tx.send(std::thread::current().name().map(String::from));
            });
            let name = rx.await.expect("the task ran").expect("a named thread");
            assert!(name.starts_with("vigil-probes-"), "ran on {name}");
            seen.insert(name);
        }
        assert_eq!(seen.len(), workers.len(), "one task per thread in turn: {seen:?}");

        // A task still running when the threads stop is dropped with them.
        struct Dropped(Option<tokio::sync::oneshot::Sender<()>>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                if let Some(tx) = self.0.take() {
                    let _ = tx.send(());
                }
            }
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let guard = Dropped(Some(tx));
        workers.spawn(move |_| async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        drop(workers);
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("the task was dropped when its thread stopped")
            .expect("dropped, not lost");
    }
}
