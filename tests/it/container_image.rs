//! The container image users get, built and run for real on the test Docker engine
//! (tests/it/common/docker.rs: no bridge, no iptables, its folders in a temporary directory).
//!
//! No image registry is reachable here, so neither `rust:*-slim` nor `debian:*-slim` can be
//! pulled. The test takes the path users do not, for the part that cannot be pulled only:
//! - the base: a Debian root file system made by `scripts/test-image-base.sh` (mmdebstrap's
//!   minbase from Debian's packages, with the slim image's dpkg excludes), cached in
//!   /var/cache/vigil-test, and `docker import`ed;
//! - the binary: `target/release/vigil` as `cargo build --release --locked --bin vigil` makes it
//!   (scripts/test builds it before `cargo test`), instead of the Dockerfile's build stage;
//! - the Dockerfile: its global `ARG`s and its runtime stage verbatim, with the one line that
//!   copies the binary from the build stage pointed at the build context, built by the classic
//!   builder (BuildKit would fetch the `# syntax=` frontend from a registry) with
//!   `--build-arg RUNTIME_BASE=<the imported base>` and `--network host`, so the stage's
//!   `apt-get install ca-certificates curl` runs against the Debian mirror as it does for users.
//!
//! Then, with `--network host` and the image's own CMD (port 9430, which must be free): the
//! image's user, workdir, volume and command; `/-/healthy`; the process runs as uid 10001;
//! the embedded default config's probe (`vigil-self`) succeeds on `/metrics`; the exact health
//! check of the `vigil` service in docker-compose.monitoring.yml passes inside the container;
//! the state lands in the `/var/lib/vigil` volume (owned by 10001) and survives a restart and a
//! re-creation of the container (`vigil_probe_level_since_timestamp_seconds` unchanged); and
//! `vigil run` without `--config` (the compiled-in default) works in the image too. A missing
//! tool or binary fails the test with what to install or build; nothing is skipped. Timings and
//! the image size are printed (`--nocapture`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::stack;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::docker::Engine;
use stack::{http, repo};

/// The tag the imported base gets on the test engine.
const BASE: &str = "vigil-test-base:bookworm";
/// The image built from the Dockerfile's runtime stage.
const IMAGE: &str = "vigil:test";
/// The port the image's CMD listens on (the default `--web.listen-address`).
const PORT: u16 = 9430;
/// The line of the runtime stage that takes the binary from the build stage.
const COPY_FROM_BUILDER: &str = "COPY --from=builder /usr/local/bin/vigil /usr/local/bin/vigil";
/// How long one expected effect may take to show.
const PATIENCE: Duration = Duration::from_secs(60);

