//! The `http` kind: one request (plus redirects) over a fresh connection, with assertions on
//! status, headers, body and JSON; per-phase timings; and blackbox_exporter's `probe_http_*`
//! series on `/probe`, with its values in every case (status 0 without a response, Go's
//! `Content-Length`, redirects as Go counts them).
//!
//! The body is streamed: counted, decoded when compressed, held to `body_size_limit`, and only
//! what assertions need is kept (at most 16 MiB), so a big page or a compression bomb costs no
//! memory.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use http::Method;
use http::header::{self, HeaderName, HeaderValue};
use serde::Deserialize;
use url::Url;

use super::families::{Address, Certificates, Reached, Shook, Tls};
use super::{Built, CheckContext, Family, Level, ProbeKind, Publish, Reason, Role, Seen, Unit, Verdict};
use crate::secret::{SecretNames, SecretSource};
use crate::spec::BuildContext;
use crate::spec::values::{ByteSize, OneOrMany, Pattern, StatusRange};
use crate::transport::connect::{Dialled, IpProtocol};
use crate::transport::http::{
    BodyPolicy, BodyWatch, Client, Decode, Encoding, Exchange, Outgoing, USER_AGENT, alpn, basic_auth, fetch,
    parse_url, take_userinfo,
};
use crate::transport::tls::{self, TlsSeen, TlsSpec};
use crate::transport::{ErrorKind, TransportError};

/// Config of an `http` probe.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The URL to request (a module gets it from `/probe?target=`).
    pub url: Option<String>,
    /// Request method (default GET).
    #[serde(default = "default_method")]
    pub method: String,
    /// Request headers; a value may be `{file: PATH}` to keep it out of the config.
    #[serde(default)]
    pub headers: BTreeMap<String, SecretSource>,
    /// Request body.
    pub body: Option<String>,
    /// Request body read from a file.
    pub body_file: Option<PathBuf>,
    /// HTTP basic auth.
    pub basic_auth: Option<BasicAuth>,
    /// Bearer token sent as `Authorization: Bearer ...`.
    pub bearer_token: Option<SecretSource>,
    /// Status codes that count as UP (default `200-299`).
    #[serde(default = "default_valid_status")]
    pub valid_status: Vec<StatusRange>,
    /// Status codes that count as DEGRADED (e.g. 503); checked before `valid_status`.
    #[serde(default)]
    pub degraded_status: Vec<StatusRange>,
    /// Regexes the body must match (all of them).
    #[serde(default)]
    pub body_must_match: OneOrMany<Pattern>,
    /// Regexes the body must not match (none of them).
    #[serde(default)]
    pub body_must_not_match: OneOrMany<Pattern>,
    /// Response headers that must match a regex.
    #[serde(default)]
    pub header_must_match: Vec<HeaderPattern>,
    /// Response headers that must not match a regex.
    #[serde(default)]
    pub header_must_not_match: Vec<HeaderPattern>,
    /// Conditions on fields of a JSON body (all must hold).
    #[serde(default)]
    pub json: Vec<JsonCondition>,
    /// Follow redirects (default true). Credentials go only to the origin (scheme, host and
    /// port) the probe names, never to a redirect target elsewhere.
    #[serde(default = "yes")]
    pub follow_redirects: bool,
    /// At most this many redirects (default 10, at most 100).
    #[serde(default = "default_max_redirects")]
    pub max_redirects: u32,
    /// TLS settings for `https` URLs.
    #[serde(default)]
    pub tls_config: TlsSpec,
    /// IP version to try first (default ip4).
    #[serde(default)]
    pub ip_protocol: IpProtocol,
    /// Try the other IP version when the preferred one has no address or fails (default true).
    #[serde(default = "yes")]
    pub ip_protocol_fallback: bool,
    /// A longer body (after decoding) is DOWN with reason `body` (default: no limit; the body
    /// is streamed and counted, only what assertions need is kept).
    #[serde(default)]
    pub body_size_limit: Option<ByteSize>,
    /// How the body is decoded: `auto` (as `Content-Encoding` says: gzip, deflate; the
    /// default), `identity` (never), or always `gzip` or `deflate` (raw, as blackbox_exporter's
    /// `compression` means it). Decoding happens under `body_size_limit`.
    #[serde(default)]
    pub compression: Option<String>,
    /// The HTTP versions that count as UP (`HTTP/1.0`, `HTTP/1.1`, `HTTP/2.0`; default any).
    #[serde(default)]
    pub valid_http_versions: Vec<String>,
    /// Offer HTTP/2 to TLS servers by ALPN, and speak it with those that choose it (default
    /// true, as browsers, curl and blackbox_exporter do).
    #[serde(default = "yes")]
    pub http2: bool,
    /// Speak HTTP/2 from the first byte to `http://` URLs (prior knowledge, h2c; default false).
    #[serde(default)]
    pub h2c: bool,
    /// DOWN (reason `tls`) when the final response came over TLS.
    #[serde(default)]
    pub fail_if_ssl: bool,
    /// DOWN (reason `tls`) when the final response did not come over TLS.
    #[serde(default)]
    pub fail_if_not_ssl: bool,
}

/// HTTP basic auth credentials.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// Password, inline or `{file: PATH}`.
    pub password: SecretSource,
}

