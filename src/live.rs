//! Live updates: every recorded run is announced on a broadcast channel, which the status
//! page's server-sent events (`/api/v1/events`) relay to browsers.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::probe::Level;

/// A probe's run was recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The probe.
    pub probe: Arc<str>,
    /// The run's level.
    pub level: Level,
    /// When it finished (Unix ms).
    pub at_ms: i64,
}

/// Events a slow subscriber may fall behind by before it is told to resynchronise.
pub const CAPACITY: usize = 4096;

/// A new channel for [`Event`]s.
pub fn channel() -> broadcast::Sender<Event> {
    broadcast::channel(CAPACITY).0
}
