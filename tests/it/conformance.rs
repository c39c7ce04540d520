//! Conformance with blackbox_exporter (issue 11): Debian's prometheus-blackbox-exporter 0.23 and
//! `vigil run --blackbox.config-file` load the same blackbox config
//! (tests/testdata/conformance/blackbox.yml) and probe the same local targets
//! (tests/it/conformance/targets.rs). For every case of the corpus below, both answers are parsed
//! and must agree on `probe_success`, on the set of series and their label sets, on HELP and
//! TYPE, and on every value that is not a timing; vigil's own `vigil_*` series are left out.
//! What differs on purpose is listed once, in [`DELIBERATE`], with the reason, and the README's
//! `/probe` section must list exactly the same (a test below checks it).
//!
//! Three groups, each with its own pair of exporters: the main corpus on 127.0.0.1 and ::1; the
//! 64 MiB body and the gzip bomb, where vigil's peak RSS (VmHWM) must stay under 64 MiB; and
//! the DNS failures, run inside a private network namespace (`unshare --net`, loopback up) so no
//! query leaves the machine. Nothing is skipped: a missing tool fails with its Debian package.
//!
//! `cargo test --test it conformance:: -- --nocapture` prints the table of differences per case.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::stack;

mod exporters;
mod exposition;
mod targets;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use exporters::{Answer, Vigil};
use exposition::{Difference, Exposition};
use targets::Targets;

// ---------------------------------------------------------------------------------------------
// Deliberate differences: the one list (README.md's `/probe` section repeats it, checked below)
// ---------------------------------------------------------------------------------------------

/// A difference from blackbox_exporter that vigil keeps on purpose.
struct Deliberate {
    /// The corpus case it shows in.
    case: &'static str,
    /// The series it concerns (metric names, `# HELP name`, `# TYPE name`), or an aspect the
    /// test checks by itself (`debug=true output`, `HTTP status`); every one must differ.
    what: &'static [&'static str],
    reason: &'static str,
}

const DELIBERATE: &[Deliberate] = &[
    Deliberate {
        case: "http_userinfo",
        what: &["debug=true output"],
        reason: "blackbox writes the target, password included, into every log line of its debug \
                 output; vigil never shows URL userinfo anywhere, it only sends it as the \
                 Authorization header. The log section is vigil's own; the section title 'Metrics \
                 that would have been returned:' is kept.",
    },
    Deliberate {
        case: "http_basic_auth_every_hop",
        what: &[
            "probe_success",
            "probe_http_status_code",
            "probe_http_content_length",
            "probe_http_uncompressed_body_length",
        ],
        reason: "credentials stay with the origin of the target, as curl does (README, kind: http, \
                 follow_redirects): after a redirect to another host vigil sends no basic_auth, so \
                 that host answers 401 here; blackbox sends the module's basic_auth to every hop, to \
                 whatever host a redirect names.",
    },
];

// ---------------------------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------------------------

/// What blackbox answers in a case (from /work/notes/blackbox.md and checked on every run):
/// this checks the corpus, not vigil, so that a target that broke cannot make both agree.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// 200 with `probe_success 1`.
    Up,
    /// 200 with `probe_success 0`.
    Down,
    /// An error answer of the handler with this status.
    Status(u16),
}

#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    /// The `module` parameter; empty: none (blackbox's default, `http_2xx`).
    module: &'static str,
    /// The `target` parameter, a template of [`Targets::expand`]; empty: none.
    target: &'static str,
    /// `X-Prometheus-Scrape-Timeout-Seconds`.
    scrape_timeout: Option<&'static str>,
    blackbox: Expect,
    /// The timeout the probe must end on (s): `probe_duration_seconds` of both exporters must
    /// be at least this and less than 0.45 s more (less than the 0.5 s offset of the scrape
    /// timeout, so that a missing offset shows).
    took: Option<f64>,
}

const fn case(name: &'static str, module: &'static str, target: &'static str, blackbox: Expect) -> Case {
    Case {
        name,
        module,
        target,
        scrape_timeout: None,
        blackbox,
        took: None,
    }
}

impl Case {
    const fn took(self, seconds: f64) -> Case {
        Case {
            took: Some(seconds),
            ..self
        }
    }

    const fn scrape_timeout(self, header: &'static str) -> Case {
        Case {
            scrape_timeout: Some(header),
            ..self
        }
    }
}

use Expect::{Down, Status, Up};

