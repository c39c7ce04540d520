//! STARTTLS in the tcp kind, with the dialogues of examples/starttls.yml as they ship:
//! - SMTP against a real exim4 (tests/it/common/exim.rs) with a certificate the test makes;
//! - IMAP, POP3 and FTP against scripted servers (tokio-rustls after the upgrade) that speak
//!   just their part of the dialogue, since no such server runs here without a system set-up;
//! - scripted SMTP servers that break the dialogue: no STARTTLS offered, STARTTLS refused, and
//!   plaintext where the TLS handshake should be. Each ends within its timeout with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::common;
use crate::common::exim::Exim;
use vigil::probe::{Level, Reason};

/// The example config, with each probe's address pointed at `ports` (by name) and the test
/// CA's file as its `tls_config`.
fn example_config(ports: &[(&str, u16)], ca_file: &std::path::Path, extra: &str) -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/starttls.yml")).unwrap();
    let mut out = String::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(name) = line.trim().strip_prefix("- name: ") {
            current = name.to_string();
        }
        match line.trim().strip_prefix("address: ") {
            Some(_) => {
                let port = ports
                    .iter()
                    .find(|(n, _)| *n == current)
                    .map_or_else(|| panic!("no server for {current}"), |(_, p)| *p);
                out.push_str(&format!(
                    "    address: 127.0.0.1:{port}\n    tls_config: {{ca_file: '{}', server_name: localhost}}\n",
                    ca_file.display()
                ));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out.push_str(extra);
    out
}

/// What a scripted server says: its greeting, then for each line it reads, the answer to a
/// line starting with the given text (or `ERR`); `upgrade` is the command after whose answer
/// it starts TLS; after it, the same answers over TLS.
#[derive(Clone, Copy)]
struct Script {
    greeting: &'static str,
    answers: &'static [(&'static str, &'static str)],
    upgrade: Option<&'static str>,
}

async fn converse<S: AsyncRead + AsyncWrite + Unpin>(stream: S, script: Script, after_upgrade: bool) -> Option<S> {
    let mut reader = BufReader::new(stream);
    if !after_upgrade {
        reader.get_mut().write_all(script.greeting.as_bytes()).await.ok()?;
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let answer = script
            .answers
            .iter()
            .find(|(command, _)| line.to_ascii_uppercase().contains(command))
            .map_or("ERR\r\n", |(_, answer)| answer);
        reader.get_mut().write_all(answer.as_bytes()).await.ok()?;
        if answer.is_empty() {
            return None;
        }
        if !after_upgrade && script.upgrade.is_some_and(|u| line.to_ascii_uppercase().contains(u)) {
            return Some(reader.into_inner());
        }
    }
}

async fn scripted(script: Script, tls: tokio_rustls::TlsAcceptor) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                let Some(stream): Option<TcpStream> = converse(stream, script, false).await else {
                    return;
                };
                if let Ok(stream) = tls.accept(stream).await {
                    converse(stream, script, true).await;
                }
            });
        }
    });
    port
}

const IMAP: Script = Script {
    greeting: "* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n",
    answers: &[
        ("STARTTLS", "a1 OK Begin TLS negotiation now\r\n"),
        ("CAPABILITY", "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\na2 OK done\r\n"),
        ("LOGOUT", "* BYE\r\na3 OK bye\r\n"),
    ],
    upgrade: Some("STARTTLS"),
};

const POP3: Script = Script {
    greeting: "+OK POP3 ready\r\n",
    answers: &[
        ("STLS", "+OK Begin TLS negotiation\r\n"),
        ("CAPA", "+OK Capability list follows\r\nUSER\r\nSASL PLAIN\r\n.\r\n"),
        ("QUIT", "+OK bye\r\n"),
    ],
    upgrade: Some("STLS"),
};

const FTP: Script = Script {
    greeting: "220 FTP ready\r\n",
    answers: &[
        ("AUTH TLS", "234 AUTH TLS successful\r\n"),
        ("FEAT", "211-Features:\r\n PBSZ\r\n PROT\r\n211 End\r\n"),
        ("QUIT", "221 Goodbye\r\n"),
    ],
    upgrade: Some("AUTH TLS"),
};

