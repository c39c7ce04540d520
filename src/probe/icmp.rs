//! The `icmp` kind: echo requests to a host (IPv4 or IPv6, preferred version first), `packets`
//! of them per attempt `packet_interval` apart, with the round trip of each reply, the share
//! lost and the reply's TTL / hop limit. Every probe with the same socket settings shares one
//! socket ([`crate::transport::ping`]), so thousands of targets cost one descriptor and one
//! receiving task. An attempt ends when every request is answered or, before the scheduler's
//! timeout, with what is missing counted as lost.
//!
//! Its latency is the mean round trip of the replies (not the time spent between packets), for
//! the thresholds and the published duration alike.

use std::net::IpAddr;
use std::sync::Once;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::families::{Address, Emit, Reached, Seen, Unit};
use super::{Built, CheckContext, Failure, Family, Level, ProbeKind, Publish, Reason, Role, Verdict};
use crate::spec::BuildContext;
use crate::transport::connect::{self, Dialled, IpProtocol};
use crate::transport::ping::{self, DEFAULT_SIZE, Settings};

/// Config of an `icmp` probe.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The host name or address to ping (a module gets it from `/probe?target=`).
    pub host: Option<String>,
    /// Echo requests per attempt (default 1).
    #[serde(default = "one")]
    pub packets: u16,
    /// Time between two requests of one attempt (default 100ms).
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub packet_interval: Duration,
    /// Payload bytes of each request (default 28: blackbox_exporter's text).
    #[serde(default = "default_size")]
    pub payload_size: usize,
    /// Set the don't-fragment bit (IPv4; default false).
    #[serde(default)]
    pub dont_fragment: bool,
    /// TTL / hop limit of the requests (default: the system's, usually 64).
    pub ttl: Option<u8>,
    /// The share of requests lost (0 to 1) from which a run is DEGRADED (default: any loss).
    pub degraded_loss: Option<f64>,
    /// The share of requests lost (0 to 1) from which a run is DOWN (default 1: all lost).
    pub down_loss: Option<f64>,
    /// IP version to try first (default ip4).
    #[serde(default)]
    pub ip_protocol: IpProtocol,
    /// Try the other IP version too (default true).
    #[serde(default = "yes")]
    pub ip_protocol_fallback: bool,
}

fn one() -> u16 {
    1
}

fn yes() -> bool {
    true
}

fn default_interval() -> Duration {
    Duration::from_millis(100)
}

fn default_size() -> usize {
    DEFAULT_SIZE
}

/// The most requests one attempt sends.
const MAX_PACKETS: u16 = 100;
/// The largest payload: an IPv4 datagram of 65,535 bytes less its IP and ICMP headers.
const MAX_PAYLOAD: usize = 65_507;

/// An `icmp` probe's compiled settings.
#[derive(Debug)]
pub struct Icmp {
    packets: u16,
    interval: Duration,
    size: usize,
    dont_fragment: bool,
    ttl: Option<u8>,
    degraded_loss: f64,
    down_loss: f64,
    ip_protocol: IpProtocol,
    ip_protocol_fallback: bool,
}

/// What one `icmp` attempt observed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Obs {
    /// The target was a host (its name was then resolved).
    pub parsed: bool,
    /// Resolving it.
    pub dialled: Dialled,
    /// Getting the socket (opened on a probe's first use, shared after).
    pub setup: Duration,
    /// Requests sent.
    pub sent: u16,
    /// Replies received.
    pub received: u16,
    /// The mean round trip of the replies.
    pub rtt: Duration,
    /// The last reply's TTL / hop limit, when the kernel said.
    pub hop_limit: Option<u8>,
    /// The probe's loss thresholds (DEGRADED, DOWN), to judge an attempt cut at its timeout.
    pub limits: (f64, f64),
}

impl Reached for Obs {
    fn reached(&self) -> Option<&Dialled> {
        self.parsed.then_some(&self.dialled)
    }
}

impl Obs {
    fn loss(&self) -> Option<f64> {
        (self.sent > 0).then(|| f64::from(self.sent - self.received) / f64::from(self.sent))
    }
}

