//! The conformance corpus's targets: local servers on 127.0.0.1 and ::1, port 0, started by the
//! test and stopped when [`Targets`] is dropped. Every reply is written by hand, byte for byte,
//! so both exporters see exactly the same thing: plain and TLS HTTP (valid, self-signed, expired
//! and TLS 1.2-only certificates made here with rcgen), hand-written raw replies (close-delimited,
//! HTTP/1.0, bad status lines, reset, short and trickling bodies), a 64 MiB body served from
//! memory, a gzip bomb, a non-HTTP port, a port that hangs, a banner then silence, an SMTP-like
//! STARTTLS dialogue, and a closed port.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// The credentials `/auth` wants (as URL userinfo or as the module's `basic_auth`).
pub const AUTH_USER: &str = "user";
pub const AUTH_PASSWORD: &str = "hunter2-secret";
/// What `/auth-encoded` wants: the target carries them percent-encoded (`us%40er:p%3Ass`).
pub const ENCODED_CREDENTIALS: &str = "us@er:p:ss";
/// The token `/bearer` wants (the modules' `bearer_token` and `bearer_token_file`).
pub const BEARER_TOKEN: &str = "tok-conformance";
/// 64 MiB: the big body and the gzip bomb's decoded size.
pub const BIG: usize = 64 * 1024 * 1024;
/// The small page most cases get.
const HELLO: &[u8] = b"hello world\n";

/// Every target, running; the ports are what the case templates refer to.
pub struct Targets {
    runtime: Option<tokio::runtime::Runtime>,
    /// Plain HTTP on 127.0.0.1 and ::1 (the same port on both).
    pub http: u16,
    /// HTTPS with a leaf of the test CA, on 127.0.0.1 and ::1 (the same port on both).
    pub tls: u16,
    /// The same leaf, TLS 1.2 only (127.0.0.1).
    pub tls12: u16,
    /// HTTPS with a self-signed leaf (127.0.0.1).
    pub self_signed: u16,
    /// HTTPS with an expired leaf of the test CA (127.0.0.1).
    pub expired: u16,
    /// Not HTTP: an SSH banner, then close.
    pub garbage: u16,
    /// Accepts and never answers.
    pub hang: u16,
    /// A banner line, then silence.
    pub silent: u16,
    /// An SMTP-like dialogue with STARTTLS (the valid leaf).
    pub smtp: u16,
    /// Nothing listens there.
    pub closed: u16,
    /// A DNS server (dnsmasq, package `dnsmasq-base`) on 127.0.0.1, UDP and TCP, with the
    /// records of [`DNSMASQ_RECORDS`].
    pub dns: u16,
    /// nginx (package `nginx`) with the valid leaf: HTTP/2 or HTTP/1.1 by ALPN.
    pub h2: u16,
    /// The same nginx, h2c only (HTTP/2 with prior knowledge, which blackbox_exporter lacks).
    pub h2c: u16,
    /// tonic-health's gRPC health service (tests/it/common/grpc.rs), plaintext.
    pub grpc: u16,
    /// The same over TLS with the valid leaf.
    pub grpc_tls: u16,
    pub certs: Certs,
    dnsmasq: Option<crate::common::dns::Dnsmasq>,
    nginx: Option<crate::common::nginx::Nginx>,
}

