//! Per-probe state: counters, the last outcome, recent history and the latency histogram.
//! Written by the scheduler, read by `/metrics` (and later pages) at scrape time.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use crate::config::{ProbeDef, Timing};
use crate::probe::{Kind, Level, Observations, Reason, Thresholds};

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
    pub observations: Observations,
    /// When the run finished.
    pub at: SystemTime,
    /// Extra attempts made (retries).
    pub retries: u32,
}

/// Upper bounds of the latency histogram buckets, in seconds.
pub const BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// A latency histogram (cumulative buckets are computed when encoded).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last slot is +Inf.
    pub counts: [u64; BUCKETS.len() + 1],
    /// Sum of observations (seconds).
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Adds one observation.
    pub fn observe(&mut self, seconds: f64) {
        let slot = BUCKETS.iter().position(|&b| seconds <= b).unwrap_or(BUCKETS.len());
        self.counts[slot] += 1;
        self.sum += seconds;
        self.count += 1;
    }

    /// `(upper bound, count in that bucket alone)` pairs, +Inf last; the encoder accumulates.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().copied())
            .collect()
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
}

/// Everything vigil knows about one probe.
#[derive(Debug)]
pub struct ProbeState {
    /// Its description.
    pub meta: ProbeMeta,
    /// Runs finished.
    pub runs: u64,
    /// DOWN runs by reason.
    pub failures: BTreeMap<Reason, u64>,
    /// Retries made.
    pub retries: u64,
    /// The last outcome.
    pub last: Option<Outcome>,
    /// When it last ended UP or DEGRADED.
    pub last_success: Option<SystemTime>,
    /// DOWN runs in a row.
    pub consecutive_failures: u64,
    /// Latency histogram.
    pub histogram: Histogram,
}

impl ProbeState {
    fn new(meta: ProbeMeta) -> Self {
        Self {
            meta,
            runs: 0,
            failures: BTreeMap::new(),
            retries: 0,
            last: None,
            last_success: None,
            consecutive_failures: 0,
            histogram: Histogram::default(),
        }
    }

    /// Records a run; returns the previous level (`None` for the first run).
    pub fn record(&mut self, outcome: Outcome) -> Option<Level> {
        self.runs += 1;
        self.retries += u64::from(outcome.retries);
        self.histogram.observe(outcome.duration.as_secs_f64());
        if outcome.level == Level::Down {
            *self
                .failures
                .entry(outcome.reason.unwrap_or(Reason::Internal))
                .or_default() += 1;
            self.consecutive_failures += 1;
        } else {
            self.consecutive_failures = 0;
            self.last_success = Some(outcome.at);
        }
        self.last.replace(outcome).map(|previous| previous.level)
    }
}

/// A handle on one probe's state.
pub type ProbeHandle = Arc<Mutex<ProbeState>>;

/// Locks a probe's state; a panic elsewhere never makes the state unreadable.
pub fn lock(handle: &ProbeHandle) -> MutexGuard<'_, ProbeState> {
    handle.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The state of every configured probe, by name.
#[derive(Debug, Default)]
pub struct State {
    probes: RwLock<BTreeMap<String, ProbeHandle>>,
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
        }
    }
}

impl State {
    /// The handle for `def`, created if new; counters survive a change of anything but the kind
    /// and the user labels (which would otherwise make a counter appear to reset in place).
    pub fn upsert(&self, def: &ProbeDef) -> ProbeHandle {
        let meta = ProbeMeta::of(def);
        let mut probes = self.probes.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(handle) = probes.get(&def.name) {
            let mut state = lock(handle);
            if state.meta.kind == meta.kind && state.meta.labels == meta.labels {
                state.meta = meta;
                drop(state);
                return handle.clone();
            }
        }
        let handle = Arc::new(Mutex::new(ProbeState::new(meta)));
        probes.insert(def.name.clone(), handle.clone());
        handle
    }

    /// Forgets every probe not in `names`; their series vanish from `/metrics`.
    pub fn retain(&self, names: &HashSet<&str>) {
        self.probes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|name, _| names.contains(name.as_str()));
    }

    /// Every probe's handle, sorted by name.
    pub fn handles(&self) -> Vec<ProbeHandle> {
        self.probes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// One probe's handle.
    pub fn get(&self, name: &str) -> Option<ProbeHandle> {
        self.probes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets() {
        let mut h = Histogram::default();
        h.observe(0.003);
        h.observe(0.2);
        h.observe(100.0);
        let c = h.buckets();
        assert_eq!(c[0], (0.005, 1));
        assert_eq!(c[5], (0.25, 1));
        assert_eq!(c[4], (0.1, 0));
        assert_eq!(c.last().copied(), Some((f64::INFINITY, 1)));
        assert_eq!(h.count, 3);
    }
}
