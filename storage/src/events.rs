//! Events: what changed, as the notifications outbox records it. A writer hands the
//! store a [`Journal`]; the store, in the transaction that makes a change, appends the
//! events describing it ([`crate::meta::Events`]), so an event exists exactly when its
//! change committed. Events are numbered in commit order: the number is taken from one
//! counter row, whose lock each such transaction holds until it commits.
//!
//! The vocabulary here is pure: how a change becomes events, and their stored form.

use serde::{Deserialize, Serialize};

use crate::attachments::AttachmentKind;
use crate::digest::Digest;

/// Whether, and on whose behalf, a write records events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Journal<'a> {
    actor: Option<&'a str>,
}

impl<'a> Journal<'a> {
    /// Records nothing (no endpoint is configured; tools and tests).
    pub const OFF: Journal<'static> = Journal { actor: None };

    /// Records events, naming `actor` as who made the change.
    pub fn by(actor: &'a str) -> Self {
        Journal { actor: Some(actor) }
    }

    pub fn enabled(&self) -> bool {
        self.actor.is_some()
    }

    pub fn actor(&self) -> Option<&'a str> {
        self.actor
    }
}

/// The kinds of event, each with its stable name (the CloudEvents type is
/// `io.signet.` followed by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "manifest.pushed")]
    ManifestPushed,
    #[serde(rename = "manifest.deleted")]
    ManifestDeleted,
    #[serde(rename = "tag.moved")]
    TagMoved,
    #[serde(rename = "tag.deleted")]
    TagDeleted,
    #[serde(rename = "signature.stored")]
    SignatureStored,
    #[serde(rename = "attestation.stored")]
    AttestationStored,
    #[serde(rename = "sbom.stored")]
    SbomStored,
    #[serde(rename = "verdict.changed")]
    VerdictChanged,
    #[serde(rename = "pull.refused")]
    PullRefused,
    #[serde(rename = "sync.finished")]
    SyncFinished,
}

