//! Checks the static alerting stack with the real tools: Prometheus' `promtool`, Alertmanager's
//! `amtool` and server, and `docker-compose`; Debian packages `prometheus`,
//! `prometheus-alertmanager` and `docker-compose` (`scripts/install-test-deps.sh` installs
//! them). A missing tool fails its test and names the package; no check is ever skipped.
//!
//! Grafana cannot run here: the dashboards are checked as JSON (tests/stack/json.rs, a small
//! parser that also refuses duplicate keys) and every panel's PromQL goes through
//! `promtool check rules`. tests/alerting_e2e.rs runs the same queries against a real
//! Prometheus; the helpers both files use live in tests/stack/.

mod common;
mod stack;

use std::collections::BTreeSet;
use std::fs;
use std::thread;
use std::time::{Duration, SystemTime};

use stack::dashboards::{Intervals, dashboards, substitute, variables_in};
use stack::json::Json;
use stack::test_copy::{self, Route};
use stack::webhooks::{self, Recorder};
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

/// GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to dashes.
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
    for line in read("rules/vigil-alerts.yml").lines() {
        if let Some(url) = line.trim().strip_prefix("runbook_url:") {
            let (_, fragment) = url
                .split_once("docs/runbook.md#")
                .unwrap_or_else(|| panic!("runbook_url does not point into docs/runbook.md: {url}"));
            assert!(
                anchors.contains(fragment.trim()),
                "runbook_url to a missing section: {url}"
            );
        }
    }
}

