//! `vigil receiver`: an Alertmanager webhook receiver (payload version 4) that performs guarded
//! restarts declared in vigil's config, and relays alerts to WhatsApp. It runs as its own
//! process with its own listener and permissions; the exporter never restarts anything.
//!
//! Every decision is made by [`policy::decide`], a pure function; what it decides is carried out
//! by [`actions::Actions`], written to the audit log (JSON lines) and counted in metrics.

pub mod actions;
pub mod payload;
pub mod policy;
pub mod relay;
pub mod remediation;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::ReceiverConfig;
use crate::poison::LockUnpoisoned;
use crate::secret::{Secret, SecretSource};
use crate::spec::BuildContext;
use payload::{Alert, Payload};
use policy::{Budget, Decision, Guards, History, Suppressed, Target, alert_key, decide};

/// `receiver:` in the config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Bearer token Alertmanager sends (`http_config.authorization.credentials_file`).
    pub token: Option<SecretSource>,
    /// File holding the token.
    pub token_file: Option<PathBuf>,
    /// Log and count what would be done, do nothing (default true).
    #[serde(default = "yes")]
    pub dry_run: bool,
    /// Where cooldowns, budgets and handled alerts are kept across restarts (required).
    pub state_file: Option<PathBuf>,
    /// JSON-lines audit log of every decision (default: the logs only).
    pub audit_log: Option<PathBuf>,
    /// No second action on a target within this (default 30m).
    #[serde(default = "default_cooldown", with = "crate::spec::values::duration")]
    pub cooldown: Duration,
    /// Actions per target per window (default 3 per 1h).
    #[serde(default = "default_budget")]
    pub budget: Budget,
    /// Actions over all targets per window (default 10 per 1h).
    #[serde(default = "default_global_budget")]
    pub global_budget: Budget,
    /// Wait before acting; a resolved alert in the meantime cancels (default 0s).
    #[serde(default, with = "crate::spec::values::duration")]
    pub delay: Duration,
    /// Kubernetes: do not restart when fewer than this share of replicas is available (default 0.5).
    #[serde(default = "default_ratio")]
    pub min_available_ratio: f64,
    /// Kubernetes actions: kubeconfig and leader election.
    #[serde(default)]
    pub kubernetes: actions::KubernetesSpec,
    /// The WhatsApp relay.
    pub whatsapp: Option<relay::Spec>,
}

fn yes() -> bool {
    true
}
fn default_cooldown() -> Duration {
    Duration::from_secs(1800)
}
fn default_budget() -> Budget {
    Budget {
        max: 3,
        per: Duration::from_secs(3600),
    }
}
fn default_global_budget() -> Budget {
    Budget {
        max: 10,
        per: Duration::from_secs(3600),
    }
}
fn default_ratio() -> f64 {
    0.5
}

/// The receiver's validated settings.
#[derive(Debug)]
pub struct Settings {
    token: Secret,
    /// Dry run.
    pub dry_run: bool,
    state_file: PathBuf,
    audit_log: Option<PathBuf>,
    /// The guards.
    pub guards: Guards,
    /// Kubernetes precondition.
    pub min_available_ratio: f64,
    kubernetes: actions::KubernetesSpec,
    relay: Option<relay::Relay>,
}

/// `receiver:` in the config. Only `vigil receiver` (and `vigil check`) build it, reading its
/// token; `vigil run` only decodes it, so the exporter never opens the receiver's secrets.
#[derive(Clone, Debug, Default)]
pub struct ReceiverSection(pub Option<Arc<Settings>>);

impl crate::spec::Section for ReceiverSection {
    const KEY: &'static str = "receiver";
    type Spec = Spec;

    fn build(spec: Spec, cx: &mut BuildContext, at: &crate::spec::KeyPath) -> Option<Self> {
        build(spec, cx, at.as_str()).map(|settings| ReceiverSection(Some(Arc::new(settings))))
    }
}

