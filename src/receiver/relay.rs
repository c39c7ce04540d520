//! Relays alerts to WhatsApp, through the WhatsApp Business Cloud API (approved template
//! messages) or MessageBird's Conversations API (HSM templates), to several phones, with a
//! minimum interval per alert group, a minimum number of firing deliveries before the first
//! message, and retries with backoff on 429 and 5xx.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Method;
use http::header::{self, HeaderName, HeaderValue};
use serde::Deserialize;
use url::Url;

use super::payload::{Payload, Status};
use crate::secret::{Secret, SecretSource};
use crate::spec::BuildContext;
use crate::transport::connect::{IpProtocol, Sockets};
use crate::transport::http::{BodyPolicy, Client, Decode, Exchange, Outgoing, USER_AGENT, fetch, parse_url};
use crate::transport::tls::{self, TlsSpec};

/// `receiver.whatsapp:` in the config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// `cloud_api` (WhatsApp Business Cloud API) or `messagebird`.
    pub provider: Provider,
    /// Phone numbers in E.164 form (`+491701234567`).
    pub to: Vec<String>,
    /// Name of the approved template; it takes four parameters: what, status, summary, since.
    pub template: String,
    /// Template language code (default `en`).
    #[serde(default = "default_language")]
    pub language: String,
    /// Alertmanager receiver whose deliveries are relayed (default `vigil-whatsapp`).
    #[serde(default = "default_receiver")]
    pub receiver: String,
    /// At most one message per alert group within this (default 15m); resolved notices always go.
    #[serde(default = "default_min_interval", with = "crate::spec::values::duration")]
    pub min_interval: Duration,
    /// DOWN runs in a row a probe must have (the alert's `consecutive_failures` annotation,
    /// which vigil's rules fill in) before a message goes (default 1). Alerts without the
    /// annotation (containers, the exporter itself) are not held back.
    #[serde(default = "one")]
    pub min_failures: u32,
    /// Retries after a 429, a 5xx or a connection error (default 3).
    #[serde(default = "three")]
    pub retries: u32,
    /// First pause between retries, doubling (default 1s; a `Retry-After` header wins, up to 60s).
    #[serde(default = "default_backoff", with = "crate::spec::values::duration")]
    pub retry_backoff: Duration,
    /// Cloud API: the sending phone number's id.
    pub phone_number_id: Option<String>,
    /// Cloud API: the access token (inline or `{file: PATH}`).
    pub access_token: Option<SecretSource>,
    /// MessageBird: the access key (inline or `{file: PATH}`).
    pub access_key: Option<SecretSource>,
    /// MessageBird: the WhatsApp channel id.
    pub channel_id: Option<String>,
    /// MessageBird: the template namespace.
    pub namespace: Option<String>,
    /// API base URL (defaults: `https://graph.facebook.com/v21.0`,
    /// `https://conversations.messagebird.com/v1`).
    pub base_url: Option<String>,
}

/// Which API sends the messages.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// WhatsApp Business Cloud API.
    CloudApi,
    /// MessageBird Conversations API.
    Messagebird,
}

impl Provider {
    /// The `channel` label value.
    pub fn channel(self) -> &'static str {
        match self {
            Provider::CloudApi => "whatsapp_cloud_api",
            Provider::Messagebird => "whatsapp_messagebird",
        }
    }
}

fn default_language() -> String {
    "en".into()
}
fn default_receiver() -> String {
    "vigil-whatsapp".into()
}
fn default_min_interval() -> Duration {
    Duration::from_secs(900)
}
fn default_backoff() -> Duration {
    Duration::from_secs(1)
}
fn one() -> u32 {
    1
}
fn three() -> u32 {
    3
}