fn phases(seen: &Seen<'_, Icmp>, out: &mut dyn Emit) {
    let obs = seen.obs;
    let resolve = super::families::lookup_time(&obs.dialled);
    out.gauge(&[("phase", "resolve")], resolve.as_secs_f64());
    out.gauge(&[("phase", "setup")], obs.setup.as_secs_f64());
    out.gauge(&[("phase", "rtt")], obs.rtt.as_secs_f64());
}

impl ProbeKind for Icmp {
    const NAME: &'static str = "icmp";
    const REASONS: &'static [Reason] = &[Reason::Dns, Reason::Connect, Reason::Loss];
    const FAMILIES: &'static [Family<Self>] = &[
        Family {
            name: "probe_icmp_duration",
            help: "Duration of icmp request by phase",
            unit: Some(Unit::Seconds),
            publish: Publish::Probe,
            emit: phases,
        },
        Address::<Self>::IP_PROTOCOL,
        Address::<Self>::IP_ADDR_HASH,
        Address::<Self>::DNS_LOOKUP_TIME,
        Family {
            name: "probe_icmp_reply_hop_limit",
            help: "Replied packet hop limit (TTL for ipv4)",
            unit: None,
            publish: Publish::Probe,
            emit: |seen, out| {
                if let (Some(hops), true) = (seen.obs.hop_limit, seen.obs.received > 0) {
                    out.gauge(&[], f64::from(hops));
                }
            },
        },
        Family {
            name: "vigil_probe_icmp_loss_ratio",
            help: "Share of the last run's echo requests that got no reply (0 to 1).",
            unit: None,
            publish: Publish::Metrics,
            emit: |seen, out| {
                if let (Some(loss), true) = (seen.obs.loss(), seen.ran) {
                    out.gauge(&[], loss);
                }
            },
        },
        Family {
            name: "vigil_probe_icmp_reply_hop_limit",
            help: "TTL (IPv4) or hop limit (IPv6) of the last reply: a change means another route.",
            unit: None,
            publish: Publish::Metrics,
            emit: |seen, out| {
                if let (Some(hops), true) = (seen.obs.hop_limit, seen.ran && seen.obs.received > 0) {
                    out.gauge(&[], f64::from(hops));
                }
            },
        },
    ];

    type Spec = Spec;
    type Obs = Obs;
    type Kept = ();

    fn build(spec: Spec, ctx: &mut BuildContext, path: &str, role: Role) -> Option<Built<Self>> {
        let before = ctx.error_count();
        match (role, &spec.host) {
            (Role::Scheduled, None) => ctx.error(path, "missing key `host`"),
            (Role::Scheduled, Some(host)) if host.trim().is_empty() => {
                ctx.error(format!("{path}.host"), "the host is empty")
            }
            (Role::Module, Some(_)) => ctx.error(
                format!("{path}.host"),
                "a /probe module takes its host from the request; remove `host`",
            ),
            _ => {}
        }
        if spec.packets == 0 || spec.packets > MAX_PACKETS {
            ctx.error(
                format!("{path}.packets"),
                format!(
                    "{} is out of range: 1 to {MAX_PACKETS} echo requests per run",
                    spec.packets
                ),
            );
        }
        if spec.packet_interval < Duration::from_millis(1) {
            ctx.error(format!("{path}.packet_interval"), "must be at least 1ms");
        }
        let spread = spec.packet_interval * u32::from(spec.packets.saturating_sub(1));
        if let Some(timeout) = ctx.attempt_timeout()
            && spread >= timeout
        {
            ctx.error(
                format!("{path}.packets"),
                format!(
                    "{} requests {} apart take {}, which leaves no time for a reply within the timeout of {}",
                    spec.packets,
                    humantime::format_duration(spec.packet_interval),
                    humantime::format_duration(spread),
                    humantime::format_duration(timeout)
                ),
            );
        }
        if spec.payload_size > MAX_PAYLOAD {
            ctx.error(
                format!("{path}.payload_size"),
                format!(
                    "{} bytes do not fit in one packet (at most {MAX_PAYLOAD})",
                    spec.payload_size
                ),
            );
        }
        if spec.ttl == Some(0) {
            ctx.error(format!("{path}.ttl"), "must be 1 to 255");
        }
        let mut share = |key: &str, value: Option<f64>| {
            if let Some(v) = value
                && !(v > 0.0 && v <= 1.0)
            {
                ctx.error(
                    format!("{path}.{key}"),
                    format!("{v} is not a share of the requests: more than 0, at most 1"),
                );
            }
        };
        share("degraded_loss", spec.degraded_loss);
        share("down_loss", spec.down_loss);
        let down_loss = spec.down_loss.unwrap_or(1.0);
        if let Some(degraded) = spec.degraded_loss
            && degraded > down_loss
        {
            ctx.error(
                format!("{path}.degraded_loss"),
                format!("{degraded} is above down_loss {down_loss}: a run would be DOWN before it is DEGRADED"),
            );
        }
        match ping::access() {
            Ok(access) => {
                static SAID: Once = Once::new();
                SAID.call_once(|| tracing::info!("icmp probes use {}", access.describe()));
            }
            Err(why) => ctx.error(path, why),
        }
        if ctx.error_count() > before {
            return None;
        }
        Some(Built {
            settings: Icmp {
                packets: spec.packets,
                interval: spec.packet_interval,
                size: spec.payload_size,
                dont_fragment: spec.dont_fragment,
                ttl: spec.ttl,
                degraded_loss: spec.degraded_loss.unwrap_or(f64::MIN_POSITIVE),
                down_loss,
                ip_protocol: spec.ip_protocol,
                ip_protocol_fallback: spec.ip_protocol_fallback,
            },
            target: match role {
                Role::Scheduled => spec.host.map(|h| host_of(&h).to_string()),
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

    fn timed_out(obs: &Obs) -> Option<Verdict> {
        (obs.sent > 0).then(|| judge(obs))
    }
}

/// The host of a configured target: a name, an address, or an IPv6 address in brackets.
fn host_of(target: &str) -> &str {
    let target = target.trim();
    target
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(target)
}

impl Icmp {
    async fn attempt(&self, target: &str, cx: &CheckContext, obs: &mut Obs) -> Result<Verdict, Failure> {
        let host = target.trim();
        if host.is_empty() {
            return Err(Failure::new(Reason::Dns, "the target is empty"));
        }
        obs.parsed = true;
        if host.starts_with('[') {
            // As blackbox_exporter, which resolves it as a name.
            return Err(Failure::new(
                Reason::Dns,
                format!("`{host}` is not a host name or address (an IPv6 address goes without brackets)"),
            ));
        }
        let addrs = connect::resolve(host, 0, self.ip_protocol, self.ip_protocol_fallback, &mut obs.dialled).await?;
        let addr = addrs[0];
        obs.dialled.addr = Some(addr);
        let ip: IpAddr = addr.ip().to_canonical();
        let started = Instant::now();
        let pinger = cx
            .pings
            .get(Settings {
                v6: ip.is_ipv6(),
                ttl: self.ttl,
                dont_fragment: self.dont_fragment && ip.is_ipv4(),
            })
            .map_err(|e| Failure::new(Reason::Connect, format!("open an ICMP socket: {e}")))?;
        obs.setup = started.elapsed();
        obs.limits = (self.degraded_loss, self.down_loss);
        let mut sent = Vec::with_capacity(usize::from(self.packets));
        for i in 0..self.packets {
            if i > 0 {
                tokio::time::sleep(self.interval).await;
            }
            let request = pinger
                .send(ip, self.size)
                .await
                .map_err(|e| Failure::new(Reason::Connect, format!("send an echo request to {ip}: {e}")))?;
            sent.push(request);
            obs.sent += 1;
        }
        // The replies are counted as they come (each stamped when it was read), with no timer
        // of the kind's own: at the attempt's timeout, what is still unanswered is lost
        // (`timed_out`).
        let mut total = Duration::ZERO;
        let mut replies: futures::stream::FuturesUnordered<_> = sent
            .iter_mut()
            .map(|request| {
                let at = request.at;
                async move { request.reply().await.map(|reply| (reply, at)) }
            })
            .collect();
        while let Some(answer) = futures::StreamExt::next(&mut replies).await {
            if let Some((reply, at)) = answer {
                obs.received += 1;
                total += reply.at.saturating_duration_since(at);
                obs.rtt = total / u32::from(obs.received);
                obs.hop_limit = reply.hop_limit.or(obs.hop_limit);
            }
        }
        Ok(judge(obs))
    }
}

/// The verdict on what an attempt saw: loss against its thresholds, the mean round trip as its
/// latency.
fn judge(obs: &Obs) -> Verdict {
    let ip = obs
        .dialled
        .addr
        .map_or_else(|| "the target".to_string(), |addr| addr.ip().to_canonical().to_string());
    let (degraded_loss, down_loss) = obs.limits;
    let lost = obs.sent - obs.received;
    let mut verdict = if obs.received == 0 {
        Verdict::down(
            Reason::Loss,
            format!(
                "no reply from {ip} to {} echo request{}",
                obs.sent,
                if obs.sent == 1 { "" } else { "s" }
            ),
        )
    } else {
        let loss = obs.loss().unwrap_or(0.0);
        let said = || format!("{lost} of {} echo requests to {ip} unanswered", obs.sent);
        if loss >= down_loss {
            Verdict::down(Reason::Loss, format!("{} (down_loss {down_loss})", said()))
        } else if loss >= degraded_loss {
            Verdict::failed(Level::Degraded, Reason::Loss, said())
        } else {
            Verdict::up()
        }
    };
    if obs.received > 0 {
        verdict.latency = Some(obs.rtt);
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(limits: (Option<f64>, Option<f64>), sent: u16, received: u16) -> (Level, Option<Reason>) {
        let obs = Obs {
            sent,
            received,
            rtt: Duration::from_millis(3),
            limits: (limits.0.unwrap_or(f64::MIN_POSITIVE), limits.1.unwrap_or(1.0)),
            ..Obs::default()
        };
        let verdict = judge(&obs);
        (verdict.level, verdict.reason)
    }

    #[test]
    fn loss_grades_the_run() {
        let any = (None, None);
        assert_eq!(judged(any, 3, 3), (Level::Up, None));
        assert_eq!(judged(any, 3, 2), (Level::Degraded, Some(Reason::Loss)));
        assert_eq!(judged(any, 3, 0), (Level::Down, Some(Reason::Loss)));
        let tolerant = (Some(0.5), Some(0.75));
        assert_eq!(judged(tolerant, 4, 3), (Level::Up, None));
        assert_eq!(judged(tolerant, 4, 2), (Level::Degraded, Some(Reason::Loss)));
        assert_eq!(judged(tolerant, 4, 1), (Level::Down, Some(Reason::Loss)));
    }

    #[test]
    fn latency_is_the_mean_round_trip() {
        let obs = Obs {
            sent: 3,
            received: 3,
            rtt: Duration::from_millis(7),
            limits: (f64::MIN_POSITIVE, 1.0),
            ..Obs::default()
        };
        assert_eq!(judge(&obs).latency, Some(Duration::from_millis(7)));
        let lost = Obs {
            sent: 1,
            limits: (f64::MIN_POSITIVE, 1.0),
            ..Obs::default()
        };
        assert_eq!(judge(&lost).latency, None);
        // An attempt cut at its timeout is judged by what it saw; one that sent nothing is not.
        assert_eq!(Icmp::timed_out(&lost).map(|v| v.reason), Some(Some(Reason::Loss)));
        assert_eq!(Icmp::timed_out(&Obs::default()), None);
    }

    #[test]
    fn hosts_come_bare_or_in_brackets() {
        assert_eq!(host_of(" [::1] "), "::1");
        assert_eq!(host_of("example.org"), "example.org");
    }
}
