//! Policy requirements (`[[trust.requirements]]`: signatures from named roots,
//! attestations of a predicate type from named roots, an SBOM) enforced over HTTP;
//! `signet verify` printing the verdict and the evidence, through an index, with its
//! exit code; `docker_reference = "repository"` for cosign signatures.

use std::process::Output;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use signet_api_tests::cosign::{
    push_attestation, push_referrer, sign_payload, simple_signing_payload, trust_check, trust_root,
    Key,
};
use signet_api_tests::oci::{error_code, get, push_image, put_manifest, OCI_INDEX, OCI_MANIFEST};
use signet_api_tests::{client, sha256, Registry};

const PROVENANCE: &str = "https://slsa.dev/provenance/v1";
const SPDX: &str = "application/spdx+json";

/// `cosign sign --key`: a simple-signing payload naming `named_repo`.
async fn sign(c: &Client, r: &Registry, repo: &str, subject: &str, named_repo: &str, key: &Key) {
    let payload = simple_signing_payload(r, named_repo, subject);
    sign_payload(c, r, repo, subject, &payload, key).await;
}

/// `cosign attest --key`: a DSSE envelope over an in-toto statement.
async fn attest(c: &Client, r: &Registry, repo: &str, subject: &str, predicate: &str, key: &Key) {
    let statement = serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v1",
        "predicateType": predicate,
        "subject": [{"name": repo, "digest": {"sha256": subject.trim_start_matches("sha256:")}}],
        "predicate": {"buildDefinition": {"buildType": "https://signet.example/build"}},
    }))
    .unwrap();
    let annotations = json!({"predicateType": predicate});
    push_attestation(c, r, repo, subject, &statement, annotations, key).await;
}

