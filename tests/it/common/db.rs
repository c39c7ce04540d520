//! Real PostgreSQL and MariaDB servers for tests: each started from Debian's binaries in a
//! temporary folder, on 127.0.0.1 and a free port, and stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    super::closed_port()
}

fn wait_for_port(port: u16, child: &mut Child, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}) before listening:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {port} within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(command: &mut Command, what: &str) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A PostgreSQL server; user `vigil`, password `vigil-pw`, database `app`.
pub struct Postgres {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|d| d.filter_map(Result::ok).map(|e| e.path().join("bin")).find(|p| p.join("initdb").exists()))
            .unwrap_or_else(|| panic!("PostgreSQL is not installed: install Debian's `postgresql` package (bash scripts/install-test-deps.sh does)"));
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::write(dir.path().join("pw"), "vigil-pw\n").unwrap();
        // PostgreSQL refuses to run as root: its files belong to the `postgres` user.
        run(
            Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()),
            "chown",
        );
        run(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(bin.join("initdb"))
                .args(["-D"])
                .arg(&data)
                .args(["-U", "vigil", "--auth=scram-sha-256", "--no-sync", "--pwfile"])
                .arg(dir.path().join("pw")),
            "initdb",
        );
        let port = free_port();
        let log = dir.path().join("postgres.log");
        let mut child = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                &format!("port={port}"),
            ])
            .arg("-k")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_for_port(port, &mut child, "postgres", &log);
        let server = Postgres { port, child, _dir: dir };
        server.psql("postgres", "CREATE DATABASE app");
        server
    }

    /// Runs SQL as `vigil` in `database` with psql.
    pub fn psql(&self, database: &str, sql: &str) {
        run(
            Command::new("psql")
                .env("PGPASSWORD", "vigil-pw")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "vigil",
                    "-d",
                    database,
                ])
                .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql]),
            "psql",
        );
    }

    pub fn dsn(&self, password: &str) -> String {
        format!("postgres://vigil:{password}@127.0.0.1:{}/app", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGTERM to runuser is forwarded to postgres.
        stop(&mut self.child);
    }
}

/// Stops a server: SIGTERM, up to 10 s for a clean stop, then SIGKILL.
fn stop(child: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A MariaDB server; user `vigil`@`%`, password `vigil-pw`, database `app`.
pub struct MariaDb {
    pub port: u16,
    socket: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl MariaDb {
    pub fn start() -> MariaDb {
        let missing = || {
            panic!(
                "MariaDB is not installed: install Debian's `mariadb-server` package (bash scripts/install-test-deps.sh does)"
            )
        };
        if !Path::new("/usr/sbin/mariadbd").exists() {
            missing();
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        run(
            Command::new("mariadb-install-db")
                .args([
                    "--no-defaults",
                    "--user=root",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ])
                .arg(format!("--datadir={}", data.display())),
            "mariadb-install-db",
        );
        let port = free_port();
        let socket = dir.path().join("mysqld.sock");
        let log = dir.path().join("mariadb.log");
        let mut child = Command::new("/usr/sbin/mariadbd")
            .args([
                "--no-defaults",
                "--user=root",
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--innodb-flush-log-at-trx-commit=0",
            ])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", dir.path().join("mysqld.pid").display()))
            .arg(format!("--port={port}"))
            .arg(format!("--log-error={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port, &mut child, "mariadbd", &log);
        let server = MariaDb {
            port,
            socket,
            child,
            _dir: dir,
        };
        server.sql("CREATE DATABASE app; CREATE USER 'vigil'@'%' IDENTIFIED BY 'vigil-pw'; GRANT SELECT, INSERT, CREATE, DROP ON app.* TO 'vigil'@'%';");
        server
    }

    /// Runs SQL as root over the socket.
    pub fn sql(&self, sql: &str) {
        run(
            Command::new("mariadb")
                .args(["--no-defaults", "-u", "root"])
                .arg(format!("--socket={}", self.socket.display()))
                .args(["-e", sql]),
            "mariadb",
        );
    }

    pub fn dsn(&self, password: &str) -> String {
        format!("mariadb://vigil:{password}@127.0.0.1:{}/app", self.port)
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}
