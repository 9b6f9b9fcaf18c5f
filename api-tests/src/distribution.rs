//! Debian's `docker-registry` (distribution 2.8.2), the reference registry, as a test
//! peer: an upstream to mirror from, on a free loopback port, with its access log.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::require_tool;

pub struct Distribution {
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    log: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Distribution {
    /// Starts one on a fresh storage folder and waits until it listens.
    pub fn start() -> Distribution {
        let bin = require_tool("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("root").display()
            ),
        )
        .unwrap();
        let log = dir.path().join("registry.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start docker-registry");
        let host = format!("127.0.0.1:{port}");
        let d = Distribution {
            url: format!("http://{host}"),
            host,
            log,
            child,
            _dir: dir,
        };
        let started = Instant::now();
        loop {
            if std::net::TcpStream::connect(&d.host).is_ok() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "docker-registry did not start:\n{}",
                std::fs::read_to_string(&d.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    /// Requests in the access log whose line contains `needle`.
    pub fn requests(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("HTTP/1.1\"") && l.contains(needle))
            .count()
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
