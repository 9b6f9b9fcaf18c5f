//! The attachment index over HTTP: fallback-tag ingestion, attachments of attachments,
//! coverage through nested indexes, the delete lifecycle and its settings, the strict
//! referrers setting, and tag preconditions.

use reqwest::StatusCode;
use serde_json::{json, Value};
use signet_api_tests::cosign::{coverage, recursive_coverage};
use signet_api_tests::oci::{
    error_code, get, image_manifest, push_artifact, push_blob, push_image, put_manifest, OCI_INDEX,
    OCI_MANIFEST,
};
use signet_api_tests::{client, sha256, Registry};

async fn referrers(r: &Registry, repo: &str, digest: &str) -> Vec<Value> {
    let (status, body) = get(&client(), &r.v2(&format!("{repo}/referrers/{digest}"))).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    v["manifests"].as_array().unwrap().clone()
}

fn digests(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["digest"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn tag_for(digest: &str, suffix: &str) -> String {
    let t = digest.replace(':', "-");
    if suffix.is_empty() {
        t
    } else {
        format!("{t}.{suffix}")
    }
}

#[tokio::test]
async fn extension_is_discoverable_and_answers_unknowns_clearly() {
    let r = Registry::start();
    let c = client();
    let (status, body) = get(&c, &r.v2("_oci/ext/discover")).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["extensions"][0]["name"], "_signet");
    push_image(&c, &r, "disc/app", "v1", &[b"l"]).await;
    let (status, _) = get(&c, &r.v2("disc/app/_oci/ext/discover")).await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = get(&c, &r.v2("disc/none/_signet/attachments/v1")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "NAME_UNKNOWN");
    let unknown = sha256(b"nothing");
    let (status, body) = get(
        &c,
        &r.v2(&format!("disc/app/_signet/attachments/{unknown}")),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "MANIFEST_UNKNOWN");
    let (status, body) = get(&c, &r.v2("disc/app/_signet/attachments/sha256:zz")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "DIGEST_INVALID");
    let by_tag = coverage(&client(), &r, "disc/app", "v1").await;
    assert!(by_tag["coveredBy"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn nested_indexes_cover_their_grandchildren_and_attachments_nest() {
    let r = Registry::start();
    let c = client();
    let repo = "nest/app";
    let image = push_image(&c, &r, repo, "plain", &[b"layer-a"]).await;
    let image_digest = sha256(&image);
    let inner = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": image_digest, "size": image.len(),
                       "platform": {"os": "linux", "architecture": "amd64"}}]
    }))
    .unwrap();
    let inner_digest = sha256(&inner);
    put_manifest(&c, &r, repo, &inner_digest, OCI_INDEX, &inner).await;
    let outer = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_INDEX, "digest": inner_digest, "size": inner.len()}]
    }))
    .unwrap();
    let outer_digest = sha256(&outer);
    put_manifest(&c, &r, repo, "release", OCI_INDEX, &outer).await;

    // A cosign-style signature on the outer index, and a signature on an SBOM of the image.
    let sig = image_manifest(b"{}", &[b"sig-payload"], json!({}));
    push_blob(&c, &r, repo, b"{}").await;
    push_blob(&c, &r, repo, b"sig-payload").await;
    put_manifest(
        &c,
        &r,
        repo,
        &tag_for(&outer_digest, "sig"),
        OCI_MANIFEST,
        &sig,
    )
    .await;
    let sbom = push_artifact(
        &c,
        &r,
        repo,
        None,
        "application/spdx+json",
        Some((&image_digest, image.len())),
        b"spdx",
    )
    .await;
    let sbom_sig = push_artifact(
        &c,
        &r,
        repo,
        None,
        "application/vnd.dev.sigstore.bundle.v0.3+json",
        Some((&sbom, 0)),
        b"bundle",
    )
    .await;

    let report = coverage(&client(), &r, repo, &image_digest).await;
    assert_eq!(report["digest"], image_digest);
    assert_eq!(digests(&report["attachments"]["sbom"]), vec![sbom.clone()]);
    assert_eq!(
        digests(&report["attachments"]["sbom"][0]["attachments"]["signature"]),
        vec![sbom_sig.clone()],
        "a signature on the SBOM is listed under it"
    );
    let covered = report["coveredBy"].as_array().unwrap();
    assert_eq!(covered.len(), 2, "{report}");
    let via_outer = covered
        .iter()
        .find(|x| x["index"] == outer_digest)
        .expect("the outer index covers the image through the inner one");
    assert_eq!(
        via_outer["path"],
        json!([outer_digest, inner_digest, image_digest])
    );
    assert_eq!(
        digests(&via_outer["attachments"]["signature"]),
        vec![sha256(&sig)]
    );

    let tree = recursive_coverage(&client(), &r, repo, "release").await;
    let inner_report = &tree["children"][0];
    assert_eq!(inner_report["digest"], inner_digest);
    let leaf = &inner_report["children"][0];
    assert_eq!(leaf["digest"], image_digest);
    assert_eq!(leaf["platform"]["architecture"], "amd64");
    assert_eq!(digests(&leaf["attachments"]["sbom"]), vec![sbom]);
}

