//! The `sql` kind against real PostgreSQL and MariaDB servers (started by the test from Debian's
//! packages, on 127.0.0.1) and SQLite files: fresh, stale, empty, broken queries, wrong
//! passwords, missing tables and a server that is down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::db::{MariaDb, Postgres};
use vigil::probe::{Level, Reason};

/// The cases every server runs: (probe name, query, expected level, expected reason).
fn cases() -> Vec<(&'static str, &'static str, Level, Option<Reason>)> {
    vec![
        (
            "fresh",
            "SELECT max(created_at) FROM orders WHERE kind = 'fresh'",
            Level::Up,
            None,
        ),
        (
            "ageing",
            "SELECT max(created_at) FROM orders WHERE kind = 'ageing'",
            Level::Degraded,
            Some(Reason::Stale),
        ),
        (
            "stale",
            "SELECT max(created_at) FROM orders WHERE kind = 'stale'",
            Level::Down,
            Some(Reason::Stale),
        ),
        (
            "empty",
            "SELECT max(created_at) FROM orders WHERE kind = 'none'",
            Level::Down,
            Some(Reason::Empty),
        ),
        (
            "no-rows",
            "SELECT created_at FROM orders WHERE kind = 'none'",
            Level::Down,
            Some(Reason::Empty),
        ),
        (
            "syntax",
            "SELEC max(created_at) FROM orders",
            Level::Down,
            Some(Reason::Query),
        ),
        (
            "no-table",
            "SELECT max(created_at) FROM nowhere",
            Level::Down,
            Some(Reason::Missing),
        ),
        ("not-a-time", "SELECT 'soon'", Level::Down, Some(Reason::Query)),
        ("epoch", "SELECT 1700000000", Level::Down, Some(Reason::Stale)),
    ]
}

fn config_for(dsn: &str, wrong_dsn: &str, down_dsn: &str) -> String {
    let mut text = String::from("defaults: {timeout: 5s}\nprobes:\n");
    for (name, query, _, _) in cases() {
        text +=
            &format!("  - {{name: {name}, kind: sql, dsn: '{dsn}', query: \"{query}\", max_age: 5m, warn_age: 3m}}\n");
    }
    text += &format!("  - {{name: wrong-password, kind: sql, dsn: '{wrong_dsn}', query: 'SELECT 1', max_age: 5m}}\n");
    text += &format!("  - {{name: server-down, kind: sql, dsn: '{down_dsn}', query: 'SELECT 1', max_age: 5m}}\n");
    text
}

