//! `vigil receiver` driven through its router: authentication, strict payloads, guarded
//! decisions written to the audit log and the state file, a restart keeping the cooldown, and the
//! WhatsApp relay against a local server. No WhatsApp Business Cloud API or MessageBird server can
//! be reached from here: the relay tests use a local server that checks the documented request
//! shapes (path, `Authorization`, JSON body) and answers 429 and 500 as those APIs do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::routing::post;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use vigil::receiver::Receiver;

const TOKEN: &str = "receiver-token-0123456789";

fn config(dir: &std::path::Path, extra: &str) -> vigil::config::ReceiverConfig {
    common::receiver_config(
        &format!(
            "docker: {{enabled: false}}\n\
             probes:\n\
             - {{name: web, kind: tcp, address: '127.0.0.1:1', remediation: {{docker: {{container: web-1}}}}}}\n\
             - {{name: api, kind: tcp, address: '127.0.0.1:1'}}\n\
             receiver:\n  token: {TOKEN}\n  state_file: state.json\n  audit_log: audit.jsonl\n  cooldown: 30m\n{extra}"
        ),
        dir,
    )
}

fn payload(alerts: Value, receiver: &str, status: &str) -> String {
    json!({
        "version": "4", "groupKey": "{}:{alertname=\"VigilProbeDownRemediate\"}", "truncatedAlerts": 0,
        "status": status, "receiver": receiver, "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093", "alerts": alerts,
    })
    .to_string()
}

fn alert(fingerprint: &str, probe: &str, remediate: bool, status: &str, starts: &str) -> Value {
    let mut labels = json!({"alertname": "VigilProbeDownRemediate", "probe": probe, "severity": "critical"});
    if remediate {
        labels["remediate"] = json!("true");
    }
    json!({"status": status, "labels": labels, "annotations": {"summary": format!("{probe} is down")},
           "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": fingerprint})
}