/// A regex on one response header.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderPattern {
    /// Header name (case-insensitive).
    pub header: String,
    /// Regex matched against every value of the header.
    pub pattern: Pattern,
    /// Whether a missing header passes (default: no for `header_must_match`, yes for
    /// `header_must_not_match`).
    #[serde(default)]
    pub allow_missing: Option<bool>,
}

/// A condition on one field of a JSON body: `path` plus at least one test.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonCondition {
    /// Field path: `status`, `checks.db.state`, `items[0].name` (a leading `$.` is allowed).
    pub path: String,
    /// The field equals this JSON value.
    pub equals: Option<serde_json::Value>,
    /// The field does not equal this JSON value.
    pub not_equals: Option<serde_json::Value>,
    /// The field (as text) matches this regex.
    pub matches: Option<Pattern>,
    /// The field exists (true) or does not (false).
    pub exists: Option<bool>,
    /// The field is a number below this.
    pub less_than: Option<f64>,
    /// The field is a number above this.
    pub greater_than: Option<f64>,
}

fn default_method() -> String {
    "GET".into()
}
fn default_valid_status() -> Vec<StatusRange> {
    vec![StatusRange { low: 200, high: 299 }]
}
fn yes() -> bool {
    true
}
fn default_max_redirects() -> u32 {
    10
}

/// The most redirects a probe may follow.
pub const MAX_REDIRECTS: u32 = 100;
/// The largest `body_size_limit`.
pub const MAX_BODY_SIZE: u64 = 1 << 30;
/// At most this much of a body is kept for body and JSON assertions.
pub const KEEP_FOR_ASSERTIONS: u64 = 16 << 20;

/// Checks a `body_size_limit` (found at `path`): above 0, at most [`MAX_BODY_SIZE`].
pub(crate) fn check_body_limit(limit: u64, ctx: &mut BuildContext, path: &str) {
    if limit == 0 {
        ctx.error(path, "must be greater than 0 (leave it out for no limit)");
    } else if limit > MAX_BODY_SIZE {
        ctx.error(path, "must be at most 1GiB");
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

fn parse_json_path(path: &str) -> Result<Vec<Step>, String> {
    let trimmed = path
        .strip_prefix("$.")
        .or_else(|| path.strip_prefix('$'))
        .unwrap_or(path);
    let mut steps = Vec::new();
    for part in trimmed.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if !key.is_empty() {
            steps.push(Step::Key(key.to_string()));
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let end = inner
                .find(']')
                .ok_or_else(|| format!("unclosed `[` in JSON path `{path}`"))?;
            let index = inner[..end]
                .parse()
                .map_err(|_| format!("`{}` is not an array index in `{path}`", &inner[..end]))?;
            steps.push(Step::Index(index));
            rest = &inner[end + 1..];
        }
        if !rest.is_empty() {
            return Err(format!("unexpected `{rest}` in JSON path `{path}`"));
        }
    }
    Ok(steps)
}

#[derive(Clone, Debug)]
struct CompiledJson {
    path: String,
    steps: Vec<Step>,
    condition: JsonCondition,
}

/// An `http` probe's compiled settings.
#[derive(Clone, Debug)]
pub struct Http {
    method: Method,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    client: Client,
    policy: BodyPolicy,
    valid_status: Vec<StatusRange>,
    degraded_status: Vec<StatusRange>,
    body_must_match: Vec<BodyPattern>,
    body_must_not_match: Vec<BodyPattern>,
    header_must_match: Vec<(HeaderName, HeaderPattern)>,
    header_must_not_match: Vec<(HeaderName, HeaderPattern)>,
    json: Vec<CompiledJson>,
    valid_http_versions: Vec<f64>,
    fail_if_ssl: bool,
    fail_if_not_ssl: bool,
    /// `tls_config.server_name`, as configured.
    configured_server_name: Option<String>,
}

impl Http {
    /// This probe with a `Host` header of `host` (and, without a configured
    /// `tls_config.server_name`, `host` as the TLS server name), as `/probe?hostname=` asks;
    /// an error when the module sets another `Host` itself.
    pub fn with_host(&self, host: &str) -> Result<Http, String> {
        let value = HeaderValue::from_str(host).map_err(|_| format!("hostname {host:?} cannot be a Host header"))?;
        if let Some((_, own)) = self.headers.iter().find(|(name, _)| name == header::HOST) {
            if *own == value {
                return Ok(self.clone());
            }
            return Err(format!(
                "host header defined both in module configuration ({}) and with URL-parameter 'hostname' ({host})",
                String::from_utf8_lossy(own.as_bytes())
            ));
        }
        let mut http = self.clone();
        http.headers.push((header::HOST, value));
        if self.configured_server_name.is_none() {
            http.client.server_name = Some(host_without_port(host).to_string());
        }
        Ok(http)
    }
}

/// Parses a target the way blackbox_exporter does: a URL, or `host:port` meaning `http://`.
/// A target with a scheme must be a valid `http(s)` URL as written: it is never re-read as a
/// host named `http` or `file`.
fn parse_target(target: &str, names: &SecretNames) -> Result<Url, TransportError> {
    if target.contains("://") {
        parse_url(target, names)
    } else {
        parse_url(&format!("http://{target}"), names)
    }
}

/// What one `http` attempt observed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Obs {
    /// The target parsed as a URL (its name was then resolved).
    pub parsed: bool,
    /// Everything the request and its redirects learnt.
    pub exchange: Exchange,
    /// A header or body regex ran and failed (blackbox's `probe_failed_due_to_regex`).
    pub failed_due_to_regex: bool,
}

