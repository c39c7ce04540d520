//! The status page and its API: `/` (and `/probes/<name>`), its embedded assets,
//! `/api/v1/status`, `/api/v1/probes/<name>`, the live feed `/api/v1/events` and the badges.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::badge;
use crate::config::Config;
use crate::status;
use crate::view::View;

const HTML: &str = include_str!("assets/status.html");
const CSS: &str = include_str!("assets/status.css");
const JS: &str = include_str!("assets/status.js");
const FAVICON: &str = include_str!("assets/favicon.svg");

/// Everything from the page's own origin; no inline script, so data can never run as code.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page's routes.
pub fn routes() -> Router<Arc<View>> {
    Router::new()
        .route("/", get(page))
        .route("/probes/{name}", get(probe_page))
        .route("/assets/{file}", get(asset))
        .route("/api/v1/status", get(status_json))
        .route("/api/v1/probes/{name}", get(probe_json))
        .route("/api/v1/events", get(events))
        .route("/badge/{file}", get(level_badge))
        .route("/badge/{name}/uptime.svg", get(uptime_badge))
}

fn no_cache() -> (header::HeaderName, HeaderValue) {
    (header::CACHE_CONTROL, HeaderValue::from_static("no-cache, max-age=0"))
}

async fn page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            no_cache(),
        ],
        HTML,
    )
        .into_response()
}

/// `/probes/<name>` is the page's detail view, `/#/probes/<name>`.
async fn probe_page(Path(name): Path<String>) -> Redirect {
    let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
    Redirect::to(&format!("../#/probes/{}", encoded.replace('+', "%20")))
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "status.css" => (CSS, "text/css; charset=utf-8"),
        "status.js" => (JS, "text/javascript; charset=utf-8"),
        "favicon.svg" => (FAVICON, "image/svg+xml"),
        _ => return (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            no_cache(),
        ],
        body,
    )
        .into_response()
}

async fn status_json(State(app): State<Arc<View>>) -> Response {
    let status = status::snapshot(&app, SystemTime::now());
    ([no_cache()], Json(status)).into_response()
}

async fn probe_json(State(app): State<Arc<View>>, Path(name): Path<String>) -> Response {
    match status::detail(&app, &name, SystemTime::now()).await {
        Some(Ok(detail)) => ([no_cache()], Json(detail)).into_response(),
        Some(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("history unavailable: {e}\n")).into_response(),
        None => (StatusCode::NOT_FOUND, "no such probe\n").into_response(),
    }
}

fn svg(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("image/svg+xml; charset=utf-8"),
            ),
            no_cache(),
        ],
        body,
    )
        .into_response()
}

fn unknown_badge() -> Response {
    svg(
        StatusCode::NOT_FOUND,
        badge::render("vigil", "unknown probe", badge::GREY),
    )
}

/// `/badge/<probe>.svg`: the probe's level.
async fn level_badge(State(app): State<Arc<View>>, Path(file): Path<String>) -> Response {
    let Some(name) = file.strip_suffix(".svg") else {
        return unknown_badge();
    };
    let config = app.config();
    let probe = status::find(&config, name).and_then(|def| status::probe_status(&app, def, SystemTime::now()));
    match probe {
        Some(p) => svg(
            StatusCode::OK,
            badge::render(&p.name, &p.level, badge::level_colour(&p.level)),
        ),
        None => unknown_badge(),
    }
}

/// `/badge/<probe>/uptime.svg`: the probe's uptime over 24 hours.
async fn uptime_badge(State(app): State<Arc<View>>, Path(name): Path<String>) -> Response {
    let config = app.config();
    let probe = status::find(&config, &name).and_then(|def| status::probe_status(&app, def, SystemTime::now()));
    match probe {
        Some(p) => {
            let ratio = p.uptime.day.ratio;
            svg(
                StatusCode::OK,
                badge::render(
                    &format!("{} 24h", p.name),
                    &status::report::percent(ratio),
                    badge::uptime_colour(ratio),
                ),
            )
        }
        None => unknown_badge(),
    }
}

/// Hidden probes' names, cached per config.
struct Hidden {
    config: Arc<Config>,
    names: HashSet<String>,
}

impl Hidden {
    fn of(config: Arc<Config>) -> Hidden {
        let names = config
            .probes
            .iter()
            .filter(|p| !status::visible(p))
            .map(|p| p.name.clone())
            .collect();
        Hidden { config, names }
    }
}

/// Runs announced at once, at most, in one event.
const EVENT_BATCH: usize = 1000;

/// `/api/v1/events`: server-sent events. `hello` on connect (with a 1 s reconnection delay),
/// then `runs` with `{"runs": [{"probe", "level", "at"}]}` as probes finish (runs announced
/// together are batched), `resync` when this client fell behind. Ends when vigil stops.
async fn events(State(app): State<Arc<View>>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    struct Feed {
        receiver: tokio::sync::broadcast::Receiver<crate::live::Event>,
        stopping: tokio::sync::watch::Receiver<bool>,
        app: Arc<View>,
        hidden: Hidden,
        greeted: bool,
    }
    let feed = Feed {
        receiver: app.subscribe(),
        stopping: app.stopping(),
        hidden: Hidden::of(app.config()),
        app,
        greeted: false,
    };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        if !feed.greeted {
            feed.greeted = true;
            let hello = Event::default().event("hello").retry(Duration::from_secs(1)).data("{}");
            return Some((Ok(hello), feed));
        }
        loop {
            let first = tokio::select! {
                received = feed.receiver.recv() => received,
                _ = feed.stopping.wait_for(|stopping| *stopping) => return None,
            };
            let mut runs = match first {
                Ok(event) => vec![event],
                Err(RecvError::Lagged(_)) => {
                    return Some((Ok(Event::default().event("resync").data("{}")), feed));
                }
                Err(RecvError::Closed) => return None,
            };
            while runs.len() < EVENT_BATCH {
                match feed.receiver.try_recv() {
                    Ok(event) => runs.push(event),
                    Err(_) => break,
                }
            }
            let config = feed.app.config();
            if !Arc::ptr_eq(&config, &feed.hidden.config) {
                feed.hidden = Hidden::of(config);
            }
            let runs: Vec<serde_json::Value> = runs
                .iter()
                .filter(|e| !feed.hidden.names.contains(&*e.probe))
                .map(|e| {
                    serde_json::json!({
                        "probe": &*e.probe,
                        "level": e.level.as_str(),
                        "at": status::rfc3339(crate::history::from_unix_ms(e.at_ms)),
                    })
                })
                .collect();
            if runs.is_empty() {
                continue;
            }
            let data = serde_json::json!({ "runs": runs }).to_string();
            return Some((Ok(Event::default().event("runs").data(data)), feed));
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
