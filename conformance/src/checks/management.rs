//! Content management: deleting tags, manifests and blobs, and what must then
//! be gone and what must stay.

use std::sync::Arc;

use anyhow::{ensure, Result};
use serde_json::json;
use tokio::sync::OnceCell;

use crate::check;
use crate::checks::discovery::list_referrers;
use crate::client::{Resp, OCI_EMPTY, OCI_INDEX, OCI_LAYER, OCI_MANIFEST};
use crate::context::{once, skip, Area, Check, Ctx};
use crate::fixtures::{index_for, manifest_for, oci_image, unknown_digest, Blob, Image};

#[derive(Default)]
pub struct State {
    manifest: OnceCell<Result<Arc<ManifestDelete>, String>>,
    tag: OnceCell<Result<Arc<TagDelete>, String>>,
    blob: OnceCell<Result<Arc<BlobDelete>, String>>,
}

pub fn checks() -> Vec<Check> {
    let a = Area::Management;
    vec![
        check!(
            a,
            "delete_manifest",
            "DELETE manifest by digest: 202",
            delete_manifest
        ),
        check!(
            a,
            "deleted_manifest_gone",
            "a deleted manifest: GET 404 MANIFEST_UNKNOWN",
            deleted_manifest_gone
        ),
        check!(
            a,
            "deleted_manifest_head_gone",
            "a deleted manifest: HEAD 404",
            deleted_manifest_head_gone
        ),
        check!(
            a,
            "deleted_manifest_tags_gone",
            "tags of a deleted manifest: 404 MANIFEST_UNKNOWN",
            deleted_manifest_tags_gone
        ),
        check!(
            a,
            "deleted_manifest_not_listed",
            "tags of a deleted manifest leave the tag list",
            deleted_manifest_not_listed
        ),
        check!(
            a,
            "deleted_manifest_blobs_stay",
            "blobs of a deleted manifest stay readable",
            deleted_manifest_blobs_stay
        ),
        check!(a, "delete_tag", "DELETE manifest by tag: 202", delete_tag),
        check!(
            a,
            "deleted_tag_gone",
            "a deleted tag: 404 MANIFEST_UNKNOWN",
            deleted_tag_gone
        ),
        check!(
            a,
            "deleted_tag_manifest_stays",
            "the manifest of a deleted tag stays pullable by digest",
            deleted_tag_manifest_stays
        ),
        check!(
            a,
            "deleted_tag_other_tag_stays",
            "another tag of the same manifest stays",
            deleted_tag_other_tag_stays
        ),
        check!(
            a,
            "deleted_tag_not_listed",
            "a deleted tag leaves the tag list; the other stays",
            deleted_tag_not_listed
        ),
        check!(a, "delete_blob", "DELETE blob: 202", delete_blob),
        check!(
            a,
            "deleted_blob_gone",
            "a deleted blob: GET 404 BLOB_UNKNOWN",
            deleted_blob_gone
        ),
        check!(
            a,
            "deleted_blob_head_gone",
            "a deleted blob: HEAD 404",
            deleted_blob_head_gone
        ),
        check!(
            a,
            "deleted_blob_other_repo_stays",
            "the same blob in another repository stays",
            deleted_blob_other_repo_stays
        ),
        check!(
            a,
            "delete_unknown_manifest",
            "DELETE unknown manifest: 404 MANIFEST_UNKNOWN",
            delete_unknown_manifest
        ),
        check!(
            a,
            "delete_unknown_blob",
            "DELETE unknown blob: 404 BLOB_UNKNOWN",
            delete_unknown_blob
        ),
        check!(
            a,
            "delete_manifest_other_repo_stays",
            "deleting a manifest in one repository keeps it in another",
            delete_manifest_other_repo_stays
        ),
        check!(
            a,
            "delete_index_children_stay",
            "deleting an index keeps its children",
            delete_index_children_stay
        ),
        check!(
            a,
            "repush_after_delete",
            "a deleted manifest can be pushed again",
            repush_after_delete
        ),
        check!(
            a,
            "delete_referrer_unlisted",
            "a deleted referrer leaves its subject's referrers list",
            delete_referrer_unlisted
        ),
        check!(
            a,
            "delete_manifest_twice",
            "a second DELETE of the same manifest: 404 MANIFEST_UNKNOWN",
            delete_manifest_twice
        ),
        check!(
            a,
            "delete_blob_twice",
            "a second DELETE of the same blob: 404 BLOB_UNKNOWN",
            delete_blob_twice
        ),
        check!(
            a,
            "blob_repush_after_delete",
            "a deleted blob can be pushed again and read back",
            blob_repush_after_delete
        ),
        check!(
            a,
            "untagged_manifest_not_listed",
            "a manifest pushed by digest adds no tag to the tag list",
            untagged_manifest_not_listed
        ),
    ]
}

