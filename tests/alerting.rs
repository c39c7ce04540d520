//! Checks the static alerting stack with the real tools: Prometheus' `promtool`, Alertmanager's
//! `amtool` and server, and `docker-compose`; Debian packages `prometheus`,
//! `prometheus-alertmanager` and `docker-compose` (`scripts/install-test-deps.sh` installs
//! them). A missing tool fails its test and names the package; no check is ever skipped.
//!
//! Grafana cannot run here: the dashboards are checked as JSON (a small parser below, no
//! dependencies) and every panel's PromQL goes through `promtool check rules`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const ALERTMANAGER_YML: &str = "alertmanager/alertmanager.yml";

// ---------------------------------------------------------------------------------------------
// Running the tools
// ---------------------------------------------------------------------------------------------

fn repo(path: &str) -> PathBuf {
    Path::new(ROOT).join(path)
}

/// Starts `tool`, failing the test with the Debian package to install when it is missing.
fn command(tool: &str, package: &str, args: &[&str]) -> Output {
    match Command::new(tool).args(args).current_dir(ROOT).output() {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "`{tool}` is not installed: install the Debian package `{package}` \
             (scripts/install-test-deps.sh installs every tool these tests need)"
        ),
        Err(e) => panic!("cannot run `{tool}`: {e}"),
    }
}

fn promtool(args: &[&str]) -> Output {
    command("promtool", "prometheus", args)
}

fn amtool(args: &[&str]) -> Output {
    command("amtool", "prometheus-alertmanager", args)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// The files of a repository directory with the given extension, sorted; never empty.
fn files(dir: &str, extension: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(repo(dir))
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == extension))
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no *.{extension} file in {dir}");
    found
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("repository paths are UTF-8")
}

fn read(path: &str) -> String {
    fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// A directory under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!("vigil-alerting-{label}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).expect("create temporary directory");
        TempDir(dir)
    }

    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, contents).expect("write temporary file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

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

/// One child of the top-level route in alertmanager.yml, read line by line (no YAML library:
/// the file keeps one key per line under `routes:`).
#[derive(Debug, Default)]
struct Route {
    receiver: String,
    settings: BTreeMap<String, String>,
    matchers: Vec<String>,
}

/// The top-level route's own settings and its children, as written in alertmanager.yml.
fn routes() -> (BTreeMap<String, String>, Vec<Route>) {
    let config = read(ALERTMANAGER_YML);
    let mut root = BTreeMap::new();
    let mut children: Vec<Route> = Vec::new();
    let mut in_route = false;
    let mut in_children = false;
    let mut in_matchers = false;
    for line in config.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent == 0 {
            in_route = trimmed == "route:";
            in_children = false;
            continue;
        }
        if !in_route {
            continue;
        }
        let content = trimmed.split(" #").next().unwrap_or(trimmed).trim();
        if indent == 2 {
            in_children = content == "routes:";
            if let Some((key, value)) = content.split_once(':') {
                root.insert(key.trim().to_string(), value.trim().to_string());
            }
        } else if in_children && indent == 4 && content.starts_with("- ") {
            let mut route = Route::default();
            let (key, value) = content[2..].split_once(':').expect("route item is `- key: value`");
            assert_eq!(key.trim(), "receiver", "route items start with their receiver");
            route.receiver = value.trim().to_string();
            children.push(route);
            in_matchers = false;
        } else if in_children && indent == 6 {
            let route = children.last_mut().expect("a route item");
            let (key, value) = content.split_once(':').expect("route setting is `key: value`");
            in_matchers = key.trim() == "matchers";
            route.settings.insert(key.trim().to_string(), value.trim().to_string());
        } else if in_children && indent == 8 && in_matchers {
            let route = children.last_mut().expect("a route item");
            route.matchers.push(content.trim_start_matches("- ").to_string());
        }
    }
    assert!(!children.is_empty(), "no child routes found in {ALERTMANAGER_YML}");
    (root, children)
}

/// A Prometheus/Alertmanager duration (`30s`, `15m`, `1h`, `500ms`) in milliseconds.
fn millis(duration: &str) -> u64 {
    let duration = duration.trim().trim_matches('"');
    let split = duration
        .find(|c: char| c.is_ascii_alphabetic())
        .expect("duration has a unit");
    let (number, unit) = duration.split_at(split);
    let number: u64 = number.parse().unwrap_or_else(|_| panic!("bad duration {duration}"));
    number
        * match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => panic!("unknown duration unit {other}"),
        }
}

