//! The harness for Signet's integration tests: it starts the real `signet` binary on
//! `127.0.0.1:0` with a fresh data folder, reads the bound address from its first line
//! of output, and kills it when dropped. Helpers push content over plain HTTP.
//!
//! The binary is `target/<profile>/signet` (build it first: `cargo build --bin signet`),
//! or the path in `SIGNET_BIN`. With `SIGNET_TEST_REPLICAS=1`, a registry a test starts
//! without storage settings of its own is two replicas on PostgreSQL and S3 behind a
//! round-robin balancer (see `replicas`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

pub mod buildkit;
pub mod cosign;
pub mod distribution;
pub mod docker;
pub mod gpg;
pub mod notation;
pub mod oci;
pub mod pki;
pub mod proxy;
pub mod raw;
pub mod receiver;
pub mod replicas;

/// A running Signet process.
pub struct Registry {
    /// `127.0.0.1:PORT`, as clients name the registry.
    pub host: String,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub data_dir: PathBuf,
    child: Child,
    /// Keeps a temporary data folder alive for the registry's lifetime.
    _temp: Option<tempfile::TempDir>,
    config: Option<PathBuf>,
    stderr_log: PathBuf,
    /// The second replica and the balancer (`SIGNET_TEST_REPLICAS=1`).
    replicas: Option<replicas::Deployment>,
}

pub fn signet_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SIGNET_BIN") {
        return PathBuf::from(path);
    }
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("current test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> above the test executable");
    let bin = profile_dir.join("signet");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bin signet` before the api tests",
        bin.display()
    );
    bin
}

impl Registry {
    /// Starts Signet on a fresh, temporary data folder.
    pub fn start() -> Registry {
        if replicas::enabled() {
            return Registry::start_with_config("");
        }
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("data");
        let mut registry = Registry::start_in(&dir, None);
        registry._temp = Some(temp);
        registry
    }

    /// Starts Signet with a configuration file (TOML text) on a fresh data folder.
    pub fn start_with_config(toml: &str) -> Registry {
        if replicas::enabled() && !toml.contains("[storage") {
            return Registry::start_replicated(toml);
        }
        let temp = tempfile::tempdir().expect("temp dir");
        let config = temp.path().join("signet.toml");
        std::fs::write(&config, toml).expect("write config");
        let data = temp.path().join("data");
        let mut registry = Registry::start_in(&data, Some(config));
        registry._temp = Some(temp);
        registry
    }

    /// Two replicas of the test's configuration on shared PostgreSQL and S3, behind a
    /// round-robin balancer that `url` and `host` name.
    fn start_replicated(toml: &str) -> Registry {
        let temp = tempfile::tempdir().expect("temp dir");
        let stores = replicas::services();
        let config = temp.path().join("signet.toml");
        std::fs::write(&config, replicas::config(toml, &stores)).expect("write config");
        let mut registry = Registry::start_in(&temp.path().join("data"), Some(config.clone()));
        let second_dir = temp.path().join("data-b");
        let (child, host, _) = spawn(&second_dir, Some(&config));
        let (deployment, balancer) = replicas::Deployment::finish(
            &registry.host,
            (child, host, second_dir),
            &temp.path().join("balancer"),
            stores,
        );
        registry.url = format!("http://{balancer}");
        registry.host = balancer;
        registry.replicas = Some(deployment);
        registry._temp = Some(temp);
        registry
    }

    /// Starts Signet on an existing data folder (to restart after a crash).
    pub fn start_in(data_dir: &Path, config: Option<PathBuf>) -> Registry {
        let (child, host, stderr_log) = spawn(data_dir, config.as_ref());
        Registry {
            url: format!("http://{host}"),
            host,
            data_dir: data_dir.to_path_buf(),
            child,
            _temp: None,
            config,
            stderr_log,
            replicas: None,
        }
    }

    /// Kills the process (every replica) with SIGKILL: no chance to clean up, as in a
    /// crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(d) = self.replicas.as_mut() {
            d.kill_second();
        }
    }

    /// Kills the process and starts a new one on the same data (the port changes; a
    /// replicated registry keeps its balancer's address).
    pub fn crash_and_restart(&mut self) {
        self.kill();
        let temp = self._temp.take();
        let deployment = self.replicas.take();
        let mut next = Registry::start_in(&self.data_dir.clone(), self.config.clone());
        if let Some(mut d) = deployment {
            let (child, host, _) = spawn(&d.second_data_dir, self.config.as_ref());
            d.restarted(&next.host, (child, host));
            next.host = self.host.clone();
            next.url = self.url.clone();
            next.replicas = Some(d);
        }
        let old = std::mem::replace(self, next);
        drop(old);
        self._temp = temp;
    }

    /// Stops the process with SIGTERM and waits for it to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("wait for signet")
    }

    pub fn stderr(&self) -> String {
        let mut out = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
        if let Some(d) = &self.replicas {
            let second = d.second_data_dir.with_extension("stderr.log");
            out.push_str(&std::fs::read_to_string(second).unwrap_or_default());
            out.push_str(&d.logs());
        }
        out
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `signet` subcommand on this registry's stores, beside the running server:
    /// `signet [--config FILE] <args> --data-dir DIR`.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(signet_binary());
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        cmd.args(args).arg("--data-dir").arg(&self.data_dir);
        cmd
    }

    /// `http://HOST/v2/<path>`.
    pub fn v2(&self, path: &str) -> String {
        format!("{}/v2/{}", self.url, path.trim_start_matches('/'))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Panics with a clear message when a client the test needs is not installed: the
/// test command installs them all, so a missing one is a broken setup, not a skip.
pub fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|p| p.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed; run the README's test command, which installs it")
        })
}

