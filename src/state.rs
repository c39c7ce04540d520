//! Per-probe state: counters, the current level and since when, the last outcome, the values
//! last known, and the latency histogram. Written by the scheduler, read by `/metrics` and the
//! status page at scrape time.
//!
//! What alerting needs to survive a restart (the level and when it began, the streak of
//! failures, the last known certificate expiry and newest record) is kept in
//! `<state_dir>/probes.json`: read when a probe is first configured, written shortly after a
//! level changes and every 30 s otherwise, and at shutdown. So a restart of vigil neither ends
//! an incident nor starts a new one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::config::{ProbeDef, Timing};
use crate::history::{from_unix_ms, unix_ms};
use crate::poison::{LockUnpoisoned, RwLockUnpoisoned};
use crate::probe::{Carried, Kind, Level, Observed, Reason, Thresholds};

/// The result of one scheduled run (after retries and latency thresholds).
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Final level.
    pub level: Level,
    /// Why, when not UP.
    pub reason: Option<Reason>,
    /// Short message (no secrets).
    pub detail: String,
    /// Duration of the last attempt.
    pub duration: Duration,
    /// What the last attempt observed.
    pub observations: Observed,
    /// When the run finished.
    pub at: SystemTime,
    /// Extra attempts made (retries).
    pub retries: u32,
    /// Nothing to judge yet (see [`crate::probe::Verdict::pending`]): not recorded.
    pub pending: bool,
}

/// A latency histogram over a probe's own boundaries (cumulative buckets are computed when
/// encoded).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Upper bounds in seconds, ascending (`metrics.buckets`); +Inf is implied.
    pub bounds: Arc<[f64]>,
    /// Observations per bucket (not cumulative); the last slot is +Inf.
    pub counts: Box<[u64]>,
    /// Sum of observations (seconds).
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// An empty histogram over `bounds`.
    pub fn new(bounds: Arc<[f64]>) -> Self {
        let counts = vec![0; bounds.len() + 1].into_boxed_slice();
        Self {
            bounds,
            counts,
            sum: 0.0,
            count: 0,
        }
    }

    /// Adds one observation.
    pub fn observe(&mut self, seconds: f64) {
        let slot = self
            .bounds
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(self.bounds.len());
        if let Some(n) = self.counts.get_mut(slot) {
            *n += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }

    /// `(upper bound, count in that bucket alone)` pairs, +Inf last; the encoder accumulates.
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().copied())
    }
}

/// What identifies and describes a probe (from its config).
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeMeta {
    /// Probe name.
    pub name: String,
    /// Probe kind.
    pub kind: Kind,
    /// User labels.
    pub labels: Arc<[(String, String)]>,
    /// Target for display (credentials removed).
    pub target: String,
    /// Timing and thresholds.
    pub timing: Timing,
    /// Remediation action declared in the config.
    pub remediation: Option<&'static str>,
    /// Freshness kinds: their age thresholds.
    pub freshness: Option<Thresholds>,
    /// Remind every this many DOWN runs in a row (`remind_every`).
    pub remind_every: Option<u32>,
    /// The latency histogram's boundaries.
    pub buckets: Arc<[f64]>,
    /// Its labels, escaped once, as `/metrics` writes them.
    pub label_text: crate::metrics::LabelText,
}

/// The level a probe is at, why, and since when.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Current {
    /// The level of the last run.
    pub level: Level,
    /// Why it is not UP.
    pub reason: Option<Reason>,
    /// When runs started ending at this level (kept across restarts).
    pub since: SystemTime,
}

/// Everything vigil knows about one probe.
#[derive(Debug)]
pub struct ProbeState {
    /// Its description.
    pub meta: ProbeMeta,
    /// Runs finished by this process.
    pub runs: u64,
    /// DOWN runs.
    pub failures: u64,
    /// DOWN runs by reason, for the reasons seen (in the order first seen).
    pub failure_reasons: Vec<(Reason, u64)>,
    /// Retries made.
    pub retries: u64,
    /// Changes of level seen by this process (the first run is none).
    pub level_changes: u64,
    /// The last outcome of this process (`None` until it has run the probe).
    pub last: Option<Outcome>,
    /// The level, its reason and since when (also restored from `state_dir`).
    pub current: Option<Current>,
    /// When the last run finished.
    pub last_run: Option<SystemTime>,
    /// When it last ended UP or DEGRADED.
    pub last_success: Option<SystemTime>,
    /// The reason of the last DOWN run, and when it finished.
    pub last_failure: Option<(Reason, SystemTime)>,
    /// DOWN runs in a row.
    pub consecutive_failures: u64,
    /// When the current streak of DOWN runs last reached a multiple of `remind_every`.
    pub reminder: Option<SystemTime>,
    /// What the kind carries from run to run (values last known, such as a certificate's
    /// expiry while handshakes fail), kept across restarts.
    pub carried: Carried,
    /// When vigil first ran this probe (kept across restarts).
    pub first_seen: SystemTime,
    /// Latency histogram.
    pub histogram: Histogram,
    dirty: Arc<Dirty>,
}

