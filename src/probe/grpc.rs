//! The `grpc` kind: the standard health service, `grpc.health.v1.Health/Check`, with an
//! optional service name, over HTTP/2 in plaintext or over TLS (ALPN `h2`), with request
//! metadata. SERVING is UP; NOT_SERVING, UNKNOWN and SERVICE_UNKNOWN are DOWN each with its own
//! reason, or DEGRADED when listed in `degraded_status`; any other gRPC status (the service
//! unknown to the server, no health service at all, a server that is not gRPC) is DOWN with
//! reason `status`. blackbox_exporter's `probe_grpc_*` series on `/probe`.
//!
//! The call is vigil's own on hyper's HTTP/2 client, as the gRPC wire protocol has it (a
//! length-prefixed protobuf message each way, the status in the trailers): both messages have
//! one field, so no code generator is needed. Unlike blackbox_exporter (whose call ignores the
//! module's timeout), the attempt's timeout holds, and is sent to the server as `grpc-timeout`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http::header::{HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use serde::Deserialize;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

use super::families::{Address, Certificates, Emit, Reached, Seen, Shook, Tls, Unit};
use super::{Built, CheckContext, Failure, Family, Level, ProbeKind, Publish, Reason, Role, Verdict};
use crate::secret::SecretSource;
use crate::spec::BuildContext;
use crate::transport::connect::{self, Dialled, IpProtocol};
use crate::transport::tls::{self, TlsSeen, TlsSpec};

/// Config of a `grpc` probe.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// `host:port` of the server (a module gets it from `/probe?target=`, where `http://` or
    /// `https://` in front is accepted, as blackbox_exporter does).
    pub address: Option<String>,
    /// The service whose health is asked (default empty: the server as a whole).
    #[serde(default)]
    pub service: String,
    /// Speak TLS (with ALPN `h2`), with `tls_config` (default false: plaintext HTTP/2).
    #[serde(default)]
    pub tls: bool,
    /// TLS settings.
    #[serde(default)]
    pub tls_config: TlsSpec,
    /// Request metadata (`{name: value}`); a value may be `{file: PATH}`.
    #[serde(default)]
    pub metadata: BTreeMap<String, SecretSource>,
    /// Serving statuses that are DEGRADED rather than DOWN (`NOT_SERVING`, `UNKNOWN`,
    /// `SERVICE_UNKNOWN`).
    #[serde(default)]
    pub degraded_status: Vec<String>,
    /// IP version to try first (default ip4).
    #[serde(default)]
    pub ip_protocol: IpProtocol,
    /// Try the other IP version too (default true).
    #[serde(default = "yes")]
    pub ip_protocol_fallback: bool,
}

fn yes() -> bool {
    true
}

/// The serving statuses of `grpc.health.v1.HealthCheckResponse`, by their protobuf number.
const SERVING_STATUSES: [&str; 4] = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"];
const SERVING: i32 = 1;

/// gRPC status codes by number, as blackbox_exporter's `probe_grpc_status_code` has them.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
const UNKNOWN: i32 = 2;
const DEADLINE_EXCEEDED: i32 = 4;
const INTERNAL: i32 = 13;
const UNAVAILABLE: i32 = 14;

fn code_name(code: i32) -> &'static str {
    usize::try_from(code)
        .ok()
        .and_then(|c| CODES.get(c))
        .copied()
        .unwrap_or("other")
}

/// The longest response message read.
const MAX_RESPONSE: usize = 64 * 1024;

/// A `grpc` probe's compiled settings.
#[derive(Debug)]
pub struct Grpc {
    service: String,
    tls: Option<Arc<ClientConfig>>,
    verify: bool,
    server_name: Option<String>,
    metadata: Vec<(HeaderName, HeaderValue)>,
    degraded: Vec<i32>,
    ip_protocol: IpProtocol,
    ip_protocol_fallback: bool,
}

