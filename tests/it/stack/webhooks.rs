//! A stand-in for every Alertmanager receiver: a webhook recorder on 127.0.0.1 that keeps each
//! notification with its arrival time. The test copies of alertmanager.yml post receiver `name`
//! to `<recorder>/<name>`, so the recorder sees which step of the ladder sent what.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::post;

use super::json::Json;
use super::parse_rfc3339;

/// The webhook recorder (axum on 127.0.0.1, port 0, on a thread of its own).
pub struct Recorder {
    /// `http://127.0.0.1:<port>`; receiver `name` posts to `{url}/{name}`.
    pub url: String,
    received: Arc<Mutex<Vec<(SystemTime, String, String)>>>,
}

impl Recorder {
    pub fn start() -> Recorder {
        let received: Arc<Mutex<Vec<(SystemTime, String, String)>>> = Arc::default();
        let log = Arc::clone(&received);
        let app = Router::new().route(
            "/{receiver}",
            post(move |Path(receiver): Path<String>, body: String| {
                let log = Arc::clone(&log);
                async move {
                    log.lock().unwrap().push((SystemTime::now(), receiver, body));
                    StatusCode::OK
                }
            }),
        );
        let address = crate::common::serve_in_thread(app);
        Recorder {
            url: format!("http://{address}"),
            received,
        }
    }

    /// Every alert of every notification received so far, in order of arrival.
    pub fn deliveries(&self) -> Vec<Delivery> {
        let received = self.received.lock().unwrap().clone();
        let mut deliveries = Vec::new();
        for (at, path, body) in received {
            let payload = Json::parse(&body).unwrap_or_else(|e| panic!("webhook body to /{path}: {e}\n{body}"));
            let receiver = payload.get("receiver").and_then(Json::as_str).unwrap_or("");
            assert_eq!(receiver, path, "receiver `{receiver}` posted to /{path}: {body}");
            for alert in payload.get("alerts").and_then(Json::as_array).expect("alerts array") {
                let field = |name| alert.get(name).and_then(Json::as_str).unwrap_or("");
                deliveries.push(Delivery {
                    at,
                    receiver: receiver.to_string(),
                    status: field("status").to_string(),
                    labels: alert.get("labels").map(Json::string_members).unwrap_or_default(),
                    annotations: alert.get("annotations").map(Json::string_members).unwrap_or_default(),
                    starts_at: parse_rfc3339(field("startsAt"))
                        .unwrap_or_else(|| panic!("startsAt of an alert: {}", field("startsAt"))),
                });
            }
        }
        deliveries
    }
}

/// One alert of one webhook notification.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// When the recorder received the notification.
    pub at: SystemTime,
    /// The receiver that sent it (the payload's `receiver`, also the URL path).
    pub receiver: String,
    /// The alert's status: `firing` or `resolved`.
    pub status: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The alert's `startsAt`: for Prometheus' alerts, when the rule's condition began to hold.
    pub starts_at: SystemTime,
}

impl Delivery {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }

    /// Whether this is (receiver, alertname, probe, status).
    pub fn is(&self, receiver: &str, alertname: &str, probe: &str, status: &str) -> bool {
        self.receiver == receiver
            && self.label("alertname") == alertname
            && self.label("probe") == probe
            && self.status == status
    }
}

/// The first delivery of (receiver, alertname, probe, status) among `deliveries`.
pub fn first<'a>(
    deliveries: &'a [Delivery],
    receiver: &str,
    alertname: &str,
    probe: &str,
    status: &str,
) -> Option<&'a Delivery> {
    deliveries.iter().find(|d| d.is(receiver, alertname, probe, status))
}

/// One line per (receiver, alertname, probe, status): the arrivals, in seconds after `origin`,
/// for failure messages.
pub fn summary(deliveries: &[Delivery], origin: SystemTime) -> String {
    let mut lines: BTreeMap<(String, String, String, String), Vec<String>> = BTreeMap::new();
    for d in deliveries {
        let after = match d.at.duration_since(origin) {
            Ok(after) => after.as_secs_f64(),
            Err(before) => -before.duration().as_secs_f64(),
        };
        lines
            .entry((
                d.receiver.clone(),
                d.label("alertname").to_string(),
                d.label("probe").to_string(),
                d.status.clone(),
            ))
            .or_default()
            .push(format!("{after:.1}s"));
    }
    lines
        .into_iter()
        .map(|((receiver, alertname, probe, status), times)| {
            let more = match times.len() {
                0..=8 => String::new(),
                n => format!(" (+{} more)", n - 8),
            };
            let times = times[..times.len().min(8)].join(" ");
            format!("{receiver:15} {alertname:26} {probe:8} {status:8} at {times}{more}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}
