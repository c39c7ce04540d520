//! The threads self-scheduled probes run on: one single-threaded runtime per core the process
//! may use, and each probe's task on one of them for its whole life.
//!
//! On the process' shared multi-threaded runtime every task that became ready (a socket that
//! answered, a timer that fired, the next tick) also woke an idle worker thread to look for
//! work: a quarter of a run's CPU went to those wake-ups. Here a run's wake-ups stay on the
//! thread that runs it. The web server, `/probe` and the watchers stay on the shared runtime.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::probe::CheckContext;

/// At most this many probe threads, however many cores there are: past a few, a run's cost
/// is the kernel's and the targets', not the threads'.
const MAX_THREADS: usize = 8;

/// The probe threads (none if not even one could start: probes then run on the shared runtime).
pub(super) struct Workers {
    workers: Vec<Worker>,
    next: AtomicUsize,
    context: CheckContext,
}

struct Worker {
    handle: Handle,
    context: CheckContext,
    /// Dropped with the worker: its thread then ends, dropping the tasks still on it.
    _stop: oneshot::Sender<()>,
}

impl Workers {
    /// One thread per core the process may use (its CPU quota counted), at most
    /// [`MAX_THREADS`]. Each has its own copy of the sockets probes share within a runtime
    /// (ICMP, DNS over UDP), so that their replies wake the thread that waits for them.
    pub(super) fn start(context: &CheckContext) -> Workers {
        let count = std::thread::available_parallelism()
            .map_or(1, NonZeroUsize::get)
            .min(MAX_THREADS);
        let mut workers = Vec::with_capacity(count);
        for index in 0..count {
            match Worker::start(index, context) {
                Ok(worker) => workers.push(worker),
                Err(e) => {
                    warn!(error = %e, threads = index, "could not start a probe thread; probes share the remaining ones");
                    break;
                }
            }
        }
        Workers {
            workers,
            next: AtomicUsize::new(0),
            context: context.clone(),
        }
    }

    /// How many probe threads run.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.workers.len()
    }

    /// Spawns the task `make` builds (with the context of the thread it will run on) on the
    /// next thread in turn.
    pub(super) fn spawn<F>(&self, make: impl FnOnce(CheckContext) -> F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.workers.is_empty() {
            return tokio::spawn(make(self.context.clone()));
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        let worker = &self.workers[turn];
        worker.handle.spawn(make(worker.context.clone()))
    }
}

impl Worker {
    fn start(index: usize, context: &CheckContext) -> std::io::Result<Worker> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name(format!("vigil-probes-{index}-blocking"))
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("vigil-probes-{index}"))
            .spawn(move || {
                runtime.block_on(async {
                    // Ends when the sender is dropped.
                    let _ = stopped.await;
                });
                // Blocking work (a name lookup) is not waited for.
                runtime.shutdown_background();
            })?;
        Ok(Worker {
            handle,
            context: CheckContext {
                pings: Default::default(),
                udp: Default::default(),
                ..context.clone()
            },
            _stop: stop,
        })
    }
}
