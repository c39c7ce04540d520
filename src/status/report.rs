//! `vigil status`: fetches `/api/v1/status` from a running vigil with a minimal HTTP/1.1
//! client and prints it as a table.

use std::fmt::Write;
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::Status;
use crate::printable::printable;

/// Why the status could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Nothing answered (refused, unresolvable, timed out).
    #[error("cannot reach vigil at {url}: {message}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// What happened.
        message: String,
    },
    /// Something answered, but not with a status.
    #[error("{url}: {message}")]
    Invalid {
        /// The URL asked.
        url: String,
        /// What was wrong.
        message: String,
    },
}

/// The status URL for `base` (`http://host:port`, a path prefix kept).
pub fn status_url(base: &str) -> Result<url::Url, String> {
    let mut url = url::Url::parse(base).map_err(|e| format!("`{base}` is not a URL: {e}"))?;
    if url.scheme() != "http" {
        return Err(format!(
            "`{base}`: only http:// is supported (for a TLS listener, ask it from the host over plain HTTP or with curl)"
        ));
    }
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path(&format!("{path}/api/v1/status"));
    Ok(url)
}

/// Fetches and decodes `/api/v1/status` from the vigil at `base`, within `timeout`.
pub async fn fetch(base: &str, timeout: Duration) -> Result<Status, FetchError> {
    let url = status_url(base).map_err(|message| FetchError::Invalid {
        url: base.to_string(),
        message,
    })?;
    let shown = {
        let mut u = url.clone();
        let _ = u.set_password(None);
        let _ = u.set_username("");
        u.to_string()
    };
    let unreachable = |message: String| FetchError::Unreachable {
        url: shown.clone(),
        message,
    };
    let invalid = |message: String| FetchError::Invalid {
        url: shown.clone(),
        message,
    };
    let host = url
        .host_str()
        .unwrap_or("127.0.0.1")
        .trim_matches(['[', ']'])
        .to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let work = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(connection);
        let mut request = http::Request::get(match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        })
        .header(
            http::header::HOST,
            url.authority().rsplit('@').next().unwrap_or_default(),
        )
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, concat!("vigil/", env!("CARGO_PKG_VERSION")));
        if !url.username().is_empty() {
            let user = percent_decode(url.username());
            let password = percent_decode(url.password().unwrap_or_default());
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request = request.header(http::header::AUTHORIZATION, format!("Basic {token}"));
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| invalid(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), 256 << 20)
            .collect()
            .await
            .map_err(|e| invalid(format!("reading the answer: {e}")))?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string();
            return Err(invalid(format!("answered {status}: {text}")));
        }
        serde_json::from_slice::<Status>(&body).map_err(|e| invalid(format!("not a vigil status: {e}")))
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(unreachable(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        ))),
    }
}

fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// A ratio as a percentage with two decimals, `-` without data.
pub fn percent(ratio: Option<f64>) -> String {
    ratio.map_or("-".to_string(), |r| format!("{:.2}%", r * 100.0))
}

/// Seconds as milliseconds with one decimal, `-` without data.
pub fn millis(seconds: Option<f64>) -> String {
    seconds.map_or("-".to_string(), |s| format!("{:.1}ms", s * 1e3))
}

/// Whether any probe is DOWN.
pub fn any_down(status: &Status) -> bool {
    status.summary.down > 0
}

/// The table: probe, level, uptime 24 h, DOWN runs of all runs in 24 h, mean and p95 latency
/// over 24 h, and the last failure; then the summary line.
pub fn table(status: &Status) -> String {
    let header = [
        "PROBE",
        "LEVEL",
        "UPTIME 24H",
        "FAILED/RUNS",
        "AVG",
        "P95",
        "LAST FAILURE",
    ];
    let rows: Vec<[String; 7]> = status
        .groups
        .iter()
        .flat_map(|g| &g.probes)
        .map(|p| {
            let day = &p.uptime.day;
            let failure = p.last_failure.as_ref().map_or(String::new(), |f| {
                if f.detail.is_empty() {
                    format!("{} {}", f.at, f.reason)
                } else {
                    format!("{} {}: {}", f.at, f.reason, f.detail)
                }
            });
            [
                p.name.clone(),
                p.level.to_ascii_uppercase(),
                percent(day.ratio),
                format!("{}/{}", day.down, day.runs),
                millis(day.latency_avg_seconds),
                millis(day.latency_p95_seconds),
                failure,
            ]
            // The status comes over the network: nothing in it may drive the terminal.
            .map(|cell| printable(&cell).into_owned())
        })
        .collect();
    let mut out = crate::table::render(header, &rows);
    let s = &status.summary;
    let _ = write!(out, "\n{} up, {} degraded, {} down", s.up, s.degraded, s.down);
    if s.pending > 0 {
        let _ = write!(out, ", {} pending", s.pending);
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_urls() {
        assert_eq!(
            status_url("http://127.0.0.1:9430").map(|u| u.to_string()),
            Ok("http://127.0.0.1:9430/api/v1/status".to_string())
        );
        assert_eq!(
            status_url("http://h:1/vigil/").map(|u| u.to_string()),
            Ok("http://h:1/vigil/api/v1/status".to_string())
        );
        assert!(status_url("https://h").is_err());
        assert!(status_url("nope").is_err());
        assert_eq!(percent_decode("a%40b"), "a@b");
    }
}
