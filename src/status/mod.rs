//! The status model: what `/api/v1/status`, the status page, the badges and `vigil status`
//! show, built from the probes' state and history. Hidden probes are left out here, once.

pub mod report;
pub mod settings;

use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::info;

use crate::config::{Config, ProbeDef};
use crate::history::buckets::{Counts, HOUR_MS, Window};
use crate::history::{ProbeHistory, from_unix_ms, unix_ms};
use crate::probe::Level;
use crate::state::lock;
use crate::view::View;

/// Days in the uptime bar.
pub const BAR_DAYS: usize = 90;
/// Hours in the detail view's bar.
pub const DETAIL_HOURS: usize = 24;
/// Most single runs the detail view returns.
pub const DETAIL_RUNS: u32 = 2000;

/// RFC 3339 in UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// `/api/v1/status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// `status_page.title`.
    pub title: String,
    /// `status_page.message`: a banner.
    pub message: Option<String>,
    /// vigil's version.
    pub version: String,
    /// When this was computed.
    pub generated_at: String,
    /// The label probes are grouped by.
    pub group_by: Option<String>,
    /// Probes by level.
    pub summary: Summary,
    /// What the `bar` of each probe covers.
    pub bar: BarInfo,
    /// Probes by group, in file order within each.
    pub groups: Vec<Group>,
    /// Watched containers (Docker); absent until vigil watches containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<serde_json::Value>>,
}

/// How many probes are at each level.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Summary {
    /// UP.
    pub up: usize,
    /// DEGRADED.
    pub degraded: usize,
    /// DOWN.
    pub down: usize,
    /// Not run yet.
    pub pending: usize,
    /// All of them.
    pub total: usize,
}

impl Summary {
    fn count(&mut self, level: &str) {
        self.total += 1;
        match level {
            "up" => self.up += 1,
            "degraded" => self.degraded += 1,
            "down" => self.down += 1,
            _ => self.pending += 1,
        }
    }
}

/// The periods of the uptime bar.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BarInfo {
    /// Length of one period (a UTC day).
    pub period_seconds: u64,
    /// Periods in the bar, oldest first; the last is the current one.
    pub count: usize,
    /// Start of the first period.
    pub first: String,
}

/// Probes sharing a value of the `group_by` label.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Group {
    /// The label's value; `null` for probes without the label (or when not grouping).
    pub name: Option<String>,
    /// Its probes by level.
    pub summary: Summary,
    /// Its probes.
    pub probes: Vec<ProbeStatus>,
}

/// One probe.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ProbeStatus {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// Its target, credentials removed.
    pub target: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// `up`, `degraded`, `down`, or `pending` before the first run.
    pub level: String,
    /// Why the last run was not UP.
    pub reason: Option<String>,
    /// The last run's message.
    pub detail: Option<String>,
    /// The last run's latency.
    pub latency_seconds: Option<f64>,
    /// When the last run finished.
    pub last_run: Option<String>,
    /// Since when runs have ended at this level.
    pub since: Option<String>,
    /// How often it runs.
    pub interval_seconds: f64,
    /// Latency above this is DEGRADED.
    pub degraded_after_seconds: f64,
    /// Latency above this is DOWN.
    pub down_after_seconds: f64,
    /// DOWN runs in a row.
    pub consecutive_failures: u64,
    /// Uptime over 24 hours, 7 days and 30 days.
    pub uptime: Uptimes,
    /// Runs per day for the bar (see [`BarInfo`]).
    pub bar: Bar,
    /// The last DOWN run.
    pub last_failure: Option<LastFailure>,
    /// Freshness probes: the newest record and the thresholds it is held to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<Freshness>,
}

/// Windows of uptime.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Uptimes {
    /// The current hour and the 23 before it.
    #[serde(rename = "24h")]
    pub day: UptimeWindow,
    /// Today (UTC) and the 6 days before it.
    #[serde(rename = "7d")]
    pub week: UptimeWindow,
    /// Today (UTC) and the 29 days before it.
    #[serde(rename = "30d")]
    pub month: UptimeWindow,
}

