//! blackbox_exporter's config file, as it is (`vigil run --blackbox.config-file blackbox.yml`,
//! or `blackbox_config_file:` in vigil's config): its `http` and `tcp` modules become `/probe`
//! modules of vigil's `http` and `tcp` kinds, with blackbox_exporter's defaults (IPv6
//! preferred, no body limit, no decoding without `compression`, the scrape's timeout when the
//! module has none).
//!
//! Every option is read as blackbox_exporter 0.23 reads it, or refused at load with its key
//! path and line: an option vigil does not implement is never ignored, and neither is a key
//! blackbox_exporter does not know. [`SUPPORTED_OPTIONS`] lists what is implemented; the
//! README's table is checked against it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use figment::value::Value;
use serde::Deserialize;

use super::dns::{Dns, RrChecks, Spec as DnsSpec, Transport as DnsTransport};
use super::grpc::{Grpc, Spec as GrpcSpec};
use super::http::{BasicAuth as HttpBasicAuth, HeaderPattern, Http, Spec as HttpSpec};
use super::icmp::{Icmp, Spec as IcmpSpec};
use super::tcp::{QueryStep, Spec as TcpSpec, Tcp};
use super::{Probe, ProbeKind, Role};
use crate::config::{ModuleDef, Timing};
use crate::secret::SecretSource;
use crate::spec::BuildContext;
use crate::spec::values::{ByteSize, OneOrMany, Pattern, StatusRange};
use crate::transport::connect::IpProtocol;
use crate::transport::tls::{TlsSpec, TlsVersion};

/// The options of blackbox_exporter's modules that vigil implements, as `(prober, option)`:
/// `module` for the keys of a module itself, dotted paths inside blocks.
pub const SUPPORTED_OPTIONS: &[(&str, &str)] = &[
    ("module", "prober"),
    ("module", "timeout"),
    ("module", "http"),
    ("module", "tcp"),
    ("http", "valid_status_codes"),
    ("http", "valid_http_versions"),
    ("http", "preferred_ip_protocol"),
    ("http", "ip_protocol_fallback"),
    ("http", "no_follow_redirects"),
    ("http", "follow_redirects"),
    ("http", "fail_if_ssl"),
    ("http", "fail_if_not_ssl"),
    ("http", "method"),
    ("http", "headers"),
    ("http", "body"),
    ("http", "fail_if_body_matches_regexp"),
    ("http", "fail_if_body_not_matches_regexp"),
    ("http", "fail_if_header_matches"),
    ("http", "fail_if_header_not_matches"),
    ("http", "compression"),
    ("http", "body_size_limit"),
    ("http", "basic_auth"),
    ("http", "bearer_token"),
    ("http", "bearer_token_file"),
    ("http", "tls_config"),
    ("http", "enable_http2"),
    ("http", "fail_if_header_matches.header"),
    ("http", "fail_if_header_matches.regexp"),
    ("http", "fail_if_header_matches.allow_missing"),
    ("http", "basic_auth.username"),
    ("http", "basic_auth.password"),
    ("http", "basic_auth.password_file"),
    ("http", "tls_config.ca_file"),
    ("http", "tls_config.cert_file"),
    ("http", "tls_config.key_file"),
    ("http", "tls_config.server_name"),
    ("http", "tls_config.insecure_skip_verify"),
    ("http", "tls_config.min_version"),
    ("http", "tls_config.max_version"),
    ("tcp", "preferred_ip_protocol"),
    ("tcp", "ip_protocol_fallback"),
    ("tcp", "query_response"),
    ("tcp", "tls"),
    ("tcp", "tls_config"),
    ("tcp", "query_response.expect"),
    ("tcp", "query_response.send"),
    ("tcp", "query_response.starttls"),
    ("tcp", "tls_config.ca_file"),
    ("tcp", "tls_config.cert_file"),
    ("tcp", "tls_config.key_file"),
    ("tcp", "tls_config.server_name"),
    ("tcp", "tls_config.insecure_skip_verify"),
    ("tcp", "tls_config.min_version"),
    ("tcp", "tls_config.max_version"),
    ("module", "dns"),
    ("dns", "preferred_ip_protocol"),
    ("dns", "ip_protocol_fallback"),
    ("dns", "transport_protocol"),
    ("dns", "query_name"),
    ("dns", "query_type"),
    ("dns", "query_class"),
    ("dns", "recursion_desired"),
    ("dns", "valid_rcodes"),
    ("dns", "validate_answer_rrs"),
    ("dns", "validate_authority_rrs"),
    ("dns", "validate_additional_rrs"),
    ("dns", "validate_answer_rrs.fail_if_matches_regexp"),
    ("dns", "validate_answer_rrs.fail_if_all_match_regexp"),
    ("dns", "validate_answer_rrs.fail_if_not_matches_regexp"),
    ("dns", "validate_answer_rrs.fail_if_none_matches_regexp"),
    ("dns", "validate_authority_rrs.fail_if_matches_regexp"),
    ("dns", "validate_authority_rrs.fail_if_all_match_regexp"),
    ("dns", "validate_authority_rrs.fail_if_not_matches_regexp"),
    ("dns", "validate_authority_rrs.fail_if_none_matches_regexp"),
    ("dns", "validate_additional_rrs.fail_if_matches_regexp"),
    ("dns", "validate_additional_rrs.fail_if_all_match_regexp"),
    ("dns", "validate_additional_rrs.fail_if_not_matches_regexp"),
    ("dns", "validate_additional_rrs.fail_if_none_matches_regexp"),
    ("module", "icmp"),
    ("icmp", "preferred_ip_protocol"),
    ("icmp", "ip_protocol_fallback"),
    ("icmp", "payload_size"),
    ("icmp", "dont_fragment"),
    ("icmp", "ttl"),
    ("module", "grpc"),
    ("grpc", "service"),
    ("grpc", "tls"),
    ("grpc", "preferred_ip_protocol"),
    ("grpc", "ip_protocol_fallback"),
    ("grpc", "tls_config"),
    ("grpc", "tls_config.ca_file"),
    ("grpc", "tls_config.cert_file"),
    ("grpc", "tls_config.key_file"),
    ("grpc", "tls_config.server_name"),
    ("grpc", "tls_config.insecure_skip_verify"),
    ("grpc", "tls_config.min_version"),
    ("grpc", "tls_config.max_version"),
];

