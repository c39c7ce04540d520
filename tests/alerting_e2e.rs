//! The alerting stack end to end, with real components only, all on 127.0.0.1: a local HTTPS
//! target whose health the test switches, `vigil run` probing it, Prometheus 2.42 scraping vigil
//! and evaluating the shipped rules, Alertmanager 0.25 routing with the shipped routes, and a
//! webhook recorder standing in for every receiver. Debian packages `prometheus` and
//! `prometheus-alertmanager` (`scripts/install-test-deps.sh` installs them); a missing one fails
//! the test and names the package. Every process the test starts is stopped when it ends, also
//! when it panics (drop guards).
//!
//! Prometheus and Alertmanager run on test copies of prometheus/prometheus.yml, rules/*.yml and
//! alertmanager/alertmanager.yml, made from the shipped files when the test runs
//! (tests/stack/test_copy.rs, tested below). Scaling: scrape and evaluation every second, and
//! time divided by [`TIME_SCALE`] = 60 for every `for:` (VigilProbeDown's 30s becomes 0.5s) and
//! every `group_wait`, `group_interval` and `repeat_interval`, so the ladder's 30s / 15m / 30m /
//! 1h become 0.5s / 15s / 30s / 60s, its 5m group interval 5s. The range windows inside the
//! rules' expressions (`[5m]`, `[1h]`, ...) are not scaled: the SLO burn-rate alerts fire too.
//! Prometheus runs with `--rules.alert.resend-delay=2s` (1m by default, see [`Stack::start`]).
//! The test takes about 80 seconds.
//!
//! Two probes go DOWN at once:
//! - `api` stays DOWN: VigilProbeDown fires and (a) the team hears of it first, (b) then
//!   PagerDuty and WhatsApp, the phone and the manager, each no earlier than its scaled wait
//!   after the alert started (and not much later), in this order; once the manager has it, `api`
//!   recovers and (c) every step gets the resolved notice.
//! - `billing` recovers as soon as PagerDuty has it: (d) the phone and the manager never hear of
//!   it, firing or resolved, although the test waits past the manager's step.
//!
//! The Watchdog reaches the dead man's switch, and nothing else does. Then every panel query of
//! grafana/dashboards/*.json runs against Prometheus' HTTP API: see [`check_dashboards`].

mod common;
mod stack;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{MethodRouter, get};
use common::{Running, TestCa};
use stack::dashboards::{Intervals, dashboards, label_values_variables, panel_queries, substitute};
use stack::json::Json;
use stack::test_copy::{self, PrometheusCopy, scale};
use stack::webhooks::{self, Delivery, Recorder};
use stack::{
    ALERTMANAGER_YML, PROMETHEUS_YML, Server, TempDir, amtool, assert_success, files, free_port, millis, parse_rfc3339,
    path_str, prometheus_api, promtool, query_escape, repo, rfc3339,
};

/// Every `for:` of the rules and every wait of Alertmanager's routes is divided by this.
const TIME_SCALE: u64 = 60;
/// Prometheus' scrape and evaluation interval, and vigil's probe interval.
const INTERVAL: &str = "1s";
/// The probe that stays DOWN through the whole ladder; the dashboards' `$probe`.
const LASTING: &str = "api";
/// The probe that recovers after the PagerDuty step and before the phone's.
const SHORT: &str = "billing";
/// The steps of the ladder, in order (`vigil-whatsapp` shares PagerDuty's step).
const LADDER: [&str; 5] = ["team", "pagerduty", "vigil-whatsapp", "phone", "manager"];
/// The alerts the incident raises.
const EXPECTED: [&str; 4] = [
    "VigilProbeDown",
    "VigilErrorBudgetBurnFast",
    "VigilErrorBudgetBurnSlow",
    "Watchdog",
];
/// How late after its wait a step may notify: rule evaluation, the scaled `for`, sending.
const SLACK: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The stack
// ---------------------------------------------------------------------------------------------

/// A health endpoint: 200 while `healthy`, 500 otherwise.
fn health(healthy: Arc<AtomicBool>) -> MethodRouter {
    get(move || {
        let healthy = Arc::clone(&healthy);
        async move {
            if healthy.load(Ordering::SeqCst) {
                (StatusCode::OK, "ok")
            } else {
                (StatusCode::INTERNAL_SERVER_ERROR, "broken")
            }
        }
    })
}