/// Runs in a window.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct UptimeWindow {
    /// (up + degraded) / runs, 0 to 1; `null` without runs.
    pub ratio: Option<f64>,
    /// Runs.
    pub runs: u32,
    /// UP runs.
    pub up: u32,
    /// DEGRADED runs.
    pub degraded: u32,
    /// DOWN runs.
    pub down: u32,
    /// Mean latency.
    pub latency_avg_seconds: Option<f64>,
    /// 95th percentile latency, estimated from a histogram (24 h window only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p95_seconds: Option<f64>,
    /// Longest latency.
    pub latency_max_seconds: Option<f64>,
}

impl From<Window> for UptimeWindow {
    fn from(w: Window) -> Self {
        let c = w.counts;
        Self {
            ratio: c.uptime(),
            runs: c.runs,
            up: c.up,
            degraded: c.degraded,
            down: c.down,
            latency_avg_seconds: c.latency_avg(),
            latency_p95_seconds: w.latency_p95,
            latency_max_seconds: (c.runs > 0).then_some(f64::from(c.latency_max)),
        }
    }
}

/// Runs per period, oldest first: runs, and how many of them were DEGRADED and DOWN.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Bar {
    /// Runs in each period (0: no data).
    pub runs: Vec<u32>,
    /// DEGRADED runs in each period.
    pub degraded: Vec<u32>,
    /// DOWN runs in each period.
    pub down: Vec<u32>,
}

impl Bar {
    fn of(counts: &[Counts]) -> Bar {
        Bar {
            runs: counts.iter().map(|c| c.runs).collect(),
            degraded: counts.iter().map(|c| c.degraded).collect(),
            down: counts.iter().map(|c| c.down).collect(),
        }
    }
}

/// A DOWN run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LastFailure {
    /// When it finished.
    pub at: String,
    /// Its reason.
    pub reason: String,
    /// Its message.
    pub detail: String,
}

/// The age of a freshness probe's newest record against its thresholds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Freshness {
    /// Timestamp of the newest record.
    pub newest: String,
    /// Older than this is DOWN (`max_age`).
    pub threshold_seconds: f64,
    /// Older than this is DEGRADED (`warn_age`).
    pub warn_seconds: Option<f64>,
}

/// `/api/v1/probes/<name>`: one probe with its recent runs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ProbeDetail {
    /// The probe, as in `/api/v1/status`.
    pub probe: ProbeStatus,
    /// Runs per hour for the last 24 hours (the current hour last).
    pub hours: Bar,
    /// Start of the first of those hours.
    pub hours_first: String,
    /// Single runs, newest first: those the store holds (`history.raw_retention`), at most 2000.
    pub runs: Vec<Run>,
}

/// A single run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Run {
    /// When it finished.
    pub at: String,
    /// Its level.
    pub level: String,
    /// Its latency.
    pub latency_seconds: f64,
    /// Why, when not UP.
    pub reason: Option<String>,
    /// Its message, when not UP.
    pub detail: Option<String>,
}

/// Whether the probe `def` appears on the page.
pub fn visible(def: &ProbeDef) -> bool {
    !def.status_page.hide
}

/// The visible probe named `name`, if any.
pub fn find<'a>(config: &'a Config, name: &str) -> Option<&'a ProbeDef> {
    config
        .probes
        .iter()
        .map(|p| &**p)
        .find(|p| p.name == name && visible(p))
}