/// The main corpus: http and tcp on 127.0.0.1 and ::1.
#[rustfmt::skip]
const MAIN: &[Case] = &[
    // The basics, and what the target parameter may look like.
    case("http_ok", "http_2xx", "http://127.0.0.1:{http}/", Up),
    case("http_default_module", "", "http://127.0.0.1:{http}/", Up),
    case("http_no_scheme", "http_2xx", "127.0.0.1:{http}", Up),
    case("http_url_parse_error", "http_2xx", "http://127.0.0.1:{http}/%zz", Down),
    case("http_refused", "http_2xx", "http://127.0.0.1:{closed}/", Down),
    // Address families: blackbox prefers ip6 and falls back.
    case("http_ipv6", "http_2xx", "http://[::1]:{http}/", Up),
    case("http_localhost", "http_2xx", "http://localhost:{http}/", Up),
    case("http_ip4_falls_back_to_ipv6", "http_ip4", "http://[::1]:{http}/", Up),
    case("http_ip4_no_fallback_on_ipv6", "http_ip4_nofallback", "http://[::1]:{http}/", Down),
    case("http_ip6_no_fallback_on_ipv4", "http_ip6_nofallback", "http://127.0.0.1:{http}/", Down),
    // How bodies end, and other well-formed replies.
    case("http_chunked", "http_2xx", "http://127.0.0.1:{http}/chunked", Up),
    case("http_close_delimited", "http_2xx", "http://127.0.0.1:{http}/close", Up),
    case("http_1_0_reply", "http_2xx", "http://127.0.0.1:{http}/http10", Up),
    case("http_204", "http_2xx", "http://127.0.0.1:{http}/204", Up),
    case("http_head", "http_head", "http://127.0.0.1:{http}/", Up),
    case("http_post_with_body", "http_post", "http://127.0.0.1:{http}/post", Up),
    case("http_module_headers_and_host", "http_headers", "http://127.0.0.1:{http}/vhost", Up),
    case("http_last_modified", "http_2xx", "http://127.0.0.1:{http}/lastmod", Up),
    case("http_last_modified_unparseable", "http_2xx", "http://127.0.0.1:{http}/badlastmod", Up),
    // Status codes, and replies that are not HTTP.
    case("http_404", "http_2xx", "http://127.0.0.1:{http}/404", Down),
    case("http_404_valid", "http_404", "http://127.0.0.1:{http}/404", Up),
    case("http_304", "http_2xx", "http://127.0.0.1:{http}/304", Down),
    case("http_200_not_valid", "http_404", "http://127.0.0.1:{http}/", Down),
    case("http_status_999", "http_2xx", "http://127.0.0.1:{http}/status999", Down),
    case("http_bad_status_line", "http_2xx", "http://127.0.0.1:{http}/badstatus", Down),
    case("http_0_9_reply", "http_2xx", "http://127.0.0.1:{http}/http09", Down),
    case("http_bad_content_length", "http_2xx", "http://127.0.0.1:{http}/badlength", Down),
    case("http_non_http_port", "http_2xx", "http://127.0.0.1:{garbage}/", Down),
    // Hanging, trickling, reset and short bodies.
    case("http_hang", "http_timeout1", "http://127.0.0.1:{hang}/", Down).took(1.0),
    case("http_trickle_timeout", "http_timeout2", "http://127.0.0.1:{http}/trickle", Down)
    .took(2.0),
    case("http_trickle_complete", "http_2xx", "http://127.0.0.1:{http}/trickle-complete", Up),
    case("http_reset_mid_body", "http_2xx", "http://127.0.0.1:{http}/reset", Down),
    case("http_short_body", "http_2xx", "http://127.0.0.1:{http}/short", Down),
    // Redirects and loops.
    case("http_redirect", "http_2xx", "http://127.0.0.1:{http}/redirect", Up),
    case("http_redirect_chain", "http_2xx", "http://127.0.0.1:{http}/redirect/3", Up),
    case("http_redirect_loop", "http_2xx", "http://127.0.0.1:{http}/loop", Down),
    case("http_redirect_not_followed", "http_nofollow", "http://127.0.0.1:{http}/redirect", Down),
    case("http_redirect_not_followed_deprecated_key", "http_no_follow_deprecated", "http://127.0.0.1:{http}/redirect", Down),
    case("http_redirect_not_followed_302_valid", "http_nofollow_302ok", "http://127.0.0.1:{http}/redirect", Up),
    case("http_redirect_not_followed_body_regex", "http_redirect_body_regex", "http://127.0.0.1:{http}/redirect", Down),
    case("http_redirect_to_refused", "http_2xx", "http://127.0.0.1:{http}/to-closed", Down),
    case("http_redirect_to_untrusted_https", "http_2xx", "http://127.0.0.1:{http}/to-https", Down),
    case("http_redirect_to_https_ca", "http_ca", "http://127.0.0.1:{http}/to-https", Up),
    case("http_redirect_to_localhost", "http_2xx", "http://127.0.0.1:{http}/to-localhost", Up),
    case("http_redirect_307_keeps_post", "http_post", "http://127.0.0.1:{http}/to-post-307", Up),
    case("http_redirect_303_becomes_get", "http_post", "http://127.0.0.1:{http}/to-post-303", Down),
    // Credentials: in the URL, in the module.
    case("http_userinfo", "http_2xx", "http://{user}:{password}@127.0.0.1:{http}/auth", Up),
    case("http_without_userinfo", "http_2xx", "http://127.0.0.1:{http}/auth", Down),
    case("http_userinfo_percent_encoded", "http_2xx", "http://us%40er:p%3Ass@127.0.0.1:{http}/auth-encoded", Up),
    case("http_userinfo_before_basic_auth", "http_basic", "http://wrong:creds@127.0.0.1:{http}/auth", Down),
    case("http_userinfo_relative_redirect", "http_2xx", "http://{user}:{password}@127.0.0.1:{http}/to-auth", Up),
    case("http_userinfo_other_host_redirect", "http_2xx", "http://{user}:{password}@127.0.0.1:{http}/to-auth-localhost", Down),
    case("http_basic_auth", "http_basic", "http://127.0.0.1:{http}/auth", Up),
    case("http_basic_auth_wrong", "http_basic_wrong", "http://127.0.0.1:{http}/auth", Down),
    case("http_basic_auth_every_hop", "http_basic", "http://127.0.0.1:{http}/to-auth-localhost", Up),
    case("http_bearer_token", "http_bearer", "http://127.0.0.1:{http}/bearer", Up),
    case("http_bearer_token_file", "http_bearer_file", "http://127.0.0.1:{http}/bearer", Up),
    // Body and header regexps.
    case("http_body_must_match", "http_body_match_ok", "http://127.0.0.1:{http}/", Up),
    case("http_body_must_not_match", "http_body_fail", "http://127.0.0.1:{http}/", Down),
    case("http_body_regex_not_run_on_404", "http_body_match_ok", "http://127.0.0.1:{http}/404", Down),
    case("http_header_must_not_match", "http_header_fail", "http://127.0.0.1:{http}/header", Down),
    case("http_header_must_match", "http_header_notmatch", "http://127.0.0.1:{http}/header", Down),
    case("http_header_missing", "http_header_missing", "http://127.0.0.1:{http}/", Down),
    case("http_header_allowed_missing", "http_header_allow_missing", "http://127.0.0.1:{http}/", Up),
    // HTTP versions.
    case("http_version_2_wanted", "http_v2only", "http://127.0.0.1:{http}/", Down),
    case("http_version_1_1_wanted_on_1_0", "http_v11only", "http://127.0.0.1:{http}/http10", Down),
    case("http_version_1_1_wanted", "http_v11only", "http://127.0.0.1:{http}/", Up),
    // body_size_limit and compression (small bodies; the big ones are in MEMORY).
    case("http_limit_exceeded", "http_limit_small", "http://127.0.0.1:{http}/", Down),
    case("http_limit_exceeded_with_regex", "http_limit_regex", "http://127.0.0.1:{http}/", Down),
    case("http_limit_not_reached", "http_limit", "http://127.0.0.1:{http}/", Up),
    case("http_gzip_not_decoded", "http_2xx", "http://127.0.0.1:{http}/gzip", Up),
    case("http_gzip_decoded", "http_gzip", "http://127.0.0.1:{http}/gzip", Up),
    case("http_gzip_on_plain_body", "http_gzip", "http://127.0.0.1:{http}/", Down),
    case("http_gzip_not_gzip", "http_gzip", "http://127.0.0.1:{http}/notgzip", Down),
    case("http_deflate_raw", "http_deflate", "http://127.0.0.1:{http}/rawdeflate", Up),
    case("http_deflate_zlib_wrapped", "http_deflate", "http://127.0.0.1:{http}/zlibdeflate", Down),
    case("http_limit_after_decoding_fraction", "http_limit_fraction_gzip", "http://127.0.0.1:{http}/gzip", Down),
    case("http_identity_not_decoded", "http_identity", "http://127.0.0.1:{http}/gzip", Up),
    case("http_gzip_with_accept_encoding", "http_gzip_accept_encoding", "http://127.0.0.1:{http}/gzip", Up),
    // TLS: valid, self-signed, expired; verification options; ssl assertions.
    case("https_untrusted_by_default", "http_2xx", "https://127.0.0.1:{tls}/", Down),
    case("https_ca", "http_ca", "https://127.0.0.1:{tls}/", Up),
    case("https_ca_ipv6", "http_ca", "https://[::1]:{tls}/", Up),
    case("https_ca_localhost", "http_ca", "https://localhost:{tls}/", Up),
    case("https_server_name", "http_ca_servername", "https://127.0.0.1:{tls}/", Up),
    case("https_tls_1_2", "http_ca", "https://127.0.0.1:{tls12}/", Up),
    case("https_min_tls_1_3_on_1_2", "http_ca_tls13", "https://127.0.0.1:{tls12}/", Down),
    case("https_max_tls_1_2", "http_ca_max_tls12", "https://127.0.0.1:{tls}/", Up),
    case("https_self_signed_with_ca", "http_ca", "https://127.0.0.1:{self_signed}/", Down),
    case("https_self_signed_insecure", "http_insecure", "https://127.0.0.1:{self_signed}/", Up),
    case("https_expired_with_ca", "http_ca", "https://127.0.0.1:{expired}/", Down),
    case("https_expired_insecure", "http_insecure", "https://127.0.0.1:{expired}/", Up),
    case("https_fail_if_ssl", "http_fail_if_ssl", "https://127.0.0.1:{tls}/", Down),
    case("http_fail_if_ssl_on_plain", "http_fail_if_ssl", "http://127.0.0.1:{http}/", Up),
    case("https_fail_if_ssl_after_redirect", "http_fail_if_ssl", "http://127.0.0.1:{http}/to-https", Down),
    case("http_fail_if_not_ssl", "http_fail_if_not_ssl", "http://127.0.0.1:{http}/", Down),
    case("https_fail_if_not_ssl", "http_fail_if_not_ssl", "https://127.0.0.1:{tls}/", Up),
    case("http_to_tls_port", "http_2xx", "http://127.0.0.1:{tls}/", Down),
    case("https_to_plain_port", "http_ca", "https://127.0.0.1:{http}/", Down),
    // tcp: connect, query_response, TLS, STARTTLS.
    // HTTP/2 against nginx: by ALPN over TLS, turned off, required; blackbox has no h2c.
    case("http_h2_alpn", "http_ca", "https://127.0.0.1:{h2}/", Up),
    case("http_h2_redirect", "http_ca", "https://127.0.0.1:{h2}/redir", Up),
    case("http_h2_required", "http_v2only_ca", "https://127.0.0.1:{h2}/", Up),
    case("http_h2_disabled", "http_v2_disabled_ca", "https://127.0.0.1:{h2}/", Up),
    case("http_h2_required_on_http1", "http_v2only_ca", "https://127.0.0.1:{tls}/", Down),
    case("http_plain_to_h2c_port", "http_2xx", "http://127.0.0.1:{h2c}/", Down),
    // grpc against tonic-health's health service (tests/it/common/grpc.rs).
    case("grpc_serving", "grpc_ip4", "127.0.0.1:{grpc}", Up),
    case("grpc_without_block_ipv6_only", "grpc", "127.0.0.1:{grpc}", Down),
    case("grpc_serving_ip4_scheme", "grpc_ip4", "http://127.0.0.1:{grpc}", Up),
    case("grpc_service_serving", "grpc_db", "127.0.0.1:{grpc}", Up),
    case("grpc_not_serving", "grpc_cache", "127.0.0.1:{grpc}", Down),
    case("grpc_unknown", "grpc_queue", "127.0.0.1:{grpc}", Down),
    case("grpc_service_unknown", "grpc_ghost", "127.0.0.1:{grpc}", Down),
    case("grpc_not_found", "grpc_missing", "127.0.0.1:{grpc}", Down),
    case("grpc_tls", "grpc_tls", "127.0.0.1:{grpc_tls}", Up),
    case("grpc_tls_localhost", "grpc_tls", "localhost:{grpc_tls}", Up),
    case("grpc_tls_untrusted", "grpc_tls_untrusted", "127.0.0.1:{grpc_tls}", Down),
    case("grpc_refused", "grpc_ip4", "127.0.0.1:{closed}", Down),
    case("grpc_http1_port", "grpc_ip4", "127.0.0.1:{http}", Down),
    case("grpc_plaintext_to_tls", "grpc_ip4", "127.0.0.1:{grpc_tls}", Down),
    // icmp against the kernel's own echo replies on loopback (both exporters run as root here:
    // raw sockets for blackbox_exporter, whichever vigil may open).
    case("icmp_ipv4", "icmp", "127.0.0.1", Up),
    case("icmp_ipv6", "icmp", "::1", Up),
    case("icmp_ipv6_in_brackets", "icmp", "[::1]", Down),
    case("icmp_localhost_ip4", "icmp_ip4", "localhost", Up),
    case("icmp_ip4_only_to_ipv6", "icmp_ip4", "::1", Down),
    case("icmp_payload_dont_fragment_ttl", "icmp_big_df", "127.0.0.1", Up),
    // dns against dnsmasq (tests/it/conformance/targets.rs).
    case("dns_a", "dns_a", "127.0.0.1:{dns}", Up),
    case("dns_default_type_any", "dns_any", "127.0.0.1:{dns}", Up),
    case("dns_aaaa_tcp", "dns_aaaa_tcp", "127.0.0.1:{dns}", Up),
    case("dns_mx", "dns_mx", "127.0.0.1:{dns}", Up),
    case("dns_txt", "dns_txt", "127.0.0.1:{dns}", Up),
    case("dns_nxdomain", "dns_nxdomain", "127.0.0.1:{dns}", Down),
    case("dns_nxdomain_valid", "dns_nxdomain_valid", "127.0.0.1:{dns}", Up),
    case("dns_refused", "dns_refused", "127.0.0.1:{dns}", Down),
    case("dns_answer_matches", "dns_answer_matches", "127.0.0.1:{dns}", Down),
    case("dns_answer_not_matches", "dns_answer_not_matches", "127.0.0.1:{dns}", Up),
    case("dns_answer_none_match_empty", "dns_answer_none_match", "127.0.0.1:{dns}", Down),
    case("dns_answer_all_match_inverted", "dns_answer_all_match", "127.0.0.1:{dns}", Down),
    case("dns_authority_not_matches", "dns_authority_not_matches", "127.0.0.1:{dns}", Down),
    case("dns_without_block", "dns_without_block", "127.0.0.1:{dns}", Down),
    case("dns_truncated_udp", "dns_big_udp", "127.0.0.1:{dns}", Up),
    case("dns_big_tcp", "dns_big_tcp", "127.0.0.1:{dns}", Up),
    case("dns_closed_udp", "dns_a", "127.0.0.1:{closed}", Down),
    case("dns_closed_tcp", "dns_aaaa_tcp", "127.0.0.1:{closed}", Down),
    case("tcp_connect", "tcp_connect", "127.0.0.1:{http}", Up),
    case("tcp_connect_ipv6", "tcp_connect", "[::1]:{http}", Up),
    case("tcp_connect_localhost", "tcp_connect", "localhost:{http}", Up),
    case("tcp_refused", "tcp_connect", "127.0.0.1:{closed}", Down),
    case("tcp_without_port", "tcp_connect", "127.0.0.1", Down),
    case("tcp_banner", "tcp_banner", "127.0.0.1:{garbage}", Up),
    case("tcp_banner_mismatch_then_eof", "tcp_banner_fail", "127.0.0.1:{garbage}", Down),
    case("tcp_banner_timeout", "tcp_banner_timeout", "127.0.0.1:{silent}", Down).took(1.0),
    case("tcp_send_only", "tcp_send_only", "127.0.0.1:{hang}", Up),
    case("tcp_query_response_http", "tcp_http_dialogue", "127.0.0.1:{http}", Up),
    case("tcp_query_response_expand", "tcp_expand", "127.0.0.1:{smtp}", Up),
    case("tcp_starttls", "tcp_smtp_starttls", "127.0.0.1:{smtp}", Up),
    case("tcp_starttls_untrusted", "tcp_smtp_starttls_noca", "127.0.0.1:{smtp}", Down),
    case("tcp_tls_ca", "tcp_tls", "127.0.0.1:{tls}", Up),
    case("tcp_tls_ca_ipv6", "tcp_tls", "[::1]:{tls}", Up),
    case("tcp_tls_untrusted_by_default", "tcp_tls_default", "127.0.0.1:{tls}", Down),
    case("tcp_tls_self_signed_insecure", "tcp_tls_insecure", "127.0.0.1:{self_signed}", Up),
    case("tcp_tls_expired", "tcp_tls", "127.0.0.1:{expired}", Down),
    case("tcp_tls_to_plain_port", "tcp_tls", "127.0.0.1:{http}", Down),
    // The handler: errors, and the scrape timeout header minus the 0.5 s offset.
    case("unknown_module", "nope", "http://127.0.0.1:{http}/", Status(400)),
    case("missing_target", "http_2xx", "", Status(400)),
    case("scrape_timeout_header", "http_notimeout", "http://127.0.0.1:{hang}/", Down)
    .scrape_timeout("2")
    .took(1.5),
    case("scrape_timeout_above_module", "http_timeout1", "http://127.0.0.1:{hang}/", Down)
    .scrape_timeout("10")
    .took(1.0),
    case("scrape_timeout_below_offset", "http_timeout1", "http://127.0.0.1:{hang}/", Down).scrape_timeout("0.3").took(1.0),
    case("scrape_timeout_none_left", "http_notimeout", "http://127.0.0.1:{hang}/", Down).scrape_timeout("0.3").took(0.0),
    case("scrape_timeout_header_invalid", "http_2xx", "http://127.0.0.1:{http}/", Status(500))
    .scrape_timeout("abc"),
];

