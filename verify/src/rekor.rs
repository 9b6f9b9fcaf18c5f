//! Rekor evidence, checked offline against the trusted log keys: the signed entry
//! timestamp (SET) over the canonical JSON of an entry, the entry body against the
//! signature it claims to record, the RFC 6962 Merkle inclusion proof, and the signed
//! checkpoint (a signed note) that commits to the proof's root. The `sigstore` crate
//! does not check inclusion proofs, so the tree arithmetic lives here.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use sigstore::crypto::Signature;

use crate::trusted_root::{TransparencyLog, TrustedRoot};

pub type Hash = [u8; 32];

/// RFC 6962 leaf hash: SHA-256(0x00 || leaf).
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(leaf);
    h.finalize().into()
}

/// RFC 6962 interior node hash: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root an audit path leads to from leaf `index` of a tree of `size` leaves
/// (RFC 9162 section 2.1.3.2); an error when the path cannot belong to such a tree.
pub fn root_from_inclusion_proof(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
) -> Result<Hash, String> {
    if index >= size {
        return Err(format!("leaf index {index} is outside a tree of {size}"));
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err("the proof has more hashes than the tree has levels".into());
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err("the proof has fewer hashes than the tree has levels".into());
    }
    Ok(r)
}

/// Checks that `leaf` (the raw entry) is at `index` in the tree of `size` with `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &[u8],
    proof: &[Hash],
    root: &Hash,
) -> Result<(), String> {
    let computed = root_from_inclusion_proof(index, size, &leaf_hash(leaf), proof)?;
    if &computed != root {
        return Err(format!(
            "the audit path leads to {}, not to the root hash {}",
            hex::encode(computed),
            hex::encode(root)
        ));
    }
    Ok(())
}

/// A checkpoint (signed note) as Rekor writes it: `origin\nsize\nbase64(root)\n…\n\n`
/// followed by `— name base64(key hint || signature)` lines.
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

/// Parses `envelope` and checks that one of its signatures is the log's: the 4-byte key
/// hint is the start of the log ID and the signature over the note text verifies with
/// the log's key.
pub fn verify_checkpoint(envelope: &str, log: &TransparencyLog) -> Result<Checkpoint, String> {
    let Some(split) = envelope.find("\n\n") else {
        return Err("the checkpoint has no signature block".into());
    };
    let text = &envelope[..split + 1];
    let mut lines = text.lines();
    let origin = lines.next().unwrap_or_default().to_string();
    let size = lines
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or("the checkpoint's tree size is not a number")?;
    let root: Hash = lines
        .next()
        .and_then(|s| B64.decode(s).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or("the checkpoint's root hash is not 32 base64 bytes")?;
    let mut signed = false;
    for line in envelope[split + 2..].lines() {
        let Some(rest) = line.strip_prefix("\u{2014} ") else {
            continue;
        };
        let Some((_, sig)) = rest.rsplit_once(' ') else {
            continue;
        };
        let Ok(sig) = B64.decode(sig) else { continue };
        if sig.len() < 5 || sig[..4] != log.log_id[..4] {
            continue;
        }
        if log
            .key
            .verify_signature(Signature::Raw(&sig[4..]), text.as_bytes())
            .is_ok()
        {
            signed = true;
            break;
        }
    }
    if !signed {
        return Err("the checkpoint is not signed by the trusted log key".into());
    }
    Ok(Checkpoint { origin, size, root })
}

/// One transparency log entry, from a cosign bundle annotation or a Sigstore bundle.
pub struct Entry {
    /// The canonicalized entry body (decoded).
    pub body: Vec<u8>,
    pub integrated_time: i64,
    pub log_index: i64,
    pub log_id: Vec<u8>,
    /// The signed entry timestamp, when there is one.
    pub set: Option<Vec<u8>>,
    pub proof: Option<InclusionProof>,
}

pub struct InclusionProof {
    pub log_index: u64,
    pub tree_size: u64,
    pub root: Hash,
    pub hashes: Vec<Hash>,
    pub checkpoint: String,
}

/// What the evidence established: the log and, when a SET signs it, the time of
/// integration.
pub struct Verified<'a> {
    pub log: &'a TransparencyLog,
    pub integrated_time: Option<i64>,
}