/// DELETE that turns "deletes are disabled" (405) into a skip.
async fn delete(c: &Ctx, path: &str) -> Result<Resp> {
    let r = c.reg.delete(path).await?;
    if r.status == 405 {
        return Err(skip("the registry does not allow deletes (405)"));
    }
    Ok(r)
}

struct ManifestDelete {
    image: Image,
    deleted: Resp,
    get: Resp,
    head: Resp,
    tags: Vec<Resp>,
    list: Resp,
    blobs: Vec<Resp>,
}

async fn manifest_delete(c: &Ctx) -> Result<Arc<ManifestDelete>> {
    once(&c.management.manifest, || async {
        let repo = c.repo("mgmt-manifest");
        let image = oci_image(2, 100);
        // A second manifest keeps the repository alive after the delete.
        let other = oci_image(1, 10);
        c.push_image(&repo, "other", &other).await?;
        c.push_image(&repo, "doomed", &image).await?;
        c.push_manifest(&repo, "doomed-too", &image.manifest)
            .await?;
        let d = &image.manifest.digest;
        let deleted = delete(c, &format!("v2/{repo}/manifests/{d}")).await?;
        let get = c.reg.get_manifest(&repo, d).await?;
        let head = c.reg.head_manifest(&repo, d).await?;
        let mut tags = Vec::new();
        for t in ["doomed", "doomed-too"] {
            tags.push(c.reg.get_manifest(&repo, t).await?);
        }
        let list = c.reg.get(&format!("v2/{repo}/tags/list")).await?;
        let mut blobs = Vec::new();
        for b in image.blobs() {
            blobs.push(c.reg.get(&format!("v2/{repo}/blobs/{}", b.digest)).await?);
        }
        Ok(ManifestDelete {
            image,
            deleted,
            get,
            head,
            tags,
            list,
            blobs,
        })
    })
    .await
}

async fn delete_manifest(c: &Ctx) -> Result<()> {
    manifest_delete(c)
        .await?
        .deleted
        .expect("DELETE manifest", &[202])?;
    Ok(())
}

async fn deleted_manifest_gone(c: &Ctx) -> Result<()> {
    let s = manifest_delete(c).await?;
    s.get
        .expect_error("GET deleted manifest", &[404], "MANIFEST_UNKNOWN")
}

async fn deleted_manifest_head_gone(c: &Ctx) -> Result<()> {
    manifest_delete(c)
        .await?
        .head
        .expect("HEAD deleted manifest", &[404])?;
    Ok(())
}

async fn deleted_manifest_tags_gone(c: &Ctx) -> Result<()> {
    let s = manifest_delete(c).await?;
    for t in &s.tags {
        t.expect_error("GET tag of a deleted manifest", &[404], "MANIFEST_UNKNOWN")?;
    }
    Ok(())
}

async fn deleted_manifest_not_listed(c: &Ctx) -> Result<()> {
    let s = manifest_delete(c).await?;
    s.list.expect("GET tags/list", &[200])?;
    let v = s.list.json()?;
    let tags: Vec<&str> = v["tags"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t.as_str()).collect())
        .unwrap_or_default();
    ensure!(
        !tags.iter().any(|t| t.starts_with("doomed")),
        "tags still listed: {tags:?}"
    );
    ensure!(
        tags.contains(&"other"),
        "the unrelated tag vanished: {tags:?}"
    );
    Ok(())
}

