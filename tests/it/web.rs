//! The web endpoints: the router driven without a socket, a golden `/metrics` checked by
//! `promtool check metrics`, reloads, and the listener on a real socket with TLS and basic auth.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use http_body_util::BodyExt;
use tower::ServiceExt;
use vigil::app::App;
use vigil::config::{Config, Source};
use vigil::probe::Level;

async fn target() -> String {
    let app = Router::new()
        .route("/ok", get(|| async { "fine" }))
        .route("/busy", get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "busy") }))
        .route(
            "/host",
            get(|headers: axum::http::HeaderMap| async move {
                match headers.get("host").and_then(|h| h.to_str().ok()) {
                    Some("b.test") => StatusCode::OK,
                    _ => StatusCode::MISDIRECTED_REQUEST,
                }
            }),
        );
    format!("http://{}", common::serve(app).await)
}

/// Waits until every probe has run, but heartbeats: without a beat they stay pending.
async fn wait_for_runs(app: &App) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let waiting = |h: &vigil::state::ProbeHandle| {
        let state = vigil::state::lock(h);
        state.last.is_none() && state.meta.kind != vigil::probe::Kind::Heartbeat
    };
    while app.state.handles().iter().any(waiting) {
        assert!(Instant::now() < deadline, "probes did not run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn golden_config(base: &str, closed: u16) -> String {
    format!(
        "labels: {{env: test}}\ndocker: {{enabled: false}}\n\
         probes:\n\
         - {{name: api, kind: http, url: '{base}/ok', labels: {{team: platform, tier: backend}}}}\n\
         - {{name: busy, kind: http, url: '{base}/busy', degraded_status: [503]}}\n\
         - name: gone\n  kind: tcp\n  address: '127.0.0.1:{closed}'\n  remediation: {{docker: {{container: gone-1}}}}\n\
         - name: secret-url\n  kind: http\n  url: 'http://user:hunter2@{}/ok?token=abc&x=1'\n\
         - {{name: backup, kind: heartbeat, token: golden-token-0123456789, max_age: 26h, warn_age: 25h}}\n\
         modules:\n  http_2xx: {{kind: http}}\n",
        base.trim_start_matches("http://")
    )
}

/// `/metrics` with the values masked, so the golden file holds names, labels and types only.
fn mask_values(text: &str) -> String {
    text.lines()
        .map(|line| match line.rsplit_once(' ') {
            Some((series, _)) if !line.starts_with('#') => format!("{series} _"),
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// `metrics.detail` adds the series left out by default; `metrics.buckets` sets the histogram's
/// boundaries, the thresholds always among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_detail_and_buckets_are_chosen_in_the_config() {
    let base = target().await;
    let dir = tempfile::tempdir().unwrap();
    let closed = common::closed_port();
    let text = golden_config(&base, closed).replace(
        "docker: {enabled: false}\n",
        "docker: {enabled: false}\nmetrics: {detail: true, buckets: [50ms, 2s]}\n",
    );
    let app = App::start(common::config(&text, dir.path()), None).unwrap();
    wait_for_runs(&app).await;
    let (_, _, text) = common::get(&vigil::web::router(app.clone()), "/metrics", None).await;
    let api: Vec<&str> = text.lines().filter(|l| l.contains(r#"probe="api","#)).collect();
    for series in [
        "vigil_probe_runs_total{",
        "vigil_probe_http_duration_seconds{",
        "vigil_probe_http_status_code{",
        "vigil_probe_latency_threshold_seconds{",
        "vigil_probe_last_run_timestamp_seconds{",
        "vigil_probe_last_success_timestamp_seconds{",
        "vigil_probe_level_changes_total{",
        "vigil_probe_retries_total{",
        "vigil_probe_consecutive_failures{",
        r#"vigil_probe_failures_by_reason_total{probe="api",kind="http",reason="timeout""#,
    ] {
        assert!(api.iter().any(|l| l.starts_with(series)), "{series} missing: {api:#?}");
    }
    let les: Vec<&str> = api
        .iter()
        .filter(|l| l.starts_with("vigil_probe_duration_seconds_bucket"))
        .filter_map(|l| l.split('"').nth(1))
        .collect();
    assert_eq!(les, ["0.05", "1.0", "2.0", "5.0", "+Inf"]);
    app.stop();

    let none = golden_config(&base, closed).replace(
        "docker: {enabled: false}\n",
        "docker: {enabled: false}\nmetrics: {buckets: none}\n",
    );
    let config = common::config(&none, dir.path());
    let app = App::start(config, None).unwrap();
    wait_for_runs(&app).await;
    let (_, _, text) = common::get(&vigil::web::router(app.clone()), "/metrics", None).await;
    let buckets: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("vigil_probe_duration_seconds_bucket") && l.contains(r#"probe="api","#))
        .collect();
    assert_eq!(buckets.len(), 1, "+Inf only: {buckets:?}");
    assert!(buckets[0].contains(r#"le="+Inf""#));
    app.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_golden_rendering_passes_promtool() {
    let base = target().await;
    let dir = tempfile::tempdir().unwrap();
    let closed = common::closed_port();
    let config = common::config(&golden_config(&base, closed), dir.path());
    let app = App::start(config, None).unwrap();
    wait_for_runs(&app).await;
    let router = vigil::web::router(app.clone());

    let (status, content_type, text) = common::get(&router, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let port = base.rsplit(':').next().unwrap();
    let masked = mask_values(&text)
        .replace(port, "PORT")
        .replace(&closed.to_string(), "CLOSED");
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/metrics.golden");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &masked).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(
        masked, expected,
        "/metrics changed; if on purpose, run with UPDATE_GOLDEN=1 and review the diff"
    );

    // The levels are right, and secrets from the URL never show.
    assert!(text.contains(
        r#"vigil_probe_status{probe="api",kind="http",status="up",env="test",team="platform",tier="backend"} 1"#
    ));
    assert!(text.contains(r#"vigil_probe_status{probe="busy",kind="http",status="degraded",env="test"} 1"#));
    assert!(text.contains(r#"vigil_probe_failures_total{probe="gone",kind="tcp",env="test"} 1"#));
    assert!(
        text.contains(r#"vigil_probe_failures_by_reason_total{probe="gone",kind="tcp",reason="connect",env="test"} 1"#)
    );
    // The default set: an HTTP probe that has never failed is 12 lines (level, since when,
    // failures, a histogram at its thresholds, what it checks).
    let api: Vec<&str> = text.lines().filter(|l| l.contains(r#"probe="api","#)).collect();
    assert_eq!(api.len(), 12, "{api:#?}");
    assert!(text.contains(
        r#"vigil_probe_duration_seconds_bucket{le="1.0",probe="api",kind="http",env="test",team="platform",tier="backend"} 1"#
    ));
    assert!(
        text.contains(r#"degraded_after="1.0",down_after="5.0""#),
        "the thresholds, as the le of their buckets"
    );
    assert!(
        text.contains(r#"vigil_probe_remediation_info{probe="gone",kind="tcp",action="docker_restart",env="test"} 1"#)
    );
    assert!(
        !text.contains("hunter2") && !text.contains("token=abc"),
        "a secret reached /metrics"
    );
    assert!(text.contains("token=redacted&x=1"));

    common::promtool_check_metrics(&text);

    let (_, content_type, om) =
        common::get(&router, "/metrics", Some("application/openmetrics-text;version=1.0.0")).await;
    assert!(content_type.starts_with("application/openmetrics-text"));
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains("# TYPE vigil_probe_failures counter"));
    app.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_endpoint_speaks_blackbox() {
    let base = target().await;
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        "modules:\n  http_2xx: {kind: http}\n  degraded: {kind: http, degraded_status: [503]}\n  tcp: {kind: tcp}\n  vhost: {kind: http, headers: {Host: a.test}}\n",
        dir.path(),
    );
    let app = App::start(config, None).unwrap();
    let router = vigil::web::router(app.clone());

    let (status, content_type, body) =
        common::get(&router, &format!("/probe?module=http_2xx&target={base}/ok"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    for line in [
        "probe_success 1",
        "probe_http_status_code 200",
        "probe_http_ssl 0",
        "vigil_probe_status{status=\"up\"} 1",
    ] {
        assert!(body.lines().any(|l| l == line), "missing {line:?} in:\n{body}");
    }
    assert!(body.contains("probe_http_duration_seconds{phase=\"connect\"}"));

    // hostname= sets the Host header, unless the module sets another one.
    let (status, _, body) = common::get(&router, &format!("/probe?target={base}/host&hostname=b.test"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("probe_success 1"), "{body}");
    let (_, _, body) = common::get(&router, &format!("/probe?target={base}/host"), None).await;
    assert!(body.contains("probe_http_status_code 421"), "{body}");
    let (status, _, body) = common::get(
        &router,
        &format!("/probe?module=vhost&target={base}/ok&hostname=b.test"),
        None,
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::BAD_REQUEST,
            "host header defined both in module configuration (a.test) and with URL-parameter 'hostname' (b.test)\n"
        )
    );

    // module defaults to http_2xx, like blackbox_exporter.
    let (_, _, body) = common::get(&router, &format!("/probe?target={base}/ok"), None).await;
    assert!(body.contains("probe_success 1"));

    let (_, _, body) = common::get(&router, &format!("/probe?module=degraded&target={base}/busy"), None).await;
    assert!(
        body.contains("probe_success 1") && body.contains("vigil_probe_status{status=\"degraded\"} 1"),
        "{body}"
    );
    assert!(body.contains("vigil_probe_failure_reason{reason=\"status\"} 1"));

    let addr = base.trim_start_matches("http://");
    let (_, _, body) = common::get(&router, &format!("/probe?module=tcp&target={addr}"), None).await;
    assert!(body.contains("probe_success 1"), "{body}");

    let closed = common::closed_port();
    let (_, _, body) = common::get(
        &router,
        &format!("/probe?module=tcp&target=127.0.0.1:{closed}&debug=true"),
        None,
    )
    .await;
    assert!(
        body.starts_with("Logs for the probe:\n")
            && body.contains("level=DOWN reason=connect")
            && body.contains("\n\n\n\nMetrics that would have been returned:\n")
            && body.contains("probe_success 0")
            && body.contains("\n\n\n\nModule configuration:\nkind: tcp\n"),
        "{body}"
    );

    let (status, _, body) = common::get(&router, "/probe?module=http_2xx", None).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::BAD_REQUEST, "Target parameter is missing\n")
    );
    let (status, _, body) = common::get(&router, &format!("/probe?module=nope&target={base}"), None).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::BAD_REQUEST, "Unknown module \"nope\"\n")
    );

    let (status, _, body) = common::get(&router, "/-/healthy", None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "Healthy\n"));
    let (status, _, _) = common::get(&router, "/-/ready", None).await;
    assert_eq!(status, StatusCode::OK);
    app.stop();
}

fn reload_gauge(text: &str) -> &str {
    text.lines()
        .find_map(|l| l.strip_prefix("vigil_config_last_reload_successful "))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_the_running_config_when_the_new_one_is_invalid() {
    let base = target().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vigil.yml");
    std::fs::write(
        &file,
        format!("probes:\n  - {{name: first, kind: http, url: '{base}/ok', interval: 1s, timeout: 500ms}}\n"),
    )
    .unwrap();
    let app = App::start(Config::load(&Source::File(file.clone())).unwrap(), None).unwrap();
    let router = vigil::web::router(app.clone());
    wait_for_runs(&app).await;

    std::fs::write(&file, "probes:\n  - {name: second, kind: http}\n").unwrap();
    let response = router
        .clone()
        .oneshot(Request::post("/-/reload").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(
        body.contains("line 2: probes[0]: missing key `url`") && body.contains("keeping the running config"),
        "{body}"
    );
    let (_, _, text) = common::get(&router, "/metrics", None).await;
    assert_eq!(reload_gauge(&text), "0");
    assert!(text.contains("probe=\"first\""));
    // The old probe keeps running.
    let runs = || vigil::state::lock(&app.state.get("first").unwrap()).runs;
    let before = runs();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(runs() > before, "the running probe stopped after a failed reload");

    std::fs::write(
        &file,
        format!("probes:\n  - {{name: second, kind: http, url: '{base}/ok'}}\n"),
    )
    .unwrap();
    let applied = app.reload().expect("valid config");
    assert_eq!((applied.started, applied.stopped), (1, 1));
    wait_for_runs(&app).await;
    let (_, _, text) = common::get(&router, "/metrics", None).await;
    assert_eq!(reload_gauge(&text), "1");
    assert!(
        !text.contains("probe=\"first\""),
        "a removed probe's series must vanish"
    );
    assert!(text.contains("vigil_probe_success{probe=\"second\",kind=\"http\"} 1"));

    // An unchanged probe is left running; a changed one restarts with its counters kept.
    assert_eq!(app.reload().unwrap().unchanged, 1);
    std::fs::write(
        &file,
        format!("probes:\n  - {{name: second, kind: http, url: '{base}/ok', degraded_after: 2s}}\n"),
    )
    .unwrap();
    let runs_before = vigil::state::lock(&app.state.get("second").unwrap()).runs;
    assert_eq!(app.reload().unwrap().restarted, 1);
    assert!(vigil::state::lock(&app.state.get("second").unwrap()).runs >= runs_before);
    app.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_serves_tls_with_basic_auth_on_a_real_socket() {
    let ca = common::TestCa::new();
    let (cert_file, key_file) = ca.leaf("listener", -1, 30);
    let dir = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash("correct horse", 4).unwrap();
    let web_file = dir.path().join("web.yml");
    std::fs::write(
        &web_file,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  prometheus: '{hash}'\n",
            cert_file.display(),
            key_file.display()
        ),
    )
    .unwrap();
    let web = vigil::web::listener::WebConfig::load(&web_file).unwrap();
    let app = App::start(common::config("", dir.path()), None).unwrap();
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        vigil::web::listener::serve(
            socket,
            vigil::web::router(app),
            &web,
            &Default::default(),
            shutdown,
            Duration::from_secs(2),
        )
        .await
    });

    // vigil's own http probe is the client: TLS verified against the test CA.
    std::fs::write(dir.path().join("pw"), "correct horse").unwrap();
    let ca_file = ca.ca_file();
    let client = common::config(
        &format!(
            "probes:\n\
             - {{name: authed, kind: http, url: 'https://localhost:{port}/-/healthy', basic_auth: {{username: prometheus, password: {{file: pw}}}}, tls_config: {{ca_file: '{ca}'}}}}\n\
             - {{name: anonymous, kind: http, url: 'https://localhost:{port}/-/healthy', tls_config: {{ca_file: '{ca}'}}}}\n\
             - {{name: wrong, kind: http, url: 'https://localhost:{port}/metrics', basic_auth: {{username: prometheus, password: nope}}, tls_config: {{ca_file: '{ca}'}}}}\n\
             - {{name: plain, kind: http, url: 'http://localhost:{port}/-/healthy'}}\n",
            ca = ca_file.display()
        ),
        dir.path(),
    );
    let authed = common::run(&client, "authed").await;
    assert_eq!(authed.level, Level::Up, "{authed:?}");
    // Twice: the second is answered from the verified-credentials cache.
    assert_eq!(common::run(&client, "authed").await.level, Level::Up);
    assert_eq!(
        common::run(&client, "anonymous")
            .await
            .observations
            .http()
            .and_then(|h| h.status()),
        Some(401)
    );
    assert_eq!(
        common::run(&client, "wrong")
            .await
            .observations
            .http()
            .and_then(|h| h.status()),
        Some(401)
    );
    assert_eq!(
        common::run(&client, "plain").await.level,
        Level::Down,
        "plain HTTP must not be served on a TLS listener"
    );

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("graceful shutdown")
        .unwrap()
        .unwrap();
}

#[test]
fn listen_addresses() {
    use vigil::web::listener::parse_listen_address;
    assert_eq!(parse_listen_address(":9430").unwrap().to_string(), "0.0.0.0:9430");
    assert_eq!(parse_listen_address("127.0.0.1:0").unwrap().to_string(), "127.0.0.1:0");
    assert!(parse_listen_address("localhost").is_err());
}
