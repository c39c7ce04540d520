//! The `dns` kind: one query (name, type, class, recursion desired) to a server over UDP or TCP,
//! the response code checked against `valid_rcodes`, and the records of the answer, authority
//! and additional sections checked by regexps as blackbox_exporter does it (each record as
//! `name<TAB>ttl<TAB>class<TAB>type<TAB>data`, the text of miekg/dns). Messages are encoded and
//! decoded by hickory-proto; the query is vigil's own: one question, no EDNS, a random id, no
//! retry over TCP when a UDP answer is truncated (as blackbox).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

use super::families::{Address, Reached};
use super::{Built, CheckContext, Failure, Family, ProbeKind, Publish, Reason, Role, Verdict};
use crate::spec::BuildContext;
use crate::spec::values::Pattern;
use crate::transport::connect::{self, Dialled, IpProtocol};

/// Config of a `dns` probe.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The server, `host[:port]` (port 53 by default); a module gets it from `/probe?target=`.
    pub server: Option<String>,
    /// The name asked for.
    pub query_name: String,
    /// The record type (default A).
    #[serde(default = "default_type")]
    pub query_type: String,
    /// The class (default IN).
    #[serde(default = "default_class")]
    pub query_class: String,
    /// `udp` (the default) or `tcp`.
    #[serde(default)]
    pub transport: Transport,
    /// Ask the server to recurse (default true).
    #[serde(default = "yes")]
    pub recursion_desired: bool,
    /// Response codes that pass (default `[NOERROR]`).
    #[serde(default = "default_rcodes")]
    pub valid_rcodes: Vec<String>,
    /// Checks of the answer section.
    #[serde(default)]
    pub validate_answer_rrs: RrChecks,
    /// Checks of the authority section.
    #[serde(default)]
    pub validate_authority_rrs: RrChecks,
    /// Checks of the additional section.
    #[serde(default)]
    pub validate_additional_rrs: RrChecks,
    /// IP version to try first for the server's name (default ip4).
    #[serde(default)]
    pub ip_protocol: IpProtocol,
    /// Try the other IP version too (default true).
    #[serde(default = "yes")]
    pub ip_protocol_fallback: bool,
}

/// How the query travels.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// One datagram each way.
    #[default]
    Udp,
    /// A TCP connection, messages prefixed by their length.
    Tcp,
}

/// blackbox_exporter's checks of one section's records.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RrChecks {
    /// Fails when any record matches any of these.
    #[serde(default)]
    pub fail_if_matches_regexp: Vec<Pattern>,
    /// Fails when a record does not match every one of these, or there is no record.
    #[serde(default)]
    pub fail_if_not_matches_regexp: Vec<Pattern>,
    /// Fails when no record matches any of these, or there is no record.
    #[serde(default)]
    pub fail_if_none_matches_regexp: Vec<Pattern>,
    /// blackbox_exporter's logic, inverted in its code as in every release since: fails unless
    /// every record matches every one of these (no record passes).
    #[serde(default)]
    pub fail_if_all_match_regexp: Vec<Pattern>,
}

fn yes() -> bool {
    true
}

fn default_type() -> String {
    "A".to_string()
}

fn default_class() -> String {
    "IN".to_string()
}

fn default_rcodes() -> Vec<String> {
    vec!["NOERROR".to_string()]
}

/// The record types a query may ask for.
const TYPES: &[(&str, RecordType)] = &[
    ("A", RecordType::A),
    ("AAAA", RecordType::AAAA),
    ("CNAME", RecordType::CNAME),
    ("MX", RecordType::MX),
    ("NS", RecordType::NS),
    ("PTR", RecordType::PTR),
    ("SOA", RecordType::SOA),
    ("SRV", RecordType::SRV),
    ("TXT", RecordType::TXT),
    ("CAA", RecordType::CAA),
    ("ANY", RecordType::ANY),
];

/// The classes a query may ask in.
const CLASSES: &[(&str, DNSClass)] = &[
    ("IN", DNSClass::IN),
    ("CH", DNSClass::CH),
    ("HS", DNSClass::HS),
    ("ANY", DNSClass::ANY),
];

