//! Reading the two exporters' answers (Prometheus text format 0.0.4; OpenMetrics is read too)
//! and comparing them: series, label sets, values (as f64: blackbox prints Go's `%g`, vigil
//! prints Rust's floats), HELP and TYPE. The differences come out as rows of one table.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// A label set, sorted by label name.
pub type Labels = Vec<(String, String)>;

/// One parsed answer.
#[derive(Default, Debug)]
pub struct Exposition {
    /// (metric name, labels) -> value.
    pub samples: BTreeMap<(String, Labels), f64>,
    /// Family name -> HELP text.
    pub help: BTreeMap<String, String>,
    /// Family name -> TYPE.
    pub kind: BTreeMap<String, String>,
}

impl Exposition {
    pub fn value(&self, name: &str) -> Option<f64> {
        self.samples.get(&(name.to_string(), Vec::new())).copied()
    }

    /// The same answer without vigil's own extras (every series whose name starts `vigil_`).
    pub fn without_vigil_extras(mut self) -> Exposition {
        self.samples.retain(|(name, _), _| !name.starts_with("vigil_"));
        self.help.retain(|name, _| !name.starts_with("vigil_"));
        self.kind.retain(|name, _| !name.starts_with("vigil_"));
        self
    }
}

fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => text.parse::<f64>().map_err(|e| format!("value {text:?}: {e}")),
    }
}

/// Parses `name{a="b",...} value [timestamp]` lines and `# HELP` / `# TYPE` comments.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_end();
        let at = |e: String| format!("line {}: {e}: {line:?}", number + 1);
        if line.is_empty() || line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.help.insert(name.to_string(), unescape(help));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            out.kind.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = line[..name_end].to_string();
        let mut rest = &line[name_end..];
        let mut labels = Labels::new();
        if let Some(after) = rest.strip_prefix('{') {
            let b = after.as_bytes();
            let mut i = 0;
            loop {
                while i < b.len() && (b[i] == b',' || b[i] == b' ') {
                    i += 1;
                }
                if i >= b.len() {
                    return Err(at("unterminated labels".into()));
                }
                if b[i] == b'}' {
                    i += 1;
                    break;
                }
                let eq = after[i..].find('=').ok_or_else(|| at("label without '='".into()))? + i;
                let label = after[i..eq].trim().to_string();
                if b.get(eq + 1) != Some(&b'"') {
                    return Err(at("label value not quoted".into()));
                }
                // The quoted value, honouring backslash escapes.
                let mut j = eq + 2;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                if j >= b.len() {
                    return Err(at("unterminated label value".into()));
                }
                labels.push((label, unescape(&after[eq + 2..j])));
                i = j + 1;
            }
            rest = &after[i..];
        }
        let value = rest.split_whitespace().next().ok_or_else(|| at("no value".into()))?;
        labels.sort();
        let value = parse_value(value).map_err(at)?;
        if out.samples.insert((name, labels), value).is_some() {
            return Err(at("the same series twice".into()));
        }
    }
    Ok(out)
}

/// Series whose values are timings, so they differ between any two runs (their presence and
/// labels are still compared): the probe's wall time, the per-phase HTTP timings, the DNS
/// lookup time, and any other `*_duration_seconds` (dns, icmp, grpc phases).
pub fn is_timing(name: &str) -> bool {
    name == "probe_dns_lookup_time_seconds" || name.ends_with("_duration_seconds")
}

