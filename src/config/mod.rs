//! Configuration: a YAML file (or the embedded default) merged with `VIGIL_*` environment
//! variables, decoded and validated in one pass that collects every error with its key path and
//! line. A [`Config`] that exists is valid: regexes are compiled, files read, probes built.

mod lines;
pub mod values;

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Yaml};
use figment::value::Value;
use serde::Deserialize;

use crate::probe::{Kind, Probe, Role, Thresholds};
use crate::secret::{Secret, SecretNames, SecretSource};
use lines::KeyLines;

/// The embedded default config: `examples/vigil.yml`, compiled in.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../examples/vigil.yml");

/// The largest config file read.
pub const CONFIG_FILE_LIMIT: u64 = 64 << 20;
/// The largest file a config names (a body, a certificate, a secret) that is read.
pub const NAMED_FILE_LIMIT: u64 = 16 << 20;
/// The most probe attempts the config may let run at once.
pub const MAX_CONCURRENCY: usize = 100_000;
/// The most retries a probe may make after a DOWN attempt.
pub const MAX_RETRIES: u32 = 100;

/// Reads the regular file at `path`, refusing anything else (a device such as `/dev/zero`, a
/// FIFO, which would block, a folder) and files longer than `limit` bytes.
pub fn read_regular(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let not_regular = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file");
    // stat first: opening a FIFO would wait for a writer.
    if !std::fs::metadata(path)?.is_file() {
        return Err(not_regular());
    }
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    if meta.len() > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {} MiB", limit >> 20),
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {} MiB", limit >> 20),
        ));
    }
    Ok(bytes)
}

/// Whether vigil can create files in `dir` (tried for real, so read-only mounts, permissions
/// and ownership all count): the error says why not.
fn check_writable_dir(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".vigil-check-{}", std::process::id()));
    std::fs::OpenOptions::new().write(true).create_new(true).open(&probe)?;
    std::fs::remove_file(&probe)
}

/// Where the config comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A YAML file.
    File(PathBuf),
    /// The embedded default.
    Embedded,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Embedded => f.write_str("embedded default config (examples/vigil.yml)"),
        }
    }
}

/// Defaults that apply to every probe unless it sets its own.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// How often each probe runs.
    #[serde(with = "crate::config::values::duration")]
    pub interval: Duration,
    /// How long one attempt may take before it ends DOWN with reason `timeout`.
    #[serde(with = "crate::config::values::duration")]
    pub timeout: Duration,
    /// Latency above this: DEGRADED.
    #[serde(with = "crate::config::values::duration")]
    pub degraded_after: Duration,
    /// Latency above this: DOWN.
    #[serde(with = "crate::config::values::duration")]
    pub down_after: Duration,
    /// Extra attempts after a DOWN result (each counted in `vigil_probe_retries_total`).
    pub retries: u32,
    /// Pause between attempts.
    #[serde(with = "crate::config::values::duration")]
    pub retry_delay: Duration,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            degraded_after: Duration::from_secs(1),
            down_after: Duration::from_secs(5),
            retries: 0,
            retry_delay: Duration::from_secs(5),
        }
    }
}

/// The timing of one probe, defaults resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timing {
    /// Run every `interval`.
    pub interval: Duration,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// DEGRADED above this latency.
    pub degraded_after: Duration,
    /// DOWN above this latency.
    pub down_after: Duration,
    /// Extra attempts after DOWN.
    pub retries: u32,
    /// Pause between attempts.
    pub retry_delay: Duration,
}

/// Per-probe settings shared by every kind (the rest of the probe's keys belong to its kind).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Common {
    name: Option<String>,
    #[serde(default, with = "crate::config::values::duration")]
    interval: Option<Duration>,
    #[serde(default, with = "crate::config::values::duration")]
    timeout: Option<Duration>,
    #[serde(default, with = "crate::config::values::duration")]
    degraded_after: Option<Duration>,
    #[serde(default, with = "crate::config::values::duration")]
    down_after: Option<Duration>,
    retries: Option<u32>,
    #[serde(default, with = "crate::config::values::duration")]
    retry_delay: Option<Duration>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    remediation: Option<Remediation>,
    #[serde(default)]
    status_page: ProbePage,
    remind_every: Option<u32>,
}

impl Common {
    fn overrides_timing(&self) -> bool {
        self.interval.is_some() || self.timeout.is_some() || self.degraded_after.is_some() || self.down_after.is_some()
    }
}

