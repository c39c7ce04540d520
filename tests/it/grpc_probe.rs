//! The `grpc` kind against a real gRPC health server: tonic-health's service
//! (tests/it/common/grpc.rs) in plaintext and over TLS with a certificate the test makes, in
//! each serving state; and the failures: a refused port, an HTTP/1.1 server, plaintext to the TLS
//! port, an untrusted certificate, and a server that never answers (ended by the timeout, which
//! the server is told as `grpc-timeout`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::common::grpc::GrpcHealth;

use axum::http::StatusCode;
use vigil::app::App;
use vigil::probe::{Level, Reason};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_in_every_serving_state() {
    let ca = common::TestCa::new();
    let (cert, key) = ca.leaf("grpc", -1, 30);
    let grpc = GrpcHealth::start(&cert, &key).await;
    // vigil's own listener speaks HTTP/2 too (h2c): a server that is HTTP/2 but not gRPC.
    let not_grpc = common::serve(axum::Router::new().route("/", axum::routing::get(|| async { "not grpc" }))).await;
    // An HTTP/1.1 server, answering anything with a 400 and closing, as nginx would.
    let http1_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http1 = http1_listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = http1_listener.accept().await {
            let mut buffer = [0u8; 1024];
            let _ = stream.read(&mut buffer).await;
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
        }
    });
    let (plain, tls) = (grpc.plain, grpc.tls);
    let ca_file = ca.ca_file();
    let ca_file = ca_file.display();
    let closed = common::closed_port();
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &format!(
            "probes:\n\
             - {{name: server, kind: grpc, address: '{plain}'}}\n\
             - {{name: db, kind: grpc, address: '{plain}', service: db}}\n\
             - {{name: cache, kind: grpc, address: '{plain}', service: cache}}\n\
             - {{name: cache-degraded, kind: grpc, address: '{plain}', service: cache, degraded_status: [NOT_SERVING]}}\n\
             - {{name: queue, kind: grpc, address: '{plain}', service: queue}}\n\
             - {{name: ghost, kind: grpc, address: '{plain}', service: ghost}}\n\
             - {{name: missing, kind: grpc, address: '{plain}', service: nope}}\n\
             - {{name: guarded, kind: grpc, address: '{plain}', service: guarded, metadata: {{x-token: sesame}}}}\n\
             - {{name: guarded-without, kind: grpc, address: '{plain}', service: guarded}}\n\
             - {{name: tls, kind: grpc, address: '{tls}', service: db, tls: true, tls_config: {{ca_file: '{ca_file}'}}}}\n\
             - {{name: tls-untrusted, kind: grpc, address: '{tls}', tls: true}}\n\
             - {{name: plain-to-tls, kind: grpc, address: '{tls}', timeout: 2s}}\n\
             - {{name: http1, kind: grpc, address: '{http1}', timeout: 2s}}\n\
             - {{name: not-grpc, kind: grpc, address: '{not_grpc}'}}\n\
             - {{name: refused, kind: grpc, address: '127.0.0.1:{closed}'}}\n\
             - {{name: slow, kind: grpc, address: '{plain}', service: slow, timeout: 1s}}\n"
        ),
        dir.path(),
    );
    let expect = [
        ("server", Level::Up, None, Some(0), Some(1)),
        ("db", Level::Up, None, Some(0), Some(1)),
        ("cache", Level::Down, Some(Reason::NotServing), Some(0), Some(2)),
        (
            "cache-degraded",
            Level::Degraded,
            Some(Reason::NotServing),
            Some(0),
            Some(2),
        ),
        ("queue", Level::Down, Some(Reason::ServingUnknown), Some(0), Some(0)),
        ("ghost", Level::Down, Some(Reason::ServiceUnknown), Some(0), Some(3)),
        ("missing", Level::Down, Some(Reason::Status), Some(5), None),
        ("guarded", Level::Up, None, Some(0), Some(1)),
        ("guarded-without", Level::Down, Some(Reason::Status), Some(16), None),
        ("tls", Level::Up, None, Some(0), Some(1)),
        ("tls-untrusted", Level::Down, Some(Reason::Tls), Some(14), None),
        ("plain-to-tls", Level::Down, Some(Reason::Protocol), Some(14), None),
        ("http1", Level::Down, Some(Reason::Protocol), Some(14), None),
        ("not-grpc", Level::Down, Some(Reason::Status), Some(12), None),
        ("refused", Level::Down, Some(Reason::Connect), Some(14), None),
        ("slow", Level::Down, Some(Reason::Timeout), Some(4), None),
    ];
    for (name, level, reason, code, serving) in expect {
        let started = std::time::Instant::now();
        let outcome = common::run(&config, name).await;
        assert_eq!(
            (outcome.level, outcome.reason),
            (level, reason),
            "{name}: {}",
            outcome.detail
        );
        let obs = outcome.observations.of::<vigil::probe::grpc::Grpc>().unwrap();
        assert_eq!((obs.code, obs.serving), (code, serving), "{name}: {obs:?}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{name} ends within its timeout"
        );
    }
    let outcome = common::run(&config, "missing").await;
    assert!(outcome.detail.contains("NOT_FOUND (5)"), "{}", outcome.detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_endpoint_publishes_blackbox_grpc_series() {
    let ca = common::TestCa::new();
    let (cert, key) = ca.leaf("grpc", -1, 30);
    let grpc = GrpcHealth::start(&cert, &key).await;
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &format!(
            "modules:\n  grpc: {{kind: grpc}}\n  grpc_cache: {{kind: grpc, service: cache}}\n  \
             grpc_tls: {{kind: grpc, tls: true, tls_config: {{ca_file: '{}'}}}}\n",
            ca.ca_file().display()
        ),
        dir.path(),
    );
    let app = App::start(config, None).unwrap();
    let router = vigil::web::router(app.clone());
    let cases = [
        ("grpc", grpc.plain, "SERVING", "1", "0"),
        ("grpc_cache", grpc.plain, "NOT_SERVING", "0", "0"),
        ("grpc_tls", grpc.tls, "SERVING", "1", "1"),
    ];
    for (module, addr, serving, success, ssl) in cases {
        let (status, _, body) = common::get(&router, &format!("/probe?module={module}&target={addr}"), None).await;
        assert_eq!(status, StatusCode::OK);
        for line in [
            format!("probe_success {success}"),
            "probe_grpc_status_code 0".to_string(),
            format!("probe_grpc_ssl {ssl}"),
            format!("probe_grpc_healthcheck_response{{serving_status=\"{serving}\"}} 1"),
        ] {
            assert!(
                body.lines().any(|l| l == line),
                "{module}: missing {line:?} in:\n{body}"
            );
        }
        for phase in ["resolve", "check"] {
            assert!(
                body.contains(&format!("probe_grpc_duration_seconds{{phase=\"{phase}\"}}")),
                "{module}: no {phase} phase in:\n{body}"
            );
        }
    }
    app.stop();
}
