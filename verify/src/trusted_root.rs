//! A Sigstore trusted root (`trusted_root.json`, the protobuf-specs `TrustedRoot` in its
//! JSON form): the Fulcio certificate authorities, the Rekor transparency logs and the
//! timestamp authorities a keyless trust root relies on. Everything is read and checked
//! once, at load, so verification never touches the network or the file again.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rustls_pki_types::{CertificateDer, TrustAnchor};
use serde::Deserialize;
use sigstore::crypto::CosignVerificationKey;
use x509_cert::der::Decode as _;
use x509_cert::Certificate;

/// Media types of the trusted root format this loader understands.
const MEDIA_TYPES: [&str; 2] = [
    "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
    "application/vnd.dev.sigstore.trustedroot.v0.2+json",
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRoot {
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    tlogs: Vec<RawLog>,
    #[serde(default)]
    certificate_authorities: Vec<RawAuthority>,
    #[serde(default)]
    ctlogs: Vec<RawLog>,
    #[serde(default)]
    timestamp_authorities: Vec<RawAuthority>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLog {
    #[serde(default)]
    base_url: String,
    public_key: RawPublicKey,
    log_id: RawLogId,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPublicKey {
    raw_bytes: String,
    #[serde(default)]
    valid_for: Option<RawValidity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLogId {
    key_id: String,
}

#[derive(Deserialize, Clone, Copy)]
struct RawValidity {
    #[serde(default)]
    start: Option<DateTime<Utc>>,
    #[serde(default)]
    end: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAuthority {
    #[serde(default)]
    uri: String,
    cert_chain: RawChain,
    #[serde(default)]
    valid_for: Option<RawValidity>,
}

#[derive(Deserialize)]
struct RawChain {
    certificates: Vec<RawCert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCert {
    raw_bytes: String,
}

/// A span of time during which a key or CA was in use; open ends are unbounded.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidFor {
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

impl ValidFor {
    fn from_raw(raw: Option<RawValidity>) -> Self {
        raw.map(|v| ValidFor {
            start: v.start,
            end: v.end,
        })
        .unwrap_or_default()
    }

    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start.is_none_or(|s| s <= t) && self.end.is_none_or(|e| t <= e)
    }
}

/// One transparency log (Rekor) and its key.
pub struct TransparencyLog {
    pub base_url: String,
    /// The log ID entries name (for Rekor v1, the SHA-256 of the DER public key).
    pub log_id: [u8; 32],
    pub key: CosignVerificationKey,
    pub valid_for: ValidFor,
}

/// One certificate authority (Fulcio, or a timestamp authority): its chain, leaf-most
/// first, root last.
pub struct Authority {
    pub uri: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub valid_for: ValidFor,
}

impl Authority {
    /// The trust anchor: the last certificate of the chain.
    pub fn anchor(&self) -> anyhow::Result<TrustAnchor<'_>> {
        let root = self.chain.last().expect("chains are never empty");
        webpki::anchor_from_trusted_cert(root)
            .map_err(|e| anyhow::anyhow!("the root certificate of {} is unusable: {e:?}", self.uri))
    }

    /// The certificates between the anchor and a leaf.
    pub fn intermediates(&self) -> &[CertificateDer<'static>] {
        &self.chain[..self.chain.len() - 1]
    }
}

/// The loaded trusted root.
pub struct TrustedRoot {
    pub certificate_authorities: Vec<Authority>,
    pub tlogs: Vec<TransparencyLog>,
    pub ctlogs: Vec<TransparencyLog>,
    pub timestamp_authorities: Vec<Authority>,
}

impl TrustedRoot {
    /// Reads and checks `path`; every error names the file and what is wrong in it.
    pub fn load(path: &Path) -> anyhow::Result<TrustedRoot> {
        let bytes = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Self::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn parse(bytes: &[u8]) -> anyhow::Result<TrustedRoot> {
        let raw: RawRoot = serde_json::from_slice(bytes)
            .map_err(|e| anyhow::anyhow!("not a Sigstore trusted root: {e}"))?;
        if !MEDIA_TYPES.contains(&raw.media_type.as_str()) {
            anyhow::bail!(
                "unsupported mediaType {:?} (expected {})",
                raw.media_type,
                MEDIA_TYPES.join(" or ")
            );
        }
        let certificate_authorities = raw
            .certificate_authorities
            .into_iter()
            .enumerate()
            .map(|(i, a)| authority(a, &format!("certificateAuthorities[{i}]")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if certificate_authorities.is_empty() {
            anyhow::bail!("no certificateAuthorities: keyless certificates cannot chain anywhere");
        }
        let tlogs = raw
            .tlogs
            .into_iter()
            .enumerate()
            .map(|(i, l)| log(l, &format!("tlogs[{i}]")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if tlogs.is_empty() {
            anyhow::bail!(
                "no tlogs: the signing time of a keyless signature cannot be established"
            );
        }
        let ctlogs = raw
            .ctlogs
            .into_iter()
            .enumerate()
            .map(|(i, l)| log(l, &format!("ctlogs[{i}]")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let timestamp_authorities = raw
            .timestamp_authorities
            .into_iter()
            .enumerate()
            .map(|(i, a)| authority(a, &format!("timestampAuthorities[{i}]")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(TrustedRoot {
            certificate_authorities,
            tlogs,
            ctlogs,
            timestamp_authorities,
        })
    }

    /// The transparency log with this log ID.
    pub fn tlog(&self, log_id: &[u8]) -> Option<&TransparencyLog> {
        self.tlogs.iter().find(|l| l.log_id.as_slice() == log_id)
    }

    /// What `signet trust check` prints about it.
    pub fn describe(&self) -> String {
        let uris = |a: &[Authority]| {
            a.iter()
                .map(|x| {
                    if x.uri.is_empty() {
                        "?"
                    } else {
                        x.uri.as_str()
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let logs = self
            .tlogs
            .iter()
            .map(|l| format!("{} ({})", l.base_url, &hex::encode(l.log_id)[..16]))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{} CA(s) [{}], {} Rekor log(s) [{}], {} CT log(s), {} timestamp authorit{}",
            self.certificate_authorities.len(),
            uris(&self.certificate_authorities),
            self.tlogs.len(),
            logs,
            self.ctlogs.len(),
            self.timestamp_authorities.len(),
            if self.timestamp_authorities.len() == 1 {
                "y"
            } else {
                "ies"
            }
        )
    }
}

fn log(raw: RawLog, at: &str) -> anyhow::Result<TransparencyLog> {
    let der = B64
        .decode(&raw.public_key.raw_bytes)
        .map_err(|_| anyhow::anyhow!("{at}: publicKey.rawBytes is not base64"))?;
    let key = CosignVerificationKey::try_from_der(&der)
        .map_err(|e| anyhow::anyhow!("{at}: publicKey is not a supported public key: {e}"))?;
    // Rekor v1 log IDs are the SHA-256 of the DER key; newer logs derive theirs
    // otherwise, so the declared ID is what entries are matched by.
    let log_id: [u8; 32] = B64
        .decode(&raw.log_id.key_id)
        .ok()
        .and_then(|id| id.try_into().ok())
        .ok_or_else(|| anyhow::anyhow!("{at}: logId.keyId is not 32 base64 bytes"))?;
    Ok(TransparencyLog {
        base_url: raw.base_url,
        log_id,
        key,
        valid_for: ValidFor::from_raw(raw.public_key.valid_for),
    })
}

fn authority(raw: RawAuthority, at: &str) -> anyhow::Result<Authority> {
    if raw.cert_chain.certificates.is_empty() {
        anyhow::bail!("{at}: certChain has no certificates");
    }
    let mut chain = Vec::new();
    for (i, c) in raw.cert_chain.certificates.iter().enumerate() {
        let der = B64
            .decode(&c.raw_bytes)
            .map_err(|_| anyhow::anyhow!("{at}: certificate {i} is not base64"))?;
        Certificate::from_der(&der)
            .map_err(|e| anyhow::anyhow!("{at}: certificate {i} is not DER X.509: {e}"))?;
        chain.push(CertificateDer::from(der));
    }
    let authority = Authority {
        uri: raw.uri,
        chain,
        valid_for: ValidFor::from_raw(raw.valid_for),
    };
    authority
        .anchor()
        .map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
    Ok(authority)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn public_good() -> Value {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../api-tests/tests/fixtures/keyless/public_good_trusted_root.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn parse(v: &Value) -> Result<TrustedRoot, String> {
        TrustedRoot::parse(&serde_json::to_vec(v).unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn the_public_good_root_loads() {
        let root = parse(&public_good()).unwrap();
        assert_eq!(root.certificate_authorities.len(), 2);
        assert_eq!(root.tlogs.len(), 2);
        assert!(!root.timestamp_authorities.is_empty());
        // The Rekor v1 log ID is the SHA-256 of its key.
        let rekor = root
            .tlogs
            .iter()
            .find(|l| l.base_url == "https://rekor.sigstore.dev")
            .unwrap();
        assert!(hex::encode(rekor.log_id).starts_with("c0d23d6ad406973f"));
        assert!(root.tlog(&rekor.log_id).is_some());
        let text = root.describe();
        assert!(
            text.contains("2 CA(s) [https://fulcio.sigstore.dev"),
            "{text}"
        );
        assert!(text.contains("2 Rekor log(s)"), "{text}");
    }

    #[test]
    fn broken_roots_say_what_is_wrong() {
        let good = public_good();
        type Edit = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|v| v["mediaType"] = json!("text/plain")),
                "unsupported mediaType",
            ),
            (
                Box::new(|v| v["certificateAuthorities"] = json!([])),
                "no certificateAuthorities",
            ),
            (Box::new(|v| v["tlogs"] = json!([])), "no tlogs"),
            (
                Box::new(|v| {
                    v["certificateAuthorities"][0]["certChain"]["certificates"][0]["rawBytes"] =
                        json!(B64.encode(b"not a certificate"))
                }),
                "certificateAuthorities[0]: certificate 0 is not DER X.509",
            ),
            (
                Box::new(|v| {
                    v["certificateAuthorities"][1]["certChain"]["certificates"] = json!([])
                }),
                "certificateAuthorities[1]: certChain has no certificates",
            ),
            (
                Box::new(|v| v["tlogs"][1]["publicKey"]["rawBytes"] = json!("%%%")),
                "tlogs[1]: publicKey.rawBytes is not base64",
            ),
            (
                Box::new(|v| v["tlogs"][0]["logId"]["keyId"] = json!(B64.encode([1u8; 8]))),
                "tlogs[0]: logId.keyId is not 32 base64 bytes",
            ),
        ];
        for (edit, expected) in cases {
            let mut v = good.clone();
            edit(&mut v);
            let err = parse(&v)
                .err()
                .unwrap_or_else(|| panic!("{expected}: accepted"));
            assert!(err.contains(expected), "{expected:?} not in {err:?}");
        }
        assert!(TrustedRoot::parse(b"[]").is_err());
        let missing = TrustedRoot::load(std::path::Path::new("/nonexistent/trusted_root.json"));
        assert!(missing
            .err()
            .unwrap()
            .to_string()
            .contains("cannot read /nonexistent/trusted_root.json"));
    }
}
