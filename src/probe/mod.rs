//! Probe kinds: one file per kind behind one small contract, [`Probe::check`].
//!
//! A kind's file holds its config struct (`Spec`), what it builds from it at load (compiled
//! regexes, TLS settings, secrets read from files) and its `check`, which makes one attempt and
//! never sleeps: the scheduler owns timing, timeouts, retries, latency levels and metrics.
//! Adding a kind is one file plus one line in [`probe_kinds!`]; the compiler finds the rest.

pub mod elasticsearch;
pub mod freshness;
pub mod heartbeat;
pub mod http;
pub mod net;
pub mod sql;
pub mod tcp;
pub mod tls;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::spec::BuildContext;
pub use freshness::Thresholds;

/// The level a probe run ends in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Answering, fast enough, every assertion held.
    Up,
    /// Answering, but slow, or in a state listed as degraded (e.g. status 503), or data ageing.
    Degraded,
    /// Not answering, an assertion failed, too slow, or data too old.
    Down,
}

impl Level {
    /// All levels, in the order they are published.
    pub const ALL: [Level; 3] = [Level::Up, Level::Degraded, Level::Down];

    /// The label value (`up`, `degraded`, `down`).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Up => "up",
            Level::Degraded => "degraded",
            Level::Down => "down",
        }
    }

    /// The level whose label value is `name`.
    pub fn from_name(name: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.as_str() == name)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str().to_ascii_uppercase())
    }
}

