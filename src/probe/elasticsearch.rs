//! The `elasticsearch` kind (OpenSearch too): how old is the newest document of an index.
//!
//! It asks for a `max` aggregation on the timestamp field with `size: 0`, not for the first hit
//! of a descending sort: the aggregation reads doc values only (no scoring, no `_source`),
//! spans every index of a pattern in one request, answers `null` for no documents instead of
//! failing on indices where the field is unmapped, and its `hits.total` tells an empty index from
//! a field that holds no values. For data streams it can read `maximum_timestamp` from
//! `_data_stream/<name>/_stats` instead, which costs the cluster nothing.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::Method;
use http::header::{self, HeaderName, HeaderValue};
use serde::Deserialize;
use url::Url;

use super::freshness::{self, Freshness, Thresholds};
use super::http::{self as http_kind, BasicAuth};
use super::{Built, CheckContext, Failure, Family, ProbeKind, Reason, Role, Verdict};
use crate::secret::SecretSource;
use crate::spec::BuildContext;
use crate::transport::connect::IpProtocol;
use crate::transport::http::{BodyPolicy, Client, Decode, Exchange, Outgoing, USER_AGENT, fetch, parse_url};
use crate::transport::tls::{self, TlsSpec};

/// Config of an `elasticsearch` probe.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Base URL of the cluster (`https://es:9200`).
    pub url: Option<String>,
    /// Several base URLs, tried in order until one answers; each gets its share of the
    /// attempt's timeout, so a node that hangs leaves time for the next.
    #[serde(default)]
    pub urls: Vec<String>,
    /// Index, alias, data stream or pattern (`gps-*`).
    pub index: String,
    /// The timestamp field (default `@timestamp`).
    #[serde(default = "default_field")]
    pub timestamp_field: String,
    /// A filter query (Query DSL, as YAML or JSON), e.g. `{term: {device: gw-7}}`.
    pub query: Option<serde_json::Value>,
    /// Read `maximum_timestamp` of the data stream instead of searching.
    #[serde(default)]
    pub data_stream: bool,
    /// Basic auth.
    pub basic_auth: Option<BasicAuth>,
    /// API key (the base64 `id:api_key` Elasticsearch gives), inline or `{file: PATH}`.
    pub api_key: Option<SecretSource>,
    /// TLS settings for `https` URLs.
    #[serde(default)]
    pub tls_config: TlsSpec,
    /// IP version to try first.
    #[serde(default)]
    pub ip_protocol: IpProtocol,
    /// Older than this: DOWN.
    #[serde(default, with = "crate::spec::values::duration")]
    pub max_age: Option<Duration>,
    /// Older than this: DEGRADED.
    #[serde(default, with = "crate::spec::values::duration")]
    pub warn_age: Option<Duration>,
    /// Largest response read (default 1MiB).
    pub body_size_limit: Option<crate::spec::values::ByteSize>,
}

fn default_field() -> String {
    "@timestamp".into()
}

/// An `elasticsearch` probe's compiled settings.
#[derive(Debug)]
pub struct Elasticsearch {
    bases: Vec<Url>,
    /// The attempt's timeout, shared out between the URLs.
    attempt_timeout: Option<Duration>,
    path: String,
    body: Bytes,
    data_stream: bool,
    field: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    client: Client,
    policy: BodyPolicy,
    thresholds: Thresholds,
}

impl ProbeKind for Elasticsearch {
    const NAME: &'static str = "elasticsearch";
    /// A query to the cluster, and the age of what it found.
    const REASONS: &'static [Reason] = &[
        Reason::Dns,
        Reason::Connect,
        Reason::Tls,
        Reason::Protocol,
        Reason::Status,
        Reason::Auth,
        Reason::Missing,
        Reason::Query,
        Reason::Empty,
        Reason::Stale,
    ];
    const FAMILIES: &'static [Family<Self>] = &[Freshness::<Self>::NEWEST, Freshness::<Self>::NEWEST_READ];

    type Spec = Spec;
    type Obs = freshness::Obs;
    type Kept = freshness::Kept;

    fn build(spec: Spec, cx: &mut BuildContext, path: &str, role: Role) -> Option<Built<Self>> {
        build(spec, cx, path, role)
    }

    async fn check(&self, target: &str, cx: &CheckContext, obs: &mut freshness::Obs) -> Verdict {
        check(self, target, cx, obs).await
    }

    fn keep(kept: &mut freshness::Kept, obs: &freshness::Obs) {
        freshness::keep(kept, obs);
    }
}

