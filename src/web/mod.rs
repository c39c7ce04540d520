//! HTTP endpoints: `/metrics`, `/probe`, `/-/healthy`, `/-/ready`, `/-/reload`, and the status
//! page with its API (`/`, `/api/v1/...`, `/badge/...`).

pub mod badge;
pub mod blackbox;
mod connections;
pub mod listener;
mod page;
pub mod runbook;

use std::sync::Arc;
use std::time::Duration;

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
    // In blackbox_exporter's order: the module, the scrape's timeout, the target.
    let module_name = query
        .module
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "http_2xx".to_string());
    let config = app.config();
    let Some(module) = config.modules.get(&module_name) else {
        let shown = crate::printable::printable(&module_name).into_owned();
        return (StatusCode::BAD_REQUEST, format!("Unknown module {shown:?}\n")).into_response();
    };
    let scrape = match headers.get("x-prometheus-scrape-timeout-seconds") {
        None => 0.0,
        Some(value) => match value.to_str().ok().and_then(|v| v.trim().parse::<f64>().ok()) {
            Some(seconds) if seconds.is_finite() => seconds,
            _ => {
                let shown = crate::printable::printable(&String::from_utf8_lossy(value.as_bytes())).into_owned();
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("Failed to parse timeout from Prometheus header: {shown:?} is not a number\n"),
                )
                    .into_response();
            }
        },
    };
    let Some(target) = query.target.filter(|t| !t.is_empty()) else {
        return (StatusCode::BAD_REQUEST, "Target parameter is missing\n").into_response();
    };
    let mut timing = module.timing;
    timing.timeout = probe_timeout(module.timeout, scrape, app.timeout_offset);
    let outcome = crate::scheduler::execute(&module.probe, &target, &timing, None, &app.context).await;
    let body = blackbox::render(&outcome);
    if query.debug {
        let described = format!(
            "kind: {}\ntimeout: {}\n",
            module.probe.kind(),
            humantime::format_duration(timing.timeout)
        );
        let debug = blackbox::debug(
            &module_name,
            &config.secret_names.redact_target(&target),
            &outcome,
            &body,
            &described,
        );
        return ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], debug).into_response();
    }
    ([(header::CONTENT_TYPE, metrics::PROMETHEUS_TEXT)], body).into_response()
}

/// The timeout of a `/probe` run, as blackbox_exporter has it: the scrape's timeout (120 s
/// when Prometheus sends none) less `offset`, or the module's own when that is shorter (or when
/// the scrape's is shorter than the offset).
fn probe_timeout(module: Option<Duration>, scrape_seconds: f64, offset: Duration) -> Duration {
    let scrape = if scrape_seconds == 0.0 { 120.0 } else { scrape_seconds };
    let max = scrape - offset.as_secs_f64();
    match module {
        Some(own) if own.as_secs_f64() < max || max < 0.0 => own,
        None if max < 0.0 => Duration::ZERO,
        _ => Duration::try_from_secs_f64(max).unwrap_or(Duration::ZERO),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_timeouts_are_blackbox_exporters() {
        let offset = Duration::from_millis(500);
        let five = Some(Duration::from_secs(5));
        let secs = |s: f64| Duration::from_secs_f64(s);
        for (module, header, expected) in [
            (five, 0.0, secs(5.0)),
            (five, 2.0, secs(1.5)),
            (five, 3.0, secs(2.5)),
            (five, 10.0, secs(5.0)),
            (five, 0.3, secs(5.0)),
            (None, 0.0, secs(119.5)),
            (None, 2.0, secs(1.5)),
            (None, 10.0, secs(9.5)),
            (None, 0.3, Duration::ZERO),
        ] {
            assert_eq!(probe_timeout(module, header, offset), expected, "{module:?} {header}");
        }
    }
}
