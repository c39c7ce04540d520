//! A real DNS server for the dns kind's tests: Debian's `dnsmasq` (package `dnsmasq-base`) on
//! 127.0.0.1, UDP and TCP, with records given by the test (no upstream, no hosts file, no
//! resolv.conf), killed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// dnsmasq on 127.0.0.1:`port`.
pub struct Dnsmasq {
    child: Child,
    /// Its port, UDP and TCP.
    pub port: u16,
}

impl Dnsmasq {
    /// Starts it with `records` (dnsmasq options such as `--host-record=...`) and waits until
    /// it listens.
    pub fn start(records: &[&str]) -> Dnsmasq {
        let port = crate::stack::free_port();
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--pid-file=",
                "--user=root",
                &format!("--port={port}"),
            ])
            .args(records)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("dnsmasq ({e}): install the Debian package `dnsmasq-base`"));
        let server = Dnsmasq { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "dnsmasq did not listen on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// `127.0.0.1:<port>`.
    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