/// Keys of [`Common`]; every other key of a probe belongs to its kind.
const PROBE_KEYS: &[&str] = &[
    "name",
    "interval",
    "timeout",
    "degraded_after",
    "down_after",
    "retries",
    "retry_delay",
    "labels",
    "remediation",
    "status_page",
    "remind_every",
];
/// The subset of [`PROBE_KEYS`] that a `/probe` module may set.
const MODULE_KEYS: &[&str] = &["timeout", "degraded_after", "down_after", "retries", "retry_delay"];
/// Top-level keys.
const TOP_KEYS: &[&str] = &[
    "defaults",
    "labels",
    "probes",
    "modules",
    "concurrency",
    "state_dir",
    "docker",
    "receiver",
    "status_page",
    "history",
    "kubernetes",
    "secret_names",
];

/// A probe's own `status_page:` settings.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ProbePage {
    /// Leave the probe off the status page, `/api/v1/status`, the events and the badges (it is
    /// still probed and still on `/metrics`).
    pub hide: bool,
}

/// `status_page:`: the page at `/` and `/api/v1/status`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StatusPage {
    /// The page's title.
    pub title: String,
    /// A banner shown above the probes (maintenance notice and the like).
    pub message: Option<String>,
    /// Group the probes by the value of this label (probes without it form their own group).
    pub group_by: Option<String>,
    /// Log one summary line per probe this often (level, uptime 24 h, latency); off when unset.
    #[serde(with = "crate::config::values::duration")]
    pub log_summary_every: Option<Duration>,
}

impl Default for StatusPage {
    fn default() -> Self {
        Self {
            title: "vigil".to_string(),
            message: None,
            group_by: None,
            log_summary_every: None,
        }
    }
}

impl StatusPage {
    fn validate(&self, ctx: &mut BuildContext) {
        if self.title.trim().is_empty() {
            ctx.error("status_page.title", "must not be empty");
        }
        if let Some(label) = &self.group_by
            && !valid_label_name(label)
        {
            ctx.error(
                "status_page.group_by",
                format!("`{label}` is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
            );
        }
        if let Some(every) = self.log_summary_every
            && every < Duration::from_secs(1)
        {
            ctx.error("status_page.log_summary_every", "must be at least 1s");
        }
    }
}

/// The value of `state_dir` (and `history.path`) that keeps state in memory only.
pub const MEMORY: &str = ":memory:";

/// Where state that must survive a restart is kept (levels and since when, heartbeats, restart
/// totals, and by default the history store).
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
    #[serde(with = "crate::config::values::duration")]
    pub raw_retention: Duration,
    /// How long hourly aggregates are kept (uptime over days, the 90-day bar).
    #[serde(with = "crate::config::values::duration")]
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

impl History {
    fn validate(&mut self, ctx: &mut BuildContext) {
        if self.raw_retention < Duration::from_secs(60) {
            ctx.error("history.raw_retention", "must be at least 1m");
        }
        if self.hourly_retention < Duration::from_secs(3600) {
            ctx.error("history.hourly_retention", "must be at least 1h");
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
                    "history.path",
                    format!("{} is a folder; name a file", resolved.display()),
                );
            } else if parent.is_some_and(|p| !p.is_dir()) {
                ctx.error(
                    "history.path",
                    format!("folder {} does not exist", parent.unwrap_or(Path::new(".")).display()),
                );
            } else {
                // SQLite writes the file and, beside it, its -wal and -shm files.
                let folder = parent.unwrap_or(Path::new("."));
                if let Err(e) = check_writable_dir(folder) {
                    ctx.error(
                        "history.path",
                        format!("cannot write in folder {}: {e}", folder.display()),
                    );
                } else if resolved.exists()
                    && let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(&resolved)
                {
                    ctx.error(
                        "history.path",
                        format!("cannot open {} for writing: {e}", resolved.display()),
                    );
                }
            }
            self.path = Some(resolved);
        }
    }
}

/// What to do when a probe's alert asks for remediation (carried out by `vigil receiver`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct Remediation {
    /// Restart a Kubernetes workload (the annotation patch `kubectl rollout restart` makes).
    pub kubernetes: Option<KubernetesWorkload>,
    /// Restart a Docker container.
    pub docker: Option<DockerContainer>,
}

/// A Kubernetes workload to restart: a namespace and exactly one of the workload keys.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct KubernetesWorkload {
    /// Namespace of the workload.
    pub namespace: String,
    /// A Deployment name.
    pub deployment: Option<String>,
    /// A StatefulSet name.
    pub statefulset: Option<String>,
    /// A DaemonSet name.
    pub daemonset: Option<String>,
}

