//! The `websocket` kind against a real WebSocket server: tokio-tungstenite's server side on
//! 127.0.0.1, plain and over TLS (a certificate the test makes), which accepts (with the
//! subprotocol `chat` when asked), refuses (403), echoes, says nothing, or closes at once; and
//! two raw TCP servers, one that never answers the handshake and one that answers 101 with a
//! wrong `Sec-WebSocket-Accept`. Every bad case ends within its timeout with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

use crate::common;
use axum::http::StatusCode;
use vigil::app::App;
use vigil::probe::{Level, Reason};

/// One connection: the handshake by path, then the behaviour of that path.
#[allow(clippy::result_large_err)] // tungstenite's callback type
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
    let mut path = String::new();
    let callback = |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        path = request.uri().path().to_string();
        if path == "/refuse" {
            let mut refused = ErrorResponse::new(Some("no".to_string()));
            *refused.status_mut() = StatusCode::FORBIDDEN;
            return Err(refused);
        }
        let asked = request
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if asked.split(',').any(|p| p.trim() == "chat") && path != "/wrong-protocol" {
            response
                .headers_mut()
                .insert("sec-websocket-protocol", "chat".parse().unwrap());
        } else if !asked.is_empty() && path == "/wrong-protocol" {
            response
                .headers_mut()
                .insert("sec-websocket-protocol", "other".parse().unwrap());
        }
        Ok(response)
    };
    let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    match path.as_str() {
        "/echo" | "/wrong-protocol" => {
            let _ = socket.send(Message::Ping(b"hi".to_vec().into())).await;
            while let Some(Ok(message)) = socket.next().await {
                if message.is_text() || message.is_binary() {
                    let _ = socket.send(message).await;
                }
            }
        }
        "/silent" => {
            // Answers the close handshake, never a message.
            while socket.next().await.is_some() {}
        }
        "/bye" => {
            let _ = socket.close(None).await;
        }
        _ => {}
    }
}

async fn listen() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_exchanges_and_their_failures() {
    let (plain, ws) = listen().await;
    tokio::spawn(async move {
        while let Ok((stream, _)) = plain.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    let ca = common::TestCa::new();
    let (cert, key) = ca.leaf("ws", -1, 30);
    let acceptor = common::tls_acceptor(&cert, &key, &[]);
    let (tls, wss) = listen().await;
    tokio::spawn(async move {
        while let Ok((stream, _)) = tls.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(stream) = acceptor.accept(stream).await {
                    serve(stream).await;
                }
            });
        }
    });
    // Accepts and never answers the handshake.
    let (hang, hang_port) = listen().await;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = hang.accept().await {
            held.push(stream);
        }
    });
    // Answers 101 with an accept key that is not the key's.
    let (liar, liar_port) = listen().await;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = liar.accept().await {
            let mut buffer = [0u8; 2048];
            let _ = stream.read(&mut buffer).await;
            let _ = stream
                .write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                      Sec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                )
                .await;
        }
    });
    let closed = common::closed_port();
    let ca_file = ca.ca_file();
    let ca_file = ca_file.display();
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &format!(
            "probes:\n\
             - {{name: open, kind: websocket, url: 'ws://127.0.0.1:{ws}/silent'}}\n\
             - {{name: echo, kind: websocket, url: 'ws://127.0.0.1:{ws}/echo', subprotocol: chat, \
                 headers: {{X-Probe: vigil}}, send: 'hello ws', expect: '^hello ws$'}}\n\
             - {{name: wss-echo, kind: websocket, url: 'wss://localhost:{wss}/echo', send: ping, expect: ping, \
                 tls_config: {{ca_file: '{ca_file}'}}}}\n\
             - {{name: wss-untrusted, kind: websocket, url: 'wss://localhost:{wss}/echo'}}\n\
             - {{name: refused-handshake, kind: websocket, url: 'ws://127.0.0.1:{ws}/refuse'}}\n\
             - {{name: no-protocol, kind: websocket, url: 'ws://127.0.0.1:{ws}/silent', subprotocol: chat2}}\n\
             - {{name: wrong-protocol, kind: websocket, url: 'ws://127.0.0.1:{ws}/wrong-protocol', subprotocol: chat}}\n\
             - {{name: silent, kind: websocket, url: 'ws://127.0.0.1:{ws}/silent', expect: anything, timeout: 1s}}\n\
             - {{name: closes, kind: websocket, url: 'ws://127.0.0.1:{ws}/bye', expect: anything}}\n\
             - {{name: hangs, kind: websocket, url: 'ws://127.0.0.1:{hang_port}/', timeout: 1s}}\n\
             - {{name: bad-accept, kind: websocket, url: 'ws://127.0.0.1:{liar_port}/'}}\n\
             - {{name: refused, kind: websocket, url: 'ws://127.0.0.1:{closed}/'}}\n"
        ),
        dir.path(),
    );
    let expect = [
        ("open", Level::Up, None, Some(101)),
        ("echo", Level::Up, None, Some(101)),
        ("wss-echo", Level::Up, None, Some(101)),
        ("wss-untrusted", Level::Down, Some(Reason::Tls), None),
        ("refused-handshake", Level::Down, Some(Reason::Status), Some(403)),
        ("no-protocol", Level::Down, Some(Reason::Protocol), Some(101)),
        ("wrong-protocol", Level::Down, Some(Reason::Protocol), Some(101)),
        ("silent", Level::Down, Some(Reason::Timeout), Some(101)),
        ("closes", Level::Down, Some(Reason::Expect), Some(101)),
        ("hangs", Level::Down, Some(Reason::Timeout), None),
        ("bad-accept", Level::Down, Some(Reason::Protocol), Some(101)),
        ("refused", Level::Down, Some(Reason::Connect), None),
    ];
    for (name, level, reason, status) in expect {
        let started = std::time::Instant::now();
        let outcome = common::run(&config, name).await;
        assert_eq!(
            (outcome.level, outcome.reason),
            (level, reason),
            "{name}: {}",
            outcome.detail
        );
        let obs = outcome.observations.of::<vigil::probe::websocket::Websocket>().unwrap();
        assert_eq!(obs.status, status, "{name}: {obs:?}");
        if level == Level::Up {
            assert!(obs.closed_cleanly, "{name}: the close handshake completes: {obs:?}");
        }
        if name.ends_with("echo") {
            assert!(obs.messages >= 1, "{name}: {obs:?}");
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{name} ends within its timeout"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_endpoint_publishes_websocket_series() {
    let (plain, ws) = listen().await;
    tokio::spawn(async move {
        while let Ok((stream, _)) = plain.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        "modules:\n  ws_echo: {kind: websocket, send: hi, expect: hi}\n",
        dir.path(),
    );
    let app = App::start(config, None).unwrap();
    let router = vigil::web::router(app.clone());
    let (status, _, body) = common::get(
        &router,
        &format!("/probe?module=ws_echo&target=ws://127.0.0.1:{ws}/echo"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        "probe_success 1",
        "probe_websocket_status_code 101",
        "probe_websocket_closed_cleanly 1",
        "probe_ip_protocol 4",
    ] {
        assert!(body.lines().any(|l| l == line), "missing {line:?} in:\n{body}");
    }
    app.stop();
}