/// What blackbox_exporter 0.23 knows that vigil refuses at load, by block: `(block, option,
/// why)`.
pub const UNSUPPORTED_OPTIONS: &[(&str, &str, &str)] = &[
    (
        "http",
        "skip_resolve_phase_with_proxy",
        "vigil does not probe through a proxy",
    ),
    ("http", "proxy_url", "vigil does not probe through a proxy"),
    ("http", "proxy_connect_header", "vigil does not probe through a proxy"),
    ("http", "no_proxy", "vigil does not probe through a proxy"),
    ("http", "proxy_from_environment", "vigil does not probe through a proxy"),
    ("http", "oauth2", "OAuth 2 client credentials are not in vigil"),
    (
        "http",
        "authorization",
        "use basic_auth or bearer_token (other authorization types are not in vigil)",
    ),
    (
        "tcp",
        "source_ip_address",
        "vigil does not bind probes to a source address",
    ),
    (
        "dns",
        "source_ip_address",
        "vigil does not bind probes to a source address",
    ),
    (
        "icmp",
        "source_ip_address",
        "vigil does not bind probes to a source address",
    ),
    ("dns", "dns_over_tls", "DNS over TLS is not in vigil yet"),
    ("dns", "tls_config", "DNS over TLS is not in vigil yet"),
];

