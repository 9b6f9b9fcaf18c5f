//! Notary Project (notation) signatures: referrers of artifact type
//! `application/vnd.cncf.notary.signature` whose one layer is a JWS or COSE envelope
//! over a payload naming the signed manifest, signed with an X.509 chain.
//!
//! Verification follows the Notary Project trust policy's validations:
//! - integrity (always enforced): the envelope's shape and critical headers, the
//!   algorithm matching the signing certificate's key, the signature, and a payload
//!   that names the subject;
//! - authenticity (always enforced here): the chain to the root's trust store for the
//!   signing scheme (`ca` for `notary.x509`, `signingAuthority` for
//!   `notary.x509.signingAuthority`), and the signer among the trusted identities. A
//!   level or override that would only log it makes the root's pull policy `audit`
//!   instead (see [`NotationRoot::pull_policy`]): the verdict never calls an untrusted
//!   signer valid;
//! - authentic timestamp: the chain valid at a trusted time: an RFC 3161
//!   countersignature from the `tsa` store, the signing authority's
//!   `authenticSigningTime`, or else now;
//! - expiry: the envelope's `expiry` not passed;
//! - revocation is not checked: verification is offline (no OCSP or CRL fetches).
//!
//! Authentic timestamp and expiry are enforced, logged (the verdict stays valid and
//! its reason says what was logged) or skipped as the root's level says.

pub mod envelope;
pub mod identity;
pub mod trust_policy;

#[cfg(any(test, feature = "test-support"))]
pub mod testing;

use std::collections::BTreeMap;

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use chrono::{DateTime, Utc};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use serde::{Deserialize, Serialize};
use x509_cert::der::Decode as _;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage};
use x509_cert::spki::ObjectIdentifier;
use x509_cert::Certificate;

use crate::trust::{PolicyMode, TrustRoot};
use crate::trusted_root::{Authority, ValidFor};
use crate::Verdict;
use envelope::{Algorithm, Envelope, SigningScheme};
use identity::{DistinguishedName, TrustedIdentities};
use signet_oci::Digest;

/// The artifact type of a Notary Project signature manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.cncf.notary.signature";
pub use envelope::{COSE_MEDIA_TYPE, JWS_MEDIA_TYPE};

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
const OID_CODE_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");
/// id-kp-codeSigning, DER contents, for webpki.
const EKU_CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// A trust policy's verification level.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    Strict,
    Permissive,
    Audit,
    Skip,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Strict => "strict",
            Level::Permissive => "permissive",
            Level::Audit => "audit",
            Level::Skip => "skip",
        }
    }
}

/// What a failed validation does.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Enforce,
    Log,
    Skip,
}

/// The action of each validation a level leaves open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checks {
    pub authenticity: Action,
    pub authentic_timestamp: Action,
    pub expiry: Action,
}

impl Checks {
    /// The level's actions, with `overrides` (`authenticity`, `authenticTimestamp`,
    /// `expiry`, `revocation`) applied; integrity cannot be overridden.
    pub fn of(level: Level, overrides: &BTreeMap<String, Action>) -> Result<Checks, String> {
        use Action::*;
        let mut checks = match level {
            Level::Strict => Checks {
                authenticity: Enforce,
                authentic_timestamp: Enforce,
                expiry: Enforce,
            },
            Level::Permissive => Checks {
                authenticity: Enforce,
                authentic_timestamp: Log,
                expiry: Log,
            },
            Level::Audit => Checks {
                authenticity: Log,
                authentic_timestamp: Log,
                expiry: Log,
            },
            Level::Skip => Checks {
                authenticity: Skip,
                authentic_timestamp: Skip,
                expiry: Skip,
            },
        };
        if level == Level::Skip && !overrides.is_empty() {
            return Err("the skip level takes no overrides".into());
        }
        for (name, action) in overrides {
            if *action == Skip && name != "revocation" {
                return Err(format!("{name} can be enforced or logged, not skipped"));
            }
            match name.as_str() {
                "authenticity" => checks.authenticity = *action,
                "authenticTimestamp" => checks.authentic_timestamp = *action,
                "expiry" => checks.expiry = *action,
                // Offline: revocation is never checked, whatever is asked.
                "revocation" => continue,
                "integrity" => return Err("integrity cannot be overridden".into()),
                other => return Err(format!("{other:?} is not a validation to override")),
            }
        }
        Ok(checks)
    }
}

