//! Probes and `/probe` modules: the keys every probe has (name, timing, labels, remediation,
//! ...), the `defaults:` and `labels:` sections they draw on, and how one is built: its common
//! keys here, the rest by its kind.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use figment::value::Value;
use serde::Deserialize;

use crate::probe::{Kind, Probe, Role, Thresholds};
use crate::receiver::remediation::Remediation;
use crate::spec::{BuildContext, KeyPath, Section, check_labels, fields_of, join};
use crate::status::settings::ProbePage;

/// The most retries a probe may make after a DOWN attempt.
pub const MAX_RETRIES: u32 = 100;

/// Defaults that apply to every probe unless it sets its own.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// How often each probe runs.
    #[serde(with = "crate::spec::values::duration")]
    pub interval: Duration,
    /// How long one attempt may take before it ends DOWN with reason `timeout`.
    #[serde(with = "crate::spec::values::duration")]
    pub timeout: Duration,
    /// Latency above this: DEGRADED.
    #[serde(with = "crate::spec::values::duration")]
    pub degraded_after: Duration,
    /// Latency above this: DOWN.
    #[serde(with = "crate::spec::values::duration")]
    pub down_after: Duration,
    /// Extra attempts after a DOWN result (each counted in `vigil_probe_retries_total`).
    pub retries: u32,
    /// Pause between attempts.
    #[serde(with = "crate::spec::values::duration")]
    pub retry_delay: Duration,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            degraded_after: Duration::from_secs(1),
            down_after: Duration::from_secs(5),
            retries: 0,
            retry_delay: Duration::from_secs(5),
        }
    }
}

/// The timing of one probe, defaults resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timing {
    /// Run every `interval`.
    pub interval: Duration,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// DEGRADED above this latency.
    pub degraded_after: Duration,
    /// DOWN above this latency.
    pub down_after: Duration,
    /// Extra attempts after DOWN.
    pub retries: u32,
    /// Pause between attempts.
    pub retry_delay: Duration,
}

/// Per-probe settings shared by every kind (the rest of the probe's keys belong to its kind);
/// the keys it accepts are read from it ([`fields_of`]), never listed a second time.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Common {
    name: Option<String>,
    #[serde(default, with = "crate::spec::values::duration")]
    interval: Option<Duration>,
    #[serde(default, with = "crate::spec::values::duration")]
    timeout: Option<Duration>,
    #[serde(default, with = "crate::spec::values::duration")]
    degraded_after: Option<Duration>,
    #[serde(default, with = "crate::spec::values::duration")]
    down_after: Option<Duration>,
    retries: Option<u32>,
    #[serde(default, with = "crate::spec::values::duration")]
    retry_delay: Option<Duration>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    remediation: Option<Remediation>,
    #[serde(default)]
    status_page: ProbePage,
    remind_every: Option<u32>,
}

impl Common {
    fn overrides_timing(&self) -> bool {
        self.interval.is_some() || self.timeout.is_some() || self.degraded_after.is_some() || self.down_after.is_some()
    }
}

/// The keys of [`Common`] that a `/probe` module may set: the rest make no sense for a probe
/// that runs when scraped, against the target of each request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ModuleCommon {
    timeout: Option<String>,
    degraded_after: Option<String>,
    down_after: Option<String>,
    retries: Option<u32>,
    retry_delay: Option<String>,
}

impl Section for Defaults {
    const KEY: &'static str = "defaults";
    type Spec = Defaults;

    fn build(defaults: Defaults, cx: &mut BuildContext, at: &KeyPath) -> Option<Self> {
        let before = cx.error_count();
        check_timing(cx, at.as_str(), &resolve(&defaults, &Common::default()));
        (cx.error_count() == before).then_some(defaults)
    }
}

/// `labels:`: user labels added to every probe's series.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GlobalLabels(pub BTreeMap<String, String>);