/// Everything the test runs. Fields drop in order: the servers stop before their files go.
struct Stack {
    prometheus: Server,
    alertmanager: Server,
    vigil: Running,
    recorder: Recorder,
    /// The health of LASTING's and SHORT's endpoints.
    lasting: Arc<AtomicBool>,
    short: Arc<AtomicBool>,
    /// When Prometheus started.
    started: SystemTime,
    _ca: TestCa,
    _dir: TempDir,
}

impl Stack {
    fn start() -> Stack {
        let dir = TempDir::new("e2e");
        let recorder = Recorder::start();

        // The target: HTTPS on 127.0.0.1 (so the certificate panels have data), one path per probe.
        let ca = TestCa::new();
        let (cert, key) = ca.leaf("target", -1, 30);
        let lasting = Arc::new(AtomicBool::new(true));
        let short = Arc::new(AtomicBool::new(true));
        let app = Router::new()
            .route(&format!("/{LASTING}"), health(Arc::clone(&lasting)))
            .route(&format!("/{SHORT}"), health(Arc::clone(&short)));
        let target = common::serve_tls_in_thread(app, cert, key);

        let ca_file = ca.ca_file();
        let probe = |name: &str| {
            format!(
                "  - name: {name}\n    kind: http\n    url: https://{target}/{name}\n    \
                 tls_config: {{ca_file: '{}'}}\n    labels: {{team: platform}}\n",
                path_str(&ca_file)
            )
        };
        let config = dir.file(
            "vigil.yml",
            &format!(
                "defaults:\n  interval: {INTERVAL}\n  timeout: 800ms\nlabels: {{env: e2e}}\nprobes:\n{}{}",
                probe(LASTING),
                probe(SHORT)
            ),
        );
        let vigil = Running::start(&config, &[]);

        let am_config = dir.file(
            "alertmanager.yml",
            &test_copy::alertmanager_config(&repo(ALERTMANAGER_YML), TIME_SCALE, &recorder.url),
        );
        assert_success(
            "amtool check-config (test copy)",
            &amtool(&["check-config", path_str(&am_config)]),
        );
        let alertmanager = stack::alertmanager(&am_config, &dir.0);

        let rule_files: Vec<_> = files("rules", "yml")
            .iter()
            .map(|shipped| {
                let name = shipped.file_name().expect("file name").to_string_lossy();
                dir.file(&format!("rules/{name}"), &test_copy::rules(shipped, TIME_SCALE))
            })
            .collect();
        let port = free_port();
        let prometheus_config = dir.file(
            "prometheus.yml",
            &test_copy::prometheus_config(
                &repo(PROMETHEUS_YML),
                &PrometheusCopy {
                    interval: INTERVAL,
                    rule_files: &rule_files,
                    alertmanager: &format!("127.0.0.1:{}", alertmanager.port),
                    targets: &[
                        ("vigil", format!("127.0.0.1:{}", vigil.port)),
                        ("alertmanager", format!("127.0.0.1:{}", alertmanager.port)),
                        ("prometheus", format!("127.0.0.1:{port}")),
                    ],
                },
            ),
        );
        assert_success(
            "promtool check config (test copy, with the rule copies)",
            &promtool(&["check", "config", path_str(&prometheus_config)]),
        );
        let started = SystemTime::now();
        // Prometheus re-sends a firing alert every --rules.alert.resend-delay (1m), and drops
        // what it sends before it has discovered the Alertmanager, which the Watchdog, firing
        // at the first evaluation, may be: scaled like the rest, the resend comes after 2s.
        let prometheus = stack::prometheus(&prometheus_config, &dir.0, port, &["--rules.alert.resend-delay=2s"]);

        Stack {
            prometheus,
            alertmanager,
            vigil,
            recorder,
            lasting,
            short,
            started,
            _ca: ca,
            _dir: dir,
        }
    }

    /// An instant query; Ok(the result list) or Err(Prometheus' error).
    fn query(&self, expr: &str) -> Result<Vec<Json>, String> {
        let data = prometheus_api(
            self.prometheus.port,
            &format!("/api/v1/query?query={}", query_escape(expr)),
        )?;
        Ok(results(&data))
    }
}