fn build(spec: Spec, ctx: &mut BuildContext, path: &str) -> Option<Settings> {
    let key = |k: &str| format!("{path}.{k}");
    let token = match (&spec.token, &spec.token_file) {
        (Some(s), None) => ctx.secret(key("token"), s),
        (None, Some(file)) => ctx.secret(key("token_file"), &SecretSource::File { file: file.clone() }),
        (Some(_), Some(_)) => {
            ctx.error(key("token_file"), "set either token or token_file, not both");
            None
        }
        (None, None) => {
            ctx.error(
                path,
                "missing key `token_file` (the bearer token Alertmanager must send)",
            );
            None
        }
    };
    if token.as_ref().is_some_and(|t| t.expose().len() < 16) {
        // The key the user wrote.
        let written = if spec.token_file.is_some() {
            "token_file"
        } else {
            "token"
        };
        ctx.error(key(written), "the token must be at least 16 characters long");
    }
    if spec.state_file.is_none() {
        ctx.error(
            path,
            "missing key `state_file` (cooldowns and budgets must survive a restart)",
        );
    }
    for (name, budget) in [("budget", spec.budget), ("global_budget", spec.global_budget)] {
        if budget.max == 0 || budget.per.is_zero() {
            ctx.error(key(name), "max and per must be greater than 0");
        }
    }
    if let Some(lease) = &spec.kubernetes.leader_election
        && lease.duration < Duration::from_secs(5)
    {
        ctx.error(key("kubernetes.leader_election.duration"), "must be at least 5s");
    }
    if !(0.0..=1.0).contains(&spec.min_available_ratio) {
        ctx.error(key("min_available_ratio"), "must be between 0 and 1");
    }
    let relay = match spec.whatsapp {
        Some(w) => Some(relay::build(w, ctx, &key("whatsapp"))?),
        None => None,
    };
    Some(Settings {
        token: token?,
        dry_run: spec.dry_run,
        state_file: ctx.resolve_path(&spec.state_file?),
        audit_log: spec.audit_log.map(|p| ctx.resolve_path(&p)),
        guards: Guards {
            cooldown: spec.cooldown,
            budget: spec.budget,
            global_budget: spec.global_budget,
            delay: spec.delay,
        },
        min_available_ratio: spec.min_available_ratio,
        kubernetes: spec.kubernetes,
        relay,
    })
}

/// The targets the config declares: by probe name, and by Docker container name.
fn targets(config: &ReceiverConfig) -> (HashMap<String, Target>, HashMap<String, Target>) {
    let mut by_probe = HashMap::new();
    let mut by_container = HashMap::new();
    for (probe, remediation) in &config.remediations {
        let target = if let Some(d) = &remediation.docker {
            let t = Target::Docker {
                container: d.container.clone(),
            };
            by_container.insert(d.container.clone(), t.clone());
            t
        } else if let Some(k) = &remediation.kubernetes {
            let (kind, name) = match (&k.deployment, &k.statefulset, &k.daemonset) {
                (Some(n), _, _) => ("deployment", n),
                (_, Some(n), _) => ("statefulset", n),
                (_, _, Some(n)) => ("daemonset", n),
                _ => continue,
            };
            Target::Kubernetes {
                namespace: k.namespace.clone(),
                kind: kind.into(),
                name: name.clone(),
            }
        } else {
            continue;
        };
        by_probe.insert(probe.clone(), target);
    }
    (by_probe, by_container)
}

/// How an action went (the `outcome` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionOutcome {
    /// Carried out.
    Done,
    /// Dry run: logged and counted, not carried out.
    DryRun,
    /// Tried and failed, for the reason given.
    Failed(&'static str),
}

impl ActionOutcome {
    /// The label value (`done`, `dry_run`, `failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            ActionOutcome::Done => "done",
            ActionOutcome::DryRun => "dry_run",
            ActionOutcome::Failed(_) => "failed",
        }
    }
}

/// What the audit log says was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Audited {
    /// An action is due later (`delay`).
    Scheduled,
    /// A pending action was cancelled by the alert's resolution.
    Cancelled,
    /// Not acted on, and why.
    Suppressed(Suppressed),
    /// Acted on, with this outcome.
    Acted(ActionOutcome),
}

impl std::fmt::Display for Audited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Audited::Scheduled => f.write_str("scheduled"),
            Audited::Cancelled => f.write_str("cancelled"),
            Audited::Suppressed(why) => write!(f, "suppressed:{}", why.as_str()),
            Audited::Acted(outcome) => f.write_str(outcome.as_str()),
        }
    }
}

/// Metrics of the receiver.
#[derive(Debug, Default)]
struct Metrics {
    actions: Family<Vec<(&'static str, &'static str)>, Counter>,
    suppressed: Family<Vec<(&'static str, &'static str)>, Counter>,
    notifications: Family<Vec<(&'static str, &'static str)>, Counter>,
    notifications_failed: Family<Vec<(&'static str, &'static str)>, Counter>,
    webhooks: Family<Vec<(&'static str, &'static str)>, Counter>,
}

