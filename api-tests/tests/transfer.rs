//! Across an air gap: `signet export` writes images with every platform and every
//! attachment into an OCI layout (a tar or a folder), `signet import` stores it in
//! another Signet byte for byte, the signatures verifying there (cosign's with the
//! sigstore crate, GPG's with skopeo's `signedBy`); skopeo and umoci read the layout;
//! a layout skopeo wrote imports; a damaged layout is refused, naming the blob, with
//! nothing stored.

use std::path::Path;
use std::process::{Command, Output};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use signet_api_tests::cosign::{
    cosign_verify_with, push_referrer, sign_payload, simple_signing_payload, Key,
};
use signet_api_tests::gpg::{oci_layout, signed_by_policy, skopeo_pull, GpgKey};
use signet_api_tests::oci::{get, push_image, push_two_platform_index, OCI_MANIFEST};
use signet_api_tests::{client, random_bytes, require_tool, run, sha256, Registry};

const SPDX: &str = "application/spdx+json";

fn cli(r: &Registry, args: &[&str]) -> Output {
    r.cli(args).output().expect("run signet")
}

fn succeeded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn manifest(c: &Client, r: &Registry, repo: &str, reference: &str) -> (StatusCode, Vec<u8>) {
    let (status, body) = get(c, &r.v2(&format!("{repo}/manifests/{reference}"))).await;
    (status, body.to_vec())
}

/// The repositories `r` lists.
async fn catalog(c: &Client, r: &Registry) -> Value {
    let (status, body) = get(c, &r.v2("_catalog")).await;
    assert_eq!(status, StatusCode::OK);
    serde_json::from_slice::<Value>(&body).unwrap()["repositories"].clone()
}

/// An image with a cosign signature and an SBOM referrer, a signed two-platform
/// index, and an image skopeo signed with GPG, all in `team/app` of `r`.
struct Fixture {
    image: Vec<u8>,
    index: Vec<u8>,
    sbom: String,
    key: Key,
    alice_pub: std::path::PathBuf,
}

