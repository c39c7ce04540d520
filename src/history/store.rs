//! The SQLite store: one writer task batches runs into a transaction every second (single
//! results, the hourly aggregates they change, each probe's level and last failure), prunes
//! what is past its retention every few minutes, and reads everything back at start.
//!
//! A write that fails (a full disk, an I/O error) is counted, its runs are kept for the next
//! attempt (within [`RETRY_MAX`]), and the connection it used is closed: whatever state the
//! failure left it in (a transaction SQLite rolled back on its own, a lock still held) goes with
//! it, so the store writes again as soon as the disk has room.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, QueryBuilder, Sqlite, Transaction};
use tokio::sync::{mpsc, watch};

use crate::poison::LockUnpoisoned;
use tracing::{debug, error, info, warn};

use super::buckets::{Counts, HOUR_MS, LatencyHistogram};
use super::{Failure, History, Message, ProbeHistory, Readiness, Run, level_code, level_of};
use crate::config;

/// How often buffered runs are written.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// A batch this large is written at once.
const BATCH_MAX: usize = 20_000;
/// Runs kept for the next attempt after failed writes; older ones are dropped from the store.
pub(super) const RETRY_MAX: usize = 10_000;
/// While writes keep failing, the log says so this often (and the counter counts every one).
const REPORT_EVERY: Duration = Duration::from_secs(60);
/// How often old rows are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(300);
/// Rows per multi-row INSERT (6 values each, well under SQLite's variable limit).
const ROWS_PER_INSERT: usize = 500;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS probes (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        level INTEGER,
        level_since INTEGER,
        failure_at INTEGER,
        failure_reason TEXT,
        failure_detail TEXT)",
    "CREATE TABLE IF NOT EXISTS raw (
        probe INTEGER NOT NULL,
        at INTEGER NOT NULL,
        level INTEGER NOT NULL,
        latency_us INTEGER NOT NULL,
        reason TEXT,
        detail TEXT,
        PRIMARY KEY (probe, at)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS hourly (
        probe INTEGER NOT NULL,
        hour INTEGER NOT NULL,
        runs INTEGER NOT NULL,
        up INTEGER NOT NULL,
        degraded INTEGER NOT NULL,
        down INTEGER NOT NULL,
        latency_sum REAL NOT NULL,
        latency_max REAL NOT NULL,
        histogram BLOB NOT NULL,
        PRIMARY KEY (probe, hour)) WITHOUT ROWID",
];

/// A pool on the store, connected on first use. In memory (no path): one connection, kept
/// for the life of the process, since the database lives as long as its connection.
pub(super) fn pool(path: Option<&Path>) -> SqlitePool {
    let (options, connections) = match path {
        Some(path) => (
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal),
            4,
        ),
        None => (
            SqliteConnectOptions::from_str("sqlite::memory:").unwrap_or_else(|_| SqliteConnectOptions::new()),
            1,
        ),
    };
    let options = options
        .busy_timeout(Duration::from_secs(10))
        .pragma("cache_size", "-32768")
        .pragma("temp_store", "memory");
    SqlitePoolOptions::new()
        .max_connections(connections)
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(Duration::from_secs(30))
        .connect_lazy_with(options)
}

/// A run as the store holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRun {
    /// When it finished (Unix ms).
    pub at_ms: i64,
    /// Its level.
    pub level: crate::probe::Level,
    /// Its latency, seconds.
    pub latency: f64,
    /// Why, when not UP.
    pub reason: Option<String>,
    /// Its message, when not UP.
    pub detail: Option<String>,
}

/// Stored runs of `probe` since `since_ms`, newest first.
pub(super) async fn runs(pool: &SqlitePool, probe: &str, since_ms: i64, limit: u32) -> sqlx::Result<Vec<StoredRun>> {
    type Row = (i64, i64, i64, Option<String>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT r.at, r.level, r.latency_us, r.reason, r.detail FROM raw r JOIN probes p ON p.id = r.probe
         WHERE p.name = ?1 AND r.at >= ?2 ORDER BY r.at DESC LIMIT ?3",
    )
    .bind(probe)
    .bind(since_ms)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(at_ms, level, latency_us, reason, detail)| {
            Some(StoredRun {
                at_ms,
                level: level_of(level)?,
                latency: latency_us as f64 / 1e6,
                reason,
                detail,
            })
        })
        .collect())
}

