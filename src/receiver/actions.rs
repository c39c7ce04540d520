//! The actions the receiver can take: restart a Docker container through the engine API, or
//! roll a Kubernetes workload the way `kubectl rollout restart` does (the same annotation patch),
//! after checking its precondition; and, with several receiver replicas, a Lease-based leader
//! election so that only one of them acts.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::RestartContainerOptionsBuilder;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::Deserialize;
use tokio::sync::OnceCell;

use super::policy::Target;

/// `receiver.kubernetes:` in the config.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSpec {
    /// Kubeconfig file (default: in-cluster, then the default kubeconfig).
    pub kubeconfig: Option<PathBuf>,
    /// Only the holder of this Lease acts (for several receiver replicas).
    pub leader_election: Option<LeaseSettings>,
}

/// The Lease that elects the acting replica.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LeaseSettings {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease (default `vigil-receiver`).
    #[serde(default = "default_lease_name")]
    pub name: String,
    /// How long a holder keeps the Lease without renewing it (default 30s).
    #[serde(default = "default_lease_duration", with = "crate::spec::values::duration")]
    pub duration: Duration,
    /// This replica's identity (default: `POD_NAME`, then `HOSTNAME`).
    pub identity: Option<String>,
}

fn default_lease_name() -> String {
    "vigil-receiver".into()
}
fn default_lease_duration() -> Duration {
    Duration::from_secs(30)
}

/// Carries out restarts.
pub struct Actions {
    docker_address: String,
    kubernetes: KubernetesSpec,
    min_available_ratio: f64,
    client: OnceCell<Client>,
    leader: AtomicBool,
}

impl std::fmt::Debug for Actions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actions")
            .field("docker", &self.docker_address)
            .field("kubernetes", &self.kubernetes)
            .finish()
    }
}

impl Actions {
    /// Actions against the Docker engine at `docker_address` and the Kubernetes API `kubernetes`
    /// names (a client is built on first use).
    pub fn new(docker_address: String, kubernetes: KubernetesSpec, min_available_ratio: f64) -> Self {
        Self {
            docker_address,
            kubernetes,
            min_available_ratio,
            client: OnceCell::new(),
            leader: AtomicBool::new(false),
        }
    }

    /// The same, with a Kubernetes client given (tests use a mock API server).
    pub fn with_client(self, client: Client) -> Self {
        let _ = self.client.set(client);
        self
    }

    async fn client(&self) -> Result<&Client, ActionError> {
        self.client
            .get_or_try_init(|| crate::inventory::kubernetes::watch::client_from(self.kubernetes.kubeconfig.as_deref()))
            .await
            .map_err(ActionError::Client)
    }

    /// Whether this replica may act: always without leader election, otherwise only while it
    /// holds the Lease (acquired or renewed here).
    pub async fn may_act(&self) -> Result<bool, ActionError> {
        let Some(lease) = &self.kubernetes.leader_election else {
            return Ok(true);
        };
        let held = acquire(self.client().await?, lease).await?;
        self.leader.store(held, Ordering::Relaxed);
        Ok(held)
    }

