//! Notifications against the real binary and a real HTTP receiver: every change
//! arrives as a signed CloudEvent, in commit order, once per replica pair; a receiver
//! that was down gets everything afterwards; kill -9 in the middle of a delivery loses
//! nothing; an event out of tries becomes a dead letter that `signet events` lists and
//! redelivers; policy refusals and verdicts are events too.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use signet_api_tests::cosign::{sign_payload, simple_signing_payload, trust_config, Key};
use signet_api_tests::oci::{get, push_image};
use signet_api_tests::receiver::{Answer, Received, Receiver};
use signet_api_tests::{client, metrics, random_bytes, sha256, Registry};

const WAIT: Duration = Duration::from_secs(30);

fn endpoint(name: &str, receiver: &Receiver, extra: &str) -> String {
    format!(
        "[[notifications.endpoints]]\nname = \"{name}\"\nurl = \"{}\"\n{extra}\n",
        receiver.url()
    )
}

/// CloudEvents received: (type without the prefix, subject, data).
fn events(received: &[Received]) -> Vec<Value> {
    received.iter().map(Received::json).collect()
}

fn types(received: &[Received]) -> Vec<String> {
    type_names(&events(received))
}

/// Each event's type without the `io.signet.` prefix.
fn type_names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            e["type"]
                .as_str()
                .unwrap()
                .trim_start_matches("io.signet.")
                .to_string()
        })
        .collect()
}

/// The distinct events but verdicts (reached in the background, at any point).
fn changes(received: &[Received]) -> Vec<Value> {
    distinct(received)
        .into_iter()
        .filter(|e| e["type"] != "io.signet.verdict.changed")
        .collect()
}

/// Each distinct event once, in the order first received, with its sequence number.
fn distinct(received: &[Received]) -> Vec<Value> {
    let mut seen = HashSet::new();
    events(received)
        .into_iter()
        .filter(|e| seen.insert(e["id"].as_str().unwrap().to_string()))
        .collect()
}

/// Distinct request bodies (distribution's envelope has its event id inside).
fn distinct_bodies(received: &[Received]) -> usize {
    received
        .iter()
        .map(|r| r.body.clone())
        .collect::<HashSet<_>>()
        .len()
}

fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    hex::encode(aws_lc_rs::hmac::sign(&key, body).as_ref())
}

