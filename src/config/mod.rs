//! Configuration: a YAML file (or the embedded default) merged with `VIGIL_*` environment
//! variables, decoded and validated in one pass that collects every error with its key path and
//! line. A [`Config`] that exists is valid: regexes are compiled, files read, probes built.
//!
//! Each top-level key is a [`Section`] that builds itself in its owner's module (the
//! [`sections!`] list below is the only place that names them, so the accepted keys are
//! derived from it); the probes and `/probe` modules come last, built on the sections before
//! them. Each process builds what it uses: `vigil run` a [`Config`] (the receiver's section is
//! only decoded, its token never read), `vigil receiver` a [`ReceiverConfig`] (its section and
//! the probes' remediations, no probe built, no probe secret read), `vigil check` both.

pub mod probes;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Yaml};
use figment::value::Value;

use crate::inventory::{docker, kubernetes};
use crate::receiver::ReceiverSection;
use crate::receiver::remediation::Remediation;
use crate::secret::SecretNames;
use crate::spec::lines::KeyLines;
pub use crate::spec::{BuildContext, CONFIG_FILE_LIMIT, ConfigError, ConfigErrors, KeyPath, NAMED_FILE_LIMIT};
use crate::spec::{Section, build_section, decode_section, read_regular};

pub use crate::history::settings::History;
pub use crate::persist::{StateDir, state_dir_problem};
pub use crate::status::settings::{ProbePage, StatusPage};
pub use probes::{Defaults, GlobalLabels, MAX_RETRIES, ModuleDef, ProbeDef, Timing};

/// The embedded default config: `examples/vigil.yml`, compiled in.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../examples/vigil.yml");

/// The most probe attempts the config may let run at once.
pub const MAX_CONCURRENCY: usize = 100_000;

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

/// `concurrency:`: at most this many probe attempts run at once (default 512).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Concurrency(pub usize);

impl Default for Concurrency {
    fn default() -> Self {
        Concurrency(512)
    }
}

impl Section for Concurrency {
    const KEY: &'static str = "concurrency";
    type Spec = u64;

    fn build(n: u64, cx: &mut BuildContext, at: &KeyPath) -> Option<Self> {
        match n {
            0 => {
                cx.error(at, "must be at least 1");
                None
            }
            n if n > MAX_CONCURRENCY as u64 => {
                cx.error(at, format!("must be at most {MAX_CONCURRENCY}"));
                None
            }
            n => Some(Concurrency(usize::try_from(n).unwrap_or(MAX_CONCURRENCY))),
        }
    }
}

/// `blackbox_config_file:`: a blackbox_exporter config file whose modules `/probe` serves too
/// (relative to this config's folder); `--blackbox.config-file` names one instead.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlackboxFile(pub Option<PathBuf>);

impl Section for BlackboxFile {
    const KEY: &'static str = "blackbox_config_file";
    type Spec = PathBuf;

    fn build(file: PathBuf, cx: &mut BuildContext, at: &KeyPath) -> Option<Self> {
        if file.as_os_str().is_empty() {
            cx.error(at, "must not be empty");
            return None;
        }
        Some(BlackboxFile(Some(cx.resolve_path(&file))))
    }
}

/// Declares the sections: the [`Sections`] struct, the keys, and how they are built, in order
/// (a later section may use what an earlier one set in the context: `secret_names` comes
/// before the probes that redact with it).
macro_rules! sections {
    ($($field:ident: $section:ty,)+) => {
        /// Every section of the config but the probes, the modules and the receiver's.
        #[derive(Clone, Debug, Default)]
        pub struct Sections { $(
            #[doc = concat!("`", stringify!($field), ":`")]
            pub $field: $section,
        )+ }

        /// The top-level keys: the sections', then `probes`, `modules` and `receiver`.
        pub const TOP_KEYS: &[&str] = &[$(<$section as Section>::KEY,)+ "probes", "modules", ReceiverSection::KEY];

        impl Sections {
            fn build(root: &BTreeMap<String, Value>, cx: &mut BuildContext) -> Sections {
                Sections { $(
                    $field: build_section::<$section>(root.get(<$section as Section>::KEY), cx),
                )+ }
            }
        }
    };
}

sections! {
    secret_names: SecretNames,
    metrics: crate::metrics::Settings,
    defaults: Defaults,
    labels: GlobalLabels,
    concurrency: Concurrency,
    state_dir: StateDir,
    docker: docker::Config,
    status_page: StatusPage,
    history: History,
    kubernetes: kubernetes::Config,
    blackbox_file: BlackboxFile,
}

