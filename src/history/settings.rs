//! The history store's settings: the `history:` section.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::spec::{BuildContext, KeyPath, MEMORY, Section, check_writable_dir};

/// `history:`: where uptime and latency history is kept, and for how long.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct History {
    /// SQLite file (created if missing; its folder must exist). Unset: `history.db` in the
    /// state folder, or in memory when state is kept in memory; `":memory:"`: in memory only,
    /// so history starts afresh at every start.
    pub path: Option<PathBuf>,
    /// `path: ":memory:"` was asked for.
    #[serde(skip)]
    pub memory: bool,
    /// How long single results are kept (the detail view and its latency chart).
    #[serde(with = "crate::spec::values::duration")]
    pub raw_retention: Duration,
    /// How long hourly aggregates are kept (uptime over days, the 90-day bar).
    #[serde(with = "crate::spec::values::duration")]
    pub hourly_retention: Duration,
}

impl Default for History {
    fn default() -> Self {
        Self {
            path: None,
            memory: false,
            raw_retention: Duration::from_secs(24 * 3600),
            hourly_retention: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

impl Section for History {
    const KEY: &'static str = "history";
    type Spec = History;

    fn build(mut history: History, cx: &mut BuildContext, at: &KeyPath) -> Option<Self> {
        let before = cx.error_count();
        history.validate(cx, at);
        (cx.error_count() == before).then_some(history)
    }
}

impl History {
    fn validate(&mut self, ctx: &mut BuildContext, at: &KeyPath) {
        if self.raw_retention < Duration::from_secs(60) {
            ctx.error(at.key("raw_retention"), "must be at least 1m");
        }
        if self.hourly_retention < Duration::from_secs(3600) {
            ctx.error(at.key("hourly_retention"), "must be at least 1h");
        }
        if self.path.as_deref() == Some(Path::new(MEMORY)) {
            self.path = None;
            self.memory = true;
        }
        if let Some(path) = &self.path {
            let resolved = ctx.resolve_path(path);
            let parent = resolved.parent().filter(|p| !p.as_os_str().is_empty());
            if resolved.is_dir() {
                ctx.error(
                    at.key("path"),
                    format!("{} is a folder; name a file", resolved.display()),
                );
            } else if parent.is_some_and(|p| !p.is_dir()) {
                ctx.error(
                    at.key("path"),
                    format!("folder {} does not exist", parent.unwrap_or(Path::new(".")).display()),
                );
            } else {
                // SQLite writes the file and, beside it, its -wal and -shm files.
                let folder = parent.unwrap_or(Path::new("."));
                if let Err(e) = check_writable_dir(folder) {
                    ctx.error(
                        at.key("path"),
                        format!("cannot write in folder {}: {e}", folder.display()),
                    );
                } else if resolved.exists()
                    && let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(&resolved)
                {
                    ctx.error(
                        at.key("path"),
                        format!("cannot open {} for writing: {e}", resolved.display()),
                    );
                }
            }
            self.path = Some(resolved);
        }
    }
}
