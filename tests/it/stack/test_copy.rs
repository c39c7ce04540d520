//! Test copies of the shipped configs, made from the shipped files when a test runs, so they
//! cannot drift from them. They change only what a test on one machine needs:
//!
//! - time: every `for:` and `keep_firing_for:` of the rules, the escalation waits they read
//!   (`vigil:escalation_wait:seconds`, `vigil:alert_wait:seconds`) and every `group_wait`,
//!   `group_interval` and `repeat_interval` of Alertmanager's routes is divided by one factor
//!   (see [`scale`]);
//! - Alertmanager: every receiver keeps its name and becomes one webhook to `<webhooks>/<name>`
//!   that sends resolved notices exactly when the original integrations do; `*_file` secrets
//!   are dropped; routes lose their mute/active time intervals (a test must not depend on the day
//!   it runs); templates are found by absolute path; inhibition is untouched;
//! - Prometheus: the given scrape and evaluation interval, rule files, Alertmanager, and
//!   loopback addresses for the jobs that run in the test (the others are left out).
//!
//! [`one_receiver_config`] makes another kind of copy, for tests that run the real receiver
//! behind Alertmanager: one shipped receiver exactly as shipped (its webhook's URL and
//! `credentials_file` pointed at the test's), every alert routed to it.
//!
//! YAML goes through `yaml-rust2`, a dependency of vigil already.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use yaml_rust2::yaml::Hash;
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

use super::{millis, path_str};

/// `duration` divided by `factor`, in milliseconds for Prometheus and Alertmanager (`30s` / 60
/// is `500ms`); zero stays zero and nothing else becomes zero.
pub fn scale(duration: &str, factor: u64) -> String {
    match millis(duration) {
        0 => "0s".to_string(),
        ms => format!("{}ms", (ms / factor).max(1)),
    }
}

/// The single YAML document in `path`.
pub fn load(path: &Path) -> Yaml {
    let source = fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut docs = YamlLoader::load_from_str(&source).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(docs.len(), 1, "{} holds one YAML document", path.display());
    docs.remove(0)
}

fn dump(doc: &Yaml) -> String {
    let mut out = String::new();
    YamlEmitter::new(&mut out).dump(doc).expect("emit YAML");
    out.push('\n');
    out
}

fn key(name: &str) -> Yaml {
    Yaml::String(name.to_string())
}

fn mapping<'a>(node: &'a mut Yaml, what: &str) -> &'a mut Hash {
    node.as_mut_hash().unwrap_or_else(|| panic!("{what} is not a mapping"))
}

fn list<'a>(node: Option<&'a mut Yaml>, what: &str) -> &'a mut Vec<Yaml> {
    node.and_then(Yaml::as_mut_vec)
        .unwrap_or_else(|| panic!("{what} is not a list"))
}

/// A list with one mapping `{targets: [addresses...]}`, Prometheus' `static_configs`.
fn static_configs(addresses: &[&str]) -> Yaml {
    let mut config = Hash::new();
    config.insert(key("targets"), Yaml::Array(addresses.iter().map(|a| key(a)).collect()));
    Yaml::Array(vec![Yaml::Hash(config)])
}

/// The test copy of the shipped alertmanager.yml: see the module's documentation.
pub fn alertmanager_config(shipped: &Path, time_scale: u64, webhooks: &str) -> String {
    let mut doc = load(shipped);
    drop_secret_files(&mut doc);
    let dir = shipped.parent().expect("the config's directory");
    let root = mapping(&mut doc, "alertmanager.yml");
    if let Some(globs) = root.get_mut(&key("templates")) {
        for glob in list(Some(globs), "templates") {
            let relative = glob.as_str().expect("a template glob");
            *glob = key(path_str(&dir.join(relative)));
        }
    }
    scale_route(root.get_mut(&key("route")).expect("a top-level route"), time_scale);
    for receiver in list(root.get_mut(&key("receivers")), "receivers") {
        *receiver = webhook_receiver(receiver, webhooks);
    }
    dump(&doc)
}

/// Removes every `*_file` key: secrets the test machine does not have.
fn drop_secret_files(node: &mut Yaml) {
    match node {
        Yaml::Hash(hash) => {
            let secrets: Vec<Yaml> = hash
                .keys()
                .filter(|k| k.as_str().is_some_and(|k| k.ends_with("_file")))
                .cloned()
                .collect();
            for secret in secrets {
                hash.remove(&secret);
            }
            hash.values_mut().for_each(drop_secret_files);
        }
        Yaml::Array(items) => items.iter_mut().for_each(drop_secret_files),
        _ => {}
    }
}

fn scale_route(route: &mut Yaml, time_scale: u64) {
    let route = mapping(route, "a route");
    for name in ["group_wait", "group_interval", "repeat_interval"] {
        if let Some(value) = route.get_mut(&key(name)) {
            *value = key(&scale(value.as_str().expect("a duration"), time_scale));
        }
    }
    route.remove(&key("mute_time_intervals"));
    route.remove(&key("active_time_intervals"));
    if let Some(children) = route.get_mut(&key("routes")) {
        for child in list(Some(children), "routes") {
            scale_route(child, time_scale);
        }
    }
}

