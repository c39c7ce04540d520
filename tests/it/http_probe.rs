//! The `http` kind against real servers on 127.0.0.1 (plain and TLS, certificates made here).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{any, get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil::probe::{Level, Reason};

fn app() -> Router {
    Router::new()
        .route(
            "/ok",
            get(|| async {
                (
                    [("content-type", "application/json"), ("x-version", "1.2.3")],
                    r#"{"status":"ok","checks":{"db":{"state":"up","latency_ms":3}},"items":[{"name":"a"}]}"#,
                )
            }),
        )
        .route(
            "/slow/{ms}",
            get(|Path(ms): Path<u64>| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                "slow but fine"
            }),
        )
        .route(
            "/status/{code}",
            get(|Path(code): Path<u16>| async move { StatusCode::from_u16(code).unwrap() }),
        )
        .route(
            "/redirect/{n}",
            get(|Path(n): Path<u32>| async move {
                if n == 0 {
                    "landed".into_response()
                } else {
                    Redirect::to(&format!("/redirect/{}", n - 1)).into_response()
                }
            }),
        )
        .route("/loop", get(|| async { Redirect::to("/loop") }))
        .route(
            "/echo",
            any(
                |method: axum::http::Method, headers: HeaderMap, body: String| async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let custom = headers
                        .get("x-custom")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    // Says whether the secrets arrived, without echoing them.
                    axum::Json(serde_json::json!({
                        "method": method.as_str(),
                        "bearer_ok": auth == "Bearer s3cret-token",
                        "custom": custom,
                        "body": body,
                    }))
                },
            ),
        )
}

