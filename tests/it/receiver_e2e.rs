//! `vigil receiver` end to end, with real components only, all on 127.0.0.1: a real Docker engine
//! (tests/it/common/docker.rs) running container `web-1`, whose health check always fails; the
//! `vigil receiver` binary with `dry_run: false`, configured to restart `web-1` on that engine;
//! and Alertmanager 0.25 (Debian's `prometheus-alertmanager`) delivering to it. The test posts
//! alerts to Alertmanager's API as Prometheus would, and checks what the receiver does through
//! the container's `State.StartedAt` and the engine's events, the audit log, the state file and
//! `/metrics` (also through `promtool check metrics`). Every process the test starts (dockerd and
//! its containers, Alertmanager, both receiver processes) is stopped when it ends, also when it
//! panics (drop guards).
//!
//! Alertmanager's config is derived from the shipped alertmanager/alertmanager.yml
//! ([`test_copy::one_receiver_config`]): its `vigil-receiver` receiver as shipped (a webhook with
//! `send_resolved: true` and a bearer token from `http_config.authorization.credentials_file`),
//! only its URL and token file pointed at the test's; one route sending everything to it (so the
//! receiver, not a route, must refuse what it may not act on), grouped by the shipped top-level
//! route's `group_by`, with `group_wait: 1s`, `group_interval: 1s`, `repeat_interval: 1m`.
//!
//! The story:
//! 1. `web-1` is unhealthy. VigilContainerUnhealthy{container="web-1", remediate="true"} fires:
//!    the receiver restarts `web-1`, once (audit `done`). In the same moment an alert without
//!    `remediate="true"` for `web-1` and one with it for `db-1`, which no probe declares, are
//!    not acted on (counted as `not_requested`; audited and counted as `not_declared`).
//! 2. The alert resolves and fires again (a new `startsAt`): inside the 10m cooldown, suppressed
//!    (`suppressed:cooldown`), `web-1` not restarted.
//! 3. The receiver is stopped (SIGTERM) and started again on the same state file and port; a new
//!    alert for `web-1` (another alertname) is still suppressed by the cooldown.
//!
//! Over the whole test the engine reports exactly one `restart` of `web-1`. The container runs
//! `sleep 300` under a shell that exits on SIGTERM, as a well-behaved service does, so that the
//! restart does not wait out the receiver's 10 s stop timeout (busybox `sleep` as PID 1 ignores
//! SIGTERM). The test takes about 10 seconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::stack;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Running;
use common::docker::{Engine, IMAGE};
use serde_json::{Value, json};
use stack::test_copy::{self, OneReceiver};
use stack::{ALERTMANAGER_YML, TempDir, http, repo, rfc3339};

/// The receiver's bearer token (Alertmanager reads it from the same file).
const TOKEN: &str = "receiver-e2e-token-0123456789";
/// The container the config declares a remediation for.
const WEB: &str = "web-1";
/// How long any one expected effect may take to show.
const PATIENCE: Duration = Duration::from_secs(20);

