//! The `tcp` kind: connect, optionally over TLS, then either send bytes and expect a reply
//! (`send`, `expect`), or hold a line-based dialogue as blackbox_exporter's `query_response`
//! does (`expect` a line, `send` a line with `${1}` from the match, `starttls`).

use std::sync::Arc;

use rustls::ClientConfig;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::families::{Address, Certificates, Reached, Shook, Tls};
use super::{Built, CheckContext, Failure, Family, ProbeKind, Publish, Reason, Role, Verdict};
use crate::spec::BuildContext;
use crate::spec::values::Pattern;
use crate::transport::connect::{self, Dialled, IpProtocol};
use crate::transport::tls::{self, TlsSeen, TlsSpec};

/// Config of a `tcp` probe.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// `host:port` to connect to (a module gets it from `/probe?target=`).
    pub address: Option<String>,
    /// Speak TLS from the first byte (default false).
    #[serde(default)]
    pub tls: bool,
    /// TLS settings, for `tls` and for `starttls` steps.
    #[serde(default)]
    pub tls_config: TlsSpec,
    /// Bytes to send once connected (escapes such as `\r\n` are written in YAML double quotes).
    pub send: Option<String>,
    /// Regex the data received must match before the connection closes or the timeout.
    pub expect: Option<Pattern>,
    /// A line-based dialogue, step by step (instead of `send` and `expect`).
    #[serde(default)]
    pub query_response: Vec<QueryStep>,
    /// IP version to try first (default ip4).
    #[serde(default)]
    pub ip_protocol: IpProtocol,
    /// Try the other IP version too (default true).
    #[serde(default = "yes")]
    pub ip_protocol_fallback: bool,
}

/// One step of a `query_response` dialogue; its parts run in this order.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryStep {
    /// Read lines until one matches (the connection closing first is a failure).
    pub expect: Option<Pattern>,
    /// Send this line (a newline is added); `${1}`, `${name}` take groups of the last match.
    pub send: Option<String>,
    /// Start TLS on the connection (with `tls_config`).
    #[serde(default)]
    pub starttls: bool,
}

fn yes() -> bool {
    true
}

/// A `tcp` probe's compiled settings.
#[derive(Debug)]
pub struct Tcp {
    tls: Option<Arc<ClientConfig>>,
    verify: bool,
    server_name: Option<String>,
    send: Option<Vec<u8>>,
    expect: Option<Pattern>,
    dialogue: Vec<QueryStep>,
    ip_protocol: IpProtocol,
    ip_protocol_fallback: bool,
}

/// At most this much is read while waiting for `expect`, and the longest line of a dialogue.
const EXPECT_BUFFER: usize = 64 * 1024;

fn split_address(address: &str) -> Result<(&str, u16), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("`{address}` is not host:port"))?;
    let port = port
        .parse()
        .map_err(|_| format!("`{port}` in `{address}` is not a port number"))?;
    if host.is_empty() {
        return Err(format!("`{address}` has no host"));
    }
    Ok((host, port))
}

/// What one `tcp` attempt observed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Obs {
    /// The target split into host and port (its name was then resolved).
    pub parsed: bool,
    /// The connect.
    pub dialled: Dialled,
    /// What the last TLS handshake showed.
    pub tls_seen: TlsSeen,
    /// Whether that handshake succeeded.
    pub tls_ok: bool,
    /// The connection closed before an `expect` matched (blackbox's `probe_failed_due_to_regex`).
    pub failed_due_to_regex: bool,
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

impl ProbeKind for Tcp {
    const NAME: &'static str = "tcp";
    const REASONS: &'static [Reason] = &[
        Reason::Dns,
        Reason::Connect,
        Reason::Tls,
        Reason::Protocol,
        Reason::Expect,
    ];
    const FAMILIES: &'static [Family<Self>] = &[
        Certificates::<Self>::EXPIRY,
        Family {
            name: "probe_failed_due_to_regex",
            help: "Indicates if probe failed due to regex",
            unit: None,
            publish: Publish::Probe,
            emit: |seen, out| out.gauge(&[], f64::from(u8::from(seen.obs.failed_due_to_regex))),
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
        match (role, &spec.address) {
            (Role::Scheduled, None) => ctx.error(path, "missing key `address`"),
            (Role::Scheduled, Some(address)) => {
                if let Err(e) = split_address(address) {
                    ctx.error(format!("{path}.address"), e);
                }
            }
            (Role::Module, Some(_)) => ctx.error(
                format!("{path}.address"),
                "a /probe module takes its target from the request; remove `address`",
            ),
            (Role::Module, None) => {}
        }
        let starttls = spec.query_response.iter().any(|s| s.starttls);
        if !spec.query_response.is_empty() && (spec.send.is_some() || spec.expect.is_some()) {
            ctx.error(
                format!("{path}.query_response"),
                "set either send and expect, or query_response, not both",
            );
        }
        if spec.tls && starttls {
            ctx.error(
                format!("{path}.query_response"),
                "a starttls step needs a connection without TLS; remove `tls: true` or the step",
            );
        }
        if spec.query_response.iter().filter(|s| s.starttls).count() > 1 {
            ctx.error(format!("{path}.query_response"), "at most one step may start TLS");
        }
        if !spec.tls && !starttls && spec.tls_config != TlsSpec::default() {
            ctx.error(format!("{path}.tls_config"), "tls_config is set but tls is false");
        }
        let tls = if spec.tls || starttls {
            Some(tls::client_config(
                &spec.tls_config,
                &[],
                ctx,
                &format!("{path}.tls_config"),
            )?)
        } else {
            None
        };
        let settings = Tcp {
            tls,
            verify: spec.tls_config.verify,
            server_name: spec.tls_config.server_name,
            send: spec.send.map(String::into_bytes),
            expect: spec.expect,
            dialogue: spec.query_response,
            ip_protocol: spec.ip_protocol,
            ip_protocol_fallback: spec.ip_protocol_fallback,
        };
        Some(Built {
            settings,
            target: spec.address,
            freshness: None,
        })
    }

    async fn check(&self, target: &str, cx: &CheckContext, obs: &mut Obs) -> Verdict {
        match self.attempt(target, obs, cx).await {
            Ok(()) => Verdict::up(),
            Err(failure) => failure.into(),
        }
    }

    fn keep(kept: &mut Kept, obs: &Obs) {
        kept.cert.keep(&obs.tls_seen);
    }
}