impl ProbeState {
    fn new(meta: ProbeMeta, dirty: Arc<Dirty>) -> Self {
        let carried = meta.kind.carried();
        let histogram = Histogram::new(meta.buckets.clone());
        Self {
            meta,
            runs: 0,
            failures: 0,
            failure_reasons: Vec::new(),
            retries: 0,
            level_changes: 0,
            last: None,
            current: None,
            last_run: None,
            last_success: None,
            last_failure: None,
            consecutive_failures: 0,
            reminder: None,
            carried,
            first_seen: SystemTime::now(),
            histogram,
            dirty,
        }
    }

    /// Records a run; returns the previous level (`None` for the first run ever).
    pub fn record(&mut self, outcome: Outcome) -> Option<Level> {
        self.runs += 1;
        self.retries += u64::from(outcome.retries);
        self.histogram.observe(outcome.duration.as_secs_f64());
        if outcome.level == Level::Down {
            let reason = outcome.reason.unwrap_or(Reason::Internal);
            self.failures += 1;
            match self.failure_reasons.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, n)) => *n += 1,
                None => self.failure_reasons.push((reason, 1)),
            }
            self.consecutive_failures += 1;
            self.last_failure = Some((reason, outcome.at));
            if let Some(every) = self.meta.remind_every
                && self.consecutive_failures.is_multiple_of(u64::from(every.max(1)))
            {
                self.reminder = Some(outcome.at);
            }
        } else {
            self.consecutive_failures = 0;
            self.last_success = Some(outcome.at);
            self.reminder = None;
        }
        let previous = self.current.map(|c| c.level);
        if previous.is_some_and(|p| p != outcome.level) {
            self.level_changes += 1;
        }
        let since = match self.current {
            Some(c) if c.level == outcome.level => c.since,
            _ => to_ms(outcome.at),
        };
        self.current = Some(Current {
            level: outcome.level,
            reason: outcome.reason,
            since,
        });
        self.last_run = Some(outcome.at);
        self.carried.keep(&outcome.observations);
        let mut outcome = outcome;
        outcome.observations.settle();
        self.last = Some(outcome);
        self.dirty.mark(previous != self.current.map(|c| c.level));
        previous
    }

    fn restore(&mut self, saved: &Saved) {
        let Some(level) = Level::from_name(&saved.level) else {
            return;
        };
        self.current = Some(Current {
            level,
            reason: saved.reason.as_deref().and_then(Reason::from_name),
            since: from_unix_ms(saved.since_ms),
        });
        self.last_run = saved.last_run_ms.map(from_unix_ms);
        self.last_success = saved.last_success_ms.map(from_unix_ms);
        self.last_failure = saved
            .last_failure
            .as_ref()
            .and_then(|(reason, at)| Some((Reason::from_name(reason)?, from_unix_ms(*at))));
        self.consecutive_failures = saved.consecutive_failures;
        self.reminder = saved.reminder_ms.map(from_unix_ms);
        if let Some(carried) = self.meta.kind.restore(&saved.carried) {
            self.carried = carried;
        }
        if let Some(first) = saved.first_seen_ms {
            self.first_seen = from_unix_ms(first);
        }
    }

    /// Writes what `probes.json` keeps of it, as [`Saved`] reads it back, into `out` (nothing
    /// before its first run); the kind's carried values are serialized in place.
    fn write_saved(&self, name: &str, out: &mut Vec<u8>, first: &mut bool) -> serde_json::Result<()> {
        let Some(current) = self.current else { return Ok(()) };
        out.push(if std::mem::take(first) { b'{' } else { b',' });
        serde_json::to_writer(&mut *out, name)?;
        out.push(b':');
        serde_json::to_writer(
            &mut *out,
            &SavedRef {
                kind: self.meta.kind.as_str(),
                level: current.level.as_str(),
                reason: current.reason.map(|r| r.as_str()),
                since_ms: unix_ms(current.since),
                last_run_ms: self.last_run.map(unix_ms),
                last_success_ms: self.last_success.map(unix_ms),
                last_failure: self.last_failure.map(|(reason, at)| (reason.as_str(), unix_ms(at))),
                consecutive_failures: self.consecutive_failures,
                reminder_ms: self.reminder.map(unix_ms),
                carried: CarriedRef(&self.carried),
                first_seen_ms: Some(unix_ms(self.first_seen)),
            },
        )
    }

    fn saved(&self) -> Option<Saved> {
        let current = self.current?;
        Some(Saved {
            kind: self.meta.kind.as_str().to_string(),
            level: current.level.as_str().to_string(),
            reason: current.reason.map(|r| r.as_str().to_string()),
            since_ms: unix_ms(current.since),
            last_run_ms: self.last_run.map(unix_ms),
            last_success_ms: self.last_success.map(unix_ms),
            last_failure: self
                .last_failure
                .map(|(reason, at)| (reason.as_str().to_string(), unix_ms(at))),
            consecutive_failures: self.consecutive_failures,
            reminder_ms: self.reminder.map(unix_ms),
            carried: self.carried.to_json(),
            first_seen_ms: Some(unix_ms(self.first_seen)),
        })
    }
}

