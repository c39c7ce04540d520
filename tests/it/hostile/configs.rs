//! Hostile configs: `vigil check` refuses each one quickly, with its reason (and its line where
//! it has one), never hangs on a FIFO nor reads a device until memory runs out; `vigil run` and
//! reloads fail cleanly, and a failed reload always says so in its gauge.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{self, Running};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

/// What a finished `vigil` said.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs `vigil <args>` (with `env`), killed after `limit`, its address space capped at 2 GiB
/// so that a runaway allocation fails instead of taking the machine.
fn vigil(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Ran {
    let started = Instant::now();
    let mut child = Command::new("prlimit")
        .args(["--as=2147483648", "--", VIGIL])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("prlimit (util-linux) runs vigil");
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vigil {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    Ran {
        code,
        stdout,
        stderr,
        took: started.elapsed(),
    }
}

fn write(dir: &Path, name: &str, text: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn sparse(dir: &Path, name: &str, len: u64) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path).unwrap().set_len(len).unwrap();
    path
}

fn fifo(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    assert!(Command::new("mkfifo").arg(&path).status().unwrap().success());
    path
}

fn http_probe(extra: &str) -> String {
    format!("probes:\n  - {{name: api, kind: http, url: 'http://127.0.0.1:1/', method: POST{extra}}}\n")
}

#[test]
fn check_refuses_hostile_configs_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bomb = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/config/invalid-alias-bomb.yaml");
    let deep_flow = format!("probes: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let deep_block: String = std::iter::once("probes:\n".to_string())
        .chain((0..3000).map(|i| format!("{}- \n", "  ".repeat(i + 1))))
        .collect();
    let long_key = format!("{}: 1\n", "k".repeat(1 << 20));
    std::fs::create_dir(d.join("a-folder")).unwrap();
    sparse(d, "big-body", 17 << 20);
    fifo(d, "body-fifo");
    // (case, config file, environment, exit code, text the output must hold)
    type Case<'a> = (&'a str, PathBuf, Vec<(&'a str, &'a str)>, Option<i32>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "config is /dev/zero",
            PathBuf::from("/dev/zero"),
            vec![],
            Some(1),
            "not a regular file",
        ),
        (
            "config is a FIFO",
            fifo(d, "config-fifo"),
            vec![],
            Some(1),
            "not a regular file",
        ),
        (
            "config is a folder",
            d.join("a-folder"),
            vec![],
            Some(1),
            "not a regular file",
        ),
        (
            "config of 70 MiB",
            sparse(d, "huge.yml", 70 << 20),
            vec![],
            Some(1),
            "larger than 64 MiB",
        ),
        (
            "config not UTF-8",
            write(d, "latin1.yml", b"labels: {a: \xe9t\xe9}\n"),
            vec![],
            Some(1),
            "not UTF-8",
        ),
        (
            "NUL bytes",
            write(d, "nul.yml", b"labels: {a: b}\n\0\0\0\n"),
            vec![],
            Some(1),
            "line 2: invalid YAML: control character U+0000",
        ),
        (
            "two documents",
            write(d, "two.yml", b"labels: {a: b}\n---\nlabels: {c: d}\n"),
            vec![],
            Some(1),
            "error",
        ),
        (
            "alias bomb",
            bomb,
            vec![],
            Some(1),
            "line 7: aliases expand the document",
        ),
        (
            "deep flow nesting",
            write(d, "deep.yml", deep_flow.as_bytes()),
            vec![],
            Some(1),
            "recursion limit",
        ),
        (
            "deep block nesting",
            write(d, "deep2.yml", deep_block.as_bytes()),
            vec![],
            Some(1),
            "recursion limit",
        ),
        (
            "a 1 MiB key",
            write(d, "key.yml", long_key.as_bytes()),
            vec![],
            Some(1),
            "line 1: invalid YAML",
        ),
        (
            "body_file FIFO",
            write(d, "b1.yml", http_probe(", body_file: body-fifo").as_bytes()),
            vec![],
            Some(1),
            "line 2: probes[0].body_file: cannot read",
        ),
        (
            "body_file /dev/zero",
            write(d, "b2.yml", http_probe(", body_file: /dev/zero").as_bytes()),
            vec![],
            Some(1),
            "not a regular file",
        ),
        (
            "body_file of 17 MiB",
            write(d, "b3.yml", http_probe(", body_file: big-body").as_bytes()),
            vec![],
            Some(1),
            "larger than 16 MiB",
        ),
        (
            "token file /dev/urandom",
            write(
                d,
                "b4.yml",
                http_probe(", bearer_token: {file: /dev/urandom}").as_bytes(),
            ),
            vec![],
            Some(1),
            "not a regular file",
        ),
        (
            "ca_file a folder",
            write(d, "b5.yml", http_probe(", tls_config: {ca_file: a-folder}").as_bytes()),
            vec![],
            Some(1),
            "not a regular file",
        ),
        (
            "byte-order mark",
            write(
                d,
                "bom.yml",
                "\u{feff}probes:\n  - {name: a, kind: tcp, address: '127.0.0.1:1'}\n".as_bytes(),
            ),
            vec![],
            Some(0),
            "OK (1 probes",
        ),
        (
            "duplicate key",
            write(d, "dup.yml", b"labels: {a: b}\nlabels: {c: d}\n"),
            vec![],
            Some(1),
            "line 2: labels: key `labels` is given twice (first on line 1)",
        ),
        (
            "env garbage",
            write(d, "env.yml", b"labels: {a: b}\n"),
            vec![("VIGIL_CONCURRENCY", "lots")],
            Some(1),
            "concurrency: invalid type",
        ),
        (
            "env huge",
            write(d, "env2.yml", b"labels: {a: b}\n"),
            vec![("VIGIL_CONCURRENCY", "99999999999999")],
            Some(1),
            "concurrency: must be at most 100000",
        ),
        (
            "state_dir under a file",
            write(d, "sd.yml", b"state_dir: bom.yml/state\n"),
            vec![],
            Some(1),
            "state_dir: cannot create",
        ),
        (
            "negative duration",
            write(d, "neg.yml", b"defaults: {interval: -5s}\n"),
            vec![],
            Some(1),
            "defaults.interval",
        ),
        (
            "NaN ratio",
            write(
                d,
                "nan.yml",
                b"receiver: {token: 0123456789abcdef0, state_file: s.json, min_available_ratio: .nan}\n",
            ),
            vec![],
            Some(1),
            "min_available_ratio: must be between 0 and 1",
        ),
    ];
    let mut slowest = (Duration::ZERO, "");
    for (case, config, env, code, want) in &cases {
        let config = config.to_str().unwrap();
        let ran = vigil(&["check", "--config", config], env, Duration::from_secs(10));
        let out = format!("{}{}", ran.stdout, ran.stderr);
        assert_eq!(ran.code, *code, "{case}: {out}");
        assert!(
            out.contains(want),
            "{case}: expected {want:?} in:\n{}",
            &out[..out.len().min(2000)]
        );
        if ran.took > slowest.0 {
            slowest = (ran.took, case);
        }
    }
    eprintln!(
        "hostile configs, vigil check: {} cases; slowest {:?} ({})",
        cases.len(),
        slowest.0,
        slowest.1
    );
}

