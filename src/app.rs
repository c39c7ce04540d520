//! The running exporter: the current config, the scheduler, the state and the registry, and
//! the one operation that changes them at run time, a reload.

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use prometheus_client::registry::Registry;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigErrors};
use crate::inventory::kubernetes;
use crate::metrics::{self, ReloadMetrics};
use crate::probe::heartbeat::Beats;
use crate::probe::{CheckContext, Kind};
use crate::scheduler::{Applied, Scheduler, Shard};
use crate::state::State;

/// Everything the web handlers and signal handlers share.
pub struct App {
    /// Per-probe state.
    pub state: Arc<State>,
    /// Metrics registry (probe collector included).
    pub registry: Registry,
    /// State the probes read (pushed heartbeats).
    pub context: CheckContext,
    reload_metrics: ReloadMetrics,
    config: RwLock<Arc<Config>>,
    scheduler: Scheduler,
    kubernetes: kubernetes::Inventory,
    reloading: Mutex<()>,
}

impl App {
    /// Starts the probes of `config`. Must run inside a Tokio runtime. Fails only when the
    /// state kept in `state_dir` cannot be read.
    pub fn start(config: Config, shard: Option<Shard>) -> crate::Result<Arc<App>> {
        let context = context_for(&config)?;
        let state = Arc::new(State::default());
        let reload_metrics = ReloadMetrics::default();
        reload_metrics.record(true);
        let mut registry = metrics::registry(state.clone(), &reload_metrics);
        let kubernetes = kubernetes::Inventory::new();
        registry.register_collector(kubernetes.collector());
        kubernetes.apply(&config.kubernetes);
        let scheduler = Scheduler::new(state.clone(), context.clone(), shard);
        let applied = scheduler.apply(&config);
        forget_removed_heartbeats(&context, &config);
        info!(source = %config.source, probes = applied.started, modules = config.modules.len(), "config loaded");
        Ok(Arc::new(App {
            state,
            registry,
            context,
            reload_metrics,
            config: RwLock::new(Arc::new(config)),
            scheduler,
            kubernetes,
            reloading: Mutex::new(()),
        }))
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
                if config.state_dir != self.config().state_dir {
                    warn!("state_dir changed: the new folder is used from the next restart");
                }
                let applied = self.scheduler.apply(&config);
                // Restarts the watchers only when the section changed; restart totals carry on.
                self.kubernetes.apply(&config.kubernetes);
                forget_removed_heartbeats(&self.context, &config);
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

    /// Stops every probe and watcher.
    pub fn stop(&self) {
        self.scheduler.stop();
        self.kubernetes.stop();
    }
}

/// The context probes run with: heartbeats kept in `state_dir`, or in memory.
pub fn context_for(config: &Config) -> crate::Result<CheckContext> {
    let file = config.state_dir.as_ref().map(|dir| dir.join("heartbeats.json"));
    if let Some(dir) = &config.state_dir {
        std::fs::create_dir_all(dir).map_err(|source| crate::Error::Io {
            context: format!("creating state_dir {}", dir.display()),
            source,
        })?;
    }
    let heartbeats = Beats::open(file).map_err(crate::Error::State)?;
    Ok(CheckContext {
        heartbeats: Arc::new(heartbeats),
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