async fn post_to(receiver: &Arc<Receiver>, token: Option<&str>, body: String) -> (StatusCode, String) {
    let mut request = Request::post("/alertmanager").header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = vigil::receiver::router(receiver.clone())
        .oneshot(request.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    (
        status,
        String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap(),
    )
}

async fn audit_lines(dir: &std::path::Path, at_least: usize) -> Vec<Value> {
    for _ in 0..100 {
        let text = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap_or_default();
        // Only whole lines: the receiver may be writing the next one right now.
        let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        let lines: Vec<Value> = whole.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        if lines.len() >= at_least {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the audit log has fewer than {at_least} lines");
}

async fn metrics(receiver: &Arc<Receiver>) -> String {
    let response = vigil::receiver::router(receiver.clone())
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_auth_payloads_and_guards() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(&config(dir.path(), "")).unwrap();
    let firing = |fp: &str, probe: &str, starts: &str| {
        payload(
            json!([alert(fp, probe, true, "firing", starts)]),
            "vigil-receiver",
            "firing",
        )
    };

    assert_eq!(
        post_to(&receiver, None, firing("f1", "web", "2026-11-21T05:00:00Z"))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post_to(
            &receiver,
            Some("wrong-token-0123456789x"),
            firing("f1", "web", "2026-11-21T05:00:00Z")
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = post_to(&receiver, Some(TOKEN), "{\"version\": \"3\"}".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = post_to(
        &receiver,
        Some(TOKEN),
        firing("f1", "web", "2026-11-21T05:00:00Z").replace("\"4\"", "\"3\""),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::BAD_REQUEST,
            "payload version \"3\" is not supported (only \"4\")\n"
        )
    );
    let big = "x".repeat(5 << 20);
    assert_eq!(
        post_to(&receiver, Some(TOKEN), big).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );

    // Dry run (the default): the action is logged and counted, not done.
    assert_eq!(
        post_to(&receiver, Some(TOKEN), firing("f1", "web", "2026-11-21T05:00:00Z")).await,
        (StatusCode::OK, "accepted\n".into())
    );
    let lines = audit_lines(dir.path(), 1).await;
    assert_eq!(
        (lines[0]["decision"].as_str(), lines[0]["target"].as_str()),
        (Some("dry_run"), Some("docker/web-1"))
    );
    // Alertmanager repeats the same alert: deduplicated.
    post_to(&receiver, Some(TOKEN), firing("f1", "web", "2026-11-21T05:00:00Z")).await;
    // The same target again, another alert, inside the cooldown: suppressed.
    post_to(&receiver, Some(TOKEN), firing("f2", "web", "2026-11-21T05:01:00Z")).await;
    // No remediation declared for `api`: ignored and counted.
    post_to(&receiver, Some(TOKEN), firing("f3", "api", "2026-11-21T05:01:00Z")).await;
    let lines = audit_lines(dir.path(), 4).await;
    let decisions: Vec<&str> = lines.iter().map(|l| l["decision"].as_str().unwrap()).collect();
    assert_eq!(
        decisions,
        [
            "dry_run",
            "suppressed:duplicate",
            "suppressed:cooldown",
            "suppressed:not_declared"
        ]
    );
    let text = metrics(&receiver).await;
    for line in [
        r#"vigil_remediation_actions_total{action="docker_restart",outcome="dry_run"} 1"#,
        r#"vigil_remediation_suppressed_total{reason="cooldown"} 1"#,
        r#"vigil_remediation_suppressed_total{reason="duplicate"} 1"#,
        r#"vigil_receiver_webhooks_total{outcome="unauthorized"} 2"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
    common::promtool_check_metrics(&text);
    assert!(!text.contains(TOKEN));

    // A restart of the receiver keeps the cooldown (state file).
    drop(receiver);
    let state: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("state.json")).unwrap()).unwrap();
    assert_eq!(state["actions"]["docker/web-1"].as_array().unwrap().len(), 1);
    let receiver = Receiver::start(&config(dir.path(), "")).unwrap();
    post_to(&receiver, Some(TOKEN), firing("f4", "web", "2026-11-21T05:02:00Z")).await;
    let lines = audit_lines(dir.path(), 5).await;
    assert_eq!(lines[4]["decision"], "suppressed:cooldown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolved_alert_cancels_a_pending_action() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(&config(dir.path(), "  delay: 1s\n")).unwrap();
    let body = |status: &str| {
        payload(
            json!([alert("f1", "web", true, status, "2026-11-21T05:00:00Z")]),
            "vigil-receiver",
            status,
        )
    };
    post_to(&receiver, Some(TOKEN), body("firing")).await;
    post_to(&receiver, Some(TOKEN), body("resolved")).await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let lines = audit_lines(dir.path(), 2).await;
    let decisions: Vec<&str> = lines.iter().map(|l| l["decision"].as_str().unwrap()).collect();
    assert_eq!(decisions, ["scheduled", "cancelled"]);
    // Without the resolve, the scheduled action happens when due.
    post_to(
        &receiver,
        Some(TOKEN),
        payload(
            json!([alert("f2", "web", true, "firing", "2026-11-21T06:00:00Z")]),
            "vigil-receiver",
            "firing",
        ),
    )
    .await;
    let lines = audit_lines(dir.path(), 4).await;
    assert_eq!(lines[3]["decision"], "dry_run");
}

/// A local stand-in for the WhatsApp APIs: records requests, answers from a script of statuses.
#[derive(Clone, Default)]
struct Api {
    seen: Arc<Mutex<Vec<(String, String, Value)>>>,
    script: Arc<Mutex<Vec<u16>>>,
}

async fn api_handler(
    State(api): State<Api>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    api.seen.lock().unwrap().push((
        uri.path().to_string(),
        auth,
        serde_json::from_str(&body).unwrap_or(Value::Null),
    ));
    let status = {
        let mut s = api.script.lock().unwrap();
        if s.is_empty() { 200 } else { s.remove(0) }
    };
    let code = StatusCode::from_u16(status).unwrap();
    (
        code,
        [("retry-after", "0")],
        "{\"messages\":[{\"id\":\"wamid.x\"}]}".into(),
    )
}

async fn api() -> (String, Api) {
    let api = Api::default();
    let router = Router::new().fallback(post(api_handler)).with_state(api.clone());
    (format!("http://{}", common::serve(router).await), api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_cloud_api_relay_with_retries_and_throttle() {
    let (base, api) = api().await;
    let dir = tempfile::tempdir().unwrap();
    let whatsapp = format!(
        "  whatsapp:\n    provider: cloud_api\n    base_url: '{base}/v21.0'\n    phone_number_id: '1234567890'\n    access_token: wa-SECRET-token\n    to: ['+491701234567', '+31612345678']\n    template: vigil_alert\n    min_interval: 10m\n    retry_backoff: 10ms\n    retries: 2\n"
    );
    let receiver = Receiver::start(&config(dir.path(), &whatsapp)).unwrap();
    // The first phone gets a 429 then a 200; the second a 200.
    api.script.lock().unwrap().extend([429, 200, 200]);
    let group = |status: &str| {
        payload(
            json!([alert("f1", "api", false, status, "2026-11-21T05:00:00Z")]),
            "vigil-whatsapp",
            status,
        )
    };
    assert_eq!(post_to(&receiver, Some(TOKEN), group("firing")).await.0, StatusCode::OK);
    for _ in 0..100 {
        if api.seen.lock().unwrap().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    {
        let seen = api.seen.lock().unwrap();
        assert_eq!(seen.len(), 3, "{seen:?}");
        let (path, auth, body) = &seen[0];
        assert_eq!(path, "/v21.0/1234567890/messages");
        assert_eq!(auth, "Bearer wa-SECRET-token");
        assert_eq!(body["messaging_product"], "whatsapp");
        assert_eq!(body["to"], "+491701234567");
        assert_eq!(body["type"], "template");
        assert_eq!(body["template"]["name"], "vigil_alert");
        assert_eq!(body["template"]["language"]["code"], "en");
        let params: Vec<&str> = body["template"]["components"][0]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["text"].as_str().unwrap())
            .collect();
        assert_eq!(
            params,
            ["api", "FIRING critical", "api is down", "2026-11-21 05:00 UTC"]
        );
        assert_eq!(seen[2].2["to"], "+31612345678");
    }
    // Within min_interval the group is not sent again; its resolve is.
    post_to(&receiver, Some(TOKEN), group("firing")).await;
    post_to(&receiver, Some(TOKEN), group("resolved")).await;
    for _ in 0..100 {
        if api.seen.lock().unwrap().len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = api.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 5, "throttled firing must not be sent, the resolve must");
    assert_eq!(
        seen[3].2["template"]["components"][0]["parameters"][1]["text"],
        "RESOLVED"
    );
    // The API has seen the request before the receiver counts its answer.
    let mut text = String::new();
    for _ in 0..100 {
        text = metrics(&receiver).await;
        if text.contains(r#"vigil_notifications_total{channel="whatsapp_cloud_api"} 4"#) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        text.contains(r#"vigil_notifications_total{channel="whatsapp_cloud_api"} 4"#),
        "{text}"
    );
    assert!(!text.contains("vigil_notifications_failed_total{"), "{text}");
    assert!(!text.contains("wa-SECRET-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messagebird_relay_fails_after_retries() {
    let (base, api) = api().await;
    let dir = tempfile::tempdir().unwrap();
    let whatsapp = format!(
        "  whatsapp:\n    provider: messagebird\n    base_url: '{base}/v1'\n    access_key: mb-SECRET-key\n    channel_id: chan-1\n    namespace: ns-1\n    to: ['+491701234567']\n    template: vigil_alert\n    retry_backoff: 10ms\n    retries: 2\n    min_failures: 2\n"
    );
    let receiver = Receiver::start(&config(dir.path(), &whatsapp)).unwrap();
    api.script.lock().unwrap().extend([500, 500, 500]);
    // min_failures: 2 counts the probe's DOWN runs in a row, which the rules put in the
    // `consecutive_failures` annotation: one is held back, two go.
    let with_failures = |n: &str| {
        let mut firing = alert("f1", "api", false, "firing", "2026-11-21T05:00:00Z");
        firing["annotations"]["consecutive_failures"] = json!(n);
        payload(json!([firing]), "vigil-whatsapp", "firing")
    };
    post_to(&receiver, Some(TOKEN), with_failures("1")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(api.seen.lock().unwrap().is_empty());
    post_to(&receiver, Some(TOKEN), with_failures("2")).await;
    for _ in 0..100 {
        if api.seen.lock().unwrap().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = api.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "one try and two retries");
    let (path, auth, body) = &seen[0];
    assert_eq!((path.as_str(), auth.as_str()), ("/v1/send", "AccessKey mb-SECRET-key"));
    assert_eq!(body["from"], "chan-1");
    assert_eq!(body["type"], "hsm");
    assert_eq!(body["content"]["hsm"]["namespace"], "ns-1");
    assert_eq!(body["content"]["hsm"]["templateName"], "vigil_alert");
    assert_eq!(body["content"]["hsm"]["params"][0]["default"], "api");
    let text = metrics(&receiver).await;
    assert!(
        text.contains(r#"vigil_notifications_failed_total{channel="whatsapp_messagebird",reason="server_error"} 1"#),
        "{text}"
    );
}

#[test]
fn test_notification_from_the_command_line() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (base, api) = runtime.block_on(api());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vigil.yml");
    std::fs::write(&file, format!(
        "receiver:\n  token: {TOKEN}\n  state_file: state.json\n  whatsapp:\n    provider: cloud_api\n    base_url: '{base}'\n    phone_number_id: '42'\n    access_token: t-0123456789\n    to: ['+491701234567']\n    template: vigil_alert\n"
    )).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["receiver", "--test-notification", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "test notification sent\n");
    let seen = api.seen.lock().unwrap();
    assert_eq!(seen[0].2["template"]["components"][0]["parameters"][1]["text"], "TEST");
}

#[test]
fn receiver_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let errors = vigil::config::ReceiverConfig::parse(
        "receiver:\n  token: short\n  budget: {max: 0, per: 1h}\n  whatsapp:\n    provider: cloud_api\n    to: ['0170 123']\n    template: t\n",
        dir.path(),
    )
    .expect_err("invalid")
    .to_string();
    for want in [
        "line 1: receiver: missing key `state_file`",
        "line 2: receiver.token: the token must be at least 16 characters long",
        "line 3: receiver.budget: max and per must be greater than 0",
        "receiver.whatsapp.to[0]: `0170 123` is not a phone number in E.164 form",
        "receiver.whatsapp: missing key `access_token` (provider cloud_api)",
    ] {
        assert!(errors.contains(want), "missing {want:?} in:\n{errors}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_do_not_postpone_and_relay_deliveries_do_not_remediate() {
    let dir = tempfile::tempdir().unwrap();
    let whatsapp = "  delay: 1s\n  whatsapp:\n    provider: cloud_api\n    base_url: 'http://127.0.0.1:1'\n    phone_number_id: '1'\n    access_token: t-0123456789\n    to: ['+491701234567']\n    template: t\n    retries: 0\n";
    let receiver = Receiver::start(&config(dir.path(), whatsapp)).unwrap();
    // A delivery to the relay's receiver is relayed only, even with remediate="true".
    let relayed = payload(
        json!([alert("f0", "web", true, "firing", "2026-11-21T04:00:00Z")]),
        "vigil-whatsapp",
        "firing",
    );
    post_to(&receiver, Some(TOKEN), relayed).await;
    // Alertmanager repeats a firing alert while its action waits: the due time stays.
    let firing = payload(
        json!([alert("f1", "web", true, "firing", "2026-11-21T05:00:00Z")]),
        "vigil-receiver",
        "firing",
    );
    post_to(&receiver, Some(TOKEN), firing.clone()).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    post_to(&receiver, Some(TOKEN), firing).await;
    let lines = audit_lines(dir.path(), 2).await;
    let decisions: Vec<&str> = lines.iter().map(|l| l["decision"].as_str().unwrap()).collect();
    assert_eq!(decisions, ["scheduled", "dry_run"], "{lines:?}");
    assert_eq!(lines[0]["fingerprint"], "f1");
}