/// The series (or the one scalar) in the `data` of a Prometheus query answer.
fn results(data: &Json) -> Vec<Json> {
    match data.get("result") {
        Some(Json::Array(series)) => series.clone(),
        Some(scalar) => vec![scalar.clone()],
        None => Vec::new(),
    }
}

/// Polls `check` every 200ms until it gives a value; fails after `timeout` with `what`.
fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// The scaled `group_wait` of each receiver's route, from the shipped alertmanager.yml.
fn scaled_waits() -> BTreeMap<String, Duration> {
    let (root, children) = test_copy::routes(&repo(ALERTMANAGER_YML));
    children
        .iter()
        .map(|route| {
            let wait = route
                .group_wait
                .as_ref()
                .or(root.group_wait.as_ref())
                .expect("a group_wait");
            let wait = Duration::from_millis(millis(&scale(wait, TIME_SCALE)));
            (route.receiver.clone(), wait)
        })
        .collect()
}

fn secs(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// The end-to-end test
// ---------------------------------------------------------------------------------------------

#[test]
fn alerts_climb_the_ladder_resolve_and_dashboards_show_real_data() {
    let stack = Stack::start();
    let waits = scaled_waits();
    let wait = |receiver: &str| waits[receiver];

    // Warm-up: both probes UP in Prometheus, every scrape target up, Alertmanager known, the
    // Watchdog through to the dead man's switch, nothing else firing.
    wait_until("both probes UP in Prometheus", Duration::from_secs(30), || {
        let up = stack.query(r#"vigil_probe_status{status="up"} == 1"#).ok()?;
        (up.len() == 2).then_some(())
    });
    wait_until("every scrape target up", Duration::from_secs(30), || {
        let up = stack.query("up == 1").ok()?;
        (up.len() == 3).then_some(())
    });
    wait_until("Prometheus to know Alertmanager", Duration::from_secs(30), || {
        let data = prometheus_api(stack.prometheus.port, "/api/v1/alertmanagers").ok()?;
        let active = data.get("activeAlertmanagers")?.as_array()?;
        (!active.is_empty()).then_some(())
    });
    wait_until("the Watchdog at the dead man's switch", Duration::from_secs(30), || {
        webhooks::first(&stack.recorder.deliveries(), "deadmansswitch", "Watchdog", "", "firing").map(|_| ())
    });
    // Prometheus scrapes for the first time some seconds after it starts, longer than the scaled
    // `for` of VigilExporterAbsent (2m / 60): that one may fire and resolve at start-up. Wait
    // until it is over in Alertmanager too, where it would mute every probe alert.
    wait_until("no alert but the Watchdog", Duration::from_secs(30), || {
        let pending_or_firing = stack.query(r#"ALERTS{alertname!="Watchdog"}"#).ok()?;
        let (_, body) = stack::http(stack.alertmanager.port, "GET", "/api/v2/alerts", "").ok()?;
        let active = Json::parse(&body).ok()?;
        let only_watchdog = active.as_array()?.iter().all(|alert| {
            alert
                .get("labels")
                .and_then(|l| l.get("alertname"))
                .and_then(Json::as_str)
                == Some("Watchdog")
        });
        (pending_or_firing.is_empty() && only_watchdog).then_some(())
    });

    // The incident: both probes DOWN.
    let incident = SystemTime::now();
    stack.lasting.store(false, Ordering::SeqCst);
    stack.short.store(false, Ordering::SeqCst);
    let since = |at: SystemTime| secs(at.duration_since(incident).unwrap_or(Duration::ZERO));
    let mut short_fixed: Option<SystemTime> = None;
    let mut lasting_fixed: Option<SystemTime> = None;
    let deliveries: Vec<Delivery> = wait_until("the ladder to run its course", Duration::from_secs(150), || {
        let deliveries = stack.recorder.deliveries();
        let down = |receiver: &str, probe: &str, status: &str| {
            webhooks::first(&deliveries, receiver, "VigilProbeDown", probe, status)
        };
        let now = SystemTime::now();
        if short_fixed.is_none() && down("pagerduty", SHORT, "firing").is_some() {
            stack.short.store(true, Ordering::SeqCst);
            short_fixed = Some(now);
        }
        if lasting_fixed.is_none() && down("manager", LASTING, "firing").is_some() {
            stack.lasting.store(true, Ordering::SeqCst);
            lasting_fixed = Some(now);
        }
        let lasting_resolved = LADDER.iter().all(|r| down(r, LASTING, "resolved").is_some());
        // Past the manager's step for SHORT, with room for a late notification.
        let short_over = down("team", SHORT, "firing").is_some_and(|d| now > d.starts_at + wait("manager") + SLACK / 2);
        (lasting_resolved && short_over).then_some(deliveries)
    });
    let summary = format!(
        "notifications (seconds after the incident began):\n{}",
        webhooks::summary(&deliveries, incident)
    );
    let first = |receiver: &str, alertname: &str, probe: &str, status: &str| {
        webhooks::first(&deliveries, receiver, alertname, probe, status)
            .unwrap_or_else(|| panic!("{receiver} never got {alertname} {status} for {probe}\n{summary}"))
    };

    // (a) The first step: the team hears of it, with the labels and annotations of the rule.
    let team = first("team", "VigilProbeDown", LASTING, "firing");
    for (label, value) in [
        ("severity", "critical"),
        ("kind", "http"),
        ("job", "vigil"),
        ("env", "e2e"),
        ("team", "platform"),
    ] {
        assert_eq!(team.label(label), value, "label {label} of {team:?}");
    }
    assert_eq!(team.label("instance"), format!("127.0.0.1:{}", stack.vigil.port));
    assert_eq!(
        team.annotations.get("summary").map(String::as_str),
        Some("Probe api is DOWN")
    );
    assert!(
        team.starts_at >= incident - Duration::from_secs(1),
        "the alert started before the target failed: {team:?}"
    );

    // (b) Each step no earlier than its scaled wait after the alert started, not much later,
    // in the ladder's order.
    let mut previous: Option<(&str, SystemTime)> = None;
    for receiver in LADDER {
        let d = first(receiver, "VigilProbeDown", LASTING, "firing");
        let after = d.at.duration_since(d.starts_at).unwrap_or(Duration::ZERO);
        assert!(
            after >= wait(receiver),
            "{receiver} notified {} after the alert started, before its wait of {}\n{summary}",
            secs(after),
            secs(wait(receiver))
        );
        assert!(
            after <= wait(receiver) + SLACK,
            "{receiver} notified {} after the alert started, long after its wait of {}\n{summary}",
            secs(after),
            secs(wait(receiver))
        );
        if let Some((before, at)) = previous.filter(|_| receiver != "vigil-whatsapp") {
            assert!(d.at > at, "{receiver} was notified before {before}\n{summary}");
        }
        if receiver != "vigil-whatsapp" {
            previous = Some((receiver, d.at));
        }
    }
    // The `reason` annotation queries vigil's failure counter: the target answered 500.
    let manager = first("manager", "VigilProbeDown", LASTING, "firing");
    assert_eq!(
        manager.annotations.get("reason").map(String::as_str),
        Some("status"),
        "{manager:?}"
    );

    // (c) Recovery: every step gets the resolved notice.
    let lasting_fixed = lasting_fixed.expect("api recovered");
    for receiver in LADDER {
        let d = first(receiver, "VigilProbeDown", LASTING, "resolved");
        assert!(d.at > lasting_fixed, "{receiver}: resolved before the fix\n{summary}");
    }

    // (d) SHORT recovered after PagerDuty's step, before the phone's: PagerDuty (and WhatsApp)
    // and the team were told both firing and resolved; the phone and the manager nothing.
    let short = first("pagerduty", "VigilProbeDown", SHORT, "firing");
    let short_fixed = short_fixed.expect("billing recovered");
    assert!(
        short_fixed + SLACK / 2 < short.starts_at + wait("phone"),
        "the test fixed {SHORT} at {}, too late to show that the phone step stays quiet\n{summary}",
        since(short_fixed)
    );
    for receiver in ["team", "pagerduty", "vigil-whatsapp"] {
        first(receiver, "VigilProbeDown", SHORT, "resolved");
    }
    for receiver in ["phone", "manager"] {
        for status in ["firing", "resolved"] {
            assert!(
                webhooks::first(&deliveries, receiver, "VigilProbeDown", SHORT, status).is_none(),
                "{receiver} got VigilProbeDown {status} for {SHORT}, fixed before its step\n{summary}"
            );
        }
    }

    // The Watchdog reaches the dead man's switch, repeatedly, and nothing else does.
    let pings = deliveries.iter().filter(|d| d.receiver == "deadmansswitch").count();
    assert!(pings >= 3, "only {pings} Watchdog pings\n{summary}");
    for d in &deliveries {
        let is_watchdog = d.label("alertname") == "Watchdog";
        assert_eq!(
            is_watchdog,
            d.receiver == "deadmansswitch",
            "{d:?} (the Watchdog goes to the dead man's switch only)\n{summary}"
        );
        assert!(d.receiver != "deadmansswitch" || d.status == "firing", "{d:?}");
        // Nothing else fired during the incident: the SLO burn-rate alerts do, as their windows
        // are not scaled (the slow one, a warning, stays muted by the critical ones).
        assert!(
            d.starts_at < incident || EXPECTED.contains(&d.label("alertname")),
            "unexpected alert during the incident: {d:?}\n{summary}"
        );
    }
    eprintln!(
        "incident at +{} after Prometheus started; {SHORT} fixed at +{}, {LASTING} at +{}; done at +{}\n{summary}",
        secs(incident.duration_since(stack.started).unwrap_or(Duration::ZERO)),
        since(short_fixed),
        since(lasting_fixed),
        since(SystemTime::now())
    );

    check_dashboards(&stack);
}

// ---------------------------------------------------------------------------------------------
// Dashboards against real data
// ---------------------------------------------------------------------------------------------

/// The families of metrics vigil does not publish yet, by name prefix: the Docker and
/// Kubernetes inventories, freshness probes (`kind: heartbeat` and the others) and the receiver.
const NOT_YET: [&str; 6] = [
    "vigil_docker_",
    "vigil_container_",
    "vigil_kube_",
    "vigil_freshness_",
    "vigil_remediation_",
    "vigil_notifications_",
];

/// Dashboards whose every panel query must return data (but see [`check_dashboards`]).
const WITH_DATA: [&str; 2] = ["vigil-overview.json", "vigil-probe.json"];

/// The `vigil_*` metric names in `expr` without a sample in vigil's /metrics text.
fn unpublished<'a>(expr: &'a str, metrics: &str) -> Vec<&'a str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|name| name.starts_with("vigil_"))
        .filter(|name| {
            !metrics
                .lines()
                .any(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
        })
        .collect()
}

/// Runs every panel query of every dashboard as Grafana would (instant and/or range query),
/// with `$probe` set to LASTING, the dashboards' other variables to `.*` (All), `$__interval`
/// 2s, `$__rate_interval` 10s (at least 4 scrape intervals, as Grafana makes it) and `$__range`
/// 5m; range queries span the whole life of this Prometheus (about 80s).
///
/// Every query must parse and succeed. On the overview and probe detail dashboards every query
/// must also return data, unless it uses a metric that vigil does not publish, which must then
/// belong to a family of NOT_YET (so a misspelt probe metric fails). Those queries, and the
/// other dashboards' (freshness, containers, Kubernetes, alerts), are only required to succeed;
/// a family that vigil starts publishing is required to show data from then on. Also every
/// `label_values(...)` variable must answer, with LASTING among the probes.
fn check_dashboards(stack: &Stack) {
    let metrics = stack.vigil.get("/metrics");
    let intervals = Intervals {
        interval: "2s",
        rate_interval: "10s",
        range: "5m",
    };
    let value = |name: &str| match name {
        "probe" => LASTING.to_string(),
        _ => intervals.value(name).unwrap_or_else(|| ".*".to_string()),
    };
    let unix = |t: SystemTime| format!("{:.3}", t.duration_since(UNIX_EPOCH).expect("clock").as_secs_f64());
    let (start, end) = (unix(stack.started), unix(SystemTime::now()));
    let port = stack.prometheus.port;

    let mut report = Vec::new();
    let mut failures = Vec::new();
    let mut counted: BTreeMap<&str, usize> = BTreeMap::new();
    for (name, dashboard) in dashboards() {
        let required = WITH_DATA.contains(&name.as_str());
        for (variable, selector, label) in label_values_variables(&dashboard) {
            let path = format!(
                "/api/v1/label/{label}/values?match[]={}",
                query_escape(&substitute(&selector, &value))
            );
            match prometheus_api(port, &path) {
                Ok(values) => {
                    let values: BTreeSet<&str> = values
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Json::as_str)
                        .collect();
                    if required && label == "probe" && !values.contains(LASTING) {
                        failures.push(format!("{name}: ${variable} = {values:?}, without {LASTING}"));
                    }
                }
                Err(e) => failures.push(format!("{name}: ${variable} ({selector}): {e}")),
            }
        }
        for query in panel_queries(&dashboard) {
            let expr = substitute(&query.expr, &value);
            let missing = unpublished(&expr, &metrics);
            for metric in &missing {
                if !NOT_YET.iter().any(|prefix| metric.starts_with(prefix)) {
                    failures.push(format!("{name} {}: vigil publishes no {metric}", query.panel));
                }
            }
            let must_have_data = required && missing.is_empty();
            let mut runs = Vec::new();
            if query.instant {
                runs.push((
                    "instant",
                    format!("/api/v1/query?query={}&time={end}", query_escape(&expr)),
                ));
            }
            if query.range {
                runs.push((
                    "range",
                    format!(
                        "/api/v1/query_range?query={}&start={start}&end={end}&step=2",
                        query_escape(&expr)
                    ),
                ));
            }
            for (kind, path) in runs {
                let class = if must_have_data { "with data" } else { "succeeds" };
                *counted.entry(class).or_default() += 1;
                let what = format!("{name} {} ({kind}): {expr}", query.panel);
                match prometheus_api(port, &path) {
                    Ok(data) => {
                        let series = results(&data).len();
                        report.push(format!("{series:3} series  {what}"));
                        if series == 0 && must_have_data {
                            failures.push(format!("no data: {what}"));
                        }
                    }
                    Err(e) => failures.push(format!("failed: {what}: {e}")),
                }
            }
        }
    }
    let report = report.join("\n");
    assert!(
        failures.is_empty(),
        "dashboard queries against Prometheus:\n{}\n--- every query:\n{report}",
        failures.join("\n")
    );
    assert!(counted.get("with data").copied().unwrap_or(0) > 30, "{counted:?}");
    eprintln!("dashboard queries: {counted:?}\n{report}");
}

// ---------------------------------------------------------------------------------------------
// The test copies of the shipped configs
// ---------------------------------------------------------------------------------------------

#[test]
fn scale_divides_durations_and_keeps_zero() {
    assert_eq!(scale("30s", 60), "500ms");
    assert_eq!(scale("1h", 60), "60000ms");
    assert_eq!(scale("15m", 300), "3000ms");
    assert_eq!(scale("0s", 60), "0s");
    assert_eq!(scale("0m", 60), "0s");
    assert_eq!(scale("10ms", 60), "1ms");
    assert_eq!(millis("1h30m"), 5_400_000);
    assert_eq!(millis("500ms"), 500);
}

#[test]
fn test_copy_of_alertmanager_config_keeps_routes_inhibition_and_receiver_names() {
    let dir = TempDir::new("copy-alertmanager");
    let shipped = repo(ALERTMANAGER_YML);
    let text = test_copy::alertmanager_config(&shipped, TIME_SCALE, "http://127.0.0.1:9/hooks");
    let path = dir.file("alertmanager.yml", &text);
    assert_success(
        "amtool check-config (test copy)",
        &amtool(&["check-config", path_str(&path)]),
    );
    for secret in [
        "_file:",
        "__TELEGRAM_BOT_TOKEN__",
        "__DEADMANSSWITCH_UUID__",
        "/run/secrets",
    ] {
        assert!(!text.contains(secret), "the test copy still has {secret}:\n{text}");
    }

    let original = test_copy::load(&shipped);
    let copy = test_copy::load(&path);
    assert_eq!(
        original["inhibit_rules"], copy["inhibit_rules"],
        "inhibition is untouched"
    );
    let template = copy["templates"][0].as_str().expect("a template glob");
    assert_eq!(template, path_str(&repo("alertmanager/templates/*.tmpl")));

    // Every receiver keeps its name and becomes one webhook to the recorder.
    let names = |doc: &yaml_rust2::Yaml| -> Vec<String> {
        doc["receivers"]
            .as_vec()
            .expect("receivers")
            .iter()
            .map(|r| r["name"].as_str().expect("name").to_string())
            .collect()
    };
    assert_eq!(names(&original), names(&copy));
    for receiver in copy["receivers"].as_vec().expect("receivers") {
        let name = receiver["name"].as_str().expect("name");
        let webhooks = receiver["webhook_configs"].as_vec().expect("webhook_configs");
        assert_eq!(webhooks.len(), 1, "{name}");
        assert_eq!(
            receiver.as_hash().map(|h| h.len()),
            Some(2),
            "{name} has nothing but its name and the webhook"
        );
        assert_eq!(
            webhooks[0]["url"].as_str(),
            Some(format!("http://127.0.0.1:9/hooks/{name}").as_str())
        );
        let resolved = webhooks[0]["send_resolved"].as_bool();
        assert_eq!(resolved, Some(name != "deadmansswitch"), "send_resolved of {name}");
    }

    // The same routes in the same order, their waits divided, no maintenance mute.
    let (root, children) = test_copy::routes(&shipped);
    let (copy_root, copy_children) = test_copy::routes(&path);
    assert_eq!(children.len(), copy_children.len());
    for (original, copy) in std::iter::once((&root, &copy_root)).chain(children.iter().zip(&copy_children)) {
        assert_eq!(original.receiver, copy.receiver);
        assert_eq!(original.matchers, copy.matchers, "{}", copy.receiver);
        assert_eq!(original.continues, copy.continues, "{}", copy.receiver);
        let scaled = |d: &Option<String>| d.as_deref().map(|d| scale(d, TIME_SCALE));
        assert_eq!(scaled(&original.group_wait), copy.group_wait, "{}", copy.receiver);
        assert_eq!(
            scaled(&original.group_interval),
            copy.group_interval,
            "{}",
            copy.receiver
        );
        assert_eq!(
            scaled(&original.repeat_interval),
            copy.repeat_interval,
            "{}",
            copy.receiver
        );
        assert!(copy.mute_time_intervals.is_empty(), "{}", copy.receiver);
    }
    let manager = copy_children.iter().find(|r| r.receiver == "manager").expect("manager");
    assert_eq!(manager.group_wait.as_deref(), Some("60000ms"));
}

#[test]
fn test_copy_of_rules_divides_every_for_and_changes_nothing_else() {
    let dir = TempDir::new("copy-rules");
    let mut copies = Vec::new();
    let mut scaled = 0;
    for shipped in files("rules", "yml") {
        let name = shipped.file_name().expect("file name").to_string_lossy().into_owned();
        let path = dir.file(&name, &test_copy::rules(&shipped, TIME_SCALE));
        let (original, copy) = (test_copy::load(&shipped), test_copy::load(&path));
        let groups = |doc: &yaml_rust2::Yaml| doc["groups"].as_vec().expect("groups").clone();
        let (original_groups, copy_groups) = (groups(&original), groups(&copy));
        assert_eq!(original_groups.len(), copy_groups.len(), "{name}");
        for (original_group, copy_group) in original_groups.iter().zip(&copy_groups) {
            assert_eq!(original_group["name"], copy_group["name"], "{name}");
            let rules = |group: &yaml_rust2::Yaml| group["rules"].as_vec().expect("rules").clone();
            let (original_rules, copy_rules) = (rules(original_group), rules(copy_group));
            assert_eq!(original_rules.len(), copy_rules.len(), "{name}");
            for (mut original_rule, mut copy_rule) in original_rules.into_iter().zip(copy_rules) {
                let key = yaml_rust2::Yaml::String("for".to_string());
                let original_for = original_rule.as_mut_hash().expect("rule").remove(&key);
                let copy_for = copy_rule.as_mut_hash().expect("rule").remove(&key);
                let expected = original_for.map(|d| scale(d.as_str().expect("for"), TIME_SCALE));
                assert_eq!(
                    expected.as_deref(),
                    copy_for.as_ref().and_then(|d| d.as_str()),
                    "{name}"
                );
                scaled += usize::from(expected.is_some());
                assert_eq!(original_rule, copy_rule, "{name}: only `for` changes");
            }
        }
        copies.push(path);
    }
    assert!(scaled >= 20, "only {scaled} `for` durations found");
    let mut args = vec!["check", "rules"];
    args.extend(copies.iter().map(|p| path_str(p)));
    assert_success("promtool check rules (test copies)", &promtool(&args));
}

#[test]
fn test_copy_of_prometheus_config_scrapes_loopback_and_loads_the_rule_copies() {
    let dir = TempDir::new("copy-prometheus");
    let rule_files: Vec<_> = files("rules", "yml")
        .iter()
        .map(|shipped| {
            let name = shipped.file_name().expect("file name").to_string_lossy();
            dir.file(&format!("rules/{name}"), &test_copy::rules(shipped, TIME_SCALE))
        })
        .collect();
    let path = dir.file(
        "prometheus.yml",
        &test_copy::prometheus_config(
            &repo(PROMETHEUS_YML),
            &PrometheusCopy {
                interval: INTERVAL,
                rule_files: &rule_files,
                alertmanager: "127.0.0.1:9093",
                targets: &[
                    ("vigil", "127.0.0.1:9430".to_string()),
                    ("prometheus", "127.0.0.1:9090".to_string()),
                ],
            },
        ),
    );
    assert_success(
        "promtool check config (test copy)",
        &promtool(&["check", "config", path_str(&path)]),
    );
    let copy = test_copy::load(&path);
    assert_eq!(copy["global"]["scrape_interval"].as_str(), Some(INTERVAL));
    assert_eq!(copy["global"]["evaluation_interval"].as_str(), Some(INTERVAL));
    assert_eq!(copy["global"]["external_labels"]["stack"].as_str(), Some("vigil"));
    assert_eq!(
        copy["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0].as_str(),
        Some("127.0.0.1:9093")
    );
    let jobs: Vec<(&str, &str)> = copy["scrape_configs"]
        .as_vec()
        .expect("scrape_configs")
        .iter()
        .map(|job| {
            (
                job["job_name"].as_str().expect("job_name"),
                job["static_configs"][0]["targets"][0].as_str().expect("target"),
            )
        })
        .collect();
    assert_eq!(jobs, [("vigil", "127.0.0.1:9430"), ("prometheus", "127.0.0.1:9090")]);
    let loaded: Vec<&str> = copy["rule_files"]
        .as_vec()
        .expect("rule_files")
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    assert_eq!(loaded, rule_files.iter().map(|p| path_str(p)).collect::<Vec<_>>());
}

#[test]
fn rfc3339_formats_and_parses() {
    let time = UNIX_EPOCH + Duration::from_millis(1_714_791_721_123);
    assert_eq!(rfc3339(time), "2024-05-04T03:02:01.123Z");
    assert_eq!(parse_rfc3339("2024-05-04T03:02:01.123Z"), Some(time));
    assert_eq!(
        parse_rfc3339("2024-05-04T05:02:01.123456789+02:00"),
        Some(UNIX_EPOCH + Duration::new(1_714_791_721, 123_456_789))
    );
    assert_eq!(
        parse_rfc3339("2024-02-29T00:00:00Z"),
        Some(UNIX_EPOCH + Duration::from_secs(1_709_164_800))
    );
    assert_eq!(
        parse_rfc3339("1999-12-31T23:59:59-00:00"),
        Some(UNIX_EPOCH + Duration::from_secs(946_684_799))
    );
    assert_eq!(parse_rfc3339("yesterday"), None);
}

#[test]
fn unpublished_names_the_vigil_metrics_without_samples() {
    let metrics = "# TYPE vigil_probe_runs counter\nvigil_probe_runs_total{probe=\"a\"} 3\n\
                   # TYPE vigil_kube_up gauge\nvigil_build_info 1\n";
    assert_eq!(
        unpublished(
            "sum(rate(vigil_probe_runs_total[5m])) / min(vigil_kube_up) * probe:vigil_x:ratio + vigil_build_info",
            metrics
        ),
        ["vigil_kube_up"]
    );
}
