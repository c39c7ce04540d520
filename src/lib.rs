//! vigil: a Prometheus-native probing exporter.
//!
//! Probes (HTTP, TCP, ...) run on their own schedule or through a blackbox-style `/probe`
//! endpoint; each run ends UP, DEGRADED or DOWN with a reason, and everything is published as
//! Prometheus metrics.

pub mod app;
pub mod config;
pub mod descriptors;
pub mod history;
pub mod inventory;
pub mod live;
pub mod metrics;
pub mod once;
pub mod persist;
pub mod poison;
pub mod printable;
pub mod probe;
pub mod receiver;
pub mod scheduler;
pub mod secret;
pub mod spec;
pub mod state;
pub mod status;
pub mod table;
pub mod transport;
pub mod view;
pub mod web;

/// Errors that cross module boundaries.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config is invalid.
    #[error("{0}")]
    Config(#[from] config::ConfigErrors),
    /// State kept across restarts cannot be read.
    #[error("state: {0}")]
    State(#[from] persist::StateFileError),
    /// `vigil receiver` on a config without a `receiver:` section.
    #[error("{config}: no `receiver:` section; vigil receiver needs one")]
    NoReceiver {
        /// The config.
        config: String,
    },
    /// The listener's web config is invalid.
    #[error("web config: {0}")]
    WebConfig(#[from] web::listener::ListenerError),
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