/// What one `grpc` attempt observed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Obs {
    /// The target was split into host and port (its name was then resolved).
    pub parsed: bool,
    /// The connect.
    pub dialled: Dialled,
    /// What the TLS handshake showed.
    pub tls_seen: TlsSeen,
    /// Whether it succeeded.
    pub tls_ok: bool,
    /// The call was made (blackbox's `check` phase exists).
    pub called: bool,
    /// From the connection to the call's status.
    pub check: Duration,
    /// The call's gRPC status code.
    pub code: Option<i32>,
    /// The serving status answered (only with status OK).
    pub serving: Option<i32>,
}

impl Reached for Obs {
    fn reached(&self) -> Option<&Dialled> {
        self.parsed.then_some(&self.dialled)
    }
}

impl Shook for Obs {
    fn shook(&self) -> Option<&TlsSeen> {
        self.tls_ok.then_some(&self.tls_seen)
    }
}

/// What it carries from run to run: the certificate expiry last known.
pub use super::families::KeptCert as Kept;

fn phases(seen: &Seen<'_, Grpc>, out: &mut dyn Emit) {
    let obs = seen.obs;
    let resolve = super::families::lookup_time(&obs.dialled);
    out.gauge(&[("phase", "resolve")], resolve.as_secs_f64());
    if obs.called {
        out.gauge(&[("phase", "check")], obs.check.as_secs_f64());
    }
}

fn healthcheck_response(seen: &Seen<'_, Grpc>, out: &mut dyn Emit) {
    // As blackbox_exporter: once the target resolved.
    if seen.obs.dialled.addr.is_none() {
        return;
    }
    for (number, name) in (0..).zip(SERVING_STATUSES) {
        let value = seen.obs.serving == Some(number);
        out.gauge(&[("serving_status", name)], f64::from(u8::from(value)));
    }
}

