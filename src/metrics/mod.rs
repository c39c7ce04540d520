//! `/metrics`: vigil's own metrics (a prometheus-client registry) and every probe's series,
//! written from its state at scrape time ([`probes`]), so probes removed by a reload vanish
//! without bookkeeping.

mod probes;

pub use probes::LabelText;

use std::fmt::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::SystemTime;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::state::State;

/// `Content-Type` of the OpenMetrics text format.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the classic Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The text format a scrape is answered in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics, when the client takes it (Prometheus does).
    OpenMetrics,
    /// The classic Prometheus text format 0.0.4 (curl, promtool).
    Classic,
}

impl Format {
    /// The format the `Accept` headers of a request ask for.
    pub fn negotiate(headers: &http::HeaderMap) -> Format {
        let openmetrics = headers
            .get_all(http::header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("application/openmetrics-text"));
        if openmetrics {
            Format::OpenMetrics
        } else {
            Format::Classic
        }
    }

    /// Whether it is OpenMetrics.
    pub fn is_openmetrics(self) -> bool {
        self == Format::OpenMetrics
    }

    /// Its `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS,
            Format::Classic => PROMETHEUS_TEXT,
        }
    }
}

/// Registers `vigil_build_info{version}`, which every process of vigil publishes.
pub fn register_build_info(registry: &mut Registry) {
    registry.register(
        "vigil_build",
        "vigil's version",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
}

/// Seconds since the Unix epoch.
pub fn unix_seconds(t: SystemTime) -> f64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// The most histogram bucket boundaries a probe may have (`metrics.buckets`).
pub const MAX_BUCKETS: usize = 30;

/// `metrics:`: how much each probe puts on `/metrics`.
///
/// By default a probe publishes what the shipped rules and dashboards use and little else
/// (12 lines for an HTTP probe that has never failed): its level, when it began, its failures,
/// a latency histogram with boundaries at its own `degraded_after` and `down_after`, and what
/// it checks. `detail: true` adds the rest (phase timings, status codes, runs and retries from
/// 0, failures of every reason from 0, the last run and success, the thresholds as gauges);
/// `buckets` chooses the histogram's boundaries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    /// Publish every series, not only the default set.
    pub detail: bool,
    /// The latency histogram's boundaries.
    pub buckets: Buckets,
}

/// `metrics.buckets`: the latency histogram's boundaries.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Buckets {
    /// `thresholds` (the default): the probe's `degraded_after` and `down_after`.
    #[default]
    Thresholds,
    /// A list of durations: those and the probe's two thresholds.
    With(Vec<f64>),
    /// `none`: only `+Inf` (the count and sum of the runs' durations).
    None,
}

impl Buckets {
    /// The boundaries, in seconds and ascending, of a probe with these thresholds.
    pub fn bounds(&self, degraded_after: std::time::Duration, down_after: std::time::Duration) -> Arc<[f64]> {
        let thresholds = [degraded_after.as_secs_f64(), down_after.as_secs_f64()];
        let mut bounds: Vec<f64> = match self {
            Buckets::None => Vec::new(),
            Buckets::Thresholds => thresholds.to_vec(),
            Buckets::With(list) => list.iter().copied().chain(thresholds).collect(),
        };
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        bounds.into()
    }
}

/// What `metrics:` holds.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SettingsSpec {
    detail: bool,
    buckets: Option<figment::value::Value>,
}

impl crate::spec::Section for Settings {
    const KEY: &'static str = "metrics";
    type Spec = SettingsSpec;