/// Response codes by their names (miekg/dns's, as blackbox_exporter's `valid_rcodes` has them),
/// and the bounded values of vigil's `rcode` label.
const RCODES: &[(&str, u16)] = &[
    ("NOERROR", 0),
    ("FORMERR", 1),
    ("SERVFAIL", 2),
    ("NXDOMAIN", 3),
    ("NOTIMP", 4),
    ("REFUSED", 5),
    ("YXDOMAIN", 6),
    ("YXRRSET", 7),
    ("NXRRSET", 8),
    ("NOTAUTH", 9),
    ("NOTZONE", 10),
    ("BADSIG", 16),
    ("BADKEY", 17),
    ("BADTIME", 18),
    ("BADMODE", 19),
    ("BADNAME", 20),
    ("BADALG", 21),
    ("BADTRUNC", 22),
    ("BADCOOKIE", 23),
];

fn rcode_name(code: u16) -> &'static str {
    RCODES
        .iter()
        .find(|(_, c)| *c == code)
        .map_or("other", |(name, _)| name)
}

/// The longest message read (a TCP message's length prefix allows no more).
const MAX_MESSAGE: usize = 65_535;

/// At most this many idle sockets are kept per server, and in all (so thousands of probes of
/// as many servers do not keep a descriptor each).
const IDLE_PER_SERVER: usize = 16;
const IDLE_MAX: usize = 256;

/// A UDP socket connected to one server, with its receive buffer.
#[derive(Debug)]
pub struct UdpSocketToServer {
    socket: UdpSocket,
    buffer: Vec<u8>,
}

/// Connected UDP sockets kept between queries, per server: a query takes one (or opens one),
/// and gives it back once its answer came, so a busy `/probe` or thousands of dns probes do not
/// open, bind, connect, register and close a socket per query. A socket that failed or whose
/// query was dropped at its timeout is closed, never reused, so no late answer reaches another
/// query (and an answer must carry the query's random id anyway). The source port stays the
/// same across a socket's queries: a probe's answer is checked, not trusted for anything else.
/// Idle sockets hold a few descriptors outside the probes' budget (at most
/// [`IDLE_PER_SERVER`] per server, [`IDLE_MAX`] in all).
#[derive(Debug, Default)]
pub struct UdpSockets {
    idle: std::sync::Mutex<Idle>,
}

/// The idle sockets, by server, and how many there are in all.
#[derive(Debug, Default)]
struct Idle {
    by_server: std::collections::HashMap<SocketAddr, Vec<UdpSocketToServer>>,
    count: usize,
}

impl UdpSockets {
    async fn take(&self, addr: SocketAddr) -> Result<UdpSocketToServer, Failure> {
        let idle = {
            let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let socket = idle.by_server.get_mut(&addr).and_then(Vec::pop);
            if socket.is_some() {
                idle.count -= 1;
                // A server with no idle socket left takes no room in the map.
                if idle.by_server.get(&addr).is_some_and(Vec::is_empty) {
                    idle.by_server.remove(&addr);
                }
            }
            socket
        };
        if let Some(socket) = idle {
            return Ok(socket);
        }
        let local: SocketAddr = if addr.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let socket = UdpSocket::bind(local)
            .await
            .map_err(|e| Failure::new(Reason::Connect, format!("open a UDP socket: {e}")))?;
        socket
            .connect(addr)
            .await
            .map_err(|e| Failure::new(Reason::Connect, format!("connect to {addr}: {e}")))?;
        Ok(UdpSocketToServer {
            socket,
            buffer: Vec::with_capacity(MAX_MESSAGE),
        })
    }

    fn put(&self, addr: SocketAddr, socket: UdpSocketToServer) {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.count >= IDLE_MAX {
            return;
        }
        let kept = idle.by_server.entry(addr).or_default();
        if kept.len() < IDLE_PER_SERVER {
            kept.push(socket);
            idle.count += 1;
        }
    }
}

/// A `dns` probe's compiled settings.
#[derive(Debug)]
pub struct Dns {
    name: Name,
    query_type: RecordType,
    query_class: DNSClass,
    transport: Transport,
    recursion_desired: bool,
    valid_rcodes: Vec<u16>,
    sections: [RrChecks; 3],
    ip_protocol: IpProtocol,
    ip_protocol_fallback: bool,
}

/// What one `dns` attempt observed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Obs {
    /// The server's address was split into host and port (its name was then resolved).
    pub parsed: bool,
    /// Resolving (and for TCP, connecting to) the server.
    pub dialled: Dialled,
    /// Setting up the socket or connection, after resolving.
    pub connect: Duration,
    /// From sending the query to its answer (or the failure).
    pub request: Duration,
    /// An answer was received and decoded.
    pub answered: bool,
    /// Its response code.
    pub rcode: u16,
    /// Its records: answer, authority, additional.
    pub counts: [u32; 3],
    /// A SOA query: the serial of the last SOA record of the answer (0 without one).
    pub serial: Option<u32>,
}