impl ProbeKind for Grpc {
    const NAME: &'static str = "grpc";
    const REASONS: &'static [Reason] = &[
        Reason::Dns,
        Reason::Connect,
        Reason::Tls,
        Reason::Protocol,
        Reason::Status,
        Reason::NotServing,
        Reason::ServingUnknown,
        Reason::ServiceUnknown,
    ];
    const FAMILIES: &'static [Family<Self>] = &[
        Certificates::<Self>::EXPIRY,
        Family {
            name: "vigil_probe_grpc_status_code",
            help: "gRPC status code of the last health check (0 is OK; none before a call).",
            unit: None,
            publish: Publish::Metrics,
            emit: |seen, out| {
                if let (Some(code), true) = (seen.obs.code, seen.ran) {
                    out.gauge(&[], f64::from(code));
                }
            },
        },
        Family {
            name: "vigil_probe_grpc_serving_status",
            help: "1 for the serving status the last health check answered, 0 for the others.",
            unit: None,
            publish: Publish::Metrics,
            emit: |seen, out| {
                if seen.ran && seen.obs.serving.is_some() {
                    healthcheck_response(seen, out);
                }
            },
        },
        Family {
            name: "probe_grpc_duration",
            help: "Duration of gRPC request by phase",
            unit: Some(Unit::Seconds),
            publish: Publish::Probe,
            emit: phases,
        },
        Family {
            name: "probe_grpc_ssl",
            help: "Indicates if SSL was used for the connection",
            unit: None,
            publish: Publish::Probe,
            emit: |seen, out| out.gauge(&[], f64::from(u8::from(seen.obs.tls_ok))),
        },
        Family {
            name: "probe_grpc_status_code",
            help: "Response gRPC status code",
            unit: None,
            publish: Publish::Probe,
            emit: |seen, out| out.gauge(&[], f64::from(seen.obs.code.unwrap_or(0))),
        },
        Family {
            name: "probe_grpc_healthcheck_response",
            help: "Response HealthCheck response",
            unit: None,
            publish: Publish::Probe,
            emit: healthcheck_response,
        },
        Family {
            // blackbox_exporter's grpc prober has it from the start, 0 without TLS.
            name: "probe_ssl_earliest_cert_expiry",
            help: "Returns last SSL chain expiry in unixtime",
            unit: None,
            publish: Publish::Probe,
            emit: |seen, out| match seen.obs.shook() {
                Some(_) => (Tls::<Grpc>::EARLIEST_CERT_EXPIRY.emit)(seen, out),
                None => out.gauge(&[], 0.0),
            },
        },
        Tls::<Self>::VERSION_INFO,
        Tls::<Self>::LAST_CHAIN_INFO,
        Address::<Self>::IP_PROTOCOL,
        Address::<Self>::IP_ADDR_HASH,
        Address::<Self>::DNS_LOOKUP_TIME,
    ];

    type Spec = Spec;
    type Obs = Obs;
    type Kept = Kept;

    fn build(spec: Spec, ctx: &mut BuildContext, path: &str, role: Role) -> Option<Built<Self>> {
        let before = ctx.error_count();
        match (role, &spec.address) {
            (Role::Scheduled, None) => ctx.error(path, "missing key `address`"),
            (Role::Scheduled, Some(address)) => {
                if let Err(e) = split_target(address, spec.tls) {
                    ctx.error(format!("{path}.address"), e);
                }
            }
            (Role::Module, Some(_)) => ctx.error(
                format!("{path}.address"),
                "a /probe module takes its target from the request; remove `address`",
            ),
            (Role::Module, None) => {}
        }
        if !spec.tls && spec.tls_config != TlsSpec::default() {
            ctx.error(format!("{path}.tls_config"), "tls_config is set but tls is false");
        }
        let tls = if spec.tls {
            Some(tls::client_config(
                &spec.tls_config,
                &[b"h2"],
                ctx,
                &format!("{path}.tls_config"),
            )?)
        } else {
            None
        };
        let metadata = ctx.headers(&format!("{path}.metadata"), &spec.metadata, |name| {
            (name.starts_with("grpc-") || matches!(name, "content-type" | "te" | "user-agent"))
                .then_some("the gRPC protocol itself")
        });
        let mut degraded = Vec::new();
        for (i, status) in spec.degraded_status.iter().enumerate() {
            match (0..)
                .zip(SERVING_STATUSES)
                .find(|(_, n)| n.eq_ignore_ascii_case(status))
            {
                Some((SERVING, _)) => ctx.error(
                    format!("{path}.degraded_status.{i}"),
                    "SERVING is UP; list NOT_SERVING, UNKNOWN or SERVICE_UNKNOWN",
                ),
                Some((number, _)) => degraded.push(number),
                None => ctx.error(
                    format!("{path}.degraded_status.{i}"),
                    format!("unknown serving status `{status}` (one of NOT_SERVING, UNKNOWN, SERVICE_UNKNOWN)"),
                ),
            }
        }
        if ctx.error_count() > before {
            return None;
        }
        Some(Built {
            settings: Grpc {
                service: spec.service,
                tls,
                verify: spec.tls_config.verify,
                server_name: spec.tls_config.server_name,
                metadata,
                degraded,
                ip_protocol: spec.ip_protocol,
                ip_protocol_fallback: spec.ip_protocol_fallback,
            },
            target: match role {
                Role::Scheduled => spec.address,
                Role::Module => None,
            },
            freshness: None,
        })
    }

    async fn check(&self, target: &str, cx: &CheckContext, obs: &mut Obs) -> Verdict {
        match self.attempt(target, cx, obs).await {
            Ok(verdict) => verdict,
            Err(failure) => failure.into(),
        }
    }

    fn interrupted(obs: &mut Obs) {
        if obs.called && obs.code.is_none() {
            obs.code = Some(DEADLINE_EXCEEDED);
        }
    }

    fn keep(kept: &mut Kept, obs: &Obs) {
        kept.cert.keep(&obs.tls_seen);
    }
}

