//! Listener abuse: thousands of idle connections under the usual 1,024 open-files limit,
//! clients that trickle or stall, and the connection cap, with /metrics answering throughout and
//! the probes keeping their own sockets.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;

use super::common::{self, Running};

/// GETs `path` on a new connection; the whole answer and how long it took.
fn timed_get(port: u16, path: &str, limit: Duration) -> Result<(String, Duration), String> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), limit)
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(limit)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| format!("read after {:?}: {e}", started.elapsed()))?;
    Ok((text, started.elapsed()))
}

/// Whether the peer has closed `stream` (without waiting).
fn closed(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    let gone = match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    };
    stream.set_nonblocking(false).unwrap();
    gone
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn value(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_answer_within_a_second_under_1100_idle_connections_at_1024_descriptors() {
    let _turn = crate::common::exclusive();
    let target = common::serve_in_thread(Router::new().route("/ok", get(|| async { "fine" })));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vigil.yml");
    let mut text = format!(
        "defaults: {{interval: 500ms, timeout: 400ms}}\nprobes:\n  - {{name: web, kind: http, url: 'http://{target}/ok'}}\n"
    );
    for i in 0..20 {
        text += &format!("  - {{name: port-{i}, kind: tcp, address: '{target}'}}\n");
    }
    std::fs::write(&config, text).unwrap();
    let mut vigil = Running::start_under(&["prlimit", "--nofile=1024:1024", "--"], &config, &[]);
    let pid = vigil.child.id();
    vigil.wait_for("the first runs", |m| {
        m.contains("vigil_probe_success{probe=\"web\",kind=\"http\"} 1")
    });
    let budget = vigil.wait_for_log("descriptor budget");
    assert!(budget.contains("\"open_files\":1024"), "{budget}");

    // The attack: 1,100 connections that never send a byte; each one the listener closes is
    // opened again, for 10 s.
    let port = vigil.port;
    let attack = std::thread::spawn(move || {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut idle: Vec<TcpStream> = Vec::with_capacity(1100);
        while idle.len() < 1100 {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(s) => idle.push(s),
                Err(e) => panic!("attacker could not connect: {e}"),
            }
        }
        let started = Instant::now();
        let mut reopened = 0u64;
        while started.elapsed() < Duration::from_secs(10) {
            for stream in &mut idle {
                if closed(stream)
                    && let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                {
                    *stream = s;
                    reopened += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (idle, reopened)
    });

    // Throughout: a fresh scrape every 100 ms, each answered within a second.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut peak_files = 0;
    while started.elapsed() < Duration::from_secs(10) {
        let (page, took) = timed_get(port, "/metrics", Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("/metrics did not answer within 1 s under attack: {e}"));
        assert!(page.starts_with("HTTP/1.1 200"), "{}", &page[..page.len().min(200)]);
        assert!(took < Duration::from_secs(1), "/metrics took {took:?}");
        latencies.push(took);
        peak_files = peak_files.max(open_files(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    let (idle, reopened) = attack.join().unwrap();
    let metrics = vigil.get("/metrics");
    // The probes kept their sockets: not one run failed.
    assert_eq!(
        value(&metrics, "vigil_probe_success{probe=\"web\""),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("vigil_probe_failures_total{") && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(
        !vigil.logs().to_lowercase().contains("too many open files"),
        "{}",
        vigil.logs()
    );
    drop(idle);
    assert!(vigil.stop().success());
    latencies.sort();
    eprintln!(
        "hostile listener: 1,100 idle connections (kept up: {reopened} reopened after the listener closed them) \
         under a 1,024 descriptor limit for 10 s: {} scrapes, /metrics p50 {:?}, max {:?}; peak {} open files; \
         0 failed probe runs",
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        peak_files
    );
}

/// Connects and waits (at most `limit`) for the listener to close the connection; how long it
/// took. `feed` runs every 200 ms on the open stream (trickling a byte, say).
fn time_to_close(port: u16, limit: Duration, mut feed: impl FnMut(&mut TcpStream)) -> Duration {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let started = Instant::now();
    while started.elapsed() < limit {
        feed(&mut stream);
        std::thread::sleep(Duration::from_millis(200));
        if closed(&mut stream) {
            return started.elapsed();
        }
    }
    panic!("still open after {limit:?}");
}

#[test]
fn slow_clients_are_cut_off_at_the_read_timeout() {
    let _turn = crate::common::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vigil.yml");
    std::fs::write(&config, "probes:\n  - {name: a, kind: tcp, address: '127.0.0.1:1'}\n").unwrap();
    let mut vigil = Running::start(&config, &["--web.read-timeout", "1s"]);
    let port = vigil.port;
    let limit = Duration::from_secs(4);

    let silent = time_to_close(port, limit, |_| {});
    let mut sent = false;
    let trickled_head = time_to_close(port, limit, |s| {
        let bytes: &[u8] = if sent {
            b"X-Slow: a\r\n"
        } else {
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
        };
        sent = true;
        let _ = s.write_all(bytes);
    });
    let mut started_body = false;
    let mut answer = String::new();
    let trickled_body = time_to_close(port, limit, |s| {
        if !started_body {
            started_body = true;
            let _ = s.write_all(
                b"POST /push/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x\r\nContent-Length: 1000\r\n\r\n{",
            );
        } else {
            let _ = s.write_all(b" ");
        }
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 512];
        if let Ok(n) = s.read(&mut buf) {
            answer.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        s.set_nonblocking(false).unwrap();
    });
    let mut asked = false;
    let kept_alive = time_to_close(port, limit, |s| {
        if !asked {
            asked = true;
            s.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        }
    });
    for (case, took) in [
        ("sends nothing", silent),
        ("trickles its headers", trickled_head),
        ("trickles its body", trickled_body),
        ("idles after a request", kept_alive),
    ] {
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_millis(2500),
            "{case}: {took:?}"
        );
    }
    // /metrics still answers, and the server is the same process.
    assert!(vigil.get("/-/healthy").contains("Healthy"));
    assert!(vigil.stop().success());
    eprintln!(
        "hostile listener, read timeout 1s: 4 cases closed after {silent:?} (silent), {trickled_head:?} (trickled \
         headers), {trickled_body:?} (trickled body), {kept_alive:?} (idle keep-alive)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_closes_the_idle_first_and_stalled_readers_are_dropped() {
    let _turn = crate::common::exclusive();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let endless = || {
        let chunks =
            futures::stream::repeat_with(|| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 64 * 1024])));
        axum::body::Body::from_stream(chunks)
    };
    let router = Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                "slow"
            }),
        )
        .route("/endless", get(move || async move { endless() }));
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let limits = vigil::web::listener::Limits {
        max_connections: 4,
        read_timeout: Duration::from_secs(30),
        write_timeout: Duration::from_secs(1),
    };
    tokio::spawn(async move {
        let web = vigil::web::listener::WebConfig::default();
        vigil::web::listener::serve(
            socket,
            router,
            &web,
            &limits,
            std::future::pending(),
            Duration::from_secs(1),
        )
        .await
    });
    let get = |path: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text).await;
        text
    };

    // Four idle connections fill the cap; a fifth is served, and the oldest idle one is closed.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(get("/ok").await.ends_with("ok"));
    let mut buf = [0u8; 16];
    let first = tokio::time::timeout(Duration::from_secs(2), idle[0].read(&mut buf)).await;
    assert!(
        matches!(first, Ok(Ok(0)) | Ok(Err(_))),
        "the oldest idle connection is closed: {first:?}"
    );
    drop(idle);

    // Four connections handling requests are never closed: a fifth waits for room.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let slow: Vec<_> = (0..4).map(|_| tokio::spawn(get("/slow"))).collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waited = get("/ok").await;
    assert!(waited.ends_with("ok"), "{waited}");
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    for s in slow {
        assert!(s.await.unwrap().ends_with("slow"));
    }

    // A client that stops reading an endless response is dropped after the write timeout.
    let mut reader = tokio::net::TcpStream::connect(addr).await.unwrap();
    reader
        .write_all(b"GET /endless HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut total = 0usize;
    let mut chunk = vec![0u8; 1 << 16];
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    })
    .await;
    assert!(
        drained.is_ok(),
        "the stalled response was still flowing after {total} bytes"
    );
    eprintln!(
        "hostile listener, cap of 4: 3 cases (idle closed first, handlers wait for room, a stalled reader dropped after \
         {total} bytes buffered)"
    );
}
