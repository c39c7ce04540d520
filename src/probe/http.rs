//! The `http` kind: one request (plus redirects) over a fresh connection, with assertions on
//! status, headers, body and JSON, and per-phase timings.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use url::Url;

use super::net::{self, IpProtocol};
use super::tls::{self, TlsSpec};
use super::{Built, CheckContext, Checked, Failure, Level, Observations, Phases, Reason, Role};
use crate::secret::{SecretNames, SecretSource};
use crate::spec::BuildContext;
use crate::spec::values::{ByteSize, OneOrMany, Pattern, StatusRange};

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
    /// At most this much of the body is read; more fails the probe (default 1MiB, at most 1GiB).
    #[serde(default = "default_body_limit")]
    pub body_size_limit: ByteSize,
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderPattern {
    /// Header name (case-insensitive).
    pub header: String,
    /// Regex matched against every value of the header.
    pub pattern: Pattern,
    /// For `header_must_match`: a missing header passes (default false).
    #[serde(default)]
    pub allow_missing: bool,
}

/// A condition on one field of a JSON body: `path` plus at least one test.
#[derive(Debug, Deserialize)]
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
fn default_body_limit() -> ByteSize {
    ByteSize(1 << 20)
}

/// The most redirects a probe may follow.
pub const MAX_REDIRECTS: u32 = 100;
/// The largest body a probe may read.
pub const MAX_BODY_SIZE: u64 = 1 << 30;

/// Checks a `body_size_limit` (found at `path`): above 0, at most [`MAX_BODY_SIZE`].
pub(crate) fn check_body_limit(limit: u64, ctx: &mut BuildContext, path: &str) {
    if limit == 0 {
        ctx.error(path, "must be greater than 0");
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

#[derive(Debug)]
struct CompiledJson {
    path: String,
    steps: Vec<Step>,
    condition: JsonCondition,
}

/// How a request reaches its server: TLS, IP preference, redirects and the body limit. Shared
/// with the kinds that query their source over HTTP.
#[derive(Debug)]
pub struct Transport {
    /// TLS client settings for `https` URLs.
    pub tls: Arc<ClientConfig>,
    /// Name to verify instead of the URL's host.
    pub server_name: Option<String>,
    /// IP version tried first.
    pub ip_protocol: IpProtocol,
    /// Whether the other IP version is tried too.
    pub ip_protocol_fallback: bool,
    /// Bodies longer than this fail with reason `body`.
    pub body_size_limit: u64,
    /// Follow redirects.
    pub follow_redirects: bool,
    /// At most this many redirects.
    pub max_redirects: u32,
    /// Which headers hold secrets (never sent to another origin) and how targets are shown.
    pub secret_names: SecretNames,
}

impl Transport {
    /// Whether a header of the request carries credentials: `Authorization`, `Cookie` and the
    /// like, a value read from a file or otherwise marked sensitive, or a name that the secret
    /// rule matches (`X-Api-Key`, `X-Auth-Token`, ...).
    fn is_credential(&self, name: &HeaderName, value: &HeaderValue) -> bool {
        value.is_sensitive()
            || name == header::AUTHORIZATION
            || name == header::PROXY_AUTHORIZATION
            || name == header::COOKIE
            || self.secret_names.is_secret(name.as_str())
    }
}

/// The origin of a URL as credentials are scoped to it: scheme, host and port (as curl has it).
fn origin(url: &Url) -> (&str, Option<&str>, Option<u16>) {
    (url.scheme(), url.host_str(), url.port_or_known_default())
}

/// Parses an absolute `http://` or `https://` URL with a host; the error never holds the
/// credentials or secret query values the text may carry.
pub(crate) fn parse_http_url(text: &str, names: &SecretNames) -> Result<Url, String> {
    let shown = || names.redact_text(text);
    let url = Url::parse(text).map_err(|e| format!("`{}` is not a URL: {e}", shown()))?;
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(format!("unsupported scheme `{other}` (use http or https)")),
    }
    // `http:///x` parses (the WHATWG rules skip the empty host) but names no host.
    let after = text.split_once("://").map_or("", |(_, rest)| rest);
    if !url.has_host() || after.is_empty() || after.starts_with('/') {
        return Err(format!("`{}` is not a URL: it names no host", shown()));
    }
    Ok(url)
}

/// One request to send.
#[derive(Debug)]
pub struct Outgoing<'a> {
    /// Method.
    pub method: Method,
    /// Where.
    pub url: Url,
    /// Extra headers (Host, User-Agent and Connection are set already).
    pub headers: &'a [(HeaderName, HeaderValue)],
    /// Body (may be empty).
    pub body: Bytes,
}

