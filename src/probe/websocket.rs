//! The `websocket` kind: the opening handshake (HTTP/1.1 `Upgrade`, status 101,
//! `Sec-WebSocket-Accept` checked) with headers and a subprotocol, over TLS for `wss://`; then an
//! optional exchange (send a text message, wait for a message matching `expect`) and a close
//! handshake. Framing and the handshake's checks are tungstenite's; the connection, TLS and
//! timings are vigil's own, as for every kind.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use http::header::{HeaderName, HeaderValue};
use rustls::ClientConfig;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use url::Url;

use super::families::{Address, Certificates, Emit, Reached, Seen, Shook, Tls, Unit};
use super::{Built, CheckContext, Failure, Family, ProbeKind, Publish, Reason, Role, Verdict};
use crate::secret::SecretSource;
use crate::spec::BuildContext;
use crate::spec::values::Pattern;
use crate::transport::connect::{self, Dialled, IpProtocol};
use crate::transport::tls::{self, TlsSeen, TlsSpec};

/// Config of a `websocket` probe.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// `ws://` or `wss://` URL (a module gets it from `/probe?target=`).
    pub url: Option<String>,
    /// Request headers of the handshake; a value may be `{file: PATH}`.
    #[serde(default)]
    pub headers: BTreeMap<String, SecretSource>,
    /// The subprotocol asked for (`Sec-WebSocket-Protocol`); the server must choose it.
    pub subprotocol: Option<String>,
    /// A text message sent once the connection is open.
    pub send: Option<String>,
    /// A regex a message from the server must match (text or binary), before it closes or the
    /// timeout.
    pub expect: Option<Pattern>,
    /// TLS settings for `wss://`.
    #[serde(default)]
    pub tls_config: TlsSpec,
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

/// The largest message read.
const MAX_MESSAGE: usize = 1 << 20;

/// A `websocket` probe's compiled settings.
#[derive(Debug)]
pub struct Websocket {
    headers: Vec<(HeaderName, HeaderValue)>,
    subprotocol: Option<String>,
    send: Option<String>,
    expect: Option<Pattern>,
    tls: Arc<ClientConfig>,
    verify: bool,
    server_name: Option<String>,
    ip_protocol: IpProtocol,
    ip_protocol_fallback: bool,
}

/// What one `websocket` attempt observed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Obs {
    /// The target parsed as a ws:// or wss:// URL (its name was then resolved).
    pub parsed: bool,
    /// The connect.
    pub dialled: Dialled,
    /// What the TLS handshake showed.
    pub tls_seen: TlsSeen,
    /// Whether it succeeded.
    pub tls_ok: bool,
    /// Time in the TLS handshake.
    pub tls: Duration,
    /// Time in the opening handshake (request sent to the answer's head).
    pub handshake: Duration,
    /// The handshake's HTTP status (101 when it upgraded).
    pub status: Option<u16>,
    /// Time from the open connection to the close (the exchange and the close handshake).
    pub exchange: Duration,
    /// Messages received.
    pub messages: u32,
    /// The server answered the close handshake.
    pub closed_cleanly: bool,
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

fn phases(seen: &Seen<'_, Websocket>, out: &mut dyn Emit) {
    let obs = seen.obs;
    let resolve = super::families::lookup_time(&obs.dialled);
    for (phase, took) in [
        ("resolve", resolve),
        ("connect", obs.dialled.connect),
        ("tls", obs.tls),
        ("handshake", obs.handshake),
        ("exchange", obs.exchange),
    ] {
        out.gauge(&[("phase", phase)], took.as_secs_f64());
    }
}

