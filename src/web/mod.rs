//! HTTP endpoints: `/metrics`, `/probe`, `/-/healthy`, `/-/ready`, `/-/reload`, and the status
//! page with its API (`/`, `/api/v1/...`, `/badge/...`).

pub mod badge;
mod blackbox;
mod connections;
pub mod listener;
mod page;
pub mod runbook;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::app::Control;
use crate::metrics;
use crate::probe::Probe;
use crate::probe::heartbeat::Beat;
use crate::view::View;

/// The exporter's routes. Every handler gets the read-only [`View`]; only `/-/reload` gets
/// the [`Control`].
pub fn router(control: Arc<Control>) -> Router {
    let reload = Router::new()
        .route("/-/reload", post(reload_handler).put(reload_handler))
        .with_state(control.clone());
    Router::new()
        .merge(page::routes())
        .route("/metrics", get(metrics_handler))
        .route("/probe", get(probe_handler))
        .route("/-/healthy", get(|| async { "Healthy\n" }))
        .route("/-/ready", get(|| async { "Ready\n" }))
        .route("/push/{name}", post(push_handler).put(push_handler))
        .route("/runbook", get(runbook::handler))
        .with_state(control.view())
        .merge(reload)
}

async fn metrics_handler(State(app): State<Arc<View>>, headers: HeaderMap) -> Response {
    let format = metrics::Format::negotiate(&headers);
    let (openmetrics, content_type) = (format.is_openmetrics(), format.content_type());
    // The page is encoded on a blocking thread and sent in pieces as it is made, so a large
    // inventory is never held whole in memory. A piece that cannot be queued at once (a slow
    // client) is kept and sent with the next one: encoding never waits, since it holds each
    // probe's lock for a moment while it writes that probe's series.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(16);
    tokio::task::spawn_blocking(move || {
        let mut sink = ChunkSink {
            tx,
            buf: String::with_capacity(CHUNK),
        };
        let encoded = metrics::encode_to(&app.registry, openmetrics, &mut sink);
        match encoded {
            Ok(()) => sink.finish(),
            Err(_) => {
                let _ = sink
                    .tx
                    .blocking_send(Err(std::io::Error::other("encoding metrics failed")));
            }
        }
    });
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (
        [(header::CONTENT_TYPE, content_type)],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// Size of the pieces `/metrics` is sent in.
const CHUNK: usize = 256 * 1024;

/// Collects the page and queues it in pieces without ever blocking the encoder.
struct ChunkSink {
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    buf: String,
}

impl ChunkSink {
    fn finish(mut self) {
        if !self.buf.is_empty() {
            // Nothing is locked any more: waiting for the client is fine now.
            let _ = self
                .tx
                .blocking_send(Ok(bytes::Bytes::from(std::mem::take(&mut self.buf))));
        }
    }
}

impl std::fmt::Write for ChunkSink {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.buf.push_str(s);
        if self.buf.len() >= CHUNK {
            let piece = bytes::Bytes::from(std::mem::replace(&mut self.buf, String::with_capacity(CHUNK)));
            match self.tx.try_send(Ok(piece)) {
                Ok(()) => {}
                Err(tokio::sync::mpsc::error::TrySendError::Full(Ok(piece))) => {
                    // Keep it: the next write tries again with it in front.
                    let mut kept = String::from_utf8(piece.to_vec()).map_err(|_| std::fmt::Error)?;
                    kept.push_str(&self.buf);
                    self.buf = kept;
                }
                // The client went away: stop encoding.
                Err(_) => return Err(std::fmt::Error),
            }
        }
        Ok(())
    }
}

/// Query of `/probe`, as blackbox_exporter takes it.
#[derive(Debug, Deserialize)]
struct ProbeQuery {
    target: Option<String>,
    module: Option<String>,
    #[serde(default)]
    debug: bool,
}

async fn probe_handler(State(app): State<Arc<View>>, Query(query): Query<ProbeQuery>, headers: HeaderMap) -> Response {
    let Some(target) = query.target.filter(|t| !t.is_empty()) else {
        return (StatusCode::BAD_REQUEST, "Target parameter is missing\n").into_response();
    };
    let module_name = query.module.unwrap_or_else(|| "http_2xx".to_string());
    let config = app.config();
    let Some(module) = config.modules.get(&module_name) else {
        return (StatusCode::BAD_REQUEST, format!("Unknown module {module_name:?}\n")).into_response();
    };
    let mut timing = module.timing;
    // Like blackbox_exporter: finish before Prometheus gives up on the scrape.
    if let Some(scrape) = headers
        .get("x-prometheus-scrape-timeout-seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
    {
        let budget = std::time::Duration::from_secs_f64((scrape - 0.5).max(0.1));
        timing.timeout = timing.timeout.min(budget);
    }
    let outcome = crate::scheduler::execute(&module.probe, &target, &timing, None, &app.context).await;
    let body = blackbox::render(&outcome);
    if query.debug {
        let debug = blackbox::debug(
            &module_name,
            &config.secret_names.redact_target(&target),
            &outcome,
            &body,
        );
        return ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], debug).into_response();
    }
    ([(header::CONTENT_TYPE, metrics::PROMETHEUS_TEXT)], body).into_response()
}

/// Body of a heartbeat push (optional): `{"status": "ok" | "fail", "message": "..."}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Push {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

async fn push_handler(
    State(app): State<Arc<View>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let config = app.config();
    let Some(Probe::Heartbeat(settings)) = config.probes.iter().find(|p| p.name == name).map(|p| &p.probe) else {
        return (StatusCode::NOT_FOUND, "no heartbeat probe of that name\n").into_response();
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !token.is_some_and(|t| settings.accepts(t.trim())) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "wrong or missing bearer token\n",
        )
            .into_response();
    }
    let push: Push = if body.iter().all(u8::is_ascii_whitespace) {
        Push::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(push) => push,
            Err(e) => return (StatusCode::BAD_REQUEST, format!("body: {e}\n")).into_response(),
        }
    };
    let ok = match push.status.as_deref() {
        None | Some("ok") => true,
        Some("fail") => false,
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("status must be ok or fail, not {other:?}\n"),
            )
                .into_response();
        }
    };
    let beat = Beat {
        at: std::time::SystemTime::now(),
        ok,
        message: push.message,
    };
    let heartbeats = app.context.heartbeats.clone();
    let name_for_write = name.clone();
    match tokio::task::spawn_blocking(move || heartbeats.record(&name_for_write, beat)).await {
        Ok(Ok(())) => {
            tracing::debug!(probe = %name, ok, "heartbeat received");
            (StatusCode::OK, "ok\n").into_response()
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "could not store the heartbeat\n").into_response(),
    }
}

async fn reload_handler(State(app): State<Arc<Control>>) -> Response {
    let result = tokio::task::spawn_blocking(move || app.reload()).await;
    match result {
        Ok(Ok(applied)) => (
            StatusCode::OK,
            format!(
                "reloaded: {} started, {} restarted, {} stopped, {} unchanged\n",
                applied.started, applied.restarted, applied.stopped, applied.unchanged
            ),
        )
            .into_response(),
        Ok(Err(crate::app::ReloadError::Invalid(errors))) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{errors}\nkeeping the running config\n"),
        )
            .into_response(),
        Ok(Err(e @ crate::app::ReloadError::Panicked(_))) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "reload failed\n").into_response(),
    }
}