/// A connection, before or after TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Tcp {
    async fn attempt(&self, target: &str, obs: &mut Obs, cx: &CheckContext) -> Result<(), Failure> {
        let (host, port) = split_address(target).map_err(|e| Failure::new(Reason::Connect, e))?;
        obs.parsed = true;
        let socket = connect::connect(
            host,
            port,
            self.ip_protocol,
            self.ip_protocol_fallback,
            &cx.sockets,
            &mut obs.dialled,
        )
        .await?;
        let name = self.server_name.as_deref().unwrap_or(host);
        let stream: Box<dyn Io> = match (&self.tls, self.dialogue.iter().any(|s| s.starttls)) {
            (Some(config), false) => Box::new(self.handshake(config, name, socket, obs).await?),
            _ => Box::new(socket),
        };
        if self.dialogue.is_empty() {
            return self.converse(stream).await;
        }
        self.dialogue(stream, name, obs).await
    }

    async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        config: &Arc<ClientConfig>,
        name: &str,
        stream: S,
        obs: &mut Obs,
    ) -> Result<tokio_rustls::client::TlsStream<S>, Failure> {
        obs.tls_seen = TlsSeen::default();
        let shaken = tls::handshake(config, name, self.verify, stream, &mut obs.tls_seen).await?;
        obs.tls_ok = true;
        Ok(shaken)
    }

    /// `send` then `expect` on the raw bytes.
    async fn converse(&self, mut stream: Box<dyn Io>) -> Result<(), Failure> {
        if let Some(data) = &self.send {
            write_all(&mut stream, data).await?;
        }
        let Some(pattern) = &self.expect else {
            let _ = stream.shutdown().await;
            return Ok(());
        };
        let mut received = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if pattern.is_match(&received) {
                let _ = stream.shutdown().await;
                return Ok(());
            }
            if received.len() >= EXPECT_BUFFER {
                return Err(Failure::new(
                    Reason::Expect,
                    format!("no match for /{}/ in the first {EXPECT_BUFFER} bytes", pattern.as_str()),
                ));
            }
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| Failure::new(Reason::Expect, format!("receive: {e}")))?;
            if n == 0 {
                return Err(Failure::new(
                    Reason::Expect,
                    format!(
                        "connection closed after {} bytes without a match for /{}/",
                        received.len(),
                        pattern.as_str()
                    ),
                ));
            }
            received.extend_from_slice(&chunk[..n]);
        }
    }

    /// The `query_response` dialogue, line by line, as blackbox_exporter holds it.
    async fn dialogue(&self, mut stream: Box<dyn Io>, name: &str, obs: &mut Obs) -> Result<(), Failure> {
        let mut lines = Lines::default();
        let mut captures: Vec<(Option<String>, Vec<u8>)> = Vec::new();
        for (i, step) in self.dialogue.iter().enumerate() {
            let step_no = i + 1;
            if let Some(pattern) = &step.expect {
                let mut last: Option<Vec<u8>> = None;
                loop {
                    // Ends before the scheduler's timeout, saying what it waited for and what
                    // came instead (a `454 TLS not available` where `^220` was expected).
                    let read = match super::wait_until() {
                        Some(until) => match tokio::time::timeout_at(until.into(), lines.next(&mut stream)).await {
                            Ok(read) => read,
                            Err(_) => {
                                let instead = match &last {
                                    Some(line) => format!(
                                        "; the last line was `{}`",
                                        String::from_utf8_lossy(line)
                                            .trim_end()
                                            .chars()
                                            .take(120)
                                            .collect::<String>()
                                    ),
                                    None => "; no line came".to_string(),
                                };
                                return Err(Failure::new(
                                    Reason::Expect,
                                    format!(
                                        "step {step_no}: no line matching /{}/ before the timeout{instead}",
                                        pattern.as_str()
                                    ),
                                ));
                            }
                        },
                        None => lines.next(&mut stream).await,
                    };
                    let line = match read {
                        Ok(Some(line)) => line,
                        Ok(None) => {
                            obs.failed_due_to_regex = true;
                            return Err(Failure::new(
                                Reason::Expect,
                                format!(
                                    "step {step_no}: connection closed without a line matching /{}/",
                                    pattern.as_str()
                                ),
                            ));
                        }
                        Err(e) => return Err(Failure::new(Reason::Expect, format!("step {step_no}: receive: {e}"))),
                    };
                    let found = pattern.0.captures(&line);
                    if found.is_none() {
                        last = Some(line.clone());
                    }
                    if let Some(found) = found {
                        captures = pattern
                            .0
                            .capture_names()
                            .zip(found.iter())
                            .map(|(name, m)| {
                                (
                                    name.map(str::to_string),
                                    m.map(|m| m.as_bytes().to_vec()).unwrap_or_default(),
                                )
                            })
                            .collect();
                        break;
                    }
                }
            }
            if let Some(send) = &step.send {
                let mut line = expand(send, &captures);
                if !line.is_empty() {
                    line.push(b'\n');
                    write_all(&mut stream, &line).await?;
                }
            }
            if step.starttls {
                let Some(config) = &self.tls else {
                    return Err(Failure::new(Reason::Internal, "starttls without a TLS config"));
                };
                let shaken = self.handshake(config, name, stream, obs).await?;
                stream = Box::new(shaken);
                lines = Lines::default();
            }
        }
        let _ = stream.shutdown().await;
        Ok(())
    }
}