impl Reached for Obs {
    fn reached(&self) -> Option<&Dialled> {
        self.parsed.then_some(&self.dialled)
    }
}

/// The three sections, as the messages and metrics name them.
const SECTIONS: [&str; 3] = ["answer", "authority", "additional"];

fn phases(seen: &super::families::Seen<'_, Dns>, out: &mut dyn super::families::Emit) {
    let obs = seen.obs;
    let resolve = super::families::lookup_time(&obs.dialled);
    out.gauge(&[("phase", "resolve")], resolve.as_secs_f64());
    out.gauge(&[("phase", "connect")], obs.connect.as_secs_f64());
    out.gauge(&[("phase", "request")], obs.request.as_secs_f64());
}

impl ProbeKind for Dns {
    const NAME: &'static str = "dns";
    const REASONS: &'static [Reason] = &[
        Reason::Dns,
        Reason::Connect,
        Reason::Protocol,
        Reason::Rcode,
        Reason::Records,
    ];
    const FAMILIES: &'static [Family<Self>] = &[
        Family {
            name: "probe_dns_duration",
            help: "Duration of DNS request by phase",
            unit: Some(super::families::Unit::Seconds),
            publish: Publish::Probe,
            emit: phases,
        },
        Family {
            name: "probe_dns_answer_rrs",
            help: "Returns number of entries in the answer resource record list",
            unit: None,
            publish: Publish::Probe,
            emit: |seen, out| out.gauge(&[], f64::from(seen.obs.counts[0])),
        },
        Family {
            name: "probe_dns_authority_rrs",
            help: "Returns number of entries in the authority resource record list",
            unit: None,
            publish: Publish::Probe,
            emit: |seen, out| out.gauge(&[], f64::from(seen.obs.counts[1])),
        },
        Family {
            name: "probe_dns_additional_rrs",
            help: "Returns number of entries in the additional resource record list",
            unit: None,
            publish: Publish::Probe,
            emit: |seen, out| out.gauge(&[], f64::from(seen.obs.counts[2])),
        },
        Family {
            name: "probe_dns_query_succeeded",
            help: "Displays whether or not the query was executed successfully",
            unit: None,
            publish: Publish::Probe,
            emit: |seen, out| out.gauge(&[], f64::from(u8::from(seen.obs.answered))),
        },
        Address::<Self>::IP_PROTOCOL,
        Address::<Self>::IP_ADDR_HASH,
        Address::<Self>::DNS_LOOKUP_TIME,
        Family {
            name: "probe_dns_serial",
            help: "Returns the serial number of the zone",
            unit: None,
            publish: Publish::Probe,
            emit: |seen, out| {
                if let (Some(serial), true) = (seen.obs.serial, seen.obs.answered) {
                    out.gauge(&[], f64::from(serial));
                }
            },
        },
        Family {
            name: "vigil_probe_dns_rcode",
            help: "The response code of the last answer (1 for its name; none before an answer).",
            unit: None,
            publish: Publish::Metrics,
            emit: |seen, out| {
                if seen.ran && seen.obs.answered {
                    out.gauge(&[("rcode", rcode_name(seen.obs.rcode))], 1.0);
                }
            },
        },
        Family {
            name: "vigil_probe_dns_records",
            help: "Records in each section of the last answer.",
            unit: None,
            publish: Publish::Metrics,
            emit: |seen, out| {
                if seen.ran && seen.obs.answered {
                    for (section, count) in SECTIONS.iter().zip(seen.obs.counts) {
                        out.gauge(&[("section", section)], f64::from(count));
                    }
                }
            },
        },
    ];

    type Spec = Spec;
    type Obs = Obs;
    type Kept = ();

    fn build(spec: Spec, ctx: &mut BuildContext, path: &str, role: Role) -> Option<Built<Self>> {
        match (role, &spec.server) {
            (Role::Scheduled, Some(server)) => {
                if let Err(e) = split_server(server) {
                    ctx.error(format!("{path}.server"), e);
                }
            }
            (Role::Module, Some(_)) => ctx.error(
                format!("{path}.server"),
                "a /probe module takes its server from the request; remove `server`",
            ),
            (Role::Scheduled, None) | (Role::Module, None) => {}
        }
        let name = match Name::from_ascii(&spec.query_name) {
            Ok(mut name) => {
                name.set_fqdn(true);
                Some(name)
            }
            Err(_) => {
                ctx.error(
                    format!("{path}.query_name"),
                    format!(
                        "`{}` is not a domain name (labels of 1 to 63 characters, separated by dots)",
                        spec.query_name
                    ),
                );
                None
            }
        };
        let query_type = lookup(
            TYPES,
            &spec.query_type,
            ctx,
            &format!("{path}.query_type"),
            "record type",
        );
        let query_class = lookup(CLASSES, &spec.query_class, ctx, &format!("{path}.query_class"), "class");
        let mut valid_rcodes = Vec::new();
        for (i, rcode) in spec.valid_rcodes.iter().enumerate() {
            match RCODES.iter().find(|(n, _)| n.eq_ignore_ascii_case(rcode)) {
                Some((_, code)) => valid_rcodes.push(*code),
                None => ctx.error(
                    format!("{path}.valid_rcodes.{i}"),
                    format!(
                        "unknown response code `{rcode}` (one of {})",
                        RCODES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                    ),
                ),
            }
        }
        if spec.valid_rcodes.is_empty() {
            ctx.error(
                format!("{path}.valid_rcodes"),
                "empty: no answer could pass; leave it out for [NOERROR]",
            );
        }
        let target = match role {
            Role::Scheduled => Some(spec.server.clone().unwrap_or_else(system_server)),
            Role::Module => None,
        };
        let settings = Dns {
            name: name?,
            query_type: query_type?,
            query_class: query_class?,
            transport: spec.transport,
            recursion_desired: spec.recursion_desired,
            valid_rcodes,
            sections: [
                spec.validate_answer_rrs,
                spec.validate_authority_rrs,
                spec.validate_additional_rrs,
            ],
            ip_protocol: spec.ip_protocol,
            ip_protocol_fallback: spec.ip_protocol_fallback,
        };
        Some(Built {
            settings,
            target,
            freshness: None,
        })
    }

    async fn check(&self, target: &str, cx: &CheckContext, obs: &mut Obs) -> Verdict {
        match self.attempt(target, cx, obs).await {
            Ok(()) => Verdict::up(),
            Err(failure) => failure.into(),
        }
    }
}

