//! The blackbox options vigil supports, three ways that must agree (issue 11): the code's list
//! `vigil::probe::blackbox::SUPPORTED_OPTIONS`, the table in README.md's `/probe` section, and
//! what blackbox 0.23 itself has. Also: the conformance corpus's config
//! (tests/testdata/conformance/blackbox.yml) uses only supported options, and every option
//! issue 11 asks for is supported.
//!
//! An entry is `(prober, option)`: the option a dotted path inside the prober's block, written
//! with or without the block (`("http", "tls_config.ca_file")` or `("http",
//! "http.tls_config.ca_file")`); a module's own keys (`prober`, `timeout`, the blocks) under
//! `module` or under a prober.
//!
//! The README table is the first table of the `/probe` section whose header has a `prober` and
//! an `option` column; each row names its prober (or `module`), and its option cell holds one or
//! more option paths in backticks (`` `tls_config` ``, or several: `` `basic_auth.username`,
//! `basic_auth.password` ``). Other columns are free.
//!
//! This file is its own test binary so that, while the list does not exist yet, the conformance
//! test itself still builds and runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use vigil::probe::blackbox::SUPPORTED_OPTIONS;
use yaml_rust2::{Yaml, YamlLoader};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Keys of a module itself, outside its prober's block.
const MODULE_KEYS: &[&str] = &["prober", "timeout", "http", "tcp", "dns", "icmp", "grpc"];

/// Keys of `tls_config` in prometheus/common 0.39 (no inline `ca`, `cert`, `key` yet).
const TLS_CONFIG: &[&str] = &[
    "ca_file",
    "cert_file",
    "key_file",
    "server_name",
    "insecure_skip_verify",
    "min_version",
    "max_version",
];

/// Each prober block's keys in blackbox_exporter 0.23 (with prometheus/common 0.39's HTTP client
/// config inline in `http:`), nested keys as `parent.child`; from /work/notes/blackbox.md §7.
fn blackbox_keys(prober: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    let mut add = |list: &[&str]| keys.extend(list.iter().map(|k| k.to_string()));
    let header_matcher = ["header", "regexp", "allow_missing"];
    let nest = |parent: &str, children: &[&str]| -> Vec<String> {
        std::iter::once(parent.to_string())
            .chain(children.iter().map(|c| format!("{parent}.{c}")))
            .collect()
    };
    let mut nested = Vec::new();
    match prober {
        "http" => {
            add(&[
                "valid_status_codes",
                "valid_http_versions",
                "preferred_ip_protocol",
                "ip_protocol_fallback",
                "skip_resolve_phase_with_proxy",
                "no_follow_redirects",
                "follow_redirects",
                "fail_if_ssl",
                "fail_if_not_ssl",
                "method",
                "headers",
                "body",
                "fail_if_body_matches_regexp",
                "fail_if_body_not_matches_regexp",
                "compression",
                "body_size_limit",
                "bearer_token",
                "bearer_token_file",
                "proxy_url",
                "proxy_connect_header",
                "enable_http2",
            ]);
            nested.extend(nest("fail_if_header_matches", &header_matcher));
            nested.extend(nest("fail_if_header_not_matches", &header_matcher));
            nested.extend(nest("basic_auth", &["username", "password", "password_file"]));
            nested.extend(nest("authorization", &["type", "credentials", "credentials_file"]));
            nested.extend(nest(
                "oauth2",
                &[
                    "client_id",
                    "client_secret",
                    "client_secret_file",
                    "scopes",
                    "token_url",
                    "endpoint_params",
                    "proxy_url",
                ],
            ));
            nested.extend(nest("oauth2.tls_config", TLS_CONFIG));
            nested.extend(nest("tls_config", TLS_CONFIG));
        }
        "tcp" => {
            add(&[
                "preferred_ip_protocol",
                "ip_protocol_fallback",
                "source_ip_address",
                "tls",
            ]);
            nested.extend(nest("query_response", &["expect", "send", "starttls"]));
            nested.extend(nest("tls_config", TLS_CONFIG));
        }
        "dns" => {
            add(&[
                "preferred_ip_protocol",
                "ip_protocol_fallback",
                "source_ip_address",
                "transport_protocol",
                "dns_over_tls",
                "query_name",
                "query_type",
                "query_class",
                "recursion_desired",
                "valid_rcodes",
            ]);
            let rr = [
                "fail_if_matches_regexp",
                "fail_if_all_match_regexp",
                "fail_if_not_matches_regexp",
                "fail_if_none_matches_regexp",
            ];
            for section in [
                "validate_answer_rrs",
                "validate_authority_rrs",
                "validate_additional_rrs",
            ] {
                nested.extend(nest(section, &rr));
            }
            nested.extend(nest("tls_config", TLS_CONFIG));
        }
        "icmp" => add(&[
            "preferred_ip_protocol",
            "ip_protocol_fallback",
            "source_ip_address",
            "payload_size",
            "dont_fragment",
            "ttl",
        ]),
        "grpc" => {
            add(&["service", "tls", "preferred_ip_protocol", "ip_protocol_fallback"]);
            nested.extend(nest("tls_config", TLS_CONFIG));
        }
        _ => {}
    }
    keys.extend(nested);
    keys
}

