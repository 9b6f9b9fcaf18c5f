//! Content discovery: tag lists and the catalog with `n`/`last` pagination and
//! `Link`, and the OCI 1.1 referrers API.

use std::sync::Arc;

use anyhow::{anyhow, bail, ensure, Result};
use serde_json::{json, Value};
use tokio::sync::OnceCell;

use crate::check;
use crate::client::{next_link, Resp, OCI_EMPTY, OCI_INDEX, OCI_LAYER, OCI_MANIFEST};
use crate::context::{once, Area, Check, Ctx};
use crate::fixtures::{index_for, manifest_for, oci_image, unknown_digest, Blob, Image, Manifest};

pub const SBOM_TYPE: &str = "application/vnd.example.conformance.sbom";
pub const SIG_CONFIG_TYPE: &str = "application/vnd.example.conformance.signature.config+json";
pub const INDEX_ART_TYPE: &str = "application/vnd.example.conformance.bundle";
const TAGS: [&str; 5] = ["a1", "b2", "c3", "d4", "e5"];
const CATALOG: [&str; 3] = ["cat-a", "cat-b", "cat-c"];

#[derive(Default)]
pub struct State {
    tags: OnceCell<Result<Arc<String>, String>>,
    catalog: OnceCell<Result<Arc<()>, String>>,
    referrers: OnceCell<Result<Arc<Referrers>, String>>,
}

pub fn checks() -> Vec<Check> {
    let a = Area::Discovery;
    vec![
        check!(
            a,
            "tags_list",
            "GET /tags/list: 200 with every pushed tag",
            tags_list
        ),
        check!(
            a,
            "tags_list_name",
            "the tag list's name is the repository",
            tags_list_name
        ),
        check!(
            a,
            "tags_list_sorted",
            "tags come in lexical order",
            tags_list_sorted
        ),
        check!(
            a,
            "tags_list_n",
            "?n=2 returns the first two tags",
            tags_list_n
        ),
        check!(
            a,
            "tags_list_n_zero",
            "?n=0 returns an empty list and no Link",
            tags_list_n_zero
        ),
        check!(
            a,
            "tags_list_link",
            "?n=2 with more tags left sets Link rel=\"next\"",
            tags_list_link
        ),
        check!(
            a,
            "tags_list_last",
            "?n=2&last=b2 returns the two tags after b2",
            tags_list_last
        ),
        check!(
            a,
            "tags_list_last_alone",
            "?last=c3 returns the tags after c3",
            tags_list_last_alone
        ),
        check!(
            a,
            "tags_list_follow_links",
            "following Link from ?n=2 yields every tag once, in order",
            tags_list_follow_links
        ),
        check!(
            a,
            "tags_list_unknown_repo",
            "tags of an unknown repository: 404 NAME_UNKNOWN",
            tags_list_unknown_repo
        ),
        check!(
            a,
            "catalog_lists_repos",
            "GET /v2/_catalog lists the pushed repositories",
            catalog_lists_repos
        ),
        check!(
            a,
            "catalog_n",
            "/v2/_catalog?n=2 returns two repositories and Link rel=\"next\"",
            catalog_n
        ),
        check!(
            a,
            "catalog_last",
            "/v2/_catalog?last=X returns what follows X",
            catalog_last
        ),
        check!(
            a,
            "catalog_follow_links",
            "following the catalog's Link yields each repository once, in order",
            catalog_follow_links
        ),
        check!(
            a,
            "referrers_unknown_empty",
            "referrers of an unknown digest: 200 and an empty image index",
            referrers_unknown_empty
        ),
        check!(
            a,
            "referrers_content_type",
            "referrers answer with Content-Type application/vnd.oci.image.index.v1+json",
            referrers_content_type
        ),
        check!(
            a,
            "referrers_subject_before",
            "referrers pushed after their subject are listed",
            referrers_subject_before
        ),
        check!(
            a,
            "referrers_subject_after",
            "referrers pushed before their subject are listed",
            referrers_subject_after
        ),
        check!(
            a,
            "referrers_descriptor_fields",
            "each referrer descriptor has its mediaType, digest and size",
            referrers_descriptor_fields
        ),
        check!(
            a,
            "referrers_artifact_type",
            "a referrer's artifactType is carried into its descriptor",
            referrers_artifact_type
        ),
        check!(
            a,
            "referrers_artifact_type_from_config",
            "without artifactType, the descriptor takes the config's mediaType",
            referrers_artifact_type_from_config
        ),
        check!(
            a,
            "referrers_annotations",
            "a referrer's annotations are carried into its descriptor",
            referrers_annotations
        ),
        check!(
            a,
            "referrers_index_referrer",
            "an image index with a subject is listed as a referrer",
            referrers_index_referrer
        ),
        check!(
            a,
            "referrers_filter_consistent",
            "with OCI-Filters-Applied the list is filtered; without it, it is complete",
            referrers_filter_consistent
        ),
        check!(
            a,
            "referrers_filter_applied",
            "?artifactType= filters and sets OCI-Filters-Applied: artifactType (SHOULD)",
            referrers_filter_applied
        ),
        check!(
            a,
            "referrers_oci_subject_header",
            "PUT of a manifest with a subject answers OCI-Subject: <subject digest>",
            referrers_oci_subject_header
        ),
        check!(
            a,
            "tags_list_no_duplicates",
            "a tag pushed twice is listed once",
            tags_list_no_duplicates
        ),
    ]
}

