//! The listener: plain HTTP or TLS, optional basic auth (bcrypt hashes), in the format of
//! Prometheus' web config file, connection limits and timeouts ([`Limits`]), and graceful
//! shutdown.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use figment::providers::Format;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::connections::{Conn, Connections, Deadlined, Tracked};
use crate::poison::LockUnpoisoned;

/// What is wrong with the listener's settings (its flags and its web config file).
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// `--web.listen-address` does not parse.
    #[error("`{0}` is not a listen address (HOST:PORT or :PORT)")]
    Address(String),
    /// `--web.external-url` is not an http(s) URL with a host.
    #[error("--web.external-url {0:?}: not an http(s) URL with a host")]
    ExternalUrl(String),
    /// A file (the web config, a certificate, a key) cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The web config file is not what Prometheus' web config format says.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
    /// The certificate and key do not make a TLS server.
    #[error("TLS: {0}")]
    Tls(String),
}

impl ListenerError {
    /// A bounded label for the error.
    pub fn reason(&self) -> &'static str {
        match self {
            ListenerError::Address(_) => "address",
            ListenerError::ExternalUrl(_) => "external_url",
            ListenerError::Read { .. } => "read",
            ListenerError::Invalid { .. } => "invalid",
            ListenerError::Tls(_) => "tls",
        }
    }
}

/// `--web.external-url` checked and ending in `/`.
pub fn external_url(text: &str) -> Result<String, ListenerError> {
    let url = url::Url::parse(text).map_err(|_| ListenerError::ExternalUrl(text.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ListenerError::ExternalUrl(text.to_string()));
    }
    let mut text = url.to_string();
    if !text.ends_with('/') {
        text.push('/');
    }
    Ok(text)
}

/// The URL vigil is reached at when `--web.external-url` is not given: this host's name and
/// the port it listens on.
pub fn default_external_url(local: SocketAddr, tls: bool) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| match local.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        });
    format!("{}://{host}:{}/", if tls { "https" } else { "http" }, local.port())
}

/// `--web.config.file`: TLS and basic auth for the listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Serve HTTPS with this certificate.
    pub tls_server_config: Option<TlsServerConfig>,
    /// User name to bcrypt hash; when set, every request needs one of these users.
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, String>,
}

/// Certificate and key of the listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

impl WebConfig {
    /// Reads a web config file; relative paths are taken from its folder.
    pub fn load(path: &Path) -> Result<WebConfig, ListenerError> {
        let read = |source| ListenerError::Read {
            path: path.to_path_buf(),
            source,
        };
        let text = std::fs::read_to_string(path).map_err(read)?;
        let mut config: WebConfig = figment::Figment::from(figment::providers::Yaml::string(&text))
            .extract()
            .map_err(|e| ListenerError::Invalid {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(tls) = &mut config.tls_server_config {
            tls.cert_file = base.join(&tls.cert_file);
            tls.key_file = base.join(&tls.key_file);
        }
        for (user, hash) in &config.basic_auth_users {
            if !hash.starts_with("$2") {
                return Err(ListenerError::Invalid {
                    path: path.to_path_buf(),
                    message: format!("basic_auth_users.{user}: not a bcrypt hash"),
                });
            }
        }
        Ok(config)
    }

    fn acceptor(&self) -> Result<Option<TlsAcceptor>, ListenerError> {
        let Some(tls) = &self.tls_server_config else {
            return Ok(None);
        };
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| ListenerError::Read {
                path: path.clone(),
                source,
            })
        };
        let (certs_pem, key_pem) = (read(&tls.cert_file)?, read(&tls.key_file)?);
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&certs_pem)
            .filter_map(Result::ok)
            .collect();
        if certs.is_empty() {
            return Err(ListenerError::Invalid {
                path: tls.cert_file.clone(),
                message: "no PEM certificate".to_string(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| ListenerError::Invalid {
            path: tls.key_file.clone(),
            message: e.to_string(),
        })?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
            .map_err(|e| ListenerError::Tls(e.to_string()))?;
        Ok(Some(TlsAcceptor::from(Arc::new(config))))
    }
}

/// Basic auth against bcrypt hashes, remembering credentials already checked (bcrypt is slow
/// on purpose; a scrape every few seconds must not pay it each time).
struct BasicAuth {
    users: BTreeMap<String, String>,
    hasher: RandomState,
    verified: Mutex<HashSet<u64>>,
}

impl BasicAuth {
    fn allows(&self, header: Option<&str>) -> bool {
        use base64::Engine;
        let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(pair) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = pair.split_once(':') else {
            return false;
        };
        let Some(hash) = self.users.get(user) else {
            return false;
        };
        let key = self.hasher.hash_one((user, password, hash));
        if self.verified.lock_unpoisoned().contains(&key) {
            return true;
        }
        let ok = bcrypt::verify(password, hash).unwrap_or(false);
        if ok {
            let mut verified = self.verified.lock_unpoisoned();
            if verified.len() > 1024 {
                verified.clear();
            }
            verified.insert(key);
        }
        ok
    }
}

async fn require_auth(auth: Arc<BasicAuth>, request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let allowed = tokio::task::spawn_blocking(move || auth.allows(header.as_deref()))
        .await
        .unwrap_or(false);
    if allowed {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"vigil\"")],
            "Unauthorized\n",
        )
            .into_response()
    }
}

