//! One configured endpoint, ready to send: its filters, its HTTP client (the endpoint's
//! CA, timeout, no redirects) and its signing key.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use signet_storage::events::StoredEvent;

use super::envelope::{self, EVENT_ID_HEADER, SIGNATURE_HEADER};
use super::{EndpointConfig, Format};
use crate::retention::Pattern;

pub struct Endpoint {
    pub name: String,
    url: reqwest::Url,
    client: reqwest::Client,
    secret: Option<Vec<u8>>,
    events: Vec<signet_storage::events::EventType>,
    repositories: Vec<Pattern>,
    format: Format,
}

/// What became of one try.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// The receiver answered 2xx.
    Delivered,
    /// The endpoint's format has no such event: nothing to send.
    NotApplicable,
}

impl Endpoint {
    pub fn open(config: &EndpointConfig) -> anyhow::Result<Self> {
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            headers.insert(
                HeaderName::from_bytes(name.as_bytes())?,
                HeaderValue::from_str(value)?,
            );
        }
        let mut client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs))
            // A receiver that redirects is answering wrongly; following it would send
            // signed events where nobody configured them.
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(headers)
            .user_agent(concat!("signet/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                anyhow::anyhow!("endpoint {:?}: {}: {e}", config.name, path.display())
            })?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)? {
                client = client.add_root_certificate(cert);
            }
        }
        let secret = match (&config.secret, &config.secret_file) {
            (Some(s), _) => Some(s.as_bytes().to_vec()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("endpoint {:?}: {}: {e}", config.name, path.display())
                })?;
                Some(text.trim_end_matches(['\r', '\n']).as_bytes().to_vec())
            }
            (None, None) => None,
        };
        Ok(Endpoint {
            name: config.name.clone(),
            url: reqwest::Url::parse(&config.url)?,
            client: client.build()?,
            secret,
            events: config.events.clone(),
            repositories: config.repositories.clone(),
            format: config.format,
        })
    }

    /// Whether the endpoint's filters let `event` through.
    pub fn wants(&self, event: &StoredEvent) -> bool {
        (self.events.is_empty() || self.events.contains(&event.event_type))
            && (self.repositories.is_empty()
                || self
                    .repositories
                    .iter()
                    .any(|p| p.matches(&event.data.repository)))
    }

    /// One try at delivering `event`; the error says why it failed.
    pub async fn send(&self, source: &str, event: &StoredEvent) -> Result<Sent, String> {
        let Some(body) = envelope::render(self.format, source, event) else {
            return Ok(Sent::NotApplicable);
        };
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, body.content_type)
            .header(EVENT_ID_HEADER, &event.event_id)
            .header("Idempotency-Key", &event.event_id);
        if let Some(secret) = &self.secret {
            request = request.header(SIGNATURE_HEADER, envelope::signature(secret, &body.bytes));
        }
        let response = request.body(body.bytes).send().await.map_err(|e| {
            // Without the URL, which may carry credentials; the causes say what failed.
            let e = e.without_url();
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(inner) = source {
                text = format!("{text}: {inner}");
                source = inner.source();
            }
            text
        })?;
        let status = response.status();
        if status.is_success() {
            Ok(Sent::Delivered)
        } else {
            Err(format!("HTTP {}", status.as_u16()))
        }
    }
}
