//! `vigil receiver`'s Kubernetes actions against a scripted API server behind
//! `tower_test::mock::pair` (kube-rs style): every request's method, path, query and body are
//! asserted, and answered in the API's JSON wire format. No real API server runs here; this is
//! the documented wire format replayed. Cases: the exact patch `kubectl rollout restart` sends,
//! the Lease taken and renewed, a precondition failing (too few replicas, a rollout in progress),
//! and another replica holding the Lease.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use vigil::receiver::Receiver;

type Body = BoxBody<Bytes, Infallible>;
type Handle = tower_test::mock::Handle<Request<kube::client::Body>, Response<Body>>;

const TOKEN: &str = "receiver-token-0123456789";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/vigil/leases/vigil-receiver";
const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/gps/deployments/listener";

/// The next request, which must be `method` on `path`; returns its query and JSON body.
async fn expect(
    handle: &mut Handle,
    method: Method,
    path: &str,
    status: u16,
    answer: Value,
) -> (String, String, Value) {
    let (request, respond) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("no request for {method} {path} within 10s"))
        .expect("the client went away");
    assert_eq!((request.method(), request.uri().path()), (&method, path));
    let query = request.uri().query().unwrap_or_default().to_string();
    let content_type = request
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = request.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    let response = Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(answer.to_string())).boxed())
        .unwrap();
    respond.send_response(response);
    (query, content_type, body)
}

fn not_found(what: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": format!("{what} not found"), "reason": "NotFound", "code": 404})
}

fn lease(holder: &str, renewed: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
           "metadata": {"name": "vigil-receiver", "namespace": "vigil", "resourceVersion": "7"},
           "spec": {"holderIdentity": holder, "leaseDurationSeconds": 30, "acquireTime": renewed, "renewTime": renewed, "leaseTransitions": 0}})
}

fn deployment(replicas: i32, available: i32, updated: i32, generation: i64, observed: i64) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "listener", "namespace": "gps", "generation": generation, "resourceVersion": "42"},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "listener"}},
                    "template": {"metadata": {"labels": {"app": "listener"}}, "spec": {"containers": [{"name": "listener", "image": "gps/listener:1"}]}}},
           "status": {"observedGeneration": observed, "replicas": replicas, "updatedReplicas": updated,
                      "readyReplicas": available, "availableReplicas": available}})
}

fn now_micro() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

async fn start(dir: &std::path::Path, dry_run: bool) -> (std::sync::Arc<Receiver>, Handle) {
    let config = common::receiver_config(
        &format!(
            "docker: {{enabled: false}}\n\
             probes:\n  - {{name: gps-ingest, kind: tcp, address: '127.0.0.1:1', remediation: {{kubernetes: {{namespace: gps, deployment: listener}}}}}}\n\
             receiver:\n  token: {TOKEN}\n  dry_run: {dry_run}\n  state_file: state.json\n  audit_log: audit.jsonl\n  min_available_ratio: 0.5\n  kubernetes:\n    leader_election: {{namespace: vigil, identity: replica-a, duration: 30s}}\n"
        ),
        dir,
    );
    let (service, handle) = tower_test::mock::pair::<Request<kube::client::Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    (Receiver::start_with(&config, Some(client)).unwrap(), handle)
}

async fn fire(receiver: &std::sync::Arc<Receiver>, fingerprint: &str) {
    use tower::ServiceExt;
    let body = json!({"version": "4", "groupKey": "g", "status": "firing", "receiver": "vigil-receiver", "externalURL": "",
        "alerts": [{"status": "firing", "labels": {"alertname": "VigilDataStaleRemediate", "probe": "gps-ingest", "remediate": "true"},
                    "startsAt": "2026-11-21T05:00:00Z", "fingerprint": fingerprint}]});
    let request = axum::http::Request::post("/alertmanager")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let response = vigil::receiver::router(receiver.clone())
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), axum::http::StatusCode::OK);
}

