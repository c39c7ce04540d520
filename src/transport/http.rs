//! The HTTP/1.1 client: one request on a fresh connection per hop, redirects followed as the
//! [`Client`] says (credentials kept to their origin), the body streamed through an optional
//! decoder into a [`BodySink`] that counts it, keeps what assertions need and enforces the
//! limit, and an [`Exchange`] that records everything learnt (phase times summed over hops, the
//! final response's head, TLS, addresses), also when the request fails.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use url::Url;

use super::connect::{self, Dialled, IpProtocol, Sockets};
use super::tls::{self, TlsSeen};
use super::{ErrorKind, TransportError};
use crate::secret::SecretNames;

/// How requests reach their server, built at load.
#[derive(Clone, Debug)]
pub struct Client {
    /// TLS client settings for `https` URLs.
    pub tls: Arc<ClientConfig>,
    /// Whether `tls` verifies the server's chain.
    pub verify: bool,
    /// Name to verify (and send as SNI) instead of the URL's host.
    pub server_name: Option<String>,
    /// IP version tried first.
    pub ip_protocol: IpProtocol,
    /// Whether the other IP version is tried too.
    pub ip_protocol_fallback: bool,
    /// Follow redirects.
    pub follow_redirects: bool,
    /// At most this many redirects are followed; the next one is the final response.
    pub max_redirects: u32,
    /// Which headers hold secrets (never sent to another origin) and how targets are shown.
    pub secret_names: SecretNames,
    /// The `User-Agent` sent.
    pub user_agent: HeaderValue,
    /// Speak HTTP/2 with a TLS server that chooses it (`tls` must offer `h2` by ALPN).
    pub http2: bool,
    /// Speak HTTP/2 from the first byte to `http://` URLs (prior knowledge, h2c).
    pub h2c: bool,
}

/// The ALPN protocols a client offers: `h2` first when it may speak HTTP/2.
pub fn alpn(http2: bool) -> &'static [&'static [u8]] {
    if http2 { &[b"h2", b"http/1.1"] } else { &[b"http/1.1"] }
}

/// vigil's `User-Agent`.
pub const USER_AGENT: &str = concat!("vigil/", env!("CARGO_PKG_VERSION"));

impl Client {
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
pub fn parse_url(text: &str, names: &SecretNames) -> Result<Url, TransportError> {
    let shown = || names.redact_text(text);
    let bad = |why: String| TransportError::new(ErrorKind::Connect, why);
    if let Some(problem) = go_url_problem(text) {
        return Err(bad(format!("`{}` is not a URL: {problem}", shown())));
    }
    let url = Url::parse(text).map_err(|e| bad(format!("`{}` is not a URL: {e}", shown())))?;
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(bad(format!("unsupported scheme `{other}` (use http or https)"))),
    }
    // `http:///x` parses (the WHATWG rules skip the empty host) but names no host.
    let after = text.split_once("://").map_or("", |(_, rest)| rest);
    if !url.has_host() || after.is_empty() || after.starts_with('/') {
        return Err(bad(format!("`{}` is not a URL: it names no host", shown())));
    }
    Ok(url)
}

/// What Go's `url.Parse` refuses that the WHATWG rules of the `url` crate repair: control
/// characters anywhere, and `%` not followed by two hex digits in the userinfo, the path or the
/// fragment (blackbox_exporter fails such a target before resolving it).
fn go_url_problem(text: &str) -> Option<&'static str> {
    if text.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Some("invalid control character in URL");
    }
    let bad_escape = |part: &str| {
        let bytes = part.as_bytes();
        bytes.iter().enumerate().any(|(i, &b)| {
            b == b'%'
                && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        })
    };
    let (rest, fragment) = text.split_once('#').unwrap_or((text, ""));
    let after_scheme = rest.split_once("://").map_or(rest, |(_, r)| r);
    let (authority, path) = match after_scheme.find('/') {
        Some(i) => after_scheme.split_at(i),
        None => (after_scheme, ""),
    };
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let authority = authority.split_once('?').map_or(authority, |(a, _)| a);
    let userinfo = authority.rsplit_once('@').map_or("", |(u, _)| u);
    if bad_escape(userinfo) {
        return Some("invalid userinfo");
    }
    if bad_escape(path) || bad_escape(fragment) {
        return Some("invalid URL escape");
    }
    None
}