/// SMTP that does not offer STARTTLS.
const SMTP_NO_TLS: Script = Script {
    greeting: "220 plain.vigil.test ESMTP\r\n",
    answers: &[
        ("EHLO", "250-plain.vigil.test\r\n250 SIZE 1000\r\n"),
        ("QUIT", "221 bye\r\n"),
    ],
    upgrade: None,
};

/// SMTP that offers STARTTLS and refuses it.
const SMTP_REFUSES: Script = Script {
    greeting: "220 flaky.vigil.test ESMTP\r\n",
    answers: &[
        ("EHLO", "250-flaky.vigil.test\r\n250 STARTTLS\r\n"),
        ("STARTTLS", "454 4.7.0 TLS not available due to temporary reason\r\n"),
    ],
    upgrade: None,
};

/// SMTP that agrees to STARTTLS and then answers in plaintext instead of a handshake.
const SMTP_NO_HANDSHAKE: Script = Script {
    greeting: "220 broken.vigil.test ESMTP\r\n",
    answers: &[
        ("EHLO", "250-broken.vigil.test\r\n250 STARTTLS\r\n"),
        ("STARTTLS", "220 go ahead\r\n"),
        ("", "500 what is this?\r\n"),
    ],
    upgrade: None,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_dialogues_upgrade_smtp_imap_pop3_and_ftp() {
    let ca = common::TestCa::new();
    let (cert, key) = ca.leaf("mail", -1, 30);
    let exim = Exim::start(&cert, &key);
    let tls = common::tls_acceptor(&cert, &key, &[]);
    let imap = scripted(IMAP, tls.clone()).await;
    let pop3 = scripted(POP3, tls.clone()).await;
    let ftp = scripted(FTP, tls.clone()).await;
    let no_tls = scripted(SMTP_NO_TLS, tls.clone()).await;
    let refuses = scripted(SMTP_REFUSES, tls.clone()).await;
    let no_handshake = scripted(SMTP_NO_HANDSHAKE, tls.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let example = example_config(
        &[
            ("smtp-submission", exim.port),
            ("imap", imap),
            ("pop3", pop3),
            ("ftp", ftp),
        ],
        &ca.ca_file(),
        "",
    );
    // The broken servers get the example's SMTP dialogue too.
    let smtp_dialogue: String = example
        .split("  - name: imap")
        .next()
        .unwrap()
        .split("  - name: smtp-submission\n")
        .nth(1)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("address:") && !l.trim_start().starts_with("tls_config:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut text = example.clone();
    for (name, port) in [
        ("no-starttls", no_tls),
        ("starttls-refused", refuses),
        ("no-handshake", no_handshake),
    ] {
        text.push_str(&format!(
            "  - name: {name}\n    address: 127.0.0.1:{port}\n    timeout: 2s\n    tls_config: {{ca_file: '{}', server_name: localhost}}\n{smtp_dialogue}",
            ca.ca_file().display()
        ));
    }
    let config = common::config(&text, dir.path());
    let expect = [
        ("smtp-submission", Level::Up, None),
        ("imap", Level::Up, None),
        ("pop3", Level::Up, None),
        ("ftp", Level::Up, None),
        ("no-starttls", Level::Down, Some(Reason::Expect)),
        ("starttls-refused", Level::Down, Some(Reason::Expect)),
        ("no-handshake", Level::Down, Some(Reason::Tls)),
    ];
    let outcome = common::run(&config, "starttls-refused").await;
    assert!(
        outcome
            .detail
            .contains("no line matching /^220[ -]/ before the timeout; the last line was `454 4.7.0 TLS not available"),
        "the detail says what came instead: {}",
        outcome.detail
    );
    for (name, level, reason) in expect {
        let started = std::time::Instant::now();
        let outcome = common::run(&config, name).await;
        assert_eq!(
            (outcome.level, outcome.reason),
            (level, reason),
            "{name}: {}\n{}",
            outcome.detail,
            if name == "smtp-submission" {
                exim.log()
            } else {
                String::new()
            }
        );
        let obs = outcome.observations.tcp().unwrap();
        if level == Level::Up {
            assert!(obs.tls_ok, "{name}: upgraded to TLS");
            assert!(
                obs.tls_seen.earliest_expiry.is_some(),
                "{name}: the certificate's expiry is known"
            );
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{name} ends within its timeout"
        );
    }
}