/// Polls `check` until it gives `Ok`; after [`PATIENCE`], fails with `what` and its last `Err`.
fn eventually<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match check() {
            Ok(value) => return value,
            Err(state) if Instant::now() >= deadline => panic!("timed out waiting for {what}:\n{state}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn started_at(engine: &Engine) -> String {
    engine.docker(&["inspect", "-f", "{{.State.StartedAt}}", WEB])
}

/// The engine's events of `action` for [`WEB`] between `since` and now.
fn events(engine: &Engine, action: &str, since: SystemTime) -> usize {
    let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs().to_string();
    engine
        .docker(&[
            "events",
            "--since",
            &unix(since),
            "--until",
            &unix(SystemTime::now() + Duration::from_secs(1)),
            "--filter",
            &format!("container={WEB}"),
            "--filter",
            &format!("event={action}"),
            "--format",
            "{{.Action}}",
        ])
        .lines()
        .filter(|line| *line == action)
        .count()
}

/// An alert as Prometheus posts it to Alertmanager: firing until `ends_at` (resolved when that
/// is now), 5 minutes ahead otherwise.
fn alert(labels: &[(&str, &str)], starts_at: SystemTime, ends_at: Option<SystemTime>) -> Value {
    let labels: serde_json::Map<String, Value> = labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    let summary = format!(
        "{} for {}",
        labels["alertname"].as_str().unwrap_or(""),
        labels["container"].as_str().unwrap_or("")
    );
    json!({
        "labels": labels,
        "annotations": {"summary": summary},
        "startsAt": rfc3339(starts_at),
        "endsAt": rfc3339(ends_at.unwrap_or(SystemTime::now() + Duration::from_secs(300))),
        "generatorURL": "http://127.0.0.1:9090/graph",
    })
}

fn post_alerts(alertmanager: u16, alerts: &[Value]) {
    let (status, body) = http(
        alertmanager,
        "POST",
        "/api/v2/alerts",
        &Value::Array(alerts.to_vec()).to_string(),
    )
    .expect("post alerts");
    assert_eq!(status, 200, "posting alerts to Alertmanager: {body}");
}

/// The audit log's lines.
fn audit(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("audit line {line:?}: {e}")))
        .collect()
}

/// The audit log's (alertname, target, decision) of each line, in order.
fn decisions(lines: &[Value]) -> Vec<(String, String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    lines
        .iter()
        .map(|l| (text(&l["alertname"]), text(&l["target"]), text(&l["decision"])))
        .collect()
}

