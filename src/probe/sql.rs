//! The `sql` kind: a query that returns the newest timestamp of a table (PostgreSQL,
//! MySQL/MariaDB, SQLite). Each probe keeps at most one connection, opened on first use, reused
//! while it works, closed after any failure or a cancelled (timed out) attempt; with a statement
//! timeout on the server, a hung database holds one connection per probe at most.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{AssertSqlSafe, ConnectOptions, Executor, Row};
use time::{Date, OffsetDateTime, PrimitiveDateTime};
use tokio::sync::{Mutex, OwnedSemaphorePermit};

use super::freshness::{self, Freshness, Thresholds};
use super::{Built, CheckContext, Failure, Family, ProbeKind, Reason, Role, Verdict};
use crate::secret::{Secret, SecretSource};
use crate::spec::BuildContext;
use crate::transport::connect::Sockets;

/// Config of an `sql` probe.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Connection string (`postgres://`, `mysql://`, `mariadb://`, `sqlite://`), inline or `{file: PATH}`.
    pub dsn: Option<SecretSource>,
    /// File holding the connection string (same as `dsn: {file: PATH}`).
    pub dsn_file: Option<PathBuf>,
    /// Environment variable holding the connection string.
    pub dsn_env: Option<String>,
    /// A query returning one row with one timestamp (or NULL: no data yet).
    pub query: String,
    /// Longest a statement may run on the server (default: the probe's timeout).
    #[serde(default, with = "crate::spec::values::duration")]
    pub statement_timeout: Option<Duration>,
    /// Older than this: DOWN.
    #[serde(default, with = "crate::spec::values::duration")]
    pub max_age: Option<Duration>,
    /// Older than this: DEGRADED.
    #[serde(default, with = "crate::spec::values::duration")]
    pub warn_age: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Driver {
    Postgres,
    MySql,
    Sqlite,
}

#[derive(Debug)]
enum Connection {
    Postgres(PgConnection),
    MySql(MySqlConnection),
    Sqlite(SqliteConnection),
}

/// An `sql` probe's compiled settings.
#[derive(Debug)]
pub struct Sql {
    driver: Driver,
    dsn: Secret,
    query: String,
    statement_timeout: Option<Duration>,
    thresholds: Thresholds,
    /// The one connection, while it is idle, with its place in the probes' descriptor budget;
    /// an attempt takes it out and puts it back only when it succeeded, so a cancelled attempt
    /// closes it (and gives its place back).
    connection: Mutex<Option<(Connection, Option<OwnedSemaphorePermit>)>>,
}

fn driver_of(dsn: &str) -> Result<(Driver, String), String> {
    let scheme = dsn
        .split_once(':')
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default();
    match scheme.as_str() {
        "postgres" | "postgresql" => Ok((Driver::Postgres, dsn.to_string())),
        "mysql" => Ok((Driver::MySql, dsn.to_string())),
        "mariadb" => Ok((Driver::MySql, format!("mysql{}", &dsn["mariadb".len()..]))),
        "sqlite" => Ok((Driver::Sqlite, dsn.to_string())),
        _ => Err("the connection string must start with postgres://, mysql://, mariadb:// or sqlite:".to_string()),
    }
}

impl ProbeKind for Sql {
    const NAME: &'static str = "sql";
    /// A query to the database, and the age of what it found.
    const REASONS: &'static [Reason] = &[
        Reason::Connect,
        Reason::Tls,
        Reason::Protocol,
        Reason::Auth,
        Reason::Missing,
        Reason::Query,
        Reason::Empty,
        Reason::Stale,
    ];
    const FAMILIES: &'static [Family<Self>] = &[Freshness::<Self>::NEWEST, Freshness::<Self>::NEWEST_READ];

    type Spec = Spec;
    type Obs = freshness::Obs;
    type Kept = freshness::Kept;

    fn build(spec: Spec, cx: &mut BuildContext, path: &str, role: Role) -> Option<Built<Self>> {
        build(spec, cx, path, role)
    }

    /// One attempt: run the query, read the timestamp, judge its age.
    async fn check(&self, _target: &str, cx: &CheckContext, obs: &mut freshness::Obs) -> Verdict {
        match newest(self, &cx.sockets).await {
            Ok(newest) => freshness::assess(newest, &self.thresholds, SystemTime::now(), obs),
            Err(f) => f.into(),
        }
    }

    fn keep(kept: &mut freshness::Kept, obs: &freshness::Obs) {
        freshness::keep(kept, obs);
    }
}