async fn server() -> String {
    format!("http://{}", common::serve(app()).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_target_is_up_with_phases() {
    let base = server().await;
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &format!("probes:\n  - {{name: ok, kind: http, url: '{base}/ok', body_must_match: '\"status\":\\s*\"ok\"'}}\n"),
        dir.path(),
    );
    let outcome = common::run(&config, "ok").await;
    assert_eq!(outcome.level, Level::Up, "{outcome:?}");
    let http = outcome.observations.http().expect("http");
    assert_eq!(http.status(), Some(200));
    let head = http.exchange.head.as_ref().expect("a response");
    assert_eq!(head.version, 1.1);
    assert!(!http.ssl());
    let phases = &http.exchange;
    assert!(
        phases.connect > Duration::ZERO && phases.processing > Duration::ZERO,
        "{phases:?}"
    );
    assert!(http.exchange.body_bytes > 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_over_thresholds_degrades_then_downs() {
    let base = server().await;
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &format!(
            "defaults: {{timeout: 3s, degraded_after: 100ms, down_after: 400ms}}\n\
             probes:\n  - {{name: slow, kind: http, url: '{base}/slow/200'}}\n  - {{name: slower, kind: http, url: '{base}/slow/600'}}\n"
        ),
        dir.path(),
    );
    let slow = common::run(&config, "slow").await;
    assert_eq!(
        (slow.level, slow.reason),
        (Level::Degraded, Some(Reason::Latency)),
        "{slow:?}"
    );
    let slower = common::run(&config, "slower").await;
    assert_eq!(
        (slower.level, slower.reason),
        (Level::Down, Some(Reason::Latency)),
        "{slower:?}"
    );
    assert!(slower.detail.contains("down_after"), "{}", slower.detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_ends_down_without_waiting_for_the_target() {
    let base = server().await;
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &format!("probes:\n  - {{name: t, kind: http, url: '{base}/slow/5000', timeout: 300ms}}\n"),
        dir.path(),
    );
    let started = std::time::Instant::now();
    let outcome = common::run(&config, "t").await;
    assert_eq!(
        (outcome.level, outcome.reason),
        (Level::Down, Some(Reason::Timeout)),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the timeout did not cut the attempt short"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_rules() {
    let base = server().await;
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &format!(
            "probes:\n\
             - {{name: busy, kind: http, url: '{base}/status/503', degraded_status: [503]}}\n\
             - {{name: broken, kind: http, url: '{base}/status/500'}}\n\
             - {{name: teapot, kind: http, url: '{base}/status/418', valid_status: ['200-299', 418]}}\n\
             - {{name: class, kind: http, url: '{base}/status/404', valid_status: ['4xx']}}\n"
        ),
        dir.path(),
    );
    let busy = common::run(&config, "busy").await;
    assert_eq!(
        (busy.level, busy.reason),
        (Level::Degraded, Some(Reason::Status)),
        "{busy:?}"
    );
    let broken = common::run(&config, "broken").await;
    assert_eq!((broken.level, broken.reason), (Level::Down, Some(Reason::Status)));
    assert_eq!(broken.detail, "status 500 is not in 200-299");
    assert_eq!(common::run(&config, "teapot").await.level, Level::Up);
    assert_eq!(common::run(&config, "class").await.level, Level::Up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_and_header_assertions() {
    let base = server().await;
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &format!(
            "probes:\n\
             - {{name: body-miss, kind: http, url: '{base}/ok', body_must_match: ['status', 'nope']}}\n\
             - {{name: body-forbidden, kind: http, url: '{base}/ok', body_must_not_match: '\"ok\"'}}\n\
             - {{name: header-ok, kind: http, url: '{base}/ok', header_must_match: [{{header: X-Version, pattern: '^1\\.'}}]}}\n\
             - {{name: header-miss, kind: http, url: '{base}/ok', header_must_match: [{{header: x-version, pattern: '^2\\.'}}]}}\n\
             - {{name: header-absent, kind: http, url: '{base}/ok', header_must_match: [{{header: x-missing, pattern: 'x'}}]}}\n\
             - {{name: header-absent-ok, kind: http, url: '{base}/ok', header_must_match: [{{header: x-missing, pattern: 'x', allow_missing: true}}]}}\n\
             - {{name: header-forbidden, kind: http, url: '{base}/ok', header_must_not_match: [{{header: content-type, pattern: json}}]}}\n"
        ),
        dir.path(),
    );
    let miss = common::run(&config, "body-miss").await;
    assert_eq!((miss.level, miss.reason), (Level::Down, Some(Reason::Body)));
    assert_eq!(miss.detail, "body does not match /nope/");
    assert_eq!(common::run(&config, "body-forbidden").await.reason, Some(Reason::Body));
    assert_eq!(common::run(&config, "header-ok").await.level, Level::Up);
    let header = common::run(&config, "header-miss").await;
    assert_eq!((header.level, header.reason), (Level::Down, Some(Reason::Header)));
    assert_eq!(
        common::run(&config, "header-absent").await.detail,
        "header x-missing is missing"
    );
    assert_eq!(common::run(&config, "header-absent-ok").await.level, Level::Up);
    assert_eq!(
        common::run(&config, "header-forbidden").await.reason,
        Some(Reason::Header)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_conditions() {
    let base = server().await;
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &format!(
            "probes:\n\
             - name: json-ok\n  kind: http\n  url: '{base}/ok'\n  json:\n    - {{path: checks.db.state, equals: up}}\n    - {{path: $.checks.db.latency_ms, less_than: 10}}\n    - {{path: 'items[0].name', matches: '^a$'}}\n    - {{path: missing, exists: false}}\n\
             - name: json-bad\n  kind: http\n  url: '{base}/ok'\n  json: [{{path: 'items[0].name', equals: b}}]\n\
             - name: json-not-json\n  kind: http\n  url: '{base}/slow/1'\n  json: [{{path: status, equals: ok}}]\n"
        ),
        dir.path(),
    );
    let ok = common::run(&config, "json-ok").await;
    assert_eq!(ok.level, Level::Up, "{ok:?}");
    let bad = common::run(&config, "json-bad").await;
    assert_eq!((bad.level, bad.reason), (Level::Down, Some(Reason::Json)));
    assert_eq!(bad.detail, "`items[0].name` is \"a\", expected \"b\"");
    assert!(
        common::run(&config, "json-not-json")
            .await
            .detail
            .starts_with("body is not JSON")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_chain_limit_and_loop() {
    let base = server().await;
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &format!(
            "probes:\n\
             - {{name: chain, kind: http, url: '{base}/redirect/3'}}\n\
             - {{name: too-long, kind: http, url: '{base}/redirect/3', max_redirects: 2}}\n\
             - {{name: no-follow, kind: http, url: '{base}/redirect/3', follow_redirects: false}}\n\
             - {{name: no-follow-ok, kind: http, url: '{base}/redirect/3', follow_redirects: false, valid_status: ['300-399']}}\n\
             - {{name: loop, kind: http, url: '{base}/loop'}}\n"
        ),
        dir.path(),
    );
    let chain = common::run(&config, "chain").await;
    assert_eq!(chain.level, Level::Up, "{chain:?}");
    assert_eq!(chain.observations.http().map(|h| h.exchange.redirects), Some(3));
    let long = common::run(&config, "too-long").await;
    assert_eq!((long.level, long.reason), (Level::Down, Some(Reason::Redirect)));
    assert_eq!(long.detail, "more than 2 redirects");
    assert_eq!(common::run(&config, "no-follow").await.reason, Some(Reason::Status));
    assert_eq!(common::run(&config, "no-follow-ok").await.level, Level::Up);
    let looped = common::run(&config, "loop").await;
    assert_eq!(looped.reason, Some(Reason::Redirect));
    assert!(looped.detail.starts_with("redirect loop"), "{}", looped.detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_down_connect() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::closed_port();
    let config = common::config(
        &format!("probes:\n  - {{name: r, kind: http, url: 'http://127.0.0.1:{port}/'}}\n"),
        dir.path(),
    );
    let outcome = common::run(&config, "r").await;
    assert_eq!(
        (outcome.level, outcome.reason),
        (Level::Down, Some(Reason::Connect)),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_only_without_fallback_fails_resolution() {
    // /etc/hosts maps localhost to 127.0.0.1 only here; no DNS query leaves the machine.
    let base = server().await;
    let port = base.rsplit(':').next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &format!(
            "probes:\n\
             - {{name: v6, kind: http, url: 'http://127.0.0.1:{port}/ok', ip_protocol: ip6, ip_protocol_fallback: false}}\n\
             - {{name: v6-fallback, kind: http, url: 'http://127.0.0.1:{port}/ok', ip_protocol: ip6}}\n"
        ),
        dir.path(),
    );
    let v6 = common::run(&config, "v6").await;
    assert_eq!((v6.level, v6.reason), (Level::Down, Some(Reason::Dns)), "{v6:?}");
    let fallback = common::run(&config, "v6-fallback").await;
    assert_eq!(
        (
            fallback.level,
            fallback
                .observations
                .http()
                .and_then(|h| h.exchange.dialled.addr)
                .map(|a| a.is_ipv4())
        ),
        (Level::Up, Some(true))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_method_body_headers_and_secrets_from_files() {
    let base = server().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "s3cret-token\n").unwrap();
    std::fs::write(dir.path().join("custom"), "from-a-file").unwrap();
    let config = common::config(
        &format!(
            "probes:\n\
             - name: post\n  kind: http\n  url: '{base}/echo'\n  method: post\n  body: 'hello'\n  bearer_token: {{file: token}}\n  headers: {{X-Custom: {{file: custom}}}}\n  json:\n    - {{path: method, equals: POST}}\n    - {{path: body, equals: hello}}\n    - {{path: bearer_ok, equals: true}}\n    - {{path: custom, equals: from-a-file}}\n"
        ),
        dir.path(),
    );
    let outcome = common::run(&config, "post").await;
    assert_eq!(outcome.level, Level::Up, "{outcome:?}");
    assert!(
        !format!("{config:?}").contains("s3cret-token"),
        "a secret reached Debug output"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_body_is_cut_at_the_limit() {
    // A raw server that sends headers, then body bytes until the client goes away.
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n")
                    .await;
                let chunk = vec![b'x'; 64 * 1024];
                while stream.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &format!("probes:\n  - {{name: e, kind: http, url: 'http://{addr}/', body_size_limit: 256KiB}}\n"),
        dir.path(),
    );
    let outcome = common::run(&config, "e").await;
    assert_eq!(
        (outcome.level, outcome.reason),
        (Level::Down, Some(Reason::Body)),
        "{outcome:?}"
    );
    assert_eq!(outcome.detail, "body larger than the limit of 262144 bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_valid_soon_expiring_expired_and_untrusted() {
    let ca = common::TestCa::new();
    let (cert, key) = ca.leaf("valid", -1, 90);
    let valid = common::serve_tls(app(), cert, key).await;
    let (cert, key) = ca.leaf("soon", -30, 5);
    let soon = common::serve_tls(app(), cert, key).await;
    let (cert, key) = ca.leaf("expired", -60, -1);
    let expired = common::serve_tls(app(), cert, key).await;
    let ca_file = ca.ca_file();
    let ca_file = ca_file.display();
    let config = common::config(
        &format!(
            "probes:\n\
             - {{name: valid, kind: http, url: 'https://localhost:{}/ok', tls_config: {{ca_file: '{ca_file}'}}}}\n\
             - {{name: soon, kind: http, url: 'https://127.0.0.1:{}/ok', tls_config: {{ca_file: '{ca_file}'}}}}\n\
             - {{name: expired, kind: http, url: 'https://localhost:{}/ok', tls_config: {{ca_file: '{ca_file}'}}}}\n\
             - {{name: expired-unverified, kind: http, url: 'https://localhost:{}/ok', tls_config: {{verify: false}}}}\n\
             - {{name: untrusted, kind: http, url: 'https://localhost:{}/ok'}}\n",
            valid.port(),
            soon.port(),
            expired.port(),
            expired.port(),
            valid.port()
        ),
        ca.dir.path(),
    );
    let now = SystemTime::now();
    let days = |t: SystemTime| t.duration_since(now).map(|d| d.as_secs_f64() / 86400.0).unwrap_or(-1.0);

    let outcome = common::run(&config, "valid").await;
    assert_eq!(outcome.level, Level::Up, "{outcome:?}");
    assert!(outcome.observations.http().expect("http").ssl());
    assert!(outcome.observations.http().expect("http").exchange.tls > Duration::ZERO);
    let left = days(expiry_of(&outcome).expect("expiry"));
    assert!((89.0..=90.1).contains(&left), "valid cert expires in {left} days");

    let outcome = common::run(&config, "soon").await;
    assert_eq!(outcome.level, Level::Up, "{outcome:?}");
    let left = days(expiry_of(&outcome).expect("expiry"));
    assert!((4.0..=5.1).contains(&left), "soon-expiring cert expires in {left} days");

    let outcome = common::run(&config, "expired").await;
    assert_eq!(
        (outcome.level, outcome.reason),
        (Level::Down, Some(Reason::Tls)),
        "{outcome:?}"
    );
    assert!(
        outcome.detail.contains("Expired") || outcome.detail.contains("expired"),
        "{}",
        outcome.detail
    );
    // The handshake failed, but the expiry is still known: an expiry alert stays firing.
    let expiry = expiry_of(&outcome).expect("expiry of the refused certificate");
    let ago = now.duration_since(expiry).expect("in the past").as_secs_f64() / 86400.0;
    assert!((0.9..=1.1).contains(&ago), "expired a day ago, got {ago} days ago");

    let outcome = common::run(&config, "expired-unverified").await;
    assert_eq!(outcome.level, Level::Up, "{outcome:?}");
    assert!(expiry_of(&outcome).expect("expiry") < now);

    let outcome = common::run(&config, "untrusted").await;
    assert_eq!(
        (outcome.level, outcome.reason),
        (Level::Down, Some(Reason::Tls)),
        "{outcome:?}"
    );
}

/// The certificate expiry a run saw: presented, or refused as expired.
fn expiry_of(outcome: &vigil::state::Outcome) -> Option<SystemTime> {
    let tls = &outcome.observations.http()?.exchange.tls_seen;
    tls.earliest_expiry.or(tls.refused_expiry)
}