/// A Docker container to restart, by name.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct DockerContainer {
    /// The container's name.
    pub container: String,
}

impl Remediation {
    /// The action label value (`kubernetes_rollout_restart`, `docker_restart`).
    pub fn action(&self) -> &'static str {
        if self.kubernetes.is_some() {
            "kubernetes_rollout_restart"
        } else {
            "docker_restart"
        }
    }

    fn validate(&self, ctx: &mut BuildContext, path: &str) {
        match (&self.kubernetes, &self.docker) {
            (Some(_), Some(_)) | (None, None) => {
                ctx.error(path, "set exactly one of `kubernetes` or `docker`");
            }
            (Some(k), None) => {
                let set = [&k.deployment, &k.statefulset, &k.daemonset]
                    .iter()
                    .filter(|w| w.is_some())
                    .count();
                if set != 1 {
                    ctx.error(
                        &format!("{path}.kubernetes"),
                        "set exactly one of `deployment`, `statefulset` or `daemonset`",
                    );
                }
            }
            (None, Some(_)) => {}
        }
    }
}

/// A validated, self-scheduled probe.
#[derive(Clone, Debug)]
pub struct ProbeDef {
    /// Unique name, the `probe` label.
    pub name: String,
    /// Its timing, defaults resolved.
    pub timing: Timing,
    /// User labels (global merged with the probe's own), sorted by name.
    pub labels: Arc<[(String, String)]>,
    /// The compiled probe.
    pub probe: Probe,
    /// The target as written (URL, address); used by `check`.
    pub target: String,
    /// The target for display: credentials and secret-looking query values removed.
    pub display_target: String,
    /// Declared remediation, if any.
    pub remediation: Option<Remediation>,
    /// Freshness kinds: their age thresholds.
    pub freshness: Option<Thresholds>,
    /// Its status page settings.
    pub status_page: ProbePage,
    /// Remind every this many DOWN runs in a row (`vigil_probe_reminder_timestamp_seconds`).
    pub remind_every: Option<u32>,
    /// Changes whenever anything that defines this probe changes, files it reads included.
    pub fingerprint: u64,
}

impl ProbeDef {
    /// The probe's kind.
    pub fn kind(&self) -> Kind {
        self.probe.kind()
    }
}

/// A validated `/probe` module.
#[derive(Clone, Debug)]
pub struct ModuleDef {
    /// Timeout, thresholds and retries (interval unused).
    pub timing: Timing,
    /// The compiled probe; the target comes with each request.
    pub probe: Probe,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where it was read from.
    pub source: Source,
    /// Self-scheduled probes, in file order.
    pub probes: Vec<ProbeDef>,
    /// `/probe` modules by name.
    pub modules: BTreeMap<String, ModuleDef>,
    /// At most this many probe attempts run at once.
    pub concurrency: usize,
    /// Where vigil keeps state across restarts.
    pub state_dir: StateDir,
    /// The Docker inventory.
    pub docker: crate::inventory::docker::Config,
    /// `vigil receiver`'s settings, when the config has them.
    pub receiver: Option<Arc<crate::receiver::Settings>>,
    /// The status page.
    pub status_page: StatusPage,
    /// The history store.
    pub history: History,
    /// The Kubernetes inventory (disabled unless the `kubernetes:` section enables it).
    pub kubernetes: crate::inventory::kubernetes::Config,
    /// Which query parameters and headers hold secrets (built-in words plus `secret_names`).
    pub secret_names: SecretNames,
}

/// One problem in a config, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path (`probes.2.url`); empty for the document itself.
    pub path: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", display_path(&self.path))?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors {
    /// Which config.
    pub source: String,
    /// The problems, in file order where lines are known.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(f, "{}: {n} error{}", self.source, if n == 1 { "" } else { "s" })?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// `probes.2.url` -> `probes[2].url`.
