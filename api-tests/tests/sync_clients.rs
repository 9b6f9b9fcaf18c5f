//! A mirror made by sync, checked by the clients that will use it: skopeo verifies a
//! GPG simple-signing signature out of the mirror with a `signedBy` policy (the
//! signature travelled through the signatures extension), and a Sigstore bundle that
//! sigstore-js (`@sigstore/oci`) attached upstream is a referrer of the mirrored image,
//! byte for byte; and signatures skopeo wrote to a lookaside store beside a registry
//! without the extension (the reference registry) reach the mirror through `lookaside`.

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::Value;
use signet_api_tests::distribution::Distribution;
use signet_api_tests::gpg::{oci_layout, signed_by_policy, skopeo_pull, GpgKey};
use signet_api_tests::oci::{get, push_image};
use signet_api_tests::{client, require_tool, run, sha256, Registry};

const SIGSTORE_BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// A mirror whose one job copies `repo` from `upstream` under the prefix `mirror`.
fn mirror_of(upstream: &Registry, repo: &str) -> Registry {
    Registry::start_with_config(&format!(
        "[[sync.jobs]]\nname = \"up\"\nupstream = \"{}\"\nrepositories = [\"{repo}\"]\ndestination_prefix = \"mirror\"\n",
        upstream.url
    ))
}

