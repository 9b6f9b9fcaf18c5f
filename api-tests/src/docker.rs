//! A private docker engine for tests, started as the project's client notes show:
//! networking switched off, its own data, exec root, pid file and socket, stopped
//! (with the containerd it started) when dropped, also when the test panics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::require_tool;

pub struct DockerDaemon {
    child: Child,
    socket: PathBuf,
    exec_root: PathBuf,
    // Dropped after the daemon has stopped (fields drop after `Drop::drop`).
    dir: tempfile::TempDir,
}

impl DockerDaemon {
    /// Starts dockerd; `insecure_registry` (`HOST:PORT`) may be reached over plain HTTP.
    pub fn start(insecure_registry: Option<&str>) -> DockerDaemon {
        require_tool("dockerd");
        require_tool("docker");
        // A short path: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("sdk")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let d = dir.path();
        let socket = d.join("docker.sock");
        let exec_root = d.join("exec");
        let mut cmd = Command::new("dockerd");
        cmd.args([
            "--bridge=none",
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
        ])
        .arg("--data-root")
        .arg(d.join("docker"))
        .arg("--exec-root")
        .arg(&exec_root)
        .arg("--pidfile")
        .arg(d.join("docker.pid"))
        .arg("-H")
        .arg(format!("unix://{}", socket.display()));
        if let Some(registry) = insecure_registry {
            cmd.arg("--insecure-registry").arg(registry);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(d.join("dockerd.log")).expect("log"))
            .stderr(std::fs::File::create(d.join("dockerd.err.log")).expect("log"))
            .spawn()
            .expect("start dockerd");
        let daemon = DockerDaemon {
            child,
            socket,
            exec_root,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = daemon.socket.exists()
                && daemon
                    .docker()
                    .arg("version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
            if up {
                return daemon;
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not come up within 30 s:\n{}",
                daemon.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A `docker` command talking to this engine, with its own client configuration.
    pub fn docker(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.dir.path().join("client"))
            // The classic builder needs no buildx plugin and honours --network none.
            .env("DOCKER_BUILDKIT", "0");
        cmd
    }

    /// What the engine logged.
    pub fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name));
        let mut s = read("dockerd.log").unwrap_or_default();
        s.push_str(&read("dockerd.err.log").unwrap_or_default());
        s
    }

    /// The client's `config.json` (what `docker login` stored).
    pub fn client_config(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("client/config.json")).unwrap_or_default()
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

impl Drop for DockerDaemon {
    fn drop(&mut self) {
        // dockerd started its own containerd; remember it in case dockerd dies first.
        let containerd = std::fs::read_to_string(self.exec_root.join("containerd/containerd.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(pid) = containerd {
            if Path::new(&format!("/proc/{pid}")).exists() {
                signal(pid, "KILL");
            }
        }
    }
}