fn cli_json(r: &Registry, args: &[&str]) -> Value {
    let out = r.cli(args).output().expect("run signet");
    assert!(
        out.status.success(),
        "signet {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn changes_arrive_signed_in_order_and_filtered() {
    let all = Receiver::start().await;
    let filtered = Receiver::start().await;
    let legacy = Receiver::start().await;
    let config = format!(
        "{}{}{}",
        endpoint(
            "all",
            &all,
            "secret = \"hook-secret\"\nheaders = { Authorization = \"Bearer hook-token\" }"
        ),
        endpoint(
            "signatures",
            &filtered,
            "events = [\"signature.stored\"]\nrepositories = [\"team/**\"]"
        ),
        endpoint("legacy", &legacy, "format = \"distribution\""),
    );
    let r = Registry::start_with_config(&config);
    let c = client();
    let repo = "team/app";
    let first = sha256(&push_image(&c, &r, repo, "v1", &[&random_bytes(32)]).await);
    let second = sha256(&push_image(&c, &r, repo, "v1", &[&random_bytes(32)]).await);
    let key = Key::generate();
    let payload = simple_signing_payload(&r, repo, &second);
    let signature = sign_payload(&c, &r, repo, &second, &payload, &key).await;
    push_image(&c, &r, "other/app", "x", &[&random_bytes(8)]).await;
    let signed_elsewhere = sha256(&push_image(&c, &r, "other/app", "y", &[&random_bytes(8)]).await);
    let other_payload = simple_signing_payload(&r, "other/app", &signed_elsewhere);
    sign_payload(&c, &r, "other/app", &signed_elsewhere, &other_payload, &key).await;
    let deleted = c
        .delete(r.v2(&format!("{repo}/manifests/{first}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::ACCEPTED);

    let got = all
        .wait_for(WAIT, "15 events", |r| changes(r).len() >= 15)
        .await;
    let got_types = type_names(&changes(&got));
    assert_eq!(
        got_types,
        [
            "manifest.pushed",
            "tag.moved", // v1 -> first
            "manifest.pushed",
            "tag.moved", // v1 -> second
            "manifest.pushed",
            "tag.moved",
            "signature.stored", // the .sig
            "manifest.pushed",
            "tag.moved",
            "manifest.pushed",
            "tag.moved",
            "manifest.pushed",
            "tag.moved",
            "signature.stored",
            "manifest.deleted",
        ]
    );
    let e = changes(&got);
    assert_eq!(e[0]["data"]["digest"], first.as_str());
    assert_eq!(e[0]["data"]["tags"][0], "v1");
    assert_eq!(e[0]["data"]["repository"], repo);
    assert_eq!(e[0]["specversion"], "1.0");
    assert_eq!(e[0]["subject"], format!("{repo}@{first}"));
    assert_eq!(
        e[3]["data"]["previous"],
        first.as_str(),
        "v1 moved from the first"
    );
    assert_eq!(e[3]["subject"], format!("{repo}:v1"));
    assert_eq!(e[6]["data"]["subject"], second.as_str());
    assert_eq!(e[6]["data"]["digest"], signature.as_str());
    assert_eq!(e[14]["data"]["digest"], first.as_str());
    assert_eq!(e[0]["data"]["actor"], "anonymous");
    let sequence: Vec<i64> = e
        .iter()
        .map(|e| e["sequence"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(sequence.windows(2).all(|w| w[0] < w[1]), "{sequence:?}");

    // Signed with the endpoint's secret; a receiver holding another secret sees a
    // mismatch. The endpoint's headers and the idempotency key come along.
    for request in &got {
        let header = request.header("x-signet-signature").expect("signed");
        assert_eq!(
            header,
            format!("sha256={}", hmac_hex(b"hook-secret", &request.body))
        );
        assert_ne!(
            header,
            format!("sha256={}", hmac_hex(b"wrong-secret", &request.body))
        );
        assert_eq!(request.header("authorization"), Some("Bearer hook-token"));
        assert_eq!(
            request.header("content-type"),
            Some("application/cloudevents+json")
        );
        let id = request.json()["id"].as_str().unwrap().to_string();
        assert_eq!(request.header("idempotency-key"), Some(id.as_str()));
        assert_eq!(request.path, "/hook");
    }
    assert_eq!(
        got.len(),
        distinct(&got).len(),
        "each event once (two replicas share the work under a lease)"
    );

    // The filtered endpoint: signatures in team/** only, unsigned.
    filtered
        .wait_for(WAIT, "the team signature", |r| !r.is_empty())
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(filtered.received().len(), 1);
    let only = &filtered.received()[0];
    assert_eq!(types(std::slice::from_ref(only)), ["signature.stored"]);
    assert_eq!(only.json()["data"]["repository"], repo);
    assert!(only.header("x-signet-signature").is_none());

    // distribution's envelope: pushes and the delete.
    let legacy_got = legacy
        .wait_for(WAIT, "7 distribution events", |r| distinct_bodies(r) >= 7)
        .await;
    let actions: Vec<String> = legacy_got
        .iter()
        .map(|r| {
            assert_eq!(
                r.header("content-type"),
                Some("application/vnd.docker.distribution.events.v1+json")
            );
            r.json()["events"][0]["action"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        actions,
        ["push", "push", "push", "push", "push", "push", "delete"]
    );
    let push = &legacy_got[0].json()["events"][0];
    assert_eq!(push["target"]["repository"], repo);
    assert_eq!(push["target"]["tag"], "v1");
    assert_eq!(push["target"]["digest"], first.as_str());

    // `signet events list` shows the outbox.
    let listed = cli_json(&r, &["events", "list", "--json", "--limit", "100"]);
    assert!(listed.as_array().unwrap().len() >= 15);
    let status = cli_json(&r, &["events", "status", "--json"]);
    assert_eq!(status["endpoints"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_receiver_down_for_a_while_gets_everything_afterwards_in_order() {
    let mut receiver = Receiver::start().await;
    let r =
        Registry::start_with_config(&format!(
        "[notifications]\ninitial_backoff_ms = 100\nmax_backoff_secs = 1\nmax_attempts = 1000\n{}",
        endpoint("ci", &receiver, "events = [\"manifest.pushed\"]\ntimeout_secs = 2")
    ));
    let c = client();
    receiver.stop();
    let mut pushed = Vec::new();
    for n in 0..6 {
        let repo = format!("down/app-{}", n % 2);
        pushed.push(sha256(
            &push_image(&c, &r, &repo, &format!("v{n}"), &[&random_bytes(16)]).await,
        ));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(receiver.received().is_empty());
    receiver.start_again().await;
    let got = receiver
        .wait_for(WAIT, "all six pushes", |r| distinct(r).len() >= 6)
        .await;
    let digests: Vec<String> = distinct(&got)
        .iter()
        .map(|e| e["data"]["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(digests, pushed, "every push, in the order it committed");
    // Counted by the replica that delivers (behind a balancer, ask each in turn).
    let mut counted = false;
    for _ in 0..4 {
        let exposition = metrics(&r.url).await;
        counted |= exposition.contains("signet_event_delivery_failures_total{endpoint=\"ci\"}");
    }
    assert!(counted, "failures counted");
}

#[tokio::test]
async fn kill_9_in_the_middle_of_a_delivery_loses_nothing() {
    let receiver = Receiver::start().await;
    receiver.answer(Answer::Hang);
    // The killed process's lease runs out after 3 s; then the restarted one delivers.
    let mut r = Registry::start_with_config(&format!(
        "[notifications]\nlease_secs = 3\n{}",
        endpoint(
            "ci",
            &receiver,
            "events = [\"manifest.pushed\"]\ntimeout_secs = 60"
        )
    ));
    let c = client();
    let before = sha256(&push_image(&c, &r, "crash/app", "v1", &[&random_bytes(16)]).await);
    let also = sha256(&push_image(&c, &r, "crash/app", "v2", &[&random_bytes(16)]).await);
    // The first delivery is in flight: read by the receiver, never answered.
    let in_flight = receiver
        .wait_for(WAIT, "the first delivery", |r| !r.is_empty())
        .await;
    let in_flight_id = in_flight[0].json()["id"].as_str().unwrap().to_string();
    r.crash_and_restart();
    // A new client: the old one's pooled connections died with the processes.
    let c = client();
    receiver.answer(Answer::Status(204));
    let after = sha256(&push_image(&c, &r, "crash/app", "v3", &[&random_bytes(16)]).await);
    let got = receiver
        .wait_for(WAIT, "every push after the restart", |r| {
            distinct(r).len() >= 3
        })
        .await;
    let digests: Vec<String> = distinct(&got)
        .iter()
        .map(|e| e["data"]["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(digests, [before.clone(), also, after]);
    let again = got
        .iter()
        .filter(|r| r.json()["id"] == in_flight_id.as_str())
        .count();
    assert!(again >= 2, "the event in flight was sent again, same id");
}

#[tokio::test]
async fn an_event_out_of_tries_is_a_dead_letter_until_redelivered() {
    let receiver = Receiver::start().await;
    receiver.answer(Answer::Status(500));
    let r = Registry::start_with_config(&format!(
        "[notifications]\nmax_attempts = 2\ninitial_backoff_ms = 50\n{}",
        endpoint("ci", &receiver, "events = [\"manifest.pushed\"]")
    ));
    let c = client();
    let lost = sha256(&push_image(&c, &r, "dead/app", "v1", &[&random_bytes(16)]).await);
    receiver.wait_for(WAIT, "two tries", |r| r.len() >= 2).await;
    let mut dead = Value::Null;
    for _ in 0..100 {
        dead = cli_json(&r, &["events", "dead", "--json"]);
        if !dead.as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let letter = &dead[0];
    assert_eq!(letter["endpoint"], "ci");
    assert_eq!(letter["attempts"], 2);
    assert_eq!(letter["error"], "HTTP 500");
    assert_eq!(letter["event"]["data"]["digest"], lost.as_str());

    // The walk went on past it.
    receiver.answer(Answer::Status(200));
    let next = sha256(&push_image(&c, &r, "dead/app", "v2", &[&random_bytes(16)]).await);
    receiver
        .wait_for(WAIT, "the next event", |r| {
            r.iter()
                .any(|x| x.json()["data"]["digest"] == next.as_str())
        })
        .await;
    let sequence = letter["event"]["sequence"].as_i64().unwrap().to_string();
    let out = r
        .cli(&["events", "redeliver", "--endpoint", "ci", &sequence])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("1 dead letters"));
    receiver
        .wait_for(WAIT, "the redelivered event", |r| {
            r.iter()
                .filter(|x| x.json()["data"]["digest"] == lost.as_str())
                .count()
                >= 3
        })
        .await;
    for _ in 0..100 {
        if cli_json(&r, &["events", "dead", "--json"])
            .as_array()
            .unwrap()
            .is_empty()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the dead letter stayed after its redelivery");
}

#[tokio::test]
async fn policy_refusals_and_verdicts_are_events() {
    let receiver = Receiver::start().await;
    let keys = tempfile::tempdir().unwrap();
    let key = Key::generate();
    let public = key.write_public(keys.path(), "release");
    let config = format!(
        "{}\n{}",
        trust_config(&[("release", &public, &["prod/**"])], "enforce"),
        endpoint(
            "security",
            &receiver,
            "events = [\"pull.refused\", \"verdict.changed\"]"
        )
    );
    let r = Registry::start_with_config(&config);
    let c = client();
    let repo = "prod/app";
    let unsigned = sha256(&push_image(&c, &r, repo, "unsigned", &[&random_bytes(16)]).await);
    let (status, _) = get(&c, &r.v2(&format!("{repo}/manifests/unsigned"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let signed = sha256(&push_image(&c, &r, repo, "signed", &[&random_bytes(16)]).await);
    let payload = simple_signing_payload(&r, repo, &signed);
    sign_payload(&c, &r, repo, &signed, &payload, &key).await;

    let got = receiver
        .wait_for(WAIT, "a refusal and a verdict", |r| {
            let t = types(r);
            t.contains(&"pull.refused".to_string()) && t.contains(&"verdict.changed".to_string())
        })
        .await;
    let all = distinct(&got);
    let refused = all
        .iter()
        .find(|e| e["type"] == "io.signet.pull.refused")
        .unwrap();
    assert_eq!(refused["data"]["repository"], repo);
    assert_eq!(refused["data"]["tag"], "unsigned");
    assert_eq!(refused["data"]["digest"], unsigned.as_str());
    assert!(refused["data"]["reason"].as_str().unwrap().len() > 5);
    let verdict = all
        .iter()
        .find(|e| e["type"] == "io.signet.verdict.changed")
        .unwrap();
    assert_eq!(verdict["data"]["subject"], signed.as_str());
    assert_eq!(verdict["data"]["verdict"], "valid");
    assert_eq!(verdict["data"]["root"], "release");
    assert!(verdict["data"]["previous"].is_null());
}

/// Two replicas on one PostgreSQL database and one bucket, each pushed to in turn:
/// every event reaches the receiver exactly once, in commit order, whichever replica
/// made it, because one replica at a time holds the delivery lease.
#[tokio::test]
async fn two_replicas_deliver_each_event_once() {
    let receiver = Receiver::start().await;
    let stores = signet_api_tests::replicas::services();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("signet.toml");
    std::fs::write(
        &config_path,
        signet_api_tests::replicas::config(
            &endpoint("ci", &receiver, "events = [\"manifest.pushed\"]"),
            &stores,
        ),
    )
    .unwrap();
    let a = Registry::start_in(&dir.path().join("a"), Some(config_path.clone()));
    let b = Registry::start_in(&dir.path().join("b"), Some(config_path));
    let c = client();
    let mut pushed = Vec::new();
    for n in 0..20 {
        let via = if n % 2 == 0 { &a } else { &b };
        let repo = format!("replicas/app-{}", n % 3);
        pushed.push(sha256(
            &push_image(&c, via, &repo, &format!("v{n}"), &[&random_bytes(16)]).await,
        ));
    }
    receiver
        .wait_for(WAIT, "twenty pushes", |r| distinct(r).len() >= 20)
        .await;
    // Anything sent twice would arrive by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = receiver.received();
    let digests: Vec<String> = distinct(&got)
        .iter()
        .map(|e| e["data"]["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(digests, pushed);
    assert_eq!(got.len(), 20, "no event sent twice");
}

/// A sync run ends with a `sync.finished` event carrying its counters, and what it
/// mirrored is pushed by `sync:<job>`.
#[tokio::test]
async fn a_sync_run_is_an_event_and_its_pushes_name_the_job() {
    let upstream = Registry::start();
    let c = client();
    let digest = sha256(&push_image(&c, &upstream, "apps/web", "v1", &[&random_bytes(16)]).await);
    let receiver = Receiver::start().await;
    let mirror =
        Registry::start_with_config(&format!(
        "[[sync.jobs]]\nname = \"mirror\"\nupstream = \"{}\"\nrepositories = [\"apps/web\"]\n\n{}",
        upstream.url,
        endpoint("ops", &receiver, "events = [\"sync.finished\", \"manifest.pushed\"]")
    ));
    let out = mirror
        .cli(&["sync", "run", "mirror", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = receiver
        .wait_for(WAIT, "the push and the run", |r| {
            types(r).contains(&"sync.finished".to_string())
        })
        .await;
    let all = distinct(&got);
    let pushed = all
        .iter()
        .find(|e| e["type"] == "io.signet.manifest.pushed")
        .expect("the mirrored manifest");
    assert_eq!(pushed["data"]["digest"], digest.as_str());
    assert_eq!(pushed["data"]["actor"], "sync:mirror");
    let finished = all.last().unwrap();
    assert_eq!(finished["type"], "io.signet.sync.finished");
    assert_eq!(finished["data"]["detail"]["job"], "mirror");
    assert_eq!(finished["data"]["detail"]["status"], "succeeded");
    assert_eq!(finished["data"]["detail"]["report"]["manifests_copied"], 1);
    assert_eq!(finished["data"]["detail"]["report"]["errors"], 0);
}