impl Obs {
    /// The final response's status, when one was parsed.
    pub fn status(&self) -> Option<u16> {
        self.exchange.head.as_ref().map(|h| h.status)
    }

    /// Whether the final response came over TLS.
    pub fn ssl(&self) -> bool {
        self.exchange.head.is_some() && self.exchange.tls_used
    }

    /// `(phase, seconds)` in publishing order, once a connection was tried.
    pub fn phases(&self) -> Option<[(&'static str, f64); 5]> {
        let e = &self.exchange;
        e.attempted().then_some([
            ("resolve", e.resolve.as_secs_f64()),
            ("connect", e.connect.as_secs_f64()),
            ("tls", e.tls.as_secs_f64()),
            ("processing", e.processing.as_secs_f64()),
            ("transfer", e.transfer.as_secs_f64()),
        ])
    }
}

impl Reached for Obs {
    fn reached(&self) -> Option<&Dialled> {
        self.parsed.then_some(&self.exchange.dialled)
    }
}

impl Shook for Obs {
    fn shook(&self) -> Option<&TlsSeen> {
        self.ssl().then_some(&self.exchange.tls_seen)
    }
}

/// What it carries from run to run: the certificate expiry last known.
pub use super::families::KeptCert as Kept;

fn gauge_of(seen: &Seen<'_, Http>, out: &mut dyn super::Emit, value: impl Fn(&Obs) -> f64) {
    out.gauge(&[], value(seen.obs));
}

/// blackbox_exporter's series that every `http` answer has, 0 where nothing was learnt.
macro_rules! always {
    ($name:literal, $help:literal, $value:expr) => {
        Family {
            name: $name,
            help: $help,
            unit: None,
            publish: Publish::Probe,
            emit: |seen, out| gauge_of(seen, out, $value),
        }
    };
}

impl ProbeKind for Http {
    const NAME: &'static str = "http";
    const REASONS: &'static [Reason] = &[
        Reason::Dns,
        Reason::Connect,
        Reason::Tls,
        Reason::Protocol,
        Reason::Status,
        Reason::Body,
        Reason::Header,
        Reason::Json,
        Reason::Redirect,
    ];
    const FAMILIES: &'static [Family<Self>] = &[
        Family {
            name: "vigil_probe_http_status_code",
            help: "HTTP status code of the last response.",
            unit: None,
            publish: Publish::Detail,
            emit: |seen, out| {
                if let Some(code) = seen.obs.status() {
                    out.gauge(&[], f64::from(code));
                }
            },
        },
        Family {
            name: "vigil_probe_http_duration",
            help: "Duration of each phase of the last HTTP run.",
            unit: Some(Unit::Seconds),
            publish: Publish::Detail,
            emit: emit_phases,
        },
        Certificates::<Self>::EXPIRY,
        always!(
            "probe_failed_due_to_regex",
            "Indicates if probe failed due to regex",
            |o| { f64::from(u8::from(o.failed_due_to_regex)) }
        ),
        always!("probe_http_content_length", "Length of http content response", |o| {
            o.exchange.head.as_ref().map_or(0.0, |h| h.content_length as f64)
        }),
        always!(
            "probe_http_uncompressed_body_length",
            "Length of uncompressed response body",
            |o| o.exchange.body_bytes as f64
        ),
        always!("probe_http_redirects", "The number of redirects", |o| f64::from(
            o.exchange.redirects
        )),
        always!(
            "probe_http_ssl",
            "Indicates if SSL was used for the final redirect",
            |o| { f64::from(u8::from(o.ssl())) }
        ),
        always!("probe_http_status_code", "Response HTTP status code", |o| f64::from(
            o.exchange.status()
        )),
        always!(
            "probe_http_version",
            "Returns the version of HTTP of the probe response",
            |o| { o.exchange.head.as_ref().map_or(0.0, |h| h.version) }
        ),
        Family {
            name: "probe_http_duration",
            help: "Duration of http request by phase, summed over all redirects",
            unit: Some(Unit::Seconds),
            publish: Publish::Probe,
            emit: |seen, out| {
                if seen.obs.phases().is_some() {
                    emit_phases(seen, out);
                } else if seen.obs.parsed {
                    // The name did not resolve: only its lookup is timed.
                    out.gauge(&[("phase", "resolve")], seen.obs.exchange.resolve.as_secs_f64());
                }
            },
        },
        Family {
            name: "probe_http_last_modified_timestamp",
            help: "Returns the Last-Modified HTTP response header in unixtime",
            unit: Some(Unit::Seconds),
            publish: Publish::Probe,
            emit: |seen, out| {
                let modified = seen
                    .obs
                    .exchange
                    .head
                    .as_ref()
                    .and_then(|h| h.headers.get(header::LAST_MODIFIED))
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| httpdate::parse_http_date(v).ok());
                if let Some(at) = modified {
                    out.gauge(&[], crate::metrics::unix_seconds(at));
                }
            },
        },
        Address::<Self>::IP_PROTOCOL,
        Address::<Self>::IP_ADDR_HASH,
        Address::<Self>::DNS_LOOKUP_TIME,
        Tls::<Self>::EARLIEST_CERT_EXPIRY,
        Tls::<Self>::LAST_CHAIN_EXPIRY,
        Tls::<Self>::LAST_CHAIN_INFO,
        Tls::<Self>::VERSION_INFO,
    ];

    type Spec = Spec;
    type Obs = Obs;
    type Kept = Kept;

    fn build(spec: Spec, cx: &mut BuildContext, path: &str, role: Role) -> Option<Built<Self>> {
        build_http(spec, cx, path, role)
    }

    async fn check(&self, target: &str, cx: &CheckContext, obs: &mut Obs) -> Verdict {
        let url = match parse_target(target, &self.client.secret_names) {
            Ok(url) => url,
            Err(e) => return Verdict::down(Reason::Connect, e.detail),
        };
        obs.parsed = true;
        let (url, userinfo) = take_userinfo(url);
        let mut windows = Windows::new(self);
        let outgoing = Outgoing {
            method: self.method.clone(),
            url,
            headers: &self.headers,
            userinfo,
            body: self.body.clone(),
            watch: windows.as_mut().map(|w| w as &mut (dyn BodyWatch + Send)),
        };
        let fetched = fetch(&self.client, outgoing, self.policy, &cx.sockets, &mut obs.exchange).await;
        self.assess(obs, fetched, windows.as_ref())
    }

    fn interrupted(obs: &mut Obs) {
        obs.exchange.interrupted();
    }

    fn keep(kept: &mut Kept, obs: &Obs) {
        kept.cert.keep(&obs.exchange.tls_seen);
    }

    /// The response's headers share the whole read buffer of the connection (8 KiB and more):
    /// kept for every probe until its next run, they were most of vigil's memory.
    fn settle(obs: &mut Obs) {
        if let Some(head) = &mut obs.exchange.head {
            head.headers = http::HeaderMap::new();
        }
        obs.exchange.body = Vec::new();
        obs.exchange.tls_seen.leaf = None;
    }
}

