//! ICMP echo for the `icmp` kind: one socket per address family and socket settings (TTL,
//! don't-fragment) serves every target, and replies are matched to their request by sequence
//! number (and by identifier on raw sockets), by the address they come from and by their
//! payload. A receiving task per socket stamps each reply as it is read, so a round trip is the
//! network's, not the wait of the probe that sent it.
//!
//! Two kinds of socket, chosen once per process ([`access`]):
//! - unprivileged ICMP sockets (`SOCK_DGRAM`, `IPPROTO_ICMP`), which Linux grants to the groups
//!   in `net.ipv4.ping_group_range` (for IPv6 as well); the kernel owns the identifier and keeps
//!   other processes' replies away;
//! - raw sockets, with `CAP_NET_RAW`; they see every ICMP packet of the host, so replies are
//!   filtered by an identifier of their own.

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use nix::sys::socket::{
    self, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrStorage, sockopt,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

/// How this process sends ICMP echo requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Unprivileged ICMP sockets (`net.ipv4.ping_group_range`).
    Datagram,
    /// Raw sockets (`CAP_NET_RAW`).
    Raw,
}

impl Access {
    /// What it is, for the start-up line.
    pub fn describe(self) -> String {
        match self {
            Access::Datagram => format!(
                "unprivileged ICMP sockets (net.ipv4.ping_group_range {} includes group {})",
                ping_group_range(),
                rustix::process::getgid().as_raw()
            ),
            Access::Raw => "raw ICMP sockets (CAP_NET_RAW)".to_string(),
        }
    }
}

fn ping_group_range() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
        .map(|r| r.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "(unreadable)".to_string())
}

/// Which sockets this process may open for ICMP echo, tried once: unprivileged ones first (as
/// ping and blackbox_exporter do), raw ones next. The error says what to grant.
pub fn access() -> Result<Access, String> {
    static ACCESS: OnceLock<Result<Access, String>> = OnceLock::new();
    ACCESS
        .get_or_init(|| {
            let open = |ty| socket::socket(AddressFamily::Inet, ty, SockFlag::SOCK_CLOEXEC, SockProtocol::Icmp);
            if open(SockType::Datagram).is_ok() {
                return Ok(Access::Datagram);
            }
            if open(SockType::Raw).is_ok() {
                return Ok(Access::Raw);
            }
            Err(format!(
                "icmp probes need unprivileged ICMP sockets or the CAP_NET_RAW capability, and this process has \
                 neither: its group {gid} is outside net.ipv4.ping_group_range ({range}) and it may not open raw \
                 sockets. Grant one of them: the sysctl net.ipv4.ping_group_range=\"0 2147483647\" (Docker: --sysctl; \
                 Kubernetes: the pod's securityContext.sysctls), or CAP_NET_RAW (Docker: --cap-add NET_RAW; \
                 Kubernetes: securityContext.capabilities.add [NET_RAW]; systemd: AmbientCapabilities=CAP_NET_RAW)",
                gid = rustix::process::getgid().as_raw(),
                range = ping_group_range(),
            ))
        })
        .clone()
}

/// The settings a socket is opened with; probes that agree share one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Settings {
    /// IPv6 (ICMPv6) rather than IPv4.
    pub v6: bool,
    /// TTL / hop limit of the requests (`None`: the system's default).
    pub ttl: Option<u8>,
    /// Set the don't-fragment bit (IPv4).
    pub dont_fragment: bool,
}

/// A reply to one echo request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reply {
    /// When it was read.
    pub at: Instant,
    /// Its TTL (IPv4) or hop limit (IPv6), when the kernel said.
    pub hop_limit: Option<u8>,
}

/// The sockets of a process, one per [`Settings`], opened on first use and kept.
#[derive(Debug, Default)]
pub struct Pingers {
    open: Mutex<HashMap<Settings, Arc<Pinger>>>,
}