async fn fixture(c: &Client, r: &Registry, dir: &Path) -> Fixture {
    let repo = "team/app";
    let image = push_image(c, r, repo, "v1", &[&random_bytes(4096)]).await;
    let digest = sha256(&image);
    let key = Key::generate();
    let payload = simple_signing_payload(r, repo, &digest);
    sign_payload(c, r, repo, &digest, &payload, &key).await;
    let subject = json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": image.len()});
    let sbom = push_referrer(
        c,
        r,
        repo,
        subject,
        SPDX,
        br#"{"spdxVersion":"SPDX-2.3"}"#,
        Value::Null,
    )
    .await;
    let index = push_two_platform_index(c, r, repo, "multi").await;
    let index_digest = sha256(&index);
    let payload = simple_signing_payload(r, repo, &index_digest);
    sign_payload(c, r, repo, &index_digest, &payload, &key).await;

    let layout = oci_layout(dir);
    let alice = GpgKey::generate(dir, "alice");
    let alice_pub = dir.join("alice.asc");
    alice.export(&alice_pub, true);
    alice.skopeo_sign(
        dir,
        None,
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{}/{repo}:gpg", r.host),
    );
    Fixture {
        image,
        index,
        sbom,
        key,
        alice_pub,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_images_cross_the_gap_in_a_tar_byte_for_byte() {
    let c = client();
    let dir = tempfile::tempdir().unwrap();
    let source = Registry::start();
    let f = fixture(&c, &source, dir.path()).await;
    let tar = dir.path().join("team.tar");
    let report: Value = serde_json::from_str(&succeeded(&cli(
        &source,
        &["export", "team/app", "-o", tar.to_str().unwrap(), "--json"],
    )))
    .unwrap();
    assert_eq!(report["atomic_signatures"], 1, "{report}");

    // Other tools read the layout.
    require_tool("skopeo");
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        &format!("oci-archive:{}:team/app:v1", tar.display()),
    ]));
    assert_eq!(
        raw.as_bytes(),
        &f.image[..],
        "skopeo reads the exported image"
    );

    let target = Registry::start();
    let summary: Value = serde_json::from_str(&succeeded(&cli(
        &target,
        &["import", tar.to_str().unwrap(), "--json"],
    )))
    .unwrap();
    assert_eq!(summary["errors"], json!([]), "{summary}");

    let repo = "team/app";
    assert_eq!(
        manifest(&c, &target, repo, "v1").await,
        (StatusCode::OK, f.image.clone())
    );
    assert_eq!(
        manifest(&c, &target, repo, "multi").await,
        (StatusCode::OK, f.index.clone())
    );
    let index: Value = serde_json::from_slice(&f.index).unwrap();
    for child in index["manifests"].as_array().unwrap() {
        let d = child["digest"].as_str().unwrap();
        assert_eq!(
            manifest(&c, &target, repo, d).await.0,
            StatusCode::OK,
            "platform {d}"
        );
    }
    // The cosign signatures verify there, with the sigstore crate.
    for reference in ["v1", "multi"] {
        assert_eq!(
            cosign_verify_with(&target.host, repo, reference, f.key.verifier()).await,
            Ok(1),
            "{reference}"
        );
    }
    // The SBOM is a referrer there.
    let (status, body) = get(
        &c,
        &target.v2(&format!("{repo}/referrers/{}", sha256(&f.image))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let referrers: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        referrers["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["digest"] == f.sbom.as_str()),
        "{referrers}"
    );
    // The GPG signature verifies with skopeo's signedBy, for the identity it was made for.
    let identity = format!("{}/{repo}", source.host);
    let scope = format!("{}/{repo}", target.host);
    let policy = signed_by_policy(dir.path(), "alice", &scope, &f.alice_pub, &identity);
    let out = skopeo_pull(&policy, &format!("{scope}:gpg"), &dir.path().join("pulled"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Again: nothing copied twice.
    let again: Value = serde_json::from_str(&succeeded(&cli(
        &target,
        &["import", tar.to_str().unwrap(), "--json"],
    )))
    .unwrap();
    assert_eq!(again["manifests_copied"], 0, "{again}");
    assert_eq!(again["blobs_copied"], 0, "{again}");
}

#[tokio::test]
async fn a_folder_layout_reads_in_umoci_and_imports_under_a_prefix() {
    require_tool("umoci");
    let c = client();
    let dir = tempfile::tempdir().unwrap();
    let source = Registry::start();
    let image = push_image(&c, &source, "team/app", "v1", &[&random_bytes(512)]).await;
    let out = dir.path().join("layout");
    succeeded(&cli(
        &source,
        &["export", "team/app:v1", "-o", out.to_str().unwrap()],
    ));
    let listed = run(Command::new("umoci").args(["ls", "--layout", out.to_str().unwrap()]));
    assert_eq!(listed.trim(), "team/app:v1");

    let target = Registry::start();
    succeeded(&cli(
        &target,
        &["import", out.to_str().unwrap(), "--prefix", "mirror"],
    ));
    assert_eq!(
        manifest(&c, &target, "mirror/team/app", "v1").await,
        (StatusCode::OK, image)
    );
}

#[tokio::test]
async fn a_layout_skopeo_wrote_imports() {
    require_tool("skopeo");
    let c = client();
    let dir = tempfile::tempdir().unwrap();
    let source = Registry::start();
    push_two_platform_index(&c, &source, "team/app", "multi").await;
    let layout = dir.path().join("skopeo");
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{}/team/app:multi", source.host),
        &format!("oci:{}:multi", layout.display()),
    ]));
    // The index as skopeo wrote it (it may re-encode what it copies).
    let written = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        &format!("oci:{}:multi", layout.display()),
    ]));

    let target = Registry::start();
    let refused = cli(&target, &["import", layout.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--repository"),
        "a tag alone needs a repository"
    );
    succeeded(&cli(
        &target,
        &[
            "import",
            layout.to_str().unwrap(),
            "--repository",
            "imported/app",
        ],
    ));
    assert_eq!(
        manifest(&c, &target, "imported/app", "multi").await,
        (StatusCode::OK, written.into_bytes())
    );
}