/// The `Authorization` header for basic auth, marked sensitive.
pub fn basic_auth(username: &str, password: &str) -> Option<HeaderValue> {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let mut value = HeaderValue::from_str(&format!("Basic {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The credentials written in a URL (`http://user:pass@host/`), percent-decoded, as basic
/// auth (as curl and browsers send them), and the URL without them.
pub fn take_userinfo(mut url: Url) -> (Url, Option<HeaderValue>) {
    if url.username().is_empty() && url.password().is_none() {
        return (url, None);
    }
    let decode = |s: &str| percent_encoding_decode(s);
    let header = basic_auth(&decode(url.username()), &decode(url.password().unwrap_or_default()));
    let _ = url.set_username("");
    let _ = url.set_password(None);
    (url, header)
}

fn percent_encoding_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One request to send.
pub struct Outgoing<'a> {
    /// Method.
    pub method: Method,
    /// Where (without credentials: see [`take_userinfo`]).
    pub url: Url,
    /// Extra headers (Host, User-Agent and Connection are set already).
    pub headers: &'a [(HeaderName, HeaderValue)],
    /// Basic auth from the target URL: sent to the URL's origin only, before any other
    /// `Authorization` of `headers`.
    pub userinfo: Option<HeaderValue>,
    /// Body (may be empty).
    pub body: Bytes,
    /// Sees the final body as it streams, decoded (for assertions that need more of it than is
    /// kept).
    pub watch: Option<&'a mut (dyn BodyWatch + Send)>,
}

impl std::fmt::Debug for Outgoing<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("method", &self.method)
            .field("host", &self.url.host_str())
            .field("watch", &self.watch.is_some())
            .finish_non_exhaustive()
    }
}

/// Something that reads a body as it streams past, chunk by chunk, decoded.
pub trait BodyWatch {
    /// The next piece.
    fn chunk(&mut self, data: &[u8]);
    /// The body ended (read whole).
    fn end(&mut self);
}

/// How a response body is decoded before it is counted and matched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Decode {
    /// As the server says in `Content-Encoding` (gzip, deflate); otherwise as is.
    #[default]
    AsDeclared,
    /// Always with this encoding, whatever the server says (blackbox's `compression`).
    Always(Encoding),
}

/// A content encoding vigil decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// gzip.
    Gzip,
    /// zlib-wrapped deflate (what `Content-Encoding: deflate` means).
    Zlib,
    /// raw deflate (RFC 1951; what blackbox's `compression: deflate` means).
    RawDeflate,
    /// As is.
    Identity,
}

/// What happens to the final response's body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BodyPolicy {
    /// More (decoded) bytes than this fail with [`ErrorKind::Body`]; `None`: no limit.
    pub limit: Option<u64>,
    /// Keep at most this many bytes for assertions (0: keep nothing; the rest is read and
    /// counted, never kept).
    pub keep: usize,
    /// How it is decoded.
    pub decode: Decode,
}

/// The head of the final response.
#[derive(Clone, Debug, PartialEq)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// HTTP version: 1 (1.0), 1.1 or 2.
    pub version: f64,
    /// Its `Content-Length`, or -1 when the body is chunked or delimited by the close (0 for
    /// 1xx, 204 and 304), as Go's `Response.ContentLength` has it.
    pub content_length: i64,
    /// Headers.
    pub headers: HeaderMap,
}

