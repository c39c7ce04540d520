//! Probe kinds: one file per kind behind one contract, [`ProbeKind`].
//!
//! A kind's file owns everything about it:
//! - its config (`Spec`), decoded with unknown keys refused, and what [`ProbeKind::build`]
//!   makes of it at load (compiled regexes, TLS settings, secrets read from files), with errors
//!   at their key path;
//! - one attempt, [`ProbeKind::check`];
//! - what an attempt observes (`Obs`) and what is carried from run to run and across restarts
//!   (`Kept`, such as the last known certificate expiry);
//! - the metric families it publishes, in both vocabularies: vigil's `vigil_probe_*` on
//!   `/metrics` for its own probes, and blackbox_exporter's `probe_*` on `/probe`
//!   ([`ProbeKind::FAMILIES`]).
//!
//! The rules of the contract:
//! - A kind never retries, sleeps or times itself: the scheduler owns the interval, the
//!   attempt's timeout, retries and the latency thresholds. (A kind that asks several endpoints
//!   of one source in one attempt, as `elasticsearch` does with `urls`, divides the attempt's
//!   time between them, never extends it.)
//! - `check` writes into its `Obs` as it learns, because the scheduler may drop the attempt at
//!   its timeout: what was seen until then is still published (a status code that arrived before
//!   a trickling body timed out), and [`ProbeKind::interrupted`] closes what was open.
//! - `check` never panics on what a target sends; if it does anyway, that attempt alone is DOWN
//!   with reason `internal`.
//! - Its verdict's detail names no secret; it is made printable centrally.
//! - A family is a gauge; what it emits depends on the observation alone, so a family with
//!   nothing to say emits nothing.
//!
//! Registering a kind is one line in [`kinds!`]; the central encoders (`/metrics`, `/probe`,
//! the state file) go through [`Probe`], [`Observed`] and [`Carried`], which it generates, and
//! know no kind by name.

pub mod blackbox;
pub mod dns;
pub mod elasticsearch;
pub mod families;
pub mod freshness;
pub mod grpc;
pub mod heartbeat;
pub mod http;
pub mod icmp;
pub mod sql;
pub mod tcp;
pub mod websocket;

#[cfg(test)]
mod contract;

use std::fmt;
use std::future::Future;
use std::sync::{Arc, LazyLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::spec::BuildContext;
pub use families::{Emit, Family, Publish, Seen, Unit};
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
    /// A DNS answer's response code is not in `valid_rcodes`.
    Rcode,
    /// A DNS answer's records failed a regexp check.
    Records,
    /// Echo requests went unanswered (some: DEGRADED, all or past `down_loss`: DOWN).
    Loss,
    /// A gRPC health check answered NOT_SERVING.
    NotServing,
    /// A gRPC health check answered UNKNOWN.
    ServingUnknown,
    /// A gRPC health check answered SERVICE_UNKNOWN.
    ServiceUnknown,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 25] = [
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
        Reason::Rcode,
        Reason::Records,
        Reason::Loss,
        Reason::NotServing,
        Reason::ServingUnknown,
        Reason::ServiceUnknown,
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
            Reason::Rcode => "rcode",
            Reason::Records => "records",
            Reason::Loss => "loss",
            Reason::NotServing => "not_serving",
            Reason::ServingUnknown => "serving_unknown",
            Reason::ServiceUnknown => "service_unknown",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind's verdict on one attempt, before the scheduler applies latency thresholds.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// UP, DEGRADED or DOWN as far as the kind can tell.
    pub level: Level,
    /// Set whenever `level` is not UP.
    pub reason: Option<Reason>,
    /// A short human message (never holds a secret).
    pub detail: String,
    /// Nothing to judge yet (a heartbeat still waiting for its first beat): the run is not
    /// recorded, and the probe stays pending.
    pub pending: bool,
    /// The target's latency when the kind measures it apart from the whole attempt (icmp: the
    /// mean round trip of its replies, not the time between its packets); the latency
    /// thresholds and the published duration use it. `None`: the attempt's duration.
    pub latency: Option<std::time::Duration>,
}

impl Verdict {
    /// UP.
    pub fn up() -> Self {
        Self {
            level: Level::Up,
            reason: None,
            detail: String::new(),
            pending: false,
            latency: None,
        }
    }

    /// No result yet, and why.
    pub fn pending(detail: impl Into<String>) -> Self {
        Self {
            pending: true,
            detail: detail.into(),
            ..Self::up()
        }
    }