/// A relay ready to send.
#[derive(Debug)]
pub struct Relay {
    provider: Provider,
    to: Vec<String>,
    template: String,
    language: String,
    /// The Alertmanager receiver name whose deliveries are relayed.
    pub receiver: String,
    min_interval: Duration,
    min_failures: u32,
    retries: u32,
    retry_backoff: Duration,
    url: Url,
    sender: String,
    namespace: Option<String>,
    headers: Vec<(HeaderName, HeaderValue)>,
    client: Client,
}

/// Provider answers are small; more is not read.
const ANSWER_LIMIT: u64 = 1 << 20;

pub(crate) fn build(spec: Spec, ctx: &mut BuildContext, path: &str) -> Option<Relay> {
    let key = |k: &str| format!("{path}.{k}");
    if spec.to.is_empty() {
        ctx.error(key("to"), "list at least one phone number");
    }
    for (i, phone) in spec.to.iter().enumerate() {
        let digits = phone.strip_prefix('+').unwrap_or("");
        if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            ctx.error(
                format!("{path}.to.{i}"),
                format!("`{phone}` is not a phone number in E.164 form (+491701234567)"),
            );
        }
    }
    let (secret, sender, default_base, prefix) = match spec.provider {
        Provider::CloudApi => {
            let token = match &spec.access_token {
                Some(s) => ctx.secret(key("access_token"), s),
                None => {
                    ctx.error(path, "missing key `access_token` (provider cloud_api)");
                    None
                }
            };
            if spec.phone_number_id.is_none() {
                ctx.error(path, "missing key `phone_number_id` (provider cloud_api)");
            }
            (
                token,
                spec.phone_number_id.clone().unwrap_or_default(),
                "https://graph.facebook.com/v21.0",
                "Bearer",
            )
        }
        Provider::Messagebird => {
            let access_key = match &spec.access_key {
                Some(s) => ctx.secret(key("access_key"), s),
                None => {
                    ctx.error(path, "missing key `access_key` (provider messagebird)");
                    None
                }
            };
            if spec.channel_id.is_none() {
                ctx.error(path, "missing key `channel_id` (provider messagebird)");
            }
            (
                access_key,
                spec.channel_id.clone().unwrap_or_default(),
                "https://conversations.messagebird.com/v1",
                "AccessKey",
            )
        }
    };
    let base = spec.base_url.clone().unwrap_or_else(|| default_base.to_string());
    let url = match spec.provider {
        Provider::CloudApi => format!("{}/{}/messages", base.trim_end_matches('/'), sender),
        Provider::Messagebird => format!("{}/send", base.trim_end_matches('/')),
    };
    let url = match parse_url(&url, ctx.secret_names()) {
        Ok(u) => u,
        Err(e) => {
            ctx.error(key("base_url"), e.detail);
            return None;
        }
    };
    let tls = tls::client_config(&TlsSpec::default(), &[b"http/1.1"], ctx, path)?;
    let secret: Secret = secret?;
    let mut auth = HeaderValue::from_str(&format!("{prefix} {}", secret.expose())).ok()?;
    auth.set_sensitive(true);
    Some(Relay {
        provider: spec.provider,
        to: spec.to,
        template: spec.template,
        language: spec.language,
        receiver: spec.receiver,
        min_interval: spec.min_interval,
        min_failures: spec.min_failures.max(1),
        retries: spec.retries,
        retry_backoff: spec.retry_backoff,
        url,
        sender,
        namespace: spec.namespace,
        headers: vec![
            (header::AUTHORIZATION, auth),
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
        ],
        client: Client {
            tls,
            verify: true,
            server_name: None,
            ip_protocol: IpProtocol::Ip4,
            ip_protocol_fallback: true,
            follow_redirects: false,
            max_redirects: 0,
            secret_names: ctx.secret_names().clone(),
            user_agent: HeaderValue::from_static(USER_AGENT),
            http2: false,
            h2c: false,
        },
    })
}

/// The four template parameters of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// What: the probe, container or alert name.
    pub what: String,
    /// FIRING or RESOLVED, with the severity.
    pub status: String,
    /// The summary annotation.
    pub summary: String,
    /// Since when (UTC).
    pub since: String,
}

