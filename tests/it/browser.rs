//! The status page in a real browser: Debian's headless Chromium driven through chromedriver's
//! WebDriver HTTP protocol (a few JSON calls over hyper, no WebDriver crate). The page must show
//! the levels, render a hostile label as text, and follow a target that starts failing without
//! a reload. A screenshot is left in target/status-page.png.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use vigil::app::App;

const PACKAGES: &str =
    "install Debian's `chromium` and `chromium-driver` packages (bash scripts/install-test-deps.sh does)";

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// chromedriver in a process group of its own; dropping it ends the browser session and kills
/// the group (chromedriver and every Chromium process it started), also when the test fails.
struct Driver {
    child: Child,
    port: u16,
    session: Option<String>,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let port = self.port;
            // Closes Chromium cleanly; on a runtime of its own since this may run during a panic.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        webdriver(port, "DELETE", &format!("/session/{session}"), None),
                    )
                    .await;
                });
            })
            .join();
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One WebDriver call: `method path` with a JSON body; returns the answer's `value`.
async fn webdriver(port: u16, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("127.0.0.1:{port}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let answer: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&bytes)))?;
    if !status.is_success() {
        return Err(format!("{method} {path}: {status}: {answer}"));
    }
    Ok(answer["value"].clone())
}

impl Driver {
    async fn start() -> Driver {
        let chromium = which("chromium").unwrap_or_else(|| panic!("chromium is not installed: {PACKAGES}"));
        let chromedriver = which("chromedriver").unwrap_or_else(|| panic!("chromedriver is not installed: {PACKAGES}"));
        let port = common::closed_port();
        let log = target_dir().join("chromedriver.log");
        use std::os::unix::process::CommandExt;
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let profile = tempfile::tempdir().unwrap();
        let mut driver = Driver {
            child,
            port,
            session: None,
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(status) = webdriver(port, "GET", "/status", None).await
                && status["ready"] == true
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not start; see {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_str().unwrap(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--window-size=1100,1300", "--force-prefers-reduced-motion",
                    "--blink-settings=preferredColorScheme=1",
                    format!("--user-data-dir={}", driver._profile.path().display()),
                ],
            },
        }}});
        let session = webdriver(port, "POST", "/session", Some(capabilities))
            .await
            .unwrap_or_else(|e| panic!("chromium did not start ({e}); {PACKAGES}"));
        driver.session = Some(session["sessionId"].as_str().unwrap().to_string());
        driver
    }

    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session.as_deref().unwrap())
    }

    async fn go(&self, url: &str) {
        webdriver(self.port, "POST", &self.path("/url"), Some(json!({"url": url})))
            .await
            .unwrap();
    }

    async fn script(&self, script: &str) -> Value {
        webdriver(
            self.port,
            "POST",
            &self.path("/execute/sync"),
            Some(json!({"script": script, "args": []})),
        )
        .await
        .unwrap()
    }

    /// Polls `script` until it returns true.
    async fn wait_until(&self, what: &str, script: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.script(script).await == true {
                return;
            }
            if Instant::now() > deadline {
                let text = self.script("return document.body.innerText").await;
                panic!(
                    "timed out waiting for {what}; the page shows:\n{}",
                    text.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn screenshot(&self, file: &Path) {
        let png = webdriver(self.port, "GET", &self.path("/screenshot"), None)
            .await
            .unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        assert!(bytes.starts_with(b"\x89PNG"));
        std::fs::write(file, bytes).unwrap();
    }
}

fn target_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A target whose `/health` answers 200 until `failing` is set, then 500.
async fn switchable_target(failing: Arc<AtomicBool>) -> SocketAddr {
    async fn health(State(failing): State<Arc<AtomicBool>>) -> (StatusCode, &'static str) {
        if failing.load(Ordering::SeqCst) {
            (StatusCode::INTERNAL_SERVER_ERROR, "broken")
        } else {
            (StatusCode::OK, "ok")
        }
    }
    let slow = || async {
        tokio::time::sleep(Duration::from_millis(60)).await;
        "slow"
    };
    let app = Router::new()
        .route("/health", get(health))
        .route("/slow", get(slow))
        .with_state(failing);
    common::serve(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_levels_and_follows_a_failing_target_live() {
    let _turn = crate::common::exclusive();
    let failing = Arc::new(AtomicBool::new(false));
    let target = switchable_target(failing.clone()).await;
    let closed = common::closed_port();
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &format!(
            "status_page:\n  title: Example Corp services\n  message: 'Planned maintenance of the database on Sunday 02:00-03:00 UTC.'\n  group_by: team\n\
             history: {{path: history.db}}\n\
             defaults: {{interval: 500ms, timeout: 400ms, degraded_after: 50ms, down_after: 300ms}}\n\
             probes:\n\
             - {{name: checkout-api, kind: http, url: 'http://{target}/health', labels: {{team: shop}}}}\n\
             - {{name: search, kind: http, url: 'http://{target}/slow', labels: {{team: shop}}}}\n\
             - {{name: postgres, kind: tcp, address: '127.0.0.1:{closed}', labels: {{team: data}}}}\n\
             - {{name: warehouse-port, kind: tcp, address: '{target}', labels: {{team: data}}}}\n\
             - {{name: reports, kind: tcp, address: '{target}', labels: {{team: data, owner: '<img src=x onerror=\"window.pwned=1\"><script>window.pwned=2</script>'}}}}\n\
             - {{name: internal-only, kind: tcp, address: '{target}', status_page: {{hide: true}}}}\n"
        ),
        dir.path(),
    );
    let app = App::start(config, None).unwrap();
    app.ready().await.unwrap();
    let vigil = common::serve(vigil::web::router(app.clone())).await;

    let driver = Driver::start().await;
    driver.go(&format!("http://{vigil}/")).await;
    let level_of = |probe: &str| {
        format!(
            "(function() {{ var e = document.querySelector('li[data-probe=\"{probe}\"]'); return e ? e.getAttribute('data-level') : null; }})()"
        )
    };
    let level = |probe: &str| format!("return {}", level_of(probe));
    driver
        .wait_until(
            "the first levels",
            &format!(
                "return {} === 'up' && {} === 'down' && {} === 'degraded'",
                level_of("checkout-api"),
                level_of("postgres"),
                level_of("search"),
            ),
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(driver.script(&level("checkout-api")).await, "up");
    assert_eq!(driver.script("return document.title").await, "Example Corp services");
    let summary = driver
        .script("return document.getElementById('summary').textContent")
        .await;
    assert_eq!(summary, "3 up, 1 degraded, 1 down", "{summary}");
    let groups = driver
        .script("return Array.from(document.querySelectorAll('.group-name')).map(function(e){return e.textContent})")
        .await;
    assert_eq!(groups, json!(["data", "shop"]));
    // Readable without colour: each level is also a word (and an icon).
    let badge = driver
        .script("return document.querySelector('li[data-probe=\"postgres\"] .level').textContent")
        .await;
    assert_eq!(badge, "\u{2716}DOWN");
    let note = driver
        .script("return document.querySelector('li[data-probe=\"postgres\"] .note').textContent")
        .await;
    assert!(note.as_str().unwrap().contains("connect"), "{note}");
    let bars = driver
        .script("return document.querySelectorAll('li[data-probe=\"checkout-api\"] svg.bar rect').length")
        .await;
    assert_eq!(bars, 90);
    assert_eq!(
        driver
            .script("return document.body.innerText.indexOf('internal-only')")
            .await,
        -1
    );

    // The target starts failing: the page follows without a reload.
    driver.script("window.sameDocument = true; return true").await;
    failing.store(true, Ordering::SeqCst);
    driver
        .wait_until(
            "checkout-api to turn DOWN",
            "var e = document.querySelector('li[data-probe=\"checkout-api\"]'); return !!e && e.getAttribute('data-level') === 'down'",
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(
        driver.script("return window.sameDocument === true").await,
        true,
        "the page reloaded"
    );
    let summary = driver
        .script("return document.getElementById('summary').textContent")
        .await;
    assert_eq!(summary, "2 up, 1 degraded, 2 down");
    let note = driver
        .script("return document.querySelector('li[data-probe=\"checkout-api\"] .note').textContent")
        .await;
    assert!(note.as_str().unwrap().contains("status"), "{note}");
    driver.screenshot(&target_dir().join("status-page.png")).await;

    // The detail view: recent runs and a latency chart, drawn by the page itself.
    driver.go(&format!("http://{vigil}/probes/search")).await;
    driver
        .wait_until(
            "the detail view",
            "return document.querySelectorAll('table.runs tbody tr').length >= 2 && !!document.querySelector('svg.chart path.line')",
            Duration::from_secs(10),
        )
        .await;
    driver.screenshot(&target_dir().join("status-page-detail.png")).await;

    // A hostile label value is shown as text: nothing ran, no element was made from it.
    driver.go(&format!("http://{vigil}/#/probes/reports")).await;
    driver
        .wait_until(
            "the detail view of reports",
            "var s = document.querySelector('section.detail'); return !!s && s.getAttribute('data-probe') === 'reports'",
            Duration::from_secs(10),
        )
        .await;
    let text = driver
        .script("return document.querySelector('section.detail').textContent")
        .await;
    assert!(
        text.as_str()
            .unwrap()
            .contains("owner=<img src=x onerror=\"window.pwned=1\"><script>window.pwned=2</script>"),
        "{text}"
    );
    assert_eq!(driver.script("return window.pwned === undefined").await, true);
    assert_eq!(
        driver
            .script("return document.querySelectorAll('img, main script').length")
            .await,
        0
    );
    drop(driver);
    app.close().await;
}
