//! What the freshness kinds (elasticsearch, sql, heartbeat) share: age thresholds and the
//! level of data whose newest record is known.

use std::marker::PhantomData;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{Emit, Family, Level, ProbeKind, Publish, Reason, Seen, Unit, Verdict};
use crate::metrics::unix_seconds;
use crate::spec::BuildContext;

/// What one run of a freshness kind observed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Obs {
    /// The source answered with its newest record (or with none at all).
    pub answered: bool,
    /// When its newest record was written (`None`: it holds none).
    pub newest: Option<SystemTime>,
}

/// What a freshness kind carries from run to run: the newest record as last read, kept while
/// the source cannot be queried (a failing query never reads as fresh data, nor as none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// When the newest record was written, to the millisecond.
    #[serde(default, with = "crate::persist::unix_ms")]
    pub newest: Option<SystemTime>,
}

/// Carries what a run read: a source that answered says what its newest record is, even none.
pub fn keep(kept: &mut Kept, obs: &Obs) {
    if obs.answered {
        kept.newest = obs.newest.map(crate::persist::to_ms);
    }
}

fn newest_kept<K: ProbeKind<Kept = Kept>>(seen: &Seen<'_, K>, out: &mut dyn Emit) {
    if let Some(at) = seen.kept.newest {
        out.gauge(&[], unix_seconds(at));
    }
}

fn newest_read<K: ProbeKind<Obs = Obs>>(seen: &Seen<'_, K>, out: &mut dyn Emit) {
    if let Some(at) = seen.obs.newest {
        out.gauge(&[], unix_seconds(at));
    }
}

/// The families the freshness kinds share.
pub struct Freshness<K>(PhantomData<K>);

impl<K: ProbeKind<Obs = Obs, Kept = Kept>> Freshness<K> {
    /// `vigil_freshness_newest_timestamp_seconds` on `/metrics`, last known.
    pub const NEWEST: Family<K> = Family {
        name: "vigil_freshness_newest_timestamp",
        help: "When the newest record of a freshness source was written (last known: kept while the source cannot be queried).",
        unit: Some(Unit::Seconds),
        publish: Publish::Metrics,
        emit: newest_kept::<K>,
    };
    /// The same on `/probe`, as this run read it.
    pub const NEWEST_READ: Family<K> = Family {
        name: "vigil_freshness_newest_timestamp",
        help: "When the newest record of the source was written, as this run read it.",
        unit: Some(Unit::Seconds),
        publish: Publish::Probe,
        emit: newest_read::<K>,
    };
}

/// How old the newest record may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Thresholds {
    /// Older than this: DOWN.
    pub max_age: Duration,
    /// Older than this: DEGRADED.
    pub warn_age: Option<Duration>,
}

/// Validates `max_age` (required) and `warn_age` (below it) of the probe at `path`.
pub(crate) fn thresholds(
    max_age: Option<Duration>,
    warn_age: Option<Duration>,
    ctx: &mut BuildContext,
    path: &str,
) -> Option<Thresholds> {
    let Some(max_age) = max_age else {
        ctx.error(path, "missing key `max_age` (how old the newest record may be)");
        return None;
    };
    if max_age.is_zero() {
        ctx.error(format!("{path}.max_age"), "must be greater than 0");
        return None;
    }
    if let Some(warn) = warn_age
        && warn >= max_age
    {
        ctx.error(
            format!("{path}.warn_age"),
            format!(
                "warn_age ({}) must be below max_age ({})",
                humantime::format_duration(warn),
                humantime::format_duration(max_age)
            ),
        );
        return None;
    }
    Some(Thresholds { max_age, warn_age })
}

fn show(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// The level of data whose newest record was written at `newest` (`None`: there is none).
/// A timestamp in the future (clock skew) counts as age zero.
pub fn assess(newest: Option<SystemTime>, thresholds: &Thresholds, now: SystemTime, obs: &mut Obs) -> Verdict {
    obs.answered = true;
    obs.newest = newest;
    let Some(newest) = newest else {
        return Verdict::down(Reason::Empty, "no data yet");
    };
    let age = now.duration_since(newest).unwrap_or(Duration::ZERO);
    if age > thresholds.max_age {
        let detail = format!(
            "newest record is {} old (max_age {})",
            show(age),
            show(thresholds.max_age)
        );
        return Verdict::down(Reason::Stale, detail);
    }
    if let Some(warn) = thresholds.warn_age
        && age > warn
    {
        let detail = format!("newest record is {} old (warn_age {})", show(age), show(warn));
        return Verdict::failed(Level::Degraded, Reason::Stale, detail);
    }
    Verdict::up()
}

/// Seconds (or, past 10^11, milliseconds) since the Unix epoch as a time.
pub fn from_epoch(value: f64) -> Option<SystemTime> {
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    // 10^11 seconds is the year 5138; a number that large is milliseconds.
    let seconds = if value > 1e11 { value / 1000.0 } else { value };
    Duration::try_from_secs_f64(seconds)
        .ok()
        .map(|d| SystemTime::UNIX_EPOCH + d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_by_age() {
        let t = Thresholds {
            max_age: Duration::from_secs(300),
            warn_age: Some(Duration::from_secs(180)),
        };
        let now = SystemTime::now();
        let at = |secs| Some(now - Duration::from_secs(secs));
        let mut obs = Obs::default();
        assert_eq!(assess(at(10), &t, now, &mut obs).level, Level::Up);
        let warn = assess(at(200), &t, now, &mut obs);
        assert_eq!((warn.level, warn.reason), (Level::Degraded, Some(Reason::Stale)));
        assert_eq!(warn.detail, "newest record is 3m 20s old (warn_age 3m)");
        let old = assess(at(301), &t, now, &mut obs);
        assert_eq!((old.level, old.reason), (Level::Down, Some(Reason::Stale)));
        let none = assess(None, &t, now, &mut obs);
        assert_eq!((none.level, none.reason), (Level::Down, Some(Reason::Empty)));
        let future = assess(Some(now + Duration::from_secs(60)), &t, now, &mut obs);
        assert_eq!(future.level, Level::Up);
        assert_eq!(obs.newest, Some(now + Duration::from_secs(60)));
    }

    #[test]
    fn a_source_that_answers_says_what_is_newest_one_that_fails_says_nothing() {
        let mut kept = Kept::default();
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        keep(
            &mut kept,
            &Obs {
                answered: true,
                newest: Some(at),
            },
        );
        keep(&mut kept, &Obs::default());
        assert_eq!(kept.newest, Some(at), "a failed query keeps what was known");
        keep(
            &mut kept,
            &Obs {
                answered: true,
                newest: None,
            },
        );
        assert_eq!(kept.newest, None, "the source answered: it holds nothing");
    }

    #[test]
    fn epochs() {
        let s = from_epoch(1_700_000_000.0).expect("seconds");
        let ms = from_epoch(1_700_000_000_000.0).expect("millis");
        assert_eq!(s, ms);
        assert_eq!(from_epoch(-1.0), None);
    }
}