/// Why a run did not end UP: a closed set, used as the `reason` label and in logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The run did not finish within its timeout.
    Timeout,
    /// The name did not resolve (or resolved to no address of an allowed family).
    Dns,
    /// The TCP connection failed (refused, unreachable, reset during connect).
    Connect,
    /// The TLS handshake failed (untrusted, expired, wrong name, protocol).
    Tls,
    /// The peer broke the protocol (malformed HTTP, connection closed mid-response).
    Protocol,
    /// The HTTP status is not valid, or is listed as degraded.
    Status,
    /// The body failed a regex assertion or exceeded the size limit.
    Body,
    /// A response header failed a regex assertion.
    Header,
    /// A JSON condition on the body did not hold, or the body is not JSON.
    Json,
    /// Too many redirects, or a redirect that cannot be followed.
    Redirect,
    /// The run took longer than `degraded_after` / `down_after`.
    Latency,
    /// A TCP exchange did not receive what it expected.
    Expect,
    /// The source was refused the credentials it was given (401/403, a wrong password).
    Auth,
    /// The index, data stream or table does not exist.
    Missing,
    /// The source rejected or failed the query (syntax, a field that is not a date, ...).
    Query,
    /// The source holds no data at all (an empty index or table, no heartbeat yet).
    Empty,
    /// The newest data is older than `max_age` (DOWN) or `warn_age` (DEGRADED).
    Stale,
    /// A job reported its own failure with its heartbeat.
    Reported,
    /// The probe panicked: a bug in vigil, reported rather than hidden.
    Internal,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 19] = [
        Reason::Timeout,
        Reason::Dns,
        Reason::Connect,
        Reason::Tls,
        Reason::Protocol,
        Reason::Status,
        Reason::Body,
        Reason::Header,
        Reason::Json,
        Reason::Redirect,
        Reason::Latency,
        Reason::Expect,
        Reason::Auth,
        Reason::Missing,
        Reason::Query,
        Reason::Empty,
        Reason::Stale,
        Reason::Reported,
        Reason::Internal,
    ];

    /// What any kind can end with, whatever it checks: the scheduler's timeout and latency
    /// thresholds, and a probe that panicked.
    pub const SCHEDULER: [Reason; 3] = [Reason::Timeout, Reason::Latency, Reason::Internal];

    /// The reason whose label value is `name`.
    pub fn from_name(name: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Timeout => "timeout",
            Reason::Dns => "dns",
            Reason::Connect => "connect",
            Reason::Tls => "tls",
            Reason::Protocol => "protocol",
            Reason::Status => "status",
            Reason::Body => "body",
            Reason::Header => "header",
            Reason::Json => "json",
            Reason::Redirect => "redirect",
            Reason::Latency => "latency",
            Reason::Expect => "expect",
            Reason::Auth => "auth",
            Reason::Missing => "missing",
            Reason::Query => "query",
            Reason::Empty => "empty",
            Reason::Stale => "stale",
            Reason::Reported => "reported",
            Reason::Internal => "internal",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Durations of the phases of an HTTP request (summed over redirects, like blackbox_exporter).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Phases {
    /// Name resolution.
    pub resolve: Duration,
    /// TCP connect.
    pub connect: Duration,
    /// TLS handshake.
    pub tls: Duration,
    /// From the request sent to the response headers received.
    pub processing: Duration,
    /// Reading the body.
    pub transfer: Duration,
}

impl Phases {
    /// `(phase label, duration)` in publishing order.
    pub fn labelled(&self) -> [(&'static str, Duration); 5] {
        [
            ("resolve", self.resolve),
            ("connect", self.connect),
            ("tls", self.tls),
            ("processing", self.processing),
            ("transfer", self.transfer),
        ]
    }
}

/// What a run observed besides its level; each kind fills what applies to it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observations {
    /// Final HTTP status code.
    pub http_status: Option<u16>,
    /// HTTP version of the final response, as a number (1.0, 1.1).
    pub http_version: Option<f64>,
    /// Redirects followed.
    pub http_redirects: Option<u32>,
    /// Body length read (bytes).
    pub http_content_length: Option<u64>,
    /// Phase durations.
    pub phases: Option<Phases>,
    /// Whether the final connection used TLS.
    pub tls: Option<bool>,
    /// Earliest `notAfter` of the certificates the server presented.
    pub tls_cert_expiry: Option<SystemTime>,
    /// IP version of the address connected to (4 or 6).
    pub ip_protocol: Option<u8>,
    /// Freshness kinds: when the newest record was written (`None`: no record at all).
    pub freshness_newest: Option<SystemTime>,
}

/// The result of one attempt, before the scheduler applies latency thresholds.
#[derive(Clone, Debug, PartialEq)]
pub struct Checked {
    /// UP, DEGRADED or DOWN as far as the kind can tell.
    pub level: Level,
    /// Set whenever `level` is not UP.
    pub reason: Option<Reason>,
    /// A short human message (never holds a secret).
    pub detail: String,
    /// What was observed.
    pub observations: Observations,
    /// Nothing to judge yet (a heartbeat still waiting for its first beat): the run is not
    /// recorded, and the probe stays pending.
    pub pending: bool,
}

impl Checked {
    /// An UP result.
    pub fn up(observations: Observations) -> Self {
        Self {
            level: Level::Up,
            reason: None,
            detail: String::new(),
            observations,
            pending: false,
        }
    }

    /// No result yet, and why.
    pub fn pending(detail: impl Into<String>) -> Self {
        Self {
            pending: true,
            detail: detail.into(),
            ..Self::up(Observations::default())
        }
    }

    /// A non-UP result with its reason and message.
    pub fn failed(level: Level, reason: Reason, detail: impl Into<String>, observations: Observations) -> Self {
        Self {
            level,
            reason: Some(reason),
            detail: detail.into(),
            observations,
            pending: false,
        }
    }

    /// A DOWN result with its reason and message.
    pub fn down(reason: Reason, detail: impl Into<String>, observations: Observations) -> Self {
        Self::failed(Level::Down, reason, detail, observations)
    }
}

/// A failure inside a kind's `check`, turned into a DOWN result with what was observed so far.
#[derive(Debug)]
pub struct Failure {
    /// The reason label.
    pub reason: Reason,
    /// The message.
    pub detail: String,
}

impl Failure {
    /// A failure with its reason.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// What a kind builds from its config.
#[derive(Debug)]
pub struct Built<S> {
    /// Compiled settings.
    pub settings: S,
    /// The target as written, where the kind has one (URL, address, DSN).
    pub target: Option<String>,
    /// Freshness kinds: their age thresholds.
    pub freshness: Option<Thresholds>,
}

/// What a check may read besides its settings: state that outlives a config reload.
#[derive(Clone, Debug, Default)]
pub struct CheckContext {
    /// Heartbeats pushed to `/push/<name>`.
    pub heartbeats: Arc<heartbeat::Beats>,
    /// The probes' share of the process' descriptors (unlimited by default).
    pub sockets: net::Sockets,
}

/// Declares the probe kinds: the `Kind` name enum, the `Spec` config enum, the compiled `Probe`
/// enum and the dispatch between them. One line per kind.
macro_rules! probe_kinds {
    ($($variant:ident => $name:literal, $module:ident;)+) => {
        /// The kind of a probe, the `kind` label.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Kind { $(
            #[doc = concat!("`", $name, "`")]
            $variant,
        )+ }

        impl Kind {
            /// Every kind's name, as written in `kind:`.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self { $(Kind::$variant => $name,)+ }
            }

            /// The reasons a run of this kind can end with besides [`Reason::SCHEDULER`]; its
            /// failure counters start at 0 for each, so `increase()` sees the first failure.
            pub fn own_reasons(self) -> &'static [Reason] {
                match self { $(Kind::$variant => $module::REASONS,)+ }
            }

            /// The kind named `name`.
            pub fn from_name(name: &str) -> Option<Kind> {
                match name { $($name => Some(Kind::$variant),)+ _ => None }
            }
        }

        /// A probe ready to run: settings compiled at load, shared cheaply between runs.
        #[derive(Clone, Debug)]
        pub enum Probe { $(
            #[doc = concat!("A `", $name, "` probe.")]
            $variant(Arc<$module::Settings>),
        )+ }

        impl Probe {
            /// This probe's kind.
            pub fn kind(&self) -> Kind {
                match self { $(Probe::$variant(_) => Kind::$variant,)+ }
            }

            /// One attempt against `target`; never sleeps, never panics on bad input. Its
            /// detail is printable: what a target sent cannot reach a terminal or a log line
            /// as escape sequences or line breaks.
            pub async fn check(&self, target: &str, context: &CheckContext) -> Checked {
                let mut checked = match self {
                    $(Probe::$variant(settings) => $module::check(settings, target, context).await,)+
                };
                if let std::borrow::Cow::Owned(clean) = crate::printable::printable(&checked.detail) {
                    checked.detail = clean;
                }
                checked
            }

            /// Builds the probe of kind `kind` from the config value at `path` (without `kind`).
            pub(crate) fn build(
                kind: Kind,
                value: &figment::value::Value,
                ctx: &mut BuildContext,
                path: &str,
                role: Role,
            ) -> Option<Built<Probe>> {
                match kind { $(Kind::$variant => {
                    let spec: $module::Spec = ctx.deserialize_struct(value, path)?;
                    let built = $module::build(spec, ctx, path, role)?;
                    Some(Built {
                        settings: Probe::$variant(Arc::new(built.settings)),
                        target: built.target,
                        freshness: built.freshness,
                    })
                })+ }
            }
        }
    };
}

probe_kinds! {
    Http => "http", http;
    Tcp => "tcp", tcp;
    Elasticsearch => "elasticsearch", elasticsearch;
    Sql => "sql", sql;
    Heartbeat => "heartbeat", heartbeat;
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a probe definition is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A self-scheduled probe under `probes:`: it names its own target.
    Scheduled,
    /// A `/probe` module under `modules:`: the target comes with each request.
    Module,
}
