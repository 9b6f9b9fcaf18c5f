//! Keyless (Fulcio + Rekor) signatures, verified completely offline against a trust
//! root's `trusted_root.json` and identity: the short-lived leaf certificate must chain
//! to a trusted Fulcio CA with the code-signing usage, name the configured OIDC issuer
//! and subject, and its key must verify the signature; a Rekor entry signed by a trusted
//! log key must record exactly this signature, and its integration time must fall inside
//! the certificate's validity (the certificate is only minutes long, so that time is
//! what proves the key was used while the certificate was valid).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use signet_oci::Digest;
use sigstore::crypto::{CosignVerificationKey, Signature};
use x509_cert::der::asn1::{ObjectIdentifier, Utf8StringRef};
use x509_cert::der::{Decode as _, Encode as _};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

use crate::cosign::{pae, SIMPLESIGNING};
use crate::reference::{self, SignatureFormat};
use crate::rekor::{self, Claim, Entry};
use crate::sct;
use crate::timestamp;
use crate::trust::TrustRoot;
use crate::trusted_root::TrustedRoot;
use crate::Verdict;

pub const CERT_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
pub const BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";
/// `{"SignedRFC3161Timestamp": base64}` from `cosign sign --timestamp-server-url`.
pub const TIMESTAMP_ANNOTATION: &str = "dev.sigstore.cosign/rfc3161timestamp";

/// Fulcio's OIDC issuer extension, raw string value (deprecated, still issued).
const OID_ISSUER_V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.1");
/// Fulcio's OIDC issuer extension, DER UTF8String value.
const OID_ISSUER_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.8");
/// id-kp-codeSigning (1.3.6.1.5.5.7.3.3), DER contents.
const EKU_CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// Who must have signed: the certificate's SAN (email or URI).
pub enum SubjectMatch {
    Exact(String),
    Regex(regex::Regex),
}

impl SubjectMatch {
    fn matches(&self, san: &str) -> bool {
        match self {
            SubjectMatch::Exact(s) => s == san,
            SubjectMatch::Regex(r) => r.is_match(san),
        }
    }

    fn describe(&self) -> String {
        match self {
            SubjectMatch::Exact(s) => format!("subject {s:?}"),
            // Print the pattern as configured, without the anchors added at load.
            SubjectMatch::Regex(r) => {
                let p = r.as_str();
                let p = p
                    .strip_prefix("^(?:")
                    .and_then(|p| p.strip_suffix(")$"))
                    .unwrap_or(p);
                format!("subject matching /{p}/")
            }
        }
    }
}

/// A keyless trust root: the trusted root file and the identity it accepts.
pub struct KeylessRoot {
    pub path: PathBuf,
    pub trusted_root: Arc<TrustedRoot>,
    pub issuer: String,
    pub subject: SubjectMatch,
}

impl KeylessRoot {
    /// Loads `trusted_root` and checks the identity settings; errors do not name the
    /// root (the caller does).
    pub fn load(
        trusted_root: &Path,
        issuer: &str,
        subject: &str,
        subject_regex: &str,
    ) -> anyhow::Result<KeylessRoot> {
        if issuer.is_empty() {
            anyhow::bail!("a keyless root needs `issuer` (the OIDC issuer URL)");
        }
        let subject = match (subject.is_empty(), subject_regex.is_empty()) {
            (false, true) => SubjectMatch::Exact(subject.to_string()),
            (true, false) => {
                // Anchored: a pattern must describe the whole identity, never a part.
                let r = regex::Regex::new(&format!("^(?:{subject_regex})$"))
                    .map_err(|e| anyhow::anyhow!("subject_regex is not a valid pattern: {e}"))?;
                SubjectMatch::Regex(r)
            }
            _ => anyhow::bail!("a keyless root needs exactly one of `subject` and `subject_regex`"),
        };
        let root = TrustedRoot::load(trusted_root)?;
        Ok(KeylessRoot {
            path: trusted_root.to_path_buf(),
            trusted_root: Arc::new(root),
            issuer: issuer.to_string(),
            subject,
        })
    }

