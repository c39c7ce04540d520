//! The remediation policy: a pure function from an alert, what the config declares, the history
//! of past actions and the time, to a decision. Nothing here does I/O.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::payload::{Alert, Status};

/// What may be restarted, as the config declares it for a probe.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Target {
    /// A Docker container, by name.
    Docker {
        /// The container's name.
        container: String,
    },
    /// A Kubernetes workload: `kind` is deployment, statefulset or daemonset.
    Kubernetes {
        /// Namespace.
        namespace: String,
        /// deployment, statefulset or daemonset.
        kind: String,
        /// Its name.
        name: String,
    },
}

impl Target {
    /// A stable identifier: `docker/NAME`, `kubernetes/NAMESPACE/KIND/NAME`.
    pub fn id(&self) -> String {
        match self {
            Target::Docker { container } => format!("docker/{container}"),
            Target::Kubernetes { namespace, kind, name } => format!("kubernetes/{namespace}/{kind}/{name}"),
        }
    }

    /// The action label value.
    pub fn action(&self) -> &'static str {
        match self {
            Target::Docker { .. } => "docker_restart",
            Target::Kubernetes { .. } => "kubernetes_rollout_restart",
        }
    }
}

/// At most `max` actions per `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// How many.
    pub max: u32,
    /// In what window.
    #[serde(with = "crate::spec::values::duration")]
    pub per: Duration,
}

/// The guards, from the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Guards {
    /// No second action on a target within this.
    pub cooldown: Duration,
    /// Per target.
    pub budget: Budget,
    /// Over all targets.
    pub global_budget: Budget,
    /// Wait this long before acting; a resolved alert in the meantime cancels.
    pub delay: Duration,
}

/// Why no action was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Suppressed {
    /// The alert does not carry `remediate="true"`.
    NotRequested,
    /// The config declares no remediation for what the alert names.
    NotDeclared,
    /// This alert (fingerprint and start) was acted on already.
    Duplicate,
    /// The target was acted on within the cooldown.
    Cooldown,
    /// The target's budget for the window is spent.
    Budget,
    /// The budget over all targets is spent.
    GlobalBudget,
    /// A precondition failed (e.g. too few replicas available, a rollout in progress).
    Precondition,
    /// Another receiver replica holds the leader lease.
    NotLeader,
}

impl Suppressed {
    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Suppressed::NotRequested => "not_requested",
            Suppressed::NotDeclared => "not_declared",
            Suppressed::Duplicate => "duplicate",
            Suppressed::Cooldown => "cooldown",
            Suppressed::Budget => "budget",
            Suppressed::GlobalBudget => "global_budget",
            Suppressed::Precondition => "precondition",
            Suppressed::NotLeader => "not_leader",
        }
    }
}

/// What to do with one alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Restart now.
    Act,
    /// Restart at this time unless the alert resolves first.
    Schedule(SystemTime),
    /// The alert resolved: cancel what is pending for it.
    Cancel,
    /// Do nothing, for this reason.
    Suppress(Suppressed),
}

/// Past actions and the alerts acted on; persisted so guards survive a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// When each target was acted on (dry runs and failures included), oldest first.
    pub actions: BTreeMap<String, Vec<SystemTime>>,
    /// Alerts acted on: `fingerprint@startsAt` to when.
    pub handled: BTreeMap<String, SystemTime>,
}

/// The key that identifies one firing of one alert.
pub fn alert_key(alert: &Alert) -> String {
    let started = alert
        .starts_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{}@{started}", alert.fingerprint)
}

impl History {
    fn count_since(&self, target: Option<&str>, since: SystemTime) -> usize {
        let count = |times: &Vec<SystemTime>| times.iter().filter(|t| **t > since).count();
        match target {
            Some(id) => self.actions.get(id).map_or(0, count),
            None => self.actions.values().map(count).sum(),
        }
    }

    /// Records an action on `target` for `alert` at `now`.
    pub fn record(&mut self, target: &Target, alert_key: &str, now: SystemTime) {
        self.actions.entry(target.id()).or_default().push(now);
        self.handled.insert(alert_key.to_string(), now);
    }

    /// Drops what no guard can need any more.
    pub fn prune(&mut self, guards: &Guards, now: SystemTime) {
        let keep = guards.cooldown.max(guards.budget.per).max(guards.global_budget.per);
        let horizon = now.checked_sub(keep).unwrap_or(SystemTime::UNIX_EPOCH);
        for times in self.actions.values_mut() {
            times.retain(|t| *t > horizon);
        }
        self.actions.retain(|_, times| !times.is_empty());
        let week = now
            .checked_sub(Duration::from_secs(7 * 86_400))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        self.handled.retain(|_, t| *t > week.min(horizon));
    }
}

