//! The `icmp` kind against the kernel itself: echo requests to 127.0.0.1 and ::1, answered by
//! the kernel's own ICMP stack.
//! - In this process (root here): whichever sockets it may open, one socket for every probe.
//! - As an unprivileged user inside a private network namespace (`unshare --net`, `setpriv`),
//!   where `net.ipv4.ping_group_range` is opened for that user's group only: unprivileged ICMP
//!   sockets, and packet loss made by iptables rules of that namespace alone (the host's
//!   firewall is never touched).
//! - As the same user with the range closed: the load fails and says what to grant.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::common;

use axum::http::StatusCode;
use vigil::app::App;
use vigil::probe::{Level, Reason};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoes_from_loopback_over_both_ip_versions() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        "probes:\n\
         - {name: v4, kind: icmp, host: 127.0.0.1, packets: 3, packet_interval: 10ms}\n\
         - {name: v6, kind: icmp, host: '::1', packets: 2, packet_interval: 10ms}\n\
         - {name: big, kind: icmp, host: 127.0.0.1, payload_size: 1400, dont_fragment: true, ttl: 5}\n\
         - {name: unresolvable, kind: icmp, host: no-such-host.invalid}\n",
        dir.path(),
    );
    for name in ["v4", "v6", "big"] {
        let outcome = common::run(&config, name).await;
        assert_eq!(
            (outcome.level, outcome.reason),
            (Level::Up, None),
            "{name}: {}",
            outcome.detail
        );
        let obs = outcome.observations.of::<vigil::probe::icmp::Icmp>().unwrap();
        assert_eq!(obs.sent, obs.received, "{name}: {obs:?}");
        assert_eq!(obs.hop_limit, Some(64), "{name}: the kernel replies with TTL 64");
        assert!(
            outcome.duration == obs.rtt && obs.rtt > std::time::Duration::ZERO,
            "{name}: the latency is the mean round trip, not the {} packets' spread: {outcome:?}",
            obs.sent
        );
    }
    let outcome = common::run(&config, "unresolvable").await;
    assert_eq!((outcome.level, outcome.reason), (Level::Down, Some(Reason::Dns)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_endpoint_publishes_blackbox_icmp_series() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        "modules:\n  ping: {kind: icmp}\n  ping6: {kind: icmp, ip_protocol: ip6}\n",
        dir.path(),
    );
    let app = App::start(config, None).unwrap();
    let router = vigil::web::router(app.clone());
    let (status, _, body) = common::get(&router, "/probe?module=ping&target=127.0.0.1", None).await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        "probe_success 1",
        "probe_ip_protocol 4",
        "probe_icmp_reply_hop_limit 64",
    ] {
        assert!(body.lines().any(|l| l == line), "missing {line:?} in:\n{body}");
    }
    for phase in ["resolve", "setup", "rtt"] {
        assert!(
            body.contains(&format!("probe_icmp_duration_seconds{{phase=\"{phase}\"}}")),
            "no {phase} phase in:\n{body}"
        );
    }
    let (_, _, body) = common::get(&router, "/probe?module=ping6&target=::1", None).await;
    for line in ["probe_success 1", "probe_ip_protocol 6"] {
        assert!(body.lines().any(|l| l == line), "missing {line:?} in:\n{body}");
    }
    let (_, _, body) = common::get(&router, "/probe?module=ping&target=no-such-host.invalid", None).await;
    assert!(body.lines().any(|l| l == "probe_success 0"), "{body}");
    assert!(!body.contains("probe_icmp_reply_hop_limit"), "{body}");
    app.stop();
}

