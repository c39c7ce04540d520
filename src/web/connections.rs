//! The listener's open connections: what each is doing (waiting for a request, handling one,
//! sending a response) and since when, so that the listener can keep to its cap by closing the
//! connection idle longest, close connections idle or stalled past their timeouts, and bound
//! how long a request's body may take to arrive.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::poison::LockUnpoisoned;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::Notify;

/// Every open connection.
#[derive(Default)]
pub struct Connections {
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    next: AtomicU64,
    /// Signalled when a connection ends or is closed (room for another).
    ended: Notify,
}

/// One connection: its activity, and the signal that closes it.
#[derive(Default)]
pub struct Conn {
    activity: Mutex<Activity>,
    /// Notified (once) to close the connection.
    pub close: Notify,
}

#[derive(Clone, Copy)]
struct Activity {
    /// Requests whose handler has not answered yet: never closed for room.
    handling: usize,
    /// Responses whose body is still being sent.
    sending: usize,
    /// When the connection last changed what it does, or (sending) last sent something.
    since: Instant,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            handling: 0,
            sending: 0,
            since: Instant::now(),
        }
    }
}

/// What a connection is doing, in the order they are closed to make room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Doing {
    /// Waiting for a request (or its headers): the first to go.
    Idle,
    /// Sending a response (a live event stream, a client that reads slowly).
    Sending,
    /// Handling a request.
    Handling,
}

impl Activity {
    fn doing(&self) -> Doing {
        if self.handling > 0 {
            Doing::Handling
        } else if self.sending > 0 {
            Doing::Sending
        } else {
            Doing::Idle
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock_unpoisoned()
}

impl Connections {
    /// Registers a new connection (idle until its first request).
    pub fn open(&self) -> (u64, Arc<Conn>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::default());
        lock(&self.open).insert(id, conn.clone());
        (id, conn)
    }

    /// The connection `id` has ended.
    pub fn ended(&self, id: u64) {
        lock(&self.open).remove(&id);
        self.ended.notify_one();
    }

    /// Connections open (those closed for room or timeouts no longer count).
    pub fn count(&self) -> usize {
        lock(&self.open).len()
    }

    /// Whether some connection could be closed to make room (one not handling a request).
    pub fn any_closable(&self) -> bool {
        lock(&self.open)
            .values()
            .any(|c| lock(&c.activity).doing() != Doing::Handling)
    }

    /// Waits until a connection ends.
    pub async fn wait_for_room(&self) {
        self.ended.notified().await;
    }

    /// Closes the connection (other than `keep`) idle longest, or else the one whose response
    /// has sent nothing for longest; never one that is handling a request. Whether one was.
    pub fn close_one(&self, keep: u64) -> bool {
        let mut open = lock(&self.open);
        let victim = open
            .iter()
            .filter(|(id, _)| **id != keep)
            .filter_map(|(id, c)| {
                let a = *lock(&c.activity);
                (a.doing() != Doing::Handling).then_some((a.doing(), a.since, *id))
            })
            .min();
        match victim.and_then(|(_, _, id)| open.remove(&id)) {
            Some(conn) => {
                conn.close.notify_one();
                true
            }
            None => false,
        }
    }

    /// Closes connections idle longer than `idle`, and those whose response has sent nothing
    /// for longer than `stalled`; returns how many.
    pub fn close_expired(&self, idle: Duration, stalled: Duration) -> usize {
        let now = Instant::now();
        let mut open = lock(&self.open);
        let expired: Vec<u64> = open
            .iter()
            .filter(|(_, c)| {
                let a = *lock(&c.activity);
                let quiet = now.saturating_duration_since(a.since);
                match a.doing() {
                    Doing::Idle => quiet > idle,
                    Doing::Sending => quiet > stalled,
                    Doing::Handling => false,
                }
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            if let Some(conn) = open.remove(id) {
                conn.close.notify_one();
            }
        }
        expired.len()
    }
}

impl Conn {
    /// A request arrived: the connection is handling it until the guard is turned into a
    /// [`Sending`] one or dropped.
    pub fn handling(self: &Arc<Self>) -> Handling {
        let mut a = lock(&self.activity);
        a.handling += 1;
        a.since = Instant::now();
        Handling {
            conn: self.clone(),
            answered: false,
        }
    }
}

/// A request being handled.
pub struct Handling {
    conn: Arc<Conn>,
    answered: bool,
}

impl Handling {
    /// The handler has answered: its response's body is being sent.
    pub fn sending(mut self) -> Sending {
        self.answered = true;
        let mut a = lock(&self.conn.activity);
        a.handling = a.handling.saturating_sub(1);
        a.sending += 1;
        a.since = Instant::now();
        drop(a);
        Sending {
            conn: self.conn.clone(),
        }
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        if !self.answered {
            let mut a = lock(&self.conn.activity);
            a.handling = a.handling.saturating_sub(1);
            a.since = Instant::now();
        }
    }
}

/// A response body being sent.
pub struct Sending {
    conn: Arc<Conn>,
}

impl Sending {
    /// The client took more of the body.
    fn progressed(&self) {
        lock(&self.conn.activity).since = Instant::now();
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        let mut a = lock(&self.conn.activity);
        a.sending = a.sending.saturating_sub(1);
        a.since = Instant::now();
    }
}

/// A response body that keeps its connection marked as sending until it is done.
pub struct Tracked<B> {
    inner: B,
    sending: Sending,
}

impl<B> Tracked<B> {
    /// `inner`, sent under `sending`.
    pub fn new(inner: B, sending: Sending) -> Self {
        Self { inner, sending }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        // Asked for more: the client has taken what was sent so far.
        self.sending.progressed();
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that must arrive whole before a deadline.
pub struct Deadlined {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Deadlined {
    /// `inner`, due within `within` from now.
    pub fn new(inner: Incoming, within: Duration) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(within)),
        }
    }
}

/// The body of a request did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the read timeout")]
pub struct TooSlow;

impl Body for Deadlined {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(TooSlow))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_the_idle_first_and_never_a_handler() {
        let connections = Connections::default();
        let (a, conn_a) = connections.open();
        std::thread::sleep(Duration::from_millis(2));
        let (b, conn_b) = connections.open();
        let (c, conn_c) = connections.open();
        let _handling_a = conn_a.handling();
        let sending_b = conn_b.handling().sending();
        // c is idle, b sending, a handling: c goes first, then b, then none.
        assert!(connections.close_one(u64::MAX));
        assert_eq!(connections.count(), 2);
        assert!(connections.close_one(u64::MAX));
        assert!(!connections.close_one(u64::MAX));
        assert!(!connections.any_closable());
        drop(sending_b);
        connections.ended(b);
        connections.ended(c);
        assert_eq!(connections.count(), 1);
        let _ = (a, conn_c);
    }

    #[test]
    fn expires_idle_and_stalled_connections() {
        let connections = Connections::default();
        let (_, idle) = connections.open();
        let (_, busy) = connections.open();
        let _handling = busy.handling();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            connections.close_expired(Duration::from_secs(5), Duration::from_secs(5)),
            0
        );
        assert_eq!(
            connections.close_expired(Duration::from_millis(10), Duration::from_secs(5)),
            1
        );
        assert_eq!(connections.count(), 1);
        let _ = idle;
    }
}