/// Everything a fetch learnt, whether it succeeded or not. It is filled in as things are
/// learnt, so when the caller gives up on a fetch (its timeout), what it holds is what was seen
/// until then; [`Exchange::interrupted`] then closes the open phase.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exchange {
    /// The first hop's connect (lookup time, the chosen address), written as it happens.
    pub dialled: Dialled,
    /// Redirect responses acted on: followed, or refused (not following, or past the limit:
    /// that one is then the final response), as Go's client counts them.
    pub redirects: u32,
    /// Time resolving names, summed over hops.
    pub resolve: Duration,
    /// Time connecting, summed over the hops that got their connection (with TLS, when the
    /// handshake succeeded too).
    pub connect: Duration,
    /// Time in TLS handshakes, summed over the hops whose handshake succeeded.
    pub tls: Duration,
    /// From each request sent to its response's head (or to the error that ended it).
    pub processing: Duration,
    /// Reading the final body.
    pub transfer: Duration,
    /// The address of the last connection.
    pub addr: Option<SocketAddr>,
    /// Whether the last hop's connection is over TLS (its handshake succeeded).
    pub tls_used: bool,
    /// What the last TLS handshake showed (also when it failed).
    pub tls_seen: TlsSeen,
    /// The final response's head (`None`: none was parsed).
    pub head: Option<Head>,
    /// The final response is a redirect that was not followed: its body was closed unread.
    pub body_closed: bool,
    /// A redirect pointed back to a URL already requested.
    pub looped: bool,
    /// Bytes of the final body delivered (decoded; at most the limit).
    pub body_bytes: u64,
    /// The start of the final body, as kept for assertions ([`BodyPolicy::keep`]).
    pub body: Vec<u8>,
    /// Whether the body was read to its end (within the limit).
    pub body_complete: bool,
    /// When the final body started to arrive, while it is being read.
    body_started: Option<Instant>,
}

impl Exchange {
    /// Whether a connection was tried (the first hop's name resolved).
    pub fn attempted(&self) -> bool {
        self.dialled.addr.is_some()
    }

    /// The final response's status, 0 when none was parsed.
    pub fn status(&self) -> u16 {
        self.head.as_ref().map_or(0, |h| h.status)
    }

    /// The fetch was given up while it ran: the body being read counts its time so far.
    pub fn interrupted(&mut self) {
        if let Some(started) = self.body_started.take() {
            self.transfer += started.elapsed();
        }
    }

    /// Forgets what the previous hop's response said.
    fn next_hop(&mut self) {
        self.head = None;
        self.tls_used = false;
        self.tls_seen = TlsSeen::default();
        self.body_closed = false;
        self.body_bytes = 0;
        self.body.clear();
        self.body_complete = false;
        self.body_started = None;
    }
}