// ---- tags --------------------------------------------------------------------

async fn tags_repo(c: &Ctx) -> Result<Arc<String>> {
    once(&c.discovery.tags, || async {
        let repo = c.repo("tags");
        let img = oci_image(1, 64);
        // Push in reverse order, so a registry that lists in insertion order shows it.
        let mut tags = TAGS;
        tags.reverse();
        for b in img.blobs() {
            c.push_blob(&repo, b).await?;
        }
        for t in tags {
            c.push_manifest(&repo, t, &img.manifest).await?;
        }
        Ok(repo)
    })
    .await
}

fn tags_of(r: &Resp) -> Result<Vec<String>> {
    let v = r.json()?;
    let tags = v
        .get("tags")
        .ok_or_else(|| anyhow!("body has no \"tags\" field"))?;
    if tags.is_null() {
        return Ok(Vec::new());
    }
    tags.as_array()
        .ok_or_else(|| anyhow!("\"tags\" is not an array"))?
        .iter()
        .map(|t| {
            t.as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("a tag is not a string"))
        })
        .collect()
}

async fn list_tags(c: &Ctx, query: &str) -> Result<(Resp, Vec<String>)> {
    let repo = tags_repo(c).await?;
    let r = c.reg.get(&format!("v2/{repo}/tags/list{query}")).await?;
    r.expect(&format!("GET tags/list{query}"), &[200])?;
    let tags = tags_of(&r)?;
    Ok((r, tags))
}

fn want_tags(got: &[String], want: &[&str], what: &str) -> Result<()> {
    ensure!(got == want, "{what}: got {got:?}, want {want:?}");
    Ok(())
}

async fn tags_list(c: &Ctx) -> Result<()> {
    let (_, tags) = list_tags(c, "").await?;
    for t in TAGS {
        ensure!(tags.iter().any(|x| x == t), "tag {t} missing from {tags:?}");
    }
    Ok(())
}

async fn tags_list_name(c: &Ctx) -> Result<()> {
    let repo = tags_repo(c).await?;
    let (r, _) = list_tags(c, "").await?;
    let name = r.json()?["name"].clone();
    ensure!(name == json!(*repo), "name is {name}, want {repo:?}");
    Ok(())
}

async fn tags_list_sorted(c: &Ctx) -> Result<()> {
    let (_, tags) = list_tags(c, "").await?;
    let mut sorted = tags.clone();
    sorted.sort();
    ensure!(tags == sorted, "tags not in lexical order: {tags:?}");
    Ok(())
}

async fn tags_list_n(c: &Ctx) -> Result<()> {
    let (_, tags) = list_tags(c, "?n=2").await?;
    want_tags(&tags, &TAGS[..2], "?n=2")
}