/// Runs `script` as root inside a new network namespace (its loopback up), then `vigil
/// <args>` there as user and group 65534 with no capabilities; returns the exit status and
/// what vigil printed.
fn in_namespace(script: &str, args: &[&str]) -> (std::process::ExitStatus, String) {
    let vigil = env!("CARGO_BIN_EXE_vigil");
    let mut command = Command::new("unshare");
    command.args(["--net", "--", "sh", "-euc"]).arg(format!(
        "ip link set lo up\n{script}\nexec setpriv --reuid=65534 --regid=65534 --clear-groups \
         --inh-caps=-all --bounding-set=-all -- \"$0\" \"$@\" 2>&1"
    ));
    command.arg(vigil).args(args);
    let out = command
        .output()
        .expect("unshare and setpriv (util-linux) run the unprivileged tests");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// A config file (and its folder) that user 65534 can read and write.
fn shared_config(dir: &tempfile::TempDir, text: &str) -> String {
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let path = dir.path().join("vigil.yml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path.display().to_string()
}

#[test]
fn unprivileged_sockets_and_loss_inside_a_private_namespace() {
    let _exclusive = common::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let config = shared_config(
        &dir,
        &format!(
            "state_dir: {}\n\
             probes:\n\
             - {{name: clean, kind: icmp, host: 127.0.0.1, packets: 4, packet_interval: 10ms}}\n\
             - {{name: clean6, kind: icmp, host: '::1', packets: 2, packet_interval: 10ms}}\n\
             - {{name: half, kind: icmp, host: 127.0.0.4, packets: 4, packet_interval: 10ms, timeout: 1s}}\n\
             - {{name: half-tolerated, kind: icmp, host: 127.0.0.5, packets: 4, packet_interval: 10ms, \
                 degraded_loss: 0.75, timeout: 1s}}\n\
             - {{name: black-hole, kind: icmp, host: 127.0.0.3, packets: 2, packet_interval: 10ms, timeout: 1s}}\n",
            dir.path().join("state").display()
        ),
    );
    // Loss made inside the namespace only: every request to .3 dropped, every other reply from
    // .4 and .5.
    let rules = "echo '65534 65534' > /proc/sys/net/ipv4/ping_group_range\n\
         iptables -A INPUT -d 127.0.0.3 -p icmp --icmp-type echo-request -j DROP\n\
         iptables -A INPUT -s 127.0.0.4 -p icmp --icmp-type echo-reply -m statistic --mode nth --every 2 --packet 0 -j DROP\n\
         iptables -A INPUT -s 127.0.0.5 -p icmp --icmp-type echo-reply -m statistic --mode nth --every 2 --packet 0 -j DROP";
    let started = std::time::Instant::now();
    let (status, out) = in_namespace(rules, &["once", "--config", &config]);
    assert!(!status.success(), "some probes are not UP:\n{out}");
    assert!(
        out.contains(
            "icmp probes use unprivileged ICMP sockets (net.ipv4.ping_group_range 65534 65534 includes group 65534)"
        ),
        "the start says which sockets it uses:\n{out}"
    );
    let row = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{out}"))
            .to_string()
    };
    assert!(row("clean").contains("UP"), "{out}");
    assert!(row("clean6").contains("UP"), "{out}");
    let half = row("half");
    assert!(
        half.contains("DEGRADED") && half.contains("loss: 2 of 4 echo requests to 127.0.0.4 unanswered"),
        "{out}"
    );
    assert!(row("half-tolerated").contains("UP"), "{out}");
    let hole = row("black-hole");
    assert!(
        hole.contains("DOWN") && hole.contains("loss: no reply from 127.0.0.3 to 2 echo requests"),
        "lost within the timeout, not timed out:\n{out}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the runs with lost replies end at their 1s timeout"
    );
}

#[test]
fn without_sockets_the_load_says_what_to_grant() {
    let dir = tempfile::tempdir().unwrap();
    let config = shared_config(&dir, "probes:\n- {name: ping, kind: icmp, host: 127.0.0.1}\n");
    let (status, out) = in_namespace(
        "echo '1 0' > /proc/sys/net/ipv4/ping_group_range",
        &["check", "--config", &config],
    );
    assert!(!status.success(), "{out}");
    for said in [
        "probes[0]",
        "outside net.ipv4.ping_group_range (1 0)",
        "CAP_NET_RAW",
        "--cap-add NET_RAW",
        "AmbientCapabilities=CAP_NET_RAW",
    ] {
        assert!(out.contains(said), "missing {said:?} in:\n{out}");
    }
}
