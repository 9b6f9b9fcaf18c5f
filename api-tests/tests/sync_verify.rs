//! Verify on ingest: a mirror whose trust policy enforces signatures on the destination
//! repositories (or whose job says `verify = true`) moves a mirrored tag only when the
//! manifest's signatures, mirrored in the same run, verify — cosign signatures, and
//! atomic GPG signatures made by skopeo, which skopeo still verifies from the mirror.
//! Two real Signet processes: the upstream, and the mirror running `signet sync run`.

use std::process::{Command, Output};

use reqwest::{Client, StatusCode};
use serde_json::Value;
use signet_api_tests::cosign::{
    gpg_trust_root, head_digest, sign_payload, simple_signing_payload, trust_root, Key,
};
use signet_api_tests::gpg::{accept_anything_policy, signed_by_policy, GpgKey};
use signet_api_tests::oci::{get, push_image};
use signet_api_tests::{client, require_tool, run, sha256, Registry};

/// `cosign sign --key` by hand: the `.sig` of `subject` with one simple-signing layer
/// over a payload naming `named` as the signed digest.
async fn sign(c: &Client, r: &Registry, repo: &str, subject: &str, named: &str, key: &Key) {
    let payload = simple_signing_payload(r, repo, named);
    sign_payload(c, r, repo, subject, &payload, key).await;
}

/// `signet sync run <job> --json` on the mirror; the summary and whether it succeeded.
fn sync(mirror: &Registry, job: &str) -> (Value, bool) {
    let out: Output = mirror
        .cli(&["sync", "run", job, "--json"])
        .output()
        .expect("run signet sync");
    let summary = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "summary {:?}: {e}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (summary, out.status.success())
}

