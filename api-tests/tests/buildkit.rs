//! BuildKit's attestation storage (`docker buildx build --provenance --sbom`): an image
//! index whose extra `unknown/unknown` entries are attestation manifests of the platform
//! entries they name (`vnd.docker.reference.type: attestation-manifest`), each holding
//! unsigned in-toto statements as layers. Written here byte for byte in that format into
//! an OCI layout and pushed with `skopeo copy --all`, then read back as attestations of
//! their platforms: the coverage extension, referrers, the policy's requirements (counted
//! through a signature on the index, or where a rule accepts unsigned evidence), GC,
//! fsck, and a mirror that keeps one platform.

use std::process::Stdio;

use reqwest::StatusCode;
use serde_json::{json, Value};
use signet_api_tests::buildkit::{buildkit_image, push_all, Layout, PROVENANCE, SPDX};
use signet_api_tests::cosign::{cosign_sign, recursive_coverage, trust_root, Key};
use signet_api_tests::oci::{error_code, get, OCI_MANIFEST};
use signet_api_tests::{client, run, sha256, Registry};

const BUILDKIT_ARTIFACT: &str = "application/vnd.docker.attestation.manifest.v1+json";

fn config(release: &str, ci: &str) -> String {
    let mut toml = String::from("[trust]\npolicy = \"enforce\"\n");
    let repos: &[&str] = &["prod/**", "lax/**", "strict/**"];
    toml.push_str(&trust_root("release", release, repos));
    toml.push_str(&trust_root("ci", ci, repos));
    toml.push_str(&format!(
        "[[trust.requirements]]\nrepositories = [\"prod/**\"]\nsbom = true\n\
         [[trust.requirements.attestations]]\npredicate_type = \"{PROVENANCE}\"\nsigned_by = [\"release\"]\n\
         [[trust.requirements]]\nrepositories = [\"lax/**\"]\n\
         [[trust.requirements.attestations]]\npredicate_type = \"{PROVENANCE}\"\nsigned_by = [\"ci\"]\naccept_unsigned = true\n\
         [[trust.requirements]]\nrepositories = [\"strict/**\"]\n\
         [[trust.requirements.attestations]]\npredicate_type = \"{PROVENANCE}\"\nsigned_by = [\"ci\"]\n"
    ));
    toml.push_str("[gc]\ninterval_secs = 0\ngrace_secs = 0\ndelete_untagged = true\n");
    toml
}