/// A validated configuration, as `vigil run` uses it.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where it was read from.
    pub source: Source,
    /// Self-scheduled probes, in file order (shared with the tasks that run them).
    pub probes: Vec<std::sync::Arc<ProbeDef>>,
    /// `/probe` modules by name.
    pub modules: BTreeMap<String, ModuleDef>,
    /// At most this many probe attempts run at once.
    pub concurrency: usize,
    /// Where vigil keeps state across restarts.
    pub state_dir: StateDir,
    /// The Docker inventory.
    pub docker: docker::Config,
    /// The status page.
    pub status_page: StatusPage,
    /// The history store.
    pub history: History,
    /// The Kubernetes inventory (disabled unless the `kubernetes:` section enables it).
    pub kubernetes: kubernetes::Config,
    /// Which query parameters and headers hold secrets (built-in words plus `secret_names`).
    pub secret_names: SecretNames,
    /// The blackbox_exporter config file whose modules are among `modules`.
    pub blackbox_file: Option<PathBuf>,
    /// What the probes publish on `/metrics`.
    pub metrics: crate::metrics::Settings,
}

/// What `vigil receiver` reads of a config: its own section, the remediations the probes
/// declare, and where the Docker engine is.
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// Where it was read from.
    pub source: Source,
    /// `receiver:`, when the config has it.
    pub receiver: ReceiverSection,
    /// The remediations, by probe name, in file order.
    pub remediations: Vec<(String, Remediation)>,
    /// The Docker engine the restarts go to.
    pub docker: docker::Config,
}

/// A parsed document: where its keys are and its top-level values (environment overrides
/// merged in), or the errors that stop it being read at all.
struct Document {
    cx: BuildContext,
    root: BTreeMap<String, Value>,
}

impl Document {
    fn parse(text: &str, base_dir: PathBuf, env: Env) -> Result<Document, Vec<ConfigError>> {
        Self::parse_keys(text, base_dir, Some(env), TOP_KEYS)
    }

    /// A document whose top-level keys are `top_keys`, with `env` overrides when given.
    fn parse_keys(
        text: &str,
        base_dir: PathBuf,
        env: Option<Env>,
        top_keys: &[&str],
    ) -> Result<Document, Vec<ConfigError>> {
        let document_error = |line, message| {
            vec![ConfigError {
                path: String::new(),
                line,
                message,
            }]
        };
        // A byte-order mark is not content (editors on Windows write one).
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        // YAML allows no control characters but tab and line breaks; say where one is.
        if let Some((line, c)) = text.lines().enumerate().find_map(|(i, l)| {
            l.chars()
                .find(|&c| c.is_control() && c != '\t' && c != '\r')
                .map(|c| (i + 1, c))
        }) {
            return Err(document_error(
                Some(line),
                format!("invalid YAML: control character U+{:04X} is not allowed", u32::from(c)),
            ));
        }
        let lines = KeyLines::parse(text).map_err(|e| document_error(Some(e.line), e.message))?;
        let duplicates = lines.duplicates.clone();
        let mut cx = BuildContext::new(lines, base_dir);
        for d in duplicates {
            let key = d.path.rsplit('.').next().unwrap_or_default().to_string();
            cx.error_at_line(
                &d.path,
                d.line,
                format!("key `{key}` is given twice (first on line {})", d.first),
            );
        }
        let figment = if text.trim().is_empty() {
            Figment::new()
        } else {
            Figment::from(Yaml::string(text))
        };
        let figment = match env {
            Some(env) => figment.merge(env),
            None => figment,
        };
        match figment.extract::<BTreeMap<String, Value>>() {
            Ok(root) => {
                for key in root.keys() {
                    if !top_keys.contains(&key.as_str()) {
                        cx.error(
                            key.as_str(),
                            format!("unknown key `{key}`, expected one of: {}", top_keys.join(", ")),
                        );
                    }
                }
                Ok(Document { cx, root })
            }
            Err(errors) => {
                for e in errors {
                    cx.error(e.path.join("."), e.kind.to_string());
                }
                Err(cx.finish().err().unwrap_or_default())
            }
        }
    }

    /// The text and folder of `source`.
    fn read(source: &Source) -> Result<(String, PathBuf), ConfigErrors> {
        let read = |path: &Path| {
            read_regular(path, CONFIG_FILE_LIMIT).and_then(|bytes| {
                String::from_utf8(bytes)
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
            })
        };
        match source {
            Source::File(path) => match read(path) {
                Ok(text) => Ok((text, path.parent().map(Path::to_path_buf).unwrap_or_default())),
                Err(e) => Err(ConfigErrors {
                    source: source.to_string(),
                    errors: vec![ConfigError {
                        path: String::new(),
                        line: None,
                        message: format!("cannot read the file: {e}"),
                    }],
                }),
            },
            Source::Embedded => Ok((EMBEDDED_DEFAULT.to_string(), PathBuf::from("."))),
        }
    }
}

