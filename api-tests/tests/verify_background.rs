//! Verification off the request path: a pushed signature gets its verdict from the
//! background verifier before anyone reads it, the verdict is stored and shown by the
//! coverage endpoint and `signet attachments`, SIGHUP reloads the trust configuration
//! (and re-verifies under it; a bad file keeps the one in force), and stored verdicts
//! go with their attachment.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use signet_api_tests::oci::{get, push_blob, push_image, put_manifest, OCI_MANIFEST};
use signet_api_tests::{client, run, sha256, Registry};
use signet_storage::MetadataStore;
use sigstore::crypto::{SigStoreSigner, SigningScheme};

const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const SIG_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const VALID_VERDICTS: &str = "signet_verification_verdicts_total{verdict=\"valid\"}";

struct Key {
    signer: SigStoreSigner,
    public_pem: String,
}

impl Key {
    fn generate() -> Key {
        let signer = SigningScheme::ECDSA_P256_SHA256_ASN1
            .create_signer()
            .expect("generate a key pair");
        let public_pem = signer
            .to_sigstore_keypair()
            .expect("key pair")
            .public_key_to_pem()
            .expect("public key PEM");
        Key { signer, public_pem }
    }

    fn write_public(&self, dir: &Path) -> PathBuf {
        let path = dir.join("cosign.pub");
        std::fs::write(&path, &self.public_pem).unwrap();
        path
    }
}

/// A registry on a configuration file the test can rewrite, checked every second.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    registry: Registry,
}

fn trust_toml(key: Option<&Path>) -> String {
    let mut out = "[trust]\nverify_interval_secs = 1\n".to_string();
    if let Some(key) = key {
        out.push_str(&format!(
            "[[trust.roots]]\nname = \"team\"\npublic_key = \"{}\"\nrepositories = [\"team/*\"]\n",
            key.display()
        ));
    }
    out
}

fn start(toml: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("signet.toml");
    std::fs::write(&config, toml).unwrap();
    let registry = Registry::start_in(&dir.path().join("data"), Some(config.clone()));
    Setup {
        dir,
        config,
        registry,
    }
}

/// Pushes an image and a cosign `.sig` for it signed by `key` (one simple-signing
/// layer, as `cosign sign --key` writes it); returns (image digest, signature digest).
async fn push_signed(c: &Client, r: &Registry, repo: &str, key: &Key) -> (String, String) {
    let image = sha256(&push_image(c, r, repo, "v1", &[repo.as_bytes()]).await);
    let payload = serde_json::to_vec(&json!({
        "critical": {
            "identity": {"docker-reference": format!("{}/{repo}", r.host)},
            "image": {"docker-manifest-digest": image},
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .unwrap();
    let signature = B64.encode(key.signer.sign(&payload).unwrap());
    let layer = push_blob(c, r, repo, &payload).await;
    let config = serde_json::to_vec(&json!({
        "architecture": "", "os": "", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer]},
    }))
    .unwrap();
    push_blob(c, r, repo, &config).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": SIMPLESIGNING, "digest": layer, "size": payload.len(),
                    "annotations": {SIG_ANNOTATION: signature}}],
    }))
    .unwrap();
    let tag = format!("{}.sig", image.replace(':', "-"));
    put_manifest(c, r, repo, &tag, OCI_MANIFEST, &manifest).await;
    (image, sha256(&manifest))
}