async fn last_audit(dir: &std::path::Path, n: usize) -> Value {
    for _ in 0..200 {
        let text = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap_or_default();
        if let Some(line) = text.lines().nth(n - 1) {
            return serde_json::from_str(line).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("audit line {n} never came");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_restart_with_lease_and_preconditions() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, mut api) = start(dir.path(), false).await;
    // At start the receiver takes the Lease: none exists, it creates one.
    expect(&mut api, Method::GET, LEASE, 404, not_found("leases")).await;
    let (_, _, created) = expect(
        &mut api,
        Method::POST,
        "/apis/coordination.k8s.io/v1/namespaces/vigil/leases",
        201,
        lease("replica-a", &now_micro()),
    )
    .await;
    assert_eq!(created["spec"]["holderIdentity"], "replica-a");
    assert_eq!(created["spec"]["leaseDurationSeconds"], 30);

    // An alert: renew the Lease (compare-and-swap on its resourceVersion), check, then patch.
    fire(&receiver, "f1").await;
    expect(&mut api, Method::GET, LEASE, 200, lease("replica-a", &now_micro())).await;
    let (_, _, renewed) = expect(&mut api, Method::PUT, LEASE, 200, lease("replica-a", &now_micro())).await;
    assert_eq!(renewed["metadata"]["resourceVersion"], "7");
    expect(&mut api, Method::GET, DEPLOYMENT, 200, deployment(3, 3, 3, 4, 4)).await;
    let (query, content_type, patch) =
        expect(&mut api, Method::PATCH, DEPLOYMENT, 200, deployment(3, 3, 3, 5, 4)).await;
    assert_eq!(content_type, "application/strategic-merge-patch+json");
    assert!(query.contains("fieldManager=vigil-receiver"), "{query}");
    let annotations = patch["spec"]["template"]["metadata"]["annotations"]
        .as_object()
        .unwrap();
    assert_eq!(annotations.len(), 1, "{patch}");
    let restarted_at = annotations["kubectl.kubernetes.io/restartedAt"].as_str().unwrap();
    assert!(
        time::OffsetDateTime::parse(restarted_at, &time::format_description::well_known::Rfc3339).is_ok(),
        "{restarted_at}"
    );
    assert_eq!(
        patch.as_object().unwrap().len(),
        1,
        "the patch touches nothing else: {patch}"
    );
    let line = last_audit(dir.path(), 1).await;
    assert_eq!(
        (line["decision"].as_str(), line["target"].as_str()),
        (Some("done"), Some("kubernetes/gps/deployment/listener"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preconditions_and_another_leader_hold_back_the_restart() {
    for (case, answer, why) in [
        (
            "too few replicas",
            deployment(3, 1, 3, 4, 4),
            "only 1 of 3 replicas available",
        ),
        (
            "rollout in progress",
            deployment(3, 3, 1, 5, 4),
            "a rollout of deployment gps/listener is in progress",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (receiver, mut api) = start(dir.path(), false).await;
        expect(&mut api, Method::GET, LEASE, 200, lease("replica-a", &now_micro())).await;
        expect(&mut api, Method::PUT, LEASE, 200, lease("replica-a", &now_micro())).await;
        fire(&receiver, "f1").await;
        expect(&mut api, Method::GET, LEASE, 200, lease("replica-a", &now_micro())).await;
        expect(&mut api, Method::PUT, LEASE, 200, lease("replica-a", &now_micro())).await;
        expect(&mut api, Method::GET, DEPLOYMENT, 200, answer).await;
        let line = last_audit(dir.path(), 1).await;
        assert_eq!(line["decision"], "suppressed:precondition", "{case}");
        assert!(line["detail"].as_str().unwrap().starts_with(why), "{case}: {line}");
        // No PATCH follows.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), api.next_request())
                .await
                .is_err(),
            "{case}"
        );
    }

    // Another replica holds a fresh Lease: this one does not act.
    let dir = tempfile::tempdir().unwrap();
    let (receiver, mut api) = start(dir.path(), false).await;
    expect(&mut api, Method::GET, LEASE, 200, lease("replica-b", &now_micro())).await;
    fire(&receiver, "f1").await;
    expect(&mut api, Method::GET, LEASE, 200, lease("replica-b", &now_micro())).await;
    let line = last_audit(dir.path(), 1).await;
    assert_eq!(line["decision"], "suppressed:not_leader");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), api.next_request())
            .await
            .is_err()
    );
}

#[test]
fn the_patch_is_kubectls() {
    let at = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap();
    assert_eq!(
        vigil::receiver::actions::restart_patch(at),
        json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2027-01-15T08:00:00Z"}}}}})
    );
}

/// The receiver's manifests parse as Kubernetes types, and its roles grant only what the
/// receiver does: get and patch workloads, get, create and update its Lease.
#[test]
fn receiver_rbac_is_narrow() {
    use k8s_openapi::api::rbac::v1::Role;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/receiver/receiver.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).unwrap();
    let mut roles = Vec::new();
    for doc in &docs {
        let mut out = String::new();
        yaml_rust2::YamlEmitter::new(&mut out).dump(doc).unwrap();
        let value: Value = serde_json::to_value(figment_yaml(&out)).unwrap();
        match value["kind"].as_str().unwrap() {
            "Role" => roles.push(serde_json::from_value::<Role>(value).unwrap()),
            "RoleBinding" => drop(serde_json::from_value::<k8s_openapi::api::rbac::v1::RoleBinding>(value).unwrap()),
            "ServiceAccount" => {
                drop(serde_json::from_value::<k8s_openapi::api::core::v1::ServiceAccount>(value).unwrap())
            }
            "Deployment" => drop(serde_json::from_value::<k8s_openapi::api::apps::v1::Deployment>(value).unwrap()),
            "Service" => drop(serde_json::from_value::<k8s_openapi::api::core::v1::Service>(value).unwrap()),
            other => panic!("unexpected kind {other}"),
        }
    }
    let mut grants: Vec<(String, String, String)> = Vec::new();
    for role in roles {
        for rule in role.rules.unwrap_or_default() {
            for group in rule.api_groups.unwrap_or_default() {
                for resource in rule.resources.clone().unwrap_or_default() {
                    for verb in &rule.verbs {
                        grants.push((group.clone(), resource.clone(), verb.clone()));
                    }
                }
            }
        }
    }
    grants.sort();
    let expected: Vec<(String, String, String)> = [
        ("apps", "daemonsets", "get"),
        ("apps", "daemonsets", "patch"),
        ("apps", "deployments", "get"),
        ("apps", "deployments", "patch"),
        ("apps", "statefulsets", "get"),
        ("apps", "statefulsets", "patch"),
        ("coordination.k8s.io", "leases", "create"),
        ("coordination.k8s.io", "leases", "get"),
        ("coordination.k8s.io", "leases", "update"),
    ]
    .iter()
    .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
    .collect();
    assert_eq!(grants, expected);
}

/// YAML text to JSON (through figment, which the config loader uses too).
fn figment_yaml(text: &str) -> Value {
    use figment::providers::Format;
    figment::Figment::from(figment::providers::Yaml::string(text))
        .extract::<Value>()
        .unwrap()
}
