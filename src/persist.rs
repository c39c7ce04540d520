//! State that must survive a restart: where it is kept (the `state_dir:` section), and small
//! state files written to a temporary file, synced, renamed over the old one (and the folder
//! synced), so a reader finds the old file or the new one.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::spec::{BuildContext, KeyPath, MEMORY, Section, check_writable_dir};

/// Writes `bytes` to `path` atomically.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Make the rename itself durable.
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// A state file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// Reading it failed.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It holds something else than vigil's state.
    #[error("{path}: not a valid state file: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: serde_json::Error,
    },
}

impl StateFileError {
    /// A bounded label for the error.
    pub fn reason(&self) -> &'static str {
        match self {
            StateFileError::Read { .. } => "read",
            StateFileError::Invalid { .. } => "invalid",
        }
    }
}

/// Reads a JSON state file; a missing file is `T::default()`.
pub fn read_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T, StateFileError> {
    match std::fs::read(path) {
        Ok(bytes) => parse_json(path, &bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(source) => Err(StateFileError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// `bytes`, read from the state file `path`, as `T`.
pub fn parse_json<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, StateFileError> {
    serde_json::from_slice(bytes).map_err(|source| StateFileError::Invalid {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `value` as JSON to `path` atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    write_atomically(path, &serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?)
}

/// Where state that must survive a restart is kept: the `state_dir:` section.
/// (Levels and since when, heartbeats, restart totals, and by default the history store.)
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StateDir {
    /// Not set in the config: `vigil run` uses `--storage.path` (default `data/`); a config
    /// used as a library keeps state in memory.
    #[default]
    Unset,
    /// This folder (created if missing).
    Dir(PathBuf),
    /// `state_dir: ":memory:"`: nothing survives a restart.
    Memory,
}

impl StateDir {
    /// The folder, when state is kept on disk.
    pub fn path(&self) -> Option<&Path> {
        match self {
            StateDir::Dir(dir) => Some(dir),
            StateDir::Unset | StateDir::Memory => None,
        }
    }
}

impl Section for StateDir {
    const KEY: &'static str = "state_dir";
    type Spec = PathBuf;

    fn build(dir: PathBuf, cx: &mut BuildContext, at: &KeyPath) -> Option<Self> {
        if dir == Path::new(MEMORY) {
            return Some(StateDir::Memory);
        }
        if dir.as_os_str().is_empty() {
            cx.error(
                at,
                format!("must name a folder, or `{MEMORY}` to keep state in memory only"),
            );
            return None;
        }
        let dir = cx.resolve_path(&dir);
        if let Some(problem) = state_dir_problem(&dir) {
            cx.error(at, problem);
            return None;
        }
        Some(StateDir::Dir(dir))
    }
}

/// Why `dir` cannot hold vigil's state, if it cannot: a file, an unwritable folder, or a
/// folder that cannot be created (its nearest existing ancestor is a file).
pub fn state_dir_problem(dir: &Path) -> Option<String> {
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Some(format!("{} is a file, not a folder", dir.display())),
        Ok(_) => check_writable_dir(dir)
            .err()
            .map(|e| format!("cannot write in {}: {e}", dir.display())),
        Err(_) => {
            // Created at start: its nearest existing ancestor must be a writable folder.
            let ancestor = dir
                .ancestors()
                .skip(1)
                .find(|a| !a.as_os_str().is_empty() && a.exists())
                .unwrap_or(Path::new("."));
            if !ancestor.is_dir() {
                Some(format!(
                    "cannot create {}: {} is a file",
                    dir.display(),
                    ancestor.display()
                ))
            } else {
                check_writable_dir(ancestor)
                    .err()
                    .map(|e| format!("cannot create {}: {e}", dir.display()))
            }
        }
    }
}

/// `t` to the millisecond, as state files keep times: what is published before and after a
/// restart is then the same number.
pub fn to_ms(t: std::time::SystemTime) -> std::time::SystemTime {
    crate::history::from_unix_ms(crate::history::unix_ms(t))
}

/// Serde for an optional time as milliseconds since the Unix epoch (`#[serde(with =
/// "crate::persist::unix_ms")]`).
pub mod unix_ms {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Writes it.
    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, serializer: S) -> Result<S::Ok, S::Error> {
        t.map(crate::history::unix_ms).serialize(serializer)
    }

    /// Reads it.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<SystemTime>, D::Error> {
        Ok(Option::<i64>::deserialize(deserializer)?.map(crate::history::from_unix_ms))
    }
}