async fn deleted_manifest_blobs_stay(c: &Ctx) -> Result<()> {
    let s = manifest_delete(c).await?;
    for (r, b) in s.blobs.iter().zip(s.image.blobs()) {
        r.expect("GET blob of a deleted manifest", &[200])?;
        ensure!(r.body[..] == b.data[..], "blob content changed");
    }
    Ok(())
}

struct TagDelete {
    digest: String,
    deleted: Resp,
    gone: Resp,
    by_digest: Resp,
    other: Resp,
    list: Resp,
}

async fn tag_delete(c: &Ctx) -> Result<Arc<TagDelete>> {
    once(&c.management.tag, || async {
        let repo = c.repo("mgmt-tag");
        let image = oci_image(1, 100);
        c.push_image(&repo, "gone", &image).await?;
        c.push_manifest(&repo, "stays", &image.manifest).await?;
        let deleted = delete(c, &format!("v2/{repo}/manifests/gone")).await?;
        if deleted.status == 400 {
            // The spec lets a registry refuse tag deletion with 400 or 405.
            return Err(skip(format!(
                "the registry does not delete by tag (400 {:?}, allowed by the spec)",
                deleted.error_codes()
            )));
        }
        Ok(TagDelete {
            digest: image.manifest.digest.clone(),
            deleted,
            gone: c.reg.get_manifest(&repo, "gone").await?,
            by_digest: c.reg.get_manifest(&repo, &image.manifest.digest).await?,
            other: c.reg.get_manifest(&repo, "stays").await?,
            list: c.reg.get(&format!("v2/{repo}/tags/list")).await?,
        })
    })
    .await
}

async fn delete_tag(c: &Ctx) -> Result<()> {
    tag_delete(c)
        .await?
        .deleted
        .expect("DELETE by tag", &[202])?;
    Ok(())
}

async fn deleted_tag_gone(c: &Ctx) -> Result<()> {
    tag_delete(c)
        .await?
        .gone
        .expect_error("GET deleted tag", &[404], "MANIFEST_UNKNOWN")
}

async fn deleted_tag_manifest_stays(c: &Ctx) -> Result<()> {
    let s = tag_delete(c).await?;
    s.by_digest
        .expect("GET manifest by digest after its tag was deleted", &[200])?;
    ensure!(
        s.by_digest.digest_header().is_none_or(|d| d == s.digest),
        "a different manifest came back"
    );
    Ok(())
}

async fn deleted_tag_other_tag_stays(c: &Ctx) -> Result<()> {
    tag_delete(c)
        .await?
        .other
        .expect("GET the other tag", &[200])?;
    Ok(())
}

async fn deleted_tag_not_listed(c: &Ctx) -> Result<()> {
    let s = tag_delete(c).await?;
    s.list.expect("GET tags/list", &[200])?;
    let v = s.list.json()?;
    ensure!(
        v["tags"] == json!(["stays"]),
        "tags are {}, want [\"stays\"]",
        v["tags"]
    );
    Ok(())
}

struct BlobDelete {
    deleted: Resp,
    get: Resp,
    head: Resp,
    other: Resp,
}

async fn blob_delete(c: &Ctx) -> Result<Arc<BlobDelete>> {
    once(&c.management.blob, || async {
        let repo = c.repo("mgmt-blob");
        let other_repo = c.repo("mgmt-blob-other");
        let blob = Blob::random(300, OCI_LAYER);
        c.push_blob(&repo, &blob).await?;
        c.push_blob(&other_repo, &blob).await?;
        let path = format!("v2/{repo}/blobs/{}", blob.digest);
        let deleted = delete(c, &path).await?;
        Ok(BlobDelete {
            deleted,
            get: c.reg.get(&path).await?,
            head: c.reg.head(&path).await?,
            other: c
                .reg
                .get(&format!("v2/{other_repo}/blobs/{}", blob.digest))
                .await?,
        })
    })
    .await
}

