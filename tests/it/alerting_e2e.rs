//! The alerting stack end to end, with real components only, all on 127.0.0.1: local targets
//! whose health the test switches (an HTTPS server, and an Elasticsearch stand-in answering in
//! its documented wire format, as no Elasticsearch runs here), two `vigil run` replicas probing
//! them (an HA pair: same config, same job, one state folder each), Prometheus 2.42 scraping
//! both and evaluating the shipped rules, Alertmanager 0.25 routing with the shipped routes,
//! and a webhook recorder standing in for every receiver. Debian packages `prometheus` and
//! `prometheus-alertmanager` (`scripts/install-test-deps.sh` installs them); a missing one fails
//! the test and names the package. Every process the test starts is stopped when it ends, also
//! when it panics (drop guards).
//!
//! Prometheus and Alertmanager run on test copies of prometheus/prometheus.yml, rules/*.yml and
//! alertmanager/alertmanager.yml, made from the shipped files when the test runs
//! (tests/it/stack/test_copy.rs, tested below). Scaling: scrape and evaluation every second, and
//! time divided by [`TIME_SCALE`] = 60 for every `for:`, `keep_firing_for:`, escalation wait
//! and Alertmanager interval, so the critical ladder's 30s / 15m / 30m / 1h become 0.5s / 15s /
//! 30s / 60s. One exception: VigilExporterAbsent keeps a `for` of 20s, as its scaled 2s would be
//! shorter than the restart the test makes (in production, 2m against a restart of a second).
//! The range windows inside the rules' expressions are not scaled.
//!
//! The incident (times from when the test breaks the targets, all in one run of about 100s):
//! - `api` stays DOWN; at +20s both vigils restart (SIGTERM, start again on the same port and
//!   state folder): no receiver gets a resolved notice or a second page, and the later steps
//!   still come on time (the phone at +30s, not 30s after the restart).
//! - `orders` (elasticsearch) has stale data from +0s, and its source fails (HTTP 500) from +8s:
//!   the ladder goes on, nothing is resolved until the data is fresh again.
//! - `billing` recovers right after its page step (the phone and the manager never hear of
//!   it), then goes DOWN again at +25s, a second outage soon after the first: its team and page
//!   steps come again, each its wait after the second outage began, never earlier.
//! - at +50s Prometheus restarts (SIGTERM, start again on its data): nothing resolves, nothing
//!   pages again, the manager's step still comes at +60s.
//! - `api` and `orders` recover once the manager has them: every step gets one resolved
//!   notice, with the downtime.
//!
//! For every receiver and probe the test asserts the exact sequence of notifications, one per
//! step and incident across both replicas, each within [`SLACK`] after its wait. Then every
//! panel query of grafana/dashboards/*.json runs against Prometheus: see [`check_dashboards`].

use crate::common;
use crate::stack;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{MethodRouter, get, post};
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
/// The probe that recovers after the page step, then fails again.
const SHORT: &str = "billing";
/// The freshness probe whose source goes stale, then fails.
const FRESH: &str = "orders";
/// The receivers of each step of the critical ladder.
const STEPS: [(&str, &[&str]); 4] = [
    ("team", &["team"]),
    ("page", &["pagerduty", "sms", "vigil-whatsapp"]),
    ("phone", &["phone"]),
    ("manager", &["manager"]),
];
/// How late after its wait a step may notify: scrape, probe interval, rule evaluation,
/// Alertmanager's group wait and interval, sending.
const SLACK: Duration = Duration::from_secs(6);
/// When the test breaks and mends things, from the start of the incident.
const SOURCE_FAILS: Duration = Duration::from_secs(8);
const RESTART: Duration = Duration::from_secs(20);
const SECOND_OUTAGE: Duration = Duration::from_secs(25);
const PROMETHEUS_RESTART: Duration = Duration::from_secs(50);

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

/// What the Elasticsearch stand-in answers.
const ES_FRESH: u8 = 0;
const ES_STALE: u8 = 1;
const ES_FAILING: u8 = 2;

