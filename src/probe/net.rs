//! Name resolution and TCP connect with an IP-version preference, shared by every network kind.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::net::TcpStream;

use super::{Failure, Reason};

/// Which IP version to try first.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IpProtocol {
    /// IPv4 first (the default).
    #[default]
    Ip4,
    /// IPv6 first.
    Ip6,
}

/// An open connection and what it took to get it.
#[derive(Debug)]
pub struct Connected {
    /// The stream.
    pub stream: TcpStream,
    /// The address connected to.
    pub addr: SocketAddr,
    /// Time spent resolving the name.
    pub resolve: Duration,
    /// Time spent connecting (all addresses tried).
    pub connect: Duration,
}

/// Resolves `host` and connects to `port`, preferred IP version first; with `fallback` the other
/// version's addresses are tried too (after the preferred ones), otherwise only the preferred.
pub async fn connect(host: &str, port: u16, prefer: IpProtocol, fallback: bool) -> Result<Connected, Failure> {
    let started = Instant::now();
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let mut addrs: Vec<SocketAddr> = match literal.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Failure::new(Reason::Dns, format!("cannot resolve {host}: {e}")))?
            .collect(),
    };
    let preferred = |a: &SocketAddr| match prefer {
        IpProtocol::Ip4 => a.is_ipv4(),
        IpProtocol::Ip6 => a.is_ipv6(),
    };
    if fallback {
        // Stable: keeps the resolver's order within each family.
        addrs.sort_by_key(|a| !preferred(a));
    } else {
        addrs.retain(preferred);
    }
    let resolve = started.elapsed();
    if addrs.is_empty() {
        let family = match prefer {
            IpProtocol::Ip4 => "IPv4",
            IpProtocol::Ip6 => "IPv6",
        };
        return Err(Failure::new(Reason::Dns, format!("{host} has no {family} address")));
    }
    let mut last_error = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                // Requests are written whole; no need to wait for more.
                let _ = stream.set_nodelay(true);
                return Ok(Connected {
                    stream,
                    addr,
                    resolve,
                    connect: started.elapsed() - resolve,
                });
            }
            Err(e) => last_error = Some(format!("connect to {addr}: {e}")),
        }
    }
    Err(Failure::new(Reason::Connect, last_error.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refused_and_unresolvable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let err = connect("127.0.0.1", port, IpProtocol::Ip4, true)
            .await
            .expect_err("refused");
        assert_eq!(err.reason, Reason::Connect);
        let err = connect("127.0.0.1", port, IpProtocol::Ip6, false)
            .await
            .expect_err("no v6");
        assert_eq!(err.reason, Reason::Dns);
    }
}