/// The 64 MiB body and the gzip bomb (about 420 KB that decode to 64 MiB of zeros), on a pair
/// of exporters of their own, one case at a time, so that vigil's VmHWM covers these alone.
#[rustfmt::skip]
const MEMORY: &[Case] = &[
    case("big_body", "http_2xx", "http://127.0.0.1:{http}/big", Up),
    case("big_body_over_limit", "http_limit", "http://127.0.0.1:{http}/big", Down),
    case("big_body_negative_limit", "http_limit_negative", "http://127.0.0.1:{http}/big", Up),
    case("big_body_with_regex", "http_big_regex", "http://127.0.0.1:{http}/big", Up),
    case("gzip_bomb_not_decoded", "http_2xx", "http://127.0.0.1:{http}/bomb", Up),
    case("gzip_bomb_decoded", "http_gzip", "http://127.0.0.1:{http}/bomb", Up),
    case("gzip_bomb_over_limit", "http_gzip_limit", "http://127.0.0.1:{http}/bomb", Down),
    case("gzip_bomb_with_regex", "http_gzip_regex", "http://127.0.0.1:{http}/bomb", Down),
];

/// The peak RSS vigil may reach over [`MEMORY`] (issue 11).
const PEAK_RSS_LIMIT: u64 = 64 * 1024 * 1024;

