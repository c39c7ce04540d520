//! The process' file descriptor budget: the open-files limit (raised to its hard limit at
//! start, as Go programs such as Prometheus do), split between the listener's connections and
//! the probes' sockets, with a reserve for everything else (logs, the history store, state
//! files, the Docker and Kubernetes watchers). Each side keeps to its share, so no number of
//! clients can leave the probes without sockets, and no number of probes can leave the
//! listener without connections.

use tracing::warn;

/// Descriptors kept for everything but connections and probe sockets.
pub const RESERVE: u64 = 64;
/// The most connections the listener takes by default, however high the limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// The fewest sockets the probes get, even when a large `--web.max-connections` asks for more
/// than the limit allows.
pub const MIN_PROBE_SOCKETS: usize = 16;

/// How the descriptors are shared out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// The open-files limit in force.
    pub limit: u64,
    /// Connections the listener accepts at once.
    pub listener: usize,
    /// Sockets (and database connections) the probes hold at once.
    pub probes: usize,
}

impl Budget {
    /// Splits `limit`: the reserve off the top, then half each for the listener (at most
    /// [`DEFAULT_MAX_CONNECTIONS`]) and the probes, or what `max_connections` asks for the
    /// listener and the rest for the probes.
    pub fn split(limit: u64, max_connections: Option<usize>) -> Budget {
        let usable = usize::try_from(limit.saturating_sub(RESERVE)).unwrap_or(usize::MAX);
        let listener = max_connections
            .unwrap_or((usable / 2).min(DEFAULT_MAX_CONNECTIONS))
            .max(1);
        let probes = usable.saturating_sub(listener).max(MIN_PROBE_SOCKETS);
        Budget {
            limit,
            listener,
            probes,
        }
    }

    /// The budget of this process: raises the soft open-files limit to the hard one, then
    /// splits it (see [`Budget::split`]).
    pub fn of_process(max_connections: Option<usize>) -> Budget {
        let budget = Budget::split(raise_open_files_limit(), max_connections);
        if (budget.listener as u64).saturating_add(budget.probes as u64) > budget.limit.saturating_sub(RESERVE) {
            warn!(
                open_files = budget.limit,
                max_connections = budget.listener,
                probe_sockets = budget.probes,
                "--web.max-connections leaves too few descriptors: under load, accepting or probing may fail \
                 with \"too many open files\""
            );
        }
        budget
    }
}

/// Raises the soft open-files limit to the hard limit; returns the limit in force.
pub fn raise_open_files_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    // "Unlimited" is not a number of descriptors anyone has; count it as a million.
    const UNLIMITED: u64 = 1 << 20;
    let now = getrlimit(Resource::Nofile);
    let soft = now.current.unwrap_or(UNLIMITED);
    let hard = now.maximum.unwrap_or(UNLIMITED);
    if hard > soft {
        let raised = Rlimit {
            current: now.maximum,
            maximum: now.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return hard;
        }
    }
    soft
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_the_limit() {
        assert_eq!(
            Budget::split(1024, None),
            Budget {
                limit: 1024,
                listener: 480,
                probes: 480
            }
        );
        assert_eq!(Budget::split(1 << 20, None).listener, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(Budget::split(1024, Some(100)).probes, 860);
        // Asking for too much leaves the probes their minimum.
        assert_eq!(Budget::split(256, Some(5000)).probes, MIN_PROBE_SOCKETS);
        assert_eq!(Budget::split(10, None).listener, 1);
    }
}