/// What `probes.json` keeps of one probe (times in milliseconds since the Unix epoch).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Saved {
    kind: String,
    level: String,
    #[serde(default)]
    reason: Option<String>,
    since_ms: i64,
    #[serde(default)]
    last_run_ms: Option<i64>,
    #[serde(default)]
    last_success_ms: Option<i64>,
    #[serde(default)]
    last_failure: Option<(String, i64)>,
    #[serde(default)]
    consecutive_failures: u64,
    #[serde(default)]
    reminder_ms: Option<i64>,
    /// What the kind carries (its own JSON).
    #[serde(default)]
    carried: serde_json::Value,
    #[serde(default)]
    first_seen_ms: Option<i64>,
}

/// [`Saved`] as written, borrowing from the probe's state.
#[derive(Serialize)]
struct SavedRef<'a> {
    kind: &'a str,
    level: &'a str,
    reason: Option<&'a str>,
    since_ms: i64,
    last_run_ms: Option<i64>,
    last_success_ms: Option<i64>,
    last_failure: Option<(&'a str, i64)>,
    consecutive_failures: u64,
    reminder_ms: Option<i64>,
    carried: CarriedRef<'a>,
    first_seen_ms: Option<i64>,
}

struct CarriedRef<'a>(&'a Carried);

impl Serialize for CarriedRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_kept(serializer)
    }
}

use crate::persist::to_ms;

/// The state file.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SavedFile {
    #[serde(default)]
    probes: BTreeMap<String, Saved>,
}

/// Whether anything changed since the last write, and whether a level did.
#[derive(Debug, Default)]
struct Dirty {
    any: AtomicBool,
    level: AtomicBool,
}

impl Dirty {
    fn mark(&self, level_changed: bool) {
        self.any.store(true, Ordering::Relaxed);
        if level_changed {
            self.level.store(true, Ordering::Relaxed);
        }
    }
}

/// A handle on one probe's state.
pub type ProbeHandle = Arc<Mutex<ProbeState>>;

/// Locks a probe's state; a panic elsewhere never makes the state unreadable.
pub fn lock(handle: &ProbeHandle) -> MutexGuard<'_, ProbeState> {
    handle.lock_unpoisoned()
}

/// The state of every configured probe, by name.
#[derive(Debug, Default)]
pub struct State {
    probes: RwLock<BTreeMap<String, ProbeHandle>>,
    /// `<state_dir>/probes.json`, when state is kept on disk.
    file: Option<PathBuf>,
    /// What the file held at start, for probes not configured yet.
    saved: Mutex<HashMap<String, Saved>>,
    /// `metrics.detail`: every series on `/metrics`, not only the default set.
    detail: AtomicBool,
    dirty: Arc<Dirty>,
    writing: tokio::sync::Mutex<()>,
}