/// What the receiver's section is to the process loading a config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Receiver {
    /// Decoded only (`vigil run`): its files are never read.
    Decode,
    /// Built too (`vigil check`): its token must be readable.
    Build,
}

impl Config {
    /// Reads and validates the config from `source`, with `VIGIL_*` environment overrides, as
    /// `vigil run` uses it (the receiver's section decoded, not built).
    pub fn load(source: &Source) -> Result<Config, ConfigErrors> {
        Self::load_with(source, Receiver::Decode)
    }

    /// [`Config::load`], the receiver's section built too (its token read): `vigil check`.
    pub fn check(source: &Source) -> Result<Config, ConfigErrors> {
        Self::load_with(source, Receiver::Build)
    }

    fn load_with(source: &Source, receiver: Receiver) -> Result<Config, ConfigErrors> {
        let (text, base_dir) = Document::read(source)?;
        Self::from_yaml(source.clone(), &text, base_dir, env_overrides(), receiver).map_err(|errors| ConfigErrors {
            source: source.to_string(),
            errors,
        })
    }

    /// Validates a config given as text (`base_dir` resolves relative file paths).
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
        Self::from_yaml(
            Source::Embedded,
            text,
            base_dir.to_path_buf(),
            env_overrides(),
            Receiver::Decode,
        )
        .map_err(|errors| ConfigErrors {
            source: "config".into(),
            errors,
        })
    }

    fn from_yaml(
        source: Source,
        text: &str,
        base_dir: PathBuf,
        env: Env,
        receiver: Receiver,
    ) -> Result<Config, Vec<ConfigError>> {
        let Document { mut cx, root } = Document::parse(text, base_dir, env)?;
        let sections = Sections::build(&root, &mut cx);
        match receiver {
            Receiver::Decode => decode_section::<ReceiverSection>(root.get(ReceiverSection::KEY), &mut cx),
            Receiver::Build => {
                build_section::<ReceiverSection>(root.get(ReceiverSection::KEY), &mut cx);
            }
        }
        let probes = probes::build_probes(
            &mut cx,
            root.get("probes"),
            &sections.defaults,
            &sections.labels,
            &sections.metrics.buckets,
        );
        let modules = probes::build_modules(&mut cx, root.get("modules"), &sections.defaults);
        cx.finish()?;
        let Sections {
            secret_names,
            metrics,
            defaults: _,
            labels: _,
            concurrency,
            state_dir,
            docker,
            status_page,
            history,
            kubernetes,
            blackbox_file,
        } = sections;
        let mut config = Config {
            source,
            probes,
            modules,
            concurrency: concurrency.0,
            state_dir,
            docker,
            status_page,
            history,
            kubernetes,
            secret_names,
            blackbox_file: blackbox_file.0,
            metrics,
        };
        config.derive_history_path();
        Ok(config)
    }

    /// [`Config::load`], plus the modules of a blackbox_exporter config file: `file`
    /// (`--blackbox.config-file`), or else the one the config names in
    /// `blackbox_config_file`. A module name both files define is an error.
    pub fn load_with_blackbox(source: &Source, file: Option<&Path>) -> Result<Config, ConfigErrors> {
        Self::load(source)?.with_blackbox(file)
    }

    /// [`Config::check`], plus the modules of a blackbox_exporter config file (as
    /// [`Config::load_with_blackbox`]).
    pub fn check_with_blackbox(source: &Source, file: Option<&Path>) -> Result<Config, ConfigErrors> {
        Self::check(source)?.with_blackbox(file)
    }

    fn with_blackbox(mut self, file: Option<&Path>) -> Result<Config, ConfigErrors> {
        let Some(file) = file.map(Path::to_path_buf).or_else(|| self.blackbox_file.clone()) else {
            return Ok(self);
        };
        let source = Source::File(file.clone());
        let fail = |errors| ConfigErrors {
            source: source.to_string(),
            errors,
        };
        let (text, base_dir) = Document::read(&source)?;
        let Document { mut cx, root } = Document::parse_keys(&text, base_dir, None, &["modules"]).map_err(fail)?;
        cx.set_secret_names(self.secret_names.clone());
        let modules = crate::probe::blackbox::build_modules(&mut cx, &root);
        for name in modules.keys().filter(|name| self.modules.contains_key(*name)) {
            cx.error(
                format!("modules.{name}"),
                format!("module `{name}` is also defined in {} (modules.{name})", self.source),
            );
        }
        cx.finish().map_err(fail)?;
        self.modules.extend(modules);
        self.blackbox_file = Some(file);
        Ok(self)
    }

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