fn display_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 4);
    for (i, part) in path.split('.').enumerate() {
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(part);
            out.push(']');
        } else {
            if i > 0 {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

/// State carried while a config is built: errors found so far, where keys are, files read.
pub struct BuildContext {
    errors: Vec<ConfigError>,
    lines: KeyLines,
    base_dir: PathBuf,
    files: DefaultHasher,
    secret_names: SecretNames,
    attempt_timeout: Option<Duration>,
}

impl BuildContext {
    fn new(lines: KeyLines, base_dir: PathBuf) -> Self {
        Self {
            errors: Vec::new(),
            lines,
            base_dir,
            files: DefaultHasher::new(),
            secret_names: SecretNames::default(),
            attempt_timeout: None,
        }
    }

    /// Which query parameters and headers hold secrets, as this config says.
    pub fn secret_names(&self) -> &SecretNames {
        &self.secret_names
    }

    /// The timeout of one attempt of the probe being built (`None` for a `/probe` module, whose
    /// timeout may be shortened by each request).
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.attempt_timeout
    }

    /// Records an error at `path` (dotted).
    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        let line = self.lines.line_of(path);
        self.errors.push(ConfigError {
            path: path.to_string(),
            line,
            message: message.into(),
        });
    }

    /// Decodes `value` (found at `path`) as `T`, recording every error it reports.
    pub fn deserialize<T: for<'de> Deserialize<'de>>(&mut self, value: &Value, path: &str) -> Option<T> {
        match value.deserialize::<T>() {
            Ok(v) => Some(v),
            Err(errors) => {
                for e in errors {
                    self.decode_error(path, &e);
                }
                None
            }
        }
    }

    /// Like [`BuildContext::deserialize`] for a struct written as a mapping, but reports every
    /// key that is wrong, not only the first one serde meets: on failure each key is decoded
    /// alone (missing keys are reported only when no key is wrong).
    pub fn deserialize_struct<T: for<'de> Deserialize<'de>>(&mut self, value: &Value, path: &str) -> Option<T> {
        if let Ok(v) = value.deserialize::<T>() {
            return Some(v);
        }
        let Some(dict) = value.as_dict() else {
            return self.deserialize(value, path);
        };
        let before = self.errors.len();
        for (key, item) in dict {
            let alone = Value::from(BTreeMap::from([(key.clone(), item.clone())]));
            if let Err(errors) = alone.deserialize::<T>() {
                for e in errors {
                    if !matches!(e.kind, figment::error::Kind::MissingField(_)) {
                        self.decode_error(path, &e);
                    }
                }
            }
        }
        if self.errors.len() == before {
            self.deserialize(value, path)
        } else {
            None
        }
    }

    fn decode_error(&mut self, path: &str, e: &figment::Error) {
        let mut full = path.to_string();
        for part in &e.path {
            if !full.is_empty() {
                full.push('.');
            }
            full.push_str(part);
        }
        let message = match &e.kind {
            figment::error::Kind::UnknownField(field, expected) => {
                if e.path.last() != Some(field) {
                    full = join(&full, field);
                }
                format!("unknown key `{field}`, expected one of: {}", expected.join(", "))
            }
            figment::error::Kind::MissingField(field) => {
                format!("missing key `{field}`")
            }
            kind => kind.to_string(),
        };
        self.error(&full, message);
    }

    /// Resolves a path from the config against the config file's folder.
    pub fn resolve_path(&self, file: &Path) -> PathBuf {
        if file.is_absolute() {
            file.to_path_buf()
        } else {
            self.base_dir.join(file)
        }
    }

    /// Reads a file named at `path` (a regular file of at most [`NAMED_FILE_LIMIT`] bytes);
    /// its content joins the probe's fingerprint.
    pub fn read_file(&mut self, path: &str, file: &Path) -> Option<Vec<u8>> {
        let resolved = self.resolve_path(file);
        match read_regular(&resolved, NAMED_FILE_LIMIT) {
            Ok(bytes) => {
                bytes.hash(&mut self.files);
                Some(bytes)
            }
            Err(e) => {
                self.error(path, format!("cannot read {}: {e}", resolved.display()));
                None
            }
        }
    }

    /// Reads a secret (inline or from a file), trimming one trailing newline.
    pub fn secret(&mut self, path: &str, source: &SecretSource) -> Option<Secret> {
        match source {
            SecretSource::Inline(value) => Some(Secret::new(value.as_str())),
            SecretSource::File { file } => {
                let bytes = self.read_file(path, file)?;
                match String::from_utf8(bytes) {
                    Ok(text) => {
                        let text = text.strip_suffix('\n').unwrap_or(&text);
                        let text = text.strip_suffix('\r').unwrap_or(text);
                        Some(Secret::new(text))
                    }
                    Err(_) => {
                        self.error(path, format!("{} is not UTF-8 text", file.display()));
                        None
                    }
                }
            }
        }
    }

    fn take_file_digest(&mut self) -> u64 {
        std::mem::replace(&mut self.files, DefaultHasher::new()).finish()
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Label names a user may not take: vigil's own labels and Prometheus' target labels.
const RESERVED_LABELS: &[&str] = &[
    "probe",
    "kind",
    "status",
    "reason",
    "phase",
    "level",
    "le",
    "target",
    "action",
    "instance",
    "job",
    "step",
    "remediate",
    "alertname",
];

/// The values the user label `severity` may take: the alerting tiers (docs/alerting.md).
pub const SEVERITIES: &[&str] = &["critical", "high", "warning", "business", "info"];

fn valid_label_name(name: &str) -> bool {
    name.chars()
        .enumerate()
        .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()))
        && !name.is_empty()
}

