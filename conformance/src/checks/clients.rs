//! What real clients do and need: cosign's `.sig`/`.att`/`.sbom` tags, the
//! referrers tag fallback (sigstore-js, cosign v3), docker's media types and
//! push flow, podman's streamed uploads, containerd's HEAD-then-GET, skopeo's
//! byte-exact copies, oras artifacts, and the containers/image signatures
//! extension.

use std::sync::Arc;

use anyhow::{anyhow, ensure, Result};
use bytes::Bytes;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::OnceCell;

use crate::check;
use crate::client::{
    sha256, with_digest, Resp, DOCKER_CONFIG, DOCKER_LAYER, DOCKER_LIST, DOCKER_MANIFEST,
    OCI_CONFIG, OCI_EMPTY, OCI_INDEX, OCI_LAYER, OCI_MANIFEST,
};
use crate::context::{once, skip, Area, Check, Ctx};
use crate::fixtures::{
    image_with, index_for, manifest_for, oci_image, random_bytes, random_hex, unknown_digest, Blob,
    Image, Manifest,
};

const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const DSSE: &str = "application/vnd.dsse.envelope.v1+json";
const SIGSTORE_BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

#[derive(Default)]
pub struct State {
    cosign: OnceCell<Result<Arc<Cosign>, String>>,
}

pub fn checks() -> Vec<Check> {
    let a = Area::Clients;
    vec![
        check!(
            a,
            "cosign_sig_push",
            "a cosign .sig manifest can be pushed under sha256-<hex>.sig",
            cosign_sig_push
        ),
        check!(
            a,
            "cosign_sig_pull",
            "the .sig tag returns the manifest as an OCI image manifest",
            cosign_sig_pull
        ),
        check!(
            a,
            "cosign_sig_append_moves_tag",
            "a second signature (appended layer) moves the .sig tag",
            cosign_sig_append_moves_tag
        ),
        check!(
            a,
            "cosign_sig_old_digest_pullable",
            "the replaced .sig manifest stays pullable by digest",
            cosign_sig_old_digest_pullable
        ),
        check!(
            a,
            "cosign_sig_old_digest_deletable",
            "the replaced .sig manifest can be deleted; the tag stays",
            cosign_sig_old_digest_deletable
        ),
        check!(
            a,
            "cosign_sig_missing",
            "a missing .sig tag: 404 MANIFEST_UNKNOWN",
            cosign_sig_missing
        ),
        check!(
            a,
            "cosign_tags_listed",
            "the image and .sig tags appear in the tag list",
            cosign_tags_listed
        ),
        check!(
            a,
            "cosign_att_sbom_tags",
            ".att (DSSE) and .sbom attachments can be pushed and pulled",
            cosign_att_sbom_tags
        ),
        check!(
            a,
            "referrers_fallback_tag",
            "the sha256-<hex> fallback tag holds an index that can be replaced",
            referrers_fallback_tag
        ),
        check!(
            a,
            "sigstore_bundle_push",
            "a Sigstore bundle artifact with a subject is accepted",
            sigstore_bundle_push
        ),
        check!(
            a,
            "docker_schema2_push_pull",
            "a docker schema2 manifest round-trips with its media type",
            docker_schema2_push_pull
        ),
        check!(
            a,
            "docker_manifest_list",
            "a docker manifest list round-trips with its media type",
            docker_manifest_list
        ),
        check!(
            a,
            "docker_push_flow",
            "docker's flow: HEAD blob, mount from another repo, POST+PUT, PUT manifest",
            docker_push_flow
        ),
        check!(
            a,
            "podman_streamed_push",
            "podman's flow: streamed PATCH without length, PUT, manifest, pull back",
            podman_streamed_push
        ),
        check!(
            a,
            "containerd_head_then_get",
            "HEAD by tag gives the digest GET by digest verifies against",
            containerd_head_then_get
        ),
        check!(
            a,
            "skopeo_copy_preserves_digest",
            "copying an image to another repository keeps its digest",
            skopeo_copy_preserves_digest
        ),
        check!(
            a,
            "oras_artifact_attach",
            "an oras-style artifact with a subject and titled layer round-trips",
            oras_artifact_attach
        ),
        check!(
            a,
            "signatures_ext_get_empty",
            "signatures extension: a fresh manifest has {\"signatures\":[]}",
            signatures_ext_get_empty
        ),
        check!(
            a,
            "signatures_ext_put",
            "signatures extension: PUT an atomic signature: 201",
            signatures_ext_put
        ),
        check!(
            a,
            "signatures_ext_get_after_put",
            "signatures extension: GET returns the signature that was PUT",
            signatures_ext_get_after_put
        ),
        check!(
            a,
            "cosign_sig_head",
            "HEAD on the .sig tag gives the current signature manifest digest",
            cosign_sig_head
        ),
    ]
}

