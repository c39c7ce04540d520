//! The alerting stack as the tests drive it: the repository's files, the real tools (`promtool`,
//! `amtool`, Prometheus, Alertmanager) and their processes, plain HTTP on 127.0.0.1, and time
//! stamps. Shared by tests/it/alerting.rs and tests/it/alerting_e2e.rs, which both declare
//! `mod common;` (local servers, used by the webhook recorder) and `mod stack;`.
//!
//! A missing tool fails the test that needs it and names the Debian package to install
//! (`scripts/install-test-deps.sh` installs them all); nothing is ever skipped.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod dashboards;
pub mod json;
pub mod test_copy;
pub mod webhooks;

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use json::Json;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");
pub const ALERTMANAGER_YML: &str = "alertmanager/alertmanager.yml";
pub const PROMETHEUS_YML: &str = "prometheus/prometheus.yml";

// ---------------------------------------------------------------------------------------------
// The repository's files
// ---------------------------------------------------------------------------------------------

pub fn repo(path: &str) -> PathBuf {
    Path::new(ROOT).join(path)
}

/// The files of a repository directory with the given extension, sorted; never empty.
pub fn files(dir: &str, extension: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(repo(dir))
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == extension))
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no *.{extension} file in {dir}");
    found
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("repository and temporary paths are UTF-8")
}

