//! Tags list, `_catalog` and referrers over real HTTP: lexical order, `n`/`last`
//! pagination with `Link`, and the referrers index with its `artifactType` filter.

use reqwest::StatusCode;
use serde_json::{json, Value};
use signet_api_tests::oci::{
    descriptor, expect_error, header, image_manifest, push_blob, push_image, put_manifest,
    OCI_INDEX, OCI_MANIFEST,
};
use signet_api_tests::{client, sha256, Registry};

/// GETs a listing URL; returns the JSON body and the `Link` header.
async fn list(c: &reqwest::Client, url: &str) -> (Value, Option<String>) {
    let resp = c.get(url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{url}");
    let link = resp
        .headers()
        .get("link")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.bytes().await.unwrap();
    (serde_json::from_slice(&body).unwrap(), link)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// Follows `Link` headers from `first` (a `/v2/...` path with `?n=`), collecting the
/// entries of `field` page by page; checks every `Link`'s form and page sizes.
async fn paginate(
    c: &reqwest::Client,
    r: &Registry,
    first: &str,
    field: &str,
    n: usize,
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut next = Some(first.to_string());
    while let Some(path) = next.take() {
        assert!(pages.len() < 100, "pagination does not end");
        let (body, link) = list(c, &format!("{}{}", r.url, path)).await;
        let page = strings(&body[field]);
        assert!(page.len() <= n, "page of {} > n={n}", page.len());
        if let Some(link) = link {
            let (target, rel) = link
                .split_once(';')
                .unwrap_or_else(|| panic!("Link {link:?} without rel"));
            assert_eq!(rel.trim(), "rel=\"next\"", "Link {link:?}");
            let target = target
                .trim()
                .strip_prefix('<')
                .and_then(|t| t.strip_suffix('>'))
                .unwrap_or_else(|| panic!("Link {link:?} target not in <>"));
            let last = page.last().expect("a Link after an empty page");
            assert!(
                target.contains(&format!("n={n}")) && target.contains(&format!("last={last}")),
                "Link {link:?} names n={n} and last={last}"
            );
            assert_eq!(page.len(), n, "a page before the last is full");
            next = Some(target.to_string());
        }
        pages.push(page);
    }
    pages
}

#[tokio::test]
async fn tags_list_in_lexical_order_with_pagination() {
    let r = Registry::start();
    let c = client();
    let manifest = push_image(&c, &r, "web/app", "seed", &[b"layer"]).await;
    let mut tags = vec![
        "v2", "v10", "latest", "V1", "a-b", "a.b", "a_b", "0.1", "Z", "zz", "seed",
    ];
    for t in &tags {
        put_manifest(&c, &r, "web/app", t, OCI_MANIFEST, &manifest).await;
    }
    tags.sort_unstable();
    let all: Vec<String> = tags.iter().map(|s| s.to_string()).collect();

    let (body, link) = list(&c, &r.v2("web/app/tags/list")).await;
    assert_eq!(body["name"], "web/app");
    assert_eq!(strings(&body["tags"]), all);
    assert!(link.is_none(), "no Link without n");

    for n in [1usize, 3, 4, all.len(), all.len() + 5] {
        let pages = paginate(&c, &r, &format!("/v2/web/app/tags/list?n={n}"), "tags", n).await;
        assert_eq!(pages.concat(), all, "n={n}");
        assert_eq!(pages.len(), all.len().div_ceil(n).max(1), "n={n}");
    }
    // `last` alone, and `last` that is not a tag.
    let (body, _) = list(&c, &r.v2("web/app/tags/list?last=latest")).await;
    let after: Vec<String> = all
        .iter()
        .filter(|t| t.as_str() > "latest")
        .cloned()
        .collect();
    assert_eq!(strings(&body["tags"]), after);
    let (body, _) = list(&c, &r.v2("web/app/tags/list?n=2&last=b")).await;
    let after: Vec<String> = all
        .iter()
        .filter(|t| t.as_str() > "b")
        .take(2)
        .cloned()
        .collect();
    assert_eq!(strings(&body["tags"]), after);
    // n=0: an empty page.
    let (body, _) = list(&c, &r.v2("web/app/tags/list?n=0")).await;
    assert_eq!(strings(&body["tags"]), Vec::<String>::new());

    // Bad input.
    let resp = c.get(r.v2("web/app/tags/list?n=-1")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = c.get(r.v2("web/app/tags/list?n=abc")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = c.get(r.v2("no/such/repo/tags/list")).send().await.unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "NAME_UNKNOWN").await;
}

#[tokio::test]
async fn catalog_in_lexical_order_with_pagination() {
    let r = Registry::start();
    let c = client();
    let (body, _) = list(&c, &r.v2("_catalog")).await;
    assert_eq!(body["repositories"], json!([]));
    let mut repos = vec!["b", "a/x", "a", "c/d/e", "a-b", "a.b", "z9", "0"];
    for repo in &repos {
        push_blob(&c, &r, repo, repo.as_bytes()).await;
    }
    repos.sort_unstable();
    let all: Vec<String> = repos.iter().map(|s| s.to_string()).collect();
    let (body, link) = list(&c, &r.v2("_catalog")).await;
    assert_eq!(strings(&body["repositories"]), all);
    assert!(link.is_none());
    for n in [1usize, 2, 3, all.len()] {
        let pages = paginate(&c, &r, &format!("/v2/_catalog?n={n}"), "repositories", n).await;
        assert_eq!(pages.concat(), all, "n={n}");
    }
    let (body, _) = list(&c, &r.v2("_catalog?n=2&last=a/x")).await;
    let after: Vec<String> = all
        .iter()
        .filter(|t| t.as_str() > "a/x")
        .take(2)
        .cloned()
        .collect();
    assert_eq!(strings(&body["repositories"]), after);
}

/// An artifact manifest whose subject is `subject`.
async fn push_referrer(
    c: &reqwest::Client,
    r: &Registry,
    repo: &str,
    subject: &[u8],
    artifact_type: &str,
    annotation: &str,
) -> Vec<u8> {
    let empty = b"{}";
    push_blob(c, r, repo, empty).await;
    let layer = format!("{artifact_type} {annotation}");
    push_blob(c, r, repo, layer.as_bytes()).await;
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(empty), "size": 2},
        "layers": [descriptor("application/octet-stream", layer.as_bytes())],
        "subject": descriptor(OCI_MANIFEST, subject),
        "annotations": {"note": annotation},
    }))
    .unwrap();
    let resp = put_manifest(c, r, repo, &sha256(&body), OCI_MANIFEST, &body).await;
    assert_eq!(header(resp.headers(), "oci-subject"), sha256(subject));
    body
}