impl ProbeMeta {
    /// The description of a configured probe.
    pub fn of(def: &ProbeDef) -> Self {
        Self {
            name: def.name.clone(),
            kind: def.kind(),
            labels: def.labels.clone(),
            target: def.display_target.clone(),
            timing: def.timing,
            remediation: def.remediation.as_ref().map(|r| r.action()),
            freshness: def.freshness,
            remind_every: def.remind_every,
            buckets: def.buckets.clone(),
            label_text: crate::metrics::LabelText::new(&def.name, def.kind().as_str(), &def.labels),
        }
    }
}

pub use crate::persist::StateFileError;

impl State {
    /// State kept in memory only.
    pub fn in_memory() -> State {
        State::default()
    }

    /// State kept in `<dir>/probes.json` (read now; a missing file is an empty state).
    pub fn open(dir: &std::path::Path) -> Result<State, StateFileError> {
        let file = dir.join("probes.json");
        let saved: SavedFile = crate::persist::read_json(&file)?;
        Ok(State {
            file: Some(file),
            saved: Mutex::new(saved.probes.into_iter().collect()),
            ..State::default()
        })
    }

    /// The handle for `def`, created if new (and then seeded with what `state_dir` kept of it);
    /// counters survive a change of anything but the kind and the user labels (which would
    /// otherwise make a counter appear to reset in place), the level and what is known survive
    /// a change of the labels too.
    pub fn upsert(&self, def: &ProbeDef) -> ProbeHandle {
        let meta = ProbeMeta::of(def);
        let mut probes = self.probes.write_unpoisoned();
        let mut carried = None;
        if let Some(handle) = probes.get(&def.name) {
            let mut state = lock(handle);
            if state.meta.kind == meta.kind && state.meta.labels == meta.labels {
                if state.meta.target != meta.target {
                    // What was known of another target says nothing about this one.
                    state.carried = meta.kind.carried();
                }
                if state.meta.buckets != meta.buckets {
                    // Counts over other boundaries cannot be split into these.
                    state.histogram = Histogram::new(meta.buckets.clone());
                }
                state.meta = meta;
                drop(state);
                return handle.clone();
            }
            if state.meta.kind == meta.kind {
                carried = state.saved();
            }
        }
        let mut state = ProbeState::new(meta, self.dirty.clone());
        let restored = carried.or_else(|| self.saved.lock_unpoisoned().remove(&def.name));
        if let Some(saved) = restored.filter(|s| s.kind == def.kind().as_str()) {
            state.restore(&saved);
        }
        let handle = Arc::new(Mutex::new(state));
        probes.insert(def.name.clone(), handle.clone());
        handle
    }

    /// Sets `metrics.detail` (from the config in force).
    pub fn set_detail(&self, detail: bool) {
        self.detail.store(detail, Ordering::Relaxed);
    }

    /// Whether `/metrics` carries every series (`metrics.detail`).
    pub fn detail(&self) -> bool {
        self.detail.load(Ordering::Relaxed)
    }

    /// Forgets every probe not in `names`; their series vanish from `/metrics`.
    pub fn retain(&self, names: &HashSet<&str>) {
        let mut probes = self.probes.write_unpoisoned();
        let before = probes.len();
        probes.retain(|name, _| names.contains(name.as_str()));
        if probes.len() != before {
            self.dirty.mark(true);
        }
    }

    /// Every probe's handle, sorted by name.
    pub fn handles(&self) -> Vec<ProbeHandle> {
        self.probes.read_unpoisoned().values().cloned().collect()
    }

    /// One probe's handle.
    pub fn get(&self, name: &str) -> Option<ProbeHandle> {
        self.probes.read_unpoisoned().get(name).cloned()
    }

    /// The state file's bytes: `{"probes":{name:saved,...}}`, written probe by probe (a
    /// document of JSON values for 100,000 probes would be hundreds of MiB for a moment).
    fn saved_file(&self) -> serde_json::Result<Vec<u8>> {
        let probes = self.probes.read_unpoisoned();
        let mut out = Vec::with_capacity(64 + probes.len() * 256);
        out.extend_from_slice(b"{\"probes\":");
        let mut first = true;
        for (name, handle) in probes.iter() {
            lock(handle).write_saved(name, &mut out, &mut first)?;
        }
        out.extend_from_slice(if first { b"{}}" } else { b"}}" });
        Ok(out)
    }

