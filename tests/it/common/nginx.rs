//! A real HTTP/2 server for the http kind's tests: Debian's `nginx` on 127.0.0.1, one port with
//! TLS and ALPN (`h2`, `http/1.1`), one speaking h2c only (HTTP/2 with prior knowledge) and one
//! HTTP/1.1 only, with the certificate the test gives; stopped when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// nginx, single process, everything under a temporary folder.
pub struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
    /// TLS, HTTP/2 and HTTP/1.1 by ALPN.
    pub tls: u16,
    /// Plain HTTP/2 only (h2c, prior knowledge).
    pub h2c: u16,
    /// Plain HTTP/1.1.
    pub plain: u16,
}

impl Nginx {
    /// Starts it with `cert` and `key` (PEM files) and waits until it listens. Every port
    /// answers `/` with `hello h2` and `/redir` with a 302 to `/`.
    pub fn start(cert: &Path, key: &Path) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let (tls, h2c, plain) = (
            crate::stack::free_port(),
            crate::stack::free_port(),
            crate::stack::free_port(),
        );
        let root = dir.path().display();
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {root}/nginx.pid;\nerror_log {root}/error.log warn;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log {root}/access.log;\n  client_body_temp_path {root}/body;\n  \
             proxy_temp_path {root}/proxy;\n  fastcgi_temp_path {root}/fastcgi;\n  uwsgi_temp_path {root}/uwsgi;\n  \
             scgi_temp_path {root}/scgi;\n  default_type text/plain;\n\
               server {{\n    listen 127.0.0.1:{tls} ssl http2;\n    ssl_certificate {cert};\n    \
             ssl_certificate_key {key};\n    location / {{ return 200 \"hello h2\\n\"; }}\n    \
             location /redir {{ return 302 /; }}\n  }}\n\
               server {{\n    listen 127.0.0.1:{h2c} http2;\n    location / {{ return 200 \"hello h2\\n\"; }}\n  }}\n\
               server {{\n    listen 127.0.0.1:{plain};\n    location / {{ return 200 \"hello h2\\n\"; }}\n  }}\n}}\n",
            cert = cert.display(),
            key = key.display(),
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("nginx ({e}): install the Debian package `nginx`"));
        let mut server = Nginx {
            child,
            _dir: dir,
            tls,
            h2c,
            plain,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in [tls, h2c, plain] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Ok(Some(status)) = server.child.try_wait() {
                    let log = std::fs::read_to_string(server._dir.path().join("error.log")).unwrap_or_default();
                    panic!("nginx exited ({status}):\n{log}");
                }
                assert!(Instant::now() < deadline, "nginx did not listen on port {port}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        server
    }

    /// Its access log: one line per request, with the protocol (`HTTP/2.0`).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