impl EventType {
    pub const ALL: [EventType; 10] = [
        EventType::ManifestPushed,
        EventType::ManifestDeleted,
        EventType::TagMoved,
        EventType::TagDeleted,
        EventType::SignatureStored,
        EventType::AttestationStored,
        EventType::SbomStored,
        EventType::VerdictChanged,
        EventType::PullRefused,
        EventType::SyncFinished,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ManifestPushed => "manifest.pushed",
            EventType::ManifestDeleted => "manifest.deleted",
            EventType::TagMoved => "tag.moved",
            EventType::TagDeleted => "tag.deleted",
            EventType::SignatureStored => "signature.stored",
            EventType::AttestationStored => "attestation.stored",
            EventType::SbomStored => "sbom.stored",
            EventType::VerdictChanged => "verdict.changed",
            EventType::PullRefused => "pull.refused",
            EventType::SyncFinished => "sync.finished",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The event an attachment of `kind` being stored makes, if any.
    pub fn attachment_stored(kind: AttachmentKind) -> Option<Self> {
        match kind {
            AttachmentKind::Signature => Some(EventType::SignatureStored),
            AttachmentKind::Attestation => Some(EventType::AttestationStored),
            AttachmentKind::Sbom => Some(EventType::SbomStored),
            AttachmentKind::Other => None,
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an event says, each field where it applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventData {
    pub repository: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Every tag a push set (a manifest pushed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Where a moved tag pointed before; the previous verdict of a changed one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// The manifest an attachment or verdict is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Anything else the event type carries (a sync run's report).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

/// An event before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub event_type: EventType,
    pub data: EventData,
}

impl NewEvent {
    pub fn new(event_type: EventType, data: EventData) -> Self {
        NewEvent { event_type, data }
    }
}

/// An event as stored: `id` is its place in commit order, `event_id` its name for ever
/// (the CloudEvents id and the idempotency key a receiver deduplicates on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: i64,
    pub event_id: String,
    pub event_type: EventType,
    /// Seconds since the epoch.
    pub created_at: i64,
    pub data: EventData,
}

/// An event an endpoint gave up on after its tries, kept until it is redelivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub endpoint: String,
    pub event: StoredEvent,
    pub attempts: u32,
    pub error: String,
    pub failed_at: i64,
    /// Asked to be delivered again (`signet events redeliver`).
    pub requeued: bool,
}

/// The events a manifest put makes: the push, each tag that moved (with where it
/// pointed), and each attachment row it stored.
pub(crate) struct PutEvents<'a> {
    pub repository: &'a str,
    pub digest: &'a Digest,
    pub media_type: &'a str,
    pub size: u64,
    pub artifact_type: Option<&'a str>,
    pub tags: Vec<String>,
    /// (tag, where it pointed before): tags whose target changed.
    pub moved: Vec<(String, Option<String>)>,
    /// (kind, subject) of each attachment row the put wrote.
    pub attached: Vec<(AttachmentKind, Digest)>,
}

impl PutEvents<'_> {
    pub fn events(self, journal: Journal<'_>) -> Vec<NewEvent> {
        let base = EventData {
            repository: self.repository.to_string(),
            digest: Some(self.digest.to_string()),
            media_type: Some(self.media_type.to_string()),
            size: Some(self.size),
            artifact_type: self.artifact_type.map(str::to_string),
            actor: journal.actor().map(str::to_string),
            ..EventData::default()
        };
        let mut events = vec![NewEvent::new(
            EventType::ManifestPushed,
            EventData {
                tags: self.tags,
                ..base.clone()
            },
        )];
        for (tag, previous) in self.moved {
            // No artifact type: a tag event names its manifest, and a push of many tags
            // must not copy a long field into each.
            events.push(NewEvent::new(
                EventType::TagMoved,
                EventData {
                    tag: Some(tag),
                    previous,
                    artifact_type: None,
                    ..base.clone()
                },
            ));
        }
        let mut seen = Vec::new();
        for (kind, subject) in self.attached {
            let Some(event_type) = EventType::attachment_stored(kind) else {
                continue;
            };
            if seen.contains(&(event_type, subject.clone())) {
                continue;
            }
            seen.push((event_type, subject.clone()));
            events.push(NewEvent::new(
                event_type,
                EventData {
                    subject: Some(subject.to_string()),
                    ..base.clone()
                },
            ));
        }
        events
    }
}

/// The events a delete makes: each manifest deleted (with its media type), and each tag
/// that went with one.
pub(crate) fn deletion_events(
    journal: Journal<'_>,
    repository: &str,
    deleted: &[(Digest, String)],
    tags: &[(String, Digest)],
) -> Vec<NewEvent> {
    let base = EventData {
        repository: repository.to_string(),
        actor: journal.actor().map(str::to_string),
        ..EventData::default()
    };
    let mut events: Vec<NewEvent> = tags
        .iter()
        .map(|(tag, digest)| {
            NewEvent::new(
                EventType::TagDeleted,
                EventData {
                    tag: Some(tag.clone()),
                    digest: Some(digest.to_string()),
                    ..base.clone()
                },
            )
        })
        .collect();
    events.extend(deleted.iter().map(|(digest, media_type)| {
        NewEvent::new(
            EventType::ManifestDeleted,
            EventData {
                digest: Some(digest.to_string()),
                media_type: Some(media_type.clone()),
                ..base.clone()
            },
        )
    }));
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_reads_back_from_its_name() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                serde_json::json!(t.as_str())
            );
        }
        assert_eq!(EventType::parse("manifest.pulled"), None);
    }

    #[test]
    fn a_signed_push_that_moves_a_tag_makes_three_events() {
        let digest = Digest::sha256_of(b"sig");
        let subject = Digest::sha256_of(b"image");
        let events = PutEvents {
            repository: "team/app",
            digest: &digest,
            media_type: "application/vnd.oci.image.manifest.v1+json",
            size: 3,
            artifact_type: None,
            tags: vec!["sha256-x.sig".into()],
            moved: vec![("sha256-x.sig".into(), Some("sha256:old".into()))],
            attached: vec![
                (AttachmentKind::Signature, subject.clone()),
                (AttachmentKind::Signature, subject.clone()),
                (AttachmentKind::Other, subject.clone()),
            ],
        }
        .events(Journal::by("alice"));
        let types: Vec<_> = events.iter().map(|e| e.event_type).collect();
        assert_eq!(
            types,
            [
                EventType::ManifestPushed,
                EventType::TagMoved,
                EventType::SignatureStored
            ]
        );
        assert_eq!(events[1].data.previous.as_deref(), Some("sha256:old"));
        assert_eq!(
            events[2].data.subject.as_deref(),
            Some(subject.to_string().as_str())
        );
        assert!(events
            .iter()
            .all(|e| e.data.actor.as_deref() == Some("alice")));
    }

    #[test]
    fn a_delete_names_its_tags_then_its_manifests() {
        let d = Digest::sha256_of(b"m");
        let events = deletion_events(
            Journal::by("bob"),
            "team/app",
            &[(d.clone(), "application/vnd.oci.image.index.v1+json".into())],
            &[("v1".into(), d.clone())],
        );
        assert_eq!(events[0].event_type, EventType::TagDeleted);
        assert_eq!(events[1].event_type, EventType::ManifestDeleted);
        assert_eq!(
            events[1].data.media_type.as_deref(),
            Some("application/vnd.oci.image.index.v1+json")
        );
    }
}
