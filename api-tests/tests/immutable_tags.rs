//! Immutable tags (`[[retention.immutable]]`): a protected tag is created, pushed again
//! at the same manifest, never moved or deleted (403 DENIED naming the rule, nothing
//! changed), except by an administrator who asks to override; attachment tags and
//! other tags move as ever.

use reqwest::{Client, RequestBuilder, StatusCode};
use signet_api_tests::oci::{
    assert_error_body, image_manifest, manifest_digest, push_artifact, push_blob, put_manifest,
    OCI_MANIFEST,
};
use signet_api_tests::{client, random_bytes, sha256, Registry};

const RULE: &str = r#"
[[retention.immutable]]
name = "releases"
repositories = ["prod/**"]
tags = 'v[0-9]+(\.[0-9]+)*'
"#;

/// An image's manifest, its blobs pushed to `repo`; not yet tagged.
async fn image(c: &Client, r: &Registry, repo: &str) -> Vec<u8> {
    let config = format!("{{\"n\":\"{}\"}}", sha256(&random_bytes(8)));
    let layer = random_bytes(64);
    push_blob(c, r, repo, config.as_bytes()).await;
    push_blob(c, r, repo, &layer).await;
    image_manifest(config.as_bytes(), &[&layer], serde_json::json!({}))
}

fn put(c: &Client, r: &Registry, repo: &str, reference: &str, body: &[u8]) -> RequestBuilder {
    c.put(r.v2(&format!("{repo}/manifests/{reference}")))
        .header("Content-Type", OCI_MANIFEST)
        .body(body.to_vec())
}

/// A 403 DENIED whose message names the tag and the rule.
async fn refused(resp: reqwest::Response, tag: &str) {
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body = resp.bytes().await.unwrap();
    assert_error_body(&body, "DENIED");
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains(tag) && text.contains("releases"),
        "the refusal names the tag and the rule: {text}"
    );
}

