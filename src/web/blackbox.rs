//! `/probe` answers as blackbox_exporter does, so its dashboards and rules work unchanged: the
//! same series in the same cases (from what each kind declares for `/probe`), every one a gauge,
//! families sorted by name and samples by their labels, numbers printed as Go prints them, in
//! the Prometheus text format 0.0.4. vigil's extras carry the `vigil_` prefix.

use std::fmt::Write;

use crate::probe::{self, Emit, Level, Publish};
use crate::state::Outcome;

/// One family's samples, labels sorted by name.
struct Rendered {
    name: String,
    help: &'static str,
    samples: Vec<(Vec<(String, String)>, f64)>,
}

/// Collects a kind's samples.
#[derive(Default)]
struct Collect(Vec<(Vec<(String, String)>, f64)>);

impl Emit for Collect {
    fn gauge(&mut self, labels: &[(&str, &str)], value: f64) {
        let mut labels: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        labels.sort();
        self.0.push((labels, value));
    }
}

fn single(name: &str, help: &'static str, value: f64) -> Rendered {
    Rendered {
        name: name.to_string(),
        help,
        samples: vec![(Vec::new(), value)],
    }
}

/// The metrics of one `/probe` run, in Prometheus text format 0.0.4.
pub fn render(outcome: &Outcome) -> String {
    let mut families = vec![
        single(
            "probe_success",
            "Displays whether or not the probe was a success",
            f64::from(u8::from(outcome.level != Level::Down)),
        ),
        single(
            "probe_duration_seconds",
            "Returns how long the probe took to complete in seconds",
            outcome.duration.as_secs_f64(),
        ),
        Rendered {
            name: "vigil_probe_status".into(),
            help: "1 for the level the probe ended in, 0 for the others",
            samples: Level::ALL
                .iter()
                .map(|&level| {
                    (
                        vec![("status".to_string(), level.as_str().to_string())],
                        f64::from(u8::from(level == outcome.level)),
                    )
                })
                .collect(),
        },
        single(
            "vigil_probe_retries",
            "Extra attempts made after a DOWN attempt",
            f64::from(outcome.retries),
        ),
    ];
    if let Some(reason) = outcome.reason {
        families.push(Rendered {
            name: "vigil_probe_failure_reason".into(),
            help: "Why the probe did not end UP",
            samples: vec![(vec![("reason".to_string(), reason.as_str().to_string())], 1.0)],
        });
    }
    let kind = outcome.observations.kind();
    let carried = kind.carried();
    for group in probe::family_groups(Publish::Probe) {
        let Some(index) = group.index_for(kind) else {
            continue;
        };
        let mut samples = Collect::default();
        probe::emit(kind, index, Some(&outcome.observations), &carried, &mut samples);
        if !samples.0.is_empty() {
            families.push(Rendered {
                name: group.full_name(),
                help: group.help,
                samples: samples.0,
            });
        }
    }
    families.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::with_capacity(4096);
    for family in &mut families {
        family
            .samples
            .sort_by(|(a, _), (b, _)| a.iter().map(|(_, v)| v).cmp(b.iter().map(|(_, v)| v)));
        let _ = write!(
            out,
            "# HELP {} {}\n# TYPE {} gauge\n",
            family.name,
            escape_help(family.help),
            family.name
        );
        for (labels, value) in &family.samples {
            out.push_str(&family.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (name, value)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{name}=\"{}\"", escape_label(value));
                }
                out.push('}');
            }
            out.push(' ');
            out.push_str(&go_float(*value));
            out.push('\n');
        }
    }
    out
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// `v` as Go's `strconv.FormatFloat(v, 'g', -1, 64)` prints it: the shortest digits that read
/// back the same, in exponent form when the exponent is below -4 or at least 6
/// (`1.048576e+06`, `65250`, `1.2609e-05`).
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    // Rust prints the shortest round-trip digits too: `1.048576e6`, `-6.21355968e10`.
    let scientific = format!("{v:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if !(-4..6).contains(&exponent) {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        let esign = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{first}{dot}{rest}e{esign}{:02}", exponent.abs());
    }
    let point = exponent + 1;
    let text = if point <= 0 {
        format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else if point as usize >= digits.len() {
        format!("{digits}{}", "0".repeat(point as usize - digits.len()))
    } else {
        let (whole, fraction) = digits.split_at(point as usize);
        format!("{whole}.{fraction}")
    };
    format!("{sign}{text}")
}

/// `/probe?debug=true`: blackbox_exporter's three sections (what happened, the metrics, the
/// module), so what people grep for is there.
pub fn debug(module: &str, target: &str, outcome: &Outcome, metrics: &str, module_text: &str) -> String {
    let mut out = String::from("Logs for the probe:\n");
    let _ = write!(out, "module={module} target={target} level={}", outcome.level);
    if let Some(reason) = outcome.reason {
        let _ = write!(out, " reason={reason} detail={:?}", outcome.detail);
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "duration_seconds={:.6} retries={}",
        outcome.duration.as_secs_f64(),
        outcome.retries
    );
    let _ = write!(
        out,
        "\n\n\nMetrics that would have been returned:\n{metrics}\n\n\nModule configuration:\n{module_text}"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::go_float;

    #[test]
    fn numbers_as_go_prints_them() {
        for (v, text) in [
            (200.0, "200"),
            (65250.0, "65250"),
            (1_048_576.0, "1.048576e+06"),
            (67_108_864.0, "6.7108864e+07"),
            (3_668_918_509.0, "3.668918509e+09"),
            (1.2609e-05, "1.2609e-05"),
            (0.001_610_966_000_000_000_1, "0.0016109660000000001"),
            (-62_135_596_800.0, "-6.21355968e+10"),
            (1.1, "1.1"),
            (2.0, "2"),
            (0.0, "0"),
            (-1.0, "-1"),
            (100_000.0, "100000"),
            (0.0001, "0.0001"),
            (1.44541248e9, "1.44541248e+09"),
        ] {
            assert_eq!(go_float(v), text, "{v}");
        }
    }
}