pub fn read(path: &str) -> String {
    fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// A directory under the system's temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!("vigil-alerting-{label}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).expect("create temporary directory");
        TempDir(dir)
    }

    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create temporary subdirectory");
        }
        fs::write(&path, contents).expect("write temporary file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Running the tools
// ---------------------------------------------------------------------------------------------

/// The failure message for a tool that is not installed.
fn not_installed(tool: &str, package: &str) -> String {
    format!(
        "`{tool}` is not installed: install the Debian package `{package}` \
         (scripts/install-test-deps.sh installs every tool these tests need)"
    )
}

/// Runs `tool` to completion, failing the test with the Debian package to install when it is
/// missing.
pub fn command(tool: &str, package: &str, args: &[&str]) -> Output {
    match Command::new(tool).args(args).current_dir(ROOT).output() {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!("{}", not_installed(tool, package)),
        Err(e) => panic!("cannot run `{tool}`: {e}"),
    }
}

pub fn promtool(args: &[&str]) -> Output {
    command("promtool", "prometheus", args)
}

pub fn amtool(args: &[&str]) -> Output {
    command("amtool", "prometheus-alertmanager", args)
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// A server of the stack (Prometheus, Alertmanager) listening on 127.0.0.1:`port`. Killed when
/// dropped, also when the test panics; its log goes to a file whose end is printed then.
pub struct Server {
    name: String,
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Server {
    /// Starts `tool` (Debian package `package`) and waits until `ready_path` answers 200.
    pub fn start(tool: &str, package: &str, args: &[String], port: u16, ready_path: &str, log: PathBuf) -> Server {
        let out = fs::File::create(&log).expect("create the server's log file");
        let err = out.try_clone().expect("clone the log file handle");
        let child = match Command::new(tool)
            .args(args)
            .current_dir(log.parent().expect("log file in a directory"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => panic!("{}", not_installed(tool, package)),
            Err(e) => panic!("cannot start `{tool}`: {e}"),
        };
        let mut server = Server {
            name: tool.to_string(),
            child,
            port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(http(port, "GET", ready_path, ""), Ok((200, _))) {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("`{tool}` exited ({status}) before it was ready");
            }
            assert!(Instant::now() < deadline, "`{tool}` was not ready within 30s");
            thread::sleep(Duration::from_millis(100));
        }
        server
    }
}

impl Server {
    /// Stops the server as a service manager would (SIGTERM), waiting for it to exit (10 s at
    /// most, then SIGKILL).
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            eprintln!(
                "--- last lines of {}'s log ({}):\n{tail}",
                self.name,
                self.log.display()
            );
        }
    }
}

/// Alertmanager 0.25 on 127.0.0.1 (a free port), clustering off, its data and log in `dir`.
pub fn alertmanager(config: &Path, dir: &Path) -> Server {
    let port = free_port();
    let args = [
        format!("--config.file={}", path_str(config)),
        format!("--storage.path={}", path_str(&dir.join("alertmanager-data"))),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--cluster.listen-address=".to_string(),
    ];
    Server::start(
        "prometheus-alertmanager",
        "prometheus-alertmanager",
        &args,
        port,
        "/-/ready",
        dir.join("alertmanager.log"),
    )
}

/// Prometheus 2.42 on 127.0.0.1:`port` (chosen by the caller, as the config may name it; 2.42
/// does not take port 0), its data and log in `dir`, with `extra` flags.
pub fn prometheus(config: &Path, dir: &Path, port: u16, extra: &[&str]) -> Server {
    let mut args = vec![
        format!("--config.file={}", path_str(config)),
        format!("--storage.tsdb.path={}", path_str(&dir.join("prometheus-data"))),
        format!("--web.listen-address=127.0.0.1:{port}"),
    ];
    args.extend(extra.iter().map(|flag| flag.to_string()));
    Server::start(
        "prometheus",
        "prometheus",
        &args,
        port,
        "/-/ready",
        dir.join("prometheus.log"),
    )
}

// ---------------------------------------------------------------------------------------------
// HTTP on 127.0.0.1
// ---------------------------------------------------------------------------------------------

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

/// A minimal HTTP/1.1 client call to 127.0.0.1:`port`; returns (status code, body).
pub fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let chunked = head.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("transfer-encoding") && value.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = if chunked {
        dechunk(&response[split..])
    } else {
        response[split..].to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The payload of a `Transfer-Encoding: chunked` body (Go's servers use it for long answers).
pub fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..end]).unwrap_or("");
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        let data = &rest[end + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        rest = data[size..].strip_prefix(b"\r\n").unwrap_or(&data[size..]);
    }
    out
}

/// `value` encoded for a URL's query string.
pub fn query_escape(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// GETs `path` from Prometheus' HTTP API; Ok(data) when it answers `"status": "success"`,
/// otherwise Err(the error it gave).
pub fn prometheus_api(port: u16, path: &str) -> Result<Json, String> {
    let (status, body) = http(port, "GET", path, "").map_err(|e| format!("GET {path}: {e}"))?;
    let answer = Json::parse(&body).map_err(|e| format!("GET {path}: HTTP {status}, not JSON ({e}): {body}"))?;
    match answer.get("status").and_then(Json::as_str) {
        Some("success") => Ok(answer.get("data").cloned().unwrap_or(Json::Null)),
        _ => Err(format!(
            "HTTP {status}: {}",
            answer.get("error").and_then(Json::as_str).unwrap_or(&body)
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A UTC time in RFC 3339 with milliseconds, as Alertmanager's API wants it.
pub fn rfc3339(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).expect("clock after 1970");
    let seconds = since_epoch.as_secs() as i64;
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (the inverse of days_from_civil).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60,
        since_epoch.subsec_millis()
    )
}

/// Parses an RFC 3339 time as Alertmanager writes it (`2024-05-04T03:02:01.123456789Z`, or
/// with an offset `+02:00`).
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let number = |s: &str| s.parse::<i64>().ok();
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-');
    let (year, month, day) = (number(date.next()?)?, number(date.next()?)?, number(date.next()?)?);
    let (clock, offset) = if let Some(clock) = time.strip_suffix('Z') {
        (clock, 0)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (hours, minutes) = time[at + 1..].split_once(':')?;
        let sign = if time[at..].starts_with('-') { -1 } else { 1 };
        (&time[..at], sign * (number(hours)? * 3_600 + number(minutes)? * 60))
    };
    let (whole, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut hms = whole.splitn(3, ':');
    let (h, m, s) = (number(hms.next()?)?, number(hms.next()?)?, number(hms.next()?)?);
    let seconds = days_from_civil(year, month, day) * 86_400 + h * 3_600 + m * 60 + s - offset;
    let nanos: u32 = format!("{fraction:0<9}").get(..9)?.parse().ok()?;
    Some(UNIX_EPOCH + Duration::new(u64::try_from(seconds).ok()?, nanos))
}

/// A Prometheus/Alertmanager duration (`30s`, `15m`, `1h30m`, `500ms`, `0s`) in milliseconds.
pub fn millis(duration: &str) -> u64 {
    let duration = duration.trim().trim_matches('"');
    assert!(!duration.is_empty(), "empty duration");
    let mut total = 0;
    let mut rest = duration;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let unit_len = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len() - digits);
        let number: u64 = rest[..digits]
            .parse()
            .unwrap_or_else(|_| panic!("bad duration {duration}"));
        total += number
            * match &rest[digits..digits + unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "w" => 604_800_000,
                "y" => 31_536_000_000,
                other => panic!("unknown unit `{other}` in duration {duration}"),
            };
        rest = &rest[digits + unit_len..];
    }
    total
}