/// When an RFC 3161 countersignature is verified (`verifyTimestamp` in a trust policy).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum VerifyTimestamp {
    #[default]
    Always,
    /// Only when the signing chain is not valid now.
    AfterCertExpiry,
}

/// What a root trusts for Notary Project signatures.
pub struct NotationRoot {
    /// Trust store `ca`: anchors for `notary.x509`.
    pub ca: Vec<CertificateDer<'static>>,
    /// Trust store `signingAuthority`: anchors for `notary.x509.signingAuthority`.
    pub signing_authority: Vec<CertificateDer<'static>>,
    /// Trust store `tsa`: each certificate a timestamp authority.
    pub tsa: Vec<Authority>,
    pub identities: TrustedIdentities,
    pub level: Level,
    pub checks: Checks,
    pub verify_timestamp: VerifyTimestamp,
}

impl NotationRoot {
    pub fn new(
        ca: Vec<CertificateDer<'static>>,
        signing_authority: Vec<CertificateDer<'static>>,
        tsa: Vec<CertificateDer<'static>>,
        identities: TrustedIdentities,
        level: Level,
        checks: Checks,
        verify_timestamp: VerifyTimestamp,
    ) -> Self {
        let tsa = tsa
            .into_iter()
            .enumerate()
            .map(|(i, cert)| Authority {
                uri: format!("tsa certificate {}", i + 1),
                chain: vec![cert],
                valid_for: ValidFor::default(),
            })
            .collect();
        NotationRoot {
            ca,
            signing_authority,
            tsa,
            identities,
            level,
            checks,
            verify_timestamp,
        }
    }

    /// The pull policy of the repositories this root covers: `skip` asks for nothing;
    /// authenticity only logged (the `audit` level) serves and logs, which is Signet's
    /// `audit`; otherwise `default`.
    pub fn pull_policy(&self, default: PolicyMode) -> PolicyMode {
        match (self.level, self.checks.authenticity) {
            (Level::Skip, _) => PolicyMode::Off,
            (_, Action::Enforce) => default,
            _ => PolicyMode::Audit,
        }
    }

    /// What verdicts depend on: every certificate, the identities and the checks.
    pub fn material(&self) -> String {
        use sha2::{Digest as _, Sha256};
        let mut h = Sha256::new();
        for (store, certs) in [
            ("ca", self.ca.iter().collect::<Vec<_>>()),
            ("sa", self.signing_authority.iter().collect()),
            (
                "tsa",
                self.tsa.iter().flat_map(|a| a.chain.iter()).collect(),
            ),
        ] {
            h.update(store.as_bytes());
            for c in certs {
                h.update(Sha256::digest(c.as_ref()));
            }
        }
        h.update(format!(
            "{:?}{:?}{:?}",
            self.identities, self.checks, self.verify_timestamp
        ));
        hex::encode(h.finalize())
    }

    pub fn describe(&self) -> String {
        format!(
            "notation: {} ca, {} signingAuthority, {} tsa certificate(s), identities {}, level {}",
            self.ca.len(),
            self.signing_authority.len(),
            self.tsa.len(),
            self.identities.describe(),
            self.level.as_str()
        )
    }
}

/// The manifest a signature is attached to, as the payload must describe it.
pub struct Subject<'a> {
    pub digest: &'a Digest,
    /// Its size and media type, when known: the payload must name the same.
    pub descriptor: Option<(u64, &'a str)>,
}

/// The verdict on one envelope (`media_type`: JWS or COSE) signing `subject`, by the
/// roots that apply to the repository, at `now`.
pub fn verify(
    roots: &[&TrustRoot],
    media_type: &str,
    bytes: &[u8],
    subject: &Subject<'_>,
    now: DateTime<Utc>,
) -> Verdict {
    let envelope = match envelope::parse(media_type, bytes) {
        Ok(e) => e,
        Err(e) => return Verdict::invalid(format!("malformed: {e}")),
    };
    let signer = match integrity(&envelope, subject) {
        Ok(s) => s,
        Err(e) => return Verdict::invalid(e),
    };
    let notation_roots: Vec<(&TrustRoot, &NotationRoot)> = roots
        .iter()
        .filter_map(|r| r.notation.as_ref().map(|n| (*r, n)))
        .filter(|(_, n)| n.level != Level::Skip)
        .collect();
    if notation_roots.is_empty() {
        return Verdict::no_trust_root();
    }
    let mut first_failure = None;
    for (root, notation) in notation_roots {
        match trusted(notation, &envelope, &signer, now) {
            Ok(logged) => {
                let mut verdict =
                    Verdict::valid(&root.name, None).signed_by(Some(signer.subject.to_string()));
                if !logged.is_empty() {
                    verdict.reason = Some(format!("logged: {}", logged.join("; ")));
                }
                return verdict;
            }
            Err(e) => {
                first_failure.get_or_insert(e);
            }
        }
    }
    Verdict::invalid(first_failure.unwrap_or_default())
}

