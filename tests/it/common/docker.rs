//! A real Docker engine for tests: Debian's `dockerd`, started with no bridge, no iptables, no
//! IP forwarding or masquerading (it must not touch the host's network), its data, exec root and
//! socket in a temporary folder; and a test image imported from a root file system holding the
//! static busybox (no registry is reachable). Stopped, with its containers, when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const IMAGE: &str = "vigil-test:latest";

pub struct Engine {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Engine {
    pub fn start() -> Engine {
        for (tool, package) in [("dockerd", "docker.io"), ("docker", "docker.io")] {
            if !which(tool) {
                panic!(
                    "`{tool}` is not installed: install Debian's `{package}` package (bash scripts/install-test-deps.sh does)"
                );
            }
        }
        if !Path::new("/bin/busybox").exists() {
            panic!(
                "/bin/busybox is missing: install Debian's `busybox-static` package (bash scripts/install-test-deps.sh does)"
            );
        }
        let dir = tempfile::Builder::new().prefix("vd").tempdir_in("/tmp").unwrap();
        let mut engine = Engine { dir, child: None };
        engine.launch();
        engine.build_image();
        engine
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// Starts dockerd (again) on the same folders.
    pub fn launch(&mut self) {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("dockerd.log"))
            .unwrap();
        let child = Command::new("dockerd")
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
            ])
            .arg(format!("--data-root={}", d.join("data").display()))
            .arg(format!("--exec-root={}", d.join("exec").display()))
            .arg(format!("--pidfile={}", d.join("docker.pid").display()))
            .arg(format!("--host={}", self.host()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.docker_ok(&["version"]) {
            assert!(
                Instant::now() < deadline,
                "dockerd did not start:\n{}",
                std::fs::read_to_string(d.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops dockerd (its containers stop with it), keeping its folders.
    pub fn shutdown(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn build_image(&self) {
        let root = self.dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        for applet in ["sh", "sleep", "true", "false", "tail", "cat", "echo", "kill"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let status = Command::new("docker")
            .args(["-H", &self.host(), "import", "-", IMAGE])
            .stdin(tar.stdout.take().unwrap())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(tar.wait().unwrap().success(), "tar failed");
        assert!(status.success(), "docker import failed");
    }

    fn docker_ok(&self, args: &[&str]) -> bool {
        Command::new("docker")
            .args(["-H", &self.host()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Runs the docker CLI against this engine; panics on failure; returns stdout.
    pub fn docker(&self, args: &[&str]) -> String {
        let out = Command::new("docker")
            .args(["-H", &self.host()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p)
            .chain([PathBuf::from("/usr/sbin")])
            .any(|d| d.join(tool).is_file())
    })
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = Command::new("docker").args(["-H", &self.host(), "ps", "-aq"]).output();
            if let Ok(out) = ids {
                let ids = String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>();
                if !ids.is_empty() {
                    let _ = Command::new("docker")
                        .args(["-H", &self.host(), "rm", "-f"])
                        .args(&ids)
                        .output();
                }
            }
        }
        self.shutdown();
        // Overlay mounts and the like can outlive dockerd briefly; unmount what is left.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
                self.dir.path().display()
            ))
            .status();
    }
}
