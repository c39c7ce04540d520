//! The `heartbeat` kind: pending until `max_age` has passed since it was configured, pushes
//! with right and wrong tokens, age growing, a reported failure, and the last beat (and when
//! the probe was first configured) surviving a restart (kept in `<state_dir>/heartbeats.json`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use vigil::app::App;
use vigil::probe::{Level, Reason};

const TOKEN: &str = "backup-token-0123456789";

fn config_text(dir: &std::path::Path) -> String {
    format!(
        "state_dir: {}\nprobes:\n  - {{name: backup, kind: heartbeat, token: {TOKEN}, max_age: 2s, warn_age: 1s, interval: 100ms, timeout: 50ms}}\n  - {{name: web, kind: tcp, address: '127.0.0.1:1'}}\n",
        dir.join("state").display()
    )
}

async fn push(app: &std::sync::Arc<App>, name: &str, token: Option<&str>, body: &str) -> (StatusCode, String) {
    let mut request = Request::post(format!("/push/{name}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = vigil::web::router(app.clone())
        .oneshot(request.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    (
        status,
        String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap(),
    )
}

fn last(app: &App) -> vigil::state::Outcome {
    vigil::state::lock(&app.state.get("backup").unwrap())
        .last
        .clone()
        .expect("a run")
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(250)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_ages_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(&config_text(dir.path()), dir.path());
    let app = App::start(config, None).unwrap();
    settle().await;
    // No beat yet, and max_age (2s) has not passed since the probe was configured: pending, no
    // level on /metrics, nothing to alert on.
    {
        let handle = app.state.get("backup").unwrap();
        let state = vigil::state::lock(&handle);
        assert!(state.current.is_none() && state.last.is_none(), "{state:?}");
    }
    let metrics = vigil::metrics::encode(&app.registry, false).unwrap();
    assert!(!metrics.contains(r#"vigil_probe_status{probe="backup""#), "{metrics}");
    // A restart within the grace keeps when the probe was configured.
    app.stop();
    drop(app);
    let app = App::start(common::config(&config_text(dir.path()), dir.path()), None).unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let outcome = last(&app);
    assert_eq!(
        (outcome.level, outcome.reason),
        (Level::Down, Some(Reason::Empty)),
        "no beat within max_age of being configured: {outcome:?}"
    );

    assert_eq!(push(&app, "backup", None, "").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        push(&app, "backup", Some("wrong-token-0123456789"), "").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(push(&app, "nope", Some(TOKEN), "").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        push(&app, "web", Some(TOKEN), "").await.0,
        StatusCode::NOT_FOUND,
        "not a heartbeat probe"
    );
    let (status, body) = push(&app, "backup", Some(TOKEN), "{\"status\": \"maybe\"}").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::BAD_REQUEST, "status must be ok or fail, not \"maybe\"\n")
    );
    settle().await;
    assert_eq!(last(&app).reason, Some(Reason::Empty), "rejected pushes must not count");

    assert_eq!(
        push(&app, "backup", Some(TOKEN), "").await,
        (StatusCode::OK, "ok\n".to_string())
    );
    settle().await;
    assert_eq!(last(&app).level, Level::Up);
    // The age grows: past warn_age (1s) DEGRADED, past max_age (2s) DOWN.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let ageing = last(&app);
    assert_eq!(
        (ageing.level, ageing.reason),
        (Level::Degraded, Some(Reason::Stale)),
        "{ageing:?}"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(last(&app).level, Level::Down);

    let (status, _) = push(
        &app,
        "backup",
        Some(TOKEN),
        "{\"status\": \"fail\", \"message\": \"disk full\"}",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    settle().await;
    let failed = last(&app);
    assert_eq!((failed.level, failed.reason), (Level::Down, Some(Reason::Reported)));
    assert_eq!(failed.detail, "the job reported a failure: disk full");

    assert_eq!(
        push(&app, "backup", Some(TOKEN), "{\"status\": \"ok\"}").await.0,
        StatusCode::OK
    );
    settle().await;
    assert_eq!(last(&app).level, Level::Up);
    let metrics = vigil::metrics::encode(&app.registry, false).unwrap();
    assert!(
        metrics.contains(r#"vigil_freshness_threshold_seconds{probe="backup",kind="heartbeat"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"vigil_freshness_warn_threshold_seconds{probe="backup",kind="heartbeat"} 1"#));
    assert!(metrics.contains(r#"vigil_freshness_newest_timestamp_seconds{probe="backup",kind="heartbeat"} 1"#));
    assert!(!metrics.contains(TOKEN));
    app.stop();
    drop(app);

    // A restart keeps the last beat: a new App on the same state_dir is UP at once.
    let config = common::config(&config_text(dir.path()), dir.path());
    let app = App::start(config, None).unwrap();
    settle().await;
    assert_eq!(last(&app).level, Level::Up, "the beat was lost across the restart");
    app.stop();
}

#[test]
fn tokens_are_required_and_long_enough() {
    let dir = tempfile::tempdir().unwrap();
    let errors = vigil::config::Config::parse(
        "probes:\n  - {name: a, kind: heartbeat, max_age: 1h}\n  - {name: b, kind: heartbeat, token: short, max_age: 1h}\n  - {name: c, kind: heartbeat, token_file: nope, max_age: 1h}\n",
        dir.path(),
    )
    .expect_err("invalid")
    .to_string();
    for want in [
        "line 2: probes[0]: missing key `token` or `token_file`",
        "line 3: probes[1].token: the token must be at least 16 characters long",
        "line 4: probes[2].token_file: cannot read",
    ] {
        assert!(errors.contains(want), "missing {want:?} in:\n{errors}");
    }
}
