//! How probes reach their targets: name resolution and TCP connect with an IP-version
//! preference and fallback ([`connect`]), TLS ([`tls`]), and the HTTP/1.1 client with its
//! per-phase timings ([`http`]) that the `http` kind, the `elasticsearch` kind and the receiver's
//! relay use, and ICMP echo on sockets shared by every target ([`ping`]). Every call reports what it learnt along the way (times, addresses, certificates,
//! the response head) whether it succeeds or not, so a failing probe still publishes what it
//! saw; failures are a [`TransportError`] of a closed [`ErrorKind`].

pub mod connect;
pub mod http;
pub mod ping;
pub mod tls;

use std::fmt;

/// What went wrong on the way to a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The name did not resolve (or not to an address of an allowed IP version).
    Dns,
    /// No TCP connection (refused, unreachable, reset during connect).
    Connect,
    /// The TLS handshake failed (untrusted, expired, wrong name, protocol).
    Tls,
    /// The peer broke the protocol (not HTTP, a connection closed mid-response, a body that
    /// does not decode).
    Protocol,
    /// A redirect that cannot be followed (no usable Location, another scheme).
    Redirect,
    /// The body is longer than the limit.
    Body,
}

impl ErrorKind {
    /// A bounded label for it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Dns => "dns",
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Redirect => "redirect",
            ErrorKind::Body => "body",
        }
    }
}

/// A failure on the way to a target: its kind, and a message that names no secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct TransportError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// The message.
    pub detail: String,
}

impl TransportError {
    /// A failure of `kind`.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }

    /// A bounded label for the error.
    pub fn reason(&self) -> &'static str {
        self.kind.as_str()
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}
