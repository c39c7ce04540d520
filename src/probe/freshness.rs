//! What the freshness kinds (elasticsearch, sql, heartbeat) share: age thresholds and the
//! level of data whose newest record is known.

use std::time::{Duration, SystemTime};

use super::{Checked, Level, Observations, Reason};
use crate::spec::BuildContext;

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
pub fn assess(newest: Option<SystemTime>, thresholds: &Thresholds, now: SystemTime, mut obs: Observations) -> Checked {
    obs.freshness_newest = newest;
    let Some(newest) = newest else {
        return Checked::down(Reason::Empty, "no data yet", obs);
    };
    let age = now.duration_since(newest).unwrap_or(Duration::ZERO);
    if age > thresholds.max_age {
        let detail = format!(
            "newest record is {} old (max_age {})",
            show(age),
            show(thresholds.max_age)
        );
        return Checked::down(Reason::Stale, detail, obs);
    }
    if let Some(warn) = thresholds.warn_age
        && age > warn
    {
        let detail = format!("newest record is {} old (warn_age {})", show(age), show(warn));
        return Checked::failed(Level::Degraded, Reason::Stale, detail, obs);
    }
    Checked::up(obs)
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
        assert_eq!(assess(at(10), &t, now, Observations::default()).level, Level::Up);
        let warn = assess(at(200), &t, now, Observations::default());
        assert_eq!((warn.level, warn.reason), (Level::Degraded, Some(Reason::Stale)));
        assert_eq!(warn.detail, "newest record is 3m 20s old (warn_age 3m)");
        let old = assess(at(301), &t, now, Observations::default());
        assert_eq!((old.level, old.reason), (Level::Down, Some(Reason::Stale)));
        let none = assess(None, &t, now, Observations::default());
        assert_eq!((none.level, none.reason), (Level::Down, Some(Reason::Empty)));
        let future = assess(Some(now + Duration::from_secs(60)), &t, now, Observations::default());
        assert_eq!(future.level, Level::Up);
        assert_eq!(
            future.observations.freshness_newest,
            Some(now + Duration::from_secs(60))
        );
    }

    #[test]
    fn epochs() {
        let s = from_epoch(1_700_000_000.0).expect("seconds");
        let ms = from_epoch(1_700_000_000_000.0).expect("millis");
        assert_eq!(s, ms);
        assert_eq!(from_epoch(-1.0), None);
    }
}