    /// What `signet trust check` prints.
    pub fn describe(&self) -> String {
        format!(
            "keyless, issuer {:?}, {}, trusted root {} ({})",
            self.issuer,
            self.subject.describe(),
            self.path.display(),
            self.trusted_root.describe()
        )
    }
}

/// The leaf certificate, with what verification needs from it.
pub struct Leaf {
    pub der: Vec<u8>,
    pub sans: Vec<String>,
    pub issuer: Option<String>,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub key: CosignVerificationKey,
}

impl Leaf {
    pub fn parse(der: &[u8]) -> Result<Leaf, String> {
        let cert = Certificate::from_der(der)
            .map_err(|e| format!("malformed: the certificate is not DER X.509: {e}"))?;
        let tbs = cert.tbs_certificate();
        let time = |t: &x509_cert::time::Time| {
            DateTime::<Utc>::from_timestamp(t.to_unix_duration().as_secs() as i64, 0)
                .unwrap_or_default()
        };
        let mut sans = Vec::new();
        if let Ok(Some((_, SubjectAltName(names)))) = tbs.get_extension::<SubjectAltName>() {
            for name in names {
                match name {
                    GeneralName::Rfc822Name(s) | GeneralName::UniformResourceIdentifier(s) => {
                        sans.push(s.to_string())
                    }
                    _ => {}
                }
            }
        }
        let mut issuer_v1 = None;
        let mut issuer_v2 = None;
        for ext in tbs.extensions().into_iter().flatten() {
            let value = ext.extn_value.as_bytes();
            if ext.extn_id == OID_ISSUER_V2 {
                issuer_v2 = Utf8StringRef::from_der(value).ok().map(|s| s.to_string());
            } else if ext.extn_id == OID_ISSUER_V1 {
                issuer_v1 = std::str::from_utf8(value).ok().map(str::to_string);
            }
        }
        let key = CosignVerificationKey::try_from(tbs.subject_public_key_info())
            .map_err(|e| format!("malformed: the certificate's key is not supported: {e}"))?;
        Ok(Leaf {
            der: der.to_vec(),
            sans,
            issuer: issuer_v2.or(issuer_v1),
            not_before: time(&tbs.validity().not_before),
            not_after: time(&tbs.validity().not_after),
            key,
        })
    }
}

/// Everything a keyless signature brings along.
pub struct Evidence<'a> {
    pub leaf_der: Vec<u8>,
    /// Certificates shipped with the signature (intermediates, maybe the root); only
    /// helpers for path building, never trusted themselves.
    pub chain: Vec<CertificateDer<'static>>,
    pub entry: Option<Entry>,
    /// RFC 3161 timestamps (DER) over `stamped`, from a timestamp authority.
    pub timestamps: Vec<Vec<u8>>,
    /// What the timestamps are over: the signature, or (cosign attestations) the
    /// signed envelope.
    pub stamped: &'a [u8],
    /// The bytes the signature is over (payload, DSSE PAE, or the manifest).
    pub signed: &'a [u8],
    pub signature: &'a [u8],
    pub claim: Claim<'a>,
}

/// The name of the keyless root that accepts the evidence, or the most telling reason
/// none does (the failure that got furthest through the checks).
pub fn verify(roots: &[&TrustRoot], ev: &Evidence<'_>) -> Verdict {
    let keyless: Vec<(&str, &KeylessRoot)> = roots
        .iter()
        .filter_map(|r| r.keyless.as_ref().map(|k| (r.name.as_str(), k)))
        .collect();
    if keyless.is_empty() {
        return Verdict::no_trust_root();
    }
    let leaf = match Leaf::parse(&ev.leaf_der) {
        Ok(l) => l,
        Err(e) => return Verdict::invalid(e),
    };
    if leaf
        .key
        .verify_signature(Signature::Raw(ev.signature), ev.signed)
        .is_err()
    {
        return Verdict::invalid("bad signature: the certificate's key does not verify it");
    }
    let Some(entry) = &ev.entry else {
        return Verdict::invalid(
            "no Rekor entry: without one the signing time cannot be established offline",
        );
    };
    if let Err(e) = rekor::check_body(&entry.body, &ev.claim, &leaf.der) {
        return Verdict::invalid(format!("Rekor entry mismatch: {e}"));
    }
    let mut best: Option<(u8, String)> = None;
    for (name, root) in keyless {
        match check_root(root, &leaf, ev, entry) {
            Ok(()) => return Verdict::valid(name, None).signed_by(leaf.sans.first().cloned()),
            Err((stage, reason)) => {
                if best.as_ref().is_none_or(|(s, _)| stage > *s) {
                    best = Some((stage, format!("{reason} (root {name})")));
                }
            }
        }
    }
    Verdict::invalid(best.map(|(_, r)| r).unwrap_or_default())
}

