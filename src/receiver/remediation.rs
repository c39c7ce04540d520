//! What a probe declares to be done when its alert asks for remediation (its `remediation:`
//! key); `vigil receiver` carries it out, and only it.

use serde::Deserialize;

use crate::spec::{BuildContext, KeyPath};

/// What to do when a probe's alert asks for remediation (carried out by `vigil receiver`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct Remediation {
    /// Restart a Kubernetes workload (the annotation patch `kubectl rollout restart` makes).
    pub kubernetes: Option<KubernetesWorkload>,
    /// Restart a Docker container.
    pub docker: Option<DockerContainer>,
}

/// A Kubernetes workload to restart: a namespace and exactly one of the workload keys.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct KubernetesWorkload {
    /// Namespace of the workload.
    pub namespace: String,
    /// A Deployment name.
    pub deployment: Option<String>,
    /// A StatefulSet name.
    pub statefulset: Option<String>,
    /// A DaemonSet name.
    pub daemonset: Option<String>,
}

/// A Docker container to restart, by name.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct DockerContainer {
    /// The container's name.
    pub container: String,
}

impl Remediation {
    /// The action label value (`kubernetes_rollout_restart`, `docker_restart`).
    pub fn action(&self) -> &'static str {
        if self.kubernetes.is_some() {
            "kubernetes_rollout_restart"
        } else {
            "docker_restart"
        }
    }

    /// Checks that exactly one action is given (at `path`).
    pub fn validate(&self, ctx: &mut BuildContext, path: &KeyPath) {
        match (&self.kubernetes, &self.docker) {
            (Some(_), Some(_)) | (None, None) => {
                ctx.error(path, "set exactly one of `kubernetes` or `docker`");
            }
            (Some(k), None) => {
                let set = [&k.deployment, &k.statefulset, &k.daemonset]
                    .iter()
                    .filter(|w| w.is_some())
                    .count();
                if set != 1 {
                    ctx.error(
                        path.key("kubernetes"),
                        "set exactly one of `deployment`, `statefulset` or `daemonset`",
                    );
                }
            }
            (None, Some(_)) => {}
        }
    }
}