/// Decides what to do with `alert`, whose declared remediation is `target`.
pub fn decide(alert: &Alert, target: Option<&Target>, history: &History, guards: &Guards, now: SystemTime) -> Decision {
    if alert.status == Status::Resolved {
        return Decision::Cancel;
    }
    if alert.label("remediate") != "true" {
        return Decision::Suppress(Suppressed::NotRequested);
    }
    let Some(target) = target else {
        return Decision::Suppress(Suppressed::NotDeclared);
    };
    if history.handled.contains_key(&alert_key(alert)) {
        return Decision::Suppress(Suppressed::Duplicate);
    }
    let id = target.id();
    let ago = |d: Duration| now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH);
    if history.count_since(Some(&id), ago(guards.cooldown)) > 0 {
        return Decision::Suppress(Suppressed::Cooldown);
    }
    if history.count_since(Some(&id), ago(guards.budget.per)) >= guards.budget.max as usize {
        return Decision::Suppress(Suppressed::Budget);
    }
    if history.count_since(None, ago(guards.global_budget.per)) >= guards.global_budget.max as usize {
        return Decision::Suppress(Suppressed::GlobalBudget);
    }
    if guards.delay.is_zero() {
        Decision::Act
    } else {
        Decision::Schedule(now + guards.delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn alert(fingerprint: &str, status: Status, remediate: bool, started: SystemTime) -> Alert {
        let mut labels = BTreeMap::from([("alertname".to_string(), "VigilProbeDownRemediate".to_string())]);
        if remediate {
            labels.insert("remediate".into(), "true".into());
        }
        Alert {
            status,
            labels,
            annotations: BTreeMap::new(),
            starts_at: started,
            fingerprint: fingerprint.into(),
        }
    }

    fn guards() -> Guards {
        Guards {
            cooldown: 30 * MIN,
            budget: Budget { max: 3, per: 60 * MIN },
            global_budget: Budget { max: 5, per: 60 * MIN },
            delay: Duration::ZERO,
        }
    }

    fn target(name: &str) -> Target {
        Target::Docker { container: name.into() }
    }

    #[test]
    fn basic_gates() {
        let (h, g, now) = (History::default(), guards(), t0());
        let a = alert("f1", Status::Firing, true, now);
        assert_eq!(decide(&a, Some(&target("web")), &h, &g, now), Decision::Act);
        assert_eq!(
            decide(&a, None, &h, &g, now),
            Decision::Suppress(Suppressed::NotDeclared)
        );
        let not_asked = alert("f1", Status::Firing, false, now);
        assert_eq!(
            decide(&not_asked, Some(&target("web")), &h, &g, now),
            Decision::Suppress(Suppressed::NotRequested)
        );
        let resolved = alert("f1", Status::Resolved, true, now);
        assert_eq!(decide(&resolved, Some(&target("web")), &h, &g, now), Decision::Cancel);
        // A resolved alert cancels even without remediate (it may have lost the label).
        let resolved = alert("f1", Status::Resolved, false, now);
        assert_eq!(decide(&resolved, None, &h, &g, now), Decision::Cancel);
    }

    #[test]
    fn dedupe_by_fingerprint_and_start() {
        let (mut h, g, now) = (History::default(), guards(), t0());
        let a = alert("f1", Status::Firing, true, now);
        h.record(&target("web"), &alert_key(&a), now);
        let later = now + 120 * MIN; // past the cooldown and the budget window
        assert_eq!(
            decide(&a, Some(&target("web")), &h, &g, later),
            Decision::Suppress(Suppressed::Duplicate)
        );
        // The same alert firing again (a new start) is a new incident.
        let again = alert("f1", Status::Firing, true, now + 90 * MIN);
        assert_eq!(decide(&again, Some(&target("web")), &h, &g, later), Decision::Act);
    }

    #[test]
    fn cooldown_edges() {
        let (mut h, g, now) = (History::default(), guards(), t0());
        h.record(&target("web"), "x", now);
        let a = |at| alert("f2", Status::Firing, true, at);
        let just_inside = now + g.cooldown - Duration::from_secs(1);
        assert_eq!(
            decide(&a(just_inside), Some(&target("web")), &h, &g, just_inside),
            Decision::Suppress(Suppressed::Cooldown)
        );
        // At exactly the cooldown the last action is no longer inside it.
        let edge = now + g.cooldown;
        assert_eq!(decide(&a(edge), Some(&target("web")), &h, &g, edge), Decision::Act);
        // Another target is not cooled down.
        assert_eq!(decide(&a(now), Some(&target("db")), &h, &g, now), Decision::Act);
    }

    #[test]
    fn budget_windows() {
        let mut g = guards();
        g.cooldown = Duration::ZERO;
        let mut h = History::default();
        let now = t0();
        for i in 0..3 {
            h.record(&target("web"), &format!("k{i}"), now + i * MIN);
        }
        let at = now + 3 * MIN;
        let a = alert("f9", Status::Firing, true, at);
        assert_eq!(
            decide(&a, Some(&target("web")), &h, &g, at),
            Decision::Suppress(Suppressed::Budget)
        );
        // The first action leaves the window after an hour.
        let at = now + 60 * MIN;
        assert_eq!(decide(&a, Some(&target("web")), &h, &g, at), Decision::Act);
        // The global budget counts every target.
        h.record(&target("a"), "ka", now);
        h.record(&target("b"), "kb", now);
        let at = now + 4 * MIN;
        assert_eq!(
            decide(&a, Some(&target("c")), &h, &g, at),
            Decision::Suppress(Suppressed::GlobalBudget)
        );
    }

    #[test]
    fn delay_schedules() {
        let mut g = guards();
        g.delay = 2 * MIN;
        let now = t0();
        let a = alert("f1", Status::Firing, true, now);
        assert_eq!(
            decide(&a, Some(&target("web")), &History::default(), &g, now),
            Decision::Schedule(now + 2 * MIN)
        );
    }

    #[test]
    fn prune_keeps_what_guards_need() {
        let g = guards();
        let mut h = History::default();
        let now = t0();
        h.record(&target("web"), "old", now);
        h.record(&target("web"), "new", now + 50 * MIN);
        h.prune(&g, now + 70 * MIN);
        assert_eq!(h.actions["docker/web"].len(), 1);
        assert!(h.handled.contains_key("new"));
    }
}
