//! A Notary Project signature envelope, read from either encoding into one shape:
//! JWS (`application/jose+json`, the flattened JSON serialization) or COSE
//! (`application/cose`, a tagged COSE_Sign1). Reading checks the envelope's own rules
//! (the headers each signing scheme must have, the critical headers, the content
//! type); what the signature is worth is `super`'s business.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use coset::cbor::value::Value as Cbor;
use coset::{iana, Label, RegisteredLabel, RegisteredLabelWithPrivate, TaggedCborSerializable};
use serde::Deserialize;

pub const JWS_MEDIA_TYPE: &str = "application/jose+json";
pub const COSE_MEDIA_TYPE: &str = "application/cose";
/// The content type of the signed payload, in both encodings.
pub const PAYLOAD_CONTENT_TYPE: &str = "application/vnd.cncf.notary.payload.v1+json";

const SIGNING_SCHEME: &str = "io.cncf.notary.signingScheme";
const SIGNING_TIME: &str = "io.cncf.notary.signingTime";
const AUTHENTIC_SIGNING_TIME: &str = "io.cncf.notary.authenticSigningTime";
const EXPIRY: &str = "io.cncf.notary.expiry";
const SIGNING_AGENT: &str = "io.cncf.notary.signingAgent";
/// The RFC 3161 countersignature: JWS and COSE name it alike.
const TIMESTAMP_SIGNATURE: &str = "io.cncf.notary.timestampSignature";
/// The protected headers whose meaning this verifier knows; a critical header outside
/// this list fails verification, as the specification requires.
const UNDERSTOOD_CRITICAL: &[&str] = &[SIGNING_SCHEME, EXPIRY, AUTHENTIC_SIGNING_TIME];

/// The signature algorithms the specification allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    Es512,
}

impl Algorithm {
    fn from_jws(name: &str) -> Result<Self, String> {
        Ok(match name {
            "PS256" => Algorithm::Ps256,
            "PS384" => Algorithm::Ps384,
            "PS512" => Algorithm::Ps512,
            "ES256" => Algorithm::Es256,
            "ES384" => Algorithm::Es384,
            "ES512" => Algorithm::Es512,
            other => return Err(format!("signature algorithm {other:?} is not allowed")),
        })
    }

    fn from_cose(alg: &coset::Algorithm) -> Result<Self, String> {
        use iana::Algorithm as A;
        Ok(match alg {
            RegisteredLabelWithPrivate::Assigned(A::PS256) => Algorithm::Ps256,
            RegisteredLabelWithPrivate::Assigned(A::PS384) => Algorithm::Ps384,
            RegisteredLabelWithPrivate::Assigned(A::PS512) => Algorithm::Ps512,
            RegisteredLabelWithPrivate::Assigned(A::ES256) => Algorithm::Es256,
            RegisteredLabelWithPrivate::Assigned(A::ES384) => Algorithm::Es384,
            RegisteredLabelWithPrivate::Assigned(A::ES512) => Algorithm::Es512,
            other => return Err(format!("signature algorithm {other:?} is not allowed")),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Ps256 => "PS256",
            Algorithm::Ps384 => "PS384",
            Algorithm::Ps512 => "PS512",
            Algorithm::Es256 => "ES256",
            Algorithm::Es384 => "ES384",
            Algorithm::Es512 => "ES512",
        }
    }
}

/// Who vouches for the signing time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningScheme {
    /// `notary.x509`: the signer states the time; an RFC 3161 countersignature may
    /// prove it. Trust store type `ca` (and `tsa` for the countersignature).
    X509,
    /// `notary.x509.signingAuthority`: a signing authority states the time in the
    /// protected `authenticSigningTime`. Trust store type `signingAuthority`.
    SigningAuthority,
}

impl SigningScheme {
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "notary.x509" => Ok(SigningScheme::X509),
            "notary.x509.signingAuthority" => Ok(SigningScheme::SigningAuthority),
            other => Err(format!("signing scheme {other:?} is not known")),
        }
    }
}

/// An envelope, read and checked for shape; nothing in it is trusted yet.
#[derive(Debug)]
pub struct Envelope {
    pub algorithm: Algorithm,
    pub scheme: SigningScheme,
    /// The bytes the signature is over: the JWS signing input or COSE's Sig_structure.
    pub signed: Vec<u8>,
    pub signature: Vec<u8>,
    pub payload: Vec<u8>,
    /// `signingTime` (notary.x509): what the signer says.
    pub signing_time: Option<DateTime<Utc>>,
    /// `authenticSigningTime` (notary.x509.signingAuthority).
    pub authentic_signing_time: Option<DateTime<Utc>>,
    pub expiry: Option<DateTime<Utc>>,
    /// DER certificates, the signing certificate first.
    pub chain: Vec<Vec<u8>>,
    /// An RFC 3161 timestamp token over `signature`.
    pub timestamp: Option<Vec<u8>>,
    pub signing_agent: Option<String>,
}