fn build(spec: Spec, ctx: &mut BuildContext, path: &str, role: Role) -> Option<Built<Elasticsearch>> {
    if role == Role::Module {
        ctx.error(path, "an elasticsearch probe cannot be a /probe module");
        return None;
    }
    let key = |k: &str| format!("{path}.{k}");
    let mut raw: Vec<(String, String)> = spec.url.iter().map(|u| (key("url"), u.clone())).collect();
    raw.extend(
        spec.urls
            .iter()
            .enumerate()
            .map(|(i, u)| (format!("{path}.urls.{i}"), u.clone())),
    );
    if raw.is_empty() {
        ctx.error(path, "missing key `url` (or `urls`)");
    }
    let mut bases = Vec::new();
    for (at, text) in &raw {
        match parse_url(text, ctx.secret_names()) {
            Ok(url) => bases.push(url),
            Err(e) => ctx.error(at, e.detail),
        }
    }
    if spec.index.is_empty() || spec.index.contains(['/', ' ', '?', '#']) {
        ctx.error(
            key("index"),
            format!("`{}` is not an index name or pattern", spec.index),
        );
    }
    if spec.data_stream && spec.query.is_some() {
        ctx.error(
            key("query"),
            "a data stream's maximum_timestamp cannot be filtered; remove `query` or `data_stream`",
        );
    }
    if let Some(query) = &spec.query
        && !query.is_object()
    {
        ctx.error(key("query"), "must be a Query DSL object, e.g. {term: {device: gw-7}}");
    }
    let mut headers = vec![(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))];
    match (&spec.basic_auth, &spec.api_key) {
        (Some(_), Some(_)) => ctx.error(key("api_key"), "set either basic_auth or api_key, not both"),
        (Some(auth), None) => {
            if let Some(value) = http_kind::basic_auth_header(auth, ctx, &key("basic_auth.password")) {
                headers.push((header::AUTHORIZATION, value));
            }
        }
        (None, Some(source)) => {
            if let Some(secret) = ctx.secret(key("api_key"), source) {
                match HeaderValue::from_str(&format!("ApiKey {}", secret.expose())) {
                    Ok(mut value) => {
                        value.set_sensitive(true);
                        headers.push((header::AUTHORIZATION, value));
                    }
                    Err(_) => ctx.error(key("api_key"), "the API key holds characters a header cannot carry"),
                }
            }
        }
        (None, None) => {}
    }
    if let Some(limit) = spec.body_size_limit {
        http_kind::check_body_limit(limit.0, ctx, &key("body_size_limit"));
    }
    let thresholds = freshness::thresholds(spec.max_age, spec.warn_age, ctx, path);
    let tls = tls::client_config(&spec.tls_config, &[b"http/1.1"], ctx, &key("tls_config"));
    let filter = spec
        .query
        .clone()
        .unwrap_or_else(|| serde_json::json!({"match_all": {}}));
    let body = serde_json::json!({
        "size": 0,
        "track_total_hits": true,
        "query": {"bool": {"filter": [filter]}},
        "aggs": {"newest": {"max": {"field": spec.timestamp_field}}},
    });
    let request_path = if spec.data_stream {
        format!("_data_stream/{}/_stats", spec.index)
    } else {
        format!("{}/_search", spec.index)
    };
    let target = raw
        .first()
        .map(|(_, u)| format!("{}/{}", u.trim_end_matches('/'), spec.index));
    let limit = spec.body_size_limit.map_or(1 << 20, |b| b.0);
    Some(Built {
        settings: Elasticsearch {
            bases,
            attempt_timeout: ctx.attempt_timeout(),
            path: request_path,
            body: if spec.data_stream {
                Bytes::new()
            } else {
                Bytes::from(body.to_string())
            },
            data_stream: spec.data_stream,
            field: spec.timestamp_field,
            headers,
            client: Client {
                tls: tls?,
                verify: spec.tls_config.verify,
                server_name: spec.tls_config.server_name,
                ip_protocol: spec.ip_protocol,
                ip_protocol_fallback: true,
                follow_redirects: false,
                max_redirects: 0,
                secret_names: ctx.secret_names().clone(),
                user_agent: HeaderValue::from_static(USER_AGENT),
                http2: false,
                h2c: false,
            },
            policy: BodyPolicy {
                limit: Some(limit),
                keep: usize::try_from(limit).unwrap_or(usize::MAX),
                decode: Decode::AsDeclared,
            },
            thresholds: thresholds?,
        },
        target,
        freshness: Some(thresholds?),
    })
}

