//! Every probe's series, written as OpenMetrics text straight from its state at scrape time.
//!
//! A probe's label set (`probe`, `kind`, its user labels) is escaped once, when it is
//! configured ([`LabelText`]), and each sample is a few appends to a buffer handed on in pieces:
//! a 10,000-probe page is 120,000 lines, and an encoder call per label and per value was most of
//! a scrape's cost. The text is what prometheus-client writes (values with `dtoa` and `itoa`,
//! `le` first on buckets), so both can share one page.

use std::fmt::{self, Write};

use crate::metrics::unix_seconds;
use crate::probe::{Emit, FamilyGroup, Level, Publish, Reason, Unit, family_groups};
use crate::state::{ProbeHandle, ProbeMeta, ProbeState, State, lock};

/// A probe's labels as they are written on each of its lines: `probe` and `kind` first, then
/// whatever labels the series has of its own, then the user labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelText {
    head: Box<str>,
    tail: Box<str>,
}

impl LabelText {
    /// The label text of a probe.
    pub fn new(name: &str, kind: &str, labels: &[(String, String)]) -> Self {
        let mut head = String::new();
        push_label(&mut head, "probe", name);
        head.push(',');
        push_label(&mut head, "kind", kind);
        let mut tail = String::new();
        for (k, v) in labels {
            tail.push(',');
            push_label(&mut tail, k, v);
        }
        Self {
            head: head.into(),
            tail: tail.into(),
        }
    }
}

/// `key="value"`, the value escaped as the text formats want (`\\`, `\"`, `\n`).
fn push_label(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push_str("=\"");
    let mut last = 0;
    for (i, b) in value.bytes().enumerate() {
        let escaped = match b {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            b'\n' => "\\n",
            _ => continue,
        };
        out.push_str(&value[last..i]);
        out.push_str(escaped);
        last = i + 1;
    }
    out.push_str(&value[last..]);
    out.push('"');
}

/// A threshold as a label value, written as the histogram's `le` of the same boundary is, so
/// a rule can pick that bucket by joining on the label.
pub fn le_value(seconds: f64) -> String {
    dtoa::Buffer::new().format(seconds).to_string()
}

/// The page being written: a buffer handed on to `out` every 64 KiB.
struct Text<'a> {
    buf: String,
    out: &'a mut dyn Write,
}

const PIECE: usize = 64 * 1024;