/// What the module's keys are, as blackbox_exporter has them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Module {
    prober: Option<String>,
    timeout: Option<GoDuration>,
    http: Option<Value>,
    tcp: Option<Value>,
    dns: Option<Value>,
    icmp: Option<Value>,
    grpc: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpModule {
    #[serde(default)]
    valid_status_codes: Vec<StatusRange>,
    #[serde(default)]
    valid_http_versions: Vec<String>,
    preferred_ip_protocol: Option<String>,
    ip_protocol_fallback: Option<bool>,
    no_follow_redirects: Option<bool>,
    follow_redirects: Option<bool>,
    #[serde(default)]
    fail_if_ssl: bool,
    #[serde(default)]
    fail_if_not_ssl: bool,
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
    #[serde(default)]
    fail_if_body_matches_regexp: Vec<Pattern>,
    #[serde(default)]
    fail_if_body_not_matches_regexp: Vec<Pattern>,
    #[serde(default)]
    fail_if_header_matches: Vec<HeaderMatch>,
    #[serde(default)]
    fail_if_header_not_matches: Vec<HeaderMatch>,
    compression: Option<String>,
    body_size_limit: Option<Base2Bytes>,
    basic_auth: Option<BasicAuth>,
    bearer_token: Option<String>,
    bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    tls_config: TlsConfig,
    enable_http2: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderMatch {
    header: String,
    regexp: Pattern,
    #[serde(default)]
    allow_missing: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BasicAuth {
    #[serde(default)]
    username: String,
    password: Option<String>,
    password_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsConfig {
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    server_name: Option<String>,
    #[serde(default)]
    insecure_skip_verify: bool,
    min_version: Option<String>,
    max_version: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TcpModule {
    preferred_ip_protocol: Option<String>,
    ip_protocol_fallback: Option<bool>,
    #[serde(default)]
    query_response: Vec<QueryResponse>,
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    tls_config: TlsConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryResponse {
    expect: Option<String>,
    send: Option<String>,
    #[serde(default)]
    starttls: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DnsModule {
    preferred_ip_protocol: Option<String>,
    ip_protocol_fallback: Option<bool>,
    transport_protocol: Option<String>,
    query_name: Option<String>,
    query_type: Option<String>,
    query_class: Option<String>,
    recursion_desired: Option<bool>,
    #[serde(default)]
    valid_rcodes: Vec<String>,
    // The same checks as vigil's own dns config: regexps compiled as they are read, so a bad
    // one is refused at load with its line (blackbox_exporter compiles them at probe time).
    #[serde(default)]
    validate_answer_rrs: RrChecks,
    #[serde(default)]
    validate_authority_rrs: RrChecks,
    #[serde(default)]
    validate_additional_rrs: RrChecks,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IcmpModule {
    preferred_ip_protocol: Option<String>,
    ip_protocol_fallback: Option<bool>,
    payload_size: Option<usize>,
    #[serde(default)]
    dont_fragment: bool,
    ttl: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrpcModule {
    #[serde(default)]
    service: String,
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    tls_config: TlsConfig,
    preferred_ip_protocol: Option<String>,
    ip_protocol_fallback: Option<bool>,
}

/// A Go duration (`5s`, `1.5s`, `500ms`, `1m30s`, `-1s`); zero or negative means none.
#[derive(Clone, Copy, Debug)]
struct GoDuration(Option<Duration>);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_go_duration(&text)
            .map(GoDuration)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses a Go duration; `None` for zero or a negative one.
fn parse_go_duration(text: &str) -> Result<Option<Duration>, String> {
    let bad = || format!("`{text}` is not a duration (e.g. 5s, 1.5s, 500ms, 1m30s)");
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(None);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let value: f64 = number.parse().map_err(|_| bad())?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = after;
    }
    if negative || total <= 0.0 {
        return Ok(None);
    }
    Duration::try_from_secs_f64(total).map(Some).map_err(|_| bad())
}

/// A size as alecthomas/units' `Base2Bytes` reads it (every unit a power of 1024); `0` and a
/// negative size mean no limit.
#[derive(Clone, Copy, Debug)]
struct Base2Bytes(Option<u64>);

impl<'de> Deserialize<'de> for Base2Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Text(String),
        }
        let text = match Raw::deserialize(deserializer)? {
            Raw::Number(n) => n.to_string(),
            Raw::Text(t) => t,
        };
        parse_base2(&text).map(Base2Bytes).map_err(serde::de::Error::custom)
    }
}

fn parse_base2(text: &str) -> Result<Option<u64>, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(None);
    }
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a size (e.g. 1MB, 512KiB, 1.5GB)"))?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let power = match unit {
            "B" => 0,
            "KB" | "KiB" => 1,
            "MB" | "MiB" => 2,
            "GB" | "GiB" => 3,
            "TB" | "TiB" => 4,
            "PB" | "PiB" => 5,
            "EB" | "EiB" => 6,
            _ => {
                return Err(format!(
                    "unknown unit `{unit}` in `{text}` (B, KB, MB, GB, TB, PB, EB: powers of 1024)"
                ));
            }
        };
        total += value * 1024f64.powi(power);
        rest = after;
    }
    if negative {
        return Ok(None);
    }
    Ok(Some(total as u64).filter(|&n| n > 0))
}