/// Sends `outgoing` through `client`, following redirects, and reads the final body as
/// `policy` says. `exchange` records what was learnt, as it is learnt; each connection takes
/// its place in `sockets`.
pub async fn fetch(
    client: &Client,
    outgoing: Outgoing<'_>,
    policy: BodyPolicy,
    sockets: &Sockets,
    exchange: &mut Exchange,
) -> Result<(), TransportError> {
    let Outgoing {
        mut method,
        mut url,
        headers: extra_headers,
        userinfo,
        body: request_body,
        mut watch,
    } = outgoing;
    let mut send_body = true;
    let first = url.clone();
    let mut visited: Vec<Url> = Vec::new();
    let mut hop = 0usize;
    loop {
        exchange.next_hop();
        let host = url
            .host_str()
            .ok_or_else(|| TransportError::new(ErrorKind::Connect, "URL has no host"))?
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        // The first hop's connect is written where it is published, as it happens: an attempt
        // dropped at its timeout still tells which address it was connecting to.
        let mut later = Dialled::default();
        let dialled = if hop == 0 { &mut exchange.dialled } else { &mut later };
        let socket = connect::connect(
            &host,
            port,
            client.ip_protocol,
            client.ip_protocol_fallback,
            sockets,
            dialled,
        )
        .await;
        let dialled = *dialled;
        hop += 1;
        exchange.resolve += dialled.resolve;
        exchange.addr = dialled.addr.or(exchange.addr);
        let socket = socket?;

        let same_origin = origin(&url) == origin(&first);
        let request = |h2: bool| {
            build_request(
                client,
                &method,
                &url,
                &host,
                extra_headers,
                userinfo.as_ref(),
                same_origin,
                h2,
                || {
                    if send_body { request_body.clone() } else { Bytes::new() }
                },
            )
        };
        if url.scheme() == "https" {
            let started = Instant::now();
            let name = client.server_name.as_deref().unwrap_or(&host);
            let shaken = tls::handshake(&client.tls, name, client.verify, socket, &mut exchange.tls_seen).await;
            let took = started.elapsed();
            let stream = shaken?;
            // A hop counts its connect and handshake once it has its connection, as Go's
            // httptrace does for blackbox_exporter.
            exchange.connect += dialled.connect;
            exchange.tls += took;
            exchange.tls_used = true;
            let h2 = client.http2 && stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
            let watch = watch.as_mut().map(|w| &mut **w as &mut (dyn BodyWatch + Send));
            exchange_over(stream, h2, request(h2)?, policy, watch, exchange).await?;
        } else {
            exchange.connect += dialled.connect;
            let watch = watch.as_mut().map(|w| &mut **w as &mut (dyn BodyWatch + Send));
            exchange_over(socket, client.h2c, request(client.h2c)?, policy, watch, exchange).await?;
        }
        let Some(head) = &exchange.head else {
            return Err(TransportError::new(ErrorKind::Protocol, "no response"));
        };
        // A redirect that cannot be followed leaves no response, as with Go's client.
        let next = match redirect_target(&url, head, &client.secret_names) {
            Ok(Some(next)) => next,
            Ok(None) => return Ok(()),
            Err(e) => {
                exchange.head = None;
                return Err(e);
            }
        };
        let status = head.status;
        visited.push(url.clone());
        exchange.looped |= visited.contains(&next);
        exchange.redirects += 1;
        if !client.follow_redirects || exchange.redirects > client.max_redirects {
            // Not followed: this redirect is the final response (as Go's client returns it),
            // its body closed unread.
            exchange.body_closed = true;
            exchange.body_complete = true;
            return Ok(());
        }
        // Like Go (and browsers): 301, 302 and 303 continue as GET without a body, but HEAD.
        if matches!(status, 301..=303) && method != Method::GET && method != Method::HEAD {
            method = Method::GET;
            send_body = false;
        }
        if !matches!(next.scheme(), "http" | "https") {
            exchange.head = None;
            return Err(TransportError::new(
                ErrorKind::Redirect,
                format!("redirect to unsupported scheme `{}`", next.scheme()),
            ));
        }
        url = next;
    }
}

/// The request of one hop.
#[allow(clippy::too_many_arguments)]
fn build_request(
    client: &Client,
    method: &Method,
    url: &Url,
    host: &str,
    extra_headers: &[(HeaderName, HeaderValue)],
    userinfo: Option<&HeaderValue>,
    same_origin: bool,
    h2: bool,
    body: impl FnOnce() -> Bytes,
) -> Result<Request<Full<Bytes>>, TransportError> {
    let protocol = |why: &str| TransportError::new(ErrorKind::Protocol, why.to_string());
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let mut host_header = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => host.to_string(),
    };
    // A Host header of the probe's own names the virtual host, in HTTP/2's `:authority` too.
    if let Some((_, value)) = extra_headers.iter().find(|(n, _)| n == header::HOST)
        && let Ok(value) = value.to_str()
    {
        host_header = value.to_string();
    }
    let uri = if h2 {
        // HTTP/2 carries scheme and authority as pseudo-headers, from an absolute URI.
        format!("{}://{host_header}{path}", url.scheme())
    } else {
        path
    };
    let mut request = Request::builder().method(method.clone()).uri(uri);
    if h2 {
        request = request.version(http::Version::HTTP_2);
    }
    let headers = request.headers_mut().ok_or_else(|| protocol("invalid request"))?;
    if !h2 {
        headers.insert(
            header::HOST,
            HeaderValue::from_str(&host_header).map_err(|_| protocol("invalid host"))?,
        );
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    headers.insert(header::USER_AGENT, client.user_agent.clone());
    // Credentials go only to the origin the probe was written for (scheme, host and port),
    // never to a redirect target elsewhere, nor from https down to http.
    for (name, value) in extra_headers {
        // HTTP/2 has no Host or connection-specific headers (the authority is in the URI).
        if h2 && (name == header::HOST || name == header::CONNECTION) {
            continue;
        }
        if same_origin || !client.is_credential(name, value) {
            headers.insert(name.clone(), value.clone());
        }
    }
    // Credentials in the URL come first, as curl, browsers and Go send them.
    if same_origin && let Some(auth) = userinfo {
        headers.insert(header::AUTHORIZATION, auth.clone());
    }
    let body = body();
    if !body.is_empty() {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    request.body(Full::new(body)).map_err(|e| protocol(&e.to_string()))
}

/// Whether a response is a redirect Go's client acts on: a 301, 302, 303, 307 or 308 with a
/// `Location`. Any other 3xx is a final response.
fn is_redirect(status: u16, headers: &HeaderMap) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308) && headers.contains_key(header::LOCATION)
}

