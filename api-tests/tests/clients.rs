//! End-to-end tests with the real clients people use against Signet: skopeo, podman,
//! buildah, umoci, oras (Python) and the docker engine. Nothing is pulled from the
//! internet: test images are built locally (umoci, `buildah from scratch`,
//! `docker build` `FROM scratch`). Every test starts its own registry and keeps its
//! client state in its own temporary folder, so the tests run in parallel.
//!
//! How each client is driven here is described in the project's clients notes:
//! plain HTTP on loopback (`--tls-verify=false`, `--insecure-registry`), podman and
//! buildah on their own vfs store, dockerd with networking switched off.

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{json, Value};
use signet_api_tests::docker::DockerDaemon;
use signet_api_tests::oci::{self, OCI_INDEX, OCI_MANIFEST};
use signet_api_tests::{client, random_bytes, require_tool, run, sha256, skopeo, Registry};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Signet's log with the terminal colour codes removed.
fn plain_log(registry: &Registry) -> String {
    let log = registry.stderr();
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI sequence: ESC '[' params... final byte in '@'..='~'.
            for n in chars.by_ref() {
                if ('@'..='~').contains(&n) && n != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------
// Client command builders
// ---------------------------------------------------------------------------------

/// podman or buildah on a private vfs store under `dir`.
fn containers_tool(tool: &str, dir: &Path) -> Command {
    require_tool(tool);
    let conf = dir.join("registries.conf");
    if !conf.exists() {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&conf, "unqualified-search-registries = []\n").unwrap();
    }
    let mut cmd = Command::new(tool);
    cmd.env("CONTAINERS_REGISTRIES_CONF", &conf)
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .arg("--storage-driver")
        .arg("vfs");
    cmd
}

fn umoci() -> Command {
    require_tool("umoci");
    Command::new("umoci")
}

// ---------------------------------------------------------------------------------
// OCI image layouts
// ---------------------------------------------------------------------------------

/// Builds an image `layout:tag` with umoci: one layer per file, then the platform.
fn umoci_image(layout: &Path, tag: &str, arch: &str, files: &[(&str, &[u8])]) {
    if !layout.join("index.json").exists() {
        run(umoci().arg("init").arg("--layout").arg(layout));
    }
    let image = format!("{}:{tag}", layout.display());
    run(umoci().args(["new", "--image", &image]));
    let staging = tempfile::tempdir().unwrap();
    for (name, bytes) in files {
        let src = staging.path().join(name);
        std::fs::write(&src, bytes).unwrap();
        run(umoci()
            .args(["insert", "--image", &image])
            .arg(&src)
            .arg(format!("/{name}")));
    }
    run(umoci().args([
        "config",
        "--image",
        &image,
        "--os",
        "linux",
        "--architecture",
        arch,
        "--config.cmd",
        "/bin/true",
    ]));
}

fn layout_index(layout: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap()
}

/// The descriptor the layout's `index.json` names `tag`.
fn layout_ref(layout: &Path, tag: &str) -> Value {
    layout_index(layout)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("{} has no tag {tag}", layout.display()))
        .clone()
}

fn layout_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let bytes = std::fs::read(layout.join("blobs/sha256").join(hex))
        .unwrap_or_else(|e| panic!("blob {digest} in {}: {e}", layout.display()));
    assert_eq!(sha256(&bytes), digest, "blob bytes match their digest");
    bytes
}

/// Writes an OCI index over the given manifests (descriptors with platforms) into the
/// layout under `tag`; returns its digest.
fn add_index(layout: &Path, tag: &str, manifests: Vec<Value>) -> String {
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    }))
    .unwrap();
    let digest = sha256(&index);
    std::fs::write(
        layout
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap()),
        &index,
    )
    .unwrap();
    let mut top = layout_index(layout);
    top["manifests"].as_array_mut().unwrap().push(json!({
        "mediaType": OCI_INDEX,
        "digest": digest,
        "size": index.len(),
        "annotations": { "org.opencontainers.image.ref.name": tag },
    }));
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    digest
}

/// Builds two platform images (linux/amd64, linux/arm64) sharing a layer with umoci,
/// and an index over them tagged `multi`; returns the index digest and the two
/// manifest digests (amd64 first).
fn multi_platform_layout(src: &Path) -> (String, Vec<String>) {
    let shared = random_bytes(64 * 1024);
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        umoci_image(
            src,
            arch,
            arch,
            &[
                ("shared.bin", &shared),
                ("arch.txt", format!("{arch}\n").as_bytes()),
            ],
        );
        let d = layout_ref(src, arch);
        children.push(json!({
            "mediaType": OCI_MANIFEST,
            "digest": d["digest"],
            "size": d["size"],
            "platform": { "architecture": arch, "os": "linux" },
        }));
    }
    let child_digests: Vec<String> = children
        .iter()
        .map(|c| c["digest"].as_str().unwrap().to_string())
        .collect();
    assert_ne!(child_digests[0], child_digests[1]);
    (add_index(src, "multi", children), child_digests)
}

/// The config digest of the image manifest `digest` in a layout.
fn layout_config(layout: &Path, digest: &str) -> String {
    manifest_blobs(&layout_blob(layout, digest))[0].clone()
}

