//! Checks the static alerting stack with the real tools: Prometheus' `promtool`, Alertmanager's
//! `amtool` and server, and `docker-compose`; Debian packages `prometheus`,
//! `prometheus-alertmanager` and `docker-compose` (`scripts/install-test-deps.sh` installs
//! them). A missing tool fails its test and names the package; no check is ever skipped.
//!
//! The rules' behaviour over time is proven by their promtool unit tests (rules/tests/*.yml);
//! here: that they pass, the routes of every tier and step (`amtool config routes test`), the
//! routes' settings as docs/alerting.md states them, the ladder, resolved notices and
//! inhibition against a real Alertmanager fed alerts as Prometheus sends them, and the
//! notification templates.
//!
//! Grafana cannot run here: the dashboards are checked as JSON (tests/it/stack/json.rs, a small
//! parser that also refuses duplicate keys), every panel's PromQL goes through
//! `promtool check rules`, and through `promtool test rules` against two vigil replicas (each
//! probe counted once). tests/it/alerting_e2e.rs runs the same queries against a real Prometheus;
//! the helpers both files use live in tests/it/stack/.

use crate::stack;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::thread;
use std::time::{Duration, SystemTime};

use stack::dashboards::{Intervals, dashboards, panel_queries, substitute, variables_in};
use stack::json::Json;
use stack::test_copy::{self, Route};
use stack::webhooks::{self, Delivery, Recorder};
use stack::{
    ALERTMANAGER_YML, TempDir, amtool, assert_success, command, files, http, millis, path_str, promtool, read, repo,
    rfc3339, text,
};

// ---------------------------------------------------------------------------------------------
// Prometheus rules
// ---------------------------------------------------------------------------------------------

#[test]
fn rules_pass_promtool_check() {
    let rules = files("rules", "yml");
    let mut args = vec!["check", "rules"];
    args.extend(rules.iter().map(|p| path_str(p)));
    assert_success("promtool check rules", &promtool(&args));
}

#[test]
fn rules_pass_their_unit_tests() {
    let tests = files("rules/tests", "yml");
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(|p| path_str(p)));
    assert_success("promtool test rules", &promtool(&args));
}

/// The names after `- alert:` in the alert rules file.
fn alert_names() -> BTreeSet<String> {
    read("rules/vigil-alerts.yml")
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert:"))
        .map(|name| name.trim().to_string())
        .collect()
}

#[test]
fn every_alert_has_a_unit_test() {
    let tests: String = files("rules/tests", "yml")
        .iter()
        .map(|p| fs::read_to_string(p).expect("read test file"))
        .collect();
    let untested: Vec<String> = alert_names()
        .into_iter()
        .filter(|name| !tests.contains(&format!("alertname: {name}\n")))
        .collect();
    assert!(untested.is_empty(), "alerts without a promtool unit test: {untested:?}");
}