    fn build(spec: SettingsSpec, cx: &mut crate::spec::BuildContext, at: &crate::spec::KeyPath) -> Option<Self> {
        use figment::value::Value;
        let path = crate::spec::join(at.as_str(), "buckets");
        let before = cx.error_count();
        let bad = "must be `thresholds`, `none` or a list of durations (`[100ms, 250ms, 2s]`)";
        let buckets = match spec.buckets {
            None => Buckets::Thresholds,
            Some(Value::String(_, word)) => match word.as_str() {
                "thresholds" => Buckets::Thresholds,
                "none" => Buckets::None,
                _ => {
                    cx.error(&path, format!("`{word}`: {bad}"));
                    return None;
                }
            },
            Some(Value::Array(_, items)) => {
                let mut list = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let at = format!("{path}.{i}");
                    let parsed = item.as_str().map(humantime::parse_duration);
                    match parsed {
                        Some(Ok(d)) if !d.is_zero() => list.push(d.as_secs_f64()),
                        Some(Ok(_)) => cx.error(&at, "must be longer than 0s"),
                        Some(Err(e)) => cx.error(&at, format!("not a duration: {e}")),
                        None => cx.error(&at, "must be a duration such as `250ms`"),
                    }
                }
                if list.len() + 2 > MAX_BUCKETS {
                    cx.error(
                        &path,
                        format!("at most {} boundaries besides the two thresholds", MAX_BUCKETS - 2),
                    );
                }
                Buckets::With(list)
            }
            Some(_) => {
                cx.error(&path, bad);
                return None;
            }
        };
        (cx.error_count() == before).then_some(Settings {
            detail: spec.detail,
            buckets,
        })
    }
}

/// Gauges about configuration reloads.
#[derive(Debug, Default)]
pub struct ReloadMetrics {
    /// 1 when the last reload worked, 0 when it failed.
    pub successful: Gauge<i64, AtomicI64>,
    /// When the config was last loaded successfully.
    pub success_timestamp: Gauge<f64, AtomicU64>,
}

impl ReloadMetrics {
    /// Records a reload attempt.
    pub fn record(&self, ok: bool) {
        self.successful.set(i64::from(ok));
        if ok {
            self.success_timestamp.set(unix_seconds(SystemTime::now()));
        }
    }
}

/// What `/metrics` serves: the registry, and the probes' state, whose series are written
/// straight from it (a registry collector would go through an encoder call per label).
#[derive(Debug)]
pub struct Exposition {
    /// vigil's own metrics and the inventories' collectors.
    pub registry: Registry,
    probes: Arc<State>,
}

impl std::ops::Deref for Exposition {
    type Target = Registry;
    fn deref(&self) -> &Registry {
        &self.registry
    }
}

impl std::ops::DerefMut for Exposition {
    fn deref_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }
}

/// What can be written as a `/metrics` page.
pub trait Exposed {
    /// Writes the page in OpenMetrics text, `# EOF` included.
    fn write_openmetrics(&self, out: &mut dyn Write) -> fmt::Result;
}

impl Exposed for Registry {
    fn write_openmetrics(&self, mut out: &mut dyn Write) -> fmt::Result {
        prometheus_client::encoding::text::encode(&mut out, self)
    }
}

impl Exposed for Exposition {
    fn write_openmetrics(&self, mut out: &mut dyn Write) -> fmt::Result {
        prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)?;
        probes::write(&self.probes, out)?;
        prometheus_client::encoding::text::encode_eof(&mut out)
    }
}

/// Builds what `/metrics` serves: build info, the address vigil is reached at
/// (`--web.external-url`, from which alert rules build their runbook links), reload gauges and
/// the probes of `state`.
pub fn registry(state: Arc<State>, reload: &ReloadMetrics, external_url: Option<&str>) -> Exposition {
    let mut registry = Registry::default();
    register_build_info(&mut registry);
    if let Some(url) = external_url {
        registry.register(
            "vigil_web",
            "The URL vigil is reached at (--web.external-url); its runbook is at <url>runbook",
            Info::new(vec![("external_url", url.to_string())]),
        );
    }
    registry.register(
        "vigil_config_last_reload_successful",
        "Whether the last configuration load or reload succeeded (1) or failed (0)",
        reload.successful.clone(),
    );
    registry.register_with_unit(
        "vigil_config_last_reload_success_timestamp",
        "When the configuration was last loaded successfully",
        Unit::Seconds,
        reload.success_timestamp.clone(),
    );
    Exposition {
        registry,
        probes: state,
    }
}