impl Message {
    /// The message for one delivery of an alert group.
    pub fn of(payload: &Payload) -> Message {
        let first = payload
            .alerts
            .iter()
            .find(|a| a.status == Status::Firing)
            .or(payload.alerts.first());
        let label = |name: &str| first.map(|a| a.label(name).to_string()).unwrap_or_default();
        let what = [label("probe"), label("container"), label("pod"), label("alertname")]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or_else(|| "alert".into());
        let more = payload.alerts.len().saturating_sub(1);
        let what = if more > 0 { format!("{what} (+{more})") } else { what };
        let status = match payload.status {
            Status::Firing => format!("FIRING {}", label("severity")).trim().to_string(),
            Status::Resolved => "RESOLVED".to_string(),
        };
        let summary = first
            .and_then(|a| a.annotations.get("summary").cloned())
            .unwrap_or_else(|| label("alertname"));
        let since = first
            .map(|a| {
                time::OffsetDateTime::from(a.starts_at)
                    .format(&time::macros::format_description!(
                        "[year]-[month]-[day] [hour]:[minute] UTC"
                    ))
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        Message {
            what,
            status,
            summary,
            since,
        }
    }
}

/// Per alert group: when a message last went.
#[derive(Clone, Debug, Default)]
pub struct GroupState {
    last_sent: Option<SystemTime>,
}

/// The most DOWN runs in a row among the firing alerts of `payload` that say (the annotation
/// `consecutive_failures`); `None` when none of them says.
fn consecutive_failures(payload: &Payload) -> Option<u64> {
    payload
        .alerts
        .iter()
        .filter(|a| a.status == Status::Firing)
        .filter_map(|a| a.annotations.get("consecutive_failures"))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v as u64)
        .max()
}

/// Why a delivery was not relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// The probe has failed fewer times in a row than `min_failures`.
    TooFewFailures,
    /// A message went for this group within `min_interval`.
    Throttled,
    /// Resolved, but nothing was ever sent for the group.
    NothingToResolve,
}

