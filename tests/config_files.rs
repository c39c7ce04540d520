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
        match Config::load(&Source::File(path.clone())) {
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
