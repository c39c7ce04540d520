//! The `elasticsearch` kind. No Elasticsearch or OpenSearch server can run on this machine, so
//! these tests run against a local HTTP server that answers in the documented wire format of
//! `_search` and `_data_stream/_stats` (response shapes as Elasticsearch 8 and OpenSearch 2 send
//! them, error bodies included: index_not_found_exception, security_exception,
//! search_phase_execution_exception), and check the request vigil sends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::{Value, json};
use vigil::probe::{Level, Reason};

/// A request as the server saw it: index, `Authorization` header, JSON body.
type Request = (String, Option<String>, Value);

#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<Request>>>);

fn millis_ago(seconds: u64) -> f64 {
    (SystemTime::now() - Duration::from_secs(seconds))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64
}

/// A `_search` answer with a max aggregation, as Elasticsearch 8 sends it.
fn search_answer(total: u64, newest: Option<f64>) -> Value {
    json!({
        "took": 3, "timed_out": false,
        "_shards": {"total": 2, "successful": 2, "skipped": 0, "failed": 0},
        "hits": {"total": {"value": total, "relation": "eq"}, "max_score": null, "hits": []},
        "aggregations": {"newest": match newest {
            Some(v) => json!({"value": v, "value_as_string": "2026-11-21T05:00:00.000Z"}),
            None => json!({"value": null}),
        }}
    })
}

fn error(kind: &str, reason: &str, status: u16) -> Value {
    json!({"error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason}, "status": status})
}

async fn search(
    State(rec): State<Recorded>,
    Path(index): Path<String>,
    headers: HeaderMap,
    body: String,
) -> impl IntoResponse {
    let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_string());
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    rec.0.lock().unwrap().push((index.clone(), auth, body));
    let (status, answer) = match index.as_str() {
        "fresh" => (200, search_answer(120, Some(millis_ago(30)))),
        "ageing" => (200, search_answer(120, Some(millis_ago(200)))),
        "stale" => (200, search_answer(120, Some(millis_ago(900)))),
        "empty" => (200, search_answer(0, None)),
        "unmapped" => (200, search_answer(5, None)),
        "text-field" => (
            400,
            error(
                "illegal_argument_exception",
                "Field [@timestamp] of type [text] is not supported for aggregation [max]",
                400,
            ),
        ),
        "missing" => (404, error("index_not_found_exception", "no such index [missing]", 404)),
        "locked" => (
            401,
            error(
                "security_exception",
                "missing authentication credentials for REST request [/locked/_search]",
                401,
            ),
        ),
        "forbidden" => (
            403,
            error(
                "security_exception",
                "action [indices:data/read/search] is unauthorized for user [vigil]",
                403,
            ),
        ),
        "broken" => (
            503,
            error(
                "cluster_block_exception",
                "blocked by: [SERVICE_UNAVAILABLE/1/state not recovered / initialized];",
                503,
            ),
        ),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            (200, search_answer(1, Some(millis_ago(1))))
        }
        "partial" => (
            200,
            json!({"took": 1, "timed_out": false,
                   "_shards": {"total": 2, "successful": 1, "skipped": 0, "failed": 1,
                               "failures": [{"shard": 0, "index": "partial", "reason": {"type": "illegal_argument_exception", "reason": "Text fields are not optimised for operations that require per-document field data"}}]},
                   "hits": {"total": {"value": 0, "relation": "eq"}, "hits": []},
                   "aggregations": {"newest": {"value": null}}}),
        ),
        _ => (404, error("index_not_found_exception", "no such index", 404)),
    };
    (StatusCode::from_u16(status).unwrap(), axum::Json(answer))
}

async fn data_stream(Path(name): Path<String>) -> impl IntoResponse {
    let streams = if name == "logs-gps" {
        json!([{"data_stream": "logs-gps", "backing_indices": 3, "store_size_bytes": 1000, "maximum_timestamp": millis_ago(40) as u64}])
    } else {
        json!([])
    };
    axum::Json(
        json!({"_shards": {"total": 3, "successful": 3, "failed": 0}, "data_stream_count": 1, "backing_indices": 3,
                      "total_store_size_bytes": 1000, "data_streams": streams}),
    )
}