/// A target as blackbox_exporter reads it: `host:port`, `[v6]:port`, optionally after
/// `http://` or `https://` (which choose nothing: `tls` does); without a port, 443 with TLS and
/// 80 without.
fn split_target(target: &str, tls: bool) -> Result<(String, u16), String> {
    let rest = target
        .trim()
        .strip_prefix("http://")
        .or_else(|| target.trim().strip_prefix("https://"))
        .unwrap_or(target.trim());
    let rest = rest.split('/').next().unwrap_or_default();
    let default = if tls { 443 } else { 80 };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("`{target}`: `[` without `]`"))?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("`{target}` is not host:port")),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(format!("`{target}` has no host"));
    }
    let port = match port {
        Some(p) => p
            .parse()
            .map_err(|_| format!("`{p}` in `{target}` is not a port number"))?,
        None => default,
    };
    Ok((host.to_string(), port))
}

/// The request message: `HealthCheckRequest { service }`, length-prefixed.
fn request_message(service: &str) -> Bytes {
    let mut message = Vec::with_capacity(service.len() + 8);
    if !service.is_empty() {
        message.push(0x0a); // field 1, length-delimited
        let mut len = service.len();
        while len >= 0x80 {
            message.push((len as u8) | 0x80);
            len >>= 7;
        }
        message.push(len as u8);
        message.extend_from_slice(service.as_bytes());
    }
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(message.len()).unwrap_or(u32::MAX).to_be_bytes());
    framed.extend_from_slice(&message);
    Bytes::from(framed)
}

/// The serving status of a `HealthCheckResponse` (without its length prefix): field 1, a
/// varint; proto3's default, UNKNOWN, when absent. Unknown fields are skipped.
fn serving_status(mut message: &[u8]) -> Result<i32, String> {
    let varint = |data: &mut &[u8]| -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some((&byte, rest)) = data.split_first() else {
                return Err("a truncated varint".to_string());
            };
            *data = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a varint longer than 64 bits".to_string())
    };
    let mut status = 0;
    while !message.is_empty() {
        let key = varint(&mut message)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = i32::try_from(varint(&mut message)?).unwrap_or(-1),
            (_, 0) => {
                varint(&mut message)?;
            }
            (_, 1) => message = message.get(8..).ok_or("a truncated field")?,
            (_, 2) => {
                let len = usize::try_from(varint(&mut message)?).map_err(|_| "a field too long")?;
                message = message.get(len..).ok_or("a truncated field")?;
            }
            (_, 5) => message = message.get(4..).ok_or("a truncated field")?,
            (_, wire) => return Err(format!("wire type {wire}")),
        }
    }
    Ok(status)
}

/// The gRPC status an HTTP status means when the server did not send one (gRPC's
/// http-grpc-status-mapping).
fn code_of_http(status: u16) -> i32 {
    match status {
        400 => INTERNAL,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => UNAVAILABLE,
        _ => UNKNOWN,
    }
}

/// `grpc-timeout`: what is left of the attempt, in milliseconds (at most 8 digits).
fn grpc_timeout(left: Duration) -> HeaderValue {
    let ms = left.as_millis().clamp(1, 99_999_999);
    HeaderValue::from_str(&format!("{ms}m")).unwrap_or(HeaderValue::from_static("1m"))
}

/// A connection, before or after TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