fn check_labels(ctx: &mut BuildContext, path: &str, labels: &BTreeMap<String, String>) {
    for name in labels.keys() {
        let key = format!("{path}.{name}");
        if !valid_label_name(name) {
            ctx.error(
                &key,
                format!("`{name}` is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
            );
        } else if name.starts_with("__") {
            ctx.error(
                &key,
                format!("label names starting with `__` are reserved for Prometheus (`{name}`)"),
            );
        } else if RESERVED_LABELS.contains(&name.as_str()) {
            ctx.error(
                &key,
                format!("label `{name}` is set by vigil itself; pick another name"),
            );
        } else if name == "severity" && !SEVERITIES.contains(&labels[name].as_str()) {
            ctx.error(
                &key,
                format!(
                    "severity `{}` is not an alerting tier; expected one of: {}",
                    labels[name],
                    SEVERITIES.join(", ")
                ),
            );
        }
    }
}

/// `state_dir` must be a folder vigil can write in, or not exist yet (it is created).
fn check_state_dir(ctx: &mut BuildContext, dir: &Path) {
    if let Some(problem) = state_dir_problem(dir) {
        ctx.error("state_dir", problem);
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

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
}

impl Config {
    /// Reads and validates the config from `source`, with `VIGIL_*` environment overrides.
    pub fn load(source: &Source) -> Result<Config, ConfigErrors> {
        let fail = |errors| ConfigErrors {
            source: source.to_string(),
            errors,
        };
        let read = |path: &Path| {
            read_regular(path, CONFIG_FILE_LIMIT).and_then(|bytes| {
                String::from_utf8(bytes)
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
            })
        };
        let (text, base_dir) = match source {
            Source::File(path) => match read(path) {
                Ok(text) => (text, path.parent().map(Path::to_path_buf).unwrap_or_default()),
                Err(e) => {
                    return Err(fail(vec![ConfigError {
                        path: String::new(),
                        line: None,
                        message: format!("cannot read the file: {e}"),
                    }]));
                }
            },
            Source::Embedded => (EMBEDDED_DEFAULT.to_string(), PathBuf::from(".")),
        };
        Self::from_yaml(source.clone(), &text, base_dir, env_overrides()).map_err(fail)
    }

    /// Validates a config given as text (`base_dir` resolves relative file paths).
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
        Self::from_yaml(Source::Embedded, text, base_dir.to_path_buf(), env_overrides()).map_err(|errors| {
            ConfigErrors {
                source: "config".into(),
                errors,
            }
        })
    }

    fn from_yaml(source: Source, text: &str, base_dir: PathBuf, env: Env) -> Result<Config, Vec<ConfigError>> {
        // A byte-order mark is not content (editors on Windows write one).
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        // YAML allows no control characters but tab and line breaks; say where one is.
        if let Some((line, c)) = text.lines().enumerate().find_map(|(i, l)| {
            l.chars()
                .find(|&c| c.is_control() && c != '\t' && c != '\r')
                .map(|c| (i + 1, c))
        }) {
            return Err(vec![ConfigError {
                path: String::new(),
                line: Some(line),
                message: format!("invalid YAML: control character U+{:04X} is not allowed", u32::from(c)),
            }]);
        }
        let lines = KeyLines::parse(text).map_err(|e| {
            vec![ConfigError {
                path: String::new(),
                line: Some(e.line),
                message: e.message,
            }]
        })?;
        let duplicates = lines.duplicates.clone();
        let mut ctx = BuildContext::new(lines, base_dir);
        for d in duplicates {
            let key = d.path.rsplit('.').next().unwrap_or_default().to_string();
            ctx.errors.push(ConfigError {
                path: d.path,
                line: Some(d.line),
                message: format!("key `{key}` is given twice (first on line {})", d.first),
            });
        }
        let figment = if text.trim().is_empty() {
            Figment::new()
        } else {
            Figment::from(Yaml::string(text))
        };
        let figment = figment.merge(env);
        let root: BTreeMap<String, Value> = match figment.extract() {
            Ok(root) => root,
            Err(errors) => {
                for e in errors {
                    ctx.error(&e.path.join("."), e.kind.to_string());
                }
                return Err(ctx.errors);
            }
        };

        let mut defaults = Defaults::default();
        let mut global_labels = BTreeMap::new();
        let mut concurrency = 512usize;
        let mut state_dir = StateDir::Unset;
        let mut docker = crate::inventory::docker::Config::default();
        let mut receiver = None;
        let mut status_page = StatusPage::default();
        let mut history = History::default();
        let mut kubernetes = crate::inventory::kubernetes::Config::default();
        let mut secret_names = SecretNames::default();
        for (key, value) in &root {
            match key.as_str() {
                "defaults" => defaults = ctx.deserialize_struct(value, key).unwrap_or_default(),
                "labels" => {
                    global_labels = ctx.deserialize(value, key).unwrap_or_default();
                    check_labels(&mut ctx, key, &global_labels);
                }
                "concurrency" => match ctx.deserialize::<u64>(value, key) {
                    Some(0) => ctx.error(key, "must be at least 1"),
                    Some(n) if n > MAX_CONCURRENCY as u64 => {
                        ctx.error(key, format!("must be at most {MAX_CONCURRENCY}"));
                    }
                    Some(n) => concurrency = usize::try_from(n).unwrap_or(MAX_CONCURRENCY),
                    None => {}
                },
                "state_dir" => match ctx.deserialize::<PathBuf>(value, key) {
                    Some(dir) if dir == Path::new(MEMORY) => state_dir = StateDir::Memory,
                    Some(dir) if dir.as_os_str().is_empty() => {
                        ctx.error(
                            key,
                            format!("must name a folder, or `{MEMORY}` to keep state in memory only"),
                        );
                    }
                    Some(dir) => {
                        let dir = ctx.resolve_path(&dir);
                        check_state_dir(&mut ctx, &dir);
                        state_dir = StateDir::Dir(dir);
                    }
                    None => {}
                },
                "docker" => {
                    if let Some(config) = ctx.deserialize_struct::<crate::inventory::docker::Config>(value, key) {
                        config.validate(&mut ctx, key);
                        if config.relist_interval > values::MAX_DURATION {
                            ctx.error(
                                &join(key, "relist_interval"),
                                format!("must be at most {}d", values::MAX_DURATION.as_secs() / 86_400),
                            );
                        }
                        docker = config;
                    }
                }
                "receiver" => {
                    if let Some(spec) = ctx.deserialize_struct::<crate::receiver::Spec>(value, key) {
                        receiver = crate::receiver::build(spec, &mut ctx, key).map(Arc::new);
                    }
                }
                "status_page" => {
                    if let Some(page) = ctx.deserialize_struct::<StatusPage>(value, key) {
                        page.validate(&mut ctx);
                        status_page = page;
                    }
                }
                "history" => {
                    if let Some(mut h) = ctx.deserialize_struct::<History>(value, key) {
                        h.validate(&mut ctx);
                        history = h;
                    }
                }
                "secret_names" => {
                    let words: Vec<String> = ctx.deserialize(value, key).unwrap_or_default();
                    for (i, word) in words.iter().enumerate() {
                        let at = format!("{key}.{i}");
                        if word.is_empty() {
                            ctx.error(&at, "must not be empty");
                        } else if !word
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                        {
                            ctx.error(&at, format!("`{word}` may hold only letters, digits, `_`, `-` and `.`"));
                        }
                    }
                    secret_names = SecretNames::new(words);
                }
                "kubernetes" => {
                    kubernetes = crate::inventory::kubernetes::Config::build(&mut ctx, key, value).unwrap_or_default();
                }
                "probes" | "modules" => {}
                other => ctx.error(
                    other,
                    format!("unknown key `{other}`, expected one of: {}", TOP_KEYS.join(", ")),
                ),
            }
        }
        check_timing(&mut ctx, "defaults", &resolve(&defaults, &Common::default()));
        ctx.secret_names = secret_names.clone();

        let mut probes = Vec::new();
        if let Some(value) = root.get("probes") {
            let items: Vec<Value> = ctx.deserialize(value, "probes").unwrap_or_default();
            let mut names = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                let path = format!("probes.{i}");
                if let Some(def) = build_probe(&mut ctx, &path, item, &defaults, &global_labels, &mut names) {
                    probes.push(def);
                }
            }
        }

        let mut modules = BTreeMap::new();
        if let Some(value) = root.get("modules") {
            let items: BTreeMap<String, Value> = ctx.deserialize(value, "modules").unwrap_or_default();
            for (name, item) in &items {
                let path = format!("modules.{name}");
                if let Some(def) = build_module(&mut ctx, &path, item, &defaults) {
                    modules.insert(name.clone(), def);
                }
            }
        }

        if ctx.errors.is_empty() {
            let mut config = Config {
                source,
                probes,
                modules,
                concurrency,
                state_dir,
                docker,
                receiver,
                status_page,
                history,
                kubernetes,
                secret_names,
            };
            config.derive_history_path();
            Ok(config)
        } else {
            ctx.errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
            Err(ctx.errors)
        }
    }
}

