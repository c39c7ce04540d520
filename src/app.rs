//! The running exporter, in two parts (as kube-rs controllers keep their State apart from the
//! Context that can act): a [`View`] of what runs (the config in force, the probes' state and
//! history, the live feed, the inventories, the registry) that web handlers and status code
//! read and cannot change, and the [`Control`] that alone starts, reloads and stops it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigErrors};
use crate::history::History;
use crate::inventory::docker::{self, DockerCollector};
use crate::inventory::kubernetes;
use crate::live;
use crate::metrics::{self, ReloadMetrics};
use crate::poison::{LockUnpoisoned, RwLockUnpoisoned};
use crate::probe::{CheckContext, Kind};
use crate::scheduler::{Applied, Scheduler, Shard, Sinks};
use crate::state::State;
use crate::transport::connect::Sockets;
pub use crate::view::{View, context_for};

/// The running exporter: its [`View`], and what changes what runs (the scheduler, the
/// watchers, reloads and shutdown). Dereferences to its view.
pub struct Control {
    view: Arc<View>,
    docker_watcher: Mutex<Option<docker::Watcher>>,
    kubernetes: kubernetes::Inventory,
    reload_metrics: ReloadMetrics,
    scheduler: Scheduler,
    reloading: Mutex<()>,
    stopping: watch::Sender<bool>,
    storage_path: Option<PathBuf>,
    blackbox_file: Option<PathBuf>,
}

/// The running exporter, as `vigil run` and the tests start it.
pub type App = Control;

impl std::ops::Deref for Control {
    type Target = View;

    fn deref(&self) -> &View {
        &self.view
    }
}

/// How `vigil run` starts the exporter beyond its config.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `--shard i/n`.
    pub shard: Option<Shard>,
    /// `--storage.path`: the state folder of a config that names none (`None`: in memory).
    pub storage_path: Option<PathBuf>,
    /// `--web.external-url`: the URL vigil is reached at, ending in `/`.
    pub external_url: Option<String>,
    /// The probes' share of the process' descriptors (see [`crate::descriptors`]); unlimited
    /// by default.
    pub sockets: Sockets,
    /// `--blackbox.config-file`: a blackbox_exporter config file whose modules `/probe`
    /// serves, read again at each reload (the config's `blackbox_config_file` otherwise).
    pub blackbox_file: Option<PathBuf>,
    /// `--timeout-offset`: how much of a scrape's timeout `/probe` leaves to Prometheus
    /// (default 0.5 s, as blackbox_exporter).
    pub timeout_offset: Option<std::time::Duration>,
}

impl Control {
    /// Starts the probes and watchers of `config` and opens its history store (in the
    /// background: see [`App::ready`]). Must run inside a Tokio runtime. Fails only when the
    /// state kept in `state_dir` cannot be read. The probes' sockets are not limited: see
    /// [`App::start_with`].
    pub fn start(config: Config, shard: Option<Shard>) -> crate::Result<Arc<App>> {
        App::start_with(
            config,
            Options {
                shard,
                ..Options::default()
            },
        )
    }

    /// [`App::start`] with `vigil run`'s options.
    pub fn start_with(mut config: Config, options: Options) -> crate::Result<Arc<App>> {
        let Options {
            shard,
            storage_path,
            external_url,
            sockets,
            blackbox_file,
            timeout_offset,
        } = options;
        config.default_state_dir(storage_path.as_deref());
        let mut context = context_for(&config)?;
        context.sockets = sockets;
        let state = Arc::new(match config.state_dir.path() {
            Some(dir) => State::open(dir)?,
            None => State::in_memory(),
        });
        state.keep_saved();
        let reload_metrics = ReloadMetrics::default();
        reload_metrics.record(true);
        let mut registry = metrics::registry(state.clone(), &reload_metrics, external_url.as_deref());
        let docker = Arc::new(docker::Inventory::open(config.state_dir.path())?);
        docker.keep_saved();
        registry.register_collector(Box::new(DockerCollector(docker.clone())));
        let docker_watcher = docker.watch(&config.docker);
        let kubernetes = kubernetes::Inventory::new();
        registry.register_collector(kubernetes.collector());
        kubernetes.apply(&config.kubernetes);
        let history = History::open(&config.history);
        registry.register(
            "vigil_history_write_failures",
            "Writes to the history store that failed (a full disk, an I/O error); runs wait for the next one",
            history.write_failures(),
        );
        let live = live::channel();
        let sinks = Sinks {
            history: history.clone(),
            live: live.clone(),
        };
        let scheduler = Scheduler::new(state.clone(), context.clone(), shard, sinks);
        let applied = scheduler.apply(&config);
        forget_removed_heartbeats(&context, &config);
        info!(source = %config.source, probes = applied.started, modules = config.modules.len(), "config loaded");
        let (stopping, stopping_rx) = watch::channel(false);
        let view = Arc::new(View {
            state,
            registry,
            context,
            history,
            docker,
            live,
            config: RwLock::new(Arc::new(config)),
            stopping: stopping_rx,
            timeout_offset: timeout_offset.unwrap_or(crate::view::TIMEOUT_OFFSET),
        });
        let app = Arc::new(Control {
            view,
            docker_watcher: Mutex::new(docker_watcher),
            kubernetes,
            reload_metrics,
            scheduler,
            reloading: Mutex::new(()),
            stopping,
            storage_path,
            blackbox_file,
        });
        tokio::spawn(crate::status::log_summaries(Arc::downgrade(&app.view)));
        Ok(app)
    }