fn metrics(receiver: &Running) -> String {
    let (status, body) = http(receiver.port, "GET", "/metrics", "").expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of `series` (name and labels, exactly as encoded) in `metrics`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn triple(alertname: &str, target: &str, decision: &str) -> (String, String, String) {
    (alertname.into(), target.into(), decision.into())
}

#[test]
fn alertmanager_to_receiver_restarts_a_docker_container_once_within_its_guards() {
    let _turn = crate::common::exclusive();
    let begun = Instant::now();
    let dir = TempDir::new("receiver-e2e");
    let engine = Engine::start();
    let since = SystemTime::now() - Duration::from_secs(1);
    engine.docker(&[
        "run",
        "-d",
        "--name",
        WEB,
        "--network",
        "none",
        "--health-cmd",
        "false",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        IMAGE,
        "sh",
        "-c",
        "trap 'exit 0' TERM; sleep 300 & wait",
    ]);

    let token_file = dir.file("receiver_token", &format!("{TOKEN}\n"));
    let config = dir.file(
        "vigil.yml",
        &format!(
            "docker: {{host: '{}'}}\n\
             probes:\n\
             - name: web\n  kind: tcp\n  address: 127.0.0.1:1\n  remediation: {{docker: {{container: {WEB}}}}}\n\
             - name: api\n  kind: tcp\n  address: 127.0.0.1:1\n\
             receiver:\n  token_file: receiver_token\n  dry_run: false\n  state_file: state.json\n  \
             audit_log: audit.jsonl\n  cooldown: 10m\n",
            engine.host()
        ),
    );
    let mut receiver = Running::receiver(&config, "127.0.0.1:0");
    let port = receiver.port;

    let am_config = dir.file(
        "alertmanager.yml",
        &test_copy::one_receiver_config(
            &repo(ALERTMANAGER_YML),
            &OneReceiver {
                name: "vigil-receiver",
                url: &format!("http://127.0.0.1:{port}/alertmanager"),
                credentials_file: &token_file,
                group_wait: "1s",
                group_interval: "1s",
                repeat_interval: "1m",
            },
        ),
    );
    let alertmanager = stack::alertmanager(&am_config, &dir.0);
    let am = alertmanager.port;

    // The container is unhealthy, as the alert will say.
    eventually("web-1 to be unhealthy", || {
        match engine.docker(&["inspect", "-f", "{{.State.Health.Status}}", WEB]) {
            status if status == "unhealthy" => Ok(()),
            status => Err(status),
        }
    });
    let first_start = started_at(&engine);

    // 1. A remediation request for web-1, with two alerts that must not be acted on.
    let unhealthy = [
        ("alertname", "VigilContainerUnhealthy"),
        ("container", WEB),
        ("remediate", "true"),
        ("severity", "warning"),
    ];
    let fired = SystemTime::now();
    post_alerts(
        am,
        &[
            alert(&unhealthy, fired, None),
            alert(
                &[
                    ("alertname", "VigilContainerRestartLoop"),
                    ("container", WEB),
                    ("severity", "warning"),
                ],
                fired,
                None,
            ),
            alert(
                &[
                    ("alertname", "VigilContainerUnhealthy"),
                    ("container", "db-1"),
                    ("remediate", "true"),
                    ("severity", "warning"),
                ],
                fired,
                None,
            ),
        ],
    );
    let lines = eventually("the restart and the undeclared container in the audit log", || {
        let lines = audit(&dir.0);
        let seen = decisions(&lines);
        if seen.contains(&triple("VigilContainerUnhealthy", "docker/web-1", "done"))
            && seen.contains(&triple("VigilContainerUnhealthy", "-", "suppressed:not_declared"))
        {
            Ok(lines)
        } else {
            Err(format!("{seen:?}"))
        }
    });
    let done = lines.iter().find(|l| l["decision"] == "done").unwrap();
    assert_eq!(
        (&done["action"], &done["detail"], &done["dry_run"], &done["probe"]),
        (&json!("docker_restart"), &json!("restarted"), &json!(false), &json!("")),
        "{done}"
    );
    assert!(!done["fingerprint"].as_str().unwrap_or("").is_empty(), "{done}");
    let second_start = started_at(&engine);
    assert_ne!(first_start, second_start, "web-1 was not restarted");
    // The alert without remediate="true" reached the receiver too, and was only counted.
    let text = eventually("the alert without remediate to be counted", || {
        let text = metrics(&receiver);
        match sample(&text, r#"vigil_remediation_suppressed_total{reason="not_requested"}"#) {
            Some(1.0) => Ok(text),
            _ => Err(text),
        }
    });
    assert_eq!(
        sample(&text, r#"vigil_receiver_webhooks_total{outcome="accepted"}"#),
        Some(3.0),
        "one delivery per alert group:\n{text}"
    );

    // 2. The alert resolves (Alertmanager sends the resolved notice: nothing is pending, nothing
    // happens), then fires again with a new startsAt: a new incident, inside the cooldown.
    post_alerts(am, &[alert(&unhealthy, fired, Some(SystemTime::now()))]);
    eventually("the resolved notice to reach the receiver", || {
        let text = metrics(&receiver);
        match sample(&text, r#"vigil_receiver_webhooks_total{outcome="accepted"}"#) {
            Some(n) if n >= 4.0 => Ok(()),
            _ => Err(text),
        }
    });
    post_alerts(am, &[alert(&unhealthy, SystemTime::now(), None)]);
    let lines = eventually("the repeat to be suppressed by the cooldown", || {
        let lines = audit(&dir.0);
        let seen = decisions(&lines);
        if seen.contains(&triple(
            "VigilContainerUnhealthy",
            "docker/web-1",
            "suppressed:cooldown",
        )) {
            Ok(lines)
        } else {
            Err(format!("{seen:?}"))
        }
    });
    let cooled = lines.iter().find(|l| l["decision"] == "suppressed:cooldown").unwrap();
    assert_eq!(
        cooled["fingerprint"], done["fingerprint"],
        "the same alert (same labels), firing again"
    );
    assert_eq!(started_at(&engine), second_start, "restarted inside the cooldown");

    let text = metrics(&receiver);
    for (series, value) in [
        (
            r#"vigil_remediation_actions_total{action="docker_restart",outcome="done"}"#,
            Some(1.0),
        ),
        (
            r#"vigil_remediation_actions_total{action="docker_restart",outcome="failed"}"#,
            None,
        ),
        (
            r#"vigil_remediation_actions_total{action="docker_restart",outcome="dry_run"}"#,
            None,
        ),
        (r#"vigil_remediation_suppressed_total{reason="cooldown"}"#, Some(1.0)),
        (
            r#"vigil_remediation_suppressed_total{reason="not_declared"}"#,
            Some(1.0),
        ),
        (
            r#"vigil_remediation_suppressed_total{reason="not_requested"}"#,
            Some(1.0),
        ),
        (r#"vigil_remediation_suppressed_total{reason="duplicate"}"#, None),
        (r#"vigil_receiver_webhooks_total{outcome="accepted"}"#, Some(5.0)),
        (r#"vigil_receiver_webhooks_total{outcome="unauthorized"}"#, None),
    ] {
        assert_eq!(sample(&text, series), value, "{series} in:\n{text}");
    }
    common::promtool_check_metrics(&text);

    // 3. The receiver stops and starts again, on the same state file (and port, which
    // Alertmanager knows): the cooldown survives.
    assert!(receiver.stop().success(), "{}", receiver.logs());
    let first_logs = receiver.logs();
    let state: Value = serde_json::from_str(&std::fs::read_to_string(dir.0.join("state.json")).unwrap()).unwrap();
    assert_eq!(
        state["actions"]["docker/web-1"].as_array().map(Vec::len),
        Some(1),
        "{state}"
    );
    drop(receiver);
    let receiver = Running::receiver(&config, &format!("127.0.0.1:{port}"));
    post_alerts(
        am,
        &[alert(
            &[
                ("alertname", "VigilContainerStopped"),
                ("container", WEB),
                ("remediate", "true"),
                ("severity", "critical"),
            ],
            SystemTime::now(),
            None,
        )],
    );
    let lines = eventually("the new alert after the restart to be suppressed", || {
        let lines = audit(&dir.0);
        let seen = decisions(&lines);
        if seen.contains(&triple("VigilContainerStopped", "docker/web-1", "suppressed:cooldown")) {
            Ok(lines)
        } else {
            Err(format!("{seen:?}"))
        }
    });
    assert_eq!(
        decisions(&lines)
            .into_iter()
            .filter(|(_, target, _)| target == "docker/web-1")
            .collect::<Vec<_>>(),
        [
            triple("VigilContainerUnhealthy", "docker/web-1", "done"),
            triple("VigilContainerUnhealthy", "docker/web-1", "suppressed:cooldown"),
            triple("VigilContainerStopped", "docker/web-1", "suppressed:cooldown"),
        ],
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l["alertname"] == "VigilContainerRestartLoop"),
        "an alert without remediate is not audited:\n{lines:#?}"
    );
    let text = metrics(&receiver);
    assert_eq!(
        sample(&text, r#"vigil_remediation_suppressed_total{reason="cooldown"}"#),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains("vigil_remediation_actions_total{"), "{text}");

    // Exactly one restart over the whole test: the engine's own record.
    assert_eq!(
        started_at(&engine),
        second_start,
        "restarted after the receiver's restart"
    );
    assert_eq!(events(&engine, "restart", since), 1, "restarts of web-1");
    // The token never shows.
    let audit_text = std::fs::read_to_string(dir.0.join("audit.jsonl")).unwrap();
    let second_logs = receiver.logs();
    for (what, text) in [
        ("the audit log", &audit_text),
        ("the first receiver's logs", &first_logs),
        ("the second receiver's logs", &second_logs),
        ("/metrics", &text),
    ] {
        assert!(!text.contains(TOKEN), "the token shows in {what}");
    }
    eprintln!("receiver end to end took {:.1}s", begun.elapsed().as_secs_f64());
}