#[test]
fn prometheus_config_is_valid() {
    assert_success(
        "promtool check config",
        &promtool(&["check", "config", path_str(&repo("prometheus/prometheus.yml"))]),
    );
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

#[test]
fn route_critical_climbs_every_step_of_the_ladder() {
    assert_routes(
        &[
            "alertname=VigilProbeDown",
            "severity=critical",
            "probe=api-gateway",
            "kind=http",
        ],
        &["team", "pagerduty", "vigil-whatsapp", "phone", "manager"],
    );
}

#[test]
fn route_warning_stays_with_the_team() {
    assert_routes(
        &["alertname=VigilProbeDegraded", "severity=warning", "probe=search"],
        &["team"],
    );
}

#[test]
fn route_frontend_down_is_a_warning_and_never_pages() {
    assert_routes(
        &[
            "alertname=VigilProbeDown",
            "severity=warning",
            "tier=frontend",
            "probe=shop-web",
        ],
        &["team"],
    );
}

#[test]
fn route_info_goes_to_the_info_channel_only() {
    assert_routes(
        &["alertname=VigilSLOTargetUnsupported", "severity=info"],
        &["team-info"],
    );
}

#[test]
fn route_remediate_reaches_vigil_receiver() {
    assert_routes(
        &[
            "alertname=VigilDataStaleRemediate",
            "severity=info",
            "remediate=true",
            "probe=gps-ingest",
        ],
        &["vigil-receiver", "team-info"],
    );
}

#[test]
fn route_watchdog_reaches_the_dead_mans_switch_only() {
    assert_routes(&["alertname=Watchdog", "severity=none"], &["deadmansswitch"]);
}

#[test]
fn route_alert_without_severity_falls_back_to_the_team() {
    assert_routes(&["alertname=SomethingElse"], &["team"]);
}

#[test]
fn ladder_steps_wait_15m_30m_1h_and_continue() {
    let (_, routes) = test_copy::routes(&repo(ALERTMANAGER_YML));
    let step = |receiver: &str| -> &Route {
        routes
            .iter()
            .find(|r| r.receiver == receiver)
            .unwrap_or_else(|| panic!("no route to {receiver}"))
    };
    let ladder = [
        ("team", 30_000),
        ("pagerduty", 900_000),
        ("phone", 1_800_000),
        ("manager", 3_600_000),
    ];
    let mut previous_index = 0;
    for (i, (receiver, wait)) in ladder.iter().enumerate() {
        let route = step(receiver);
        assert_eq!(
            route.group_wait.as_deref().map(millis),
            Some(*wait),
            "group_wait of {receiver}"
        );
        assert!(
            route.mute_time_intervals.iter().any(|v| v == "maintenance"),
            "{receiver} is muted in the maintenance window"
        );
        let index = routes.iter().position(|r| r.receiver == *receiver).expect("present");
        assert!(
            i == 0 || index > previous_index,
            "{receiver} comes after the previous step"
        );
        previous_index = index;
        assert_eq!(route.continues, i + 1 < ladder.len(), "`continue` on {receiver}");
    }
    assert_eq!(step("vigil-whatsapp").group_wait.as_deref().map(millis), Some(900_000));
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
fn message_names_probe_level_reason_start_and_links() {
    let out = render("vigil.text", "firing.json", "text");
    for expected in [
        "FIRING [critical] VigilProbeDown: Probe api-gateway is DOWN",
        "Target:  probe api-gateway (http)",
        "Level:   DOWN",
        "Reason:  timeout",
        "Since:   2024-05-04 03:02:01 UTC",
        "Runbook: https://github.com/vigil-monitoring/vigil/blob/main/docs/runbook.md#vigilprobedown",
        "Graph:   http://prometheus:9090/graph?g0.expr=",
        "Acknowledge (silence): http://alertmanager:9093/#/silences/new?filter=%7Balertname%3D%22VigilProbeDown%22",
    ] {
        assert!(out.contains(expected), "missing `{expected}` in:\n{out}");
    }
    assert_eq!(
        render("vigil.title", "firing.json", "text").trim(),
        "[FIRING:1] VigilProbeDown api-gateway"
    );
}

#[test]
fn message_covers_pods_containers_resolved_and_remediation() {
    let out = render("vigil.text", "mixed.json", "text");
    for expected in [
        "Target:  pod gps/listener-7d9f-abcde, container listener",
        "Reason:  CrashLoopBackOff",
        "Remediation: requested from vigil's receiver",
        "RESOLVED [critical] VigilContainerStopped",
        "Target:  container gps-listener (project gps, service listener)",
        "Level:   EXITED",
        "resolved 2024-05-04 03:10:00 UTC",
    ] {
        assert!(out.contains(expected), "missing `{expected}` in:\n{out}");
    }
    // Firing alerts come before resolved ones.
    assert!(out.find("FIRING").expect("firing") < out.find("RESOLVED").expect("resolved"));
}

// ---------------------------------------------------------------------------------------------
// The ladder against a real Alertmanager
// ---------------------------------------------------------------------------------------------

/// Durations of the real routes are divided by this, so 1h of escalation takes 12s.
const TIME_SCALE: u64 = 300;

fn alert(labels: &[(&str, &str)], ends_at: Option<SystemTime>) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("\"{k}\":\"{v}\"")).collect();
    let ends = ends_at
        .map(|t| format!(",\"endsAt\":\"{}\"", rfc3339(t)))
        .unwrap_or_default();
    format!("{{\"labels\":{{{}}}{ends}}}", labels.join(","))
}