    /// Writes the state file now (when state is kept on disk).
    pub async fn save(&self) -> std::io::Result<()> {
        let Some(file) = self.file.clone() else {
            return Ok(());
        };
        let _one_at_a_time = self.writing.lock().await;
        self.dirty.any.store(false, Ordering::Relaxed);
        self.dirty.level.store(false, Ordering::Relaxed);
        let bytes = self.saved_file().map_err(std::io::Error::other)?;
        match tokio::task::spawn_blocking(move || crate::persist::write_atomically(&file, &bytes)).await {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }

    /// Keeps the state file current until the state is dropped: written within about 2 s of
    /// a level change, every 30 s when anything else changed.
    pub fn keep_saved(self: &Arc<Self>) {
        if self.file.is_none() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(2));
            let mut last = Instant::now();
            let mut failing = false;
            loop {
                ticker.tick().await;
                let Some(state) = weak.upgrade() else { return };
                let due = state.dirty.level.load(Ordering::Relaxed)
                    || (state.dirty.any.load(Ordering::Relaxed) && last.elapsed() >= Duration::from_secs(30));
                if !due {
                    continue;
                }
                last = Instant::now();
                match state.save().await {
                    Ok(()) => failing = false,
                    Err(e) => {
                        state.dirty.mark(true);
                        if !failing {
                            warn!(error = %e, "could not write the probe state file; retrying");
                        }
                        failing = true;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn def(text: &str) -> ProbeDef {
        let config = Config::parse(text, std::path::Path::new(".")).expect("valid config");
        (*config.probes[0]).clone()
    }

    fn down(at: SystemTime, reason: Reason) -> Outcome {
        Outcome {
            level: Level::Down,
            reason: Some(reason),
            detail: String::new(),
            duration: Duration::from_millis(5),
            observations: Kind::Tcp.observed(),
            at,
            retries: 0,
            pending: false,
        }
    }

    #[test]
    fn failures_are_counted_in_all_and_by_the_reasons_seen() {
        let state = State::in_memory();
        let handle = state.upsert(&def("probes: [{name: a, kind: tcp, address: '127.0.0.1:1'}]"));
        let mut probe = lock(&handle);
        assert_eq!((probe.failures, probe.failure_reasons.len()), (0, 0));
        let at = SystemTime::now();
        probe.record(down(at, Reason::Connect));
        probe.record(down(at, Reason::Timeout));
        probe.record(down(at, Reason::Connect));
        assert_eq!(probe.failures, 3);
        assert_eq!(probe.failure_reasons, [(Reason::Connect, 2), (Reason::Timeout, 1)]);
    }

    #[tokio::test]
    async fn a_restart_keeps_the_level_and_since_when() {
        let dir = tempfile::tempdir().expect("tempdir");
        let probe = def("probes: [{name: a, kind: tcp, address: '127.0.0.1:1', remind_every: 2}]");
        let began = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        {
            let state = State::open(dir.path()).expect("open");
            let handle = state.upsert(&probe);
            {
                let mut s = lock(&handle);
                s.record(down(began, Reason::Connect));
                let mut with_cert = down(began + Duration::from_secs(30), Reason::Tls);
                with_cert.observations = crate::probe::Observed::Tcp(crate::probe::tcp::Obs {
                    tls_seen: crate::transport::tls::TlsSeen {
                        refused_expiry: Some(began + Duration::from_secs(86_400)),
                        ..Default::default()
                    },
                    ..Default::default()
                });
                s.record(with_cert);
            }
            state.save().await.expect("save");
        }
        let state = State::open(dir.path()).expect("reopen");
        let handle = state.upsert(&probe);
        let mut s = lock(&handle);
        let current = s.current.expect("restored");
        assert_eq!((current.level, current.since), (Level::Down, began));
        assert_eq!(s.consecutive_failures, 2);
        assert_eq!(s.reminder, Some(began + Duration::from_secs(30)));
        assert_eq!(s.last_failure, Some((Reason::Tls, began + Duration::from_secs(30))));
        let expiry = |s: &ProbeState| s.carried.of::<crate::probe::tcp::Tcp>().and_then(|k| k.cert.at);
        assert_eq!(expiry(&s), Some(began + Duration::from_secs(86_400)));
        assert!(s.last.is_none(), "no run of this process yet");
        // The next DOWN run continues the incident; its failed handshake keeps the expiry known.
        assert_eq!(
            s.record(down(began + Duration::from_secs(60), Reason::Connect)),
            Some(Level::Down)
        );
        assert_eq!(s.current.map(|c| c.since), Some(began));
        assert_eq!(expiry(&s), Some(began + Duration::from_secs(86_400)));
        assert_eq!(s.consecutive_failures, 3);
        // A recovery starts a new level.
        let mut up = down(began + Duration::from_secs(90), Reason::Connect);
        up.level = Level::Up;
        up.reason = None;
        s.record(up);
        assert_eq!(
            s.current.map(|c| (c.level, c.since)),
            Some((Level::Up, began + Duration::from_secs(90)))
        );
        assert_eq!((s.consecutive_failures, s.reminder), (0, None));
    }

    #[test]
    fn saved_state_of_another_kind_is_not_restored() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("probes.json"),
            r#"{"probes": {"a": {"kind": "http", "level": "down", "since_ms": 1700000000000}}}"#,
        )
        .expect("write");
        let state = State::open(dir.path()).expect("open");
        let handle = state.upsert(&def("probes: [{name: a, kind: tcp, address: '127.0.0.1:1'}]"));
        assert!(lock(&handle).current.is_none());
    }

    #[test]
    fn a_changed_target_forgets_what_was_carried() {
        let state = State::in_memory();
        let handle = state.upsert(&def("probes: [{name: a, kind: tcp, address: '127.0.0.1:1'}]"));
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        {
            let mut s = lock(&handle);
            let mut run = down(at, Reason::Tls);
            run.observations = crate::probe::Observed::Tcp(crate::probe::tcp::Obs {
                tls_seen: crate::transport::tls::TlsSeen {
                    refused_expiry: Some(at),
                    ..Default::default()
                },
                ..Default::default()
            });
            s.record(run);
            assert_ne!(s.carried, Kind::Tcp.carried());
        }
        let handle = state.upsert(&def("probes: [{name: a, kind: tcp, address: '127.0.0.1:2'}]"));
        assert_eq!(lock(&handle).carried, Kind::Tcp.carried());
    }

    #[test]
    fn the_state_file_written_in_place_reads_back_as_saved() {
        let state = State::in_memory();
        let a = state.upsert(&def("probes: [{name: a, kind: tcp, address: '127.0.0.1:1'}]"));
        state.upsert(&def("probes: [{name: b, kind: tcp, address: '127.0.0.1:2'}]"));
        assert_eq!(
            state.saved_file().expect("json"),
            b"{\"probes\":{}}",
            "nothing before a run"
        );
        lock(&a).record(down(SystemTime::now(), Reason::Connect));
        let file: SavedFile = serde_json::from_slice(&state.saved_file().expect("json")).expect("reads back");
        let saved = lock(&a).saved().expect("ran");
        assert_eq!(file.probes.into_iter().collect::<Vec<_>>(), [("a".to_string(), saved)]);
    }

    #[test]
    fn histogram_buckets() {
        let mut h = Histogram::new(Arc::from([0.25, 1.0]));
        h.observe(0.003);
        h.observe(0.25);
        h.observe(0.5);
        h.observe(100.0);
        assert_eq!(
            h.buckets().collect::<Vec<_>>(),
            [(0.25, 2), (1.0, 1), (f64::INFINITY, 1)]
        );
        assert_eq!(h.count, 4);
        let mut none = Histogram::new(Arc::from([]));
        none.observe(0.1);
        assert_eq!(none.buckets().collect::<Vec<_>>(), [(f64::INFINITY, 1)]);
    }

    #[test]
    fn new_boundaries_start_the_histogram_again() {
        let state = State::in_memory();
        let handle = state.upsert(&def("probes: [{name: a, kind: tcp, address: '127.0.0.1:1'}]"));
        lock(&handle).record(down(SystemTime::now(), Reason::Connect));
        assert_eq!(
            lock(&handle).histogram.bounds[..],
            [1.0, 5.0],
            "degraded_after and down_after"
        );
        state.upsert(&def(
            "probes: [{name: a, kind: tcp, address: '127.0.0.1:1', degraded_after: 200ms}]",
        ));
        let probe = lock(&handle);
        assert_eq!(
            (probe.histogram.bounds[..].to_vec(), probe.histogram.count),
            (vec![0.2, 5.0], 0)
        );
        assert_eq!(probe.failures, 1, "the other counters go on");
    }
}
