//! The `vigil` binary as a user runs it: `check`, `once`, and `run` with signals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use common::Running;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

fn write_config(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("vigil.yml");
    std::fs::write(&path, text).unwrap();
    path
}

fn target() -> String {
    let app = Router::new().route("/ok", get(|| async { "fine" }));
    format!("http://{}", common::serve_in_thread(app))
}

#[test]
fn check_reports_every_error_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(
        dir.path(),
        "probes:\n  - {name: a, kind: tcp, address: '127.0.0.1:1'}\n",
    );
    let out = Command::new(VIGIL)
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (1 probes, 0 modules)"));

    let bad = write_config(
        dir.path(),
        "probes:\n  - {name: a, kind: tcp}\n  - {name: a, kind: http, url: 'x://y'}\nextra: 1\n",
    );
    let out = Command::new(VIGIL)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "4 errors",
        "line 2: probes[0]: missing key `address`",
        "line 3: probes[1].name: probe name `a` is used twice",
        "line 3: probes[1].url: unsupported scheme `x`",
        "line 4: extra: unknown key `extra`",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let missing = Command::new(VIGIL)
        .args(["check", "--config", "/nonexistent/vigil.yml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stdout).contains("cannot read the file"));
}

#[test]
fn once_prints_a_table_and_exits_by_the_results() {
    let base = target();
    let closed = common::closed_port();
    let dir = tempfile::tempdir().unwrap();
    let all_up = write_config(
        dir.path(),
        &format!("probes:\n  - {{name: web, kind: http, url: '{base}/ok'}}\n"),
    );
    let out = Command::new(VIGIL)
        .args(["once", "--config"])
        .arg(&all_up)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    let mixed = write_config(
        dir.path(),
        &format!(
            "probes:\n  - {{name: web, kind: http, url: '{base}/ok'}}\n  - {{name: db, kind: tcp, address: '127.0.0.1:{closed}'}}\n"
        ),
    );
    let out = Command::new(VIGIL)
        .args(["once", "--config"])
        .arg(&mixed)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("PROBE") && lines[0].contains("LEVEL") && lines[0].contains("REASON"),
        "{table}"
    );
    assert!(lines[1].starts_with("web ") && lines[1].contains("UP"), "{table}");
    assert!(
        lines[2].starts_with("db ") && lines[2].contains("DOWN") && lines[2].contains("connect: connect to 127.0.0.1"),
        "{table}"
    );
    assert!(table.contains("1 up, 0 degraded, 1 down"), "{table}");
}

#[test]
fn unresolvable_name_is_down_with_reason_dns() {
    // In a network namespace of its own (loopback only, and down) the lookup fails on this
    // machine, and no query leaves it.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "probes:\n  - {name: nowhere, kind: http, url: 'http://no-such-host.invalid/'}\n",
    );
    let out = Command::new("unshare")
        .args(["--net", VIGIL, "once", "--config"])
        .arg(&config)
        .output()
        .expect("`unshare` (util-linux) is needed for this test");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.code() == Some(1),
        "unshare --net failed (this test needs root and util-linux):\n{}{table}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("nowhere") && l.contains("DOWN") && l.contains("dns: cannot resolve")),
        "{table}"
    );
}

