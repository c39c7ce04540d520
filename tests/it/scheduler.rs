//! The scheduler: intervals, retries counted, and a hanging target that delays nobody else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use vigil::app::App;
use vigil::probe::{Level, Reason};
use vigil::state::lock;

/// A TCP server that accepts connections and never answers.
async fn black_hole() -> std::net::SocketAddr {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = socket.accept().await {
            held.push(stream);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_target_delays_no_other_probe() {
    let hole = black_hole().await;
    let ok = common::serve(Router::new().route("/", get(|| async { "ok" }))).await;
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &format!(
            "probes:\n\
             - {{name: hanging, kind: http, url: 'http://{hole}/', interval: 5s, timeout: 4s}}\n\
             - {{name: fast, kind: http, url: 'http://{ok}/', interval: 100ms, timeout: 50ms}}\n"
        ),
        dir.path(),
    );
    let app = App::start(config, None).unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let fast = lock(&app.state.get("fast").unwrap()).runs;
    let hanging = lock(&app.state.get("hanging").unwrap()).runs;
    assert!(
        fast >= 8,
        "the fast probe ran only {fast} times in 1.2 s beside a hanging one"
    );
    assert_eq!(hanging, 0, "the hanging probe cannot have finished yet");
    app.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_made_and_counted() {
    // Fails the first request of every pair, answers the second.
    let hits = Arc::new(AtomicU32::new(0));
    let counter = hits.clone();
    let flaky = Router::new().route(
        "/",
        get(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n.is_multiple_of(2) {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let flaky = common::serve(flaky).await;
    let closed = common::closed_port();
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &format!(
            "defaults: {{retries: 2, retry_delay: 50ms}}\n\
             probes:\n\
             - {{name: flaky, kind: http, url: 'http://{flaky}/'}}\n\
             - {{name: dead, kind: tcp, address: '127.0.0.1:{closed}'}}\n\
             - {{name: no-retry, kind: tcp, address: '127.0.0.1:{closed}', retries: 0}}\n"
        ),
        dir.path(),
    );
    let flaky = common::run(&config, "flaky").await;
    assert_eq!((flaky.level, flaky.retries), (Level::Up, 1), "{flaky:?}");
    let dead = common::run(&config, "dead").await;
    assert_eq!(
        (dead.level, dead.reason, dead.retries),
        (Level::Down, Some(Reason::Connect), 2)
    );
    assert_eq!(common::run(&config, "no-retry").await.retries, 0);
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    // And the counter reaches /metrics.
    let app = App::start(config, None).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let text = vigil::metrics::encode(&app.registry, false).unwrap();
    assert!(
        text.contains(r#"vigil_probe_retries_total{probe="dead",kind="tcp"} 2"#),
        "{text}"
    );
    app.stop();
}