fn fsck_clean(r: &Registry) {
    let out = r
        .cli(&["fsck", "--json"])
        .stdin(Stdio::null())
        .output()
        .expect("run signet fsck");
    assert!(
        out.status.success(),
        "fsck: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn status_of(r: &Registry, repo: &str, reference: &str) -> (StatusCode, String) {
    let (status, body) = get(&client(), &r.v2(&format!("{repo}/manifests/{reference}"))).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn buildkit_attestations_are_attestations_of_their_platforms() {
    let work = tempfile::tempdir().unwrap();
    let (release, ci) = (Key::generate(), Key::generate());
    let toml = config(
        &release.write_public(work.path(), "release"),
        &ci.write_public(work.path(), "ci"),
    );
    let r = Registry::start_with_config(&toml);
    let layout = Layout::new(&work.path().join("layout"));
    let built = buildkit_image(&layout);
    for repo in ["prod/app", "lax/app", "strict/app"] {
        push_all(work.path(), &layout, &r, repo);
    }
    let c = client();
    let repo = "prod/app";
    let (amd64, arm64) = (&built.platforms[0].1, &built.platforms[1].1);

    // Coverage: two platforms, each with its attestation (not a platform of its own).
    let report = recursive_coverage(&c, &r, repo, "v1").await;
    assert_eq!(report["digest"], built.index.as_str());
    let children = report["children"].as_array().unwrap();
    let listed: Vec<&str> = children
        .iter()
        .map(|c| c["digest"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [amd64.as_str(), arm64.as_str()], "{report}");
    for (child, attestation) in children.iter().zip(&built.attestations) {
        let found = child["attachments"]["attestation"].as_array().unwrap();
        assert_eq!(found.len(), 1, "{child}");
        let a = &found[0];
        assert_eq!(a["digest"], attestation.as_str());
        assert_eq!(a["source"], "buildkit");
        assert_eq!(a["format"], "in-toto");
        assert_eq!(a["predicateTypes"], json!([SPDX, PROVENANCE]), "{a}");
        assert_eq!(a["carriedBy"], built.index.as_str());
        assert_eq!(a["verification"]["verdict"], "unsigned", "{a}");
    }

    // The platform's referrers list its attestation manifest.
    let (status, body) = get(&c, &r.v2(&format!("{repo}/referrers/{amd64}"))).await;
    assert_eq!(status, StatusCode::OK);
    let referrers: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        referrers["manifests"],
        json!([{"mediaType": OCI_MANIFEST, "digest": built.attestations[0],
                "size": std::fs::metadata(layout.0.join("blobs/sha256").join(built.attestations[0].trim_start_matches("sha256:"))).unwrap().len(),
                "artifactType": BUILDKIT_ARTIFACT}]),
        "{referrers}"
    );

    // Unsigned: refused, the attestation manifest itself readable (it runs nothing).
    let (status, body) = status_of(&r, repo, amd64).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(error_code(body.as_bytes()), "DENIED");
    assert_eq!(
        status_of(&r, repo, &built.attestations[0]).await.0,
        StatusCode::OK
    );

    // cosign signs the index, which lists the statements: the provenance counts as
    // signed by `release`, the SPDX statement as the SBOM.
    for repo in ["prod/app", "lax/app", "strict/app"] {
        assert_eq!(
            cosign_sign(&r.host, repo, "v1", &release).await,
            built.index
        );
    }
    for reference in [amd64.as_str(), arm64.as_str(), "v1"] {
        let (status, body) = status_of(&r, repo, reference).await;
        assert_eq!(status, StatusCode::OK, "{reference}: {body}");
    }
    // A rule that accepts unsigned evidence takes the statement whoever signed the
    // index; one that wants `ci`'s signature does not.
    assert_eq!(status_of(&r, "lax/app", amd64).await.0, StatusCode::OK);
    let (status, body) = status_of(&r, "strict/app", amd64).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.contains(PROVENANCE) && body.contains("signed by ci"),
        "{body}"
    );
    // The tags page's status: verified by `release`, both platforms covered (the
    // attestation entries are no platforms).
    let (status, body) = get(
        &c,
        &r.v2(&format!(
            "{repo}/_signet/tags?signatures=true&attachments=false"
        )),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let tags: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        tags["tags"][0]["signature"],
        json!({"status": "verified", "roots": ["release"], "platforms": {"covered": 2, "total": 2}}),
        "{tags}"
    );
    let verify = run(&mut r.cli(&["verify", &format!("{repo}@{amd64}")]));
    assert!(
        verify.contains("in-toto") && verify.contains(PROVENANCE),
        "{verify}"
    );

    // GC keeps the statements with their index; fsck finds the rows a PUT writes.
    run(&mut r.cli(&["gc", "--json"]));
    for a in &built.attestations {
        assert_eq!(
            status_of(&r, repo, a).await.0,
            StatusCode::OK,
            "{a} after GC"
        );
    }
    fsck_clean(&r);

    // A mirror of amd64 only takes amd64's attestation along, and knows what it is.
    let mirror = Registry::start_with_config(&format!(
        "[[sync.jobs]]\nname = \"amd64\"\nupstream = \"{}\"\nrepositories = [\"prod/app\"]\nplatforms = [\"linux/amd64\"]\n",
        r.url
    ));
    let summary: Value =
        serde_json::from_str(&run(&mut mirror.cli(&["sync", "run", "amd64", "--json"]))).unwrap();
    assert!(
        summary["errors"].as_array().unwrap().is_empty(),
        "{summary}"
    );
    let (status, body) = get(&c, &mirror.v2(&format!("{repo}/manifests/v1"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sha256(&body), built.index, "the index, byte for byte");
    for (digest, kept) in [
        (amd64, true),
        (&built.attestations[0], true),
        (arm64, false),
        (&built.attestations[1], false),
    ] {
        let (status, _) = get(&c, &mirror.v2(&format!("{repo}/manifests/{digest}"))).await;
        assert_eq!(status == StatusCode::OK, kept, "{digest}: {status}");
    }
    let report = recursive_coverage(&c, &mirror, repo, amd64).await;
    let found = &report["attachments"]["attestation"][0];
    assert_eq!(found["digest"], built.attestations[0].as_str(), "{report}");
    assert_eq!(found["source"], "buildkit");
    // The index lists what the mirror left out on purpose: fsck knows it from the edges.
    fsck_clean(&mirror);
}

#[tokio::test]
async fn the_strict_referrers_setting_leaves_buildkit_attestations_out() {
    let work = tempfile::tempdir().unwrap();
    let r = Registry::start_with_config("[attachments]\ntag_attachments_in_referrers = false\n");
    let layout = Layout::new(&work.path().join("layout"));
    let built = buildkit_image(&layout);
    push_all(work.path(), &layout, &r, "team/app");
    let c = client();
    let amd64 = &built.platforms[0].1;
    let (status, body) = get(&c, &r.v2(&format!("team/app/referrers/{amd64}"))).await;
    assert_eq!(status, StatusCode::OK);
    let referrers: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(referrers["manifests"], json!([]), "{referrers}");
    // Unsigned, and no trust root at all: the tags page says so.
    let (_, body) = get(&c, &r.v2("team/app/_signet/tags?signatures=true")).await;
    let tags: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        tags["tags"][0]["signature"],
        json!({"status": "unsigned", "platforms": {"covered": 0, "total": 2}}),
        "{tags}"
    );
    let (status, _) = get(&c, &r.v2("team/app/_signet/tags?signatures=maybe")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The attachment index still knows them.
    let report = recursive_coverage(&c, &r, "team/app", amd64).await;
    assert_eq!(
        report["attachments"]["attestation"][0]["digest"],
        built.attestations[0].as_str(),
        "{report}"
    );
}
