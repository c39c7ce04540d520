//! Helpers shared by the black-box tests: real servers on 127.0.0.1 port 0, certificates made
//! in the test, configs from inline text.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod db;
pub mod dns;
pub mod docker;
pub mod exim;
pub mod grpc;
pub mod nginx;

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The turn of a heavy test: while it is held, no other heavy test of this binary runs.
///
/// Heavy tests (real Prometheus and Alertmanager, blackbox_exporter, a Docker engine, thousands of
/// connections, timeouts measured to a tenth of a second) each take it first, so that two of them
/// never share the machine's two cores and every figure they measure stays clean. Given back on
/// drop; a test that panicked while holding it gives it back too.
pub struct Exclusive(());

static HEAVY: Mutex<bool> = Mutex::new(false);
static HEAVY_FREED: std::sync::Condvar = std::sync::Condvar::new();

/// Waits for, and takes, the heavy tests' turn (see [`Exclusive`]).
pub fn exclusive() -> Exclusive {
    let mut taken = HEAVY.lock().unwrap_or_else(|p| p.into_inner());
    while *taken {
        taken = HEAVY_FREED.wait(taken).unwrap_or_else(|p| p.into_inner());
    }
    *taken = true;
    Exclusive(())
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        *HEAVY.lock().unwrap_or_else(|p| p.into_inner()) = false;
        HEAVY_FREED.notify_one();
    }
}

use axum::Router;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use time::OffsetDateTime;
use vigil::config::Config;
use vigil::state::Outcome;
use vigil::web::listener::{self, TlsServerConfig, WebConfig};

/// Serves `router` over plain HTTP on 127.0.0.1, port 0; stops with the test's runtime.
pub async fn serve(router: Router) -> SocketAddr {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(socket, router).await.unwrap() });
    addr
}

/// A certificate authority made for one test, and the files it wrote.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "vigil test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), issuer.pem()).unwrap();
        TestCa { dir, issuer }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A leaf for `localhost` and 127.0.0.1 valid between the two offsets from now (days);
    /// returns (cert file, key file).
    pub fn leaf(&self, name: &str, from_days: i64, until_days: i64) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let now = OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(from_days);
        params.not_after = now + time::Duration::days(until_days);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_file = self.dir.path().join(format!("{name}.pem"));
        let key_file = self.dir.path().join(format!("{name}-key.pem"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file, key_file)
    }
}

/// A TLS acceptor for a test's own server: the certificate chain and key from PEM files (as
/// [`TestCa::leaf`] writes them), offering `alpn` (none when empty).
pub fn tls_acceptor(cert: &Path, key: &Path, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(cert)
        .expect("read the certificate")
        .map(|c| c.expect("a certificate"))
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).expect("read the key");
    let mut config =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
}

