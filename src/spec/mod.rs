//! The building blocks of the config, and nothing else: where a key is ([`KeyPath`], lines),
//! what went wrong ([`ConfigError`]), the context every section and probe kind builds itself
//! in ([`BuildContext`]), and the value types they share ([`values`]). A leaf: it imports no
//! other module of vigil but `secret`, so every owner of a section can use it without the
//! config importing them and them importing the config back.

mod fields;
pub mod lines;
pub mod values;

use std::collections::BTreeMap;
use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::value::Value;
use serde::Deserialize;

use crate::secret::{Secret, SecretNames, SecretSource};
pub use fields::fields_of;
use lines::KeyLines;

/// The largest config file read.
pub const CONFIG_FILE_LIMIT: u64 = 64 << 20;
/// The largest file a config names (a body, a certificate, a secret) that is read.
pub const NAMED_FILE_LIMIT: u64 = 16 << 20;
/// Where a key is in the document: dotted, with list indices as numbers (`probes.2.url`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyPath(String);

impl KeyPath {
    /// The document itself.
    pub fn root() -> KeyPath {
        KeyPath(String::new())
    }

    /// `self.key`.
    pub fn key(&self, key: &str) -> KeyPath {
        KeyPath(join(&self.0, key))
    }

    /// `self.index`, an item of a list.
    pub fn index(&self, index: usize) -> KeyPath {
        KeyPath(join(&self.0, &index.to_string()))
    }

    /// The dotted form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for KeyPath {
    fn from(path: &str) -> Self {
        KeyPath(path.to_string())
    }
}