// ---- cosign ------------------------------------------------------------------

/// The tag cosign uses for an attachment of `digest`: `sha256-<hex>.<suffix>`.
fn attachment_tag(digest: &str, suffix: &str) -> String {
    let t = digest.replacen(':', "-", 1);
    if suffix.is_empty() {
        t
    } else {
        format!("{t}.{suffix}")
    }
}

/// A cosign signature layer for `subject`, with the annotations cosign writes.
fn signature_layer(repo: &str, subject: &str) -> (Blob, Value) {
    let payload = json!({
        "critical": {
            "identity": {"docker-reference": format!("127.0.0.1/{repo}")},
            "image": {"docker-manifest-digest": subject},
            "type": "cosign container image signature",
        },
        "optional": {"nonce": random_hex(8)},
    });
    let blob = Blob::new(serde_json::to_vec(&payload).expect("JSON"), SIMPLESIGNING);
    let mut desc = blob.descriptor();
    desc["annotations"] = json!({"dev.cosignproject.cosign/signature": base64(&random_bytes(64))});
    (blob, desc)
}

/// A `.sig` manifest over `layers` and the config blob cosign writes for it.
fn signature_manifest(layers: &[(Blob, Value)]) -> (Blob, Manifest) {
    let config = json!({
        "architecture": "",
        "os": "",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|(b, _)| b.digest.clone()).collect::<Vec<_>>()},
    });
    let config = Blob::new(serde_json::to_vec(&config).expect("JSON"), OCI_CONFIG);
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": layers.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
    });
    (config, Manifest::from_json(&m))
}

struct Cosign {
    repo: String,
    image: Image,
    sig_tag: String,
    first: Manifest,
    first_put: Resp,
    first_get: Resp,
    second: Manifest,
    second_put: Resp,
    after_get: Resp,
    old_get: Resp,
}

async fn cosign(c: &Ctx) -> Result<Arc<Cosign>> {
    once(&c.clients.cosign, || async {
        let repo = c.repo("cosign");
        let image = oci_image(1, 256);
        c.push_image(&repo, "signed", &image).await?;
        let subject = image.manifest.digest.clone();
        let sig_tag = attachment_tag(&subject, "sig");

        let one = signature_layer(&repo, &subject);
        let (config1, first) = signature_manifest(std::slice::from_ref(&one));
        c.push_blob(&repo, &one.0).await?;
        c.push_blob(&repo, &config1).await?;
        let first_put = c.put_manifest(&repo, &sig_tag, &first).await?;
        let first_get = c.reg.get_manifest(&repo, &sig_tag).await?;

        // cosign appends: the new manifest keeps the first layer and adds one.
        let two = signature_layer(&repo, &subject);
        let (config2, second) = signature_manifest(&[one, two.clone()]);
        c.push_blob(&repo, &two.0).await?;
        c.push_blob(&repo, &config2).await?;
        let second_put = c.put_manifest(&repo, &sig_tag, &second).await?;
        let after_get = c.reg.get_manifest(&repo, &sig_tag).await?;
        let old_get = c.reg.get_manifest(&repo, &first.digest).await?;
        Ok(Cosign {
            repo,
            image,
            sig_tag,
            first,
            first_put,
            first_get,
            second,
            second_put,
            after_get,
            old_get,
        })
    })
    .await
}

async fn cosign_sig_push(c: &Ctx) -> Result<()> {
    let s = cosign(c).await?;
    s.first_put.expect("PUT .sig manifest", &[201])?;
    Ok(())
}

