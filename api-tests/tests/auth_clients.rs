//! Real clients against Signet with `[auth]` on and TLS from a test CA made here with
//! rcgen: reqwest (and a certificate reload), `podman login` + push/pull, `skopeo
//! --creds`, and `docker login` + push/pull through the token service.
//!
//! podman and skopeo verify the server against the test CA (`--cert-dir`). dockerd
//! reads the CA from `/etc/docker/certs.d/127.0.0.1:PORT/ca.crt` (placed here and
//! removed afterwards) and speaks TLS, but it treats loopback registries as insecure,
//! so it would not notice a certificate it should reject: the verification itself is
//! proven by the other clients.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sha2::{Digest as _, Sha256};
use signet_api_tests::docker::DockerDaemon;
use signet_api_tests::pki::{auth_users, make_pki, write_token_key, TestPki};
use signet_api_tests::{random_bytes, require_tool, skopeo, Registry};

const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);
const ROBOT_TOKEN: &str = "signet-robot-0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071";

// ---------------------------------------------------------------------------------
// Test PKI and configuration
// ---------------------------------------------------------------------------------

fn auth_config(pki: &TestPki, extra: &str) -> String {
    format!(
        r#"
[server.tls]
cert = {cert:?}
key = {key:?}

[auth]
enabled = true
{extra}
{users}
[[auth.robots]]
name = "ci"
token_sha256 = "{robot}"

[[auth.rules]]
repositories = ["team/**"]
pull = ["bob"]
push = ["alice", "ci"]
"#,
        cert = pki.cert.to_str().unwrap(),
        key = pki.key.to_str().unwrap(),
        users = auth_users(&[("alice", "alice-pw"), ("bob", "bob-pw")]),
        robot = hex::encode(Sha256::digest(ROBOT_TOKEN.as_bytes())),
    )
}

fn https_client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------
// Running client commands
// ---------------------------------------------------------------------------------

/// Runs a command with a time limit; returns (success, stdout, stderr).
fn try_run(cmd: &mut Command) -> (bool, String, String) {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > COMMAND_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    match status {
        Some(s) => (s.success(), out, err),
        None => panic!("{cmd:?} timed out:\n{out}\n{err}"),
    }
}

fn run(cmd: &mut Command) -> String {
    let (ok, out, err) = try_run(cmd);
    assert!(ok, "{cmd:?} failed:\nstdout:\n{out}\nstderr:\n{err}");
    out
}

/// Runs a command that must fail; returns its stderr.
fn run_fails(cmd: &mut Command) -> String {
    let (ok, out, err) = try_run(cmd);
    assert!(
        !ok,
        "{cmd:?} should have failed:\nstdout:\n{out}\nstderr:\n{err}"
    );
    format!("{out}\n{err}")
}

fn run_with_stdin(cmd: &mut Command, input: &str) -> (bool, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn podman(dir: &Path) -> Command {
    require_tool("podman");
    let conf = dir.join("registries.conf");
    if !conf.exists() {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&conf, "unqualified-search-registries = []\n").unwrap();
        std::fs::write(dir.join("auth.json"), "{}").unwrap();
    }
    let mut cmd = Command::new("podman");
    cmd.env("CONTAINERS_REGISTRIES_CONF", &conf)
        .env("REGISTRY_AUTH_FILE", dir.join("auth.json"))
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .arg("--storage-driver")
        .arg("vfs");
    cmd
}

/// A one-layer OCI image in `layout` under `tag`, made with umoci.
fn umoci_image(layout: &Path, tag: &str, content: &[u8]) {
    require_tool("umoci");
    let umoci = || {
        let mut c = Command::new("umoci");
        c.arg("--log=error");
        c
    };
    if !layout.join("index.json").exists() {
        run(umoci().arg("init").arg("--layout").arg(layout));
    }
    let image = format!("{}:{tag}", layout.display());
    run(umoci().args(["new", "--image", &image]));
    let staging = tempfile::tempdir().unwrap();
    let src = staging.path().join("payload.bin");
    std::fs::write(&src, content).unwrap();
    run(umoci()
        .args(["insert", "--image", &image])
        .arg(&src)
        .arg("/payload.bin"));
    run(umoci().args([
        "config",
        "--image",
        &image,
        "--os",
        "linux",
        "--architecture",
        "amd64",
    ]));
}