/// The `/probe` modules of a blackbox_exporter config file whose keys are at `cx` and whose
/// top level is `root`; errors go to `cx`.
pub fn build_modules(cx: &mut BuildContext, root: &BTreeMap<String, Value>) -> BTreeMap<String, ModuleDef> {
    let mut modules = BTreeMap::new();
    let Some(value) = root.get("modules") else {
        return modules;
    };
    let items: BTreeMap<String, Value> = cx.deserialize(value, "modules").unwrap_or_default();
    for (name, item) in &items {
        let path = format!("modules.{name}");
        if let Some(def) = build_module(cx, &path, item) {
            modules.insert(name.clone(), def);
        }
    }
    modules
}

/// Refuses the options of block `block` at `path` that vigil does not implement, and returns
/// the rest.
fn refuse_unsupported(cx: &mut BuildContext, block: &str, path: &str, value: &Value) -> Value {
    let Some(dict) = value.as_dict() else {
        return value.clone();
    };
    let mut rest = dict.clone();
    for (known, option, why) in UNSUPPORTED_OPTIONS {
        if *known == block && rest.remove(*option).is_some() {
            cx.error(
                format!("{path}.{option}"),
                format!("`{option}` is a blackbox_exporter option vigil does not support: {why}"),
            );
        }
    }
    Value::from(rest)
}