impl Entry {
    /// Checks the SET and/or inclusion proof against the trusted root. At least one
    /// must be present; the integration time is trusted only when a SET signs it.
    pub fn verify<'a>(&self, root: &'a TrustedRoot) -> Result<Verified<'a>, String> {
        let log = root.tlog(&self.log_id).ok_or_else(|| {
            format!(
                "Rekor log {} is not in the trusted root",
                hex::encode(&self.log_id)
            )
        })?;
        if self.set.is_none() && self.proof.is_none() {
            return Err(
                "the Rekor entry has neither a signed entry timestamp nor an inclusion proof"
                    .into(),
            );
        }
        if let Some(set) = &self.set {
            let canonical = serde_json_canonicalizer::to_vec(&json!({
                "body": B64.encode(&self.body),
                "integratedTime": self.integrated_time,
                "logIndex": self.log_index,
                "logID": hex::encode(&self.log_id),
            }))
            .map_err(|e| format!("canonical JSON: {e}"))?;
            log.key
                .verify_signature(Signature::Raw(set), &canonical)
                .map_err(|_| {
                    "bad signed entry timestamp: the trusted Rekor key does not verify it"
                        .to_string()
                })?;
        }
        if let Some(p) = &self.proof {
            let checkpoint = verify_checkpoint(&p.checkpoint, log)
                .map_err(|e| format!("inclusion proof: {e}"))?;
            if checkpoint.size != p.tree_size || checkpoint.root != p.root {
                return Err(format!(
                    "inclusion proof: the checkpoint ({}, size {}) is not for the proof's tree (size {})",
                    checkpoint.origin, checkpoint.size, p.tree_size
                ));
            }
            verify_inclusion(p.log_index, p.tree_size, &self.body, &p.hashes, &p.root)
                .map_err(|e| format!("inclusion proof: {e}"))?;
        }
        let Some(_) = &self.set else {
            // Without a SET the integration time is unsigned: another source must date
            // the signature (an RFC 3161 timestamp).
            return Ok(Verified {
                log,
                integrated_time: None,
            });
        };
        let when = chrono::DateTime::from_timestamp(self.integrated_time, 0)
            .ok_or("the integration time is out of range")?;
        if !log.valid_for.contains(when) {
            return Err(format!(
                "Rekor log {} was not valid at the integration time {when}",
                log.base_url
            ));
        }
        Ok(Verified {
            log,
            integrated_time: Some(self.integrated_time),
        })
    }
}

/// What a signature claims, to be matched against the entry body.
pub enum Claim<'a> {
    /// A signature over an artifact (the simple-signing payload, or the image manifest).
    Message {
        /// SHA-256 of the signed bytes.
        digest: Hash,
        signature: &'a [u8],
    },
    /// A DSSE envelope.
    Dsse {
        payload: &'a [u8],
        signature: &'a [u8],
    },
}

