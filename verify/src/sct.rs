//! Certificate transparency for Fulcio leaves: the signed certificate timestamps (RFC
//! 6962 section 3) embedded in the certificate, checked offline against the CT log keys
//! of the trusted root. A precertificate SCT signs the certificate's TBS without the SCT
//! extension, bound to the issuer's key, so the TBS is re-encoded here without it.

use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};
use sigstore::crypto::Signature;

use crate::timestamp::{der_tlv, Reader};
use crate::trusted_root::TrustedRoot;

/// The SCT list extension, 1.3.6.1.4.1.11129.2.4.2 (DER contents of the OID).
const OID_SCT_LIST: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0xd6, 0x79, 0x02, 0x04, 0x02];

/// One embedded SCT.
struct Sct<'a> {
    log_id: &'a [u8],
    timestamp: u64,
    extensions: &'a [u8],
    signature: &'a [u8],
}

/// A big-endian cursor over TLS-encoded bytes.
struct Tls<'a>(&'a [u8]);

impl<'a> Tls<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated SCT".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn uint(&mut self, n: usize) -> Result<u64, String> {
        Ok(self.take(n)?.iter().fold(0u64, |v, b| (v << 8) | *b as u64))
    }

    fn vec16(&mut self) -> Result<&'a [u8], String> {
        let n = self.uint(2)? as usize;
        self.take(n)
    }
}

/// The leaf's TBS without the SCT extension, and the SCTs that extension held.
fn split_certificate(leaf_der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let cert = Reader::new(leaf_der).expect(0x30, "certificate")?;
    let tbs = Reader::new(cert.value).expect(0x30, "TBSCertificate")?;
    let mut out = Vec::new();
    let mut scts = None;
    let mut r = Reader::new(tbs.value);
    while !r.is_empty() {
        let field = r.next()?;
        if field.tag != 0xa3 {
            out.extend_from_slice(field.raw);
            continue;
        }
        let list = Reader::new(field.value).expect(0x30, "extensions")?;
        let mut kept = Vec::new();
        let mut exts = Reader::new(list.value);
        while !exts.is_empty() {
            let ext = exts.expect(0x30, "extension")?;
            let mut e = Reader::new(ext.value);
            if e.expect(0x06, "extension id")?.value == OID_SCT_LIST {
                // extnValue is an OCTET STRING holding a DER OCTET STRING of the list.
                let mut value = e.next()?;
                if value.tag == 0x01 {
                    value = e.next()?;
                }
                let inner = Reader::new(value.value).expect(0x04, "SCT list")?;
                scts = Some(inner.value.to_vec());
            } else {
                kept.extend_from_slice(ext.raw);
            }
        }
        out.extend(der_tlv(0xa3, &der_tlv(0x30, &kept)));
    }
    let scts = scts.ok_or("the certificate embeds no signed certificate timestamp")?;
    Ok((der_tlv(0x30, &out), scts))
}

fn parse_scts(list: &[u8]) -> Result<Vec<Sct<'_>>, String> {
    let mut outer = Tls(list);
    let mut all = Tls(outer.vec16()?);
    let mut out = Vec::new();
    while !all.0.is_empty() {
        let mut s = Tls(all.vec16()?);
        if s.uint(1)? != 0 {
            continue; // only v1 SCTs exist
        }
        let log_id = s.take(32)?;
        let timestamp = s.uint(8)?;
        let extensions = s.vec16()?;
        s.take(2)?; // hash and signature algorithm: the log key decides
        let signature = s.vec16()?;
        out.push(Sct {
            log_id,
            timestamp,
            extensions,
            signature,
        });
    }
    Ok(out)
}