fn check_root(
    root: &KeylessRoot,
    leaf: &Leaf,
    ev: &Evidence<'_>,
    entry: &Entry,
) -> Result<(), (u8, String)> {
    let verified = entry.verify(&root.trusted_root).map_err(|e| (1, e))?;
    // Every signed time must fall inside the certificate's validity: Rekor's (under
    // its SET) and each timestamp authority's.
    let mut times = Vec::new();
    if let Some(t) = verified.integrated_time {
        let when = DateTime::<Utc>::from_timestamp(t, 0).unwrap_or_default();
        times.push(("Rekor integrated it", when));
    }
    for token in &ev.timestamps {
        let when = timestamp::verify(token, ev.stamped, &root.trusted_root)
            .map_err(|e| (1, format!("timestamp: {e}")))?;
        times.push(("the timestamp authority dated it", when));
    }
    let Some(&(_, first)) = times.first() else {
        return Err((
            1,
            "no signed time: the Rekor entry has no signed entry timestamp and no RFC 3161 timestamp dates the signature"
                .into(),
        ));
    };
    for (what, when) in &times {
        if *when < leaf.not_before || *when > leaf.not_after {
            return Err((
                2,
                format!(
                    "signing time outside the certificate's validity: {what} at {when}, the certificate is valid from {} to {}",
                    leaf.not_before, leaf.not_after
                ),
            ));
        }
    }
    chain_to_fulcio(&root.trusted_root, leaf, &ev.chain, first.timestamp()).map_err(|e| (3, e))?;
    certificate_transparency(&root.trusted_root, leaf, &ev.chain).map_err(|e| (3, e))?;
    let issuer = leaf.issuer.as_deref().unwrap_or_default();
    if issuer != root.issuer {
        return Err((
            4,
            format!(
                "issuer mismatch: the certificate's OIDC issuer is {issuer:?}, expected {:?}",
                root.issuer
            ),
        ));
    }
    if !leaf.sans.iter().any(|s| root.subject.matches(s)) {
        return Err((
            5,
            format!(
                "identity mismatch: the certificate is for {:?}, expected {}",
                leaf.sans,
                root.subject.describe()
            ),
        ));
    }
    Ok(())
}

/// The leaf chains, at `time`, to a Fulcio CA of the trusted root valid at that time,
/// with every signature on the path checked and the code-signing usage required.
fn chain_to_fulcio(
    root: &TrustedRoot,
    leaf: &Leaf,
    shipped: &[CertificateDer<'static>],
    time: i64,
) -> Result<(), String> {
    let when = DateTime::<Utc>::from_timestamp(time, 0).unwrap_or_default();
    let cas: Vec<_> = root
        .certificate_authorities
        .iter()
        .filter(|a| a.valid_for.contains(when))
        .collect();
    if cas.is_empty() {
        return Err(format!(
            "certificate chain: no Fulcio CA of the trusted root was valid at {when}"
        ));
    }
    let anchors: Vec<TrustAnchor<'_>> = cas.iter().filter_map(|a| a.anchor().ok()).collect();
    let mut intermediates: Vec<CertificateDer<'_>> = cas
        .iter()
        .flat_map(|a| a.intermediates().iter().cloned())
        .collect();
    intermediates.extend(shipped.iter().cloned());
    let der = CertificateDer::from(leaf.der.as_slice());
    let ee = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| format!("certificate chain: the certificate is unusable: {e:?}"))?;
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &intermediates,
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(time.max(0) as u64)),
        webpki::KeyUsage::required(EKU_CODE_SIGNING),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| format!("certificate chain: the certificate does not chain to a trusted Fulcio CA with code signing ({e:?})"))
}