/// An entry as `(scope, full path)`: scope `module` or a prober; a block's options with the
/// block in front (`http.tls_config.ca_file`), a module's own keys bare (`timeout`).
fn normalized(prober: &str, option: &str) -> (String, String) {
    let option = option.trim();
    if prober == "module" || MODULE_KEYS.contains(&option) || option.starts_with(&format!("{prober}.")) {
        (prober.to_string(), option.to_string())
    } else {
        (prober.to_string(), format!("{prober}.{option}"))
    }
}

fn code_list() -> BTreeSet<(String, String)> {
    SUPPORTED_OPTIONS.iter().map(|(p, o)| normalized(p, o)).collect()
}

/// Whether blackbox 0.23 has the option `path` (normalized) in `scope`.
fn blackbox_has(scope: &str, path: &str) -> bool {
    MODULE_KEYS.contains(&path)
        || path
            .strip_prefix(scope)
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|key| blackbox_keys(scope).iter().any(|k| k == key))
}

/// Whether a module of `prober` may set `path` (normalized): a module key listed for `module`
/// or for that prober; a block's option listed itself, or inside a listed option.
fn supported(prober: &str, path: &str) -> bool {
    let list = code_list();
    if MODULE_KEYS.contains(&path) {
        return list.iter().any(|(p, o)| o == path && (p == "module" || p == prober));
    }
    list.iter()
        .any(|(p, o)| p == prober && (path == o || path.starts_with(&format!("{o}."))))
}

/// `prober: path` lines, for messages.
fn lines<'a, P: AsRef<str> + 'a, O: AsRef<str> + 'a>(items: impl IntoIterator<Item = &'a (P, O)>) -> String {
    items
        .into_iter()
        .map(|(p, o)| format!("\n  {}: {}", p.as_ref(), o.as_ref()))
        .collect()
}

fn readme_table() -> BTreeSet<(String, String)> {
    let readme = std::fs::read_to_string(format!("{ROOT}/README.md")).unwrap();
    let mut section = Vec::new();
    let mut inside = false;
    for line in readme.lines() {
        if line.starts_with("## ") {
            inside = line.contains("`/probe`");
        }
        if inside {
            section.push(line);
        }
    }
    assert!(
        !section.is_empty(),
        "README.md has no `## ` section whose title names `/probe`"
    );
    let cells = |line: &str| -> Vec<String> {
        line.trim()
            .trim_start_matches('|')
            .trim_end_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let plain = |c: &str| c.replace('`', "").trim().to_ascii_lowercase();
    let mut lines = section.iter().peekable();
    while let Some(line) = lines.next() {
        if !line.trim_start().starts_with('|') {
            continue;
        }
        let header: Vec<String> = cells(line).iter().map(|c| plain(c)).collect();
        let (Some(prober), Some(option)) = (
            header.iter().position(|c| c == "prober"),
            header.iter().position(|c| c == "option"),
        ) else {
            while lines.peek().is_some_and(|l| l.trim_start().starts_with('|')) {
                lines.next();
            }
            continue;
        };
        lines.next(); // |---|---|
        let mut rows = BTreeSet::new();
        while let Some(row) = lines.next_if(|l| l.trim_start().starts_with('|')) {
            let row = cells(row);
            let named = plain(&row[prober]);
            let cell = &row[option];
            let quoted: Vec<&str> = cell.split('`').skip(1).step_by(2).collect();
            let paths = if quoted.is_empty() { vec![cell.trim()] } else { quoted };
            for path in paths {
                rows.insert(normalized(&named, path));
            }
        }
        return rows;
    }
    panic!("README.md's /probe section has no table with a `prober` and an `option` column");
}

#[test]
fn readme_lists_exactly_the_supported_options() {
    let code = code_list();
    assert_eq!(
        code.len(),
        SUPPORTED_OPTIONS.len(),
        "SUPPORTED_OPTIONS lists an option twice"
    );
    let readme = readme_table();
    let missing: Vec<_> = code.difference(&readme).collect();
    let extra: Vec<_> = readme.difference(&code).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "README.md's table of supported blackbox options and vigil::probe::blackbox::SUPPORTED_OPTIONS \
         differ\nonly in the code:{}\nonly in README.md:{}",
        lines(missing),
        lines(extra)
    );
}

