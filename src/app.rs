//! The running exporter: the current config, the scheduler, the state and the registry, and
//! the one operation that changes them at run time, a reload.

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use prometheus_client::registry::Registry;
use tracing::{error, info};

use crate::config::{Config, ConfigErrors};
use crate::metrics::{self, ReloadMetrics};
use crate::scheduler::{Applied, Scheduler, Shard};
use crate::state::State;

/// Everything the web handlers and signal handlers share.
pub struct App {
    /// Per-probe state.
    pub state: Arc<State>,
    /// Metrics registry (probe collector included).
    pub registry: Registry,
    reload_metrics: ReloadMetrics,
    config: RwLock<Arc<Config>>,
    scheduler: Scheduler,
    reloading: Mutex<()>,
}

impl App {
    /// Starts the probes of `config`. Must run inside a Tokio runtime.
    pub fn start(config: Config, shard: Option<Shard>) -> Arc<App> {
        let state = Arc::new(State::default());
        let reload_metrics = ReloadMetrics::default();
        reload_metrics.record(true);
        let registry = metrics::registry(state.clone(), &reload_metrics);
        let scheduler = Scheduler::new(state.clone(), shard);
        let applied = scheduler.apply(&config);
        info!(source = %config.source, probes = applied.started, modules = config.modules.len(), "config loaded");
        Arc::new(App {
            state,
            registry,
            reload_metrics,
            config: RwLock::new(Arc::new(config)),
            scheduler,
            reloading: Mutex::new(()),
        })
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

    /// Stops every probe.
    pub fn stop(&self) {
        self.scheduler.stop();
    }
}