/// Reads an envelope of `media_type`.
pub fn parse(media_type: &str, bytes: &[u8]) -> Result<Envelope, String> {
    match media_type {
        JWS_MEDIA_TYPE => parse_jws(bytes),
        COSE_MEDIA_TYPE => parse_cose(bytes),
        other => Err(format!("{other:?} is not a Notary Project envelope type")),
    }
}

/// The headers both encodings share, once read.
struct Protected {
    algorithm: Algorithm,
    content_type: Option<String>,
    scheme: Option<String>,
    signing_time: Option<DateTime<Utc>>,
    authentic_signing_time: Option<DateTime<Utc>>,
    expiry: Option<DateTime<Utc>>,
    critical: Vec<String>,
    /// Every protected header label, to check that critical ones are present.
    present: Vec<String>,
}

impl Protected {
    /// The specification's rules on protected headers.
    fn check(self) -> Result<(Algorithm, SigningScheme, Self), String> {
        if self.content_type.as_deref() != Some(PAYLOAD_CONTENT_TYPE) {
            return Err(format!(
                "the payload content type is {:?}, not {PAYLOAD_CONTENT_TYPE}",
                self.content_type.as_deref().unwrap_or("absent")
            ));
        }
        let scheme =
            SigningScheme::parse(self.scheme.as_deref().ok_or("no signing scheme header")?)?;
        for name in &self.critical {
            if !UNDERSTOOD_CRITICAL.contains(&name.as_str()) {
                return Err(format!("critical header {name:?} is not understood"));
            }
            if !self.present.contains(name) {
                return Err(format!("critical header {name:?} is absent"));
            }
        }
        let must_be_critical = |name: &str| -> Result<(), String> {
            if self.critical.iter().any(|c| c == name) {
                Ok(())
            } else {
                Err(format!("header {name:?} is not marked critical"))
            }
        };
        must_be_critical(SIGNING_SCHEME)?;
        if self.expiry.is_some() {
            must_be_critical(EXPIRY)?;
        }
        match scheme {
            SigningScheme::X509 => {
                if self.signing_time.is_none() {
                    return Err("notary.x509 requires a signing time".into());
                }
                if self.authentic_signing_time.is_some() {
                    return Err("notary.x509 has no authentic signing time".into());
                }
            }
            SigningScheme::SigningAuthority => {
                if self.authentic_signing_time.is_none() {
                    return Err(
                        "notary.x509.signingAuthority requires an authentic signing time".into(),
                    );
                }
                must_be_critical(AUTHENTIC_SIGNING_TIME)?;
            }
        }
        Ok((self.algorithm, scheme, self))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Jws {
    payload: String,
    protected: String,
    #[serde(default)]
    header: JwsHeader,
    signature: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct JwsHeader {
    #[serde(default)]
    x5c: Vec<String>,
    #[serde(rename = "io.cncf.notary.timestampSignature")]
    timestamp: Option<String>,
    #[serde(rename = "io.cncf.notary.signingAgent")]
    signing_agent: Option<String>,
}

fn parse_jws(bytes: &[u8]) -> Result<Envelope, String> {
    let jws: Jws = serde_json::from_slice(bytes).map_err(|e| format!("the JWS envelope: {e}"))?;
    let url = |field: &str, s: &str| {
        URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|e| format!("the JWS {field} is not base64url: {e}"))
    };
    let protected_bytes = url("protected header", &jws.protected)?;
    let payload = url("payload", &jws.payload)?;
    let signature = url("signature", &jws.signature)?;
    let headers: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&protected_bytes)
            .map_err(|e| format!("the JWS protected header is not a JSON object: {e}"))?;
    let text = |name: &str| -> Result<Option<String>, String> {
        match headers.get(name) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("header {name:?} is not a string")),
        }
    };
    let time = |name: &str| -> Result<Option<DateTime<Utc>>, String> {
        text(name)?
            .map(|s| {
                DateTime::parse_from_rfc3339(&s)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| format!("header {name:?} is not an RFC 3339 time: {e}"))
            })
            .transpose()
    };
    let critical = match headers.get("crit") {
        None => Vec::new(),
        Some(serde_json::Value::Array(names)) if !names.is_empty() => names
            .iter()
            .map(|n| n.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or("header \"crit\" lists a non-string")?,
        Some(_) => return Err("header \"crit\" is not a non-empty list of names".into()),
    };
    let protected = Protected {
        algorithm: Algorithm::from_jws(&text("alg")?.ok_or("no \"alg\" header")?)?,
        content_type: text("cty")?,
        scheme: text(SIGNING_SCHEME)?,
        signing_time: time(SIGNING_TIME)?,
        authentic_signing_time: time(AUTHENTIC_SIGNING_TIME)?,
        expiry: time(EXPIRY)?,
        critical,
        present: headers.keys().cloned().collect(),
    };
    let (algorithm, scheme, protected) = protected.check()?;
    let chain = jws
        .header
        .x5c
        .iter()
        .map(|c| {
            STANDARD
                .decode(c)
                .map_err(|e| format!("an x5c certificate is not base64: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let timestamp = jws
        .header
        .timestamp
        .map(|t| {
            STANDARD
                .decode(t)
                .map_err(|e| format!("the timestamp signature is not base64: {e}"))
        })
        .transpose()?;
    // JWS signs the two encoded parts as they appear in the envelope.
    let signed = format!("{}.{}", jws.protected, jws.payload).into_bytes();
    Ok(Envelope {
        algorithm,
        scheme,
        signed,
        signature,
        payload,
        signing_time: protected.signing_time,
        authentic_signing_time: protected.authentic_signing_time,
        expiry: protected.expiry,
        chain,
        timestamp,
        signing_agent: jws.header.signing_agent,
    })
}

fn label_name(label: &Label) -> String {
    match label {
        Label::Int(i) => i.to_string(),
        Label::Text(s) => s.clone(),
    }
}

/// A COSE time: a `tdate` tag 1 over integer seconds (what notation writes).
fn cose_time(name: &str, value: &Cbor) -> Result<DateTime<Utc>, String> {
    let Cbor::Tag(1, inner) = value else {
        return Err(format!("header {name:?} is not an epoch time (tag 1)"));
    };
    let secs = match inner.as_ref() {
        Cbor::Integer(i) => i64::try_from(i128::from(*i)).ok(),
        _ => None,
    }
    .ok_or_else(|| format!("header {name:?} is not integer seconds"))?;
    DateTime::from_timestamp(secs, 0).ok_or_else(|| format!("header {name:?} is out of range"))
}

fn parse_cose(bytes: &[u8]) -> Result<Envelope, String> {
    let sign1 = coset::CoseSign1::from_tagged_slice(bytes)
        .map_err(|e| format!("the COSE envelope is not a tagged COSE_Sign1: {e}"))?;
    let header = &sign1.protected.header;
    let mut present = Vec::new();
    if header.alg.is_some() {
        present.push("1".to_string());
    }
    if header.content_type.is_some() {
        present.push("3".to_string());
    }
    let mut protected = Protected {
        algorithm: Algorithm::from_cose(header.alg.as_ref().ok_or("no alg header")?)?,
        content_type: match &header.content_type {
            Some(RegisteredLabel::Text(t)) => Some(t.clone()),
            Some(RegisteredLabel::Assigned(a)) => Some(format!("{a:?}")),
            None => None,
        },
        scheme: None,
        signing_time: None,
        authentic_signing_time: None,
        expiry: None,
        critical: header
            .crit
            .iter()
            .map(|c| match c {
                RegisteredLabel::Text(t) => t.clone(),
                RegisteredLabel::Assigned(a) => (*a as i64).to_string(),
            })
            .collect(),
        present: Vec::new(),
    };
    for (label, value) in &header.rest {
        let name = label_name(label);
        match name.as_str() {
            SIGNING_SCHEME => {
                protected.scheme = Some(
                    value
                        .as_text()
                        .ok_or("the signing scheme is not text")?
                        .to_string(),
                )
            }
            SIGNING_TIME => protected.signing_time = Some(cose_time(&name, value)?),
            AUTHENTIC_SIGNING_TIME => {
                protected.authentic_signing_time = Some(cose_time(&name, value)?)
            }
            EXPIRY => protected.expiry = Some(cose_time(&name, value)?),
            _ => {}
        }
        present.push(name);
    }
    protected.present = present;
    let (algorithm, scheme, protected) = protected.check()?;

    let mut chain = Vec::new();
    let mut timestamp = None;
    let mut signing_agent = None;
    for (label, value) in &sign1.unprotected.rest {
        match label {
            // x5chain: one certificate, or an array of them, leaf first.
            Label::Int(33) => match value {
                Cbor::Bytes(der) => chain.push(der.clone()),
                Cbor::Array(items) => {
                    for item in items {
                        chain.push(
                            item.as_bytes()
                                .ok_or("an x5chain entry is not a byte string")?
                                .clone(),
                        );
                    }
                }
                _ => return Err("x5chain is neither bytes nor an array".into()),
            },
            Label::Text(t) if t == TIMESTAMP_SIGNATURE => {
                timestamp = Some(
                    value
                        .as_bytes()
                        .ok_or("the timestamp signature is not bytes")?
                        .clone(),
                )
            }
            Label::Text(t) if t == SIGNING_AGENT => {
                signing_agent = value.as_text().map(str::to_string)
            }
            _ => {}
        }
    }
    let payload = sign1
        .payload
        .clone()
        .ok_or("the COSE envelope has a detached payload")?;
    Ok(Envelope {
        algorithm,
        scheme,
        signed: sign1.tbs_data(b""),
        signature: sign1.signature.clone(),
        payload,
        signing_time: protected.signing_time,
        authentic_signing_time: protected.authentic_signing_time,
        expiry: protected.expiry,
        chain,
        timestamp,
        signing_agent,
    })
}