async fn referrers(c: &reqwest::Client, url: &str) -> (Value, reqwest::header::HeaderMap) {
    let resp = c.get(url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{url}");
    let h = resp.headers().clone();
    assert_eq!(header(&h, "content-type"), OCI_INDEX, "{url}");
    let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["mediaType"], OCI_INDEX);
    (v, h)
}

#[tokio::test]
async fn referrers_before_and_after_the_subject() {
    let r = Registry::start();
    let c = client();
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let subject = image_manifest(config, &[], json!({}));
    let subject_digest = sha256(&subject);
    let url = r.v2(&format!("signed/referrers/{subject_digest}"));

    // A referrer pushed before its subject exists.
    let sbom = push_referrer(
        &c,
        &r,
        "signed",
        &subject,
        "application/vnd.example.sbom",
        "first",
    )
    .await;
    let (v, h) = referrers(&c, &url).await;
    assert!(h.get("oci-filters-applied").is_none());
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);

    push_blob(&c, &r, "signed", config).await;
    put_manifest(&c, &r, "signed", "v1", OCI_MANIFEST, &subject).await;
    let sig = push_referrer(
        &c,
        &r,
        "signed",
        &subject,
        "application/vnd.example.sig",
        "second",
    )
    .await;

    let (v, _) = referrers(&c, &url).await;
    let manifests = v["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2, "{v}");
    for (body, artifact_type, note) in [
        (&sbom, "application/vnd.example.sbom", "first"),
        (&sig, "application/vnd.example.sig", "second"),
    ] {
        let d = manifests
            .iter()
            .find(|d| d["digest"] == sha256(body))
            .unwrap_or_else(|| panic!("{note} missing from {v}"));
        assert_eq!(d["mediaType"], OCI_MANIFEST);
        assert_eq!(d["size"], body.len());
        assert_eq!(d["artifactType"], artifact_type);
        assert_eq!(d["annotations"]["note"], note);
    }

    // Filtered.
    let (v, h) = referrers(
        &c,
        &format!("{url}?artifactType=application/vnd.example.sig"),
    )
    .await;
    assert_eq!(header(&h, "oci-filters-applied"), "artifactType");
    let manifests = v["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{v}");
    assert_eq!(manifests[0]["digest"], sha256(&sig));
    let (v, h) = referrers(&c, &format!("{url}?artifactType=application/none")).await;
    assert_eq!(header(&h, "oci-filters-applied"), "artifactType");
    assert_eq!(v["manifests"], json!([]));

    // Another repository sees none of them.
    push_blob(&c, &r, "elsewhere", b"x").await;
    let (v, _) = referrers(&c, &r.v2(&format!("elsewhere/referrers/{subject_digest}"))).await;
    assert_eq!(v["manifests"], json!([]));

    // Deleting a referrer removes it from the listing.
    let resp = c
        .delete(r.v2(&format!("signed/manifests/{}", sha256(&sbom))))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let (v, _) = referrers(&c, &url).await;
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1, "{v}");
}