#[test]
fn ladder_steps_wait_15m_30m_1h_and_continue() {
    let (_, routes) = routes();
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
        assert_eq!(millis(&route.settings["group_wait"]), *wait, "group_wait of {receiver}");
        assert!(
            route
                .settings
                .get("mute_time_intervals")
                .is_some_and(|v| v.contains("maintenance")),
            "{receiver} is muted in the maintenance window"
        );
        let index = routes.iter().position(|r| r.receiver == *receiver).expect("present");
        assert!(
            i == 0 || index > previous_index,
            "{receiver} comes after the previous step"
        );
        previous_index = index;
        let continues = route.settings.get("continue").map(String::as_str) == Some("true");
        assert_eq!(continues, i + 1 < ladder.len(), "`continue` on {receiver}");
    }
    assert_eq!(millis(&step("vigil-whatsapp").settings["group_wait"]), 900_000);
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

fn scaled(duration: &str) -> String {
    format!("{}ms", (millis(duration) / TIME_SCALE).max(1))
}

/// A webhook sink: records (arrival, receiver = URL path, body) of every POST.
struct Sink {
    port: u16,
    received: Arc<Mutex<Vec<(Instant, String, String)>>>,
}

impl Sink {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind webhook sink");
        let port = listener.local_addr().expect("sink address").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Some((path, body)) = serve_one(stream) {
                    log.lock().expect("sink log").push((Instant::now(), path, body));
                }
            }
        });
        Sink { port, received }
    }

    /// (receiver, parsed payload) of everything received so far.
    fn payloads(&self) -> Vec<(Instant, String, Json)> {
        self.received
            .lock()
            .expect("sink log")
            .iter()
            .map(|(at, path, body)| {
                let payload = Json::parse(body).unwrap_or_else(|e| panic!("webhook body: {e}\n{body}"));
                (*at, path.trim_start_matches('/').to_string(), payload)
            })
            .collect()
    }
}

/// Reads one HTTP/1.1 request, answers 200 and closes; returns its path and body.
fn serve_one(mut stream: TcpStream) -> Option<(String, String)> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
    let path = head.split_whitespace().nth(1)?.to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buffer.len() < header_end + length {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buffer[header_end..]).into_owned();
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    Some((path, body))
}

/// A minimal HTTP/1.1 client call; returns (status code, body).
fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A UTC time in RFC 3339, as Alertmanager's API wants it.
fn rfc3339(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).expect("clock after 1970");
    let seconds = since_epoch.as_secs() as i64;
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60,
        since_epoch.subsec_millis()
    )
}

/// Alertmanager 0.25's server, killed when dropped.
struct Alertmanager(Child);

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real route tree and inhibition rules with durations divided by TIME_SCALE, every
/// receiver a webhook to the sink (URL path = receiver name), and no maintenance window (the
/// test must not depend on the day it runs).
fn scaled_config(sink_port: u16) -> String {
    let (root, children) = routes();
    let mut receivers: BTreeSet<String> = children.iter().map(|r| r.receiver.clone()).collect();
    receivers.insert(root["receiver"].clone());
    let mut out = String::from("route:\n");
    out += &format!("  receiver: {}\n", root["receiver"]);
    out += &format!("  group_by: {}\n", root["group_by"]);
    for key in ["group_wait", "group_interval", "repeat_interval"] {
        out += &format!("  {key}: {}\n", scaled(&root[key]));
    }
    out += "  routes:\n";
    for route in &children {
        out += &format!("    - receiver: {}\n      matchers:\n", route.receiver);
        for matcher in &route.matchers {
            out += &format!("        - '{matcher}'\n");
        }
        for (key, value) in &route.settings {
            match key.as_str() {
                "group_wait" | "group_interval" | "repeat_interval" => {
                    out += &format!("      {key}: {}\n", scaled(value));
                }
                "continue" | "group_by" => out += &format!("      {key}: {value}\n"),
                _ => {}
            }
        }
    }
    // The inhibition rules, verbatim.
    let config = read(ALERTMANAGER_YML);
    let start = config.find("\ninhibit_rules:").expect("inhibit_rules in the config") + 1;
    let end = config[start..]
        .find("\n# ---")
        .map(|i| start + i + 1)
        .expect("a section after inhibit_rules");
    out += &config[start..end];
    out += "receivers:\n";
    for receiver in receivers {
        out += &format!("  - name: {receiver}\n    webhook_configs:\n");
        out += &format!("      - url: http://127.0.0.1:{sink_port}/{receiver}\n        send_resolved: true\n");
    }
    out
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

fn alert(labels: &[(&str, &str)], ends_at: Option<SystemTime>) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("\"{k}\":\"{v}\"")).collect();
    let ends = ends_at
        .map(|t| format!(",\"endsAt\":\"{}\"", rfc3339(t)))
        .unwrap_or_default();
    format!("{{\"labels\":{{{}}}{ends}}}", labels.join(","))
}