    /// Keeps the Lease renewed while this replica holds it (or takes it when it is free), every
    /// third of its duration; runs until aborted. Does nothing without leader election.
    pub async fn hold_lease(&self) {
        let Some(lease) = &self.kubernetes.leader_election else {
            return;
        };
        loop {
            match self.may_act().await {
                Ok(held) => {
                    if held != self.leader.swap(held, Ordering::Relaxed) {
                        tracing::info!(leader = held, lease = %lease.name, "receiver leadership changed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot renew the receiver Lease"),
            }
            tokio::time::sleep(lease.duration / 3).await;
        }
    }

    /// Whether the precondition for restarting `target` holds; `Err` says why not.
    pub async fn precondition(&self, target: &Target) -> Result<(), ActionError> {
        let Target::Kubernetes { namespace, kind, name } = target else {
            return Ok(());
        };
        let client = self.client().await?.clone();
        let (desired, available, rolling) = match kind.as_str() {
            "deployment" => {
                let d = Api::<Deployment>::namespaced(client, namespace)
                    .get(name)
                    .await
                    .map_err(|e| ActionError::Kubernetes {
                        doing: format!("reading {kind} {namespace}/{name}"),
                        source: e,
                    })?;
                let spec = d.spec.unwrap_or_default();
                let status = d.status.unwrap_or_default();
                let desired = spec.replicas.unwrap_or(1);
                let rolling = status.observed_generation < d.metadata.generation
                    || status.updated_replicas.unwrap_or(0) < desired
                    || status.replicas.unwrap_or(0) > desired;
                (desired, status.available_replicas.unwrap_or(0), rolling)
            }
            "statefulset" => {
                let s = Api::<StatefulSet>::namespaced(client, namespace)
                    .get(name)
                    .await
                    .map_err(|e| ActionError::Kubernetes {
                        doing: format!("reading {kind} {namespace}/{name}"),
                        source: e,
                    })?;
                let desired = s.spec.and_then(|sp| sp.replicas).unwrap_or(1);
                let status = s.status.unwrap_or_default();
                let rolling = status.observed_generation < s.metadata.generation
                    || (status.update_revision.is_some() && status.current_revision != status.update_revision);
                (desired, status.available_replicas.unwrap_or(0), rolling)
            }
            "daemonset" => {
                let d = Api::<DaemonSet>::namespaced(client, namespace)
                    .get(name)
                    .await
                    .map_err(|e| ActionError::Kubernetes {
                        doing: format!("reading {kind} {namespace}/{name}"),
                        source: e,
                    })?;
                let status = d.status.unwrap_or_default();
                let rolling = status.observed_generation < d.metadata.generation
                    || status.updated_number_scheduled.unwrap_or(0) < status.desired_number_scheduled;
                (
                    status.desired_number_scheduled,
                    status.number_available.unwrap_or(0),
                    rolling,
                )
            }
            other => return Err(ActionError::UnknownKind(other.to_string())),
        };
        if rolling {
            return Err(ActionError::Precondition(format!(
                "a rollout of {kind} {namespace}/{name} is in progress"
            )));
        }
        if desired > 0 && f64::from(available) / f64::from(desired) < self.min_available_ratio {
            return Err(ActionError::Precondition(format!(
                "only {available} of {desired} replicas available (min_available_ratio {})",
                self.min_available_ratio
            )));
        }
        Ok(())
    }

    /// Restarts `target`.
    pub async fn perform(&self, target: &Target) -> Result<(), ActionError> {
        match target {
            Target::Docker { container } => {
                let docker = if self.docker_address.starts_with("unix://") {
                    Docker::connect_with_unix(&self.docker_address, 60, bollard::API_DEFAULT_VERSION)
                } else {
                    Docker::connect_with_http(&self.docker_address, 60, bollard::API_DEFAULT_VERSION)
                }
                .map_err(|e| ActionError::Docker {
                    doing: "connecting to the Docker engine".to_string(),
                    source: e,
                })?;
                docker
                    .restart_container(container, Some(RestartContainerOptionsBuilder::new().t(10).build()))
                    .await
                    .map_err(|e| ActionError::Docker {
                        doing: format!("restarting container {container}"),
                        source: e,
                    })
            }
            Target::Kubernetes { namespace, kind, name } => {
                let client = self.client().await?.clone();
                let patch = Patch::Strategic(restart_patch(k8s_openapi::jiff::Timestamp::now()));
                let params = PatchParams {
                    field_manager: Some("vigil-receiver".into()),
                    ..PatchParams::default()
                };
                let result = match kind.as_str() {
                    "deployment" => Api::<Deployment>::namespaced(client, namespace)
                        .patch(name, &params, &patch)
                        .await
                        .map(drop),
                    "statefulset" => Api::<StatefulSet>::namespaced(client, namespace)
                        .patch(name, &params, &patch)
                        .await
                        .map(drop),
                    "daemonset" => Api::<DaemonSet>::namespaced(client, namespace)
                        .patch(name, &params, &patch)
                        .await
                        .map(drop),
                    other => return Err(ActionError::UnknownKind(other.to_string())),
                };
                result.map_err(|e| ActionError::Kubernetes {
                    doing: format!("rollout restart of {kind} {namespace}/{name}"),
                    source: e,
                })
            }
        }
    }
}

/// Why an action (or its precondition, or the Lease) did not go through.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// No Kubernetes client could be made (kubeconfig, in-cluster settings).
    #[error("Kubernetes API: {0}")]
    Client(crate::inventory::kubernetes::watch::ClientError),
    /// The Kubernetes API refused or failed a request.
    #[error("{doing}: {source}")]
    Kubernetes {
        /// What was asked.
        doing: String,
        /// The API's answer.
        source: kube::Error,
    },
    /// The Docker engine refused or failed a request.
    #[error("{doing}: {source}")]
    Docker {
        /// What was asked.
        doing: String,
        /// The engine's answer.
        source: bollard::errors::Error,
    },
    /// The target is not in a state to be restarted (a rollout in progress, too few replicas).
    #[error("{0}")]
    Precondition(String),
    /// A workload kind vigil does not restart.
    #[error("unknown workload kind {0}")]
    UnknownKind(String),
}

impl ActionError {
    /// A bounded label for the error.
    pub fn reason(&self) -> &'static str {
        match self {
            ActionError::Client(_) => "client",
            ActionError::Kubernetes { .. } => "kubernetes",
            ActionError::Docker { .. } => "docker",
            ActionError::Precondition(_) => "precondition",
            ActionError::UnknownKind(_) => "unknown_kind",
        }
    }
}