/// DNS failures, inside a network namespace with only loopback: no resolver is reachable.
#[rustfmt::skip]
const NAMESPACE: &[Case] = &[
    case("http_nxdomain", "http_2xx", "http://nxdomain.invalid/", Down),
    case("http_nxdomain_ip4_no_fallback", "http_ip4_nofallback", "http://nxdomain.invalid:8080/", Down),
    case("https_nxdomain", "http_ca", "https://nxdomain.invalid/", Down),
    case("tcp_nxdomain", "tcp_connect", "nxdomain.invalid:80", Down),
];

// ---------------------------------------------------------------------------------------------
// Running a group
// ---------------------------------------------------------------------------------------------

/// Both exporters on the corpus config, and the targets they probe.
struct Bench {
    targets: Targets,
    blackbox: stack::Server,
    other: Other,
    /// The config, the token file, the logs; removed last.
    _dir: tempfile::TempDir,
    /// This test's turn (see [`common::exclusive`]), given back last.
    _turn: common::Exclusive,
}

/// What blackbox is compared with.
enum Other {
    Vigil(Vigil),
    /// A second blackbox: the corpus against itself, which shows any value that differs from
    /// one run to the next.
    Blackbox(stack::Server),
}

fn bench(other: fn(&Path, &Path) -> Other) -> Bench {
    // One test that runs exporters at a time: the timeout cases measure durations to a tenth of
    // a second, which two 64 MiB transfers in parallel would blur.
    let turn = common::exclusive();
    let targets = Targets::start();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{}\n", targets::BEARER_TOKEN)).unwrap();
    let template = std::fs::read_to_string(stack::repo("tests/testdata/conformance/blackbox.yml")).unwrap();
    let config = template
        .replace("@CA_FILE@", stack::path_str(&targets.certs.ca_file()))
        .replace("@TOKEN_FILE@", stack::path_str(&token));
    let config_file = dir.path().join("blackbox.yml");
    std::fs::write(&config_file, config).unwrap();
    let blackbox = exporters::blackbox(&config_file, dir.path());
    let other = other(&config_file, dir.path());
    Bench {
        targets,
        blackbox,
        other,
        _dir: dir,
        _turn: turn,
    }
}