    /// A result that is not UP, with its reason and message.
    pub fn failed(level: Level, reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            level,
            reason: Some(reason),
            detail: detail.into(),
            pending: false,
            latency: None,
        }
    }

    /// DOWN, with its reason and message.
    pub fn down(reason: Reason, detail: impl Into<String>) -> Self {
        Self::failed(Level::Down, reason, detail)
    }

    /// Whether the level is not DOWN (`probe_success`).
    pub fn success(&self) -> bool {
        self.level != Level::Down
    }
}

impl From<Failure> for Verdict {
    fn from(failure: Failure) -> Self {
        Verdict::down(failure.reason, failure.detail)
    }
}

/// A failure inside a kind's attempt: becomes a DOWN verdict.
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

impl From<crate::transport::TransportError> for Failure {
    fn from(e: crate::transport::TransportError) -> Self {
        use crate::transport::ErrorKind;
        let reason = match e.kind {
            ErrorKind::Dns => Reason::Dns,
            ErrorKind::Connect => Reason::Connect,
            ErrorKind::Tls => Reason::Tls,
            ErrorKind::Protocol => Reason::Protocol,
            ErrorKind::Redirect => Reason::Redirect,
            ErrorKind::Body => Reason::Body,
        };
        Failure::new(reason, e.detail)
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
    pub sockets: crate::transport::connect::Sockets,
    /// The ICMP sockets every `icmp` probe shares.
    pub pings: Arc<crate::transport::ping::Pingers>,
    /// The UDP sockets `dns` queries reuse.
    pub udp: Arc<dns::UdpSockets>,
}

tokio::task_local! {
    static DEADLINE: std::time::Instant;
}

/// Runs `attempt` with `deadline` as the end of its time ([`deadline`]).
pub(crate) async fn with_deadline<F: Future>(deadline: std::time::Instant, attempt: F) -> F::Output {
    DEADLINE.scope(deadline, attempt).await
}

/// When the scheduler will drop the attempt running in this task (`None` outside one). A kind
/// that ends on its own before the timeout (icmp, counting its lost packets) reads it; the
/// rest leave the timeout to the scheduler.
pub fn deadline() -> Option<std::time::Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// When a kind that ends on its own before the scheduler's timeout stops waiting (`None`
/// outside an attempt): a little before [`deadline`] (a twentieth of what is left, at most
/// 200 ms), so that its own verdict, with what it was waiting for, comes first.
pub fn wait_until() -> Option<std::time::Instant> {
    deadline().map(|deadline| {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        deadline - (left / 20).min(std::time::Duration::from_millis(200))
    })
}

/// What a probe definition is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A self-scheduled probe under `probes:`: it names its own target.
    Scheduled,
    /// A `/probe` module under `modules:`: the target comes with each request.
    Module,
}

/// The contract of a probe kind (see the module docs for its rules). The implementing type is
/// the kind's compiled settings.
pub trait ProbeKind: Sized + fmt::Debug + Send + Sync + 'static {
    /// Its name, as written in `kind:` and published in the `kind` label.
    const NAME: &'static str;
    /// The reasons an attempt of this kind can end with besides [`Reason::SCHEDULER`]; its
    /// failure counters start at 0 for each, so `increase()` sees the first failure.
    const REASONS: &'static [Reason];
    /// Every metric family it publishes, on `/metrics` and on `/probe`.
    const FAMILIES: &'static [Family<Self>];

    /// Its config, as written (unknown keys refused).
    type Spec: DeserializeOwned;
    /// What one attempt observes, written as it is learnt.
    type Obs: Default + Clone + fmt::Debug + PartialEq + Send + Sync + 'static;
    /// What is carried from one run to the next and across restarts (in the state file).
    type Kept: Default + Clone + fmt::Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static;

    /// Builds the settings from the config at `path`, recording errors in `cx`.
    fn build(spec: Self::Spec, cx: &mut BuildContext, path: &str, role: Role) -> Option<Built<Self>>;

    /// One attempt against `target`, writing what it learns into `obs`.
    fn check(&self, target: &str, cx: &CheckContext, obs: &mut Self::Obs) -> impl Future<Output = Verdict> + Send;

    /// The attempt was dropped at its timeout: close what was open in `obs`.
    fn interrupted(obs: &mut Self::Obs) {
        let _ = obs;
    }

    /// The verdict on an attempt dropped at its timeout, when the kind has a better one than
    /// `timeout` from what it observed (icmp: the requests still unanswered are lost). A kind
    /// that needs no timer of its own for that leaves the scheduler's the only one.
    fn timed_out(obs: &Self::Obs) -> Option<Verdict> {
        let _ = obs;
        None
    }

    /// Carries what a finished run learnt into `kept`.
    fn keep(kept: &mut Self::Kept, obs: &Self::Obs) {
        let _ = (kept, obs);
    }

    /// A recorded run is kept as the probe's last one until the next: drop from `obs` what the
    /// kind's `/metrics` families do not read, so each probe holds only what it publishes.
    fn settle(obs: &mut Self::Obs) {
        let _ = obs;
    }
}