/// One probe's status at `now`; `None` if this process does not run it (another shard does).
pub fn probe_status(app: &View, def: &ProbeDef, now: SystemTime) -> Option<ProbeStatus> {
    let handle = app.state.get(&def.name)?;
    let history = app.history.probe(&def.name);
    let state = lock(&handle);
    Some(build(def, &state, &history, now))
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn build(def: &ProbeDef, state: &crate::state::ProbeState, history: &ProbeHistory, now: SystemTime) -> ProbeStatus {
    let now_ms = unix_ms(now);
    let last = state.last.as_ref();
    let current = state.current.as_ref();
    let level = current.map_or("pending", |c| c.level.as_str());
    ProbeStatus {
        name: def.name.clone(),
        kind: def.kind().to_string(),
        target: def.display_target.clone(),
        labels: def.labels.iter().cloned().collect(),
        level: level.to_string(),
        reason: current.and_then(|c| c.reason).map(|r| r.to_string()),
        detail: last
            .filter(|o| o.level != Level::Up && !o.detail.is_empty())
            .map(|o| o.detail.clone()),
        latency_seconds: last.map(|o| seconds(o.duration)),
        last_run: state.last_run.map(rfc3339),
        since: current.map(|c| rfc3339(c.since)),
        interval_seconds: seconds(def.timing.interval),
        degraded_after_seconds: seconds(def.timing.degraded_after),
        down_after_seconds: seconds(def.timing.down_after),
        consecutive_failures: state.consecutive_failures,
        uptime: Uptimes {
            day: history.buckets.last_hours(now_ms, 24).into(),
            week: history.buckets.last_days(now_ms, 7).into(),
            month: history.buckets.last_days(now_ms, 30).into(),
        },
        bar: Bar::of(&history.buckets.daily_bar(now_ms, BAR_DAYS)),
        last_failure: history.last_failure.as_ref().map(|f| LastFailure {
            at: rfc3339(from_unix_ms(f.at_ms)),
            reason: f.reason.clone(),
            detail: f.detail.clone(),
        }),
        // No kind measures freshness yet; freshness kinds fill this in.
        freshness: None,
    }
}

/// Every visible probe this process runs, grouped by `status_page.group_by`.
pub fn snapshot(app: &View, now: SystemTime) -> Status {
    let config = app.config();
    let page = &config.status_page;
    let mut groups: Vec<Group> = Vec::new();
    let mut summary = Summary::default();
    for def in config.probes.iter().filter(|p| visible(p)) {
        let Some(probe) = probe_status(app, def, now) else {
            continue;
        };
        let name = page
            .group_by
            .as_ref()
            .and_then(|label| probe.labels.get(label).cloned());
        summary.count(&probe.level);
        let group = match groups.iter_mut().position(|g| g.name == name) {
            Some(i) => &mut groups[i],
            None => {
                groups.push(Group {
                    name,
                    summary: Summary::default(),
                    probes: Vec::new(),
                });
                let last = groups.len() - 1;
                &mut groups[last]
            }
        };
        group.summary.count(&probe.level);
        group.probes.push(probe);
    }
    // Named groups by name, probes without the label last.
    groups.sort_by(|a, b| match (&a.name, &b.name) {
        (Some(a), Some(b)) => a.cmp(b),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    let today = unix_ms(now).div_euclid(HOUR_MS * 24);
    Status {
        title: page.title.clone(),
        message: page.message.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        generated_at: rfc3339(now),
        group_by: page.group_by.clone(),
        summary,
        bar: BarInfo {
            period_seconds: 86_400,
            count: BAR_DAYS,
            first: rfc3339(from_unix_ms((today - BAR_DAYS as i64 + 1) * HOUR_MS * 24)),
        },
        groups,
        containers: None,
    }
}

/// One visible probe with its runs from the store; `None` if there is no such probe here.
pub async fn detail(
    app: &View,
    name: &str,
    now: SystemTime,
) -> Option<Result<ProbeDetail, crate::history::HistoryError>> {
    let config = app.config();
    let def = find(&config, name)?;
    let probe = probe_status(app, def, now)?;
    let history = app.history.probe(name);
    let now_ms = unix_ms(now);
    let first_hour = now_ms.div_euclid(HOUR_MS) - DETAIL_HOURS as i64 + 1;
    let since = now - app.history.raw_retention().min(Duration::from_secs(400 * 86_400));
    let runs = match app.history.runs(name, since, DETAIL_RUNS).await {
        Ok(runs) => runs,
        Err(e) => return Some(Err(e)),
    };
    Some(Ok(ProbeDetail {
        probe,
        hours: Bar::of(&history.buckets.hourly_bar(now_ms, DETAIL_HOURS)),
        hours_first: rfc3339(from_unix_ms(first_hour * HOUR_MS)),
        runs: runs
            .into_iter()
            .map(|r| Run {
                at: rfc3339(from_unix_ms(r.at_ms)),
                level: r.level.as_str().to_string(),
                latency_seconds: r.latency,
                reason: r.reason,
                detail: r.detail,
            })
            .collect(),
    }))
}

/// Logs one line per visible probe every `status_page.log_summary_every` (when set), until
/// the app is gone. Reloads take effect at the next line.
pub async fn log_summaries(app: Weak<View>) {
    let mut next: Option<tokio::time::Instant> = None;
    loop {
        let every = match app.upgrade() {
            Some(app) => app.config().status_page.log_summary_every,
            None => return,
        };
        let Some(every) = every else {
            next = None;
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        };
        let due = *next.get_or_insert_with(|| tokio::time::Instant::now() + every);
        if tokio::time::Instant::now() < due {
            tokio::time::sleep_until(due.min(tokio::time::Instant::now() + Duration::from_secs(5))).await;
            continue;
        }
        next = Some(due + every);
        let Some(app) = app.upgrade() else { return };
        let status = snapshot(&app, SystemTime::now());
        for probe in status.groups.iter().flat_map(|g| &g.probes) {
            let day = &probe.uptime.day;
            info!(
                probe = %probe.name,
                level = %probe.level,
                uptime_24h = %report::percent(day.ratio),
                runs_24h = day.runs,
                down_24h = day.down,
                latency_avg_ms = %report::millis(day.latency_avg_seconds),
                latency_p95_ms = %report::millis(day.latency_p95_seconds),
                "status summary"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::probe::Reason;
    use crate::state::Outcome;

    fn view(text: &str) -> View {
        let config = Config::parse(text, std::path::Path::new(".")).expect("valid config");
        View::idle(config).expect("view")
    }

    fn run(view: &View, probe: &str, level: Level, at: SystemTime) {
        let outcome = Outcome {
            level,
            reason: (level != Level::Up).then_some(Reason::Connect),
            detail: if level == Level::Up {
                String::new()
            } else {
                "refused".into()
            },
            duration: Duration::from_millis(12),
            observations: crate::probe::Kind::Tcp.observed(),
            at,
            retries: 0,
            pending: false,
        };
        view.history.record(probe, &outcome);
        crate::state::lock(&view.state.get(probe).expect("probe")).record(outcome);
    }

    const PROBES: &str = "status_page: {title: Shop, group_by: team}\nprobes:\n  \
        - {name: web, kind: tcp, address: '127.0.0.1:1', labels: {team: front}}\n  \
        - {name: db, kind: tcp, address: '127.0.0.1:2', labels: {team: back}}\n  \
        - {name: cron, kind: tcp, address: '127.0.0.1:3'}\n  \
        - {name: secret, kind: tcp, address: '127.0.0.1:4', status_page: {hide: true}}\n";

    #[tokio::test]
    async fn snapshot_groups_by_label_and_counts_levels() {
        let view = view(PROBES);
        let now = SystemTime::now();
        run(&view, "web", Level::Up, now - Duration::from_secs(60));
        run(&view, "db", Level::Up, now - Duration::from_secs(120));
        run(&view, "db", Level::Down, now - Duration::from_secs(30));
        run(&view, "secret", Level::Down, now);
        let status = snapshot(&view, now);
        assert_eq!(status.title, "Shop");
        let names: Vec<Option<&str>> = status.groups.iter().map(|g| g.name.as_deref()).collect();
        assert_eq!(
            names,
            [Some("back"), Some("front"), None],
            "named groups sorted, unlabelled last"
        );
        assert_eq!(
            (
                status.summary.up,
                status.summary.down,
                status.summary.pending,
                status.summary.total
            ),
            (1, 1, 1, 3),
            "the hidden probe is left out; cron has not run"
        );
        let db = &status.groups[0].probes[0];
        assert_eq!((db.level.as_str(), db.reason.as_deref()), ("down", Some("connect")));
        assert_eq!(db.detail.as_deref(), Some("refused"));
        assert_eq!(db.consecutive_failures, 1);
        assert_eq!(db.since, Some(rfc3339(now - Duration::from_secs(30))));
        assert_eq!(db.uptime.day.runs, 2);
        assert_eq!(db.uptime.day.ratio, Some(0.5));
        assert_eq!(status.groups[2].probes[0].level, "pending");
        assert!(find(&view.config(), "secret").is_none());
    }

    #[tokio::test]
    async fn a_probe_of_another_shard_is_not_shown() {
        let view = view(PROBES);
        let config = view.config();
        let web = config.probes.iter().find(|p| p.name == "web").expect("web");
        view.state.retain(&["db"].into_iter().collect());
        assert!(probe_status(&view, web, SystemTime::now()).is_none());
        assert_eq!(snapshot(&view, SystemTime::now()).summary.total, 1);
    }
}