/// Serves `router` over HTTPS with the given certificate, on 127.0.0.1 port 0.
pub async fn serve_tls(router: Router, cert_file: PathBuf, key_file: PathBuf) -> SocketAddr {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let web = WebConfig {
        tls_server_config: Some(TlsServerConfig { cert_file, key_file }),
        ..WebConfig::default()
    };
    tokio::spawn(async move {
        listener::serve(
            socket,
            router,
            &web,
            &Default::default(),
            std::future::pending(),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    });
    addr
}

/// A validated config from inline YAML (relative paths resolve against `dir`).
pub fn config(text: &str, dir: &Path) -> Config {
    match Config::parse(text, dir) {
        Ok(config) => config,
        Err(e) => panic!("config should be valid:\n{e}\n---\n{text}"),
    }
}

/// What `vigil receiver` reads of a config given as inline YAML.
pub fn receiver_config(text: &str, dir: &Path) -> vigil::config::ReceiverConfig {
    match vigil::config::ReceiverConfig::parse(text, dir) {
        Ok(config) => config,
        Err(e) => panic!("receiver config should be valid:\n{e}\n---\n{text}"),
    }
}

/// Runs the probe named `name` once, as the scheduler would.
pub async fn run(config: &Config, name: &str) -> Outcome {
    let def = config
        .probes
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no probe {name}"));
    let context = vigil::app::context_for(config).unwrap();
    vigil::scheduler::execute(&def.probe, &def.target, &def.timing, None, &context).await
}

/// A port on 127.0.0.1 that nothing listens on.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Like [`serve`], on a runtime of its own in a background thread, for synchronous tests.
pub fn serve_in_thread(router: Router) -> SocketAddr {
    in_background(serve(router))
}

/// Like [`serve_tls`], on a runtime of its own in a background thread, for synchronous tests.
pub fn serve_tls_in_thread(router: Router, cert_file: PathBuf, key_file: PathBuf) -> SocketAddr {
    in_background(serve_tls(router, cert_file, key_file))
}

/// Runs `start` and then nothing, forever, on a runtime of its own in a background thread;
/// returns what `start` returned.
fn in_background(start: impl Future<Output = SocketAddr> + Send + 'static) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            tx.send(start.await).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

/// Fails unless `promtool check metrics` accepts `text` (Debian package `prometheus`).
pub fn promtool_check_metrics(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool: {e}: install Debian's `prometheus` package (bash scripts/install-test-deps.sh does)")
        });
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running `vigil run` or `vigil receiver` on 127.0.0.1, logging JSON; stopped (SIGKILL) when
/// dropped, also when the test panics.
pub struct Running {
    pub child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    pub port: u16,
    /// The state folder (`--storage.path`) when the test did not name one.
    storage: Option<Arc<tempfile::TempDir>>,
    /// How it was started, for [`Running::restart`].
    command: &'static str,
    ready: &'static str,
    config: PathBuf,
    extra: Vec<String>,
}

impl Running {
    /// `vigil run --config <config> <extra>` on 127.0.0.1 port 0.
    pub fn start(config: &std::path::Path, extra: &[&str]) -> Running {
        Running::spawn(&[], "run", "listening", "127.0.0.1:0", config, extra)
    }

    /// Like [`Running::start`], run by `wrapper` (`prlimit --nofile=1024:1024 --`, say), which
    /// must exec vigil in its own process.
    pub fn start_under(wrapper: &[&str], config: &std::path::Path, extra: &[&str]) -> Running {
        Running::spawn(wrapper, "run", "listening", "127.0.0.1:0", config, extra)
    }

    /// `vigil receiver --config <config>` on `listen` (`127.0.0.1:0`, or a port it had before).
    pub fn receiver(config: &std::path::Path, listen: &str) -> Running {
        Running::spawn(&[], "receiver", "receiver listening", listen, config, &[])
    }

    /// Stops the process (SIGTERM) and starts it again the same way, on the same port and with
    /// the same state folder, as a restart by an operator or a supervisor would.
    pub fn restart(&mut self) {
        self.stop();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let listen = format!("127.0.0.1:{}", self.port);
        let again = Running::spawn_with(
            &[],
            self.command,
            self.ready,
            &listen,
            &self.config,
            &extra,
            self.storage.clone(),
        );
        let _ = std::mem::replace(self, again);
    }

    /// Starts `vigil <command>` and waits (10 s at most) for its log line `ready`, which carries
    /// the address it listens on.
    fn spawn(
        wrapper: &[&str],
        command: &'static str,
        ready: &'static str,
        listen: &str,
        config: &std::path::Path,
        extra: &[&str],
    ) -> Running {
        // Never the working directory's `data/`: tests run in parallel.
        let storage =
            (command == "run" && !extra.contains(&"--storage.path")).then(|| Arc::new(tempfile::tempdir().unwrap()));
        Running::spawn_with(wrapper, command, ready, listen, config, extra, storage)
    }

    fn spawn_with(
        wrapper: &[&str],
        command: &'static str,
        ready: &'static str,
        listen: &str,
        config: &std::path::Path,
        extra: &[&str],
        storage: Option<Arc<tempfile::TempDir>>,
    ) -> Running {
        let mut storage_args: Vec<&std::ffi::OsStr> = Vec::new();
        if let Some(dir) = &storage {
            storage_args.extend([std::ffi::OsStr::new("--storage.path"), dir.path().as_os_str()]);
        }
        let mut child = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_vigil"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_vigil")),
        };
        let mut child = child
            .args([
                command,
                "--web.listen-address",
                listen,
                "--log.format",
                "json",
                "--config",
            ])
            .arg(config)
            .args(extra)
            .args(storage_args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
                    && event["message"] == ready
                {
                    let _ = tx.send(event["address"].as_str().unwrap_or_default().to_string());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let address = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("vigil {command} did not log {ready:?} within 10s"));
        let port = address.rsplit(':').next().unwrap().parse().unwrap();
        Running {
            child,
            logs,
            port,
            storage,
            command,
            ready,
            config: config.to_path_buf(),
            extra: extra.iter().map(|e| e.to_string()).collect(),
        }
    }

    pub fn get(&self, path: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn wait_for(&self, what: &str, condition: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let metrics = self.get("/metrics");
            if condition(&metrics) {
                return metrics;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}:\n{metrics}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the process with SIGTERM and waits for it to exit (10 s at most, then SIGKILL).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("vigil did not stop within 10s of SIGTERM:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Waits until the logs hold `text` (they arrive through a pipe, a little after the fact).
    pub fn wait_for_log(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            if logs.contains(text) {
                return logs;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {text:?} in the logs:\n{logs}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a GET (with an optional `Accept`) through `router` without a socket; returns the status,
/// the content type and the body.
pub async fn get(router: &Router, uri: &str, accept: Option<&str>) -> (axum::http::StatusCode, String, String) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut request = axum::http::Request::builder().uri(uri);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = router
        .clone()
        .oneshot(request.body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, String::from_utf8(body.to_vec()).unwrap())
}
