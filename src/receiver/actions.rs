//! The actions the receiver can take: restart a Docker container through the engine API, or
//! roll a Kubernetes workload the way `kubectl rollout restart` does.

use bollard::Docker;
use bollard::query_parameters::RestartContainerOptionsBuilder;

use super::policy::Target;

/// Carries out restarts.
#[derive(Debug)]
pub struct Actions {
    docker_address: String,
}

impl Actions {
    /// Actions against the Docker engine at `docker_address`.
    pub fn new(docker_address: String) -> Self {
        Self { docker_address }
    }

    /// Whether the precondition for restarting `target` holds; `Err` says why not.
    pub async fn precondition(&self, target: &Target) -> Result<(), String> {
        match target {
            Target::Docker { .. } => Ok(()),
            Target::Kubernetes { .. } => Err("Kubernetes actions are not available yet".into()),
        }
    }

    /// Restarts `target`.
    pub async fn perform(&self, target: &Target) -> Result<(), String> {
        match target {
            Target::Docker { container } => {
                let docker = if self.docker_address.starts_with("unix://") {
                    Docker::connect_with_unix(&self.docker_address, 60, bollard::API_DEFAULT_VERSION)
                } else {
                    Docker::connect_with_http(&self.docker_address, 60, bollard::API_DEFAULT_VERSION)
                }
                .map_err(|e| format!("Docker engine: {e}"))?;
                docker
                    .restart_container(container, Some(RestartContainerOptionsBuilder::new().t(10).build()))
                    .await
                    .map_err(|e| format!("restarting container {container}: {e}"))
            }
            Target::Kubernetes { .. } => Err("Kubernetes actions are not available yet".into()),
        }
    }
}
