//! `/probe` answers in blackbox_exporter's own metric names, so its dashboards and rules work;
//! vigil's extras carry the `vigil_` prefix.

use std::fmt::Write;

use crate::metrics::unix_seconds;
use crate::probe::Level;
use crate::state::Outcome;

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n");
}

/// The metrics of one `/probe` run, in Prometheus text format.
pub fn render(outcome: &Outcome) -> String {
    let obs = &outcome.observations;
    let mut out = String::with_capacity(2048);
    let success = if outcome.level == Level::Down { 0.0 } else { 1.0 };
    gauge(
        &mut out,
        "probe_success",
        "Displays whether or not the probe was a success",
        success,
    );
    gauge(
        &mut out,
        "probe_duration_seconds",
        "Returns how long the probe took to complete in seconds",
        outcome.duration.as_secs_f64(),
    );
    if let Some(phases) = obs.phases {
        gauge(
            &mut out,
            "probe_dns_lookup_time_seconds",
            "Returns the time taken for probe dns lookup in seconds",
            phases.resolve.as_secs_f64(),
        );
        if obs.http_status.is_some() {
            out.push_str("# HELP probe_http_duration_seconds Duration of http request by phase, summed over all redirects\n# TYPE probe_http_duration_seconds gauge\n");
            for (phase, d) in phases.labelled() {
                let _ = writeln!(
                    out,
                    "probe_http_duration_seconds{{phase=\"{phase}\"}} {}",
                    d.as_secs_f64()
                );
            }
        }
    }
    if let Some(code) = obs.http_status {
        gauge(
            &mut out,
            "probe_http_status_code",
            "Response HTTP status code",
            f64::from(code),
        );
    }
    if let Some(length) = obs.http_content_length {
        gauge(
            &mut out,
            "probe_http_content_length",
            "Length of http content response",
            length as f64,
        );
    }
    if let Some(redirects) = obs.http_redirects {
        gauge(
            &mut out,
            "probe_http_redirects",
            "The number of redirects",
            f64::from(redirects),
        );
    }
    if let Some(version) = obs.http_version {
        gauge(
            &mut out,
            "probe_http_version",
            "Returns the version of HTTP of the probe response",
            version,
        );
    }
    if let Some(tls) = obs.tls {
        let name = if obs.http_status.is_some() {
            "probe_http_ssl"
        } else {
            "probe_tls"
        };
        gauge(
            &mut out,
            name,
            "Indicates if SSL was used for the final connection",
            if tls { 1.0 } else { 0.0 },
        );
    }
    if let Some(protocol) = obs.ip_protocol {
        gauge(
            &mut out,
            "probe_ip_protocol",
            "Specifies whether probe ip protocol is IP4 or IP6",
            f64::from(protocol),
        );
    }
    if let Some(expiry) = obs.tls_cert_expiry {
        gauge(
            &mut out,
            "probe_ssl_earliest_cert_expiry",
            "Returns earliest SSL cert expiry in unixtime",
            unix_seconds(expiry),
        );
    }
    let failed_regex = matches!(
        outcome.reason,
        Some(crate::probe::Reason::Body | crate::probe::Reason::Header)
    );
    if obs.http_status.is_some() {
        gauge(
            &mut out,
            "probe_failed_due_to_regex",
            "Indicates if probe failed due to regex",
            if failed_regex { 1.0 } else { 0.0 },
        );
    }
    out.push_str("# HELP vigil_probe_status 1 for the level the probe ended in, 0 for the others\n# TYPE vigil_probe_status gauge\n");
    for level in Level::ALL {
        let _ = writeln!(
            out,
            "vigil_probe_status{{status=\"{}\"}} {}",
            level.as_str(),
            u8::from(level == outcome.level)
        );
    }
    if let Some(reason) = outcome.reason {
        out.push_str(
            "# HELP vigil_probe_failure_reason Why the probe did not end UP\n# TYPE vigil_probe_failure_reason gauge\n",
        );
        let _ = writeln!(out, "vigil_probe_failure_reason{{reason=\"{}\"}} 1", reason.as_str());
    }
    gauge(
        &mut out,
        "vigil_probe_retries",
        "Extra attempts made after a DOWN attempt",
        f64::from(outcome.retries),
    );
    out
}

/// `/probe?debug=true`: what happened, then the metrics.
pub fn debug(module: &str, target: &str, outcome: &Outcome, metrics: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Module: {module}\nTarget: {target}\nLevel: {}", outcome.level);
    if let Some(reason) = outcome.reason {
        let _ = writeln!(out, "Reason: {reason}\nDetail: {}", outcome.detail);
    }
    let _ = writeln!(
        out,
        "Duration: {:.6}s\nRetries: {}\n\nMetrics that would have been returned:\n{metrics}",
        outcome.duration.as_secs_f64(),
        outcome.retries
    );
    out
}