async fn cluster() -> (String, Recorded) {
    let rec = Recorded::default();
    let app = Router::new()
        .route("/{index}/_search", post(search))
        .route("/_data_stream/{name}/_stats", get(data_stream))
        .with_state(rec.clone());
    (format!("http://{}", common::serve(app).await), rec)
}

fn probe(name: &str, base: &str, index: &str, extra: &str) -> String {
    format!(
        "  - {{name: {name}, kind: elasticsearch, url: '{base}', index: {index}, max_age: 5m, warn_age: 3m{extra}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn levels_from_the_newest_document() {
    let (base, rec) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("probes:\n");
    for index in ["fresh", "ageing", "stale", "empty"] {
        text += &probe(index, &base, index, "");
    }
    text += &probe(
        "filtered",
        &base,
        "fresh",
        ", timestamp_field: received_at, query: {term: {device: gw-7}}",
    );
    let config = common::config(&text, dir.path());

    let fresh = common::run(&config, "fresh").await;
    assert_eq!(fresh.level, Level::Up, "{fresh:?}");
    let newest = fresh.observations.freshness().and_then(|f| f.newest).expect("newest");
    let age = SystemTime::now().duration_since(newest).unwrap().as_secs();
    assert!((29..=32).contains(&age), "age {age}");
    let ageing = common::run(&config, "ageing").await;
    assert_eq!(
        (ageing.level, ageing.reason),
        (Level::Degraded, Some(Reason::Stale)),
        "{ageing:?}"
    );
    let stale = common::run(&config, "stale").await;
    assert_eq!((stale.level, stale.reason), (Level::Down, Some(Reason::Stale)));
    assert!(
        stale.detail.starts_with("newest record is 15m") && stale.detail.ends_with("(max_age 5m)"),
        "{}",
        stale.detail
    );
    let empty = common::run(&config, "empty").await;
    assert_eq!((empty.level, empty.reason), (Level::Down, Some(Reason::Empty)));

    assert_eq!(common::run(&config, "filtered").await.level, Level::Up);
    let requests = rec.0.lock().unwrap();
    let (_, auth, body) = requests.last().unwrap();
    assert_eq!(auth, &None);
    assert_eq!(
        body,
        &json!({"size": 0, "track_total_hits": true,
                "query": {"bool": {"filter": [{"term": {"device": "gw-7"}}]}},
                "aggs": {"newest": {"max": {"field": "received_at"}}}})
    );
    assert_eq!(requests[0].2["query"], json!({"bool": {"filter": [{"match_all": {}}]}}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_has_its_own_reason() {
    let (base, _) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("probes:\n");
    for index in [
        "unmapped",
        "text-field",
        "missing",
        "locked",
        "forbidden",
        "broken",
        "partial",
    ] {
        text += &probe(index, &base, index, "");
    }
    text += &probe("slow", &base, "slow", ", timeout: 500ms");
    text += &probe(
        "down",
        &format!("http://127.0.0.1:{}", common::closed_port()),
        "fresh",
        "",
    );
    let config = common::config(&text, dir.path());
    let expect = [
        (
            "unmapped",
            Reason::Query,
            "5 documents match but none has a value in `@timestamp` (is the field mapped?)",
        ),
        (
            "text-field",
            Reason::Query,
            "400: illegal_argument_exception: Field [@timestamp] of type [text] is not supported",
        ),
        (
            "missing",
            Reason::Missing,
            "index_not_found_exception: no such index [missing]",
        ),
        (
            "locked",
            Reason::Auth,
            "401: security_exception: missing authentication credentials",
        ),
        (
            "forbidden",
            Reason::Auth,
            "403: security_exception: action [indices:data/read/search] is unauthorized",
        ),
        (
            "broken",
            Reason::Status,
            "the cluster answered 503: cluster_block_exception",
        ),
        (
            "partial",
            Reason::Query,
            "1 shard(s) failed: Text fields are not optimised",
        ),
        ("slow", Reason::Timeout, "no result within 500ms"),
        ("down", Reason::Connect, "connect to 127.0.0.1"),
    ];
    for (name, reason, detail) in expect {
        let outcome = common::run(&config, name).await;
        assert_eq!(
            (outcome.level, outcome.reason),
            (Level::Down, Some(reason)),
            "{name}: {outcome:?}"
        );
        assert!(
            outcome.detail.contains(detail),
            "{name}: {:?} does not contain {detail:?}",
            outcome.detail
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_failover_and_data_streams() {
    let (base, rec) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("es-key"), "aWQ6c2VjcmV0\n").unwrap();
    std::fs::write(dir.path().join("es-pw"), "changeme").unwrap();
    let closed = format!("http://127.0.0.1:{}", common::closed_port());
    let config = common::config(
        &format!(
            "probes:\n\
             - {{name: key, kind: elasticsearch, url: '{base}', index: fresh, api_key: {{file: es-key}}, max_age: 5m}}\n\
             - {{name: basic, kind: elasticsearch, url: '{base}', index: fresh, basic_auth: {{username: vigil, password: {{file: es-pw}}}}, max_age: 5m}}\n\
             - {{name: failover, kind: elasticsearch, urls: ['{closed}', '{base}'], index: fresh, max_age: 5m}}\n\
             - {{name: stream, kind: elasticsearch, url: '{base}', index: logs-gps, data_stream: true, max_age: 5m}}\n\
             - {{name: no-stream, kind: elasticsearch, url: '{base}', index: logs-none, data_stream: true, max_age: 5m}}\n"
        ),
        dir.path(),
    );
    assert_eq!(common::run(&config, "key").await.level, Level::Up);
    assert_eq!(
        rec.0.lock().unwrap().last().unwrap().1.as_deref(),
        Some("ApiKey aWQ6c2VjcmV0")
    );
    assert_eq!(common::run(&config, "basic").await.level, Level::Up);
    assert_eq!(
        rec.0.lock().unwrap().last().unwrap().1.as_deref(),
        Some("Basic dmlnaWw6Y2hhbmdlbWU=")
    );
    let failover = common::run(&config, "failover").await;
    assert_eq!(failover.level, Level::Up, "{failover:?}");
    let stream = common::run(&config, "stream").await;
    assert_eq!(stream.level, Level::Up, "{stream:?}");
    let age = SystemTime::now()
        .duration_since(stream.observations.freshness().and_then(|f| f.newest).unwrap())
        .unwrap()
        .as_secs();
    assert!((39..=42).contains(&age), "age {age}");
    let none = common::run(&config, "no-stream").await;
    assert_eq!((none.level, none.reason), (Level::Down, Some(Reason::Missing)));
    assert!(!format!("{config:?}").contains("aWQ6c2VjcmV0") && !format!("{config:?}").contains("changeme"));
}

#[test]
fn config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let errors = vigil::config::Config::parse(
        "probes:\n  - {name: a, kind: elasticsearch, index: x}\n  - {name: b, kind: elasticsearch, url: 'http://h', index: 'a b', max_age: 1m, warn_age: 2m}\n  - {name: c, kind: elasticsearch, url: 'http://h', index: x, max_age: 1m, data_stream: true, query: {term: {a: 1}}}\n",
        dir.path(),
    )
    .expect_err("invalid")
    .to_string();
    for want in [
        "line 2: probes[0]: missing key `url` (or `urls`)",
        "line 2: probes[0]: missing key `max_age`",
        "probes[1].index: `a b` is not an index name or pattern",
        "probes[1].warn_age: warn_age (2m) must be below max_age (1m)",
        "probes[2].query: a data stream's maximum_timestamp cannot be filtered",
    ] {
        assert!(errors.contains(want), "missing {want:?} in:\n{errors}");
    }
}