/// What the conformance DNS server knows: names under vigil.test it lacks are NXDOMAIN, names
/// elsewhere REFUSED (it has no upstream).
const DNSMASQ_RECORDS: &[&str] = &[
    "--local=/vigil.test/",
    "--host-record=ok.vigil.test,127.0.0.1,::1",
    "--txt-record=txt.vigil.test,hello world",
    "--mx-host=vigil.test,mail.vigil.test,10",
    // Twelve TXT records of 70 bytes: more than a 512-byte UDP answer holds, so over UDP the
    // answer comes truncated (six records, TC set) and is taken as it is; over TCP it is whole.
    "--txt-record=big.vigil.test,record-number-01-padding-padding-padding-padding-padding-padding",
    "--txt-record=big.vigil.test,record-number-02-padding-padding-padding-padding-padding-padding",
    "--txt-record=big.vigil.test,record-number-03-padding-padding-padding-padding-padding-padding",
    "--txt-record=big.vigil.test,record-number-04-padding-padding-padding-padding-padding-padding",
    "--txt-record=big.vigil.test,record-number-05-padding-padding-padding-padding-padding-padding",
    "--txt-record=big.vigil.test,record-number-06-padding-padding-padding-padding-padding-padding",
    "--txt-record=big.vigil.test,record-number-07-padding-padding-padding-padding-padding-padding",
    "--txt-record=big.vigil.test,record-number-08-padding-padding-padding-padding-padding-padding",
    "--txt-record=big.vigil.test,record-number-09-padding-padding-padding-padding-padding-padding",
    "--txt-record=big.vigil.test,record-number-10-padding-padding-padding-padding-padding-padding",
    "--txt-record=big.vigil.test,record-number-11-padding-padding-padding-padding-padding-padding",
    "--txt-record=big.vigil.test,record-number-12-padding-padding-padding-padding-padding-padding",
];

impl Targets {
    pub fn start() -> Targets {
        let certs = Certs::new();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("conformance-targets")
            .enable_all()
            .build()
            .expect("a runtime for the targets");
        let mut targets = runtime.block_on(async {
            let (http4, http6) = dual_stack().await;
            let (tls4, tls6) = dual_stack().await;
            let bind4 = || async {
                TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                    .await
                    .expect("bind 127.0.0.1:0")
            };
            let (tls12, self_signed, expired) = (bind4().await, bind4().await, bind4().await);
            let (garbage, hang, silent, smtp) = (bind4().await, bind4().await, bind4().await, bind4().await);
            let port = |l: &TcpListener| l.local_addr().expect("bound").port();
            let ports = Ports {
                http: port(&http4),
                tls: port(&tls4),
                closed: closed_port(),
            };
            let leaf = certs.acceptor(&certs.valid, false);
            spawn_http(http4, None, ports);
            spawn_http(http6, None, ports);
            spawn_http(tls4, Some(leaf.clone()), ports);
            spawn_http(tls6, Some(leaf.clone()), ports);
            let targets = Targets {
                runtime: None,
                http: ports.http,
                tls: ports.tls,
                tls12: port(&tls12),
                self_signed: port(&self_signed),
                expired: port(&expired),
                garbage: port(&garbage),
                hang: port(&hang),
                silent: port(&silent),
                smtp: port(&smtp),
                closed: ports.closed,
                dns: 0,
                h2: 0,
                h2c: 0,
                grpc: 0,
                grpc_tls: 0,
                certs: certs.clone(),
                dnsmasq: None,
                nginx: None,
            };
            spawn_http(tls12, Some(certs.acceptor(&certs.valid, true)), ports);
            spawn_http(self_signed, Some(certs.acceptor(&certs.self_signed, false)), ports);
            spawn_http(expired, Some(certs.acceptor(&certs.expired, false)), ports);
            spawn_raw(garbage, |s| Box::pin(garbage_reply(s)));
            spawn_raw(hang, |s| Box::pin(hold(s)));
            spawn_raw(silent, |s| Box::pin(banner_then_silence(s)));
            let grpc = crate::common::grpc::GrpcHealth::start(&certs.valid_pem(), &certs.valid_key_pem()).await;
            let mut targets = targets;
            (targets.grpc, targets.grpc_tls) = (grpc.plain.port(), grpc.tls.port());
            let acceptor = leaf;
            tokio::spawn(async move {
                while let Ok((stream, _)) = smtp.accept().await {
                    tokio::spawn(smtp_dialogue(stream, acceptor.clone()));
                }
            });
            targets
        });
        targets.runtime = Some(runtime);
        let dnsmasq = crate::common::dns::Dnsmasq::start(DNSMASQ_RECORDS);
        targets.dns = dnsmasq.port;
        targets.dnsmasq = Some(dnsmasq);
        let nginx = crate::common::nginx::Nginx::start(&certs.valid_pem(), &certs.valid_key_pem());
        (targets.h2, targets.h2c) = (nginx.tls, nginx.h2c);
        targets.nginx = Some(nginx);
        targets
    }

