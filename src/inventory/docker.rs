//! The Docker inventory: every (selected) container's state, health, restarts, exit code, OOM
//! kill and start time, kept live from the engine's event stream with a periodic full re-list,
//! through a read-only use of the engine API.
//!
//! Restarts are a counter keyed by compose project, service and container number (or by name
//! outside compose) that keeps counting when a container is re-created: when a container goes,
//! its last restart count stays in its key's total, and the next container's restarts add to it.
//! The totals are kept in `<state_dir>/containers.json`, so a restart of vigil is no counter
//! reset (which `increase()` would read as a burst of restarts, or miss one).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::poison::LockUnpoisoned;
use bollard::Docker;
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use futures_util::StreamExt;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, LabelSetEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// `docker:` in the config.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `auto` (on when the engine's socket exists), `true` or `false`.
    pub enabled: Enabled,
    /// Engine address: `unix:///var/run/docker.sock` (default: `DOCKER_HOST`, then that).
    pub host: Option<String>,
    /// Watch only containers with this label (`key` or `key=value`); all when unset.
    pub select_label: Option<String>,
    /// Full re-list every so often, healing any event missed.
    #[serde(with = "humantime_serde")]
    pub relist_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: Enabled::Auto,
            host: None,
            select_label: None,
            relist_interval: Duration::from_secs(60),
        }
    }
}

/// Whether the Docker inventory runs: `auto`, `true` or `false`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Enabled {
    /// On when the engine's socket exists.
    #[default]
    Auto,
    /// Always on (an absent engine shows as `vigil_docker_up 0`).
    True,
    /// Off.
    False,
}

impl<'de> Deserialize<'de> for Enabled {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Enabled;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("auto, true or false")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Enabled, E> {
                Ok(if v { Enabled::True } else { Enabled::False })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Enabled, E> {
                match v {
                    "auto" => Ok(Enabled::Auto),
                    "true" => Ok(Enabled::True),
                    "false" => Ok(Enabled::False),
                    other => Err(E::custom(format!("`{other}`: expected auto, true or false"))),
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl Config {
    /// The engine address in force.
    pub fn address(&self) -> String {
        self.host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string())
    }

    /// Whether the inventory should run.
    pub fn active(&self) -> bool {
        match self.enabled {
            Enabled::True => true,
            Enabled::False => false,
            Enabled::Auto => {
                let address = self.address();
                match address.strip_prefix("unix://") {
                    Some(path) => Path::new(path).exists(),
                    None => true,
                }
            }
        }
    }

    /// Checks what serde cannot.
    fn validate(&self, ctx: &mut crate::spec::BuildContext, path: &str) {
        let address = self.address();
        if !(address.starts_with("unix://") || address.starts_with("tcp://") || address.starts_with("http://")) {
            ctx.error(
                format!("{path}.host"),
                format!("`{address}` is not unix://PATH, tcp://HOST:PORT or http://HOST:PORT"),
            );
        }
        if self
            .select_label
            .as_deref()
            .is_some_and(|l| l.is_empty() || l.starts_with('='))
        {
            ctx.error(format!("{path}.select_label"), "expected `key` or `key=value`");
        }
        if self.relist_interval < Duration::from_secs(1) {
            ctx.error(format!("{path}.relist_interval"), "must be at least 1s");
        }
        if self.relist_interval > crate::spec::values::MAX_DURATION {
            ctx.error(
                format!("{path}.relist_interval"),
                format!(
                    "must be at most {}d",
                    crate::spec::values::MAX_DURATION.as_secs() / 86_400
                ),
            );
        }
    }
}

impl crate::spec::Section for Config {
    const KEY: &'static str = "docker";
    type Spec = Config;

    fn build(config: Config, cx: &mut crate::spec::BuildContext, at: &crate::spec::KeyPath) -> Option<Self> {
        let before = cx.error_count();
        config.validate(cx, at.as_str());
        (cx.error_count() == before).then_some(config)
    }
}

/// One container as last seen.
#[derive(Clone, Debug, PartialEq)]
pub struct Container {
    /// Container name (without the leading `/`).
    pub name: String,
    /// Compose project, or empty.
    pub project: String,
    /// Compose service, or empty.
    pub service: String,
    /// Its state.
    pub state: ContainerState,
    /// Its health check's status.
    pub health: Health,
    /// Restarts made by Docker's restart policy for this container.
    pub restart_count: u64,
    /// Exit code of the last run.
    pub exit_code: i64,
    /// Whether the last run was killed for memory.
    pub oom_killed: bool,
    /// When the current (or last) run started.
    pub started_at: Option<SystemTime>,
    /// When the last run ended (`None` while it has never stopped).
    pub finished_at: Option<SystemTime>,
    key: String,
}

/// The restart total of one key (compose service replica or container name).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
struct Restarts {
    /// Restarts of containers with this key that are gone.
    gone: u64,
    /// Last known restart count of each current container with this key, by id.
    current: HashMap<String, u64>,
    /// When the key last had a container (keys unused for a day are forgotten).
    last_seen: Option<SystemTime>,
}

impl Restarts {
    fn total(&self) -> u64 {
        self.gone + self.current.values().sum::<u64>()
    }
}

/// Declares a closed set of label values read from the engine: the enum, its `ALL`, its label
/// value and its parsing (an unknown value from a newer engine becomes the fallback).
macro_rules! label_values {
    ($(#[$doc:meta])* $name:ident, fallback $fallback:ident, { $($variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $(
            #[doc = concat!("`", $text, "`")]
            $variant,
        )+ }

        impl $name {
            /// Every value, in the order they are published.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }

            /// The value the engine reports as `text`.
            pub fn parse(text: &str) -> $name {
                match text { $($text => $name::$variant,)+ _ => $name::$fallback }
            }
        }
    };
}

label_values!(
    /// A container's state, as the engine reports it.
    ContainerState, fallback Created, {
        Created => "created",
        Running => "running",
        Paused => "paused",
        Restarting => "restarting",
        Removing => "removing",
        Exited => "exited",
        Dead => "dead",
    }
);

label_values!(
    /// A container's health check status (`none`: it has no health check).
    Health, fallback None, {
        Healthy => "healthy",
        Unhealthy => "unhealthy",
        Starting => "starting",
        None => "none",
    }
);

#[derive(Debug, Default)]
struct Snapshot {
    containers: BTreeMap<String, Container>,
    restarts: HashMap<String, Restarts>,
    /// The totals changed since they were last written.
    dirty: bool,
}

impl Snapshot {
    fn upsert(&mut self, id: &str, container: Container) {
        let entry = self.restarts.entry(container.key.clone()).or_default();
        // Docker's count only grows within one container; never let the total go down.
        let previous = entry.current.get(id).copied();
        let count = container.restart_count.max(previous.unwrap_or(0));
        if previous != Some(count) {
            self.dirty = true;
        }
        entry.current.insert(id.to_string(), count);
        entry.last_seen = Some(SystemTime::now());
        self.containers.insert(id.to_string(), container);
    }

