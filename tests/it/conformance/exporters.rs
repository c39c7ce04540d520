//! The two exporters under comparison, on 127.0.0.1 with the same blackbox config: Debian's
//! prometheus-blackbox-exporter (started as the stack tests start their servers) and
//! `vigil run --blackbox.config-file`; and a plain HTTP/1.1 client for their `/probe`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::stack;

/// The Debian package, named whenever it is missing.
pub const BLACKBOX_PACKAGE: &str = "prometheus-blackbox-exporter";

/// Debian's blackbox_exporter 0.23 on a free port of 127.0.0.1.
pub fn blackbox(config: &Path, dir: &Path) -> stack::Server {
    let port = stack::free_port();
    let args = [
        format!("--config.file={}", stack::path_str(config)),
        format!("--web.listen-address=127.0.0.1:{port}"),
    ];
    stack::Server::start(
        BLACKBOX_PACKAGE,
        BLACKBOX_PACKAGE,
        &args,
        port,
        "/-/healthy",
        dir.join("blackbox.log"),
    )
}

/// `vigil run` serving the modules of a blackbox config on `/probe`; killed when dropped.
pub struct Vigil {
    child: Child,
    pub port: u16,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Vigil {
    /// Starts `vigil run --config <minimal> --blackbox.config-file <config>` on 127.0.0.1 port 0
    /// (logging JSON) and waits for its `listening` line; fails with everything it logged when
    /// it exits or stays silent instead.
    pub fn start(config: &Path, dir: &Path) -> Vigil {
        let own = dir.join("vigil.yml");
        std::fs::write(&own, "probes: []\n").expect("write vigil.yml");
        let storage = dir.join("vigil-data");
        let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["run", "--config"])
            .arg(&own)
            .arg("--blackbox.config-file")
            .arg(config)
            .args([
                "--web.listen-address",
                "127.0.0.1:0",
                "--log.format",
                "json",
                "--storage.path",
            ])
            .arg(&storage)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the vigil binary");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
                    && event["message"] == "listening"
                {
                    let _ = tx.send(event["address"].as_str().unwrap_or_default().to_string());
                }
                sink.lock().expect("logs").push(line);
            }
        });
        let started = rx.recv_timeout(Duration::from_secs(15));
        let vigil = |port| Vigil {
            child,
            port,
            logs: logs.clone(),
        };
        match started.ok().and_then(|a| a.rsplit(':').next()?.parse().ok()) {
            Some(port) => vigil(port),
            None => {
                let mut v = vigil(0);
                let _ = v.child.kill();
                let status = v.child.wait().map(|s| s.to_string()).unwrap_or_default();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "vigil did not start on the blackbox config ({status}): `vigil run --config vigil.yml \
                     --blackbox.config-file {} --web.listen-address 127.0.0.1:0` is the interface under \
                     test (issue 11). It logged:\n{}",
                    config.display(),
                    v.logs()
                );
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }
}

impl Drop for Vigil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The peak resident set (VmHWM) of a process, in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status:\n{status}"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmHWM in kB");
    kb * 1024
}

/// An answer of `/probe`.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// `GET /probe?<query>` on 127.0.0.1:`port` with an optional scrape-timeout header.
pub fn probe(port: u16, query: &str, scrape_timeout: Option<&str>) -> Result<Answer, String> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let header = scrape_timeout
        .map(|t| format!("X-Prometheus-Scrape-Timeout-Seconds: {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET /probe?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: Prometheus/2.42.0\r\n{header}Connection: close\r\n\r\n"
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("read after {:?}: {e}", started.elapsed()))?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no HTTP head in {:?}", String::from_utf8_lossy(&response)))?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head}"))?;
    let header_value = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    let raw = &response[split + 4..];
    let body = if header_value("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        stack::dechunk(raw)
    } else {
        raw.to_vec()
    };
    Ok(Answer {
        status,
        content_type: header_value("content-type").unwrap_or_default(),
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