/// Parses a listen address: `HOST:PORT`, or `:PORT` for every interface.
pub fn parse_listen_address(text: &str) -> Result<SocketAddr, ListenerError> {
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_string()
    };
    full.parse().map_err(|_| ListenerError::Address(text.to_string()))
}

/// Connections the kernel queues for `accept` (it caps this at `net.core.somaxconn`, 4096 on
/// current Linux): above the connection cap, so that clients holding every connection they may
/// cannot also fill the queue and keep a scrape from getting in.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listening socket on `addr` with a queue of [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Limits that keep clients from taking the listener, and the process' descriptors, for
/// themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// At most this many connections at once. Past it, the connection idle longest is closed
    /// for the new one (then the one whose response has sent nothing for longest); when every
    /// connection is handling a request, new ones wait in the kernel's queue.
    pub max_connections: usize,
    /// A request's headers, and then its body, must arrive within this long of the moment the
    /// connection is ready for a request (opened, TLS done, previous response sent); so it is
    /// also how long a connection may sit idle.
    pub read_timeout: Duration,
    /// A response the client takes nothing of for this long is abandoned, its connection closed.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(60),
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves, then lets requests
/// in flight finish (at most `grace`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    web: &WebConfig,
    limits: &Limits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Result<(), ListenerError> {
    let acceptor = web.acceptor()?;
    let router = if web.basic_auth_users.is_empty() {
        router
    } else {
        let auth = Arc::new(BasicAuth {
            users: web.basic_auth_users.clone(),
            hasher: RandomState::new(),
            verified: Mutex::new(HashSet::new()),
        });
        router.layer(middleware::from_fn(move |req: Request, next: Next| {
            require_auth(auth.clone(), req, next)
        }))
    };
    let service = TowerToHyperService::new(router);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The timer makes hyper apply the header timeout (it does nothing without one).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout);
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Connections::default());
    let max = limits.max_connections.max(1);
    let mut sweep = tokio::time::interval(Duration::from_millis(500));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    'accepting: loop {
        // At the cap with every connection handling a request: accept nothing until one ends.
        while connections.count() >= max && !connections.any_closable() {
            tokio::select! {
                () = connections.wait_for_room() => {}
                _ = sweep.tick() => {}
                () = &mut shutdown => break 'accepting,
            }
        }
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = sweep.tick() => {
                let closed = connections.close_expired(limits.read_timeout, limits.write_timeout);
                if closed > 0 {
                    debug!(closed, "closed idle or stalled connections");
                }
                continue;
            }
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (id, conn) = connections.open();
        // Over the cap: close the connection idle longest, or wait until one ends.
        while connections.count() > max {
            if connections.close_one(id) {
                debug!(%peer, max_connections = max, "at the connection cap: closed the connection idle longest");
                break;
            }
            tokio::select! {
                () = connections.wait_for_room() => {}
                _ = sweep.tick() => {
                    connections.close_expired(limits.read_timeout, limits.write_timeout);
                }
                () = &mut shutdown => break 'accepting,
            }
        }
        let service = tracked(service.clone(), conn.clone(), limits.read_timeout);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let connections = connections.clone();
        let acceptor = acceptor.clone();
        let read_timeout = limits.read_timeout;
        tokio::spawn(async move {
            let closed = conn.close.notified();
            tokio::pin!(closed);
            let serve = async {
                match acceptor {
                    None => {
                        let served = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .into_owned();
                        if let Err(e) = watcher.watch(served).await {
                            debug!(%peer, error = %e, "connection ended with an error");
                        }
                    }
                    Some(acceptor) => {
                        let stream = match tokio::time::timeout(read_timeout, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => return debug!(%peer, error = %e, "TLS handshake failed"),
                            Err(_) => return debug!(%peer, "TLS handshake timed out"),
                        };
                        let served = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .into_owned();
                        if let Err(e) = watcher.watch(served).await {
                            debug!(%peer, error = %e, "connection ended with an error");
                        }
                    }
                }
            };
            tokio::select! {
                () = serve => {}
                // Closed for room or a timeout: dropping the connection closes its socket.
                () = &mut closed => debug!(%peer, "connection closed by the listener"),
            }
            connections.ended(id);
        });
    }
    drop(listener);
    info!("shutting down: finishing requests in flight");
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        warn!(grace = ?grace, "requests still running after the grace period; closing them");
    }
    Ok(())
}

/// The service of one connection: each request marks it as handling, its response as sending,
/// and its body must arrive within `read_timeout`.
fn tracked(
    service: TowerToHyperService<Router>,
    conn: Arc<Conn>,
    read_timeout: Duration,
) -> impl hyper::service::Service<
    http::Request<Incoming>,
    Response = http::Response<Tracked<axum::body::Body>>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<http::Response<Tracked<axum::body::Body>>, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |request: http::Request<Incoming>| {
        let handling = conn.handling();
        let request = request.map(|body| axum::body::Body::new(Deadlined::new(body, read_timeout)));
        let answer = hyper::service::Service::call(&service, request);
        async move {
            let response = match answer.await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let sending = handling.sending();
            Ok(response.map(|body| Tracked::new(body, sending)))
        }
    })
}
