//! Server-side verification of atomic (GPG "simple signing") signatures: skopeo signs
//! with a real gpg key into Signet's signatures extension, Signet checks the signature
//! with its own OpenPGP code against the `gpg_keys` of its trust roots, and the verdict
//! shows in the coverage extension and counts for the pull policy. Tampered
//! signatures, signatures over another digest, by an unknown key, or naming another
//! repository (docker-reference) are each told apart.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use signet_api_tests::cosign::{coverage, gpg_trust_root, head_digest, trust_check};
use signet_api_tests::gpg::{accept_anything_policy, skopeo_pull, GpgKey};
use signet_api_tests::oci::{
    error_code, get, image_manifest, push_blob, push_image, put_manifest, OCI_MANIFEST,
};
use signet_api_tests::{client, random_bytes, require_tool, run, sha256, Registry};

/// `gpg --sign` over `payload`, uncompressed (`-z 0`) so a test can alter signed bytes.
fn gpg_sign(key: &GpgKey, payload: &[u8], dir: &Path) -> Vec<u8> {
    gpg_sign_as(key, &key.fingerprint, payload, dir)
}

/// `gpg_sign` with a chosen signing key (`FPR!` names one subkey exactly).
fn gpg_sign_as(key: &GpgKey, user: &str, payload: &[u8], dir: &Path) -> Vec<u8> {
    let input = dir.join(format!("payload-{}.json", hex::encode(random_bytes(4))));
    std::fs::write(&input, payload).unwrap();
    let output = input.with_extension("gpg");
    run(Command::new("gpg")
        .env("GNUPGHOME", &key.home)
        .args(["--batch", "--yes", "-z", "0", "--local-user", user])
        .arg("--output")
        .arg(&output)
        .arg("--sign")
        .arg(&input));
    std::fs::read(output).unwrap()
}

/// The simple-signing payload containers/image writes.
fn atomic_payload(reference: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest},
            "type": "atomic container signature",
        },
        "optional": {"creator": "signet tests", "timestamp": 1_700_000_000},
    }))
    .unwrap()
}

