//! Encodes the Kubernetes snapshot at scrape time, in kube-state-metrics' names and labels
//! after the `vigil_kube_` prefix: objects that are gone are simply not in the snapshot, so they
//! vanish from `/metrics` with nothing to clean up.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::snapshot::{ObjectMetaSummary, Readiness, Snapshot};
use crate::poison::LockUnpoisoned;

/// Label pairs of one series.
type Labels<'a> = Vec<(&'a str, &'a str)>;

/// The `Collector` over a shared [`Snapshot`].
#[derive(Debug)]
pub struct KubeCollector {
    snapshot: Arc<Mutex<Snapshot>>,
}

impl KubeCollector {
    /// A collector reading `snapshot` at every scrape.
    pub fn new(snapshot: Arc<Mutex<Snapshot>>) -> Self {
        KubeCollector { snapshot }
    }
}

fn gauges(encoder: &mut DescriptorEncoder, name: &str, help: &str, samples: &[(Labels, i64)]) -> fmt::Result {
    if samples.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        family.encode_family(labels)?.encode_gauge(value)?;
    }
    Ok(())
}

/// `name` without `_total`: the encoder adds it.
fn counters(encoder: &mut DescriptorEncoder, name: &str, help: &str, samples: &[(Labels, u64)]) -> fmt::Result {
    if samples.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        family
            .encode_family(labels)?
            .encode_counter::<NoLabelSet, _, u64>(value, None)?;
    }
    Ok(())
}

/// A gauge family per `(name, help, value)` over workload objects labelled `namespace` and
/// `label` (their name).
#[allow(clippy::type_complexity)]
fn object_gauges<T>(
    encoder: &mut DescriptorEncoder,
    objects: &[&T],
    label: &'static str,
    meta: fn(&T) -> &ObjectMetaSummary,
    families: &[(&str, &str, fn(&T) -> i64)],
) -> fmt::Result {
    for (name, help, value) in families {
        let samples: Vec<(Labels, i64)> = objects
            .iter()
            .map(|o| {
                let m = meta(o);
                (
                    vec![("namespace", m.namespace.as_str()), (label, m.name.as_str())],
                    value(o),
                )
            })
            .collect();
        gauges(encoder, name, help, &samples)?;
    }
    Ok(())
}

