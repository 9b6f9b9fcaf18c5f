//! Test support (feature `testing`): a fresh PostgreSQL database for one test.
//!
//! With `DATABASE_URL` set, each [`TestDatabase`] is a new database on that server.
//! Otherwise it starts a throwaway cluster of its own (initdb with `-A trust`, on a free
//! loopback port, its socket in its data folder, as the `postgres` user when run as
//! root) and stops and removes it when dropped. PostgreSQL not installed is a failure,
//! not a skip: the test command installs it (`scripts/install-test-deps.sh`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection;

/// A database no other test uses, removed (with its cluster, if it started one) on drop.
pub struct TestDatabase {
    /// `postgres://...` of the database.
    pub url: String,
    name: String,
    /// The server's own URL, to drop the database from (when `DATABASE_URL` named it).
    admin_url: Option<String>,
    cluster: Option<Cluster>,
}

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        let (admin_url, cluster) = match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => (url, None),
            _ => {
                let cluster = Cluster::start();
                (cluster.url.clone(), Some(cluster))
            }
        };
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

    /// The port of the throwaway cluster (`None` on a `DATABASE_URL` server).
    pub fn cluster_port(&self) -> Option<u16> {
        self.cluster.as_ref().map(|c| c.port)
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
             no DATABASE_URL); run scripts/install-test-deps.sh, which installs it"
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
