//! HTTP/2 in the http kind against a real server: Debian's nginx (tests/it/common/nginx.rs),
//! started by the test with a certificate it generates: h2 chosen by ALPN over TLS, h2c with
//! prior knowledge when asked, HTTP/1.1 when HTTP/2 is turned off, and the failures of a client
//! and a server that do not speak the same version.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::common::nginx::Nginx;

use axum::http::StatusCode;
use vigil::app::App;
use vigil::probe::{Level, Reason};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_by_alpn_h2c_by_prior_knowledge_and_http1_when_asked() {
    let ca = common::TestCa::new();
    let (cert, key) = ca.leaf("nginx", -1, 30);
    let nginx = Nginx::start(&cert, &key);
    let ca_file = ca.ca_file();
    let ca_file = ca_file.display();
    let (tls, h2c, plain) = (nginx.tls, nginx.h2c, nginx.plain);
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &format!(
            "probes:\n\
             - {{name: h2, kind: http, url: 'https://127.0.0.1:{tls}/', tls_config: {{ca_file: '{ca_file}'}}, \
                 valid_http_versions: [HTTP/2.0], body_must_match: 'hello h2'}}\n\
             - {{name: h2-redirect, kind: http, url: 'https://127.0.0.1:{tls}/redir', tls_config: {{ca_file: '{ca_file}'}}}}\n\
             - {{name: h1-over-tls, kind: http, url: 'https://127.0.0.1:{tls}/', http2: false, \
                 tls_config: {{ca_file: '{ca_file}'}}}}\n\
             - {{name: h2-required-h1-served, kind: http, url: 'https://127.0.0.1:{tls}/', http2: false, \
                 valid_http_versions: [HTTP/2.0], tls_config: {{ca_file: '{ca_file}'}}}}\n\
             - {{name: h2c, kind: http, url: 'http://127.0.0.1:{h2c}/', h2c: true}}\n\
             - {{name: h1-to-h2c-port, kind: http, url: 'http://127.0.0.1:{h2c}/', timeout: 2s}}\n\
             - {{name: h2c-to-h1-port, kind: http, url: 'http://127.0.0.1:{plain}/', h2c: true, timeout: 2s}}\n\
             - {{name: plain, kind: http, url: 'http://127.0.0.1:{plain}/'}}\n"
        ),
        dir.path(),
    );
    let expect = [
        ("h2", Level::Up, None, 2.0),
        ("h2-redirect", Level::Up, None, 2.0),
        ("h1-over-tls", Level::Up, None, 1.1),
        ("h2-required-h1-served", Level::Down, Some(Reason::Protocol), 1.1),
        ("h2c", Level::Up, None, 2.0),
        ("h1-to-h2c-port", Level::Down, Some(Reason::Protocol), 0.0),
        ("h2c-to-h1-port", Level::Down, Some(Reason::Protocol), 0.0),
        ("plain", Level::Up, None, 1.1),
    ];
    for (name, level, reason, version) in expect {
        let outcome = common::run(&config, name).await;
        assert_eq!(
            (outcome.level, outcome.reason),
            (level, reason),
            "{name}: {}",
            outcome.detail
        );
        let exchange = &outcome.observations.http().unwrap().exchange;
        let seen = exchange.head.as_ref().map_or(0.0, |h| h.version);
        assert_eq!(seen, version, "{name}: {exchange:?}");
        if version == 2.0 {
            // The phases still hold over HTTP/2.
            assert!(exchange.connect > std::time::Duration::ZERO, "{name}: {exchange:?}");
            assert!(exchange.processing > std::time::Duration::ZERO, "{name}: {exchange:?}");
            assert_eq!(exchange.tls_used, name != "h2c", "{name}");
        }
        if name == "h2-redirect" {
            assert_eq!(exchange.redirects, 1);
        }
    }
    let log = nginx.access_log();
    assert!(log.contains("\"GET / HTTP/2.0\" 200"), "nginx saw HTTP/2:\n{log}");
    assert!(log.contains("\"GET /redir HTTP/2.0\" 302"), "{log}");
    assert!(log.contains("\"GET / HTTP/1.1\" 200"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_endpoint_reports_http_version_2() {
    let ca = common::TestCa::new();
    let (cert, key) = ca.leaf("nginx", -1, 30);
    let nginx = Nginx::start(&cert, &key);
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &format!(
            "modules:\n  h2: {{kind: http, tls_config: {{ca_file: '{}'}}}}\n  \
             h1: {{kind: http, http2: false, tls_config: {{ca_file: '{}'}}}}\n",
            ca.ca_file().display(),
            ca.ca_file().display()
        ),
        dir.path(),
    );
    let app = App::start(config, None).unwrap();
    let router = vigil::web::router(app.clone());
    for (module, version) in [("h2", "2"), ("h1", "1.1")] {
        let (status, _, body) = common::get(
            &router,
            &format!("/probe?module={module}&target=https://127.0.0.1:{}/", nginx.tls),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        for line in [
            "probe_success 1".to_string(),
            format!("probe_http_version {version}"),
            "probe_http_status_code 200".to_string(),
            "probe_http_ssl 1".to_string(),
        ] {
            assert!(
                body.lines().any(|l| l == line),
                "{module}: missing {line:?} in:\n{body}"
            );
        }
    }
    app.stop();
}
