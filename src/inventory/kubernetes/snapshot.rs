//! The Kubernetes snapshot: what the watchers last saw of each pod and workload, reduced to the
//! fields vigil publishes, plus the per-workload restart totals that outlive the pods.
//!
//! Pure data: the watchers write it, the collector reads it at scrape time, and every rule about
//! what a change means (a pod gone, a pod re-listed, a restart count) lives here, tested alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// How long a workload's restart total is kept after its last pod and its controller are gone.
pub const WORKLOAD_RETENTION: Duration = Duration::from_secs(3600);

/// The label Deployments put on their ReplicaSets' pods; the ReplicaSet is `<deployment>-<hash>`.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// The object kinds vigil watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// `v1/Pod`.
    Pod,
    /// `apps/v1/Deployment`.
    Deployment,
    /// `apps/v1/StatefulSet`.
    StatefulSet,
    /// `apps/v1/DaemonSet`.
    DaemonSet,
}

impl ObjectKind {
    /// Every kind, in the order the watchers start.
    pub const ALL: [ObjectKind; 4] = [
        ObjectKind::Pod,
        ObjectKind::Deployment,
        ObjectKind::StatefulSet,
        ObjectKind::DaemonSet,
    ];

    /// The resource's plural name, as in API paths and RBAC rules.
    pub fn plural(self) -> &'static str {
        match self {
            ObjectKind::Pod => "pods",
            ObjectKind::Deployment => "deployments",
            ObjectKind::StatefulSet => "statefulsets",
            ObjectKind::DaemonSet => "daemonsets",
        }
    }
}

/// Where an object lives and which one it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMetaSummary {
    /// `metadata.uid`: a re-created object with the same name is another object.
    pub uid: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectMetaSummary {
    fn of(meta: &ObjectMeta) -> Self {
        let namespace = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        // Objects from the API always carry a uid; the name is a fallback that is still unique.
        let uid = meta.uid.clone().unwrap_or_else(|| format!("{namespace}/{name}"));
        ObjectMetaSummary { uid, namespace, name }
    }
}

/// The workload a pod belongs to, for the restart total that survives its pods.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `Job`, `ReplicaSet`, another controller's kind,
    /// or `Pod` for a pod without a controller.
    pub kind: String,
    /// The workload's name (the pod's own for a bare pod).
    pub name: String,
}

impl Workload {
    /// Resolves a pod's workload from its controller reference: a ReplicaSet that a Deployment
    /// made (its name is the Deployment's plus `-<pod-template-hash>`) stands for the
    /// Deployment; any other controller stands for itself; a pod without one (or a static pod,
    /// owned by its Node) is its own workload.
    pub fn of(pod: &Pod) -> Workload {
        let meta = &pod.metadata;
        let own = || Workload {
            kind: "Pod".to_string(),
            name: meta.name.clone().unwrap_or_default(),
        };
        let owners = meta.owner_references.as_deref().unwrap_or_default();
        let Some(owner) = owners.iter().find(|o| o.controller == Some(true)) else {
            return own();
        };
        if owner.kind == "Node" {
            return own();
        }
        if owner.kind == "ReplicaSet" && owner.api_version.starts_with("apps/") {
            let hash = meta.labels.as_ref().and_then(|l| l.get(POD_TEMPLATE_HASH));
            if let Some(deployment) = hash
                .filter(|h| !h.is_empty())
                .and_then(|h| owner.name.strip_suffix(h.as_str()))
                .and_then(|rest| rest.strip_suffix('-'))
                .filter(|d| !d.is_empty())
            {
                return Workload {
                    kind: "Deployment".to_string(),
                    name: deployment.to_string(),
                };
            }
        }
        Workload {
            kind: owner.kind.clone(),
            name: owner.name.clone(),
        }
    }
}

/// The `Ready` condition of a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// `status: "True"`.
    True,
    /// `status: "False"`.
    False,
    /// `status: "Unknown"` (or anything else).
    Unknown,
}