async fn tags_list_n_zero(c: &Ctx) -> Result<()> {
    let (r, tags) = list_tags(c, "?n=0").await?;
    want_tags(&tags, &[], "?n=0")?;
    ensure!(next_link(&r).is_none(), "?n=0 answered with a Link header");
    Ok(())
}

async fn tags_list_link(c: &Ctx) -> Result<()> {
    let (r, _) = list_tags(c, "?n=2").await?;
    ensure!(
        next_link(&r).is_some(),
        "no Link rel=\"next\" header on a partial list"
    );
    Ok(())
}

async fn tags_list_last(c: &Ctx) -> Result<()> {
    let (_, tags) = list_tags(c, "?n=2&last=b2").await?;
    want_tags(&tags, &TAGS[2..4], "?n=2&last=b2")
}

async fn tags_list_last_alone(c: &Ctx) -> Result<()> {
    let (_, tags) = list_tags(c, "?last=c3").await?;
    want_tags(&tags, &TAGS[3..], "?last=c3")
}

/// Follows `Link` headers from `first`, collecting `field` of each page.
async fn follow(c: &Ctx, first: &str, field: &str, max_pages: usize) -> Result<Vec<String>> {
    let mut url = c.reg.url(first);
    let mut all = Vec::new();
    for _ in 0..max_pages {
        let r = c
            .reg
            .send(c.reg.request_url(reqwest::Method::GET, url.clone()))
            .await?;
        r.expect(&format!("GET {}", url.path()), &[200])?;
        let v = r.json()?;
        let page: Vec<String> = v[field]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        all.extend(page);
        match next_link(&r) {
            Some(next) => url = r.url.join(&next)?,
            None => return Ok(all),
        }
    }
    bail!("more than {max_pages} pages of Link headers")
}

async fn tags_list_follow_links(c: &Ctx) -> Result<()> {
    let repo = tags_repo(c).await?;
    let all = follow(c, &format!("v2/{repo}/tags/list?n=2"), "tags", 10).await?;
    want_tags(&all, &TAGS, "tags collected over Link pages")
}

async fn tags_list_unknown_repo(c: &Ctx) -> Result<()> {
    let repo = c.repo("never-pushed");
    let r = c.reg.get(&format!("v2/{repo}/tags/list")).await?;
    r.expect_error("tags of an unknown repository", &[404], "NAME_UNKNOWN")
}

// ---- catalog -----------------------------------------------------------------

async fn catalog_repos(c: &Ctx) -> Result<Vec<String>> {
    once(&c.discovery.catalog, || async {
        // `_catalog` is an extension beyond the OCI spec: a registry may not offer it.
        let probe = c.reg.get("v2/_catalog?n=1").await?;
        if matches!(probe.status, 404 | 405) {
            return Err(crate::context::skip(format!(
                "GET /v2/_catalog answers {}: the registry does not offer the catalog",
                probe.status
            )));
        }
        for name in CATALOG {
            let repo = c.repo(name);
            let img = oci_image(1, 32);
            c.push_image(&repo, "latest", &img).await?;
        }
        Ok(())
    })
    .await?;
    Ok(CATALOG.iter().map(|n| c.repo(n)).collect())
}

/// `<prefix>/cat`: sorts just before this run's catalog repositories.
fn catalog_start(c: &Ctx) -> String {
    c.repo("cat")
}

fn repositories(r: &Resp) -> Result<Vec<String>> {
    let v = r.json()?;
    v.get("repositories")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("body has no \"repositories\" array"))
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
}

async fn catalog_lists_repos(c: &Ctx) -> Result<()> {
    let repos = catalog_repos(c).await?;
    // Start near our names so a big registry need not list everything.
    let start = catalog_start(c);
    let all = follow(
        c,
        &format!("v2/_catalog?n=100&last={start}"),
        "repositories",
        50,
    )
    .await?;
    for r in &repos {
        ensure!(all.contains(r), "{r} missing from the catalog");
    }
    Ok(())
}