#[test]
fn the_image_users_get_runs_as_documented() {
    let _turn = crate::common::exclusive();
    let started = Instant::now();
    let binary = release_binary();
    assert_stripped(&binary);
    free_port();
    let engine = Engine::start();

    // The base, made from Debian's packages (cached), imported.
    let t = Instant::now();
    let base = base_tarball();
    let base_time = t.elapsed();
    let t = Instant::now();
    engine.docker(&["import", path_str(&base), BASE]);
    let import_time = t.elapsed();

    // The runtime stage on top of it, with the release binary.
    let context = tempfile::tempdir().unwrap();
    std::fs::write(context.path().join("Dockerfile"), runtime_dockerfile()).unwrap();
    std::fs::copy(&binary, context.path().join("vigil")).unwrap();
    std::fs::create_dir(context.path().join("examples")).unwrap();
    std::fs::copy(repo("examples/vigil.yml"), context.path().join("examples/vigil.yml")).unwrap();
    let t = Instant::now();
    build(&engine, context.path());
    let build_time = t.elapsed();
    let size: u64 = engine
        .docker(&["image", "inspect", "-f", "{{.Size}}", IMAGE])
        .parse()
        .unwrap();
    let layers = engine.docker(&["history", "--format", "{{.Size}}\t{{.CreatedBy}}", "--no-trunc", IMAGE]);
    let base_size: u64 = engine
        .docker(&["image", "inspect", "-f", "{{.Size}}", BASE])
        .parse()
        .unwrap();

    // What the image declares.
    let inspect = |format: &str| engine.docker(&["image", "inspect", "-f", format, IMAGE]);
    assert_eq!(inspect("{{.Config.User}}"), "10001:10001");
    assert_eq!(inspect("{{.Config.WorkingDir}}"), "/var/lib/vigil");
    assert_eq!(inspect("{{json .Config.Volumes}}"), r#"{"/var/lib/vigil":{}}"#);
    assert_eq!(inspect("{{json .Config.ExposedPorts}}"), r#"{"9430/tcp":{}}"#);
    assert_eq!(
        inspect("{{json .Config.Cmd}}"),
        r#"["vigil","run","--config","/etc/vigil/vigil.yml","--storage.path","/var/lib/vigil"]"#
    );
    let run_in_image = |args: &[&str]| {
        let mut all = vec!["run", "--rm", "--network", "none", IMAGE];
        all.extend_from_slice(args);
        engine.docker(&all)
    };
    let bundle = run_in_image(&["grep", "-c", "BEGIN CERTIFICATE", "/etc/ssl/certs/ca-certificates.crt"]);
    assert!(
        bundle.parse::<u32>().unwrap() > 100,
        "ca-certificates' bundle holds {bundle} certificates"
    );
    assert!(run_in_image(&["curl", "--version"]).starts_with("curl "));
    assert_eq!(
        run_in_image(&["getent", "passwd", "vigil"]),
        "vigil:x:10001:10001::/var/lib/vigil:/usr/sbin/nologin"
    );
    run_in_image(&["vigil", "check", "--config", "/etc/vigil/vigil.yml"]);

    // The image's CMD on the host's network, with a named volume for its state.
    engine.docker(&["volume", "create", "vigil-data"]);
    let volume = PathBuf::from(engine.docker(&["volume", "inspect", "-f", "{{.Mountpoint}}", "vigil-data"]));
    let run = format!("run -d --name vigil --network host -v vigil-data:/var/lib/vigil {IMAGE}");
    let run: Vec<&str> = run.split(' ').collect();
    engine.docker(&run);
    let guard = Logs {
        engine: &engine,
        container: "vigil",
    };
    let since = up_and_probing("vigil");

    // The process runs as 10001 (seen from the host), and so does what `docker exec` starts.
    let pid = engine.docker(&["inspect", "-f", "{{.State.Pid}}", "vigil"]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uids.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["10001"; 4],
        "{uids}"
    );
    assert_eq!(engine.docker(&["exec", "vigil", "id", "-u"]), "10001");

    // docker-compose.monitoring.yml's health check of the vigil service, as it is written.
    let check = compose_health_check();
    let mut exec = vec!["exec", "vigil"];
    exec.extend(check.iter().map(String::as_str));
    engine.docker(&exec);

    // State on the volume, owned by the image's user (the state file is written within 2 s of
    // a change of level).
    for file in ["probes.json", "history.db"] {
        let deadline = Instant::now() + Duration::from_secs(10);
        let meta = loop {
            match std::fs::metadata(volume.join(file)) {
                Ok(meta) => break meta,
                Err(e) if Instant::now() > deadline => panic!("{file} in the volume ({}): {e}", volume.display()),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        assert_eq!(meta.uid(), 10001, "{file} belongs to uid {}", meta.uid());
    }

    // A restart (SIGTERM, then the same container again) keeps the level and since when.
    engine.docker(&["restart", "-t", "10", "vigil"]);
    assert_eq!(up_and_probing("vigil"), since, "level_since after a restart");
    let again = engine.docker(&["inspect", "-f", "{{.State.Pid}}", "vigil"]);
    assert_ne!(again, pid, "a new process after the restart");
    // So does a new container on the same volume (an upgrade, `docker compose up` after a build).
    engine.docker(&["rm", "-f", "vigil"]);
    engine.docker(&run);
    assert_eq!(up_and_probing("vigil"), since, "level_since in a new container");
    drop(guard);
    engine.docker(&["rm", "-f", "vigil"]);

    // `vigil run` without --config: the compiled-in default (no state folder to find).
    engine.docker(&[
        "run",
        "-d",
        "--name",
        "embedded",
        "--network",
        "host",
        IMAGE,
        "vigil",
        "run",
    ]);
    let guard = Logs {
        engine: &engine,
        container: "embedded",
    };
    up_and_probing("embedded");
    drop(guard);
    engine.docker(&["rm", "-f", "embedded"]);

    eprintln!(
        "container image: base {:.1} s ({}), import {:.1} s, build {:.1} s; base {} MB, image {} MB \
         (the vigil binary {} MB); whole test {:.1} s",
        base_time.as_secs_f64(),
        if base_time > Duration::from_secs(5) {
            "built"
        } else {
            "cached"
        },
        import_time.as_secs_f64(),
        build_time.as_secs_f64(),
        base_size / 1_000_000,
        size / 1_000_000,
        std::fs::metadata(&binary).unwrap().len() / 1_000_000,
        started.elapsed().as_secs_f64(),
    );
    for layer in layers.lines() {
        eprintln!("  {}", layer.chars().take(110).collect::<String>());
    }
}

/// `target/release/vigil` beside the debug binary cargo built for the tests; fails unless it
/// exists and is newer than the sources it is built from.
fn release_binary() -> PathBuf {
    let debug = Path::new(env!("CARGO_BIN_EXE_vigil"));
    let target = debug.parent().and_then(Path::parent).unwrap();
    let binary = target.join("release").join("vigil");
    let build = "cargo build --release --locked --bin vigil (scripts/test does, before cargo test)";
    let built = std::fs::metadata(&binary)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}: the image test needs the release binary: {build}",
                binary.display()
            )
        })
        .modified()
        .unwrap();
    let mut newest = (SystemTime::UNIX_EPOCH, PathBuf::new());
    let mut visit = vec![repo("src")];
    for file in [
        "Cargo.toml",
        "Cargo.lock",
        "examples/vigil.yml",
        "docs/runbook.md",
        "rules/vigil-alerts.yml",
    ] {
        visit.push(repo(file));
    }
    while let Some(path) = visit.pop() {
        let meta = std::fs::metadata(&path).unwrap();
        if meta.is_dir() {
            visit.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if meta.modified().unwrap() > newest.0 {
            newest = (meta.modified().unwrap(), path);
        }
    }
    assert!(
        built >= newest.0,
        "{} is older than {}: build it again: {build}",
        binary.display(),
        newest.1.display()
    );
    binary
}

/// Fails if the binary carries DWARF (the release profile strips it; see README, "Release
/// build and symbols").
fn assert_stripped(binary: &Path) {
    let sections = elf_section_names(&std::fs::read(binary).unwrap());
    let debug: Vec<&String> = sections.iter().filter(|s| s.starts_with(".debug_")).collect();
    assert!(debug.is_empty(), "{} is not stripped: {debug:?}", binary.display());
    assert!(sections.iter().any(|s| s == ".text"), "no .text in {sections:?}");
}

/// The section names of an ELF64 little-endian file.
fn elf_section_names(elf: &[u8]) -> Vec<String> {
    assert!(
        elf.starts_with(b"\x7fELF\x02\x01"),
        "not a 64-bit little-endian ELF file"
    );
    let n = |at: usize, len: usize| {
        elf[at..at + len]
            .iter()
            .rev()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    let (offset, size, count, names) = (n(0x28, 8), n(0x3a, 2), n(0x3c, 2), n(0x3e, 2));
    let strings = n(offset + names * size + 0x18, 8);
    (0..count)
        .map(|i| {
            let start = strings + n(offset + i * size, 4);
            let end = start + elf[start..].iter().position(|&b| b == 0).unwrap();
            String::from_utf8_lossy(&elf[start..end]).into_owned()
        })
        .collect()
}

/// Fails unless nothing listens on port 9430, which the image's CMD takes on the host network.
fn free_port() {
    if let Err(e) = std::net::TcpListener::bind(("0.0.0.0", PORT)) {
        panic!(
            "port {PORT} is taken ({e}): the image's CMD listens there with --network host; stop \
             what holds it (`ss -ltnp sport = :{PORT}`)"
        );
    }
}

/// The cached base tarball (built on the first run on a machine).
fn base_tarball() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo("scripts/test-image-base.sh"))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/test-image-base.sh failed ({}); it needs root and Debian's `mmdebstrap` package \
         (bash scripts/install-test-deps.sh installs it)",
        out.status
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The Dockerfile's global ARGs and its runtime stage, taking the binary from the context.
fn runtime_dockerfile() -> String {
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    let first_from = dockerfile.find("\nFROM ").unwrap();
    let args: Vec<&str> = dockerfile[..first_from]
        .lines()
        .filter(|l| l.starts_with("ARG "))
        .collect();
    assert!(
        args.iter().any(|a| a.starts_with("ARG RUNTIME_BASE=")),
        "no RUNTIME_BASE in {args:?}"
    );
    let runtime = &dockerfile[dockerfile.find("\n# --- runtime").expect("a `# --- runtime` stage")..];
    assert_eq!(
        runtime.matches("\nFROM ").count(),
        1,
        "the runtime stage is the last one"
    );
    assert_eq!(
        runtime.matches(COPY_FROM_BUILDER).count(),
        1,
        "the runtime stage has `{COPY_FROM_BUILDER}`"
    );
    format!(
        "{}\n{}",
        args.join("\n"),
        runtime.replace(COPY_FROM_BUILDER, "COPY vigil /usr/local/bin/vigil")
    )
}

/// `docker build` with the classic builder, on the imported base, with the host's network (for
/// the stage's apt-get).
fn build(engine: &Engine, context: &Path) {
    let out = Command::new("docker")
        .args(["-H", &engine.host(), "build", "--network", "host", "--build-arg"])
        .arg(format!("RUNTIME_BASE={BASE}"))
        .args(["-t", IMAGE])
        .arg(context)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker build of the runtime stage failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `test` of the vigil service's healthcheck in docker-compose.monitoring.yml, without its
/// leading `CMD`.
fn compose_health_check() -> Vec<String> {
    let text = std::fs::read_to_string(repo("docker-compose.monitoring.yml")).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).unwrap();
    let test = docs[0]["services"]["vigil"]["healthcheck"]["test"]
        .as_vec()
        .expect("services.vigil.healthcheck.test is a list");
    let words: Vec<String> = test.iter().map(|w| w.as_str().unwrap().to_string()).collect();
    assert_eq!(words[0], "CMD", "the exec form: {words:?}");
    words[1..].to_vec()
}

/// Waits until the container answers `/-/healthy` on the host's port 9430 and its
/// `vigil-self` probe has succeeded; returns that probe's
/// `vigil_probe_level_since_timestamp_seconds`.
fn up_and_probing(container: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    let mut last = String::new();
    loop {
        let healthy = http(PORT, "GET", "/-/healthy", "");
        if let (Ok((200, _)), Ok((200, metrics))) = (healthy, http(PORT, "GET", "/metrics", "")) {
            let value = |name: &str| {
                metrics
                    .lines()
                    .find(|l| l.starts_with(name) && l.contains(r#"probe="vigil-self""#))
                    .and_then(|l| l.rsplit(' ').next())
                    .map(str::to_owned)
            };
            if value("vigil_probe_success{").and_then(|v| v.parse::<f64>().ok()) == Some(1.0) {
                return value("vigil_probe_level_since_timestamp_seconds{").expect("level_since of vigil-self");
            }
            last = metrics;
        }
        assert!(
            Instant::now() < deadline,
            "{container}: no successful vigil-self probe on :{PORT} in {PATIENCE:?}\n{last}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Prints a container's log if the test fails while it runs.
struct Logs<'a> {
    engine: &'a Engine,
    container: &'a str,
}

impl Drop for Logs<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let out = Command::new("docker")
                .args(["-H", &self.engine.host(), "logs", self.container])
                .output();
            if let Ok(out) = out {
                eprintln!(
                    "{} logs:\n{}{}",
                    self.container,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}