fn n(summary: &Value, field: &str) -> u64 {
    summary[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {summary}"))
}

fn errors(summary: &Value) -> Vec<String> {
    summary["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn only_verified_tags_are_published_and_the_report_says_why() {
    let release = Key::generate();
    let stranger = Key::generate();
    let keys = tempfile::tempdir().unwrap();
    let key_file = release.write_public(keys.path(), "release");

    let upstream = Registry::start();
    let c = client();
    let good = sha256(&push_image(&c, &upstream, "apps/good", "v1", &[b"good"]).await);
    sign(&c, &upstream, "apps/good", &good, &good, &release).await;
    let bad = sha256(&push_image(&c, &upstream, "apps/bad", "v1", &[b"bad"]).await);
    sign(&c, &upstream, "apps/bad", &bad, &bad, &stranger).await;
    let unsigned = sha256(&push_image(&c, &upstream, "apps/unsigned", "v1", &[b"plain"]).await);
    // Signed by the trusted key, but over another image's digest.
    let copied = sha256(&push_image(&c, &upstream, "apps/copied", "v1", &[b"copied"]).await);
    sign(&c, &upstream, "apps/copied", &copied, &good, &release).await;

    let mirror = Registry::start_with_config(&format!(
        "[trust]\n{}policy = \"enforce\"\n{}{}",
        trust_root("release", &key_file, &["mirror/**"]),
        trust_root("release-relaxed", &key_file, &["plain/**"]),
        format_args!(
            r#"
[[sync.jobs]]
name = "enforced"
upstream = "{up}"
repositories = ["apps/good", "apps/bad", "apps/unsigned", "apps/copied"]
destination_prefix = "mirror"

[[sync.jobs]]
name = "unchecked"
upstream = "{up}"
repositories = ["apps/unsigned"]
destination_prefix = "plain"

[[sync.jobs]]
name = "checked"
upstream = "{up}"
repositories = ["apps/unsigned"]
destination_prefix = "plain-checked"
verify = true
"#,
            up = upstream.url,
        ),
    ));

    let (summary, ok) = sync(&mirror, "enforced");
    assert!(!ok, "refused items make the run fail: {summary}");
    assert_eq!(n(&summary, "tags_verified"), 1, "{summary}");
    assert_eq!(n(&summary, "tags_refused"), 3, "{summary}");
    let errs = errors(&summary);
    assert_eq!(errs.len(), 3, "{errs:?}");
    let about = |repo: &str| {
        errs.iter()
            .find(|e| e.contains(repo))
            .unwrap_or_else(|| panic!("no error about {repo}: {errs:?}"))
            .clone()
    };
    assert!(about("apps/bad").contains("not published"), "{errs:?}");
    assert!(about("apps/bad").contains("bad signature"), "{errs:?}");
    assert!(about("apps/unsigned").contains("no signature"), "{errs:?}");
    assert!(about("apps/copied").contains("digest mismatch"), "{errs:?}");

    // The verified tag is published and pulls under enforce; the others have no tag,
    // though their manifests and signatures were mirrored (for a later verification).
    assert_eq!(
        head_digest(&c, &mirror, "mirror/apps/good", "v1").await,
        Some(good.clone())
    );
    let (status, _) = get(&c, &mirror.v2("mirror/apps/good/manifests/v1")).await;
    assert_eq!(status, StatusCode::OK);
    for repo in [
        "mirror/apps/bad",
        "mirror/apps/unsigned",
        "mirror/apps/copied",
    ] {
        assert_eq!(head_digest(&c, &mirror, repo, "v1").await, None, "{repo}");
    }
    let sig_tag = format!("{}.sig", bad.replace(':', "-"));
    assert!(head_digest(&c, &mirror, "mirror/apps/bad", &sig_tag)
        .await
        .is_some());

    // Upstream signs the bad image properly: the rerun publishes it.
    sign(&c, &upstream, "apps/bad", &bad, &bad, &release).await;
    let (summary, _) = sync(&mirror, "enforced");
    assert_eq!(n(&summary, "tags_verified"), 1, "{summary}");
    assert_eq!(n(&summary, "tags_refused"), 2, "{summary}");
    assert_eq!(
        head_digest(&c, &mirror, "mirror/apps/bad", "v1").await,
        Some(bad.clone())
    );

    // Upstream moves good:v1 to an unsigned image: the mirror's tag does not move.
    let moved = sha256(&push_image(&c, &upstream, "apps/good", "v1", &[b"unsigned now"]).await);
    let (summary, _) = sync(&mirror, "enforced");
    assert!(
        errors(&summary)
            .iter()
            .any(|e| e.contains("apps/good") && e.contains(&moved)),
        "{summary}"
    );
    assert_eq!(
        head_digest(&c, &mirror, "mirror/apps/good", "v1").await,
        Some(good.clone())
    );

    // No enforce on the destination and no `verify`: published as is.
    let (summary, ok) = sync(&mirror, "unchecked");
    assert!(ok, "{summary}");
    assert_eq!(n(&summary, "tags_verified"), 0);
    assert_eq!(
        head_digest(&c, &mirror, "plain/apps/unsigned", "v1").await,
        Some(unsigned.clone())
    );
    // `verify = true` checks even there (no root covers plain-checked/**).
    let (summary, ok) = sync(&mirror, "checked");
    assert!(!ok, "{summary}");
    assert_eq!(n(&summary, "tags_refused"), 1, "{summary}");
    assert!(errors(&summary)[0].contains("no signature"), "{summary}");
    assert_eq!(
        head_digest(&c, &mirror, "plain-checked/apps/unsigned", "v1").await,
        None
    );
}

/// skopeo with a policy file; `--sign-by` when a key is given.
fn skopeo_copy(policy: &std::path::Path, signer: Option<&GpgKey>, from: &str, to: &str) {
    require_tool("skopeo");
    let mut cmd = Command::new("skopeo");
    cmd.arg("--policy").arg(policy).args([
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
    ]);
    if let Some(key) = signer {
        cmd.env("GNUPGHOME", &key.home)
            .args(["--sign-by", &key.fingerprint]);
    }
    run(cmd.arg(from).arg(to));
}

#[tokio::test(flavor = "multi_thread")]
async fn atomic_gpg_signatures_are_verified_on_ingest_and_still_verify_with_skopeo() {
    let dir = tempfile::tempdir().unwrap();
    let alice = GpgKey::generate(dir.path(), "alice");
    let mallory = GpgKey::generate(dir.path(), "mallory");
    let alice_pub = dir.path().join("alice.asc");
    alice.export(&alice_pub, true);
    let anything = accept_anything_policy(dir.path());

    // Upstream: a Signet holding two images signed by skopeo through gpg.
    let upstream = Registry::start();
    let c = client();
    push_image(&c, &upstream, "staging/a", "v1", &[b"alice's"]).await;
    push_image(&c, &upstream, "staging/m", "v1", &[b"mallory's"]).await;
    let up = |path: &str| format!("docker://{}/{path}", upstream.host);
    skopeo_copy(
        &anything,
        Some(&alice),
        &up("staging/a:v1"),
        &up("apps/signed:v1"),
    );
    skopeo_copy(
        &anything,
        Some(&mallory),
        &up("staging/m:v1"),
        &up("apps/mallory:v1"),
    );

    // The mirror keeps the names (no prefix): the signatures' docker-reference names
    // the same repository, on another host, which is not compared.
    let mirror = Registry::start_with_config(&format!(
        "[trust]\n{}policy = \"enforce\"\n\n\
         [[sync.jobs]]\nname = \"gpg\"\nupstream = \"{}\"\n\
         repositories = [\"apps/signed\", \"apps/mallory\"]\n",
        gpg_trust_root("release", &alice_pub, &["apps/**"]),
        upstream.url,
    ));
    let out = mirror.cli(&["sync", "run", "gpg"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("atomic signatures: 2 copied"), "{text}");
    assert!(
        text.contains("verified on ingest: 1 tag(s) published, 1 not published"),
        "{text}"
    );
    assert!(
        text.contains("apps/mallory:v1") && text.contains("no valid signature"),
        "{text}"
    );
    assert!(head_digest(&c, &mirror, "apps/signed", "v1")
        .await
        .is_some());
    assert_eq!(head_digest(&c, &mirror, "apps/mallory", "v1").await, None);

    // skopeo verifies the mirrored signature from the mirror with a signedBy policy
    // (the identity is the upstream's, as the signer wrote it).
    let policy = signed_by_policy(
        dir.path(),
        "alice",
        &format!("{}/apps/signed", mirror.host),
        &alice_pub,
        &format!("{}/apps/signed", upstream.host),
    );
    let dest = dir.path().join("pulled");
    skopeo_copy(
        &policy,
        None,
        &format!("docker://{}/apps/signed:v1", mirror.host),
        &format!("dir:{}", dest.display()),
    );
    assert!(dest.join("manifest.json").exists());
}