#[test]
fn ladder_escalates_in_time_and_stops_for_resolved_groups_in_alertmanager() {
    let sink = Recorder::start();
    let dir = TempDir::new("alertmanager");
    let config = dir.file(
        "alertmanager.yml",
        &test_copy::alertmanager_config(&repo(ALERTMANAGER_YML), TIME_SCALE, &sink.url),
    );
    let alertmanager = stack::alertmanager(&config, &dir.0);
    let port = alertmanager.port;

    // api: DOWN and staying DOWN. billing: DOWN, fixed after 4.5s (between PagerDuty at 3s and
    // the phone at 6s). search: a warning. api also has a warning, muted by its critical.
    // gps-ingest asks for remediation.
    let post = |alerts: &[String]| {
        let (status, body) =
            http(port, "POST", "/api/v2/alerts", &format!("[{}]", alerts.join(","))).expect("post alerts");
        assert_eq!(status, 200, "posting alerts: {body}");
    };
    let started = SystemTime::now();
    let elapsed = || started.elapsed().unwrap_or(Duration::ZERO);
    let down = |probe| {
        alert(
            &[
                ("alertname", "VigilProbeDown"),
                ("severity", "critical"),
                ("probe", probe),
            ],
            None,
        )
    };
    post(&[
        down("api"),
        down("billing"),
        alert(
            &[
                ("alertname", "VigilProbeDegraded"),
                ("severity", "warning"),
                ("probe", "search"),
            ],
            None,
        ),
        alert(
            &[
                ("alertname", "VigilProbeSlow"),
                ("severity", "warning"),
                ("probe", "api"),
            ],
            None,
        ),
        alert(
            &[
                ("alertname", "VigilDataStaleRemediate"),
                ("severity", "info"),
                ("remediate", "true"),
                ("probe", "gps-ingest"),
            ],
            None,
        ),
    ]);
    thread::sleep(Duration::from_millis(4_500).saturating_sub(elapsed()));
    post(&[alert(
        &[
            ("alertname", "VigilProbeDown"),
            ("severity", "critical"),
            ("probe", "billing"),
        ],
        Some(SystemTime::now()),
    )]);
    // The manager step waits 1h / TIME_SCALE = 12s; leave room for the last flush.
    thread::sleep(Duration::from_millis(14_000).saturating_sub(elapsed()));

    let deliveries = sink.deliveries();
    let arrived = |receiver: &str, alertname: &str, probe: &str, status: &str| {
        webhooks::first(&deliveries, receiver, alertname, probe, status)
            .map(|d| d.at.duration_since(started).unwrap_or(Duration::ZERO))
    };
    let summary = webhooks::summary(&deliveries, started);

    // The whole ladder for a problem that lasts, each step no earlier than its wait.
    for (receiver, wait_ms) in [
        ("team", 100),
        ("pagerduty", 3_000),
        ("vigil-whatsapp", 3_000),
        ("phone", 6_000),
        ("manager", 12_000),
    ] {
        let at = arrived(receiver, "VigilProbeDown", "api", "firing")
            .unwrap_or_else(|| panic!("{receiver} never got VigilProbeDown for api:\n{summary}"));
        assert!(
            at >= Duration::from_millis(wait_ms),
            "{receiver} notified after {at:?}, before its wait"
        );
    }
    // Fixed at 4.5s: paged at 3s, told it resolved, but never phoned nor escalated.
    assert!(
        arrived("pagerduty", "VigilProbeDown", "billing", "firing").is_some(),
        "{summary}"
    );
    assert!(
        arrived("pagerduty", "VigilProbeDown", "billing", "resolved").is_some(),
        "{summary}"
    );
    assert!(
        arrived("team", "VigilProbeDown", "billing", "resolved").is_some(),
        "{summary}"
    );
    for receiver in ["phone", "manager"] {
        for status in ["firing", "resolved"] {
            assert!(
                arrived(receiver, "VigilProbeDown", "billing", status).is_none(),
                "{receiver} was notified ({status}) of a problem fixed before its step:\n{summary}"
            );
        }
    }
    // A warning stays with the team.
    assert!(
        arrived("team", "VigilProbeDegraded", "search", "firing").is_some(),
        "{summary}"
    );
    for receiver in ["pagerduty", "phone", "manager"] {
        assert!(
            arrived(receiver, "VigilProbeDegraded", "search", "firing").is_none(),
            "{summary}"
        );
    }
    // api's warning is inhibited by its critical alert.
    assert!(
        !deliveries
            .iter()
            .any(|d| d.label("alertname") == "VigilProbeSlow" && d.label("probe") == "api"),
        "an inhibited warning was sent:\n{summary}"
    );
    // The remediation request reaches vigil's receiver (and the info channel).
    assert!(
        arrived("vigil-receiver", "VigilDataStaleRemediate", "gps-ingest", "firing").is_some(),
        "{summary}"
    );
    assert!(
        arrived("team-info", "VigilDataStaleRemediate", "gps-ingest", "firing").is_some(),
        "{summary}"
    );
    assert!(
        arrived("pagerduty", "VigilDataStaleRemediate", "gps-ingest", "firing").is_none(),
        "{summary}"
    );
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