impl ProbeKind for Websocket {
    const NAME: &'static str = "websocket";
    const REASONS: &'static [Reason] = &[
        Reason::Dns,
        Reason::Connect,
        Reason::Tls,
        Reason::Protocol,
        Reason::Status,
        Reason::Expect,
    ];
    const FAMILIES: &'static [Family<Self>] = &[
        Certificates::<Self>::EXPIRY,
        Family {
            name: "vigil_probe_websocket_status_code",
            help: "HTTP status of the last opening handshake (101 when it upgraded).",
            unit: None,
            publish: Publish::Metrics,
            emit: |seen, out| {
                if let (Some(status), true) = (seen.obs.status, seen.ran) {
                    out.gauge(&[], f64::from(status));
                }
            },
        },
        Family {
            name: "probe_websocket_duration",
            help: "Duration of the WebSocket probe by phase",
            unit: Some(Unit::Seconds),
            publish: Publish::Probe,
            emit: phases,
        },
        Family {
            name: "probe_websocket_status_code",
            help: "HTTP status of the opening handshake (101 when it upgraded)",
            unit: None,
            publish: Publish::Probe,
            emit: |seen, out| out.gauge(&[], f64::from(seen.obs.status.unwrap_or(0))),
        },
        Family {
            name: "probe_websocket_messages_received",
            help: "Messages received from the server",
            unit: None,
            publish: Publish::Probe,
            emit: |seen, out| out.gauge(&[], f64::from(seen.obs.messages)),
        },
        Family {
            name: "probe_websocket_closed_cleanly",
            help: "Whether the server answered the close handshake",
            unit: None,
            publish: Publish::Probe,
            emit: |seen, out| out.gauge(&[], f64::from(u8::from(seen.obs.closed_cleanly))),
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

    fn build(spec: Spec, ctx: &mut BuildContext, path: &str, role: Role) -> Option<Built<Self>> {
        let before = ctx.error_count();
        match (role, &spec.url) {
            (Role::Scheduled, None) => ctx.error(path, "missing key `url`"),
            (Role::Scheduled, Some(url)) => {
                if let Err(e) = parse(url) {
                    ctx.error(format!("{path}.url"), e);
                }
            }
            (Role::Module, Some(_)) => ctx.error(
                format!("{path}.url"),
                "a /probe module takes its URL from the request; remove `url`",
            ),
            (Role::Module, None) => {}
        }
        let headers = ctx.headers(&format!("{path}.headers"), &spec.headers, |name| {
            (name.starts_with("sec-websocket-") || matches!(name, "upgrade" | "connection" | "host"))
                .then_some("the WebSocket handshake itself")
        });
        if let Some(protocol) = &spec.subprotocol
            && (protocol.is_empty() || HeaderValue::from_str(protocol).is_err() || protocol.contains(','))
        {
            ctx.error(
                format!("{path}.subprotocol"),
                format!("`{protocol}` is not one subprotocol name"),
            );
        }
        let tls = tls::client_config(&spec.tls_config, &[b"http/1.1"], ctx, &format!("{path}.tls_config"));
        if ctx.error_count() > before {
            return None;
        }
        Some(Built {
            settings: Websocket {
                headers,
                subprotocol: spec.subprotocol,
                send: spec.send,
                expect: spec.expect,
                tls: tls?,
                verify: spec.tls_config.verify,
                server_name: spec.tls_config.server_name,
                ip_protocol: spec.ip_protocol,
                ip_protocol_fallback: spec.ip_protocol_fallback,
            },
            target: match role {
                Role::Scheduled => spec.url,
                Role::Module => None,
            },
            freshness: None,
        })
    }

    async fn check(&self, target: &str, cx: &CheckContext, obs: &mut Obs) -> Verdict {
        match self.attempt(target, cx, obs).await {
            Ok(()) => Verdict::up(),
            Err(failure) => failure.into(),
        }
    }

    fn keep(kept: &mut Kept, obs: &Obs) {
        kept.cert.keep(&obs.tls_seen);
    }
}

/// A `ws://` or `wss://` URL with a host.
fn parse(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "ws" | "wss") {
        return Err(format!("`{}://` is not ws:// or wss://", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_string());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL are not sent; use headers (Authorization)".to_string());
    }
    Ok(url)
}

/// A connection, before or after TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

fn handshake_failure(e: WsError, obs: &mut Obs) -> Failure {
    match e {
        WsError::Http(response) => {
            let status = response.status();
            obs.status = Some(status.as_u16());
            Failure::new(
                Reason::Status,
                format!("the handshake was answered {status}, not 101 Switching Protocols"),
            )
        }
        WsError::Protocol(ProtocolError::SecWebSocketAcceptKeyMismatch) => {
            obs.status = Some(101);
            Failure::new(
                Reason::Protocol,
                "Sec-WebSocket-Accept does not answer the key sent (not a WebSocket server, or a proxy in the way)",
            )
        }
        WsError::Protocol(ProtocolError::SecWebSocketSubProtocolError(e)) => {
            obs.status = Some(101);
            Failure::new(Reason::Protocol, format!("subprotocol: {e}"))
        }
        other => Failure::new(Reason::Protocol, format!("the handshake: {other}")),
    }
}