/// Encodes a page in OpenMetrics text, or in the classic Prometheus text format when
/// `openmetrics` is false (for clients such as `promtool check metrics` that ask for it).
pub fn encode(page: &(impl Exposed + ?Sized), openmetrics: bool) -> Result<String, fmt::Error> {
    let mut text = String::with_capacity(64 * 1024);
    encode_to(page, openmetrics, &mut text)?;
    Ok(text)
}

/// Encodes a page into `out`, in OpenMetrics or (`openmetrics` false) the classic format.
pub fn encode_to(page: &(impl Exposed + ?Sized), openmetrics: bool, out: &mut dyn Write) -> fmt::Result {
    if openmetrics {
        page.write_openmetrics(out)
    } else {
        let mut text = String::new();
        let mut classic = ClassicText {
            out: &mut text,
            line: String::new(),
            help: None,
            state: Line::Start,
        };
        // Comment lines are rewritten; sample lines go to `text` and are handed on in pieces.
        let mut forward = Forward {
            classic: &mut classic,
            out,
        };
        page.write_openmetrics(&mut forward)?;
        let rest = std::mem::take(forward.classic.out);
        forward.out.write_str(&rest)
    }
}

/// Feeds [`ClassicText`] and hands what it produced on to `out` in pieces of about 64 KiB.
struct Forward<'a, 'b> {
    classic: &'a mut ClassicText<'b>,
    out: &'a mut dyn Write,
}

impl Write for Forward<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.classic.write_str(s)?;
        if self.classic.out.len() >= 64 * 1024 {
            let piece = std::mem::take(self.classic.out);
            self.out.write_str(&piece)?;
            // Keep the allocation for the next piece.
            *self.classic.out = piece;
            self.classic.out.clear();
        }
        Ok(())
    }
}

/// Rewrites OpenMetrics text as Prometheus text 0.0.4 (see [`ClassicText`]).
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut classic = ClassicText {
        out: &mut out,
        line: String::new(),
        help: None,
        state: Line::Start,
    };
    let _ = classic.write_str(openmetrics);
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Line {
    Start,
    Sample,
    Comment,
}

/// A writer that turns OpenMetrics text into Prometheus text 0.0.4 as it is written: counters and
/// infos are named after their samples (`_total`, `_info`), infos become gauges, `# UNIT` and
/// `# EOF` go. Sample lines are identical in both formats and pass straight through; only comment
/// lines are held, one at a time, so no second copy of the page is made.
struct ClassicText<'a> {
    out: &'a mut String,
    line: String,
    /// A `# HELP` line waits for the `# TYPE` line after it, which says how to rename it.
    help: Option<String>,
    state: Line,
}

impl ClassicText<'_> {
    fn comment(&mut self) {
        let line = std::mem::take(&mut self.line);
        if line.starts_with("# HELP ") {
            if let Some(held) = self.help.replace(line) {
                self.out.push_str(&held);
                self.out.push('\n');
            }
            return;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap_or_default(), parts.next().unwrap_or("untyped"));
            let (new_name, kind) = rename(name, kind);
            if let Some(help) = self.help.take() {
                match help.strip_prefix("# HELP ").and_then(|h| h.strip_prefix(name)) {
                    Some(text) => {
                        let _ = writeln!(self.out, "# HELP {new_name}{text}");
                    }
                    None => {
                        self.out.push_str(&help);
                        self.out.push('\n');
                    }
                }
            }
            let _ = writeln!(self.out, "# TYPE {new_name} {kind}");
        } else if !(line.starts_with("# UNIT ") || line == "# EOF") {
            self.out.push_str(&line);
            self.out.push('\n');
        }
        self.line = line;
        self.line.clear();
    }
}