impl Readiness {
    /// Every value, in label order.
    pub const ALL: [Readiness; 3] = [Readiness::True, Readiness::False, Readiness::Unknown];

    /// The `condition` label value, as kube-state-metrics writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::True => "true",
            Readiness::False => "false",
            Readiness::Unknown => "unknown",
        }
    }

    fn parse(status: &str) -> Readiness {
        match status {
            "True" => Readiness::True,
            "False" => Readiness::False,
            _ => Readiness::Unknown,
        }
    }
}

/// A container's last termination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Termination {
    /// `reason` (`Error`, `OOMKilled`, `Completed`, ...), when the kubelet gave one.
    pub reason: Option<String>,
    /// The exit code.
    pub exit_code: i32,
}

/// What vigil keeps of one container's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerSummary {
    /// Container name.
    pub name: String,
    /// `restartCount` (the highest seen for this pod, so it never goes back).
    pub restarts: u64,
    /// `state.waiting.reason` (`CrashLoopBackOff`, `ImagePullBackOff`, ...).
    pub waiting_reason: Option<String>,
    /// `lastState.terminated`.
    pub last_terminated: Option<Termination>,
}

impl ContainerSummary {
    fn of(status: &ContainerStatus) -> Self {
        let waiting_reason = status
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.clone())
            .filter(|r| !r.is_empty());
        let last_terminated = status
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| Termination {
                reason: t.reason.clone().filter(|r| !r.is_empty()),
                exit_code: t.exit_code,
            });
        ContainerSummary {
            name: status.name.clone(),
            restarts: u64::try_from(status.restart_count).unwrap_or(0),
            waiting_reason,
            last_terminated,
        }
    }
}

/// What vigil keeps of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSummary {
    /// Which pod.
    pub meta: ObjectMetaSummary,
    /// Its workload, fixed when the pod is first seen.
    pub workload: Workload,
    /// The `Ready` condition; `None` before the pod has one, and for pods that have finished
    /// (phase `Succeeded` or `Failed`), which never become ready again.
    pub ready: Option<Readiness>,
    /// Its (regular) containers.
    pub containers: Vec<ContainerSummary>,
}

impl PodSummary {
    /// Reduces a pod to what vigil publishes.
    pub fn of(pod: &Pod) -> Self {
        let status = pod.status.as_ref();
        let finished = status
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| Readiness::parse(&c.status))
            .filter(|_| !finished);
        let containers = status
            .and_then(|s| s.container_statuses.as_ref())
            .map(|statuses| statuses.iter().map(ContainerSummary::of).collect())
            .unwrap_or_default();
        PodSummary {
            meta: ObjectMetaSummary::of(&pod.metadata),
            workload: Workload::of(pod),
            ready,
            containers,
        }
    }
}

/// What vigil keeps of a Deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentSummary {
    /// Which Deployment.
    pub meta: ObjectMetaSummary,
    /// `spec.replicas` (1 when unset, as the API defaults it).
    pub spec_replicas: i64,
    /// `status.availableReplicas`.
    pub available: i64,
    /// `status.unavailableReplicas`.
    pub unavailable: i64,
    /// `status.readyReplicas`.
    pub ready: i64,
}

impl DeploymentSummary {
    /// Reduces a Deployment to what vigil publishes.
    pub fn of(d: &Deployment) -> Self {
        let status = d.status.as_ref();
        let count = |f: fn(&k8s_openapi::api::apps::v1::DeploymentStatus) -> Option<i32>| {
            i64::from(status.and_then(f).unwrap_or(0))
        };
        DeploymentSummary {
            meta: ObjectMetaSummary::of(&d.metadata),
            spec_replicas: i64::from(d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)),
            available: count(|s| s.available_replicas),
            unavailable: count(|s| s.unavailable_replicas),
            ready: count(|s| s.ready_replicas),
        }
    }
}