impl Section for GlobalLabels {
    const KEY: &'static str = "labels";
    type Spec = BTreeMap<String, String>;

    fn build(labels: BTreeMap<String, String>, cx: &mut BuildContext, at: &KeyPath) -> Option<Self> {
        let before = cx.error_count();
        check_labels(cx, at, &labels);
        (cx.error_count() == before).then_some(GlobalLabels(labels))
    }
}

/// A validated, self-scheduled probe.
#[derive(Clone, Debug)]
pub struct ProbeDef {
    /// Unique name, the `probe` label.
    pub name: String,
    /// Its timing, defaults resolved.
    pub timing: Timing,
    /// User labels (global merged with the probe's own), sorted by name.
    pub labels: Arc<[(String, String)]>,
    /// The compiled probe.
    pub probe: Probe,
    /// The target as written (URL, address); used by `check`.
    pub target: String,
    /// The target for display: credentials and secret-looking query values removed.
    pub display_target: String,
    /// Declared remediation, if any.
    pub remediation: Option<Remediation>,
    /// Freshness kinds: their age thresholds.
    pub freshness: Option<Thresholds>,
    /// Its status page settings.
    pub status_page: ProbePage,
    /// Remind every this many DOWN runs in a row (`vigil_probe_reminder_timestamp_seconds`).
    pub remind_every: Option<u32>,
    /// The latency histogram's boundaries in seconds (`metrics.buckets`).
    pub buckets: Arc<[f64]>,
    /// Changes whenever anything that defines this probe changes, files it reads included.
    pub fingerprint: u64,
}

impl ProbeDef {
    /// The probe's kind.
    pub fn kind(&self) -> Kind {
        self.probe.kind()
    }
}

/// A validated `/probe` module.
#[derive(Clone, Debug)]
pub struct ModuleDef {
    /// Timeout, thresholds and retries (interval unused).
    pub timing: Timing,
    /// The module's own timeout (`None`: the scrape's, less the offset, as blackbox_exporter
    /// has a module without one).
    pub timeout: Option<Duration>,
    /// The compiled probe; the target comes with each request.
    pub probe: Probe,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
}

/// The probes under `probes:`, in file order (each built by its kind; a bad one is left out
/// after recording its errors).
pub fn build_probes(
    cx: &mut BuildContext,
    value: Option<&Value>,
    defaults: &Defaults,
    labels: &GlobalLabels,
    buckets: &crate::metrics::Buckets,
) -> Vec<Arc<ProbeDef>> {
    let Some(value) = value else { return Vec::new() };
    let items: Vec<Value> = cx.deserialize(value, "probes").unwrap_or_default();
    let mut names = HashSet::new();
    let mut probes = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("probes.{i}");
        if let Some(def) = build_probe(cx, &path, item, defaults, &labels.0, buckets, &mut names) {
            probes.push(Arc::new(def));
        }
    }
    probes
}

/// The `/probe` modules under `modules:`, by name.
pub fn build_modules(cx: &mut BuildContext, value: Option<&Value>, defaults: &Defaults) -> BTreeMap<String, ModuleDef> {
    let Some(value) = value else {
        return BTreeMap::new();
    };
    let items: BTreeMap<String, Value> = cx.deserialize(value, "modules").unwrap_or_default();
    let mut modules = BTreeMap::new();
    for (name, item) in &items {
        let path = format!("modules.{name}");
        if let Some(def) = build_module(cx, &path, item, defaults) {
            modules.insert(name.clone(), def);
        }
    }
    modules
}

/// What `vigil receiver` reads of a probe: its name and its remediation, nothing else (its
/// kind is not built, its files are not read).
#[derive(Debug, Deserialize)]
struct RemediationOnly {
    name: Option<String>,
    remediation: Option<Remediation>,
}