async fn catalog_n(c: &Ctx) -> Result<()> {
    let repos = catalog_repos(c).await?;
    let r = c
        .reg
        .get(&format!("v2/_catalog?n=2&last={}", catalog_start(c)))
        .await?;
    r.expect("GET _catalog?n=2", &[200])?;
    let got = repositories(&r)?;
    ensure!(got == repos[..2], "got {got:?}, want {:?}", &repos[..2]);
    ensure!(
        next_link(&r).is_some(),
        "no Link rel=\"next\" on a partial catalog"
    );
    Ok(())
}

async fn catalog_last(c: &Ctx) -> Result<()> {
    let repos = catalog_repos(c).await?;
    let r = c
        .reg
        .get(&format!("v2/_catalog?n=1&last={}", repos[0]))
        .await?;
    r.expect("GET _catalog?n=1&last=", &[200])?;
    let got = repositories(&r)?;
    ensure!(got == repos[1..2], "got {got:?}, want {:?}", &repos[1..2]);
    Ok(())
}

async fn catalog_follow_links(c: &Ctx) -> Result<()> {
    let repos = catalog_repos(c).await?;
    let start = catalog_start(c);
    // Pages of one, stopping once past our names.
    let mut url = c.reg.url(&format!("v2/_catalog?n=1&last={start}"));
    let mut seen = Vec::new();
    for _ in 0..repos.len() {
        let r = c
            .reg
            .send(c.reg.request_url(reqwest::Method::GET, url.clone()))
            .await?;
        r.expect("GET catalog page", &[200])?;
        seen.extend(repositories(&r)?);
        match next_link(&r) {
            Some(next) => url = r.url.join(&next)?,
            None => break,
        }
    }
    ensure!(seen == repos, "pages gave {seen:?}, want {repos:?}");
    Ok(())
}

// ---- referrers ---------------------------------------------------------------

/// A subject with three referrers pushed after it, and one pushed before.
pub struct Referrers {
    pub repo: String,
    pub subject: Image,
    pub sbom: Manifest,
    pub sbom_put: Resp,
    pub signature: Manifest,
    pub signature_config: Blob,
    pub bundle: Manifest,
    pub late_subject: Image,
    pub early_referrer: Manifest,
}

fn subject_of(m: &Manifest) -> Value {
    json!({"mediaType": m.media_type, "digest": m.digest, "size": m.bytes.len()})
}

async fn referrers(c: &Ctx) -> Result<Arc<Referrers>> {
    once(&c.discovery.referrers, || async {
        let repo = c.repo("referrers");
        let subject = oci_image(1, 128);
        c.push_image(&repo, "subject", &subject).await?;

        let empty = Blob::new(b"{}".to_vec(), OCI_EMPTY);
        c.push_blob(&repo, &empty).await?;
        let payload = Blob::random(200, "application/spdx+json");
        c.push_blob(&repo, &payload).await?;
        let sbom = manifest_for(
            OCI_MANIFEST,
            &empty,
            std::slice::from_ref(&payload),
            Some(json!({
                "artifactType": SBOM_TYPE,
                "subject": subject_of(&subject.manifest),
                "annotations": {"org.signet.conformance.kind": "sbom"},
            })),
        );
        let sbom_put = c.push_manifest(&repo, &sbom.digest, &sbom).await?;

        // No artifactType: the descriptor must take the config's media type.
        let signature_config = Blob::random(64, SIG_CONFIG_TYPE);
        c.push_blob(&repo, &signature_config).await?;
        let sig_layer = Blob::random(64, OCI_LAYER);
        c.push_blob(&repo, &sig_layer).await?;
        let signature = manifest_for(
            OCI_MANIFEST,
            &signature_config,
            &[sig_layer],
            Some(json!({"subject": subject_of(&subject.manifest)})),
        );
        c.push_manifest(&repo, &signature.digest, &signature)
            .await?;

        // An index can be a referrer too.
        let bundle = index_for(
            OCI_INDEX,
            &[(&sbom, "amd64")],
            Some(json!({
                "artifactType": INDEX_ART_TYPE,
                "subject": subject_of(&subject.manifest),
            })),
        );
        c.push_manifest(&repo, &bundle.digest, &bundle).await?;

        // A referrer whose subject arrives later.
        let late_subject = oci_image(1, 128);
        let early_referrer = manifest_for(
            OCI_MANIFEST,
            &empty,
            std::slice::from_ref(&payload),
            Some(json!({
                "artifactType": SBOM_TYPE,
                "subject": subject_of(&late_subject.manifest),
            })),
        );
        c.push_manifest(&repo, &early_referrer.digest, &early_referrer)
            .await?;
        c.push_image(&repo, "late-subject", &late_subject).await?;

        Ok(Referrers {
            repo,
            subject,
            sbom,
            sbom_put,
            signature,
            signature_config,
            bundle,
            late_subject,
            early_referrer,
        })
    })
    .await
}