    /// `template` with `{http}`, `{tls}`, ... replaced by the ports, and `{user}`, `{password}`
    /// by the credentials `/auth` wants.
    pub fn expand(&self, template: &str) -> String {
        let ports = [
            ("{http}", self.http),
            ("{tls}", self.tls),
            ("{tls12}", self.tls12),
            ("{self_signed}", self.self_signed),
            ("{expired}", self.expired),
            ("{garbage}", self.garbage),
            ("{hang}", self.hang),
            ("{silent}", self.silent),
            ("{smtp}", self.smtp),
            ("{closed}", self.closed),
            ("{dns}", self.dns),
            ("{h2c}", self.h2c),
            ("{grpc_tls}", self.grpc_tls),
            ("{grpc}", self.grpc),
            ("{h2}", self.h2),
        ];
        let mut out = template
            .replace("{user}", AUTH_USER)
            .replace("{password}", AUTH_PASSWORD);
        for (name, port) in ports {
            out = out.replace(name, &port.to_string());
        }
        assert!(
            !out.contains('{'),
            "unknown placeholder in the case target {template:?}"
        );
        out
    }
}

impl Drop for Targets {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Binds 127.0.0.1 and ::1 on one port (port 0 on the first, then the same number on the
/// second; tried again with another number when that one is taken on ::1).
async fn dual_stack() -> (TcpListener, TcpListener) {
    for _ in 0..50 {
        let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind 127.0.0.1:0");
        let port = v4.local_addr().expect("bound").port();
        if let Ok(v6) = TcpListener::bind((Ipv6Addr::LOCALHOST, port)).await {
            return (v4, v6);
        }
    }
    panic!("no port free on both 127.0.0.1 and ::1 (is IPv6 loopback there?)");
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().expect("bound").port()
}

/// The ports a reply may point at (redirects).
#[derive(Clone, Copy)]
struct Ports {
    http: u16,
    tls: u16,
    closed: u16,
}

type Boxed = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

fn spawn_raw(listener: TcpListener, handle: fn(TcpStream) -> Boxed) {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream));
        }
    });
}

fn spawn_http(listener: TcpListener, tls: Option<TlsAcceptor>, ports: Ports) {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => {
                        let mut stream = stream;
                        if let Some(End::Reset) = exchange(&mut stream, ports).await {
                            // RST instead of FIN: a reset in the middle of the body.
                            let _ = stream.set_zero_linger();
                        }
                    }
                    Some(acceptor) => {
                        if let Ok(Ok(mut stream)) =
                            tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
                        {
                            exchange(&mut stream, ports).await;
                        }
                    }
                }
            });
        }
    });
}

/// How a reply ends.
enum End {
    /// Shut the connection down (FIN, or close_notify then FIN).
    Close,
    /// Reset it.
    Reset,
}

/// One request, one reply, then the connection ends (blackbox never keeps connections alive,
/// so neither does a target: each redirect hop is a new connection for both exporters).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, ports: Ports) -> Option<End> {
    let request = tokio::time::timeout(Duration::from_secs(10), read_request(stream))
        .await
        .ok()??;
    let end = reply(stream, &request, ports).await.unwrap_or(End::Close);
    if let End::Close = end {
        let _ = stream.shutdown().await;
    }
    Some(end)
}

/// What the targets look at in a request.
struct Request {
    method: String,
    path: String,
    /// Header names in lower case, in the order received.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Request> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if data.len() > 64 * 1024 {
            return None;
        }
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = data[head_end + 4..].to_vec();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while body.len() < length.min(1 << 20) {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    let path = target.split('?').next().unwrap_or("/").to_string();
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

/// A complete reply with a Content-Length (and no body for HEAD).
fn page(method: &str, status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut out = out.into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body);
    }
    out
}

fn redirect(status: &str, location: &str) -> Vec<u8> {
    page("GET", status, &[("Location", location)], b"")
}

fn text(method: &str, status: &str, body: &[u8]) -> Vec<u8> {
    page(method, status, &[("Content-Type", "text/plain")], body)
}

