//! Hostile targets: each ends DOWN within its timeout with a fitting reason, never hands
//! credentials to another origin, and never lets what it sends reach a terminal as escapes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil::probe::{Level, Reason};

use super::common;

/// Headers each request to a recording server carried.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<HeaderMap>>>);

impl Seen {
    fn last(&self) -> HeaderMap {
        self.0.lock().unwrap().last().cloned().expect("a request arrived")
    }
    fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

/// A server that records the headers of every request and answers 200.
async fn recorder() -> (std::net::SocketAddr, Seen) {
    let seen = Seen::default();
    let record = seen.clone();
    let app = Router::new().fallback(move |headers: HeaderMap| {
        let record = record.clone();
        async move {
            record.0.lock().unwrap().push(headers);
            "landed"
        }
    });
    (common::serve(app).await, seen)
}

/// A server whose `/go?to=URL` redirects to `URL` (and records what it was sent too).
fn redirector(seen: Seen) -> Router {
    Router::new().route(
        "/go",
        get(
            |headers: HeaderMap,
             axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>| async move {
                seen.0.lock().unwrap().push(headers);
                Redirect::temporary(&q["to"]).into_response()
            },
        ),
    )
}

const CREDENTIALS: [&str; 5] = ["authorization", "cookie", "x-api-key", "x-tenant", "x-from-file"];

fn assert_no_credentials(headers: &HeaderMap, case: &str) {
    for name in CREDENTIALS {
        assert!(
            !headers.contains_key(name),
            "{case}: `{name}` reached the redirect target: {headers:?}"
        );
    }
    assert_eq!(
        headers.get("x-trace").map(|v| v.to_str().unwrap()),
        Some("t-1"),
        "{case}: plain headers still go"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_never_carry_credentials_to_another_origin() {
    let (elsewhere, landed) = recorder().await;
    let first = Seen::default();
    let plain = common::serve(redirector(first.clone())).await;
    let ca = common::TestCa::new();
    let (cert, key) = ca.leaf("origin", -1, 30);
    let tls = common::serve_tls(redirector(first.clone()), cert, key).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("from-file"), "file-secret\n").unwrap();
    let ca_file = ca.ca_file();
    let probe = |name: &str, base: &str, to: &str| {
        format!(
            "  - name: {name}\n    kind: http\n    url: '{base}/go?to={to}'\n    bearer_token: s3cret-token\n    \
             tls_config: {{ca_file: '{}'}}\n    headers: {{Cookie: 'sid=42', X-Api-Key: k-1, X-Tenant: acme, \
             X-From-File: {{file: from-file}}, X-Trace: t-1}}\n",
            ca_file.display()
        )
    };
    let other_port = format!("http://127.0.0.1:{}/land", elsewhere.port());
    let other_host = format!("http://localhost:{}/land", elsewhere.port());
    // The https origin redirects to plain http on the recorder's port: a downgrade.
    let downgrade = format!("http://localhost:{}/land", elsewhere.port());
    let mut text = String::from("secret_names: [tenant]\nprobes:\n");
    text += &probe("other-port", &format!("http://{plain}"), &other_port);
    text += &probe("other-host", &format!("http://{plain}"), &other_host);
    text += &probe("downgrade", &format!("https://localhost:{}", tls.port()), &downgrade);
    text += &probe(
        "same-origin",
        &format!("http://{plain}"),
        &format!("http://{plain}/go?to=/nowhere"),
    );
    let config = common::config(&text, dir.path());

    let mut cases = 0;
    for name in ["other-port", "other-host", "downgrade"] {
        landed.clear();
        let outcome = common::run(&config, name).await;
        assert_eq!(outcome.level, Level::Up, "{name}: {outcome:?}");
        assert_no_credentials(&landed.last(), name);
        // The origin itself got them all.
        let sent = first.last();
        assert_eq!(sent["authorization"], "Bearer s3cret-token", "{name}");
        assert_eq!(sent["x-from-file"], "file-secret", "{name}");
        cases += 1;
    }
    // Same scheme, host and port: the credentials follow (the second hop lands on /go again,
    // which redirects to a relative /nowhere on the same origin; the recorder there is `first`).
    first.clear();
    let outcome = common::run(&config, "same-origin").await;
    assert_eq!(
        outcome.observations.http().map(|h| h.exchange.redirects),
        Some(2),
        "{outcome:?}"
    );
    let requests = first.0.lock().unwrap().clone();
    assert!(requests.len() >= 2, "{requests:?}");
    for headers in &requests {
        assert_eq!(headers["authorization"], "Bearer s3cret-token");
        assert_eq!(headers["x-tenant"], "acme");
    }
    cases += 1;
    eprintln!("hostile targets, redirects: {cases} cases");
}

/// A server that accepts connections and runs `behave` on each.
async fn raw_server<F, Fut>(behave: F) -> std::net::SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let behave = Arc::new(behave);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(behave(stream));
        }
    });
    addr
}