fn build_module(cx: &mut BuildContext, path: &str, item: &Value) -> Option<ModuleDef> {
    let before = cx.error_count();
    let item = refuse_unsupported(cx, "module", path, item);
    let module: Module = cx.deserialize_struct(&item, path)?;
    let prober_path = format!("{path}.prober");
    let probe = match module.prober.as_deref() {
        Some("http") => {
            let at = format!("{path}.http");
            let block = module.http.as_ref().map(|v| refuse_unsupported(cx, "http", &at, v));
            let http: HttpModule = match &block {
                Some(v) => cx.deserialize_struct(v, &at)?,
                None => HttpModule::default(),
            };
            let spec = http_spec(cx, &at, http)?;
            <Http as ProbeKind>::build(spec, cx, &at, Role::Module).map(|b| Probe::Http(Arc::new(b.settings)))
        }
        Some("tcp") => {
            let at = format!("{path}.tcp");
            let block = module.tcp.as_ref().map(|v| refuse_unsupported(cx, "tcp", &at, v));
            let tcp: TcpModule = match &block {
                Some(v) => cx.deserialize_struct(v, &at)?,
                None => TcpModule::default(),
            };
            let spec = tcp_spec(cx, &at, tcp)?;
            <Tcp as ProbeKind>::build(spec, cx, &at, Role::Module).map(|b| Probe::Tcp(Arc::new(b.settings)))
        }
        Some("dns") => {
            let at = format!("{path}.dns");
            let block = module.dns.as_ref().map(|v| refuse_unsupported(cx, "dns", &at, v));
            let present = block.is_some();
            let dns: DnsModule = match &block {
                Some(v) => cx.deserialize_struct(v, &at)?,
                None => DnsModule::default(),
            };
            let spec = dns_spec(cx, &at, dns, present)?;
            <Dns as ProbeKind>::build(spec, cx, &at, Role::Module).map(|b| Probe::Dns(Arc::new(b.settings)))
        }
        Some("icmp") => {
            let at = format!("{path}.icmp");
            let block = module.icmp.as_ref().map(|v| refuse_unsupported(cx, "icmp", &at, v));
            let icmp: IcmpModule = match &block {
                Some(v) => cx.deserialize_struct(v, &at)?,
                None => IcmpModule::default(),
            };
            let spec = icmp_spec(cx, &at, icmp)?;
            <Icmp as ProbeKind>::build(spec, cx, &at, Role::Module).map(|b| Probe::Icmp(Arc::new(b.settings)))
        }
        Some("grpc") => {
            let at = format!("{path}.grpc");
            // Without a `grpc:` block blackbox_exporter 0.23 leaves its grpc settings at Go's
            // zero values: IPv6 and no fallback (its defaults apply inside a block only).
            let present = module.grpc.is_some();
            let grpc: GrpcModule = match &module.grpc {
                Some(v) => cx.deserialize_struct(v, &at)?,
                None => GrpcModule::default(),
            };
            let spec = GrpcSpec {
                address: None,
                service: grpc.service,
                tls: grpc.tls,
                // blackbox_exporter reads tls_config only with tls; vigil refuses one without.
                tls_config: if grpc.tls {
                    tls_spec(cx, &at, grpc.tls_config)
                } else {
                    TlsSpec::default()
                },
                metadata: Default::default(),
                degraded_status: Vec::new(),
                ip_protocol: ip_protocol(cx, &at, grpc.preferred_ip_protocol.as_deref()),
                ip_protocol_fallback: grpc.ip_protocol_fallback.unwrap_or(present),
            };
            <Grpc as ProbeKind>::build(spec, cx, &at, Role::Module).map(|b| Probe::Grpc(Arc::new(b.settings)))
        }
        Some(other) => {
            cx.error(
                &prober_path,
                format!("unknown prober `{other}`, expected one of: http, tcp, dns, icmp, grpc"),
            );
            None
        }
        None => {
            cx.error(path, "missing key `prober`");
            None
        }
    };
    if cx.error_count() > before {
        return None;
    }
    let timeout = module.timeout.and_then(|t| t.0);
    Some(ModuleDef {
        timing: Timing {
            interval: Duration::MAX,
            timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
            degraded_after: crate::spec::values::MAX_DURATION,
            down_after: crate::spec::values::MAX_DURATION,
            retries: 0,
            retry_delay: Duration::ZERO,
        },
        timeout,
        probe: probe?,
    })
}

/// blackbox_exporter's timeout for a module without one and a scrape without a header: 120 s
/// less its offset.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(119_500);

fn ip_protocol(cx: &mut BuildContext, path: &str, value: Option<&str>) -> IpProtocol {
    match value {
        None | Some("" | "ip6") => IpProtocol::Ip6,
        Some("ip4") => IpProtocol::Ip4,
        Some(other) => {
            cx.error(
                format!("{path}.preferred_ip_protocol"),
                format!("`{other}` is not ip4 or ip6"),
            );
            IpProtocol::Ip6
        }
    }
}

fn tls_spec(cx: &mut BuildContext, path: &str, tls: TlsConfig) -> TlsSpec {
    let version = |cx: &mut BuildContext, key: &str, value: Option<String>| match value.as_deref() {
        None | Some("") => None,
        Some("TLS12") => Some(TlsVersion::Tls12),
        Some("TLS13") => Some(TlsVersion::Tls13),
        Some(old @ ("TLS10" | "TLS11")) => {
            cx.error(
                format!("{path}.tls_config.{key}"),
                format!("{old} is not offered by vigil (TLS 1.2 is the oldest it speaks)"),
            );
            None
        }
        Some(other) => {
            cx.error(
                format!("{path}.tls_config.{key}"),
                format!("unknown TLS version: {other}"),
            );
            None
        }
    };
    TlsSpec {
        verify: !tls.insecure_skip_verify,
        ca_file: tls.ca_file,
        cert_file: tls.cert_file,
        key_file: tls.key_file,
        server_name: tls.server_name.filter(|s| !s.is_empty()),
        min_version: version(cx, "min_version", tls.min_version),
        max_version: version(cx, "max_version", tls.max_version),
    }
}