/// The writer task: opens the store, reads it back into `history`, then writes and prunes.
pub(super) async fn run(
    pool: SqlitePool,
    config: config::History,
    mut receiver: mpsc::Receiver<Message>,
    pending: super::Pending,
    history: Weak<History>,
    ready: watch::Sender<Readiness>,
    failures: Counter,
) {
    let where_ = config
        .path
        .as_ref()
        .map_or("memory".to_string(), |p| p.display().to_string());
    let mut writer = match Writer::open(pool, &config, failures).await {
        Ok(w) => w,
        Err(e) => {
            let message = format!("cannot open the history store {where_}: {e}");
            error!("{message}");
            let _ = ready.send(Readiness::Failed(message));
            // Keep answering so callers never hang; the runs stay in memory only.
            while let Some(message) = receiver.recv().await {
                pending.lock_unpoisoned().clear();
                match message {
                    Message::Flush(done) | Message::Prune(_, done) => {
                        let _ = done.send(());
                    }
                    Message::Close(done) => {
                        let _ = done.send(());
                        return;
                    }
                }
            }
            return;
        }
    };
    let started = Instant::now();
    match writer.load(super::unix_ms(std::time::SystemTime::now())).await {
        Ok(loaded) => {
            let probes = loaded.len();
            if let Some(history) = history.upgrade() {
                history.merge_loaded(loaded);
            }
            info!(store = %where_, probes, took = ?started.elapsed(), "history loaded");
        }
        Err(e) => warn!(store = %where_, error = %e, "reading the history back failed; starting afresh"),
    }
    drop(history);
    writer.prune(super::unix_ms(std::time::SystemTime::now())).await;
    let _ = ready.send(Readiness::Ready);

    let mut flush = tokio::time::interval(FLUSH_EVERY);
    let mut prune = tokio::time::interval_at(tokio::time::Instant::now() + PRUNE_EVERY, PRUNE_EVERY);
    let mut batch: Vec<Run> = Vec::with_capacity(1024);
    let mut messages = Vec::with_capacity(1024);
    loop {
        tokio::select! {
            n = receiver.recv_many(&mut messages, 16) => {
                // What was recorded before these messages goes first.
                batch.append(&mut pending.lock_unpoisoned());
                if n == 0 {
                    writer.write(&mut batch).await;
                    return;
                }
                for message in messages.drain(..) {
                    match message {
                        Message::Flush(done) => {
                            writer.write(&mut batch).await;
                            let _ = done.send(());
                        }
                        Message::Prune(now_ms, done) => {
                            writer.write(&mut batch).await;
                            writer.prune(now_ms).await;
                            let _ = done.send(());
                        }
                        Message::Close(done) => {
                            writer.write(&mut batch).await;
                            let _ = done.send(());
                            return;
                        }
                    }
                }
                // While writes fail, only the flush timer tries again (once a second).
                if batch.len() >= BATCH_MAX && writer.failing.is_none() {
                    writer.write(&mut batch).await;
                }
            }
            _ = flush.tick() => {
                batch.append(&mut pending.lock_unpoisoned());
                writer.write(&mut batch).await;
            }
            _ = prune.tick() => writer.prune(super::unix_ms(std::time::SystemTime::now())).await,
        }
    }
}

/// An hour's aggregate as the writer keeps it until the hour is over.
#[derive(Clone, Copy, Default)]
struct OpenHour {
    counts: Counts,
    histogram: LatencyHistogram,
    dirty: bool,
}

struct Writer {
    pool: SqlitePool,
    raw_retention_ms: i64,
    hourly_retention_ms: i64,
    ids: HashMap<Arc<str>, i64>,
    levels: HashMap<i64, i64>,
    hours: HashMap<(i64, i64), OpenHour>,
    /// A file (not memory): a failed connection can be closed, the database stays.
    on_disk: bool,
    /// Every failed write or prune.
    failures: Counter,
    /// Since when writes fail, how many did, and when the log last said so.
    failing: Option<Failing>,
    /// Runs dropped from the store because writes kept failing.
    dropped: u64,
}