#[test]
fn ladder_escalates_in_time_and_stops_for_resolved_groups_in_alertmanager() {
    let sink = Sink::start();
    let dir = TempDir::new("alertmanager");
    let config = dir.file("alertmanager.yml", &scaled_config(sink.port));
    assert_success(
        "amtool check-config (scaled ladder)",
        &amtool(&["check-config", path_str(&config)]),
    );
    let port = free_port();
    let _alertmanager = match Command::new("prometheus-alertmanager")
        .arg(format!("--config.file={}", path_str(&config)))
        .arg(format!("--storage.path={}", path_str(&dir.0.join("data"))))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(child) => Alertmanager(child),
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "`prometheus-alertmanager` is not installed: install the Debian package \
             `prometheus-alertmanager` (scripts/install-test-deps.sh)"
        ),
        Err(e) => panic!("cannot start prometheus-alertmanager: {e}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(http(port, "GET", "/-/ready", ""), Ok((200, _))) {
        assert!(Instant::now() < deadline, "Alertmanager did not become ready");
        thread::sleep(Duration::from_millis(100));
    }

    // api: DOWN and staying DOWN. billing: DOWN, fixed after 4.5s (between PagerDuty at 3s and
    // the phone at 6s). search: a warning. api also has a warning, muted by its critical.
    // gps-ingest asks for remediation.
    let post = |alerts: &[String]| {
        let (status, body) =
            http(port, "POST", "/api/v2/alerts", &format!("[{}]", alerts.join(","))).expect("post alerts");
        assert_eq!(status, 200, "posting alerts: {body}");
    };
    let started = Instant::now();
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
    thread::sleep(Duration::from_millis(4_500).saturating_sub(started.elapsed()));
    post(&[alert(
        &[
            ("alertname", "VigilProbeDown"),
            ("severity", "critical"),
            ("probe", "billing"),
        ],
        Some(SystemTime::now()),
    )]);
    // The manager step waits 1h / TIME_SCALE = 12s; leave room for the last flush.
    thread::sleep(Duration::from_millis(14_000).saturating_sub(started.elapsed()));

    // (receiver, alertname, probe, status of the alert) -> first arrival after `started`
    let mut seen: BTreeMap<(String, String, String, String), Duration> = BTreeMap::new();
    for (at, receiver, payload) in sink.payloads() {
        for alert in payload.get("alerts").and_then(Json::as_array).expect("alerts array") {
            let label = |name| {
                alert
                    .get("labels")
                    .and_then(|l| l.get(name))
                    .and_then(Json::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let status = alert
                .get("status")
                .and_then(Json::as_str)
                .expect("alert status")
                .to_string();
            seen.entry((receiver.clone(), label("alertname"), label("probe"), status))
                .or_insert(at.duration_since(started));
        }
    }
    let arrived = |receiver: &str, alertname: &str, probe: &str, status: &str| {
        seen.get(&(receiver.into(), alertname.into(), probe.into(), status.into()))
            .copied()
    };
    let summary = format!("{seen:#?}");

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
        !seen
            .keys()
            .any(|(_, alertname, probe, _)| alertname == "VigilProbeSlow" && probe == "api"),
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

/// A JSON value, as far as these checks need one.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Result<Json, String> {
        let mut parser = JsonParser {
            bytes: text.as_bytes(),
            at: 0,
        };
        parser.space();
        let value = parser.value()?;
        parser.space();
        if parser.at != parser.bytes.len() {
            return Err(format!("trailing characters at byte {}", parser.at));
        }
        Ok(value)
    }

    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<&Vec<Json>> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    /// Calls `visit` with every (key, value) member of every object, depth first.
    fn walk<'a>(&'a self, visit: &mut dyn FnMut(&'a str, &'a Json)) {
        match self {
            Json::Object(members) => {
                for (key, value) in members {
                    visit(key, value);
                    value.walk(visit);
                }
            }
            Json::Array(items) => items.iter().for_each(|item| item.walk(visit)),
            _ => {}
        }
    }
}

