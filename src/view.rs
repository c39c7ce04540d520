//! What runs, as the web handlers and the status code see it: the config in force, the probes'
//! state and history, the live feed, the inventories, the registry. Nothing here can reload,
//! stop or change what runs; that is [`crate::app::Control`]'s alone.

use std::sync::{Arc, RwLock};

use tokio::sync::{broadcast, watch};

use crate::config::Config;
use crate::history::History;
use crate::inventory::docker;
use crate::live;
use crate::metrics::{self, ReloadMetrics};
use crate::poison::RwLockUnpoisoned;
use crate::probe::CheckContext;
use crate::probe::heartbeat::Beats;
use crate::state::State;
use crate::transport::connect::Sockets;

/// What the web handlers and the status code read: nothing here can reload, stop or change
/// what runs. (Pushed heartbeats and `/probe` runs go through [`View::context`]: they are what
/// the probes read, not a change to them.)
pub struct View {
    /// Per-probe state.
    pub state: Arc<State>,
    /// What `/metrics` serves (the registry and the probes' series).
    pub registry: metrics::Exposition,
    /// What probes read (pushed heartbeats, the sockets budget).
    pub context: CheckContext,
    /// Uptime and latency history.
    pub history: Arc<History>,
    /// Containers, kept across reloads so restart totals keep counting.
    pub docker: Arc<docker::Inventory>,
    pub(crate) live: broadcast::Sender<live::Event>,
    pub(crate) config: RwLock<Arc<Config>>,
    pub(crate) stopping: watch::Receiver<bool>,
    /// How much of a scrape's timeout `/probe` leaves to Prometheus (`--timeout-offset`).
    pub timeout_offset: std::time::Duration,
}

/// blackbox_exporter's default `--timeout-offset`.
pub const TIMEOUT_OFFSET: std::time::Duration = std::time::Duration::from_millis(500);

impl View {
    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.read_unpoisoned().clone()
    }

    /// Every recorded run from now on (the status page's live updates).
    pub fn subscribe(&self) -> broadcast::Receiver<live::Event> {
        self.live.subscribe()
    }

    /// Becomes true when the process is stopping.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.clone()
    }

    /// A view of `config` with nothing running: state in memory, no probe started, no watcher
    /// (for the status code's tests, and for tools that only render).
    pub fn idle(config: Config) -> crate::Result<View> {
        let context = context_for(&config)?;
        let state = Arc::new(State::in_memory());
        state.set_detail(config.metrics.detail);
        for def in &config.probes {
            state.upsert(def);
        }
        let registry = metrics::registry(state.clone(), &ReloadMetrics::default(), None);
        Ok(View {
            state,
            registry,
            context,
            history: History::open(&config.history),
            docker: Arc::new(docker::Inventory::default()),
            live: live::channel(),
            config: RwLock::new(Arc::new(config)),
            stopping: watch::channel(false).1,
            timeout_offset: TIMEOUT_OFFSET,
        })
    }
}

/// The context probes run with: heartbeats kept in `state_dir`, or in memory.
pub fn context_for(config: &Config) -> crate::Result<CheckContext> {
    let file = config.state_dir.path().map(|dir| dir.join("heartbeats.json"));
    if let Some(dir) = config.state_dir.path() {
        std::fs::create_dir_all(dir).map_err(|source| crate::Error::Io {
            context: format!("creating state_dir {}", dir.display()),
            source,
        })?;
    }
    let heartbeats = Beats::open(file)?;
    Ok(CheckContext {
        heartbeats: Arc::new(heartbeats),
        sockets: Sockets::unlimited(),
        pings: Arc::default(),
        udp: Arc::default(),
    })
}