/// The patch `kubectl rollout restart` sends: a new `restartedAt` annotation on the pod
/// template, which makes the controller replace every pod.
pub fn restart_patch(now: k8s_openapi::jiff::Timestamp) -> serde_json::Value {
    serde_json::json!({
        "spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
        }}}}
    })
}

fn identity(lease: &LeaseSettings) -> String {
    lease
        .identity
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("vigil-receiver-{}", std::process::id()))
}

/// Takes or renews the Lease; `Ok(false)` when another replica holds it.
async fn acquire(client: &Client, settings: &LeaseSettings) -> Result<bool, ActionError> {
    let api = Api::<Lease>::namespaced(client.clone(), &settings.namespace);
    let me = identity(settings);
    let now = k8s_openapi::jiff::Timestamp::now();
    let seconds = i32::try_from(settings.duration.as_secs()).unwrap_or(i32::MAX);
    let current = api.get_opt(&settings.name).await.map_err(|e| ActionError::Kubernetes {
        doing: format!("reading Lease {}", settings.name),
        source: e,
    })?;
    let Some(mut lease) = current else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(settings.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(me),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            // Another replica created it first.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(ActionError::Kubernetes {
                doing: format!("creating Lease {}", settings.name),
                source: e,
            }),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let expired = spec.renew_time.as_ref().is_none_or(|t| {
        let duration = i64::from(spec.lease_duration_seconds.unwrap_or(seconds));
        t.0.as_second() + duration < now.as_second()
    });
    if holder != me && !holder.is_empty() && !expired {
        return Ok(false);
    }
    if holder != me {
        spec.holder_identity = Some(me);
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(seconds);
    // The resourceVersion in the object makes this a compare-and-swap: a replica that renewed
    // or took the Lease meanwhile makes it fail with 409.
    match api.replace(&settings.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(ActionError::Kubernetes {
            doing: format!("renewing Lease {}", settings.name),
            source: e,
        }),
    }
}