/// `host` of a `host:port` (IPv6 literals keep their brackets).
fn host_without_port(host: &str) -> &str {
    if let Some(end) = host.strip_prefix('[').and_then(|rest| rest.find(']')) {
        return &host[..end + 2];
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

fn emit_phases(seen: &Seen<'_, Http>, out: &mut dyn super::Emit) {
    for (phase, seconds) in seen.obs.phases().into_iter().flatten() {
        out.gauge(&[("phase", phase)], seconds);
    }
}

fn build_http(spec: Spec, ctx: &mut BuildContext, path: &str, role: Role) -> Option<Built<Http>> {
    let key = |k: &str| format!("{path}.{k}");
    match (role, &spec.url) {
        (Role::Scheduled, None) => ctx.error(path, "missing key `url`"),
        (Role::Scheduled, Some(url)) => {
            if let Err(e) = parse_target(url, ctx.secret_names()) {
                ctx.error(key("url"), e.detail);
            }
        }
        (Role::Module, Some(_)) => ctx.error(
            key("url"),
            "a /probe module takes its target from the request; remove `url`",
        ),
        (Role::Module, None) => {}
    }
    let method = match Method::from_bytes(spec.method.to_ascii_uppercase().as_bytes()) {
        Ok(m) => m,
        Err(_) => {
            ctx.error(key("method"), format!("`{}` is not an HTTP method", spec.method));
            Method::GET
        }
    };
    let mut headers = ctx.headers(&format!("{path}.headers"), &spec.headers, |_| None);
    if let Some(auth) = &spec.basic_auth
        && let Some(value) = basic_auth_header(auth, ctx, &key("basic_auth.password"))
    {
        headers.push((header::AUTHORIZATION, value));
    }
    if let Some(source) = &spec.bearer_token {
        if spec.basic_auth.is_some() {
            ctx.error(key("bearer_token"), "set either basic_auth or bearer_token, not both");
        }
        if let Some(token) = ctx.secret(key("bearer_token"), source) {
            match HeaderValue::from_str(&format!("Bearer {}", token.expose())) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    headers.push((header::AUTHORIZATION, value));
                }
                Err(_) => ctx.error(key("bearer_token"), "the token holds characters a header cannot carry"),
            }
        }
    }
    let body = match (&spec.body, &spec.body_file) {
        (Some(_), Some(_)) => {
            ctx.error(key("body_file"), "set either body or body_file, not both");
            Bytes::new()
        }
        (Some(body), None) => Bytes::from(body.clone()),
        (None, Some(file)) => ctx
            .read_file(key("body_file"), file)
            .map(Bytes::from)
            .unwrap_or_default(),
        (None, None) => Bytes::new(),
    };
    let header_patterns = |list: Vec<HeaderPattern>, field: &str, ctx: &mut BuildContext| {
        let mut out = Vec::new();
        for (i, pattern) in list.into_iter().enumerate() {
            match HeaderName::from_bytes(pattern.header.as_bytes()) {
                Ok(name) => out.push((name, pattern)),
                Err(_) => ctx.error(
                    format!("{path}.{field}.{i}.header"),
                    format!("`{}` is not a valid header name", pattern.header),
                ),
            }
        }
        out
    };
    let header_must_match = header_patterns(spec.header_must_match, "header_must_match", ctx);
    let header_must_not_match = header_patterns(spec.header_must_not_match, "header_must_not_match", ctx);
    let mut json = Vec::new();
    for (i, condition) in spec.json.into_iter().enumerate() {
        let jkey = format!("{path}.json.{i}");
        let tests = [
            condition.equals.is_some(),
            condition.not_equals.is_some(),
            condition.matches.is_some(),
            condition.exists.is_some(),
            condition.less_than.is_some(),
            condition.greater_than.is_some(),
        ];
        if !tests.contains(&true) {
            ctx.error(
                &jkey,
                "a JSON condition needs at least one of: equals, not_equals, matches, exists, less_than, greater_than",
            );
        }
        match parse_json_path(&condition.path) {
            Ok(steps) => json.push(CompiledJson {
                path: condition.path.clone(),
                steps,
                condition,
            }),
            Err(e) => ctx.error(format!("{jkey}.path"), e),
        }
    }
    if spec.max_redirects == 0 && spec.follow_redirects {
        ctx.error(key("max_redirects"), "must be at least 1 when follow_redirects is true");
    } else if spec.max_redirects > MAX_REDIRECTS {
        ctx.error(key("max_redirects"), format!("must be at most {MAX_REDIRECTS}"));
    }
    if let Some(limit) = spec.body_size_limit {
        check_body_limit(limit.0, ctx, &key("body_size_limit"));
    }
    let decode = match spec.compression.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("auto") => Decode::AsDeclared,
        Some("identity") => Decode::Always(Encoding::Identity),
        Some("gzip") => Decode::Always(Encoding::Gzip),
        Some("deflate") => Decode::Always(Encoding::RawDeflate),
        Some(other) => {
            ctx.error(
                key("compression"),
                format!("`{other}` is not a compression vigil decodes (auto, identity, gzip, deflate)"),
            );
            Decode::AsDeclared
        }
    };
    let mut valid_http_versions = Vec::new();
    for (i, version) in spec.valid_http_versions.iter().enumerate() {
        match version.as_str() {
            "HTTP/1.0" => valid_http_versions.push(1.0),
            "HTTP/1.1" => valid_http_versions.push(1.1),
            "HTTP/2.0" => valid_http_versions.push(2.0),
            other => ctx.error(
                format!("{path}.valid_http_versions.{i}"),
                format!("`{other}` is not an HTTP version (HTTP/1.0, HTTP/1.1, HTTP/2.0)"),
            ),
        }
    }
    if spec.fail_if_ssl && spec.fail_if_not_ssl {
        ctx.error(
            key("fail_if_not_ssl"),
            "set fail_if_ssl or fail_if_not_ssl, not both: no probe could pass",
        );
    }
    // A `Host` header names the server for TLS too, unless `tls_config.server_name` does.
    let host_header = headers
        .iter()
        .find(|(name, _)| name == header::HOST)
        .and_then(|(_, value)| value.to_str().ok())
        .map(|host| host_without_port(host).to_string());
    let server_name = spec.tls_config.server_name.clone().or(host_header);
    let body_must_match: Vec<BodyPattern> = spec.body_must_match.0.into_iter().map(BodyPattern::new).collect();
    let body_must_not_match: Vec<BodyPattern> = spec.body_must_not_match.0.into_iter().map(BodyPattern::new).collect();
    // Only JSON and regexes that depend on where the body starts or ends need the body kept;
    // the others are matched window by window as it streams.
    let needs_body = !json.is_empty()
        || body_must_match
            .iter()
            .chain(&body_must_not_match)
            .any(|p| p.scope != Scope::Window);
    let limit = spec.body_size_limit.map(|b| b.0);
    let keep = if needs_body {
        usize::try_from(limit.map_or(KEEP_FOR_ASSERTIONS, |l| l.min(KEEP_FOR_ASSERTIONS))).unwrap_or(usize::MAX)
    } else {
        0
    };
    let tls = tls::client_config(&spec.tls_config, alpn(spec.http2), ctx, &key("tls_config"))?;
    let settings = Http {
        method,
        headers,
        body,
        valid_status: spec.valid_status,
        degraded_status: spec.degraded_status,
        body_must_match,
        body_must_not_match,
        header_must_match,
        header_must_not_match,
        json,
        valid_http_versions,
        fail_if_ssl: spec.fail_if_ssl,
        fail_if_not_ssl: spec.fail_if_not_ssl,
        configured_server_name: spec.tls_config.server_name.clone(),
        policy: BodyPolicy { limit, keep, decode },
        client: Client {
            tls,
            verify: spec.tls_config.verify,
            server_name,
            ip_protocol: spec.ip_protocol,
            ip_protocol_fallback: spec.ip_protocol_fallback,
            follow_redirects: spec.follow_redirects,
            max_redirects: spec.max_redirects,
            secret_names: ctx.secret_names().clone(),
            user_agent: HeaderValue::from_static(USER_AGENT),
            http2: spec.http2,
            h2c: spec.h2c,
        },
    };
    Some(Built {
        settings,
        target: spec.url,
        freshness: None,
    })
}