#[tokio::test]
async fn a_damaged_layout_is_refused_naming_the_blob_and_stores_nothing() {
    let c = client();
    let dir = tempfile::tempdir().unwrap();
    let source = Registry::start();
    let layer = random_bytes(4096);
    push_image(&c, &source, "team/app", "v1", &[&layer]).await;
    let layer_path = format!(
        "blobs/sha256/{}",
        sha256(&layer).trim_start_matches("sha256:")
    );
    let target = Registry::start();

    let refused = |out: Output, what: &str| {
        assert!(!out.status.success(), "{what}: refused");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            stderr.contains(&layer_path),
            "{what}: names the blob: {stderr}"
        );
    };

    // A flipped byte.
    let flipped = dir.path().join("flipped");
    succeeded(&cli(
        &source,
        &["export", "team/app", "-o", flipped.to_str().unwrap()],
    ));
    let file = flipped.join(&layer_path);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    refused(
        cli(&target, &["import", flipped.to_str().unwrap()]),
        "flipped byte",
    );

    // A missing blob.
    std::fs::remove_file(&file).unwrap();
    refused(
        cli(&target, &["import", flipped.to_str().unwrap()]),
        "missing blob",
    );

    // A tar cut inside the blob.
    let tar = dir.path().join("cut.tar");
    succeeded(&cli(
        &source,
        &["export", "team/app", "-o", tar.to_str().unwrap()],
    ));
    let whole = std::fs::read(&tar).unwrap();
    let at = whole
        .windows(layer.len().min(64))
        .position(|w| w == &layer[..64])
        .unwrap();
    std::fs::write(&tar, &whole[..at + 10]).unwrap();
    refused(
        cli(&target, &["import", tar.to_str().unwrap()]),
        "truncated tar",
    );

    assert_eq!(catalog(&c, &target).await, json!([]), "nothing stored");
}

#[tokio::test]
async fn a_sync_job_reads_a_tar_and_verifies_on_ingest() {
    let c = client();
    let dir = tempfile::tempdir().unwrap();
    let key = Key::generate();
    let key_file = key.write_public(dir.path(), "release");
    let source = Registry::start();
    let signed = sha256(&push_image(&c, &source, "apps/app", "v1", &[&random_bytes(256)]).await);
    let payload = simple_signing_payload(&source, "apps/app", &signed);
    sign_payload(&c, &source, "apps/app", &signed, &payload, &key).await;
    push_image(&c, &source, "apps/app", "unsigned", &[&random_bytes(256)]).await;
    let tar = dir.path().join("apps.tar");
    succeeded(&cli(
        &source,
        &["export", "apps/app", "-o", tar.to_str().unwrap()],
    ));

    let target = Registry::start_with_config(&format!(
        "[trust]\npolicy = \"enforce\"\n{}\n[[sync.jobs]]\nname = \"gap\"\nupstream = \"oci-archive:{}\"\nrepositories = [\"apps/**\"]\ndestination_prefix = \"inside\"\n",
        signet_api_tests::cosign::trust_root("release", &key_file, &["inside/**"]),
        tar.display()
    ));
    let out = cli(&target, &["sync", "run", "gap", "--json"]);
    assert!(!out.status.success(), "the refused tag fails the run");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["tags_verified"], 1, "{summary}");
    assert_eq!(summary["tags_refused"], 1, "{summary}");
    assert_eq!(
        manifest(&c, &target, "inside/apps/app", "v1").await.0,
        StatusCode::OK,
        "the signed image is published"
    );
    assert_eq!(
        manifest(&c, &target, "inside/apps/app", "unsigned").await.0,
        StatusCode::NOT_FOUND,
        "the unsigned one is not"
    );
}

