//! A scripted Kubernetes API server behind `tower_test::mock::pair`, in the style of kube-rs'
//! controller-rs `ApiServerVerifier`: the test takes each request vigil makes, asserts its
//! method, path and query, and answers with JSON in the API's wire format (lists, and watch
//! bodies of newline-delimited `{"type": ..., "object": ...}` events that the test feeds while
//! they stay open).
//!
//! The limit: no real API server runs here. These are the documented formats, replayed; paging
//! (`continue`), protobuf, HTTP/2 and authentication are not exercised.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::mpsc as tokio_mpsc;

type Body = BoxBody<Bytes, Infallible>;
type Handle = tower_test::mock::Handle<Request<kube::client::Body>, Response<Body>>;
type Responder = tower_test::mock::SendResponse<Response<Body>>;

/// The resources vigil watches, by their plural name.
pub const RESOURCES: [&str; 4] = ["pods", "deployments", "statefulsets", "daemonsets"];

/// One request vigil made, waiting for the test's answer.
pub struct Call {
    pub method: Method,
    pub path: String,
    pub query: HashMap<String, String>,
    respond: Responder,
}

/// An open watch body: each `send` is one event line.
pub struct WatchFeed {
    tx: mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>,
}

impl WatchFeed {
    /// Sends `{"type": kind, "object": object}` and a newline.
    pub fn send(&self, kind: &str, object: Value) {
        let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap();
        line.push(b'\n');
        self.tx.unbounded_send(Ok(Frame::data(Bytes::from(line)))).unwrap();
    }

    /// Ends the body, as the API server does when a watch times out.
    pub fn end(self) {}
}

impl Call {
    fn is_watch(&self) -> bool {
        self.query.get("watch").is_some_and(|v| v == "true")
    }

    /// Asserts a list (`GET path`, not a watch).
    pub fn expect_list(&self, path: &str) {
        assert_eq!(self.method, Method::GET, "{}", self.path);
        assert_eq!(self.path, path);
        assert!(
            !self.is_watch(),
            "expected a list of {path}, got a watch: {:?}",
            self.query
        );
    }

    /// Asserts a watch of `path` from `resource_version`, with bookmarks asked for.
    pub fn expect_watch(&self, path: &str, resource_version: &str) {
        assert_eq!(self.method, Method::GET, "{}", self.path);
        assert_eq!(self.path, path);
        assert!(self.is_watch(), "expected a watch of {path}, got {:?}", self.query);
        assert_eq!(
            self.query.get("resourceVersion").map(String::as_str),
            Some(resource_version)
        );
        assert_eq!(self.query.get("allowWatchBookmarks").map(String::as_str), Some("true"));
    }

    /// Answers with a JSON body.
    pub fn json(self, status: u16, body: Value) {
        let body = Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())).boxed();
        let response = Response::builder()
            .status(StatusCode::from_u16(status).unwrap())
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        self.respond.send_response(response);
    }

    /// Answers a list with `items` at `resource_version`.
    pub fn list(self, kind: &str, resource_version: &str, items: Vec<Value>) {
        let api_version = if kind.starts_with("Pod") { "v1" } else { "apps/v1" };
        self.json(
            200,
            json!({
                "kind": format!("{kind}List"),
                "apiVersion": api_version,
                "metadata": {"resourceVersion": resource_version},
                "items": items
            }),
        );
    }

    /// Answers with a `Status` failure, as the API server does.
    pub fn status(self, code: u16, reason: &str, message: &str) {
        self.json(
            code,
            json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": message, "reason": reason, "code": code
            }),
        );
    }

    /// The connection fails: no HTTP answer at all.
    pub fn fail(self) {
        self.respond.send_error(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
    }

    /// Answers a watch with a body that stays open; events come through the feed.
    pub fn watch(self) -> WatchFeed {
        let (tx, rx) = mpsc::unbounded();
        let response = Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(StreamBody::new(rx).boxed())
            .unwrap();
        self.respond.send_response(response);
        WatchFeed { tx }
    }
}

/// Routes vigil's requests by resource: scripted resources go to the test, the others get an
/// empty list and a watch that stays open and quiet.
pub struct ApiServer {
    calls: HashMap<&'static str, tokio_mpsc::UnboundedReceiver<Call>>,
    /// Requests that were not a GET of a watched resource.
    writes: Arc<Mutex<Vec<String>>>,
}

impl ApiServer {
    /// A client for vigil and the server behind it; `scripted` resources are answered by the
    /// test through [`ApiServer::next`].
    pub fn start(scripted: &[&'static str]) -> (kube::Client, ApiServer) {
        let (service, handle) = tower_test::mock::pair::<Request<kube::client::Body>, Response<Body>>();
        let mut routes = HashMap::new();
        let mut calls = HashMap::new();
        for resource in scripted {
            let (tx, rx) = tokio_mpsc::unbounded_channel();
            routes.insert(*resource, tx);
            calls.insert(*resource, rx);
        }
        let writes = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(route(handle, routes, writes.clone()));
        (kube::Client::new(service, "default"), ApiServer { calls, writes })
    }

    /// The next request for `resource` (fails the test after 10 s).
    pub async fn next(&mut self, resource: &str) -> Call {
        let rx = self.calls.get_mut(resource).expect("a scripted resource");
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("vigil made no request for {resource} within 10s"))
            .expect("the mock API server stopped")
    }

    /// Asserts that every request so far was a GET of a watched resource.
    pub fn assert_read_only(&self) {
        let writes = self.writes.lock().unwrap();
        assert!(writes.is_empty(), "requests beyond get/list/watch: {writes:?}");
    }
}

async fn route(
    mut handle: Handle,
    routes: HashMap<&'static str, tokio_mpsc::UnboundedSender<Call>>,
    writes: Arc<Mutex<Vec<String>>>,
) {
    let mut quiet_watches = Vec::new();
    while let Some((request, respond)) = handle.next_request().await {
        let uri = request.uri();
        let path = uri.path().to_string();
        let query = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (p.to_string(), String::new()),
            })
            .collect();
        let resource = path.rsplit('/').next().unwrap_or_default().to_string();
        if request.method() != Method::GET || !RESOURCES.contains(&resource.as_str()) {
            writes.lock().unwrap().push(format!("{} {path}", request.method()));
        }
        let call = Call {
            method: request.method().clone(),
            path,
            query,
            respond,
        };
        match routes.get(resource.as_str()) {
            Some(tx) => {
                let _ = tx.send(call);
            }
            None if call.is_watch() => quiet_watches.push(call.watch()),
            None => {
                let kind = match resource.as_str() {
                    "pods" => "Pod",
                    "deployments" => "Deployment",
                    "statefulsets" => "StatefulSet",
                    _ => "DaemonSet",
                };
                call.list(kind, "1", vec![]);
            }
        }
    }
}
