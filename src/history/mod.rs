//! Uptime and latency history: kept in memory per probe for the status page (hourly buckets
//! for a day, daily buckets for 90 days, the last failure, the level and since when) and
//! written to an SQLite store by one background task, so probes never wait on the disk. At
//! start the store is read back, so uptime survives restarts.

pub mod buckets;
pub mod settings;
mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::warn;

use crate::config;
use crate::poison::{LockUnpoisoned, RwLockUnpoisoned};
use crate::probe::Level;
use crate::state::Outcome;
use buckets::Buckets;
pub use store::StoredRun;

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The time `ms` milliseconds after the Unix epoch.
pub fn from_unix_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// The stored code of a level.
fn level_code(level: Level) -> i64 {
    match level {
        Level::Up => 0,
        Level::Degraded => 1,
        Level::Down => 2,
    }
}

fn level_of(code: i64) -> Option<Level> {
    match code {
        0 => Some(Level::Up),
        1 => Some(Level::Degraded),
        2 => Some(Level::Down),
        _ => None,
    }
}

/// Why the history store is not there.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum HistoryError {
    /// It could not be opened or read back (the message says which file and why).
    #[error("{0}")]
    Open(String),
    /// Its writer stopped.
    #[error("the history store stopped")]
    Stopped,
    /// Reading runs back failed.
    #[error("reading the history store: {0}")]
    Query(String),
}

impl HistoryError {
    /// A bounded label for the error.
    pub fn reason(&self) -> &'static str {
        match self {
            HistoryError::Open(_) => "open",
            HistoryError::Stopped => "stopped",
            HistoryError::Query(_) => "query",
        }
    }
}

/// The most recent DOWN run of a probe.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// When it finished (Unix ms).
    pub at_ms: i64,
    /// Its reason (`timeout`, `status`, ...).
    pub reason: String,
    /// Its message.
    pub detail: String,
}

/// What the history knows about one probe.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProbeHistory {
    /// Runs by hour and by day.
    pub buckets: Buckets,
    /// The last DOWN run.
    pub last_failure: Option<Failure>,
    /// The level of the last run and since when (Unix ms) runs have ended in it.
    pub level: Option<(Level, i64)>,
}

impl ProbeHistory {
    fn record(&mut self, at_ms: i64, outcome: &Outcome) {
        self.buckets.add(at_ms, outcome.level, outcome.duration.as_secs_f64());
        if outcome.level == Level::Down && self.last_failure.as_ref().is_none_or(|f| f.at_ms <= at_ms) {
            self.last_failure = Some(Failure {
                at_ms,
                reason: outcome.reason.map_or("internal", |r| r.as_str()).to_string(),
                detail: outcome.detail.clone(),
            });
        }
        match self.level {
            Some((level, _)) if level == outcome.level => {}
            _ => self.level = Some((outcome.level, at_ms)),
        }
    }

    /// Adds a history read from the store (older than anything recorded since the start).
    fn merge_loaded(&mut self, loaded: ProbeHistory) {
        self.buckets.merge(&loaded.buckets);
        if let Some(failure) = loaded.last_failure
            && self.last_failure.as_ref().is_none_or(|f| f.at_ms < failure.at_ms)
        {
            self.last_failure = Some(failure);
        }
        match (self.level, loaded.level) {
            (None, loaded) => self.level = loaded,
            // Still in the level it was in when vigil stopped: it has been since then.
            (Some((now, since)), Some((before, before_since))) if now == before => {
                self.level = Some((now, since.min(before_since)));
            }
            _ => {}
        }
    }
}

/// Whether the store is open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Opening the store and reading it back.
    Opening,
    /// Open; its history is loaded.
    Ready,
    /// The store could not be opened; history is kept in memory only.
    Failed(String),
}

/// A run on its way to the store.
#[derive(Debug)]
struct Run {
    probe: Arc<str>,
    at_ms: i64,
    level: Level,
    latency_us: i64,
    reason: Option<&'static str>,
    detail: Option<String>,
}

enum Message {
    /// Write what is buffered, then answer.
    Flush(oneshot::Sender<()>),
    /// Delete what is older than the retention at this time (Unix ms), then answer.
    Prune(i64, oneshot::Sender<()>),
    /// Write what is buffered, answer, and stop.
    Close(oneshot::Sender<()>),
}

/// Runs that can wait for the writer before new ones are dropped (and counted in a warning):
/// about a minute of 10,000 probes at a 15 s interval.
const QUEUE: usize = 65_536;

/// Runs recorded and not yet taken by the writer. A buffer rather than the channel: the writer
/// takes them once a second (and before a flush, prune or close), so a run costs a push, not a
/// wake-up of the writer's task.
type Pending = Arc<Mutex<Vec<Run>>>;

/// One probe's entry in the history (entries are never replaced, so it stays the one).
#[derive(Clone)]
pub struct Recorder {
    name: Arc<str>,
    entry: Arc<Mutex<ProbeHistory>>,
}

/// The history of every probe, and the handle on the store's writer.
pub struct History {
    probes: RwLock<HashMap<String, Arc<Mutex<ProbeHistory>>>>,
    sender: mpsc::Sender<Message>,
    pending: Pending,
    ready: watch::Receiver<Readiness>,
    pool: sqlx::SqlitePool,
    raw_retention: Duration,
    dropped: std::sync::atomic::AtomicU64,
    write_failures: prometheus_client::metrics::counter::Counter,
}