struct JsonParser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl JsonParser<'_> {
    fn error<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {}", self.at))
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            self.error(&format!("expected `{}`", byte as char))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        match self.peek() {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => Ok(Json::String(self.string()?)),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => self.error("expected a value"),
        }
    }

    fn literal(&mut self, word: &str, value: Json) -> Result<Json, String> {
        if self.bytes[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(value)
        } else {
            self.error("bad literal")
        }
    }

    fn object(&mut self) -> Result<Json, String> {
        self.expect(b'{')?;
        let mut members = Vec::new();
        self.space();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Json::Object(members));
        }
        loop {
            self.space();
            let key = self.string()?;
            if members.iter().any(|(k, _)| *k == key) {
                return self.error(&format!("duplicate key `{key}`"));
            }
            self.space();
            self.expect(b':')?;
            self.space();
            members.push((key, self.value()?));
            self.space();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Json::Object(members));
                }
                _ => return self.error("expected `,` or `}`"),
            }
        }
    }

    fn array(&mut self) -> Result<Json, String> {
        self.expect(b'[')?;
        let mut items = Vec::new();
        self.space();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Json::Array(items));
        }
        loop {
            self.space();
            items.push(self.value()?);
            self.space();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Json::Array(items));
                }
                _ => return self.error("expected `,` or `]`"),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self.bytes.get(self.at..self.at + 4).ok_or("truncated \\u escape")?;
        let digits = std::str::from_utf8(digits).map_err(|_| "bad \\u escape")?;
        let code = u32::from_str_radix(digits, 16).map_err(|_| format!("bad \\u escape at byte {}", self.at))?;
        self.at += 4;
        Ok(code)
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(byte) = self.peek() else {
                return self.error("unterminated string");
            };
            self.at += 1;
            match byte {
                b'"' => break,
                b'\\' => {
                    let Some(escape) = self.peek() else {
                        return self.error("unterminated escape");
                    };
                    self.at += 1;
                    let c = match escape {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let high = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&high) {
                                self.expect(b'\\')?;
                                self.expect(b'u')?;
                                let low = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return self.error("bad surrogate pair");
                                }
                                0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                            } else {
                                high
                            };
                            char::from_u32(code).ok_or(format!("bad code point at byte {}", self.at))?
                        }
                        _ => return self.error("bad escape"),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                0x00..=0x1f => return self.error("control character in string"),
                _ => out.push(byte),
            }
        }
        String::from_utf8(out).map_err(|_| format!("invalid UTF-8 before byte {}", self.at))
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.at;
        let digits = |p: &mut Self| {
            let from = p.at;
            while matches!(p.peek(), Some(b'0'..=b'9')) {
                p.at += 1;
            }
            p.at > from
        };
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        if self.peek() == Some(b'0') {
            self.at += 1;
        } else if !digits(self) {
            return self.error("bad number");
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if !digits(self) {
                return self.error("bad fraction");
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if !digits(self) {
                return self.error("bad exponent");
            }
        }
        let literal = std::str::from_utf8(&self.bytes[start..self.at]).map_err(|_| "bad number")?;
        literal
            .parse()
            .map(Json::Number)
            .map_err(|_| format!("bad number at byte {start}"))
    }
}

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

/// Every dashboard: (file name, parsed JSON).
fn dashboards() -> Vec<(String, Json)> {
    files("grafana/dashboards", "json")
        .iter()
        .map(|path| {
            let name = path.file_name().expect("file name").to_string_lossy().into_owned();
            let source = fs::read_to_string(path).expect("read dashboard");
            let json = Json::parse(&source).unwrap_or_else(|e| panic!("{name} is not valid JSON: {e}"));
            (name, json)
        })
        .collect()
}

/// Grafana's variable references in `expr`: `$name`, `${name}` and `${name:format}`.
fn variables_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let name: String = if let Some(braced) = rest.strip_prefix('{') {
            let end = braced.find('}').unwrap_or(braced.len());
            braced[..end].split(':').next().unwrap_or("").to_string()
        } else {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        if !name.is_empty() {
            names.push(name);
        }
    }
    names
}

/// `expr` with Grafana's variables replaced by values Prometheus can parse.
fn substitute(expr: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        let (name, used) = if let Some(braced) = rest.strip_prefix('{') {
            let end = braced.find('}').map_or(braced.len(), |e| e + 1);
            (braced[..end.saturating_sub(1)].split(':').next().unwrap_or(""), end + 1)
        } else {
            let len = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .count();
            (&rest[..len], len)
        };
        out.push_str(match name {
            "__rate_interval" => "5m",
            "__interval" => "1m",
            "__range" => "1h",
            "__range_s" | "__interval_s" => "3600",
            "__range_ms" | "__interval_ms" => "3600000",
            _ => "x",
        });
        rest = &rest[used.min(rest.len())..];
    }
    out.push_str(rest);
    out
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
                let expr = substitute(query);
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
        substitute(r#"rate(x{probe=~"$probe", ds="${datasource}"}[$__rate_interval]) / ${__range_s} [$__range]"#),
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