/// An `http` probe's compiled settings.
#[derive(Debug)]
pub struct Settings {
    method: Method,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    transport: Transport,
    valid_status: Vec<StatusRange>,
    degraded_status: Vec<StatusRange>,
    body_must_match: Vec<Pattern>,
    body_must_not_match: Vec<Pattern>,
    header_must_match: Vec<(HeaderName, HeaderPattern)>,
    header_must_not_match: Vec<(HeaderName, HeaderPattern)>,
    json: Vec<CompiledJson>,
}

/// Parses a target the way blackbox_exporter does: a URL, or `host:port` meaning `http://`.
/// A target with a scheme must be a valid `http(s)` URL as written: it is never re-read as a
/// host named `http` or `file`.
fn parse_target(target: &str, names: &SecretNames) -> Result<Url, String> {
    if target.contains("://") {
        parse_http_url(target, names)
    } else {
        parse_http_url(&format!("http://{target}"), names)
    }
}

/// The reasons this kind ends with besides the scheduler's (one HTTP request and its redirects).
pub(crate) const REASONS: &[Reason] = &[
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

pub(crate) fn build(spec: Spec, ctx: &mut BuildContext, path: &str, role: Role) -> Option<Built<Settings>> {
    let key = |k: &str| format!("{path}.{k}");
    match (role, &spec.url) {
        (Role::Scheduled, None) => ctx.error(path, "missing key `url`"),
        (Role::Scheduled, Some(url)) => {
            if let Err(e) = parse_target(url, ctx.secret_names()) {
                ctx.error(key("url"), e);
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
    let mut headers = Vec::new();
    for (name, source) in &spec.headers {
        let hkey = format!("{path}.headers.{name}");
        let Ok(header_name) = HeaderName::from_bytes(name.as_bytes()) else {
            ctx.error(&hkey, format!("`{name}` is not a valid header name"));
            continue;
        };
        let Some(secret) = ctx.secret(&hkey, source) else {
            continue;
        };
        match HeaderValue::from_str(secret.expose()) {
            Ok(mut value) => {
                // Read from a file, or named like a secret: a credential, kept to its origin.
                let sensitive = matches!(source, SecretSource::File { .. })
                    || ctx.secret_names().is_secret(name)
                    || header_name == header::AUTHORIZATION
                    || header_name == header::COOKIE;
                value.set_sensitive(sensitive);
                headers.push((header_name, value));
            }
            Err(_) => ctx.error(&hkey, "the header value holds characters a header cannot carry"),
        }
    }
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
    check_body_limit(spec.body_size_limit.0, ctx, &key("body_size_limit"));
    let tls = tls::client_config(&spec.tls_config, &[b"http/1.1"], ctx, &key("tls_config"))?;
    let settings = Settings {
        method,
        headers,
        body,
        valid_status: spec.valid_status,
        degraded_status: spec.degraded_status,
        body_must_match: spec.body_must_match.0,
        body_must_not_match: spec.body_must_not_match.0,
        header_must_match,
        header_must_not_match,
        json,
        transport: Transport {
            tls,
            server_name: spec.tls_config.server_name,
            ip_protocol: spec.ip_protocol,
            ip_protocol_fallback: spec.ip_protocol_fallback,
            body_size_limit: spec.body_size_limit.0,
            follow_redirects: spec.follow_redirects,
            max_redirects: spec.max_redirects,
            secret_names: ctx.secret_names().clone(),
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
    use base64::Engine;
    let password = ctx.secret(path, &auth.password)?;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", auth.username, password.expose()));
    let mut value = HeaderValue::from_str(&format!("Basic {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// One response, read whole (within the size limit).
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// HTTP version (1.0, 1.1).
    pub version: f64,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Vec<u8>,
}

const USER_AGENT: &str = concat!("vigil/", env!("CARGO_PKG_VERSION"));

/// One attempt: request, follow redirects, then check the final response.
pub async fn check(settings: &Settings, target: &str, context: &CheckContext) -> Checked {
    let mut obs = Observations::default();
    let url = match parse_target(target, &settings.transport.secret_names) {
        Ok(url) => url,
        Err(e) => return Checked::down(Reason::Connect, e, obs),
    };
    let outgoing = Outgoing {
        method: settings.method.clone(),
        url,
        headers: &settings.headers,
        body: settings.body.clone(),
    };
    match fetch(&settings.transport, outgoing, &mut obs, &context.sockets).await {
        Ok(response) => assess(settings, &response, obs),
        Err(failure) => Checked::down(failure.reason, failure.detail, obs),
    }
}

/// Sends `outgoing` on a fresh connection, following redirects as `transport` says, and reads
/// the final response; phases, TLS and status go into `obs` as they are learnt. Each
/// connection takes its place in `sockets`.
pub async fn fetch(
    transport: &Transport,
    outgoing: Outgoing<'_>,
    obs: &mut Observations,
    sockets: &net::Sockets,
) -> Result<Response, Failure> {
    let Outgoing {
        method,
        mut url,
        headers: extra_headers,
        body: request_body,
    } = outgoing;
    let mut method = method;
    let mut send_body = true;
    let mut phases = Phases::default();
    let mut redirects = 0u32;
    let mut visited: Vec<Url> = Vec::new();
    let first = url.clone();
    loop {
        let host = url
            .host_str()
            .ok_or_else(|| Failure::new(Reason::Connect, "URL has no host"))?
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let connected = net::connect(
            &host,
            port,
            transport.ip_protocol,
            transport.ip_protocol_fallback,
            sockets,
        )
        .await;
        let connected = match connected {
            Ok(c) => c,
            Err(e) => {
                obs.phases = Some(phases);
                return Err(e);
            }
        };
        phases.resolve += connected.resolve;
        phases.connect += connected.connect;
        obs.ip_protocol = Some(if connected.addr.is_ipv4() { 4 } else { 6 });

        let mut request = Request::builder().method(method.clone()).uri(match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        });
        let host_header = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => host.clone(),
        };
        // Credentials go only to the origin the probe was written for (scheme, host and port),
        // never to a redirect target elsewhere, nor from https down to http.
        let same_origin = origin(&url) == origin(&first);
        let headers = request
            .headers_mut()
            .ok_or_else(|| Failure::new(Reason::Protocol, "invalid request"))?;
        headers.insert(
            header::HOST,
            HeaderValue::from_str(&host_header).map_err(|_| Failure::new(Reason::Connect, "invalid host"))?,
        );
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        for (name, value) in extra_headers {
            if same_origin || !transport.is_credential(name, value) {
                headers.insert(name.clone(), value.clone());
            }
        }
        let body = if send_body { request_body.clone() } else { Bytes::new() };
        if !body.is_empty() {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| Failure::new(Reason::Protocol, e.to_string()))?;

        let response = if url.scheme() == "https" {
            let started = Instant::now();
            let name = transport.server_name.as_deref().unwrap_or(&host);
            let mut expired = None;
            let shake = tls::handshake(&transport.tls, name, connected.stream, &mut expired).await;
            phases.tls += started.elapsed();
            let shake = match shake {
                Ok(s) => s,
                Err(e) => {
                    obs.phases = Some(phases);
                    obs.tls = Some(true);
                    obs.tls_cert_expiry = expired.or(obs.tls_cert_expiry);
                    return Err(e);
                }
            };
            obs.tls = Some(true);
            obs.tls_cert_expiry = match (obs.tls_cert_expiry, shake.earliest_expiry) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            round_trip(shake.stream, request, transport.body_size_limit, &mut phases).await
        } else {
            obs.tls = Some(false);
            round_trip(connected.stream, request, transport.body_size_limit, &mut phases).await
        };
        obs.phases = Some(phases);
        let response = response?;
        obs.http_status = Some(response.status);
        obs.http_version = Some(response.version);
        obs.http_content_length = Some(response.body.len() as u64);

        let is_redirect = matches!(response.status, 301 | 302 | 303 | 307 | 308);
        if !(is_redirect && transport.follow_redirects) {
            obs.http_redirects = Some(redirects);
            return Ok(response);
        }
        let location = response
            .headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Failure::new(
                    Reason::Redirect,
                    format!("status {} without a Location header", response.status),
                )
            })?;
        let next = url.join(location).map_err(|e| {
            let shown = transport.secret_names.redact_target(location);
            Failure::new(Reason::Redirect, format!("bad Location `{shown}`: {e}"))
        })?;
        visited.push(url);
        if redirects >= transport.max_redirects {
            obs.http_redirects = Some(redirects);
            let looped = visited.contains(&next);
            return Err(Failure::new(
                Reason::Redirect,
                if looped {
                    format!(
                        "redirect loop: {} redirects, back to {}",
                        redirects,
                        transport.secret_names.redact_target(next.as_str())
                    )
                } else {
                    format!("more than {} redirects", transport.max_redirects)
                },
            ));
        }
        redirects += 1;
        // Like browsers and Go: 303, and 301/302 after a POST, continue as GET without a body.
        if response.status == 303 && method != Method::HEAD
            || matches!(response.status, 301 | 302) && method == Method::POST
        {
            method = Method::GET;
            send_body = false;
        }
        if !matches!(next.scheme(), "http" | "https") {
            return Err(Failure::new(
                Reason::Redirect,
                format!("redirect to unsupported scheme `{}`", next.scheme()),
            ));
        }
        url = next;
    }
}

/// Sends `request` on a new HTTP/1.1 connection over `stream` and reads the response.
async fn round_trip<S>(
    stream: S,
    request: Request<Full<Bytes>>,
    limit: u64,
    phases: &mut Phases,
) -> Result<Response, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let protocol = |e: hyper::Error| Failure::new(Reason::Protocol, format!("HTTP: {e}"));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(protocol)?;
    let sent = Instant::now();
    let exchange = async {
        let response = sender.send_request(request).await.map_err(|e| (protocol(e), None))?;
        let head_at = Instant::now();
        let (parts, mut body) = response.into_parts();
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| (protocol(e), Some(head_at)))?;
            if let Ok(data) = frame.into_data() {
                if (buf.len() + data.len()) as u64 > limit {
                    let failure = Failure::new(Reason::Body, format!("body larger than the limit of {limit} bytes"));
                    return Err((failure, Some(head_at)));
                }
                buf.extend_from_slice(&data);
            }
        }
        let version = match parts.version {
            http::Version::HTTP_10 => 1.0,
            http::Version::HTTP_2 => 2.0,
            _ => 1.1,
        };
        Ok((
            Response {
                status: parts.status.as_u16(),
                version,
                headers: parts.headers,
                body: buf,
            },
            head_at,
        ))
    };
    tokio::pin!(exchange);
    tokio::pin!(conn);
    let mut conn_done = false;
    let result = loop {
        tokio::select! {
            result = &mut exchange => break result,
            // The connection future ends when the server closes; buffered body data stays readable.
            _ = &mut conn, if !conn_done => conn_done = true,
        }
    };
    let finished = Instant::now();
    let (result, head_at) = match result {
        Ok((response, head_at)) => (Ok(response), Some(head_at)),
        Err((failure, head_at)) => (Err(failure), head_at),
    };
    match head_at {
        Some(head_at) => {
            phases.processing += head_at - sent;
            phases.transfer += finished - head_at;
        }
        None => phases.processing += finished - sent,
    }
    result
}

fn assess(settings: &Settings, response: &Response, obs: Observations) -> Checked {
    let status = response.status;
    if settings.degraded_status.iter().any(|r| r.contains(status)) {
        return Checked::failed(
            Level::Degraded,
            Reason::Status,
            format!("status {status} counts as degraded"),
            obs,
        );
    }
    if !settings.valid_status.iter().any(|r| r.contains(status)) {
        let valid: Vec<String> = settings.valid_status.iter().map(ToString::to_string).collect();
        return Checked::down(
            Reason::Status,
            format!("status {status} is not in {}", valid.join(", ")),
            obs,
        );
    }
    for (name, rule) in &settings.header_must_match {
        let values: Vec<&HeaderValue> = response.headers.get_all(name).iter().collect();
        if values.is_empty() {
            if !rule.allow_missing {
                return Checked::down(Reason::Header, format!("header {name} is missing"), obs);
            }
        } else if !values.iter().any(|v| rule.pattern.is_match(v.as_bytes())) {
            return Checked::down(
                Reason::Header,
                format!("header {name} does not match /{}/", rule.pattern.as_str()),
                obs,
            );
        }
    }
    for (name, rule) in &settings.header_must_not_match {
        if response
            .headers
            .get_all(name)
            .iter()
            .any(|v| rule.pattern.is_match(v.as_bytes()))
        {
            return Checked::down(
                Reason::Header,
                format!("header {name} matches /{}/", rule.pattern.as_str()),
                obs,
            );
        }
    }
    for pattern in &settings.body_must_match {
        if !pattern.is_match(&response.body) {
            return Checked::down(Reason::Body, format!("body does not match /{}/", pattern.as_str()), obs);
        }
    }
    for pattern in &settings.body_must_not_match {
        if pattern.is_match(&response.body) {
            return Checked::down(Reason::Body, format!("body matches /{}/", pattern.as_str()), obs);
        }
    }
    if !settings.json.is_empty() {
        let document: serde_json::Value = match serde_json::from_slice(&response.body) {
            Ok(doc) => doc,
            Err(e) => return Checked::down(Reason::Json, format!("body is not JSON: {e}"), obs),
        };
        for rule in &settings.json {
            if let Err(why) = json_holds(rule, &document) {
                return Checked::down(Reason::Json, why, obs);
            }
        }
    }
    Checked::up(obs)
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
            assert!(!err.contains("pw@"), "{err}");
        }
    }
}