impl ReceiverConfig {
    /// Reads what `vigil receiver` needs from the config at `source`: its section (its token
    /// read), the probes' names and remediations, the Docker engine. Nothing else is built or
    /// read, so a probe's unreadable secret never stops the receiver.
    pub fn load(source: &Source) -> Result<ReceiverConfig, ConfigErrors> {
        let (text, base_dir) = Document::read(source)?;
        Self::from_yaml(source.clone(), &text, base_dir)
    }

    /// [`ReceiverConfig::load`] from text (`base_dir` resolves relative file paths).
    pub fn parse(text: &str, base_dir: &Path) -> Result<ReceiverConfig, ConfigErrors> {
        Self::from_yaml(Source::Embedded, text, base_dir.to_path_buf()).map_err(|mut e| {
            e.source = "config".into();
            e
        })
    }

    fn from_yaml(source: Source, text: &str, base_dir: PathBuf) -> Result<ReceiverConfig, ConfigErrors> {
        let fail = |errors| ConfigErrors {
            source: source.to_string(),
            errors,
        };
        let Document { mut cx, root } = Document::parse(text, base_dir, env_overrides()).map_err(fail)?;
        let receiver = build_section::<ReceiverSection>(root.get(ReceiverSection::KEY), &mut cx);
        let docker = build_section::<docker::Config>(root.get(docker::Config::KEY), &mut cx);
        let remediations = probes::remediations(&mut cx, root.get("probes"));
        cx.finish().map_err(fail)?;
        Ok(ReceiverConfig {
            source,
            receiver,
            remediations,
            docker,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> String {
        Config::parse(text, Path::new(".")).expect_err("invalid").to_string()
    }

    #[test]
    fn the_top_keys_are_the_sections_probes_modules_and_receiver() {
        for key in [
            "secret_names",
            "defaults",
            "labels",
            "concurrency",
            "state_dir",
            "docker",
        ] {
            assert!(TOP_KEYS.contains(&key), "{key}");
        }
        for key in ["status_page", "history", "kubernetes", "probes", "modules", "receiver"] {
            assert!(TOP_KEYS.contains(&key), "{key}");
        }
        let report = errors("defauts: {}\n");
        assert!(
            report.contains(&format!(
                "line 1: defauts: unknown key `defauts`, expected one of: {}",
                TOP_KEYS.join(", ")
            )),
            "{report}"
        );
    }

    #[test]
    fn sections_build_themselves_and_keep_their_defaults_when_absent() {
        let config = Config::parse("concurrency: 8\nstatus_page: {title: Ops}\n", Path::new(".")).expect("valid");
        assert_eq!(config.concurrency, 8);
        assert_eq!(config.status_page.title, "Ops");
        assert_eq!(config.history, History::default());
        assert_eq!(config.state_dir, StateDir::Unset);
        let report = errors("concurrency: 0\nstatus_page: {title: ' '}\nhistory: {raw_retention: 1s}\n");
        for want in [
            "line 1: concurrency: must be at least 1",
            "line 2: status_page.title: must not be empty",
            "line 3: history.raw_retention: must be at least 1m",
        ] {
            assert!(report.contains(want), "missing {want:?} in:\n{report}");
        }
    }

    #[test]
    fn a_probe_key_of_no_kind_is_refused_with_the_kind_and_common_keys_known() {
        let report = errors("probes:\n  - {name: a, kind: tcp, address: '127.0.0.1:1', intervall: 5s}\n");
        assert!(
            report.contains("line 2: probes[0].intervall: unknown key `intervall`"),
            "{report}"
        );
        let report = errors("modules:\n  m: {kind: tcp, labels: {a: b}}\n");
        assert!(
            report.contains("modules.m.labels: `labels` does not apply to a /probe module"),
            "{report}"
        );
    }

    #[test]
    fn memory_state_and_the_default_folder() {
        let mut config = Config::parse("state_dir: ':memory:'\n", Path::new(".")).expect("valid");
        config.default_state_dir(Some(Path::new("/var/lib/vigil")));
        assert_eq!(config.state_dir, StateDir::Memory, "an explicit memory-only stays so");
        let mut config = Config::parse("", Path::new(".")).expect("valid");
        config.default_state_dir(Some(Path::new("/var/lib/vigil")));
        assert_eq!(config.state_dir, StateDir::Dir(PathBuf::from("/var/lib/vigil")));
        assert_eq!(config.history.path, Some(PathBuf::from("/var/lib/vigil/history.db")));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own signature
    fn environment_variables_override_config_keys_only() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("VIGIL_CONCURRENCY", "7");
            jail.set_env("VIGIL_VERSION", "1.2.3");
            let config = Config::parse("concurrency: 8\n", Path::new(".")).expect("valid");
            assert_eq!(config.concurrency, 7);
            Ok(())
        });
    }
}