impl Write for ClassicText<'_> {
    fn write_str(&mut self, mut s: &str) -> fmt::Result {
        while !s.is_empty() {
            if self.state == Line::Start {
                self.state = if s.starts_with('#') {
                    Line::Comment
                } else {
                    Line::Sample
                };
            }
            let end = s.find('\n');
            let (part, rest, done) = match end {
                Some(i) => (&s[..i], &s[i + 1..], true),
                None => (s, "", false),
            };
            match self.state {
                Line::Sample => {
                    self.out.push_str(part);
                    if done {
                        self.out.push('\n');
                    }
                }
                _ => {
                    self.line.push_str(part);
                    if done {
                        self.comment();
                    }
                }
            }
            if done {
                self.state = Line::Start;
            }
            s = rest;
        }
        Ok(())
    }
}

fn rename(name: &str, kind: &str) -> (String, &'static str) {
    match kind {
        "counter" => (format!("{name}_total"), "counter"),
        "info" => (format!("{name}_info"), "gauge"),
        "gauge" => (name.to_string(), "gauge"),
        "histogram" => (name.to_string(), "histogram"),
        "summary" => (name.to_string(), "summary"),
        _ => (name.to_string(), "untyped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENMETRICS: &str = "# HELP a_seconds A help.\n# TYPE a_seconds gauge\n# UNIT a_seconds seconds\na_seconds{x=\"#1\"} 1.0\n# HELP b Runs.\n# TYPE b counter\nb_total 3\n# HELP c Info.\n# TYPE c info\nc_info{version=\"1\"} 1\n# EOF\n";
    const CLASSIC: &str = "# HELP a_seconds A help.\n# TYPE a_seconds gauge\na_seconds{x=\"#1\"} 1.0\n# HELP b_total Runs.\n# TYPE b_total counter\nb_total 3\n# HELP c_info Info.\n# TYPE c_info gauge\nc_info{version=\"1\"} 1\n";

    #[test]
    fn bucket_settings_and_their_errors() {
        use std::time::Duration;
        let parse = |text: &str| crate::config::Config::parse(text, std::path::Path::new("."));
        let config = parse("metrics: {buckets: [250ms, 1s, 10s]}\nprobes: [{name: a, kind: tcp, address: 'x:1'}]\n")
            .expect("valid");
        assert_eq!(
            config.probes[0].buckets[..],
            [0.25, 1.0, 5.0, 10.0],
            "the thresholds join the list"
        );
        let none = Buckets::None.bounds(Duration::from_secs(1), Duration::from_secs(5));
        assert!(none.is_empty());
        for (text, at, says) in [
            (
                "metrics: {buckets: fast}",
                "metrics.buckets",
                "`fast`: must be `thresholds`, `none`",
            ),
            (
                "metrics: {buckets: [100ms, 0s]}",
                "metrics.buckets[1]",
                "longer than 0s",
            ),
            (
                "metrics: {buckets: [100ms, soon]}",
                "metrics.buckets[1]",
                "not a duration",
            ),
            ("metrics: {detail: maybe}", "metrics.detail", ""),
            ("metrics: {phases: true}", "metrics", "phases"),
        ] {
            let errors = parse(text).expect_err(text).to_string();
            assert!(errors.contains(at) && errors.contains(says), "{text}: {errors}");
        }
    }

    #[test]
    fn classic_text_whatever_the_chunks() {
        assert_eq!(to_prometheus_text(OPENMETRICS), CLASSIC);
        // Written a character at a time, as an encoder may split its writes anywhere.
        let mut out = String::new();
        let mut classic = ClassicText {
            out: &mut out,
            line: String::new(),
            help: None,
            state: Line::Start,
        };
        for c in OPENMETRICS.chars() {
            classic.write_char(c).expect("write");
        }
        assert_eq!(out, CLASSIC);
    }
}