struct Failing {
    since: Instant,
    writes: u64,
    reported: Instant,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Writer {
    async fn open(pool: SqlitePool, config: &config::History, failures: Counter) -> sqlx::Result<Writer> {
        for statement in SCHEMA {
            sqlx::query(*statement).execute(&pool).await?;
        }
        let rows: Vec<(i64, String, Option<i64>)> = sqlx::query_as("SELECT id, name, level FROM probes")
            .fetch_all(&pool)
            .await?;
        let mut ids = HashMap::new();
        let mut levels = HashMap::new();
        for (id, name, level) in rows {
            ids.insert(Arc::from(name.as_str()), id);
            if let Some(level) = level {
                levels.insert(id, level);
            }
        }
        Ok(Writer {
            pool,
            raw_retention_ms: millis(config.raw_retention),
            hourly_retention_ms: millis(config.hourly_retention),
            ids,
            levels,
            hours: HashMap::new(),
            on_disk: config.path.is_some(),
            failures,
            failing: None,
            dropped: 0,
        })
    }

    /// Everything stored, per probe name: hours of the last day with their histograms, days
    /// before that, each probe's level and last failure.
    async fn load(&self, now_ms: i64) -> sqlx::Result<HashMap<String, ProbeHistory>> {
        let names: HashMap<i64, &str> = self.ids.iter().map(|(name, id)| (*id, &**name)).collect();
        let mut loaded: HashMap<String, ProbeHistory> = HashMap::new();
        let now_hour = now_ms.div_euclid(HOUR_MS);
        let recent = now_hour - super::buckets::HOURS as i64 + 1;
        let first = (now_hour.div_euclid(24) - super::buckets::DAYS as i64 + 1) * 24;

        type DayRow = (i64, i64, i64, i64, i64, i64, f64, f64);
        let days: Vec<DayRow> = sqlx::query_as(
            "SELECT probe, hour / 24, sum(runs), sum(up), sum(degraded), sum(down), sum(latency_sum), max(latency_max)
             FROM hourly WHERE hour >= ?1 AND hour < ?2 GROUP BY probe, hour / 24",
        )
        .bind(first)
        .bind(recent)
        .fetch_all(&self.pool)
        .await?;
        for (probe, day, runs, up, degraded, down, sum, max) in days {
            let Some(name) = names.get(&probe) else { continue };
            let counts = counts(runs, up, degraded, down, sum, max);
            loaded
                .entry(name.to_string())
                .or_default()
                .buckets
                .add_day(day, &counts);
        }

        type HourRow = (i64, i64, i64, i64, i64, i64, f64, f64, Vec<u8>);
        let hours: Vec<HourRow> = sqlx::query_as(
            "SELECT probe, hour, runs, up, degraded, down, latency_sum, latency_max, histogram
             FROM hourly WHERE hour >= ?1 ORDER BY hour",
        )
        .bind(recent)
        .fetch_all(&self.pool)
        .await?;
        for (probe, hour, runs, up, degraded, down, sum, max, histogram) in hours {
            let Some(name) = names.get(&probe) else { continue };
            let counts = counts(runs, up, degraded, down, sum, max);
            let histogram = LatencyHistogram::decode(&histogram).unwrap_or_default();
            loaded
                .entry(name.to_string())
                .or_default()
                .buckets
                .add_hour(hour, &counts, &histogram);
        }

        type ProbeRow = (
            i64,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<String>,
            Option<String>,
        );
        let probes: Vec<ProbeRow> =
            sqlx::query_as("SELECT id, level, level_since, failure_at, failure_reason, failure_detail FROM probes")
                .fetch_all(&self.pool)
                .await?;
        for (id, level, since, failure_at, reason, detail) in probes {
            let Some(name) = names.get(&id) else { continue };
            let entry = loaded.entry(name.to_string()).or_default();
            if let (Some(level), Some(since)) = (level.and_then(level_of), since) {
                entry.level = Some((level, since));
            }
            if let Some(at_ms) = failure_at {
                entry.last_failure = Some(Failure {
                    at_ms,
                    reason: reason.unwrap_or_default(),
                    detail: detail.unwrap_or_default(),
                });
            }
        }
        Ok(loaded)
    }

    /// Writes `batch` in one transaction and empties it. After a failure the runs stay in
    /// `batch` for the next attempt (the newest [`RETRY_MAX`] of them; the others are lost from
    /// the store, not from memory); the failure is counted, logged at once and then once a
    /// minute while it lasts, and the end of it is logged too.
    async fn write(&mut self, batch: &mut Vec<Run>) {
        if batch.is_empty() {
            return;
        }
        let started = Instant::now();
        match self.try_write(batch).await {
            Ok(()) => {
                debug!(runs = batch.len(), took = ?started.elapsed(), "history written");
                if let Some(failing) = self.failing.take() {
                    info!(
                        failed_writes = failing.writes,
                        failing_for = ?failing.since.elapsed(),
                        runs_dropped = self.dropped,
                        "writing history again"
                    );
                    self.dropped = 0;
                }
                batch.clear();
            }
            Err(e) => {
                self.failures.inc();
                let now = Instant::now();
                match &mut self.failing {
                    None => {
                        error!(error = %e, runs = batch.len(), "writing history failed; trying again every second");
                        self.failing = Some(Failing {
                            since: now,
                            writes: 1,
                            reported: now,
                        });
                    }
                    Some(failing) => {
                        failing.writes += 1;
                        if now.duration_since(failing.reported) >= REPORT_EVERY {
                            failing.reported = now;
                            error!(
                                error = %e,
                                failed_writes = failing.writes,
                                failing_for = ?failing.since.elapsed(),
                                runs_waiting = batch.len(),
                                runs_dropped = self.dropped,
                                "writing history still fails"
                            );
                        }
                    }
                }
                // The aggregates held may be ahead of the store now; read them again.
                self.hours.clear();
                if batch.len() > RETRY_MAX {
                    let excess = batch.len() - RETRY_MAX;
                    batch.drain(..excess);
                    self.dropped += excess as u64;
                }
            }
        }
    }

    /// A connection for one write; `done` with the result closes it on failure (on disk).
    async fn connection(&self) -> sqlx::Result<PoolConnection<Sqlite>> {
        self.pool.acquire().await
    }

    fn done<T>(&self, mut conn: PoolConnection<Sqlite>, result: sqlx::Result<T>) -> sqlx::Result<T> {
        if result.is_err() && self.on_disk {
            // Whatever the failure left behind on this connection goes with it.
            conn.close_on_drop();
        }
        result
    }

    async fn try_write(&mut self, batch: &[Run]) -> sqlx::Result<()> {
        let mut conn = self.connection().await?;
        let result = self.write_on(&mut conn, batch).await;
        self.done(conn, result)
    }

    async fn write_on(&mut self, conn: &mut PoolConnection<Sqlite>, batch: &[Run]) -> sqlx::Result<()> {
        let mut tx = conn.begin().await?;
        let mut ids = Vec::with_capacity(batch.len());
        for run in batch {
            ids.push(self.id(&mut tx, &run.probe).await?);
        }

        for (runs, ids) in batch.chunks(ROWS_PER_INSERT).zip(ids.chunks(ROWS_PER_INSERT)) {
            let mut insert: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT OR REPLACE INTO raw (probe, at, level, latency_us, reason, detail) ");
            insert.push_values(runs.iter().zip(ids), |mut row, (run, id)| {
                row.push_bind(*id)
                    .push_bind(run.at_ms)
                    .push_bind(level_code(run.level))
                    .push_bind(run.latency_us)
                    .push_bind(run.reason)
                    .push_bind(run.detail.as_deref());
            });
            insert.build().persistent(true).execute(&mut *tx).await?;
        }

        let mut changed_levels: HashMap<i64, (i64, i64)> = HashMap::new();
        let mut failures: HashMap<i64, &Run> = HashMap::new();
        for (run, &id) in batch.iter().zip(&ids) {
            let hour = run.at_ms.div_euclid(HOUR_MS);
            let open = match self.hours.entry((id, hour)) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(load_hour(&mut tx, id, hour).await?),
            };
            {
                let latency = run.latency_us as f64 / 1e6;
                open.counts.add(run.level, latency);
                open.histogram.observe(latency);
                open.dirty = true;
            }
            let code = level_code(run.level);
            if self.levels.get(&id) != Some(&code) {
                self.levels.insert(id, code);
                changed_levels.insert(id, (code, run.at_ms));
            }
            if run.level == crate::probe::Level::Down {
                failures.insert(id, run);
            }
        }
        // The hours this batch touched, written in multi-row statements: one round trip to
        // the store's thread per few hundred probes, not one per probe.
        let dirty: Vec<((i64, i64), Counts, Vec<u8>)> = self
            .hours
            .iter_mut()
            .filter(|(_, o)| o.dirty)
            .map(|(key, open)| {
                open.dirty = false;
                (*key, open.counts, open.histogram.encode())
            })
            .collect();
        for rows in dirty.chunks(ROWS_PER_INSERT) {
            let mut upsert: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT OR REPLACE INTO hourly (probe, hour, runs, up, degraded, down, latency_sum, latency_max, histogram) ",
            );
            upsert.push_values(rows, |mut row, ((id, hour), c, histogram)| {
                row.push_bind(*id)
                    .push_bind(*hour)
                    .push_bind(i64::from(c.runs))
                    .push_bind(i64::from(c.up))
                    .push_bind(i64::from(c.degraded))
                    .push_bind(i64::from(c.down))
                    .push_bind(c.latency_sum)
                    .push_bind(f64::from(c.latency_max))
                    .push_bind(histogram.clone());
            });
            upsert.build().execute(&mut *tx).await?;
        }
        for (id, (code, since)) in changed_levels {
            sqlx::query("UPDATE probes SET level = ?1, level_since = ?2 WHERE id = ?3")
                .bind(code)
                .bind(since)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        for (id, run) in failures {
            sqlx::query("UPDATE probes SET failure_at = ?1, failure_reason = ?2, failure_detail = ?3 WHERE id = ?4")
                .bind(run.at_ms)
                .bind(run.reason.unwrap_or("internal"))
                .bind(run.detail.as_deref().unwrap_or(""))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        // Hours before the previous one are complete: forget them (a late run reads its hour
        // back from the store).
        if let Some(newest) = batch.iter().map(|r| r.at_ms.div_euclid(HOUR_MS)).max() {
            self.hours.retain(|(_, hour), _| *hour >= newest - 1);
        }
        Ok(())
    }

    async fn id(&mut self, tx: &mut Transaction<'_, Sqlite>, name: &Arc<str>) -> sqlx::Result<i64> {
        if let Some(id) = self.ids.get(name) {
            return Ok(*id);
        }
        sqlx::query("INSERT OR IGNORE INTO probes (name) VALUES (?1)")
            .bind(&**name)
            .execute(&mut **tx)
            .await?;
        let (id,): (i64,) = sqlx::query_as("SELECT id FROM probes WHERE name = ?1")
            .bind(&**name)
            .fetch_one(&mut **tx)
            .await?;
        self.ids.insert(name.clone(), id);
        Ok(id)
    }

    /// Deletes single runs older than the raw retention and hours older than the hourly one.
    async fn prune(&mut self, now_ms: i64) {
        let started = Instant::now();
        let raw_before = now_ms.saturating_sub(self.raw_retention_ms);
        let hour_before = now_ms.saturating_sub(self.hourly_retention_ms).div_euclid(HOUR_MS);
        let mut conn = match self.connection().await {
            Ok(conn) => conn,
            Err(e) => {
                self.failures.inc();
                return warn!(error = %e, "pruning the history failed");
            }
        };
        let ids: Vec<i64> = self.ids.values().copied().collect();
        let result: sqlx::Result<()> = async {
            let mut tx = conn.begin().await?;
            // Per probe: a range of the primary key each, never a scan of the table.
            for id in &ids {
                sqlx::query("DELETE FROM raw WHERE probe = ?1 AND at < ?2")
                    .bind(*id)
                    .bind(raw_before)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM hourly WHERE probe = ?1 AND hour < ?2")
                    .bind(*id)
                    .bind(hour_before)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        }
        .await;
        match self.done(conn, result) {
            Ok(()) => debug!(took = ?started.elapsed(), "history pruned"),
            Err(e) => {
                self.failures.inc();
                warn!(error = %e, "pruning the history failed");
            }
        }
    }
}

fn counts(runs: i64, up: i64, degraded: i64, down: i64, sum: f64, max: f64) -> Counts {
    let n = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
    Counts {
        runs: n(runs),
        up: n(up),
        degraded: n(degraded),
        down: n(down),
        latency_sum: sum,
        latency_max: max as f32,
    }
}

async fn load_hour(tx: &mut Transaction<'_, Sqlite>, id: i64, hour: i64) -> sqlx::Result<OpenHour> {
    type Row = (i64, i64, i64, i64, f64, f64, Vec<u8>);
    let row: Option<Row> = sqlx::query_as(
        "SELECT runs, up, degraded, down, latency_sum, latency_max, histogram FROM hourly WHERE probe = ?1 AND hour = ?2",
    )
    .bind(id)
    .bind(hour)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(
        row.map_or_else(OpenHour::default, |(runs, up, degraded, down, sum, max, histogram)| {
            OpenHour {
                counts: counts(runs, up, degraded, down, sum, max),
                histogram: LatencyHistogram::decode(&histogram).unwrap_or_default(),
                dirty: false,
            }
        }),
    )
}
