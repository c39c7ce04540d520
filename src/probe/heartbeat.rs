//! The `heartbeat` kind: a dead man's switch. A job pushes `POST /push/<name>` with the probe's
//! bearer token; the probe's age is the time since the last push. The last beat of each probe,
//! and when each was first configured, are kept in a small JSON file (written to a temporary
//! file, synced, then renamed over the old one) so they survive a restart of vigil. A probe
//! that never received a beat is pending, not DOWN, until `max_age` has passed since it was
//! first configured: a fresh install or a new job does not page at once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::freshness::{self, Freshness, Thresholds};
use super::{Built, CheckContext, Family, ProbeKind, Reason, Role, Verdict};
use crate::poison::LockUnpoisoned;
use crate::secret::{Secret, SecretSource};
use crate::spec::BuildContext;

/// Config of a `heartbeat` probe.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Bearer token a push must carry (inline or `{file: PATH}`).
    pub token: Option<SecretSource>,
    /// File holding the token (same as `token: {file: PATH}`).
    pub token_file: Option<PathBuf>,
    /// Older than this: DOWN.
    #[serde(default, with = "crate::spec::values::duration")]
    pub max_age: Option<Duration>,
    /// Older than this: DEGRADED.
    #[serde(default, with = "crate::spec::values::duration")]
    pub warn_age: Option<Duration>,
}

/// A `heartbeat` probe's compiled settings.
#[derive(Debug)]
pub struct Heartbeat {
    token: Secret,
    thresholds: Thresholds,
}

impl Heartbeat {
    /// Whether `offered` is this heartbeat's token (compared in constant time).
    pub fn accepts(&self, offered: &str) -> bool {
        self.token.matches(offered)
    }
}

impl ProbeKind for Heartbeat {
    const NAME: &'static str = "heartbeat";
    /// The age of the last beat, and what the job reported.
    const REASONS: &'static [Reason] = &[Reason::Empty, Reason::Stale, Reason::Reported];
    const FAMILIES: &'static [Family<Self>] = &[Freshness::<Self>::NEWEST, Freshness::<Self>::NEWEST_READ];

    type Spec = Spec;
    type Obs = freshness::Obs;
    type Kept = freshness::Kept;

    fn build(spec: Spec, cx: &mut BuildContext, path: &str, role: Role) -> Option<Built<Self>> {
        build(spec, cx, path, role)
    }

    async fn check(&self, target: &str, cx: &CheckContext, obs: &mut freshness::Obs) -> Verdict {
        check(self, target, cx, obs)
    }

    fn keep(kept: &mut freshness::Kept, obs: &freshness::Obs) {
        freshness::keep(kept, obs);
    }
}

fn build(spec: Spec, ctx: &mut BuildContext, path: &str, role: Role) -> Option<Built<Heartbeat>> {
    if role == Role::Module {
        ctx.error(path, "a heartbeat cannot be a /probe module: it has no target to probe");
        return None;
    }
    let token = match (&spec.token, &spec.token_file) {
        (Some(source), None) => ctx.secret(format!("{path}.token"), source),
        (None, Some(file)) => ctx.secret(format!("{path}.token_file"), &SecretSource::File { file: file.clone() }),
        (Some(_), Some(_)) => {
            ctx.error(format!("{path}.token_file"), "set either token or token_file, not both");
            None
        }
        (None, None) => {
            ctx.error(
                path,
                "missing key `token` or `token_file` (the bearer token a push must carry)",
            );
            None
        }
    };
    if token.as_ref().is_some_and(|t| t.expose().len() < 16) {
        // The key the user wrote.
        let written = if spec.token_file.is_some() {
            "token_file"
        } else {
            "token"
        };
        ctx.error(
            format!("{path}.{written}"),
            "the token must be at least 16 characters long",
        );
    }
    let thresholds = freshness::thresholds(spec.max_age, spec.warn_age, ctx, path)?;
    Some(Built {
        settings: Heartbeat {
            token: token?,
            thresholds,
        },
        target: None,
        freshness: Some(thresholds),
    })
}

/// One attempt: the age of the last beat of the probe named `target`.
fn check(settings: &Heartbeat, target: &str, context: &CheckContext, obs: &mut freshness::Obs) -> Verdict {
    let beat = context.heartbeats.last(target);
    if beat.is_none()
        && let Some(since) = context.heartbeats.configured_at(target)
    {
        let due = since + settings.thresholds.max_age;
        if SystemTime::now() < due {
            return Verdict::pending(format!(
                "no heartbeat yet; DOWN unless one arrives by {}",
                humantime::format_rfc3339_seconds(due)
            ));
        }
    }
    if let Some(Beat { ok: false, at, message }) = &beat {
        obs.answered = true;
        obs.newest = Some(*at);
        let detail = match message {
            Some(m) => format!("the job reported a failure: {m}"),
            None => "the job reported a failure".to_string(),
        };
        return Verdict::down(Reason::Reported, detail);
    }
    freshness::assess(beat.map(|b| b.at), &settings.thresholds, SystemTime::now(), obs)
}