/// Reads the request head, then does nothing for `hold`.
async fn read_head(stream: &mut tokio::net::TcpStream) {
    let mut buf = vec![0u8; 8192];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_target_ends_down_in_time_with_its_reason() {
    let hold = Duration::from_secs(30);
    let silent = raw_server(move |stream| async move {
        let _keep = stream;
        tokio::time::sleep(hold).await;
    })
    .await;
    let trickle_head = raw_server(move |mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n").await;
        for _ in 0..30 {
            if stream.write_all(b"X-Slow: a\r\n").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    let garbage = raw_server(|mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream
            .write_all(b"\x00\x01\x02 this is not HTTP \x1b[31m\r\n\r\n")
            .await;
    })
    .await;
    let huge_head = raw_server(|mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n").await;
        let line = format!("X-Big: {}\r\n", "a".repeat(8000));
        for _ in 0..200 {
            if stream.write_all(line.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await;
    let short_body = raw_server(|mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly a little")
            .await;
    })
    .await;
    let huge_chunk = raw_server(|mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\nabc")
            .await;
    })
    .await;
    let reset = raw_server(|mut stream| async move {
        read_head(&mut stream).await;
        // Linger 0: close with a reset, at once (the deprecation is about a blocking linger).
        #[allow(deprecated)]
        let _ = stream.set_linger(Some(Duration::ZERO));
        drop(stream);
    })
    .await;
    let endless_tcp = raw_server(|mut stream| async move {
        let chunk = [b'z'; 4096];
        for _ in 0..10_000 {
            if stream.write_all(&chunk).await.is_err() {
                return;
            }
        }
    })
    .await;
    let tls_silent = silent;
    let redirect_loop =
        common::serve(Router::new().route(
            "/r/{n}",
            get(|axum::extract::Path(n): axum::extract::Path<u64>| async move {
                Redirect::temporary(&format!("/r/{}", n + 1))
            }),
        ))
        .await;
    let bad_location = common::serve(Router::new().route(
        "/",
        get(|| async {
            (
                [("location", "http://user:hunter2@[::1/x?token=abc")],
                axum::http::StatusCode::FOUND,
            )
        }),
    ))
    .await;
    let hundred = raw_server(|mut stream| async move {
        read_head(&mut stream).await;
        for _ in 0..2000 {
            if stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err() {
                return;
            }
        }
    })
    .await;

    let cases: Vec<(&str, String, &str, Reason)> = vec![
        ("silent", format!("http://{silent}/"), "", Reason::Timeout),
        ("trickled-head", format!("http://{trickle_head}/"), "", Reason::Timeout),
        ("garbage", format!("http://{garbage}/"), "", Reason::Protocol),
        ("huge-head", format!("http://{huge_head}/"), "", Reason::Protocol),
        ("short-body", format!("http://{short_body}/"), "", Reason::Protocol),
        ("huge-chunk", format!("http://{huge_chunk}/"), "", Reason::Protocol),
        ("reset", format!("http://{reset}/"), "", Reason::Protocol),
        ("tls-silent", format!("https://{tls_silent}/"), "", Reason::Timeout),
        (
            "redirect-loop",
            format!("http://{redirect_loop}/r/0"),
            "",
            Reason::Redirect,
        ),
        ("bad-location", format!("http://{bad_location}/"), "", Reason::Redirect),
        ("hundred-continues", format!("http://{hundred}/"), "", Reason::Protocol),
        ("endless-tcp", endless_tcp.to_string(), "tcp", Reason::Expect),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("defaults: {interval: 10s, timeout: 2s, down_after: 5s}\nprobes:\n");
    for (name, target, kind, _) in &cases {
        if *kind == "tcp" {
            text += &format!("  - {{name: {name}, kind: tcp, address: '{target}', expect: 'never-sent'}}\n");
        } else {
            text += &format!("  - {{name: {name}, kind: http, url: '{target}'}}\n");
        }
    }
    let config = common::config(&text, dir.path());
    let mut slowest = Duration::ZERO;
    let runs = cases.iter().map(|(name, _, _, reason)| {
        let config = &config;
        async move {
            let started = Instant::now();
            let outcome = common::run(config, name).await;
            (name, reason, outcome, started.elapsed())
        }
    });
    for (name, reason, outcome, took) in futures::future::join_all(runs).await {
        assert_eq!(
            (outcome.level, outcome.reason),
            (Level::Down, Some(*reason)),
            "{name}: {outcome:?}"
        );
        assert!(took < Duration::from_millis(2500), "{name} took {took:?}");
        assert!(
            !outcome.detail.contains("hunter2") && !outcome.detail.contains("abc"),
            "{name}: {}",
            outcome.detail
        );
        assert!(
            !outcome.detail.chars().any(char::is_control),
            "{name}: {:?}",
            outcome.detail
        );
        slowest = slowest.max(took);
    }
    eprintln!(
        "hostile targets: {} cases, each DOWN with its reason; slowest {:?} (timeout 2s)",
        cases.len(),
        slowest
    );
}

/// A fake Elasticsearch node that answers a search with a fresh document.
fn healthy_node() -> Router {
    Router::new().route(
        "/{index}/_search",
        post(|| async {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as f64;
            axum::Json(serde_json::json!({
                "_shards": {"total": 1, "successful": 1, "failed": 0},
                "hits": {"total": {"value": 1, "relation": "eq"}, "hits": []},
                "aggregations": {"newest": {"value": now}}
            }))
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_failover_gives_each_url_its_share() {
    let hanging = raw_server(|stream| async move {
        let _keep = stream;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let healthy = common::serve(healthy_node()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "defaults: {{degraded_after: 3s, down_after: 3s}}\nprobes:\n  - {{name: logs, kind: elasticsearch, timeout: 3s, urls: ['http://{hanging}', 'http://{healthy}'], \
         index: logs, max_age: 5m}}\n  - {{name: all-hang, kind: elasticsearch, timeout: 2s, \
         urls: ['http://{hanging}', 'http://elastic:hunter2@{hanging}'], index: logs, max_age: 5m}}\n"
    );
    let config = common::config(&text, dir.path());
    let started = Instant::now();
    let outcome = common::run(&config, "logs").await;
    assert_eq!(outcome.level, Level::Up, "{outcome:?}");
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2500), "{took:?}");
    let both = common::run(&config, "all-hang").await;
    assert_eq!(
        (both.level, both.reason),
        (Level::Down, Some(Reason::Timeout)),
        "{both:?}"
    );
    assert!(both.detail.contains("its share of the timeout"), "{}", both.detail);
    assert!(!both.detail.contains("hunter2"), "{}", both.detail);
    eprintln!("hostile targets, elasticsearch failover: 2 cases; a hung first node cost {took:?} of 3s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_targets_never_reach_metrics_or_the_api() {
    let (addr, _) = recorder().await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "secret_names: [customer]\nprobes:\n  - {{name: api, kind: http, url: \
         'http://user:hunter2@{addr}/x?pass=p1&pwd=p2&jwt=p3&session=p4&sessionid=p5&api_key=p6&customer_id=p7&page=2#access_token=p8'}}\n"
    );
    let app = vigil::app::App::start(common::config(&text, dir.path()), None).unwrap();
    let router = vigil::web::router(app.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let (_, _, metrics) = common::get(&router, "/metrics", None).await;
        if metrics.contains("vigil_probe_success{") || Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (_, _, api) = common::get(&router, "/api/v1/status", None).await;
    let (_, _, page) = common::get(&router, "/", None).await;
    for (what, text) in [("/metrics", &metrics), ("/api/v1/status", &api), ("/", &page)] {
        for secret in ["hunter2", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8"] {
            assert!(
                !text.contains(&format!("={secret}")) && !text.contains(&format!(":{secret}")),
                "{what} shows {secret}:\n{text}"
            );
        }
    }
    assert!(metrics.contains("page=2"), "{metrics}");
    app.stop();
    eprintln!("hostile targets, secrets in a target: 9 secrets, 3 pages");
}

/// `vigil run` logging text to a pipe (as under systemd or docker), stopped when dropped.
struct TextLogs {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    port: u16,
}

impl TextLogs {
    fn start(config: &std::path::Path) -> TextLogs {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["run", "--web.listen-address", "127.0.0.1:0", "--config"])
            .arg(config)
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(stderr);
            let mut raw = Vec::new();
            while reader.read_until(b'\n', &mut raw).unwrap_or(0) > 0 {
                let line = String::from_utf8_lossy(&raw).into_owned();
                if let Some(at) = line.find("address=127.0.0.1:") {
                    let port: String = line[at + 18..].chars().take_while(char::is_ascii_digit).collect();
                    let _ = tx.send(port.parse::<u16>().unwrap_or(0));
                }
                sink.lock().unwrap().push(line);
                raw.clear();
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("vigil logs its address");
        TextLogs { child, lines, port }
    }

    fn logs(&self) -> String {
        self.lines.lock().unwrap().concat()
    }
}

impl Drop for TextLogs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn escapes_from_outside_never_reach_a_terminal_or_the_log() {
    use std::io::{Read, Write};
    let node = common::serve_in_thread(Router::new().route(
        "/{index}/_search",
        post(|| async {
            (
                axum::http::StatusCode::BAD_REQUEST,
                axum::Json(
                    serde_json::json!({"error": {"root_cause": [{"type": "x\u{1b}[2J", "reason":
                    "\u{1b}]0;owned\u{7}\u{1b}[31mshard\nfailed INFO forged line"}]}, "status": 400}),
                ),
            )
        }),
    ));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vigil.yml");
    std::fs::write(
        &config,
        format!(
            "probes:\n  - {{name: job, kind: heartbeat, token: 0123456789abcdef-token, max_age: 1h, interval: 1s, timeout: 500ms}}\n  - {{name: logs, \
             kind: elasticsearch, url: 'http://{node}', index: logs, max_age: 5m, interval: 1s, timeout: 500ms}}\n"
        ),
    )
    .unwrap();
    let vigil = TextLogs::start(&config);
    let mut push = std::net::TcpStream::connect(("127.0.0.1", vigil.port)).unwrap();
    let body = r#"{"status": "fail", "message": "\u001b]0;pwned\u0007\u001b[31mdisk\nfull\r\n2026 INFO forged"}"#;
    write!(
        push,
        "POST /push/job HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer 0123456789abcdef-token\r\nContent-Type: \
         application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    push.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Both probes have gone DOWN with their texts, in the log and in `vigil status`.
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["status", "--url", &format!("http://127.0.0.1:{}", vigil.port)])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if (text.contains("disk full") && text.contains("shard failed")) || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        status.contains("disk full") && status.contains("shard failed"),
        "{status}"
    );
    assert!(!status.chars().any(|c| c.is_control() && c != '\n'), "{status:?}");
    assert!(
        !status
            .lines()
            .any(|l| l.starts_with("2026") || l.starts_with("failed INFO")),
        "{status}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !vigil.logs().contains("shard failed") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs = vigil.logs();
    assert!(logs.contains("shard failed"), "{logs}");
    // No colours into a pipe, and nothing from outside that a terminal would obey.
    assert!(!logs.contains('\u{1b}') && !logs.contains('\u{7}'), "{logs:?}");
    assert!(
        !logs
            .lines()
            .any(|l| l.starts_with("failed INFO") || l.starts_with("2026 INFO")),
        "{logs}"
    );
    eprintln!("hostile targets, terminal escapes: 3 cases (heartbeat message, Elasticsearch error, log colours)");
}
