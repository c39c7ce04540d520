//! What a kind's metric families are made of ([`Family`], [`Seen`], [`Emit`]), and the families
//! several kinds share: blackbox_exporter's address series (`probe_ip_protocol`,
//! `probe_ip_addr_hash`, `probe_dns_lookup_time_seconds`), its four TLS series, and vigil's last
//! known certificate expiry.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::ProbeKind;
use crate::metrics::unix_seconds;
use crate::transport::connect::{Dialled, ip_hash};
use crate::transport::tls::TlsSeen;

/// Where a family is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Publish {
    /// On `/metrics`, for each self-scheduled probe, with its `probe`, `kind` and user labels
    /// (vigil's vocabulary: `vigil_*`).
    Metrics,
    /// On `/metrics` only with `metrics.detail: true` (phase timings and the like: a line each
    /// per probe on every scrape that most users never query).
    Detail,
    /// On `/probe`, for the one run it answers (blackbox_exporter's vocabulary, `probe_*`, and
    /// vigil's extras, `vigil_*`).
    Probe,
}

/// The unit of a family, appended to its name (`_seconds`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unit {
    /// Seconds.
    Seconds,
    /// Bytes.
    Bytes,
}

impl Unit {
    /// The name suffix.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Seconds => "seconds",
            Unit::Bytes => "bytes",
        }
    }

    /// The same unit for the `prometheus-client` encoder.
    pub fn encoder_unit(self) -> prometheus_client::registry::Unit {
        match self {
            Unit::Seconds => prometheus_client::registry::Unit::Seconds,
            Unit::Bytes => prometheus_client::registry::Unit::Bytes,
        }
    }
}

/// One gauge family a kind publishes.
pub struct Family<K: ProbeKind> {
    /// Its name, without the unit suffix.
    pub name: &'static str,
    /// Its help text.
    pub help: &'static str,
    /// Its unit (appended to the name).
    pub unit: Option<Unit>,
    /// Where it is published.
    pub publish: Publish,
    /// Its samples for one probe (none, one, or one per label set).
    pub emit: fn(&Seen<'_, K>, &mut dyn Emit),
}

impl<K: ProbeKind> std::fmt::Debug for Family<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Family")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What a family reads of one probe.
pub struct Seen<'a, K: ProbeKind> {
    /// What the last run observed (the default when none ran yet: see `ran`).
    pub obs: &'a K::Obs,
    /// What is carried from run to run.
    pub kept: &'a K::Kept,
    /// Whether a run was observed.
    pub ran: bool,
}

/// Where samples go.
pub trait Emit {
    /// One sample with its own labels (besides the probe's).
    fn gauge(&mut self, labels: &[(&str, &str)], value: f64);
}

/// What the address series read: the connect of the first hop, once resolution was tried.
pub trait Reached {
    /// `None` before a name was resolved (a target that does not parse).
    fn reached(&self) -> Option<&Dialled>;
}

/// What the TLS series read: the handshake of the final connection, when it succeeded.
pub trait Shook {
    /// `None` without a successful handshake.
    fn shook(&self) -> Option<&TlsSeen>;
}

/// What vigil's certificate expiry series reads.
pub trait KeepsCertExpiry {
    /// The expiry last known.
    fn cert_expiry(&self) -> &CertExpiry;
}

/// What a kind that speaks TLS carries from run to run: the certificate expiry last known (in
/// the state file as `{"cert": {"at": ...}}`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeptCert {
    /// The certificate expiry last known.
    #[serde(default)]
    pub cert: CertExpiry,
}

impl KeepsCertExpiry for KeptCert {
    fn cert_expiry(&self) -> &CertExpiry {
        &self.cert
    }
}

/// The time a lookup took, for a kind's resolve phase: 0 when the name did not resolve to an
/// address it could use (as blackbox_exporter publishes it).
pub fn lookup_time(dialled: &Dialled) -> std::time::Duration {
    if dialled.addr.is_some() {
        dialled.resolve
    } else {
        std::time::Duration::ZERO
    }
}

/// The earliest certificate expiry last seen, kept while handshakes fail (an expired
/// certificate refused still tells its expiry), so an expiry alert never resolves by itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertExpiry {
    /// When, to the millisecond.
    #[serde(default, with = "crate::persist::unix_ms")]
    pub at: Option<SystemTime>,
}

impl CertExpiry {
    /// Carries what a handshake showed.
    pub fn keep(&mut self, seen: &TlsSeen) {
        if let Some(at) = seen.earliest_expiry.or(seen.refused_expiry) {
            self.at = Some(crate::persist::to_ms(at));
        }
    }
}

/// Go's zero `time.Time` in Unix seconds: blackbox's last chain expiry when nothing was verified.
const GO_ZERO_TIME: f64 = -62_135_596_800.0;

fn address(seen: Option<&Dialled>) -> Option<SocketAddr> {
    seen.and_then(|d| d.addr)
}