fn http_spec(cx: &mut BuildContext, path: &str, http: HttpModule) -> Option<HttpSpec> {
    let compression = match http.compression.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("" | "identity") => Some("identity".to_string()),
        Some(c @ ("gzip" | "deflate")) => Some(c.to_string()),
        Some("br") => {
            cx.error(
                format!("{path}.compression"),
                "brotli (`br`) is not decoded by vigil: use gzip, deflate or identity",
            );
            None
        }
        Some(other) => {
            cx.error(
                format!("{path}.compression"),
                format!("`{other}` is not a compression (gzip, deflate, identity)"),
            );
            None
        }
    };
    let basic_auth = match http.basic_auth {
        None => None,
        Some(auth) => {
            let password = match (auth.password, auth.password_file) {
                (Some(_), Some(_)) => {
                    cx.error(
                        format!("{path}.basic_auth.password_file"),
                        "at most one of basic_auth password & password_file must be configured",
                    );
                    return None;
                }
                (Some(p), None) => SecretSource::Inline(p.trim().to_string()),
                (None, Some(file)) => SecretSource::File { file },
                (None, None) => SecretSource::Inline(String::new()),
            };
            Some(HttpBasicAuth {
                username: auth.username,
                password,
            })
        }
    };
    let bearer_token = match (http.bearer_token, http.bearer_token_file) {
        (Some(_), Some(_)) => {
            cx.error(
                format!("{path}.bearer_token_file"),
                "at most one of bearer_token & bearer_token_file must be configured",
            );
            return None;
        }
        (Some(token), None) => Some(SecretSource::Inline(token)),
        (None, Some(file)) => Some(SecretSource::File { file }),
        (None, None) => None,
    };
    let headers = http
        .headers
        .into_iter()
        .map(|(name, value)| (name, SecretSource::Inline(value)))
        .collect();
    let matcher = |list: Vec<HeaderMatch>| -> Vec<HeaderPattern> {
        list.into_iter()
            .map(|m| HeaderPattern {
                header: m.header,
                pattern: m.regexp,
                allow_missing: Some(m.allow_missing),
            })
            .collect()
    };
    let follow_redirects = match http.no_follow_redirects {
        Some(no) => !no,
        None => http.follow_redirects.unwrap_or(true),
    };
    Some(HttpSpec {
        url: None,
        method: http
            .method
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "GET".to_string()),
        headers,
        body: http.body.filter(|b| !b.is_empty()),
        body_file: None,
        basic_auth,
        bearer_token,
        valid_status: if http.valid_status_codes.is_empty() {
            vec![StatusRange { low: 200, high: 299 }]
        } else {
            http.valid_status_codes
        },
        degraded_status: Vec::new(),
        body_must_match: OneOrMany(http.fail_if_body_not_matches_regexp),
        body_must_not_match: OneOrMany(http.fail_if_body_matches_regexp),
        header_must_match: matcher(http.fail_if_header_not_matches),
        header_must_not_match: matcher(http.fail_if_header_matches),
        json: Vec::new(),
        follow_redirects,
        max_redirects: 10,
        tls_config: tls_spec(cx, path, http.tls_config),
        ip_protocol: ip_protocol(cx, path, http.preferred_ip_protocol.as_deref()),
        ip_protocol_fallback: http.ip_protocol_fallback.unwrap_or(true),
        body_size_limit: http.body_size_limit.and_then(|b| b.0).map(ByteSize),
        compression,
        valid_http_versions: http.valid_http_versions,
        // blackbox_exporter offers h2 by ALPN unless told not to; it has no h2c.
        http2: http.enable_http2.unwrap_or(true),
        h2c: false,
        fail_if_ssl: http.fail_if_ssl,
        fail_if_not_ssl: http.fail_if_not_ssl,
    })
}

