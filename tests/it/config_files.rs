//! Config validation against fixtures: one `testdata/config/invalid-<rule>.yaml` per rule, each
//! ending with `# error: TEXT` lines that must appear in the error report (and `# not: TEXT`
//! lines that must not, such as a password); and every shipped example config must pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use vigil::config::{Config, Source};

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/config");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn every_invalid_fixture_fails_with_its_message() {
    let mut checked = 0;
    let mut problems = Vec::new();
    for path in fixtures()
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("invalid-"))
    {
        let text = std::fs::read_to_string(&path).unwrap();
        let expected: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# error: ")).collect();
        let unwanted: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# not: ")).collect();
        assert!(!expected.is_empty(), "{} has no `# error:` line", path.display());
        // As `vigil check` reads it: every section built, the receiver's too.
        match Config::check(&Source::File(path.clone())) {
            Ok(_) => problems.push(format!("{}: loaded, but should fail", path.display())),
            Err(errors) => {
                let report = errors.to_string();
                for want in expected {
                    if !report.contains(want) {
                        problems.push(format!("{}: expected {want:?} in:\n{report}", path.display()));
                    }
                }
                for text in &unwanted {
                    if report.contains(text) {
                        problems.push(format!("{}: {text:?} must not appear in:\n{report}", path.display()));
                    }
                }
            }
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} fixtures found");
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn shipped_example_configs_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            if let Err(e) = Config::load(&Source::File(path.clone())) {
                panic!("{e}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 1);
    Config::load(&Source::Embedded).expect("the embedded default config is valid");
}

#[test]
fn every_error_is_reported_in_file_order() {
    let text = "defaults:\n  interval: 10s\nprobes:\n  - name: a\n    kind: tcp\n  - name: b\n    kind: http\n    url: http://127.0.0.1:1/\n    body_must_match: '('\n  - name: c\n    kind: nope\nunknown: 1\n";
    let errors = Config::parse(text, Path::new(".")).expect_err("invalid");
    let lines: Vec<Option<usize>> = errors.errors.iter().map(|e| e.line).collect();
    // The defaults' timeout (10s) is not below their interval: said once, not once per probe.
    assert_eq!(lines, vec![Some(1), Some(4), Some(9), Some(11), Some(12)], "{errors}");
    let report = errors.to_string();
    assert!(report.starts_with("config: 5 errors"), "{report}");
}

/// `vigil receiver` reads its section and the probes' remediations, nothing else: a probe whose
/// secret file cannot be read, or whose kind is misconfigured, does not stop it; `vigil run`
/// never opens the receiver's token file (a token file that does not exist does not stop it);
/// and each process still reports the errors of what it does read, with their lines.
#[test]
fn each_process_reads_only_its_own_sections() {
    use vigil::config::ReceiverConfig;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("receiver-token");
    std::fs::write(&token, "receiver-token-0123456789\n").unwrap();
    let receiver = format!(
        "receiver:\n  token_file: {}\n  state_file: state.json\n",
        token.display()
    );
    let probes = "probes:\n  \
                  - {name: web, kind: http, url: 'http://127.0.0.1:1/', bearer_token: {file: /nonexistent/probe-secret}, \
                  remediation: {docker: {container: web-1}}}\n  \
                  - {name: db, kind: tcp, address: 'not an address'}\n";
    let text = format!("{probes}{receiver}");
    let config = ReceiverConfig::parse(&text, dir.path()).expect("the receiver ignores the probes' secrets");
    assert_eq!(config.remediations.len(), 1);
    assert_eq!(config.remediations[0].0, "web");
    let run = Config::parse(&text, dir.path())
        .expect_err("the probes are invalid")
        .to_string();
    assert!(run.contains("probes[0].bearer_token"), "{run}");
    assert!(!run.contains("receiver"), "{run}");

    // `vigil run` on a config whose receiver token file does not exist.
    let text = "receiver:\n  token_file: /nonexistent/receiver-token\n  state_file: state.json\n\
                probes:\n  - {name: db, kind: tcp, address: '127.0.0.1:1'}\n";
    Config::parse(text, dir.path()).expect("vigil run does not read the receiver's token");
    let errors = ReceiverConfig::parse(text, dir.path())
        .expect_err("the receiver does")
        .to_string();
    assert!(
        errors.contains("line 2: receiver.token_file: cannot read /nonexistent/receiver-token"),
        "{errors}"
    );

    // The receiver still validates the remediations it reads, with their lines.
    let text = format!("{receiver}probes:\n  - {{name: web, remediation: {{}}}}\n");
    let errors = ReceiverConfig::parse(&text, dir.path())
        .expect_err("bad remediation")
        .to_string();
    assert!(
        errors.contains("line 5: probes[0].remediation: set exactly one of `kubernetes` or `docker`"),
        "{errors}"
    );
}