/// Checks that one SCT of `leaf_der`, issued under the key `issuer_spki_der`, is signed
/// by a CT log of the trusted root valid at its time. Returns that time.
pub fn verify(
    leaf_der: &[u8],
    issuer_spki_der: &[u8],
    root: &TrustedRoot,
) -> Result<DateTime<Utc>, String> {
    let (tbs, list) = split_certificate(leaf_der)?;
    let scts = parse_scts(&list)?;
    let issuer_key_hash = Sha256::digest(issuer_spki_der);
    let mut last = "no SCT is from a CT log of the trusted root".to_string();
    for sct in scts {
        let Some(log) = root
            .ctlogs
            .iter()
            .find(|l| l.log_id.as_slice() == sct.log_id)
        else {
            continue;
        };
        let when = DateTime::<Utc>::from_timestamp_millis(sct.timestamp as i64)
            .ok_or("the SCT time is out of range")?;
        if !log.valid_for.contains(when) {
            last = format!("CT log {} was not valid at {when}", log.base_url);
            continue;
        }
        // digitally-signed struct of a precert_entry (RFC 6962 section 3.2).
        let mut signed = vec![0u8, 0u8];
        signed.extend_from_slice(&sct.timestamp.to_be_bytes());
        signed.extend_from_slice(&[0, 1]);
        signed.extend_from_slice(&issuer_key_hash);
        let n = tbs.len();
        signed.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
        signed.extend_from_slice(&tbs);
        signed.extend_from_slice(&(sct.extensions.len() as u16).to_be_bytes());
        signed.extend_from_slice(sct.extensions);
        if log
            .key
            .verify_signature(Signature::Raw(sct.signature), &signed)
            .is_ok()
        {
            return Ok(when);
        }
        last = format!("the SCT of CT log {} does not verify", log.base_url);
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine as _;
    use serde_json::Value;
    use x509_cert::der::{Decode as _, Encode as _};
    use x509_cert::Certificate;

    use super::*;

    fn fixture(name: &str) -> Value {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../api-tests/tests/fixtures/keyless")
            .join(name);
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// The public-good root, a real leaf, and the SPKI of the CA that issued it.
    fn public_good(bundle: &str) -> (TrustedRoot, Vec<u8>, Vec<u8>) {
        let root = TrustedRoot::parse(
            &serde_json::to_vec(&fixture("public_good_trusted_root.json")).unwrap(),
        )
        .unwrap();
        let b = fixture(bundle);
        let leaf = B64
            .decode(
                b["verificationMaterial"]["certificate"]["rawBytes"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        let issuer_name = Certificate::from_der(&leaf)
            .unwrap()
            .tbs_certificate()
            .issuer()
            .clone();
        let issuer = root
            .certificate_authorities
            .iter()
            .flat_map(|a| a.chain.iter())
            .map(|c| Certificate::from_der(c).unwrap())
            .find(|c| *c.tbs_certificate().subject() == issuer_name)
            .unwrap();
        let spki = issuer
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .unwrap();
        (root, leaf, spki)
    }

    #[test]
    fn real_fulcio_certificates_carry_valid_scts() {
        for bundle in [
            "kubewarden_controller_v1.34.0.sigstore.json",
            "npm_sigstore_5.0.0.sigstore.json",
        ] {
            let (root, leaf, spki) = public_good(bundle);
            let when = verify(&leaf, &spki, &root).unwrap_or_else(|e| panic!("{bundle}: {e}"));
            assert!(when.timestamp() > 1_700_000_000, "{bundle}: {when}");
        }
    }

    #[test]
    fn another_issuer_key_or_log_is_refused() {
        let (root, leaf, spki) = public_good("npm_sigstore_5.0.0.sigstore.json");
        // The SCT binds the issuer's key.
        let mut other = spki.clone();
        let last = other.len() - 1;
        other[last] ^= 1;
        assert!(verify(&leaf, &other, &root)
            .unwrap_err()
            .contains("does not verify"));
        // Without the CT logs, no SCT is trusted.
        let mut bare = root;
        bare.ctlogs.clear();
        assert!(verify(&leaf, &spki, &bare)
            .unwrap_err()
            .contains("no SCT is from a CT log"));
        // A certificate without SCTs.
        let (_, kube, _) = public_good("kubewarden_controller_v1.34.0.sigstore.json");
        let root_ca = &bare.certificate_authorities[0].chain[0];
        assert!(verify(root_ca, &spki, &bare)
            .unwrap_err()
            .contains("embeds no signed certificate timestamp"));
        assert!(verify(&kube[..kube.len() / 2], &spki, &bare).is_err());
    }
}
