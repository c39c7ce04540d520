//! The Kubernetes inventory against a scripted API server: lists and watches of pods,
//! deployments, statefulsets and daemonsets replayed in the API's JSON wire format through
//! `tower_test::mock::pair` (see `kubernetes/api_server.rs`), and what `/metrics` says after
//! each step; plus `promtool check metrics` on the rendering.
//!
//! The limit: no Kubernetes API server can run here, so none of these tests talks to a real
//! one. The answers are real-format JSON (objects as `kubectl get -o json` shows them, watch
//! events as newline-delimited `{"type", "object"}` lines, failures as `Status` objects), and
//! the requests vigil makes are asserted (method, path, watch and resourceVersion parameters).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_server;
use crate::common;

use std::time::{Duration, Instant};

use api_server::{ApiServer, RESOURCES};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use vigil::inventory::kubernetes::{Config, Inventory};

const PODS: &str = "/api/v1/namespaces/gps/pods";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/gps/deployments";
const STATEFULSETS: &str = "/apis/apps/v1/namespaces/gps/statefulsets";
const DAEMONSETS: &str = "/apis/apps/v1/namespaces/gps/daemonsets";

/// What a container's status says.
#[derive(Clone, Copy)]
struct Container<'a> {
    restarts: i32,
    ready: bool,
    waiting: Option<&'a str>,
    last_exit: Option<(i32, &'a str)>,
}

const RUNNING: Container = Container {
    restarts: 0,
    ready: true,
    waiting: None,
    last_exit: None,
};

/// A pod of Deployment `listener` (through ReplicaSet `listener-7d9f5c6b8`) as the API shows it.
fn listener_pod(name: &str, uid: &str, resource_version: &str, c: Container) -> Value {
    let state = match c.waiting {
        Some(reason) => {
            json!({"waiting": {"reason": reason, "message": "back-off 40s restarting failed container=listener"}})
        }
        None => json!({"running": {"startedAt": "2026-11-20T10:02:11Z"}}),
    };
    let last_state = match c.last_exit {
        Some((code, reason)) => json!({"terminated": {
            "exitCode": code, "reason": reason, "startedAt": "2026-11-20T10:01:40Z",
            "finishedAt": "2026-11-20T10:01:59Z", "containerID": "containerd://4f1c"
        }}),
        None => json!({}),
    };
    let ready = if c.ready { "True" } else { "False" };
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "generateName": "listener-7d9f5c6b8-",
            "namespace": "gps",
            "uid": uid,
            "resourceVersion": resource_version,
            "creationTimestamp": "2026-11-20T10:00:00Z",
            "labels": {"app": "listener", "pod-template-hash": "7d9f5c6b8"},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "listener-7d9f5c6b8",
                "uid": "0b7c1e0a-6d3e-4a53-9c0e-2f5b8f1d7a10", "controller": true, "blockOwnerDeletion": true
            }]
        },
        "spec": {
            "containers": [{"name": "listener", "image": "registry.local/gps/listener:1.4.2",
                            "ports": [{"containerPort": 8080, "protocol": "TCP"}]}],
            "nodeName": "node-1",
            "restartPolicy": "Always",
            "serviceAccountName": "default"
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": "2026-11-20T10:00:03Z"},
                {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-11-20T10:00:01Z"},
                {"type": "Ready", "status": ready, "lastTransitionTime": "2026-11-20T10:02:00Z"},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": "2026-11-20T10:02:00Z"},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-20T10:00:00Z"}
            ],
            "hostIP": "10.0.0.11",
            "podIP": "10.244.1.17",
            "startTime": "2026-11-20T10:00:01Z",
            "qosClass": "BestEffort",
            "containerStatuses": [{
                "name": "listener",
                "image": "registry.local/gps/listener:1.4.2",
                "imageID": "registry.local/gps/listener@sha256:9f2c",
                "containerID": "containerd://77aa",
                "ready": c.ready,
                "started": c.waiting.is_none(),
                "restartCount": c.restarts,
                "state": state,
                "lastState": last_state
            }]
        }
    })
}

