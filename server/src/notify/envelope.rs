//! An event as an endpoint receives it, and the signature over the body.
//!
//! CloudEvents 1.0 in structured mode (`application/cloudevents+json`): `id` is the
//! event's id, the same on every delivery (the idempotency key), `type` is
//! `io.signet.<event type>`, `subject` names the repository and the digest or tag, and
//! the extension attribute `sequence` is the event's place in commit order.
//!
//! distribution's envelope (`application/vnd.docker.distribution.events.v1+json`)
//! carries pushes and deletes only, as distribution names them; other events are not
//! sent to such an endpoint.

use aws_lc_rs::hmac;
use chrono::{TimeZone, Utc};
use serde_json::{json, Value};
use signet_storage::events::{EventType, StoredEvent};

use super::Format;

pub const CLOUDEVENTS_TYPE: &str = "application/cloudevents+json";
pub const DISTRIBUTION_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";
/// `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub const SIGNATURE_HEADER: &str = "X-Signet-Signature";
pub const EVENT_ID_HEADER: &str = "X-Signet-Event-Id";

/// A request body and its content type.
#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
}

/// The body `format` sends for `event`; `None` when the format has no such event.
pub fn render(format: Format, source: &str, event: &StoredEvent) -> Option<Body> {
    let value = match format {
        Format::CloudEvents => cloudevent(source, event),
        Format::Distribution => distribution(source, event)?,
    };
    Some(Body {
        content_type: match format {
            Format::CloudEvents => CLOUDEVENTS_TYPE,
            Format::Distribution => DISTRIBUTION_TYPE,
        },
        bytes: serde_json::to_vec(&value).expect("JSON values serialize"),
    })
}

/// Seconds since the epoch as RFC 3339 (`2026-12-06T14:12:45Z`), as events show times.
pub fn rfc3339(seconds: i64) -> String {
    Utc.timestamp_opt(seconds, 0)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn time_of(event: &StoredEvent) -> String {
    rfc3339(event.created_at)
}

/// `<repository>@<digest>`, `<repository>:<tag>` for tag events, or the repository.
fn subject_of(event: &StoredEvent) -> String {
    let d = &event.data;
    match (event.event_type, &d.tag, &d.digest) {
        (EventType::TagMoved | EventType::TagDeleted, Some(tag), _) => {
            format!("{}:{tag}", d.repository)
        }
        (_, _, Some(digest)) => format!("{}@{digest}", d.repository),
        _ => d.repository.clone(),
    }
}

pub fn cloudevent(source: &str, event: &StoredEvent) -> Value {
    json!({
        "specversion": "1.0",
        "id": event.event_id,
        "source": source,
        "type": format!("io.signet.{}", event.event_type),
        "time": time_of(event),
        "subject": subject_of(event),
        "sequence": event.id.to_string(),
        "datacontenttype": "application/json",
        "data": event.data,
    })
}

pub fn distribution(source: &str, event: &StoredEvent) -> Option<Value> {
    let d = &event.data;
    let action = match event.event_type {
        EventType::ManifestPushed => "push",
        EventType::ManifestDeleted | EventType::TagDeleted => "delete",
        _ => return None,
    };
    let mut target = json!({ "repository": d.repository });
    if let Some(media_type) = &d.media_type {
        target["mediaType"] = json!(media_type);
    }
    if let Some(digest) = &d.digest {
        target["digest"] = json!(digest);
    }
    if let Some(size) = d.size {
        target["size"] = json!(size);
        target["length"] = json!(size);
    }
    if let Some(tag) = d.tag.as_ref().or(d.tags.first()) {
        target["tag"] = json!(tag);
    }
    Some(json!({
        "events": [{
            "id": event.event_id,
            "timestamp": time_of(event),
            "action": action,
            "target": target,
            "actor": { "name": d.actor.clone().unwrap_or_default() },
            "source": { "instanceID": source },
        }]
    }))
}

/// The signature header's value for `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

#[cfg(test)]
mod tests {
    use signet_storage::events::EventData;

    use super::*;

    fn pushed() -> StoredEvent {
        StoredEvent {
            id: 42,
            event_id: "0b7e4c4e-1f7a-4b59-9d4b-2f8c8a0c7f11".into(),
            event_type: EventType::ManifestPushed,
            created_at: 1_765_000_000,
            data: EventData {
                repository: "team/app".into(),
                digest: Some("sha256:abc".into()),
                tags: vec!["v1".into()],
                media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
                size: Some(512),
                actor: Some("alice".into()),
                ..EventData::default()
            },
        }
    }

    #[test]
    fn a_cloudevent_has_the_required_attributes() {
        let v = cloudevent("/signet", &pushed());
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], "0b7e4c4e-1f7a-4b59-9d4b-2f8c8a0c7f11");
        assert_eq!(v["type"], "io.signet.manifest.pushed");
        assert_eq!(v["source"], "/signet");
        assert_eq!(v["subject"], "team/app@sha256:abc");
        assert_eq!(v["time"], "2025-12-06T05:46:40Z");
        assert_eq!(v["sequence"], "42");
        assert_eq!(v["data"]["actor"], "alice");
        assert_eq!(v["data"]["tags"][0], "v1");
        assert_eq!(
            v["data"]["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
    }

    #[test]
    fn distribution_gets_pushes_and_deletes_only() {
        let v = distribution("signet-1", &pushed()).unwrap();
        let e = &v["events"][0];
        assert_eq!(e["action"], "push");
        assert_eq!(e["target"]["repository"], "team/app");
        assert_eq!(e["target"]["tag"], "v1");
        assert_eq!(e["target"]["length"], 512);
        assert_eq!(e["actor"]["name"], "alice");
        let verdict = StoredEvent {
            event_type: EventType::VerdictChanged,
            ..pushed()
        };
        assert!(render(Format::Distribution, "s", &verdict).is_none());
        assert!(render(Format::CloudEvents, "s", &verdict).is_some());
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
