//! The status page's API, badges, live events, hidden probes, escaping, and the history store:
//! retention, pruning, and history that survives a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing;
use http_body_util::BodyExt;
use tower::ServiceExt;
use vigil::app::App;
use vigil::config;
use vigil::history::History;
use vigil::probe::{Level, Reason};
use vigil::state::Outcome;

async fn target() -> String {
    let app = Router::new().route("/ok", routing::get(|| async { "fine" })).route(
        "/busy",
        routing::get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "busy") }),
    );
    format!("http://{}", common::serve(app).await)
}

async fn status_json(router: &Router) -> serde_json::Value {
    let (status, content_type, body) = common::get(router, "/api/v1/status", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/json");
    serde_json::from_str(&body).unwrap()
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn probes(status: &serde_json::Value) -> Vec<&serde_json::Value> {
    status["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["probes"].as_array().unwrap())
        .collect()
}

fn outcome(level: Level, at: SystemTime, millis: u64) -> Outcome {
    Outcome {
        level,
        reason: (level != Level::Up).then_some(Reason::Status),
        detail: if level == Level::Up {
            String::new()
        } else {
            "status 500".into()
        },
        duration: Duration::from_millis(millis),
        observations: vigil::probe::Kind::Tcp.observed(),
        at,
        retries: 0,
        pending: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_json_groups_hides_and_escapes() {
    let base = target().await;
    let closed = common::closed_port();
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &format!(
            "status_page: {{title: 'Our <b>services</b>', message: 'Maintenance at 22:00', group_by: team}}\n\
             labels: {{env: test}}\n\
             probes:\n\
             - {{name: api, kind: http, url: '{base}/ok', labels: {{team: platform}}, interval: 200ms, timeout: 100ms}}\n\
             - {{name: busy, kind: http, url: '{base}/busy', degraded_status: [503], labels: {{team: '<script>alert(1)</script>'}}}}\n\
             - {{name: db, kind: tcp, address: '127.0.0.1:{closed}'}}\n\
             - {{name: secret-url, kind: http, url: 'http://user:hunter2@{}/ok?token=abc', labels: {{team: platform}}}}\n\
             - {{name: internal, kind: http, url: '{base}/ok', status_page: {{hide: true}}}}\n",
            base.trim_start_matches("http://")
        ),
        dir.path(),
    );
    let app = App::start(config, None).unwrap();
    app.ready().await.unwrap();
    let router = vigil::web::router(app.clone());
    wait_for("every probe's first run", async || {
        app.state.handles().iter().all(|h| vigil::state::lock(h).last.is_some())
    })
    .await;

    let status = status_json(&router).await;
    assert_eq!(status["title"], "Our <b>services</b>");
    assert_eq!(status["message"], "Maintenance at 22:00");
    assert_eq!(status["group_by"], "team");
    assert_eq!(status["bar"]["count"], 90);
    assert_eq!(status["bar"]["period_seconds"], 86400);
    assert!(status.get("containers").is_none(), "no containers are watched yet");
    assert_eq!(
        status["summary"],
        serde_json::json!({"up": 2, "degraded": 1, "down": 1, "pending": 0, "total": 4})
    );
    // Named groups sorted, probes without the label last.
    let groups: Vec<&serde_json::Value> = status["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| &g["name"])
        .collect();
    assert_eq!(
        groups,
        [
            &serde_json::json!("<script>alert(1)</script>"),
            &serde_json::json!("platform"),
            &serde_json::Value::Null
        ]
    );
    let names: Vec<&str> = probes(&status).iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["busy", "api", "secret-url", "db"]);

    let all = probes(&status);
    let api = all.iter().find(|p| p["name"] == "api").unwrap();
    for key in [
        "name",
        "kind",
        "target",
        "labels",
        "level",
        "reason",
        "detail",
        "latency_seconds",
        "last_run",
        "since",
        "interval_seconds",
        "degraded_after_seconds",
        "down_after_seconds",
        "consecutive_failures",
        "uptime",
        "bar",
        "last_failure",
    ] {
        assert!(api.get(key).is_some(), "probe JSON lacks {key}: {api}");
    }
    assert_eq!(api["level"], "up");
    assert_eq!(api["labels"], serde_json::json!({"env": "test", "team": "platform"}));
    assert_eq!(api["uptime"]["24h"]["ratio"], 1.0);
    assert!(api["uptime"]["24h"]["latency_p95_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(api["bar"]["runs"].as_array().unwrap().len(), 90);
    assert!(api["bar"]["runs"][89].as_u64().unwrap() >= 1, "today is the last bar");
    assert!(api.get("freshness").is_none());
    let db = all.iter().find(|p| p["name"] == "db").unwrap();
    assert_eq!(
        (db["level"].as_str(), db["reason"].as_str()),
        (Some("down"), Some("connect"))
    );
    assert_eq!(db["last_failure"]["reason"], "connect");
    assert_eq!(db["uptime"]["24h"]["ratio"], 0.0);
    assert!(db["since"].is_string());
    let busy = all.iter().find(|p| p["name"] == "busy").unwrap();
    assert_eq!(busy["level"], "degraded");
    assert_eq!(busy["uptime"]["24h"]["ratio"], 1.0, "DEGRADED counts as available");
    assert_eq!(busy["uptime"]["24h"]["degraded"], busy["uptime"]["24h"]["runs"]);

    // Secrets and hidden probes never show: not in the JSON, the page, a badge or a detail.
    let text = status.to_string();
    assert!(!text.contains("hunter2") && !text.contains("token=abc"), "{text}");
    assert!(!text.contains("internal"), "a hidden probe is in the status JSON");
    let (code, _, _) = common::get(&router, "/api/v1/probes/internal", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, content_type, body) = common::get(&router, "/badge/internal.svg", None).await;
    assert_eq!(
        (code, content_type.as_str()),
        (StatusCode::NOT_FOUND, "image/svg+xml; charset=utf-8")
    );
    assert!(!body.contains("internal"));
    let (code, _, _) = common::get(&router, "/badge/internal/uptime.svg", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    // The page is static and carries no data: nothing in it can be injected. Its script only
    // uses textContent; a CSP forbids inline script anyway.
    let response = router
        .clone()
        .oneshot(Request::builder().uri("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let page = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(page.contains("assets/status.js") && !page.contains("alert(1)"));
    let (code, content_type, js) = common::get(&router, "/assets/status.js", None).await;
    assert_eq!(
        (code, content_type.as_str()),
        (StatusCode::OK, "text/javascript; charset=utf-8")
    );
    assert!(!js.contains("innerHTML") && !js.contains("insertAdjacentHTML") && !js.contains("document.write"));
    assert!(
        !js.contains("http://") || js.contains("http://www.w3.org/2000/svg"),
        "no external assets"
    );
    let (code, content_type, _) = common::get(&router, "/assets/status.css", None).await;
    assert_eq!(
        (code, content_type.as_str()),
        (StatusCode::OK, "text/css; charset=utf-8")
    );
    assert_eq!(
        common::get(&router, "/assets/nope.js", None).await.0,
        StatusCode::NOT_FOUND
    );
    let response = router
        .clone()
        .oneshot(Request::builder().uri("/probes/api").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.headers()["location"], "../#/probes/api");

    // Badges.
    let (code, content_type, svg) = common::get(&router, "/badge/api.svg", None).await;
    assert_eq!(
        (code, content_type.as_str()),
        (StatusCode::OK, "image/svg+xml; charset=utf-8")
    );
    assert!(
        svg.starts_with("<svg") && svg.contains("aria-label=\"api: up\"") && svg.contains("#2e7d32"),
        "{svg}"
    );
    let (_, _, svg) = common::get(&router, "/badge/db.svg", None).await;
    assert!(
        svg.contains("aria-label=\"db: down\"") && svg.contains("#c62828"),
        "{svg}"
    );
    let (_, _, svg) = common::get(&router, "/badge/busy.svg", None).await;
    assert!(svg.contains("busy: degraded"), "{svg}");
    let (code, _, svg) = common::get(&router, "/badge/api/uptime.svg", None).await;
    assert_eq!(code, StatusCode::OK);
    assert!(svg.contains("aria-label=\"api 24h: 100.00%\""), "{svg}");
    let (_, _, svg) = common::get(&router, "/badge/db/uptime.svg", None).await;
    assert!(svg.contains("db 24h: 0.00%") && svg.contains("#c62828"), "{svg}");
    assert_eq!(
        common::get(&router, "/badge/nope.svg", None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        common::get(&router, "/badge/api.png", None).await.0,
        StatusCode::NOT_FOUND
    );

    // The detail view: the probe and its stored runs.
    wait_for("stored runs", async || {
        app.history.flush().await;
        let (_, _, body) = common::get(&router, "/api/v1/probes/api", None).await;
        let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
        detail["runs"].as_array().unwrap().len() >= 2
    })
    .await;
    let (_, _, body) = common::get(&router, "/api/v1/probes/db", None).await;
    let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(detail["probe"]["name"], "db");
    assert_eq!(detail["hours"]["runs"].as_array().unwrap().len(), 24);
    let run = &detail["runs"][0];
    assert_eq!(
        (run["level"].as_str(), run["reason"].as_str()),
        (Some("down"), Some("connect"))
    );
    assert!(run["detail"].as_str().unwrap().contains("connect"));
    assert!(run["latency_seconds"].is_number() && run["at"].is_string());
    app.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_announce_runs_and_leave_hidden_probes_out() {
    let base = target().await;
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &format!(
            "probes:\n\
             - {{name: seen, kind: http, url: '{base}/ok', interval: 100ms, timeout: 50ms}}\n\
             - {{name: unseen, kind: http, url: '{base}/ok', interval: 100ms, timeout: 50ms, status_page: {{hide: true}}}}\n"
        ),
        dir.path(),
    );
    let app = App::start(config, None).unwrap();
    let router = vigil::web::router(app.clone());
    let response = router
        .clone()
        .oneshot(Request::builder().uri("/api/v1/events").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while text.matches("event: runs").count() < 5 {
        let frame = tokio::time::timeout_at(deadline.into(), body.frame())
            .await
            .expect("events")
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
    assert!(text.starts_with("event: hello\nretry: 1000\n"), "{text}");
    assert!(
        text.contains(r#""probe":"seen""#) && text.contains(r#""level":"up""#),
        "{text}"
    );
    assert!(!text.contains("unseen"), "a hidden probe was announced:\n{text}");

    // The stream ends when vigil stops, so a graceful shutdown does not wait for it.
    app.stop();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
    })
    .await;
    assert!(end.is_ok(), "the event stream did not end at shutdown");
}

fn history_config(path: &std::path::Path, raw: &str, hourly: &str) -> config::History {
    config::History {
        path: Some(path.to_path_buf()),
        raw_retention: humantime::parse_duration(raw).unwrap(),
        hourly_retention: humantime::parse_duration(hourly).unwrap(),
        memory: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_old_runs_and_hours() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let history = History::open(&history_config(&path, "24h", "3d"));
    history.ready().await.unwrap();
    history.record("web", &outcome(Level::Down, now - day * 5, 10));
    history.record("web", &outcome(Level::Up, now - day * 2, 20));
    history.record("web", &outcome(Level::Up, now - Duration::from_secs(3600), 30));
    history.record("web", &outcome(Level::Degraded, now - Duration::from_secs(60), 1500));
    history.flush().await;
    let all = history.runs("web", SystemTime::UNIX_EPOCH, 100).await.unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].level, Level::Degraded, "newest first");

    history.prune(now).await;
    let kept = history.runs("web", SystemTime::UNIX_EPOCH, 100).await.unwrap();
    assert_eq!(kept.len(), 2, "runs older than raw_retention (24h) stay: {kept:?}");
    assert!((kept[1].latency - 0.030).abs() < 1e-9);
    history.close().await;

    // Read back: the hour 5 days ago is past hourly_retention (3d); the one 2 days ago is kept.
    let history = History::open(&history_config(&path, "24h", "3d"));
    history.ready().await.unwrap();
    let probe = history.probe("web");
    let now_ms = vigil::history::unix_ms(now);
    let bar = probe.buckets.daily_bar(now_ms, 90);
    assert_eq!(bar.iter().map(|c| c.runs).sum::<u32>(), 3, "{bar:?}");
    assert_eq!(bar.iter().map(|c| c.down).sum::<u32>(), 0);
    let last_day = probe.buckets.last_hours(now_ms, 24).counts;
    assert_eq!((last_day.runs, last_day.up, last_day.degraded), (2, 1, 1));
    // The last failure and the level are kept with the probe, beyond the runs' retention.
    assert_eq!(probe.last_failure.as_ref().map(|f| f.reason.as_str()), Some("status"));
    assert_eq!(probe.level.map(|(level, _)| level), Some(Level::Degraded));
    history.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_a_restart() {
    let base = target().await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "history: {{path: history.db}}\n\
         probes:\n\
         - {{name: web, kind: http, url: '{base}/ok', interval: 100ms, timeout: 50ms}}\n"
    );
    let app = App::start(common::config(&text, dir.path()), None).unwrap();
    app.ready().await.unwrap();
    wait_for("five runs", async || {
        vigil::state::lock(&app.state.get("web").unwrap()).runs >= 5
    })
    .await;
    app.close().await;
    let before = app
        .history
        .probe("web")
        .buckets
        .last_hours(vigil::history::unix_ms(SystemTime::now()), 24);
    let runs_before = before.counts.runs;
    assert!(runs_before >= 5);
    drop(app);
    assert!(dir.path().join("history.db").is_file());

    // A new process: the probe has not run yet, but its history is back.
    let text = text.replace("interval: 100ms, timeout: 50ms", "interval: 1h, timeout: 50ms");
    let app = App::start(common::config(&text, dir.path()), None).unwrap();
    app.ready().await.unwrap();
    let router = vigil::web::router(app.clone());
    let status = status_json(&router).await;
    let web = probes(&status)[0].clone();
    let runs = web["uptime"]["24h"]["runs"].as_u64().unwrap();
    assert!(
        runs >= u64::from(runs_before),
        "runs before {runs_before}, after restart {runs}: {web}"
    );
    assert_eq!(web["uptime"]["24h"]["ratio"], 1.0);
    assert_eq!(web["uptime"]["30d"]["runs"].as_u64().unwrap(), runs);
    let (_, _, body) = common::get(&router, "/api/v1/probes/web", None).await;
    let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        detail["runs"].as_array().unwrap().len() >= runs_before as usize,
        "the stored runs are shown after a restart: {detail}"
    );
    app.close().await;
}

#[test]
fn an_unwritable_history_path_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the store's folder should be: SQLite cannot create the database.
    std::fs::write(dir.path().join("not-a-folder"), "x").unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let history = History::open(&history_config(&dir.path().join("not-a-folder/h.db"), "24h", "90d"));
        let error = history.ready().await.expect_err("cannot open");
        assert!(error.to_string().contains("cannot open the history store"), "{error}");
        // Recording still works, in memory, and never blocks.
        history.record("x", &outcome(Level::Up, SystemTime::now(), 1));
        history.flush().await;
        assert_eq!(
            history
                .probe("x")
                .buckets
                .last_days(vigil::history::unix_ms(SystemTime::now()), 1)
                .counts
                .runs,
            1
        );
    });
}

#[test]
fn shared_handles_are_cheap_to_clone() {
    // The scheduler hands every probe task the same history; cloning it clones an Arc.
    fn assert_arc(_: &Arc<History>) {}
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let history = History::open(&config::History::default());
        history.ready().await.unwrap();
        assert_arc(&history);
    });
}