fn deployment(resource_version: &str, desired: i32, available: i32) -> Value {
    let unavailable = desired - available;
    let mut status = json!({
        "observedGeneration": 3, "replicas": desired, "updatedReplicas": desired,
        "readyReplicas": available, "availableReplicas": available,
        "conditions": [{"type": "Available", "status": if unavailable == 0 { "True" } else { "False" },
                        "reason": "MinimumReplicasUnavailable"}]
    });
    if unavailable > 0 {
        status["unavailableReplicas"] = json!(unavailable);
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "listener", "namespace": "gps", "uid": "5a1d2c9e-3f4b-4e8a-a6b7-c8d9e0f1a2b3",
            "resourceVersion": resource_version, "generation": 3,
            "creationTimestamp": "2026-11-01T08:00:00Z", "labels": {"app": "listener"}
        },
        "spec": {
            "replicas": desired,
            "selector": {"matchLabels": {"app": "listener"}},
            "template": {
                "metadata": {"labels": {"app": "listener"}},
                "spec": {"containers": [{"name": "listener", "image": "registry.local/gps/listener:1.4.2"}]}
            },
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
        },
        "status": status
    })
}

fn statefulset() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "gps", "uid": "9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a", "resourceVersion": "90"},
        "spec": {
            "replicas": 3, "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "postgres", "image": "postgres:17"}]}}
        },
        "status": {"replicas": 3, "readyReplicas": 2, "currentReplicas": 3, "updatedReplicas": 3, "availableReplicas": 2}
    })
}

fn daemonset() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "node-agent", "namespace": "gps", "uid": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", "resourceVersion": "91"},
        "spec": {
            "selector": {"matchLabels": {"app": "node-agent"}},
            "template": {"metadata": {"labels": {"app": "node-agent"}}, "spec": {"containers": [{"name": "agent", "image": "agent:2"}]}}
        },
        "status": {"currentNumberScheduled": 3, "desiredNumberScheduled": 3, "numberMisscheduled": 0,
                   "numberReady": 3, "numberAvailable": 3, "updatedNumberScheduled": 3}
    })
}

fn bookmark(kind: &str, resource_version: &str) -> Value {
    let api_version = if kind == "Pod" { "v1" } else { "apps/v1" };
    json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": resource_version}})
}

/// The `Status` of an `ERROR` event after etcd compacted the history the watch resumes from.
fn gone() -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "too old resource version: 100 (250)", "reason": "Expired", "code": 410
    })
}

fn config(namespaces: &[&str]) -> Config {
    Config {
        enabled: true,
        namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
        ..Config::default()
    }
}

/// The inventory's `/metrics` rendering (OpenMetrics text).
fn render(registry: &Registry) -> String {
    vigil::metrics::encode(registry, true).unwrap()
}

fn registry(inventory: &Inventory) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(inventory.collector());
    registry
}