/// The running receiver.
pub struct Receiver {
    settings: Arc<Settings>,
    by_probe: HashMap<String, Target>,
    by_container: HashMap<String, Target>,
    actions: actions::Actions,
    history: Mutex<History>,
    pending: Mutex<HashMap<String, (Target, Alert, SystemTime)>>,
    groups: Mutex<HashMap<String, relay::GroupState>>,
    metrics: Metrics,
    registry: Registry,
    queue: mpsc::Sender<Payload>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// Starts the receiver for `config` (which must have a `receiver:` section): reads its state
    /// file and spawns the worker that acts on deliveries. Must run inside a Tokio runtime.
    pub fn start(config: &ReceiverConfig) -> crate::Result<Arc<Receiver>> {
        Self::start_with(config, None)
    }

    /// [`Receiver::start`] with a given Kubernetes client (tests use a mock API server).
    pub fn start_with(config: &ReceiverConfig, kube: Option<kube::Client>) -> crate::Result<Arc<Receiver>> {
        let settings = config.receiver.0.clone().ok_or_else(|| crate::Error::NoReceiver {
            config: config.source.to_string(),
        })?;
        let history: History = crate::persist::read_json(&settings.state_file)?;
        let (by_probe, by_container) = targets(config);
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        crate::metrics::register_build_info(&mut registry);
        registry.register(
            "vigil_remediation_actions",
            "Remediation actions, by action and outcome (done, dry_run, failed)",
            metrics.actions.clone(),
        );
        registry.register(
            "vigil_remediation_suppressed",
            "Remediations not carried out, by reason",
            metrics.suppressed.clone(),
        );
        registry.register(
            "vigil_notifications",
            "Notifications sent (one per phone), by channel",
            metrics.notifications.clone(),
        );
        registry.register(
            "vigil_notifications_failed",
            "Notifications that failed after retries, by channel and reason",
            metrics.notifications_failed.clone(),
        );
        registry.register(
            "vigil_receiver_webhooks",
            "Webhook deliveries, by outcome",
            metrics.webhooks.clone(),
        );
        let (queue, deliveries) = mpsc::channel(1024);
        let receiver = Arc::new(Receiver {
            actions: {
                let actions = actions::Actions::new(
                    config.docker.address(),
                    settings.kubernetes.clone(),
                    settings.min_available_ratio,
                );
                match kube {
                    Some(client) => actions.with_client(client),
                    None => actions,
                }
            },
            settings,
            by_probe,
            by_container,
            history: Mutex::new(history),
            pending: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
            metrics,
            registry,
            queue,
        });
        tokio::spawn(work(receiver.clone(), deliveries));
        let weak = Arc::downgrade(&receiver);
        tokio::spawn(async move {
            if let Some(receiver) = weak.upgrade() {
                receiver.actions.hold_lease().await;
            }
        });
        info!(
            dry_run = receiver.settings.dry_run,
            targets = receiver.by_probe.len(),
            whatsapp = receiver.settings.relay.is_some(),
            "receiver ready"
        );
        Ok(receiver)
    }