/// What vigil keeps of a StatefulSet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatefulSetSummary {
    /// Which StatefulSet.
    pub meta: ObjectMetaSummary,
    /// `spec.replicas` (1 when unset).
    pub replicas: i64,
    /// `status.readyReplicas`.
    pub ready: i64,
}

impl StatefulSetSummary {
    /// Reduces a StatefulSet to what vigil publishes.
    pub fn of(s: &StatefulSet) -> Self {
        StatefulSetSummary {
            meta: ObjectMetaSummary::of(&s.metadata),
            replicas: i64::from(s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)),
            ready: i64::from(s.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0)),
        }
    }
}

/// What vigil keeps of a DaemonSet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonSetSummary {
    /// Which DaemonSet.
    pub meta: ObjectMetaSummary,
    /// `status.desiredNumberScheduled`.
    pub desired: i64,
    /// `status.numberReady`.
    pub ready: i64,
    /// `status.numberUnavailable`.
    pub unavailable: i64,
}

impl DaemonSetSummary {
    /// Reduces a DaemonSet to what vigil publishes.
    pub fn of(d: &DaemonSet) -> Self {
        let status = d.status.as_ref();
        DaemonSetSummary {
            meta: ObjectMetaSummary::of(&d.metadata),
            desired: i64::from(status.map_or(0, |s| s.desired_number_scheduled)),
            ready: i64::from(status.map_or(0, |s| s.number_ready)),
            unavailable: i64::from(status.and_then(|s| s.number_unavailable).unwrap_or(0)),
        }
    }
}

/// One watched object, reduced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Summary {
    /// A pod.
    Pod(PodSummary),
    /// A Deployment.
    Deployment(DeploymentSummary),
    /// A StatefulSet.
    StatefulSet(StatefulSetSummary),
    /// A DaemonSet.
    DaemonSet(DaemonSetSummary),
}

impl Summary {
    /// The object's identity.
    pub fn meta(&self) -> &ObjectMetaSummary {
        match self {
            Summary::Pod(s) => &s.meta,
            Summary::Deployment(s) => &s.meta,
            Summary::StatefulSet(s) => &s.meta,
            Summary::DaemonSet(s) => &s.meta,
        }
    }

    /// The object's kind.
    pub fn kind(&self) -> ObjectKind {
        match self {
            Summary::Pod(_) => ObjectKind::Pod,
            Summary::Deployment(_) => ObjectKind::Deployment,
            Summary::StatefulSet(_) => ObjectKind::StatefulSet,
            Summary::DaemonSet(_) => ObjectKind::DaemonSet,
        }
    }
}

/// A restart total's series: one container name of one workload.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadContainer {
    /// Namespace.
    pub namespace: String,
    /// The workload.
    pub workload: Workload,
    /// Container name.
    pub container: String,
}

/// Restarts of pods that are gone, kept in their workload's total.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Retired {
    restarts: u64,
    /// Since when the workload has had no pod and no controller object; `None` while it has.
    idle_since: Option<Instant>,
}

/// Whether the watchers reach the API server.
#[derive(Debug, Default)]
struct Health {
    /// How many watchers run, once the client is built.
    watchers: Option<usize>,
    /// Each watcher's last word: its list or watch worked (true) or failed (false).
    reports: HashMap<usize, bool>,
    /// The previous generation was up: watchers that have not reported yet count as up, so a
    /// reload does not blip `vigil_kube_up`.
    carried: bool,
    /// No client could be built (no kubeconfig, no service account).
    client_failed: bool,
}

impl Health {
    fn up(&self) -> bool {
        if self.client_failed || self.reports.values().any(|ok| !ok) {
            return false;
        }
        self.carried || self.watchers.is_some_and(|n| n > 0 && self.reports.len() >= n)
    }
}