impl Relay {
    /// The `channel` label.
    pub fn channel(&self) -> &'static str {
        self.provider.channel()
    }

    /// Whether a delivery should go out now; updates the group's state when it should.
    pub fn admit(
        &self,
        groups: &mut HashMap<String, GroupState>,
        payload: &Payload,
        now: SystemTime,
    ) -> Result<(), Held> {
        let group = groups.entry(payload.group_key.clone()).or_default();
        match payload.status {
            Status::Resolved => {
                let sent = group.last_sent.is_some();
                *group = GroupState::default();
                if sent { Ok(()) } else { Err(Held::NothingToResolve) }
            }
            Status::Firing => {
                if consecutive_failures(payload).is_some_and(|n| n < u64::from(self.min_failures)) {
                    return Err(Held::TooFewFailures);
                }
                if group
                    .last_sent
                    .is_some_and(|t| now.duration_since(t).unwrap_or_default() < self.min_interval)
                {
                    return Err(Held::Throttled);
                }
                group.last_sent = Some(now);
                Ok(())
            }
        }
    }

    fn body(&self, phone: &str, message: &Message) -> serde_json::Value {
        let params = [&message.what, &message.status, &message.summary, &message.since];
        match self.provider {
            Provider::CloudApi => serde_json::json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": phone,
                "type": "template",
                "template": {
                    "name": self.template,
                    "language": {"code": self.language},
                    "components": [{
                        "type": "body",
                        "parameters": params.iter().map(|p| serde_json::json!({"type": "text", "text": p})).collect::<Vec<_>>(),
                    }],
                },
            }),
            Provider::Messagebird => serde_json::json!({
                "to": phone,
                "from": self.sender,
                "type": "hsm",
                "content": {"hsm": {
                    "namespace": self.namespace,
                    "templateName": self.template,
                    "language": {"policy": "deterministic", "code": self.language},
                    "params": params.iter().map(|p| serde_json::json!({"default": p})).collect::<Vec<_>>(),
                }},
            }),
        }
    }

    /// Sends `message` to every phone; returns one result per phone.
    pub async fn send(&self, message: &Message) -> Vec<(String, Result<(), SendError>)> {
        let mut results = Vec::new();
        for phone in &self.to {
            results.push((phone.clone(), self.send_one(phone, message).await));
        }
        results
    }

    async fn send_one(&self, phone: &str, message: &Message) -> Result<(), SendError> {
        let body = Bytes::from(self.body(phone, message).to_string());
        let mut attempt = 0;
        loop {
            let outgoing = Outgoing {
                method: Method::POST,
                url: self.url.clone(),
                headers: &self.headers,
                userinfo: None,
                watch: None,
                body: body.clone(),
            };
            let mut exchange = Exchange::default();
            let policy = BodyPolicy {
                limit: Some(ANSWER_LIMIT),
                keep: 0,
                decode: Decode::AsDeclared,
            };
            let sent = tokio::time::timeout(
                Duration::from_secs(30),
                fetch(&self.client, outgoing, policy, &Sockets::unlimited(), &mut exchange),
            )
            .await;
            let answered = match &sent {
                Ok(Ok(())) => exchange.head.as_ref(),
                _ => None,
            };
            let (retryable, reason, wait) = match (sent, answered) {
                (Ok(Ok(())), Some(response)) if (200..300).contains(&response.status) => return Ok(()),
                (Ok(Ok(())), Some(response)) => {
                    let retry_after = response
                        .headers
                        .get(header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s.min(60)));
                    match response.status {
                        429 => (true, SendError::RateLimited, retry_after),
                        s if s >= 500 => (true, SendError::ServerError, retry_after),
                        401 | 403 => (false, SendError::Auth, None),
                        _ => (false, SendError::ClientError, None),
                    }
                }
                (Ok(_), _) => (true, SendError::Connect, None),
                (Err(_), _) => (true, SendError::Timeout, None),
            };
            if !retryable || attempt >= self.retries {
                tracing::warn!(
                    channel = self.channel(),
                    reason = reason.reason(),
                    attempts = attempt + 1,
                    "WhatsApp message failed"
                );
                return Err(reason);
            }
            let wait = wait.unwrap_or(self.retry_backoff * 2u32.saturating_pow(attempt));
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

/// Why a message was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The provider answered 429, every time.
    #[error("rate limited by the provider")]
    RateLimited,
    /// The provider answered 5xx, every time.
    #[error("the provider failed (5xx)")]
    ServerError,
    /// The provider refused the credentials (401, 403).
    #[error("the provider refused the credentials")]
    Auth,
    /// The provider refused the request (another 4xx).
    #[error("the provider refused the request")]
    ClientError,
    /// No answer: no connection, TLS, or a broken reply.
    #[error("the provider could not be reached")]
    Connect,
    /// No answer within 30 s.
    #[error("the provider did not answer in time")]
    Timeout,
}

impl SendError {
    /// The bounded label of `vigil_receiver_notifications_failed_total{reason}`.
    pub fn reason(self) -> &'static str {
        match self {
            SendError::RateLimited => "rate_limited",
            SendError::ServerError => "server_error",
            SendError::Auth => "auth",
            SendError::ClientError => "client_error",
            SendError::Connect => "connect",
            SendError::Timeout => "timeout",
        }
    }
}

/// For docs and `--test-notification`: the message sent as a test.
pub fn test_message() -> Message {
    Message {
        what: "vigil".into(),
        status: "TEST".into(),
        summary: "This is a test message from vigil receiver.".into(),
        since: time::OffsetDateTime::now_utc()
            .format(&time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .unwrap_or_default(),
    }
}
