//! Sigstore bundles (v0.1 to v0.3) stored as OCI referrers, cosign v3's default: the
//! referrer's layer is the bundle JSON. Its content is a message signature over the
//! subject manifest or a DSSE envelope around an in-toto statement naming the subject;
//! its verification material is a Fulcio certificate (checked like any keyless
//! signature, with the transparency log entry's SET and inclusion proof) or a public key
//! hint (checked against the key roots).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rustls_pki_types::CertificateDer;
use serde_json::Value;
use signet_oci::Digest;
use sigstore::crypto::Signature;

use crate::cosign::pae;
use crate::keyless::{self, Evidence};
use crate::rekor::{Claim, Entry, Hash, InclusionProof};
use crate::trust::TrustRoot;
use crate::Verdict;

pub const BUNDLE_MEDIA_TYPES: [&str; 3] = [
    "application/vnd.dev.sigstore.bundle.v0.3+json",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
];

/// The verdict on a parsed bundle; `subject_bytes` is the subject manifest, the signed
/// message of a `messageSignature` bundle.
pub fn verify_bundle(
    roots: &[&TrustRoot],
    bundle: &Value,
    subject: &Digest,
    subject_bytes: Option<&[u8]>,
) -> Verdict {
    match verify_inner(roots, bundle, subject, subject_bytes) {
        Ok(v) => v,
        Err(e) => Verdict::invalid(format!("malformed: {e}")),
    }
}