#[test]
fn run_reloads_on_sighup_and_stops_gracefully_on_sigterm() {
    let base = target();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("probes:\n  - {{name: first, kind: http, url: '{base}/ok'}}\n"),
    );
    let mut vigil = Running::start(&config, &[]);
    let v = &vigil;
    v.wait_for("the first probe", |m| {
        m.contains(r#"vigil_probe_success{probe="first",kind="http"} 1"#)
    });

    write_config(
        dir.path(),
        &format!("probes:\n  - {{name: second, kind: http, url: '{base}/ok'}}\n"),
    );
    v.signal("HUP");
    let metrics = v.wait_for("the reloaded probe", |m| {
        m.contains(r#"vigil_probe_success{probe="second",kind="http"} 1"#)
    });
    assert!(!metrics.contains("probe=\"first\""));

    write_config(dir.path(), "probes: [oops\n");
    v.signal("HUP");
    v.wait_for("the failed reload", |m| {
        m.contains("vigil_config_last_reload_successful 0")
    });
    assert!(
        v.get("/metrics")
            .contains(r#"vigil_probe_success{probe="second",kind="http"} 1"#)
    );
    v.wait_for_log("config reload failed; keeping the running config");

    v.signal("TERM");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = vigil.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "vigil did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    vigil.wait_for_log("\"stopped\"");
}

#[test]
fn secrets_never_reach_logs_metrics_or_pages() {
    let base = target();
    let host = base.trim_start_matches("http://").to_string();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "tok-SECRET-1\n").unwrap();
    std::fs::write(dir.path().join("pw"), "pw-SECRET-2").unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "probes:\n\
             - {{name: bearer, kind: http, url: '{base}/ok', bearer_token: {{file: token}}, headers: {{X-Api-Key: hdr-SECRET-3}}}}\n\
             - {{name: basic, kind: http, url: '{base}/missing', basic_auth: {{username: u, password: {{file: pw}}}}}}\n\
             - {{name: in-url, kind: http, url: 'http://user:url-SECRET-4@{host}/ok?api_key=q-SECRET-5'}}\n"
        ),
    );
    let vigil = Running::start(&config, &["--log.level", "trace"]);
    let metrics = vigil.wait_for("all probes", |m| {
        m.matches("vigil_probe_duration_seconds_count{").count() == 3
    });
    let page = vigil.get("/") + &vigil.get("/api/v1/status") + &vigil.get("/badge/in-url.svg");
    vigil.wait_for_log("level changed");
    let logs = vigil.logs();
    for secret in [
        "tok-SECRET-1",
        "pw-SECRET-2",
        "hdr-SECRET-3",
        "url-SECRET-4",
        "q-SECRET-5",
    ] {
        assert!(!metrics.contains(secret), "{secret} reached /metrics");
        assert!(!page.contains(secret), "{secret} reached /");
        assert!(!logs.contains(secret), "{secret} reached the logs");
    }
}

#[test]
fn environment_overrides_config_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "defaults:\n  interval: 30s\nprobes:\n  - {name: a, kind: tcp, address: '127.0.0.1:1'}\n",
    );
    let out = Command::new(VIGIL)
        .args(["check", "--config"])
        .arg(&config)
        .env("VIGIL_DEFAULTS__INTERVAL", "5s")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("defaults.timeout: timeout (10s) must be shorter than interval (5s)"),
        "{text}"
    );
    let out = Command::new(VIGIL)
        .args(["check", "--config"])
        .arg(&config)
        .env("VIGIL_CONCURRENCY", "0")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("concurrency: must be at least 1"));
}

#[test]
fn status_prints_a_table_and_exits_by_the_levels() {
    let base = target();
    let closed = common::closed_port();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "probes:\n  - {{name: web, kind: http, url: '{base}/ok'}}\n  - {{name: quiet, kind: http, url: '{base}/ok', status_page: {{hide: true}}}}\n"
        ),
    );
    let vigil = Running::start(&config, &[]);
    vigil.wait_for("a run", |m| {
        m.contains("vigil_probe_duration_seconds_count{probe=\"web\"")
    });
    let url = format!("http://127.0.0.1:{}", vigil.port);
    let out = Command::new(VIGIL).args(["status", "--url", &url]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = table.lines().collect();
    for column in [
        "PROBE",
        "LEVEL",
        "UPTIME 24H",
        "FAILED/RUNS",
        "AVG",
        "P95",
        "LAST FAILURE",
    ] {
        assert!(lines[0].contains(column), "{table}");
    }
    assert!(
        lines[1].starts_with("web ") && lines[1].contains(" UP ") && lines[1].contains("100.00%"),
        "{table}"
    );
    assert!(lines[1].contains("0/1") || lines[1].contains("0/2"), "{table}");
    assert!(!table.contains("quiet"), "a hidden probe is in the report:\n{table}");
    assert!(table.contains("1 up, 0 degraded, 0 down"), "{table}");
    drop(vigil);

    let config = write_config(
        dir.path(),
        &format!("probes:\n  - {{name: db, kind: tcp, address: '127.0.0.1:{closed}'}}\n"),
    );
    let vigil = Running::start(&config, &[]);
    vigil.wait_for("a run", |m| {
        m.contains("vigil_probe_duration_seconds_count{probe=\"db\"")
    });
    let url = format!("http://127.0.0.1:{}", vigil.port);
    let out = Command::new(VIGIL).args(["status", "--url", &url]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(
        table.contains("DOWN") && table.contains("0.00%") && table.contains("connect"),
        "{table}"
    );
    drop(vigil);

    let out = Command::new(VIGIL)
        .args(["status", "--url", &format!("http://127.0.0.1:{closed}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "unreachable has its own exit code");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach vigil at http://127.0.0.1:"));
}