async fn cosign_sig_pull(c: &Ctx) -> Result<()> {
    let s = cosign(c).await?;
    let r = &s.first_get;
    r.expect("GET .sig tag", &[200])?;
    ensure!(
        r.content_type() == Some(OCI_MANIFEST),
        "Content-Type is {:?}, want {OCI_MANIFEST}",
        r.content_type()
    );
    ensure!(
        r.body[..] == s.first.bytes[..],
        ".sig manifest came back different"
    );
    Ok(())
}

async fn cosign_sig_append_moves_tag(c: &Ctx) -> Result<()> {
    let s = cosign(c).await?;
    s.second_put
        .expect("PUT the appended .sig manifest", &[201])?;
    s.after_get.expect("GET .sig tag", &[200])?;
    ensure!(
        s.after_get.body[..] == s.second.bytes[..],
        "the .sig tag still returns the first signature manifest"
    );
    Ok(())
}

async fn cosign_sig_old_digest_pullable(c: &Ctx) -> Result<()> {
    let s = cosign(c).await?;
    s.old_get
        .expect("GET the replaced .sig manifest by digest", &[200])?;
    ensure!(
        s.old_get.body[..] == s.first.bytes[..],
        "replaced manifest came back different"
    );
    Ok(())
}

async fn cosign_sig_old_digest_deletable(c: &Ctx) -> Result<()> {
    let s = cosign(c).await?;
    let d = c
        .reg
        .delete(&format!("v2/{}/manifests/{}", s.repo, s.first.digest))
        .await?;
    if d.status == 405 {
        return Err(skip("the registry does not allow deletes (405)"));
    }
    d.expect("DELETE the replaced .sig manifest", &[202])?;
    c.reg
        .get_manifest(&s.repo, &s.first.digest)
        .await?
        .expect_error("GET the deleted .sig manifest", &[404], "MANIFEST_UNKNOWN")?;
    let t = c.reg.get_manifest(&s.repo, &s.sig_tag).await?;
    t.expect("GET .sig tag after deleting the old manifest", &[200])?;
    ensure!(
        t.body[..] == s.second.bytes[..],
        ".sig tag no longer returns the current manifest"
    );
    Ok(())
}

async fn cosign_sig_missing(c: &Ctx) -> Result<()> {
    let s = cosign(c).await?;
    let tag = attachment_tag(&unknown_digest(), "sig");
    let r = c.reg.get_manifest(&s.repo, &tag).await?;
    r.expect_error("GET a missing .sig tag", &[404], "MANIFEST_UNKNOWN")
}