/// How long one client command may run before its test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs a command with no input, bounded by [`COMMAND_TIMEOUT`], panicking with its
/// output when it fails or hangs; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let started = std::time::Instant::now();
    // Files, not pipes: a chatty client can never block on a full pipe.
    let out_file = tempfile::NamedTempFile::new().expect("stdout file");
    let err_file = tempfile::NamedTempFile::new().expect("stderr file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out_file.reopen().expect("stdout file"))
        .stderr(err_file.reopen().expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for command") {
            break Some(status);
        }
        if started.elapsed() > COMMAND_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = std::fs::read_to_string(out_file.path()).unwrap_or_default();
    let err = std::fs::read_to_string(err_file.path()).unwrap_or_default();
    match status {
        Some(s) if s.success() => out,
        Some(s) => panic!("{cmd:?} failed ({s}):\nstdout:\n{out}\nstderr:\n{err}"),
        None => {
            panic!("{cmd:?} timed out after {COMMAND_TIMEOUT:?}:\nstdout:\n{out}\nstderr:\n{err}")
        }
    }
}

/// The Prometheus exposition of the server at `base`.
pub async fn metrics(base: &str) -> String {
    client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body")
}

/// skopeo with its own permissive policy and an empty registries.d under `dir`, so that
/// no system configuration changes what it does.
pub fn skopeo(dir: &Path) -> Command {
    require_tool("skopeo");
    let policy = dir.join("policy.json");
    let registries_d = dir.join("registries.d");
    if !policy.exists() {
        std::fs::create_dir_all(&registries_d).expect("registries.d");
        std::fs::write(
            &policy,
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .expect("policy.json");
    }
    let mut cmd = Command::new("skopeo");
    cmd.arg("--policy")
        .arg(&policy)
        .arg("--registries.d")
        .arg(&registries_d);
    cmd
}

/// Panics with a clear message when a Python module a test drives is missing.
pub fn require_python_module(module: &str) {
    require_tool("python3");
    let import = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .expect("python3");
    assert!(
        import.status.success(),
        "the Python module {module} is not installed; run the README's test command, which installs it:\n{}",
        String::from_utf8_lossy(&import.stderr)
    );
}

/// Random bytes for test blobs.
pub fn random_bytes(len: usize) -> Bytes {
    let mut v = vec![0u8; len];
    rand::fill(&mut v[..]);
    Bytes::from(v)
}

/// A temporary folder whose path is all lowercase: podman derives image names from
/// OCI layout paths, and image names must be lowercase.
pub fn lowercase_tempdir() -> tempfile::TempDir {
    let name = format!("signet-{}", hex::encode(random_bytes(8)));
    tempfile::Builder::new()
        .prefix(&name)
        .rand_bytes(0)
        .tempdir()
        .expect("temp dir")
}

/// Starts one `signet serve` on `data_dir`; its process, `127.0.0.1:PORT` and stderr log.
fn spawn(data_dir: &Path, config: Option<&PathBuf>) -> (Child, String, PathBuf) {
    std::fs::create_dir_all(data_dir).expect("data dir");
    let stderr_log = data_dir.with_extension("stderr.log");
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&stderr_log)
        .expect("stderr log");
    let mut cmd = Command::new(signet_binary());
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("SIGNET__SERVER__WORKERS", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    let mut child = cmd.spawn().expect("start signet");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        // Keep draining so the server never blocks on a full pipe.
        for _ in lines {}
    });
    let line = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            panic!(
                "signet did not report its address; stderr:\n{}",
                std::fs::read_to_string(&stderr_log).unwrap_or_default()
            );
        }
    };
    let host = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .trim()
        .to_string();
    (child, host, stderr_log)
}