/// Every test file evaluates every rule group in a fixed order (recording rules before the
/// alerts that read them): without `group_eval_order` promtool picks an arbitrary order, and a
/// test could pass or fail by chance.
#[test]
fn every_unit_test_file_fixes_the_group_order() {
    let groups: Vec<String> = files("rules", "yml")
        .iter()
        .flat_map(|p| {
            fs::read_to_string(p)
                .expect("read rules")
                .lines()
                .filter_map(|l| l.strip_prefix("  - name: ").map(|n| n.trim().to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    for file in files("rules/tests", "yml") {
        let doc = test_copy::load(&file);
        let order: Vec<&str> = doc["group_eval_order"]
            .as_vec()
            .unwrap_or_else(|| panic!("{} has no group_eval_order", file.display()))
            .iter()
            .filter_map(|g| g.as_str())
            .collect();
        for group in &groups {
            assert!(
                order.contains(&group.as_str()),
                "{}: group {group} not in group_eval_order",
                file.display()
            );
        }
        let position = |name: &str| order.iter().position(|g| *g == name).expect("listed");
        for (recording, alerts) in [
            ("vigil-escalation", "vigil-probes"),
            ("vigil-slo-error-ratios", "vigil-slo"),
            ("vigil-slo-objectives", "vigil-slo"),
            ("vigil-probes", "vigil-freshness"),
            ("vigil-probes", "vigil-slo"),
        ] {
            assert!(
                position(recording) < position(alerts),
                "{}: {recording} must come before {alerts}",
                file.display()
            );
        }
    }
}

/// GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to dashes
/// (also how vigil's /runbook names its sections).
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every alert has a section in docs/runbook.md, and its `runbook_url` leads to that section of
/// the runbook vigil serves: `<external_url>runbook#<section>`, `http://vigil:9430/` without
/// vigil_web_info (rules/tests/ladder.yml renders both).
#[test]
fn every_alert_has_a_runbook_section() {
    let runbook = read("docs/runbook.md");
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter_map(|line| line.strip_prefix("## "))
        .map(anchor)
        .collect();
    for name in alert_names() {
        assert!(
            anchors.contains(&anchor(&name)),
            "docs/runbook.md has no section `## {name}`"
        );
    }
    let rules = read("rules/vigil-alerts.yml");
    let mut current = String::new();
    let mut links = 0;
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert:") {
            current = name.trim().to_string();
        }
        if let Some((_, fragment)) = line.split_once("}runbook#") {
            let fragment = fragment.trim();
            assert_eq!(fragment, anchor(&current), "runbook_url of {current}");
            assert!(
                anchors.contains(fragment),
                "runbook_url of {current} to a missing section"
            );
            assert!(
                line.contains(r#"{{ with query "max by (external_url) (vigil_web_info)" }}{{ . | first | label "external_url" }}{{ else }}http://vigil:9430/{{ end }}runbook#"#),
                "runbook_url of {current} is not built from vigil_web_info: {line}"
            );
            links += 1;
        }
    }
    let urls = rules.lines().filter(|l| l.trim().starts_with("runbook_url:")).count();
    assert_eq!(links, urls, "every runbook_url is a link into vigil's /runbook");
}

#[test]
fn prometheus_config_is_valid() {
    assert_success(
        "promtool check config",
        &promtool(&["check", "config", path_str(&repo("prometheus/prometheus.yml"))]),
    );
}

/// The ladder's waits per tier and step (rules/vigil-escalation.yml), in seconds, as
/// docs/alerting.md states them.
const LADDER: [(&str, &str, u64); 10] = [
    ("critical", "team", 30),
    ("critical", "page", 900),
    ("critical", "phone", 1_800),
    ("critical", "manager", 3_600),
    ("high", "team", 30),
    ("high", "page", 1_800),
    ("high", "phone", 3_600),
    ("warning", "team", 120),
    ("business", "team", 300),
    ("info", "team", 300),
];

#[test]
fn escalation_waits_are_the_documented_ladder() {
    let doc = test_copy::load(&repo("rules/vigil-escalation.yml"));
    let mut waits = BTreeSet::new();
    for group in doc["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            if rule["record"].as_str() != Some("vigil:escalation_wait:seconds") {
                continue;
            }
            let label = |name: &str| {
                rule["labels"][name]
                    .as_str()
                    .expect("severity and step labels")
                    .to_string()
            };
            let seconds: u64 = rule["expr"]
                .as_str()
                .and_then(|e| e.trim().strip_prefix("vector(")?.strip_suffix(')')?.parse().ok())
                .expect("a wait is vector(<seconds>)");
            waits.insert((label("severity"), label("step"), seconds));
        }
    }
    let expected: BTreeSet<(String, String, u64)> = LADDER
        .iter()
        .map(|(s, t, w)| (s.to_string(), t.to_string(), *w))
        .collect();
    assert_eq!(waits, expected);
    // The table of docs/alerting.md says the same.
    let docs = read("docs/alerting.md");
    for (line, tier) in [
        ("| critical | 30s | 15m | 30m | 1h |", "critical"),
        ("| high | 30s | 30m | 1h | - |", "high"),
        ("| warning | 2m | - | - | - |", "warning"),
        ("| business | 5m | - | - | - |", "business"),
        ("| info | 5m | - | - | - |", "info"),
    ] {
        assert!(
            docs.lines().any(|l| l.starts_with(line)),
            "docs/alerting.md: no ladder row for {tier} starting `{line}`"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Alertmanager: configuration, routing, templates
// ---------------------------------------------------------------------------------------------

#[test]
fn alertmanager_config_is_valid() {
    assert_success(
        "amtool check-config",
        &amtool(&["check-config", path_str(&repo(ALERTMANAGER_YML))]),
    );
}

/// Asserts that an alert with `labels` reaches exactly `receivers`, in this order.
fn assert_routes(labels: &[&str], receivers: &[&str]) {
    let config = format!("--config.file={}", path_str(&repo(ALERTMANAGER_YML)));
    let verify = format!("--verify.receivers={}", receivers.join(","));
    let mut args = vec!["config", "routes", "test", config.as_str(), verify.as_str()];
    args.extend_from_slice(labels);
    let output = amtool(&args);
    assert_success(&format!("routing {labels:?} to {receivers:?}"), &output);
    assert_eq!(
        text(&output.stdout).trim(),
        receivers.join(","),
        "receivers of {labels:?}"
    );
}

/// The receivers of each step of the ladder.
fn step_receivers(step: &str) -> &'static [&'static str] {
    match step {
        "team" => &["team"],
        "page" => &["pagerduty", "sms", "vigil-whatsapp"],
        "phone" => &["phone"],
        "manager" => &["manager"],
        other => panic!("no step {other}"),
    }
}

#[test]
fn route_every_tier_and_step_of_the_ladder() {
    for (severity, step, _) in LADDER {
        let receivers: &[&str] = match (severity, step) {
            ("info", "team") => &["team-info"],
            _ => step_receivers(step),
        };
        for alertname in ["VigilProbeDown", "VigilContainerStopped"] {
            assert_routes(
                &[
                    &format!("alertname={alertname}"),
                    &format!("severity={severity}"),
                    &format!("step={step}"),
                    "probe=api",
                    "status=down",
                ],
                receivers,
            );
        }
    }
}

#[test]
fn route_page_step_is_pagerduty_sms_and_whatsapp() {
    assert_routes(
        &[
            "alertname=VigilProbeDown",
            "severity=critical",
            "step=page",
            "probe=api",
            "team=platform",
        ],
        &["pagerduty", "sms", "vigil-whatsapp"],
    );
}

#[test]
fn route_frontend_down_is_a_warning_for_the_team_only() {
    assert_routes(
        &[
            "alertname=VigilProbeDown",
            "severity=warning",
            "step=team",
            "tier=frontend",
            "probe=shop-web",
        ],
        &["team"],
    );
}

#[test]
fn route_the_alerts_beside_the_ladder_by_tier() {
    for (labels, receivers) in [
        (
            &[
                "alertname=VigilProbeDegraded",
                "severity=warning",
                "step=team",
                "probe=search",
            ][..],
            &["team"][..],
        ),
        (
            &[
                "alertname=VigilProbeDegraded",
                "severity=business",
                "step=team",
                "probe=reports",
            ],
            &["team"],
        ),
        (
            &[
                "alertname=VigilProbeDegraded",
                "severity=info",
                "step=team",
                "probe=wiki",
            ],
            &["team-info"],
        ),
        (
            &["alertname=VigilProbeSlow", "severity=warning", "probe=search"],
            &["team"],
        ),
        (
            &["alertname=VigilDataStale", "severity=warning", "probe=orders"],
            &["team"],
        ),
        (
            &["alertname=VigilCertificateExpiry", "severity=warning", "probe=api"],
            &["team"],
        ),
        // Alerts without steps: critical ones page once and reach the team.
        (
            &["alertname=VigilCertificateExpiry", "severity=critical", "probe=api"],
            &["pagerduty", "team"],
        ),
        (
            &["alertname=VigilExporterAbsent", "severity=critical", "job=vigil"],
            &["pagerduty", "team"],
        ),
        (
            &["alertname=VigilReceiverDown", "severity=high", "job=vigil-receiver"],
            &["team"],
        ),
        (
            &[
                "alertname=VigilPodCrashLooping",
                "severity=warning",
                "namespace=gps",
                "pod=p",
            ],
            &["team"],
        ),
        (
            &["alertname=VigilContainerUnhealthy", "severity=warning", "container=c"],
            &["team"],
        ),
        (
            &["alertname=VigilCertificateExpiry", "severity=business", "probe=reports"],
            &["team"],
        ),
        (
            &["alertname=VigilSLOTargetUnsupported", "severity=info", "probe=legacy"],
            &["team-info"],
        ),
        // No severity: the root route's receiver.
        (&["alertname=SomethingElse"], &["team"]),
    ] {
        assert_routes(labels, receivers);
    }
}

#[test]
fn route_reminders_and_change_notices_to_their_channels() {
    assert_routes(
        &[
            "alertname=VigilProbeStillDown",
            "severity=critical",
            "step=reminder",
            "probe=api",
        ],
        &["team-reminders"],
    );
    for alertname in [
        "VigilProbeLevelChanged",
        "VigilProbeRemoved",
        "VigilContainerStarted",
        "VigilContainerRestarting",
    ] {
        assert_routes(
            &[
                &format!("alertname={alertname}"),
                "severity=info",
                "probe=api",
                "container=c",
            ],
            &["team-changes"],
        );
    }
}

#[test]
fn route_burn_rates_to_the_ticket_queue_never_the_ladder() {
    assert_routes(
        &["alertname=VigilErrorBudgetBurnFast", "severity=warning", "probe=api"],
        &["ticket", "team"],
    );
    assert_routes(
        &["alertname=VigilErrorBudgetBurnFast", "severity=info", "probe=wiki"],
        &["ticket", "team-info"],
    );
    assert_routes(
        &["alertname=VigilErrorBudgetBurnSlow", "severity=warning", "probe=api"],
        &["ticket"],
    );
}

#[test]
fn route_remediate_to_vigil_receiver_only() {
    assert_routes(
        &[
            "alertname=VigilProbeDownRemediate",
            "severity=info",
            "remediate=true",
            "probe=gps-ingest",
            "status=down",
        ],
        &["vigil-receiver"],
    );
}

#[test]
fn route_watchdog_to_the_dead_mans_switch_only() {
    assert_routes(&["alertname=Watchdog", "severity=none"], &["deadmansswitch"]);
}

/// The routes' settings, as docs/alerting.md states them: no group timer is a step of the
/// ladder (every step's route has the root's short group_wait and group_interval; the steps are
/// the rules' alerts), each step's receivers and repeat, the page step's `continue`, the
/// maintenance mute and the business hours.
#[test]
fn routes_match_steps_and_intervals_the_docs_state() {
    let (root, routes) = test_copy::routes(&repo(ALERTMANAGER_YML));
    assert_eq!(root.group_wait.as_deref().map(millis), Some(5_000), "root group_wait");
    assert_eq!(
        root.group_interval.as_deref().map(millis),
        Some(15_000),
        "root group_interval"
    );
    let doc = test_copy::load(&repo(ALERTMANAGER_YML));
    let group_by: Vec<&str> = doc["route"]["group_by"]
        .as_vec()
        .expect("group_by")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for label in ["alertname", "step", "probe", "instance", "container"] {
        assert!(group_by.contains(&label), "groups are per {label}: {group_by:?}");
    }
    assert!(
        !group_by.contains(&"severity"),
        "a critical and its warning share a group"
    );

    let find = |receiver: &str, matcher: &str| -> (usize, &Route) {
        routes
            .iter()
            .enumerate()
            .find(|(_, r)| r.receiver == receiver && r.matchers.iter().any(|m| m == matcher))
            .unwrap_or_else(|| panic!("no route to {receiver} with {matcher}"))
    };
    // (receiver, matcher, repeat_interval, continue)
    for (receiver, matcher, repeat, continues) in [
        ("team", "step = \"team\"", "4h", false),
        ("pagerduty", "step = \"page\"", "1h", true),
        ("sms", "step = \"page\"", "4h", true),
        ("vigil-whatsapp", "step = \"page\"", "4h", false),
        ("phone", "step = \"phone\"", "2h", false),
        ("manager", "step = \"manager\"", "12h", false),
    ] {
        let (_, route) = find(receiver, matcher);
        assert_eq!(
            route.group_wait, None,
            "{receiver}: the root's group_wait, no timer of its own"
        );
        assert_eq!(route.group_interval, None, "{receiver}: the root's group_interval");
        assert_eq!(
            route.repeat_interval.as_deref(),
            Some(repeat),
            "{receiver}: repeat_interval"
        );
        assert_eq!(route.continues, continues, "{receiver}: continue");
        assert!(
            route.mute_time_intervals.iter().any(|v| v == "maintenance"),
            "{receiver} is muted in the maintenance window"
        );
    }
    // The page step's three receivers follow each other.
    let (pagerduty, _) = find("pagerduty", "step = \"page\"");
    let (sms, _) = find("sms", "step = \"page\"");
    let (whatsapp, _) = find("vigil-whatsapp", "step = \"page\"");
    assert_eq!((sms, whatsapp), (pagerduty + 1, pagerduty + 2));
    // The business tier in business hours only.
    let business = doc["route"]["routes"]
        .as_vec()
        .expect("routes")
        .iter()
        .find(|r| {
            r["matchers"]
                .as_vec()
                .is_some_and(|m| m.iter().any(|m| m.as_str() == Some("severity = \"business\"")))
        })
        .expect("a business route");
    assert_eq!(business["active_time_intervals"][0].as_str(), Some("business-hours"));
    // The Watchdog is never muted; the notices and reminders send without waiting.
    let (_, watchdog) = find("deadmansswitch", "alertname = \"Watchdog\"");
    assert!(watchdog.mute_time_intervals.is_empty());
    for receiver in ["team-reminders", "team-changes", "vigil-receiver"] {
        let route = routes.iter().find(|r| r.receiver == receiver).expect("route");
        assert_eq!(
            route.group_wait.as_deref().map(millis),
            Some(0),
            "{receiver} group_wait"
        );
    }
    // Notices and reminders have no resolved notices; every step's receivers do.
    let receivers = doc["receivers"].as_vec().expect("receivers");
    let sends_resolved = |name: &str| -> Vec<bool> {
        let receiver = receivers
            .iter()
            .find(|r| r["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no receiver {name}"));
        receiver
            .as_hash()
            .expect("mapping")
            .iter()
            .filter(|(k, _)| k.as_str().is_some_and(|k| k.ends_with("_configs")))
            .flat_map(|(_, configs)| configs.as_vec().expect("configs").iter())
            .map(|c| c["send_resolved"].as_bool().expect("send_resolved is explicit"))
            .collect()
    };
    for name in [
        "team",
        "pagerduty",
        "sms",
        "vigil-whatsapp",
        "phone",
        "manager",
        "ticket",
        "vigil-receiver",
    ] {
        assert!(sends_resolved(name).iter().all(|s| *s), "{name} sends resolved notices");
    }
    for name in ["team-reminders", "team-changes", "deadmansswitch"] {
        assert!(
            sends_resolved(name).iter().all(|s| !*s),
            "{name} sends no resolved notices"
        );
    }
}

/// Renders `template` of alertmanager/templates with the data in alertmanager/testdata/`data`.
fn render(template: &str, data: &str, kind: &str) -> String {
    let glob = format!(
        "--template.glob={}",
        path_str(&repo("alertmanager/templates")).to_owned() + "/*.tmpl"
    );
    let data = format!(
        "--template.data={}",
        path_str(&repo("alertmanager/testdata").join(data))
    );
    let text_arg = format!("--template.text={{{{ template \"{template}\" . }}}}");
    let kind = format!("--template.type={kind}");
    let output = amtool(&["template", "render", &glob, &data, &text_arg, &kind]);
    assert_success(&format!("rendering {template}"), &output);
    text(&output.stdout)
}

#[test]
fn every_template_the_config_uses_renders() {
    let config = read(ALERTMANAGER_YML);
    let used: BTreeSet<&str> = config
        .split("template \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(used.len() >= 6, "templates used by the config: {used:?}");
    for template in used {
        for data in ["firing.json", "mixed.json"] {
            let kind = if template.contains("html") { "html" } else { "text" };
            let out = render(template, data, kind);
            assert!(!out.trim().is_empty(), "{template} renders empty for {data}");
            assert!(
                !out.contains("<no value>"),
                "{template} renders <no value> for {data}:\n{out}"
            );
        }
    }
}

#[test]
fn message_names_probe_level_reason_start_downtime_and_links() {
    let out = render("vigil.text", "firing.json", "text");
    for expected in [
        "FIRING [critical] VigilProbeDown: Probe api-gateway is DOWN",
        "Target:  probe api-gateway (http)",
        "Level:   DOWN",
        "Reason:  timeout",
        "Since:   2024-05-04 03:02:01 UTC (down for 30s)",
        "Runbook: http://vigil:9430/runbook#vigilprobedown",
        "Graph:   http://prometheus:9090/graph?g0.expr=",
        "Acknowledge (silence): http://alertmanager:9093/#/silences/new?filter=%7Balertname%3D%22VigilProbeDown%22",
    ] {
        assert!(out.contains(expected), "missing `{expected}` in:\n{out}");
    }
    // The team step is the first notice: it says no "escalated".
    assert!(!out.contains("escalated"), "{out}");
    assert_eq!(
        render("vigil.title", "firing.json", "text").trim(),
        "[FIRING:1] VigilProbeDown api-gateway"
    );
}

#[test]
fn message_covers_steps_pods_remediation_and_resolved_downtime() {
    let out = render("vigil.text", "mixed.json", "text");
    for expected in [
        "FIRING [critical] VigilProbeDown (escalated: page): Data of orders is stale",
        "Reason:  stale",
        "Target:  pod gps/listener-7d9f-abcde, container listener",
        "Reason:  CrashLoopBackOff",
        "Remediation: requested from vigil's receiver",
        // A resolved probe: RESOLVED, with how long it was down.
        "RESOLVED [critical] VigilProbeDown (escalated: page): Probe billing is DOWN",
        "Resolved: 2024-05-04 03:05:00 UTC, after 19m 45s down",
        // A container back up: RESTORED, with how long it was down.
        "RESTORED [critical] VigilContainerStopped (escalated: page)",
        "Target:  container gps-listener (project gps, service listener)",
        "Level:   recovered",
        "Resolved: 2024-05-04 03:10:00 UTC, after 24m 45s down",
    ] {
        assert!(out.contains(expected), "missing `{expected}` in:\n{out}");
    }
    // Firing alerts come before resolved ones.
    assert!(out.find("FIRING").expect("firing") < out.find("RESOLVED").expect("resolved"));
    let html = render("vigil.email.html", "mixed.json", "html");
    for expected in ["(after 19m 45s down)", "RESTORED", "(down for 15m 0s)"] {
        assert!(html.contains(expected), "missing `{expected}` in:\n{html}");
    }
    let sms = render("vigil.sms", "mixed.json", "text");
    for expected in [
        "FIRING probe orders (sql): Data of orders is stale (down for 15m 0s)",
        "RESOLVED probe billing (http): Probe billing is DOWN (after 19m 45s down)",
        "RESTORED container gps-listener (project gps, service listener): Container gps-listener is exited (after 24m 45s down)",
    ] {
        assert!(sms.contains(expected), "missing `{expected}` in:\n{sms}");
    }
}

// ---------------------------------------------------------------------------------------------
// The ladder against a real Alertmanager
// ---------------------------------------------------------------------------------------------

/// Durations of the real routes are divided by this, and so are the rules' waits and
/// Prometheus' timings the test plays: 1h of escalation takes 12s.
const TIME_SCALE: f64 = 300.0;

/// A wait of the real stack, in seconds, as the test plays it.
fn scaled(seconds: f64) -> f64 {
    seconds / TIME_SCALE
}

/// How late after its alert arrived a notification may come: the scaled group_wait and
/// group_interval (16ms, 50ms), plus a busy test machine.
const SLACK: f64 = 2.0;

/// One alert as the test's stand-in for Prometheus sends it: firing from `fire_at` to
/// `resolve_at` (seconds after the start), from two Prometheus replicas (an HA pair evaluates
/// on its own, so their `startsAt` differ a little).
#[derive(Clone)]
struct Played {
    labels: Vec<(&'static str, String)>,
    annotations: Vec<(&'static str, String)>,
    fire_at: f64,
    resolve_at: Option<f64>,
}

impl Played {
    fn new(labels: &[(&'static str, &str)], fire_at: f64, resolve_at: Option<f64>) -> Played {
        Played {
            labels: labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            annotations: vec![("summary", "played by tests/it/alerting.rs".to_string())],
            fire_at,
            resolve_at,
        }
    }

    fn annotation(mut self, name: &'static str, value: &str) -> Played {
        self.annotations.push((name, value.to_string()));
        self
    }

    fn same_alert(&self, other: &Played) -> bool {
        self.labels == other.labels
    }
}

/// The JSON of one alert for Alertmanager's API.
fn alert_json(played: &Played, starts: SystemTime, ends: SystemTime) -> String {
    let object = |pairs: &[(&'static str, String)]| -> String {
        let members: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("\"{k}\":\"{}\"", v.replace('"', "\\\"")))
            .collect();
        format!("{{{}}}", members.join(","))
    };
    format!(
        "{{\"labels\":{},\"annotations\":{},\"startsAt\":\"{}\",\"endsAt\":\"{}\",\"generatorURL\":\"http://prometheus:9090/graph\"}}",
        object(&played.labels),
        object(&played.annotations),
        rfc3339(starts),
        rfc3339(ends)
    )
}

/// Plays `alerts` against Alertmanager on `port` as Prometheus sends them, until `end` seconds
/// after `start`: a firing alert from its time on, re-sent every resend delay (1m, scaled), with
/// an `endsAt` in the future; from its resolution on, the resolved alert (its `endsAt` the
/// resolution) re-sent for 15 minutes (scaled), or until the same alert fires again (Prometheus
/// keeps one alert per label set: a new incident replaces the resolved one).
fn play(port: u16, start: SystemTime, alerts: &[Played], end: f64) {
    let at = |seconds: f64| start + Duration::from_secs_f64(seconds);
    let resend = scaled(60.0);
    let retention = scaled(15.0 * 60.0);
    let mut last_sent = vec![f64::NEG_INFINITY; alerts.len()];
    loop {
        let now = start.elapsed().unwrap_or(Duration::ZERO).as_secs_f64();
        if now > end {
            break;
        }
        let mut batch = Vec::new();
        for (i, alert) in alerts.iter().enumerate() {
            if now < alert.fire_at {
                continue;
            }
            let firing = alert.resolve_at.is_none_or(|r| now < r);
            let replaced = alerts
                .iter()
                .any(|other| other.same_alert(alert) && other.fire_at > alert.fire_at && now >= other.fire_at);
            let retained = alert.resolve_at.is_some_and(|r| now < r + retention) && !replaced;
            if !(firing || retained) {
                continue;
            }
            // Sent at once on a change (firing, resolved), else every resend delay.
            let changed =
                last_sent[i] < alert.fire_at || alert.resolve_at.is_some_and(|r| last_sent[i] < r && now >= r);
            if !changed && now - last_sent[i] < resend {
                continue;
            }
            last_sent[i] = now;
            // Prometheus' endsAt for a firing alert is 4 resend delays ahead; 30s here, so a
            // slow test machine cannot let Alertmanager expire one.
            let ends = if firing {
                at(now + 30.0)
            } else {
                at(alert.resolve_at.expect("resolved"))
            };
            // Two Prometheus replicas: the same alert, startsAt 20ms apart.
            batch.push(alert_json(alert, at(alert.fire_at), ends));
            batch.push(alert_json(alert, at(alert.fire_at + 0.02), ends));
        }
        if !batch.is_empty() {
            let (status, body) =
                http(port, "POST", "/api/v2/alerts", &format!("[{}]", batch.join(","))).expect("post alerts");
            assert_eq!(status, 200, "posting alerts: {body}");
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// The deliveries of (receiver, alertname, probe), in order: (status, seconds after start).
fn sequence(
    deliveries: &[Delivery],
    start: SystemTime,
    receiver: &str,
    alertname: &str,
    probe: &str,
) -> Vec<(String, f64)> {
    deliveries
        .iter()
        .filter(|d| d.receiver == receiver && d.label("alertname") == alertname && d.label("probe") == probe)
        .map(|d| {
            (
                d.status.clone(),
                d.at.duration_since(start).unwrap_or(Duration::ZERO).as_secs_f64(),
            )
        })
        .collect()
}

/// Alertmanager only routes: the ladder is the rules' step alerts, played at the times
/// Prometheus would send them (the promtool tests prove those times). This proves, with the
/// shipped routes and inhibition rules against a real Alertmanager 0.25:
/// - each step notifies its receivers when its alert arrives and not before, once per incident
///   (two Prometheus replicas sending each alert), also for a second incident soon after a first,
///   while Prometheus still re-sends the first one's resolved alerts;
/// - resolved notices reach exactly the receivers that were notified, once, with the downtime;
/// - VigilProbeRemoved mutes the resolved notice of a removed probe (it outlasts Prometheus'
///   re-sends); a host DOWN mutes its services; a critical alert mutes the warning of the same
///   alert and probe, and the team step mutes the probe's slowness and budget burn;
/// - reminders each notify once and never resolve; remediation requests reach vigil's receiver
///   only; the Watchdog the dead man's switch only.
#[test]
fn ladder_escalates_in_time_and_stops_for_resolved_groups_in_alertmanager() {
    let _turn = crate::common::exclusive();
    let sink = Recorder::start();
    let dir = TempDir::new("alertmanager");
    let config = dir.file(
        "alertmanager.yml",
        &test_copy::alertmanager_config(&repo(ALERTMANAGER_YML), TIME_SCALE as u64, &sink.url),
    );
    let alertmanager = stack::alertmanager(&config, &dir.0);

    let wait = |step: &str| {
        scaled(
            LADDER
                .iter()
                .find(|(s, t, _)| *s == "critical" && *t == step)
                .expect("step")
                .2 as f64,
        )
    };
    let down = |probe: &str, step: &str| -> Vec<(&'static str, String)> {
        vec![
            ("alertname", "VigilProbeDown".to_string()),
            ("severity", "critical".to_string()),
            ("step", step.to_string()),
            ("probe", probe.to_string()),
            ("kind", "http".to_string()),
            ("status", "down".to_string()),
        ]
    };
    // An incident of `probe` from `began` to `fixed`: one alert per step it lasts.
    let incident = |probe: &str, began: f64, fixed: f64, extra: &[(&'static str, &str)]| -> Vec<Played> {
        ["team", "page", "phone", "manager"]
            .into_iter()
            .filter(|step| began + wait(step) < fixed)
            .map(|step| {
                let mut played = Played::new(&[], began + wait(step), Some(fixed));
                played.labels = down(probe, step);
                played.labels.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
                played.annotation("down_for", &format!("{:.0}s", (fixed - began) * TIME_SCALE))
            })
            .collect()
    };

    // api: DOWN from 0 to 13 (past the manager's 12), and again from 14 to 27: the second
    //   incident begins while Prometheus re-sends the first one's resolved alerts (until 16).
    // billing: DOWN from 0 to 4.5, between the page step (3) and the phone (6).
    // db1: a host probe DOWN from 0 to 8; orders, a service on it, alerting meanwhile.
    // gone: DOWN from 0, removed from vigil's config at 5 (its alerts resolve; VigilProbeRemoved
    //   fires for 20m + 5m, scaled: until 10; the resolved alerts are re-sent until 8).
    let (api_1, api_2) = ((0.0, 13.0), (14.0, 27.0));
    let billing = (0.0, 4.5);
    let mut alerts = Vec::new();
    alerts.extend(incident("api", api_1.0, api_1.1, &[]));
    alerts.extend(incident("api", api_2.0, api_2.1, &[]));
    alerts.extend(incident("billing", billing.0, billing.1, &[]));
    alerts.extend(incident("db1", 0.0, 8.0, &[("host", "db1"), ("role", "host")]));
    alerts.extend(incident("orders", 0.0, 8.0, &[("host", "db1")]));
    alerts.extend(incident("gone", 0.0, 5.0, &[]));
    let removed_until = 5.0 + scaled(25.0 * 60.0);
    alerts.push(Played::new(
        &[
            ("alertname", "VigilProbeRemoved"),
            ("severity", "info"),
            ("probe", "gone"),
        ],
        5.0,
        Some(removed_until),
    ));
    // Beside the ladder: api's slowness and budget burn while its team step fires (muted),
    // flaky's budget burn (the ticket queue and the team), archive's slow burn (ticket only);
    // a critical certificate alert and its warning (muted), a warning alone; a service on db1
    // DEGRADED while the host is DOWN (muted); two reminders; a remediation request; the
    // Watchdog.
    for (labels, fire_at, resolve_at) in [
        (
            vec![
                ("alertname", "VigilProbeSlow"),
                ("severity", "warning"),
                ("probe", "api"),
            ],
            1.0,
            Some(12.0),
        ),
        (
            vec![
                ("alertname", "VigilErrorBudgetBurnFast"),
                ("severity", "warning"),
                ("probe", "api"),
            ],
            1.0,
            Some(12.0),
        ),
        (
            vec![
                ("alertname", "VigilErrorBudgetBurnFast"),
                ("severity", "warning"),
                ("probe", "flaky"),
            ],
            1.0,
            Some(6.0),
        ),
        (
            vec![
                ("alertname", "VigilErrorBudgetBurnSlow"),
                ("severity", "warning"),
                ("probe", "archive"),
            ],
            1.0,
            Some(6.0),
        ),
        (
            vec![
                ("alertname", "VigilCertificateExpiry"),
                ("severity", "critical"),
                ("probe", "payments"),
            ],
            0.5,
            Some(10.0),
        ),
        (
            vec![
                ("alertname", "VigilCertificateExpiry"),
                ("severity", "warning"),
                ("probe", "payments"),
            ],
            0.5,
            Some(10.0),
        ),
        (
            vec![
                ("alertname", "VigilCertificateExpiry"),
                ("severity", "warning"),
                ("probe", "shop-web"),
            ],
            0.5,
            Some(10.0),
        ),
        (
            vec![
                ("alertname", "VigilProbeDegraded"),
                ("severity", "warning"),
                ("step", "team"),
                ("probe", "cache"),
                ("host", "db1"),
            ],
            1.0,
            Some(7.0),
        ),
        (
            vec![
                ("alertname", "VigilProbeStillDown"),
                ("severity", "critical"),
                ("step", "reminder"),
                ("probe", "api"),
                ("status", "down"),
            ],
            4.0,
            Some(4.3),
        ),
        (
            vec![
                ("alertname", "VigilProbeDownRemediate"),
                ("severity", "info"),
                ("remediate", "true"),
                ("probe", "gps-listener"),
                ("status", "down"),
            ],
            0.5,
            Some(2.0),
        ),
        (vec![("alertname", "Watchdog"), ("severity", "none")], 0.0, None),
    ] {
        alerts.push(Played::new(&labels, fire_at, resolve_at));
    }
    // The second reminder: the same alert, a new one in time.
    alerts.push(Played::new(
        &[
            ("alertname", "VigilProbeStillDown"),
            ("severity", "critical"),
            ("step", "reminder"),
            ("probe", "api"),
            ("status", "down"),
        ],
        8.0,
        Some(8.3),
    ));

    let start = SystemTime::now();
    let end = api_2.1 + SLACK + 0.5;
    play(alertmanager.port, start, &alerts, end);

    let deliveries = sink.deliveries();
    let summary = webhooks::summary(&deliveries, start);
    let seq = |receiver: &str, alertname: &str, probe: &str| sequence(&deliveries, start, receiver, alertname, probe);

    // Every step of every incident: exactly one firing notice, when its alert arrived (not
    // before, within SLACK), then exactly one resolved notice after the fix; steps an incident
    // did not last: nothing at all, neither firing nor resolved.
    for (probe, incidents) in [("api", vec![api_1, api_2]), ("billing", vec![billing])] {
        for step in ["team", "page", "phone", "manager"] {
            let reached: Vec<(f64, f64)> = incidents.iter().copied().filter(|(b, f)| b + wait(step) < *f).collect();
            for receiver in step_receivers(step) {
                let got = seq(receiver, "VigilProbeDown", probe);
                let statuses: Vec<&str> = got.iter().map(|(s, _)| s.as_str()).collect();
                let expected: Vec<&str> = reached.iter().flat_map(|_| ["firing", "resolved"]).collect();
                assert_eq!(statuses, expected, "{receiver} ({step}) about {probe}\n{summary}");
                for (i, (began, fixed)) in reached.iter().enumerate() {
                    let (fired, resolved) = (got[2 * i].1, got[2 * i + 1].1);
                    let due = began + wait(step);
                    assert!(
                        fired >= due && fired <= due + SLACK,
                        "{receiver} ({step}) heard of {probe}'s incident {i} at {fired:.2}s, its step is due at {due:.2}s\n{summary}"
                    );
                    assert!(
                        resolved >= *fixed && resolved <= fixed + SLACK,
                        "{receiver} heard {probe}'s incident {i} resolved at {resolved:.2}s, fixed at {fixed:.2}s\n{summary}"
                    );
                }
            }
        }
    }
    // The resolved notice says how long it was down.
    let resolved = deliveries
        .iter()
        .find(|d| d.receiver == "manager" && d.label("probe") == "api" && d.status == "resolved")
        .unwrap_or_else(|| panic!("no resolved notice to the manager\n{summary}"));
    assert_eq!(
        resolved.annotations.get("down_for").map(String::as_str),
        Some("3900s"),
        "{resolved:?}"
    );

    // Inhibition. The host db1 reaches the team and the page step; its service orders, and a
    // DEGRADED service, reach nobody, firing or resolved.
    assert_eq!(seq("team", "VigilProbeDown", "db1").len(), 2, "{summary}");
    assert_eq!(seq("pagerduty", "VigilProbeDown", "db1").len(), 2, "{summary}");
    for probe in ["orders", "cache"] {
        assert!(
            !deliveries.iter().any(|d| d.label("probe") == probe),
            "a service of a DOWN host was notified\n{summary}"
        );
    }
    // The removed probe: its team step was notified firing, never resolved; the removal is a
    // notice of its own.
    let gone = seq("team", "VigilProbeDown", "gone");
    assert_eq!(
        gone.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
        ["firing"],
        "a removed probe got a (false) recovery notice\n{summary}"
    );
    let removal: Vec<(String, f64)> = seq("team-changes", "VigilProbeRemoved", "gone");
    assert_eq!(removal.len(), 1, "{summary}");
    assert_eq!(removal[0].0, "firing");
    // The team step mutes the probe's slowness and budget burn; the budget burn of a probe
    // with no incident reaches the ticket queue and the team, the slow burn the tickets only.
    for alertname in ["VigilProbeSlow", "VigilErrorBudgetBurnFast"] {
        assert!(
            !deliveries
                .iter()
                .any(|d| d.label("alertname") == alertname && d.label("probe") == "api"),
            "{alertname} of a probe on the ladder was sent\n{summary}"
        );
    }
    for receiver in ["ticket", "team"] {
        let got = seq(receiver, "VigilErrorBudgetBurnFast", "flaky");
        assert_eq!(
            got.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
            ["firing", "resolved"],
            "{receiver}\n{summary}"
        );
    }
    let slow: BTreeSet<&str> = deliveries
        .iter()
        .filter(|d| d.label("alertname") == "VigilErrorBudgetBurnSlow")
        .map(|d| d.receiver.as_str())
        .collect();
    assert_eq!(slow, BTreeSet::from(["ticket"]), "{summary}");
    // A critical alert mutes the warning of the same alert and probe: payments pages once and
    // reaches the team once (and their resolved notices), its warning nobody; shop-web's
    // warning reaches the team.
    let payments: Vec<(&str, &str, &str)> = deliveries
        .iter()
        .filter(|d| d.label("alertname") == "VigilCertificateExpiry" && d.label("probe") == "payments")
        .map(|d| (d.receiver.as_str(), d.label("severity"), d.status.as_str()))
        .collect();
    assert_eq!(
        payments.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            ("pagerduty", "critical", "firing"),
            ("pagerduty", "critical", "resolved"),
            ("team", "critical", "firing"),
            ("team", "critical", "resolved"),
        ]),
        "{summary}"
    );
    assert_eq!(payments.len(), 4, "{summary}");
    assert_eq!(seq("team", "VigilCertificateExpiry", "shop-web").len(), 2, "{summary}");

    // Two reminders, two messages, no resolved notice, nobody else.
    let reminders: Vec<(&str, &str)> = deliveries
        .iter()
        .filter(|d| d.label("alertname") == "VigilProbeStillDown")
        .map(|d| (d.receiver.as_str(), d.status.as_str()))
        .collect();
    assert_eq!(
        reminders,
        [("team-reminders", "firing"), ("team-reminders", "firing")],
        "{summary}"
    );
    // The remediation request: vigil's receiver only, firing then resolved (which cancels a
    // pending action).
    let remediation: BTreeSet<(&str, &str)> = deliveries
        .iter()
        .filter(|d| d.label("alertname") == "VigilProbeDownRemediate")
        .map(|d| (d.receiver.as_str(), d.status.as_str()))
        .collect();
    assert_eq!(
        remediation,
        BTreeSet::from([("vigil-receiver", "firing"), ("vigil-receiver", "resolved")]),
        "{summary}"
    );
    // The Watchdog: the dead man's switch only, again and again, never resolved.
    let watchdog: Vec<&Delivery> = deliveries
        .iter()
        .filter(|d| d.label("alertname") == "Watchdog")
        .collect();
    assert!(watchdog.len() >= 3, "{summary}");
    assert!(
        watchdog
            .iter()
            .all(|d| d.receiver == "deadmansswitch" && d.status == "firing"),
        "{summary}"
    );
    drop(alertmanager);
}

// ---------------------------------------------------------------------------------------------
// Grafana dashboards
// ---------------------------------------------------------------------------------------------

#[test]
fn json_parser_accepts_json_and_refuses_the_rest() {
    let value = Json::parse(r#" {"a": [1, -2.5e3, true, null, "\u00e9\ud83d\ude00\n"], "b": {}} "#).expect("valid");
    assert_eq!(value.get("a").and_then(Json::as_array).map(Vec::len), Some(5));
    assert_eq!(
        value.get("a").and_then(Json::as_array).and_then(|a| a[4].as_str()),
        Some("é😀\n")
    );
    for bad in [
        "{",
        "[1,]",
        "{\"a\" 1}",
        "01",
        "\"tab\there\"",
        "{\"a\":1,\"a\":2}",
        "[] []",
        "nul",
    ] {
        assert!(Json::parse(bad).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn dashboards_are_valid_grafana_json() {
    let mut uids = BTreeSet::new();
    for (name, dashboard) in dashboards() {
        let uid = dashboard
            .get("uid")
            .and_then(Json::as_str)
            .unwrap_or_else(|| panic!("{name}: no uid"));
        assert!(uids.insert(uid.to_string()), "{name}: uid {uid} used twice");
        assert!(
            dashboard.get("title").and_then(Json::as_str).is_some(),
            "{name}: no title"
        );
        match dashboard.get("schemaVersion") {
            Some(Json::Number(v)) => assert!((36.0..=41.0).contains(v), "{name}: schemaVersion {v}"),
            other => panic!("{name}: schemaVersion {other:?}"),
        }
        let variables: Vec<&Json> = dashboard
            .get("templating")
            .and_then(|t| t.get("list"))
            .and_then(Json::as_array)
            .unwrap_or_else(|| panic!("{name}: no templating.list"))
            .iter()
            .collect();
        let defined: BTreeSet<&str> = variables
            .iter()
            .filter_map(|v| v.get("name").and_then(Json::as_str))
            .collect();
        assert!(
            variables
                .iter()
                .any(|v| v.get("name").and_then(Json::as_str) == Some("datasource")
                    && v.get("type").and_then(Json::as_str) == Some("datasource")),
            "{name}: no `datasource` variable of type datasource"
        );

        let mut panel_ids = BTreeSet::new();
        let mut exprs = 0;
        dashboard.walk(&mut |key, value| match key {
            // No hard-coded data source: every reference goes through ${datasource}.
            "datasource" => {
                if let Some(uid) = value.get("uid").and_then(Json::as_str) {
                    assert!(
                        uid == "${datasource}" || uid == "-- Grafana --",
                        "{name}: hard-coded data source uid {uid}"
                    );
                }
            }
            "panels" => {
                for panel in value.as_array().expect("panels is an array") {
                    match panel.get("id") {
                        Some(Json::Number(id)) => assert!(panel_ids.insert(*id as i64), "{name}: panel id {id} twice"),
                        other => panic!("{name}: panel without a numeric id: {other:?}"),
                    }
                    assert!(panel.get("gridPos").is_some(), "{name}: panel without gridPos");
                }
            }
            "expr" => {
                let expr = value.as_str().expect("expr is a string");
                exprs += 1;
                assert!(!expr.contains("instance="), "{name}: hard-coded instance in {expr}");
                for variable in variables_in(expr) {
                    assert!(
                        variable.starts_with("__") || defined.contains(variable.as_str()),
                        "{name}: ${variable} is not a variable of the dashboard: {expr}"
                    );
                }
                // Alerts that no longer exist.
                for gone in [
                    "VigilCertificateExpiringSoon",
                    "VigilCertificateExpiryCritical",
                    "VigilDataStaleRemediate",
                ] {
                    assert!(!expr.contains(gone), "{name}: {gone} is no alert any more: {expr}");
                }
            }
            _ => {}
        });
        assert!(exprs > 0, "{name}: no queries");
    }
    for uid in [
        "vigil-overview",
        "vigil-probe",
        "vigil-freshness",
        "vigil-containers",
        "vigil-kubernetes",
        "vigil-alerts",
    ] {
        assert!(uids.contains(uid), "no dashboard with uid {uid}");
    }
}

/// A value for Grafana's variable `name` that Prometheus can parse: the built-in intervals as
/// Grafana would set them, `x` for the dashboards' own variables.
fn placeholder(name: &str) -> String {
    let intervals = Intervals {
        interval: "1m",
        rate_interval: "5m",
        range: "1h",
    };
    intervals.value(name).unwrap_or_else(|| "x".to_string())
}

#[test]
fn dashboard_queries_are_valid_promql() {
    // Every panel query becomes a recording rule, so promtool parses it as Prometheus would;
    // so does the series selector of every `label_values(selector, label)` variable query.
    let mut rules = String::from("groups:\n  - name: dashboard-queries\n    rules:\n");
    let mut count = 0;
    for (name, dashboard) in dashboards() {
        dashboard.walk(&mut |key, value| {
            let query = match (key, value.as_str()) {
                ("expr", Some(expr)) => Some(expr),
                ("query", Some(query)) => query
                    .strip_prefix("label_values(")
                    .and_then(|args| args.rsplit_once(','))
                    .map(|(selector, _label)| selector),
                _ => None,
            };
            if let Some(query) = query {
                let expr = substitute(query, &placeholder);
                rules += &format!("      # {name}\n      - record: vigil_dashboard_query_{count}\n        expr: |-\n");
                for line in expr.lines() {
                    rules += &format!("          {line}\n");
                }
                count += 1;
            }
        });
    }
    assert!(count > 50, "only {count} dashboard queries found");
    let dir = TempDir::new("dashboards");
    let file = dir.file("dashboard-queries.yml", &rules);
    let output = promtool(&["check", "rules", path_str(&file)]);
    assert_success(
        &format!("promtool check rules on the dashboard queries:\n{rules}"),
        &output,
    );
    assert!(
        text(&output.stdout).contains(&format!("{count} rules found")),
        "{}",
        text(&output.stdout)
    );
}

#[test]
fn substitute_replaces_grafana_variables() {
    assert_eq!(
        substitute(
            r#"rate(x{probe=~"$probe", ds="${datasource}"}[$__rate_interval]) / ${__range_s} [$__range]"#,
            &placeholder
        ),
        r#"rate(x{probe=~"x", ds="x"}[5m]) / 3600 [1h]"#
    );
    assert_eq!(
        variables_in("a{p=\"$probe\"}[${__range}] ${datasource:queryparam}"),
        ["probe", "__range", "datasource"]
    );
}

/// What two vigil replicas (instances a and b, an HA pair) both publish, for 30 minutes at 15s:
/// probe api DOWN from 10m (failing one run in one, 4 a minute), probe web UP, freshness source
/// orders stale; containers gps-listener (exited, unhealthy) and api-c (running); a Kubernetes
/// namespace with one pod not ready and in CrashLoopBackOff and one unavailable replica in each
/// kind of workload.
const REPLICATED: &[(&str, &str)] = &[
    ("up", "1x120"),
    (
        "vigil_probe_status{probe=\"api\", kind=\"http\", team=\"platform\", status=\"down\"}",
        "0x39 1x81",
    ),
    (
        "vigil_probe_status{probe=\"api\", kind=\"http\", team=\"platform\", status=\"up\"}",
        "1x39 0x81",
    ),
    (
        "vigil_probe_status{probe=\"api\", kind=\"http\", team=\"platform\", status=\"degraded\"}",
        "0x120",
    ),
    (
        "vigil_probe_level_since_timestamp_seconds{probe=\"api\", kind=\"http\", team=\"platform\"}",
        "0x39 600x81",
    ),
    (
        "vigil_probe_failures_total{probe=\"api\", kind=\"http\", team=\"platform\"}",
        "0x39 1+1x80",
    ),
    (
        "vigil_probe_failures_by_reason_total{probe=\"api\", kind=\"http\", team=\"platform\", reason=\"timeout\"}",
        "_x39 1+1x80",
    ),
    (
        "vigil_probe_retries_total{probe=\"api\", kind=\"http\", team=\"platform\"}",
        "0x120",
    ),
    (
        "vigil_probe_duration_seconds_sum{probe=\"api\", kind=\"http\", team=\"platform\"}",
        "0+0.5x120",
    ),
    (
        "vigil_probe_duration_seconds_count{probe=\"api\", kind=\"http\", team=\"platform\"}",
        "0+1x120",
    ),
    (
        "vigil_probe_duration_seconds_bucket{probe=\"api\", kind=\"http\", team=\"platform\", le=\"5.0\"}",
        "0+1x120",
    ),
    (
        "vigil_probe_duration_seconds_bucket{probe=\"api\", kind=\"http\", team=\"platform\", le=\"1.0\"}",
        "0+1x120",
    ),
    (
        "vigil_probe_duration_seconds_bucket{probe=\"api\", kind=\"http\", team=\"platform\", le=\"+Inf\"}",
        "0+1x120",
    ),
    (
        "vigil_probe_last_success_timestamp_seconds{probe=\"api\", kind=\"http\", team=\"platform\"}",
        "0+15x39 585x81",
    ),
    (
        "vigil_probe_consecutive_failures{probe=\"api\", kind=\"http\", team=\"platform\"}",
        "0x39 1+1x80",
    ),
    (
        "vigil_probe_http_status_code{probe=\"api\", kind=\"http\", team=\"platform\"}",
        "200x39 500x81",
    ),
    (
        "vigil_probe_http_duration_seconds{probe=\"api\", kind=\"http\", team=\"platform\", phase=\"connect\"}",
        "0.1x120",
    ),
    (
        "vigil_probe_tls_cert_expiry_timestamp_seconds{probe=\"api\", kind=\"http\", team=\"platform\"}",
        "2000000x120",
    ),
    (
        "vigil_probe_info{probe=\"api\", kind=\"http\", team=\"platform\", target=\"https://api/\", degraded_after=\"1.0\", down_after=\"5.0\"}",
        "1x120",
    ),
    (
        "vigil_probe_status{probe=\"web\", kind=\"http\", status=\"up\"}",
        "1x120",
    ),
    (
        "vigil_probe_status{probe=\"web\", kind=\"http\", status=\"down\"}",
        "0x120",
    ),
    (
        "vigil_probe_status{probe=\"web\", kind=\"http\", status=\"degraded\"}",
        "0x120",
    ),
    (
        "vigil_probe_level_since_timestamp_seconds{probe=\"web\", kind=\"http\"}",
        "0x120",
    ),
    ("vigil_probe_failures_total{probe=\"web\", kind=\"http\"}", "0x120"),
    (
        "vigil_probe_duration_seconds_sum{probe=\"web\", kind=\"http\"}",
        "0+0.1x120",
    ),
    (
        "vigil_probe_duration_seconds_count{probe=\"web\", kind=\"http\"}",
        "0+1x120",
    ),
    (
        "vigil_probe_last_success_timestamp_seconds{probe=\"web\", kind=\"http\"}",
        "0+15x120",
    ),
    (
        "vigil_probe_info{probe=\"web\", kind=\"http\", target=\"https://web/\"}",
        "1x120",
    ),
    (
        "vigil_freshness_newest_timestamp_seconds{probe=\"orders\", kind=\"sql\"}",
        "0x120",
    ),
    (
        "vigil_freshness_threshold_seconds{probe=\"orders\", kind=\"sql\"}",
        "300x120",
    ),
    (
        "vigil_freshness_warn_threshold_seconds{probe=\"orders\", kind=\"sql\"}",
        "120x120",
    ),
    (
        "vigil_container_state{container=\"gps-listener\", project=\"gps\", service=\"listener\", state=\"exited\"}",
        "1x120",
    ),
    (
        "vigil_container_state{container=\"gps-listener\", project=\"gps\", service=\"listener\", state=\"running\"}",
        "0x120",
    ),
    (
        "vigil_container_health_status{container=\"gps-listener\", project=\"gps\", service=\"listener\", status=\"unhealthy\"}",
        "1x120",
    ),
    (
        "vigil_container_health_status{container=\"gps-listener\", project=\"gps\", service=\"listener\", status=\"healthy\"}",
        "0x120",
    ),
    (
        "vigil_container_restarts_total{container=\"gps-listener\", project=\"gps\", service=\"listener\"}",
        "0+1x120",
    ),
    (
        "vigil_container_last_exit_code{container=\"gps-listener\", project=\"gps\", service=\"listener\"}",
        "137x120",
    ),
    (
        "vigil_container_oom_killed{container=\"gps-listener\", project=\"gps\", service=\"listener\"}",
        "1x120",
    ),
    (
        "vigil_container_started_timestamp_seconds{container=\"gps-listener\", project=\"gps\", service=\"listener\"}",
        "0x120",
    ),
    (
        "vigil_container_finished_timestamp_seconds{container=\"gps-listener\", project=\"gps\", service=\"listener\"}",
        "600x120",
    ),
    (
        "vigil_container_state{container=\"api-c\", project=\"shop\", service=\"api\", state=\"running\"}",
        "1x120",
    ),
    (
        "vigil_container_state{container=\"api-c\", project=\"shop\", service=\"api\", state=\"exited\"}",
        "0x120",
    ),
    (
        "vigil_container_health_status{container=\"api-c\", project=\"shop\", service=\"api\", status=\"healthy\"}",
        "1x120",
    ),
    (
        "vigil_container_health_status{container=\"api-c\", project=\"shop\", service=\"api\", status=\"unhealthy\"}",
        "0x120",
    ),
    (
        "vigil_container_restarts_total{container=\"api-c\", project=\"shop\", service=\"api\"}",
        "0x120",
    ),
    (
        "vigil_container_last_exit_code{container=\"api-c\", project=\"shop\", service=\"api\"}",
        "0x120",
    ),
    (
        "vigil_container_oom_killed{container=\"api-c\", project=\"shop\", service=\"api\"}",
        "0x120",
    ),
    (
        "vigil_container_started_timestamp_seconds{container=\"api-c\", project=\"shop\", service=\"api\"}",
        "0x120",
    ),
    ("vigil_docker_up", "1x120"),
    ("vigil_kube_up", "1x120"),
    ("vigil_config_last_reload_successful", "1x120"),
    (
        "vigil_kube_pod_status_ready{namespace=\"gps\", pod=\"p1\", condition=\"true\"}",
        "0x120",
    ),
    (
        "vigil_kube_pod_status_ready{namespace=\"gps\", pod=\"p2\", condition=\"true\"}",
        "1x120",
    ),
    (
        "vigil_kube_pod_container_status_waiting_reason{namespace=\"gps\", pod=\"p1\", container=\"c\", reason=\"CrashLoopBackOff\"}",
        "1x120",
    ),
    (
        "vigil_kube_pod_container_status_restarts_total{namespace=\"gps\", pod=\"p1\", container=\"c\"}",
        "0+1x120",
    ),
    (
        "vigil_kube_pod_container_status_last_terminated_reason{namespace=\"gps\", pod=\"p1\", container=\"c\", reason=\"OOMKilled\"}",
        "1x120",
    ),
    (
        "vigil_kube_deployment_status_replicas_unavailable{namespace=\"gps\", deployment=\"d\"}",
        "1x120",
    ),
    (
        "vigil_kube_statefulset_replicas{namespace=\"gps\", statefulset=\"s\"}",
        "3x120",
    ),
    (
        "vigil_kube_statefulset_status_replicas_ready{namespace=\"gps\", statefulset=\"s\"}",
        "2x120",
    ),
    (
        "vigil_kube_daemonset_status_number_unavailable{namespace=\"gps\", daemonset=\"ds\"}",
        "1x120",
    ),
];

/// (dashboard, panel title, query index, the sum of its result for one probe or container):
/// counts and per-interval totals that a replica must not double.
const COUNTED_ONCE: &[(&str, &str, usize, f64)] = &[
    ("vigil-overview.json", "Probes DOWN", 0, 1.0),
    ("vigil-overview.json", "Probes DEGRADED", 0, 0.0),
    ("vigil-overview.json", "Probes UP", 0, 1.0),
    ("vigil-overview.json", "Stale sources", 0, 1.0),
    ("vigil-overview.json", "Containers not running", 0, 1.0),
    ("vigil-overview.json", "Unhealthy containers", 0, 1.0),
    ("vigil-overview.json", "Pods not ready", 0, 1.0),
    ("vigil-overview.json", "Failed runs by probe", 0, 4.0),
    ("vigil-probe.json", "Failed runs by reason", 0, 4.0),
    ("vigil-probe.json", "Runs and retries", 0, 4.0),
    ("vigil-probe.json", "Runs and retries", 1, 0.0),
    ("vigil-containers.json", "Running", 0, 1.0),
    ("vigil-containers.json", "Not running", 0, 1.0),
    ("vigil-containers.json", "Unhealthy", 0, 1.0),
    ("vigil-containers.json", "Restarts", 0, 4.0),
    ("vigil-containers.json", "Containers by state", 0, 2.0),
    ("vigil-containers.json", "Health", 0, 2.0),
    ("vigil-kubernetes.json", "Pods not ready", 0, 1.0),
    ("vigil-kubernetes.json", "Containers in CrashLoopBackOff", 0, 1.0),
    ("vigil-kubernetes.json", "Unavailable replicas", 0, 3.0),
    ("vigil-kubernetes.json", "Container restarts", 0, 4.0),
    ("vigil-kubernetes.json", "Waiting containers by reason", 0, 1.0),
];

/// "Two replicas double everything" no more: with two vigils (a and b) publishing the same
/// probes, containers and workloads, every panel query of the overview, probe detail,
/// freshness, containers and Kubernetes dashboards returns no series per replica (no
/// `instance` in its result), and counts and totals are those of one vigil. Run with
/// `promtool test rules` on the shipped rules (the overview counts probes with their recording
/// rule), `$probe` = api (the overview: every probe), other variables `.*`.
#[test]
fn dashboards_count_each_probe_once_across_two_replicas() {
    let mut input = String::new();
    for instance in ["a", "b"] {
        for (series, values) in REPLICATED {
            let labelled = match series.split_once('{') {
                Some((name, rest)) => format!("{name}{{job=\"vigil\", instance=\"{instance}\", {rest}"),
                None => format!("{series}{{job=\"vigil\", instance=\"{instance}\"}}"),
            };
            input += &format!("      - series: '{labelled}'\n        values: {values}\n");
        }
    }
    let intervals = Intervals {
        interval: "1m",
        rate_interval: "1m",
        range: "1h",
    };
    let mut checks = String::new();
    let mut counted = 0;
    for (name, dashboard) in dashboards() {
        if name == "vigil-alerts.json" {
            continue; // ALERTS and the receiver's metrics: not published by vigil
        }
        let probe = match name.as_str() {
            "vigil-overview.json" => ".*",
            "vigil-freshness.json" => "orders",
            _ => "api",
        };
        let value = |variable: &str| -> String {
            intervals.value(variable).unwrap_or_else(|| match variable {
                "probe" => probe.to_string(),
                _ => ".*".to_string(),
            })
        };
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        for query in panel_queries(&dashboard) {
            let title = query.panel.split_once(' ').map_or("", |(_, t)| t).to_string();
            let i = *index.entry(title.clone()).and_modify(|i| *i += 1).or_insert(0);
            let expr = substitute(&query.expr, &value);
            let indented: String = expr.lines().map(|l| format!("          {l}\n")).collect();
            checks += &format!(
                "      # {name} {}\n      - expr: |-\n          group by (instance) (\n{indented}          )\n        eval_time: 30m\n        exp_samples:\n          - labels: '{{}}'\n            value: 1\n",
                query.panel
            );
            if let Some((_, _, _, sum)) = COUNTED_ONCE
                .iter()
                .find(|(d, t, k, _)| *d == name && *t == title && *k == i)
            {
                checks += &format!(
                    "      - expr: |-\n          sum(\n{indented}          )\n        eval_time: 30m\n        exp_samples:\n          - labels: '{{}}'\n            value: {sum}\n"
                );
                counted += 1;
            }
        }
    }
    assert_eq!(counted, COUNTED_ONCE.len(), "a panel of COUNTED_ONCE is missing");
    let rule_files: String = ["vigil-escalation.yml", "vigil-recording.yml", "vigil-alerts.yml"]
        .iter()
        .map(|f| format!("  - {}\n", path_str(&repo("rules").join(f))))
        .collect();
    let test = format!(
        "rule_files:\n{rule_files}evaluation_interval: 15s\ngroup_eval_order:\n{}tests:\n  - name: two replicas\n    interval: 15s\n    input_series:\n{input}    promql_expr_test:\n{checks}",
        [
            "vigil-escalation",
            "vigil-slo-error-ratios",
            "vigil-slo-objectives",
            "vigil-probes",
            "vigil-freshness",
            "vigil-tls",
            "vigil-slo",
            "vigil-containers",
            "vigil-kubernetes",
            "vigil-meta",
        ]
        .iter()
        .map(|g| format!("  - {g}\n"))
        .collect::<String>()
    );
    let dir = TempDir::new("dashboards-replicas");
    let file = dir.file("two-replicas.yml", &test);
    assert_success(
        &format!("dashboard queries against two replicas ({})", file.display()),
        &promtool(&["test", "rules", path_str(&file)]),
    );
}

// ---------------------------------------------------------------------------------------------
// The compose stack
// ---------------------------------------------------------------------------------------------

#[test]
fn compose_file_is_valid() {
    let file = repo("docker-compose.monitoring.yml");
    let output = command(
        "docker-compose",
        "docker-compose",
        &["-f", path_str(&file), "config", "-q"],
    );
    assert_success("docker-compose config", &output);
}