/// The signing certificate, read.
struct Signer {
    cert: Certificate,
    subject: DistinguishedName,
}

/// The payload: a descriptor of what was signed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    target_artifact: TargetArtifact,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TargetArtifact {
    digest: String,
    media_type: String,
    size: u64,
}

/// The signature over the envelope by its signing certificate's key, and a payload
/// describing `subject`.
fn integrity(envelope: &Envelope, subject: &Subject<'_>) -> Result<Signer, String> {
    let leaf_der = envelope
        .chain
        .first()
        .ok_or("malformed: the envelope has no certificate chain")?;
    let cert = Certificate::from_der(leaf_der)
        .map_err(|e| format!("malformed: the signing certificate is not DER X.509: {e}"))?;
    let (expected, alg, key) = signing_key(&cert)?;
    if expected != envelope.algorithm {
        return Err(format!(
            "the envelope says {} but the signing certificate's key calls for {}",
            envelope.algorithm.name(),
            expected.name()
        ));
    }
    UnparsedPublicKey::new(alg, &key)
        .verify(&envelope.signed, &envelope.signature)
        .map_err(|_| "bad signature: the signing certificate's key does not verify the envelope")?;
    let payload: Payload = serde_json::from_slice(&envelope.payload)
        .map_err(|e| format!("malformed: the payload is not a target artifact: {e}"))?;
    let target = &payload.target_artifact;
    if target.digest != subject.digest.to_string() {
        return Err(format!(
            "the signature is for {}, not {}",
            target.digest, subject.digest
        ));
    }
    if let Some((size, media_type)) = subject.descriptor {
        if target.size != size || target.media_type != media_type {
            return Err(format!(
                "the signature describes a {} of {} bytes, the manifest is a {media_type} of {size}",
                target.media_type, target.size
            ));
        }
    }
    let subject_dn = DistinguishedName::of(cert.tbs_certificate().subject())
        .map_err(|e| format!("malformed: {e}"))?;
    Ok(Signer {
        cert,
        subject: subject_dn,
    })
}

/// The algorithm a key calls for (the specification pairs them), how to verify with it,
/// and the key's bytes as aws-lc reads them.
fn signing_key(
    cert: &Certificate,
) -> Result<(Algorithm, &'static dyn VerificationAlgorithm, Vec<u8>), String> {
    let spki = cert.tbs_certificate().subject_public_key_info();
    let key = spki.subject_public_key.raw_bytes().to_vec();
    if spki.algorithm.oid == OID_RSA {
        let bits = rsa_modulus_bits(&key)?;
        return Ok(match bits {
            2048 => (Algorithm::Ps256, &signature::RSA_PSS_2048_8192_SHA256, key),
            3072 => (Algorithm::Ps384, &signature::RSA_PSS_2048_8192_SHA384, key),
            4096 => (Algorithm::Ps512, &signature::RSA_PSS_2048_8192_SHA512, key),
            other => return Err(format!("an RSA key of {other} bits is not allowed")),
        });
    }
    if spki.algorithm.oid == OID_EC {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        return Ok(match curve {
            Some(OID_P256) => (Algorithm::Es256, &signature::ECDSA_P256_SHA256_FIXED, key),
            Some(OID_P384) => (Algorithm::Es384, &signature::ECDSA_P384_SHA384_FIXED, key),
            Some(OID_P521) => (Algorithm::Es512, &signature::ECDSA_P521_SHA512_FIXED, key),
            _ => return Err("the signing certificate's curve is not allowed".into()),
        });
    }
    Err("the signing certificate's key type is not allowed".into())
}