fn vigil(config: &Path, dir: &Path) -> Other {
    Other::Vigil(Vigil::start(config, dir))
}

fn second_blackbox(config: &Path, dir: &Path) -> Other {
    let dir = dir.join("second");
    std::fs::create_dir_all(&dir).unwrap();
    Other::Blackbox(exporters::blackbox(config, &dir))
}

impl Bench {
    fn other_port(&self) -> u16 {
        match &self.other {
            Other::Vigil(v) => v.port,
            Other::Blackbox(b) => b.port,
        }
    }

    fn vigil(&self) -> &Vigil {
        match &self.other {
            Other::Vigil(v) => v,
            Other::Blackbox(_) => panic!("this bench compares blackbox with itself"),
        }
    }

    fn query(&self, case: &Case, debug: bool) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if !case.module.is_empty() {
            query.append_pair("module", case.module);
        }
        if !case.target.is_empty() {
            query.append_pair("target", &self.targets.expand(case.target));
        }
        if debug {
            query.append_pair("debug", "true");
        }
        query.finish()
    }
}

/// One exporter's answer to one case, and how long it took to come.
type Got = Result<(Answer, Duration), String>;

/// Runs every case against both exporters: all at once (`parallel`), or one case at a time
/// (both exporters still probing it together).
fn run(bench: &Bench, cases: &[Case], parallel: bool) -> Vec<(Got, Got)> {
    let ask = |port: u16, case: &Case| -> Got {
        let started = Instant::now();
        exporters::probe(port, &bench.query(case, false), case.scrape_timeout).map(|a| (a, started.elapsed()))
    };
    let ports = [bench.blackbox.port, bench.other_port()];
    let results: Vec<Mutex<[Option<Got>; 2]>> = cases.iter().map(|_| Mutex::new([None, None])).collect();
    if parallel {
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    loop {
                        let job = next.fetch_add(1, Ordering::SeqCst);
                        if job >= cases.len() * 2 {
                            break;
                        }
                        let (i, side) = (job / 2, job % 2);
                        let got = ask(ports[side], &cases[i]);
                        results[i].lock().unwrap()[side] = Some(got);
                    }
                });
            }
        });
    } else {
        for (i, case) in cases.iter().enumerate() {
            std::thread::scope(|s| {
                for (side, port) in ports.into_iter().enumerate() {
                    let results = &results;
                    s.spawn(move || {
                        let got = ask(port, case);
                        results[i].lock().unwrap()[side] = Some(got);
                    });
                }
            });
        }
    }
    results
        .into_iter()
        .map(|m| {
            let [b, v] = m.into_inner().unwrap();
            (b.unwrap(), v.unwrap())
        })
        .collect()
}