/// The blobs (config and layers) an image manifest references.
fn manifest_blobs(manifest: &[u8]) -> Vec<String> {
    let m: Value = serde_json::from_slice(manifest).unwrap();
    let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_string()];
    for layer in m["layers"].as_array().unwrap() {
        blobs.push(layer["digest"].as_str().unwrap().to_string());
    }
    blobs
}

// ---------------------------------------------------------------------------------
// The registry's side
// ---------------------------------------------------------------------------------

/// GETs a manifest accepting OCI and Docker types; returns (Docker-Content-Digest, bytes).
async fn registry_manifest(r: &Registry, repo: &str, reference: &str) -> (String, Vec<u8>) {
    let resp = client()
        .get(r.v2(&format!("{repo}/manifests/{reference}")))
        .header(
            "Accept",
            [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", "),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "GET manifest {repo}:{reference}"
    );
    let digest = resp
        .headers()
        .get("Docker-Content-Digest")
        .expect("Docker-Content-Digest")
        .to_str()
        .unwrap()
        .to_string();
    let body = resp.bytes().await.unwrap().to_vec();
    assert_eq!(
        sha256(&body),
        digest,
        "manifest bytes match Docker-Content-Digest"
    );
    (digest, body)
}

async fn registry_blob(r: &Registry, repo: &str, digest: &str) -> Vec<u8> {
    let (status, body) = oci::get(&client(), &r.v2(&format!("{repo}/blobs/{digest}"))).await;
    assert_eq!(status, StatusCode::OK, "GET blob {repo}@{digest}");
    assert_eq!(sha256(&body), digest, "blob {repo}@{digest} bytes");
    body.to_vec()
}