async fn cosign_tags_listed(c: &Ctx) -> Result<()> {
    let s = cosign(c).await?;
    let r = c.reg.get(&format!("v2/{}/tags/list", s.repo)).await?;
    r.expect("GET tags/list", &[200])?;
    let v = r.json()?;
    let tags: Vec<&str> = v["tags"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for t in ["signed", s.sig_tag.as_str()] {
        ensure!(tags.contains(&t), "tag {t} not listed in {tags:?}");
    }
    Ok(())
}

async fn cosign_att_sbom_tags(c: &Ctx) -> Result<()> {
    let s = cosign(c).await?;
    let subject = &s.image.manifest.digest;
    let envelope = json!({
        "payloadType": "application/vnd.in-toto+json",
        "payload": base64(br#"{"_type":"https://in-toto.io/Statement/v0.1"}"#),
        "signatures": [{"sig": base64(&random_bytes(64))}],
    });
    let att_layer = Blob::new(serde_json::to_vec(&envelope)?, DSSE);
    let sbom_layer = Blob::new(
        serde_json::to_vec(&json!({"spdxVersion": "SPDX-2.3", "name": random_hex(4)}))?,
        "text/spdx+json",
    );
    for (suffix, layer) in [("att", att_layer), ("sbom", sbom_layer)] {
        let config = Blob::new(
            serde_json::to_vec(
                &json!({"architecture": "", "os": "", "config": {}, "rootfs": {"type": "layers", "diff_ids": [layer.digest]}}),
            )?,
            OCI_CONFIG,
        );
        c.push_blob(&s.repo, &layer).await?;
        c.push_blob(&s.repo, &config).await?;
        let m = manifest_for(OCI_MANIFEST, &config, std::slice::from_ref(&layer), None);
        let tag = attachment_tag(subject, suffix);
        c.push_manifest(&s.repo, &tag, &m).await?;
        let g = c.reg.get_manifest(&s.repo, &tag).await?;
        g.expect(&format!("GET .{suffix} tag"), &[200])?;
        ensure!(
            g.body[..] == m.bytes[..],
            ".{suffix} manifest came back different"
        );
    }
    Ok(())
}

async fn referrers_fallback_tag(c: &Ctx) -> Result<()> {
    let repo = c.repo("fallback");
    let subject = oci_image(1, 64);
    c.push_image(&repo, "subject", &subject).await?;
    let tag = attachment_tag(&subject.manifest.digest, "");
    // A client first looks the tag up: it must be a clean 404.
    c.reg.get_manifest(&repo, &tag).await?.expect_error(
        "GET absent fallback tag",
        &[404],
        "MANIFEST_UNKNOWN",
    )?;
    let empty = Blob::new(b"{}".to_vec(), OCI_EMPTY);
    c.push_blob(&repo, &empty).await?;
    let mut referrers = Vec::new();
    let mut last_index = None;
    for n in 0..2 {
        let layer = Blob::random(50, SIGSTORE_BUNDLE);
        c.push_blob(&repo, &layer).await?;
        let subj = json!({"mediaType": OCI_MANIFEST, "digest": subject.manifest.digest, "size": subject.manifest.bytes.len()});
        let m = manifest_for(
            OCI_MANIFEST,
            &empty,
            &[layer],
            Some(json!({"artifactType": SIGSTORE_BUNDLE, "subject": subj})),
        );
        c.push_manifest(&repo, &m.digest, &m).await?;
        referrers.push(m);
        let children: Vec<(&Manifest, &str)> = referrers.iter().map(|m| (m, "none")).collect();
        let idx = index_for(OCI_INDEX, &children, None);
        c.push_manifest(&repo, &tag, &idx)
            .await
            .map_err(|e| anyhow!("fallback index #{n}: {e:#}"))?;
        last_index = Some(idx);
    }
    let idx = last_index.expect("two rounds");
    let g = c.reg.get_manifest(&repo, &tag).await?;
    g.expect("GET fallback tag", &[200])?;
    ensure!(
        g.body[..] == idx.bytes[..],
        "fallback tag does not hold the latest index"
    );
    ensure!(
        g.content_type() == Some(OCI_INDEX),
        "Content-Type is {:?}",
        g.content_type()
    );
    Ok(())
}

async fn sigstore_bundle_push(c: &Ctx) -> Result<()> {
    let repo = c.repo("bundle");
    let subject = oci_image(1, 64);
    c.push_image(&repo, "subject", &subject).await?;
    let empty = Blob::new(b"{}".to_vec(), OCI_EMPTY);
    let bundle = Blob::new(
        serde_json::to_vec(&json!({"mediaType": SIGSTORE_BUNDLE, "nonce": random_hex(8)}))?,
        SIGSTORE_BUNDLE,
    );
    c.push_blob(&repo, &empty).await?;
    c.push_blob(&repo, &bundle).await?;
    let m = manifest_for(
        OCI_MANIFEST,
        &empty,
        &[bundle],
        Some(json!({
            "artifactType": SIGSTORE_BUNDLE,
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject.manifest.digest, "size": subject.manifest.bytes.len()},
            "annotations": {"dev.sigstore.bundle.content": "message-signature", "dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1"},
        })),
    );
    c.push_manifest(&repo, &m.digest, &m).await?;
    let g = c.reg.get_manifest(&repo, &m.digest).await?;
    g.expect("GET bundle by digest", &[200])?;
    ensure!(
        g.body[..] == m.bytes[..],
        "bundle manifest came back different"
    );
    Ok(())
}

// ---- docker, podman, containerd, skopeo, oras ---------------------------------

fn docker_image() -> Image {
    image_with(DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER, 1, 300, None)
}

async fn docker_schema2_push_pull(c: &Ctx) -> Result<()> {
    let repo = c.repo("docker");
    let img = docker_image();
    c.push_image(&repo, "schema2", &img).await?;
    let r = c.reg.get_manifest(&repo, "schema2").await?;
    r.expect("GET docker manifest", &[200])?;
    ensure!(
        r.content_type() == Some(DOCKER_MANIFEST),
        "Content-Type is {:?}, want {DOCKER_MANIFEST}",
        r.content_type()
    );
    ensure!(
        r.body[..] == img.manifest.bytes[..],
        "docker manifest came back different"
    );
    Ok(())
}

async fn docker_manifest_list(c: &Ctx) -> Result<()> {
    let repo = c.repo("docker");
    let a = docker_image();
    let b = docker_image();
    c.push_image(&repo, &a.manifest.digest, &a).await?;
    c.push_image(&repo, &b.manifest.digest, &b).await?;
    let list = index_for(
        DOCKER_LIST,
        &[(&a.manifest, "amd64"), (&b.manifest, "arm64")],
        None,
    );
    c.push_manifest(&repo, "list", &list).await?;
    let r = c.reg.get_manifest(&repo, "list").await?;
    r.expect("GET manifest list", &[200])?;
    ensure!(
        r.content_type() == Some(DOCKER_LIST),
        "Content-Type is {:?}, want {DOCKER_LIST}",
        r.content_type()
    );
    ensure!(
        r.body[..] == list.bytes[..],
        "manifest list came back different"
    );
    Ok(())
}

async fn docker_push_flow(c: &Ctx) -> Result<()> {
    let base_repo = c.repo("docker-base");
    let repo = c.repo("docker-app");
    let base = docker_image();
    c.push_image(&base_repo, "base", &base).await?;
    // The app image shares the base layer and adds one of its own.
    let own = Blob::random(400, DOCKER_LAYER);
    let config = crate::fixtures::config_blob(DOCKER_CONFIG, ("amd64", "linux"));
    let layers = vec![base.layers[0].clone(), own.clone()];
    let m = manifest_for(DOCKER_MANIFEST, &config, &layers, None);

    let shared = &base.layers[0].digest;
    c.reg
        .head(&format!("v2/{repo}/blobs/{shared}"))
        .await?
        .expect("HEAD shared layer in the new repository", &[404])?;
    let mut url = c.reg.url(&format!("v2/{repo}/blobs/uploads/"));
    url.query_pairs_mut()
        .append_pair("mount", shared)
        .append_pair("from", &base_repo);
    let r = c
        .reg
        .send(
            c.reg
                .request_url(Method::POST, url)
                .header(CONTENT_LENGTH, "0"),
        )
        .await?;
    c.remember_blob(&repo, shared);
    r.expect("mount the shared layer", &[201])?;
    for b in [&own, &config] {
        c.reg
            .head(&format!("v2/{repo}/blobs/{}", b.digest))
            .await?
            .expect("HEAD a new blob", &[404])?;
        c.push_blob(&repo, b).await?;
        c.reg
            .head(&format!("v2/{repo}/blobs/{}", b.digest))
            .await?
            .expect("HEAD the pushed blob", &[200])?;
    }
    c.push_manifest(&repo, "latest", &m).await?;
    let g = c.reg.get_manifest(&repo, "latest").await?;
    g.expect("GET the pushed manifest", &[200])?;
    ensure!(g.body[..] == m.bytes[..], "manifest came back different");
    Ok(())
}

async fn podman_streamed_push(c: &Ctx) -> Result<()> {
    let repo = c.repo("podman");
    let layer = Blob::random(1024 * 1024 + 3, OCI_LAYER);
    let url = c.reg.start_upload(&repo).await?;
    let frames: Vec<std::io::Result<Bytes>> = layer
        .data
        .chunks(32 * 1024)
        .map(|f| Ok(Bytes::copy_from_slice(f)))
        .collect();
    let r = c
        .reg
        .send(
            c.reg
                .request_url(Method::PATCH, url)
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(reqwest::Body::wrap_stream(futures::stream::iter(frames))),
        )
        .await?;
    r.expect("streamed PATCH", &[202])?;
    let r = c
        .reg
        .send(
            c.reg
                .request_url(Method::PUT, with_digest(r.location()?, &layer.digest))
                .header(CONTENT_LENGTH, "0"),
        )
        .await?;
    c.remember_blob(&repo, &layer.digest);
    r.expect("closing PUT", &[201])?;
    let config = crate::fixtures::config_blob(OCI_CONFIG, ("amd64", "linux"));
    c.push_blob(&repo, &config).await?;
    let m = manifest_for(OCI_MANIFEST, &config, std::slice::from_ref(&layer), None);
    c.push_manifest(&repo, "streamed", &m).await?;
    let g = c
        .reg
        .get(&format!("v2/{repo}/blobs/{}", layer.digest))
        .await?;
    g.expect("GET the streamed layer", &[200])?;
    ensure!(
        sha256(&g.body) == layer.digest,
        "streamed layer came back with another digest"
    );
    Ok(())
}

async fn containerd_head_then_get(c: &Ctx) -> Result<()> {
    let repo = c.repo("containerd");
    let img = oci_image(1, 100);
    c.push_image(&repo, "v1", &img).await?;
    let h = c.reg.head_manifest(&repo, "v1").await?;
    h.expect("HEAD by tag", &[200])?;
    let digest = h
        .digest_header()
        .ok_or_else(|| {
            anyhow!("HEAD by tag has no Docker-Content-Digest: containerd cannot resolve")
        })?
        .to_owned();
    let g = c.reg.get_manifest(&repo, &digest).await?;
    g.expect("GET by the HEAD digest", &[200])?;
    ensure!(
        sha256(&g.body) == digest,
        "body does not hash to the digest HEAD gave"
    );
    Ok(())
}

async fn skopeo_copy_preserves_digest(c: &Ctx) -> Result<()> {
    let src = c.repo("copy-src");
    let dst = c.repo("copy-dst");
    let img = oci_image(2, 100);
    c.push_image(&src, "v1", &img).await?;
    let g = c.reg.get_manifest(&src, "v1").await?;
    g.expect("GET source manifest", &[200])?;
    for b in img.blobs() {
        let mut url = c.reg.url(&format!("v2/{dst}/blobs/uploads/"));
        url.query_pairs_mut()
            .append_pair("mount", &b.digest)
            .append_pair("from", &src);
        let r = c
            .reg
            .send(
                c.reg
                    .request_url(Method::POST, url)
                    .header(CONTENT_LENGTH, "0"),
            )
            .await?;
        c.remember_blob(&dst, &b.digest);
        if r.status != 201 {
            // No mount: copy the bytes like skopeo does.
            let loc = r.location()?;
            let p = c
                .reg
                .send(
                    c.reg
                        .request_url(Method::PUT, with_digest(loc, &b.digest))
                        .body(b.data.clone()),
                )
                .await?;
            p.expect("upload of a copied blob", &[201])?;
        }
    }
    let ct = g.content_type().unwrap_or(OCI_MANIFEST).to_owned();
    let r = c
        .reg
        .put_manifest_raw(&dst, "v1", &ct, g.body.to_vec())
        .await?;
    c.remember_manifest(&dst, &img.manifest.digest);
    r.expect("PUT the copied manifest", &[201])?;
    let h = c.reg.head_manifest(&dst, "v1").await?;
    h.expect("HEAD the copy", &[200])?;
    ensure!(
        h.digest_header() == Some(img.manifest.digest.as_str()),
        "copy has digest {:?}, source {}",
        h.digest_header(),
        img.manifest.digest
    );
    Ok(())
}

async fn oras_artifact_attach(c: &Ctx) -> Result<()> {
    let repo = c.repo("oras");
    let subject = oci_image(1, 64);
    c.push_image(&repo, "v1", &subject).await?;
    let empty = Blob::new(b"{}".to_vec(), OCI_EMPTY);
    let file = Blob::random(128, "application/vnd.example.conformance.readme");
    c.push_blob(&repo, &empty).await?;
    c.push_blob(&repo, &file).await?;
    let mut layer = file.descriptor();
    layer["annotations"] = json!({"org.opencontainers.image.title": "README.md"});
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.conformance.doc",
        "config": empty.descriptor(),
        "layers": [layer],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject.manifest.digest, "size": subject.manifest.bytes.len()},
        "annotations": {"org.opencontainers.image.created": "2026-11-27T00:00:00Z"},
    });
    let m = Manifest::from_json(&m);
    c.push_manifest(&repo, &m.digest, &m).await?;
    let g = c.reg.get_manifest(&repo, &m.digest).await?;
    g.expect("GET the artifact", &[200])?;
    ensure!(g.body[..] == m.bytes[..], "artifact came back different");
    let b = c
        .reg
        .get(&format!("v2/{repo}/blobs/{}", file.digest))
        .await?;
    b.expect("GET the artifact's file", &[200])?;
    Ok(())
}