/// The size of an RSAPublicKey's modulus.
fn rsa_modulus_bits(der: &[u8]) -> Result<usize, String> {
    use crate::timestamp::Reader;
    let mut key = Reader::new(Reader::new(der).expect(0x30, "RSAPublicKey")?.value);
    let modulus = key.expect(0x02, "modulus")?.value;
    let modulus = modulus.strip_prefix(&[0]).unwrap_or(modulus);
    Ok(modulus.len() * 8)
}

/// Whether `notation` trusts the signer at a trusted time: the validations after
/// integrity. `Ok` lists what was only logged.
fn trusted(
    notation: &NotationRoot,
    envelope: &Envelope,
    signer: &Signer,
    now: DateTime<Utc>,
) -> Result<Vec<String>, String> {
    let mut logged = Vec::new();
    // What a failed validation does: fail, or be listed in the verdict's reason.
    let mut outcome = |action: Action, failure: String| -> Result<(), String> {
        match action {
            Action::Enforce => Err(failure),
            Action::Log => {
                logged.push(failure);
                Ok(())
            }
            Action::Skip => Ok(()),
        }
    };
    let anchors = match envelope.scheme {
        SigningScheme::X509 => &notation.ca,
        SigningScheme::SigningAuthority => &notation.signing_authority,
    };
    let store = match envelope.scheme {
        SigningScheme::X509 => "ca",
        SigningScheme::SigningAuthority => "signingAuthority",
    };
    if anchors.is_empty() {
        return Err(format!(
            "the root has no {store} trust store for this signing scheme"
        ));
    }
    if !notation.identities.admits(&signer.subject) {
        return Err(format!(
            "the signer [{}] is not a trusted identity",
            signer.subject
        ));
    }
    leaf_usage(&signer.cert)?;

    // The trusted time the chain must be valid at.
    let (at, what) = match envelope.scheme {
        SigningScheme::SigningAuthority => (
            envelope
                .authentic_signing_time
                .expect("the envelope checked it is there"),
            "the authentic signing time",
        ),
        SigningScheme::X509 => {
            let wanted = envelope.timestamp.is_some()
                && (notation.verify_timestamp == VerifyTimestamp::Always
                    || chain_at(anchors, envelope, now).is_err());
            if wanted && notation.tsa.is_empty() {
                outcome(
                    notation.checks.authentic_timestamp,
                    "authentic timestamp: the signature is timestamped but the root has no tsa trust store".into(),
                )?;
                (now, "now")
            } else if wanted {
                let token = envelope.timestamp.as_deref().unwrap_or_default();
                match crate::timestamp::verify_against(token, &envelope.signature, &notation.tsa) {
                    Ok(t) => (t, "the timestamp"),
                    Err(e) => {
                        outcome(
                            notation.checks.authentic_timestamp,
                            format!("authentic timestamp: {e}"),
                        )?;
                        (now, "now")
                    }
                }
            } else {
                (now, "now")
            }
        }
    };
    match chain_at(anchors, envelope, at) {
        Ok(()) => {}
        Err(ChainError::Untrusted(e)) => return Err(format!("authenticity: {e}")),
        Err(ChainError::Time(e)) => {
            outcome(
                notation.checks.authentic_timestamp,
                format!("authentic timestamp: the chain is not valid at {what} ({at}): {e}"),
            )?;
            // Still, it must chain to the trust store.
            let inside = leaf_not_before(&signer.cert);
            if let Err(ChainError::Untrusted(e) | ChainError::Time(e)) =
                chain_at(anchors, envelope, inside)
            {
                return Err(format!("authenticity: {e}"));
            }
        }
    }
    if let Some(expiry) = envelope.expiry {
        if expiry <= now {
            outcome(
                notation.checks.expiry,
                format!("expiry: the signature expired at {expiry}"),
            )?;
        }
    }
    Ok(logged)
}

/// A signing certificate is no CA, says it is for digital signatures (and not for
/// signing certificates), and, when it lists extended key usages, for code signing.
fn leaf_usage(cert: &Certificate) -> Result<(), String> {
    let tbs = cert.tbs_certificate();
    if let Ok(Some((_, constraints))) = tbs.get_extension::<BasicConstraints>() {
        if constraints.ca {
            return Err("the signing certificate is a CA certificate".into());
        }
    }
    match tbs.get_extension::<KeyUsage>() {
        Ok(Some((_, usage))) if usage.digital_signature() && !usage.key_cert_sign() => {}
        _ => {
            return Err(
                "the signing certificate's key usage must be digital signature, not certificate signing"
                    .into(),
            )
        }
    }
    if let Ok(Some((_, ExtendedKeyUsage(usages)))) = tbs.get_extension::<ExtendedKeyUsage>() {
        if !usages.contains(&OID_CODE_SIGNING) {
            return Err("the signing certificate is not for code signing".into());
        }
    }
    Ok(())
}