fn verify_inner(
    roots: &[&TrustRoot],
    bundle: &Value,
    subject: &Digest,
    subject_bytes: Option<&[u8]>,
) -> Result<Verdict, String> {
    let media_type = bundle["mediaType"].as_str().unwrap_or_default();
    if !BUNDLE_MEDIA_TYPES.contains(&media_type) {
        return Err(format!("unsupported bundle mediaType {media_type:?}"));
    }
    let material = &bundle["verificationMaterial"];
    let timestamps = material["timestampVerificationData"]["rfc3161Timestamps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| b64(&t["signedTimestamp"], "rfc3161Timestamps signedTimestamp"))
        .collect::<Result<Vec<_>, _>>()?;
    let entry = material["tlogEntries"]
        .as_array()
        .and_then(|e| e.first())
        .map(tlog_entry)
        .transpose()?;

    // What was signed, and the claim the log entry must record.
    let (signed, signature, payload): (Vec<u8>, Vec<u8>, Option<Vec<u8>>) =
        if let Some(ms) = bundle.get("messageSignature") {
            let alg = ms["messageDigest"]["algorithm"]
                .as_str()
                .unwrap_or_default();
            let digest = b64(&ms["messageDigest"]["digest"], "messageDigest.digest")?;
            let signature = b64(&ms["signature"], "messageSignature.signature")?;
            if alg != "SHA2_256" || subject.algorithm().name() != "sha256" {
                return Ok(Verdict::invalid(format!(
                    "digest mismatch: the bundle signs a {alg} digest, the subject is {subject}"
                )));
            }
            if hex::encode(&digest) != subject.hex() {
                return Ok(Verdict::invalid(format!(
                    "digest mismatch: the bundle signs sha256:{}, the subject is {subject}",
                    hex::encode(&digest)
                )));
            }
            let signed = subject_bytes
                .ok_or("the subject manifest is needed to check a message signature")?;
            (signed.to_vec(), signature, None)
        } else if let Some(env) = bundle.get("dsseEnvelope") {
            let payload = b64(&env["payload"], "dsseEnvelope.payload")?;
            let payload_type = env["payloadType"].as_str().unwrap_or_default();
            let signature = b64(
                &env["signatures"][0]["sig"],
                "dsseEnvelope.signatures[0].sig",
            )?;
            (pae(payload_type, &payload), signature, Some(payload))
        } else {
            return Err("the bundle has neither messageSignature nor dsseEnvelope".into());
        };
    let message_digest: Hash = sha256(&signed);
    let claim = match &payload {
        Some(p) => Claim::Dsse {
            payload: p,
            signature: &signature,
        },
        None => Claim::Message {
            digest: message_digest,
            signature: &signature,
        },
    };

    let certificate = if let Some(raw) = material["certificate"]["rawBytes"].as_str() {
        Some((
            B64.decode(raw)
                .map_err(|_| "certificate.rawBytes is not base64")?,
            Vec::new(),
        ))
    } else if let Some(certs) = material["x509CertificateChain"]["certificates"].as_array() {
        let mut ders = certs
            .iter()
            .map(|c| b64(&c["rawBytes"], "x509CertificateChain certificate"))
            .collect::<Result<Vec<_>, _>>()?;
        if ders.is_empty() {
            return Err("x509CertificateChain has no certificates".into());
        }
        let leaf = ders.remove(0);
        Some((leaf, ders))
    } else {
        None
    };

    let verdict = match certificate {
        Some((leaf_der, chain)) => {
            let ev = Evidence {
                leaf_der,
                chain: chain.into_iter().map(CertificateDer::from).collect(),
                entry,
                timestamps,
                stamped: &signature,
                signed: &signed,
                signature: &signature,
                claim,
            };
            keyless::verify(roots, &ev)
        }
        None if material.get("publicKey").is_some() => {
            // A key root's key: the transparency log is not consulted (a key root has
            // no trusted log), the signature alone decides, as for `.sig` layers.
            let keyed: Vec<&&TrustRoot> = roots.iter().filter(|r| r.key.is_some()).collect();
            if keyed.is_empty() {
                return Ok(Verdict::no_trust_root());
            }
            match keyed.iter().find(|r| {
                r.key.as_ref().is_some_and(|k| {
                    k.verify_signature(Signature::Raw(&signature), &signed)
                        .is_ok()
                })
            }) {
                Some(r) => Verdict::valid(&r.name, None),
                None => Verdict::invalid(
                    "bad signature: no applicable trust root's key verifies the bundle",
                ),
            }
        }
        None => return Err("the bundle has no certificate or public key".into()),
    };
    Ok(match payload {
        Some(p) => keyless::statement_verdict(verdict, &p, subject),
        None => verdict,
    })
}

fn sha256(bytes: &[u8]) -> Hash {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

fn b64(v: &Value, what: &str) -> Result<Vec<u8>, String> {
    v.as_str()
        .and_then(|s| B64.decode(s).ok())
        .ok_or_else(|| format!("{what} is not base64"))
}

/// protobuf JSON writes 64-bit integers as strings; accept numbers too.
fn int(v: &Value, what: &str) -> Result<i64, String> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| format!("{what} is not an integer"))
}

fn tlog_entry(v: &Value) -> Result<Entry, String> {
    let set = match v["inclusionPromise"]["signedEntryTimestamp"].as_str() {
        Some(_) => Some(b64(
            &v["inclusionPromise"]["signedEntryTimestamp"],
            "inclusionPromise.signedEntryTimestamp",
        )?),
        None => None,
    };
    let proof = match v.get("inclusionProof") {
        None => None,
        Some(p) => {
            let root: Hash = b64(&p["rootHash"], "inclusionProof.rootHash")?
                .try_into()
                .map_err(|_| "inclusionProof.rootHash is not 32 bytes")?;
            let hashes = p["hashes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|h| {
                    b64(h, "inclusionProof.hashes")?
                        .try_into()
                        .map_err(|_| "an inclusionProof hash is not 32 bytes".to_string())
                })
                .collect::<Result<Vec<Hash>, String>>()?;
            let index = int(&p["logIndex"], "inclusionProof.logIndex")?;
            let size = int(&p["treeSize"], "inclusionProof.treeSize")?;
            Some(InclusionProof {
                log_index: u64::try_from(index).map_err(|_| "negative inclusionProof.logIndex")?,
                tree_size: u64::try_from(size).map_err(|_| "negative inclusionProof.treeSize")?,
                root,
                hashes,
                checkpoint: p["checkpoint"]["envelope"]
                    .as_str()
                    .ok_or("inclusionProof.checkpoint.envelope is missing")?
                    .to_string(),
            })
        }
    };
    Ok(Entry {
        body: b64(&v["canonicalizedBody"], "tlogEntries[0].canonicalizedBody")?,
        // Rekor v2 entries carry no integration time (a timestamp authority dates them).
        integrated_time: match v.get("integratedTime") {
            Some(t) => int(t, "tlogEntries[0].integratedTime")?,
            None => 0,
        },
        log_index: int(&v["logIndex"], "tlogEntries[0].logIndex")?,
        log_id: b64(&v["logId"]["keyId"], "tlogEntries[0].logId.keyId")?,
        set,
        proof,
    })
}

