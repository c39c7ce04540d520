//! The `tcp` kind: connect, optionally over TLS, optionally send a line and expect a reply.

use std::sync::Arc;

use rustls::ClientConfig;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::net::{self, IpProtocol};
use super::tls::{self, TlsSpec};
use super::{Built, CheckContext, Checked, Failure, Observations, Phases, Reason, Role};
use crate::spec::BuildContext;
use crate::spec::values::Pattern;

/// Config of a `tcp` probe.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// `host:port` to connect to (a module gets it from `/probe?target=`).
    pub address: Option<String>,
    /// Speak TLS after connecting (default false).
    #[serde(default)]
    pub tls: bool,
    /// TLS settings when `tls` is true.
    #[serde(default)]
    pub tls_config: TlsSpec,
    /// Bytes to send once connected (escapes such as `\r\n` are written in YAML double quotes).
    pub send: Option<String>,
    /// Regex the data received must match before the connection closes or the timeout.
    pub expect: Option<Pattern>,
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

/// A `tcp` probe's compiled settings.
#[derive(Debug)]
pub struct Settings {
    tls: Option<Arc<ClientConfig>>,
    server_name: Option<String>,
    send: Option<Vec<u8>>,
    expect: Option<Pattern>,
    ip_protocol: IpProtocol,
    ip_protocol_fallback: bool,
}

/// At most this much is read while waiting for `expect`.
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

/// The reasons this kind ends with besides the scheduler's (a connection and its exchange).
pub(crate) const REASONS: &[Reason] = &[
    Reason::Dns,
    Reason::Connect,
    Reason::Tls,
    Reason::Protocol,
    Reason::Expect,
];

pub(crate) fn build(spec: Spec, ctx: &mut BuildContext, path: &str, role: Role) -> Option<Built<Settings>> {
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
    if !spec.tls && spec.tls_config != TlsSpec::default() {
        ctx.error(format!("{path}.tls_config"), "tls_config is set but tls is false");
    }
    let tls = if spec.tls {
        Some(tls::client_config(
            &spec.tls_config,
            &[],
            ctx,
            &format!("{path}.tls_config"),
        )?)
    } else {
        None
    };
    let settings = Settings {
        tls,
        server_name: spec.tls_config.server_name,
        send: spec.send.map(String::into_bytes),
        expect: spec.expect,
        ip_protocol: spec.ip_protocol,
        ip_protocol_fallback: spec.ip_protocol_fallback,
    };
    Some(Built {
        settings,
        target: spec.address,
        freshness: None,
    })
}

/// One attempt.
pub async fn check(settings: &Settings, target: &str, context: &CheckContext) -> Checked {
    let mut obs = Observations::default();
    match attempt(settings, target, &mut obs, &context.sockets).await {
        Ok(()) => Checked::up(obs),
        Err(failure) => Checked::down(failure.reason, failure.detail, obs),
    }
}

async fn attempt(
    settings: &Settings,
    target: &str,
    obs: &mut Observations,
    sockets: &net::Sockets,
) -> Result<(), Failure> {
    let (host, port) = split_address(target).map_err(|e| Failure::new(Reason::Connect, e))?;
    let connected = net::connect(host, port, settings.ip_protocol, settings.ip_protocol_fallback, sockets).await?;
    let mut phases = Phases {
        resolve: connected.resolve,
        connect: connected.connect,
        ..Phases::default()
    };
    obs.ip_protocol = Some(if connected.addr.is_ipv4() { 4 } else { 6 });
    let result = match &settings.tls {
        None => {
            obs.tls = Some(false);
            converse(settings, connected.stream).await
        }
        Some(config) => {
            obs.tls = Some(true);
            let started = std::time::Instant::now();
            let name = settings.server_name.as_deref().unwrap_or(host);
            let mut expired = None;
            let shake = tls::handshake(config, name, connected.stream, &mut expired).await;
            phases.tls = started.elapsed();
            match shake {
                Ok(shake) => {
                    obs.tls_cert_expiry = shake.earliest_expiry;
                    converse(settings, shake.stream).await
                }
                Err(e) => {
                    obs.tls_cert_expiry = expired;
                    Err(e)
                }
            }
        }
    };
    obs.phases = Some(phases);
    result
}

async fn converse<S: AsyncRead + AsyncWrite + Unpin>(settings: &Settings, mut stream: S) -> Result<(), Failure> {
    if let Some(data) = &settings.send {
        stream
            .write_all(data)
            .await
            .map_err(|e| Failure::new(Reason::Expect, format!("send: {e}")))?;
        stream
            .flush()
            .await
            .map_err(|e| Failure::new(Reason::Expect, format!("send: {e}")))?;
    }
    let Some(pattern) = &settings.expect else {
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
}