/// A family as the central encoders see it: which kind declares it, and where.
#[derive(Clone, Copy, Debug)]
pub struct FamilyInfo {
    /// The kind that declares it.
    pub kind: Kind,
    /// Its place in the kind's [`ProbeKind::FAMILIES`].
    pub index: usize,
    /// Its name (without the unit suffix).
    pub name: &'static str,
    /// Its help.
    pub help: &'static str,
    /// Its unit.
    pub unit: Option<Unit>,
    /// Where it is published.
    pub publish: Publish,
}

/// The families of one name, over every kind that declares it (one descriptor, one help).
#[derive(Clone, Debug)]
pub struct FamilyGroup {
    /// Name (without the unit suffix).
    pub name: &'static str,
    /// Help.
    pub help: &'static str,
    /// Unit.
    pub unit: Option<Unit>,
    /// The kinds that declare it, with the family's place in each.
    pub members: Vec<(Kind, usize)>,
}

impl FamilyGroup {
    /// The family's place in `kind`'s list, when `kind` declares it.
    pub fn index_for(&self, kind: Kind) -> Option<usize> {
        self.members.iter().find(|(k, _)| *k == kind).map(|(_, i)| *i)
    }

    /// Its full name, unit suffix included.
    pub fn full_name(&self) -> String {
        match self.unit {
            Some(unit) => format!("{}_{}", self.name, unit.as_str()),
            None => self.name.to_string(),
        }
    }
}

/// Every family published at `publish`, grouped by name, sorted by name.
pub fn family_groups(publish: Publish) -> &'static [FamilyGroup] {
    static METRICS: LazyLock<Vec<FamilyGroup>> = LazyLock::new(|| group(Publish::Metrics));
    static DETAIL: LazyLock<Vec<FamilyGroup>> = LazyLock::new(|| group(Publish::Detail));
    static PROBE: LazyLock<Vec<FamilyGroup>> = LazyLock::new(|| group(Publish::Probe));
    match publish {
        Publish::Metrics => &METRICS,
        Publish::Detail => &DETAIL,
        Publish::Probe => &PROBE,
    }
}

fn group(publish: Publish) -> Vec<FamilyGroup> {
    let mut groups: Vec<FamilyGroup> = Vec::new();
    for info in Kind::ALL
        .iter()
        .flat_map(|k| k.families())
        .filter(|f| f.publish == publish)
    {
        match groups.iter_mut().find(|g| g.name == info.name) {
            Some(group) => group.members.push((info.kind, info.index)),
            None => groups.push(FamilyGroup {
                name: info.name,
                help: info.help,
                unit: info.unit,
                members: vec![(info.kind, info.index)],
            }),
        }
    }
    groups.sort_by_key(FamilyGroup::full_name);
    groups
}