fn lookup<T: Copy>(table: &[(&str, T)], value: &str, ctx: &mut BuildContext, path: &str, what: &str) -> Option<T> {
    let found = table
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(value))
        .map(|(_, t)| *t);
    if found.is_none() {
        ctx.error(
            path,
            format!(
                "unknown {what} `{value}` (one of {})",
                table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ),
        );
    }
    found
}

/// The first `nameserver` of /etc/resolv.conf, else 127.0.0.1:53 (as the C library does).
fn system_server() -> String {
    let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    conf.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .map(str::trim)
        .find(|server| !server.is_empty())
        .map_or_else(
            || "127.0.0.1:53".to_string(),
            |server| match server.parse::<std::net::Ipv6Addr>() {
                Ok(_) => format!("[{server}]:53"),
                Err(_) => format!("{server}:53"),
            },
        )
}

/// `host[:port]`, `[v6]` or `[v6]:port`; port 53 when none is given.
fn split_server(server: &str) -> Result<(&str, u16), String> {
    let server = server.trim();
    if server.is_empty() {
        return Err("the server is empty".to_string());
    }
    if let Some(rest) = server.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{server}`: `[` without `]`"))?;
        return match after.strip_prefix(':') {
            Some(port) => Ok((host, parse_port(port, server)?)),
            None if after.is_empty() => Ok((host, 53)),
            None => Err(format!("`{server}` is not host:port")),
        };
    }
    if server.matches(':').count() > 1 {
        // A bare IPv6 address.
        return Ok((server, 53));
    }
    match server.split_once(':') {
        Some((host, port)) if !host.is_empty() => Ok((host, parse_port(port, server)?)),
        Some(_) => Err(format!("`{server}` has no host")),
        None => Ok((server, 53)),
    }
}

fn parse_port(port: &str, server: &str) -> Result<u16, String> {
    port.parse()
        .map_err(|_| format!("`{port}` in `{server}` is not a port number"))
}

/// A record as miekg/dns writes it (`RR.String()`), which blackbox_exporter's regexps see.
fn record_text(record: &Record) -> String {
    let data = match record.data() {
        RData::TXT(txt) => txt
            .iter()
            .map(|part| format!("\"{}\"", String::from_utf8_lossy(part).replace('"', "\\\"")))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    };
    format!(
        "{}\t{}\t{}\t{}\t{}",
        record.name(),
        record.ttl(),
        record.dns_class(),
        record.record_type(),
        data
    )
}

/// The first record of `texts` that `pattern` misses.
fn first_miss<'a>(texts: &'a [String], pattern: &Pattern) -> Option<&'a String> {
    texts.iter().find(|t| !pattern.is_match(t.as_bytes()))
}

/// The first failed check of one section's records, as blackbox_exporter orders them.
fn check_section(checks: &RrChecks, records: &[Record]) -> Option<String> {
    let texts: Vec<String> = records.iter().map(record_text).collect();
    let matched = |p: &Pattern, t: &String| p.is_match(t.as_bytes());
    for pattern in &checks.fail_if_matches_regexp {
        if let Some(text) = texts.iter().find(|t| matched(pattern, t)) {
            return Some(format!(
                "`{text}` matches fail_if_matches_regexp /{}/",
                pattern.as_str()
            ));
        }
    }
    for pattern in &checks.fail_if_all_match_regexp {
        if let Some(text) = first_miss(&texts, pattern) {
            return Some(format!(
                "`{text}` does not match fail_if_all_match_regexp /{}/ (blackbox_exporter's inverted logic)",
                pattern.as_str()
            ));
        }
    }
    if !checks.fail_if_not_matches_regexp.is_empty() && texts.is_empty() {
        return Some("no record to match fail_if_not_matches_regexp".to_string());
    }
    for pattern in &checks.fail_if_not_matches_regexp {
        if let Some(text) = first_miss(&texts, pattern) {
            return Some(format!(
                "`{text}` does not match fail_if_not_matches_regexp /{}/",
                pattern.as_str()
            ));
        }
    }
    let none = &checks.fail_if_none_matches_regexp;
    if !none.is_empty() && !texts.iter().any(|t| none.iter().any(|p| matched(p, t))) {
        return Some(format!(
            "no record of {} matches fail_if_none_matches_regexp",
            texts.len()
        ));
    }
    None
}

impl Dns {
    fn query(&self) -> Result<(u16, Vec<u8>), Failure> {
        let id = fastrand::u16(..);
        let mut query = Query::query(self.name.clone(), self.query_type);
        query.set_query_class(self.query_class);
        let mut message = Message::new();
        message
            .set_id(id)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(self.recursion_desired)
            .add_query(query);
        let bytes = message
            .to_vec()
            .map_err(|e| Failure::new(Reason::Internal, format!("encode the query: {e}")))?;
        Ok((id, bytes))
    }

    async fn attempt(&self, target: &str, cx: &CheckContext, obs: &mut Obs) -> Result<(), Failure> {
        let (host, port) = split_server(target).map_err(|e| Failure::new(Reason::Dns, e))?;
        obs.parsed = true;
        let (id, query) = self.query()?;
        let reply = match self.transport {
            Transport::Udp => self.over_udp(host, port, id, &query, cx, obs).await?,
            Transport::Tcp => self.over_tcp(host, port, id, &query, cx, obs).await?,
        };
        let message = Message::from_vec(&reply)
            .map_err(|e| Failure::new(Reason::Protocol, format!("the answer does not decode: {e}")))?;
        obs.answered = true;
        obs.rcode = u16::from(message.response_code());
        let sections = [message.answers(), message.name_servers(), message.additionals()];
        for (count, records) in obs.counts.iter_mut().zip(sections) {
            *count = u32::try_from(records.len()).unwrap_or(u32::MAX);
        }
        if self.query_type == RecordType::SOA {
            obs.serial = Some(
                message
                    .answers()
                    .iter()
                    .filter_map(|r| match r.data() {
                        RData::SOA(soa) => Some(soa.serial()),
                        _ => None,
                    })
                    .next_back()
                    .unwrap_or(0),
            );
        }
        if !self.valid_rcodes.contains(&obs.rcode) {
            return Err(Failure::new(
                Reason::Rcode,
                format!(
                    "response code {} is not in valid_rcodes [{}]",
                    rcode_name(obs.rcode),
                    self.valid_rcodes
                        .iter()
                        .map(|c| rcode_name(*c))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        for ((section, checks), records) in SECTIONS.iter().zip(&self.sections).zip(sections) {
            if let Some(why) = check_section(checks, records) {
                return Err(Failure::new(Reason::Records, format!("{section}: {why}")));
            }
        }
        Ok(())
    }

    async fn over_udp(
        &self,
        host: &str,
        port: u16,
        id: u16,
        query: &[u8],
        cx: &CheckContext,
        obs: &mut Obs,
    ) -> Result<Vec<u8>, Failure> {
        let _permit = cx.sockets.acquire().await;
        let addrs = connect::resolve(
            host,
            port,
            self.ip_protocol,
            self.ip_protocol_fallback,
            &mut obs.dialled,
        )
        .await?;
        let addr: SocketAddr = addrs[0];
        obs.dialled.addr = Some(addr);
        let started = Instant::now();
        let mut socket = cx.udp.take(addr).await?;
        obs.connect = started.elapsed();
        let sent = Instant::now();
        let outcome = async {
            socket
                .socket
                .send(query)
                .await
                .map_err(|e| Failure::new(Reason::Connect, format!("send to {addr}: {e}")))?;
            loop {
                socket.buffer.clear();
                let n = socket
                    .socket
                    .recv_buf(&mut socket.buffer)
                    .await
                    .map_err(|e| Failure::new(Reason::Connect, format!("receive from {addr}: {e}")))?;
                // An answer to another query (or none at all) is not ours: wait on.
                if n >= 2 && u16::from_be_bytes([socket.buffer[0], socket.buffer[1]]) == id {
                    return Ok(socket.buffer.clone());
                }
            }
        }
        .await;
        obs.request = sent.elapsed();
        if outcome.is_ok() {
            // Its query is answered: nothing more is on its way to it.
            cx.udp.put(addr, socket);
        }
        outcome
    }

    async fn over_tcp(
        &self,
        host: &str,
        port: u16,
        id: u16,
        query: &[u8],
        cx: &CheckContext,
        obs: &mut Obs,
    ) -> Result<Vec<u8>, Failure> {
        let mut socket = connect::connect(
            host,
            port,
            self.ip_protocol,
            self.ip_protocol_fallback,
            &cx.sockets,
            &mut obs.dialled,
        )
        .await?;
        obs.connect = obs.dialled.connect;
        let sent = Instant::now();
        let outcome = async {
            let length = u16::try_from(query.len())
                .map_err(|_| Failure::new(Reason::Internal, "the query is longer than a TCP message"))?;
            let mut framed = length.to_be_bytes().to_vec();
            framed.extend_from_slice(query);
            socket
                .write_all(&framed)
                .await
                .map_err(|e| Failure::new(Reason::Connect, format!("send: {e}")))?;
            let mut prefix = [0u8; 2];
            socket
                .read_exact(&mut prefix)
                .await
                .map_err(|e| Failure::new(Reason::Protocol, format!("no answer: {e}")))?;
            let mut reply = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
            socket
                .read_exact(&mut reply)
                .await
                .map_err(|e| Failure::new(Reason::Protocol, format!("a short answer: {e}")))?;
            if reply.len() < 2 || u16::from_be_bytes([reply[0], reply[1]]) != id {
                return Err(Failure::new(Reason::Protocol, "the answer is for another query"));
            }
            Ok(reply)
        }
        .await;
        obs.request = sent.elapsed();
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_split_with_port_53_by_default() {
        assert_eq!(split_server("127.0.0.1"), Ok(("127.0.0.1", 53)));
        assert_eq!(split_server("127.0.0.1:5353"), Ok(("127.0.0.1", 5353)));
        assert_eq!(split_server("[::1]:5353"), Ok(("::1", 5353)));
        assert_eq!(split_server("[::1]"), Ok(("::1", 53)));
        assert_eq!(split_server("::1"), Ok(("::1", 53)));
        assert_eq!(split_server("ns.example:53"), Ok(("ns.example", 53)));
        assert!(split_server("ns.example:99999").is_err());
        assert!(split_server(":53").is_err());
        assert!(split_server("[::1").is_err());
    }

    #[test]
    fn rcode_names_are_bounded() {
        assert_eq!(rcode_name(3), "NXDOMAIN");
        assert_eq!(rcode_name(4000), "other");
    }
}
