//! Atomic signatures (containers/image "simple signing", stored by the signatures
//! extension): an OpenPGP signed message whose literal data is the simple-signing JSON.
//! Checked with the pure-Rust `pgp` crate against the GPG public keys of the trust
//! roots, so the server needs no `gpg` binary and no keyring.
//!
//! A signature is valid when a trusted key (its primary key or one of its subkeys bound
//! to it) verifies the message, the key had not expired when it signed, the payload is
//! an `atomic container signature` whose `critical.image.docker-manifest-digest` is the
//! subject, and its `docker-reference` names the repository (see [`crate::reference`]).

use std::io::Read as _;
use std::path::Path;

use pgp::composed::{Message, PublicOrSecret, SignedPublicKey};
use pgp::packet::SignatureType;
use pgp::types::{KeyDetails as _, PublicKeyTrait as _};
use serde_json::Value;
use signet_oci::Digest;

use crate::reference::{self, SignatureFormat};
use crate::trust::TrustRoot;
use crate::{Verdict, VerdictKind};

/// The `critical.type` containers/image writes and requires.
pub const ATOMIC_TYPE: &str = "atomic container signature";
/// Largest signed payload read out of a (possibly compressed) signature.
const MAX_PAYLOAD: u64 = 4 * 1024 * 1024;

/// A trusted OpenPGP certificate (primary key and its bound subkeys).
pub struct GpgKey {
    /// Where it was read from, for `signet trust check`.
    pub file: String,
    pub key: SignedPublicKey,
}

impl GpgKey {
    /// The primary key's fingerprint, upper-case hex as gpg prints it.
    pub fn fingerprint(&self) -> String {
        hex::encode_upper(self.key.primary_key.fingerprint().as_bytes())
    }

    /// The first user id, when the certificate has one.
    pub fn user_id(&self) -> Option<String> {
        self.key
            .details
            .users
            .first()
            .map(|u| String::from_utf8_lossy(u.id.id()).into_owned())
    }
}

/// Reads every public key in `path` (ASCII-armored or binary, one or several
/// certificates, as `gpg --export [--armor]` writes them). Each certificate's
/// self-signatures and subkey bindings must verify.
pub fn load_keys(path: &Path) -> anyhow::Result<Vec<GpgKey>> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let file = path.display().to_string();
    let (iter, _) = PublicOrSecret::from_reader_many(&bytes[..])
        .map_err(|e| anyhow::anyhow!("{file}: not an OpenPGP key: {e}"))?;
    let parsed: Vec<PublicOrSecret> = iter
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{file}: not an OpenPGP key: {e}"))?;
    let mut keys = Vec::new();
    for item in parsed {
        let key = match item {
            PublicOrSecret::Public(k) => k,
            // A secret key file would work, but trusting one means the server holds
            // signing material: refuse it so nobody does that by accident.
            PublicOrSecret::Secret(_) => anyhow::bail!(
                "{file} holds a secret key; export the public key (gpg --export --armor)"
            ),
        };
        key.verify()
            .map_err(|e| anyhow::anyhow!("{file}: the key's self-signatures do not verify: {e}"))?;
        keys.push(GpgKey {
            file: file.clone(),
            key,
        });
    }
    if keys.is_empty() {
        anyhow::bail!("{file} holds no OpenPGP public key");
    }
    Ok(keys)
}

/// What an OpenPGP signed message says, once a trusted key verified it.
struct Signed {
    root: usize,
    /// The fingerprint of the key that made the signature (a subkey's, where one did).
    signer: String,
    payload: Vec<u8>,
}

/// Why a signature was not accepted, before its payload was looked at.
enum Rejection {
    Malformed(String),
    /// A trusted key has the signature's issuer id, yet the signature does not verify.
    BadSignature(String),
    /// No key of any applicable root is the signature's issuer.
    UnknownSigner(String),
    Expired(String),
    Revoked(String),
}

