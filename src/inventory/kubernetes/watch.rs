//! The watchers: one `kube::runtime::watcher` per object kind and namespace, each writing what
//! it sees into the shared snapshot. kube's watcher lists, then watches from the listed resource
//! version, re-lists on `410 Gone`, and its default backoff paces retries after errors; vigil
//! adds a fresh list every `relist_interval`, reports each watcher's health for `vigil_kube_up`,
//! and logs a watcher's failures and recoveries once each.

use std::collections::HashSet;
use std::fmt::Debug;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, DefaultBackoff, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::Config;
use super::snapshot::{
    DaemonSetSummary, DeploymentSummary, ObjectKind, PodSummary, Snapshot, StatefulSetSummary, Summary,
};
use crate::poison::LockUnpoisoned;

/// A Kubernetes object kind vigil watches.
trait Watched:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    const KIND: ObjectKind;
    fn summarize(&self) -> Summary;
}

impl Watched for Pod {
    const KIND: ObjectKind = ObjectKind::Pod;
    fn summarize(&self) -> Summary {
        Summary::Pod(PodSummary::of(self))
    }
}

impl Watched for Deployment {
    const KIND: ObjectKind = ObjectKind::Deployment;
    fn summarize(&self) -> Summary {
        Summary::Deployment(DeploymentSummary::of(self))
    }
}

impl Watched for StatefulSet {
    const KIND: ObjectKind = ObjectKind::StatefulSet;
    fn summarize(&self) -> Summary {
        Summary::StatefulSet(StatefulSetSummary::of(self))
    }
}

impl Watched for DaemonSet {
    const KIND: ObjectKind = ObjectKind::DaemonSet;
    fn summarize(&self) -> Summary {
        Summary::DaemonSet(DaemonSetSummary::of(self))
    }
}

/// Where the client comes from.
pub enum ClientSource {
    /// Built from the config: its kubeconfig, else the in-cluster service account, else the
    /// default kubeconfig.
    Config,
    /// Given (tests, embedding).
    Given(Client),
}

/// Runs one generation of watchers until aborted: builds the client (retrying with backoff
/// while it cannot be built), then watches every kind in every namespace of `config`.
pub async fn run(snapshot: Arc<Mutex<Snapshot>>, generation: u64, config: Config, source: ClientSource) {
    let client = match source {
        ClientSource::Given(client) => client,
        ClientSource::Config => {
            let mut backoff = DefaultBackoff::default();
            let mut failures = 0u32;
            loop {
                match build_client(&config).await {
                    Ok(client) => {
                        if failures > 0 {
                            info!("Kubernetes client built");
                        }
                        break client;
                    }
                    Err(e) => {
                        lock(&snapshot).client_failed(generation);
                        let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                        if failures == 0 {
                            warn!(error = %e, "no Kubernetes client, vigil_kube_up is 0; retrying with backoff");
                        } else {
                            debug!(error = %e, retry_in = ?delay, "still no Kubernetes client");
                        }
                        failures += 1;
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
    };
    let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let mut tasks = JoinSet::new();
    let mut id = 0;
    lock(&snapshot).watchers_started(generation, scopes.len() * ObjectKind::ALL.len());
    for namespace in scopes {
        for kind in ObjectKind::ALL {
            let watcher = Watcher {
                snapshot: snapshot.clone(),
                generation,
                id,
                namespace: namespace.clone(),
                relist: config.relist_interval,
            };
            let client = client.clone();
            match kind {
                ObjectKind::Pod => tasks.spawn(watcher.run::<Pod>(client)),
                ObjectKind::Deployment => tasks.spawn(watcher.run::<Deployment>(client)),
                ObjectKind::StatefulSet => tasks.spawn(watcher.run::<StatefulSet>(client)),
                ObjectKind::DaemonSet => tasks.spawn(watcher.run::<DaemonSet>(client)),
            };
            id += 1;
        }
    }
    // Watchers run until this task is aborted, which drops the set and aborts them too.
    while tasks.join_next().await.is_some() {}
}

/// Builds a client the way the config says.
async fn build_client(config: &Config) -> Result<Client, ClientError> {
    client_from(config.kubeconfig.as_deref()).await
}

/// No Kubernetes client could be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig file named in the config is not usable.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Not in a cluster, and no default kubeconfig either.
    #[error("not in a cluster ({in_cluster}), and no kubeconfig: {kubeconfig}")]
    NoConfig {
        /// Why the in-cluster config is not there.
        in_cluster: String,
        /// Why the default kubeconfig is not there.
        kubeconfig: String,
    },
    /// The config does not make a client (TLS, proxy).
    #[error("{0}")]
    Client(kube::Error),
}

impl ClientError {
    /// A bounded label for the error.
    pub fn reason(&self) -> &'static str {
        match self {
            ClientError::Kubeconfig { .. } => "kubeconfig",
            ClientError::NoConfig { .. } => "no_config",
            ClientError::Client(_) => "client",
        }
    }
}

/// A client from `kubeconfig`, or else the in-cluster config, or else the default kubeconfig.
pub(crate) async fn client_from(kubeconfig: Option<&std::path::Path>) -> Result<Client, ClientError> {
    let options = kube::config::KubeConfigOptions::default();
    let kube_config = match kubeconfig {
        Some(path) => {
            let bad = |message: String| ClientError::Kubeconfig {
                path: path.to_path_buf(),
                message,
            };
            let file = kube::config::Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| bad(e.to_string()))?
        }
        None => match kube::Config::incluster() {
            Ok(c) => c,
            Err(in_cluster) => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| ClientError::NoConfig {
                    in_cluster: in_cluster.to_string(),
                    kubeconfig: e.to_string(),
                })?,
        },
    };
    Client::try_from(kube_config).map_err(ClientError::Client)
}

