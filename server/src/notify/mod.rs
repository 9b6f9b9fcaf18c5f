//! Notifications (`[notifications]`): events about what changed, delivered to HTTP
//! endpoints at least once, in order.
//!
//! - The write path appends an event in the transaction of each change
//!   (`signet_storage::events`); `log` appends those that belong to no write (a pull
//!   refused, a sync run finished, a verdict reached), in batches.
//! - `envelope`: an event as an endpoint receives it: CloudEvents 1.0 JSON, or
//!   distribution's notification envelope; the HMAC signature header.
//! - `endpoint`: one configured endpoint: its filters and its HTTP client.
//! - `worker`: delivery. Under a lease (one replica at a time), each endpoint walks the
//!   outbox from its cursor, in event order, retrying with exponential backoff; after
//!   `max_attempts` an event becomes a dead letter and the walk goes on. Redelivered
//!   dead letters (`signet events redeliver`) go out first.

pub mod endpoint;
pub mod envelope;
pub mod log;
pub mod worker;

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use signet_storage::events::EventType;

use crate::retention::Pattern;

pub use log::EventLog;

/// `[notifications]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsConfig {
    /// `[[notifications.endpoints]]`. With none, no event is recorded.
    pub endpoints: Vec<EndpointConfig>,
    /// The CloudEvents `source` of every event (and distribution's `source.instanceID`).
    pub source: String,
    /// Tries per event before it becomes a dead letter.
    pub max_attempts: u32,
    /// The wait after the first failed try; it doubles after each, up to
    /// `max_backoff_secs`.
    pub initial_backoff_ms: u64,
    pub max_backoff_secs: u64,
    /// Events every endpoint has finished with are deleted after this long (dead letters
    /// stay until redelivered).
    pub keep_secs: u64,
    /// How long a replica's hold on the delivery lease lasts without renewal: after a
    /// crash, delivery resumes on another replica (or the restarted one) within this.
    pub lease_secs: u64,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            source: "/signet".into(),
            max_attempts: 8,
            initial_backoff_ms: 500,
            max_backoff_secs: 300,
            keep_secs: 7 * 24 * 3600,
            lease_secs: 15,
        }
    }
}

impl NotificationsConfig {
    pub fn enabled(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// Refuses what would misdeliver: two endpoints of one name (they would share a
    /// cursor), a URL that is not http(s), no tries at all.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut names = std::collections::HashSet::new();
        for e in &self.endpoints {
            if !names.insert(e.name.as_str()) {
                anyhow::bail!("two [[notifications.endpoints]] are named {:?}", e.name);
            }
            if e.name.is_empty() {
                anyhow::bail!("a [[notifications.endpoints]] entry needs a name");
            }
            let url = reqwest::Url::parse(&e.url)
                .map_err(|err| anyhow::anyhow!("endpoint {:?}: url: {err}", e.name))?;
            if !matches!(url.scheme(), "http" | "https") {
                anyhow::bail!("endpoint {:?}: url must be http or https", e.name);
            }
            if e.secret.is_some() && e.secret_file.is_some() {
                anyhow::bail!("endpoint {:?}: secret or secret_file, not both", e.name);
            }
            if e.timeout_secs == 0 {
                anyhow::bail!("endpoint {:?}: timeout_secs must be at least 1", e.name);
            }
        }
        if self.max_attempts == 0 {
            anyhow::bail!("[notifications] max_attempts must be at least 1");
        }
        Ok(())
    }
}

/// How an endpoint wants its events.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One CloudEvents 1.0 event per request, structured mode.
    #[default]
    CloudEvents,
    /// distribution's `{"events": [...]}` envelope: pushes and deletes only.
    Distribution,
}

/// `[[notifications.endpoints]]`.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Names the endpoint's place in the outbox: renaming it starts it afresh.
    pub name: String,
    pub url: String,
    /// CA certificates (PEM) to trust besides the system's, for an internal receiver.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Headers sent with every request (an Authorization header, say).
    #[serde(default)]
    pub headers: HashMap<String, String>,
    /// The HMAC-SHA256 key of the `X-Signet-Signature` header.
    #[serde(default, skip_serializing)]
    pub secret: Option<String>,
    /// The key read from a file instead (trailing newline dropped).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Event types to send; empty sends all.
    #[serde(default)]
    pub events: Vec<EventType>,
    /// Repository patterns to send events of; empty sends all.
    #[serde(default)]
    pub repositories: Vec<Pattern>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    #[serde(default)]
    pub format: Format,
}

impl EndpointConfig {
    /// The URL as shown to operators and logs: scheme, host and port, no credentials,
    /// path or query (a webhook URL often carries its token there).
    pub fn shown_url(&self) -> String {
        match reqwest::Url::parse(&self.url) {
            Ok(u) => format!(
                "{}://{}{}/…",
                u.scheme(),
                u.host_str().unwrap_or(""),
                u.port().map(|p| format!(":{p}")).unwrap_or_default()
            ),
            Err(_) => "(unreadable url)".into(),
        }
    }
}

/// Without the secret, the header values or more of the URL than its host.
impl std::fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("name", &self.name)
            .field("url", &self.shown_url())
            .field("ca_file", &self.ca_file)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("secret_file", &self.secret_file)
            .field("events", &self.events)
            .field("repositories", &self.repositories)
            .field("timeout_secs", &self.timeout_secs)
            .field("format", &self.format)
            .finish()
    }
}

fn default_timeout() -> u64 {
    10
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<NotificationsConfig> {
        let config: NotificationsConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn an_endpoint_reads_with_its_filters() {
        let config = parse(
            r#"
            [[endpoints]]
            name = "ci"
            url = "https://ci.example/hook"
            secret = "s3cret"
            events = ["manifest.pushed", "signature.stored"]
            repositories = ["team/**"]
            headers = { Authorization = "Bearer t" }
            format = "distribution"
            "#,
        )
        .unwrap();
        let e = &config.endpoints[0];
        assert_eq!(
            e.events,
            [EventType::ManifestPushed, EventType::SignatureStored]
        );
        assert!(e.repositories[0].matches("team/app"));
        assert_eq!(e.format, Format::Distribution);
        assert_eq!(e.timeout_secs, 10);
        assert!(config.enabled());
        let shown = format!("{e:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("Bearer t"),
            "{shown}"
        );
        let hook = EndpointConfig {
            url: "https://user:pw@hooks.example.com:8443/services/T0K3N?key=k".into(),
            ..e.clone()
        };
        assert_eq!(hook.shown_url(), "https://hooks.example.com:8443/…");
    }

    #[test]
    fn what_would_misdeliver_is_refused() {
        let two = r#"
            [[endpoints]]
            name = "a"
            url = "http://127.0.0.1:1/"
            [[endpoints]]
            name = "a"
            url = "http://127.0.0.1:2/"
        "#;
        assert!(parse(two).unwrap_err().to_string().contains("two"));
        let scheme = "[[endpoints]]\nname = \"a\"\nurl = \"file:///etc/passwd\"\n";
        assert!(parse(scheme).is_err());
        let unknown =
            "[[endpoints]]\nname = \"a\"\nurl = \"http://h/\"\nevents = [\"manifest.pulled\"]\n";
        assert!(parse(unknown).is_err());
        let both = "[[endpoints]]\nname = \"a\"\nurl = \"http://h/\"\nsecret = \"x\"\nsecret_file = \"/k\"\n";
        assert!(parse(both).is_err());
    }
}