/// The verdict on one atomic signature's bytes.
pub fn verify_content(
    roots: &[&TrustRoot],
    repo: &str,
    subject: &Digest,
    content: &[u8],
) -> Verdict {
    let signed = match open_signed(roots, content) {
        Ok(s) => s,
        Err(Rejection::Malformed(m)) => return Verdict::invalid(format!("malformed: {m}")),
        Err(Rejection::BadSignature(m)) => return Verdict::invalid(format!("bad signature: {m}")),
        Err(Rejection::UnknownSigner(m)) => {
            return Verdict {
                verdict: VerdictKind::NoTrustRoot,
                reason: Some(m),
                ..Verdict::no_trust_root()
            }
        }
        Err(Rejection::Expired(m) | Rejection::Revoked(m)) => return Verdict::invalid(m),
    };
    let root = roots[signed.root];
    let payload: Value = match serde_json::from_slice(&signed.payload) {
        Ok(v) => v,
        Err(e) => return Verdict::invalid(format!("malformed: simple-signing payload: {e}")),
    };
    let kind = payload["critical"]["type"].as_str().unwrap_or_default();
    if kind != ATOMIC_TYPE {
        return Verdict::invalid(format!(
            "malformed: the payload's critical.type is {kind:?}, not {ATOMIC_TYPE:?}"
        ));
    }
    let named = payload["critical"]["image"]["docker-manifest-digest"]
        .as_str()
        .unwrap_or_default();
    if named != subject.to_string() {
        return Verdict::invalid(format!(
            "digest mismatch: the payload names {named:?}, the subject is {subject}"
        ));
    }
    if let Err(why) = reference::check(root, SignatureFormat::Atomic, &payload, repo) {
        return Verdict::invalid(why);
    }
    Verdict::valid(&root.name, None).signed_by(Some(signed.signer))
}

/// Parses the OpenPGP message, reads its literal data (bounded) and finds the root
/// whose key, or bound subkey, made the signature.
fn open_signed(roots: &[&TrustRoot], content: &[u8]) -> Result<Signed, Rejection> {
    let malformed = |e: &dyn std::fmt::Display| Rejection::Malformed(format!("OpenPGP: {e}"));
    let message = Message::from_bytes(content).map_err(|e| malformed(&e))?;
    // gpg compresses by default; skopeo and podman sign through gpgme, which does.
    let mut message = if message.is_compressed() {
        message.decompress().map_err(|e| malformed(&e))?
    } else {
        message
    };
    if !message.is_signed() {
        return Err(Rejection::Malformed(
            "the OpenPGP message is not signed".into(),
        ));
    }
    let mut payload = Vec::new();
    (&mut message)
        .take(MAX_PAYLOAD + 1)
        .read_to_end(&mut payload)
        .map_err(|e| malformed(&e))?;
    if payload.len() as u64 > MAX_PAYLOAD {
        return Err(Rejection::Malformed(
            "the signed payload is too large to verify".into(),
        ));
    }
    for (i, root) in roots.iter().enumerate() {
        for cert in &root.gpg_keys {
            let Some(signer) = signing_key(&message, cert) else {
                continue;
            };
            // As gpg (and so containers/image) does: a revoked key's signatures are
            // refused, and so are those an expired key made after it expired.
            if signer.revoked {
                return Err(Rejection::Revoked(format!(
                    "revoked key: {} is revoked",
                    signer.fingerprint
                )));
            }
            if let (Some(expires), Some(created)) = (signer.expires, signer.signature.created()) {
                if *created > expires {
                    return Err(Rejection::Expired(format!(
                        "expired key: {} expired at {expires}, the signature was made at {created}",
                        signer.fingerprint
                    )));
                }
            }
            return Ok(Signed {
                root: i,
                signer: signer.fingerprint.clone(),
                payload,
            });
        }
    }
    let issuer = issuer_ids(&message);
    let known = roots.iter().flat_map(|r| r.gpg_keys.iter()).any(|cert| {
        std::iter::once(cert.key.primary_key.fingerprint())
            .chain(cert.key.public_subkeys.iter().map(|s| s.key.fingerprint()))
            .any(|fp| issuer.matches(&fp))
    });
    if known || issuer.is_empty() {
        return Err(Rejection::BadSignature(format!(
            "no applicable trust root's GPG key verifies it{}",
            issuer.describe()
        )));
    }
    Err(Rejection::UnknownSigner(format!(
        "signed by a key no trust root covering this repository holds{}",
        issuer.describe()
    )))
}

/// The key of `cert` that made the message's signature, with what decides whether
/// that still counts.
struct Signer {
    signature: pgp::packet::Signature,
    fingerprint: String,
    expires: Option<chrono::DateTime<chrono::Utc>>,
    revoked: bool,
}