impl Pingers {
    /// The socket for `settings`, opened now if it is the first of them.
    pub fn get(&self, settings: Settings) -> io::Result<Arc<Pinger>> {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(pinger) = open.get(&settings) {
            return Ok(pinger.clone());
        }
        let access = access().map_err(io::Error::other)?;
        let pinger = Arc::new(Pinger::open(settings, access)?);
        open.insert(settings, pinger.clone());
        Ok(pinger)
    }
}

/// One ICMP socket and the requests waiting for their reply.
#[derive(Debug)]
pub struct Pinger {
    shared: Arc<Shared>,
    receiving: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    /// The ICMP socket, registered with tokio's reactor as a datagram socket (what tokio's UDP
    /// type needs of it) and read and written with ICMP's own calls.
    socket: UdpSocket,
    settings: Settings,
    access: Access,
    /// The identifier of a raw socket's requests (the kernel sets a datagram socket's).
    ident: u16,
    next: AtomicU16,
    waiting: Mutex<BySeq>,
}

#[derive(Debug)]
struct Waiter {
    from: IpAddr,
    size: usize,
    reply: oneshot::Sender<Reply>,
}

/// blackbox_exporter's payload text.
const TEXT: &[u8] = b"Prometheus Blackbox Exporter";

/// The payload of every request of `size` bytes: blackbox_exporter's text, cut or padded with
/// zeros.
fn payload(size: usize) -> impl Iterator<Item = u8> {
    TEXT.iter().copied().chain(std::iter::repeat(0)).take(size)
}

/// Whether `data` is the payload of `size` bytes (compared in place).
fn is_payload(data: &[u8], size: usize) -> bool {
    data.len() == size && data.iter().copied().eq(payload(size))
}

/// Sequence numbers as their own hash: they are spread already, and SipHash would cost more
/// than the lookup.
#[derive(Clone, Copy, Default)]
struct SeqHasher(u64);

impl std::hash::Hasher for SeqHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u16(&mut self, n: u16) {
        self.0 = u64::from(n);
    }
}

type BySeq = HashMap<u16, Waiter, std::hash::BuildHasherDefault<SeqHasher>>;

/// The receive buffer asked for each ICMP socket.
const RECEIVE_BUFFER: usize = 4 << 20;

/// The payload size without `payload_size`: the text alone.
pub const DEFAULT_SIZE: usize = 28;

fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// RFC 1071's checksum.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl Pinger {
    fn open(settings: Settings, access: Access) -> io::Result<Pinger> {
        let (family, protocol) = if settings.v6 {
            (AddressFamily::Inet6, SockProtocol::IcmpV6)
        } else {
            (AddressFamily::Inet, SockProtocol::Icmp)
        };
        let ty = match access {
            Access::Datagram => SockType::Datagram,
            Access::Raw => SockType::Raw,
        };
        let fd =
            socket::socket(family, ty, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, protocol).map_err(errno)?;
        // Replies of thousands of targets can arrive together (and a raw socket sees the
        // requests to local addresses too): room for them, past rmem_max where allowed.
        if socket::setsockopt(&fd, sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
            let _ = socket::setsockopt(&fd, sockopt::RcvBuf, &RECEIVE_BUFFER);
        }
        if settings.v6 {
            socket::setsockopt(&fd, sockopt::Ipv6RecvHopLimit, &true).map_err(errno)?;
            if let Some(ttl) = settings.ttl {
                socket::setsockopt(&fd, sockopt::Ipv6Ttl, &i32::from(ttl)).map_err(errno)?;
            }
        } else {
            socket::setsockopt(&fd, sockopt::Ipv4RecvTtl, &true).map_err(errno)?;
            if let Some(ttl) = settings.ttl {
                socket::setsockopt(&fd, sockopt::Ipv4Ttl, &i32::from(ttl)).map_err(errno)?;
            }
            if settings.dont_fragment {
                rustix::net::sockopt::set_ip_mtu_discover(&fd, rustix::net::sockopt::Ipv4PathMtuDiscovery::DO)?;
            }
        }
        let shared = Arc::new(Shared {
            socket: UdpSocket::from_std(std::net::UdpSocket::from(fd))?,
            settings,
            access,
            ident: fastrand::u16(..),
            next: AtomicU16::new(fastrand::u16(..)),
            waiting: Mutex::new(BySeq::default()),
        });
        let receiving = tokio::spawn(receive(shared.clone()));
        Ok(Pinger { shared, receiving })
    }

    /// How this socket sends.
    pub fn access(&self) -> Access {
        self.shared.access
    }

    /// Sends one echo request of `size` payload bytes to `to`; the [`Sent`] resolves with its
    /// reply, and forgets the request when dropped.
    pub async fn send(&self, to: IpAddr, size: usize) -> io::Result<Sent> {
        let shared = &self.shared;
        let (tx, rx) = oneshot::channel();
        let seq = {
            let mut waiting = shared.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if waiting.len() >= usize::from(u16::MAX) {
                return Err(io::Error::other(
                    "65,535 echo requests are waiting on this socket already",
                ));
            }
            let mut seq = shared.next.fetch_add(1, Ordering::Relaxed);
            while waiting.contains_key(&seq) {
                seq = shared.next.fetch_add(1, Ordering::Relaxed);
            }
            waiting.insert(
                seq,
                Waiter {
                    from: to,
                    size,
                    reply: tx,
                },
            );
            seq
        };
        let sent = Sent {
            shared: shared.clone(),
            seq,
            at: Instant::now(),
            reply: rx,
        };
        let mut packet = Vec::with_capacity(8 + size);
        packet.extend_from_slice(&[if shared.settings.v6 { 128 } else { 8 }, 0, 0, 0]);
        packet.extend_from_slice(&shared.ident.to_be_bytes());
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend(payload(size));
        if !shared.settings.v6 {
            // ICMPv6's checksum covers a pseudo header: the kernel computes it.
            let sum = checksum(&packet);
            packet[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        let addr = SockaddrStorage::from(SocketAddr::new(to, 0));
        let mut sent = sent;
        let socket = &shared.socket;
        socket
            .async_io(Interest::WRITABLE, || {
                sent.at = Instant::now();
                socket::sendto(socket.as_raw_fd(), &packet, &addr, MsgFlags::empty()).map_err(errno)
            })
            .await?;
        Ok(sent)
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        self.receiving.abort();
    }
}

/// An echo request on its way.
#[derive(Debug)]
pub struct Sent {
    shared: Arc<Shared>,
    seq: u16,
    /// When it left.
    pub at: Instant,
    reply: oneshot::Receiver<Reply>,
}

impl Sent {
    /// Its reply (waits as long as the caller lets it).
    pub async fn reply(&mut self) -> Option<Reply> {
        (&mut self.reply).await.ok()
    }
}

impl Drop for Sent {
    fn drop(&mut self) {
        let mut waiting = self
            .shared
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        waiting.remove(&self.seq);
    }
}

/// Reads replies until the socket is dropped, handing each to the request it answers.
async fn receive(shared: Arc<Shared>) {
    let mut buffer = vec![0u8; 65_536];
    let mut control = nix::cmsg_space!(i32);
    let socket = &shared.socket;
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        loop {
            let read = socket.try_io(Interest::READABLE, || {
                let mut iov = [IoSliceMut::new(&mut buffer)];
                let message = socket::recvmsg::<SockaddrStorage>(
                    socket.as_raw_fd(),
                    &mut iov,
                    Some(&mut control),
                    MsgFlags::empty(),
                )
                .map_err(errno)?;
                let at = Instant::now();
                let mut hop_limit = None;
                if let Ok(cmsgs) = message.cmsgs() {
                    for cmsg in cmsgs {
                        match cmsg {
                            ControlMessageOwned::Ipv4Ttl(ttl) | ControlMessageOwned::Ipv6HopLimit(ttl) => {
                                hop_limit = u8::try_from(ttl).ok();
                            }
                            _ => {}
                        }
                    }
                }
                let from = message.address.and_then(|a: SockaddrStorage| ip_of(&a));
                Ok((message.bytes, from, hop_limit, at))
            });
            match read {
                Ok((n, Some(from), hop_limit, at)) => {
                    if let Some(reply) = buffer.get(..n) {
                        shared.dispatch(reply, from, hop_limit, at);
                    }
                }
                Ok((_, None, _, _)) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // An error queued on the socket (an unreachable port, say): nothing to match.
                Err(_) => {}
            }
        }
    }
}