/// The remediations the probes under `probes:` declare, by probe name.
pub fn remediations(cx: &mut BuildContext, value: Option<&Value>) -> Vec<(String, Remediation)> {
    let Some(value) = value else { return Vec::new() };
    let items: Vec<Value> = cx.deserialize(value, "probes").unwrap_or_default();
    let mut found = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = KeyPath::root().key("probes").index(i);
        let Some(probe) = cx.deserialize::<RemediationOnly>(item, &at) else {
            continue;
        };
        if let (Some(name), Some(remediation)) = (probe.name, probe.remediation) {
            let before = cx.error_count();
            remediation.validate(cx, &at.key("remediation"));
            if cx.error_count() == before {
                found.push((name, remediation));
            }
        }
    }
    found
}

fn resolve(defaults: &Defaults, common: &Common) -> Timing {
    Timing {
        interval: common.interval.unwrap_or(defaults.interval),
        timeout: common.timeout.unwrap_or(defaults.timeout),
        degraded_after: common.degraded_after.unwrap_or(defaults.degraded_after),
        down_after: common.down_after.unwrap_or(defaults.down_after),
        retries: common.retries.unwrap_or(defaults.retries),
        retry_delay: common.retry_delay.unwrap_or(defaults.retry_delay),
    }
}

fn check_timing(ctx: &mut BuildContext, path: &str, timing: &Timing) {
    let show = |d: Duration| humantime::format_duration(d).to_string();
    if timing.interval.is_zero() {
        ctx.error(join(path, "interval"), "must be greater than 0");
    }
    if timing.timeout.is_zero() {
        ctx.error(join(path, "timeout"), "must be greater than 0");
    } else if timing.timeout >= timing.interval {
        ctx.error(
            join(path, "timeout"),
            format!(
                "timeout ({}) must be shorter than interval ({})",
                show(timing.timeout),
                show(timing.interval)
            ),
        );
    }
    if timing.retries > MAX_RETRIES {
        ctx.error(join(path, "retries"), format!("must be at most {MAX_RETRIES}"));
    }
    if timing.degraded_after > timing.down_after {
        ctx.error(
            join(path, "degraded_after"),
            format!(
                "degraded_after ({}) must not exceed down_after ({})",
                show(timing.degraded_after),
                show(timing.down_after)
            ),
        );
    }
}

/// Splits a probe's keys into the common ones and its kind's; `None` after recording errors.
fn split_keys(ctx: &mut BuildContext, path: &str, item: &Value, common_keys: &[&str]) -> Option<(Kind, Value, Value)> {
    let dict: BTreeMap<String, Value> = ctx.deserialize(item, path)?;
    let Some(kind_value) = dict.get("kind") else {
        ctx.error(path, format!("missing key `kind` (one of: {})", Kind::NAMES.join(", ")));
        return None;
    };
    let kind_path = join(path, "kind");
    let kind_name: String = ctx.deserialize(kind_value, &kind_path)?;
    let Some(kind) = Kind::from_name(&kind_name) else {
        ctx.error(
            &kind_path,
            format!(
                "unknown kind `{kind_name}`, expected one of: {}",
                Kind::NAMES.join(", ")
            ),
        );
        return None;
    };
    let mut common = BTreeMap::new();
    let mut own = BTreeMap::new();
    for (key, value) in dict {
        if key == "kind" {
            continue;
        }
        if common_keys.contains(&key.as_str()) {
            common.insert(key, value);
        } else if fields_of::<Common>().contains(&key.as_str()) {
            ctx.error(join(path, &key), format!("`{key}` does not apply to a /probe module"));
        } else {
            own.insert(key, value);
        }
    }
    Some((kind, Value::from(common), Value::from(own)))
}