/// Everything the watchers saw, shared with the collector.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Whether the inventory is enabled at all (nothing is published when it is not).
    enabled: bool,
    /// Writes from watchers of another generation (stopped by a reload) are ignored.
    generation: u64,
    pods: HashMap<String, PodSummary>,
    deployments: HashMap<String, DeploymentSummary>,
    statefulsets: HashMap<String, StatefulSetSummary>,
    daemonsets: HashMap<String, DaemonSetSummary>,
    retired: HashMap<WorkloadContainer, Retired>,
    health: Health,
}

impl Snapshot {
    /// Starts a new generation of watchers: `namespaces` (empty: all) are watched from now on;
    /// objects of other namespaces, and their restart totals, are dropped. Objects still in
    /// scope stay until the new watchers' first list says otherwise, so totals never dip.
    /// Returns the new generation.
    pub fn begin(&mut self, namespaces: &[String]) -> u64 {
        let was_up = self.enabled && self.health.up();
        self.enabled = true;
        self.generation += 1;
        if !namespaces.is_empty() {
            let keep = |ns: &str| namespaces.iter().any(|n| n == ns);
            self.pods.retain(|_, p| keep(&p.meta.namespace));
            self.deployments.retain(|_, d| keep(&d.meta.namespace));
            self.statefulsets.retain(|_, s| keep(&s.meta.namespace));
            self.daemonsets.retain(|_, d| keep(&d.meta.namespace));
            self.retired.retain(|key, _| keep(&key.namespace));
        }
        self.health = Health {
            carried: was_up,
            ..Health::default()
        };
        self.generation
    }

    /// The client of `generation` is built and `count` watchers (ids `0..count`) start.
    pub fn watchers_started(&mut self, generation: u64, count: usize) {
        if generation == self.generation {
            self.health.watchers = Some(count);
            self.health.client_failed = false;
        }
    }

    /// Stops publishing: the inventory was disabled. Restart totals are forgotten.
    pub fn disable(&mut self) {
        *self = Snapshot {
            generation: self.generation + 1,
            ..Snapshot::default()
        };
    }

    /// Whether anything is published.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// `vigil_kube_up`: every watcher has reached the API server, and none has failed since.
    pub fn up(&self) -> bool {
        self.health.up()
    }

    /// A watcher's last request worked (`ok`) or failed. Returns its previous verdict.
    pub fn report(&mut self, generation: u64, watcher: usize, ok: bool) -> Option<bool> {
        if generation != self.generation {
            return Some(ok);
        }
        self.health.reports.insert(watcher, ok)
    }

    /// The client could not be built: nothing is watched, the API is not reached.
    pub fn client_failed(&mut self, generation: u64) {
        if generation == self.generation {
            self.health = Health {
                client_failed: true,
                ..Health::default()
            };
        }
    }

    /// An object was listed, added or changed.
    pub fn upsert(&mut self, generation: u64, summary: Summary) {
        if generation != self.generation {
            return;
        }
        match summary {
            Summary::Pod(mut pod) => {
                if let Some(old) = self.pods.get(&pod.meta.uid) {
                    // The workload is fixed at first sight, and restart counts only grow, so a
                    // workload's total never goes back.
                    pod.workload = old.workload.clone();
                    for c in &mut pod.containers {
                        if let Some(before) = old.containers.iter().find(|o| o.name == c.name) {
                            c.restarts = c.restarts.max(before.restarts);
                        }
                    }
                }
                self.pods.insert(pod.meta.uid.clone(), pod);
            }
            Summary::Deployment(d) => {
                self.deployments.insert(d.meta.uid.clone(), d);
            }
            Summary::StatefulSet(s) => {
                self.statefulsets.insert(s.meta.uid.clone(), s);
            }
            Summary::DaemonSet(d) => {
                self.daemonsets.insert(d.meta.uid.clone(), d);
            }
        }
    }

    /// An object was deleted; `last` is its final state.
    pub fn delete(&mut self, generation: u64, last: Summary) {
        if generation != self.generation {
            return;
        }
        let kind = last.kind();
        let uid = last.meta().uid.clone();
        // The final state may carry restarts the last update did not.
        self.upsert(generation, last);
        self.remove(kind, &uid);
    }