// ---------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn tls_serves_https_and_reloads_the_certificate_on_sighup_and_on_change() {
    let dir = tempfile::tempdir().unwrap();
    let first = make_pki(&dir.path().join("first"), "Signet test CA first");
    let second = make_pki(&dir.path().join("second"), "Signet test CA second");
    let serving = dir.path().join("serving");
    std::fs::create_dir_all(&serving).unwrap();
    let (cert, key) = (serving.join("tls.crt"), serving.join("tls.key"));
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let r = Registry::start_with_config(&format!(
        "[server.tls]\ncert = {:?}\nkey = {:?}\nreload_check_secs = 1\n",
        cert.to_str().unwrap(),
        key.to_str().unwrap()
    ));
    let url = format!("https://{}/v2/", r.host);
    let trusts_first = https_client(&first.ca_pem);
    let trusts_second = https_client(&second.ca_pem);
    let resp = trusts_first.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-registry-supports-signatures"], "1");
    assert!(trusts_second.get(&url).send().await.is_err());
    // Plain HTTP on the TLS port gets nowhere.
    assert!(signet_api_tests::client()
        .get(format!("http://{}/v2/", r.host))
        .send()
        .await
        .map(|r| !r.status().is_success())
        .unwrap_or(true));

    // A renewed certificate, announced with SIGHUP.
    std::fs::copy(&second.cert, &cert).unwrap();
    std::fs::copy(&second.key, &key).unwrap();
    run(Command::new("kill").args(["-HUP", &r.pid().to_string()]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while trusts_second.get(&url).send().await.is_err() {
        assert!(Instant::now() < deadline, "not reloaded after SIGHUP");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // New connections get the new certificate; the process did not restart.
    let fresh_first = https_client(&first.ca_pem);
    assert!(fresh_first.get(&url).send().await.is_err());

    // Changed files are noticed without a signal; a broken key keeps the old pair.
    std::fs::write(&key, "not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let fresh_second = https_client(&second.ca_pem);
    assert_eq!(
        fresh_second.get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while https_client(&first.ca_pem).get(&url).send().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "not reloaded after the files changed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = r.stderr();
    assert!(log.contains("TLS certificate reload failed"), "{log}");
    assert!(log.contains("TLS certificate reloaded"), "{log}");
}

// ---------------------------------------------------------------------------------
// podman and skopeo
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn podman_and_skopeo_log_in_push_and_pull_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(&dir.path().join("pki"), "Signet test CA podman");
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(certs.join("ca.crt"), &pki.ca_pem).unwrap();
    let r = Registry::start_with_config(&auth_config(&pki, ""));
    let host = &r.host;
    let cert_dir = certs.to_str().unwrap();

    // skopeo pushes an image as alice, verifying the server against the test CA.
    let layout = dir.path().join("layout");
    let payload = random_bytes(64 * 1024);
    umoci_image(&layout, "v1", &payload);
    let tools = dir.path().join("skopeo");
    std::fs::create_dir_all(&tools).unwrap();
    run(skopeo(&tools)
        .args([
            "copy",
            "--dest-cert-dir",
            cert_dir,
            "--dest-creds",
            "alice:alice-pw",
        ])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{host}/team/app:v1")));
    // Without the CA, TLS verification fails; without credentials, the push does.
    let err = run_fails(
        skopeo(&tools)
            .args(["copy", "--dest-creds", "alice:alice-pw"])
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(format!("docker://{host}/team/app:v2")),
    );
    assert!(err.contains("certificate"), "{err}");
    let err = run_fails(
        skopeo(&tools)
            .args([
                "copy",
                "--dest-cert-dir",
                cert_dir,
                "--dest-creds",
                "alice:wrong",
            ])
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(format!("docker://{host}/team/app:v2")),
    );
    assert!(
        err.to_lowercase().contains("unauthorized") || err.contains("401"),
        "{err}"
    );
    // bob reads, but may not write.
    let out = run(skopeo(&tools).args([
        "inspect",
        "--cert-dir",
        cert_dir,
        "--creds",
        "bob:bob-pw",
        &format!("docker://{host}/team/app:v1"),
    ]));
    assert!(out.contains("\"Architecture\": \"amd64\""), "{out}");
    let err = run_fails(
        skopeo(&tools)
            .args([
                "copy",
                "--dest-cert-dir",
                cert_dir,
                "--dest-creds",
                "bob:bob-pw",
            ])
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(format!("docker://{host}/team/bob:v1")),
    );
    assert!(
        err.to_lowercase().contains("denied") || err.contains("403"),
        "{err}"
    );
    // The robot pushes with its token.
    run(skopeo(&tools)
        .args([
            "copy",
            "--dest-cert-dir",
            cert_dir,
            "--dest-creds",
            &format!("ci:{ROBOT_TOKEN}"),
        ])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{host}/team/ci:v1")));

    // podman: login, pull what skopeo pushed, push it elsewhere, pull that back.
    let alice = dir.path().join("podman-alice");
    let err = run_fails(podman(&alice).args([
        "login",
        "--cert-dir",
        cert_dir,
        "-u",
        "alice",
        "-p",
        "nope",
        host,
    ]));
    assert!(err.contains("invalid username/password"), "{err}");
    run(podman(&alice).args([
        "login",
        "--cert-dir",
        cert_dir,
        "-u",
        "alice",
        "-p",
        "alice-pw",
        host,
    ]));
    let image = format!("{host}/team/app:v1");
    run(podman(&alice).args(["pull", "--cert-dir", cert_dir, &image]));
    let copy = format!("{host}/team/podman:v1");
    run(podman(&alice).args(["tag", &image, &copy]));
    run(podman(&alice).args(["push", "--cert-dir", cert_dir, &copy]));
    let bob = dir.path().join("podman-bob");
    run(podman(&bob).args([
        "login",
        "--cert-dir",
        cert_dir,
        "-u",
        "bob",
        "-p",
        "bob-pw",
        host,
    ]));
    run(podman(&bob).args(["pull", "--cert-dir", cert_dir, &copy]));
    let id_alice = run(podman(&alice).args(["image", "inspect", "--format", "{{.Id}}", &copy]));
    let id_bob = run(podman(&bob).args(["image", "inspect", "--format", "{{.Id}}", &copy]));
    assert_eq!(id_alice, id_bob);
    let err = run_fails(podman(&bob).args([
        "push",
        "--cert-dir",
        cert_dir,
        &copy,
        &format!("docker://{host}/team/bobs:v1"),
    ]));
    assert!(
        err.to_lowercase().contains("denied") || err.contains("403"),
        "{err}"
    );
    // An anonymous podman is sent to the token service and refused there.
    let anon = dir.path().join("podman-anon");
    let err = run_fails(podman(&anon).args(["pull", "--cert-dir", cert_dir, &image]));
    assert!(
        err.to_lowercase().contains("unauthorized") || err.contains("401"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------
// docker
// ---------------------------------------------------------------------------------

/// `/etc/docker/certs.d/<host>/ca.crt`, removed when dropped.
struct DockerCa(PathBuf);

impl DockerCa {
    fn place(host: &str, ca_pem: &str) -> Self {
        let dir = PathBuf::from("/etc/docker/certs.d").join(host);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.crt"), ca_pem).unwrap();
        DockerCa(dir)
    }
}

impl Drop for DockerCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn docker_logs_in_pushes_and_pulls_through_the_token_service_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(&dir.path().join("pki"), "Signet test CA docker");
    // A configured key: docker login gets a refresh token and pushes with the OAuth2
    // refresh grant.
    let token_key = dir.path().join("token.pem");
    write_token_key(&token_key);
    let r = Registry::start_with_config(&auth_config(
        &pki,
        &format!("token_key = {:?}", token_key.to_str().unwrap()),
    ));
    let host = r.host.clone();
    let _ca = DockerCa::place(&host, &pki.ca_pem);
    let daemon = DockerDaemon::start(None);

    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("payload.bin"), random_bytes(256 * 1024)).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY payload.bin /payload.bin\n",
    )
    .unwrap();
    let image = format!("{host}/team/docker:v1");
    run(daemon
        .docker()
        .args(["build", "--network", "none", "-t", &image])
        .arg(&ctx));
    let id = run(daemon
        .docker()
        .args(["image", "inspect", "--format", "{{.Id}}", &image]));

    // Wrong password: login refused.
    let (ok, out) = run_with_stdin(
        daemon
            .docker()
            .args(["login", "-u", "alice", "--password-stdin", &host]),
        "wrong\n",
    );
    assert!(!ok, "{out}");
    let (ok, out) = run_with_stdin(
        daemon
            .docker()
            .args(["login", "-u", "alice", "--password-stdin", &host]),
        "alice-pw\n",
    );
    assert!(ok, "{out}");
    let config = daemon.client_config();
    assert!(
        config.contains("identitytoken"),
        "docker kept the refresh token: {config}"
    );
    assert!(!config.contains("alice-pw"));

    run(daemon.docker().args(["push", &image]));
    run(daemon.docker().args(["rmi", &image]));
    run(daemon.docker().args(["pull", &image]));
    let pulled = run(daemon
        .docker()
        .args(["image", "inspect", "--format", "{{.Id}}", &image]));
    assert_eq!(pulled, id);

    // bob: pulls, may not push.
    run(daemon.docker().args(["logout", &host]));
    let (ok, out) = run_with_stdin(
        daemon
            .docker()
            .args(["login", "-u", "bob", "--password-stdin", &host]),
        "bob-pw\n",
    );
    assert!(ok, "{out}");
    run(daemon.docker().args(["rmi", &image]));
    run(daemon.docker().args(["pull", &image]));
    let bobs = format!("{host}/team/bobs:v1");
    run(daemon.docker().args(["tag", &image, &bobs]));
    let err = run_fails(daemon.docker().args(["push", &bobs]));
    assert!(
        err.to_lowercase().contains("denied") || err.to_lowercase().contains("unauthorized"),
        "{err}"
    );

    // The audit log saw docker's push, with who and from where.
    let log = strip_ansi(&r.stderr());
    assert!(
        log.lines().any(|l| l.contains("audit")
            && l.contains("push-manifest")
            && l.contains("who=alice")
            && l.contains("team/docker")),
        "{log}"
    );
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