impl Grpc {
    async fn attempt(&self, target: &str, cx: &CheckContext, obs: &mut Obs) -> Result<Verdict, Failure> {
        let (host, port) = split_target(target, self.tls.is_some()).map_err(|e| Failure::new(Reason::Connect, e))?;
        obs.parsed = true;
        let unavailable = |obs: &mut Obs, failure: Failure| {
            // What grpc-go reports for a connection that could not be made.
            obs.code = Some(UNAVAILABLE);
            failure
        };
        // The check phase is the call's, connection included (as a gRPC client dials lazily).
        let started = Instant::now();
        let socket = match connect::connect(
            &host,
            port,
            self.ip_protocol,
            self.ip_protocol_fallback,
            &cx.sockets,
            &mut obs.dialled,
        )
        .await
        {
            Ok(socket) => socket,
            Err(e) if obs.dialled.addr.is_none() => return Err(e.into()),
            Err(e) => {
                obs.called = true;
                obs.check = started.elapsed().saturating_sub(obs.dialled.resolve);
                return Err(unavailable(obs, e.into()));
            }
        };
        let started = started + obs.dialled.resolve;
        obs.called = true;
        let stream: Box<dyn Io> = match &self.tls {
            Some(config) => {
                let name = self.server_name.as_deref().unwrap_or(&host);
                match tls::handshake(config, name, self.verify, socket, &mut obs.tls_seen).await {
                    Ok(stream) => {
                        obs.tls_ok = true;
                        if stream.get_ref().1.alpn_protocol() != Some(b"h2".as_slice()) {
                            obs.check = started.elapsed();
                            return Err(unavailable(
                                obs,
                                Failure::new(Reason::Protocol, "the TLS server did not choose HTTP/2 (ALPN h2)"),
                            ));
                        }
                        Box::new(stream)
                    }
                    Err(e) => {
                        obs.check = started.elapsed();
                        return Err(unavailable(obs, e.into()));
                    }
                }
            }
            None => Box::new(socket),
        };
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let result = self.call(stream, &authority, obs).await;
        obs.check = started.elapsed();
        let (code, message) = match result {
            Ok(answer) => answer,
            Err(why) => return Err(unavailable(obs, Failure::new(Reason::Protocol, why))),
        };
        obs.code = Some(code);
        if code != 0 {
            let said = if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            };
            return Ok(Verdict::down(
                Reason::Status,
                format!("gRPC status {} ({code}){said}", code_name(code)),
            ));
        }
        let serving = obs.serving.unwrap_or(0);
        if serving == SERVING {
            return Ok(Verdict::up());
        }
        let (reason, name) = match serving {
            2 => (Reason::NotServing, "NOT_SERVING"),
            3 => (Reason::ServiceUnknown, "SERVICE_UNKNOWN"),
            _ => (Reason::ServingUnknown, "UNKNOWN"),
        };
        let level = if self.degraded.contains(&serving) {
            Level::Degraded
        } else {
            Level::Down
        };
        let service = if self.service.is_empty() {
            "the server".to_string()
        } else {
            format!("service `{}`", self.service)
        };
        Ok(Verdict::failed(level, reason, format!("{service} is {name}")))
    }

    /// The Check call on a new HTTP/2 connection over `stream`: the gRPC status and message;
    /// the serving status goes into `obs`. An error is a connection that broke the protocol.
    async fn call(&self, stream: Box<dyn Io>, authority: &str, obs: &mut Obs) -> Result<(i32, String), String> {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP/2: {e}"))?;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut request = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("{scheme}://{authority}/grpc.health.v1.Health/Check"))
            .version(http::Version::HTTP_2)
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .header(http::header::USER_AGENT, crate::transport::http::USER_AGENT);
        if let Some(deadline) = super::deadline() {
            request = request.header(
                "grpc-timeout",
                grpc_timeout(deadline.saturating_duration_since(Instant::now())),
            );
        }
        let mut request = request
            .body(Full::new(request_message(&self.service)))
            .map_err(|e| format!("the request: {e}"))?;
        for (name, value) in &self.metadata {
            request.headers_mut().append(name.clone(), value.clone());
        }
        tokio::pin!(conn);
        let exchange = async {
            let response = sender.send_request(request).await.map_err(|e| format!("HTTP/2: {e}"))?;
            let (parts, mut body) = response.into_parts();
            // A "trailers-only" answer carries the status in its headers.
            if let Some(code) = status_in(&parts.headers) {
                return Ok((code, message_in(&parts.headers)));
            }
            if parts.status != http::StatusCode::OK {
                return Ok((
                    code_of_http(parts.status.as_u16()),
                    format!("HTTP status {}", parts.status),
                ));
            }
            let grpc = parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/grpc"));
            if !grpc {
                return Ok((UNKNOWN, "the answer is not gRPC (its content-type)".to_string()));
            }
            let mut data = Vec::new();
            let mut trailers = None;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| format!("HTTP/2: {e}"))?;
                match frame.into_data() {
                    Ok(mut chunk) => {
                        if data.len() + chunk.remaining() > MAX_RESPONSE {
                            return Err(format!("an answer longer than {MAX_RESPONSE} bytes"));
                        }
                        data.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
                    }
                    Err(frame) => trailers = frame.into_trailers().ok(),
                }
            }
            let Some(trailers) = trailers else {
                return Ok((INTERNAL, "the answer ended without a gRPC status".to_string()));
            };
            let code = status_in(&trailers).unwrap_or(UNKNOWN);
            if code == 0 {
                match data.as_slice() {
                    [0, l0, l1, l2, l3, message @ ..]
                        if usize::try_from(u32::from_be_bytes([*l0, *l1, *l2, *l3])).ok() == Some(message.len()) =>
                    {
                        obs.serving = Some(serving_status(message).map_err(|e| format!("the answer: {e}"))?);
                    }
                    [1, ..] => return Err("a compressed answer to a call that asked for none".to_string()),
                    _ => return Err("the answer is not one gRPC message".to_string()),
                }
            }
            Ok((code, message_in(&trailers)))
        };
        tokio::pin!(exchange);
        let mut conn_done = false;
        loop {
            tokio::select! {
                result = &mut exchange => return result,
                ended = &mut conn, if !conn_done => {
                    conn_done = true;
                    if let Err(e) = ended {
                        return Err(format!("HTTP/2: {e}"));
                    }
                }
            }
        }
    }
}