fn build(spec: Spec, ctx: &mut BuildContext, path: &str, role: Role) -> Option<Built<Sql>> {
    if role == Role::Module {
        ctx.error(path, "an sql probe cannot be a /probe module");
        return None;
    }
    let (dsn_key, dsn) = match (&spec.dsn, &spec.dsn_file, &spec.dsn_env) {
        (Some(source), None, None) => (format!("{path}.dsn"), ctx.secret(format!("{path}.dsn"), source)),
        (None, Some(file), None) => {
            let key = format!("{path}.dsn_file");
            let secret = ctx.secret(&key, &SecretSource::File { file: file.clone() });
            (key, secret)
        }
        (None, None, Some(var)) => {
            let key = format!("{path}.dsn_env");
            match std::env::var(var) {
                Ok(value) => (key, Some(Secret::new(value))),
                Err(_) => {
                    ctx.error(&key, format!("environment variable {var} is not set"));
                    (key, None)
                }
            }
        }
        (None, None, None) => {
            ctx.error(path, "missing key `dsn` (or `dsn_file`, `dsn_env`)");
            return None;
        }
        _ => {
            ctx.error(path, "set only one of dsn, dsn_file, dsn_env");
            return None;
        }
    };
    if spec.query.trim().is_empty() {
        ctx.error(format!("{path}.query"), "must not be empty");
    }
    let thresholds = freshness::thresholds(spec.max_age, spec.warn_age, ctx, path);
    let dsn = dsn?;
    let (driver, dsn) = match driver_of(dsn.expose()) {
        Ok((driver, normalised)) => (driver, Secret::new(normalised)),
        Err(e) => {
            ctx.error(&dsn_key, e);
            return None;
        }
    };
    // Parse now, so that a malformed connection string fails at load (the message never
    // repeats the string itself).
    let parsed = match driver {
        Driver::Postgres => PgConnectOptions::from_str(dsn.expose()).map(drop),
        Driver::MySql => MySqlConnectOptions::from_str(dsn.expose()).map(drop),
        Driver::Sqlite => SqliteConnectOptions::from_str(dsn.expose()).map(drop),
    };
    if parsed.is_err() {
        ctx.error(&dsn_key, "the connection string cannot be parsed");
    }
    let target = ctx.secret_names().redact_target(dsn.expose());
    let thresholds = thresholds?;
    Some(Built {
        settings: Sql {
            driver,
            dsn,
            query: spec.query,
            statement_timeout: spec.statement_timeout,
            thresholds,
            connection: Mutex::new(None),
        },
        target: Some(target),
        freshness: Some(thresholds),
    })
}

async fn connect(settings: &Sql) -> Result<Connection, Failure> {
    let unparsable = |_| Failure::new(Reason::Query, "the connection string cannot be parsed");
    let timeout_ms = settings.statement_timeout.map(|d| d.as_millis().max(1));
    Ok(match settings.driver {
        Driver::Postgres => {
            let mut options = PgConnectOptions::from_str(settings.dsn.expose()).map_err(unparsable)?;
            options = options.application_name("vigil");
            if let Some(ms) = timeout_ms {
                options = options.options([("statement_timeout", ms.to_string())]);
            }
            Connection::Postgres(options.connect().await.map_err(failure)?)
        }
        Driver::MySql => {
            let options = MySqlConnectOptions::from_str(settings.dsn.expose()).map_err(unparsable)?;
            let mut conn = options.connect().await.map_err(failure)?;
            if let Some(ms) = timeout_ms {
                // MariaDB counts in seconds, MySQL in milliseconds; each refuses the other's.
                let mariadb = format!("SET SESSION max_statement_time = {}", ms as f64 / 1000.0);
                if conn.execute(AssertSqlSafe(mariadb)).await.is_err() {
                    let mysql = format!("SET SESSION max_execution_time = {ms}");
                    let _ = conn.execute(AssertSqlSafe(mysql)).await;
                }
            }
            Connection::MySql(conn)
        }
        Driver::Sqlite => {
            // The exporter only reads: the file is opened read-only and never created.
            let mut options = SqliteConnectOptions::from_str(settings.dsn.expose())
                .map_err(unparsable)?
                .read_only(true);
            if let Some(d) = settings.statement_timeout {
                options = options.busy_timeout(d);
            }
            Connection::Sqlite(options.connect().await.map_err(failure)?)
        }
    })
}

async fn newest(settings: &Sql, sockets: &Sockets) -> Result<Option<SystemTime>, Failure> {
    let mut slot = settings.connection.lock().await;
    let (mut conn, permit) = match slot.take() {
        Some(held) => held,
        None => {
            let permit = sockets.acquire().await;
            (connect(settings).await?, permit)
        }
    };
    // The query comes from the config, written by the operator: it is the point of the probe.
    let query = AssertSqlSafe(settings.query.clone());
    let result = match &mut conn {
        Connection::Postgres(c) => c
            .fetch_optional(query)
            .await
            .map_err(failure)
            .and_then(|r| r.map_or(Ok(None), |r| decode(&r))),
        Connection::MySql(c) => c
            .fetch_optional(query)
            .await
            .map_err(failure)
            .and_then(|r| r.map_or(Ok(None), |r| decode(&r))),
        Connection::Sqlite(c) => c
            .fetch_optional(query)
            .await
            .map_err(failure)
            .and_then(|r| r.map_or(Ok(None), |r| decode(&r))),
    };
    if result.is_ok() {
        *slot = Some((conn, permit));
    }
    result
}