fn tcp_spec(cx: &mut BuildContext, path: &str, tcp: TcpModule) -> Option<TcpSpec> {
    let mut query_response = Vec::new();
    for (i, step) in tcp.query_response.into_iter().enumerate() {
        let expect = match step.expect.filter(|e| !e.is_empty()) {
            None => None,
            Some(text) => match regex::bytes::Regex::new(&text) {
                Ok(re) => Some(Pattern(re)),
                Err(e) => {
                    cx.error(
                        format!("{path}.query_response.{i}.expect"),
                        format!("invalid regex `{text}`: {e}"),
                    );
                    None
                }
            },
        };
        query_response.push(QueryStep {
            expect,
            send: step.send.filter(|s| !s.is_empty()),
            starttls: step.starttls,
        });
    }
    let starttls = query_response.iter().any(|s| s.starttls);
    let tls_config = tls_spec(cx, path, tcp.tls_config);
    Some(TcpSpec {
        address: None,
        tls: tcp.tls,
        // blackbox_exporter reads tls_config whether TLS is used or not.
        tls_config: if tcp.tls || starttls {
            tls_config
        } else {
            TlsSpec::default()
        },
        send: None,
        expect: None,
        query_response,
        ip_protocol: ip_protocol(cx, path, tcp.preferred_ip_protocol.as_deref()),
        ip_protocol_fallback: tcp.ip_protocol_fallback.unwrap_or(true),
    })
}

/// An icmp module in vigil's terms: one echo request, blackbox's payload, TTL 64 (also for
/// `ttl: 0`, as blackbox_exporter has it).
fn icmp_spec(cx: &mut BuildContext, path: &str, icmp: IcmpModule) -> Option<IcmpSpec> {
    let ttl = match icmp.ttl.unwrap_or(0) {
        0 => 64,
        ttl @ 1..=255 => u8::try_from(ttl).unwrap_or(64),
        other => {
            cx.error(format!("{path}.ttl"), format!("{other} is not a TTL (0 to 255)"));
            return None;
        }
    };
    Some(IcmpSpec {
        host: None,
        packets: 1,
        packet_interval: std::time::Duration::from_millis(100),
        payload_size: icmp
            .payload_size
            .filter(|s| *s > 0)
            .unwrap_or(crate::transport::ping::DEFAULT_SIZE),
        dont_fragment: icmp.dont_fragment,
        ttl: Some(ttl),
        degraded_loss: None,
        down_loss: None,
        ip_protocol: ip_protocol(cx, path, icmp.preferred_ip_protocol.as_deref()),
        ip_protocol_fallback: icmp.ip_protocol_fallback.unwrap_or(true),
    })
}