/// `receiver` as one webhook to `<webhooks>/<name>`; `send_resolved` as its integrations have it
/// (set or Alertmanager 0.25's default: false for email, Slack and WeChat, true for the rest).
fn webhook_receiver(receiver: &Yaml, webhooks: &str) -> Yaml {
    let name = receiver["name"].as_str().expect("a receiver's name");
    let mut send_resolved = BTreeSet::new();
    for (field, configs) in receiver.as_hash().expect("a receiver is a mapping") {
        let Some(integration) = field.as_str().and_then(|f| f.strip_suffix("_configs")) else {
            continue;
        };
        let default = !matches!(integration, "email" | "slack" | "wechat");
        for config in configs.as_vec().expect("a list of configs") {
            send_resolved.insert(config["send_resolved"].as_bool().unwrap_or(default));
        }
    }
    assert!(
        send_resolved.len() <= 1,
        "receiver {name}: its integrations disagree on send_resolved, one webhook cannot stand for them"
    );
    let mut copy = Hash::new();
    copy.insert(key("name"), key(name));
    // A receiver without integrations stays without: it notifies nobody.
    if let Some(send_resolved) = send_resolved.into_iter().next() {
        let mut webhook = Hash::new();
        webhook.insert(key("url"), Yaml::String(format!("{webhooks}/{name}")));
        webhook.insert(key("send_resolved"), Yaml::Boolean(send_resolved));
        copy.insert(key("webhook_configs"), Yaml::Array(vec![Yaml::Hash(webhook)]));
    }
    Yaml::Hash(copy)
}

/// Where the Alertmanager of [`one_receiver_config`] sends, and how soon.
pub struct OneReceiver<'a> {
    /// The shipped receiver's name (e.g. `vigil-receiver`).
    pub name: &'a str,
    /// Its webhook's URL in the test.
    pub url: &'a str,
    /// The file holding the bearer token, for `http_config.authorization.credentials_file`.
    pub credentials_file: &'a Path,
    /// The route's `group_wait`, `group_interval` and `repeat_interval`.
    pub group_wait: &'a str,
    pub group_interval: &'a str,
    pub repeat_interval: &'a str,
}

/// An Alertmanager config with one route, the shipped top-level route's `group_by` and the given
/// waits, to the shipped receiver `copy.name`, which must be a single webhook authenticating
/// with a bearer token from a file; only its `url` and `credentials_file` change.
pub fn one_receiver_config(shipped: &Path, copy: &OneReceiver) -> String {
    let doc = load(shipped);
    let mut receiver = doc["receivers"]
        .as_vec()
        .and_then(|receivers| receivers.iter().find(|r| r["name"].as_str() == Some(copy.name)))
        .unwrap_or_else(|| panic!("{} has no receiver `{}`", shipped.display(), copy.name))
        .clone();
    let what = format!("receiver {}", copy.name);
    let webhooks = list(mapping(&mut receiver, &what).get_mut(&key("webhook_configs")), &what);
    assert_eq!(webhooks.len(), 1, "{what} has one webhook");
    let webhook = mapping(&mut webhooks[0], &what);
    webhook.insert(key("url"), key(copy.url));
    let authorization = webhook
        .get_mut(&key("http_config"))
        .and_then(Yaml::as_mut_hash)
        .and_then(|h| h.get_mut(&key("authorization")))
        .and_then(Yaml::as_mut_hash)
        .unwrap_or_else(|| panic!("{what} has no http_config.authorization"));
    assert!(
        authorization.contains_key(&key("credentials_file")),
        "{what} reads its token from a file"
    );
    authorization.insert(key("credentials_file"), key(path_str(copy.credentials_file)));

    let group_by = doc["route"]["group_by"].clone();
    assert!(
        group_by.as_vec().is_some(),
        "{} has a top-level group_by",
        shipped.display()
    );
    let mut route = Hash::new();
    route.insert(key("receiver"), key(copy.name));
    route.insert(key("group_by"), group_by);
    route.insert(key("group_wait"), key(copy.group_wait));
    route.insert(key("group_interval"), key(copy.group_interval));
    route.insert(key("repeat_interval"), key(copy.repeat_interval));
    let mut root = Hash::new();
    root.insert(key("route"), Yaml::Hash(route));
    root.insert(key("receivers"), Yaml::Array(vec![receiver]));
    dump(&Yaml::Hash(root))
}

/// Recording rules whose `vector(seconds)` is a wait, scaled like `for`.
const WAITS: [&str; 2] = ["vigil:escalation_wait:seconds", "vigil:alert_wait:seconds"];

/// The test copy of a shipped rules file: every `for:` and `keep_firing_for:`, and every wait
/// of [`WAITS`], divided by `time_scale`.
pub fn rules(shipped: &Path, time_scale: u64) -> String {
    rules_with(shipped, time_scale, &[])
}

