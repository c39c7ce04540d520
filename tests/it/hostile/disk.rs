//! The history store on a full disk: a real tmpfs of 2 MiB (mounted by the test, as root, and
//! unmounted when it ends), filled until writes fail, kept full for 10 s, then freed. The store
//! must count its failures, keep logging them, and store runs again once there is room; and
//! kill -9 while it writes must leave the store intact and lose no acknowledged heartbeat.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use super::common::Running;

/// A tmpfs mounted on a fresh folder; unmounted when dropped, also when the test panics.
struct Tmpfs {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).ok()?;
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "vigil-test",
                mnt.to_str()?,
            ])
            .status()
            .ok()?
            .success();
        mounted.then_some(Tmpfs { _dir: dir, mnt })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

/// Writes zeros to `path` until only `leave` bytes of the file system are free (about);
/// returns the bytes written.
fn fill(path: &Path, fs: &Path, leave: u64) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    let mut written = 0;
    while free_bytes(fs) > leave && file.write_all(&chunk).is_ok() {
        written += chunk.len() as u64;
        if written % (64 * 1024) == 0 {
            let _ = file.sync_data();
        }
    }
    let _ = file.sync_all();
    written
}

/// Free bytes on the file system of `path` (from `df`).
fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

/// The newest stored run of `probe`, from the detail API (which reads the store).
fn newest_stored(running: &Running, probe: &str) -> Option<SystemTime> {
    let page = running.get(&format!("/api/v1/probes/{probe}"));
    let body = page.split("\r\n\r\n").nth(1)?;
    // The answer may come chunked: the JSON is between the first `{` and the last `}`.
    let json = &body[body.find('{')?..=body.rfind('}')?];
    let doc: serde_json::Value = serde_json::from_str(json).ok()?;
    let at = doc["runs"][0]["at"].as_str()?;
    let at = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(at.unix_timestamp_nanos() as f64 / 1e9))
}

fn failures(metrics: &str) -> Option<u64> {
    metrics
        .lines()
        .find(|l| l.starts_with("vigil_history_write_failures_total"))?
        .rsplit(' ')
        .next()?
        .parse::<f64>()
        .ok()
        .map(|v| v as u64)
}

#[test]
fn history_store_recovers_after_a_full_disk() {
    let _turn = crate::common::exclusive();
    let disk = Tmpfs::mount("2m").expect("mount -t tmpfs: the test needs root (no test is skipped)");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vigil.yml");
    let mut text = format!(
        "history: {{path: '{}'}}\ndefaults: {{interval: 250ms, timeout: 200ms}}\nprobes:\n",
        disk.mnt.join("history.db").display()
    );
    for i in 0..10 {
        text += &format!("  - {{name: p{i}, kind: tcp, address: '127.0.0.1:1'}}\n");
    }
    std::fs::write(&config, text).unwrap();
    let mut running = Running::start(&config, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while newest_stored(&running, "p0").is_none() {
        assert!(Instant::now() < deadline, "no run stored:\n{}", running.logs());
        std::thread::sleep(Duration::from_millis(100));
    }

    // Someone reads the store all along, as the status page does.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (stop, port) = (stop.clone(), running.port);
        std::thread::spawn(move || {
            let mut reads = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                    let _ = write!(
                        s,
                        "GET /api/v1/probes/p1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                    );
                    let _ = std::io::Read::read_to_end(&mut s, &mut Vec::new());
                    reads += 1;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            reads
        })
    };
    // Leave a little room: vigil's own writes fill the rest.
    let filler = disk.mnt.join("filler");
    let filled = fill(&filler, &disk.mnt, 64 * 1024);
    let full_at = Instant::now();
    running.wait_for_log("writing history failed");
    let first_failure = full_at.elapsed();
    running.wait_for("the failure counted", |m| failures(m).is_some_and(|n| n > 0));
    // Full for 10 s, while runs keep coming.
    std::thread::sleep(Duration::from_secs(10).saturating_sub(full_at.elapsed()));
    let failed_while_full = failures(&running.get("/metrics")).unwrap_or(0);
    std::fs::remove_file(&filler).unwrap();
    let freed = SystemTime::now();
    let freed_at = Instant::now();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if newest_stored(&running, "p0").is_some_and(|at| at > freed + Duration::from_secs(1)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "runs stopped being stored after the disk was freed:\n{}",
            running.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let recovered = freed_at.elapsed();
    // Within a few flushes: a failed write leaves nothing behind that blocks the next one.
    assert!(
        recovered < Duration::from_secs(5),
        "stored again only after {recovered:?}"
    );
    assert!(!running.logs().contains("database is locked"), "{}", running.logs());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().unwrap();
    running.wait_for_log("writing history again");
    let settled = failures(&running.get("/metrics")).unwrap_or(0);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        failures(&running.get("/metrics")),
        Some(settled),
        "failures still counting:\n{}",
        running.logs()
    );
    assert!(running.stop().success());
    eprintln!(
        "hostile disk: 1 case (2 MiB tmpfs, {filled} bytes of filler): first failure after {first_failure:?}, \
         {failed_while_full} failed writes in 10 s, stored again {recovered:?} after the space came back; {reads} reads of the store meanwhile"
    );
}

fn push(port: u16, token: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /push/job HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut s, &mut answer).unwrap();
    answer
}

#[test]
fn kill_9_loses_no_acknowledged_heartbeat_and_leaves_the_store_intact() {
    let _turn = crate::common::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vigil.yml");
    let token = "0123456789abcdef-kill";
    let mut text = format!(
        "state_dir: state\nhistory: {{path: history.db}}\ndefaults: {{interval: 100ms, timeout: 80ms}}\nprobes:\n  \
         - {{name: job, kind: heartbeat, token: {token}, max_age: 1h, interval: 1s, timeout: 500ms}}\n"
    );
    for i in 0..20 {
        text += &format!("  - {{name: p{i}, kind: tcp, address: '127.0.0.1:1'}}\n");
    }
    std::fs::write(&config, text).unwrap();
    let rounds = 3;
    for round in 0..rounds {
        let mut running = Running::start(&config, &[]);
        // Let the writer get busy, then kill it at a different moment each round.
        std::thread::sleep(Duration::from_millis(300 + 350 * round));
        assert!(push(running.port, token).starts_with("HTTP/1.1 200"));
        running.signal("KILL");
        let _ = running.child.wait();

        let mut again = Running::start(&config, &[]);
        again.wait_for("the heartbeat kept", |m| {
            m.contains("vigil_probe_success{probe=\"job\",kind=\"heartbeat\"} 1")
        });
        let logs = again.wait_for_log("history loaded");
        assert!(!logs.contains("reading the history back failed"), "{logs}");
        assert!(again.stop().success());
    }
    // What SQLite says of the file after three kills.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let verdict: String = runtime.block_on(async {
        use sqlx::Connection;
        let url = format!("sqlite://{}", dir.path().join("history.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    });
    assert_eq!(verdict, "ok");
    eprintln!("hostile disk, kill -9: {rounds} cases (heartbeat acknowledged then SIGKILL; store intact)");
}