async fn delete_blob(c: &Ctx) -> Result<()> {
    blob_delete(c)
        .await?
        .deleted
        .expect("DELETE blob", &[202])?;
    Ok(())
}

async fn deleted_blob_gone(c: &Ctx) -> Result<()> {
    blob_delete(c)
        .await?
        .get
        .expect_error("GET deleted blob", &[404], "BLOB_UNKNOWN")
}

async fn deleted_blob_head_gone(c: &Ctx) -> Result<()> {
    blob_delete(c)
        .await?
        .head
        .expect("HEAD deleted blob", &[404])?;
    Ok(())
}

async fn deleted_blob_other_repo_stays(c: &Ctx) -> Result<()> {
    blob_delete(c)
        .await?
        .other
        .expect("GET the blob in the other repository", &[200])?;
    Ok(())
}

async fn delete_unknown_manifest(c: &Ctx) -> Result<()> {
    let repo = c.repo("mgmt-unknown");
    c.push_image(&repo, "present", &oci_image(1, 10)).await?;
    let r = delete(c, &format!("v2/{repo}/manifests/{}", unknown_digest())).await?;
    r.expect_error("DELETE unknown manifest", &[404], "MANIFEST_UNKNOWN")
}

async fn delete_unknown_blob(c: &Ctx) -> Result<()> {
    let repo = c.repo("mgmt-unknown");
    c.push_blob(&repo, &Blob::random(10, OCI_LAYER)).await?;
    let r = delete(c, &format!("v2/{repo}/blobs/{}", unknown_digest())).await?;
    r.expect_error("DELETE unknown blob", &[404], "BLOB_UNKNOWN")
}

async fn delete_manifest_other_repo_stays(c: &Ctx) -> Result<()> {
    let a = c.repo("mgmt-twin-a");
    let b = c.repo("mgmt-twin-b");
    let image = oci_image(1, 50);
    c.push_image(&a, "twin", &image).await?;
    c.push_image(&b, "twin", &image).await?;
    let d = &image.manifest.digest;
    delete(c, &format!("v2/{a}/manifests/{d}"))
        .await?
        .expect("DELETE in the first repository", &[202])?;
    c.reg
        .get_manifest(&b, d)
        .await?
        .expect("GET in the second repository", &[200])?;
    c.reg
        .get_manifest(&b, "twin")
        .await?
        .expect("GET the tag in the second repository", &[200])?;
    Ok(())
}

async fn delete_index_children_stay(c: &Ctx) -> Result<()> {
    let repo = c.repo("mgmt-index");
    let x = oci_image(1, 20);
    let y = oci_image(1, 20);
    c.push_image(&repo, &x.manifest.digest, &x).await?;
    c.push_image(&repo, &y.manifest.digest, &y).await?;
    let idx = index_for(
        OCI_INDEX,
        &[(&x.manifest, "amd64"), (&y.manifest, "arm64")],
        None,
    );
    c.push_manifest(&repo, "multi", &idx).await?;
    delete(c, &format!("v2/{repo}/manifests/{}", idx.digest))
        .await?
        .expect("DELETE index", &[202])?;
    for child in [&x, &y] {
        c.reg
            .get_manifest(&repo, &child.manifest.digest)
            .await?
            .expect("GET child of a deleted index", &[200])?;
    }
    Ok(())
}

async fn repush_after_delete(c: &Ctx) -> Result<()> {
    let repo = c.repo("mgmt-repush");
    let image = oci_image(1, 20);
    c.push_image(&repo, "again", &image).await?;
    let d = &image.manifest.digest;
    delete(c, &format!("v2/{repo}/manifests/{d}"))
        .await?
        .expect("DELETE manifest", &[202])?;
    c.push_manifest(&repo, "again", &image.manifest).await?;
    let g = c.reg.get_manifest(&repo, "again").await?;
    g.expect("GET the re-pushed tag", &[200])?;
    ensure!(
        g.body[..] == image.manifest.bytes[..],
        "re-pushed manifest differs"
    );
    Ok(())
}