/// The `Authorization` header for basic auth (marked sensitive), the password read at `path`.
pub(crate) fn basic_auth_header(auth: &BasicAuth, ctx: &mut BuildContext, path: &str) -> Option<HeaderValue> {
    let password = ctx.secret(path, &auth.password)?;
    basic_auth(&auth.username, password.expose())
}

impl Http {
    /// The verdict on what `fetch` brought back, in blackbox_exporter's order: status, then
    /// header and body regexes (on a valid status only), the body read to its end, JSON,
    /// the HTTP version, TLS. The reason is the first check that failed.
    fn assess(&self, obs: &mut Obs, fetched: Result<(), TransportError>, windows: Option<&Windows>) -> Verdict {
        let Some(head) = obs.exchange.head.as_ref() else {
            let error = fetched
                .err()
                .unwrap_or_else(|| TransportError::new(ErrorKind::Protocol, "no response"));
            return super::Failure::from(error).into();
        };
        let status = head.status;
        let past_limit = obs.exchange.body_closed && obs.exchange.redirects > self.client.max_redirects;
        if self.degraded_status.iter().any(|r| r.contains(status)) {
            return Verdict::failed(
                Level::Degraded,
                Reason::Status,
                format!("status {status} counts as degraded"),
            );
        }
        if !self.valid_status.iter().any(|r| r.contains(status)) {
            if past_limit && self.client.follow_redirects {
                let limit = self.client.max_redirects;
                return Verdict::down(
                    Reason::Redirect,
                    if obs.exchange.looped {
                        format!("redirect loop: more than {limit} redirects, back to a URL already requested")
                    } else {
                        format!("more than {limit} redirects")
                    },
                );
            }
            let valid: Vec<String> = self.valid_status.iter().map(ToString::to_string).collect();
            return Verdict::down(
                Reason::Status,
                format!("status {status} is not in {}", valid.join(", ")),
            );
        }
        if let Some(why) = self.headers_fail(&head.headers) {
            obs.failed_due_to_regex = true;
            return Verdict::down(Reason::Header, why);
        }
        let body_assertions = !self.body_must_match.is_empty() || !self.body_must_not_match.is_empty();
        if body_assertions {
            let unread = match &fetched {
                Err(e) => Some(super::Failure::from(e.clone())),
                Ok(()) if obs.exchange.body_closed => Some(super::Failure::new(
                    Reason::Body,
                    "the body of a redirect that is not followed is not read",
                )),
                Ok(()) => None,
            };
            if let Some(failure) = unread {
                obs.failed_due_to_regex = true;
                return failure.into();
            }
            if let Some(why) = self.body_fails(&obs.exchange, windows) {
                obs.failed_due_to_regex = true;
                return Verdict::down(Reason::Body, why);
            }
        }
        if let Err(e) = fetched {
            return super::Failure::from(e).into();
        }
        if !self.json.is_empty() {
            if let Some(why) = truncated(&obs.exchange) {
                return Verdict::down(Reason::Body, why);
            }
            let document: serde_json::Value = match serde_json::from_slice(&obs.exchange.body) {
                Ok(doc) => doc,
                Err(e) => return Verdict::down(Reason::Json, format!("body is not JSON: {e}")),
            };
            for rule in &self.json {
                if let Err(why) = json_holds(rule, &document) {
                    return Verdict::down(Reason::Json, why);
                }
            }
        }
        let head = obs.exchange.head.as_ref();
        let version = head.map_or(0.0, |h| h.version);
        if !self.valid_http_versions.is_empty() && !self.valid_http_versions.contains(&version) {
            return Verdict::down(
                Reason::Protocol,
                format!("HTTP version {version:?} is not in valid_http_versions"),
            );
        }
        if self.fail_if_ssl && obs.ssl() {
            return Verdict::down(Reason::Tls, "the final response came over TLS (fail_if_ssl)");
        }
        if self.fail_if_not_ssl && !obs.ssl() {
            return Verdict::down(
                Reason::Tls,
                "the final response did not come over TLS (fail_if_not_ssl)",
            );
        }
        Verdict::up()
    }