impl Config {
    /// Keeps state in `dir` when the config does not say where (`vigil run --storage.path`).
    pub fn default_state_dir(&mut self, dir: Option<&Path>) {
        if let (StateDir::Unset, Some(dir)) = (&self.state_dir, dir) {
            self.state_dir = StateDir::Dir(dir.to_path_buf());
            self.derive_history_path();
        }
    }

    /// With state on disk and no `history.path`, the history store is `history.db` beside it.
    fn derive_history_path(&mut self) {
        if let (Some(dir), None, false) = (self.state_dir.path(), &self.history.path, self.history.memory) {
            self.history.path = Some(dir.join("history.db"));
        }
    }
}

/// `VIGIL_*` variables whose first key is a config key (`VIGIL_DEFAULTS__INTERVAL` sets
/// `defaults.interval`); others, such as a `VIGIL_VERSION` set by a deployment, are not config.
fn env_overrides() -> Env {
    Env::prefixed("VIGIL_").split("__").filter(|key| {
        let first = key.as_str().split('.').next().unwrap_or_default();
        TOP_KEYS.iter().any(|top| top.eq_ignore_ascii_case(first))
    })
}

fn resolve(defaults: &Defaults, common: &Common) -> Timing {
    Timing {
        interval: common.interval.unwrap_or(defaults.interval),
        timeout: common.timeout.unwrap_or(defaults.timeout),
        degraded_after: common.degraded_after.unwrap_or(defaults.degraded_after),
        down_after: common.down_after.unwrap_or(defaults.down_after),
        retries: common.retries.unwrap_or(defaults.retries),
        retry_delay: common.retry_delay.unwrap_or(defaults.retry_delay),
    }
}