fn ip_of(addr: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
}

impl Shared {
    fn dispatch(&self, packet: &[u8], from: IpAddr, mut hop_limit: Option<u8>, at: Instant) {
        let mut icmp = packet;
        if !self.settings.v6 && self.access == Access::Raw {
            // A raw IPv4 socket reads the IP header too.
            let Some(first) = packet.first() else { return };
            let header = usize::from(first & 0x0f) * 4;
            if hop_limit.is_none() {
                hop_limit = packet.get(8).copied();
            }
            icmp = packet.get(header..).unwrap_or_default();
        }
        let reply_type = if self.settings.v6 { 129 } else { 0 };
        if icmp.len() < 8 || icmp[0] != reply_type || icmp[1] != 0 {
            return;
        }
        let ident = u16::from_be_bytes([icmp[4], icmp[5]]);
        if self.access == Access::Raw && ident != self.ident {
            return;
        }
        let seq = u16::from_be_bytes([icmp[6], icmp[7]]);
        let mut waiting = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let matches = waiting
            .get(&seq)
            .is_some_and(|w| same_host(w.from, from) && is_payload(&icmp[8..], w.size));
        if matches && let Some(waiter) = waiting.remove(&seq) {
            let _ = waiter.reply.send(Reply { at, hop_limit });
        }
    }
}

/// The address a reply comes from is the one the request went to (an IPv4-mapped IPv6 address
/// is its IPv4 address).
fn same_host(to: IpAddr, from: IpAddr) -> bool {
    to.to_canonical() == from.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_as_rfc_1071_has_it() {
        // An echo request with id 0, seq 1 and no payload: 0xf7fe.
        assert_eq!(checksum(&[8, 0, 0, 0, 0, 0, 0, 1]), 0xf7fe);
        // An odd length pads with a zero byte.
        assert_eq!(checksum(&[0xff]), !0xff00);
    }

    #[test]
    fn payload_is_blackbox_exporters_text_cut_or_padded() {
        assert_eq!(
            payload(DEFAULT_SIZE).collect::<Vec<_>>(),
            b"Prometheus Blackbox Exporter".to_vec()
        );
        assert_eq!(payload(4).collect::<Vec<_>>(), b"Prom".to_vec());
        assert_eq!(payload(30).collect::<Vec<_>>()[28..], [0, 0]);
        assert!(is_payload(b"Prom", 4));
        assert!(!is_payload(b"Prom", 5));
        assert!(!is_payload(b"Prox", 4));
    }

    #[tokio::test]
    async fn loopback_answers_on_one_socket() {
        let pingers = Pingers::default();
        let pinger = pingers
            .get(Settings {
                v6: false,
                ttl: None,
                dont_fragment: false,
            })
            .expect("an ICMP socket (unprivileged or raw)");
        let mut a = pinger.send("127.0.0.1".parse().expect("ip"), 28).await.expect("send");
        let mut b = pinger.send("127.0.0.2".parse().expect("ip"), 100).await.expect("send");
        let (ra, rb) = tokio::join!(a.reply(), b.reply());
        let (ra, rb) = (ra.expect("a reply"), rb.expect("b reply"));
        assert!(ra.at >= a.at && rb.at >= b.at);
        assert_eq!(ra.hop_limit, Some(64), "loopback replies with the default TTL");
        drop((a, b));
        assert!(pinger.shared.waiting.lock().expect("lock").is_empty());
    }
}