/// Reads the first column as a time: a timestamp with or without zone (taken as UTC), a date,
/// seconds or milliseconds since the epoch, or RFC 3339 / `YYYY-MM-DD HH:MM:SS` text.
fn decode<R>(row: &R) -> Result<Option<SystemTime>, Failure>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<OffsetDateTime>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<PrimitiveDateTime>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<Date>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i32>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<f64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    if row.columns().is_empty() {
        return Err(Failure::new(Reason::Query, "the query returns no column"));
    }
    let to_system = |t: OffsetDateTime| SystemTime::from(t);
    if let Ok(v) = row.try_get::<Option<OffsetDateTime>, _>(0) {
        return Ok(v.map(to_system));
    }
    if let Ok(v) = row.try_get::<Option<PrimitiveDateTime>, _>(0) {
        return Ok(v.map(|t| to_system(t.assume_utc())));
    }
    if let Ok(v) = row.try_get::<Option<Date>, _>(0) {
        return Ok(v.map(|d| to_system(d.midnight().assume_utc())));
    }
    if let Ok(v) = row.try_get::<Option<i64>, _>(0) {
        return v
            .map(|n| freshness::from_epoch(n as f64).ok_or_else(|| not_a_time(&n.to_string())))
            .transpose();
    }
    if let Ok(v) = row.try_get::<Option<i32>, _>(0) {
        return v
            .map(|n| freshness::from_epoch(f64::from(n)).ok_or_else(|| not_a_time(&n.to_string())))
            .transpose();
    }
    if let Ok(v) = row.try_get::<Option<f64>, _>(0) {
        return v
            .map(|n| freshness::from_epoch(n).ok_or_else(|| not_a_time(&n.to_string())))
            .transpose();
    }
    if let Ok(v) = row.try_get::<Option<String>, _>(0) {
        return v
            .map(|text| parse_text(&text).ok_or_else(|| not_a_time(&text)))
            .transpose();
    }
    Err(Failure::new(
        Reason::Query,
        "the first column is not a timestamp, a date, a number or text",
    ))
}

fn not_a_time(value: &str) -> Failure {
    let shown: String = value.chars().take(40).collect();
    Failure::new(Reason::Query, format!("`{shown}` is not a time"))
}

fn parse_text(text: &str) -> Option<SystemTime> {
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    let text = text.trim();
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(t.into());
    }
    let formats = [
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond]"),
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond]"),
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
    ];
    formats
        .iter()
        .find_map(|f| PrimitiveDateTime::parse(text, f).ok())
        .map(|t| t.assume_utc().into())
}

/// Maps a database error to its reason; the message never carries the connection string.
fn failure(error: sqlx::Error) -> Failure {
    match &error {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let reason = match db
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .map(|e| e.number())
            {
                // MySQL/MariaDB error numbers: access denied; unknown table or database; timed out.
                Some(1044 | 1045 | 1698) => Reason::Auth,
                Some(1146 | 1049) => Reason::Missing,
                Some(1969 | 3024) => Reason::Timeout,
                Some(_) => Reason::Query,
                // SQLSTATE (PostgreSQL): invalid authorization; undefined table or database;
                // statement cancelled by statement_timeout.
                None => match code.as_str() {
                    "28000" | "28P01" => Reason::Auth,
                    "42P01" | "3D000" => Reason::Missing,
                    "57014" => Reason::Timeout,
                    _ => Reason::Query,
                },
            };
            Failure::new(reason, format!("{} ({code})", db.message()))
        }
        sqlx::Error::Io(e) => Failure::new(Reason::Connect, format!("database connection: {e}")),
        sqlx::Error::Tls(e) => Failure::new(Reason::Tls, format!("database TLS: {e}")),
        sqlx::Error::PoolTimedOut => Failure::new(Reason::Timeout, "no database connection within the timeout"),
        sqlx::Error::Protocol(e) => Failure::new(Reason::Protocol, format!("database protocol: {e}")),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::TypeNotFound { .. } => {
            Failure::new(Reason::Query, format!("cannot read the result: {error}"))
        }
        _ => Failure::new(Reason::Query, format!("database: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drivers_from_schemes() {
        assert_eq!(driver_of("postgres://u@h/db").map(|d| d.0), Ok(Driver::Postgres));
        assert_eq!(
            driver_of("mariadb://u@h/db"),
            Ok((Driver::MySql, "mysql://u@h/db".into()))
        );
        assert_eq!(driver_of("sqlite:///tmp/x.db").map(|d| d.0), Ok(Driver::Sqlite));
        assert!(driver_of("oracle://h").is_err());
    }

    #[test]
    fn text_timestamps() {
        let at = |s| {
            parse_text(s).map(|t| {
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            })
        };
        assert_eq!(at("2026-01-01T00:00:00Z"), Some(1_767_225_600));
        assert_eq!(at("2026-01-01 00:00:00"), Some(1_767_225_600));
        assert_eq!(at("2026-01-01 00:00:00.250"), Some(1_767_225_600));
        assert_eq!(at("yesterday"), None);
    }
}