#[test]
fn supported_options_are_blackbox_options() {
    let unknown: Vec<_> = code_list()
        .into_iter()
        .filter(|(scope, path)| !blackbox_has(scope, path))
        .collect();
    assert!(
        unknown.is_empty(),
        "SUPPORTED_OPTIONS names options blackbox_exporter 0.23 does not have:{}",
        lines(&unknown)
    );
}

#[test]
fn every_option_issue_11_asks_for_is_supported() {
    let wanted = [
        ("http", "prober"),
        ("http", "timeout"),
        ("http", "http.valid_status_codes"),
        ("http", "http.valid_http_versions"),
        ("http", "http.method"),
        ("http", "http.headers"),
        ("http", "http.body"),
        ("http", "http.basic_auth"),
        ("http", "http.bearer_token"),
        ("http", "http.bearer_token_file"),
        ("http", "http.follow_redirects"),
        ("http", "http.fail_if_ssl"),
        ("http", "http.fail_if_not_ssl"),
        ("http", "http.fail_if_body_matches_regexp"),
        ("http", "http.fail_if_body_not_matches_regexp"),
        ("http", "http.fail_if_header_matches"),
        ("http", "http.fail_if_header_not_matches"),
        ("http", "http.tls_config"),
        ("http", "http.preferred_ip_protocol"),
        ("http", "http.ip_protocol_fallback"),
        ("http", "http.body_size_limit"),
        ("http", "http.compression"),
        ("tcp", "prober"),
        ("tcp", "timeout"),
        ("tcp", "tcp.query_response"),
        ("tcp", "tcp.tls"),
        ("tcp", "tcp.tls_config"),
    ];
    // A block counts as supported when it is listed, or when any of its keys is.
    let covered = |prober: &str, path: &str| {
        supported(prober, path)
            || code_list()
                .iter()
                .any(|(p, o)| p == prober && o.starts_with(&format!("{path}.")))
    };
    let missing: Vec<_> = wanted.iter().filter(|(p, o)| !covered(p, o)).collect();
    assert!(
        missing.is_empty(),
        "SUPPORTED_OPTIONS lacks blackbox options issue 11 asks for:{}",
        lines(missing)
    );
}

/// Every leaf option path a module sets: `prober`, `timeout`, `http.method`,
/// `http.tls_config.ca_file`, `tcp.query_response.expect` (list items share their list's path).
fn leaf_paths(value: &Yaml, path: &str, out: &mut BTreeSet<String>) {
    match value {
        Yaml::Hash(map) if !path.ends_with(".headers") => {
            for (key, child) in map {
                let key = key.as_str().expect("string keys");
                let child_path = if path.is_empty() {
                    key.to_string()
                } else {
                    format!("{path}.{key}")
                };
                leaf_paths(child, &child_path, out);
            }
        }
        Yaml::Array(items) if items.iter().any(|i| matches!(i, Yaml::Hash(_))) => {
            for item in items {
                leaf_paths(item, path, out);
            }
        }
        _ => {
            out.insert(path.to_string());
        }
    }
}

#[test]
fn the_conformance_corpus_uses_only_supported_options() {
    let text = std::fs::read_to_string(format!("{ROOT}/tests/testdata/conformance/blackbox.yml")).unwrap();
    let docs = YamlLoader::load_from_str(&text).unwrap();
    let modules = docs[0]["modules"].as_hash().expect("modules");
    let mut unsupported = BTreeSet::new();
    for (name, module) in modules {
        let prober = module["prober"].as_str().expect("prober");
        let mut paths = BTreeSet::new();
        leaf_paths(module, "", &mut paths);
        for path in paths {
            assert!(
                blackbox_has(prober, &path),
                "the corpus module {name:?} sets {path}, no blackbox option"
            );
            if !supported(prober, &path) {
                unsupported.insert((prober.to_string(), path));
            }
        }
    }
    assert!(
        unsupported.is_empty(),
        "the conformance corpus (tests/testdata/conformance/blackbox.yml) uses options that \
         SUPPORTED_OPTIONS lacks, so vigil would refuse its config:{}",
        lines(&unsupported)
    );
}