/// Of the attempt's timeout, what the URLs share: a little is kept back so that the last URL's
/// own timeout, with its message, comes before the scheduler's.
fn shared_time(timeout: Duration) -> Duration {
    timeout.saturating_sub((timeout / 20).min(Duration::from_millis(200)))
}

/// One attempt: ask each base URL in turn until one answers, then judge the newest timestamp.
/// Each URL gets an equal share of what is left of the attempt, so a node that hangs costs its
/// share, not the attempt.
async fn check(settings: &Elasticsearch, _target: &str, context: &CheckContext, obs: &mut freshness::Obs) -> Verdict {
    let mut failure = Failure::new(Reason::Connect, "no URL configured");
    let started = Instant::now();
    let count = settings.bases.len();
    for (i, base) in settings.bases.iter().enumerate() {
        let Ok(url) = base
            .join(&format!("{}/", base.path().trim_end_matches('/')))
            .and_then(|b| b.join(&settings.path))
        else {
            continue;
        };
        let (method, body) = if settings.data_stream {
            (Method::GET, Bytes::new())
        } else {
            (Method::POST, settings.body.clone())
        };
        let outgoing = Outgoing {
            method,
            url,
            headers: &settings.headers,
            userinfo: None,
            watch: None,
            body,
        };
        let mut exchange = Exchange::default();
        // One URL has the whole attempt: the scheduler's timeout ends it.
        let fetched = match settings.attempt_timeout.filter(|_| count > 1) {
            Some(timeout) => {
                let left = shared_time(timeout).saturating_sub(started.elapsed());
                let share = left / u32::try_from(count - i).unwrap_or(u32::MAX);
                match tokio::time::timeout(
                    share,
                    fetch(
                        &settings.client,
                        outgoing,
                        settings.policy,
                        &context.sockets,
                        &mut exchange,
                    ),
                )
                .await
                {
                    Ok(fetched) => fetched.map_err(Failure::from),
                    Err(_) => Err(Failure::new(
                        Reason::Timeout,
                        format!(
                            "{} did not answer within {}ms (its share of the timeout)",
                            settings.client.secret_names.redact_target(base.as_str()),
                            share.as_millis()
                        ),
                    )),
                }
            }
            None => fetch(
                &settings.client,
                outgoing,
                settings.policy,
                &context.sockets,
                &mut exchange,
            )
            .await
            .map_err(Failure::from),
        };
        let fetched = fetched.and_then(|()| Answer::of(exchange));
        match fetched {
            Ok(response) if response.status >= 500 => {
                failure = Failure::new(
                    Reason::Status,
                    format!("the cluster answered {}: {}", response.status, error_of(&response)),
                );
            }
            Ok(response) => {
                return match newest(settings, &response) {
                    Ok(newest) => freshness::assess(newest, &settings.thresholds, SystemTime::now(), obs),
                    Err(f) => f.into(),
                };
            }
            Err(f)
                if matches!(
                    f.reason,
                    Reason::Connect | Reason::Dns | Reason::Tls | Reason::Protocol | Reason::Timeout
                ) =>
            {
                failure = f
            }
            Err(f) => return f.into(),
        }
    }
    failure.into()
}