#[tokio::test]
async fn a_protected_tag_is_never_moved_or_deleted() {
    let r = Registry::start_with_config(RULE);
    let c = client();
    let repo = "prod/app";
    let a = image(&c, &r, repo).await;
    let b = image(&c, &r, repo).await;
    let (da, db) = (sha256(&a), sha256(&b));

    put_manifest(&c, &r, repo, "v1.0", OCI_MANIFEST, &a).await;
    // Pushed again at the same manifest: accepted, as a retried push must be.
    put_manifest(&c, &r, repo, "v1.0", OCI_MANIFEST, &a).await;

    // Moving it by tag, or by digest with ?tag=, changes nothing at all.
    refused(put(&c, &r, repo, "v1.0", &b).send().await.unwrap(), "v1.0").await;
    let by_digest = put(&c, &r, repo, &format!("{db}?tag=latest&tag=v1.0"), &b);
    refused(by_digest.send().await.unwrap(), "v1.0").await;
    assert_eq!(
        manifest_digest(&c, &r, repo, "v1.0").await.as_deref(),
        Some(&*da)
    );
    assert_eq!(manifest_digest(&c, &r, repo, "latest").await, None);
    assert_eq!(manifest_digest(&c, &r, repo, &db).await, None, "nor stored");

    // Deleting it, by tag or by the manifest it names, changes nothing either.
    for reference in ["v1.0", &da] {
        let resp = c
            .delete(r.v2(&format!("{repo}/manifests/{reference}")))
            .send()
            .await
            .unwrap();
        refused(resp, "v1.0").await;
    }
    assert_eq!(
        manifest_digest(&c, &r, repo, "v1.0").await.as_deref(),
        Some(&*da)
    );

    // Other tags, other repositories and cosign's signature tag move as ever: a
    // signature appended to the release replaces its `.sig` manifest.
    put_manifest(&c, &r, repo, "latest", OCI_MANIFEST, &b).await;
    put_manifest(&c, &r, repo, "latest", OCI_MANIFEST, &a).await;
    put_manifest(&c, &r, repo, "v1.0-rc1", OCI_MANIFEST, &b).await;
    put_manifest(&c, &r, repo, "v1.0-rc1", OCI_MANIFEST, &a).await;
    let sig_tag = format!("{}.sig", da.replace(':', "-"));
    for payload in [&b"first"[..], b"first and second"] {
        push_artifact(
            &c,
            &r,
            repo,
            Some(&sig_tag),
            "application/vnd.dev.cosign.artifact.sig.v1+json",
            None,
            payload,
        )
        .await;
    }
    let dev = image(&c, &r, "dev/app").await;
    put_manifest(&c, &r, "dev/app", "v1.0", OCI_MANIFEST, &dev).await;
    let dev2 = image(&c, &r, "dev/app").await;
    put_manifest(&c, &r, "dev/app", "v1.0", OCI_MANIFEST, &dev2).await;

    // With authentication off nobody holds a role, so anyone may override.
    let resp = put(&c, &r, repo, "v1.0?override_immutable=true", &b)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        manifest_digest(&c, &r, repo, "v1.0").await.as_deref(),
        Some(&*db)
    );
    let resp = c
        .delete(r.v2(&format!("{repo}/manifests/v1.0?override_immutable=true")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(manifest_digest(&c, &r, repo, "v1.0").await, None);

    // The parameter is read once, and only as a boolean.
    for query in [
        "override_immutable=maybe",
        "override_immutable=true&override_immutable=false",
    ] {
        let resp = put(&c, &r, repo, &format!("v2.0?{query}"), &a)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{query}");
    }
}

#[tokio::test]
async fn only_an_administrator_overrides_the_rules() {
    let hash = |p: &str| bcrypt::hash(p, 4).unwrap();
    let config = format!(
        "[auth]\nenabled = true\nadmins = [\"root\"]\n\n[[auth.users]]\nname = \"root\"\npassword_bcrypt = \"{}\"\n\n[[auth.users]]\nname = \"alice\"\npassword_bcrypt = \"{}\"\n\n[[auth.rules]]\nrepositories = [\"prod/**\"]\npull = [\"alice\"]\npush = [\"alice\"]\ndelete = [\"alice\"]\n{RULE}",
        hash("rootpw"),
        hash("alicepw"),
    );
    let r = Registry::start_with_config(&config);
    let c = client();
    let repo = "prod/app";
    let as_alice = |b: RequestBuilder| b.basic_auth("alice", Some("alicepw"));
    let as_root = |b: RequestBuilder| b.basic_auth("root", Some("rootpw"));

    let mut blobs = Vec::new();
    for _ in 0..2 {
        let config = format!("{{\"n\":\"{}\"}}", sha256(&random_bytes(8)));
        for bytes in [config.into_bytes(), random_bytes(64).to_vec()] {
            let resp =
                as_alice(c.post(r.v2(&format!("{repo}/blobs/uploads/?digest={}", sha256(&bytes)))))
                    .header("Content-Type", "application/octet-stream")
                    .body(bytes.clone())
                    .send()
                    .await
                    .unwrap();
            assert_eq!(resp.status(), StatusCode::CREATED);
            blobs.push(bytes);
        }
    }
    let a = image_manifest(&blobs[0], &[blobs[1].as_slice()], serde_json::json!({}));
    let b = image_manifest(&blobs[2], &[blobs[3].as_slice()], serde_json::json!({}));
    let resp = as_alice(put(&c, &r, repo, "v1", &a)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    // alice may push and delete here, but not past the rules.
    let resp = as_alice(put(&c, &r, repo, "v1", &b)).send().await.unwrap();
    refused(resp, "v1").await;
    let resp = as_alice(put(&c, &r, repo, "v1?override_immutable=true", &b))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body = resp.bytes().await.unwrap();
    assert_error_body(&body, "DENIED");
    assert!(String::from_utf8_lossy(&body).contains("admin"));
    // Encoded, the parameter is the same parameter: still refused.
    let resp = as_alice(put(&c, &r, repo, "v1?override%5Fimmutable=%74rue", &b))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(&resp.bytes().await.unwrap()).contains("admin"));
    let resp = as_alice(c.delete(r.v2(&format!("{repo}/manifests/v1?override_immutable=true"))))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = as_alice(c.head(r.v2(&format!("{repo}/manifests/v1"))))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["docker-content-digest"].to_str().unwrap(),
        sha256(&a)
    );

    // The administrator who asks moves it.
    let resp = as_root(put(&c, &r, repo, "v1?override_immutable=true", &b))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = as_root(put(&c, &r, repo, "v1", &a)).send().await.unwrap();
    refused(resp, "v1").await;
}

/// A mirror keeps the rules too: when the upstream moves a release tag, the sync job
/// reports it and leaves the mirror's tag where it was; other tags follow upstream.
#[tokio::test]
async fn a_sync_job_does_not_move_a_protected_tag() {
    let upstream = Registry::start();
    let c = client();
    let repo = "prod/app";
    let a = image(&c, &upstream, repo).await;
    put_manifest(&c, &upstream, repo, "v1.0", OCI_MANIFEST, &a).await;
    put_manifest(&c, &upstream, repo, "latest", OCI_MANIFEST, &a).await;
    let mirror = Registry::start_with_config(&format!(
        "{RULE}\n[[sync.jobs]]\nname = \"up\"\nupstream = \"{}\"\nrepositories = [\"{repo}\"]\n",
        upstream.url
    ));
    let sync = || {
        let out = mirror
            .cli(&["sync", "run", "up", "--json"])
            .output()
            .expect("run signet sync");
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.success(), summary)
    };
    let (ok, first) = sync();
    assert!(ok, "{first}");
    assert_eq!(
        manifest_digest(&c, &mirror, repo, "v1.0").await,
        Some(sha256(&a))
    );

    let b = image(&c, &upstream, repo).await;
    put_manifest(&c, &upstream, repo, "v1.0", OCI_MANIFEST, &b).await;
    put_manifest(&c, &upstream, repo, "latest", OCI_MANIFEST, &b).await;
    let (ok, second) = sync();
    assert!(!ok, "the run is not complete: {second}");
    assert!(
        second.to_string().contains("immutable"),
        "the summary says why: {second}"
    );
    assert_eq!(
        manifest_digest(&c, &mirror, repo, "v1.0").await,
        Some(sha256(&a))
    );
    assert_eq!(
        manifest_digest(&c, &mirror, repo, "latest").await,
        Some(sha256(&b))
    );
}
