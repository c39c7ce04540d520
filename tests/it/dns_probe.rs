//! The `dns` kind against a real DNS server: Debian's `dnsmasq` (package `dnsmasq-base`),
//! started by the test on 127.0.0.1 with records of its own (no upstream, no hosts file, no
//! resolv.conf), stopped when the test ends. Levels and reasons of self-scheduled probes, and
//! blackbox_exporter's `probe_dns_*` series on `/probe`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::common::dns::Dnsmasq;

use axum::http::StatusCode;
use vigil::app::App;
use vigil::probe::{Level, Reason};

/// The records of these tests: names under vigil.test it lacks are NXDOMAIN, names elsewhere
/// REFUSED (it has no upstream).
const RECORDS: &[&str] = &[
    "--local=/vigil.test/",
    "--host-record=ok.vigil.test,127.0.0.1,::1",
    "--txt-record=txt.vigil.test,hello world",
    "--mx-host=vigil.test,mail.vigil.test,10",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_rcodes_and_record_checks_against_dnsmasq() {
    let dns = Dnsmasq::start(RECORDS);
    let server = dns.server();
    let closed = common::closed_port();
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &format!(
            "probes:\n\
             - {{name: a, kind: dns, server: '{server}', query_name: ok.vigil.test, \
                 validate_answer_rrs: {{fail_if_not_matches_regexp: ['\\tA\\t127\\.0\\.0\\.1$']}}}}\n\
             - {{name: aaaa-tcp, kind: dns, server: '{server}', query_name: ok.vigil.test, query_type: AAAA, transport: tcp}}\n\
             - {{name: nxdomain, kind: dns, server: '{server}', query_name: nope.vigil.test}}\n\
             - {{name: nxdomain-valid, kind: dns, server: '{server}', query_name: nope.vigil.test, valid_rcodes: [NXDOMAIN]}}\n\
             - {{name: refused, kind: dns, server: '{server}', query_name: example.com}}\n\
             - {{name: txt, kind: dns, server: '{server}', query_name: txt.vigil.test, query_type: TXT, \
                 validate_answer_rrs: {{fail_if_none_matches_regexp: ['\"hello world\"']}}}}\n\
             - {{name: mx-forbidden, kind: dns, server: '{server}', query_name: vigil.test, query_type: MX, \
                 validate_answer_rrs: {{fail_if_matches_regexp: ['\\tMX\\t10 mail\\.vigil\\.test\\.$']}}}}\n\
             - {{name: empty-answer, kind: dns, server: '{server}', query_name: vigil.test, query_type: A, \
                 validate_answer_rrs: {{fail_if_not_matches_regexp: ['.']}}}}\n\
             - {{name: closed-udp, kind: dns, server: '127.0.0.1:{closed}', query_name: ok.vigil.test, timeout: 2s}}\n\
             - {{name: closed-tcp, kind: dns, server: '127.0.0.1:{closed}', query_name: ok.vigil.test, transport: tcp}}\n\
             - {{name: unresolvable, kind: dns, server: 'no-such-host.invalid', query_name: ok.vigil.test}}\n"
        ),
        dir.path(),
    );
    let expect = [
        ("a", Level::Up, None),
        ("aaaa-tcp", Level::Up, None),
        ("nxdomain", Level::Down, Some(Reason::Rcode)),
        ("nxdomain-valid", Level::Up, None),
        ("refused", Level::Down, Some(Reason::Rcode)),
        ("txt", Level::Up, None),
        ("mx-forbidden", Level::Down, Some(Reason::Records)),
        ("empty-answer", Level::Down, Some(Reason::Records)),
        ("closed-udp", Level::Down, Some(Reason::Connect)),
        ("closed-tcp", Level::Down, Some(Reason::Connect)),
        ("unresolvable", Level::Down, Some(Reason::Dns)),
    ];
    for (name, level, reason) in expect {
        let outcome = common::run(&config, name).await;
        assert_eq!(
            (outcome.level, outcome.reason),
            (level, reason),
            "{name}: {}",
            outcome.detail
        );
    }
    let outcome = common::run(&config, "nxdomain").await;
    assert!(
        outcome.detail.contains("NXDOMAIN is not in valid_rcodes [NOERROR]"),
        "{}",
        outcome.detail
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_endpoint_publishes_blackbox_dns_series() {
    let dns = Dnsmasq::start(RECORDS);
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        "modules:\n  dns_a: {kind: dns, query_name: ok.vigil.test}\n  dns_nx: {kind: dns, query_name: nope.vigil.test}\n",
        dir.path(),
    );
    let app = App::start(config, None).unwrap();
    let router = vigil::web::router(app.clone());
    let (status, _, body) = common::get(&router, &format!("/probe?module=dns_a&target={}", dns.server()), None).await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        "probe_success 1",
        "probe_dns_answer_rrs 1",
        "probe_dns_authority_rrs 0",
        "probe_dns_additional_rrs 0",
        "probe_dns_query_succeeded 1",
        "probe_ip_protocol 4",
    ] {
        assert!(body.lines().any(|l| l == line), "missing {line:?} in:\n{body}");
    }
    for phase in ["resolve", "connect", "request"] {
        assert!(
            body.contains(&format!("probe_dns_duration_seconds{{phase=\"{phase}\"}}")),
            "no {phase} phase in:\n{body}"
        );
    }
    assert!(
        !body.contains("probe_dns_serial"),
        "a serial without a SOA query:\n{body}"
    );

    let (_, _, body) = common::get(&router, &format!("/probe?module=dns_nx&target={}", dns.server()), None).await;
    for line in [
        "probe_success 0",
        "probe_dns_query_succeeded 1",
        "probe_dns_answer_rrs 0",
    ] {
        assert!(body.lines().any(|l| l == line), "missing {line:?} in:\n{body}");
    }
    app.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soa_queries_publish_the_zone_serial() {
    // dnsmasq as the authoritative server of a zone of its own, with the serial given.
    let dns = Dnsmasq::start(&[
        "--auth-zone=soa.test",
        "--auth-server=ns.soa.test,127.0.0.1",
        "--auth-soa=2024010101,hostmaster.soa.test",
    ]);
    let server = dns.server();
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &format!(
            "probes:\n- {{name: soa, kind: dns, server: '{server}', query_name: soa.test, query_type: SOA, \
             validate_answer_rrs: {{fail_if_not_matches_regexp: ['\\tSOA\\t.* 2024010101 ']}}}}\n\
             modules:\n  soa: {{kind: dns, query_name: soa.test, query_type: SOA}}\n"
        ),
        dir.path(),
    );
    let outcome = common::run(&config, "soa").await;
    assert_eq!((outcome.level, outcome.reason), (Level::Up, None), "{}", outcome.detail);
    let app = App::start(config, None).unwrap();
    let router = vigil::web::router(app.clone());
    let (_, _, body) = common::get(&router, &format!("/probe?module=soa&target={server}"), None).await;
    for line in [
        "probe_success 1",
        "probe_dns_serial 2.024010101e+09",
        "probe_dns_answer_rrs 1",
    ] {
        assert!(body.lines().any(|l| l == line), "missing {line:?} in:\n{body}");
    }
    app.stop();
}