async fn write_all(stream: &mut Box<dyn Io>, data: &[u8]) -> Result<(), Failure> {
    let send = |e: std::io::Error| Failure::new(Reason::Expect, format!("send: {e}"));
    stream.write_all(data).await.map_err(send)?;
    stream.flush().await.map_err(send)
}

/// Go's `Regexp.Expand`: `$1`, `${1}`, `$name`, `${name}` and `$$` in `template`, from the
/// groups of the last match (a group that did not take part is empty).
fn expand(template: &str, groups: &[(Option<String>, Vec<u8>)]) -> Vec<u8> {
    let lookup = |name: &str| -> &[u8] {
        let found = match name.parse::<usize>() {
            Ok(index) => groups.get(index),
            Err(_) => groups.iter().find(|(n, _)| n.as_deref() == Some(name)),
        };
        found.map_or(&[][..], |(_, text)| text.as_slice())
    };
    let bytes = template.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let rest = &template[i + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push(b'$');
            i = template.len() - after.len();
        } else if let Some(inner) = rest.strip_prefix('{')
            && let Some(end) = inner.find('}')
            && end > 0
        {
            out.extend_from_slice(lookup(&inner[..end]));
            i += 2 + end + 1;
        } else {
            let len = rest
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            if len == 0 {
                // Go keeps a `$` that starts no name as it is.
                out.push(b'$');
                i += 1;
            } else {
                out.extend_from_slice(lookup(&rest[..len]));
                i += 1 + len;
            }
        }
    }
    out
}

/// A line reader as Go's `bufio.Scanner` splits lines: on `\n`, a trailing `\r` dropped, at
/// most 64 KiB a line.
#[derive(Default)]
struct Lines {
    buffer: Vec<u8>,
    closed: bool,
}

impl Lines {
    async fn next(&mut self, stream: &mut Box<dyn Io>) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
            if self.closed {
                if self.buffer.is_empty() {
                    return Ok(None);
                }
                let mut line = std::mem::take(&mut self.buffer);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
            if self.buffer.len() >= EXPECT_BUFFER {
                return Err(std::io::Error::other("line longer than 64 KiB"));
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                self.closed = true;
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(split_address("db:5432"), Ok(("db", 5432)));
        assert_eq!(split_address("[::1]:22"), Ok(("[::1]", 22)));
        assert!(split_address("db").is_err());
        assert!(split_address(":80").is_err());
        assert!(split_address("db:http").is_err());
    }

    #[test]
    fn expansion_is_gos() {
        let groups = vec![
            (None, b"220 mx.test ESMTP".to_vec()),
            (None, b"mx.test".to_vec()),
            (Some("greeting".to_string()), b"ESMTP".to_vec()),
        ];
        assert_eq!(expand("HELO ${1}", &groups), b"HELO mx.test");
        assert_eq!(expand("$1 $greeting $$ $9", &groups), b"mx.test ESMTP $ ");
        assert_eq!(expand("${greeting}!", &groups), b"ESMTP!");
        assert_eq!(expand("cost: 5$", &groups), b"cost: 5$");
    }
}