    /// A watcher finished a full list of `kind` in `namespace` (`None`: every namespace):
    /// objects it did not list are gone, although no delete was seen.
    pub fn listed(&mut self, generation: u64, kind: ObjectKind, namespace: Option<&str>, seen: &HashSet<String>) {
        if generation != self.generation {
            return;
        }
        let in_scope = |ns: &str| namespace.is_none_or(|n| n == ns);
        let gone: Vec<String> = match kind {
            ObjectKind::Pod => stale(&self.pods, |p| &p.meta, in_scope, seen),
            ObjectKind::Deployment => stale(&self.deployments, |d| &d.meta, in_scope, seen),
            ObjectKind::StatefulSet => stale(&self.statefulsets, |s| &s.meta, in_scope, seen),
            ObjectKind::DaemonSet => stale(&self.daemonsets, |d| &d.meta, in_scope, seen),
        };
        for uid in gone {
            self.remove(kind, &uid);
        }
    }

    fn remove(&mut self, kind: ObjectKind, uid: &str) {
        match kind {
            ObjectKind::Pod => {
                if let Some(pod) = self.pods.remove(uid) {
                    for c in pod.containers {
                        let key = WorkloadContainer {
                            namespace: pod.meta.namespace.clone(),
                            workload: pod.workload.clone(),
                            container: c.name,
                        };
                        let retired = self.retired.entry(key).or_insert(Retired {
                            restarts: 0,
                            idle_since: None,
                        });
                        retired.restarts += c.restarts;
                    }
                }
            }
            ObjectKind::Deployment => {
                self.deployments.remove(uid);
            }
            ObjectKind::StatefulSet => {
                self.statefulsets.remove(uid);
            }
            ObjectKind::DaemonSet => {
                self.daemonsets.remove(uid);
            }
        }
    }

    /// Forgets the totals of workloads that have had neither a pod nor a controller object for
    /// [`WORKLOAD_RETENTION`].
    pub fn prune(&mut self, now: Instant) {
        if self.retired.is_empty() {
            return;
        }
        let mut active: HashSet<(&str, &str, &str)> = HashSet::new();
        for p in self.pods.values() {
            active.insert((&p.meta.namespace, &p.workload.kind, &p.workload.name));
        }
        for d in self.deployments.values() {
            active.insert((&d.meta.namespace, "Deployment", &d.meta.name));
        }
        for s in self.statefulsets.values() {
            active.insert((&s.meta.namespace, "StatefulSet", &s.meta.name));
        }
        for d in self.daemonsets.values() {
            active.insert((&d.meta.namespace, "DaemonSet", &d.meta.name));
        }
        let active: HashSet<(String, String, String)> = active
            .into_iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect();
        self.retired.retain(|key, retired| {
            let id = (
                key.namespace.clone(),
                key.workload.kind.clone(),
                key.workload.name.clone(),
            );
            if active.contains(&id) {
                retired.idle_since = None;
                return true;
            }
            let since = *retired.idle_since.get_or_insert(now);
            now.saturating_duration_since(since) < WORKLOAD_RETENTION
        });
    }

    /// Pods, sorted by namespace and name.
    pub fn pods(&self) -> Vec<&PodSummary> {
        sorted(self.pods.values(), |p| &p.meta)
    }

    /// Deployments, sorted by namespace and name.
    pub fn deployments(&self) -> Vec<&DeploymentSummary> {
        sorted(self.deployments.values(), |d| &d.meta)
    }

    /// StatefulSets, sorted by namespace and name.
    pub fn statefulsets(&self) -> Vec<&StatefulSetSummary> {
        sorted(self.statefulsets.values(), |s| &s.meta)
    }

    /// DaemonSets, sorted by namespace and name.
    pub fn daemonsets(&self) -> Vec<&DaemonSetSummary> {
        sorted(self.daemonsets.values(), |d| &d.meta)
    }