/// The value of the series written exactly as `series` (name and labels), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until `series` has `want` (or is absent, for `None`); fails with the rendering.
async fn wait_for(registry: &Registry, series: &str, want: Option<f64>) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = render(registry);
        if value(&text, series) == want {
            return text;
        }
        if Instant::now() > deadline {
            panic!("{series} never became {want:?}:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const TOTAL: &str = r#"vigil_kube_workload_container_restarts_total{namespace="gps",workload_kind="Deployment",workload="listener",container="listener"}"#;
const UP: &str = "vigil_kube_up";

fn pod_series(metric: &str, pod: &str, extra: &str) -> String {
    format!(r#"{metric}{{namespace="gps",pod="{pod}"{extra}}}"#)
}

#[tokio::test]
async fn a_replaced_pod_keeps_its_restarts_in_the_workload_total() {
    let (client, mut api) = ApiServer::start(&RESOURCES);
    let inventory = Inventory::new();
    let registry = registry(&inventory);
    inventory.apply_with_client(&config(&["gps"]), client);
    let old = "listener-7d9f5c6b8-abcde";
    let new = "listener-7d9f5c6b8-fghij";
    let crash_looping = Container {
        restarts: 4,
        ready: false,
        waiting: Some("CrashLoopBackOff"),
        last_exit: Some((1, "Error")),
    };

    let call = api.next("pods").await;
    call.expect_list(PODS);
    assert_eq!(call.query.get("limit").map(String::as_str), Some("500"));
    call.list("Pod", "100", vec![listener_pod(old, "uid-old", "98", crash_looping)]);
    let call = api.next("deployments").await;
    call.expect_list(DEPLOYMENTS);
    call.list("Deployment", "100", vec![deployment("97", 2, 1)]);
    let call = api.next("statefulsets").await;
    call.expect_list(STATEFULSETS);
    call.list("StatefulSet", "100", vec![statefulset()]);
    let call = api.next("daemonsets").await;
    call.expect_list(DAEMONSETS);
    call.list("DaemonSet", "100", vec![daemonset()]);

    let pods = api.next("pods").await;
    pods.expect_watch(PODS, "100");
    let pods = pods.watch();
    let deployments = api.next("deployments").await;
    deployments.expect_watch(DEPLOYMENTS, "100");
    let deployments = deployments.watch();
    let _quiet = [
        api.next("statefulsets").await.watch(),
        api.next("daemonsets").await.watch(),
    ];

    let text = wait_for(&registry, UP, Some(1.0)).await;
    let ready = |pod: &str, condition: &str| {
        pod_series(
            "vigil_kube_pod_status_ready",
            pod,
            &format!(r#",condition="{condition}""#),
        )
    };
    let container = r#",container="listener""#;
    assert_eq!(value(&text, TOTAL), Some(4.0), "{text}");
    assert_eq!(value(&text, &ready(old, "false")), Some(1.0), "{text}");
    assert_eq!(value(&text, &ready(old, "true")), Some(0.0), "{text}");
    let waiting = pod_series(
        "vigil_kube_pod_container_status_waiting_reason",
        old,
        r#",container="listener",reason="CrashLoopBackOff""#,
    );
    assert_eq!(value(&text, &waiting), Some(1.0), "{text}");
    let exit_reason = pod_series(
        "vigil_kube_pod_container_status_last_terminated_reason",
        old,
        r#",container="listener",reason="Error""#,
    );
    assert_eq!(value(&text, &exit_reason), Some(1.0), "{text}");
    let exit_code = pod_series(
        "vigil_kube_pod_container_status_last_terminated_exitcode",
        old,
        container,
    );
    assert_eq!(value(&text, &exit_code), Some(1.0), "{text}");
    let unavailable = r#"vigil_kube_deployment_status_replicas_unavailable{namespace="gps",deployment="listener"}"#;
    assert_eq!(value(&text, unavailable), Some(1.0), "{text}");
    assert_eq!(
        value(
            &text,
            r#"vigil_kube_deployment_spec_replicas{namespace="gps",deployment="listener"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            r#"vigil_kube_statefulset_status_replicas_ready{namespace="gps",statefulset="db"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            r#"vigil_kube_daemonset_status_number_unavailable{namespace="gps",daemonset="node-agent"}"#
        ),
        Some(0.0)
    );

    // It restarts once more, then the Deployment replaces it: the old pod is deleted with 5
    // restarts, a new one comes with 2 of its own.
    pods.send(
        "MODIFIED",
        listener_pod(
            old,
            "uid-old",
            "101",
            Container {
                restarts: 5,
                ..crash_looping
            },
        ),
    );
    wait_for(&registry, TOTAL, Some(5.0)).await;
    pods.send(
        "DELETED",
        listener_pod(
            old,
            "uid-old",
            "102",
            Container {
                restarts: 5,
                ..crash_looping
            },
        ),
    );
    let text = wait_for(&registry, &ready(old, "false"), None).await;
    assert_eq!(
        value(&text, TOTAL),
        Some(5.0),
        "the total keeps a deleted pod's restarts:\n{text}"
    );
    assert!(!text.contains(old), "a deleted pod vanishes:\n{text}");
    let recovered = Container {
        restarts: 2,
        ready: true,
        waiting: None,
        last_exit: Some((137, "OOMKilled")),
    };
    pods.send("ADDED", listener_pod(new, "uid-new", "103", recovered));
    let text = wait_for(&registry, TOTAL, Some(7.0)).await;
    assert_eq!(value(&text, &ready(new, "true")), Some(1.0), "{text}");
    let restarts = pod_series("vigil_kube_pod_container_status_restarts_total", new, container);
    assert_eq!(value(&text, &restarts), Some(2.0), "{text}");
    let oom = pod_series(
        "vigil_kube_pod_container_status_last_terminated_reason",
        new,
        r#",container="listener",reason="OOMKilled""#,
    );
    assert_eq!(value(&text, &oom), Some(1.0), "{text}");
    assert!(!text.contains("waiting_reason{"), "nothing waits any more:\n{text}");

    deployments.send("MODIFIED", deployment("104", 2, 2));
    wait_for(&registry, unavailable, Some(0.0)).await;

    // A bookmark moves the resource version on; when the server ends the watch (its timeout),
    // vigil resumes from the bookmark without listing again.
    pods.send("BOOKMARK", bookmark("Pod", "150"));
    // Let the bookmark through before the body ends.
    tokio::time::sleep(Duration::from_millis(100)).await;
    pods.end();
    let call = api.next("pods").await;
    call.expect_watch(PODS, "150");
    let _pods = call.watch();
    let text = render(&registry);
    assert_eq!(value(&text, TOTAL), Some(7.0), "{text}");
    assert_eq!(value(&text, UP), Some(1.0), "{text}");
    api.assert_read_only();
}

#[tokio::test]
async fn watch_errors_drop_kube_up_until_the_api_answers_again() {
    let (client, mut api) = ApiServer::start(&["pods"]);
    let inventory = Inventory::new();
    let registry = registry(&inventory);
    inventory.apply_with_client(&config(&["gps"]), client);
    let five = Container { restarts: 5, ..RUNNING };

    let call = api.next("pods").await;
    call.expect_list(PODS);
    call.list(
        "Pod",
        "100",
        vec![listener_pod("listener-7d9f5c6b8-abcde", "uid-a", "99", five)],
    );
    let call = api.next("pods").await;
    call.expect_watch(PODS, "100");
    let pods = call.watch();
    wait_for(&registry, UP, Some(1.0)).await;

    // 410 Gone: the history vigil resumes from was compacted. That is no outage: vigil lists
    // again (after kube's backoff), and vigil_kube_up stays 1.
    pods.send("ERROR", gone());
    let call = api.next("pods").await;
    call.expect_list(PODS);
    assert_eq!(value(&render(&registry), UP), Some(1.0));
    // Now the API server fails: vigil_kube_up drops to 0, the last snapshot stays published.
    call.status(500, "InternalError", "etcdserver: request timed out");
    let text = wait_for(&registry, UP, Some(0.0)).await;
    assert_eq!(value(&text, TOTAL), Some(5.0), "{text}");
    let call = api.next("pods").await;
    call.expect_list(PODS);
    call.fail();
    // It answers again. Meanwhile the pod was replaced and its delete event was missed: the
    // relist retires it, so the workload total keeps its 5 restarts.
    let call = api.next("pods").await;
    call.expect_list(PODS);
    let two = Container { restarts: 2, ..RUNNING };
    call.list(
        "Pod",
        "300",
        vec![listener_pod("listener-7d9f5c6b8-fghij", "uid-b", "290", two)],
    );
    let text = wait_for(&registry, UP, Some(1.0)).await;
    assert_eq!(value(&text, TOTAL), Some(7.0), "{text}");
    assert!(!text.contains("abcde"), "{text}");
    let call = api.next("pods").await;
    call.expect_watch(PODS, "300");
    let _pods = call.watch();
    api.assert_read_only();
}

#[tokio::test]
async fn an_unreachable_api_server_is_kube_up_zero_from_the_start() {
    let (client, mut api) = ApiServer::start(&["deployments"]);
    let inventory = Inventory::new();
    let registry = registry(&inventory);
    inventory.apply_with_client(&config(&[]), client);
    let call = api.next("deployments").await;
    call.expect_list("/apis/apps/v1/deployments");
    call.fail();
    let text = wait_for(&registry, UP, Some(0.0)).await;
    assert!(!text.contains("vigil_kube_deployment"), "{text}");
    // Forbidden (RBAC missing) is as bad: nothing can be watched.
    let call = api.next("deployments").await;
    call.expect_list("/apis/apps/v1/deployments");
    call.status(
        403,
        "Forbidden",
        "deployments.apps is forbidden: User \"system:serviceaccount:monitoring:vigil\" cannot list resource \"deployments\" in API group \"apps\" at the cluster scope",
    );
    let call = api.next("deployments").await;
    assert_eq!(value(&render(&registry), UP), Some(0.0));
    call.list("Deployment", "5", vec![]);
    wait_for(&registry, UP, Some(1.0)).await;
}

#[tokio::test]
async fn a_restart_of_the_watchers_keeps_the_restart_totals() {
    let (client, mut api) = ApiServer::start(&["pods"]);
    let inventory = Inventory::new();
    let registry = registry(&inventory);
    inventory.apply_with_client(&config(&["gps"]), client.clone());
    let call = api.next("pods").await;
    call.expect_list(PODS);
    let four = Container { restarts: 4, ..RUNNING };
    call.list(
        "Pod",
        "100",
        vec![listener_pod("listener-7d9f5c6b8-abcde", "uid-a", "99", four)],
    );
    let call = api.next("pods").await;
    call.expect_watch(PODS, "100");
    let _old = call.watch();
    wait_for(&registry, TOTAL, Some(4.0)).await;

    // A reload that adds a namespace restarts the watchers; the pod was replaced meanwhile.
    inventory.apply_with_client(&config(&["gps", "ops"]), client);
    let mut lists = vec![api.next("pods").await, api.next("pods").await];
    lists.sort_by(|a, b| a.path.cmp(&b.path));
    let gps = lists.remove(0);
    gps.expect_list(PODS);
    let ops = lists.remove(0);
    ops.expect_list("/api/v1/namespaces/ops/pods");
    assert_eq!(
        value(&render(&registry), TOTAL),
        Some(4.0),
        "kept while the new watchers list"
    );
    ops.list("Pod", "200", vec![]);
    let three = Container { restarts: 3, ..RUNNING };
    gps.list(
        "Pod",
        "200",
        vec![listener_pod("listener-7d9f5c6b8-fghij", "uid-b", "199", three)],
    );
    let text = wait_for(&registry, TOTAL, Some(7.0)).await;
    assert_eq!(value(&text, UP), Some(1.0), "{text}");
    api.assert_read_only();
}

#[tokio::test]
async fn rendering_passes_promtool_check_metrics() {
    let (client, mut api) = ApiServer::start(&RESOURCES);
    let inventory = Inventory::new();
    let registry = registry(&inventory);
    inventory.apply_with_client(&config(&["gps"]), client);
    let crash_looping = Container {
        restarts: 4,
        ready: false,
        waiting: Some("CrashLoopBackOff"),
        last_exit: Some((1, "Error")),
    };
    api.next("pods").await.list(
        "Pod",
        "100",
        vec![listener_pod("listener-7d9f5c6b8-abcde", "u", "98", crash_looping)],
    );
    api.next("deployments")
        .await
        .list("Deployment", "100", vec![deployment("97", 2, 1)]);
    api.next("statefulsets")
        .await
        .list("StatefulSet", "100", vec![statefulset()]);
    api.next("daemonsets").await.list("DaemonSet", "100", vec![daemonset()]);
    let mut watches = Vec::new();
    for resource in RESOURCES {
        watches.push(api.next(resource).await.watch());
    }
    wait_for(&registry, UP, Some(1.0)).await;

    let text = vigil::metrics::encode(&registry, false).unwrap();
    for family in [
        "vigil_kube_pod_container_status_restarts_total",
        "vigil_kube_workload_container_restarts_total",
        "vigil_kube_daemonset_status_desired_number_scheduled",
    ] {
        assert!(text.contains(&format!("# TYPE {family} ")), "{text}");
    }
    common::promtool_check_metrics(&text);
}

/// A plain-HTTP stand-in for the API server, for the path through a kubeconfig file: answers
/// every list with `items` (pods) or nothing, and every watch with a body that stays open;
/// records each request as `METHOD path?query auth`.
async fn http_api_server(pods: Vec<Value>) -> (std::net::SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::body::Body;
    use axum::http::Request;

    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let handler = move |request: Request<Body>| {
        let log = log.clone();
        let pods = pods.clone();
        async move {
            let uri = request.uri().clone();
            let auth = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string();
            log.lock().unwrap().push(format!("{} {} {auth}", request.method(), uri));
            let query = uri.query().unwrap_or_default();
            if query.contains("watch=true") {
                return axum::response::Response::new(Body::from_stream(futures::stream::pending::<
                    Result<bytes::Bytes, std::io::Error>,
                >()));
            }
            let items = if uri.path().ends_with("/pods") { pods } else { vec![] };
            let list =
                json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "10"}, "items": items});
            axum::response::Response::new(Body::from(list.to_string()))
        }
    };
    let router = axum::Router::new().fallback(handler);
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(socket, router).await.unwrap() });
    (addr, seen)
}

