//! What a sync job selects and where from: an `https` upstream with its own CA
//! (`ca_file`), the "latest N semantic versions" tag selection (`tags_latest`), and
//! the attachment kinds copied (`attachments`).

use serde_json::Value;
use signet_api_tests::oci::{push_artifact, push_image};
use signet_api_tests::pki::make_pki;
use signet_api_tests::{random_bytes, Registry};

/// Runs `signet sync run <job> --json`; exit status and the summary.
fn sync(mirror: &Registry, job: &str) -> (bool, Value) {
    let out = mirror
        .cli(&["sync", "run", job, "--json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "summary {text:?}: {e}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), summary)
}

async fn mirror_tags(mirror: &Registry, repo: &str) -> Vec<String> {
    let list: Value = reqwest::get(mirror.v2(&format!("{repo}/tags/list")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut tags: Vec<String> = list["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    tags.sort();
    tags
}

#[tokio::test]
async fn mirrors_the_latest_versions_from_an_https_upstream_with_its_own_ca() {
    let pki = tempfile::tempdir().unwrap();
    let ca_pem = make_pki(pki.path(), "Signet sync test CA").ca_pem;
    let mut upstream = Registry::start_with_config(&format!(
        "[server.tls]\ncert = {:?}\nkey = {:?}\n",
        pki.path().join("server.crt"),
        pki.path().join("server.key"),
    ));
    upstream.url = format!("https://{}", upstream.host);
    let c = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let repo = "lib/app";
    for tag in ["1.0.0", "1.1.0", "v2.0.0", "2.0.0-rc.1", "latest", "0.9"] {
        push_image(&c, &upstream, repo, tag, &[&random_bytes(64)]).await;
    }

    let ca_file = pki.path().join("ca.crt");
    let config = format!(
        "[[sync.jobs]]\nname = \"trusted\"\nupstream = \"{url}\"\nca_file = {ca_file:?}\nrepositories = [\"{repo}\"]\ntags_latest = 2\n\n\
         [[sync.jobs]]\nname = \"untrusted\"\nupstream = \"{url}\"\nrepositories = [\"{repo}\"]\n\n\
         [[sync.jobs]]\nname = \"not-pem\"\nupstream = \"{url}\"\nca_file = {not_pem:?}\nrepositories = [\"{repo}\"]\n",
        url = upstream.url,
        not_pem = pki.path().join("server.key"),
    );
    let mirror = Registry::start_with_config(&config);

    // Without the CA the upstream's certificate is refused, and the run says so.
    let (ok, summary) = sync(&mirror, "untrusted");
    assert!(!ok, "{summary}");
    let errors = summary["errors"].to_string().to_lowercase();
    assert!(
        errors.contains("certificate") || errors.contains("tls") || errors.contains("issuer"),
        "{summary}"
    );
    assert!(mirror_tags(&mirror, repo).await.is_empty());

    // A CA file that holds no certificate stops the job before any request.
    let out = mirror
        .cli(&["sync", "run", "not-pem", "--json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not PEM certificates"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // With it: the two highest versions in semantic-version order (v2.0.0, then its
    // release candidate, above 1.1.0), and `latest`, which is not a version.
    let (ok, summary) = sync(&mirror, "trusted");
    assert!(ok, "{summary}");
    assert_eq!(summary["tags"], 3, "{summary}");
    assert_eq!(
        mirror_tags(&mirror, repo).await,
        ["2.0.0-rc.1", "latest", "v2.0.0"]
    );

    // A newer release upstream moves the window; what was mirrored stays.
    push_image(&c, &upstream, repo, "2.1.0", &[&random_bytes(64)]).await;
    let (ok, summary) = sync(&mirror, "trusted");
    assert!(ok, "{summary}");
    assert_eq!(
        mirror_tags(&mirror, repo).await,
        ["2.0.0-rc.1", "2.1.0", "latest", "v2.0.0"]
    );
    assert_eq!(summary["tags_unchanged"], 2, "{summary}");
}

#[tokio::test]
async fn copies_only_the_attachment_kinds_a_job_selects() {
    use base64::Engine as _;
    let c = signet_api_tests::client();
    let upstream = Registry::start();
    let repo = "kinds/app";
    let image = push_image(&c, &upstream, repo, "v1", &[&random_bytes(64)]).await;
    let subject = (signet_api_tests::sha256(&image), image.len());
    let stem = subject.0.replace(':', "-");
    push_artifact(
        &c,
        &upstream,
        repo,
        Some(&format!("{stem}.sig")),
        "application/vnd.dev.cosign.simplesigning.v1+json",
        None,
        b"sig",
    )
    .await;
    push_artifact(
        &c,
        &upstream,
        repo,
        Some(&format!("{stem}.sbom")),
        "text/spdx+json",
        None,
        b"sbom",
    )
    .await;
    let attestation = push_artifact(
        &c,
        &upstream,
        repo,
        None,
        "application/vnd.in-toto+json",
        Some((&subject.0, subject.1)),
        b"statement",
    )
    .await;
    let resp = c
        .put(format!(
            "{}/extensions/v2/{repo}/signatures/{}",
            upstream.url, subject.0
        ))
        .json(&serde_json::json!({"schemaVersion": 2, "type": "atomic",
            "name": format!("{}@{}", subject.0, "0".repeat(32)),
            "content": base64::engine::general_purpose::STANDARD.encode(b"gpg bytes")}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED);

    let mirror = Registry::start_with_config(&format!(
        "[[sync.jobs]]\nname = \"sigs\"\nupstream = \"{url}\"\nrepositories = [\"{repo}\"]\nattachments = [\"signature\"]\n\n\
         [[sync.jobs]]\nname = \"bad\"\nupstream = \"{url}\"\nrepositories = [\"{repo}\"]\nattachments = [\"signatures\"]\n\n\
         [[sync.jobs]]\nname = \"rest\"\nupstream = \"{url}\"\nrepositories = [\"{repo}\"]\nattachments = [\"attestation\", \"sbom\", \"atomic\"]\n",
        url = upstream.url
    ));
    let (ok, summary) = sync(&mirror, "sigs");
    assert!(ok, "{summary}");
    assert_eq!(
        mirror_tags(&mirror, repo).await,
        [format!("{stem}.sig"), "v1".into()]
    );
    let referrers = |m: &Registry| {
        let url = m.v2(&format!("{repo}/referrers/{}", subject.0));
        async move {
            let v: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
            v["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["digest"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert!(!referrers(&mirror).await.contains(&attestation));
    let atomic: Value = reqwest::get(format!(
        "{}/extensions/v2/{repo}/signatures/{}",
        mirror.url, subject.0
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        atomic["signatures"].as_array().unwrap().len(),
        0,
        "{atomic}"
    );

    let out = mirror.cli(&["sync", "run", "bad"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("attachment kind"));

    // The other kinds, in a second run: everything is there now.
    let (ok, summary) = sync(&mirror, "rest");
    assert!(ok, "{summary}");
    assert_eq!(summary["atomic_signatures_copied"], 1, "{summary}");
    assert_eq!(
        mirror_tags(&mirror, repo).await,
        [format!("{stem}.sbom"), format!("{stem}.sig"), "v1".into()]
    );
    assert!(referrers(&mirror).await.contains(&attestation));
}
