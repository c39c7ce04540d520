//! History store benchmark: 10,000 probes at a 15 s interval, a simulated day of synthetic
//! outcomes fed as fast as the store takes them, then the same probes at their real rate.
//! Reports writes/s, CPU, memory and the database size (24 h raw, and 90 days of hourly
//! aggregates extrapolated from the measured bytes per row).
//!
//! `cargo run --release --example history -- [--probes N] [--hours H] [--interval S] [--live S] [--dir D]`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};
use vigil::config;
use vigil::history::History;
use vigil::probe::{Level, Reason};
use vigil::state::Outcome;

struct Args {
    probes: usize,
    hours: u64,
    interval: u64,
    live: u64,
    dir: Option<PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        probes: 10_000,
        hours: 24,
        interval: 15,
        live: 30,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--probes" => a.probes = value.parse().unwrap(),
            "--hours" => a.hours = value.parse().unwrap(),
            "--interval" => a.interval = value.parse().unwrap(),
            "--live" => a.live = value.parse().unwrap(),
            "--dir" => a.dir = Some(PathBuf::from(value)),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// User + system CPU time of this process.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_secs_f64(ticks as f64 / 100.0)
}

fn status_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn size(path: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", path.display())).ok())
        .map(|m| m.len())
        .sum()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// A synthetic outcome: 99 % UP, 0.7 % DEGRADED, 0.3 % DOWN; latency 2-200 ms.
fn outcome(rng: &mut fastrand::Rng, at: SystemTime) -> Outcome {
    let roll = rng.u32(0..1000);
    let (level, reason, detail) = match roll {
        0..3 => (
            Level::Down,
            Some(Reason::Connect),
            "connect to 10.0.0.1:80: Connection refused".to_string(),
        ),
        3..10 => (
            Level::Degraded,
            Some(Reason::Latency),
            "took 1.2s (degraded_after 1s)".to_string(),
        ),
        _ => (Level::Up, None, String::new()),
    };
    Outcome {
        level,
        reason,
        detail,
        duration: Duration::from_micros(2_000 + u64::from(rng.u32(0..198_000)) / (1 + u64::from(rng.u32(0..8)))),
        observations: vigil::probe::Kind::Http.observed(),
        at,
        retries: 0,
        pending: false,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let temp = tempfile::tempdir().unwrap();
    let dir = a.dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    let path = dir.join("history.db");
    let _ = std::fs::remove_file(&path);
    let settings = config::History {
        path: Some(path.clone()),
        ..config::History::default()
    };
    let names: Vec<String> = (0..a.probes).map(|i| format!("probe-{i:05}")).collect();
    let rounds = a.hours * 3600 / a.interval;
    let total = rounds * a.probes as u64;
    println!(
        "history store: {} probes, every {} s, {} h simulated = {} rounds, {} runs; store {}",
        a.probes,
        a.interval,
        a.hours,
        rounds,
        total,
        path.display()
    );

    let history = History::open(&settings);
    history.ready().await.unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let start = SystemTime::now() - Duration::from_secs(a.hours * 3600);
    let spread = Duration::from_secs(a.interval).as_nanos() as u64 / a.probes as u64;
    let (cpu0, wall0) = (cpu(), Instant::now());
    let mut in_record = Duration::ZERO;
    let mut slowest_record = Duration::ZERO;
    for round in 0..rounds {
        let base = start + Duration::from_secs(round * a.interval);
        let began = Instant::now();
        for (i, name) in names.iter().enumerate() {
            let at = base + Duration::from_nanos(spread * i as u64);
            let o = outcome(&mut rng, at);
            let t = Instant::now();
            history.record(name, &o);
            slowest_record = slowest_record.max(t.elapsed());
        }
        in_record += began.elapsed();
        // One round per transaction: as fast as the store takes it, nothing dropped.
        history.flush().await;
        if round % 480 == 479 {
            let done = (round + 1) * a.probes as u64;
            println!(
                "  {:>5.1} simulated h: {:>9} runs, {:>8.0} writes/s, db {}",
                (round + 1) as f64 * a.interval as f64 / 3600.0,
                done,
                done as f64 / wall0.elapsed().as_secs_f64(),
                mib(size(&path))
            );
        }
    }
    let (cpu_used, wall) = (cpu() - cpu0, wall0.elapsed());
    println!(
        "bulk: {total} runs in {:.1} s = {:.0} writes/s; CPU {:.1} s ({:.0} us per run, {:.0} % of one core); \
         record() {:.2} us per call on average, slowest {} us",
        wall.as_secs_f64(),
        total as f64 / wall.as_secs_f64(),
        cpu_used.as_secs_f64(),
        cpu_used.as_secs_f64() * 1e6 / total as f64,
        cpu_used.as_secs_f64() / wall.as_secs_f64() * 100.0,
        in_record.as_secs_f64() * 1e6 / total as f64,
        slowest_record.as_micros()
    );

    // Live: the same probes at their real rate (probes/interval runs a second), batched by the
    // writer every second as in production.
    if a.live > 0 {
        let per_second = a.probes as u64 / a.interval;
        let (cpu0, wall0) = (cpu(), Instant::now());
        let mut ticker = tokio::time::interval(Duration::from_millis(100));
        let mut next = 0usize;
        let mut sent = 0u64;
        while wall0.elapsed() < Duration::from_secs(a.live) {
            ticker.tick().await;
            for _ in 0..per_second / 10 {
                history.record(&names[next % names.len()], &outcome(&mut rng, SystemTime::now()));
                next += 1;
                sent += 1;
            }
        }
        history.flush().await;
        let (cpu_used, wall) = (cpu() - cpu0, wall0.elapsed());
        println!(
            "live: {sent} runs in {:.0} s = {:.0} writes/s; CPU {:.2} s = {:.1} % of one core",
            wall.as_secs_f64(),
            sent as f64 / wall.as_secs_f64(),
            cpu_used.as_secs_f64(),
            cpu_used.as_secs_f64() / wall.as_secs_f64() * 100.0
        );
    }
    history.close().await;
    println!(
        "memory: peak RSS {} (in-memory history of {} probes, SQLite page cache 32 MiB)",
        mib(status_kib("VmHWM:") * 1024),
        a.probes
    );

    // Sizes per table (dbstat), and 90 days of hourly rows extrapolated from bytes per row.
    let mut conn = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await
        .unwrap();
    let tables: Vec<(String, i64)> = sqlx::query_as("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY name")
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
    let (raw_rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM raw")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let (hourly_rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM hourly")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let bytes = |name: &str| tables.iter().find(|(n, _)| n == name).map_or(0, |(_, b)| *b as u64);
    println!("database file: {} after the checkpoint", mib(size(&path)));
    for (name, b) in &tables {
        println!("  {name:<32} {}", mib(*b as u64));
    }
    let hourly_per_row = bytes("hourly") as f64 / hourly_rows.max(1) as f64;
    let hourly_90d = hourly_per_row * a.probes as f64 * 24.0 * 90.0;
    println!(
        "raw: {raw_rows} rows, {:.1} bytes per row; hourly: {hourly_rows} rows, {hourly_per_row:.1} bytes per row",
        bytes("raw") as f64 / raw_rows.max(1) as f64
    );
    let raw_per_row = bytes("raw") as f64 / raw_rows.max(1) as f64;
    let raw_24h = raw_per_row * a.probes as f64 * 86_400.0 / a.interval as f64;
    println!(
        "estimate for {} probes: 24 h raw {} + 90 d hourly {} = {}",
        a.probes,
        mib(raw_24h as u64),
        mib(hourly_90d as u64),
        mib(raw_24h as u64 + hourly_90d as u64 + bytes("probes") + bytes("sqlite_autoindex_probes_1"))
    );
}