#[tokio::test]
async fn the_app_watches_through_its_kubeconfig_and_a_reload_restarts_watchers_only_on_change() {
    use vigil::app::App;
    use vigil::config::{Config as VigilConfig, Source};

    let three = Container { restarts: 3, ..RUNNING };
    let (addr, requests) = http_api_server(vec![listener_pod("listener-7d9f5c6b8-abcde", "uid-a", "9", three)]).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://{addr}\n\
         users:\n- name: vigil\n  user:\n    token: test-token\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: vigil\n\
         current-context: test\n"
    );
    std::fs::write(dir.path().join("kubeconfig"), kubeconfig).unwrap();
    let file = dir.path().join("vigil.yml");
    let write_config = |namespaces: &str| {
        let text = format!("kubernetes:\n  enabled: true\n  namespaces: [{namespaces}]\n  kubeconfig: kubeconfig\n");
        std::fs::write(&file, text).unwrap();
    };
    write_config("gps");
    let config = VigilConfig::load(&Source::File(file.clone())).unwrap();
    let app = App::start(config, None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = || vigil::metrics::encode(&app.registry, true).unwrap();
    while value(&metrics(), TOTAL) != Some(3.0) || value(&metrics(), UP) != Some(1.0) {
        assert!(Instant::now() < deadline, "{}", metrics());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lists = |ns: &str| {
        requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.starts_with(&format!("GET /api/v1/namespaces/{ns}/pods?")) && !r.contains("watch=true"))
            .count()
    };
    {
        let seen = requests.lock().unwrap();
        assert!(seen.iter().all(|r| r.starts_with("GET ")), "{seen:?}");
        assert!(seen.iter().all(|r| r.ends_with(" Bearer test-token")), "{seen:?}");
    }
    assert_eq!(lists("gps"), 1);

    // The same section: the watchers keep running.
    app.reload().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(lists("gps"), 1, "{:?}", requests.lock().unwrap());

    // Another namespace: the watchers restart, the total carries on.
    write_config("gps, ops");
    app.reload().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while lists("ops") == 0 || lists("gps") < 2 {
        assert!(Instant::now() < deadline, "{:?}", requests.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(value(&metrics(), TOTAL), Some(3.0), "{}", metrics());

    // Disabled: nothing Kubernetes is published any more.
    std::fs::write(&file, "kubernetes:\n  enabled: false\n").unwrap();
    app.reload().unwrap();
    assert!(!metrics().contains("vigil_kube_"), "{}", metrics());
    app.stop();
}