    fn remove(&mut self, id: &str) {
        if let Some(container) = self.containers.remove(id)
            && let Some(entry) = self.restarts.get_mut(&container.key)
        {
            if let Some(count) = entry.current.remove(id) {
                entry.gone += count;
                self.dirty = true;
            }
            entry.last_seen = Some(SystemTime::now());
        }
    }

    /// After a full list: containers remembered from before vigil started that the engine no
    /// longer has keep their restarts in their key's total.
    fn forget_unlisted(&mut self, listed: &[String]) {
        for entry in self.restarts.values_mut() {
            let gone: Vec<String> = entry
                .current
                .keys()
                .filter(|id| !listed.contains(id) && !self.containers.contains_key(*id))
                .cloned()
                .collect();
            for id in gone {
                if let Some(count) = entry.current.remove(&id) {
                    entry.gone += count;
                    self.dirty = true;
                }
            }
        }
    }

    fn forget_old_keys(&mut self) {
        let day_ago = SystemTime::now() - Duration::from_secs(86_400);
        self.restarts
            .retain(|_, r| !r.current.is_empty() || r.last_seen.is_some_and(|t| t > day_ago));
    }
}

/// The live inventory of containers, shared between the watcher and `/metrics`.
#[derive(Debug, Default)]
pub struct Inventory {
    snapshot: Mutex<Snapshot>,
    up: AtomicBool,
    active: AtomicBool,
    /// `<state_dir>/containers.json`, when totals are kept on disk.
    file: Option<std::path::PathBuf>,
}

/// The running watcher; dropping it stops it.
#[derive(Debug)]
pub struct Watcher(JoinHandle<()>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Inventory {
    /// An inventory whose restart totals are kept in `<dir>/containers.json` (read now).
    pub fn open(dir: Option<&Path>) -> Result<Inventory, crate::persist::StateFileError> {
        let Some(dir) = dir else {
            return Ok(Inventory::default());
        };
        let file = dir.join("containers.json");
        let restarts: HashMap<String, Restarts> = crate::persist::read_json(&file)?;
        Ok(Inventory {
            snapshot: Mutex::new(Snapshot {
                restarts,
                ..Snapshot::default()
            }),
            file: Some(file),
            ..Inventory::default()
        })
    }

    /// Writes the restart totals when they changed since the last write.
    pub async fn save(&self) -> std::io::Result<()> {
        let Some(file) = self.file.clone() else {
            return Ok(());
        };
        let bytes = self.with(|s| {
            if !s.dirty {
                return None;
            }
            s.dirty = false;
            Some(serde_json::to_vec(&s.restarts))
        });
        let Some(bytes) = bytes else { return Ok(()) };
        let bytes = bytes.map_err(std::io::Error::other)?;
        let written = tokio::task::spawn_blocking(move || crate::persist::write_atomically(&file, &bytes))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if written.is_err() {
            self.with(|s| s.dirty = true);
        }
        written
    }

    /// Starts watching the engine `config` names; `None` when the inventory is off.
    pub fn watch(self: &Arc<Self>, config: &Config) -> Option<Watcher> {
        let active = config.active();
        self.active.store(active, Ordering::Relaxed);
        if !active {
            self.up.store(false, Ordering::Relaxed);
            return None;
        }
        Some(Watcher(tokio::spawn(run(self.clone(), config.clone()))))
    }

    /// Writes the totals every 10 s while they change, until the inventory is dropped.
    pub fn keep_saved(self: &Arc<Self>) {
        if self.file.is_none() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(10));
            let mut failing = false;
            loop {
                ticker.tick().await;
                let Some(inventory) = weak.upgrade() else { return };
                match inventory.save().await {
                    Ok(()) => failing = false,
                    Err(e) => {
                        if !failing {
                            warn!(error = %e, "could not write the container restart totals; retrying");
                        }
                        failing = true;
                    }
                }
            }
        });
    }