/// An SPDX document as an OCI referrer of `subject` (what `oras attach` pushes).
async fn attach_sbom(c: &Client, r: &Registry, repo: &str, subject: &str) {
    let doc = br#"{"spdxVersion":"SPDX-2.3","name":"app"}"#;
    let (_, subject_bytes) = get(c, &r.v2(&format!("{repo}/manifests/{subject}"))).await;
    let subject =
        json!({"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_bytes.len()});
    push_referrer(c, r, repo, subject, SPDX, doc, Value::Null).await;
}

async fn pull(c: &Client, r: &Registry, repo: &str, reference: &str) -> (StatusCode, String) {
    let (status, body) = get(c, &r.v2(&format!("{repo}/manifests/{reference}"))).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn verify(r: &Registry, args: &[&str]) -> Output {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    r.cli(&all).output().expect("run signet verify")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn requirements_name_what_is_missing_until_every_one_is_met() {
    let keys = tempfile::tempdir().unwrap();
    let release = Key::generate();
    let ci = Key::generate();
    let config = format!(
        "[trust]\n{}policy = \"enforce\"\n{}{}",
        trust_root(
            "release",
            &release.write_public(keys.path(), "release"),
            &["prod/**"]
        ),
        trust_root("ci", &ci.write_public(keys.path(), "ci"), &["prod/**"]),
        format_args!(
            r#"[[trust.requirements]]
repositories = ["prod/**"]
signed_by = ["release"]
sbom = true
[[trust.requirements.attestations]]
predicate_type = "{PROVENANCE}"
signed_by = ["ci"]
"#
        ),
    );
    // `signet trust check` lists the requirement with the roots.
    let file = keys.path().join("signet.toml");
    std::fs::write(&file, &config).unwrap();
    let out = trust_check(&file);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "requirement for prod/**: signed by release, an attestation of {PROVENANCE} signed by ci, an SBOM"
        )),
        "{text}"
    );
    // A requirement naming a root that does not exist is refused at load.
    std::fs::write(
        &file,
        config.replace("signed_by = [\"ci\"]", "signed_by = [\"nobody\"]"),
    )
    .unwrap();
    let out = trust_check(&file);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"nobody\""));

    let r = Registry::start_with_config(&config);
    let c = client();
    let image = push_image(&c, &r, "prod/app", "v1", &[b"app layer"]).await;
    let digest = sha256(&image);

    let (status, body) = pull(&c, &r, "prod/app", "v1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(body.as_bytes()), "DENIED");
    for missing in [
        "no signature",
        "no valid signature from root release",
        &format!("missing an attestation of {PROVENANCE} signed by ci"),
        "no SBOM",
    ] {
        assert!(body.contains(missing), "{missing:?} not in {body}");
    }

    // A valid signature, but from ci: the base rule passes, signed_by does not.
    sign(&c, &r, "prod/app", &digest, "prod/app", &ci).await;
    let (status, body) = pull(&c, &r, "prod/app", "v1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!body.contains("no signature"), "{body}");
    assert!(
        body.contains("no valid signature from root release"),
        "{body}"
    );

    // Signed by release (a new .sig manifest: the tag moves to it).
    sign(&c, &r, "prod/app", &digest, "prod/app", &release).await;
    let (_, body) = pull(&c, &r, "prod/app", "v1").await;
    assert!(!body.contains("root release"), "{body}");
    assert!(body.contains("missing an attestation"), "{body}");

    // The provenance signed by the wrong root does not count; by ci it does.
    attest(&c, &r, "prod/app", &digest, PROVENANCE, &release).await;
    let (status, body) = pull(&c, &r, "prod/app", "v1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("missing an attestation"), "{body}");
    attest(&c, &r, "prod/app", &digest, PROVENANCE, &ci).await;
    let (status, body) = pull(&c, &r, "prod/app", "v1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!body.contains("missing an attestation"), "{body}");
    assert!(body.contains("no SBOM"), "{body}");
    let out = verify(&r, &["prod/app:v1"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("REFUSED"), "{}", stdout(&out));
    assert!(stdout(&out).contains("  - no SBOM"), "{}", stdout(&out));

    // The SBOM referrer completes it.
    attach_sbom(&c, &r, "prod/app", &digest).await;
    let (status, body) = pull(&c, &r, "prod/app", "v1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let out = verify(&r, &[&format!("prod/app@{digest}")]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("policy enforce: served"), "{text}");
    assert!(text.contains(" — valid (root release)"), "{text}");
    assert!(
        text.contains(&format!(" — valid (root ci, predicate {PROVENANCE})")),
        "{text}"
    );
    assert!(text.contains("sbom sha256:"), "{text}");
    assert!(!text.contains("missing:"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn signet_verify_shows_evidence_through_an_index_and_exits_by_the_policy() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::generate();
    let public = key.write_public(keys.path(), "release");
    let r = Registry::start_with_config(&format!(
        "[trust]\n{}policy = \"enforce\"\n{}policy = \"audit\"\ndocker_reference = \"repository\"\n",
        trust_root("release", &public, &["rel/**"]),
        trust_root("strict", &public, &["strict/**"]),
    ));
    let c = client();

    // A multi-arch index signed without --recursive.
    let repo = "rel/multi";
    let amd64 = push_image(&c, &r, repo, "amd64", &[b"amd64 layer"]).await;
    let arm64 = push_image(&c, &r, repo, "arm64", &[b"arm64 layer"]).await;
    let children: Vec<Value> = [(&amd64, "amd64"), (&arm64, "arm64")]
        .iter()
        .map(|(m, arch)| {
            json!({"mediaType": OCI_MANIFEST, "digest": sha256(m), "size": m.len(),
                   "platform": {"architecture": arch, "os": "linux"}})
        })
        .collect();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children,
    }))
    .unwrap();
    put_manifest(&c, &r, repo, "v1", OCI_INDEX, &index).await;
    let index_digest = sha256(&index);
    let arm = format!("{repo}@{}", sha256(&arm64));

    let out = verify(&r, &[&arm]);
    assert!(!out.status.success(), "unsigned: {}", stdout(&out));
    let out = verify(&r, &[&format!("{repo}:v1"), "--json"]);
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let platforms = v["platforms"].as_array().unwrap();
    assert_eq!(platforms.len(), 2, "{v}");
    assert!(platforms.iter().all(|p| p["passes"] == false), "{v}");
    assert_eq!(platforms[1]["platform"]["architecture"], "arm64");
    sign(&c, &r, repo, &index_digest, repo, &key).await;
    let out = verify(&r, &[&arm]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "covered by index {index_digest} (its evidence counts)"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("on index {index_digest} — valid (root release)")),
        "{text}"
    );
    // For the index: each platform, judged through the index's signature.
    let out = verify(&r, &[&format!("{repo}:v1")]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    for (m, arch) in [(&amd64, "amd64"), (&arm64, "arm64")] {
        assert!(
            text.contains(&format!("  linux/{arch} {} — passes", sha256(m))),
            "{text}"
        );
    }
    // What the CLI says is what the server does.
    assert_eq!(pull(&c, &r, repo, &sha256(&arm64)).await.0, StatusCode::OK);

    let out = verify(&r, &[&arm, "--json"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["policy"], "enforce");
    assert_eq!(v["served"], true);
    let e = &v["evaluation"];
    assert_eq!(e["digest"], sha256(&arm64));
    assert_eq!(e["coveredBy"][0], index_digest);
    assert_eq!(e["evidence"][0]["viaIndex"], true);
    assert_eq!(e["evidence"][0]["verification"]["verdict"], "valid");
    assert_eq!(e["evidence"][0]["verification"]["root"], "release");

    // Unsigned under enforce: non-zero, with the reason in the JSON.
    push_image(&c, &r, "rel/unsigned", "v1", &[b"unsigned"]).await;
    let out = verify(&r, &["rel/unsigned:v1", "--json"]);
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["served"], false);
    assert!(v["evaluation"]["missing"][0]
        .as_str()
        .unwrap()
        .contains("no signature"));

    // Audit serves (exit 0); --enforce judges as enforce would (non-zero).
    push_image(&c, &r, "strict/app", "v1", &[b"strict"]).await;
    let out = verify(&r, &["strict/app:v1"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("served, and logged as a violation"));
    assert!(!verify(&r, &["strict/app:v1", "--enforce"]).status.success());

    // docker_reference = "repository": a cosign signature naming another repository
    // (as `cosign copy` leaves it) is invalid here; one naming this repository is valid.
    let strict = sha256(&get(&c, &r.v2("strict/app/manifests/v1")).await.1);
    sign(&c, &r, "strict/app", &strict, "rel/elsewhere", &key).await;
    let out = verify(&r, &["strict/app:v1", "--enforce"]);
    let text = stdout(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("docker-reference mismatch"), "{text}");
    sign(&c, &r, "strict/app", &strict, "strict/app", &key).await;
    let out = verify(&r, &["strict/app:v1", "--enforce"]);
    assert!(out.status.success(), "{}", stdout(&out));

    // Under rel/** (default docker_reference) the copied signature is fine, as with
    // `cosign verify`.
    let copy = push_image(&c, &r, "rel/copy", "v1", &[b"copied"]).await;
    sign(&c, &r, "rel/copy", &sha256(&copy), "somewhere/else", &key).await;
    assert!(verify(&r, &["rel/copy:v1"]).status.success());

    // A missing manifest is an error, not a verdict.
    let out = verify(&r, &["rel/nothing:v1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such manifest"));
}