/// `name{a="b"}` for messages and tables.
pub fn series(name: &str, labels: &Labels) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// A value as a person reads it: integers without a fraction, large ones whole.
pub fn show(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.fract() == 0.0 && value.abs() < 1e16 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// One difference between blackbox's answer and vigil's.
#[derive(Clone, Debug)]
pub struct Difference {
    pub case: String,
    /// The series name (and labels), or an aspect (`HTTP status`, `# HELP name`, ...).
    pub series: String,
    /// The metric name the row is about, or the aspect: what a deliberate difference names.
    pub what: String,
    pub blackbox: String,
    pub vigil: String,
}

pub const ABSENT: &str = "(absent)";

/// Every difference between `blackbox` and `vigil` (vigil's extras already removed). Values of
/// timing series are not compared; everything else is.
pub fn compare(case: &str, blackbox: &Exposition, vigil: &Exposition) -> Vec<Difference> {
    let mut out = Vec::new();
    let row = |series: String, what: &str, b: String, v: String| Difference {
        case: case.to_string(),
        series,
        what: what.to_string(),
        blackbox: b,
        vigil: v,
    };
    let keys: BTreeSet<&(String, Labels)> = blackbox.samples.keys().chain(vigil.samples.keys()).collect();
    for key in keys {
        let (name, labels) = key;
        let shown = series(name, labels);
        match (blackbox.samples.get(key), vigil.samples.get(key)) {
            (Some(&b), Some(&v)) => {
                if !is_timing(name) && !same(b, v) {
                    out.push(row(shown, name, show(b), show(v)));
                }
            }
            (Some(&b), None) => {
                let b = if is_timing(name) { "(a timing)".into() } else { show(b) };
                out.push(row(shown, name, b, ABSENT.into()));
            }
            (None, Some(&v)) => {
                let v = if is_timing(name) { "(a timing)".into() } else { show(v) };
                out.push(row(shown, name, ABSENT.into(), v));
            }
            (None, None) => unreachable!(),
        }
    }
    // HELP and TYPE of the families both publish.
    for (name, help) in &blackbox.help {
        if let Some(theirs) = vigil.help.get(name).filter(|h| *h != help) {
            out.push(row(
                format!("# HELP {name}"),
                &format!("# HELP {name}"),
                help.clone(),
                theirs.clone(),
            ));
        }
    }
    for (name, kind) in &blackbox.kind {
        if let Some(theirs) = vigil.kind.get(name).filter(|k| *k != kind) {
            out.push(row(
                format!("# TYPE {name}"),
                &format!("# TYPE {name}"),
                kind.clone(),
                theirs.clone(),
            ));
        }
    }
    // probe_success first: it is what a rule or a panel reads before anything else.
    out.sort_by_key(|d| d.what != "probe_success");
    out
}

/// Rows as a fixed-width table; long cells are cut to keep it readable.
pub fn table(header: [&str; 4], rows: &[[String; 4]]) -> String {
    const MAX: [usize; 4] = [34, 72, 40, 40];
    let cut = |s: &str, max: usize| {
        let s = s.replace('\n', "\\n");
        if s.chars().count() > max {
            format!("{}…", s.chars().take(max - 1).collect::<String>())
        } else {
            s
        }
    };
    let cells: Vec<[String; 4]> = std::iter::once(header.map(str::to_string))
        .chain(rows.iter().cloned())
        .map(|r| {
            let mut i = 0;
            r.map(|c| {
                let s = cut(&c, MAX[i]);
                i += 1;
                s
            })
        })
        .collect();
    let mut width = [0usize; 4];
    for r in &cells {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for (n, r) in cells.iter().enumerate() {
        for (i, c) in r.iter().enumerate() {
            let pad = width[i] - c.chars().count();
            let _ = write!(out, "{c}{}", " ".repeat(pad + if i < 3 { 2 } else { 0 }));
        }
        out = out.trim_end().to_string();
        out.push('\n');
        if n == 0 {
            let total: usize = width.iter().sum::<usize>() + 6;
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    out
}

#[test]
fn parses_go_floats_labels_and_comments() {
    let text = "# HELP probe_ssl_last_chain_info Contains SSL leaf certificate information\n\
        # TYPE probe_ssl_last_chain_info gauge\n\
        probe_ssl_last_chain_info{fingerprint_sha256=\"ab\",issuer=\"CN=a\\\\b,O=\\\"x\\\"\",subject=\"CN=x, y\",subjectalternative=\"localhost\"} 1\n\
        probe_ip_addr_hash 3.668918509e+09\n\
        probe_ssl_last_chain_expiry_timestamp_seconds -6.21355968e+10\n\
        probe_http_duration_seconds{phase=\"tls\"} 0\n\
        probe_x NaN\n";
    let parsed = parse(text).unwrap();
    assert_eq!(parsed.value("probe_ip_addr_hash"), Some(3_668_918_509.0));
    assert_eq!(
        parsed.value("probe_ssl_last_chain_expiry_timestamp_seconds"),
        Some(-62_135_596_800.0)
    );
    assert!(parsed.value("probe_x").unwrap().is_nan());
    let labels: Labels = vec![
        ("fingerprint_sha256".into(), "ab".into()),
        ("issuer".into(), "CN=a\\b,O=\"x\"".into()),
        ("subject".into(), "CN=x, y".into()),
        ("subjectalternative".into(), "localhost".into()),
    ];
    assert_eq!(
        parsed.samples.get(&("probe_ssl_last_chain_info".into(), labels)),
        Some(&1.0)
    );
    assert_eq!(parsed.kind["probe_ssl_last_chain_info"], "gauge");
    let rust = parse("probe_ip_addr_hash 3668918509\nprobe_x NaN\n").unwrap();
    let diffs = compare("c", &parsed, &rust);
    assert!(diffs.iter().all(|d| d.what != "probe_ip_addr_hash"), "{diffs:?}");
    assert!(
        diffs
            .iter()
            .any(|d| d.what == "probe_ssl_last_chain_info" && d.vigil == ABSENT)
    );
    assert!(
        diffs
            .iter()
            .any(|d| d.what == "probe_http_duration_seconds" && d.blackbox == "(a timing)")
    );
}