/// A dns module in vigil's terms. blackbox's defaults: type ANY, class IN, UDP, recursion
/// desired, `[NOERROR]`; `query_name` required when the `dns:` block exists, `.` without one.
fn dns_spec(cx: &mut BuildContext, path: &str, dns: DnsModule, present: bool) -> Option<DnsSpec> {
    let query_name = match dns.query_name.filter(|n| !n.is_empty()) {
        Some(name) => name,
        None if present => {
            cx.error(format!("{path}.query_name"), "query name must be set for DNS module");
            return None;
        }
        None => ".".to_string(),
    };
    let transport = match dns.transport_protocol.as_deref() {
        None | Some("" | "udp") => DnsTransport::Udp,
        Some("tcp") => DnsTransport::Tcp,
        Some(other) => {
            cx.error(
                format!("{path}.transport_protocol"),
                format!("`{other}` is not udp or tcp"),
            );
            DnsTransport::Udp
        }
    };
    let valid_rcodes = if dns.valid_rcodes.is_empty() {
        vec!["NOERROR".to_string()]
    } else {
        dns.valid_rcodes
    };
    Some(DnsSpec {
        server: None,
        query_name,
        query_type: dns
            .query_type
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "ANY".to_string()),
        query_class: dns
            .query_class
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "IN".to_string()),
        transport,
        recursion_desired: dns.recursion_desired.unwrap_or(true),
        valid_rcodes,
        validate_answer_rrs: dns.validate_answer_rrs,
        validate_authority_rrs: dns.validate_authority_rrs,
        validate_additional_rrs: dns.validate_additional_rrs,
        ip_protocol: ip_protocol(cx, path, dns.preferred_ip_protocol.as_deref()),
        ip_protocol_fallback: dns.ip_protocol_fallback.unwrap_or(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::fields_of;

    /// The list of supported options is the decoders' own keys, so it cannot drift from them.
    #[test]
    fn supported_options_are_the_decoders_keys() {
        let mut expected: Vec<(String, String)> = Vec::new();
        let mut add = |prober: &str, prefix: &str, fields: &[&str]| {
            for f in fields {
                let option = if prefix.is_empty() {
                    f.to_string()
                } else {
                    format!("{prefix}.{f}")
                };
                expected.push((prober.to_string(), option));
            }
        };
        add("module", "", fields_of::<Module>());
        add("http", "", fields_of::<HttpModule>());
        add("http", "fail_if_header_matches", fields_of::<HeaderMatch>());
        add("http", "basic_auth", fields_of::<BasicAuth>());
        add("http", "tls_config", fields_of::<TlsConfig>());
        add("tcp", "", fields_of::<TcpModule>());
        add("tcp", "query_response", fields_of::<QueryResponse>());
        add("tcp", "tls_config", fields_of::<TlsConfig>());
        add("dns", "", fields_of::<DnsModule>());
        for section in [
            "validate_answer_rrs",
            "validate_authority_rrs",
            "validate_additional_rrs",
        ] {
            add("dns", section, fields_of::<RrChecks>());
        }
        add("icmp", "", fields_of::<IcmpModule>());
        add("grpc", "", fields_of::<GrpcModule>());
        add("grpc", "tls_config", fields_of::<TlsConfig>());
        let mut listed: Vec<(String, String)> = SUPPORTED_OPTIONS
            .iter()
            .map(|(p, o)| (p.to_string(), o.to_string()))
            .collect();
        expected.sort();
        listed.sort();
        assert_eq!(listed, expected);
        for (block, option, _) in UNSUPPORTED_OPTIONS {
            assert!(
                !SUPPORTED_OPTIONS.contains(&(block, option)),
                "{block}.{option} is listed both ways"
            );
        }
    }

    #[test]
    fn durations_as_go_reads_them() {
        assert_eq!(parse_go_duration("5s"), Ok(Some(Duration::from_secs(5))));
        assert_eq!(parse_go_duration("1.5s"), Ok(Some(Duration::from_millis(1500))));
        assert_eq!(parse_go_duration("1m30s"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(parse_go_duration("500ms"), Ok(Some(Duration::from_millis(500))));
        assert_eq!(parse_go_duration("0s"), Ok(None));
        assert_eq!(parse_go_duration("-1s"), Ok(None));
        assert!(parse_go_duration("1d").is_err());
        assert!(parse_go_duration("5").is_err());
    }

    #[test]
    fn sizes_as_alecthomas_units_reads_them() {
        assert_eq!(parse_base2("1MB"), Ok(Some(1 << 20)));
        assert_eq!(parse_base2("1MiB"), Ok(Some(1 << 20)));
        assert_eq!(parse_base2("1.5KB"), Ok(Some(1536)));
        assert_eq!(parse_base2("1MB512KB"), Ok(Some((1 << 20) + (512 << 10))));
        assert_eq!(parse_base2("5B"), Ok(Some(5)));
        assert_eq!(parse_base2("0"), Ok(None));
        assert_eq!(parse_base2("-1MB"), Ok(None));
        assert!(parse_base2("100").is_err());
        assert!(parse_base2("1kB").is_err());
    }
}