/// What a group found.
#[derive(Default)]
struct Report {
    group: &'static str,
    cases: usize,
    /// Differences not listed as deliberate: vigil's checklist.
    differences: Vec<Difference>,
    /// Differences listed in [`DELIBERATE`].
    accepted: Vec<(Difference, &'static str)>,
    /// Problems of the corpus or the harness itself (blackbox did not answer as the corpus says).
    corpus: Vec<String>,
    /// Extra lines for the summary (peak RSS).
    notes: Vec<String>,
}

impl Report {
    fn new(group: &'static str, cases: usize) -> Report {
        Report {
            group,
            cases,
            ..Report::default()
        }
    }

    /// Files `d` as accepted when [`DELIBERATE`] lists it, as a difference otherwise.
    fn file(&mut self, d: Difference) {
        match DELIBERATE
            .iter()
            .find(|x| x.case == d.case && x.what.contains(&d.what.as_str()))
        {
            Some(x) => self.accepted.push((d, x.reason)),
            None => self.differences.push(d),
        }
    }

    fn differ(&mut self, case: &str, what: &str, blackbox: impl Into<String>, vigil: impl Into<String>) {
        self.file(Difference {
            case: case.to_string(),
            series: what.to_string(),
            what: what.to_string(),
            blackbox: blackbox.into(),
            vigil: vigil.into(),
        });
    }

    fn render(&self) -> String {
        // One block of rows per case, the case named on its first row.
        let rows = |ds: &mut dyn Iterator<Item = &Difference>| -> Vec<[String; 4]> {
            let mut last = String::new();
            ds.map(|d| {
                let case = if d.case == last { String::new() } else { d.case.clone() };
                last = d.case.clone();
                [case, d.series.clone(), d.blackbox.clone(), d.vigil.clone()]
            })
            .collect()
        };
        let header = ["case", "series", "blackbox 0.23", "vigil"];
        let differing: BTreeSet<&str> = self.differences.iter().map(|d| d.case.as_str()).collect();
        let success: BTreeSet<&str> = self
            .differences
            .iter()
            .filter(|d| d.what == "probe_success")
            .map(|d| d.case.as_str())
            .collect();
        let mut out = format!(
            "conformance ({}): {} differences in {} of {} cases ({} with a different probe_success), \
             {} deliberate\n",
            self.group,
            self.differences.len(),
            differing.len(),
            self.cases,
            success.len(),
            self.accepted.len()
        );
        for note in &self.notes {
            out.push_str(&format!("{note}\n"));
        }
        if !self.corpus.is_empty() {
            out.push_str("\nthe corpus, the harness or DELIBERATE is wrong (blackbox did not answer as the corpus says, or a listed difference is gone):\n");
            for line in &self.corpus {
                out.push_str(&format!("  {line}\n"));
            }
        }
        if !self.differences.is_empty() {
            out.push('\n');
            out.push_str(&exposition::table(header, &rows(&mut self.differences.iter())));
        }
        if !self.accepted.is_empty() {
            out.push_str("\ndeliberate (README.md, /probe):\n");
            out.push_str(&exposition::table(
                header,
                &rows(&mut self.accepted.iter().map(|(d, _)| d)),
            ));
        }
        out
    }