/// [`rules`], with the `for:` of the alerts named in `keep` set as given instead of scaled
/// (for an alert whose scaled wait would be shorter than something the test does on purpose).
pub fn rules_with(shipped: &Path, time_scale: u64, keep: &[(&str, &str)]) -> String {
    let mut doc = load(shipped);
    let root = mapping(&mut doc, "a rules file");
    for group in list(root.get_mut(&key("groups")), "groups") {
        let group = mapping(group, "a rule group");
        for rule in list(group.get_mut(&key("rules")), "rules") {
            let rule = mapping(rule, "a rule");
            let alert = rule.get(&key("alert")).and_then(Yaml::as_str).map(str::to_string);
            for field in ["for", "keep_firing_for"] {
                if let Some(duration) = rule.get_mut(&key(field)) {
                    *duration = key(&scale(duration.as_str().expect("a duration"), time_scale));
                }
            }
            if let Some((_, kept)) = keep.iter().find(|(name, _)| alert.as_deref() == Some(name)) {
                rule.insert(key("for"), key(kept));
            }
            let is_wait = rule
                .get(&key("record"))
                .and_then(Yaml::as_str)
                .is_some_and(|name| WAITS.contains(&name));
            if is_wait {
                let expr = rule.get_mut(&key("expr")).expect("a wait has an expr");
                let seconds: f64 = expr
                    .as_str()
                    .and_then(|e| e.trim().strip_prefix("vector(")?.strip_suffix(')')?.parse().ok())
                    .expect("a wait is vector(<seconds>)");
                *expr = Yaml::String(format!("vector({})", seconds / time_scale as f64));
            }
        }
    }
    dump(&doc)
}

/// What the Prometheus of a test differs in.
pub struct PrometheusCopy<'a> {
    /// Scrape and evaluation interval.
    pub interval: &'a str,
    /// The rule files to load (test copies).
    pub rule_files: &'a [PathBuf],
    /// `host:port` of the Alertmanager.
    pub alertmanager: &'a str,
    /// (job name, `host:port`) of each target that runs in the test (a job named twice has two
    /// targets); other jobs are left out.
    pub targets: &'a [(&'a str, String)],
}

/// The test copy of the shipped prometheus.yml: see [`PrometheusCopy`].
pub fn prometheus_config(shipped: &Path, copy: &PrometheusCopy) -> String {
    let mut doc = load(shipped);
    let root = mapping(&mut doc, "prometheus.yml");
    let global = mapping(root.get_mut(&key("global")).expect("a global section"), "global");
    global.insert(key("scrape_interval"), key(copy.interval));
    global.insert(key("evaluation_interval"), key(copy.interval));
    root.insert(
        key("rule_files"),
        Yaml::Array(copy.rule_files.iter().map(|p| key(path_str(p))).collect()),
    );
    let alerting = mapping(root.get_mut(&key("alerting")).expect("an alerting section"), "alerting");
    for alertmanager in list(alerting.get_mut(&key("alertmanagers")), "alertmanagers") {
        mapping(alertmanager, "an alertmanager").insert(key("static_configs"), static_configs(&[copy.alertmanager]));
    }
    let jobs = list(root.get_mut(&key("scrape_configs")), "scrape_configs");
    jobs.retain(|job| {
        let name = job["job_name"].as_str().unwrap_or("");
        copy.targets.iter().any(|(wanted, _)| *wanted == name)
    });
    let mut names: Vec<&str> = copy.targets.iter().map(|(name, _)| *name).collect();
    names.dedup();
    for name in names {
        let job = jobs
            .iter_mut()
            .find(|job| job["job_name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("{} has no scrape job `{name}`", shipped.display()));
        let addresses: Vec<&str> = copy
            .targets
            .iter()
            .filter(|(job, _)| *job == name)
            .map(|(_, address)| address.as_str())
            .collect();
        mapping(job, "a scrape config").insert(key("static_configs"), static_configs(&addresses));
    }
    dump(&doc)
}

/// A route of the shipped alertmanager.yml, as far as the tests look at it.
#[derive(Debug, Clone, Default)]
pub struct Route {
    pub receiver: String,
    pub matchers: Vec<String>,
    pub group_wait: Option<String>,
    pub group_interval: Option<String>,
    pub repeat_interval: Option<String>,
    pub mute_time_intervals: Vec<String>,
    pub continues: bool,
}

/// The top-level route of an alertmanager.yml and its children, in order.
pub fn routes(shipped: &Path) -> (Route, Vec<Route>) {
    fn read(route: &Yaml) -> Route {
        let text = |name: &str| route[name].as_str().map(str::to_string);
        let strings = |name: &str| -> Vec<String> {
            route[name]
                .as_vec()
                .map(|items| items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect())
                .unwrap_or_default()
        };
        Route {
            receiver: text("receiver").unwrap_or_default(),
            matchers: strings("matchers"),
            group_wait: text("group_wait"),
            group_interval: text("group_interval"),
            repeat_interval: text("repeat_interval"),
            mute_time_intervals: strings("mute_time_intervals"),
            continues: route["continue"].as_bool().unwrap_or(false),
        }
    }
    let doc = load(shipped);
    let root = &doc["route"];
    let children = root["routes"]
        .as_vec()
        .map(|c| c.iter().map(read).collect())
        .unwrap_or_default();
    (read(root), children)
}