/// Where a redirect response points, when it is one that can be followed; `None` for any
/// other response.
fn redirect_target(url: &Url, head: &Head, names: &SecretNames) -> Result<Option<Url>, TransportError> {
    if !is_redirect(head.status, &head.headers) {
        return Ok(None);
    }
    let location = head
        .headers
        .get(header::LOCATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    url.join(&location).map(Some).map_err(|e| {
        let shown = names.redact_target(&location);
        TransportError::new(ErrorKind::Redirect, format!("bad Location `{shown}`: {e}"))
    })
}

/// Go's `Response.ContentLength`.
fn content_length(method_is_head: bool, status: u16, headers: &HeaderMap) -> i64 {
    if status < 200 || status == 204 || status == 304 {
        return 0;
    }
    let chunked = headers
        .get(header::TRANSFER_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked && !method_is_head {
        return -1;
    }
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(-1)
}

/// The encoding a body is decoded from.
fn encoding_of(decode: Decode, headers: &HeaderMap) -> Encoding {
    match decode {
        Decode::Always(encoding) => encoding,
        Decode::AsDeclared => match headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            Some("gzip" | "x-gzip") => Encoding::Gzip,
            Some("deflate") => Encoding::Zlib,
            _ => Encoding::Identity,
        },
    }
}

/// Sends `request` on a new HTTP/1.1 connection over `stream` (HTTP/2 with `h2`) and reads the
/// response into `exchange`: its head as soon as it arrives, then (unless it is a redirect) its
/// body as `policy` says.
async fn exchange_over<S>(
    stream: S,
    h2: bool,
    request: Request<Full<Bytes>>,
    policy: BodyPolicy,
    watch: Option<&mut (dyn BodyWatch + Send)>,
    exchange: &mut Exchange,
) -> Result<(), TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let protocol = |e: hyper::Error| TransportError::new(ErrorKind::Protocol, format!("HTTP: {e}"));
    let is_head = request.method() == Method::HEAD;
    type Driving = std::pin::Pin<Box<dyn Future<Output = Result<(), hyper::Error>> + Send>>;
    let (mut sender, mut conn): (Sender, Driving) = if h2 {
        let (sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(protocol)?;
        (Sender::H2(sender), Box::pin(conn))
    } else {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(protocol)?;
        (Sender::H1(sender), Box::pin(conn))
    };
    let sent = Instant::now();
    let mut conn_done = false;
    let response = {
        let send = sender.send(request);
        tokio::pin!(send);
        loop {
            tokio::select! {
                result = &mut send => break result,
                ended = &mut conn, if !conn_done => {
                    conn_done = true;
                    // A connection that failed leaves no response to wait for (an HTTP/2
                    // request would wait for ever on a connection the server closed).
                    if let Err(e) = ended {
                        break Err(e);
                    }
                    if h2 {
                        return Err(TransportError::new(
                            ErrorKind::Protocol,
                            "HTTP/2: the server closed the connection before it answered",
                        ));
                    }
                }
            }
        }
    };
    let head_at = Instant::now();
    exchange.processing += head_at - sent;
    let (parts, mut body) = response.map_err(protocol)?.into_parts();
    let status = parts.status.as_u16();
    let encoding = encoding_of(policy.decode, &parts.headers);
    let redirect = is_redirect(status, &parts.headers);
    exchange.head = Some(Head {
        status,
        version: match parts.version {
            http::Version::HTTP_10 => 1.0,
            http::Version::HTTP_2 => 2.0,
            _ => 1.1,
        },
        content_length: content_length(is_head, status, &parts.headers),
        headers: parts.headers,
    });
    if redirect {
        // Followed, or the final response with its body closed unread: its body says nothing.
        exchange.transfer += head_at.elapsed();
        return Ok(());
    }
    exchange.body_started = Some(head_at);
    let mut sink = Decoder::new(
        encoding,
        BodySink {
            limit: policy.limit,
            keep: policy.keep,
            kept: Vec::new(),
            count: 0,
            watch,
        },
    );
    let outcome = async {
        loop {
            let frame = tokio::select! {
                frame = body.frame() => frame,
                _ = &mut conn, if !conn_done => { conn_done = true; continue; }
            };
            let Some(frame) = frame else { break };
            let frame = frame.map_err(protocol)?;
            if let Ok(data) = frame.into_data() {
                let written = sink.write(&data);
                exchange.body_bytes = sink.sink().count;
                written?;
            }
        }
        sink.finish()
    }
    .await;
    exchange.body_started = None;
    exchange.transfer += head_at.elapsed();
    let (count, kept) = sink.into_parts();
    exchange.body_bytes = count;
    exchange.body = kept;
    exchange.body_complete = outcome.is_ok();
    outcome
}

/// The sending half of a connection, of either version.
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> impl Future<Output = Result<hyper::Response<hyper::body::Incoming>, hyper::Error>> + use<> {
        match self {
            Sender::H1(s) => futures::future::Either::Left(s.send_request(request)),
            Sender::H2(s) => futures::future::Either::Right(s.send_request(request)),
        }
    }
}

