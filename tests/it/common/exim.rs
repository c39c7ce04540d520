//! A real SMTP server for the tcp kind's STARTTLS tests: Debian's exim4 (package
//! `exim4-daemon-light`) as a foreground daemon on 127.0.0.1 with a config, spool and logs of
//! its own under a temporary folder and the certificate the test gives; it accepts no mail.
//! Killed when dropped.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// exim on 127.0.0.1:`port`.
pub struct Exim {
    child: Child,
    dir: tempfile::TempDir,
    /// Its SMTP port.
    pub port: u16,
}

impl Exim {
    /// Starts it with `cert` and `key` (PEM) and waits until it listens.
    pub fn start(cert: &Path, key: &Path) -> Exim {
        let dir = tempfile::tempdir().unwrap();
        // exim gives up root for a config of its own (-C): its user must read and write here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let root = dir.path().display().to_string();
        for (from, to) in [(cert, "cert.pem"), (key, "key.pem")] {
            let path = dir.path().join(to);
            std::fs::copy(from, &path).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let port = crate::stack::free_port();
        let conf = format!(
            "primary_hostname = vigil.test\nlocal_interfaces = 127.0.0.1\nspool_directory = {root}/spool\n\
             log_file_path = {root}/%slog\npid_file_path = {root}/exim.pid\nkeep_environment =\n\
             tls_advertise_hosts = *\ntls_certificate = {root}/cert.pem\ntls_privatekey = {root}/key.pem\n\
             acl_smtp_rcpt = refuse\nbegin acl\nrefuse:\n  deny\n"
        );
        std::fs::write(dir.path().join("exim.conf"), conf).unwrap();
        let child = Command::new("exim4")
            .args(["-bdf", "-oX", &port.to_string(), "-C"])
            .arg(dir.path().join("exim.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("exim4 ({e}): install the Debian package `exim4-daemon-light`"));
        let mut server = Exim { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("exim4 exited ({status}):\n{}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "exim4 did not listen on port {port}:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// Its main and panic logs.
    pub fn log(&self) -> String {
        ["mainlog", "paniclog"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Exim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