#[tokio::test]
async fn the_next_trip_carries_only_new_blobs() {
    let c = client();
    let dir = tempfile::tempdir().unwrap();
    let source = Registry::start();
    let shared = random_bytes(8192);
    push_image(&c, &source, "team/app", "v1", &[&shared]).await;
    let first = dir.path().join("first.tar");
    succeeded(&cli(
        &source,
        &["export", "team/app", "-o", first.to_str().unwrap()],
    ));
    let target = Registry::start();
    succeeded(&cli(&target, &["import", first.to_str().unwrap()]));

    let fresh = random_bytes(8192);
    let v2 = push_image(&c, &source, "team/app", "v2", &[&shared, &fresh]).await;
    let delta = dir.path().join("delta");
    let report: Value = serde_json::from_str(&succeeded(&cli(
        &source,
        &[
            "export",
            "team/app",
            "-o",
            delta.to_str().unwrap(),
            "--since",
            first.to_str().unwrap(),
            "--json",
        ],
    )))
    .unwrap();
    assert!(report["blobs_left_out"].as_u64().unwrap() >= 1, "{report}");
    let shared_path = format!(
        "blobs/sha256/{}",
        sha256(&shared).trim_start_matches("sha256:")
    );
    assert!(
        !delta.join(&shared_path).exists(),
        "the shared layer stays behind"
    );

    succeeded(&cli(&target, &["import", delta.to_str().unwrap()]));
    assert_eq!(
        manifest(&c, &target, "team/app", "v2").await,
        (StatusCode::OK, v2)
    );

    // Alone, the delta lacks what only the first trip carried.
    let elsewhere = Registry::start();
    let out = cli(&elsewhere, &["import", delta.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&shared_path));
    assert_eq!(catalog(&c, &elsewhere).await, json!([]), "nothing stored");
}

#[tokio::test]
async fn a_sync_job_writes_to_a_layout_instead_of_the_store() {
    let c = client();
    let dir = tempfile::tempdir().unwrap();
    let upstream = Registry::start();
    let image = push_image(&c, &upstream, "team/app", "v1", &[&random_bytes(1024)]).await;
    let digest = sha256(&image);
    let key = Key::generate();
    let payload = simple_signing_payload(&upstream, "team/app", &digest);
    sign_payload(&c, &upstream, "team/app", &digest, &payload, &key).await;
    let carry = dir.path().join("carry");

    let outside = Registry::start_with_config(&format!(
        "[sync]\n[[sync.jobs]]\nname = \"carry\"\nupstream = \"{}\"\nrepositories = [\"team/app\"]\ndestination_layout = \"{}\"\n",
        upstream.url,
        carry.display()
    ));
    let first: Value = serde_json::from_str(&succeeded(&cli(
        &outside,
        &["sync", "run", "carry", "--json"],
    )))
    .unwrap();
    assert_eq!(
        first["manifests_copied"], 2,
        "the image and its signature: {first}"
    );
    assert_eq!(
        catalog(&c, &outside).await,
        json!([]),
        "nothing in the store"
    );
    let again: Value = serde_json::from_str(&succeeded(&cli(
        &outside,
        &["sync", "run", "carry", "--json"],
    )))
    .unwrap();
    assert_eq!(again["blobs_copied"], 0, "the folder had them: {again}");

    let inside = Registry::start();
    succeeded(&cli(&inside, &["import", carry.to_str().unwrap()]));
    assert_eq!(
        manifest(&c, &inside, "team/app", "v1").await,
        (StatusCode::OK, image)
    );
    assert_eq!(
        cosign_verify_with(&inside.host, "team/app", "v1", key.verifier()).await,
        Ok(1)
    );
}