/// Stores `content` as an atomic signature of `digest` through the extension.
async fn put_signature(c: &Client, r: &Registry, repo: &str, digest: &str, content: &[u8]) {
    let id = hex::encode(random_bytes(16));
    let resp = c
        .put(format!(
            "{}/extensions/v2/{repo}/signatures/{digest}",
            r.url
        ))
        .json(&json!({"schemaVersion": 2, "type": "atomic",
                      "name": format!("{digest}@{id}"), "content": B64.encode(content)}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
}

async fn stored_signatures(c: &Client, r: &Registry, repo: &str, digest: &str) -> Vec<Vec<u8>> {
    let (status, body) = get(
        c,
        &format!("{}/extensions/v2/{repo}/signatures/{digest}", r.url),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    v["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| B64.decode(s["content"].as_str().unwrap()).unwrap())
        .collect()
}

/// The verdicts on `digest`'s own atomic signatures, by signature content digest.
async fn atomic_verdicts(
    c: &Client,
    r: &Registry,
    repo: &str,
    digest: &str,
) -> Vec<(String, Value)> {
    coverage(c, r, repo, digest).await["attachments"]["signature"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s["format"] == "atomic")
        .map(|s| {
            (
                s["digest"].as_str().unwrap().to_string(),
                s["verification"].clone(),
            )
        })
        .collect()
}

/// The verdict on `digest`'s atomic signature whose content is `content`.
async fn atomic_verdict(
    c: &Client,
    r: &Registry,
    repo: &str,
    digest: &str,
    content: &[u8],
) -> Value {
    verdict_in(&atomic_verdicts(c, r, repo, digest).await, content)
}

/// The verdict on the signature whose content is `content`, among `verdicts`.
fn verdict_in(verdicts: &[(String, Value)], content: &[u8]) -> Value {
    verdicts
        .iter()
        .find(|(d, _)| *d == sha256(content))
        .unwrap_or_else(|| panic!("{} is not in {verdicts:?}", sha256(content)))
        .1
        .clone()
}

/// `skopeo copy --sign-by` from one repository of `r` to another: a real client
/// signing through gpgme into the signatures extension.
fn skopeo_sign_copy(r: &Registry, dir: &Path, key: &GpgKey, from: &str, to: &str) {
    require_tool("skopeo");
    run(Command::new("skopeo")
        .env("GNUPGHOME", &key.home)
        .arg("--policy")
        .arg(accept_anything_policy(dir))
        .args([
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--sign-by",
            &key.fingerprint,
        ])
        .arg(format!("docker://{}/{from}", r.host))
        .arg(format!("docker://{}/{to}", r.host)));
}

/// skopeo copy without signing: carries the existing atomic signatures along.
fn skopeo_copy(r: &Registry, dir: &Path, from: &str, to: &str) {
    run(Command::new("skopeo")
        .arg("--policy")
        .arg(accept_anything_policy(dir))
        .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .arg(format!("docker://{}/{from}", r.host))
        .arg(format!("docker://{}/{to}", r.host)));
}

struct Keys {
    dir: tempfile::TempDir,
    alice: GpgKey,
    mallory: GpgKey,
    alice_pub: PathBuf,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let alice = GpgKey::generate(dir.path(), "alice");
    let mallory = GpgKey::generate(dir.path(), "mallory");
    let alice_pub = dir.path().join("alice.asc");
    alice.export(&alice_pub, true);
    Keys {
        dir,
        alice,
        mallory,
        alice_pub,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_gpg_signatures_are_verified_and_count_for_the_policy() {
    let k = keys();
    let r = Registry::start_with_config(&format!(
        "[trust]\n{}policy = \"enforce\"\n",
        gpg_trust_root("release", &k.alice_pub, &["team/**"])
    ));
    let c = client();
    let dir = k.dir.path();
    push_image(&c, &r, "staging/src", "v1", &[&random_bytes(300)]).await;
    push_image(&c, &r, "staging/other", "v1", &[&random_bytes(300)]).await;

    // Signed by alice with skopeo: valid, and the enforce policy serves it.
    skopeo_sign_copy(&r, dir, &k.alice, "staging/src:v1", "team/app:v1");
    let (status, manifest) = get(&c, &r.v2("team/app/manifests/v1")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&manifest)
    );
    let digest = sha256(&manifest);
    let verdicts = atomic_verdicts(&c, &r, "team/app", &digest).await;
    assert_eq!(verdicts.len(), 1, "{verdicts:?}");
    assert_eq!(verdicts[0].1["verdict"], "valid", "{verdicts:?}");
    assert_eq!(verdicts[0].1["root"], "release");
    // `signet attachments` shows it beside cosign signatures, with its verdict.
    let tree = run(&mut r.cli(&["attachments", "team/app:v1"]));
    assert!(
        tree.contains("(atomic, extension) — valid (root release)"),
        "{tree}"
    );

    // Signed by mallory, whom no root trusts: no matching trust root, refused.
    skopeo_sign_copy(&r, dir, &k.mallory, "staging/other:v1", "team/mallory:v1");
    let (status, body) = get(&c, &r.v2("team/mallory/manifests/v1")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), "DENIED");
    let mallory_digest = head_digest(&c, &r, "team/mallory", "v1")
        .await
        .expect("team/mallory:v1 is tagged");
    let verdicts = atomic_verdicts(&c, &r, "team/mallory", &mallory_digest).await;
    assert_eq!(verdicts.len(), 1);
    assert_eq!(verdicts[0].1["verdict"], "no-trust-root", "{verdicts:?}");
    let reason = verdicts[0].1["reason"].as_str().unwrap();
    assert!(
        reason.contains(&k.mallory.fingerprint[k.mallory.fingerprint.len() - 16..]),
        "{reason}"
    );

    // Alice's signature with one signed byte altered: invalid, bad signature. Made
    // uncompressed from the payload skopeo signed, so the change lands in signed data.
    let original = stored_signatures(&c, &r, "team/app", &digest).await;
    let payload = run(Command::new("gpg")
        .env("GNUPGHOME", &k.alice.home)
        .args(["--batch", "--decrypt"])
        .arg({
            let p = dir.join("skopeo.sig");
            std::fs::write(&p, &original[0]).unwrap();
            p
        }));
    assert!(payload.contains(&digest), "{payload}");
    let mut tampered = gpg_sign(&k.alice, payload.as_bytes(), dir);
    let at = tampered
        .windows(7)
        .position(|w| w == b"sha256:")
        .expect("the digest in the literal data")
        + 10;
    tampered[at] = if tampered[at] == b'0' { b'1' } else { b'0' };
    put_signature(&c, &r, "team/app", &digest, &tampered).await;
    let v = &atomic_verdict(&c, &r, "team/app", &digest, &tampered).await;
    assert_eq!(v["verdict"], "invalid", "{v}");
    assert!(
        v["reason"].as_str().unwrap().contains("bad signature"),
        "{v}"
    );

    // Alice's valid signature over a payload naming another digest: digest mismatch.
    let other = sha256(b"another manifest");
    let elsewhere = gpg_sign(
        &k.alice,
        &atomic_payload(&format!("{}/team/app:v1", r.host), &other),
        dir,
    );
    put_signature(&c, &r, "team/app", &digest, &elsewhere).await;
    let v = &atomic_verdict(&c, &r, "team/app", &digest, &elsewhere).await;
    assert_eq!(v["verdict"], "invalid");
    assert!(
        v["reason"].as_str().unwrap().contains("digest mismatch"),
        "{v}"
    );

    // An unsigned image under the enforce root is refused, and the message says why.
    push_image(&c, &r, "team/unsigned", "v1", &[&random_bytes(100)]).await;
    let (status, body) = get(&c, &r.v2("team/unsigned/manifests/v1")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(&body).contains("no signature"));
    // The signed one still pulls: its valid signature outweighs the bad ones.
    assert_eq!(
        get(&c, &r.v2("team/app/manifests/v1")).await.0,
        StatusCode::OK
    );
    // And so a real client sees it: skopeo copies the signed image, and is refused
    // the unsigned one with the registry's reason.
    let anything = accept_anything_policy(dir);
    let image = |repo: &str| format!("{}/{repo}:v1", r.host);
    let out = skopeo_pull(&anything, &image("team/app"), &dir.join("pulled-signed"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = skopeo_pull(
        &anything,
        &image("team/unsigned"),
        &dir.join("pulled-unsigned"),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("denied") || stderr.contains("DENIED"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_reference_must_name_the_repository_unless_the_root_ignores_it() {
    let k = keys();
    // A binary key file works as well as an armored one.
    let binary = k.dir.path().join("alice.gpg");
    k.alice.export(&binary, false);
    let r = Registry::start_with_config(&format!(
        "[trust]\n{}{}docker_reference = \"ignore\"\n",
        gpg_trust_root("release", &binary, &["team/**"]),
        gpg_trust_root("mirrors", &binary, &["mirror/**"]),
    ));
    let c = client();
    let dir = k.dir.path();
    push_image(&c, &r, "staging/src", "v1", &[&random_bytes(300)]).await;
    skopeo_sign_copy(&r, dir, &k.alice, "staging/src:v1", "team/app:v1");
    let digest = sha256(&get(&c, &r.v2("team/app/manifests/v1")).await.1);

    // skopeo copies the signature with the image; it still names team/app.
    skopeo_copy(&r, dir, "team/app:v1", "team/copy:v1");
    skopeo_copy(&r, dir, "team/app:v1", "mirror/app:v1");
    assert_eq!(
        stored_signatures(&c, &r, "team/copy", &digest).await.len(),
        1
    );

    let here = atomic_verdicts(&c, &r, "team/app", &digest).await;
    assert_eq!(here[0].1["verdict"], "valid", "{here:?}");
    let copied = atomic_verdicts(&c, &r, "team/copy", &digest).await;
    assert_eq!(copied[0].1["verdict"], "invalid", "{copied:?}");
    let reason = copied[0].1["reason"].as_str().unwrap();
    assert!(reason.contains("docker-reference mismatch"), "{reason}");
    assert!(reason.contains("team/app"), "{reason}");
    let mirrored = atomic_verdicts(&c, &r, "mirror/app", &digest).await;
    assert_eq!(mirrored[0].1["verdict"], "valid", "{mirrored:?}");
    assert_eq!(mirrored[0].1["root"], "mirrors");

    // The registry host is not compared: a signature naming another host but this
    // repository is valid.
    let foreign_host = gpg_sign(
        &k.alice,
        &atomic_payload("registry.example.com/team/app:v1", &digest),
        dir,
    );
    put_signature(&c, &r, "team/app", &digest, &foreign_host).await;
    let v = &atomic_verdict(&c, &r, "team/app", &digest, &foreign_host).await;
    assert_eq!(v["verdict"], "valid", "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_names_make_the_docker_reference_host_count() {
    let k = keys();
    let dir = k.dir.path();
    let r = Registry::start_with_config(&format!(
        "[trust]\nregistry_names = [\"registry.example.com\", \"localhost:5000\"]\n{}",
        gpg_trust_root("release", &k.alice_pub, &[])
    ));
    let c = client();
    let digest = sha256(&push_image(&c, &r, "team/app", "v1", &[&random_bytes(64)]).await);
    let sign = |reference: &str| gpg_sign(&k.alice, &atomic_payload(reference, &digest), dir);
    let ours = sign("registry.example.com/team/app:v1");
    let also_ours = sign("localhost:5000/team/app");
    let elsewhere = sign("other.example.com/team/app:v1");
    for content in [&ours, &also_ours, &elsewhere] {
        put_signature(&c, &r, "team/app", &digest, content).await;
    }
    let verdicts = atomic_verdicts(&c, &r, "team/app", &digest).await;
    let of = |content: &[u8]| verdict_in(&verdicts, content);
    assert_eq!(of(&ours)["verdict"], "valid", "{verdicts:?}");
    assert_eq!(of(&also_ours)["verdict"], "valid", "{verdicts:?}");
    let v = of(&elsewhere);
    assert_eq!(v["verdict"], "invalid", "{v}");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("names registry \"other.example.com\""),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_subkeys_count_and_revoked_keys_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let gpg = |key: &GpgKey, args: &[&str]| {
        run(Command::new("gpg")
            .env("GNUPGHOME", &key.home)
            .args(["--batch", "--passphrase", ""])
            .args(args))
    };
    // Carol adds a signing subkey and signs with it only.
    let carol = GpgKey::generate(d, "carol");
    gpg(
        &carol,
        &[
            "--quick-add-key",
            &carol.fingerprint,
            "ed25519",
            "sign",
            "never",
        ],
    );
    let listing = gpg(
        &carol,
        &["--list-keys", "--with-colons", &carol.fingerprint],
    );
    let lines: Vec<&str> = listing.lines().collect();
    let subkey = lines
        .windows(2)
        .find(|w| w[0].starts_with("sub:") && w[0].split(':').nth(11).unwrap_or("").contains('s'))
        .and_then(|w| w[1].split(':').nth(9))
        .expect("the signing subkey's fingerprint")
        .to_string();
    let carol_pub = d.join("carol.asc");
    carol.export(&carol_pub, true);
    // The image is made up front, so its digest can be signed before the registry
    // exists (the registry host is not compared, so the payload need not name it).
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = random_bytes(64);
    let manifest = image_manifest(config, &[&layer], json!({}));
    let digest = sha256(&manifest);
    let payload = atomic_payload("registry.example.com/team/x:v1", &digest);
    // Dave signs, then revokes his key (with the certificate gpg made when it
    // generated the key); his exported key carries the revocation.
    let dave = GpgKey::generate(d, "dave");
    let by_dave = gpg_sign(&dave, &payload, d);
    let rev = dave
        .home
        .join("openpgp-revocs.d")
        .join(format!("{}.rev", dave.fingerprint));
    let rev_text = std::fs::read_to_string(&rev)
        .unwrap()
        .replace(":-----BEGIN", "-----BEGIN");
    let rev_file = d.join("dave.rev");
    std::fs::write(&rev_file, rev_text).unwrap();
    gpg(&dave, &["--import", rev_file.to_str().unwrap()]);
    let dave_pub = d.join("dave.asc");
    dave.export(&dave_pub, true);
    let by_subkey = gpg_sign_as(&carol, &format!("{subkey}!"), &payload, d);

    let r = Registry::start_with_config(&format!(
        "[trust]\n{}{}",
        gpg_trust_root("carol", &carol_pub, &[]),
        gpg_trust_root("dave", &dave_pub, &[]),
    ));
    let c = client();
    push_blob(&c, &r, "team/x", config).await;
    push_blob(&c, &r, "team/x", &layer).await;
    put_manifest(&c, &r, "team/x", "v1", OCI_MANIFEST, &manifest).await;
    put_signature(&c, &r, "team/x", &digest, &by_subkey).await;
    put_signature(&c, &r, "team/x", &digest, &by_dave).await;
    let verdicts = atomic_verdicts(&c, &r, "team/x", &digest).await;
    let of = |content: &[u8]| verdict_in(&verdicts, content);
    let v = of(&by_subkey);
    assert_eq!(v["verdict"], "valid", "{v}");
    assert_eq!(v["root"], "carol");
    let v = of(&by_dave);
    assert_eq!(v["verdict"], "invalid", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("revoked key"), "{v}");
}

#[test]
fn trust_check_reads_gpg_keys_and_refuses_secret_or_broken_ones() {
    let k = keys();
    let dir = k.dir.path();
    let config = dir.join("signet.toml");
    let write = |key: &Path| {
        std::fs::write(
            &config,
            format!("[trust]\n{}", gpg_trust_root("release", key, &[])),
        )
        .unwrap()
    };
    write(&k.alice_pub);
    let out = trust_check(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains(&k.alice.fingerprint), "{out}");
    assert!(out.contains("alice <alice@example.com>"), "{out}");

    let secret = dir.join("alice-secret.asc");
    let exported = Command::new("gpg")
        .env("GNUPGHOME", &k.alice.home)
        .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
        .args(["--armor", "--export-secret-keys", &k.alice.fingerprint])
        .output()
        .unwrap();
    assert!(exported.status.success());
    std::fs::write(&secret, exported.stdout).unwrap();
    write(&secret);
    let out = trust_check(&config);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("secret key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let broken = dir.join("broken.asc");
    std::fs::write(
        &broken,
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnot a key\n",
    )
    .unwrap();
    write(&broken);
    let out = trust_check(&config);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("OpenPGP"));
}