    fn headers_fail(&self, headers: &http::HeaderMap) -> Option<String> {
        for (name, rule) in &self.header_must_match {
            let values: Vec<&HeaderValue> = headers.get_all(name).iter().collect();
            if values.is_empty() {
                if !rule.allow_missing.unwrap_or(false) {
                    return Some(format!("header {name} is missing"));
                }
            } else if !values.iter().any(|v| rule.pattern.is_match(v.as_bytes())) {
                return Some(format!("header {name} does not match /{}/", rule.pattern.as_str()));
            }
        }
        for (name, rule) in &self.header_must_not_match {
            let values: Vec<&HeaderValue> = headers.get_all(name).iter().collect();
            if values.is_empty() && !rule.allow_missing.unwrap_or(true) {
                return Some(format!("header {name} is missing"));
            }
            if values.iter().any(|v| rule.pattern.is_match(v.as_bytes())) {
                return Some(format!("header {name} matches /{}/", rule.pattern.as_str()));
            }
        }
        None
    }

    fn body_fails(&self, exchange: &Exchange, windows: Option<&Windows>) -> Option<String> {
        let matched = |which: usize, pattern: &BodyPattern| -> Result<bool, String> {
            match pattern.scope {
                Scope::Window => Ok(windows.is_some_and(|w| w.found[which])),
                // Anchored at the start: the start of the body is what it can match.
                Scope::Start => Ok(pattern.regex.is_match(&exchange.body)),
                Scope::Whole => match truncated(exchange) {
                    Some(why) => Err(why),
                    None => Ok(pattern.regex.is_match(&exchange.body)),
                },
            }
        };
        for (i, pattern) in self.body_must_match.iter().enumerate() {
            match matched(i, pattern) {
                Err(why) => return Some(why),
                Ok(false) => return Some(format!("body does not match /{}/", pattern.regex.as_str())),
                Ok(true) => {}
            }
        }
        let offset = self.body_must_match.len();
        for (i, pattern) in self.body_must_not_match.iter().enumerate() {
            match matched(offset + i, pattern) {
                Err(why) => return Some(why),
                Ok(true) => return Some(format!("body matches /{}/", pattern.regex.as_str())),
                Ok(false) => {}
            }
        }
        None
    }
}