// ---- signatures extension ------------------------------------------------------

fn require_signatures(c: &Ctx) -> Result<()> {
    if c.features.signatures_extension {
        Ok(())
    } else {
        Err(skip(
            "GET /v2/ does not advertise X-Registry-Supports-Signatures: 1",
        ))
    }
}

async fn fresh_image(c: &Ctx, purpose: &str) -> Result<(String, Image)> {
    let repo = c.repo(purpose);
    let img = oci_image(1, 64);
    c.push_image(&repo, "v1", &img).await?;
    Ok((repo, img))
}

fn signatures_path(repo: &str, digest: &str) -> String {
    format!("extensions/v2/{repo}/signatures/{digest}")
}

async fn put_signature(c: &Ctx, repo: &str, digest: &str) -> Result<(Resp, Value)> {
    let sig = json!({
        "schemaVersion": 2,
        "name": format!("{digest}@{}", random_hex(16)),
        "type": "atomic",
        "content": base64(&random_bytes(200)),
    });
    let r = c
        .reg
        .send(
            c.reg
                .request(Method::PUT, &signatures_path(repo, digest))
                .header(CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(&sig)?),
        )
        .await?;
    Ok((r, sig))
}

async fn signatures_ext_get_empty(c: &Ctx) -> Result<()> {
    require_signatures(c)?;
    let (repo, img) = fresh_image(c, "sigext-empty").await?;
    let r = c
        .reg
        .get(&signatures_path(&repo, &img.manifest.digest))
        .await?;
    r.expect("GET signatures of a fresh manifest", &[200])?;
    let v = r.json()?;
    ensure!(
        v == json!({"signatures": []}),
        "body is {v}, want {{\"signatures\":[]}}"
    );
    Ok(())
}