impl History {
    /// Opens the store described by `config` in a background task (which reads the stored
    /// history back into memory before it writes anything). Must run inside a Tokio runtime.
    pub fn open(config: &config::History) -> Arc<History> {
        // Without a file nothing survives a restart, so the store only serves recent runs to the
        // detail view: keep 15 minutes of them and no more than two hours of aggregates (the page's
        // uptime figures come from memory), or a large config would grow without bound.
        let mut config = config.clone();
        if config.path.is_none() {
            config.raw_retention = config.raw_retention.min(Duration::from_secs(15 * 60));
            config.hourly_retention = config.hourly_retention.min(Duration::from_secs(2 * 3600));
        }
        let config = &config;
        let (sender, receiver) = mpsc::channel(16);
        let pending = Pending::default();
        let (ready_tx, ready) = watch::channel(Readiness::Opening);
        let pool = store::pool(config.path.as_deref());
        let history = Arc::new(History {
            probes: RwLock::new(HashMap::new()),
            sender,
            pending: pending.clone(),
            ready,
            pool: pool.clone(),
            raw_retention: config.raw_retention,
            dropped: Default::default(),
            write_failures: Default::default(),
        });
        tokio::spawn(store::run(
            pool,
            config.clone(),
            receiver,
            pending,
            Arc::downgrade(&history),
            ready_tx,
            history.write_failures.clone(),
        ));
        history
    }

    /// Counts writes to the store that failed (`vigil_history_write_failures_total`).
    pub fn write_failures(&self) -> prometheus_client::metrics::counter::Counter {
        self.write_failures.clone()
    }

    /// Waits until the store is open and its history loaded; an error says why it could not be.
    pub async fn ready(&self) -> Result<(), HistoryError> {
        let mut ready = self.ready.clone();
        match ready.wait_for(|r| *r != Readiness::Opening).await {
            Ok(r) => match &*r {
                Readiness::Failed(e) => Err(HistoryError::Open(e.clone())),
                _ => Ok(()),
            },
            Err(_) => Err(HistoryError::Stopped),
        }
    }

    fn entry(&self, name: &str) -> Arc<Mutex<ProbeHistory>> {
        if let Some(entry) = self.probes.read_unpoisoned().get(name) {
            return entry.clone();
        }
        self.probes
            .write_unpoisoned()
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Records a finished run: in memory at once, in the store within a second. Never waits:
    /// when the store falls a minute behind, runs are dropped from the store (not from memory)
    /// and a warning says how many.
    pub fn record(&self, probe: &str, outcome: &Outcome) {
        self.record_with(&self.recorder(probe), outcome);
    }

    /// A probe's way into the history, looked up once for all its runs.
    pub fn recorder(&self, probe: &str) -> Recorder {
        Recorder {
            name: Arc::from(probe),
            entry: self.entry(probe),
        }
    }

    /// [`History::record`] through a [`Recorder`]: no lookup, no allocation of the name.
    pub fn record_with(&self, recorder: &Recorder, outcome: &Outcome) {
        let at_ms = unix_ms(outcome.at);
        lock(&recorder.entry).record(at_ms, outcome);
        let run = Run {
            probe: recorder.name.clone(),
            at_ms,
            level: outcome.level,
            latency_us: i64::try_from(outcome.duration.as_micros()).unwrap_or(i64::MAX),
            reason: outcome.reason.map(|r| r.as_str()),
            detail: (outcome.level != Level::Up && !outcome.detail.is_empty())
                .then(|| outcome.detail.chars().take(300).collect()),
        };
        let queued = {
            let mut pending = self.pending.lock_unpoisoned();
            let room = pending.len() < QUEUE;
            if room {
                pending.push(run);
            }
            room
        };
        if !queued {
            let dropped = self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                warn!(dropped, "the history store is behind; runs were not stored");
            }
        }
    }

    /// A copy of one probe's history (empty if it has none).
    pub fn probe(&self, name: &str) -> ProbeHistory {
        let entry = self.probes.read_unpoisoned().get(name).cloned();
        entry.map(|e| lock(&e).clone()).unwrap_or_default()
    }

    /// Runs the store holds for `probe` since `since` (newest first, at most `limit`).
    pub async fn runs(&self, probe: &str, since: SystemTime, limit: u32) -> Result<Vec<StoredRun>, HistoryError> {
        self.ready().await?;
        store::runs(&self.pool, probe, unix_ms(since), limit)
            .await
            .map_err(|e| HistoryError::Query(e.to_string()))
    }

    /// How long single runs are kept.
    pub fn raw_retention(&self) -> Duration {
        self.raw_retention
    }

    /// Waits until every run recorded so far is in the store.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.sender.send(Message::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Deletes what is past its retention at `now` (the writer also does so every few minutes).
    pub async fn prune(&self, now: SystemTime) {
        let (tx, rx) = oneshot::channel();
        if self.sender.send(Message::Prune(unix_ms(now), tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Writes what is buffered and stops the writer; runs recorded later stay in memory only.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.sender.send(Message::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
        self.pool.close().await;
    }

    fn merge_loaded(&self, loaded: HashMap<String, ProbeHistory>) {
        for (name, history) in loaded {
            lock(&self.entry(&name)).merge_loaded(history);
        }
    }
}

fn lock(entry: &Mutex<ProbeHistory>) -> MutexGuard<'_, ProbeHistory> {
    entry.lock_unpoisoned()
}