/// The primary key of `cert`, or a subkey bound to it for signing, that verifies the
/// message; `None` when none does.
fn signing_key(message: &Message<'_>, cert: &GpgKey) -> Option<Signer> {
    let primary = &cert.key;
    let primary_revoked = !primary.details.revocation_signatures.is_empty();
    if let Ok(signature) = message.verify(primary) {
        return Some(Signer {
            signature: signature.clone(),
            fingerprint: cert.fingerprint(),
            expires: primary.expires_at(),
            revoked: primary_revoked,
        });
    }
    for sub in &primary.public_subkeys {
        let binding = sub
            .signatures
            .iter()
            .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
            .max_by_key(|s| s.created().copied());
        // A subkey signs for its certificate only when its binding says it may.
        if !binding.is_some_and(|b| b.key_flags().sign()) {
            continue;
        }
        let Ok(signature) = message.verify(sub) else {
            continue;
        };
        let sub_expires = binding
            .and_then(|b| b.key_expiration_time())
            .map(|d| *sub.key.created_at() + *d);
        let expires = match (primary.expires_at(), sub_expires) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let sub_revoked = sub
            .signatures
            .iter()
            .any(|s| s.typ() == Some(SignatureType::SubkeyRevocation));
        return Some(Signer {
            signature: signature.clone(),
            fingerprint: hex::encode_upper(sub.key.fingerprint().as_bytes()),
            expires,
            revoked: primary_revoked || sub_revoked,
        });
    }
    None
}

/// The issuer a signature names: fingerprints and key ids (either may be absent).
struct Issuer {
    fingerprints: Vec<Vec<u8>>,
    key_ids: Vec<Vec<u8>>,
}

impl Issuer {
    fn is_empty(&self) -> bool {
        self.fingerprints.is_empty() && self.key_ids.is_empty()
    }

    /// A v4 key id is the fingerprint's last 8 bytes.
    fn matches(&self, fp: &pgp::types::Fingerprint) -> bool {
        let fp = fp.as_bytes();
        self.fingerprints.iter().any(|f| f == fp)
            || self
                .key_ids
                .iter()
                .any(|id| fp.len() >= id.len() && fp[fp.len() - id.len()..] == id[..])
    }

    /// `" (key ABCD…)"` when the signature names its issuer.
    fn describe(&self) -> String {
        if let Some(fp) = self.fingerprints.first() {
            return format!(" (key {})", hex::encode_upper(fp));
        }
        if let Some(id) = self.key_ids.first() {
            return format!(" (key id {})", hex::encode_upper(id));
        }
        String::new()
    }
}

fn issuer_ids(message: &Message<'_>) -> Issuer {
    let signature = match message {
        Message::SignedOnePass { reader, .. } => reader.signature(),
        Message::Signed { reader, .. } => Some(reader.signature()),
        _ => None,
    };
    let Some(sig) = signature else {
        return Issuer {
            fingerprints: Vec::new(),
            key_ids: Vec::new(),
        };
    };
    Issuer {
        fingerprints: sig
            .issuer_fingerprint()
            .iter()
            .map(|f| f.as_bytes().to_vec())
            .collect(),
        key_ids: sig.issuer().iter().map(|k| k.as_ref().to_vec()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let subject = Digest::sha256_of(b"manifest");
        for content in [&b""[..], b"not openpgp at all", &[0xa3, 0x01, 0x02][..]] {
            let v = verify_content(&[], "team/app", &subject, content);
            assert_eq!(v.verdict, VerdictKind::Invalid, "{v:?}");
            assert!(
                v.reason.as_deref().unwrap().starts_with("malformed"),
                "{v:?}"
            );
        }
    }

    #[test]
    fn a_key_id_is_the_fingerprints_tail() {
        let fp_bytes: Vec<u8> = (0u8..20).collect();
        let issuer = Issuer {
            fingerprints: Vec::new(),
            key_ids: vec![fp_bytes[12..].to_vec()],
        };
        let fp = pgp::types::Fingerprint::V4(fp_bytes.clone().try_into().unwrap());
        assert!(issuer.matches(&fp));
        let other = pgp::types::Fingerprint::V4([7u8; 20]);
        assert!(!issuer.matches(&other));
        assert_eq!(issuer.describe(), " (key id 0C0D0E0F10111213)");
        let by_fingerprint = Issuer {
            fingerprints: vec![fp_bytes],
            key_ids: Vec::new(),
        };
        assert!(by_fingerprint.matches(&fp));
    }
}