impl AsRef<str> for KeyPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&display_path(&self.0))
    }
}

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
pub fn check_writable_dir(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".vigil-check-{}", std::process::id()));
    std::fs::OpenOptions::new().write(true).create_new(true).open(&probe)?;
    std::fs::remove_file(&probe)
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
pub fn display_path(path: &str) -> String {
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
    /// A context for the document whose keys are at `lines`, relative paths taken from
    /// `base_dir`.
    pub fn new(lines: KeyLines, base_dir: PathBuf) -> Self {
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

    /// Says which query parameters and headers hold secrets (the `secret_names` section).
    pub fn set_secret_names(&mut self, names: SecretNames) {
        self.secret_names = names;
    }

    /// Says how long one attempt of the probe being built may take (`None` between probes).
    pub fn set_attempt_timeout(&mut self, timeout: Option<Duration>) {
        self.attempt_timeout = timeout;
    }

    /// Records an error at `path` (a [`KeyPath`] or a dotted `&str`).
    pub fn error(&mut self, path: impl AsRef<str>, message: impl Into<String>) {
        let path = path.as_ref();
        let line = self.lines.line_of(path);
        self.errors.push(ConfigError {
            path: path.to_string(),
            line,
            message: message.into(),
        });
    }

    /// Records an error at `path` whose line is known otherwise (a key given twice).
    pub fn error_at_line(&mut self, path: &str, line: usize, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.to_string(),
            line: Some(line),
            message: message.into(),
        });
    }

    /// Records an error about the document itself, at `line` when known.
    pub fn document_error(&mut self, line: Option<usize>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: String::new(),
            line,
            message: message.into(),
        });
    }

    /// How many errors were recorded so far (to tell whether a part added any).
    pub fn error_count(&self) -> usize {
        self.errors.len()
    }

    /// The errors, in file order where lines are known; `Ok` when there are none.
    pub fn finish(mut self) -> Result<(), Vec<ConfigError>> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            self.errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
            Err(self.errors)
        }
    }

    /// Decodes `value` (found at `path`) as `T`, recording every error it reports.
    pub fn deserialize<T: for<'de> Deserialize<'de>>(&mut self, value: &Value, path: impl AsRef<str>) -> Option<T> {
        let path = path.as_ref();
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
    pub fn deserialize_struct<T: for<'de> Deserialize<'de>>(
        &mut self,
        value: &Value,
        path: impl AsRef<str>,
    ) -> Option<T> {
        let path = path.as_ref();
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
    pub fn read_file(&mut self, path: impl AsRef<str>, file: &Path) -> Option<Vec<u8>> {
        let path = path.as_ref();
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

    /// Request headers (or gRPC metadata) from `{name: value}` at `path`, a value possibly
    /// `{file: PATH}`. `reserved` says why a name (lowercase) is not the config's to set, if it
    /// is not. A value read from a file, named like a secret, `Authorization` or `Cookie` is
    /// marked sensitive (never shown, never sent to another origin).
    pub fn headers(
        &mut self,
        path: &str,
        headers: &BTreeMap<String, SecretSource>,
        reserved: impl Fn(&str) -> Option<&'static str>,
    ) -> Vec<(http::HeaderName, http::HeaderValue)> {
        let mut out = Vec::new();
        for (name, source) in headers {
            let key = format!("{path}.{name}");
            let Ok(header) = http::HeaderName::from_bytes(name.as_bytes()) else {
                self.error(&key, format!("`{name}` is not a valid header name"));
                continue;
            };
            if let Some(why) = reserved(header.as_str()) {
                self.error(&key, format!("`{name}` is set by {why}"));
                continue;
            }
            let Some(secret) = self.secret(&key, source) else {
                continue;
            };
            match http::HeaderValue::from_str(secret.expose()) {
                Ok(mut value) => {
                    value.set_sensitive(
                        matches!(source, SecretSource::File { .. })
                            || self.secret_names().is_secret(name)
                            || header == http::header::AUTHORIZATION
                            || header == http::header::COOKIE,
                    );
                    out.push((header, value));
                }
                Err(_) => self.error(&key, "the header value holds characters a header cannot carry"),
            }
        }
        out
    }

    /// Reads a secret (inline or from a file), trimming one trailing newline.
    pub fn secret(&mut self, path: impl AsRef<str>, source: &SecretSource) -> Option<Secret> {
        let path = path.as_ref();
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

    /// The digest of the files read since the last call (a probe's fingerprint includes it).
    pub fn take_file_digest(&mut self) -> u64 {
        std::mem::replace(&mut self.files, DefaultHasher::new()).finish()
    }
}

/// `path.key`, or `key` at the top.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The value of `state_dir` and `history.path` that keeps state in memory only.
pub const MEMORY: &str = ":memory:";

/// A top-level key of the config: it decodes, validates and builds itself, in its owner's
/// module. The config lists its sections once (`config::sections!`): the keys accepted at the
/// top are derived from that list, and every section is built the same way, by
/// [`build_section`].
pub trait Section: Sized + Default {
    /// The key.
    const KEY: &'static str;
    /// What the key holds, decoded with unknown keys refused.
    type Spec: for<'de> Deserialize<'de>;
    /// Validates `spec`, found at `at`, and reads the files it names; `None` after recording
    /// errors (the section then keeps its default, so the rest still validates).
    fn build(spec: Self::Spec, cx: &mut BuildContext, at: &KeyPath) -> Option<Self>;
}

/// Section `S` from its value in the document (`None`: the key is absent, `S`'s default).
pub fn build_section<S: Section>(value: Option<&Value>, cx: &mut BuildContext) -> S {
    let Some(value) = value else {
        return S::default();
    };
    let at = KeyPath::root().key(S::KEY);
    cx.deserialize_struct::<S::Spec>(value, &at)
        .and_then(|spec| S::build(spec, cx, &at))
        .unwrap_or_default()
}

/// Section `S` decoded from its value but not built: no file it names is read (for a process
/// that does not use the section, such as `vigil run` and the receiver's settings).
pub fn decode_section<S: Section>(value: Option<&Value>, cx: &mut BuildContext) {
    if let Some(value) = value {
        let at = KeyPath::root().key(S::KEY);
        let _ = cx.deserialize_struct::<S::Spec>(value, &at);
    }
}

/// `secret_names:`: words that mark a query parameter or header as secret, besides the
/// built-in ones (see [`SecretNames`]); the probes are built with them.
impl Section for SecretNames {
    const KEY: &'static str = "secret_names";
    type Spec = Vec<String>;

    fn build(words: Vec<String>, cx: &mut BuildContext, at: &KeyPath) -> Option<Self> {
        let before = cx.error_count();
        for (i, word) in words.iter().enumerate() {
            if word.is_empty() {
                cx.error(at.index(i), "must not be empty");
            } else if !word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                cx.error(
                    at.index(i),
                    format!("`{word}` may hold only letters, digits, `_`, `-` and `.`"),
                );
            }
        }
        let names = SecretNames::new(words);
        cx.set_secret_names(names.clone());
        (cx.error_count() == before).then_some(names)
    }
}

/// Label names a user may not take: vigil's own labels, the alert rules' and Prometheus'.
pub const RESERVED_LABELS: &[&str] = &[
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

/// Whether `name` is a valid Prometheus label name.
pub fn valid_label_name(name: &str) -> bool {
    name.chars()
        .enumerate()
        .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()))
        && !name.is_empty()
}

/// Checks user labels (names valid and not reserved, `severity` a tier) found at `at`.
pub fn check_labels(cx: &mut BuildContext, at: &KeyPath, labels: &BTreeMap<String, String>) {
    for (name, value) in labels {
        let key = at.key(name);
        if !valid_label_name(name) {
            cx.error(
                &key,
                format!("`{name}` is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
            );
        } else if name.starts_with("__") {
            cx.error(
                &key,
                format!("label names starting with `__` are reserved for Prometheus (`{name}`)"),
            );
        } else if RESERVED_LABELS.contains(&name.as_str()) {
            cx.error(
                &key,
                format!("label `{name}` is set by vigil itself; pick another name"),
            );
        } else if name == "severity" && !SEVERITIES.contains(&value.as_str()) {
            cx.error(
                &key,
                format!(
                    "severity `{value}` is not an alerting tier; expected one of: {}",
                    SEVERITIES.join(", ")
                ),
            );
        }
    }
}
