//! SIGKILL in the middle of the long-running operations: a garbage collection and a
//! sync run, each killed at several points (the delay varies), then run again to the
//! end. After every kill: what a client can read is whole (a blob is served with its
//! bytes or not at all, a tag resolves to a manifest whose blobs are all there), every
//! acknowledged image is readable, and `signet fsck` is clean once the operation has
//! been finished.

use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use reqwest::{Client, StatusCode};
use serde_json::Value;
use signet_api_tests::oci::{
    image_manifest, push_blob, push_image, put_manifest, send_manifest, unique_config, OCI_MANIFEST,
};
use signet_api_tests::proxy::Proxy;
use signet_api_tests::{client, random_bytes, sha256, Registry};

/// `signet fsck --json` beside the server: (clean, report).
fn fsck(r: &Registry) -> (bool, Value) {
    let out = r
        .cli(&["fsck", "--json"])
        .stdin(Stdio::null())
        .output()
        .expect("run signet fsck");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "fsck output is not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

fn assert_fsck_clean(r: &Registry, when: &str) {
    let (ok, report) = fsck(r);
    assert!(ok, "fsck {when}: {report:#}");
}

/// An image a client pushed and saw acknowledged: its tag, manifest bytes and blobs.
struct Pushed {
    repo: String,
    tag: String,
    manifest: Vec<u8>,
    blobs: Vec<Bytes>,
}

/// An image pushed until the registry acknowledges it. With `grace_secs = 0`, a
/// collector whose cutoff falls just after the blobs were pushed may take them before
/// the manifest names them: the manifest is then refused (`MANIFEST_BLOB_UNKNOWN`,
/// nothing acknowledged), and the blobs are pushed again, as a client does.
async fn push_live(c: &Client, r: &Registry, repo: &str, tag: &str) -> Pushed {
    let config = Bytes::from(unique_config());
    let layers = [random_bytes(30_000), random_bytes(3_000)];
    let refs: Vec<&[u8]> = layers.iter().map(|l| &l[..]).collect();
    let manifest = image_manifest(&config, &refs, serde_json::json!({}));
    let mut blobs = vec![config];
    blobs.extend(layers);
    for _ in 0..5 {
        for blob in &blobs {
            push_blob(c, r, repo, blob).await;
        }
        let resp = send_manifest(c, r, repo, tag, OCI_MANIFEST, &manifest).await;
        let status = resp.status();
        if status == StatusCode::CREATED {
            return Pushed {
                repo: repo.into(),
                tag: tag.into(),
                manifest,
                blobs,
            };
        }
        let body = resp.text().await.unwrap_or_default();
        assert!(
            status == StatusCode::BAD_REQUEST && body.contains("MANIFEST_BLOB_UNKNOWN"),
            "put manifest {repo}:{tag}: {status} {body}"
        );
    }
    panic!("{repo}:{tag} refused five times: its blobs were collected each time");
}

/// The bytes served for a blob, `None` on 404; anything else (a 5xx, a short body,
/// other bytes) fails the test: a blob is served whole or not at all.
async fn get_blob(c: &Client, r: &Registry, repo: &str, digest: &str) -> Option<Bytes> {
    let head = c
        .head(r.v2(&format!("{repo}/blobs/{digest}")))
        .send()
        .await
        .unwrap()
        .status();
    let resp = c
        .get(r.v2(&format!("{repo}/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    match status {
        StatusCode::NOT_FOUND => None,
        StatusCode::OK => {
            let bytes = resp
                .bytes()
                .await
                .unwrap_or_else(|e| panic!("{repo}@{digest}: body broke off: {e}"));
            assert_eq!(sha256(&bytes), digest, "{repo}@{digest} served other bytes");
            // HEAD was asked first: a blob it announced may have been collected since,
            // never the other way round.
            assert!(
                head == StatusCode::OK || head == StatusCode::NOT_FOUND,
                "{repo}@{digest}: HEAD {head}"
            );
            Some(bytes)
        }
        other => panic!(
            "{repo}@{digest}: {other} {}",
            String::from_utf8_lossy(&resp.bytes().await.unwrap_or_default())
        ),
    }
}

async fn assert_readable(c: &Client, r: &Registry, image: &Pushed) {
    let resp = c
        .get(r.v2(&format!("{}/manifests/{}", image.repo, image.tag)))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "{}:{} acknowledged, then lost",
        image.repo,
        image.tag
    );
    assert_eq!(resp.bytes().await.unwrap(), image.manifest);
    for blob in &image.blobs {
        let got = get_blob(c, r, &image.repo, &sha256(blob)).await;
        assert!(
            got.as_ref() == Some(blob),
            "{}:{} lost a blob",
            image.repo,
            image.tag
        );
    }
}

/// Runs `signet gc --json` beside the server and kills it with SIGKILL after `delay`
/// (or lets it finish first): true when it was killed before it exited.
fn gc_killed_after(r: &Registry, delay: Duration) -> bool {
    let mut child = r
        .cli(&["gc", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start signet gc");
    std::thread::sleep(delay);
    let finished = child.try_wait().unwrap().is_some();
    let _ = child.kill();
    let _ = child.wait();
    !finished
}

/// `signet gc --json` to the end, retried while a killed collector's lease runs out.
fn gc_to_the_end(r: &Registry) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = r
            .cli(&["gc", "--json"])
            .stdin(Stdio::null())
            .output()
            .expect("run signet gc");
        if out.status.success() {
            return serde_json::from_slice(&out.stdout).unwrap();
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            err.contains("another garbage collection is running") && Instant::now() < deadline,
            "signet gc failed: {err}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_killed_at_many_points_loses_nothing() {
    // Grace 0 and untagged manifests collected: everything unreachable goes. A short
    // lease, so a collection after a killed one need not wait ten minutes.
    let mut r = Registry::start_with_config(
        "[gc]\ninterval_secs = 0\ngrace_secs = 0\ndelete_untagged = true\nlease_secs = 1\n",
    );
    let c = client();
    let mut live = Vec::new();
    let mut interrupted = 0;
    // A collection of this store takes 10 to 50 ms here (bytes are deleted 16 at a
    // time): the kills land while it opens the stores, during the sweep, and while it
    // deletes bytes.
    let delays_ms = [2u64, 5, 10, 15, 25, 35, 50];
    for (round, delay) in delays_ms.into_iter().enumerate() {
        live.push(push_live(&c, &r, "kill/app", &format!("r{round}")).await);
        // Garbage: loose blobs, and an image whose tag then moves on.
        let loose: Vec<Bytes> = (0..200).map(|_| random_bytes(2_000)).collect();
        futures::stream::iter(&loose)
            .for_each_concurrent(8, |bytes| async {
                push_blob(&c, &r, "kill/loose", bytes).await;
            })
            .await;
        let mut garbage: Vec<(&str, String)> =
            loose.iter().map(|b| ("kill/loose", sha256(b))).collect();
        let old = push_live(&c, &r, "kill/moving", "latest").await;
        for b in &old.blobs {
            garbage.push(("kill/moving", sha256(b)));
        }
        let newer = push_live(&c, &r, "kill/moving", "latest").await;
        // Nothing is younger than the cutoff (whole seconds) when the collector runs.
        tokio::time::sleep(Duration::from_millis(1100)).await;

        let killed = gc_killed_after(&r, Duration::from_millis(delay));
        interrupted += usize::from(killed);
        // Every other round the server dies too.
        if round % 2 == 1 {
            r.crash_and_restart();
        }
        for image in &live {
            assert_readable(&c, &r, image).await;
        }
        assert_readable(&c, &r, &newer).await;
        // Whole or absent: get_blob fails the test on anything else.
        futures::stream::iter(&garbage)
            .for_each_concurrent(8, |(repo, digest)| {
                let (c, r) = (&c, &r);
                async move {
                    let _ = get_blob(c, r, repo, digest).await;
                }
            })
            .await;

        // Finish the collection: the garbage is gone, the rest is intact.
        let report = gc_to_the_end(&r);
        let kept: Vec<String> = newer.blobs.iter().map(|b| sha256(b)).collect();
        futures::stream::iter(garbage.iter().filter(|(_, d)| !kept.contains(d)))
            .for_each_concurrent(8, |(repo, digest)| {
                let (c, r, report) = (&c, &r, &report);
                async move {
                    assert!(
                        get_blob(c, r, repo, digest).await.is_none(),
                        "round {round}: {repo}@{digest} survived a finished collection: {report}"
                    );
                }
            })
            .await;
        for image in &live {
            assert_readable(&c, &r, image).await;
        }
        assert_readable(&c, &r, &newer).await;
        assert_fsck_clean(&r, &format!("after round {round}"));
    }
    eprintln!(
        "garbage collection killed mid-run at {interrupted} of {} points",
        delays_ms.len()
    );
    assert!(
        interrupted >= 3,
        "only {interrupted} kills landed before the collection ended"
    );
}

/// Every tag of `repos` with its manifest bytes; every tag listed must be served whole
/// (manifest and every blob it names).
async fn mirror_contents(c: &Client, r: &Registry, repos: &[&str]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for repo in repos {
        let resp = c
            .get(r.v2(&format!("{repo}/tags/list")))
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::NOT_FOUND {
            continue;
        }
        assert_eq!(resp.status(), StatusCode::OK);
        let list: Value = resp.json().await.unwrap();
        let mut tags: Vec<String> = list["tags"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        tags.sort();
        for tag in tags {
            let resp = c
                .get(r.v2(&format!("{repo}/manifests/{tag}")))
                .header("Accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            assert_eq!(
                resp.status(),
                StatusCode::OK,
                "{repo}:{tag} listed, not served"
            );
            let body = resp.bytes().await.unwrap().to_vec();
            let m: Value = serde_json::from_slice(&body).unwrap();
            let mut digests = vec![m["config"]["digest"].as_str().unwrap().to_string()];
            for l in m["layers"].as_array().unwrap() {
                digests.push(l["digest"].as_str().unwrap().to_string());
            }
            for d in digests {
                assert!(
                    get_blob(c, r, repo, &d).await.is_some(),
                    "{repo}:{tag} is served but its blob {d} is not"
                );
            }
            out.push((format!("{repo}:{tag}"), body));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_killed_at_many_points_completes_on_rerun() {
    let upstream = Registry::start();
    let c = client();
    let repos = ["up/a", "up/b"];
    for repo in repos {
        for t in 0..3 {
            let layers = [random_bytes(40_000), random_bytes(4_000)];
            let refs: Vec<&[u8]> = layers.iter().map(|l| &l[..]).collect();
            push_image(&c, &upstream, repo, &format!("v{t}"), &refs).await;
        }
    }
    let want = mirror_contents(&c, &upstream, &repos).await;
    assert_eq!(want.len(), 6);
    // A slow upstream, so every kill lands somewhere inside the run.
    let proxy = Proxy::start(&upstream.url).await;
    let list: Vec<String> = repos.iter().map(|r| format!("\"{r}\"")).collect();
    let job = format!(
        "[[sync.jobs]]\nname = \"m\"\nupstream = \"{}\"\nrepositories = [{}]\nconcurrency = 2\nretry_base_ms = 20\n",
        proxy.url,
        list.join(", ")
    );
    let delays_ms = [100u64, 300, 600, 1000, 1500, 2200];
    let mut interrupted = 0;
    for (round, delay) in delays_ms.into_iter().enumerate() {
        let mut mirror = Registry::start_with_config(&job);
        proxy
            .faults
            .delay_ms
            .store(40, std::sync::atomic::Ordering::SeqCst);
        let mut run = mirror
            .cli(&["sync", "run", "m", "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start signet sync run");
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let finished = run.try_wait().unwrap().is_some();
        let _ = run.kill();
        let _ = run.wait();
        interrupted += usize::from(!finished);
        if round % 2 == 1 {
            mirror.crash_and_restart();
        }
        // Whatever is visible is whole, and equal to upstream.
        let partial = mirror_contents(&c, &mirror, &repos).await;
        for item in &partial {
            assert!(want.contains(item), "round {round}: {} differs", item.0);
        }

        // Run it again, to the end.
        proxy
            .faults
            .delay_ms
            .store(0, std::sync::atomic::Ordering::SeqCst);
        let mut rerun = mirror.cli(&["sync", "run", "m", "--json"]);
        let out = tokio::task::spawn_blocking(move || rerun.stdin(Stdio::null()).output())
            .await
            .unwrap()
            .unwrap();
        assert!(
            out.status.success(),
            "round {round}: rerun failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            mirror_contents(&c, &mirror, &repos).await,
            want,
            "round {round}"
        );
        assert_fsck_clean(&mirror, &format!("mirror after round {round}"));
    }
    eprintln!(
        "sync run killed mid-run at {interrupted} of {} points",
        delays_ms.len()
    );
    assert!(
        interrupted >= delays_ms.len() / 2,
        "only {interrupted} kills landed before the run ended"
    );
}

/// A manifest pushed just before the collector is killed is never taken by it: GC
/// holds back what is younger than its cutoff, so a push racing a killed collection
/// stays whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_racing_a_killed_gc_stay_whole() {
    let r = Registry::start_with_config(
        "[gc]\ninterval_secs = 0\ngrace_secs = 0\ndelete_untagged = true\nlease_secs = 1\n",
    );
    let c = client();
    let mut acknowledged = Vec::new();
    for round in 0..4u64 {
        for _ in 0..40 {
            push_blob(&c, &r, "race/loose", &random_bytes(1_000)).await;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let mut gc = r
            .cli(&["gc", "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Push while it runs; kill it part way.
        let image = push_live(&c, &r, "race/app", &format!("t{round}")).await;
        tokio::time::sleep(Duration::from_millis(20 * round)).await;
        let _ = gc.kill();
        let _ = gc.wait();
        // The same layers pushed again under a new manifest: links refused while a
        // tombstone stands would show here.
        let config = image.blobs[0].clone();
        let layer = image.blobs[1].clone();
        let manifest = image_manifest(
            &config,
            &[&layer],
            serde_json::json!({"annotations": {"round": round.to_string()}}),
        );
        put_manifest(
            &c,
            &r,
            "race/app",
            &format!("again{round}"),
            OCI_MANIFEST,
            &manifest,
        )
        .await;
        acknowledged.push(image);
        acknowledged.push(Pushed {
            repo: "race/app".into(),
            tag: format!("again{round}"),
            manifest,
            blobs: vec![config, layer],
        });
        for image in &acknowledged {
            assert_readable(&c, &r, image).await;
        }
    }
    gc_to_the_end(&r);
    for image in &acknowledged {
        assert_readable(&c, &r, image).await;
    }
    assert_fsck_clean(&r, "after the last collection");
}

/// A signature pushed a moment before GC collects its (old, untagged) subject goes
/// with the subject, young as it is: otherwise its tag would outlive the subject as a
/// root of its own and be served, dangling, for ever. (Found by `bench/soak.py`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_young_signature_follows_its_collected_subject() {
    let r = Registry::start_with_config(
        "[gc]\ninterval_secs = 0\ngrace_secs = 2\ndelete_untagged = true\nlease_secs = 1\n",
    );
    let c = client();
    let repo = "follow/app";
    let old = push_live(&c, &r, repo, "latest").await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    // The tag moves on: the old image is untagged and older than the grace period.
    let newer = push_live(&c, &r, repo, "latest").await;
    // A cosign-style signature of the old image, pushed just now.
    let payload = format!(
        "{{\"critical\":{{\"image\":{{\"docker-manifest-digest\":\"{}\"}},\"type\":\"cosign container image signature\"}}}}",
        sha256(&old.manifest)
    );
    let sig_config =
        br#"{"architecture":"","os":"","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#;
    push_blob(&c, &r, repo, payload.as_bytes()).await;
    push_blob(&c, &r, repo, sig_config).await;
    let sig = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": signet_api_tests::oci::descriptor(signet_api_tests::oci::OCI_CONFIG, sig_config),
        "layers": [signet_api_tests::oci::descriptor(
            "application/vnd.dev.cosign.simplesigning.v1+json",
            payload.as_bytes(),
        )],
    }))
    .unwrap();
    let sig_tag = format!("{}.sig", sha256(&old.manifest).replace(':', "-"));
    put_manifest(&c, &r, repo, &sig_tag, OCI_MANIFEST, &sig).await;

    let report = gc_to_the_end(&r);
    let removed: Vec<&str> = report["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["digest"].as_str())
        .collect();
    assert!(
        removed.contains(&sha256(&old.manifest).as_str()),
        "{report}"
    );
    assert!(
        removed.contains(&sha256(&sig).as_str()),
        "the signature outlived its subject: {report}"
    );
    let resp = c
        .get(r.v2(&format!("{repo}/manifests/{sig_tag}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_readable(&c, &r, &newer).await;
    assert_fsck_clean(&r, "after the collection");
}