impl Collector for KubeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut snapshot = self.snapshot.lock_unpoisoned();
        if !snapshot.enabled() {
            return Ok(());
        }
        snapshot.prune(Instant::now());
        let s = &*snapshot;
        encoder
            .encode_descriptor(
                "vigil_kube_up",
                "Whether every Kubernetes watcher reaches the API server (1) or not (0).",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&i64::from(s.up()))?;

        let pods = s.pods();
        let mut restarts = Vec::new();
        let mut waiting = Vec::new();
        let mut terminated_reason = Vec::new();
        let mut terminated_code = Vec::new();
        let mut ready = Vec::new();
        for pod in &pods {
            let (ns, name) = (pod.meta.namespace.as_str(), pod.meta.name.as_str());
            if let Some(current) = pod.ready {
                for condition in Readiness::ALL {
                    ready.push((
                        vec![("namespace", ns), ("pod", name), ("condition", condition.as_str())],
                        i64::from(condition == current),
                    ));
                }
            }
            for c in &pod.containers {
                let labels = vec![("namespace", ns), ("pod", name), ("container", c.name.as_str())];
                restarts.push((labels.clone(), c.restarts));
                if let Some(reason) = &c.waiting_reason {
                    let mut labels = labels.clone();
                    labels.push(("reason", reason.as_str()));
                    waiting.push((labels, 1));
                }
                if let Some(last) = &c.last_terminated {
                    if let Some(reason) = &last.reason {
                        let mut labels = labels.clone();
                        labels.push(("reason", reason.as_str()));
                        terminated_reason.push((labels, 1));
                    }
                    terminated_code.push((labels, i64::from(last.exit_code)));
                }
            }
        }
        counters(
            &mut encoder,
            "vigil_kube_pod_container_status_restarts",
            "Restarts of a container of a pod (restartCount).",
            &restarts,
        )?;
        gauges(
            &mut encoder,
            "vigil_kube_pod_status_ready",
            "The pod's Ready condition: 1 for its current status, 0 for the others.",
            &ready,
        )?;
        gauges(
            &mut encoder,
            "vigil_kube_pod_container_status_waiting_reason",
            "1 for the reason a container is waiting (CrashLoopBackOff, ImagePullBackOff, ...).",
            &waiting,
        )?;
        gauges(
            &mut encoder,
            "vigil_kube_pod_container_status_last_terminated_reason",
            "1 for the reason of a container's last termination (Error, OOMKilled, ...).",
            &terminated_reason,
        )?;
        gauges(
            &mut encoder,
            "vigil_kube_pod_container_status_last_terminated_exitcode",
            "Exit code of a container's last termination.",
            &terminated_code,
        )?;

        let totals = s.workload_restarts();
        let samples: Vec<(Labels, u64)> = totals
            .iter()
            .map(|(key, n)| {
                (
                    vec![
                        ("namespace", key.namespace.as_str()),
                        ("workload_kind", key.workload.kind.as_str()),
                        ("workload", key.workload.name.as_str()),
                        ("container", key.container.as_str()),
                    ],
                    *n,
                )
            })
            .collect();
        counters(
            &mut encoder,
            "vigil_kube_workload_container_restarts",
            "Restarts of a container across every pod a workload has had: kept when a pod is replaced.",
            &samples,
        )?;

        object_gauges(
            &mut encoder,
            &s.deployments(),
            "deployment",
            |d| &d.meta,
            &[
                (
                    "vigil_kube_deployment_spec_replicas",
                    "Desired replicas of a deployment (spec.replicas).",
                    |d| d.spec_replicas,
                ),
                (
                    "vigil_kube_deployment_status_replicas_available",
                    "Available replicas of a deployment.",
                    |d| d.available,
                ),
                (
                    "vigil_kube_deployment_status_replicas_unavailable",
                    "Unavailable replicas of a deployment.",
                    |d| d.unavailable,
                ),
                (
                    "vigil_kube_deployment_status_replicas_ready",
                    "Ready replicas of a deployment.",
                    |d| d.ready,
                ),
            ],
        )?;
        object_gauges(
            &mut encoder,
            &s.statefulsets(),
            "statefulset",
            |s| &s.meta,
            &[
                (
                    "vigil_kube_statefulset_replicas",
                    "Desired replicas of a statefulset (spec.replicas).",
                    |s| s.replicas,
                ),
                (
                    "vigil_kube_statefulset_status_replicas_ready",
                    "Ready replicas of a statefulset.",
                    |s| s.ready,
                ),
            ],
        )?;
        object_gauges(
            &mut encoder,
            &s.daemonsets(),
            "daemonset",
            |d| &d.meta,
            &[
                (
                    "vigil_kube_daemonset_status_desired_number_scheduled",
                    "Nodes that should run a daemonset's pod.",
                    |d| d.desired,
                ),
                (
                    "vigil_kube_daemonset_status_number_ready",
                    "Nodes running a ready pod of a daemonset.",
                    |d| d.ready,
                ),
                (
                    "vigil_kube_daemonset_status_number_unavailable",
                    "Nodes that should run a daemonset's pod and have none available.",
                    |d| d.unavailable,
                ),
            ],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use prometheus_client::registry::Registry;
    use serde_json::json;

    use super::super::snapshot::{DaemonSetSummary, DeploymentSummary, PodSummary, StatefulSetSummary, Summary};
    use super::*;

    /// Renders a snapshot as `/metrics` would (OpenMetrics text).
    fn render(snapshot: Snapshot) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(KubeCollector::new(Arc::new(Mutex::new(snapshot)))));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    /// One object of each kind, in the API's JSON form.
    fn sample() -> Snapshot {
        let mut s = Snapshot::default();
        let g = s.begin(&[]);
        s.watchers_started(g, 1);
        s.report(g, 0, true);
        let pod = json!({
            "metadata": {
                "name": "listener-7d9f5c6b8-abcde", "namespace": "gps", "uid": "p1",
                "labels": {"pod-template-hash": "7d9f5c6b8"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "listener-7d9f5c6b8",
                                     "uid": "rs1", "controller": true}]
            },
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [{
                    "name": "listener", "ready": false, "restartCount": 5, "image": "i", "imageID": "",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}
                }]
            }
        });
        s.upsert(g, Summary::Pod(PodSummary::of(&serde_json::from_value(pod).unwrap())));
        let deployment = json!({
            "metadata": {"name": "listener", "namespace": "gps", "uid": "d1"},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"replicas": 2, "readyReplicas": 1, "availableReplicas": 1, "unavailableReplicas": 1}
        });
        s.upsert(
            g,
            Summary::Deployment(DeploymentSummary::of(&serde_json::from_value(deployment).unwrap())),
        );
        let statefulset = json!({
            "metadata": {"name": "db", "namespace": "gps", "uid": "s1"},
            "spec": {"replicas": 3, "selector": {}, "template": {}, "serviceName": "db"},
            "status": {"replicas": 3, "readyReplicas": 2}
        });
        s.upsert(
            g,
            Summary::StatefulSet(StatefulSetSummary::of(&serde_json::from_value(statefulset).unwrap())),
        );
        let daemonset = json!({
            "metadata": {"name": "node-agent", "namespace": "monitoring", "uid": "ds1"},
            "spec": {"selector": {}, "template": {}},
            "status": {"currentNumberScheduled": 3, "desiredNumberScheduled": 3, "numberMisscheduled": 0,
                       "numberReady": 2, "numberUnavailable": 1}
        });
        s.upsert(
            g,
            Summary::DaemonSet(DaemonSetSummary::of(&serde_json::from_value(daemonset).unwrap())),
        );
        s
    }

    #[test]
    fn disabled_publishes_nothing() {
        assert_eq!(render(Snapshot::default()), "# EOF\n");
    }

    #[test]
    fn encodes_kube_state_metrics_names_and_labels() {
        let text = render(sample());
        let expected = r#"# HELP vigil_kube_up Whether every Kubernetes watcher reaches the API server (1) or not (0).
# TYPE vigil_kube_up gauge
vigil_kube_up 1
# HELP vigil_kube_pod_container_status_restarts Restarts of a container of a pod (restartCount).
# TYPE vigil_kube_pod_container_status_restarts counter
vigil_kube_pod_container_status_restarts_total{namespace="gps",pod="listener-7d9f5c6b8-abcde",container="listener"} 5
# HELP vigil_kube_pod_status_ready The pod's Ready condition: 1 for its current status, 0 for the others.
# TYPE vigil_kube_pod_status_ready gauge
vigil_kube_pod_status_ready{namespace="gps",pod="listener-7d9f5c6b8-abcde",condition="true"} 0
vigil_kube_pod_status_ready{namespace="gps",pod="listener-7d9f5c6b8-abcde",condition="false"} 1
vigil_kube_pod_status_ready{namespace="gps",pod="listener-7d9f5c6b8-abcde",condition="unknown"} 0
# HELP vigil_kube_pod_container_status_waiting_reason 1 for the reason a container is waiting (CrashLoopBackOff, ImagePullBackOff, ...).
# TYPE vigil_kube_pod_container_status_waiting_reason gauge
vigil_kube_pod_container_status_waiting_reason{namespace="gps",pod="listener-7d9f5c6b8-abcde",container="listener",reason="CrashLoopBackOff"} 1
# HELP vigil_kube_pod_container_status_last_terminated_reason 1 for the reason of a container's last termination (Error, OOMKilled, ...).
# TYPE vigil_kube_pod_container_status_last_terminated_reason gauge
vigil_kube_pod_container_status_last_terminated_reason{namespace="gps",pod="listener-7d9f5c6b8-abcde",container="listener",reason="Error"} 1
# HELP vigil_kube_pod_container_status_last_terminated_exitcode Exit code of a container's last termination.
# TYPE vigil_kube_pod_container_status_last_terminated_exitcode gauge
vigil_kube_pod_container_status_last_terminated_exitcode{namespace="gps",pod="listener-7d9f5c6b8-abcde",container="listener"} 1
# HELP vigil_kube_workload_container_restarts Restarts of a container across every pod a workload has had: kept when a pod is replaced.
# TYPE vigil_kube_workload_container_restarts counter
vigil_kube_workload_container_restarts_total{namespace="gps",workload_kind="Deployment",workload="listener",container="listener"} 5
# HELP vigil_kube_deployment_spec_replicas Desired replicas of a deployment (spec.replicas).
# TYPE vigil_kube_deployment_spec_replicas gauge
vigil_kube_deployment_spec_replicas{namespace="gps",deployment="listener"} 2
# HELP vigil_kube_deployment_status_replicas_available Available replicas of a deployment.
# TYPE vigil_kube_deployment_status_replicas_available gauge
vigil_kube_deployment_status_replicas_available{namespace="gps",deployment="listener"} 1
# HELP vigil_kube_deployment_status_replicas_unavailable Unavailable replicas of a deployment.
# TYPE vigil_kube_deployment_status_replicas_unavailable gauge
vigil_kube_deployment_status_replicas_unavailable{namespace="gps",deployment="listener"} 1
# HELP vigil_kube_deployment_status_replicas_ready Ready replicas of a deployment.
# TYPE vigil_kube_deployment_status_replicas_ready gauge
vigil_kube_deployment_status_replicas_ready{namespace="gps",deployment="listener"} 1
# HELP vigil_kube_statefulset_replicas Desired replicas of a statefulset (spec.replicas).
# TYPE vigil_kube_statefulset_replicas gauge
vigil_kube_statefulset_replicas{namespace="gps",statefulset="db"} 3
# HELP vigil_kube_statefulset_status_replicas_ready Ready replicas of a statefulset.
# TYPE vigil_kube_statefulset_status_replicas_ready gauge
vigil_kube_statefulset_status_replicas_ready{namespace="gps",statefulset="db"} 2
# HELP vigil_kube_daemonset_status_desired_number_scheduled Nodes that should run a daemonset's pod.
# TYPE vigil_kube_daemonset_status_desired_number_scheduled gauge
vigil_kube_daemonset_status_desired_number_scheduled{namespace="monitoring",daemonset="node-agent"} 3
# HELP vigil_kube_daemonset_status_number_ready Nodes running a ready pod of a daemonset.
# TYPE vigil_kube_daemonset_status_number_ready gauge
vigil_kube_daemonset_status_number_ready{namespace="monitoring",daemonset="node-agent"} 2
# HELP vigil_kube_daemonset_status_number_unavailable Nodes that should run a daemonset's pod and have none available.
# TYPE vigil_kube_daemonset_status_number_unavailable gauge
vigil_kube_daemonset_status_number_unavailable{namespace="monitoring",daemonset="node-agent"} 1
# EOF
"#;
        assert_eq!(text, expected);
    }

    #[test]
    fn enabled_without_objects_publishes_only_up() {
        let mut s = Snapshot::default();
        s.begin(&[]);
        assert_eq!(
            render(s),
            "# HELP vigil_kube_up Whether every Kubernetes watcher reaches the API server (1) or not (0).\n# TYPE vigil_kube_up gauge\nvigil_kube_up 0\n# EOF\n"
        );
    }
}