#[tokio::test]
async fn referrers_of_unknown_and_malformed_digests() {
    let r = Registry::start();
    let c = client();
    push_image(&c, &r, "plain", "v1", &[b"l"]).await;
    for repo in ["plain", "never/pushed"] {
        let (v, _) = referrers(
            &c,
            &r.v2(&format!("{repo}/referrers/{}", sha256(b"nothing"))),
        )
        .await;
        assert_eq!(v["manifests"], json!([]), "{repo}");
    }
    let resp = c
        .get(r.v2("plain/referrers/sha256:abc"))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    let resp = c.get(r.v2("plain/referrers/latest")).send().await.unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
}

/// Listings are answered from memory while nothing changes: every write shows in the
/// very next read, whichever listing and page was read before it.
#[tokio::test]
async fn listings_follow_every_write() {
    let r = Registry::start();
    let c = client();
    let subject = push_image(&c, &r, "fresh/app", "v1", &[b"layer"]).await;
    let subject_digest = sha256(&subject);
    let tags_url = r.v2("fresh/app/tags/list");
    let page_url = r.v2("fresh/app/tags/list?n=1");
    let referrers_url = r.v2(&format!("fresh/app/referrers/{subject_digest}"));
    for _ in 0..2 {
        assert_eq!(strings(&list(&c, &tags_url).await.0["tags"]), ["v1"]);
        assert_eq!(list(&c, &page_url).await.1, None);
        assert!(referrers(&c, &referrers_url).await.0["manifests"]
            .as_array()
            .unwrap()
            .is_empty());
    }

    push_image(&c, &r, "fresh/app", "v2", &[b"layer"]).await;
    assert_eq!(strings(&list(&c, &tags_url).await.0["tags"]), ["v1", "v2"]);
    let (page, link) = list(&c, &page_url).await;
    assert_eq!(strings(&page["tags"]), ["v1"]);
    assert!(link.is_some(), "a second page now exists");

    let referrer = push_referrer(&c, &r, "fresh/app", &subject, "application/x-note", "n").await;
    let (index, _) = referrers(&c, &referrers_url).await;
    assert_eq!(index["manifests"][0]["digest"], sha256(&referrer).as_str());

    let resp = c
        .delete(r.v2("fresh/app/manifests/v2"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(strings(&list(&c, &tags_url).await.0["tags"]), ["v1"]);
    let resp = c
        .delete(r.v2(&format!("fresh/app/manifests/{}", sha256(&referrer))))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert!(referrers(&c, &referrers_url).await.0["manifests"]
        .as_array()
        .unwrap()
        .is_empty());
}