    /// Whether the engine answered last time it was asked.
    pub fn up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The containers as last seen, by id.
    pub fn containers(&self) -> BTreeMap<String, Container> {
        self.snapshot.lock_unpoisoned().containers.clone()
    }

    fn with<R>(&self, f: impl FnOnce(&mut Snapshot) -> R) -> R {
        f(&mut self.snapshot.lock_unpoisoned())
    }
}

fn connect(address: &str) -> Result<Docker, bollard::errors::Error> {
    if address.starts_with("unix://") {
        Docker::connect_with_unix(address, 30, bollard::API_DEFAULT_VERSION)
    } else {
        Docker::connect_with_http(address, 30, bollard::API_DEFAULT_VERSION)
    }
}

/// Watches until aborted: connect, subscribe to events, re-list, follow events; on any error,
/// mark the engine down and reconnect with backoff (1 s doubling to 30 s).
async fn run(inventory: Arc<Inventory>, config: Config) {
    let address = config.address();
    let mut backoff = Duration::from_secs(1);
    loop {
        match watch_once(&inventory, &config, &address).await {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(e) => {
                if inventory.up.swap(false, Ordering::Relaxed) {
                    warn!(engine = %address, error = %e, "Docker engine unreachable; retrying");
                } else {
                    debug!(engine = %address, error = %e, "Docker engine still unreachable");
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

#[derive(Debug)]
struct WatchError(String);

impl fmt::Display for WatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<bollard::errors::Error> for WatchError {
    fn from(e: bollard::errors::Error) -> Self {
        WatchError(e.to_string())
    }
}

async fn watch_once(inventory: &Inventory, config: &Config, address: &str) -> Result<(), WatchError> {
    let docker = connect(address)?;
    docker.ping().await?;
    let mut filters: HashMap<&str, Vec<&str>> = HashMap::new();
    if let Some(label) = &config.select_label {
        filters.insert("label", vec![label.as_str()]);
    }
    let mut event_filters = filters.clone();
    event_filters.insert("type", vec!["container"]);
    // Subscribe before listing, so nothing that happens in between is missed.
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut events = docker.events(Some(
        EventsOptionsBuilder::new()
            .since(&since.to_string())
            .filters(&event_filters)
            .build(),
    ));
    relist(inventory, &docker, &filters).await?;
    if !inventory.up.swap(true, Ordering::Relaxed) {
        info!(engine = %address, containers = inventory.with(|s| s.containers.len()), "watching Docker containers");
    }
    let mut relist_timer = tokio::time::interval(config.relist_interval);
    relist_timer.tick().await;
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(event)) => {
                    let Some(id) = event.actor.and_then(|a| a.id) else { continue };
                    let action = event.action.unwrap_or_default();
                    if action == "destroy" {
                        inventory.with(|s| s.remove(&id));
                    } else {
                        refresh(inventory, &docker, &id).await?;
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Err(WatchError("the event stream ended".into())),
            },
            _ = relist_timer.tick() => relist(inventory, &docker, &filters).await?,
        }
    }
}

async fn relist(inventory: &Inventory, docker: &Docker, filters: &HashMap<&str, Vec<&str>>) -> Result<(), WatchError> {
    let listed = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new().all(true).filters(filters).build(),
        ))
        .await?;
    let ids: Vec<String> = listed.into_iter().filter_map(|c| c.id).collect();
    for id in &ids {
        refresh(inventory, docker, id).await?;
    }
    inventory.with(|s| {
        let gone: Vec<String> = s.containers.keys().filter(|id| !ids.contains(id)).cloned().collect();
        for id in gone {
            s.remove(&id);
        }
        s.forget_unlisted(&ids);
        s.forget_old_keys();
    });
    Ok(())
}

/// Inspects one container and updates the snapshot (a container already gone is removed).
async fn refresh(inventory: &Inventory, docker: &Docker, id: &str) -> Result<(), WatchError> {
    match docker.inspect_container(id, None).await {
        Ok(details) => {
            let container = describe(details);
            inventory.with(|s| s.upsert(id, container));
            Ok(())
        }
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
            inventory.with(|s| s.remove(id));
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn describe(details: bollard::models::ContainerInspectResponse) -> Container {
    let labels = details.config.and_then(|c| c.labels).unwrap_or_default();
    let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
    let name = details.name.unwrap_or_default().trim_start_matches('/').to_string();
    let (project, service) = (label("com.docker.compose.project"), label("com.docker.compose.service"));
    let key = if project.is_empty() || service.is_empty() {
        format!("name:{name}")
    } else {
        format!(
            "compose:{project}/{service}/{}",
            label("com.docker.compose.container-number")
        )
    };
    let state = details.state.unwrap_or_default();
    let started_at = state
        .started_at
        .as_deref()
        .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
        .filter(|t| t.year() > 1)
        .map(SystemTime::from);
    let finished_at = state
        .finished_at
        .as_deref()
        .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
        .filter(|t| t.year() > 1)
        .map(SystemTime::from);
    Container {
        name,
        project,
        service,
        state: state
            .status
            .map_or(ContainerState::Created, |s| ContainerState::parse(s.as_ref())),
        health: state
            .health
            .and_then(|h| h.status)
            .map_or(Health::None, |s| Health::parse(s.as_ref())),
        restart_count: details.restart_count.unwrap_or(0).max(0).unsigned_abs(),
        exit_code: state.exit_code.unwrap_or(0),
        oom_killed: state.oom_killed.unwrap_or(false),
        started_at,
        finished_at,
        key,
    }
}

struct Labels<'a> {
    container: &'a Container,
    extra: Option<(&'a str, &'a str)>,
}

impl EncodeLabelSet for Labels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        use prometheus_client::encoding::EncodeLabel;
        ("container", self.container.name.as_str()).encode(encoder.encode_label())?;
        ("project", self.container.project.as_str()).encode(encoder.encode_label())?;
        ("service", self.container.service.as_str()).encode(encoder.encode_label())?;
        if let Some(extra) = self.extra {
            extra.encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// Encodes the inventory at scrape time.
#[derive(Debug)]
pub struct DockerCollector(pub Arc<Inventory>);

impl Collector for DockerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        if !self.0.active.load(Ordering::Relaxed) {
            return Ok(());
        }
        let up = encoder.encode_descriptor(
            "vigil_docker_up",
            "Whether the Docker engine answers (1) or not (0).",
            None,
            MetricType::Gauge,
        )?;
        let mut up = up;
        up.encode_gauge(&i64::from(self.0.up()))?;
        let snapshot = self.0.snapshot.lock_unpoisoned();
        let containers = &snapshot.containers;
        let mut family = encoder.encode_descriptor(
            "vigil_container_state",
            "1 for the container's current state, 0 for the others.",
            None,
            MetricType::Gauge,
        )?;
        for c in containers.values() {
            for &state in ContainerState::ALL {
                family
                    .encode_family(&Labels {
                        container: c,
                        extra: Some(("state", state.as_str())),
                    })?
                    .encode_gauge(&i64::from(c.state == state))?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "vigil_container_health_status",
            "1 for the container's current health status, 0 for the others (none: no health check).",
            None,
            MetricType::Gauge,
        )?;
        for c in containers.values() {
            for &health in Health::ALL {
                family
                    .encode_family(&Labels {
                        container: c,
                        extra: Some(("status", health.as_str())),
                    })?
                    .encode_gauge(&i64::from(c.health == health))?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "vigil_container_restarts",
            "Restarts by Docker's restart policy, counted across re-creations of the container.",
            None,
            MetricType::Counter,
        )?;
        for c in containers.values() {
            let total = snapshot.restarts.get(&c.key).map_or(c.restart_count, Restarts::total);
            family
                .encode_family(&Labels {
                    container: c,
                    extra: None,
                })?
                .encode_counter::<NoLabelSet, _, u64>(&total, None)?;
        }
        let mut family = encoder.encode_descriptor(
            "vigil_container_last_exit_code",
            "Exit code of the container's last run.",
            None,
            MetricType::Gauge,
        )?;
        for c in containers.values() {
            family
                .encode_family(&Labels {
                    container: c,
                    extra: None,
                })?
                .encode_gauge(&c.exit_code)?;
        }
        let mut family = encoder.encode_descriptor(
            "vigil_container_oom_killed",
            "Whether the container's last run was killed for memory (1) or not (0).",
            None,
            MetricType::Gauge,
        )?;
        for c in containers.values() {
            family
                .encode_family(&Labels {
                    container: c,
                    extra: None,
                })?
                .encode_gauge(&i64::from(c.oom_killed))?;
        }
        let mut family = encoder.encode_descriptor(
            "vigil_container_started_timestamp",
            "When the container's current (or last) run started.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for c in containers.values() {
            if let Some(at) = c.started_at {
                family
                    .encode_family(&Labels {
                        container: c,
                        extra: None,
                    })?
                    .encode_gauge(&crate::metrics::unix_seconds(at))?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "vigil_container_finished_timestamp",
            "When the container's last run ended (only for containers that have stopped once).",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for c in containers.values() {
            if let Some(at) = c.finished_at {
                family
                    .encode_family(&Labels {
                        container: c,
                        extra: None,
                    })?
                    .encode_gauge(&crate::metrics::unix_seconds(at))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(key: &str, restarts: u64) -> Container {
        Container {
            name: "shop-api-1".into(),
            project: "shop".into(),
            service: "api".into(),
            state: ContainerState::Running,
            health: Health::None,
            restart_count: restarts,
            exit_code: 0,
            oom_killed: false,
            started_at: None,
            finished_at: None,
            key: key.into(),
        }
    }

    #[test]
    fn restarts_keep_counting_across_re_creation() {
        let mut s = Snapshot::default();
        s.upsert("a", container("k", 3));
        s.upsert("a", container("k", 5));
        assert_eq!(s.restarts["k"].total(), 5);
        s.remove("a");
        assert_eq!(s.restarts["k"].total(), 5, "the total outlives the container");
        s.upsert("b", container("k", 2));
        assert_eq!(s.restarts["k"].total(), 7);
        // A stale, lower count for a container never lowers the total.
        s.upsert("b", container("k", 1));
        assert_eq!(s.restarts["k"].total(), 7);
    }

    #[test]
    fn totals_survive_a_restart_of_vigil() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let inventory = Inventory::open(Some(dir.path())).expect("open");
        inventory.with(|s| {
            s.upsert("a", container("k", 3));
            s.upsert("b", container("j", 1));
        });
        rt.block_on(inventory.save()).expect("save");
        // vigil restarts; meanwhile container `b` was removed and `a` restarted twice more.
        let again = Inventory::open(Some(dir.path())).expect("reopen");
        again.with(|s| {
            assert_eq!(s.restarts["k"].total(), 3, "restored");
            s.upsert("a", container("k", 5));
            s.forget_unlisted(&["a".to_string()]);
            assert_eq!(s.restarts["k"].total(), 5, "no double count of the same container");
            assert_eq!(
                s.restarts["j"].total(),
                1,
                "a container gone meanwhile keeps its restarts"
            );
            assert!(s.restarts["j"].current.is_empty());
        });
    }
}