fn lock(snapshot: &Mutex<Snapshot>) -> MutexGuard<'_, Snapshot> {
    snapshot.lock_unpoisoned()
}

/// One watcher: one kind in one namespace (or all).
struct Watcher {
    snapshot: Arc<Mutex<Snapshot>>,
    generation: u64,
    id: usize,
    namespace: Option<String>,
    relist: Duration,
}

impl Watcher {
    async fn run<K: Watched>(self, client: Client) {
        let api: Api<K> = match &self.namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        };
        loop {
            // A new watcher starts with a full list: objects whose deletion was missed go.
            let stream = watcher::watcher(api.clone(), watcher::Config::default()).default_backoff();
            let _ = tokio::time::timeout(self.relist, self.follow::<K>(stream)).await;
        }
    }

    async fn follow<K: Watched>(&self, stream: impl futures::Stream<Item = watcher::Result<Event<K>>>) {
        let mut stream = pin!(stream);
        let mut listing: Option<HashSet<String>> = None;
        let namespace = self.namespace.as_deref().unwrap_or("*");
        let kind = K::KIND.plural();
        while let Some(item) = stream.next().await {
            let event = match item {
                Ok(event) => event,
                Err(e) => {
                    // 410 Gone only means "list again", which the watcher does: the API answered.
                    if !matches!(&e, watcher::Error::WatchError(status) if status.code == 410)
                        && self.report(false) != Some(false)
                    {
                        warn!(kind, namespace, error = %e, "Kubernetes watch failed; retrying with backoff");
                    }
                    continue;
                }
            };
            // `Init` comes before the list request; everything else is an answer from the API.
            if !matches!(event, Event::Init) && self.report(true) == Some(false) {
                info!(kind, namespace, "Kubernetes watch recovered");
            }
            let mut snapshot = lock(&self.snapshot);
            match event {
                Event::Init => listing = Some(HashSet::new()),
                Event::InitApply(object) => {
                    let summary = object.summarize();
                    if let Some(seen) = &mut listing {
                        seen.insert(summary.meta().uid.clone());
                    }
                    snapshot.upsert(self.generation, summary);
                }
                Event::InitDone => {
                    if let Some(seen) = listing.take() {
                        snapshot.listed(self.generation, K::KIND, self.namespace.as_deref(), &seen);
                    }
                }
                Event::Apply(object) => snapshot.upsert(self.generation, object.summarize()),
                Event::Delete(object) => snapshot.delete(self.generation, object.summarize()),
            }
        }
    }

    /// Records whether the last request worked; returns the previous verdict.
    fn report(&self, ok: bool) -> Option<bool> {
        lock(&self.snapshot).report(self.generation, self.id, ok)
    }
}