fn build_probe(
    ctx: &mut BuildContext,
    path: &str,
    item: &Value,
    defaults: &Defaults,
    global_labels: &BTreeMap<String, String>,
    buckets: &crate::metrics::Buckets,
    names: &mut HashSet<String>,
) -> Option<ProbeDef> {
    let errors_before = ctx.error_count();
    ctx.take_file_digest();
    let (kind, common_value, own) = split_keys(ctx, path, item, fields_of::<Common>())?;
    let common: Common = ctx.deserialize_struct(&common_value, path).unwrap_or_default();
    let name_given = common_value.as_dict().is_some_and(|d| d.contains_key("name"));
    let name = match &common.name {
        Some(name) if valid_name(name) => {
            if !names.insert(name.clone()) {
                ctx.error(
                    join(path, "name"),
                    format!("probe name `{name}` is used twice; names must be unique"),
                );
            }
            name.clone()
        }
        Some(name) => {
            ctx.error(
                join(path, "name"),
                format!(
                    "`{name}` is not a valid probe name (letters, digits and . _ - :, starting with a letter or digit)"
                ),
            );
            String::new()
        }
        // A name of the wrong type has been reported already.
        None if name_given => String::new(),
        None => {
            ctx.error(path, "missing key `name`");
            String::new()
        }
    };
    let timing = resolve(defaults, &common);
    if common.overrides_timing() || common.retries.is_some() {
        // Otherwise the defaults were checked once, and their error stands for every probe.
        check_timing(ctx, path, &timing);
    }
    check_labels(ctx, &KeyPath::from(join(path, "labels").as_str()), &common.labels);
    if let Some(remediation) = &common.remediation {
        remediation.validate(ctx, &KeyPath::from(join(path, "remediation").as_str()));
    }
    if common.remind_every == Some(0) {
        ctx.error(join(path, "remind_every"), "must be at least 1 (DOWN runs in a row)");
    }
    ctx.set_attempt_timeout(Some(timing.timeout));
    let built = Probe::build(kind, &own, ctx, path, Role::Scheduled);
    ctx.set_attempt_timeout(None);
    if ctx.error_count() > errors_before {
        return None;
    }
    let built = built?;
    let mut labels = global_labels.clone();
    labels.extend(common.labels.clone());
    let labels: Arc<[(String, String)]> = labels.into_iter().collect();
    // A kind without a target of its own (heartbeat) is known by its name.
    let target = built.target.unwrap_or_else(|| name.clone());

    let mut hasher = DefaultHasher::new();
    serde_json::to_string(item).unwrap_or_default().hash(&mut hasher);
    timing.hash(&mut hasher);
    labels.hash(&mut hasher);
    let buckets = buckets.bounds(timing.degraded_after, timing.down_after);
    for bound in buckets.iter() {
        bound.to_bits().hash(&mut hasher);
    }
    ctx.take_file_digest().hash(&mut hasher);
    Some(ProbeDef {
        buckets,
        display_target: ctx.secret_names().redact_target(&target),
        name,
        timing,
        labels,
        probe: built.settings,
        target,
        remediation: common.remediation,
        freshness: built.freshness,
        status_page: common.status_page,
        remind_every: common.remind_every,
        fingerprint: hasher.finish(),
    })
}

fn build_module(ctx: &mut BuildContext, path: &str, item: &Value, defaults: &Defaults) -> Option<ModuleDef> {
    let errors_before = ctx.error_count();
    let (kind, common_value, own) = split_keys(ctx, path, item, fields_of::<ModuleCommon>())?;
    let common: Common = ctx.deserialize_struct(&common_value, path).unwrap_or_default();
    let mut timing = resolve(defaults, &common);
    let own_timing = common.overrides_timing() || common.retries.is_some();
    // A module runs when scraped, not on an interval: only its timeout and thresholds matter.
    timing.interval = Duration::MAX;
    if own_timing {
        check_timing(ctx, path, &timing);
    }
    let built = Probe::build(kind, &own, ctx, path, Role::Module);
    if ctx.error_count() > errors_before {
        return None;
    }
    Some(ModuleDef {
        timing,
        timeout: Some(timing.timeout),
        probe: built?.settings,
    })
}