fn reload(running: &Running) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", running.port)).unwrap();
    write!(
        stream,
        "POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text)
}

fn reload_gauge(metrics: &str) -> String {
    metrics
        .lines()
        .find(|l| l.starts_with("vigil_config_last_reload_successful"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn run_and_reload_fail_cleanly_on_hostile_configs() {
    let dir = tempfile::tempdir().unwrap();
    let good = "probes:\n  - {name: a, kind: tcp, address: '127.0.0.1:1', interval: 1s, timeout: 500ms}\n";
    let huge = "concurrency: 18446744073709551615\nprobes:\n  - {name: a, kind: tcp, address: '127.0.0.1:1'}\n";
    let es_password = "probes:\n  - {name: logs, kind: elasticsearch, urls: ['http://elastic:hunter2@127.0.0.1:99999', \
                       'https://elastic:hunter2@[::1'], index: logs, max_age: 5m}\n";
    let path = write(dir.path(), "vigil.yml", huge.as_bytes());

    // `run` refuses the config with its error (exit 2), it does not panic (exit 101).
    let ran = vigil(
        &[
            "run",
            "--config",
            path.to_str().unwrap(),
            "--web.listen-address",
            "127.0.0.1:0",
        ],
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("concurrency: must be at most 100000"),
        "{}",
        ran.stderr
    );
    let check = vigil(
        &["check", "--config", path.to_str().unwrap()],
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(check.code, Some(1));

    write(dir.path(), "vigil.yml", good.as_bytes());
    let mut running = Running::start(&path, &[]);
    let mut cases = 2;
    for (case, text) in [("huge concurrency", huge), ("elasticsearch URL password", es_password)] {
        write(dir.path(), "vigil.yml", text.as_bytes());
        let (code, answer) = reload(&running);
        assert_eq!(code, 500, "{case}: {answer}");
        assert!(!answer.contains("hunter2"), "{case}: {answer}");
        let metrics = running.get("/metrics");
        assert!(
            reload_gauge(&metrics).ends_with(" 0"),
            "{case}: {}",
            reload_gauge(&metrics)
        );
        // Still serving, on the old config.
        assert!(
            metrics.contains("vigil_probe_duration_seconds_count{probe=\"a\""),
            "{case}"
        );
        cases += 1;
    }
    let check = vigil(
        &["check", "--config", path.to_str().unwrap()],
        &[],
        Duration::from_secs(10),
    );
    assert!(
        check.stdout.contains("invalid port number") && !check.stdout.contains("hunter2"),
        "{}",
        check.stdout
    );
    write(dir.path(), "vigil.yml", good.as_bytes());
    assert_eq!(reload(&running).0, 200);
    assert!(reload_gauge(&running.get("/metrics")).ends_with(" 1"));
    running.wait_for_log("config reload failed");
    assert!(!running.logs().contains("hunter2"), "{}", running.logs());
    assert!(running.stop().success());
    eprintln!("hostile configs, run and reload: {cases} cases");
}

#[test]
fn hostile_label_values_keep_metrics_parseable() {
    let dir = tempfile::tempdir().unwrap();
    let text = "labels: {note: \"quote \\\" back\\\\slash\\nnewline \\e[31m\"}\nprobes:\n  - {name: a, kind: tcp, \
                address: '127.0.0.1:1', interval: 1s, timeout: 500ms}\n";
    let path = write(dir.path(), "vigil.yml", text.as_bytes());
    let mut running = Running::start(&path, &[]);
    running.wait_for("a run", |m| m.contains("vigil_probe_duration_seconds_count{"));
    // HTTP/1.0: the page comes whole, not in chunks.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", running.port)).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).unwrap();
    let body = page.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(body.contains("note=\""), "{body}");
    common::promtool_check_metrics(body);
    assert!(running.stop().success());
    eprintln!("hostile configs, label values: 1 case");
}