fn check_timing(ctx: &mut BuildContext, path: &str, timing: &Timing) {
    let show = |d: Duration| humantime::format_duration(d).to_string();
    if timing.interval.is_zero() {
        ctx.error(&join(path, "interval"), "must be greater than 0");
    }
    if timing.timeout.is_zero() {
        ctx.error(&join(path, "timeout"), "must be greater than 0");
    } else if timing.timeout >= timing.interval {
        ctx.error(
            &join(path, "timeout"),
            format!(
                "timeout ({}) must be shorter than interval ({})",
                show(timing.timeout),
                show(timing.interval)
            ),
        );
    }
    if timing.retries > MAX_RETRIES {
        ctx.error(&join(path, "retries"), format!("must be at most {MAX_RETRIES}"));
    }
    if timing.degraded_after > timing.down_after {
        ctx.error(
            &join(path, "degraded_after"),
            format!(
                "degraded_after ({}) must not exceed down_after ({})",
                show(timing.degraded_after),
                show(timing.down_after)
            ),
        );
    }
}

/// Splits a probe's keys into the common ones and its kind's; `None` after recording errors.
fn split_keys(ctx: &mut BuildContext, path: &str, item: &Value, common_keys: &[&str]) -> Option<(Kind, Value, Value)> {
    let dict: BTreeMap<String, Value> = ctx.deserialize(item, path)?;
    let Some(kind_value) = dict.get("kind") else {
        ctx.error(path, format!("missing key `kind` (one of: {})", Kind::NAMES.join(", ")));
        return None;
    };
    let kind_path = join(path, "kind");
    let kind_name: String = ctx.deserialize(kind_value, &kind_path)?;
    let Some(kind) = Kind::from_name(&kind_name) else {
        ctx.error(
            &kind_path,
            format!(
                "unknown kind `{kind_name}`, expected one of: {}",
                Kind::NAMES.join(", ")
            ),
        );
        return None;
    };
    let mut common = BTreeMap::new();
    let mut own = BTreeMap::new();
    for (key, value) in dict {
        if key == "kind" {
            continue;
        }
        if common_keys.contains(&key.as_str()) {
            common.insert(key, value);
        } else if PROBE_KEYS.contains(&key.as_str()) {
            ctx.error(&join(path, &key), format!("`{key}` does not apply to a /probe module"));
        } else {
            own.insert(key, value);
        }
    }
    Some((kind, Value::from(common), Value::from(own)))
}