/// The value of one series of `/metrics`, 0 when absent.
async fn metric(c: &Client, r: &Registry, series: &str) -> f64 {
    let (status, body) = get(c, &format!("{}/metrics", r.url)).await;
    assert_eq!(status, StatusCode::OK);
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The verdict on the one signature of `repo:v1`, from the coverage endpoint.
async fn signature_verdict(c: &Client, r: &Registry, repo: &str) -> Value {
    let (status, body) = get(c, &r.v2(&format!("{repo}/_signet/attachments/v1"))).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let report: Value = serde_json::from_slice(&body).unwrap();
    let sigs = report["attachments"]["signature"].as_array().unwrap();
    assert_eq!(sigs.len(), 1, "{report}");
    sigs[0]["verification"].clone()
}

/// The metadata store the registry runs on (the same SQLite file, opened beside it).
async fn store(setup: &Setup) -> std::sync::Arc<dyn MetadataStore> {
    let url = format!(
        "sqlite://{}",
        setup.registry.data_dir.join("signet.db").display()
    );
    signet_storage::open_metadata(&url).await.unwrap()
}

/// Waits for the background verifier's stored verdict on `sig` as a signature of
/// `image` in `repo`, and returns it.
async fn background_verdict(
    meta: &std::sync::Arc<dyn MetadataStore>,
    repo: &str,
    image: &str,
    sig: &str,
) -> signet_storage::meta::StoredVerdict {
    let repo = repo.parse().unwrap();
    let (image, sig) = (image.parse().unwrap(), sig.parse().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(stored) = meta.get_verdict(&repo, &image, &sig).await.unwrap() {
            return stored;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the verdict on {sig} in {repo}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn hup(r: &Registry) {
    let status = Command::new("kill")
        .arg("-HUP")
        .arg(r.pid().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn a_pushed_signature_is_verified_before_anyone_reads_it() {
    let key = Key::generate();
    let keys = tempfile::tempdir().unwrap();
    let setup = start(&trust_toml(Some(&key.write_public(keys.path()))));
    let (c, r) = (client(), &setup.registry);
    let (image, sig) = push_signed(&c, r, "team/app", &key).await;

    // Nobody reads the signature, its coverage or the image: the worker verifies it.
    let meta = store(&setup).await;
    let stored = background_verdict(&meta, "team/app", &image, &sig).await;
    assert_eq!(stored.verdict.as_str(), "valid");
    assert_eq!(stored.root.as_deref(), Some("team"));
    assert_eq!(metric(&c, r, VALID_VERDICTS).await, 1.0);

    // Reading shows the stored verdict, reached before the read, without verifying again.
    let read_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let v = signature_verdict(&c, r, "team/app").await;
    assert_eq!(v["verdict"], "valid", "{v}");
    assert_eq!(v["root"], "team");
    assert_eq!(v["checkedAt"], stored.checked_at, "{v}");
    assert!(stored.checked_at <= read_at);
    assert_eq!(
        metric(&c, r, VALID_VERDICTS).await,
        1.0,
        "the read did not verify again"
    );

    // `signet attachments --json` shows the same stored verdict.
    let out = run(&mut setup
        .registry
        .cli(&["attachments", "--json", "team/app:v1"]));
    let report: Value = serde_json::from_str(&out).unwrap();
    let cli = &report["attachments"]["signature"][0]["verification"];
    assert_eq!(cli["verdict"], "valid", "{report}");
    assert_eq!(cli["checkedAt"], stored.checked_at, "{report}");
}

#[tokio::test]
async fn a_pushed_signature_wakes_the_verifier_before_its_interval() {
    let key = Key::generate();
    let keys = tempfile::tempdir().unwrap();
    // An interval no test waits out: only the push can bring the verdict early.
    let toml = trust_toml(Some(&key.write_public(keys.path())))
        .replace("verify_interval_secs = 1", "verify_interval_secs = 3600");
    let setup = start(&toml);
    let (c, r) = (client(), &setup.registry);
    // Let the start-up scan pass, so the wait below is the worker's long sleep.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (image, sig) = push_signed(&c, r, "team/app", &key).await;

    let meta = store(&setup).await;
    let stored = background_verdict(&meta, "team/app", &image, &sig).await;
    assert_eq!(stored.verdict.as_str(), "valid");
    assert_eq!(metric(&c, r, VALID_VERDICTS).await, 1.0);
}

#[tokio::test]
async fn sighup_reloads_trust_and_reverifies_and_a_bad_file_keeps_the_old_one() {
    let key = Key::generate();
    let setup = start(&trust_toml(None));
    let (c, r) = (client(), &setup.registry);
    push_signed(&c, r, "team/app", &key).await;
    let v = signature_verdict(&c, r, "team/app").await;
    assert_eq!(v["verdict"], "no-trust-root", "{v}");

    // The key goes into the file; SIGHUP puts it in force and the stored verdict is
    // recomputed by the worker (counted before any read).
    let key_file = key.write_public(setup.dir.path());
    std::fs::write(&setup.config, trust_toml(Some(&key_file))).unwrap();
    hup(r);
    wait_for("the re-verification after SIGHUP", || async {
        metric(&c, r, VALID_VERDICTS).await >= 1.0
    })
    .await;
    let v = signature_verdict(&c, r, "team/app").await;
    assert_eq!(v["verdict"], "valid", "{v}");
    assert_eq!(v["root"], "team");
    assert_eq!(
        metric(&c, r, "signet_trust_reloads_total{result=\"ok\"}").await,
        1.0
    );

    // A file whose key cannot be read: logged, and the configuration in force stays.
    std::fs::write(
        &setup.config,
        trust_toml(Some(&setup.dir.path().join("missing.pub"))),
    )
    .unwrap();
    hup(r);
    wait_for("the refused reload", || async {
        metric(&c, r, "signet_trust_reloads_total{result=\"error\"}").await >= 1.0
    })
    .await;
    assert!(
        r.stderr().contains("trust configuration not reloaded"),
        "{}",
        r.stderr()
    );
    // Broken TOML too.
    std::fs::write(&setup.config, "[trust\npolicy = ").unwrap();
    hup(r);
    wait_for("the second refused reload", || async {
        metric(&c, r, "signet_trust_reloads_total{result=\"error\"}").await >= 2.0
    })
    .await;
    let v = signature_verdict(&c, r, "team/app").await;
    assert_eq!(v["verdict"], "valid", "the old configuration stays: {v}");
}

#[tokio::test]
async fn verdict_rows_go_with_their_attachment() {
    let key = Key::generate();
    let keys = tempfile::tempdir().unwrap();
    let setup = start(&trust_toml(Some(&key.write_public(keys.path()))));
    let (c, r) = (client(), &setup.registry);
    let (image, sig) = push_signed(&c, r, "team/app", &key).await;
    let meta = store(&setup).await;
    let repo = "team/app".parse().unwrap();
    let (image_d, sig_d) = (image.parse().unwrap(), sig.parse().unwrap());
    background_verdict(&meta, "team/app", &image, &sig).await;

    // Deleting the signature manifest takes its verdict in the same transaction.
    let resp = c
        .delete(r.v2(&format!("team/app/manifests/{sig}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert!(meta
        .get_verdict(&repo, &image_d, &sig_d)
        .await
        .unwrap()
        .is_none());
    assert!(meta.orphan_verdicts().await.unwrap().is_empty());

    // Another signed image, then its subject deleted (with its attachments): no verdict
    // row outlives them, and fsck finds the store clean.
    let (other, other_sig) = push_signed(&c, r, "team/other", &key).await;
    let other_repo = "team/other".parse().unwrap();
    let (other_d, other_sig_d) = (other.parse().unwrap(), other_sig.parse().unwrap());
    background_verdict(&meta, "team/other", &other, &other_sig).await;
    let resp = c
        .delete(r.v2(&format!("team/other/manifests/{other}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert!(meta
        .get_verdict(&other_repo, &other_d, &other_sig_d)
        .await
        .unwrap()
        .is_none());
    let out = run(&mut setup.registry.cli(&["fsck", "--json"]));
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["problems"], json!([]), "{report}");
}

#[tokio::test]
async fn gc_takes_verdicts_with_their_attachments_and_fsck_repairs_a_stray_one() {
    let key = Key::generate();
    let keys = tempfile::tempdir().unwrap();
    let mut toml = trust_toml(Some(&key.write_public(keys.path())));
    toml.push_str("[gc]\ngrace_secs = 0\ndelete_untagged = true\n");
    let setup = start(&toml);
    let (c, r) = (client(), &setup.registry);
    let (image, sig) = push_signed(&c, r, "team/app", &key).await;
    let meta = store(&setup).await;
    let repo = "team/app".parse().unwrap();
    let (image_d, sig_d) = (image.parse().unwrap(), sig.parse().unwrap());
    background_verdict(&meta, "team/app", &image, &sig).await;

    // Untagged, the image is collected and its signature with it: so is the verdict.
    let resp = c
        .delete(r.v2("team/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    // GC (grace 0) takes what is older than the current second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let out = run(&mut setup.registry.cli(&["gc", "--json"]));
    assert!(out.contains(&image), "the image was collected: {out}");
    assert!(meta
        .get_verdict(&repo, &image_d, &sig_d)
        .await
        .unwrap()
        .is_none());
    assert!(meta.orphan_verdicts().await.unwrap().is_empty());

    // A verdict row written around the rules (no attachment names it): fsck reports
    // it, and --repair removes it.
    let db = setup.registry.data_dir.join("signet.db");
    let stray = format!("sha256:{}", "ab".repeat(32));
    let insert = format!(
        "INSERT INTO verdicts SELECT id, '{stray}', '{stray}', '', 'valid', NULL, NULL, NULL, 'old', 0 FROM repositories WHERE name = 'team/app'"
    );
    let write_stray = || {
        let status = Command::new("sqlite3")
            .arg(&db)
            .arg(&insert)
            .status()
            .unwrap();
        assert!(status.success());
    };
    write_stray();
    let fsck = |repair: bool| {
        let mut cmd = setup.registry.cli(&["fsck", "--json"]);
        if repair {
            cmd.arg("--repair");
        }
        let out = cmd.output().unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.success(), report)
    };
    let (clean, report) = fsck(false);
    assert!(!clean, "{report}");
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    assert_eq!(problems[0]["kind"], "verdict-orphaned");
    assert_eq!(problems[0]["subject"], format!("team/app@{stray}"));
    let (_, repaired) = fsck(true);
    assert_eq!(repaired["problems"][0]["repaired"], true, "{repaired}");
    let (clean, report) = fsck(false);
    assert!(clean, "{report}");
    // A garbage collection removes one too.
    write_stray();
    assert!(!fsck(false).0);
    let out = run(&mut setup.registry.cli(&["gc", "--json"]));
    let gc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(gc["orphan_verdicts"], 1, "{out}");
    let (clean, report) = fsck(false);
    assert!(clean, "{report}");
}

#[tokio::test]
async fn enforce_answers_follow_new_signatures_and_reloaded_requirements() {
    let key = Key::generate();
    let keys = tempfile::tempdir().unwrap();
    let key_file = key.write_public(keys.path());
    let enforce = trust_toml(Some(&key_file)).replace(
        "repositories = [\"team/*\"]",
        "repositories = [\"team/*\"]\npolicy = \"enforce\"",
    );
    let setup = start(&enforce);
    let (c, r) = (client(), &setup.registry);

    // Refused, every time (the later answers may come from memory).
    push_image(&c, r, "team/plain", "v1", &[b"plain"]).await;
    for _ in 0..3 {
        let (status, _) = get(&c, &r.v2("team/plain/manifests/v1")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    // Signed: served, every time.
    push_signed(&c, r, "team/app", &key).await;
    for _ in 0..3 {
        let (status, body) = get(&c, &r.v2("team/app/manifests/v1")).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    }

    // A reloaded requirement (an SBOM) changes no verdict and writes nothing, yet the
    // next pull is judged by it; dropping it again serves the image again.
    let with_sbom =
        format!("{enforce}[[trust.requirements]]\nrepositories = [\"team/*\"]\nsbom = true\n");
    std::fs::write(&setup.config, &with_sbom).unwrap();
    hup(r);
    wait_for("the SBOM requirement", || async {
        get(&c, &r.v2("team/app/manifests/v1")).await.0 == StatusCode::FORBIDDEN
    })
    .await;
    let (_, body) = get(&c, &r.v2("team/app/manifests/v1")).await;
    assert!(
        String::from_utf8_lossy(&body).contains("SBOM"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    std::fs::write(&setup.config, &enforce).unwrap();
    hup(r);
    wait_for("the requirement dropped", || async {
        get(&c, &r.v2("team/app/manifests/v1")).await.0 == StatusCode::OK
    })
    .await;

    // The tag moved to an unsigned manifest: refused on the next pull.
    push_image(&c, r, "team/app", "v1", &[b"unsigned now"]).await;
    let (status, _) = get(&c, &r.v2("team/app/manifests/v1")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
