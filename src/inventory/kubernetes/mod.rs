//! The Kubernetes inventory: watchers keep a snapshot of the pods, deployments, statefulsets and
//! daemonsets of the chosen namespaces, and a collector publishes it at scrape time in
//! kube-state-metrics' names (`vigil_kube_*`), with a per-workload restart total that survives
//! pod replacement. Read-only: only get, list and watch.

mod collector;
pub mod snapshot;
pub(crate) mod watch;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::task::JoinHandle;
use tracing::info;

use crate::poison::LockUnpoisoned;
use crate::spec::BuildContext;
pub use collector::KubeCollector;
use snapshot::Snapshot;
use watch::ClientSource;

/// The `kubernetes:` section of the config.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Watch the cluster (default false).
    pub enabled: bool,
    /// Namespaces to watch; empty: every namespace.
    pub namespaces: Vec<String>,
    /// A kubeconfig file (relative to the config file); without it, the in-cluster service
    /// account, then the default kubeconfig (`$KUBECONFIG`, `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// How often each watcher lists everything again, to heal events it missed.
    #[serde(with = "crate::spec::values::duration")]
    pub relist_interval: Duration,
    /// Digest of the kubeconfig file's content, set when the config is loaded, so a reload
    /// notices a changed file.
    #[serde(skip)]
    pub kubeconfig_digest: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: false,
            namespaces: Vec::new(),
            kubeconfig: None,
            relist_interval: Duration::from_secs(300),
            kubeconfig_digest: 0,
        }
    }
}

/// The shortest `relist_interval`: each relist reads every watched object from the API server.
const MIN_RELIST: Duration = Duration::from_secs(30);

/// A namespace name: an RFC 1123 label.
fn valid_namespace(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
}

impl crate::spec::Section for Config {
    const KEY: &'static str = "kubernetes";
    type Spec = Config;

    fn build(config: Config, cx: &mut BuildContext, at: &crate::spec::KeyPath) -> Option<Self> {
        Config::validate(config, cx, at.as_str())
    }
}

impl Config {
    /// Validates the decoded `kubernetes:` section found at `path`; errors go to `ctx`.
    fn validate(mut config: Config, ctx: &mut BuildContext, path: &str) -> Option<Config> {
        let mut valid = true;
        for (i, ns) in config.namespaces.iter().enumerate() {
            let at = format!("{path}.namespaces.{i}");
            if !valid_namespace(ns) {
                valid = false;
                ctx.error(
                    &at,
                    format!("`{ns}` is not a valid namespace name (lowercase letters, digits and -, at most 63)"),
                );
            } else if config.namespaces[..i].contains(ns) {
                valid = false;
                ctx.error(&at, format!("namespace `{ns}` is listed twice"));
            }
        }
        if config.relist_interval < MIN_RELIST {
            valid = false;
            ctx.error(
                format!("{path}.relist_interval"),
                format!(
                    "must be at least {} (each relist reads every watched object)",
                    humantime::format_duration(MIN_RELIST)
                ),
            );
        }
        if let Some(file) = config.kubeconfig.take() {
            let file = ctx.resolve_path(&file);
            // Read at load, like every file in the config, so a bad path fails `vigil check`.
            if config.enabled {
                let at = format!("{path}.kubeconfig");
                match ctx.read_file(&at, &file) {
                    None => valid = false,
                    Some(bytes) => {
                        let text = String::from_utf8_lossy(&bytes);
                        match kube::config::Kubeconfig::from_yaml(&text) {
                            Ok(_) => {
                                let mut hasher = DefaultHasher::new();
                                bytes.hash(&mut hasher);
                                config.kubeconfig_digest = hasher.finish();
                            }
                            Err(e) => {
                                valid = false;
                                // Only the first line: the rest quotes the file, which holds secrets.
                                let e = e.to_string();
                                let e = e.lines().next().unwrap_or_default();
                                ctx.error(&at, format!("{} is not a kubeconfig: {e}", file.display()));
                            }
                        }
                    }
                }
            }
            config.kubeconfig = Some(file);
        }
        valid.then_some(config)
    }
}

/// The running inventory: the snapshot (kept across reloads) and the watchers of the config in
/// force.
#[derive(Debug, Default)]
pub struct Inventory {
    snapshot: Arc<Mutex<Snapshot>>,
    running: Mutex<Option<Running>>,
}

#[derive(Debug)]
struct Running {
    config: Config,
    task: JoinHandle<()>,
}

impl Inventory {
    /// An inventory that watches nothing until [`Inventory::apply`] enables it.
    pub fn new() -> Self {
        Self::default()
    }

    /// The collector to register: publishes nothing while the inventory is disabled.
    pub fn collector(&self) -> Box<KubeCollector> {
        Box::new(KubeCollector::new(self.snapshot.clone()))
    }

    /// Starts, restarts or stops the watchers to match `config`; nothing happens when it did not
    /// change. A restart keeps the snapshot, so restart totals carry on. Must run inside a Tokio
    /// runtime. Returns whether the watchers changed.
    pub fn apply(&self, config: &Config) -> bool {
        self.start(config, || ClientSource::Config)
    }