/// Where in a body a regex can match, which says how much of the body it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// Anywhere, whatever surrounds it (no anchors, no word boundaries): matched on windows of
    /// the streamed body, so any length of body costs [`WINDOW`] twice at most.
    Window,
    /// Only at the start (`^`, `\A` without multi-line): matched on the start that is kept.
    Start,
    /// Depends on what surrounds it (`$`, `\b`, multi-line anchors): needs the whole body,
    /// which is kept up to [`KEEP_FOR_ASSERTIONS`].
    Whole,
}

/// A body regex and its scope.
#[derive(Clone, Debug)]
struct BodyPattern {
    regex: Pattern,
    scope: Scope,
}

impl BodyPattern {
    fn new(regex: Pattern) -> BodyPattern {
        use regex_syntax::hir::{Look, LookSet};
        let looks = regex_syntax::ParserBuilder::new()
            .utf8(false)
            .build()
            .parse(regex.as_str())
            .map(|hir| hir.properties().look_set())
            .ok();
        let scope = match looks {
            Some(set) if set.is_empty() => Scope::Window,
            Some(set) if set.subtract(LookSet::singleton(Look::Start)).is_empty() => Scope::Start,
            _ => Scope::Whole,
        };
        BodyPattern { regex, scope }
    }
}

/// Matches of at most this length are found anywhere in a streamed body.
const WINDOW: usize = 256 << 10;

/// The window-scoped regexes of a probe, matched on the body as it streams: each window holds
/// the last [`WINDOW`] bytes before the new ones, so a match of up to that length is seen
/// whole in at least one window.
struct Windows<'a> {
    patterns: Vec<Option<&'a Pattern>>,
    found: Vec<bool>,
    buffer: Vec<u8>,
}

impl<'a> Windows<'a> {
    /// `None` when no regex of `http` is window-scoped.
    fn new(http: &'a Http) -> Option<Windows<'a>> {
        let patterns: Vec<Option<&Pattern>> = http
            .body_must_match
            .iter()
            .chain(&http.body_must_not_match)
            .map(|p| (p.scope == Scope::Window).then_some(&p.regex))
            .collect();
        patterns.iter().any(Option::is_some).then(|| Windows {
            found: vec![false; patterns.len()],
            patterns,
            buffer: Vec::new(),
        })
    }

    fn scan(&mut self) {
        for (pattern, found) in self.patterns.iter().zip(self.found.iter_mut()) {
            if let Some(pattern) = pattern
                && !*found
            {
                *found = pattern.is_match(&self.buffer);
            }
        }
    }
}

impl BodyWatch for Windows<'_> {
    fn chunk(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= 2 * WINDOW {
            self.scan();
            let cut = self.buffer.len() - WINDOW;
            self.buffer.drain(..cut);
        }
    }

    fn end(&mut self) {
        self.scan();
    }
}

/// Assertions see the body whole or not at all: a body longer than what is kept for them fails.
fn truncated(exchange: &Exchange) -> Option<String> {
    (exchange.body_bytes > exchange.body.len() as u64).then(|| {
        format!(
            "the body is longer than the {} MiB kept for body and JSON assertions; set body_size_limit",
            KEEP_FOR_ASSERTIONS >> 20
        )
    })
}