/// The cluster's answer: its status and body.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    fn of(exchange: Exchange) -> Result<Answer, Failure> {
        let status = exchange.status();
        if exchange.head.is_none() {
            return Err(Failure::new(Reason::Protocol, "no response"));
        }
        Ok(Answer {
            status,
            body: exchange.body,
        })
    }
}

/// `error.type: error.reason` of an Elasticsearch error body (root cause first), or the status.
fn error_of(response: &Answer) -> String {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&response.body) else {
        return format!("HTTP {}", response.status);
    };
    let error = &doc["error"];
    let cause = error["root_cause"].get(0).unwrap_or(error);
    match (cause["type"].as_str(), cause["reason"].as_str()) {
        (Some(kind), Some(reason)) => format!("{kind}: {}", truncate(reason, 200)),
        (Some(kind), None) => kind.to_string(),
        _ => match error.as_str() {
            Some(text) => truncate(text, 200),
            None => format!("HTTP {}", response.status),
        },
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

/// Reads the newest timestamp from a search or data stream stats answer.
fn newest(settings: &Elasticsearch, response: &Answer) -> Result<Option<SystemTime>, Failure> {
    match response.status {
        200 => {}
        401 | 403 => {
            return Err(Failure::new(
                Reason::Auth,
                format!("{}: {}", response.status, error_of(response)),
            ));
        }
        404 => return Err(Failure::new(Reason::Missing, error_of(response))),
        _ => {
            return Err(Failure::new(
                Reason::Query,
                format!("{}: {}", response.status, error_of(response)),
            ));
        }
    }
    let doc: serde_json::Value = serde_json::from_slice(&response.body)
        .map_err(|e| Failure::new(Reason::Protocol, format!("the answer is not JSON: {e}")))?;
    if settings.data_stream {
        let streams = doc["data_streams"].as_array().map(Vec::as_slice).unwrap_or_default();
        if streams.is_empty() {
            return Err(Failure::new(Reason::Missing, "no data stream matches"));
        }
        let newest = streams
            .iter()
            .filter_map(|s| s["maximum_timestamp"].as_f64())
            .fold(None, |acc: Option<f64>, v| Some(acc.map_or(v, |a| a.max(v))));
        return Ok(newest.and_then(freshness::from_epoch));
    }
    if let Some(failed) = doc["_shards"]["failed"].as_u64().filter(|&n| n > 0) {
        let reason = doc["_shards"]["failures"][0]["reason"]["reason"]
            .as_str()
            .unwrap_or("unknown");
        return Err(Failure::new(
            Reason::Query,
            format!("{failed} shard(s) failed: {}", truncate(reason, 200)),
        ));
    }
    let value = &doc["aggregations"]["newest"]["value"];
    if value.is_null() {
        let total = doc["hits"]["total"]["value"]
            .as_u64()
            .or_else(|| doc["hits"]["total"].as_u64())
            .unwrap_or(0);
        if total > 0 {
            return Err(Failure::new(
                Reason::Query,
                format!(
                    "{total} documents match but none has a value in `{}` (is the field mapped?)",
                    settings.field
                ),
            ));
        }
        return Ok(None);
    }
    let millis = value
        .as_f64()
        .ok_or_else(|| Failure::new(Reason::Protocol, format!("aggregation value {value} is not a number")))?;
    freshness::from_epoch(millis / 1000.0).map(Some).ok_or_else(|| {
        Failure::new(
            Reason::Query,
            format!("`{}` holds {millis}, not a date", settings.field),
        )
    })
}