    /// Sends one test message through the WhatsApp relay; `Err` when there is none or it failed.
    pub async fn test_notification(&self) -> Result<(), String> {
        let relay = self
            .settings
            .relay
            .as_ref()
            .ok_or("no `receiver.whatsapp` section in the config")?;
        let results = relay.send(&relay::test_message()).await;
        let failed: Vec<String> = results
            .iter()
            .filter_map(|(p, r)| r.err().map(|e| format!("{p}: {e}")))
            .collect();
        for (_, result) in &results {
            self.count_notification(relay.channel(), *result);
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join(", "))
        }
    }

    fn count_notification(&self, channel: &'static str, result: Result<(), relay::SendError>) {
        self.metrics
            .notifications
            .get_or_create(&vec![("channel", channel)])
            .inc();
        if let Err(error) = result {
            self.metrics
                .notifications_failed
                .get_or_create(&vec![("channel", channel), ("reason", error.reason())])
                .inc();
        }
    }

    fn target_of(&self, alert: &Alert) -> Option<&Target> {
        self.by_probe
            .get(alert.label("probe"))
            .or_else(|| self.by_container.get(alert.label("container")))
    }

    fn audit(&self, alert: &Alert, target: Option<&Target>, decision: Audited, detail: &str) {
        let decision = decision.to_string();
        let decision = decision.as_str();
        let line = serde_json::json!({
            "time": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            "alertname": alert.label("alertname"),
            "fingerprint": alert.fingerprint,
            "probe": alert.label("probe"),
            "target": target.map(Target::id),
            "action": target.map(Target::action),
            "decision": decision,
            "detail": detail,
            "dry_run": self.settings.dry_run,
        });
        info!(
            decision,
            target = target.map(Target::id).unwrap_or_default(),
            alert = alert.label("alertname"),
            detail,
            "remediation"
        );
        if let Some(path) = &self.settings.audit_log {
            // One write per line: lines of concurrent decisions never interleave, and a reader
            // never sees half a line.
            let text = format!("{line}\n");
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(text.as_bytes()));
            if let Err(e) = written {
                warn!(error = %e, path = %path.display(), "cannot write the audit log");
            }
        }
    }

    fn suppress(&self, alert: &Alert, target: Option<&Target>, why: Suppressed, detail: &str) {
        self.metrics
            .suppressed
            .get_or_create(&vec![("reason", why.as_str())])
            .inc();
        self.audit(alert, target, Audited::Suppressed(why), detail);
    }

    fn save_history(&self, history: &History) {
        if let Err(e) = crate::persist::write_json(&self.settings.state_file, history) {
            warn!(error = %e, path = %self.settings.state_file.display(), "cannot write the receiver state file");
        }
    }

    /// Decides on one alert and carries out what was decided.
    async fn handle(&self, alert: &Alert) {
        let target = self.target_of(alert).cloned();
        let now = SystemTime::now();
        let decision = {
            let mut history = self.history.lock_unpoisoned();
            history.prune(&self.settings.guards, now);
            decide(alert, target.as_ref(), &history, &self.settings.guards, now)
        };
        match decision {
            Decision::Cancel => {
                let cancelled = self.pending.lock_unpoisoned().remove(&alert.fingerprint);
                if let Some((target, _, _)) = cancelled {
                    self.audit(
                        alert,
                        Some(&target),
                        Audited::Cancelled,
                        "the alert resolved before the action was due",
                    );
                }
            }
            Decision::Suppress(why) => {
                // Alerts that never asked for remediation are the common case: count, do not log.
                if why == Suppressed::NotRequested {
                    self.metrics
                        .suppressed
                        .get_or_create(&vec![("reason", why.as_str())])
                        .inc();
                } else {
                    self.suppress(alert, target.as_ref(), why, "");
                }
            }
            Decision::Schedule(at) => {
                if let Some(target) = target {
                    // Alertmanager repeats a firing alert: the first delivery sets the due time.
                    let mut pending = self.pending.lock_unpoisoned();
                    if pending.contains_key(&alert.fingerprint) {
                        return;
                    }
                    pending.insert(alert.fingerprint.clone(), (target.clone(), alert.clone(), at));
                    drop(pending);
                    let due = format!("due in {}s", self.settings.guards.delay.as_secs());
                    self.audit(alert, Some(&target), Audited::Scheduled, &due);
                }
            }
            Decision::Act => {
                if let Some(target) = target {
                    self.act(alert, &target).await;
                }
            }
        }
    }

    /// Carries out an action, recorded in the history before it starts so that a crash during
    /// the action still counts against the guards. Deliveries are handled one at a time, so no
    /// other action can slip in between the checks and the record.
    async fn act(&self, alert: &Alert, target: &Target) {
        let now = SystemTime::now();
        let guards = Guards {
            delay: Duration::ZERO,
            ..self.settings.guards
        };
        // Check again: a scheduled action's guards may have changed while it waited.
        let decision = decide(alert, Some(target), &self.history.lock_unpoisoned(), &guards, now);
        if let Decision::Suppress(why) = decision {
            return self.suppress(alert, Some(target), why, "");
        }
        match self.actions.may_act().await {
            Ok(true) => {}
            Ok(false) => {
                return self.suppress(
                    alert,
                    Some(target),
                    Suppressed::NotLeader,
                    "another replica holds the Lease",
                );
            }
            Err(e) => return self.suppress(alert, Some(target), Suppressed::NotLeader, &e.to_string()),
        }
        if !self.settings.dry_run
            && let Err(why) = self.actions.precondition(target).await
        {
            return self.suppress(alert, Some(target), Suppressed::Precondition, &why.to_string());
        }
        {
            let mut history = self.history.lock_unpoisoned();
            history.record(target, &alert_key(alert), now);
            self.save_history(&history);
        }
        let outcome = if self.settings.dry_run {
            self.audit(
                alert,
                Some(target),
                Audited::Acted(ActionOutcome::DryRun),
                "would restart",
            );
            ActionOutcome::DryRun
        } else {
            match self.actions.perform(target).await {
                Ok(()) => {
                    self.audit(alert, Some(target), Audited::Acted(ActionOutcome::Done), "restarted");
                    ActionOutcome::Done
                }
                Err(e) => {
                    self.audit(
                        alert,
                        Some(target),
                        Audited::Acted(ActionOutcome::Failed(e.reason())),
                        &e.to_string(),
                    );
                    ActionOutcome::Failed(e.reason())
                }
            }
        };
        self.metrics
            .actions
            .get_or_create(&vec![("action", target.action()), ("outcome", outcome.as_str())])
            .inc();
    }

    async fn relay(&self, payload: &Payload) {
        let Some(relay) = &self.settings.relay else { return };
        if payload.receiver != relay.receiver {
            return;
        }
        let admitted = relay.admit(&mut self.groups.lock_unpoisoned(), payload, SystemTime::now());
        if let Err(held) = admitted {
            tracing::debug!(group = payload.group_key, ?held, "WhatsApp message held back");
            return;
        }
        let message = relay::Message::of(payload);
        for (_, result) in relay.send(&message).await {
            self.count_notification(relay.channel(), result);
        }
    }
}