/// Declares the probe kinds: the [`Kind`] names, the compiled [`Probe`], what a run observed
/// ([`Observed`]) and what is carried ([`Carried`]), and the dispatch between them. One line
/// per kind; the second list is registered in tests only.
macro_rules! kinds {
    ($($variant:ident => $ty:ty;)+ #[cfg(test)] $($test_variant:ident => $test_ty:ty;)*) => {
        #[cfg(not(test))]
        kinds!(@registry $($variant => $ty;)+);
        #[cfg(test)]
        kinds!(@registry $($variant => $ty;)+ $($test_variant => $test_ty;)*);
    };
    (@registry $($variant:ident => $ty:ty;)+) => {
        /// The kind of a probe, the `kind` label.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Kind { $(
            #[doc = concat!("`", stringify!($variant), "`")]
            $variant,
        )+ }

        impl Kind {
            /// Every kind.
            pub const ALL: &'static [Kind] = &[$(Kind::$variant),+];

            /// Every kind's name, as written in `kind:`.
            pub const NAMES: &'static [&'static str] = &[$(<$ty as ProbeKind>::NAME),+];

            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self { $(Kind::$variant => <$ty as ProbeKind>::NAME,)+ }
            }

            /// The reasons a run of this kind can end with besides [`Reason::SCHEDULER`].
            pub fn own_reasons(self) -> &'static [Reason] {
                match self { $(Kind::$variant => <$ty as ProbeKind>::REASONS,)+ }
            }

            /// The kind named `name`.
            pub fn from_name(name: &str) -> Option<Kind> {
                Kind::ALL.iter().copied().find(|k| k.as_str() == name)
            }

            /// The families this kind declares.
            pub fn families(self) -> Vec<FamilyInfo> {
                fn infos<K: ProbeKind>(kind: Kind) -> Vec<FamilyInfo> {
                    K::FAMILIES
                        .iter()
                        .enumerate()
                        .map(|(index, f)| FamilyInfo {
                            kind,
                            index,
                            name: f.name,
                            help: f.help,
                            unit: f.unit,
                            publish: f.publish,
                        })
                        .collect()
                }
                match self { $(Kind::$variant => infos::<$ty>(self),)+ }
            }

            /// Nothing observed yet, for a probe of this kind.
            pub fn observed(self) -> Observed {
                match self { $(Kind::$variant => Observed::$variant(Default::default()),)+ }
            }

            /// Nothing carried yet, for a probe of this kind.
            pub fn carried(self) -> Carried {
                match self { $(Kind::$variant => Carried::$variant(Default::default()),)+ }
            }

            /// What the state file kept for a probe of this kind (`None`: unreadable, or
            /// another kind's).
            pub fn restore(self, saved: &serde_json::Value) -> Option<Carried> {
                match self { $(Kind::$variant => serde_json::from_value(saved.clone()).ok().map(Carried::$variant),)+ }
            }
        }

        /// A probe ready to run: settings compiled at load, shared cheaply between runs.
        #[derive(Clone, Debug)]
        pub enum Probe { $(
            #[doc = concat!("A `", stringify!($variant), "` probe.")]
            $variant(Arc<$ty>),
        )+ }

        /// What one run observed, of its kind. (Not boxed: one lives per probe, rewritten in
        /// place by every run.)
        #[derive(Clone, Debug, PartialEq)]
        #[allow(clippy::large_enum_variant)]
        pub enum Observed { $(
            #[doc = concat!("Of a `", stringify!($variant), "` probe.")]
            $variant(<$ty as ProbeKind>::Obs),
        )+ }

        /// What is carried from run to run, of its kind.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Carried { $(
            #[doc = concat!("Of a `", stringify!($variant), "` probe.")]
            $variant(<$ty as ProbeKind>::Kept),
        )+ }

        impl Probe {
            /// This probe's kind.
            pub fn kind(&self) -> Kind {
                match self { $(Probe::$variant(_) => Kind::$variant,)+ }
            }

            /// Nothing observed yet, for this probe.
            pub fn observed(&self) -> Observed {
                match self { $(Probe::$variant(_) => Observed::$variant(Default::default()),)+ }
            }

            async fn dispatch(&self, target: &str, cx: &CheckContext, obs: &mut Observed) -> Verdict {
                match (self, obs) {
                    $((Probe::$variant(settings), Observed::$variant(obs)) => settings.check(target, cx, obs).await,)+
                    #[allow(unreachable_patterns)]
                    _ => Verdict::down(Reason::Internal, "observations of another kind"),
                }
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
                    let spec: <$ty as ProbeKind>::Spec = ctx.deserialize_struct(value, path)?;
                    let built = <$ty as ProbeKind>::build(spec, ctx, path, role)?;
                    Some(Built {
                        settings: Probe::$variant(Arc::new(built.settings)),
                        target: built.target,
                        freshness: built.freshness,
                    })
                })+ }
            }
        }

        impl Observed {
            /// The kind it is of.
            pub fn kind(&self) -> Kind {
                match self { $(Observed::$variant(_) => Kind::$variant,)+ }
            }

            /// The attempt was dropped at its timeout.
            pub fn interrupted(&mut self) {
                match self { $(Observed::$variant(obs) => <$ty as ProbeKind>::interrupted(obs),)+ }
            }

            /// Drops what the kind's `/metrics` families do not read ([`ProbeKind::settle`]).
            pub fn settle(&mut self) {
                match self { $(Observed::$variant(obs) => <$ty as ProbeKind>::settle(obs),)+ }
            }

            /// The kind's own verdict on an attempt dropped at its timeout, if it has one.
            pub fn timed_out(&self) -> Option<Verdict> {
                match self { $(Observed::$variant(obs) => <$ty as ProbeKind>::timed_out(obs),)+ }
            }

            /// The observations of kind `K`, when they are of that kind.
            pub fn of<K: ProbeKind>(&self) -> Option<&K::Obs> {
                let any: &dyn std::any::Any = match self { $(Observed::$variant(obs) => obs,)+ };
                any.downcast_ref::<K::Obs>()
            }
        }

        impl Carried {
            /// The kind it is of.
            pub fn kind(&self) -> Kind {
                match self { $(Carried::$variant(_) => Kind::$variant,)+ }
            }

            /// Carries what a finished run learnt (of the same kind; another kind's run is
            /// ignored).
            pub fn keep(&mut self, obs: &Observed) {
                match (self, obs) {
                    $((Carried::$variant(kept), Observed::$variant(obs)) => <$ty as ProbeKind>::keep(kept, obs),)+
                    #[allow(unreachable_patterns)]
                    _ => {}
                }
            }

            /// As kept in the state file, serialized in place (no JSON value built).
            pub fn serialize_kept<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match self { $(Carried::$variant(kept) => serde::Serialize::serialize(kept, serializer),)+ }
            }

            /// As kept in the state file.
            pub fn to_json(&self) -> serde_json::Value {
                match self { $(Carried::$variant(kept) => serde_json::to_value(kept).unwrap_or_default(),)+ }
            }

            /// What was carried, of kind `K`.
            pub fn of<K: ProbeKind>(&self) -> Option<&K::Kept> {
                let any: &dyn std::any::Any = match self { $(Carried::$variant(kept) => kept,)+ };
                any.downcast_ref::<K::Kept>()
            }
        }

        /// Emits family `index` of `kind` for one probe: what it observed (`None`: no run
        /// yet) and what it carries.
        pub fn emit(kind: Kind, index: usize, observed: Option<&Observed>, carried: &Carried, out: &mut dyn Emit) {
            match (kind, carried) {
                $((Kind::$variant, Carried::$variant(kept)) => {
                    let Some(family) = <$ty as ProbeKind>::FAMILIES.get(index) else { return };
                    let fresh;
                    let obs = match observed {
                        Some(Observed::$variant(obs)) => obs,
                        _ => {
                            fresh = <<$ty as ProbeKind>::Obs>::default();
                            &fresh
                        }
                    };
                    (family.emit)(&Seen { obs, kept, ran: observed.is_some() }, out);
                })+
                #[allow(unreachable_patterns)]
                _ => {}
            }
        }
    };
}

