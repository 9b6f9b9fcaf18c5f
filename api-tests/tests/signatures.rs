//! The signatures extension with real clients and real GPG: skopeo and podman sign
//! into Signet ("simple signing"), and verify out of it with a `signedBy` policy.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{json, Value};
use signet_api_tests::gpg::{
    accept_anything_policy, oci_layout, signed_by_policy, skopeo_pull, GpgKey,
};
use signet_api_tests::oci::{error_code, get, push_image};
use signet_api_tests::{client, require_tool, run, Registry};

/// A throwaway GPG home with one key; returns (home, fingerprint).
fn gpg_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = GpgKey::generate(dir, name);
    (key.home, key.fingerprint)
}

fn export_key(home: &Path, fingerprint: &str, to: &Path) {
    let key = GpgKey {
        home: home.to_path_buf(),
        fingerprint: fingerprint.to_string(),
    };
    key.export(to, true);
}

async fn signatures_of(r: &Registry, repo: &str, digest: &str) -> Vec<Value> {
    let (status, body) = get(
        &client(),
        &format!("{}/extensions/v2/{repo}/signatures/{digest}", r.url),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    v["signatures"].as_array().cloned().unwrap_or_default()
}

fn manifest_digest(image: &str) -> String {
    let out = run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        &format!("docker://{image}"),
    ]));
    out.trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_signs_into_signet_and_verifies_out_of_it() {
    let r = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let layout = oci_layout(dir.path());
    let (alice_home, alice) = gpg_key(dir.path(), "alice");
    let (mallory_home, mallory) = gpg_key(dir.path(), "mallory");
    let alice_key = dir.path().join("alice.asc");
    let mallory_key = dir.path().join("mallory.asc");
    export_key(&alice_home, &alice, &alice_key);
    export_key(&mallory_home, &mallory, &mallory_key);

    let image = format!("{}/team/app:v1", r.host);
    run(Command::new("skopeo")
        .env("GNUPGHOME", &alice_home)
        .arg("--policy")
        .arg(accept_anything_policy(dir.path()))
        .args(["copy", "--dest-tls-verify=false", "--sign-by", &alice])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{image}")));

    // The signature is in Signet's store, reachable through the extension.
    let digest = manifest_digest(&image);
    let sigs = signatures_of(&r, "team/app", &digest).await;
    assert_eq!(sigs.len(), 1, "{sigs:?}");
    assert_eq!(sigs[0]["type"], "atomic");
    assert!(sigs[0]["name"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{digest}@")));

    let identity = format!("{}/team/app", r.host);
    let scope = identity.clone();
    let trusts_alice = signed_by_policy(dir.path(), "alice", &scope, &alice_key, &identity);
    let trusts_mallory = signed_by_policy(dir.path(), "mallory", &scope, &mallory_key, &identity);
    let out = skopeo_pull(&trusts_alice, &image, &dir.path().join("out-alice"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = skopeo_pull(&trusts_mallory, &image, &dir.path().join("out-mallory"));
    assert!(
        !out.status.success(),
        "a policy trusting another key must refuse"
    );

    // Tamper with the stored signature: an administrator replaces it with altered bytes.
    let name = sigs[0]["name"].as_str().unwrap().to_string();
    let id = name.rsplit_once('@').unwrap().1.to_string();
    let mut content = base64::engine::general_purpose::STANDARD
        .decode(sigs[0]["content"].as_str().unwrap())
        .unwrap();
    let middle = content.len() / 2;
    content[middle] ^= 0x55;
    let c = client();
    let url = format!("{}/extensions/v2/team/app/signatures/{digest}", r.url);
    let resp = c.delete(format!("{url}/{id}")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let resp = c
        .put(&url)
        .json(&json!({"schemaVersion": 2, "name": name, "type": "atomic",
                      "content": base64::engine::general_purpose::STANDARD.encode(&content)}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let out = skopeo_pull(&trusts_alice, &image, &dir.path().join("out-tampered"));
    assert!(
        !out.status.success(),
        "a tampered signature must not verify"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn podman_signs_and_a_second_signature_appends() {
    require_tool("podman");
    let r = Registry::start();
    let dir = signet_api_tests::lowercase_tempdir();
    let layout = oci_layout(dir.path());
    let (alice_home, alice) = gpg_key(dir.path(), "alice");
    let (bob_home, bob) = gpg_key(dir.path(), "bob");
    let root = dir.path().join("root");
    let runroot = dir.path().join("run");
    let podman = |home: &Path| {
        let mut cmd = Command::new("podman");
        cmd.env("GNUPGHOME", home)
            .env("CONTAINERS_REGISTRIES_CONF", dir.path().join("none.conf"))
            .arg("--root")
            .arg(&root)
            .arg("--runroot")
            .arg(&runroot)
            .args(["--storage-driver", "vfs"]);
        cmd
    };
    std::fs::write(dir.path().join("none.conf"), "").unwrap();
    run(podman(&alice_home)
        .arg("pull")
        .arg(format!("oci:{}:v1", layout.display())));
    let images = run(podman(&alice_home).args(["images", "-q"]));
    let image_id = images
        .lines()
        .next()
        .expect("pulled image")
        .trim()
        .to_string();
    let target = format!("{}/team/podman:v1", r.host);
    for (home, key) in [(&alice_home, &alice), (&bob_home, &bob)] {
        run(podman(home)
            .args(["push", "--tls-verify=false", "--sign-by", key])
            .arg(&image_id)
            .arg(format!("docker://{target}")));
    }
    let digest = manifest_digest(&target);
    let sigs = signatures_of(&r, "team/podman", &digest).await;
    assert_eq!(sigs.len(), 2, "a second signature appends: {sigs:?}");
    assert_ne!(sigs[0]["name"], sigs[1]["name"]);

    // Both verify, each with its own key.
    for (name, home, key) in [("alice", &alice_home, &alice), ("bob", &bob_home, &bob)] {
        let key_file = dir.path().join(format!("{name}.asc"));
        export_key(home, key, &key_file);
        let identity = format!("{}/team/podman", r.host);
        let policy = signed_by_policy(dir.path(), name, &identity, &key_file, &identity);
        let out = skopeo_pull(&policy, &target, &dir.path().join(format!("out-{name}")));
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_copy_between_repositories_carries_signatures() {
    let r = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let layout = oci_layout(dir.path());
    let (home, key) = gpg_key(dir.path(), "carol");
    let key_file = dir.path().join("carol.asc");
    export_key(&home, &key, &key_file);
    let any = accept_anything_policy(dir.path());
    let source = format!("{}/src/app:v1", r.host);
    let dest = format!("{}/dst/app:v1", r.host);
    run(Command::new("skopeo")
        .env("GNUPGHOME", &home)
        .arg("--policy")
        .arg(&any)
        .args(["copy", "--dest-tls-verify=false", "--sign-by", &key])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{source}")));
    run(Command::new("skopeo")
        .arg("--policy")
        .arg(&any)
        .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .arg(format!("docker://{source}"))
        .arg(format!("docker://{dest}")));
    let digest = manifest_digest(&dest);
    assert_eq!(signatures_of(&r, "dst/app", &digest).await.len(), 1);
    // The signature names the source repository; trust it for the copy too.
    let policy = signed_by_policy(
        dir.path(),
        "carol",
        &format!("{}/dst/app", r.host),
        &key_file,
        &format!("{}/src/app", r.host),
    );
    let out = skopeo_pull(&policy, &dest, &dir.path().join("out"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_extension_validates_everything_and_stores_nothing_bad() {
    let r = Registry::start();
    let c = client();
    let (status, _) = get(&c, &r.v2("")).await;
    assert_eq!(status, StatusCode::OK);
    let ping = c.get(r.v2("")).send().await.unwrap();
    assert_eq!(
        ping.headers()
            .get("X-Registry-Supports-Signatures")
            .map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );

    let manifest = push_image(&c, &r, "ext/app", "v1", &[b"layer"]).await;
    let digest = signet_api_tests::sha256(&manifest);
    let url = format!("{}/extensions/v2/ext/app/signatures/{digest}", r.url);
    let id = "0123456789abcdef0123456789abcdef";
    let good = json!({"schemaVersion": 2, "name": format!("{digest}@{id}"), "type": "atomic", "content": "c2lnbmVk"});

    // Empty list before anything is stored: 200, not 404.
    assert!(signatures_of(&r, "ext/app", &digest).await.is_empty());
    let unknown_repo = c
        .get(format!(
            "{}/extensions/v2/ext/none/signatures/{digest}",
            r.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_repo.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        error_code(&unknown_repo.bytes().await.unwrap()),
        "NAME_UNKNOWN"
    );

    let other = signet_api_tests::sha256(b"other");
    let mut bad_cases: Vec<(Value, StatusCode)> = vec![
        (
            json!({"schemaVersion": 2, "name": format!("{other}@{id}"), "type": "atomic", "content": "c2lnbmVk"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"schemaVersion": 2, "name": format!("{digest}@abc"), "type": "atomic", "content": "c2lnbmVk"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"schemaVersion": 2, "name": format!("{digest}@{id}"), "type": "cosign", "content": "c2lnbmVk"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"schemaVersion": 2, "name": format!("{digest}@{id}"), "type": "atomic", "content": "!!!"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"schemaVersion": 3, "name": format!("{digest}@{id}"), "type": "atomic", "content": "c2lnbmVk"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"name": format!("{digest}@{id}"), "type": "atomic", "content": "c2lnbmVk"}),
            StatusCode::BAD_REQUEST,
        ),
    ];
    let huge = base64::engine::general_purpose::STANDARD.encode(vec![7u8; 300 * 1024]);
    bad_cases.push((
        json!({"schemaVersion": 2, "name": format!("{digest}@{id}"), "type": "atomic", "content": huge}),
        StatusCode::PAYLOAD_TOO_LARGE,
    ));
    for (body, want) in bad_cases {
        let resp = c.put(&url).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), want, "{body}");
        let code = error_code(&resp.bytes().await.unwrap());
        assert_eq!(code, "SIGNATURE_INVALID");
        assert!(signatures_of(&r, "ext/app", &digest).await.is_empty());
    }
    let not_json = c.put(&url).body("nope").send().await.unwrap();
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);

    // A manifest the repository does not hold.
    let missing = c
        .put(format!("{}/extensions/v2/ext/app/signatures/{other}", r.url))
        .json(&json!({"schemaVersion": 2, "name": format!("{other}@{id}"), "type": "atomic", "content": "c2lnbmVk"}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        error_code(&missing.bytes().await.unwrap()),
        "MANIFEST_UNKNOWN"
    );

    // Stored once; the same again is idempotent; other content under the name conflicts.
    for _ in 0..2 {
        let resp = c.put(&url).json(&good).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    let conflicting = json!({"schemaVersion": 2, "name": format!("{digest}@{id}"), "type": "atomic", "content": "b3RoZXI="});
    let resp = c.put(&url).json(&conflicting).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let sigs = signatures_of(&r, "ext/app", &digest).await;
    assert_eq!(sigs.len(), 1);
    assert_eq!(
        sigs[0]["content"], "c2lnbmVk",
        "the conflict changed nothing"
    );
    assert_eq!(sigs[0]["schemaVersion"], 2);
    assert_eq!(sigs[0]["version"], 2);

    // Signatures go with their manifest.
    let resp = c
        .delete(r.v2(&format!("ext/app/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert!(signatures_of(&r, "ext/app", &digest).await.is_empty());
    let resp = c.delete(format!("{url}/{id}")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}
