//! Name resolution and TCP connect with an IP-version preference and fallback, within the
//! probes' share of the process' descriptors ([`Sockets`]). What a connect learnt (how long
//! the lookup took, which address was chosen) is returned whether it succeeds or not.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{ErrorKind, TransportError};

/// The probes' descriptor budget: at most this many sockets (and database connections) open at
/// once; a probe past it waits for one within its timeout. Cheap to clone; shared by every probe
/// and kept across reloads.
#[derive(Clone, Debug, Default)]
pub struct Sockets(Option<Arc<Semaphore>>);

impl Sockets {
    /// At most `n` sockets at once.
    pub fn limited(n: usize) -> Sockets {
        Sockets(Some(Arc::new(Semaphore::new(n.clamp(1, Semaphore::MAX_PERMITS)))))
    }

    /// No limit (tests, one-shot commands).
    pub fn unlimited() -> Sockets {
        Sockets(None)
    }

    /// Waits for room for one more socket; the permit keeps its place until dropped.
    pub async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        match &self.0 {
            Some(semaphore) => semaphore.clone().acquire_owned().await.ok(),
            None => None,
        }
    }

    /// Sockets free now (`None`: unlimited).
    pub fn available(&self) -> Option<usize> {
        self.0.as_ref().map(|s| s.available_permits())
    }
}

/// A probe's TCP connection, holding its place in the [`Sockets`] budget until it closes.
#[derive(Debug)]
pub struct Socket {
    stream: TcpStream,
    _permit: Option<OwnedSemaphorePermit>,
}

impl AsyncRead for Socket {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

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

/// What a connect learnt, whether it succeeded or not.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Dialled {
    /// Time spent resolving the name (also when that failed).
    pub resolve: Duration,
    /// Time spent connecting (all addresses tried).
    pub connect: Duration,
    /// The address chosen (the one connected to, or the last one tried); `None` when the name
    /// did not resolve to an address of an allowed version.
    pub addr: Option<SocketAddr>,
}

/// Resolves `host` and connects to `port`, preferred IP version first; with `fallback` the other
/// version's addresses are tried too (after the preferred ones), otherwise only the preferred.
/// The socket takes its place in `sockets` first (waiting for one when the budget is spent).
/// `dialled` says what happened either way.
pub async fn connect(
    host: &str,
    port: u16,
    prefer: IpProtocol,
    fallback: bool,
    sockets: &Sockets,
    dialled: &mut Dialled,
) -> Result<Socket, TransportError> {
    let permit = sockets.acquire().await;
    let started = Instant::now();
    let addrs = resolve(host, port, prefer, fallback, dialled).await?;
    let resolve = dialled.resolve;
    let mut last_error = None;
    for addr in addrs {
        dialled.addr = Some(addr);
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                // Requests are written whole; no need to wait for more.
                let _ = stream.set_nodelay(true);
                dialled.connect = started.elapsed() - resolve;
                return Ok(Socket {
                    stream,
                    _permit: permit,
                });
            }
            Err(e) => last_error = Some(format!("connect to {addr}: {e}")),
        }
    }
    dialled.connect = started.elapsed() - resolve;
    Err(TransportError::new(ErrorKind::Connect, last_error.unwrap_or_default()))
}

/// Resolves `host` for `port`, preferred IP version first; with `fallback` the other version's
/// addresses follow (in the resolver's order), otherwise only the preferred are kept. Sets
/// `dialled.resolve` either way; an empty answer is an error of kind `Dns`.
pub async fn resolve(
    host: &str,
    port: u16,
    prefer: IpProtocol,
    fallback: bool,
    dialled: &mut Dialled,
) -> Result<Vec<SocketAddr>, TransportError> {
    let started = Instant::now();
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let looked_up = match literal.parse::<IpAddr>() {
        Ok(ip) => Ok(vec![SocketAddr::new(ip, port)]),
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map(|found| found.collect::<Vec<_>>())
            .map_err(|e| TransportError::new(ErrorKind::Dns, format!("cannot resolve {host}: {e}"))),
    };
    let mut addrs = match looked_up {
        Ok(addrs) => addrs,
        Err(e) => {
            dialled.resolve = started.elapsed();
            return Err(e);
        }
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
    dialled.resolve = started.elapsed();
    if addrs.is_empty() {
        let family = match prefer {
            IpProtocol::Ip4 => "IPv4",
            IpProtocol::Ip6 => "IPv6",
        };
        return Err(TransportError::new(
            ErrorKind::Dns,
            format!("{host} has no {family} address"),
        ));
    }
    Ok(addrs)
}

/// blackbox_exporter's `probe_ip_addr_hash`: FNV-1a (32 bit) over the address' bytes, 4 for an
/// IPv4 (or IPv4-mapped IPv6) address, 16 otherwise.
pub fn ip_hash(ip: IpAddr) -> u32 {
    let bytes: Vec<u8> = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.octets().to_vec(),
            None => v6.octets().to_vec(),
        },
    };
    bytes
        .iter()
        .fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refused_and_unresolvable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let sockets = Sockets::unlimited();
        let mut dialled = Dialled::default();
        let err = connect("127.0.0.1", port, IpProtocol::Ip4, true, &sockets, &mut dialled)
            .await
            .expect_err("refused");
        assert_eq!(err.kind, ErrorKind::Connect);
        assert_eq!(dialled.addr, Some(SocketAddr::from(([127, 0, 0, 1], port))));
        let mut dialled = Dialled::default();
        let err = connect("127.0.0.1", port, IpProtocol::Ip6, false, &sockets, &mut dialled)
            .await
            .expect_err("no v6");
        assert_eq!((err.kind, dialled.addr), (ErrorKind::Dns, None));
    }

    #[test]
    fn ip_hash_is_blackbox_exporters() {
        assert_eq!(ip_hash("127.0.0.1".parse().expect("ip")), 3_668_918_509);
        assert_eq!(ip_hash("::1".parse().expect("ip")), 1_751_717_746);
        assert_eq!(ip_hash("::ffff:127.0.0.1".parse().expect("ip")), 3_668_918_509);
    }

    #[tokio::test]
    async fn sockets_wait_for_their_budget() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let sockets = Sockets::limited(2);
        let a = connect(
            "127.0.0.1",
            port,
            IpProtocol::Ip4,
            true,
            &sockets,
            &mut Dialled::default(),
        )
        .await
        .expect("a");
        let _b = connect(
            "127.0.0.1",
            port,
            IpProtocol::Ip4,
            true,
            &sockets,
            &mut Dialled::default(),
        )
        .await
        .expect("b");
        assert_eq!(sockets.available(), Some(0));
        let mut dialled = Dialled::default();
        let third = tokio::time::timeout(
            Duration::from_millis(100),
            connect("127.0.0.1", port, IpProtocol::Ip4, true, &sockets, &mut dialled),
        );
        assert!(third.await.is_err(), "a third socket waits");
        drop(a);
        assert_eq!(sockets.available(), Some(1));
        let refused = connect(
            "127.0.0.1",
            1,
            IpProtocol::Ip4,
            false,
            &sockets,
            &mut Dialled::default(),
        )
        .await;
        assert!(refused.is_err());
        assert_eq!(sockets.available(), Some(1), "a failed connect gives its place back");
    }
}