/// One beat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Beat {
    /// When it was pushed.
    #[serde(with = "humantime_serde")]
    pub at: SystemTime,
    /// `false` when the job reported a failure.
    pub ok: bool,
    /// What the job said (at most 200 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What the heartbeat state file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Kept {
    /// The last beat of each probe.
    #[serde(default)]
    beats: BTreeMap<String, Beat>,
    /// When each probe was first configured.
    #[serde(default)]
    configured: BTreeMap<String, Configured>,
}

/// When a heartbeat probe was first configured.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Configured {
    #[serde(with = "humantime_serde")]
    at: SystemTime,
}

/// The last beat of every heartbeat probe, kept on disk when a file is given.
#[derive(Debug, Default)]
pub struct Beats {
    kept: Mutex<Kept>,
    file: Option<PathBuf>,
}

impl Beats {
    /// Beats kept in `file` (loaded now if it exists), or in memory only.
    pub fn open(file: Option<PathBuf>) -> Result<Beats, crate::persist::StateFileError> {
        let kept = match &file {
            Some(path) => match std::fs::read(path) {
                Ok(bytes) => crate::persist::parse_json::<Kept>(path, &bytes).or_else(|e| {
                    // The file of vigil 0.1: beats only.
                    serde_json::from_slice::<BTreeMap<String, Beat>>(&bytes)
                        .map(|beats| Kept {
                            beats,
                            configured: BTreeMap::new(),
                        })
                        .map_err(|_| e)
                })?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Kept::default(),
                Err(source) => {
                    return Err(crate::persist::StateFileError::Read {
                        path: path.clone(),
                        source,
                    });
                }
            },
            None => Kept::default(),
        };
        Ok(Beats {
            kept: Mutex::new(kept),
            file,
        })
    }

    /// The last beat of `name`.
    pub fn last(&self, name: &str) -> Option<Beat> {
        self.lock().beats.get(name).cloned()
    }

    /// When the probe `name` was first configured (see [`Beats::retain`]).
    pub fn configured_at(&self, name: &str) -> Option<SystemTime> {
        self.lock().configured.get(name).map(|c| c.at)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock_unpoisoned()
    }

    fn write(&self, kept: &Kept) -> std::io::Result<()> {
        match &self.file {
            Some(path) => crate::persist::write_json(path, kept),
            None => Ok(()),
        }
    }

    /// Records a beat and, with a file, writes it before returning.
    pub fn record(&self, name: &str, mut beat: Beat) -> std::io::Result<()> {
        // What a job says is shown on terminals and pages: no escapes, no line breaks.
        if let Some(message) = &mut beat.message
            && let std::borrow::Cow::Owned(clean) = crate::printable::printable(message)
        {
            *message = clean;
        }
        if let Some(message) = &mut beat.message
            && let Some((cut, _)) = message.char_indices().nth(200)
        {
            message.truncate(cut);
        }
        let mut kept = self.lock();
        kept.beats.insert(name.to_string(), beat);
        self.write(&kept)
    }

    /// The heartbeat probes now configured are `names`: new ones are remembered as configured
    /// now, beats of the others are forgotten (and the file rewritten when that changes it).
    pub fn retain(&self, names: &[&str]) -> std::io::Result<()> {
        let mut kept = self.lock();
        let (beats, configured) = (kept.beats.len(), kept.configured.len());
        kept.beats.retain(|name, _| names.contains(&name.as_str()));
        kept.configured.retain(|name, _| names.contains(&name.as_str()));
        let now = SystemTime::now();
        for name in names {
            kept.configured
                .entry((*name).to_string())
                .or_insert(Configured { at: now });
        }
        if kept.beats.len() != beats || kept.configured.len() != configured {
            self.write(&kept)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beats_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("heartbeats.json");
        let beats = Beats::open(Some(file.clone())).expect("open");
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        beats
            .record(
                "backup",
                Beat {
                    at,
                    ok: true,
                    message: Some("x".repeat(300)),
                },
            )
            .expect("record");
        let again = Beats::open(Some(file.clone())).expect("reopen");
        let beat = again.last("backup").expect("kept");
        assert_eq!((beat.at, beat.ok, beat.message.map(|m| m.len())), (at, true, Some(200)));
        again.retain(&[]).expect("retain");
        assert_eq!(Beats::open(Some(file)).expect("reopen").last("backup"), None);
    }

    #[test]
    fn token_comparison() {
        let s = Heartbeat {
            token: Secret::new("0123456789abcdef"),
            thresholds: Thresholds {
                max_age: Duration::from_secs(60),
                warn_age: None,
            },
        };
        assert!(s.accepts("0123456789abcdef"));
        assert!(!s.accepts("0123456789abcdeX"));
        assert!(!s.accepts("0123"));
    }
}
