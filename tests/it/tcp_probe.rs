//! The `tcp` kind against real servers on 127.0.0.1: connect, send/expect, TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use vigil::probe::{Level, Reason};

/// A line server: greets with `220 ready`, answers `PING` with `PONG`, closes on `QUIT`.
async fn line_server() -> std::net::SocketAddr {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let _ = write.write_all(b"220 ready\r\n").await;
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let reply: &[u8] = match line.trim() {
                        "PING" => b"PONG\r\n",
                        "QUIT" => break,
                        _ => b"500 what?\r\n",
                    };
                    let _ = write.write_all(reply).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_send_and_expect() {
    let addr = line_server().await;
    let closed = common::closed_port();
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &format!(
            "probes:\n\
             - {{name: connect, kind: tcp, address: '{addr}'}}\n\
             - {{name: greeting, kind: tcp, address: '{addr}', expect: '^220 '}}\n\
             - {{name: ping, kind: tcp, address: '{addr}', send: \"PING\\r\\n\", expect: 'PONG'}}\n\
             - {{name: wrong, kind: tcp, address: '{addr}', send: \"QUIT\\r\\n\", expect: 'PONG'}}\n\
             - {{name: refused, kind: tcp, address: '127.0.0.1:{closed}'}}\n"
        ),
        dir.path(),
    );
    assert_eq!(common::run(&config, "connect").await.level, Level::Up);
    assert_eq!(common::run(&config, "greeting").await.level, Level::Up);
    let ping = common::run(&config, "ping").await;
    assert_eq!(ping.level, Level::Up, "{ping:?}");
    let wrong = common::run(&config, "wrong").await;
    assert_eq!(
        (wrong.level, wrong.reason),
        (Level::Down, Some(Reason::Expect)),
        "{wrong:?}"
    );
    assert!(
        wrong.detail.starts_with("connection closed after 11 bytes"),
        "{}",
        wrong.detail
    );
    let refused = common::run(&config, "refused").await;
    assert_eq!((refused.level, refused.reason), (Level::Down, Some(Reason::Connect)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connect_reads_certificate_expiry() {
    let ca = common::TestCa::new();
    let (cert, key) = ca.leaf("tcp", -1, 20);
    let addr = common::serve_tls(axum::Router::new(), cert, key).await;
    let ca_file = ca.ca_file();
    let config = common::config(
        &format!(
            "probes:\n\
             - {{name: tls, kind: tcp, address: 'localhost:{}', tls: true, tls_config: {{ca_file: '{}'}}}}\n\
             - {{name: tls-untrusted, kind: tcp, address: 'localhost:{}', tls: true}}\n",
            addr.port(),
            ca_file.display(),
            addr.port()
        ),
        ca.dir.path(),
    );
    let ok = common::run(&config, "tls").await;
    assert_eq!(ok.level, Level::Up, "{ok:?}");
    assert!(ok.observations.tcp().and_then(|t| t.tls_seen.earliest_expiry).is_some());
    let bad = common::run(&config, "tls-untrusted").await;
    assert_eq!(bad.reason, Some(Reason::Tls));
}