    /// Restarts per workload and container: those of its pods that are gone plus those of its
    /// pods that run now. Only grows while the workload exists.
    pub fn workload_restarts(&self) -> BTreeMap<WorkloadContainer, u64> {
        let mut totals: BTreeMap<WorkloadContainer, u64> = self
            .retired
            .iter()
            .map(|(key, retired)| (key.clone(), retired.restarts))
            .collect();
        for pod in self.pods.values() {
            for c in &pod.containers {
                let key = WorkloadContainer {
                    namespace: pod.meta.namespace.clone(),
                    workload: pod.workload.clone(),
                    container: c.name.clone(),
                };
                *totals.entry(key).or_default() += c.restarts;
            }
        }
        totals
    }
}

fn stale<T>(
    table: &HashMap<String, T>,
    meta: impl Fn(&T) -> &ObjectMetaSummary,
    in_scope: impl Fn(&str) -> bool,
    seen: &HashSet<String>,
) -> Vec<String> {
    table
        .iter()
        .filter(|(uid, item)| in_scope(&meta(item).namespace) && !seen.contains(*uid))
        .map(|(uid, _)| uid.clone())
        .collect()
}

fn sorted<'a, T>(items: impl Iterator<Item = &'a T>, meta: impl Fn(&T) -> &ObjectMetaSummary) -> Vec<&'a T> {
    let mut items: Vec<&T> = items.collect();
    items.sort_by(|a, b| {
        let (a, b) = (meta(a), meta(b));
        (&a.namespace, &a.name, &a.uid).cmp(&(&b.namespace, &b.name, &b.uid))
    });
    items
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    /// A pod in the API's JSON form, owned by ReplicaSet `rs` (with its pod-template-hash) when
    /// given, with one container `app` that restarted `restarts` times.
    fn pod(ns: &str, name: &str, uid: &str, rs: Option<(&str, &str)>, restarts: i32) -> Pod {
        let mut meta = json!({"name": name, "namespace": ns, "uid": uid, "resourceVersion": "1"});
        if let Some((rs, hash)) = rs {
            meta["labels"] = json!({"app": "x", "pod-template-hash": hash});
            meta["ownerReferences"] = json!([{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": "rs-uid",
                "controller": true, "blockOwnerDeletion": true
            }]);
        }
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": {"containers": [{"name": "app", "image": "busybox"}]},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{
                    "name": "app", "ready": true, "restartCount": restarts,
                    "image": "busybox", "imageID": "", "state": {"running": {}}
                }]
            }
        }))
        .unwrap()
    }

    fn owned(kind: &str, name: &str, api_version: &str, labels: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "p", "namespace": "ns", "uid": "u", "labels": labels,
                "ownerReferences": [{
                    "apiVersion": api_version, "kind": kind, "name": name, "uid": "o", "controller": true
                }]
            }
        }))
        .unwrap()
    }

    fn workload(kind: &str, name: &str) -> Workload {
        Workload {
            kind: kind.into(),
            name: name.into(),
        }
    }

    fn total(s: &Snapshot, ns: &str, w: Workload) -> Option<u64> {
        s.workload_restarts()
            .get(&WorkloadContainer {
                namespace: ns.into(),
                workload: w,
                container: "app".into(),
            })
            .copied()
    }

    #[test]
    fn workload_resolution() {
        let hash = json!({"pod-template-hash": "7d9f5c6b8"});
        assert_eq!(
            Workload::of(&owned("ReplicaSet", "listener-7d9f5c6b8", "apps/v1", hash.clone())),
            workload("Deployment", "listener")
        );
        // A ReplicaSet no Deployment made: no hash label, or a name that does not end in it.
        assert_eq!(
            Workload::of(&owned("ReplicaSet", "listener-7d9f5c6b8", "apps/v1", json!({}))),
            workload("ReplicaSet", "listener-7d9f5c6b8")
        );
        assert_eq!(
            Workload::of(&owned("ReplicaSet", "other", "apps/v1", hash)),
            workload("ReplicaSet", "other")
        );
        for kind in ["StatefulSet", "DaemonSet"] {
            assert_eq!(
                Workload::of(&owned(kind, "db", "apps/v1", json!({}))),
                workload(kind, "db")
            );
        }
        assert_eq!(
            Workload::of(&owned("Job", "backup-29000", "batch/v1", json!({}))),
            workload("Job", "backup-29000")
        );
        // A static pod's mirror is owned by its Node: it is its own workload.
        assert_eq!(
            Workload::of(&owned("Node", "node-1", "v1", json!({}))),
            workload("Pod", "p")
        );
        assert_eq!(Workload::of(&pod("ns", "bare", "u", None, 0)), workload("Pod", "bare"));
    }

    #[test]
    fn replaced_pod_keeps_its_restarts_in_the_workload_total() {
        let mut s = Snapshot::default();
        let g = s.begin(&[]);
        let rs = Some(("listener-7d9f5c6b8", "7d9f5c6b8"));
        let listener = || workload("Deployment", "listener");
        s.upsert(
            g,
            Summary::Pod(PodSummary::of(&pod("gps", "listener-7d9f5c6b8-abcde", "a", rs, 3))),
        );
        assert_eq!(total(&s, "gps", listener()), Some(3));
        // The delete carries the final count.
        s.delete(
            g,
            Summary::Pod(PodSummary::of(&pod("gps", "listener-7d9f5c6b8-abcde", "a", rs, 5))),
        );
        assert_eq!(total(&s, "gps", listener()), Some(5));
        assert!(s.pods().is_empty());
        s.upsert(
            g,
            Summary::Pod(PodSummary::of(&pod("gps", "listener-7d9f5c6b8-fghij", "b", rs, 2))),
        );
        assert_eq!(total(&s, "gps", listener()), Some(7));
        // A count that goes back (a status written again) does not lower the total.
        s.upsert(
            g,
            Summary::Pod(PodSummary::of(&pod("gps", "listener-7d9f5c6b8-fghij", "b", rs, 1))),
        );
        assert_eq!(total(&s, "gps", listener()), Some(7));
        assert_eq!(s.pods()[0].containers[0].restarts, 2);
    }

    #[test]
    fn a_relist_retires_pods_whose_delete_was_missed_in_its_namespace_only() {
        let mut s = Snapshot::default();
        let g = s.begin(&["gps".into(), "ops".into()]);
        s.upsert(g, Summary::Pod(PodSummary::of(&pod("gps", "db-0", "old", None, 4))));
        s.upsert(g, Summary::Pod(PodSummary::of(&pod("ops", "tool", "t", None, 1))));
        // db-0 was re-created with the same name while the watch was down: another uid.
        let seen: HashSet<String> = ["new".to_string()].into();
        s.upsert(g, Summary::Pod(PodSummary::of(&pod("gps", "db-0", "new", None, 0))));
        s.listed(g, ObjectKind::Pod, Some("gps"), &seen);
        assert_eq!(total(&s, "gps", workload("Pod", "db-0")), Some(4));
        let names: Vec<&str> = s.pods().iter().map(|p| p.meta.name.as_str()).collect();
        assert_eq!(names, ["db-0", "tool"], "ops is another watcher's");
        assert_eq!(s.pods()[0].meta.uid, "new");
    }

    #[test]
    fn writes_of_a_stopped_generation_are_ignored_and_a_reload_keeps_totals_in_scope() {
        let mut s = Snapshot::default();
        let old = s.begin(&[]);
        s.upsert(old, Summary::Pod(PodSummary::of(&pod("gps", "a", "a", None, 2))));
        s.delete(old, Summary::Pod(PodSummary::of(&pod("gps", "a", "a", None, 2))));
        s.delete(old, Summary::Pod(PodSummary::of(&pod("ops", "b", "b", None, 9))));
        let new = s.begin(&["gps".into()]);
        s.upsert(old, Summary::Pod(PodSummary::of(&pod("gps", "late", "l", None, 1))));
        assert!(s.pods().is_empty(), "a write of the old watchers");
        assert_eq!(total(&s, "gps", workload("Pod", "a")), Some(2));
        assert_eq!(total(&s, "ops", workload("Pod", "b")), None, "ops is no longer watched");
        s.upsert(new, Summary::Pod(PodSummary::of(&pod("gps", "a", "a2", None, 1))));
        assert_eq!(total(&s, "gps", workload("Pod", "a")), Some(3));
        s.disable();
        assert!(!s.enabled());
        assert!(s.workload_restarts().is_empty());
    }

    #[test]
    fn totals_of_workloads_gone_for_the_retention_are_forgotten() {
        let mut s = Snapshot::default();
        let g = s.begin(&[]);
        let rs = Some(("api-5c6b", "5c6b"));
        s.upsert(g, Summary::Pod(PodSummary::of(&pod("gps", "api-5c6b-x", "x", rs, 2))));
        s.delete(g, Summary::Pod(PodSummary::of(&pod("gps", "api-5c6b-x", "x", rs, 2))));
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "api", "namespace": "gps", "uid": "d"},
            "spec": {"selector": {}, "template": {}}
        }))
        .unwrap();
        s.upsert(g, Summary::Deployment(DeploymentSummary::of(&deployment)));
        let start = Instant::now();
        // Scaled to zero: the Deployment still exists, so its total stays.
        s.prune(start + WORKLOAD_RETENTION * 2);
        assert_eq!(total(&s, "gps", workload("Deployment", "api")), Some(2));
        s.delete(g, Summary::Deployment(DeploymentSummary::of(&deployment)));
        s.prune(start);
        s.prune(start + WORKLOAD_RETENTION / 2);
        assert_eq!(total(&s, "gps", workload("Deployment", "api")), Some(2));
        s.prune(start + WORKLOAD_RETENTION);
        assert_eq!(total(&s, "gps", workload("Deployment", "api")), None);
    }

    #[test]
    fn readiness_waiting_and_last_termination() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}],
                "containerStatuses": [{
                    "name": "app", "ready": false, "restartCount": 6, "image": "i", "imageID": "",
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}},
                    "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
                }]
            }
        }))
        .unwrap();
        let s = PodSummary::of(&p);
        assert_eq!(s.ready, Some(Readiness::False));
        assert_eq!(
            s.containers,
            [ContainerSummary {
                name: "app".into(),
                restarts: 6,
                waiting_reason: Some("CrashLoopBackOff".into()),
                last_terminated: Some(Termination {
                    reason: Some("OOMKilled".into()),
                    exit_code: 137
                }),
            }]
        );
        // A finished pod (a Job's) is never ready again: no readiness to alert on.
        let done: Pod = serde_json::from_value(json!({
            "metadata": {"name": "job-x", "namespace": "ns", "uid": "j"},
            "status": {"phase": "Succeeded", "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"}]}
        }))
        .unwrap();
        assert_eq!(PodSummary::of(&done).ready, None);
    }

    #[test]
    fn up_needs_every_watcher_and_survives_a_reload() {
        let mut s = Snapshot::default();
        let g = s.begin(&[]);
        assert!(!s.up(), "nothing listed yet");
        s.watchers_started(g, 2);
        s.report(g, 0, true);
        assert!(!s.up(), "one of two");
        s.report(g, 1, true);
        assert!(s.up());
        assert_eq!(s.report(g, 1, false), Some(true));
        assert!(!s.up());
        s.report(g, 1, true);
        let g2 = s.begin(&[]);
        assert!(s.up(), "a reload carries the verdict until a watcher says otherwise");
        s.watchers_started(g2, 2);
        assert!(s.up());
        s.report(g2, 0, false);
        assert!(!s.up());
        s.report(g, 0, true);
        assert!(!s.up(), "the old generation has no say");
        s.client_failed(g2);
        assert!(!s.up());
    }
}