fn ip_protocol<K: ProbeKind>(seen: &Seen<'_, K>, out: &mut dyn Emit)
where
    K::Obs: Reached,
{
    if let Some(dialled) = seen.obs.reached() {
        let version = match address(Some(dialled)) {
            Some(SocketAddr::V4(_)) => 4.0,
            Some(SocketAddr::V6(_)) => 6.0,
            None => 0.0,
        };
        out.gauge(&[], version);
    }
}

fn ip_addr_hash<K: ProbeKind>(seen: &Seen<'_, K>, out: &mut dyn Emit)
where
    K::Obs: Reached,
{
    if let Some(dialled) = seen.obs.reached() {
        out.gauge(&[], address(Some(dialled)).map_or(0.0, |a| f64::from(ip_hash(a.ip()))));
    }
}

fn dns_lookup_time<K: ProbeKind>(seen: &Seen<'_, K>, out: &mut dyn Emit)
where
    K::Obs: Reached,
{
    if let Some(dialled) = seen.obs.reached() {
        out.gauge(&[], dialled.resolve.as_secs_f64());
    }
}

fn ssl_earliest_cert_expiry<K: ProbeKind>(seen: &Seen<'_, K>, out: &mut dyn Emit)
where
    K::Obs: Shook,
{
    if let Some(at) = seen.obs.shook().and_then(|t| t.earliest_expiry) {
        out.gauge(&[], unix_seconds(at));
    }
}

fn ssl_last_chain_expiry<K: ProbeKind>(seen: &Seen<'_, K>, out: &mut dyn Emit)
where
    K::Obs: Shook,
{
    if let Some(tls) = seen.obs.shook() {
        out.gauge(&[], tls.verified_chain_expiry.map_or(GO_ZERO_TIME, unix_seconds));
    }
}

fn ssl_last_chain_info<K: ProbeKind>(seen: &Seen<'_, K>, out: &mut dyn Emit)
where
    K::Obs: Shook,
{
    if let Some(leaf) = seen.obs.shook().and_then(|t| t.leaf.as_ref()) {
        out.gauge(
            &[
                ("fingerprint_sha256", &leaf.fingerprint_sha256),
                ("issuer", &leaf.issuer),
                ("subject", &leaf.subject),
                ("subjectalternative", &leaf.dns_names),
            ],
            1.0,
        );
    }
}

fn tls_version_info<K: ProbeKind>(seen: &Seen<'_, K>, out: &mut dyn Emit)
where
    K::Obs: Shook,
{
    if let Some(tls) = seen.obs.shook() {
        out.gauge(&[("version", tls.version.unwrap_or("unknown"))], 1.0);
    }
}

fn cert_expiry<K: ProbeKind>(seen: &Seen<'_, K>, out: &mut dyn Emit)
where
    K::Kept: KeepsCertExpiry,
{
    if let Some(at) = seen.kept.cert_expiry().at {
        out.gauge(&[], unix_seconds(at));
    }
}

/// The address series of kinds that resolve and connect.
pub struct Address<K>(PhantomData<K>);

impl<K: ProbeKind> Address<K>
where
    K::Obs: Reached,
{
    /// `probe_ip_protocol`: 4 or 6, 0 when the name did not resolve.
    pub const IP_PROTOCOL: Family<K> = Family {
        name: "probe_ip_protocol",
        help: "Specifies whether probe ip protocol is IP4 or IP6",
        unit: None,
        publish: Publish::Probe,
        emit: ip_protocol::<K>,
    };
    /// `probe_ip_addr_hash`: FNV-1a of the address, to see it change.
    pub const IP_ADDR_HASH: Family<K> = Family {
        name: "probe_ip_addr_hash",
        help: "Specifies the hash of IP address. It's useful to detect if the IP address changes.",
        unit: None,
        publish: Publish::Probe,
        emit: ip_addr_hash::<K>,
    };
    /// `probe_dns_lookup_time_seconds`.
    pub const DNS_LOOKUP_TIME: Family<K> = Family {
        name: "probe_dns_lookup_time",
        help: "Returns the time taken for probe dns lookup in seconds",
        unit: Some(Unit::Seconds),
        publish: Publish::Probe,
        emit: dns_lookup_time::<K>,
    };
}

/// The TLS series of kinds that speak TLS, after a handshake succeeded.
pub struct Tls<K>(PhantomData<K>);

impl<K: ProbeKind> Tls<K>
where
    K::Obs: Shook,
{
    /// `probe_ssl_earliest_cert_expiry` (its help as blackbox_exporter words it).
    pub const EARLIEST_CERT_EXPIRY: Family<K> = Family {
        name: "probe_ssl_earliest_cert_expiry",
        help: "Returns last SSL chain expiry in unixtime",
        unit: None,
        publish: Publish::Probe,
        emit: ssl_earliest_cert_expiry::<K>,
    };
    /// `probe_ssl_last_chain_expiry_timestamp_seconds`.
    pub const LAST_CHAIN_EXPIRY: Family<K> = Family {
        name: "probe_ssl_last_chain_expiry_timestamp",
        help: "Returns last SSL chain expiry in timestamp",
        unit: Some(Unit::Seconds),
        publish: Publish::Probe,
        emit: ssl_last_chain_expiry::<K>,
    };
    /// `probe_ssl_last_chain_info`.
    pub const LAST_CHAIN_INFO: Family<K> = Family {
        name: "probe_ssl_last_chain_info",
        help: "Contains SSL leaf certificate information",
        unit: None,
        publish: Publish::Probe,
        emit: ssl_last_chain_info::<K>,
    };
    /// `probe_tls_version_info`.
    pub const VERSION_INFO: Family<K> = Family {
        name: "probe_tls_version_info",
        help: "Returns the TLS version used or NaN when unknown",
        unit: None,
        publish: Publish::Probe,
        emit: tls_version_info::<K>,
    };
}

/// vigil's certificate series, on `/metrics`.
pub struct Certificates<K>(PhantomData<K>);

impl<K: ProbeKind> Certificates<K>
where
    K::Kept: KeepsCertExpiry,
{
    /// `vigil_probe_tls_cert_expiry_timestamp_seconds`, last known.
    pub const EXPIRY: Family<K> = Family {
        name: "vigil_probe_tls_cert_expiry_timestamp",
        help: "Earliest expiry of the certificates the target presented (last known: kept while a handshake fails).",
        unit: Some(Unit::Seconds),
        publish: Publish::Metrics,
        emit: cert_expiry::<K>,
    };
}