/// Checks that the entry body records this signature over this content, made with the
/// key of `cert_der` (the Fulcio leaf) or the public key `spki_der`.
pub fn check_body(body: &[u8], claim: &Claim<'_>, signer_der: &[u8]) -> Result<(), String> {
    let entry: Value =
        serde_json::from_slice(body).map_err(|_| "the Rekor entry body is not JSON")?;
    let kind = entry["kind"].as_str().unwrap_or_default();
    let spec = &entry["spec"];
    let same_signer = |b64: &str| -> bool {
        B64.decode(b64)
            .ok()
            .is_some_and(|pem| pem_matches(&pem, signer_der))
    };
    let same_sig = |b64: &str, sig: &[u8]| B64.decode(b64).ok().as_deref() == Some(sig);
    // Rekor v2 bodies are told by their spec's shape: `apiVersion` 0.0.2 is also a
    // Rekor v1 `intoto` version.
    if spec.get("hashedRekordV002").is_some() || spec.get("dsseV002").is_some() {
        return check_body_v2(kind, spec, claim, signer_der);
    }
    match (kind, claim) {
        ("hashedrekord", Claim::Message { digest, signature }) => {
            let alg = spec["data"]["hash"]["algorithm"]
                .as_str()
                .unwrap_or_default();
            let value = spec["data"]["hash"]["value"].as_str().unwrap_or_default();
            if alg != "sha256" || value != hex::encode(digest) {
                return Err(format!(
                    "the Rekor entry records {alg}:{value}, not the signed content sha256:{}",
                    hex::encode(digest)
                ));
            }
            if !same_sig(
                spec["signature"]["content"].as_str().unwrap_or_default(),
                signature,
            ) {
                return Err("the Rekor entry records another signature".into());
            }
            if !same_signer(
                spec["signature"]["publicKey"]["content"]
                    .as_str()
                    .unwrap_or_default(),
            ) {
                return Err("the Rekor entry records another certificate or key".into());
            }
            Ok(())
        }
        ("dsse", Claim::Dsse { payload, signature }) => {
            let hash = hex::encode(Sha256::digest(payload));
            if spec["payloadHash"]["value"].as_str() != Some(hash.as_str()) {
                return Err("the Rekor entry records another DSSE payload".into());
            }
            let recorded = spec["signatures"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| {
                    same_sig(s["signature"].as_str().unwrap_or_default(), signature)
                        && same_signer(s["verifier"].as_str().unwrap_or_default())
                });
            if !recorded {
                return Err("the Rekor entry records another DSSE signature or signer".into());
            }
            Ok(())
        }
        ("intoto", Claim::Dsse { payload, signature }) => {
            let hash = hex::encode(Sha256::digest(payload));
            if spec["content"]["payloadHash"]["value"].as_str() != Some(hash.as_str()) {
                return Err("the Rekor entry records another in-toto payload".into());
            }
            // intoto v0.0.2 stores each signature base64-encoded once more.
            let recorded = spec["content"]["envelope"]["signatures"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| {
                    let sig = s["sig"]
                        .as_str()
                        .and_then(|x| B64.decode(x).ok())
                        .and_then(|x| String::from_utf8(x).ok());
                    sig.is_some_and(|x| same_sig(&x, signature))
                        && same_signer(s["publicKey"].as_str().unwrap_or_default())
                });
            if !recorded {
                return Err("the Rekor entry records another in-toto signature or signer".into());
            }
            Ok(())
        }
        (other, _) => Err(format!(
            "the Rekor entry kind {other:?} does not record this kind of signature"
        )),
    }
}

/// Rekor v2 (tile-based) entries: `hashedRekordV002` and `dsseV002`, hashes and keys
/// as base64 `rawBytes` rather than PEM.
fn check_body_v2(
    kind: &str,
    spec: &Value,
    claim: &Claim<'_>,
    signer_der: &[u8],
) -> Result<(), String> {
    let b64_eq = |v: &Value, bytes: &[u8]| {
        v.as_str()
            .and_then(|s| B64.decode(s).ok())
            .is_some_and(|d| d == bytes)
    };
    // A signature record: its content, made by this certificate (or public key).
    let recorded = |sig: &Value, signature: &[u8]| {
        let verifier = &sig["verifier"];
        b64_eq(&sig["content"], signature)
            && (b64_eq(&verifier["x509Certificate"]["rawBytes"], signer_der)
                || b64_eq(&verifier["publicKey"]["rawBytes"], signer_der))
    };
    match (kind, claim) {
        ("hashedrekord", Claim::Message { digest, signature }) => {
            let e = &spec["hashedRekordV002"];
            if e["data"]["algorithm"].as_str() != Some("SHA2_256")
                || !b64_eq(&e["data"]["digest"], digest)
            {
                return Err(format!(
                    "the Rekor entry records another digest than the signed content's sha256:{}",
                    hex::encode(digest)
                ));
            }
            if !recorded(&e["signature"], signature) {
                return Err("the Rekor entry records another signature or signer".into());
            }
            Ok(())
        }
        ("dsse", Claim::Dsse { payload, signature }) => {
            let e = &spec["dsseV002"];
            let hash = Sha256::digest(payload);
            if e["payloadHash"]["algorithm"].as_str() != Some("SHA2_256")
                || !b64_eq(&e["payloadHash"]["digest"], &hash)
            {
                return Err("the Rekor entry records another DSSE payload".into());
            }
            let any = e["signatures"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| recorded(s, signature));
            if !any {
                return Err("the Rekor entry records another DSSE signature or signer".into());
            }
            Ok(())
        }
        (other, _) => Err(format!(
            "the Rekor v2 entry kind {other:?} does not record this kind of signature"
        )),
    }
}