/// Writes the reply for `request`; every path the corpus uses is here.
async fn reply<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &Request,
    ports: Ports,
) -> std::io::Result<End> {
    let m = request.method.as_str();
    let path = request.path.as_str();
    let basic = |credentials: &str| {
        use base64::Engine as _;
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        );
        request.header("authorization") == Some(want.as_str())
    };
    let bytes: Vec<u8> = match path {
        "/" => text(m, "200 OK", HELLO),
        "/chunked" => {
            let mut out = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
            for part in [&b"hello "[..], b"chunked ", b"world\n"] {
                out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                out.extend_from_slice(part);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            out
        }
        // No length, no chunking: the body ends where the connection does.
        "/close" => {
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nclose delimited body\n".to_vec()
        }
        "/http10" => b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n".to_vec(),
        "/204" => b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_vec(),
        "/404" => text(m, "404 Not Found", b"not found\n"),
        // 304 has no body, whatever its Content-Length says.
        "/304" => b"HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\nConnection: close\r\n\r\n".to_vec(),
        "/badlength" => b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\nConnection: close\r\n\r\nhello".to_vec(),
        "/status999" => b"HTTP/1.1 999 Weird\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_vec(),
        "/badstatus" => b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
        "/http09" => b"hello there, no status line\n".to_vec(),
        "/lastmod" => page(
            m,
            "200 OK",
            &[("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT")],
            HELLO,
        ),
        "/badlastmod" => page(m, "200 OK", &[("Last-Modified", "yesterday")], HELLO),
        "/header" => page(m, "200 OK", &[("X-Test", "foo"), ("X-Test", "baz")], HELLO),
        "/post"
            if m == "POST"
                && request.body == br#"{"a":1}"#
                && request.header("content-type") == Some("application/json") =>
        {
            text(m, "200 OK", b"posted\n")
        }
        "/post" => text(
            m,
            "405 Method Not Allowed",
            b"POST {\"a\":1} as application/json only\n",
        ),
        // The module's headers arrive as configured, Host included.
        "/vhost"
            if request.header("host") == Some("example.test")
                && request.header("x-custom") == Some("abc")
                && request.header("user-agent") == Some("vigil-test") =>
        {
            text(m, "200 OK", HELLO)
        }
        "/vhost" => text(m, "400 Bad Request", b"wrong Host, X-Custom or User-Agent\n"),
        "/auth" if basic(&format!("{AUTH_USER}:{AUTH_PASSWORD}")) => text(m, "200 OK", b"authorized\n"),
        "/auth-encoded" if basic(ENCODED_CREDENTIALS) => text(m, "200 OK", b"authorized\n"),
        "/auth" | "/auth-encoded" => page(
            m,
            "401 Unauthorized",
            &[("WWW-Authenticate", "Basic realm=\"conformance\"")],
            b"unauthorized\n",
        ),
        "/bearer" if request.header("authorization") == Some(format!("Bearer {BEARER_TOKEN}").as_str()) => {
            text(m, "200 OK", b"authorized\n")
        }
        "/bearer" => text(m, "401 Unauthorized", b"unauthorized\n"),
        "/redirect" => redirect("302 Found", "/"),
        // /redirect/3 -> /redirect/2 -> /redirect/1 -> /: three redirects.
        p if p.starts_with("/redirect/") => match p["/redirect/".len()..].parse::<u32>() {
            Ok(n) if n > 1 => redirect("302 Found", &format!("/redirect/{}", n - 1)),
            _ => redirect("302 Found", "/"),
        },
        "/loop" => redirect("302 Found", "/loop"),
        "/to-https" => redirect("302 Found", &format!("https://127.0.0.1:{}/", ports.tls)),
        "/to-closed" => redirect("302 Found", &format!("http://127.0.0.1:{}/", ports.closed)),
        "/to-localhost" => redirect("302 Found", &format!("http://localhost:{}/", ports.http)),
        "/to-auth" => redirect("302 Found", "/auth"),
        "/to-auth-localhost" => redirect("302 Found", &format!("http://localhost:{}/auth", ports.http)),
        "/to-post-307" => redirect("307 Temporary Redirect", "/post"),
        "/to-post-303" => redirect("303 See Other", "/post"),
        "/gzip" => page(
            m,
            "200 OK",
            &[("Content-Encoding", "gzip")],
            &gzip(&b"hello gzip world\n".repeat(100)),
        ),
        "/notgzip" => page(m, "200 OK", &[("Content-Encoding", "gzip")], b"this is not gzip\n"),
        "/rawdeflate" => page(
            m,
            "200 OK",
            &[("Content-Encoding", "deflate")],
            &deflate_stored(&b"hello deflate world\n".repeat(100)),
        ),
        "/zlibdeflate" => page(
            m,
            "200 OK",
            &[("Content-Encoding", "deflate")],
            &zlib(&b"hello deflate world\n".repeat(100)),
        ),
        "/bomb" => page(m, "200 OK", &[("Content-Encoding", "gzip")], bomb()),
        "/big" => {
            stream
                .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\nConnection: close\r\n\r\n").as_bytes())
                .await?;
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..BIG / chunk.len() {
                stream.write_all(&chunk).await?;
            }
            return Ok(End::Close);
        }
        // 5 of the 10 promised bytes, 100 ms apart, then nothing until the client gives up: the
        // probe times out mid-body with exactly 5 bytes read (whatever the timing).
        "/trickle" => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\n")
                .await?;
            for _ in 0..5 {
                stream.write_all(b"z").await?;
                stream.flush().await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            drain(stream).await;
            return Ok(End::Close);
        }
        // The whole body, a byte every 150 ms: slow but complete, well inside the timeout.
        "/trickle-complete" => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")
                .await?;
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                stream.write_all(b"z").await?;
                stream.flush().await?;
            }
            return Ok(End::Close);
        }
        "/reset" => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
                .await?;
            stream.flush().await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            return Ok(End::Reset);
        }
        // 10 of the 100 promised bytes, then FIN.
        "/short" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n0123456789".to_vec(),
        _ => text(m, "404 Not Found", b"unknown path\n"),
    };
    stream.write_all(&bytes).await?;
    stream.flush().await?;
    Ok(End::Close)
}

