//! The running exporter: the current config, the scheduler, the state and the registry, the
//! history and the live feed, and the one operation that changes them at run time, a reload.

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use prometheus_client::registry::Registry;
use tokio::sync::{broadcast, watch};
use tracing::{error, info, warn};

use crate::config::{Config, ConfigErrors};
use crate::history::History;
use crate::live;
use crate::metrics::{self, ReloadMetrics};
use crate::scheduler::{Applied, Scheduler, Shard, Sinks};
use crate::state::State;

/// Everything the web handlers and signal handlers share.
pub struct App {
    /// Per-probe state.
    pub state: Arc<State>,
    /// Metrics registry (probe collector included).
    pub registry: Registry,
    /// Uptime and latency history.
    pub history: Arc<History>,
    /// Announces every recorded run (the status page's live updates).
    pub live: broadcast::Sender<live::Event>,
    reload_metrics: ReloadMetrics,
    config: RwLock<Arc<Config>>,
    scheduler: Scheduler,
    reloading: Mutex<()>,
    stopping: watch::Sender<bool>,
}

impl App {
    /// Starts the probes of `config` and opens its history store (in the background: see
    /// [`App::ready`]). Must run inside a Tokio runtime.
    pub fn start(config: Config, shard: Option<Shard>) -> Arc<App> {
        let state = Arc::new(State::default());
        let reload_metrics = ReloadMetrics::default();
        reload_metrics.record(true);
        let registry = metrics::registry(state.clone(), &reload_metrics);
        let history = History::open(&config.history);
        let live = live::channel();
        let sinks = Sinks {
            history: history.clone(),
            live: live.clone(),
        };
        let scheduler = Scheduler::new(state.clone(), shard, sinks);
        let applied = scheduler.apply(&config);
        info!(source = %config.source, probes = applied.started, modules = config.modules.len(), "config loaded");
        let app = Arc::new(App {
            state,
            registry,
            history,
            live,
            reload_metrics,
            config: RwLock::new(Arc::new(config)),
            scheduler,
            reloading: Mutex::new(()),
            stopping: watch::channel(false).0,
        });
        tokio::spawn(crate::status::log_summaries(Arc::downgrade(&app)));
        app
    }

    /// Waits until the history store is open and read back; an error says why it is not
    /// (history is then kept in memory only).
    pub async fn ready(&self) -> Result<(), String> {
        self.history.ready().await
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Reads the config again from where it came from. An invalid config changes nothing but
    /// `vigil_config_last_reload_successful`, which drops to 0.
    pub fn reload(&self) -> Result<Applied, ConfigErrors> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(PoisonError::into_inner);
        let source = self.config().source.clone();
        match Config::load(&source) {
            Ok(config) => {
                if config.history != self.config().history {
                    warn!("`history` settings changed; they take effect at the next start");
                }
                let applied = self.scheduler.apply(&config);
                *self.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
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
                Err(errors)
            }
        }
    }

    /// Says that the process is stopping: live event streams end, so a graceful shutdown does
    /// not wait for them.
    pub fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
    }

    /// Becomes true when the process is stopping.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Stops every probe.
    pub fn stop(&self) {
        self.begin_shutdown();
        self.scheduler.stop();
    }

    /// Stops every probe and writes the history still buffered to the store.
    pub async fn close(&self) {
        self.stop();
        self.history.close().await;
    }
}