// ---------------------------------------------------------------------------------
// skopeo
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn skopeo_copies_a_single_platform_image_through_signet_unchanged() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let big = random_bytes(512 * 1024);
    umoci_image(
        &src,
        "v1",
        "amd64",
        &[("hello.txt", b"hello from umoci\n"), ("big.bin", &big)],
    );
    let source = layout_ref(&src, "v1");
    let source_digest = source["digest"].as_str().unwrap().to_string();
    let source_manifest = layout_blob(&src, &source_digest);

    let dest = format!("docker://{}/skopeo/single:v1", registry.host);
    run(skopeo(dir.path())
        .args(["copy", "--preserve-digests", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", src.display()))
        .arg(&dest));

    // The registry serves the very bytes skopeo read from the layout.
    let (digest, manifest) = registry_manifest(&registry, "skopeo/single", "v1").await;
    assert_eq!(digest, source_digest);
    assert_eq!(manifest, source_manifest);
    let blobs = manifest_blobs(&manifest);
    assert_eq!(blobs.len(), 3, "config and two layers");
    for blob in &blobs {
        assert_eq!(
            registry_blob(&registry, "skopeo/single", blob).await,
            layout_blob(&src, blob)
        );
    }
    let inspect: Value = serde_json::from_str(&run(skopeo(dir.path())
        .args(["inspect", "--tls-verify=false"])
        .arg(&dest)))
    .unwrap();
    assert_eq!(inspect["Digest"], source_digest.as_str());
    assert_eq!(inspect["Architecture"], "amd64");

    // And back into a fresh layout: same manifest digest, same blobs.
    let out = dir.path().join("out");
    run(skopeo(dir.path())
        .args(["copy", "--preserve-digests", "--src-tls-verify=false"])
        .arg(&dest)
        .arg(format!("oci:{}:back", out.display())));
    let back = layout_ref(&out, "back");
    assert_eq!(back["digest"], source_digest.as_str());
    assert_eq!(layout_blob(&out, &source_digest), source_manifest);
    for blob in &blobs {
        assert_eq!(layout_blob(&out, blob), layout_blob(&src, blob));
    }
}

#[tokio::test]
async fn skopeo_copies_a_multi_platform_index_through_signet_unchanged() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let (index_digest, child_digests) = multi_platform_layout(&src);
    let index_bytes = layout_blob(&src, &index_digest);

    let dest = format!("docker://{}/skopeo/multi:v1", registry.host);
    run(skopeo(dir.path())
        .args([
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci:{}:multi", src.display()))
        .arg(&dest));

    // The index and both platform manifests are stored byte for byte.
    let (digest, body) = registry_manifest(&registry, "skopeo/multi", "v1").await;
    assert_eq!(digest, index_digest, "index digest");
    assert_eq!(body, index_bytes);
    for child in &child_digests {
        let (digest, body) = registry_manifest(&registry, "skopeo/multi", child).await;
        assert_eq!(&digest, child);
        assert_eq!(body, layout_blob(&src, child));
        for blob in manifest_blobs(&body) {
            assert_eq!(
                registry_blob(&registry, "skopeo/multi", &blob).await,
                layout_blob(&src, &blob)
            );
        }
    }
    let raw = run(skopeo(dir.path())
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(&dest));
    assert_eq!(sha256(raw.as_bytes()), index_digest);

    // Back into a fresh layout with --all: the same index and manifests.
    let out = dir.path().join("out");
    run(skopeo(dir.path())
        .args([
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
        ])
        .arg(&dest)
        .arg(format!("oci:{}:back", out.display())));
    let back = layout_ref(&out, "back");
    assert_eq!(back["digest"], index_digest.as_str());
    assert_eq!(back["mediaType"], OCI_INDEX);
    assert_eq!(layout_blob(&out, &index_digest), index_bytes);
    for child in &child_digests {
        let manifest = layout_blob(&out, child);
        assert_eq!(manifest, layout_blob(&src, child));
        for blob in manifest_blobs(&manifest) {
            assert_eq!(layout_blob(&out, &blob), layout_blob(&src, &blob));
        }
    }

    // A single platform copied without --all resolves through Signet's index.
    let arm = dir.path().join("arm");
    run(skopeo(dir.path())
        .args([
            "--override-arch",
            "arm64",
            "--override-os",
            "linux",
            "copy",
            "--src-tls-verify=false",
        ])
        .arg(&dest)
        .arg(format!("oci:{}:arm", arm.display())));
    assert_eq!(layout_ref(&arm, "arm")["digest"], child_digests[1].as_str());
}

#[tokio::test]
async fn skopeo_copies_between_repositories_deletes_and_survives_a_restart() {
    let mut registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    umoci_image(
        &src,
        "v1",
        "amd64",
        &[("data.bin", &random_bytes(128 * 1024))],
    );
    let source_digest = layout_ref(&src, "v1")["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let first = format!("docker://{}/skopeo/first:v1", registry.host);
    let second = format!("docker://{}/skopeo/second:v1", registry.host);
    run(skopeo(dir.path())
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", src.display()))
        .arg(&first));
    // Registry to registry: skopeo mounts the blobs it knows to be in the first
    // repository.
    run(skopeo(dir.path())
        .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .arg(&first)
        .arg(&second));
    let (digest, manifest) = registry_manifest(&registry, "skopeo/second", "v1").await;
    assert_eq!(digest, source_digest);
    for blob in manifest_blobs(&manifest) {
        assert_eq!(
            registry_blob(&registry, "skopeo/second", &blob).await,
            layout_blob(&src, &blob)
        );
    }
    let log = plain_log(&registry);
    assert!(
        log.lines().any(|l| l.contains("blob mounted")
            && l.contains("repository=skopeo/second")
            && l.contains("from=\"skopeo/first\"")),
        "skopeo mounted blobs from skopeo/first:\n{log}"
    );

    // Everything is still there after a crash.
    registry.crash_and_restart();
    let first = format!("docker://{}/skopeo/first:v1", registry.host);
    let second = format!("docker://{}/skopeo/second@{source_digest}", registry.host);
    let out = dir.path().join("out");
    run(skopeo(dir.path())
        .args(["copy", "--src-tls-verify=false"])
        .arg(&second)
        .arg(format!("oci:{}:v1", out.display())));
    assert_eq!(layout_ref(&out, "v1")["digest"], source_digest.as_str());

    // skopeo delete removes the manifest from one repository only.
    run(skopeo(dir.path())
        .args(["delete", "--tls-verify=false"])
        .arg(&second));
    let (status, body) = oci::get(
        &client(),
        &registry.v2(&format!("skopeo/second/manifests/{source_digest}")),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(oci::error_code(&body), "MANIFEST_UNKNOWN");
    let inspect = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{}/skopeo/second:v1", registry.host))
        .output()
        .unwrap();
    assert!(!inspect.status.success(), "the deleted image is gone");
    let (digest, _) = registry_manifest(&registry, "skopeo/first", "v1").await;
    assert_eq!(digest, source_digest);
    run(skopeo(dir.path())
        .args(["inspect", "--tls-verify=false"])
        .arg(&first));
}

#[tokio::test]
async fn concurrent_skopeo_copies_of_one_image_into_one_repository_all_succeed() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let data = random_bytes(2 * 1024 * 1024);
    umoci_image(
        &src,
        "v1",
        "amd64",
        &[("data.bin", &data), ("b.txt", b"b\n")],
    );
    let source_digest = layout_ref(&src, "v1")["digest"]
        .as_str()
        .unwrap()
        .to_string();
    // Four clients upload the same blobs at the same time, each under its own tag.
    let copies: Vec<_> = (0..4)
        .map(|i| {
            let mut cmd = skopeo(dir.path());
            cmd.args(["copy", "--dest-tls-verify=false"])
                .arg(format!("oci:{}:v1", src.display()))
                .arg(format!("docker://{}/race/img:t{i}", registry.host));
            std::thread::spawn(move || run(&mut cmd))
        })
        .collect();
    for copy in copies {
        copy.join().expect("skopeo copy");
    }
    for i in 0..4 {
        let (digest, manifest) = registry_manifest(&registry, "race/img", &format!("t{i}")).await;
        assert_eq!(digest, source_digest);
        for blob in manifest_blobs(&manifest) {
            assert_eq!(
                registry_blob(&registry, "race/img", &blob).await,
                layout_blob(&src, &blob)
            );
        }
    }
    let (status, body) = oci::get(&client(), &registry.v2("race/img/tags/list")).await;
    assert_eq!(status, StatusCode::OK);
    let tags: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(tags["tags"], json!(["t0", "t1", "t2", "t3"]));
}

// ---------------------------------------------------------------------------------
// podman and buildah
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn podman_pushes_and_pulls_back_the_same_image() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    // Big enough that podman streams it in a chunked PATCH.
    let big = random_bytes(3 * 1024 * 1024);
    umoci_image(
        &layout,
        "v1",
        "amd64",
        &[("big.bin", &big), ("hello.txt", b"hello from podman\n")],
    );
    let source_config = {
        let d = layout_ref(&layout, "v1");
        let m: Value =
            serde_json::from_slice(&layout_blob(&layout, d["digest"].as_str().unwrap())).unwrap();
        m["config"]["digest"].as_str().unwrap().to_string()
    };

    let pusher = dir.path().join("pusher");
    let podman = |store: &Path| containers_tool("podman", store);
    run(
        // A relative path: podman names the image after it, and the temporary
        // folder's name may hold capitals, which image names must not.
        podman(&pusher)
            .current_dir(dir.path())
            .args(["pull", "oci:layout:v1"]),
    );
    let image = format!("{}/podman/img:v1", registry.host);
    let id = run(podman(&pusher).args(["images", "-q", "--no-trunc"]));
    let id = id.trim();
    assert_eq!(id, source_config, "podman's image id is the config digest");
    run(podman(&pusher).args(["tag", id, &image]));
    let digest_file = dir.path().join("pushed.digest");
    run(podman(&pusher)
        .args(["push", "--tls-verify=false", "--digestfile"])
        .arg(&digest_file)
        .arg(&image));
    let pushed = std::fs::read_to_string(&digest_file).unwrap();
    let pushed = pushed.trim();

    let (digest, manifest) = registry_manifest(&registry, "podman/img", "v1").await;
    assert_eq!(digest, pushed, "the registry serves what podman pushed");
    let blobs = manifest_blobs(&manifest);
    assert_eq!(blobs.len(), 3);
    assert_eq!(blobs[0], source_config);
    for blob in &blobs {
        registry_blob(&registry, "podman/img", blob).await;
    }
    // podman uploaded (not mounted) the layers, with PATCH.
    let log = plain_log(&registry);
    assert!(
        log.lines()
            .any(|l| l.contains("method=PATCH") && l.contains("status=202")),
        "podman uploaded with PATCH:\n{log}"
    );

    // A fresh store pulls the same digest and the same image.
    let puller = dir.path().join("puller");
    run(podman(&puller).args(["pull", "--tls-verify=false", &image]));
    let inspect = run(podman(&puller).args([
        "image",
        "inspect",
        "--format",
        "{{.Id}} {{.Digest}}",
        &image,
    ]));
    assert_eq!(
        inspect.trim(),
        format!("{} {pushed}", source_config.trim_start_matches("sha256:"))
    );

    // zstd-compressed layers go through as well. (A second registry: podman would
    // reuse the gzip layers it knows to be in the first one.)
    let zstd_registry = Registry::start();
    let zstd_image = format!("{}/podman/img:zstd", zstd_registry.host);
    let digest_file = dir.path().join("zstd.digest");
    run(podman(&pusher)
        .args([
            "push",
            "--tls-verify=false",
            "--compression-format",
            "zstd",
            "--digestfile",
        ])
        .arg(&digest_file)
        .arg(&image)
        .arg(format!("docker://{zstd_image}")));
    let zstd_pushed = std::fs::read_to_string(&digest_file).unwrap();
    let (digest, manifest) = registry_manifest(&zstd_registry, "podman/img", "zstd").await;
    assert_eq!(digest, zstd_pushed.trim());
    let m: Value = serde_json::from_slice(&manifest).unwrap();
    for layer in m["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
        registry_blob(
            &zstd_registry,
            "podman/img",
            layer["digest"].as_str().unwrap(),
        )
        .await;
    }
    let zstd_puller = dir.path().join("zstd-puller");
    run(podman(&zstd_puller).args(["pull", "--tls-verify=false", &zstd_image]));
    let id =
        run(podman(&zstd_puller).args(["image", "inspect", "--format", "{{.Id}}", &zstd_image]));
    assert_eq!(format!("sha256:{}", id.trim()), source_config);

    // The pulled image's file system holds the bytes we put in.
    let saved = dir.path().join("saved");
    run(podman(&puller)
        .args(["push", "--tls-verify=false", &image])
        .arg(format!("oci:{}:v1", saved.display())));
    let bundle = dir.path().join("bundle");
    run(umoci()
        .args(["unpack", "--image"])
        .arg(format!("{}:v1", saved.display()))
        .arg(&bundle));
    assert_eq!(std::fs::read(bundle.join("rootfs/big.bin")).unwrap(), big);
    assert_eq!(
        std::fs::read(bundle.join("rootfs/hello.txt")).unwrap(),
        b"hello from podman\n"
    );
}

#[tokio::test]
async fn buildah_builds_from_scratch_and_pushes() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let buildah = || containers_tool("buildah", &store);
    let content = random_bytes(200 * 1024);
    let file = dir.path().join("payload.bin");
    std::fs::write(&file, &content).unwrap();

    let container = run(buildah().args(["from", "scratch"]));
    let container = container.trim();
    run(buildah()
        .args(["copy", container])
        .arg(&file)
        .arg("/payload.bin"));
    run(buildah().args([
        "config",
        "--arch",
        "arm64",
        "--os",
        "linux",
        "--cmd",
        "/payload.bin",
        container,
    ]));
    run(buildah().args(["commit", container, "localhost/scratch-img:latest"]));
    let digest_file = dir.path().join("pushed.digest");
    let dest = format!("docker://{}/buildah/img:v1", registry.host);
    run(buildah()
        .args(["push", "--tls-verify=false", "--digestfile"])
        .arg(&digest_file)
        .arg("localhost/scratch-img:latest")
        .arg(&dest));
    let pushed = std::fs::read_to_string(&digest_file).unwrap();

    let (digest, manifest) = registry_manifest(&registry, "buildah/img", "v1").await;
    assert_eq!(digest, pushed.trim());
    let blobs = manifest_blobs(&manifest);
    let config: Value =
        serde_json::from_slice(&registry_blob(&registry, "buildah/img", &blobs[0]).await).unwrap();
    assert_eq!(config["architecture"], "arm64");
    assert_eq!(config["os"], "linux");
    for blob in &blobs[1..] {
        registry_blob(&registry, "buildah/img", blob).await;
    }

    // Pull it back with another client and unpack it: the file is intact.
    let out = dir.path().join("out");
    run(skopeo(dir.path())
        .args(["copy", "--src-tls-verify=false"])
        .arg(&dest)
        .arg(format!("oci:{}:v1", out.display())));
    assert_eq!(layout_ref(&out, "v1")["digest"], pushed.trim());
    let bundle = dir.path().join("bundle");
    run(umoci()
        .args(["unpack", "--image"])
        .arg(format!("{}:v1", out.display()))
        .arg(&bundle));
    assert_eq!(
        std::fs::read(bundle.join("rootfs/payload.bin")).unwrap(),
        content
    );
}

#[tokio::test]
async fn podman_pushes_a_manifest_list_with_every_platform() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let shared = random_bytes(256 * 1024);
    umoci_image(
        &layout,
        "amd",
        "amd64",
        &[("shared.bin", &shared), ("arch.txt", b"amd64\n")],
    );
    umoci_image(
        &layout,
        "arm",
        "arm64",
        &[("shared.bin", &shared), ("arch.txt", b"arm64\n")],
    );
    let config_of = |tag: &str| {
        let d = layout_ref(&layout, tag);
        let m: Value =
            serde_json::from_slice(&layout_blob(&layout, d["digest"].as_str().unwrap())).unwrap();
        m["config"]["digest"].as_str().unwrap().to_string()
    };
    let (amd_config, arm_config) = (config_of("amd"), config_of("arm"));

    let store = dir.path().join("store");
    let podman = |store: &Path| containers_tool("podman", store);
    for tag in ["amd", "arm"] {
        run(podman(&store)
            .current_dir(dir.path())
            .args(["pull", &format!("oci:layout:{tag}")]));
        let id = config_of(tag);
        run(podman(&store).args(["tag", &id, &format!("localhost/{tag}:v1")]));
    }
    run(podman(&store).args(["manifest", "create", "localhost/multi:v1"]));
    for tag in ["amd", "arm"] {
        run(podman(&store).args([
            "manifest",
            "add",
            "localhost/multi:v1",
            &format!("containers-storage:localhost/{tag}:v1"),
        ]));
    }
    let digest_file = dir.path().join("list.digest");
    let dest = format!("{}/podman/multi:v1", registry.host);
    run(podman(&store)
        .args([
            "manifest",
            "push",
            "--all",
            "--tls-verify=false",
            "--digestfile",
        ])
        .arg(&digest_file)
        .arg("localhost/multi:v1")
        .arg(format!("docker://{dest}")));
    let pushed = std::fs::read_to_string(&digest_file).unwrap();

    // The registry serves the list podman pushed, and every platform in it.
    let (digest, list) = registry_manifest(&registry, "podman/multi", "v1").await;
    assert_eq!(digest, pushed.trim());
    let list: Value = serde_json::from_slice(&list).unwrap();
    let children = list["manifests"].as_array().unwrap();
    assert_eq!(children.len(), 2, "{list}");
    let mut configs = Vec::new();
    for child in children {
        let child_digest = child["digest"].as_str().unwrap();
        let (d, body) = registry_manifest(&registry, "podman/multi", child_digest).await;
        assert_eq!(d, child_digest);
        let blobs = manifest_blobs(&body);
        for blob in &blobs {
            registry_blob(&registry, "podman/multi", blob).await;
        }
        configs.push((
            child["platform"]["architecture"]
                .as_str()
                .unwrap()
                .to_string(),
            blobs[0].clone(),
        ));
    }
    configs.sort();
    assert_eq!(
        configs,
        vec![
            ("amd64".to_string(), amd_config.clone()),
            ("arm64".to_string(), arm_config.clone())
        ]
    );

    // A fresh store pulls the arm64 image through the list.
    let puller = dir.path().join("puller");
    run(podman(&puller).args([
        "pull",
        "--tls-verify=false",
        "--platform",
        "linux/arm64",
        &dest,
    ]));
    let id = run(podman(&puller).args(["image", "inspect", "--format", "{{.Id}}", &dest]));
    assert_eq!(format!("sha256:{}", id.trim()), arm_config);
}