/// Not HTTP: an SSH banner; what the client sent is read (so the close is a FIN, not a reset),
/// then the connection is closed.
async fn garbage_reply(mut stream: TcpStream) {
    let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n").await;
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(300), async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    let _ = stream.shutdown().await;
}

/// Reads and discards until the client closes (30 s at most); never writes.
async fn hold(mut stream: TcpStream) {
    drain(&mut stream).await;
}

/// Reads and discards until the client closes, 30 s at most.
async fn drain<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

async fn banner_then_silence(mut stream: TcpStream) {
    let _ = stream.write_all(b"hello banner\r\n").await;
    hold(stream).await;
}

/// Where an SMTP dialogue stopped.
enum Smtp {
    Done,
    StartTls,
}

/// `220 vigil.test ESMTP`, then EHLO/HELO (HELO must name `vigil.test`, so the test sees `send`
/// expanded from the banner's capture), STARTTLS with the valid leaf, QUIT.
async fn smtp_dialogue(stream: TcpStream, acceptor: TlsAcceptor) {
    let mut plain = BufReader::new(stream);
    if plain
        .get_mut()
        .write_all(b"220 vigil.test ESMTP test\r\n")
        .await
        .is_err()
    {
        return;
    }
    if let Smtp::StartTls = smtp_commands(&mut plain, false).await {
        let stream = plain.into_inner();
        let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await else {
            return;
        };
        let mut tls = BufReader::new(tls);
        smtp_commands(&mut tls, true).await;
        let _ = tls.get_mut().shutdown().await;
    }
}