impl Websocket {
    async fn attempt(&self, target: &str, cx: &CheckContext, obs: &mut Obs) -> Result<(), Failure> {
        let url = parse(target).map_err(|e| Failure::new(Reason::Connect, e))?;
        obs.parsed = true;
        let host = url.host_str().unwrap_or_default().to_string();
        let port = url.port().unwrap_or(if url.scheme() == "wss" { 443 } else { 80 });
        let socket = connect::connect(
            &host,
            port,
            self.ip_protocol,
            self.ip_protocol_fallback,
            &cx.sockets,
            &mut obs.dialled,
        )
        .await?;
        let stream: Box<dyn Io> = if url.scheme() == "wss" {
            let started = Instant::now();
            let name = self.server_name.as_deref().unwrap_or(&host);
            let shaken = tls::handshake(&self.tls, name, self.verify, socket, &mut obs.tls_seen).await;
            obs.tls = started.elapsed();
            obs.tls_ok = shaken.is_ok();
            Box::new(shaken?)
        } else {
            Box::new(socket)
        };
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| Failure::new(Reason::Protocol, format!("the handshake request: {e}")))?;
        for (name, value) in &self.headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        if let Some(protocol) = &self.subprotocol
            && let Ok(value) = HeaderValue::from_str(protocol)
        {
            request.headers_mut().insert("sec-websocket-protocol", value);
        }
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let started = Instant::now();
        let shaken = tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await;
        obs.handshake = started.elapsed();
        let (mut socket, response) = shaken.map_err(|e| handshake_failure(e, obs))?;
        obs.status = Some(response.status().as_u16());
        if let Some(wanted) = &self.subprotocol {
            let chosen = response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok());
            if chosen != Some(wanted.as_str()) {
                return Err(Failure::new(
                    Reason::Protocol,
                    format!("the server did not choose the subprotocol `{wanted}`"),
                ));
            }
        }
        let opened = Instant::now();
        let exchanged = self.exchange(&mut socket, obs).await;
        // The close handshake, also after a failed exchange: a probe leaves no half-open
        // connection behind.
        let closed = async {
            socket.close(None).await.ok()?;
            // Clean: the server's Close frame came back (whether it then ends TLS with a
            // close_notify or just drops the connection).
            let mut answered = false;
            while let Some(message) = socket.next().await {
                match message {
                    Ok(Message::Close(_)) => answered = true,
                    Ok(_) => {}
                    Err(WsError::ConnectionClosed) => return Some(()),
                    Err(_) => break,
                }
            }
            answered.then_some(())
        };
        let closed = match super::wait_until() {
            Some(until) => tokio::time::timeout_at(until.into(), closed).await.ok().flatten(),
            None => closed.await,
        };
        obs.closed_cleanly = closed.is_some();
        obs.exchange = opened.elapsed();
        exchanged
    }

    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        socket: &mut tokio_tungstenite::WebSocketStream<S>,
        obs: &mut Obs,
    ) -> Result<(), Failure> {
        if let Some(text) = &self.send {
            socket
                .send(Message::text(text.clone()))
                .await
                .map_err(|e| Failure::new(Reason::Protocol, format!("send: {e}")))?;
        }
        let Some(pattern) = &self.expect else {
            return Ok(());
        };
        loop {
            let message = match socket.next().await {
                None => {
                    return Err(Failure::new(
                        Reason::Expect,
                        format!("the connection ended before a message matched /{}/", pattern.as_str()),
                    ));
                }
                Some(Err(e)) => {
                    return Err(Failure::new(
                        Reason::Expect,
                        format!("no message matched /{}/ before: {e}", pattern.as_str()),
                    ));
                }
                Some(Ok(message)) => message,
            };
            match message {
                Message::Text(text) => {
                    obs.messages += 1;
                    if pattern.is_match(text.as_bytes()) {
                        return Ok(());
                    }
                }
                Message::Binary(data) => {
                    obs.messages += 1;
                    if pattern.is_match(&data) {
                        return Ok(());
                    }
                }
                Message::Close(frame) => {
                    let why = frame.map(|f| format!(" ({} {})", f.code, f.reason)).unwrap_or_default();
                    return Err(Failure::new(
                        Reason::Expect,
                        format!("the server closed{why} before a message matched /{}/", pattern.as_str()),
                    ));
                }
                // Pings are answered by tungstenite on the next read or write.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_ws_or_wss_with_a_host() {
        assert!(parse("ws://127.0.0.1:8080/socket").is_ok());
        assert!(parse("wss://example.org/").is_ok());
        assert!(parse("http://example.org/").is_err());
        assert!(parse("ws://user:pass@example.org/").is_err());
        assert!(parse("socket").is_err());
    }
}