#[cfg(test)]
mod tests {
    //! Real bundles from the public-good Sigstore instance (Fulcio, Rekor), verified
    //! offline against its trusted root: production certificates, SETs, inclusion
    //! proofs in a sharded log and checkpoints, not only the ones our tests make.

    use std::path::PathBuf;

    use super::*;
    use crate::trust::{Trust, TrustConfig, TrustRootConfig};
    use crate::VerdictKind;

    const GITHUB: &str = "https://token.actions.githubusercontent.com";
    const KUBEWARDEN: &str = "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0";
    const KUBEWARDEN_IMAGE: &str =
        "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";
    const SIGSTORE_JS: &str =
        "https://github.com/sigstore/sigstore-js/.github/workflows/release.yml@refs/heads/main";
    const NPM_TARBALL: &str = "sha512:849a897e81bf7b8a8541a6ae40bd3473a27a16b1cb0462ad905bd6dc96d34881053a12eb4a375233f81677fc9439f628fe0b0445e8535c60b5559597fbd5f80e";

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../api-tests/tests/fixtures/keyless")
            .join(name)
    }

    fn bundle(name: &str) -> Value {
        serde_json::from_slice(&std::fs::read(fixture(name)).unwrap()).unwrap()
    }

    fn trust(subject: &str) -> Trust {
        Trust::load(&TrustConfig {
            roots: vec![TrustRootConfig {
                name: "public-good".into(),
                trusted_root: fixture("public_good_trusted_root.json"),
                issuer: GITHUB.into(),
                subject: subject.into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap()
    }

    fn verdict(trust: &Trust, bundle: &Value, subject: &str) -> Verdict {
        let roots: Vec<&TrustRoot> = trust.roots.iter().collect();
        verify_bundle(&roots, bundle, &subject.parse().unwrap(), None)
    }

    #[test]
    fn cosign_v3_image_signature_from_the_public_good_instance() {
        let b = bundle("kubewarden_controller_v1.34.0.sigstore.json");
        let v = verdict(&trust(KUBEWARDEN), &b, KUBEWARDEN_IMAGE);
        assert_eq!(v.verdict, VerdictKind::Valid, "{v:?}");
        assert_eq!(
            v.predicate_type.as_deref(),
            Some("https://sigstore.dev/cosign/sign/v1")
        );
        // Another image: the statement does not name it.
        let other = format!("sha256:{}", "0".repeat(64));
        let v = verdict(&trust(KUBEWARDEN), &b, &other);
        assert!(v.summary().contains("digest mismatch"), "{v:?}");
        // Another workflow of the same issuer.
        let v = verdict(&trust(SIGSTORE_JS), &b, KUBEWARDEN_IMAGE);
        assert!(v.summary().contains("identity mismatch"), "{v:?}");
    }

    #[test]
    fn npm_provenance_from_the_public_good_instance() {
        let b = bundle("npm_sigstore_5.0.0.sigstore.json");
        let v = verdict(&trust(SIGSTORE_JS), &b, NPM_TARBALL);
        assert_eq!(v.verdict, VerdictKind::Valid, "{v:?}");
        assert_eq!(
            v.predicate_type.as_deref(),
            Some("https://slsa.dev/provenance/v1")
        );
    }

    #[test]
    fn message_signature_bundle_v02_with_an_email_identity() {
        // The signed artifact is a file here; for an image it is the manifest.
        let artifact = std::fs::read(fixture("a.txt")).unwrap();
        let subject = format!("sha256:{}", hex::encode(sha256(&artifact)));
        let b = bundle("a.txt.sigstore.json");
        let t = Trust::load(&TrustConfig {
            roots: vec![TrustRootConfig {
                name: "public-good".into(),
                trusted_root: fixture("public_good_trusted_root.json"),
                issuer: "https://github.com/login/oauth".into(),
                subject_regex: ".*@tny[.]town".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap();
        let roots: Vec<&TrustRoot> = t.roots.iter().collect();
        let digest: Digest = subject.parse().unwrap();
        let v = verify_bundle(&roots, &b, &digest, Some(&artifact));
        assert_eq!(v.verdict, VerdictKind::Valid, "{v:?}");
        // The same digest claimed for other bytes: the signature does not verify.
        let v = verify_bundle(&roots, &b, &digest, Some(b"other bytes"));
        assert!(v.summary().contains("bad signature"), "{v:?}");
    }

    #[test]
    fn tampered_public_good_evidence() {
        let good = bundle("kubewarden_controller_v1.34.0.sigstore.json");
        let t = trust(KUBEWARDEN);
        let entry = "/verificationMaterial/tlogEntries/0";

        // One audit path hash changed.
        let mut b = good.clone();
        let h = b
            .pointer_mut(&format!("{entry}/inclusionProof/hashes/3"))
            .unwrap();
        let mut bytes = B64.decode(h.as_str().unwrap()).unwrap();
        bytes[0] ^= 1;
        *h = Value::String(B64.encode(bytes));
        let v = verdict(&t, &b, KUBEWARDEN_IMAGE);
        assert!(v.summary().contains("inclusion proof"), "{v:?}");

        // The proof moved one leaf over.
        let mut b = good.clone();
        let i = b
            .pointer_mut(&format!("{entry}/inclusionProof/logIndex"))
            .unwrap();
        let next = i.as_str().unwrap().parse::<u64>().unwrap() + 1;
        *i = Value::String(next.to_string());
        let v = verdict(&t, &b, KUBEWARDEN_IMAGE);
        assert!(v.summary().contains("inclusion proof"), "{v:?}");

        // The integration time moved (the SET no longer verifies).
        let mut b = good.clone();
        let t0 = b.pointer_mut(&format!("{entry}/integratedTime")).unwrap();
        let later = t0.as_str().unwrap().parse::<i64>().unwrap() + 1;
        *t0 = Value::String(later.to_string());
        let v = verdict(&t, &b, KUBEWARDEN_IMAGE);
        assert!(v.summary().contains("bad signed entry timestamp"), "{v:?}");

        // Another DSSE payload under the same signature.
        let mut b = good.clone();
        let p = b.pointer_mut("/dsseEnvelope/payload").unwrap();
        let mut statement: Value =
            serde_json::from_slice(&B64.decode(p.as_str().unwrap()).unwrap()).unwrap();
        statement["predicate"] = serde_json::json!({"edited": true});
        *p = Value::String(B64.encode(serde_json::to_vec(&statement).unwrap()));
        let v = verdict(&t, &b, KUBEWARDEN_IMAGE);
        assert!(v.summary().contains("bad signature"), "{v:?}");
    }

    #[test]
    fn malformed_bundles_are_invalid_never_a_panic() {
        let good = bundle("kubewarden_controller_v1.34.0.sigstore.json");
        let t = trust(KUBEWARDEN);
        let entry = "/verificationMaterial/tlogEntries/0";
        let edits: Vec<(String, Value, &str)> = vec![
            (
                "/mediaType".into(),
                Value::Null,
                "unsupported bundle mediaType",
            ),
            (
                "/verificationMaterial".into(),
                Value::Null,
                "no certificate or public key",
            ),
            (
                "/verificationMaterial/certificate/rawBytes".into(),
                Value::String(B64.encode(b"garbage")),
                "not DER X.509",
            ),
            (
                "/dsseEnvelope".into(),
                Value::Null,
                "neither messageSignature nor dsseEnvelope",
            ),
            (
                "/dsseEnvelope/payload".into(),
                Value::String("%".into()),
                "is not base64",
            ),
            (
                format!("{entry}/canonicalizedBody"),
                Value::String(B64.encode(b"not json")),
                "Rekor entry mismatch",
            ),
            (
                format!("{entry}/integratedTime"),
                Value::String("soon".into()),
                "not an integer",
            ),
            (
                format!("{entry}/inclusionProof/hashes/0"),
                Value::String(B64.encode([0u8; 7])),
                "not 32 bytes",
            ),
            (
                format!("{entry}/inclusionProof/checkpoint/envelope"),
                Value::String("no signatures here".into()),
                "no signature block",
            ),
            (
                format!("{entry}/inclusionProof/treeSize"),
                Value::String("1".into()),
                "inclusion proof",
            ),
            (
                format!("{entry}/logId/keyId"),
                Value::String(B64.encode([9u8; 32])),
                "is not in the trusted root",
            ),
        ];
        for (pointer, value, expected) in edits {
            let mut b = good.clone();
            if value.is_null() {
                let (parent, key) = pointer.rsplit_once('/').unwrap();
                let parent = if parent.is_empty() {
                    &mut b
                } else {
                    b.pointer_mut(parent).unwrap()
                };
                parent.as_object_mut().unwrap().remove(key);
            } else {
                *b.pointer_mut(&pointer).unwrap() = value;
            }
            let v = verdict(&t, &b, KUBEWARDEN_IMAGE);
            assert_eq!(v.verdict, VerdictKind::Invalid, "{pointer}: {v:?}");
            assert!(
                v.summary().contains(expected),
                "{pointer}: {expected:?} not in {v:?}"
            );
        }
        // Without the SET, the timestamp authority dates the signature and the
        // inclusion proof shows the entry in the log: still valid. Without both, there
        // is no signed time.
        let mut b = good.clone();
        b["verificationMaterial"]["tlogEntries"][0]
            .as_object_mut()
            .unwrap()
            .remove("inclusionPromise");
        let v = verdict(&t, &b, KUBEWARDEN_IMAGE);
        assert_eq!(v.verdict, VerdictKind::Valid, "{v:?}");
        b["verificationMaterial"]
            .as_object_mut()
            .unwrap()
            .remove("timestampVerificationData");
        let v = verdict(&t, &b, KUBEWARDEN_IMAGE);
        assert!(v.summary().contains("no signed time"), "{v:?}");
        // A timestamp made for another signature.
        let mut b = good.clone();
        let ts = b
            .pointer_mut("/verificationMaterial/timestampVerificationData/rfc3161Timestamps/0/signedTimestamp")
            .unwrap();
        let mut token = B64.decode(ts.as_str().unwrap()).unwrap();
        token[100] ^= 1; // inside the message imprint
        *ts = Value::String(B64.encode(token));
        let v = verdict(&t, &b, KUBEWARDEN_IMAGE);
        assert!(v.summary().contains("timestamp: "), "{v:?}");

        // No tlog entry at all: the signing time is unknown.
        let mut b = good.clone();
        b["verificationMaterial"]["tlogEntries"] = serde_json::json!([]);
        let v = verdict(&t, &b, KUBEWARDEN_IMAGE);
        assert!(v.summary().contains("no Rekor entry"), "{v:?}");
    }
}