fn sync(mirror: &Registry) -> Value {
    let out = run(&mut mirror.cli(&["sync", "run", "up", "--json"]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("summary {out:?}: {e}"))
}

fn skopeo_digest(image: &str) -> String {
    run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        &format!("docker://{image}"),
    ]))
    .trim()
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_verifies_a_gpg_signature_out_of_the_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Registry::start();
    let layout = oci_layout(dir.path());
    let alice = GpgKey::generate(dir.path(), "alice");
    let mallory = GpgKey::generate(dir.path(), "mallory");
    let (alice_pub, mallory_pub) = (dir.path().join("alice.asc"), dir.path().join("mallory.asc"));
    alice.export(&alice_pub, true);
    mallory.export(&mallory_pub, true);

    // Signed into the upstream: the signature names the upstream repository.
    let upstream_image = format!("{}/team/app:v1", upstream.host);
    alice.skopeo_sign(
        dir.path(),
        None,
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{upstream_image}"),
    );

    let mirror = mirror_of(&upstream, "team/app");
    let summary = sync(&mirror);
    assert_eq!(summary["atomic_signatures_copied"], 1, "{summary}");

    // Pulled from the mirror (another host, another repository name), the signature
    // still verifies for the identity it was made for; another key's policy refuses.
    let mirrored = format!("{}/mirror/team/app:v1", mirror.host);
    assert_eq!(skopeo_digest(&mirrored), skopeo_digest(&upstream_image));
    let identity = format!("{}/team/app", upstream.host);
    let scope = format!("{}/mirror/team/app", mirror.host);
    let trusts_alice = signed_by_policy(dir.path(), "alice", &scope, &alice_pub, &identity);
    let out = skopeo_pull(&trusts_alice, &mirrored, &dir.path().join("out-alice"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trusts_mallory = signed_by_policy(dir.path(), "mallory", &scope, &mallory_pub, &identity);
    let out = skopeo_pull(&trusts_mallory, &mirrored, &dir.path().join("out-mallory"));
    assert!(!out.status.success(), "another key's policy must refuse");
}

#[tokio::test]
async fn a_bundle_sigstore_js_attached_upstream_is_a_referrer_in_the_mirror() {
    require_tool("node");
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("js");
    assert!(
        js.join("node_modules/@sigstore/oci/package.json").exists(),
        "@sigstore/oci is not installed in {}: run scripts/install-test-deps.sh",
        js.display()
    );
    let c = client();
    let upstream = Registry::start();
    let repo = "js/app";
    let image = push_image(&c, &upstream, repo, "v1", &[b"mirrored with its bundle"]).await;
    let digest = sha256(&image);
    let dir = tempfile::tempdir().unwrap();
    let bundle = serde_json::to_vec(&serde_json::json!({
        "mediaType": SIGSTORE_BUNDLE,
        "verificationMaterial": {"publicKey": {"hint": "c2lnbmV0"}, "tlogEntries": []},
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": "AAAA"},
            "signature": "AAAA",
        },
    }))
    .unwrap();
    let file = dir.path().join("bundle.sigstore.json");
    std::fs::write(&file, &bundle).unwrap();
    let out = run(Command::new("node")
        .current_dir(&js)
        .arg(js.join("attach-bundle.js"))
        .arg(&upstream.host)
        .arg(repo)
        .arg(&digest)
        .arg(&file));
    let attached: Value = serde_json::from_str(out.trim()).unwrap();
    let referrer = attached["digest"].as_str().unwrap().to_string();

    let mirror = mirror_of(&upstream, repo);
    let summary = sync(&mirror);
    assert!(
        summary["errors"].as_array().unwrap().is_empty(),
        "{summary}"
    );

    let (status, body) = get(&c, &mirror.v2(&format!("mirror/{repo}/referrers/{digest}"))).await;
    assert_eq!(status, StatusCode::OK);
    let index: Value = serde_json::from_slice(&body).unwrap();
    let listed = index["manifests"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{index}");
    assert_eq!(listed[0]["digest"], referrer.as_str());
    assert_eq!(listed[0]["artifactType"], SIGSTORE_BUNDLE);
    // The referrer manifest and its bundle layer are the upstream's bytes.
    let (_, up_bytes) = get(&c, &upstream.v2(&format!("{repo}/manifests/{referrer}"))).await;
    let (status, mirror_bytes) = get(
        &c,
        &mirror.v2(&format!("mirror/{repo}/manifests/{referrer}")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(up_bytes, mirror_bytes);
    let manifest: Value = serde_json::from_slice(&mirror_bytes).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let (status, blob) = get(&c, &mirror.v2(&format!("mirror/{repo}/blobs/{layer}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(blob.as_ref(), bundle.as_slice());
}

#[tokio::test(flavor = "multi_thread")]
async fn signatures_from_a_lookaside_store_reach_the_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Distribution::start();
    let layout = oci_layout(dir.path());
    let alice = GpgKey::generate(dir.path(), "alice");
    let alice_pub = dir.path().join("alice.asc");
    alice.export(&alice_pub, true);

    // skopeo signs into the reference registry, its signature into a staging folder.
    let staging = dir.path().join("lookaside");
    let registries_d = dir.path().join("registries.d");
    std::fs::create_dir_all(&registries_d).unwrap();
    std::fs::write(
        registries_d.join("default.yaml"),
        format!(
            "default-docker:\n  lookaside-staging: file://{}\n",
            staging.display()
        ),
    )
    .unwrap();
    let upstream_image = format!("{}/team/app:v1", upstream.host);
    alice.skopeo_sign(
        dir.path(),
        Some(&registries_d),
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{upstream_image}"),
    );
    let digest = skopeo_digest(&upstream_image);
    let signature = staging
        .join(format!("team/app@{}", digest.replacen(':', "=", 1)))
        .join("signature-1");
    assert!(signature.exists(), "{} is missing", signature.display());

    // The store published over HTTP, as a static web server would.
    require_tool("python3");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut web = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--directory")
        .arg(&staging)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let mirror = Registry::start_with_config(&format!(
        "[[sync.jobs]]\nname = \"up\"\nupstream = \"{}\"\nrepositories = [\"team/app\"]\nlookaside = \"http://127.0.0.1:{port}/\"\n\n\
         [[sync.jobs]]\nname = \"bad\"\nupstream = \"{}\"\nrepositories = [\"team/app\"]\nlookaside = \"ftp://x\"\n",
        upstream.url, upstream.url
    ));
    let summary = sync(&mirror);
    assert_eq!(summary["atomic_signatures_copied"], 1, "{summary}");
    let again = sync(&mirror);
    assert_eq!(again["atomic_signatures_copied"], 0, "{again}");
    assert_eq!(again["atomic_signatures_present"], 1, "{again}");
    let _ = web.kill();
    let _ = web.wait();

    // Served by the mirror through the extension: skopeo verifies it there.
    let mirrored = format!("{}/team/app:v1", mirror.host);
    let identity = format!("{}/team/app", upstream.host);
    let policy = signed_by_policy(
        dir.path(),
        "alice",
        &format!("{}/team/app", mirror.host),
        &alice_pub,
        &identity,
    );
    let out = skopeo_pull(&policy, &mirrored, &dir.path().join("out"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = mirror.cli(&["sync", "run", "bad"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lookaside"));
}