/// `POST /orders/_search` as Elasticsearch 8 answers a max aggregation: the newest record 5s
/// old (fresh), or written at `stale_at` (stale), or a 500 with Elasticsearch's error body.
fn elasticsearch(mode: Arc<AtomicU8>, stale_at: SystemTime) -> MethodRouter {
    post(move || {
        let mode = Arc::clone(&mode);
        async move {
            let newest = match mode.load(Ordering::SeqCst) {
                ES_FRESH => SystemTime::now() - Duration::from_secs(5),
                ES_STALE => stale_at,
                _ => {
                    let body = r#"{"error":{"root_cause":[{"type":"search_phase_execution_exception","reason":"all shards failed"}],"type":"search_phase_execution_exception","reason":"all shards failed"},"status":500}"#;
                    return (StatusCode::INTERNAL_SERVER_ERROR, body.to_string());
                }
            };
            let ms = newest.duration_since(UNIX_EPOCH).expect("clock").as_millis();
            let body = format!(
                r#"{{"took":3,"timed_out":false,"_shards":{{"total":1,"successful":1,"skipped":0,"failed":0}},"hits":{{"total":{{"value":42,"relation":"eq"}},"max_score":null,"hits":[]}},"aggregations":{{"newest":{{"value":{ms},"value_as_string":"{}"}}}}}}"#,
                rfc3339(newest)
            );
            (StatusCode::OK, body)
        }
    })
}

/// Everything the test runs. Fields drop in order: the servers stop before their files go.
struct Stack {
    prometheus: Server,
    alertmanager: Server,
    vigils: Vec<Running>,
    recorder: Recorder,
    /// The health of LASTING's and SHORT's endpoints, and what the Elasticsearch stand-in says.
    lasting: Arc<AtomicBool>,
    short: Arc<AtomicBool>,
    elasticsearch: Arc<AtomicU8>,
    /// When Prometheus started.
    started: SystemTime,
    /// How to start Prometheus again.
    prometheus_config: std::path::PathBuf,
    _ca: TestCa,
    _dir: TempDir,
}

/// Prometheus re-sends a firing alert every `--rules.alert.resend-delay` (1m), and drops what
/// it sends before it has discovered the Alertmanager, which the Watchdog, firing at the first
/// evaluation, may be; each alert it sends lasts 4 resend delays unless re-sent, which is what
/// bridges a Prometheus restart (4m in production, against a restart of seconds). Not scaled to
/// 1s: 5s makes the bridge 20s, longer than a restart of Prometheus on a busy 2-core machine
/// (its WAL replayed, the Alertmanager found, the `for` states restored: up to 7s seen), and
/// the Watchdog's resend still comes within 5s.
const RESEND_DELAY: &str = "--rules.alert.resend-delay=5s";