    /// Like [`Inventory::apply`], with a client made by the caller (a test's mock API server)
    /// instead of one built from the config; always (re)starts when enabled.
    pub fn apply_with_client(&self, config: &Config, client: kube::Client) {
        self.stop();
        self.start(config, || ClientSource::Given(client));
    }

    fn start(&self, config: &Config, source: impl FnOnce() -> ClientSource) -> bool {
        let mut running = self.running.lock_unpoisoned();
        let before = running.as_ref().map(|r| &r.config);
        if !config.enabled {
            let was_running = running.take().map(|old| old.task.abort()).is_some();
            let mut snapshot = self.lock();
            let was_enabled = snapshot.enabled();
            if was_enabled {
                snapshot.disable();
                info!("Kubernetes inventory stopped");
            }
            return was_running || was_enabled;
        }
        if before == Some(config) {
            return false;
        }
        if let Some(old) = running.take() {
            old.task.abort();
        }
        let generation = self.lock().begin(&config.namespaces);
        let task = tokio::spawn(watch::run(self.snapshot.clone(), generation, config.clone(), source()));
        let namespaces = if config.namespaces.is_empty() {
            "all".to_string()
        } else {
            config.namespaces.join(",")
        };
        info!(%namespaces, "Kubernetes inventory watching");
        *running = Some(Running {
            config: config.clone(),
            task,
        });
        true
    }

    /// Stops the watchers (at shutdown); what they saw stays published.
    pub fn stop(&self) {
        let mut running = self.running.lock_unpoisoned();
        if let Some(old) = running.take() {
            old.task.abort();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.snapshot.lock_unpoisoned()
    }
}

impl Drop for Inventory {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::Path;

    use super::*;

    fn parse(text: &str, dir: &Path) -> Result<crate::config::Config, String> {
        crate::config::Config::parse(text, dir).map_err(|e| e.to_string())
    }

    #[test]
    fn absent_is_disabled_with_defaults() {
        let config = parse("probes: []\n", Path::new(".")).unwrap();
        assert_eq!(config.kubernetes, Config::default());
        assert!(!config.kubernetes.enabled);
        assert_eq!(config.kubernetes.relist_interval, Duration::from_secs(300));
    }

    #[test]
    fn full_section() {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:6443'}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n";
        std::fs::write(dir.path().join("kubeconfig"), kubeconfig).unwrap();
        let text = "kubernetes:\n  enabled: true\n  namespaces: [gps, kube-system]\n  kubeconfig: kubeconfig\n  relist_interval: 10m\n";
        let config = parse(text, dir.path()).unwrap().kubernetes;
        assert!(config.enabled);
        assert_eq!(config.namespaces, ["gps", "kube-system"]);
        assert_eq!(config.kubeconfig, Some(dir.path().join("kubeconfig")));
        assert_eq!(config.relist_interval, Duration::from_secs(600));
        // A changed kubeconfig is a changed section (the watchers restart on reload).
        let before = config.clone();
        std::fs::write(
            dir.path().join("kubeconfig"),
            kubeconfig.replace("token: t", "token: t2"),
        )
        .unwrap();
        assert_ne!(parse(text, dir.path()).unwrap().kubernetes, before);
    }

    #[test]
    fn every_error_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad"), "clusters: 7\n").unwrap();
        let cases = [
            (
                "kubernetes:\n  enabled: true\n  namespaces:\n    - gps\n    - GPS_2\n",
                "line 5: kubernetes.namespaces[1]: `GPS_2` is not a valid namespace name",
            ),
            (
                "kubernetes:\n  namespaces: [gps, gps]\n",
                "kubernetes.namespaces[1]: namespace `gps` is listed twice",
            ),
            (
                "kubernetes:\n  relist_interval: 5s\n",
                "line 2: kubernetes.relist_interval: must be at least 30s",
            ),
            (
                "kubernetes:\n  enabled: true\n  kubeconfig: missing\n",
                "line 3: kubernetes.kubeconfig: cannot read",
            ),
            (
                "kubernetes:\n  enabled: true\n  kubeconfig: bad\n",
                "line 3: kubernetes.kubeconfig: ",
            ),
            (
                "kubernetes:\n  enabled: yes please\n",
                "line 2: kubernetes.enabled: invalid type",
            ),
            (
                "kubernetes:\n  namespace: gps\n",
                "line 2: kubernetes.namespace: unknown key `namespace`, expected one of: enabled, namespaces, kubeconfig, relist_interval",
            ),
        ];
        for (text, want) in cases {
            let report = parse(text, dir.path()).unwrap_err();
            assert!(report.contains(want), "{text}\nexpected {want:?} in:\n{report}");
        }
        // A kubeconfig is only read when it is used.
        parse("kubernetes:\n  kubeconfig: missing\n", dir.path()).unwrap();
    }
}