async fn check_all(config: &vigil::config::Config) {
    for (name, _, level, reason) in cases() {
        let outcome = common::run(config, name).await;
        assert_eq!((outcome.level, outcome.reason), (level, reason), "{name}: {outcome:?}");
    }
    let wrong = common::run(config, "wrong-password").await;
    assert_eq!(
        (wrong.level, wrong.reason),
        (Level::Down, Some(Reason::Auth)),
        "{wrong:?}"
    );
    assert!(!wrong.detail.contains("not-the-password"));
    let down = common::run(config, "server-down").await;
    assert_eq!(
        (down.level, down.reason),
        (Level::Down, Some(Reason::Connect)),
        "{down:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql() {
    let server = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    server.psql(
        "app",
        "CREATE TABLE orders (kind text, created_at timestamptz);
         INSERT INTO orders VALUES ('fresh', now() - interval '10 seconds'), ('fresh', now() - interval '1 hour'),
           ('ageing', now() - interval '4 minutes'), ('stale', now() - interval '2 hours');",
    );
    let closed = common::closed_port();
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &config_for(
            &server.dsn("vigil-pw"),
            &server.dsn("not-the-password"),
            &format!("postgres://vigil:x@127.0.0.1:{closed}/app"),
        ),
        dir.path(),
    );
    check_all(&config).await;

    // Timestamps without zone are read as UTC; statement_timeout stops a query on the server.
    server.psql(
        "app",
        "CREATE TABLE plain (at timestamp); INSERT INTO plain VALUES (now() at time zone 'utc');",
    );
    let config = common::config(
        &format!(
            "probes:\n\
             - {{name: plain, kind: sql, dsn: '{dsn}', query: 'SELECT max(at) FROM plain', max_age: 1m}}\n\
             - {{name: hung, kind: sql, dsn: '{dsn}', query: 'SELECT now() FROM pg_sleep(3)', statement_timeout: 300ms, max_age: 1m}}\n",
            dsn = server.dsn("vigil-pw")
        ),
        dir.path(),
    );
    assert_eq!(common::run(&config, "plain").await.level, Level::Up);
    let hung = common::run(&config, "hung").await;
    assert_eq!(
        (hung.level, hung.reason),
        (Level::Down, Some(Reason::Timeout)),
        "{hung:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb() {
    let server = tokio::task::spawn_blocking(MariaDb::start).await.unwrap();
    server.sql(
        "CREATE TABLE app.orders (kind varchar(10), created_at datetime(3));
         INSERT INTO app.orders VALUES ('fresh', utc_timestamp(3) - interval 10 second), ('ageing', utc_timestamp(3) - interval 4 minute),
           ('stale', utc_timestamp(3) - interval 2 hour);",
    );
    let closed = common::closed_port();
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        &config_for(
            &server.dsn("vigil-pw"),
            &server.dsn("not-the-password"),
            &format!("mysql://vigil:x@127.0.0.1:{closed}/app"),
        ),
        dir.path(),
    );
    check_all(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.db");
    // Written with vigil's own SQLite driver; the probe opens the file read-only.
    {
        use sqlx::ConnectOptions;
        use sqlx::sqlite::SqliteConnectOptions;
        let mut conn = SqliteConnectOptions::new()
            .filename(&file)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::raw_sql(
            "CREATE TABLE orders (kind TEXT, created_at TEXT);
             INSERT INTO orders VALUES ('fresh', strftime('%Y-%m-%d %H:%M:%f', 'now', '-10 seconds')),
               ('ageing', datetime('now', '-4 minutes')), ('stale', datetime('now', '-2 hours'));",
        )
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let dsn = format!("sqlite://{}", file.display());
    let missing = format!("sqlite://{}", dir.path().join("missing.db").display());
    let mut text = String::from("probes:\n");
    for (name, query, _, _) in cases() {
        text +=
            &format!("  - {{name: {name}, kind: sql, dsn: '{dsn}', query: \"{query}\", max_age: 5m, warn_age: 3m}}\n");
    }
    text += &format!("  - {{name: missing-file, kind: sql, dsn: '{missing}', query: 'SELECT 1', max_age: 5m}}\n");
    let config = common::config(&text, dir.path());
    for (name, _, level, reason) in cases() {
        // SQLite has no schema error for a missing table distinct from others: it says so in text.
        let outcome = common::run(&config, name).await;
        let reason = if name == "no-table" { outcome.reason } else { reason };
        assert_eq!((outcome.level, outcome.reason), (level, reason), "{name}: {outcome:?}");
    }
    let missing = common::run(&config, "missing-file").await;
    assert_eq!(
        missing.level,
        Level::Down,
        "a missing file is never created by a read-only probe"
    );
    assert!(!dir.path().join("missing.db").exists());
}

#[test]
fn dsn_secrets_stay_secret() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dsn"), "postgres://vigil:pg-SECRET@127.0.0.1:1/app\n").unwrap();
    let config = common::config(
        "probes:\n  - {name: orders, kind: sql, dsn_file: dsn, query: 'SELECT max(created_at) FROM orders', max_age: 10m}\n",
        dir.path(),
    );
    assert_eq!(config.probes[0].display_target, "postgres://127.0.0.1:1/app");
    assert!(!format!("{config:?}").contains("pg-SECRET"));
    let errors = vigil::config::Config::parse(
        "probes:\n  - {name: a, kind: sql, dsn: 'oracle://x', query: 'SELECT 1', max_age: 1m}\n  - {name: b, kind: sql, dsn_env: VIGIL_TEST_NO_SUCH_VAR, query: 'SELECT 1', max_age: 1m}\n",
        dir.path(),
    )
    .expect_err("invalid")
    .to_string();
    assert!(
        errors.contains("probes[0].dsn: the connection string must start with postgres://"),
        "{errors}"
    );
    assert!(
        errors.contains("probes[1].dsn_env: environment variable VIGIL_TEST_NO_SUCH_VAR is not set"),
        "{errors}"
    );
}