impl Stack {
    fn start() -> Stack {
        let dir = TempDir::new("e2e");
        let recorder = Recorder::start();

        // The targets: HTTPS on 127.0.0.1 (so the certificate panels have data), one path per
        // probe, and the Elasticsearch stand-in.
        let ca = TestCa::new();
        let (cert, key) = ca.leaf("target", -1, 30);
        let lasting = Arc::new(AtomicBool::new(true));
        let short = Arc::new(AtomicBool::new(true));
        let elasticsearch_mode = Arc::new(AtomicU8::new(ES_FRESH));
        let app = Router::new()
            .route(&format!("/{LASTING}"), health(Arc::clone(&lasting)))
            .route(&format!("/{SHORT}"), health(Arc::clone(&short)));
        let target = common::serve_tls_in_thread(app, cert, key);
        let stale_at = SystemTime::now() - Duration::from_secs(600);
        let es = common::serve_in_thread(Router::new().route(
            &format!("/{FRESH}/_search"),
            elasticsearch(Arc::clone(&elasticsearch_mode), stale_at),
        ));

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
                "defaults:\n  interval: {INTERVAL}\n  timeout: 800ms\nlabels: {{env: e2e}}\nprobes:\n{}{}  \
                 - name: {FRESH}\n    kind: elasticsearch\n    url: http://{es}\n    index: {FRESH}\n    \
                 timestamp_field: '@timestamp'\n    max_age: 1m\n    warn_age: 30s\n    labels: {{team: data}}\n",
                probe(LASTING),
                probe(SHORT)
            ),
        );
        let vigils = vec![Running::start(&config, &[]), Running::start(&config, &[])];

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
                let copy = test_copy::rules_with(shipped, TIME_SCALE, &[("VigilExporterAbsent", "20s")]);
                dir.file(&format!("rules/{name}"), &copy)
            })
            .collect();
        let port = free_port();
        let mut targets: Vec<(&str, String)> = vigils
            .iter()
            .map(|v| ("vigil", format!("127.0.0.1:{}", v.port)))
            .collect();
        targets.push(("alertmanager", format!("127.0.0.1:{}", alertmanager.port)));
        targets.push(("prometheus", format!("127.0.0.1:{port}")));
        let prometheus_config = dir.file(
            "prometheus.yml",
            &test_copy::prometheus_config(
                &repo(PROMETHEUS_YML),
                &PrometheusCopy {
                    interval: INTERVAL,
                    rule_files: &rule_files,
                    alertmanager: &format!("127.0.0.1:{}", alertmanager.port),
                    targets: &targets,
                },
            ),
        );
        assert_success(
            "promtool check config (test copy, with the rule copies)",
            &promtool(&["check", "config", path_str(&prometheus_config)]),
        );
        let started = SystemTime::now();
        let prometheus = stack::prometheus(&prometheus_config, &dir.0, port, &[RESEND_DELAY]);

        Stack {
            prometheus,
            alertmanager,
            vigils,
            recorder,
            lasting,
            short,
            elasticsearch: elasticsearch_mode,
            started,
            prometheus_config,
            _ca: ca,
            _dir: dir,
        }
    }

    /// Stops Prometheus and starts it again on the same port, config and data.
    fn restart_prometheus(&mut self) {
        let port = self.prometheus.port;
        self.prometheus.stop();
        self.prometheus = stack::prometheus(&self.prometheus_config, &self._dir.0, port, &[RESEND_DELAY]);
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

/// The scaled wait of each step of the critical ladder, from the shipped rules.
fn scaled_waits() -> BTreeMap<String, Duration> {
    let text = stack::read("rules/vigil-escalation.yml");
    let doc = &yaml_rust2::YamlLoader::load_from_str(&text).expect("YAML")[0];
    let mut waits = BTreeMap::new();
    for rule in doc["groups"][0]["rules"].as_vec().expect("rules") {
        let labels = &rule["labels"];
        if rule["record"].as_str() == Some("vigil:escalation_wait:seconds")
            && labels["severity"].as_str() == Some("critical")
        {
            let seconds: f64 = rule["expr"]
                .as_str()
                .and_then(|e| e.trim().strip_prefix("vector(")?.strip_suffix(')')?.parse().ok())
                .expect("vector(seconds)");
            let step = labels["step"].as_str().expect("step").to_string();
            waits.insert(step, Duration::from_secs_f64(seconds / TIME_SCALE as f64));
        }
    }
    assert_eq!(waits.len(), 4, "the critical ladder has four steps: {waits:?}");
    waits
}

fn secs(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

/// `vigil_probe_level_since_timestamp_seconds` of `probe` on every vigil, as scraped by the test.
fn since_on_each_vigil(stack: &Stack, probe: &str) -> Vec<String> {
    stack
        .vigils
        .iter()
        .map(|v| {
            let metrics = v.get("/metrics");
            let prefix = format!("vigil_probe_level_since_timestamp_seconds{{probe=\"{probe}\"");
            metrics
                .lines()
                .find(|l| l.starts_with(&prefix))
                .and_then(|l| l.rsplit(' ').next())
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// The notifications of `receiver` about `probe` (any alert), as (status, arrival) in order.
fn sequence(deliveries: &[Delivery], receiver: &str, alertname: &str, probe: &str) -> Vec<(String, SystemTime)> {
    deliveries
        .iter()
        .filter(|d| d.receiver == receiver && d.label("alertname") == alertname && d.label("probe") == probe)
        .map(|d| (d.status.clone(), d.at))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The end-to-end test
// ---------------------------------------------------------------------------------------------

#[test]
fn ladder_steps_on_time_through_a_restart_a_second_outage_and_a_failing_source() {
    let _turn = crate::common::exclusive();
    let mut stack = Stack::start();
    let waits = scaled_waits();
    let wait = |step: &str| waits[step];

    // Warm-up: every probe UP on both vigils, every scrape target up, Alertmanager known, the
    // Watchdog through to the dead man's switch, nothing else firing.
    wait_until("every probe UP on both vigils", Duration::from_secs(30), || {
        let up = stack.query(r#"vigil_probe_status{status="up"} == 1"#).ok()?;
        (up.len() == 6).then_some(())
    });
    wait_until("every scrape target up", Duration::from_secs(30), || {
        let up = stack.query("up == 1").ok()?;
        (up.len() == 4).then_some(())
    });
    wait_until("Prometheus to know Alertmanager", Duration::from_secs(30), || {
        let data = prometheus_api(stack.prometheus.port, "/api/v1/alertmanagers").ok()?;
        let active = data.get("activeAlertmanagers")?.as_array()?;
        (!active.is_empty()).then_some(())
    });
    wait_until("the Watchdog at the dead man's switch", Duration::from_secs(30), || {
        webhooks::first(&stack.recorder.deliveries(), "deadmansswitch", "Watchdog", "", "firing").map(|_| ())
    });
    wait_until("no alert but the Watchdog", Duration::from_secs(40), || {
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

    // The incident.
    let incident = SystemTime::now();
    let at = |offset: Duration| incident + offset;
    stack.lasting.store(false, Ordering::SeqCst);
    stack.short.store(false, Ordering::SeqCst);
    stack.elasticsearch.store(ES_STALE, Ordering::SeqCst);
    let since = |t: SystemTime| secs(t.duration_since(incident).unwrap_or(Duration::ZERO));
    let mut source_failed = None;
    let mut short_fixed = None;
    let mut restarted: Option<(SystemTime, SystemTime)> = None;
    let mut since_before_restart = Vec::new();
    let mut since_after_restart = Vec::new();
    let mut second_outage = None;
    let mut short_fixed_again = None;
    let mut prometheus_restarted = None;
    let mut lasting_fixed = None;
    let deliveries: Vec<Delivery> = wait_until("the incident to run its course", Duration::from_secs(180), || {
        let deliveries = stack.recorder.deliveries();
        let got = |receiver: &str, probe: &str, status: &str| {
            deliveries
                .iter()
                .filter(|d| d.is(receiver, "VigilProbeDown", probe, status))
                .count()
        };
        let now = SystemTime::now();
        if source_failed.is_none() && now >= at(SOURCE_FAILS) {
            stack.elasticsearch.store(ES_FAILING, Ordering::SeqCst);
            source_failed = Some(now);
        }
        if short_fixed.is_none() && got("pagerduty", SHORT, "firing") == 1 {
            stack.short.store(true, Ordering::SeqCst);
            short_fixed = Some(now);
        }
        if restarted.is_none() && now >= at(RESTART) {
            since_before_restart = since_on_each_vigil(&stack, LASTING);
            let stopped = SystemTime::now();
            for vigil in &mut stack.vigils {
                vigil.restart();
            }
            restarted = Some((stopped, SystemTime::now()));
            since_after_restart = since_on_each_vigil(&stack, LASTING);
        }
        if second_outage.is_none() && short_fixed.is_some() && now >= at(SECOND_OUTAGE) {
            stack.short.store(false, Ordering::SeqCst);
            second_outage = Some(now);
        }
        if short_fixed_again.is_none() && second_outage.is_some() && got("pagerduty", SHORT, "firing") == 2 {
            stack.short.store(true, Ordering::SeqCst);
            short_fixed_again = Some(now);
        }
        if prometheus_restarted.is_none() && now >= at(PROMETHEUS_RESTART) {
            stack.restart_prometheus();
            prometheus_restarted = Some((now, SystemTime::now()));
        }
        if lasting_fixed.is_none() && got("manager", LASTING, "firing") == 1 && got("manager", FRESH, "firing") == 1 {
            stack.lasting.store(true, Ordering::SeqCst);
            stack.elasticsearch.store(ES_FRESH, Ordering::SeqCst);
            lasting_fixed = Some(now);
        }
        let resolved = |probe: &str| {
            STEPS
                .iter()
                .flat_map(|(_, receivers)| receivers.iter())
                .all(|r| got(r, probe, "resolved") == 1)
        };
        let short_done = short_fixed_again.is_some()
            && STEPS[..2]
                .iter()
                .flat_map(|(_, receivers)| receivers.iter())
                .all(|r| got(r, SHORT, "resolved") == 2);
        // Past the phone's step of SHORT's second outage, with room for a late notification.
        let quiet_past_phone = second_outage.is_some_and(|t| now > t + wait("phone") + SLACK);
        (resolved(LASTING) && resolved(FRESH) && short_done && quiet_past_phone).then_some(deliveries)
    });
    let summary = format!(
        "notifications (seconds after the incident began):\n{}",
        webhooks::summary(&deliveries, incident)
    );
    let (short_fixed, second_outage) = (short_fixed.expect("fixed"), second_outage.expect("second"));
    let (short_fixed_again, lasting_fixed) = (short_fixed_again.expect("fixed"), lasting_fixed.expect("fixed"));
    let (stopped, back) = restarted.expect("restarted");
    let (prometheus_stopped, prometheus_back) = prometheus_restarted.expect("Prometheus restarted");
    eprintln!(
        "source failed at +{}, {SHORT} fixed at +{}, vigils restarted at +{} (back at +{}), {SHORT} down again at +{}, \
         fixed at +{}, Prometheus restarted at +{} (back at +{}), {LASTING} and {FRESH} fixed at +{}\n{summary}",
        since(source_failed.expect("failed")),
        since(short_fixed),
        since(stopped),
        since(back),
        since(second_outage),
        since(short_fixed_again),
        since(prometheus_stopped),
        since(prometheus_back),
        since(lasting_fixed),
    );

    // The restart kept when each level began.
    assert_eq!(
        since_before_restart, since_after_restart,
        "vigil_probe_level_since_timestamp_seconds of {LASTING} changed across the restart"
    );

    // Exact sequences per receiver: one firing per step and incident (two replicas, one
    // notification), its resolved notice after the fix and never before, nothing else.
    let check = |probe: &str, receiver: &str, step: &str, incidents: &[(SystemTime, SystemTime)]| {
        let got = sequence(&deliveries, receiver, "VigilProbeDown", probe);
        let statuses: Vec<&str> = got.iter().map(|(s, _)| s.as_str()).collect();
        let expected: Vec<&str> = incidents.iter().flat_map(|_| ["firing", "resolved"]).collect();
        assert_eq!(statuses, expected, "{receiver} about {probe}\n{summary}");
        for (i, (began, fixed)) in incidents.iter().enumerate() {
            let (fired, resolved) = (got[2 * i].1, got[2 * i + 1].1);
            let after = fired.duration_since(*began).unwrap_or(Duration::ZERO);
            assert!(
                fired >= *began + wait(step),
                "{receiver} ({step}) heard of {probe} {} after incident {i} began, before its wait of {}\n{summary}",
                secs(after),
                secs(wait(step))
            );
            assert!(
                fired <= *began + wait(step) + SLACK,
                "{receiver} ({step}) heard of {probe} {} after incident {i} began, long after its wait of {}\n{summary}",
                secs(after),
                secs(wait(step))
            );
            assert!(
                resolved > *fixed,
                "{receiver}: {probe} resolved before it was fixed\n{summary}"
            );
        }
    };
    let quiet = |probe: &str, receiver: &str| {
        assert!(
            sequence(&deliveries, receiver, "VigilProbeDown", probe).is_empty(),
            "{receiver} heard of {probe}, fixed before its step\n{summary}"
        );
    };
    for (step, receivers) in STEPS {
        for receiver in receivers {
            check(LASTING, receiver, step, &[(incident, lasting_fixed)]);
            check(FRESH, receiver, step, &[(incident, lasting_fixed)]);
            if matches!(step, "team" | "page") {
                check(
                    SHORT,
                    receiver,
                    step,
                    &[(incident, short_fixed), (second_outage, short_fixed_again)],
                );
            } else {
                quiet(SHORT, receiver);
            }
        }
    }

    // What the notifications say: labels of the probe (not of one replica), the reason of the
    // last failure, a stale source named as such, the downtime on the resolved notice.
    let find = |receiver: &str, probe: &str, status: &str| {
        webhooks::first(&deliveries, receiver, "VigilProbeDown", probe, status)
            .unwrap_or_else(|| panic!("{receiver} never got {status} for {probe}\n{summary}"))
    };
    let team = find("team", LASTING, "firing");
    for (label, value) in [
        ("severity", "critical"),
        ("step", "team"),
        ("status", "down"),
        ("kind", "http"),
        ("env", "e2e"),
        ("team", "platform"),
        ("instance", ""),
    ] {
        assert_eq!(team.label(label), value, "label {label} of {team:?}");
    }
    let annotation = |d: &Delivery, name: &str| d.annotations.get(name).cloned().unwrap_or_default();
    assert_eq!(annotation(team, "summary"), "Probe api is DOWN", "{team:?}");
    assert_eq!(annotation(find("manager", LASTING, "firing"), "reason"), "status");
    let stale = find("team", FRESH, "firing");
    assert_eq!(annotation(stale, "summary"), "Data of orders is stale", "{stale:?}");
    assert_eq!(annotation(stale, "reason"), "stale", "{stale:?}");
    // By the manager's step the source had been failing for a minute: the reason says so.
    assert_eq!(annotation(find("manager", FRESH, "firing"), "reason"), "status");
    let resolved = find("manager", LASTING, "resolved");
    let down_for = annotation(resolved, "down_for");
    assert!(
        down_for.starts_with("1m ") || down_for == "1m",
        "the resolved notice says how long it was down: {resolved:?}"
    );

    // Nothing else reached anyone: the Watchdog goes to the dead man's switch only, change
    // notices to the changes channel, budget burns (their windows are not scaled) to the ticket
    // queue; no page, reminder or resolved notice from the restart.
    let pings = deliveries.iter().filter(|d| d.receiver == "deadmansswitch").count();
    assert!(pings >= 3, "only {pings} Watchdog pings\n{summary}");
    for d in &deliveries {
        let alertname = d.label("alertname");
        let allowed = match d.receiver.as_str() {
            "deadmansswitch" => alertname == "Watchdog" && d.status == "firing",
            "team-changes" => alertname == "VigilProbeLevelChanged" && d.status == "firing",
            "ticket" => alertname.starts_with("VigilErrorBudgetBurn"),
            _ => alertname == "VigilProbeDown",
        };
        assert!(allowed, "unexpected notification {d:?}\n{summary}");
    }
    // The change notices said DOWN and UP again for each probe.
    for probe in [LASTING, SHORT, FRESH] {
        for status in ["down", "up"] {
            assert!(
                deliveries
                    .iter()
                    .any(|d| d.receiver == "team-changes" && d.label("probe") == probe && d.label("status") == status),
                "no change notice of {probe} to {status}\n{summary}"
            );
        }
    }

    check_dashboards(&stack);
}

// ---------------------------------------------------------------------------------------------
// Dashboards against real data
// ---------------------------------------------------------------------------------------------

/// The families of metrics this test's vigils do not publish, by name prefix: the Docker and
/// Kubernetes inventories (not watched here), the receiver's, reminders.
const NOT_YET: [&str; 11] = [
    "vigil_docker_",
    "vigil_container_",
    "vigil_kube_",
    "vigil_remediation_",
    "vigil_notifications_",
    // Only probes with `remind_every` publish it.
    "vigil_probe_reminder_",
    // Only probes with `retries` publish it.
    "vigil_probe_retries_total",
    // Only while a probe is DOWN (every probe is UP again when the dashboards are checked).
    "vigil_probe_consecutive_failures",
    "vigil_probe_last_success_timestamp_seconds",
    // Only with `metrics.detail: true`.
    "vigil_probe_http_duration_seconds",
    "vigil_probe_http_status_code",
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
    let metrics = stack.vigils[0].get("/metrics");
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
    let sends_resolved = |name: &str| {
        let receiver = original["receivers"]
            .as_vec()
            .expect("receivers")
            .iter()
            .find(|r| r["name"].as_str() == Some(name))
            .expect("receiver");
        let configs: Vec<bool> = receiver
            .as_hash()
            .expect("receiver")
            .iter()
            .filter(|(k, _)| k.as_str().is_some_and(|k| k.ends_with("_configs")))
            .flat_map(|(_, v)| v.as_vec().expect("configs").iter())
            .map(|c| {
                c["send_resolved"]
                    .as_bool()
                    .expect("every shipped integration says send_resolved")
            })
            .collect();
        configs[0]
    };
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
        assert_eq!(resolved, Some(sends_resolved(name)), "send_resolved of {name}");
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
    assert_eq!(manager.repeat_interval.as_deref(), Some("720000ms"));
}

#[test]
fn test_copy_of_rules_divides_every_for_and_wait_and_changes_nothing_else() {
    let dir = TempDir::new("copy-rules");
    let mut copies = Vec::new();
    let (mut scaled, mut waits) = (0, 0);
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
                for field in ["for", "keep_firing_for"] {
                    let key = yaml_rust2::Yaml::String(field.to_string());
                    let original_for = original_rule.as_mut_hash().expect("rule").remove(&key);
                    let copy_for = copy_rule.as_mut_hash().expect("rule").remove(&key);
                    let expected = original_for.map(|d| scale(d.as_str().expect("duration"), TIME_SCALE));
                    assert_eq!(
                        expected.as_deref(),
                        copy_for.as_ref().and_then(|d| d.as_str()),
                        "{name}: {field}"
                    );
                    scaled += usize::from(expected.is_some());
                }
                let record = original_rule["record"].as_str().unwrap_or_default().to_string();
                if record.ends_with("_wait:seconds") {
                    let key = yaml_rust2::Yaml::String("expr".to_string());
                    let seconds = |rule: &mut yaml_rust2::Yaml| -> f64 {
                        let expr = rule.as_mut_hash().expect("rule").remove(&key).expect("expr");
                        let expr = expr.as_str().expect("expr").trim().to_string();
                        expr.strip_prefix("vector(")
                            .and_then(|e| e.strip_suffix(')'))
                            .and_then(|e| e.parse().ok())
                            .unwrap_or_else(|| panic!("{name}: {record} is {expr}"))
                    };
                    let (original_seconds, copy_seconds) = (seconds(&mut original_rule), seconds(&mut copy_rule));
                    assert!(
                        (copy_seconds - original_seconds / TIME_SCALE as f64).abs() < 1e-9,
                        "{name}: {record} {original_seconds} became {copy_seconds}"
                    );
                    waits += 1;
                }
                assert_eq!(original_rule, copy_rule, "{name}: only durations and waits change");
            }
        }
        copies.push(path);
    }
    assert!(
        scaled >= 20,
        "only {scaled} `for` and `keep_firing_for` durations found"
    );
    assert!(waits >= 10, "only {waits} escalation waits found");
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