/// When the trusted root lists CT logs (as the public-good one does), the certificate
/// must embed an SCT from one of them, signed over it as issued by its CA.
fn certificate_transparency(
    root: &TrustedRoot,
    leaf: &Leaf,
    shipped: &[CertificateDer<'static>],
) -> Result<(), String> {
    if root.ctlogs.is_empty() {
        return Ok(());
    }
    let cert = Certificate::from_der(&leaf.der)
        .map_err(|e| format!("malformed: the certificate is not DER X.509: {e}"))?;
    let issuer = cert.tbs_certificate().issuer();
    let mut last = "the issuing CA's certificate is unknown".to_string();
    let candidates = root
        .certificate_authorities
        .iter()
        .flat_map(|a| a.chain.iter())
        .chain(shipped.iter());
    for der in candidates {
        let Ok(ca) = Certificate::from_der(der) else {
            continue;
        };
        if ca.tbs_certificate().subject() != issuer {
            continue;
        }
        let Ok(spki) = ca.tbs_certificate().subject_public_key_info().to_der() else {
            continue;
        };
        match sct::verify(&leaf.der, &spki, root) {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(format!("certificate transparency: {last}"))
}

/// A cosign `.sig` or `.att` layer that carries a certificate annotation.
pub fn verify_cosign_layer(
    roots: &[&TrustRoot],
    layer: &Value,
    bytes: &[u8],
    repo: &str,
    subject: &Digest,
    media_type: &str,
) -> Verdict {
    let annotations = &layer["annotations"];
    let cert_pem = annotations[CERT_ANNOTATION].as_str().unwrap_or_default();
    let Some(leaf_der) = rekor::pem_blocks(cert_pem).into_iter().next() else {
        return Verdict::invalid(format!(
            "malformed: the {CERT_ANNOTATION} annotation holds no PEM certificate"
        ));
    };
    let chain = rekor::pem_blocks(annotations[CHAIN_ANNOTATION].as_str().unwrap_or_default())
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let entry = match annotations[BUNDLE_ANNOTATION].as_str() {
        None => None,
        Some(b) => match cosign_bundle_entry(b) {
            Ok(e) => Some(e),
            Err(e) => {
                return Verdict::invalid(format!(
                    "malformed: the {BUNDLE_ANNOTATION} annotation: {e}"
                ))
            }
        },
    };
    let timestamps = match annotations[TIMESTAMP_ANNOTATION].as_str() {
        None => Vec::new(),
        Some(t) => match serde_json::from_str::<Value>(t)
            .ok()
            .and_then(|v| v["SignedRFC3161Timestamp"].as_str().map(str::to_string))
            .and_then(|b| B64.decode(b).ok())
        {
            Some(token) => vec![token],
            None => {
                return Verdict::invalid(format!(
                    "malformed: the {TIMESTAMP_ANNOTATION} annotation"
                ))
            }
        },
    };
    if media_type == SIMPLESIGNING {
        let Some(sig) = annotations[crate::cosign::SIG_ANNOTATION]
            .as_str()
            .and_then(|s| B64.decode(s.trim()).ok())
        else {
            return Verdict::invalid("malformed: no base64 signature annotation");
        };
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let ev = Evidence {
            leaf_der,
            chain,
            entry,
            timestamps,
            stamped: &sig,
            signed: bytes,
            signature: &sig,
            claim: Claim::Message {
                digest,
                signature: &sig,
            },
        };
        let verdict = verify(roots, &ev);
        if !verdict.is_valid() {
            return verdict;
        }
        if let Err(e) = simple_signing_names(bytes, subject) {
            return Verdict::invalid(e);
        }
        // The docker-reference, as the accepting root's setting says.
        let payload: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        let root = roots
            .iter()
            .find(|r| verdict.root.as_deref() == Some(&r.name));
        if let Some(root) = root {
            if let Err(why) = reference::check(root, SignatureFormat::Cosign, &payload, repo) {
                return Verdict::invalid(why);
            }
        }
        return verdict;
    }
    // A DSSE envelope: the first signature the certificate's key made.
    let Ok(envelope) = serde_json::from_slice::<Value>(bytes) else {
        return Verdict::invalid("malformed: the DSSE envelope is not JSON");
    };
    let Some(payload) = envelope["payload"]
        .as_str()
        .and_then(|p| B64.decode(p).ok())
    else {
        return Verdict::invalid("malformed: the DSSE payload is not base64");
    };
    let payload_type = envelope["payloadType"].as_str().unwrap_or_default();
    let Some(sig) = envelope["signatures"][0]["sig"]
        .as_str()
        .and_then(|s| B64.decode(s).ok())
    else {
        return Verdict::invalid("malformed: the DSSE envelope has no base64 signature");
    };
    let message = pae(payload_type, &payload);
    let ev = Evidence {
        leaf_der,
        chain,
        entry,
        timestamps,
        stamped: bytes,
        signed: &message,
        signature: &sig,
        claim: Claim::Dsse {
            payload: &payload,
            signature: &sig,
        },
    };
    statement_verdict(verify(roots, &ev), &payload, subject)
}

/// A valid verdict on a DSSE envelope becomes invalid unless its in-toto statement
/// names `subject`; either way it records the predicate type.
pub fn statement_verdict(mut verdict: Verdict, payload: &[u8], subject: &Digest) -> Verdict {
    let statement: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
    let predicate_type = statement["predicateType"].as_str().map(str::to_string);
    if verdict.is_valid() {
        let (alg, hex) = (subject.algorithm().name(), subject.hex());
        let names = statement["subject"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["digest"][alg].as_str() == Some(hex));
        if !names {
            verdict = Verdict::invalid(format!(
                "digest mismatch: the statement's subjects do not include {subject}"
            ));
        }
    }
    verdict.predicate_type = predicate_type;
    verdict
}

/// The simple-signing payload names `subject`.
pub fn simple_signing_names(payload: &[u8], subject: &Digest) -> Result<(), String> {
    let payload: Value = serde_json::from_slice(payload)
        .map_err(|e| format!("malformed: simple-signing payload: {e}"))?;
    let named = payload["critical"]["image"]["docker-manifest-digest"]
        .as_str()
        .unwrap_or_default();
    if named != subject.to_string() {
        return Err(format!(
            "digest mismatch: the payload names {named:?}, the subject is {subject}"
        ));
    }
    Ok(())
}

/// The Rekor entry of cosign's bundle annotation:
/// `{"SignedEntryTimestamp": b64, "Payload": {"body", "integratedTime", "logIndex", "logID"}}`.
fn cosign_bundle_entry(text: &str) -> Result<Entry, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let p = &v["Payload"];
    let body = p["body"]
        .as_str()
        .and_then(|b| B64.decode(b).ok())
        .ok_or("Payload.body is not base64")?;
    let set = v["SignedEntryTimestamp"]
        .as_str()
        .and_then(|s| B64.decode(s).ok())
        .ok_or("SignedEntryTimestamp is not base64")?;
    let log_id = p["logID"]
        .as_str()
        .and_then(|s| hex::decode(s).ok())
        .ok_or("Payload.logID is not hex")?;
    Ok(Entry {
        body,
        integrated_time: p["integratedTime"]
            .as_i64()
            .ok_or("Payload.integratedTime is not a number")?,
        log_index: p["logIndex"]
            .as_i64()
            .ok_or("Payload.logIndex is not a number")?,
        log_id,
        set: Some(set),
        proof: None,
    })
}