    /// What the web handlers read.
    pub fn view(&self) -> Arc<View> {
        self.view.clone()
    }

    /// Waits until the history store is open and read back; an error says why it is not
    /// (history is then kept in memory only).
    pub async fn ready(&self) -> Result<(), crate::history::HistoryError> {
        self.history.ready().await
    }

    /// Reads the config again from where it came from. An invalid config changes nothing but
    /// `vigil_config_last_reload_successful`, which drops to 0; so does a reload that panics
    /// (a bug in vigil): the panic is caught here and reported as a failed reload.
    pub fn reload(&self) -> Result<Applied, ReloadError> {
        let _one_at_a_time = self.reloading.lock_unpoisoned();
        match catch_panic(|| self.apply_reload()) {
            Ok(result) => result,
            Err(message) => {
                self.reload_metrics.record(false);
                error!(panic = %message, "config reload failed inside vigil (a bug); some probes may run on the new config");
                Err(ReloadError::Panicked(message))
            }
        }
    }

    fn apply_reload(&self) -> Result<Applied, ReloadError> {
        let source = self.config().source.clone();
        match Config::load_with_blackbox(&source, self.blackbox_file.as_deref()) {
            Ok(mut config) => {
                config.default_state_dir(self.storage_path.as_deref());
                let running = self.config();
                if config.state_dir != running.state_dir {
                    warn!("state_dir changed: the new folder is used from the next restart");
                }
                if config.history != running.history {
                    warn!("`history` settings changed; they take effect at the next start");
                }
                let applied = self.scheduler.apply(&config);
                forget_removed_heartbeats(&self.context, &config);
                if config.docker != running.docker {
                    let mut watcher = self.docker_watcher.lock_unpoisoned();
                    *watcher = None;
                    *watcher = self.docker.watch(&config.docker);
                }
                // Restarts the watchers only when the section changed; totals are kept.
                self.kubernetes.apply(&config.kubernetes);
                *self.view.config.write_unpoisoned() = Arc::new(config);
                self.reload_metrics.record(true);
                info!(
                    started = applied.started,
                    restarted = applied.restarted,
                    stopped = applied.stopped,
                    unchanged = applied.unchanged,
                    "config reloaded"
                );
                Ok(applied)
            }
            Err(errors) => {
                self.reload_metrics.record(false);
                error!(errors = %errors, "config reload failed; keeping the running config");
                Err(ReloadError::Invalid(errors))
            }
        }
    }

    /// Says that the process is stopping: live event streams end, so a graceful shutdown does
    /// not wait for them.
    pub fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
    }

    /// Stops every probe and watcher.
    pub fn stop(&self) {
        self.begin_shutdown();
        self.scheduler.stop();
        *self.docker_watcher.lock_unpoisoned() = None;
        self.kubernetes.stop();
    }

    /// Stops every probe, writes the probe state file and the history still buffered.
    pub async fn close(&self) {
        self.stop();
        if let Err(e) = self.state.save().await {
            warn!(error = %e, "could not write the probe state file");
        }
        if let Err(e) = self.docker.save().await {
            warn!(error = %e, "could not write the container restart totals");
        }
        self.history.close().await;
    }
}

/// Why a reload did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new config is invalid; the running one stays.
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// Applying the new config panicked (a bug in vigil).
    #[error("the reload failed inside vigil: {0}")]
    Panicked(String),
}

impl ReloadError {
    /// A bounded label for the error.
    pub fn reason(&self) -> &'static str {
        match self {
            ReloadError::Invalid(_) => "invalid",
            ReloadError::Panicked(_) => "panicked",
        }
    }
}

/// Runs `work`, turning a panic into its message.
fn catch_panic<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string())
    })
}

fn forget_removed_heartbeats(context: &CheckContext, config: &Config) {
    let names: Vec<&str> = config
        .probes
        .iter()
        .filter(|p| p.kind() == Kind::Heartbeat)
        .map(|p| p.name.as_str())
        .collect();
    if let Err(e) = context.heartbeats.retain(&names) {
        warn!(error = %e, "could not rewrite the heartbeat state file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_with_its_message() {
        assert_eq!(catch_panic(|| 7), Ok(7));
        assert_eq!(
            catch_panic(|| -> u8 { panic!("boom {}", 1) }),
            Err("boom 1".to_string())
        );
        let huge = catch_panic(|| tokio::sync::Semaphore::new(usize::MAX).available_permits());
        assert!(huge.is_err_and(|m| m.contains("permits")));
    }
}