async fn smtp_commands<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut BufReader<S>, secure: bool) -> Smtp {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut line = String::new();
        match tokio::time::timeout_at(deadline, stream.read_line(&mut line)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Smtp::Done,
        }
        let command = line.trim().to_ascii_uppercase();
        let answer: &[u8] = if command.starts_with("EHLO") || command == "HELO VIGIL.TEST" {
            b"250-vigil.test hello\r\n250 STARTTLS\r\n"
        } else if command.starts_with("HELO") {
            b"501 HELO wants the name from the banner\r\n"
        } else if command == "STARTTLS" && !secure {
            b"220 2.0.0 Ready to start TLS\r\n"
        } else if command == "QUIT" {
            b"221 bye\r\n"
        } else {
            b"500 what\r\n"
        };
        if stream.get_mut().write_all(answer).await.is_err() {
            return Smtp::Done;
        }
        match command.as_str() {
            "STARTTLS" if !secure => return Smtp::StartTls,
            "QUIT" => return Smtp::Done,
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// A certificate and its key, in DER, with the chain the server sends.
#[derive(Clone)]
pub struct Leaf {
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

/// The test CA and the leaves, made once per [`Targets`]; the CA's PEM is in a file for the
/// modules' `ca_file`.
#[derive(Clone)]
pub struct Certs {
    dir: Arc<tempfile::TempDir>,
    valid: Leaf,
    expired: Leaf,
    self_signed: Leaf,
}

/// Now, to the second (X.509 times have no fractions).
fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

fn name(params: &mut CertificateParams, organisation: &str, common_name: &str) {
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CountryName, "DE");
    params.distinguished_name.push(DnType::OrganizationName, organisation);
    params.distinguished_name.push(DnType::CommonName, common_name);
}

/// Leaf parameters: DNS names and IP addresses as SANs, valid between two offsets from now (days).
fn leaf_params(dns: &[&str], ips: &[&str], from_days: i64, until_days: i64) -> CertificateParams {
    let mut params = CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()).expect("SANs");
    for ip in ips {
        params
            .subject_alt_names
            .push(SanType::IpAddress(ip.parse().expect("IP SAN")));
    }
    params.not_before = now() + time::Duration::days(from_days);
    params.not_after = now() + time::Duration::days(until_days);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params
}

impl Certs {
    fn new() -> Certs {
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        name(&mut ca, "Vigil Test", "Vigil Test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.not_before = now() - time::Duration::days(400);
        ca.not_after = now() + time::Duration::days(3650);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("CA");
        let dir = tempfile::tempdir().expect("a folder for the certificates");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write the CA");

        let signed = |mut params: CertificateParams, pem: Option<&str>| {
            name(&mut params, "Vigil Test", "localhost");
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &ca).expect("sign");
            if let Some(file) = pem {
                // For nginx: the chain and the key as PEM files.
                std::fs::write(dir.path().join(format!("{file}.pem")), cert.pem() + &ca.pem()).expect("write the leaf");
                std::fs::write(dir.path().join(format!("{file}-key.pem")), key.serialize_pem()).expect("write the key");
            }
            Leaf {
                chain: vec![cert.der().clone(), ca.der().clone()],
                key: key.serialize_der(),
            }
        };
        let names = ["localhost", "vigil.test"];
        let ips = ["127.0.0.1", "::1"];
        let valid = signed(leaf_params(&names, &ips, -1, 365), Some("valid"));
        let expired = signed(leaf_params(&names, &ips, -400, -30), None);

        let mut own = leaf_params(&["localhost"], &["127.0.0.1"], -1, 200);
        name(&mut own, "Self", "selfsigned.local");
        let key = KeyPair::generate().expect("key");
        let cert = own.self_signed(&key).expect("self-sign");
        let self_signed = Leaf {
            chain: vec![cert.der().clone()],
            key: key.serialize_der(),
        };
        Certs {
            dir: Arc::new(dir),
            valid,
            expired,
            self_signed,
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The valid leaf's chain, as PEM.
    fn valid_pem(&self) -> PathBuf {
        self.dir.path().join("valid.pem")
    }

    /// The valid leaf's key, as PEM.
    fn valid_key_pem(&self) -> PathBuf {
        self.dir.path().join("valid-key.pem")
    }

    fn acceptor(&self, leaf: &Leaf, tls12_only: bool) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                leaf.chain.clone(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key.clone())),
            )
            .expect("server certificate");
        TlsAcceptor::from(Arc::new(config))
    }
}

// ---------------------------------------------------------------------------------------------
// Compressed bodies, written by hand (no compression library in the tree): stored deflate
// blocks for the small ones, fixed-Huffman matches for the bomb.
// ---------------------------------------------------------------------------------------------

