//! The scale-out deployment the harness starts instead of one process when
//! `SIGNET_TEST_REPLICAS=1`: two Signet replicas sharing a PostgreSQL database and an S3
//! bucket (SeaweedFS), behind a round-robin nginx that sends each request to the next
//! replica. The tests then run unchanged against it: an upload begun on one replica is
//! continued on the other, a manifest pushed through one is read through the other.
//!
//! PostgreSQL is the server `SIGNET_TEST_DATABASE_URL` names (one database per registry), or a
//! throwaway cluster per registry without it. S3 is the bucket `SIGNET_TEST_S3_ENDPOINT`,
//! `_BUCKET`, `_KEY` and `_SECRET` name, shared by every registry of the run (blobs are
//! content-addressed, so registries sharing a bucket store the same bytes under the
//! same name; no test of the replicated run collects garbage), or a throwaway SeaweedFS
//! per registry without it. `scripts/with-scaleout-services.sh` starts both once.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use signet_storage::testing::{TestDatabase, TestS3};

/// Whether the harness runs every registry as two replicas.
pub fn enabled() -> bool {
    std::env::var("SIGNET_TEST_REPLICAS").is_ok_and(|v| v == "1")
}

/// What a replicated registry owns besides its first replica's process.
pub struct Deployment {
    second: Child,
    balancer: Child,
    /// The folder of the nginx configuration, logs and temporary files.
    work: PathBuf,
    pub second_data_dir: PathBuf,
    _stores: Stores,
}

/// The shared stores of one replicated registry.
pub struct Stores {
    db: TestDatabase,
    /// A SeaweedFS of this registry's own (none on a shared bucket).
    _s3: Option<TestS3>,
    s3_toml: String,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for child in [&mut self.second, &mut self.balancer] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The database and bucket, made on a runtime of their own (the caller may be inside
/// an async test, or not in one at all).
pub fn services() -> Stores {
    let shared = ["ENDPOINT", "BUCKET", "KEY", "SECRET"]
        .map(|k| std::env::var(format!("SIGNET_TEST_S3_{k}")).ok());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let db = TestDatabase::create().await;
            match shared {
                [Some(endpoint), Some(bucket), Some(key), Some(secret)] => Stores {
                    db,
                    _s3: None,
                    s3_toml: format!(
                        "[storage.s3]\nendpoint = \"{endpoint}\"\nbucket = \"{bucket}\"\n\
                         access_key_id = \"{key}\"\nsecret_access_key = \"{secret}\"\nallow_http = true\n"
                    ),
                },
                _ => {
                    let s3 = TestS3::seaweedfs().await;
                    Stores {
                        db,
                        s3_toml: s3.toml(),
                        _s3: Some(s3),
                    }
                }
            }
        })
    })
    .join()
    .expect("start PostgreSQL and SeaweedFS")
}

/// The configuration both replicas read: the test's own, then the shared stores.
pub fn config(test_toml: &str, stores: &Stores) -> String {
    format!(
        "{test_toml}\n[storage]\nmetadata_url = \"{}\"\n{}",
        stores.db.url, stores.s3_toml
    )
}

impl Deployment {
    /// Starts the second replica (its address from `start`) and the balancer in front
    /// of both; returns the deployment and the balancer's `127.0.0.1:PORT`.
    pub fn finish(
        first: &str,
        second: (Child, String, PathBuf),
        work: &Path,
        stores: Stores,
    ) -> (Deployment, String) {
        let (second, second_host, second_data_dir) = second;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let balancer = start_nginx(work, port, &[first, &second_host]);
        (
            Deployment {
                second,
                balancer,
                work: work.to_path_buf(),
                second_data_dir,
                _stores: stores,
            },
            format!("127.0.0.1:{port}"),
        )
    }

    pub fn second_pid(&self) -> u32 {
        self.second.id()
    }

    pub fn kill_second(&mut self) {
        let _ = self.second.kill();
        let _ = self.second.wait();
    }

    /// Replaces the second replica (after a restart) and points the balancer at the
    /// new addresses.
    pub fn restarted(&mut self, first: &str, second: (Child, String)) {
        self.kill_second();
        self.second = second.0;
        let _ = self.balancer.kill();
        let _ = self.balancer.wait();
        let port = self.port();
        self.balancer = start_nginx(&self.work, port, &[first, &second.1]);
    }

    fn port(&self) -> u16 {
        std::fs::read_to_string(self.work.join("port"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .expect("balancer port")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.work.join("nginx-error.log")).unwrap_or_default()
    }
}

/// nginx on `port`, round robin over `replicas`, streaming bodies both ways; waits
/// until it answers. One process (no master): killing it frees the port.
fn start_nginx(work: &Path, port: u16, replicas: &[&str]) -> Child {
    std::fs::create_dir_all(work).expect("balancer folder");
    let w = work.display();
    let servers: String = replicas.iter().map(|r| format!("server {r}; ")).collect();
    let root = if nix_is_root() { "user root;" } else { "" };
    let conf = format!(
        "{root}
daemon off;
master_process off;
pid {w}/nginx.pid;
error_log {w}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {w}/body;
  proxy_temp_path {w}/proxy;
  fastcgi_temp_path {w}/fastcgi;
  uwsgi_temp_path {w}/uwsgi;
  scgi_temp_path {w}/scgi;
  upstream signet {{ {servers}}}
  server {{
    listen 127.0.0.1:{port};
    client_max_body_size 0;
    location / {{
      proxy_pass http://signet;
      proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      proxy_set_header Connection \"\";
      proxy_request_buffering off;
      proxy_buffering off;
      proxy_next_upstream off;
      proxy_read_timeout 300s;
    }}
  }}
}}
"
    );
    std::fs::write(work.join("nginx.conf"), conf).expect("nginx.conf");
    std::fs::write(work.join("port"), port.to_string()).expect("port file");
    let nginx = crate::require_tool("nginx");
    let mut child = Command::new(nginx)
        .arg("-c")
        .arg(work.join("nginx.conf"))
        .arg("-p")
        .arg(work)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "nginx exited ({status}): {}",
                std::fs::read_to_string(work.join("nginx-error.log")).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nginx did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn nix_is_root() -> bool {
    // nginx drops to `nobody` when started as root unless told otherwise; the temporary
    // folders are root's.
    std::env::var("USER").is_ok_and(|u| u == "root")
        || std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1))
                == Some("0")
        })
}