#[tokio::test]
async fn buildah_pushes_docker_schema2_and_podman_pulls_it() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let buildah = || containers_tool("buildah", &store);
    let content = random_bytes(100 * 1024);
    let file = dir.path().join("payload.bin");
    std::fs::write(&file, &content).unwrap();
    let container = run(buildah().args(["from", "scratch"]));
    let container = container.trim();
    run(buildah()
        .args(["copy", container])
        .arg(&file)
        .arg("/payload.bin"));
    run(buildah().args(["commit", "--format", "docker", container, "localhost/d:v1"]));
    let digest_file = dir.path().join("pushed.digest");
    let image = format!("{}/buildah/docker:v1", registry.host);
    run(buildah()
        .args([
            "push",
            "--format",
            "v2s2",
            "--tls-verify=false",
            "--digestfile",
        ])
        .arg(&digest_file)
        .arg("localhost/d:v1")
        .arg(format!("docker://{image}")));
    let pushed = std::fs::read_to_string(&digest_file).unwrap();

    // Stored and served as a Docker schema 2 manifest, under its own media type.
    let resp = client()
        .get(registry.v2("buildah/docker/manifests/v1"))
        .header(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()
            .get("Content-Type")
            .unwrap()
            .to_str()
            .unwrap(),
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let body = resp.bytes().await.unwrap();
    assert_eq!(sha256(&body), pushed.trim());
    let m: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        m["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );

    // podman pulls it into a fresh store with the same digest.
    let puller = dir.path().join("puller");
    run(containers_tool("podman", &puller).args(["pull", "--tls-verify=false", &image]));
    let digest = run(containers_tool("podman", &puller).args([
        "image",
        "inspect",
        "--format",
        "{{.Digest}}",
        &image,
    ]));
    assert_eq!(digest.trim(), pushed.trim());
}

// ---------------------------------------------------------------------------------
// oras (Python)
// ---------------------------------------------------------------------------------

const ORAS_SCRIPT: &str = r#"
import json, sys
import oras.client, oras.oci

host, repo, subject_digest, subject_size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
c = oras.client.OrasClient(hostname=host, insecure=True)
subject = oras.oci.Subject(
    mediaType="application/vnd.oci.image.manifest.v1+json",
    digest=subject_digest,
    size=subject_size,
)
out = {}
for name, files, config in [
    ("sbom", ["sbom.spdx.json:application/spdx+json"], "config.json:application/vnd.example.sbom.v1"),
    ("sig", ["sig.txt:text/plain"], "config.json:application/vnd.example.sig.v1"),
]:
    r = c.push(target=f"{host}/{repo}:{name}", files=files, manifest_config=config,
               subject=subject, quiet=True)
    assert r.status_code == 201, (r.status_code, r.text)
    out[name] = {"digest": r.headers.get("Docker-Content-Digest"),
                 "subject": r.headers.get("OCI-Subject")}
pulled = c.pull(target=f"{host}/{repo}:sbom", outdir="pulled")
out["pulled"] = [str(p) for p in pulled]
# A chunked upload: POST, several PATCHes with Content-Range, PUT ?digest=.
r = c.push(target=f"{host}/{repo}:chunked", files=["big.bin:application/octet-stream"],
           do_chunked=True, chunk_size=64 * 1024, quiet=True)
assert r.status_code == 201, (r.status_code, r.text)
out["chunked"] = {"digest": r.headers.get("Docker-Content-Digest")}
c.pull(target=f"{host}/{repo}:chunked", outdir="pulled-chunked")
print(json.dumps(out))
"#;

#[tokio::test]
async fn oras_artifacts_with_a_subject_are_listed_by_the_referrers_api() {
    signet_api_tests::require_python_module("oras.client");
    let registry = Registry::start();
    let c = client();
    let repo = "oras/app";
    let subject = oci::push_image(&c, &registry, repo, "v1", &[b"the subject layer"]).await;
    let subject_digest = sha256(&subject);

    let dir = tempfile::tempdir().unwrap();
    let sbom = br#"{"spdxVersion":"SPDX-2.3","name":"app"}"#;
    std::fs::write(dir.path().join("sbom.spdx.json"), sbom).unwrap();
    std::fs::write(dir.path().join("sig.txt"), b"not really a signature\n").unwrap();
    std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
    let big = random_bytes(300 * 1024 + 17);
    std::fs::write(dir.path().join("big.bin"), &big).unwrap();
    std::fs::write(dir.path().join("push.py"), ORAS_SCRIPT).unwrap();
    let out = run(Command::new("python3")
        .current_dir(dir.path())
        .arg("push.py")
        .arg(&registry.host)
        .arg(repo)
        .arg(&subject_digest)
        .arg(subject.len().to_string()));
    let out: Value = serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("oras script output {out:?}: {e}"));
    let sbom_digest = out["sbom"]["digest"]
        .as_str()
        .expect("sbom digest")
        .to_string();
    let sig_digest = out["sig"]["digest"]
        .as_str()
        .expect("sig digest")
        .to_string();
    assert_ne!(sbom_digest, sig_digest);
    // OCI 1.1: a registry that processed the subject says so.
    assert_eq!(out["sbom"]["subject"], subject_digest.as_str());
    assert_eq!(out["sig"]["subject"], subject_digest.as_str());
    // oras pulled its own artifact back intact.
    assert_eq!(
        std::fs::read(dir.path().join("pulled/sbom.spdx.json")).unwrap(),
        sbom
    );

    // The chunked upload arrived whole (five PATCHes of 64 KiB and a short one).
    let patches = plain_log(&registry)
        .lines()
        .filter(|l| l.contains("method=PATCH") && l.contains("status=202"))
        .count();
    assert_eq!(patches, 5, "oras sent its chunks with PATCH");
    assert_eq!(
        std::fs::read(dir.path().join("pulled-chunked/big.bin")).unwrap(),
        big
    );
    assert_eq!(
        registry_blob(&registry, repo, &sha256(&big)).await,
        big.to_vec()
    );
    let chunked = out["chunked"]["digest"].as_str().expect("chunked digest");
    let (digest, _) = registry_manifest(&registry, repo, "chunked").await;
    assert_eq!(digest, chunked);

    // The artifacts are stored as oras wrote them, subject included.
    for (digest, artifact_type) in [
        (&sbom_digest, "application/vnd.example.sbom.v1"),
        (&sig_digest, "application/vnd.example.sig.v1"),
    ] {
        let (d, body) = registry_manifest(&registry, repo, digest).await;
        assert_eq!(&d, digest);
        let m: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(m["subject"]["digest"], subject_digest.as_str());
        assert_eq!(m["config"]["mediaType"], artifact_type);
    }

    // Unfiltered: both referrers, with the artifact type taken from the config.
    let url = registry.v2(&format!("{repo}/referrers/{subject_digest}"));
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("OCI-Filters-Applied").is_none());
    assert_eq!(
        resp.headers()
            .get("Content-Type")
            .unwrap()
            .to_str()
            .unwrap(),
        OCI_INDEX
    );
    let index: Value = resp.json().await.unwrap();
    assert_eq!(index["mediaType"], OCI_INDEX);
    let mut listed: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["mediaType"], OCI_MANIFEST);
            (
                d["digest"].as_str().unwrap().to_string(),
                d["artifactType"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    listed.sort();
    let mut expected = vec![
        (
            sbom_digest.clone(),
            "application/vnd.example.sbom.v1".to_string(),
        ),
        (
            sig_digest.clone(),
            "application/vnd.example.sig.v1".to_string(),
        ),
    ];
    expected.sort();
    assert_eq!(listed, expected);

    // Filtered by artifactType: only the signature, and the header says it filtered.
    let resp = c
        .get(format!("{url}?artifactType=application/vnd.example.sig.v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()
            .get("OCI-Filters-Applied")
            .map(|v| v.to_str().unwrap().to_string()),
        Some("artifactType".to_string())
    );
    let index: Value = resp.json().await.unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    assert_eq!(manifests[0]["digest"], sig_digest.as_str());

    // The artifacts are not referrers of anything else.
    let (status, body) =
        oci::get(&c, &registry.v2(&format!("{repo}/referrers/{sbom_digest}"))).await;
    assert_eq!(status, StatusCode::OK);
    let index: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(index["manifests"], json!([]));
}

// ---------------------------------------------------------------------------------
// docker engine
// ---------------------------------------------------------------------------------

/// The digest in docker push's last line: `v1: digest: sha256:... size: N`.
fn pushed_digest(output: &str) -> String {
    output
        .lines()
        .find_map(|l| l.split("digest: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in docker push output:\n{output}"))
        .to_string()
}

#[tokio::test]
async fn docker_pushes_with_a_cross_repository_mount_and_pulls_back() {
    let registry = Registry::start();
    let daemon = DockerDaemon::start(Some(&registry.host));
    let ctx = tempfile::tempdir().unwrap();
    let base_ctx = ctx.path().join("base");
    let app_ctx = ctx.path().join("app");
    std::fs::create_dir_all(&base_ctx).unwrap();
    std::fs::create_dir_all(&app_ctx).unwrap();
    std::fs::write(base_ctx.join("base.bin"), random_bytes(1024 * 1024)).unwrap();
    std::fs::write(
        base_ctx.join("Dockerfile"),
        "FROM scratch\nCOPY base.bin /base.bin\n",
    )
    .unwrap();
    let base = format!("{}/docker/base:v1", registry.host);
    let app = format!("{}/docker/app:v1", registry.host);
    std::fs::write(app_ctx.join("app.txt"), b"the app layer\n").unwrap();
    std::fs::write(
        app_ctx.join("Dockerfile"),
        format!("FROM {base}\nCOPY app.txt /app.txt\n"),
    )
    .unwrap();

    run(daemon
        .docker()
        .args(["build", "--network", "none", "-t", &base])
        .arg(&base_ctx));
    run(daemon
        .docker()
        .args(["build", "--network", "none", "-t", &app])
        .arg(&app_ctx));
    let app_id = run(daemon
        .docker()
        .args(["image", "inspect", "--format", "{{.Id}}", &app]));
    let app_id = app_id.trim().to_string();

    let base_push = run(daemon.docker().args(["push", &base]));
    let app_push = run(daemon.docker().args(["push", &app]));
    let base_digest = pushed_digest(&base_push);
    let app_digest = pushed_digest(&app_push);
    assert!(
        app_push.contains("Mounted from docker/base"),
        "docker mounted the shared layer:\n{app_push}"
    );

    // The registry's side: both manifests as docker reported them, the base layer
    // served from the app repository, and the mount in Signet's log.
    let (digest, base_manifest) = registry_manifest(&registry, "docker/base", "v1").await;
    assert_eq!(digest, base_digest);
    let (digest, app_manifest) = registry_manifest(&registry, "docker/app", "v1").await;
    assert_eq!(digest, app_digest);
    let base_layers = manifest_blobs(&base_manifest)[1..].to_vec();
    let app_blobs = manifest_blobs(&app_manifest);
    assert_eq!(base_layers.len(), 1);
    let shared = &base_layers[0];
    assert_eq!(
        &app_blobs[1], shared,
        "the app image starts with the base layer"
    );
    assert_eq!(app_blobs.len(), 3);
    assert_eq!(
        registry_blob(&registry, "docker/app", shared).await,
        registry_blob(&registry, "docker/base", shared).await
    );
    for blob in &app_blobs {
        registry_blob(&registry, "docker/app", blob).await;
    }
    let log = plain_log(&registry);
    assert!(
        log.lines().any(|l| l.contains("blob mounted")
            && l.contains("repository=docker/app")
            && l.contains(shared.as_str())
            && l.contains("from=\"docker/base\"")),
        "Signet logged the mount of {shared} into docker/app:\n{log}"
    );

    // Pushing again uploads nothing and yields the same digest.
    let again = run(daemon.docker().args(["push", &app]));
    assert_eq!(pushed_digest(&again), app_digest);
    assert!(
        again.contains("Layer already exists"),
        "docker found the layers in Signet:\n{again}"
    );

    // Forget the images locally, then pull the app back.
    run(daemon.docker().args(["rmi", &app, &base]));
    let left = run(daemon.docker().args(["images", "-q"]));
    assert_eq!(left.trim(), "", "no local images left");
    run(daemon.docker().args(["pull", &app]));
    let inspect = run(daemon.docker().args([
        "image",
        "inspect",
        "--format",
        "{{.Id}} {{index .RepoDigests 0}}",
        &app,
    ]));
    assert_eq!(
        inspect.trim(),
        format!("{app_id} {}/docker/app@{app_digest}", registry.host)
    );
    // And the base by digest.
    let by_digest = format!("{}/docker/base@{base_digest}", registry.host);
    run(daemon.docker().args(["pull", &by_digest]));
    let id = run(daemon
        .docker()
        .args(["image", "inspect", "--format", "{{.Id}}", &by_digest]));
    assert_eq!(id.trim(), manifest_blobs(&base_manifest)[0]);
}

#[tokio::test]
async fn docker_pulls_its_platform_from_an_oci_index_pushed_by_skopeo() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let (index_digest, children) = multi_platform_layout(&src);
    let image = format!("{}/docker/multi:v1", registry.host);
    run(skopeo(dir.path())
        .args([
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci:{}:multi", src.display()))
        .arg(format!("docker://{image}")));
    let (digest, _) = registry_manifest(&registry, "docker/multi", "v1").await;
    assert_eq!(digest, index_digest);

    let daemon = DockerDaemon::start(Some(&registry.host));
    run(daemon.docker().args(["pull", &image]));
    let host_child = match std::env::consts::ARCH {
        "x86_64" => &children[0],
        "aarch64" => &children[1],
        other => panic!("no test image for {other}"),
    };
    let inspect = run(daemon.docker().args([
        "image",
        "inspect",
        "--format",
        "{{.Id}} {{index .RepoDigests 0}}",
        &image,
    ]));
    // docker picked the host's platform and remembers the index digest it pulled.
    assert_eq!(
        inspect.trim(),
        format!(
            "{} {}/docker/multi@{index_digest}",
            layout_config(&src, host_child),
            registry.host
        )
    );
    // The other platform on request.
    let other = if host_child == &children[0] {
        ("linux/arm64", &children[1])
    } else {
        ("linux/amd64", &children[0])
    };
    run(daemon
        .docker()
        .args(["pull", "--platform", other.0, &image]));
    let id = run(daemon
        .docker()
        .args(["image", "inspect", "--format", "{{.Id}}", &image]));
    assert_eq!(id.trim(), layout_config(&src, other.1));

    // The same images as a Docker manifest list (skopeo converts them on the way).
    let list_image = format!("{}/docker/list:v1", registry.host);
    run(skopeo(dir.path())
        .args([
            "copy",
            "--all",
            "--format",
            "v2s2",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci:{}:multi", src.display()))
        .arg(format!("docker://{list_image}")));
    let (list_digest, list) = registry_manifest(&registry, "docker/list", "v1").await;
    let list: Value = serde_json::from_slice(&list).unwrap();
    assert_eq!(list["mediaType"], DOCKER_LIST);
    let host_arch = if host_child == &children[0] {
        "amd64"
    } else {
        "arm64"
    };
    let entry = list["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == host_arch)
        .unwrap_or_else(|| panic!("no {host_arch} in {list}"));
    assert_eq!(entry["mediaType"], DOCKER_MANIFEST);
    let (_, host_manifest) =
        registry_manifest(&registry, "docker/list", entry["digest"].as_str().unwrap()).await;
    run(daemon.docker().args(["pull", &list_image]));
    let inspect = run(daemon.docker().args([
        "image",
        "inspect",
        "--format",
        "{{.Id}} {{index .RepoDigests 0}}",
        &list_image,
    ]));
    assert_eq!(
        inspect.trim(),
        format!(
            "{} {}/docker/list@{list_digest}",
            manifest_blobs(&host_manifest)[0],
            registry.host
        )
    );
}