fn leaf_not_before(cert: &Certificate) -> DateTime<Utc> {
    let secs = cert
        .tbs_certificate()
        .validity()
        .not_before
        .to_unix_duration()
        .as_secs();
    DateTime::from_timestamp(secs as i64, 0).unwrap_or_default()
}

enum ChainError {
    /// The chain is sound but not valid at that time.
    Time(String),
    Untrusted(String),
}

/// The envelope's chain leads to one of `anchors`, and is valid at `at`.
fn chain_at(
    anchors: &[CertificateDer<'static>],
    envelope: &Envelope,
    at: DateTime<Utc>,
) -> Result<(), ChainError> {
    let leaf = &envelope.chain[0];
    let time =
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(at.timestamp().max(0) as u64));
    // A self-signed signing certificate placed in the trust store as it is.
    if anchors.iter().any(|a| a.as_ref() == leaf.as_slice()) {
        return if valid_at(leaf, at) {
            Ok(())
        } else {
            Err(ChainError::Time(
                "the signing certificate is outside its validity".into(),
            ))
        };
    }
    let trust_anchors: Vec<TrustAnchor<'_>> = anchors
        .iter()
        .filter_map(|a| webpki::anchor_from_trusted_cert(a).ok())
        .collect();
    let intermediates: Vec<CertificateDer<'_>> = envelope.chain[1..]
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let der = CertificateDer::from(leaf.as_slice());
    let ee = webpki::EndEntityCert::try_from(&der).map_err(|e| {
        ChainError::Untrusted(format!("the signing certificate is unusable: {e:?}"))
    })?;
    let path = ee
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &trust_anchors,
            &intermediates,
            time,
            webpki::KeyUsage::required_if_present(EKU_CODE_SIGNING),
            None,
            None,
        )
        .map_err(|e| match e {
            webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
                ChainError::Time(format!("{e:?}"))
            }
            other => ChainError::Untrusted(format!(
                "the certificate chain does not lead to the trust store ({other:?})"
            )),
        })?;
    // webpki takes an anchor as a name and a key; the whole chain, its root too, must
    // be valid at the time.
    let used = path.anchor();
    let root_valid = anchors.iter().any(|a| {
        webpki::anchor_from_trusted_cert(a).is_ok_and(|t| {
            t.subject == used.subject && t.subject_public_key_info == used.subject_public_key_info
        }) && valid_at(a, at)
    });
    if !root_valid {
        return Err(ChainError::Time(
            "the trust store's root certificate is outside its validity".into(),
        ));
    }
    Ok(())
}

/// Whether the certificate `der` is within its validity at `at`.
fn valid_at(der: &[u8], at: DateTime<Utc>) -> bool {
    Certificate::from_der(der).is_ok_and(|cert| {
        let validity = cert.tbs_certificate().validity();
        let t = at.timestamp().max(0) as u64;
        validity.not_before.to_unix_duration().as_secs() <= t
            && t <= validity.not_after.to_unix_duration().as_secs()
    })
}

/// The certificates in a file: PEM (any number) or one DER certificate.
pub fn read_certificates(path: &std::path::Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    use rustls_pki_types::pem::PemObject as _;
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let certs: Vec<CertificateDer<'static>> = if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("{}: not PEM certificates: {e:?}", path.display()))?
    } else {
        vec![CertificateDer::from(bytes)]
    };
    for cert in &certs {
        Certificate::from_der(cert.as_ref())
            .map_err(|e| anyhow::anyhow!("{}: not an X.509 certificate: {e}", path.display()))?;
        // Refuse at load what webpki cannot anchor on, rather than at verification.
        webpki::anchor_from_trusted_cert(cert).map_err(|e| {
            anyhow::anyhow!("{}: unusable as a trust anchor: {e:?}", path.display())
        })?;
    }
    if certs.is_empty() {
        anyhow::bail!("{} holds no certificate", path.display());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests;