fn status_in(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// `grpc-message`, percent-decoded (it is the server's text: made printable with the detail).
fn message_in(headers: &http::HeaderMap) -> String {
    let raw = headers.get("grpc-message").map(|v| v.as_bytes()).unwrap_or_default();
    let text = String::from_utf8_lossy(raw);
    url::form_urlencoded::parse(format!("m={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_as_blackbox_reads_them() {
        assert_eq!(split_target("127.0.0.1:50051", false), Ok(("127.0.0.1".into(), 50051)));
        assert_eq!(split_target("http://svc.local", false), Ok(("svc.local".into(), 80)));
        assert_eq!(split_target("https://svc.local", true), Ok(("svc.local".into(), 443)));
        assert_eq!(split_target("[::1]:9000", false), Ok(("::1".into(), 9000)));
        assert!(split_target(":9000", false).is_err());
        assert!(split_target("host:x", false).is_err());
    }

    #[test]
    fn messages_encode_and_decode() {
        assert_eq!(request_message("").as_ref(), [0, 0, 0, 0, 0]);
        assert_eq!(request_message("db").as_ref(), [0, 0, 0, 0, 4, 0x0a, 2, b'd', b'b']);
        let long = "x".repeat(200);
        assert_eq!(request_message(&long)[5..8], [0x0a, 0xc8, 0x01]);
        assert_eq!(serving_status(&[0x08, 0x01]), Ok(1));
        assert_eq!(serving_status(&[]), Ok(0), "proto3's default is UNKNOWN");
        // An unknown length-delimited field before the status is skipped.
        assert_eq!(serving_status(&[0x12, 0x01, 0xff, 0x08, 0x02]), Ok(2));
        assert!(serving_status(&[0x08]).is_err());
    }

    #[test]
    fn http_statuses_map_to_grpc_codes() {
        assert_eq!(code_of_http(404), 12);
        assert_eq!(code_of_http(503), UNAVAILABLE);
        assert_eq!(code_of_http(500), UNKNOWN);
        assert_eq!(code_name(14), "UNAVAILABLE");
        assert_eq!(code_name(99), "other");
    }

    #[test]
    fn grpc_messages_are_percent_decoded() {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-message", HeaderValue::from_static("unknown%20service a+b"));
        assert_eq!(message_in(&headers), "unknown service a+b");
    }
}