kinds! {
    Http => http::Http;
    Tcp => tcp::Tcp;
    Dns => dns::Dns;
    Icmp => icmp::Icmp;
    Grpc => grpc::Grpc;
    Websocket => websocket::Websocket;
    Elasticsearch => elasticsearch::Elasticsearch;
    Sql => sql::Sql;
    Heartbeat => heartbeat::Heartbeat;
    #[cfg(test)]
    Echo => contract::Echo;
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Observed {
    /// An `http` probe's observations.
    pub fn http(&self) -> Option<&http::Obs> {
        self.of::<http::Http>()
    }

    /// A `tcp` probe's observations.
    pub fn tcp(&self) -> Option<&tcp::Obs> {
        self.of::<tcp::Tcp>()
    }

    /// A freshness kind's observations (elasticsearch, sql, heartbeat).
    pub fn freshness(&self) -> Option<&freshness::Obs> {
        match self {
            Observed::Elasticsearch(obs) | Observed::Sql(obs) | Observed::Heartbeat(obs) => Some(obs),
            _ => None,
        }
    }
}

impl Probe {
    /// `/probe?hostname=`: an `http` probe with that `Host` header (and TLS server name), as
    /// blackbox_exporter has it; other kinds are unchanged. An error says why it cannot be.
    pub fn with_hostname(&self, host: &str) -> Result<Probe, String> {
        match self {
            Probe::Http(http) => http.with_host(host).map(|h| Probe::Http(Arc::new(h))),
            other => Ok(other.clone()),
        }
    }

    /// One attempt against `target`, writing what it learns into `obs` (which the caller may
    /// keep when it drops the attempt at its timeout). Its detail is printable: what a target
    /// sent cannot reach a terminal or a log line as escape sequences or line breaks.
    pub async fn check(&self, target: &str, cx: &CheckContext, obs: &mut Observed) -> Verdict {
        if obs.kind() != self.kind() {
            *obs = self.observed();
        }
        let mut verdict = self.dispatch(target, cx, obs).await;
        if let std::borrow::Cow::Owned(clean) = crate::printable::printable(&verdict.detail) {
            verdict.detail = clean;
        }
        verdict
    }
}