/// GET the referrers of `digest` (plus `query`) and return the response and its descriptors.
pub async fn list_referrers(
    c: &Ctx,
    repo: &str,
    digest: &str,
    query: &str,
) -> Result<(Resp, Vec<Value>)> {
    let r = c
        .reg
        .get(&format!("v2/{repo}/referrers/{digest}{query}"))
        .await?;
    r.expect("GET referrers", &[200])?;
    let v = r.json()?;
    let list = v
        .get("manifests")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| anyhow!("referrers body has no \"manifests\" array"))?;
    Ok((r, list))
}

fn find<'a>(list: &'a [Value], m: &Manifest) -> Result<&'a Value> {
    list.iter()
        .find(|d| d["digest"] == json!(m.digest))
        .ok_or_else(|| anyhow!("referrer {} not listed", crate::context::short(&m.digest)))
}

async fn referrers_unknown_empty(c: &Ctx) -> Result<()> {
    let f = referrers(c).await?;
    let (r, list) = list_referrers(c, &f.repo, &unknown_digest(), "").await?;
    ensure!(
        list.is_empty(),
        "{} descriptors for an unknown digest",
        list.len()
    );
    ensure!(
        r.content_type() == Some(OCI_INDEX),
        "Content-Type is {:?}, want {OCI_INDEX}",
        r.content_type()
    );
    let v = r.json()?;
    ensure!(
        v["schemaVersion"] == json!(2),
        "schemaVersion is {}",
        v["schemaVersion"]
    );
    Ok(())
}

async fn referrers_content_type(c: &Ctx) -> Result<()> {
    let f = referrers(c).await?;
    let (r, _) = list_referrers(c, &f.repo, &f.subject.manifest.digest, "").await?;
    ensure!(
        r.content_type() == Some(OCI_INDEX),
        "Content-Type is {:?}, want {OCI_INDEX}",
        r.content_type()
    );
    Ok(())
}

async fn referrers_subject_before(c: &Ctx) -> Result<()> {
    let f = referrers(c).await?;
    let (_, list) = list_referrers(c, &f.repo, &f.subject.manifest.digest, "").await?;
    for m in [&f.sbom, &f.signature, &f.bundle] {
        find(&list, m)?;
    }
    ensure!(list.len() == 3, "{} descriptors, want 3", list.len());
    Ok(())
}

async fn referrers_subject_after(c: &Ctx) -> Result<()> {
    let f = referrers(c).await?;
    let (_, list) = list_referrers(c, &f.repo, &f.late_subject.manifest.digest, "").await?;
    find(&list, &f.early_referrer)?;
    Ok(())
}

async fn referrers_descriptor_fields(c: &Ctx) -> Result<()> {
    let f = referrers(c).await?;
    let (_, list) = list_referrers(c, &f.repo, &f.subject.manifest.digest, "").await?;
    for m in [&f.sbom, &f.signature, &f.bundle] {
        let d = find(&list, m)?;
        ensure!(
            d["mediaType"] == json!(m.media_type),
            "mediaType {} for {}",
            d["mediaType"],
            m.digest
        );
        ensure!(
            d["size"] == json!(m.bytes.len()),
            "size {} for {}, want {}",
            d["size"],
            m.digest,
            m.bytes.len()
        );
    }
    Ok(())
}

