//! Alertmanager's webhook payload, version 4, decoded strictly: the version must be "4", every
//! field vigil reads must be there with its type, and an alert's status is `firing` or
//! `resolved`. Fields vigil does not read are allowed, so a newer Alertmanager keeps working.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Deserialize;

/// One webhook delivery.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    /// Must be "4".
    pub version: String,
    /// Alertmanager's key of the alert group.
    pub group_key: String,
    /// `firing` when any alert of the group fires.
    pub status: Status,
    /// The Alertmanager receiver that sent this.
    pub receiver: String,
    /// Labels the group is keyed by.
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    /// Labels all alerts share.
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    /// Alertmanager's URL.
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    /// The alerts.
    pub alerts: Vec<Alert>,
}

/// Firing or resolved.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Firing.
    Firing,
    /// Resolved.
    Resolved,
}

/// One alert.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// Firing or resolved.
    pub status: Status,
    /// Its labels (`alertname`, `probe`, `remediate`, ...).
    pub labels: BTreeMap<String, String>,
    /// Its annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// When it started firing (RFC 3339).
    #[serde(with = "rfc3339")]
    pub starts_at: SystemTime,
    /// Alertmanager's fingerprint of its label set.
    pub fingerprint: String,
}

impl Alert {
    /// A label's value, or "".
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// Why a body is not a version 4 payload.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// Not JSON in the payload's shape.
    #[error("not an Alertmanager webhook payload: {0}")]
    Malformed(serde_json::Error),
    /// Another version of the payload.
    #[error("payload version {0:?} is not supported (only \"4\")")]
    Version(String),
    /// An alert without the fingerprint dedupe keys on.
    #[error("an alert ({0}) has no fingerprint")]
    NoFingerprint(String),
}

impl PayloadError {
    /// A bounded label for the error.
    pub fn reason(&self) -> &'static str {
        match self {
            PayloadError::Malformed(_) => "malformed",
            PayloadError::Version(_) => "version",
            PayloadError::NoFingerprint(_) => "no_fingerprint",
        }
    }
}

/// The payload in `body`.
pub fn parse(body: &[u8]) -> Result<Payload, PayloadError> {
    let payload: Payload = serde_json::from_slice(body).map_err(PayloadError::Malformed)?;
    if payload.version != "4" {
        return Err(PayloadError::Version(payload.version));
    }
    if let Some(alert) = payload.alerts.iter().find(|a| a.fingerprint.is_empty()) {
        return Err(PayloadError::NoFingerprint(alert.label("alertname").to_string()));
    }
    Ok(payload)
}

mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
            .map(SystemTime::from)
            .map_err(|e| serde::de::Error::custom(format!("`{text}` is not an RFC 3339 time: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A delivery as Alertmanager 0.25 sends it.
    pub const SAMPLE: &str = r#"{
      "receiver": "vigil-receiver", "status": "firing",
      "alerts": [{"status": "firing",
        "labels": {"alertname": "VigilDataStaleRemediate", "probe": "gps-ingest", "remediate": "true", "severity": "info"},
        "annotations": {"summary": "gps-ingest is stale"},
        "startsAt": "2026-11-21T05:00:00.123Z", "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph", "fingerprint": "a1b2c3d4e5f60718"}],
      "groupLabels": {"alertname": "VigilDataStaleRemediate"}, "commonLabels": {"probe": "gps-ingest"},
      "commonAnnotations": {}, "externalURL": "http://alertmanager:9093", "version": "4",
      "groupKey": "{}:{alertname=\"VigilDataStaleRemediate\"}", "truncatedAlerts": 0
    }"#;

    #[test]
    fn parses_a_real_delivery() {
        let p = parse(SAMPLE.as_bytes()).expect("valid");
        assert_eq!(
            (p.status, p.receiver.as_str(), p.alerts.len()),
            (Status::Firing, "vigil-receiver", 1)
        );
        assert_eq!(p.alerts[0].label("probe"), "gps-ingest");
    }

    #[test]
    fn refuses_what_is_not_version_4() {
        assert!(
            parse(SAMPLE.replace("\"version\": \"4\"", "\"version\": \"3\"").as_bytes())
                .expect_err("invalid")
                .to_string()
                .contains("version")
        );
        assert!(
            parse(b"{}")
                .expect_err("invalid")
                .to_string()
                .starts_with("not an Alertmanager webhook payload")
        );
        assert!(
            parse(
                SAMPLE
                    .replace(
                        "\"status\": \"firing\",\n        \"labels\"",
                        "\"status\": \"burning\",\n        \"labels\""
                    )
                    .as_bytes()
            )
            .is_err()
        );
        assert!(
            parse(SAMPLE.replace("2026-11-21T05:00:00.123Z", "yesterday").as_bytes())
                .expect_err("invalid")
                .to_string()
                .contains("RFC 3339")
        );
    }
}