/// Where a decoded body goes: counted, its start kept, shown to the watch, its length held to
/// the limit.
pub struct BodySink<'w> {
    limit: Option<u64>,
    keep: usize,
    kept: Vec<u8>,
    count: u64,
    watch: Option<&'w mut (dyn BodyWatch + Send)>,
}

impl Write for BodySink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let total = self.count + buf.len() as u64;
        let (within, result) = match self.limit {
            Some(limit) if total > limit => {
                let room = usize::try_from(limit - self.count).unwrap_or(usize::MAX);
                (
                    &buf[..room.min(buf.len())],
                    Err(std::io::Error::other(LimitExceeded(limit))),
                )
            }
            _ => (buf, Ok(buf.len())),
        };
        let room = self.keep.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&within[..within.len().min(room)]);
        if let Some(watch) = self.watch.as_deref_mut() {
            watch.chunk(within);
        }
        self.count += within.len() as u64;
        result
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
struct LimitExceeded(u64);

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "body larger than the limit of {} bytes", self.0)
    }
}

impl std::error::Error for LimitExceeded {}

/// A body on its way to the sink, through a decoder when it is encoded.
enum Decoder<'w> {
    Identity(BodySink<'w>),
    Gzip(flate2::write::GzDecoder<BodySink<'w>>),
    Zlib(flate2::write::ZlibDecoder<BodySink<'w>>),
    Raw(flate2::write::DeflateDecoder<BodySink<'w>>),
}

impl<'w> Decoder<'w> {
    fn new(encoding: Encoding, sink: BodySink<'w>) -> Decoder<'w> {
        match encoding {
            Encoding::Identity => Decoder::Identity(sink),
            Encoding::Gzip => Decoder::Gzip(flate2::write::GzDecoder::new(sink)),
            Encoding::Zlib => Decoder::Zlib(flate2::write::ZlibDecoder::new(sink)),
            Encoding::RawDeflate => Decoder::Raw(flate2::write::DeflateDecoder::new(sink)),
        }
    }

    fn write(&mut self, data: &[u8]) -> Result<(), TransportError> {
        let written = match self {
            Decoder::Identity(sink) => sink.write_all(data),
            Decoder::Gzip(d) => d.write_all(data),
            Decoder::Zlib(d) => d.write_all(data),
            Decoder::Raw(d) => d.write_all(data),
        };
        written.map_err(body_error)
    }

    fn finish(&mut self) -> Result<(), TransportError> {
        let finished = match self {
            Decoder::Identity(_) => Ok(()),
            Decoder::Gzip(d) => d.try_finish(),
            Decoder::Zlib(d) => d.try_finish(),
            Decoder::Raw(d) => d.try_finish(),
        };
        finished.map_err(body_error)?;
        if let Some(watch) = self.sink_mut().watch.as_deref_mut() {
            watch.end();
        }
        Ok(())
    }

    fn sink_mut(&mut self) -> &mut BodySink<'w> {
        match self {
            Decoder::Identity(sink) => sink,
            Decoder::Gzip(d) => d.get_mut(),
            Decoder::Zlib(d) => d.get_mut(),
            Decoder::Raw(d) => d.get_mut(),
        }
    }

    fn sink(&self) -> &BodySink<'w> {
        match self {
            Decoder::Identity(sink) => sink,
            Decoder::Gzip(d) => d.get_ref(),
            Decoder::Zlib(d) => d.get_ref(),
            Decoder::Raw(d) => d.get_ref(),
        }
    }

    /// What the sink counted and kept.
    fn into_parts(mut self) -> (u64, Vec<u8>) {
        let sink = self.sink_mut();
        (sink.count, std::mem::take(&mut sink.kept))
    }
}

fn body_error(e: std::io::Error) -> TransportError {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<LimitExceeded>()) {
        Some(limit) => TransportError::new(ErrorKind::Body, limit.to_string()),
        None => TransportError::new(ErrorKind::Protocol, format!("the body does not decode: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_becomes_basic_auth_and_leaves_the_url() {
        let url = Url::parse("http://us%40er:p%3Ass@h.test:8/x").expect("url");
        let (url, auth) = take_userinfo(url);
        assert_eq!(url.as_str(), "http://h.test:8/x");
        let expected = basic_auth("us@er", "p:ss").expect("header");
        assert_eq!(auth, Some(expected));
        let (_, none) = take_userinfo(Url::parse("http://h.test/").expect("url"));
        assert!(none.is_none());
    }

    #[test]
    fn urls_go_refuses_are_refused() {
        let names = SecretNames::default();
        for bad in [
            "http://h.test/%zz",
            "http://h.test/a%4",
            "http://h.test/#%",
            "http://u%zz:p@h.test/",
            "http://h.test/\u{1}",
        ] {
            assert!(parse_url(bad, &names).is_err(), "{bad}");
        }
        for good in [
            "http://h.test/%41?q=%zz",
            "http://h.test/a%2Fb",
            "http://u:p%40@h.test/",
        ] {
            assert!(parse_url(good, &names).is_ok(), "{good}");
        }
    }

    #[test]
    fn content_length_as_go_has_it() {
        let mut headers = HeaderMap::new();
        assert_eq!(content_length(false, 200, &headers), -1);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        assert_eq!(content_length(false, 200, &headers), 12);
        assert_eq!(content_length(false, 204, &headers), 0);
        assert_eq!(content_length(true, 200, &headers), 12);
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        assert_eq!(content_length(false, 200, &headers), -1);
    }

    #[test]
    fn the_sink_counts_keeps_and_limits() {
        let mut sink = BodySink {
            limit: Some(10),
            keep: 4,
            kept: Vec::new(),
            count: 0,
            watch: None,
        };
        sink.write_all(b"abcdef").expect("within");
        assert_eq!((sink.count, sink.kept.as_slice()), (6, &b"abcd"[..]));
        assert!(sink.write_all(b"ghijkl").is_err());
        assert_eq!(sink.count, 10, "at most the limit is counted, as blackbox does");
    }

    #[test]
    fn a_bomb_decodes_within_the_limit_only() {
        use flate2::Compression;
        use flate2::write::GzEncoder;
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        encoder.write_all(&vec![0u8; 8 << 20]).expect("write");
        let bomb = encoder.finish().expect("gzip");
        let sink = BodySink {
            limit: Some(1 << 20),
            keep: 0,
            kept: Vec::new(),
            count: 0,
            watch: None,
        };
        let mut decoder = Decoder::new(Encoding::Gzip, sink);
        let result = bomb.chunks(4096).try_for_each(|c| decoder.write(c));
        assert_eq!(result.map_err(|e| e.kind), Err(ErrorKind::Body));
        assert_eq!(decoder.into_parts().0, 1 << 20);
    }
}