fn build_probe(
    ctx: &mut BuildContext,
    path: &str,
    item: &Value,
    defaults: &Defaults,
    global_labels: &BTreeMap<String, String>,
    names: &mut HashSet<String>,
) -> Option<ProbeDef> {
    let errors_before = ctx.errors.len();
    ctx.take_file_digest();
    let (kind, common_value, own) = split_keys(ctx, path, item, PROBE_KEYS)?;
    let common: Common = ctx.deserialize_struct(&common_value, path).unwrap_or_default();
    let name_given = common_value.as_dict().is_some_and(|d| d.contains_key("name"));
    let name = match &common.name {
        Some(name) if valid_name(name) => {
            if !names.insert(name.clone()) {
                ctx.error(
                    &join(path, "name"),
                    format!("probe name `{name}` is used twice; names must be unique"),
                );
            }
            name.clone()
        }
        Some(name) => {
            ctx.error(
                &join(path, "name"),
                format!(
                    "`{name}` is not a valid probe name (letters, digits and . _ - :, starting with a letter or digit)"
                ),
            );
            String::new()
        }
        // A name of the wrong type has been reported already.
        None if name_given => String::new(),
        None => {
            ctx.error(path, "missing key `name`");
            String::new()
        }
    };
    let timing = resolve(defaults, &common);
    if common.overrides_timing() || common.retries.is_some() {
        // Otherwise the defaults were checked once, and their error stands for every probe.
        check_timing(ctx, path, &timing);
    }
    check_labels(ctx, &join(path, "labels"), &common.labels);
    if let Some(remediation) = &common.remediation {
        remediation.validate(ctx, &join(path, "remediation"));
    }
    if common.remind_every == Some(0) {
        ctx.error(&join(path, "remind_every"), "must be at least 1 (DOWN runs in a row)");
    }
    ctx.attempt_timeout = Some(timing.timeout);
    let built = Probe::build(kind, &own, ctx, path, Role::Scheduled);
    ctx.attempt_timeout = None;
    if ctx.errors.len() > errors_before {
        return None;
    }
    let built = built?;
    let mut labels = global_labels.clone();
    labels.extend(common.labels.clone());
    let labels: Arc<[(String, String)]> = labels.into_iter().collect();
    // A kind without a target of its own (heartbeat) is known by its name.
    let target = built.target.unwrap_or_else(|| name.clone());

    let mut hasher = DefaultHasher::new();
    serde_json::to_string(item).unwrap_or_default().hash(&mut hasher);
    timing.hash(&mut hasher);
    labels.hash(&mut hasher);
    ctx.take_file_digest().hash(&mut hasher);
    Some(ProbeDef {
        display_target: ctx.secret_names.redact_target(&target),
        name,
        timing,
        labels,
        probe: built.settings,
        target,
        remediation: common.remediation,
        freshness: built.freshness,
        status_page: common.status_page,
        remind_every: common.remind_every,
        fingerprint: hasher.finish(),
    })
}

fn build_module(ctx: &mut BuildContext, path: &str, item: &Value, defaults: &Defaults) -> Option<ModuleDef> {
    let errors_before = ctx.errors.len();
    let (kind, common_value, own) = split_keys(ctx, path, item, MODULE_KEYS)?;
    let common: Common = ctx.deserialize_struct(&common_value, path).unwrap_or_default();
    let mut timing = resolve(defaults, &common);
    let own_timing = common.overrides_timing() || common.retries.is_some();
    // A module runs when scraped, not on an interval: only its timeout and thresholds matter.
    timing.interval = Duration::MAX;
    if own_timing {
        check_timing(ctx, path, &timing);
    }
    let built = Probe::build(kind, &own, ctx, path, Role::Module);
    if ctx.errors.len() > errors_before {
        return None;
    }
    Some(ModuleDef {
        timing,
        probe: built?.settings,
    })
}

#[cfg(test)]
mod tests;