#[tokio::test]
async fn the_referrers_fallback_tag_is_ingested_and_forgotten_with_its_tag() {
    let r = Registry::start();
    let c = client();
    let repo = "fallback/app";
    let image = push_image(&c, &r, repo, "v1", &[b"fb"]).await;
    let subject = sha256(&image);
    // A client without referrers support pushes the referrer untagged, by digest, and
    // lists it in the index at `sha256-<hex>` (no subject field needed).
    let bundle = push_artifact(
        &c,
        &r,
        repo,
        None,
        "application/vnd.dev.sigstore.bundle.v0.3+json",
        None,
        b"bundle-json",
    )
    .await;
    let (_, bundle_body) = get(&c, &r.v2(&format!("{repo}/manifests/{bundle}"))).await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": bundle, "size": bundle_body.len(),
                       "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json"}]
    }))
    .unwrap();
    let fallback_tag = tag_for(&subject, "");
    put_manifest(&c, &r, repo, &fallback_tag, OCI_INDEX, &index).await;

    let listed = referrers(&r, repo, &subject).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["digest"], bundle);
    assert_eq!(
        listed[0]["artifactType"],
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    );
    let report = coverage(&client(), &r, repo, &subject).await;
    assert_eq!(
        report["attachments"]["signature"][0]["source"],
        "fallback-tag"
    );
    assert_eq!(
        report["attachments"]["signature"][0]["format"],
        "sigstore-bundle"
    );

    let resp = c
        .delete(r.v2(&format!("{repo}/manifests/{fallback_tag}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert!(referrers(&r, repo, &subject).await.is_empty());
}

#[tokio::test]
async fn deleting_a_subject_deletes_its_attachments_unless_configured_to_keep() {
    for keep in [false, true] {
        let r = if keep {
            Registry::start_with_config("[attachments]\ndelete_with_subject = false\n")
        } else {
            Registry::start()
        };
        let c = client();
        let repo = "life/app";
        let image = push_image(&c, &r, repo, "v1", &[b"life"]).await;
        let subject = sha256(&image);
        let sig = image_manifest(b"{}", &[b"cosign-sig"], json!({}));
        push_blob(&c, &r, repo, b"{}").await;
        push_blob(&c, &r, repo, b"cosign-sig").await;
        let sig_tag = tag_for(&subject, "sig");
        put_manifest(&c, &r, repo, &sig_tag, OCI_MANIFEST, &sig).await;
        let sbom = push_artifact(
            &c,
            &r,
            repo,
            None,
            "application/vnd.cyclonedx+json",
            Some((&subject, image.len())),
            b"cdx",
        )
        .await;

        // Deleting an attachment leaves its subject alone.
        let resp = c
            .delete(r.v2(&format!("{repo}/manifests/{sbom}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let (status, _) = get(&c, &r.v2(&format!("{repo}/manifests/{subject}"))).await;
        assert_eq!(status, StatusCode::OK);

        let resp = c
            .delete(r.v2(&format!("{repo}/manifests/{subject}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let (status, body) = get(&c, &r.v2(&format!("{repo}/manifests/{sig_tag}"))).await;
        if keep {
            assert_eq!(
                status,
                StatusCode::OK,
                "kept with delete_with_subject = false"
            );
        } else {
            assert_eq!(status, StatusCode::NOT_FOUND);
            assert_eq!(error_code(&body), "MANIFEST_UNKNOWN");
            let (status, _) = get(&c, &r.v2(&format!("{repo}/manifests/{}", sha256(&sig)))).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
        }
    }
}

#[tokio::test]
async fn strict_referrers_leave_out_tag_attachments() {
    let r = Registry::start_with_config("[attachments]\ntag_attachments_in_referrers = false\n");
    let c = client();
    let repo = "strict/app";
    let image = push_image(&c, &r, repo, "v1", &[b"strict"]).await;
    let subject = sha256(&image);
    let sig = image_manifest(b"{}", &[b"strict-sig"], json!({}));
    push_blob(&c, &r, repo, b"{}").await;
    push_blob(&c, &r, repo, b"strict-sig").await;
    put_manifest(&c, &r, repo, &tag_for(&subject, "sig"), OCI_MANIFEST, &sig).await;
    assert!(referrers(&r, repo, &subject).await.is_empty());
    // The coverage extension still knows it.
    let report = coverage(&client(), &r, repo, &subject).await;
    assert_eq!(
        digests(&report["attachments"]["signature"]),
        vec![sha256(&sig)]
    );

    let default = Registry::start();
    push_image(&c, &default, repo, "v1", &[b"strict"]).await;
    let image2 = {
        let (_, b) = get(&c, &default.v2(&format!("{repo}/manifests/v1"))).await;
        b
    };
    let subject2 = sha256(&image2);
    push_blob(&c, &default, repo, b"{}").await;
    push_blob(&c, &default, repo, b"strict-sig").await;
    put_manifest(
        &c,
        &default,
        repo,
        &tag_for(&subject2, "sig"),
        OCI_MANIFEST,
        &sig,
    )
    .await;
    let listed = referrers(&default, repo, &subject2).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0]["artifactType"],
        "application/vnd.dev.cosign.artifact.sig.v1+json"
    );
    let (status, body) = get(
        &c,
        &default.v2(&format!(
            "{repo}/referrers/{subject2}?artifactType=application/vnd.dev.cosign.artifact.sig.v1%2Bjson"
        )),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn tag_preconditions_protect_concurrent_appends() {
    let r = Registry::start();
    let c = client();
    let repo = "cond/app";
    let first = push_image(&c, &r, repo, "v1", &[b"one"]).await;
    let first_digest = sha256(&first);
    let second = image_manifest(b"{}", &[b"one"], json!({"annotations": {"n": "2"}}));
    push_blob(&c, &r, repo, b"{}").await;
    let put = |body: Vec<u8>, header: (&'static str, String)| {
        let c = c.clone();
        let url = r.v2(&format!("{repo}/manifests/v1"));
        async move {
            c.put(url)
                .header("Content-Type", OCI_MANIFEST)
                .header(header.0, header.1)
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    // A writer that read a stale digest is refused and nothing moves.
    let stale = put(
        second.clone(),
        ("If-Match", format!("\"{}\"", sha256(b"stale"))),
    )
    .await;
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let (_, now) = get(&c, &r.v2(&format!("{repo}/manifests/v1"))).await;
    assert_eq!(sha256(&now), first_digest);
    // If-None-Match: * refuses to overwrite an existing tag.
    let exists = put(second.clone(), ("If-None-Match", "*".into())).await;
    assert_eq!(exists.status(), StatusCode::PRECONDITION_FAILED);
    // The writer that read the current digest wins.
    let ok = put(second.clone(), ("If-Match", format!("\"{first_digest}\""))).await;
    assert_eq!(ok.status(), StatusCode::CREATED);
    let (_, now) = get(&c, &r.v2(&format!("{repo}/manifests/v1"))).await;
    assert_eq!(now.as_ref(), second.as_slice());
    // The ETag of a GET is what If-Match takes.
    let resp = c
        .get(r.v2(&format!("{repo}/manifests/v1")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers().get("ETag").unwrap().to_str().unwrap(),
        format!("\"{}\"", sha256(&second))
    );
}