/// Whether PEM text holds `der` (a certificate or a public key).
fn pem_matches(pem_text: &[u8], der: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(pem_text) else {
        return false;
    };
    pem_blocks(text).iter().any(|b| b.as_slice() == der)
}

/// The base64 bodies of every PEM block in `text`, decoded.
pub fn pem_blocks(text: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN ") {
            body = Some(String::new());
        } else if line.starts_with("-----END ") {
            if let Some(b) = body.take() {
                if let Ok(der) = B64.decode(b) {
                    out.push(der);
                }
            }
        } else if let Some(b) = body.as_mut() {
            b.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC 6962 test tree (certificate-transparency-go's merkle tests): eight leaves.
    fn leaves() -> Vec<Vec<u8>> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|h| hex::decode(h).unwrap())
        .collect()
    }

    /// Merkle tree hash of `leaves` (RFC 6962 section 2.1), computed directly.
    fn mth(leaves: &[Vec<u8>]) -> Hash {
        match leaves.len() {
            0 => Sha256::digest([]).into(),
            1 => leaf_hash(&leaves[0]),
            n => {
                let k = n.next_power_of_two() / 2;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    /// Audit path of leaf `m` (RFC 6962 section 2.1.1), computed directly.
    fn path(m: usize, leaves: &[Vec<u8>]) -> Vec<Hash> {
        let n = leaves.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = n.next_power_of_two() / 2;
        if m < k {
            let mut p = path(m, &leaves[..k]);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = path(m - k, &leaves[k..]);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    #[test]
    fn known_roots() {
        // Roots published with the RFC 6962 reference tests.
        let l = leaves();
        assert_eq!(
            hex::encode(mth(&l[..1])),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        assert_eq!(
            hex::encode(mth(&l[..2])),
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"
        );
        assert_eq!(
            hex::encode(mth(&l[..3])),
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"
        );
        assert_eq!(
            hex::encode(mth(&l)),
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
        );
    }

    #[test]
    fn known_inclusion_proof() {
        // Leaf 0 of the 8-leaf tree, from the RFC 6962 reference vectors.
        let l = leaves();
        let proof: Vec<Hash> = [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ]
        .iter()
        .map(|h| hex::decode(h).unwrap().try_into().unwrap())
        .collect();
        assert_eq!(path(0, &l), proof);
        verify_inclusion(0, 8, &l[0], &proof, &mth(&l)).unwrap();
    }

    #[test]
    fn every_leaf_of_every_tree_size() {
        let l = leaves();
        for n in 1..=l.len() {
            let root = mth(&l[..n]);
            for m in 0..n {
                let p = path(m, &l[..n]);
                verify_inclusion(m as u64, n as u64, &l[m], &p, &root)
                    .unwrap_or_else(|e| panic!("leaf {m} of {n}: {e}"));
                // Another leaf, another index, a changed hash, a short or long path: refused.
                assert!(verify_inclusion(m as u64, n as u64, b"other", &p, &root).is_err());
                if n > 1 {
                    let other = (m + 1) % n;
                    assert!(verify_inclusion(other as u64, n as u64, &l[m], &p, &root).is_err());
                    let mut bad = p.clone();
                    bad[0][0] ^= 1;
                    assert!(verify_inclusion(m as u64, n as u64, &l[m], &bad, &root).is_err());
                    assert!(verify_inclusion(m as u64, n as u64, &l[m], &p[1..], &root).is_err());
                }
                let mut long = p.clone();
                long.push([0; 32]);
                assert!(verify_inclusion(m as u64, n as u64, &l[m], &long, &root).is_err());
            }
        }
        assert!(verify_inclusion(8, 8, &l[0], &[], &mth(&l)).is_err());
    }
}