fn show(value: &serde_json::Value) -> String {
    let mut text = value.to_string();
    if text.len() > 80 {
        let cut = (0..=77).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

fn json_holds(rule: &CompiledJson, document: &serde_json::Value) -> Result<(), String> {
    let mut found = Some(document);
    for step in &rule.steps {
        found = found.and_then(|v| match step {
            Step::Key(k) => v.get(k),
            Step::Index(i) => v.get(*i),
        });
    }
    let c = &rule.condition;
    let path = &rule.path;
    if let Some(expected) = c.exists
        && expected != found.is_some()
    {
        return Err(if expected {
            format!("`{path}` is missing")
        } else {
            format!("`{path}` exists")
        });
    }
    let needs_value = c.equals.is_some()
        || c.not_equals.is_some()
        || c.matches.is_some()
        || c.less_than.is_some()
        || c.greater_than.is_some();
    let Some(value) = found else {
        return if needs_value {
            Err(format!("`{path}` is missing"))
        } else {
            Ok(())
        };
    };
    let same = |a: &serde_json::Value, b: &serde_json::Value| match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    };
    if let Some(expected) = &c.equals
        && !same(value, expected)
    {
        return Err(format!("`{path}` is {}, expected {}", show(value), show(expected)));
    }
    if let Some(unwanted) = &c.not_equals
        && same(value, unwanted)
    {
        return Err(format!("`{path}` is {}", show(value)));
    }
    if let Some(pattern) = &c.matches {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if !pattern.is_match(text.as_bytes()) {
            return Err(format!(
                "`{path}` ({}) does not match /{}/",
                show(value),
                pattern.as_str()
            ));
        }
    }
    for (bound, below) in [(c.less_than, true), (c.greater_than, false)] {
        let Some(bound) = bound else { continue };
        let Some(number) = value.as_f64() else {
            return Err(format!("`{path}` is {}, not a number", show(value)));
        };
        if (below && number >= bound) || (!below && number <= bound) {
            let op = if below { "<" } else { ">" };
            return Err(format!("`{path}` is {number}, expected {op} {bound}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths() {
        assert_eq!(
            parse_json_path("$.a.b[2]"),
            Ok(vec![Step::Key("a".into()), Step::Key("b".into()), Step::Index(2)])
        );
        assert_eq!(
            parse_json_path("items[0][1]"),
            Ok(vec![Step::Key("items".into()), Step::Index(0), Step::Index(1)])
        );
        assert!(parse_json_path("a[x]").is_err());
        assert!(parse_json_path("a[1").is_err());
    }

    fn pattern(text: &str) -> BodyPattern {
        BodyPattern::new(Pattern(regex::bytes::Regex::new(text).expect("regex")))
    }

    #[test]
    fn body_regexes_need_as_much_of_the_body_as_their_anchors_say() {
        assert_eq!(pattern("hello").scope, Scope::Window);
        assert_eq!(pattern("status.{0,10}ok").scope, Scope::Window);
        assert_eq!(pattern("^<!doctype").scope, Scope::Start);
        assert_eq!(pattern(r"\Ahello").scope, Scope::Start);
        assert_eq!(pattern("done$").scope, Scope::Whole);
        assert_eq!(pattern(r"\bok\b").scope, Scope::Whole);
        assert_eq!(pattern("(?m)^ok").scope, Scope::Whole);
    }

    #[test]
    fn windows_find_a_match_anywhere_in_a_long_body_even_across_chunks() {
        let http = Http {
            method: Method::GET,
            headers: Vec::new(),
            body: Bytes::new(),
            client: Client {
                tls: tls::client_config(
                    &TlsSpec::default(),
                    &[],
                    &mut BuildContext::new(crate::spec::lines::KeyLines::default(), ".".into()),
                    "t",
                )
                .expect("tls"),
                verify: true,
                server_name: None,
                ip_protocol: IpProtocol::Ip4,
                ip_protocol_fallback: true,
                follow_redirects: true,
                max_redirects: 10,
                secret_names: SecretNames::default(),
                user_agent: HeaderValue::from_static(USER_AGENT),
                http2: false,
                h2c: false,
            },
            policy: BodyPolicy::default(),
            valid_status: Vec::new(),
            degraded_status: Vec::new(),
            body_must_match: vec![pattern("needle-[0-9]+"), pattern("absent")],
            body_must_not_match: vec![pattern("^needle")],
            header_must_match: Vec::new(),
            header_must_not_match: Vec::new(),
            json: Vec::new(),
            valid_http_versions: Vec::new(),
            fail_if_ssl: false,
            fail_if_not_ssl: false,
            configured_server_name: None,
        };
        let mut windows = Windows::new(&http).expect("window-scoped regexes");
        let mut body = vec![b'x'; 3 << 20];
        let at = (1 << 20) + 4093;
        body[at..at + 10].copy_from_slice(b"needle-123");
        for chunk in body.chunks(4096) {
            windows.chunk(chunk);
            assert!(windows.buffer.len() <= 2 * WINDOW + 4096);
        }
        windows.end();
        assert_eq!(windows.found, vec![true, false, false]);
    }

    #[test]
    fn targets() {
        let names = SecretNames::default();
        assert_eq!(
            parse_target("example.test:8080", &names).map(|u| u.to_string()),
            Ok("http://example.test:8080/".into())
        );
        assert!(parse_target("ftp://example.test/", &names).is_err());
        assert_eq!(
            parse_target("https://a.test/x?y=1", &names).map(|u| u.to_string()),
            Ok("https://a.test/x?y=1".into())
        );
        // Mistyped URLs are refused, never re-read as a host called `http` or `file`.
        for bad in [
            "http://u:pw@127.0.0.1:99999/",
            "file:///etc/passwd",
            "http://[::1/",
            "http:///x",
            "https://",
        ] {
            let err = parse_target(bad, &names).expect_err(bad);
            assert!(!err.detail.contains("pw@"), "{err}");
        }
    }
}