/// Processes deliveries one at a time, and fires scheduled actions when they are due.
async fn work(receiver: Arc<Receiver>, mut deliveries: mpsc::Receiver<Payload>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            delivery = deliveries.recv() => {
                let Some(payload) = delivery else { return };
                // A delivery for the WhatsApp relay's receiver is only relayed; remediation is
                // for the deliveries of every other receiver (vigil-receiver).
                let relay_only = receiver.settings.relay.as_ref().is_some_and(|r| r.receiver == payload.receiver);
                if !relay_only {
                    for alert in &payload.alerts {
                        receiver.handle(alert).await;
                    }
                }
                receiver.relay(&payload).await;
            }
            _ = tick.tick() => {
                let now = SystemTime::now();
                let due: Vec<(Target, Alert)> = {
                    let mut pending = receiver.pending.lock_unpoisoned();
                    let keys: Vec<String> = pending.iter().filter(|(_, (_, _, at))| *at <= now).map(|(k, _)| k.clone()).collect();
                    keys.into_iter().filter_map(|k| pending.remove(&k)).map(|(t, a, _)| (t, a)).collect()
                };
                for (target, alert) in due {
                    receiver.act(&alert, &target).await;
                }
            }
        }
    }
}

/// The receiver's routes: `POST /alertmanager`, `/metrics`, `/-/healthy`, `/-/ready`.
pub fn router(receiver: Arc<Receiver>) -> Router {
    Router::new()
        .route("/alertmanager", post(webhook))
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(|| async { "Healthy\n" }))
        .route("/-/ready", get(|| async { "Ready\n" }))
        .layer(DefaultBodyLimit::max(4 << 20))
        .with_state(receiver)
}

async fn webhook(State(receiver): State<Arc<Receiver>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let count = |outcome: &'static str| {
        receiver
            .metrics
            .webhooks
            .get_or_create(&vec![("outcome", outcome)])
            .inc()
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let ok = token.is_some_and(|t| receiver.settings.token.matches(t.trim()));
    if !ok {
        count("unauthorized");
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "wrong or missing bearer token\n",
        )
            .into_response();
    }
    let payload = match payload::parse(&body) {
        Ok(p) => p,
        Err(e) => {
            count("malformed");
            return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
        }
    };
    match receiver.queue.try_send(payload) {
        Ok(()) => {
            count("accepted");
            (StatusCode::OK, "accepted\n").into_response()
        }
        Err(_) => {
            count("overloaded");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many deliveries queued; Alertmanager will retry\n",
            )
                .into_response()
        }
    }
}

async fn metrics(State(receiver): State<Arc<Receiver>>, headers: HeaderMap) -> Response {
    let format = crate::metrics::Format::negotiate(&headers);
    match crate::metrics::encode(&receiver.registry, format.is_openmetrics()) {
        Ok(body) => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed\n").into_response(),
    }
}