/// CRC-32 (IEEE), as gzip's trailer wants it.
fn crc32(data: &[u8]) -> u32 {
    static TABLE: OnceLock<[u32; 256]> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0u32; 256];
        for (i, entry) in table.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            }
            *entry = c;
        }
        table
    });
    !data
        .iter()
        .fold(!0u32, |c, &b| table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8))
}

/// CRC-32 of `n` zero bytes, in O(log n): the CRC register is linear over GF(2), so the operator
/// "feed one zero byte" is a 32x32 bit matrix, squared up to `n` (zlib's crc32_combine method).
fn crc32_zeros(n: usize) -> u32 {
    fn times(matrix: &[u32; 32], mut vector: u32) -> u32 {
        let mut sum = 0;
        let mut i = 0;
        while vector != 0 {
            if vector & 1 != 0 {
                sum ^= matrix[i];
            }
            vector >>= 1;
            i += 1;
        }
        sum
    }
    fn square(matrix: &[u32; 32]) -> [u32; 32] {
        let mut out = [0u32; 32];
        for (i, row) in out.iter_mut().enumerate() {
            *row = times(matrix, matrix[i]);
        }
        out
    }
    // One zero bit: shift right, xor the polynomial when the low bit falls out.
    let mut operator = [0u32; 32];
    operator[0] = 0xedb8_8320;
    for (i, row) in operator.iter_mut().enumerate().skip(1) {
        *row = 1 << (i - 1);
    }
    // Eight bits make a byte.
    for _ in 0..3 {
        operator = square(&operator);
    }
    let mut register = !0u32;
    let mut n = n;
    while n != 0 {
        if n & 1 != 0 {
            register = times(&operator, register);
        }
        operator = square(&operator);
        n >>= 1;
    }
    !register
}

/// A raw (RFC 1951) deflate stream of stored blocks.
fn deflate_stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 5 * (data.len() / 65_535 + 1));
    let mut chunks = data.chunks(65_535).peekable();
    if data.is_empty() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let len = chunk.len() as u16;
        out.push(u8::from(last));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

fn gzip_wrap(deflated: &[u8], crc: u32, size: usize) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend_from_slice(deflated);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&(size as u32).to_le_bytes());
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    gzip_wrap(&deflate_stored(data), crc32(data), data.len())
}

/// `Content-Encoding: deflate` as RFC 9110 means it (zlib-wrapped), which blackbox's
/// `compression: deflate` (raw deflate) does not read.
fn zlib(data: &[u8]) -> Vec<u8> {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    let mut out = vec![0x78, 0x01];
    out.extend_from_slice(&deflate_stored(data));
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

/// Bits into bytes, least significant first, as deflate packs them.
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn put(&mut self, value: u32, count: u32) {
        self.acc |= u64::from(value) << self.n;
        self.n += count;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A Huffman code: most significant bit first.
    fn code(&mut self, code: u32, length: u32) {
        self.put(code.reverse_bits() >> (32 - length), length);
    }
}

/// The gzip bomb: 64 MiB of zeros in one fixed-Huffman block (a zero literal, then matches of
/// length 258 at distance 1, 13 bits each), about 420 KB on the wire. Made once.
fn bomb() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| {
        let mut bits = Bits {
            out: Vec::with_capacity(BIG / 150),
            acc: 0,
            n: 0,
        };
        bits.put(1, 1); // BFINAL
        bits.put(1, 2); // BTYPE 01: fixed Huffman codes
        let literal_zero = |bits: &mut Bits| bits.code(0b0011_0000, 8);
        literal_zero(&mut bits);
        let rest = BIG - 1;
        for _ in 0..rest / 258 {
            bits.code(0b1100_0101, 8); // length code 285: 258 bytes
            bits.code(0, 5); // distance code 0: distance 1
        }
        for _ in 0..rest % 258 {
            literal_zero(&mut bits);
        }
        bits.code(0, 7); // end of block (256)
        bits.put(0, 7); // flush to a byte boundary
        let deflated = bits.out;
        gzip_wrap(&deflated, crc32_zeros(BIG), BIG)
    })
}

#[test]
fn crc_of_zeros_matches_the_table_method() {
    for n in [0, 1, 7, 258, 4096, 100_000] {
        assert_eq!(crc32_zeros(n), crc32(&vec![0; n]), "{n} zeros");
    }
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
}