async fn referrers_artifact_type(c: &Ctx) -> Result<()> {
    let f = referrers(c).await?;
    let (_, list) = list_referrers(c, &f.repo, &f.subject.manifest.digest, "").await?;
    let d = find(&list, &f.sbom)?;
    ensure!(
        d["artifactType"] == json!(SBOM_TYPE),
        "artifactType is {}, want {SBOM_TYPE}",
        d["artifactType"]
    );
    let d = find(&list, &f.bundle)?;
    ensure!(
        d["artifactType"] == json!(INDEX_ART_TYPE),
        "index artifactType is {}, want {INDEX_ART_TYPE}",
        d["artifactType"]
    );
    Ok(())
}

async fn referrers_artifact_type_from_config(c: &Ctx) -> Result<()> {
    let f = referrers(c).await?;
    let (_, list) = list_referrers(c, &f.repo, &f.subject.manifest.digest, "").await?;
    let d = find(&list, &f.signature)?;
    ensure!(
        d["artifactType"] == json!(f.signature_config.media_type),
        "artifactType is {}, want the config's {}",
        d["artifactType"],
        f.signature_config.media_type
    );
    Ok(())
}

async fn referrers_annotations(c: &Ctx) -> Result<()> {
    let f = referrers(c).await?;
    let (_, list) = list_referrers(c, &f.repo, &f.subject.manifest.digest, "").await?;
    let d = find(&list, &f.sbom)?;
    ensure!(
        d["annotations"]["org.signet.conformance.kind"] == json!("sbom"),
        "annotations are {}, want the manifest's",
        d["annotations"]
    );
    Ok(())
}

async fn referrers_index_referrer(c: &Ctx) -> Result<()> {
    let f = referrers(c).await?;
    let (_, list) = list_referrers(c, &f.repo, &f.subject.manifest.digest, "").await?;
    let d = find(&list, &f.bundle)?;
    ensure!(
        d["mediaType"] == json!(OCI_INDEX),
        "mediaType is {}, want {OCI_INDEX}",
        d["mediaType"]
    );
    Ok(())
}

async fn referrers_filter_consistent(c: &Ctx) -> Result<()> {
    let f = referrers(c).await?;
    let q = format!("?artifactType={SBOM_TYPE}");
    let (r, list) = list_referrers(c, &f.repo, &f.subject.manifest.digest, &q).await?;
    if r.header("oci-filters-applied") == Some("artifactType") {
        ensure!(
            list.iter().all(|d| d["artifactType"] == json!(SBOM_TYPE)),
            "OCI-Filters-Applied set but other artifact types listed"
        );
        find(&list, &f.sbom)?;
    } else {
        ensure!(
            list.len() == 3,
            "no OCI-Filters-Applied, yet {} of 3 referrers listed",
            list.len()
        );
    }
    Ok(())
}

async fn referrers_filter_applied(c: &Ctx) -> Result<()> {
    let f = referrers(c).await?;
    let q = format!("?artifactType={SBOM_TYPE}");
    let (r, list) = list_referrers(c, &f.repo, &f.subject.manifest.digest, &q).await?;
    ensure!(
        r.header("oci-filters-applied") == Some("artifactType"),
        "OCI-Filters-Applied is {:?}, want artifactType",
        r.header("oci-filters-applied")
    );
    ensure!(
        list.len() == 1,
        "{} descriptors, want only the sbom",
        list.len()
    );
    find(&list, &f.sbom)?;
    Ok(())
}

async fn referrers_oci_subject_header(c: &Ctx) -> Result<()> {
    let f = referrers(c).await?;
    let got = f.sbom_put.header("oci-subject");
    ensure!(
        got == Some(f.subject.manifest.digest.as_str()),
        "OCI-Subject is {got:?}, want {}",
        f.subject.manifest.digest
    );
    Ok(())
}

async fn tags_list_no_duplicates(c: &Ctx) -> Result<()> {
    let repo = tags_repo(c).await?;
    let img = oci_image(1, 16);
    c.push_image(&repo, "a1", &img).await?;
    let (_, tags) = list_tags(c, "").await?;
    let n = tags.iter().filter(|t| *t == "a1").count();
    ensure!(n == 1, "a1 listed {n} times in {tags:?}");
    Ok(())
}