async fn delete_referrer_unlisted(c: &Ctx) -> Result<()> {
    let repo = c.repo("mgmt-referrer");
    let subject = oci_image(1, 20);
    c.push_image(&repo, "subject", &subject).await?;
    let empty = Blob::new(b"{}".to_vec(), OCI_EMPTY);
    c.push_blob(&repo, &empty).await?;
    let mut referrers = Vec::new();
    for n in 0..2 {
        let layer = Blob::random(20, OCI_LAYER);
        c.push_blob(&repo, &layer).await?;
        let m = manifest_for(
            OCI_MANIFEST,
            &empty,
            &[layer],
            Some(json!({
                "artifactType": format!("application/vnd.example.conformance.r{n}"),
                "subject": {"mediaType": OCI_MANIFEST, "digest": subject.manifest.digest, "size": subject.manifest.bytes.len()},
            })),
        );
        c.push_manifest(&repo, &m.digest, &m).await?;
        referrers.push(m);
    }
    delete(c, &format!("v2/{repo}/manifests/{}", referrers[0].digest))
        .await?
        .expect("DELETE referrer", &[202])?;
    let (_, list) = list_referrers(c, &repo, &subject.manifest.digest, "").await?;
    let digests: Vec<&str> = list.iter().filter_map(|d| d["digest"].as_str()).collect();
    ensure!(
        digests == [referrers[1].digest.as_str()],
        "referrers after the delete are {digests:?}, want only the survivor"
    );
    Ok(())
}

async fn delete_manifest_twice(c: &Ctx) -> Result<()> {
    let repo = c.repo("mgmt-twice");
    let keep = oci_image(1, 10);
    c.push_image(&repo, "keep", &keep).await?;
    let image = oci_image(1, 10);
    c.push_image(&repo, &image.manifest.digest, &image).await?;
    let path = format!("v2/{repo}/manifests/{}", image.manifest.digest);
    delete(c, &path).await?.expect("first DELETE", &[202])?;
    delete(c, &path)
        .await?
        .expect_error("second DELETE", &[404], "MANIFEST_UNKNOWN")
}

async fn delete_blob_twice(c: &Ctx) -> Result<()> {
    let repo = c.repo("mgmt-twice");
    let blob = Blob::random(10, OCI_LAYER);
    c.push_blob(&repo, &blob).await?;
    let path = format!("v2/{repo}/blobs/{}", blob.digest);
    delete(c, &path).await?.expect("first DELETE", &[202])?;
    delete(c, &path)
        .await?
        .expect_error("second DELETE", &[404], "BLOB_UNKNOWN")
}

async fn blob_repush_after_delete(c: &Ctx) -> Result<()> {
    let repo = c.repo("mgmt-blob-again");
    let blob = Blob::random(64, OCI_LAYER);
    c.push_blob(&repo, &blob).await?;
    let path = format!("v2/{repo}/blobs/{}", blob.digest);
    delete(c, &path).await?.expect("DELETE blob", &[202])?;
    c.push_blob(&repo, &blob).await?;
    let g = c.reg.get(&path).await?;
    g.expect("GET the re-pushed blob", &[200])?;
    ensure!(g.body[..] == blob.data[..], "re-pushed blob differs");
    Ok(())
}

async fn untagged_manifest_not_listed(c: &Ctx) -> Result<()> {
    let repo = c.repo("mgmt-untagged");
    let tagged = oci_image(1, 10);
    c.push_image(&repo, "only", &tagged).await?;
    let untagged = oci_image(1, 10);
    c.push_image(&repo, &untagged.manifest.digest, &untagged)
        .await?;
    let r = c.reg.get(&format!("v2/{repo}/tags/list")).await?;
    r.expect("GET tags/list", &[200])?;
    let v = r.json()?;
    ensure!(
        v["tags"] == json!(["only"]),
        "tags are {}, want [\"only\"]",
        v["tags"]
    );
    Ok(())
}