async fn signatures_ext_put(c: &Ctx) -> Result<()> {
    require_signatures(c)?;
    let (repo, img) = fresh_image(c, "sigext-put").await?;
    let (r, _) = put_signature(c, &repo, &img.manifest.digest).await?;
    r.expect("PUT an atomic signature", &[201])?;
    Ok(())
}

async fn signatures_ext_get_after_put(c: &Ctx) -> Result<()> {
    require_signatures(c)?;
    let (repo, img) = fresh_image(c, "sigext-get").await?;
    let (r, sig) = put_signature(c, &repo, &img.manifest.digest).await?;
    r.expect("PUT an atomic signature", &[201])?;
    let g = c
        .reg
        .get(&signatures_path(&repo, &img.manifest.digest))
        .await?;
    g.expect("GET signatures", &[200])?;
    let v = g.json()?;
    let list = v["signatures"]
        .as_array()
        .ok_or_else(|| anyhow!("body has no \"signatures\" array: {v}"))?;
    ensure!(
        list.iter().any(|s| s["name"] == sig["name"]
            && s["content"] == sig["content"]
            && s["type"] == json!("atomic")),
        "the signature that was PUT is not listed: {v}"
    );
    Ok(())
}

async fn cosign_sig_head(c: &Ctx) -> Result<()> {
    let s = cosign(c).await?;
    s.second_put
        .expect("PUT the appended .sig manifest", &[201])?;
    let h = c.reg.head_manifest(&s.repo, &s.sig_tag).await?;
    h.expect("HEAD .sig tag", &[200])?;
    ensure!(
        h.digest_header() == Some(s.second.digest.as_str()),
        "Docker-Content-Digest is {:?}, want the current {}",
        h.digest_header(),
        s.second.digest
    );
    Ok(())
}

/// Standard base64 with padding (RFC 4648 section 4).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), enc);
        }
    }

    #[test]
    fn attachment_tags() {
        assert_eq!(attachment_tag("sha256:abc", "sig"), "sha256-abc.sig");
        assert_eq!(attachment_tag("sha256:abc", ""), "sha256-abc");
    }
}