impl Text<'_> {
    fn flush(&mut self) -> fmt::Result {
        if !self.buf.is_empty() {
            self.out.write_str(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// `# HELP`, `# TYPE` and (with a unit) `# UNIT` of a family; `name` includes the unit.
    fn descriptor(&mut self, name: &str, help: &str, unit: Option<Unit>, kind: &str) -> fmt::Result {
        if self.buf.len() >= PIECE {
            self.flush()?;
        }
        let b = &mut self.buf;
        for (line, text) in [("# HELP ", help), ("# TYPE ", kind)] {
            b.push_str(line);
            b.push_str(name);
            b.push(' ');
            b.push_str(text);
            b.push('\n');
        }
        if let Some(unit) = unit {
            b.push_str("# UNIT ");
            b.push_str(name);
            b.push(' ');
            b.push_str(unit.as_str());
            b.push('\n');
        }
        Ok(())
    }

    /// `name{labels}` of one sample, `first` labels before the probe's, `extra` after them.
    fn series(&mut self, name: &str, first: Option<(&str, &str)>, labels: &LabelText, extra: &[(&str, &str)]) {
        let b = &mut self.buf;
        b.push_str(name);
        b.push('{');
        if let Some((k, v)) = first {
            push_label(b, k, v);
            b.push(',');
        }
        b.push_str(&labels.head);
        for (k, v) in extra {
            b.push(',');
            push_label(b, k, v);
        }
        b.push_str(&labels.tail);
        b.push('}');
    }

    fn f64(&mut self, v: f64) -> fmt::Result {
        self.buf.push(' ');
        self.buf.push_str(dtoa::Buffer::new().format(v));
        self.end()
    }

    fn u64(&mut self, v: u64) -> fmt::Result {
        self.buf.push(' ');
        self.buf.push_str(itoa::Buffer::new().format(v));
        self.end()
    }

    fn end(&mut self) -> fmt::Result {
        self.buf.push('\n');
        if self.buf.len() >= PIECE {
            self.flush()?;
        }
        Ok(())
    }

    fn gauge(&mut self, name: &str, meta: &ProbeMeta, extra: &[(&str, &str)], v: f64) -> fmt::Result {
        self.series(name, None, &meta.label_text, extra);
        self.f64(v)
    }
}

/// One gauge family over every probe: `value` gives a probe's samples (extra labels, value).
fn gauges(
    text: &mut Text,
    probes: &[ProbeHandle],
    (name, help, unit): (&str, &str, Option<Unit>),
    value: impl Fn(&ProbeState, &mut dyn FnMut(&[(&str, &str)], f64)),
) -> fmt::Result {
    text.descriptor(name, help, unit, "gauge")?;
    for handle in probes {
        let state = lock(handle);
        let mut result = Ok(());
        value(&state, &mut |extra, v| {
            if result.is_ok() {
                result = text.gauge(name, &state.meta, extra, v);
            }
        });
        result?;
    }
    Ok(())
}

/// One counter family over every probe (`name` without `_total`).
fn counters(
    text: &mut Text,
    probes: &[ProbeHandle],
    (name, help): (&str, &str),
    value: impl Fn(&ProbeState, &mut dyn FnMut(&[(&str, &str)], u64)),
) -> fmt::Result {
    text.descriptor(name, help, None, "counter")?;
    let total = format!("{name}_total");
    for handle in probes {
        let state = lock(handle);
        let mut result = Ok(());
        value(&state, &mut |extra, v| {
            if result.is_ok() {
                text.series(&total, None, &state.meta.label_text, extra);
                result = text.u64(v);
            }
        });
        result?;
    }
    Ok(())
}

/// Where a kind's samples go: its family, with the probe's labels.
struct KindSamples<'a, 'b> {
    text: &'a mut Text<'b>,
    name: &'a str,
    meta: &'a ProbeMeta,
    result: fmt::Result,
}

impl Emit for KindSamples<'_, '_> {
    fn gauge(&mut self, labels: &[(&str, &str)], value: f64) {
        if self.result.is_ok() {
            self.result = self.text.gauge(self.name, self.meta, labels, value);
        }
    }
}

/// Writes every probe's series to `out`.
pub(super) fn write(state: &State, out: &mut dyn Write) -> fmt::Result {
    let probes = state.handles();
    let detail = state.detail();
    let mut text = Text {
        buf: String::with_capacity(PIECE + 4096),
        out,
    };
    let s = Some(Unit::Seconds);

    gauges(
        &mut text,
        &probes,
        (
            "vigil_probe_success",
            "Whether the last run ended UP or DEGRADED (1) or DOWN (0).",
            None,
        ),
        |p, emit| {
            if let Some(c) = &p.current {
                emit(&[], if c.level == Level::Down { 0.0 } else { 1.0 });
            }
        },
    )?;
    gauges(
        &mut text,
        &probes,
        (
            "vigil_probe_status",
            "1 for the level the last run ended in, 0 for the others.",
            None,
        ),
        |p, emit| {
            if let Some(c) = &p.current {
                for level in Level::ALL {
                    emit(&[("status", level.as_str())], if c.level == level { 1.0 } else { 0.0 });
                }
            }
        },
    )?;
    gauges(
        &mut text,
        &probes,
        (
            "vigil_probe_level_since_timestamp_seconds",
            "When runs started ending at the current level (kept across restarts in state_dir).",
            s,
        ),
        |p, emit| {
            if let Some(c) = &p.current {
                emit(&[], unix_seconds(c.since));
            }
        },
    )?;
    histograms(&mut text, &probes)?;
    counters(
        &mut text,
        &probes,
        (
            "vigil_probe_failures",
            "Probe runs that ended DOWN (from 0; by reason in vigil_probe_failures_by_reason_total).",
        ),
        |p, emit| emit(&[], p.failures),
    )?;
    counters(
        &mut text,
        &probes,
        (
            "vigil_probe_failures_by_reason",
            "Probe runs that ended DOWN, by reason: the reasons seen (every reason of the kind from 0 \
             with metrics.detail).",
        ),
        |p, emit| {
            let seen = |reason: &Reason| p.failure_reasons.iter().find(|(r, _)| r == reason).map(|(_, n)| *n);
            if detail {
                let kind = Reason::SCHEDULER.iter().chain(p.meta.kind.own_reasons());
                for reason in kind.clone() {
                    emit(&[("reason", reason.as_str())], seen(reason).unwrap_or(0));
                }
                for (reason, n) in &p.failure_reasons {
                    if !kind.clone().any(|r| r == reason) {
                        emit(&[("reason", reason.as_str())], *n);
                    }
                }
            } else {
                for (reason, n) in &p.failure_reasons {
                    emit(&[("reason", reason.as_str())], *n);
                }
            }
        },
    )?;
    counters(
        &mut text,
        &probes,
        (
            "vigil_probe_level_changes",
            "Changes of level (UP, DEGRADED, DOWN) from one run to the next (from the first change; \
             from 0 with metrics.detail).",
        ),
        |p, emit| {
            if detail || p.level_changes > 0 {
                emit(&[], p.level_changes);
            }
        },
    )?;
    counters(
        &mut text,
        &probes,
        (
            "vigil_probe_retries",
            "Extra attempts made after a DOWN attempt (for probes with retries).",
        ),
        |p, emit| {
            if detail || p.meta.timing.retries > 0 || p.retries > 0 {
                emit(&[], p.retries);
            }
        },
    )?;
    if detail {
        counters(
            &mut text,
            &probes,
            (
                "vigil_probe_runs",
                "Probe runs finished (also vigil_probe_duration_seconds_count).",
            ),
            |p, emit| emit(&[], p.runs),
        )?;
        gauges(
            &mut text,
            &probes,
            (
                "vigil_probe_last_run_timestamp_seconds",
                "When the probe last finished a run.",
                s,
            ),
            |p, emit| {
                if let Some(at) = p.last_run {
                    emit(&[], unix_seconds(at));
                }
            },
        )?;
    }
    gauges(
        &mut text,
        &probes,
        (
            "vigil_probe_last_success_timestamp_seconds",
            "When the probe last ended UP or DEGRADED (while it is DOWN; always with metrics.detail).",
            s,
        ),
        |p, emit| {
            let down = p.current.is_some_and(|c| c.level == Level::Down);
            if let Some(at) = p.last_success.filter(|_| detail || down) {
                emit(&[], unix_seconds(at));
            }
        },
    )?;
    gauges(
        &mut text,
        &probes,
        (
            "vigil_probe_last_failure_timestamp_seconds",
            "When the probe last ended DOWN, with the reason of that run.",
            s,
        ),
        |p, emit| {
            if let Some((reason, at)) = p.last_failure {
                emit(&[("reason", reason.as_str())], unix_seconds(at));
            }
        },
    )?;
    gauges(
        &mut text,
        &probes,
        (
            "vigil_probe_consecutive_failures",
            "DOWN runs in a row (while there are any; also 0 with metrics.detail).",
            None,
        ),
        |p, emit| {
            if p.consecutive_failures > 0 || (detail && p.current.is_some()) {
                emit(&[], p.consecutive_failures as f64);
            }
        },
    )?;
    gauges(
        &mut text,
        &probes,
        (
            "vigil_probe_reminder_timestamp_seconds",
            "When the current streak of DOWN runs last reached a multiple of remind_every.",
            s,
        ),
        |p, emit| {
            if let Some(at) = p.reminder {
                emit(&[], unix_seconds(at));
            }
        },
    )?;
    if detail {
        gauges(
            &mut text,
            &probes,
            (
                "vigil_probe_latency_threshold_seconds",
                "The probe's latency thresholds: degraded_after and down_after.",
                s,
            ),
            |p, emit| {
                emit(
                    &[("level", Level::Degraded.as_str())],
                    p.meta.timing.degraded_after.as_secs_f64(),
                );
                emit(
                    &[("level", Level::Down.as_str())],
                    p.meta.timing.down_after.as_secs_f64(),
                );
            },
        )?;
    }
    text.descriptor(
        "vigil_probe",
        "What each probe checks, and its latency thresholds in seconds (as the le of their buckets in \
         vigil_probe_duration_seconds).",
        None,
        "info",
    )?;
    for handle in &probes {
        let p = lock(handle);
        let degraded = le_value(p.meta.timing.degraded_after.as_secs_f64());
        let down = le_value(p.meta.timing.down_after.as_secs_f64());
        let extra = [
            ("target", p.meta.target.as_str()),
            ("degraded_after", degraded.as_str()),
            ("down_after", down.as_str()),
        ];
        text.series("vigil_probe_info", None, &p.meta.label_text, &extra);
        text.u64(1)?;
    }
    text.descriptor(
        "vigil_probe_remediation",
        "The remediation the config declares for a probe (carried out by vigil receiver).",
        None,
        "info",
    )?;
    for handle in &probes {
        let p = lock(handle);
        if let Some(action) = p.meta.remediation {
            text.series(
                "vigil_probe_remediation_info",
                None,
                &p.meta.label_text,
                &[("action", action)],
            );
            text.u64(1)?;
        }
    }
    // What each kind declares it publishes, one descriptor per name over every kind.
    let details: &[FamilyGroup] = if detail { family_groups(Publish::Detail) } else { &[] };
    for group in family_groups(Publish::Metrics).iter().chain(details) {
        let name = group.full_name();
        text.descriptor(&name, group.help, group.unit, "gauge")?;
        for handle in &probes {
            let p = lock(handle);
            let Some(index) = group.index_for(p.meta.kind) else {
                continue;
            };
            let mut out = KindSamples {
                text: &mut text,
                name: &name,
                meta: &p.meta,
                result: Ok(()),
            };
            crate::probe::emit(
                p.meta.kind,
                index,
                p.last.as_ref().map(|l| &l.observations),
                &p.carried,
                &mut out,
            );
            out.result?;
        }
    }
    gauges(
        &mut text,
        &probes,
        (
            "vigil_freshness_threshold_seconds",
            "How old the newest record may be before the probe is DOWN (max_age).",
            s,
        ),
        |p, emit| {
            if let Some(t) = p.meta.freshness {
                emit(&[], t.max_age.as_secs_f64());
            }
        },
    )?;
    gauges(
        &mut text,
        &probes,
        (
            "vigil_freshness_warn_threshold_seconds",
            "How old the newest record may be before the probe is DEGRADED (warn_age).",
            s,
        ),
        |p, emit| {
            if let Some(warn) = p.meta.freshness.and_then(|t| t.warn_age) {
                emit(&[], warn.as_secs_f64());
            }
        },
    )?;
    text.flush()
}

/// `vigil_probe_duration_seconds`: each probe's histogram over its own boundaries.
fn histograms(text: &mut Text, probes: &[ProbeHandle]) -> fmt::Result {
    text.descriptor(
        "vigil_probe_duration_seconds",
        "Duration of probe runs (the last attempt of each run); _count counts the runs. Boundaries: the \
         probe's degraded_after and down_after (metrics.buckets).",
        Some(Unit::Seconds),
        "histogram",
    )?;
    for handle in probes {
        let p = lock(handle);
        let h = &p.histogram;
        let labels = &p.meta.label_text;
        text.series("vigil_probe_duration_seconds_sum", None, labels, &[]);
        text.f64(h.sum)?;
        text.series("vigil_probe_duration_seconds_count", None, labels, &[]);
        text.u64(h.count)?;
        let mut cumulative = 0;
        for (bound, n) in h.buckets() {
            cumulative += n;
            let mut le = dtoa::Buffer::new();
            let bound = if bound == f64::INFINITY {
                "+Inf"
            } else {
                le.format(bound)
            };
            text.series("vigil_probe_duration_seconds_bucket", Some(("le", bound)), labels, &[]);
            text.u64(cumulative)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_once() {
        let text = LabelText::new("a\"b", "http", &[("team".into(), "x\\y\nz".into())]);
        assert_eq!(&*text.head, r#"probe="a\"b",kind="http""#);
        assert_eq!(&*text.tail, r#",team="x\\y\nz""#);
        assert_eq!(le_value(1.0), "1.0");
        assert_eq!(le_value(0.25), "0.25");
    }
}