    /// Prints the report, and fails unless nothing but deliberate differences was found.
    fn check(self) {
        let text = self.render();
        eprintln!("{text}");
        assert!(
            self.differences.is_empty() && self.corpus.is_empty(),
            "blackbox_exporter and vigil differ:\n{text}"
        );
    }
}

fn parse(side: &str, answer: &Answer) -> Result<Exposition, String> {
    exposition::parse(&answer.body)
        .map(Exposition::without_vigil_extras)
        .map_err(|e| format!("{side}'s answer does not parse: {e}\n{}", answer.body))
}

/// Compares one case's answers into `report`.
fn judge(report: &mut Report, case: &Case, blackbox: Got, vigil: Got) {
    let name = case.name;
    let (b, b_took) = match blackbox {
        Ok(b) => b,
        Err(e) => {
            report.corpus.push(format!("{name}: blackbox did not answer: {e}"));
            return;
        }
    };
    let (v, _) = match vigil {
        Ok(v) => v,
        Err(e) => {
            report.differ(name, "HTTP status", b.status.to_string(), format!("no answer: {e}"));
            return;
        }
    };
    if b.status != v.status {
        report.differ(
            name,
            "HTTP status",
            b.status.to_string(),
            format!("{} {}", v.status, v.body.trim()),
        );
    }
    let expected_status = match case.blackbox {
        Status(s) => s,
        Up | Down => 200,
    };
    if b.status != expected_status {
        report.corpus.push(format!(
            "{name}: blackbox answered {} ({}), not {expected_status}",
            b.status,
            b.body.trim()
        ));
        return;
    }
    if b.status != 200 || v.status != 200 {
        return;
    }
    if b.content_type != v.content_type {
        report.differ(name, "Content-Type", b.content_type.clone(), v.content_type.clone());
    }
    let bb = match parse("blackbox", &b) {
        Ok(p) => p,
        Err(e) => {
            report.corpus.push(format!("{name}: {e}"));
            return;
        }
    };
    let want = if case.blackbox == Up { 1.0 } else { 0.0 };
    if bb.value("probe_success") != Some(want) {
        report.corpus.push(format!(
            "{name}: blackbox gave probe_success {:?}, the corpus expects {want} (took {b_took:?})",
            bb.value("probe_success")
        ));
    }
    let vv = match parse("vigil", &v) {
        Ok(p) => p,
        Err(e) => {
            report.differ(name, "parse", "text format 0.0.4", e);
            return;
        }
    };
    if let Some(timeout) = case.took {
        let within = |d: Option<f64>| d.is_some_and(|d| d >= timeout - 0.05 && d < timeout + 0.45);
        let bd = bb.value("probe_duration_seconds");
        if !within(bd) {
            report.corpus.push(format!(
                "{name}: blackbox's probe_duration_seconds {bd:?} is not about {timeout} s"
            ));
        }
        let vd = vv.value("probe_duration_seconds");
        if !within(vd) {
            report.differ(
                name,
                "probe_duration_seconds (the timeout)",
                format!("{timeout} s"),
                vd.map_or(exposition::ABSENT.to_string(), |d| format!("{d:.3} s")),
            );
        }
    }
    for d in exposition::compare(name, &bb, &vv) {
        report.file(d);
    }
}

fn run_group(group: &'static str, cases: &[Case], bench: &Bench, parallel: bool) -> Report {
    let mut report = Report::new(group, cases.len());
    for (case, (b, v)) in cases.iter().zip(run(bench, cases, parallel)) {
        dump(group, case, &b, &v);
        judge(&mut report, case, b, v);
    }
    report
}

/// With `CONFORMANCE_DUMP=<folder>`, both answers of every case go to
/// `<folder>/<group>/<case>.{blackbox,other}.txt`, for reading them side by side.
fn dump(group: &str, case: &Case, blackbox: &Got, other: &Got) {
    let Some(folder) = std::env::var_os("CONFORMANCE_DUMP") else {
        return;
    };
    let folder = Path::new(&folder).join(group.replace([' ', ','], "_"));
    std::fs::create_dir_all(&folder).unwrap();
    for (side, got) in [("blackbox", blackbox), ("other", other)] {
        let text = match got {
            Ok((a, took)) => format!("# HTTP {} {} ({took:?})\n{}", a.status, a.content_type, a.body),
            Err(e) => format!("# no answer: {e}\n"),
        };
        std::fs::write(folder.join(format!("{}.{side}.txt", case.name)), text).unwrap();
    }
}

/// The deliberate differences of `cases` that nothing showed: the list would be stale.
fn stale(report: &mut Report, cases: &[Case]) {
    for x in DELIBERATE.iter().filter(|x| cases.iter().any(|c| c.name == x.case)) {
        for what in x.what {
            let seen = report.accepted.iter().any(|(d, _)| d.case == x.case && d.what == *what);
            if !seen {
                report.corpus.push(format!(
                    "DELIBERATE lists ({}, {what}) but this run shows no such difference: remove it here \
                     and in README.md",
                    x.case
                ));
            }
        }
    }
}

/// The URL password never reaches vigil's answers or logs; blackbox's debug output shows it
/// (the deliberate difference), vigil's does not and keeps the metrics section.
fn userinfo_checks(report: &mut Report, bench: &Bench, answers: &[(&Case, String)]) {
    use base64::Engine as _;
    let secret = targets::AUTH_PASSWORD;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{}:{secret}", targets::AUTH_USER));
    let shows = |text: &str| text.contains(secret) || text.contains(&encoded);
    let case = MAIN.iter().find(|c| c.name == "http_userinfo").unwrap();
    let query = bench.query(case, true);
    let b = exporters::probe(bench.blackbox.port, &query, None);
    let v = exporters::probe(bench.vigil().port, &query, None);
    match (&b, &v) {
        (Ok(b), _) if !b.body.contains(secret) => report.corpus.push(format!(
            "http_userinfo: blackbox's debug output no longer shows the password; DELIBERATE is stale:\n{}",
            b.body
        )),
        (Err(e), _) => report
            .corpus
            .push(format!("http_userinfo: blackbox's debug answer: {e}")),
        (Ok(_), Err(e)) => report.differ(case.name, "debug=true output", "an answer", format!("no answer: {e}")),
        (Ok(_), Ok(v)) if v.status != 200 => report.differ(
            case.name,
            "debug=true output",
            "200",
            format!("{} {}", v.status, v.body.trim()),
        ),
        (Ok(_), Ok(v)) if shows(&v.body) => report.differ(
            case.name,
            "debug=true output",
            "shows the password",
            "shows the password too (it must not)",
        ),
        (Ok(_), Ok(v)) if !v.body.contains("Metrics that would have been returned:") => report.differ(
            case.name,
            "debug=true output",
            "has 'Metrics that would have been returned:'",
            "lacks that section title",
        ),
        (Ok(_), Ok(_)) => report.differ(
            case.name,
            "debug=true output",
            "shows the password in its logs",
            "never shows it",
        ),
    }
    for (case, body) in answers {
        if shows(body) {
            report.differ(
                case.name,
                "the URL password",
                "(not in /probe)",
                "in vigil's /probe answer",
            );
        }
    }
    // The logs arrive through a pipe: a moment for the last lines.
    std::thread::sleep(Duration::from_millis(200));
    if shows(&bench.vigil().logs()) {
        report.differ("http_userinfo", "the URL password", "(not compared)", "in vigil's log");
    }
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

#[test]
fn probe_answers_like_blackbox_exporter() {
    let started = Instant::now();
    let bench = bench(vigil);
    let results = run(&bench, MAIN, true);
    let mut report = Report::new("main", MAIN.len());
    let mut bodies = Vec::new();
    for (case, (b, v)) in MAIN.iter().zip(results) {
        if let Ok((answer, _)) = &v {
            bodies.push((case, answer.body.clone()));
        }
        dump("main", case, &b, &v);
        judge(&mut report, case, b, v);
    }
    userinfo_checks(&mut report, &bench, &bodies);
    stale(&mut report, MAIN);
    report.notes.push(format!(
        "{} cases in {:.1} s",
        MAIN.len(),
        started.elapsed().as_secs_f64()
    ));
    report.check();
}

#[test]
fn big_bodies_and_gzip_bombs_keep_vigil_under_64_mib() {
    let started = Instant::now();
    let bench = bench(vigil);
    let before = exporters::peak_rss(bench.vigil().pid());
    let mut report = run_group("64 MiB body and gzip bomb", MEMORY, &bench, false);
    let peak = exporters::peak_rss(bench.vigil().pid());
    report.notes.push(format!(
        "vigil's peak RSS (VmHWM, whole process life): {:.1} MiB before these cases, {:.1} MiB after \
         them (limit {} MiB); {:.1} s",
        before as f64 / (1024.0 * 1024.0),
        peak as f64 / (1024.0 * 1024.0),
        PEAK_RSS_LIMIT / (1024 * 1024),
        started.elapsed().as_secs_f64()
    ));
    if peak >= PEAK_RSS_LIMIT {
        report.differ(
            "(all of them)",
            "vigil's peak RSS",
            "(not compared)",
            format!("{:.1} MiB >= 64 MiB", peak as f64 / (1024.0 * 1024.0)),
        );
    }
    stale(&mut report, MEMORY);
    report.check();
}

/// The harness's own check: two blackbox processes on the corpus agree on everything compared,
/// so no difference the other tests show comes from a value that changes from run to run.
#[test]
fn blackbox_agrees_with_itself_on_the_corpus() {
    let bench = bench(second_blackbox);
    let mut report = run_group("blackbox against itself", MAIN, &bench, true);
    let big = run_group("blackbox against itself", MEMORY, &bench, false);
    report.cases += big.cases;
    report.differences.extend(big.differences);
    report.corpus.extend(big.corpus);
    report.check();
}

/// Set (to anything) in the copy of this test binary that runs inside the namespace.
const IN_NAMESPACE: &str = "VIGIL_CONFORMANCE_IN_NAMESPACE";

#[test]
fn dns_failures_inside_a_private_network_namespace() {
    const NAME: &str = "conformance::dns_failures_inside_a_private_network_namespace";
    if std::env::var_os(IN_NAMESPACE).is_some() {
        // Inside: only loopback exists, so both resolvers fail and no query leaves the machine.
        let ip = ["ip", "/usr/sbin/ip", "/sbin/ip"]
            .iter()
            .find_map(|ip| Command::new(ip).args(["link", "set", "lo", "up"]).output().ok())
            .expect("`ip` is not installed: install the Debian package `iproute2`");
        assert!(
            ip.status.success(),
            "ip link set lo up: {}",
            String::from_utf8_lossy(&ip.stderr)
        );
        let bench = bench(vigil);
        let mut report = run_group("DNS failures, in a network namespace", NAMESPACE, &bench, true);
        stale(&mut report, NAMESPACE);
        report.check();
        return;
    }
    // Outside: this same test, run again by this binary inside `unshare --net`.
    let _turn = common::exclusive();
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .arg("--net")
        .arg("--")
        .arg(&exe)
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env(IN_NAMESPACE, "1")
        .output()
        .unwrap_or_else(|e| panic!("`unshare` ({e}): install the Debian package `util-linux`"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the namespace run failed ({}; `unshare --net` needs root):\n{stderr}\n{stdout}",
        out.status
    );
    eprintln!("{stderr}");
}

/// The README's `/probe` section: everything from its `## ` heading to the next one.
fn readme_probe_section() -> String {
    let readme = stack::read("README.md");
    let mut section = String::new();
    let mut inside = false;
    for line in readme.lines() {
        if line.starts_with("## ") {
            inside = line.contains("`/probe`");
        }
        if inside {
            section.push_str(line);
            section.push('\n');
        }
    }
    assert!(
        !section.is_empty(),
        "README.md has no `## ` section whose title names `/probe`"
    );
    section
}

/// The rows of the first table after the heading `title` in `text`, cells trimmed.
fn table_after(text: &str, title: &str) -> Vec<Vec<String>> {
    let start = text
        .find(title)
        .unwrap_or_else(|| panic!("README.md's /probe section has no {title:?}"));
    text[start..]
        .lines()
        .skip_while(|l| !l.trim_start().starts_with('|'))
        .take_while(|l| l.trim_start().starts_with('|'))
        .skip(2)
        .map(|l| {
            let l = l.trim();
            l.trim_start_matches('|')
                .trim_end_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// Backticks off, whitespace collapsed: how a cell and a const string compare.
fn plain(text: &str) -> String {
    text.replace('`', "").split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn readme_lists_exactly_the_deliberate_differences() {
    let section = readme_probe_section();
    let rows = table_after(&section, "### Deliberate differences from blackbox_exporter");
    let readme: BTreeSet<(String, String, String)> = rows
        .iter()
        .map(|r| {
            assert_eq!(
                r.len(),
                3,
                "a row of the deliberate differences is `| case | what | reason |`: {r:?}"
            );
            (plain(&r[0]), plain(&r[1]), plain(&r[2]))
        })
        .collect();
    let code: BTreeSet<(String, String, String)> = DELIBERATE
        .iter()
        .map(|x| (plain(x.case), plain(&x.what.join(", ")), plain(x.reason)))
        .collect();
    let missing: Vec<_> = code.difference(&readme).collect();
    let extra: Vec<_> = readme.difference(&code).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "README.md's deliberate differences and tests/it/conformance.rs's DELIBERATE differ\n\
         only in the test: {missing:#?}\nonly in README.md: {extra:#?}"
    );
    let cases: BTreeSet<&str> = MAIN.iter().chain(MEMORY).chain(NAMESPACE).map(|c| c.name).collect();
    for x in DELIBERATE {
        assert!(
            cases.contains(x.case),
            "DELIBERATE names {:?}, which is no case of the corpus",
            x.case
        );
    }
}

#[test]
fn corpus_names_are_unique_and_modules_exist() {
    let config = stack::read("tests/testdata/conformance/blackbox.yml");
    let mut names = BTreeSet::new();
    for case in MAIN.iter().chain(MEMORY).chain(NAMESPACE) {
        assert!(names.insert(case.name), "two cases named {}", case.name);
        if !case.module.is_empty() && case.module != "nope" {
            assert!(
                config.contains(&format!("\n  {}:\n", case.module)),
                "{}: no module {} in the config",
                case.name,
                case.module
            );
        }
    }
}
