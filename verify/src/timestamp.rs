//! RFC 3161 timestamps from a trusted timestamp authority (`timestampVerificationData`
//! of a Sigstore bundle): a CMS SignedData over a TSTInfo whose message imprint is the
//! hash of the artifact signature. Checked offline: the imprint, the signed attributes'
//! message digest, the TSA's signature over them, and the TSA certificate's chain (with
//! the time-stamping usage) to a timestamp authority of the trusted root at the
//! stamped time. The structures are walked with a small DER reader: only the fields
//! verification needs are read, and any other shape is refused.

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use chrono::{DateTime, NaiveDateTime, Utc};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use sha2::{Digest as _, Sha256, Sha384, Sha512};
use x509_cert::der::{Decode as _, Encode as _};
use x509_cert::Certificate;

use crate::trusted_root::{Authority, TrustedRoot};

/// id-kp-timeStamping (1.3.6.1.5.5.7.3.8), DER contents.
const EKU_TIME_STAMPING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08];
const OID_SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
const OID_TST_INFO: &[u8] = &[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x04,
];
const OID_MESSAGE_DIGEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x04];
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const OID_SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const OID_SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];
const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const OID_ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const OID_ECDSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
const OID_RSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

/// One DER element: its tag, its contents, and its whole encoding.
#[derive(Clone, Copy)]
pub(super) struct Tlv<'a> {
    pub tag: u8,
    pub value: &'a [u8],
    pub raw: &'a [u8],
}

/// Reads the DER elements of `input` one after another.
pub(super) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Reader { rest: input }
    }

    pub fn next(&mut self) -> Result<Tlv<'a>, String> {
        let input = self.rest;
        let (&tag, after) = input.split_first().ok_or("truncated DER")?;
        if tag & 0x1f == 0x1f {
            return Err("multi-byte DER tags are not used here".into());
        }
        let (&first, mut after) = after.split_first().ok_or("truncated DER length")?;
        let len = if first < 0x80 {
            first as usize
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || after.len() < n {
                return Err("bad DER length".into());
            }
            let len = after[..n]
                .iter()
                .fold(0usize, |l, b| (l << 8) | *b as usize);
            after = &after[n..];
            len
        };
        if after.len() < len {
            return Err("truncated DER value".into());
        }
        let header = input.len() - after.len();
        let raw = &input[..header + len];
        self.rest = &after[len..];
        Ok(Tlv {
            tag,
            value: &after[..len],
            raw,
        })
    }

    pub fn expect(&mut self, tag: u8, what: &str) -> Result<Tlv<'a>, String> {
        let t = self.next().map_err(|e| format!("{what}: {e}"))?;
        if t.tag != tag {
            return Err(format!("{what}: unexpected DER tag {:#04x}", t.tag));
        }
        Ok(t)
    }

    pub fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

/// The DER encoding of one element: `tag`, definite length, `content`.
pub(super) fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let n = content.len();
    let mut out = vec![tag];
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn digest(alg: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
    Ok(match alg {
        OID_SHA256 => Sha256::digest(data).to_vec(),
        OID_SHA384 => Sha384::digest(data).to_vec(),
        OID_SHA512 => Sha512::digest(data).to_vec(),
        _ => return Err("unsupported digest algorithm".into()),
    })
}

/// The OID inside an AlgorithmIdentifier.
fn algorithm(alg_id: Tlv<'_>) -> Result<&[u8], String> {
    Ok(Reader::new(alg_id.value)
        .expect(0x06, "algorithm identifier")?
        .value)
}

/// The time the token proves, once everything about it verified.
pub fn verify(token: &[u8], signature: &[u8], root: &TrustedRoot) -> Result<DateTime<Utc>, String> {
    verify_against(token, signature, &root.timestamp_authorities)
}

/// [`verify`] against a list of timestamp authorities (a Notary Project `tsa` trust
/// store gives each of its certificates as one, unbounded in time).
pub fn verify_against(
    token: &[u8],
    signature: &[u8],
    timestamp_authorities: &[Authority],
) -> Result<DateTime<Utc>, String> {
    // A TimeStampResp (status, token) or the token (a ContentInfo) alone.
    let mut outer = Reader::new(Reader::new(token).expect(0x30, "timestamp")?.value);
    let first = outer.next()?;
    let content_info = if first.tag == 0x30 {
        let status = Reader::new(first.value).expect(0x02, "PKIStatus")?;
        if !matches!(status.value, [0] | [1]) {
            return Err("the timestamp response does not grant a timestamp".into());
        }
        outer.expect(0x30, "timeStampToken")?.value
    } else {
        Reader::new(token).expect(0x30, "ContentInfo")?.value
    };
    let mut ci = Reader::new(content_info);
    if ci.expect(0x06, "contentType")?.value != OID_SIGNED_DATA {
        return Err("the timestamp token is not CMS SignedData".into());
    }
    let explicit = ci.expect(0xa0, "content")?;
    let mut sd = Reader::new(
        Reader::new(explicit.value)
            .expect(0x30, "SignedData")?
            .value,
    );
    sd.expect(0x02, "version")?;
    sd.expect(0x31, "digestAlgorithms")?;
    let mut encap = Reader::new(sd.expect(0x30, "encapContentInfo")?.value);
    if encap.expect(0x06, "eContentType")?.value != OID_TST_INFO {
        return Err("the signed content is not a TSTInfo".into());
    }
    let e_content = Reader::new(encap.expect(0xa0, "eContent")?.value)
        .expect(0x04, "eContent")?
        .value;
    let mut embedded = Vec::new();
    if sd.peek_tag() == Some(0xa0) {
        let certs = sd.next()?;
        let mut r = Reader::new(certs.value);
        while !r.is_empty() {
            embedded.push(r.expect(0x30, "certificate")?.raw.to_vec());
        }
    }
    if sd.peek_tag() == Some(0xa1) {
        sd.next()?;
    }
    let mut signers = Reader::new(sd.expect(0x31, "signerInfos")?.value);
    let signer = signers.expect(0x30, "SignerInfo")?;
    if !signers.is_empty() {
        return Err("the timestamp has more than one signer".into());
    }

    // TSTInfo: the imprint must be the hash of the signature being dated.
    let mut tst = Reader::new(Reader::new(e_content).expect(0x30, "TSTInfo")?.value);
    tst.expect(0x02, "TSTInfo version")?;
    tst.expect(0x06, "TSTInfo policy")?;
    let mut imprint = Reader::new(tst.expect(0x30, "messageImprint")?.value);
    let imprint_alg = algorithm(imprint.expect(0x30, "hashAlgorithm")?)?;
    let imprinted = imprint.expect(0x04, "hashedMessage")?.value;
    if digest(imprint_alg, signature)? != imprinted {
        return Err("the timestamp is for another signature (message imprint mismatch)".into());
    }
    tst.expect(0x02, "serialNumber")?;
    let gen_time = tst.expect(0x18, "genTime")?;
    let gen_time = parse_generalized_time(gen_time.value)?;

    // SignerInfo: signed attributes carry the digest of the TSTInfo; the TSA signs them.
    let mut si = Reader::new(signer.value);
    si.expect(0x02, "SignerInfo version")?;
    let sid = si.next()?;
    let digest_alg = algorithm(si.expect(0x30, "digestAlgorithm")?)?;
    let attrs = si.expect(0xa0, "signedAttrs")?;
    let sig_alg = algorithm(si.expect(0x30, "signatureAlgorithm")?)?;
    let sig = si.expect(0x04, "signature")?.value;
    let mut found_digest = None;
    let mut ar = Reader::new(attrs.value);
    while !ar.is_empty() {
        let mut attr = Reader::new(ar.expect(0x30, "attribute")?.value);
        let oid = attr.expect(0x06, "attribute type")?.value;
        let values = attr.expect(0x31, "attribute values")?;
        if oid == OID_MESSAGE_DIGEST {
            found_digest = Some(
                Reader::new(values.value)
                    .expect(0x04, "messageDigest")?
                    .value,
            );
        }
    }
    if found_digest != Some(digest(digest_alg, e_content)?.as_slice()) {
        return Err("the timestamp's signed attributes do not match its content".into());
    }
    // The signature covers the attributes encoded as a SET, not with their [0] tag.
    let mut signed_attrs = attrs.raw.to_vec();
    signed_attrs[0] = 0x31;

    // The signing certificate: embedded, or the leaf of a trusted authority's chain,
    // matched by issuer and serial number (IssuerAndSerialNumber): serials are unique
    // per issuer only, and certificates of two issuers may share one.
    let (issuer, serial) = match sid.tag {
        0x30 => {
            let mut r = Reader::new(sid.value);
            let issuer = r.expect(0x30, "issuer")?.raw;
            (issuer, r.expect(0x02, "serialNumber")?.value)
        }
        _ => return Err("the timestamp names its signer by key identifier".into()),
    };
    let authorities: Vec<_> = timestamp_authorities
        .iter()
        .filter(|a| a.valid_for.contains(gen_time))
        .collect();
    if authorities.is_empty() {
        return Err(format!(
            "no timestamp authority trusted here was valid at {gen_time}"
        ));
    }
    let candidates: Vec<Vec<u8>> = embedded
        .iter()
        .cloned()
        .chain(
            authorities
                .iter()
                .flat_map(|a| a.chain.iter().map(|c| c.to_vec())),
        )
        .collect();
    let signer_der = candidates
        .iter()
        .find(|der| {
            Certificate::from_der(der).is_ok_and(|c| {
                let tbs = c.tbs_certificate();
                let number = tbs.serial_number().as_bytes();
                (number == serial.strip_prefix(&[0]).unwrap_or(serial) || number == serial)
                    && tbs.issuer().to_der().is_ok_and(|name| name == issuer)
            })
        })
        .ok_or("the timestamp's signing certificate is not known")?;
    let cert = Certificate::from_der(signer_der).map_err(|e| format!("TSA certificate: {e}"))?;
    let spki = cert.tbs_certificate().subject_public_key_info();
    let key = spki.subject_public_key.raw_bytes();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.to_der().ok())
        .and_then(|der| Reader::new(&der).next().ok().map(|t| t.value.to_vec()));
    let alg: &'static dyn VerificationAlgorithm = match (sig_alg, curve.as_deref()) {
        (OID_ECDSA_SHA256, Some(OID_P256)) => &signature::ECDSA_P256_SHA256_ASN1,
        (OID_ECDSA_SHA384, Some(OID_P256)) => &signature::ECDSA_P256_SHA384_ASN1,
        (OID_ECDSA_SHA256, Some(OID_P384)) => &signature::ECDSA_P384_SHA256_ASN1,
        (OID_ECDSA_SHA384, Some(OID_P384)) => &signature::ECDSA_P384_SHA384_ASN1,
        (OID_ECDSA_SHA512, Some(OID_P384)) => &signature::ECDSA_P384_SHA512_ASN1,
        (OID_RSA_SHA256, _) => &signature::RSA_PKCS1_2048_8192_SHA256,
        _ => return Err("the timestamp's signature algorithm is not supported".into()),
    };
    UnparsedPublicKey::new(alg, key)
        .verify(&signed_attrs, sig)
        .map_err(|_| "bad timestamp signature: the TSA certificate's key does not verify it")?;

    // The TSA certificate chains to a trusted authority, for time stamping, then.
    let anchors: Vec<TrustAnchor<'_>> =
        authorities.iter().filter_map(|a| a.anchor().ok()).collect();
    let intermediates: Vec<CertificateDer<'_>> = authorities
        .iter()
        .flat_map(|a| a.intermediates().iter().cloned())
        .chain(embedded.iter().map(|d| CertificateDer::from(d.clone())))
        .collect();
    let der = CertificateDer::from(signer_der.as_slice());
    let ee = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| format!("TSA certificate unusable: {e:?}"))?;
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        gen_time.timestamp().max(0) as u64,
    ));
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &intermediates,
        at,
        webpki::KeyUsage::required(EKU_TIME_STAMPING),
        None,
        None,
    )
    .map_err(|e| {
        format!("the TSA certificate does not chain to a trusted timestamp authority ({e:?})")
    })?;
    Ok(gen_time)
}

/// `YYYYMMDDHHMMSS[.fff]Z`.
fn parse_generalized_time(v: &[u8]) -> Result<DateTime<Utc>, String> {
    let s = std::str::from_utf8(v).map_err(|_| "genTime is not text")?;
    let s = s.strip_suffix('Z').ok_or("genTime is not in UTC")?;
    let whole = s.split('.').next().unwrap_or(s);
    NaiveDateTime::parse_from_str(whole, "%Y%m%d%H%M%S")
        .map(|t| t.and_utc())
        .map_err(|_| format!("genTime {s:?} is not a time"))
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine as _;
    use serde_json::Value;

    use super::*;

    fn fixture(name: &str) -> Value {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../api-tests/tests/fixtures/keyless")
            .join(name);
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn public_good() -> (TrustedRoot, Vec<u8>, Vec<u8>) {
        let root = TrustedRoot::parse(
            &serde_json::to_vec(&fixture("public_good_trusted_root.json")).unwrap(),
        )
        .unwrap();
        let b = fixture("kubewarden_controller_v1.34.0.sigstore.json");
        let token = B64
            .decode(
                b["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"][0]
                    ["signedTimestamp"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        let sig = B64
            .decode(b["dsseEnvelope"]["signatures"][0]["sig"].as_str().unwrap())
            .unwrap();
        (root, token, sig)
    }

    #[test]
    fn the_public_good_tsa_dates_a_real_signature() {
        let (root, token, sig) = public_good();
        let when = verify(&token, &sig, &root).unwrap();
        assert_eq!(when.to_rfc3339(), "2026-04-09T07:23:29+00:00");
    }

    #[test]
    fn another_signature_or_an_edited_token_is_refused() {
        let (root, token, sig) = public_good();
        let mut other = sig.clone();
        other[10] ^= 1;
        let e = verify(&token, &other, &root).unwrap_err();
        assert!(e.contains("message imprint mismatch"), "{e}");
        // Each byte of the token changed in turn: never a panic; and never accepted
        // when the byte is signed: the TSTInfo (bytes 72..237 of this token), the
        // signed attributes (346..601) and the signature (615..717). CMS leaves some
        // framing unsigned (versions, the digest algorithm list, the status).
        assert_eq!(token.len(), 717);
        for i in 0..token.len() {
            let mut t = token.clone();
            t[i] ^= 0x01;
            let signed = (72..237).contains(&i) || (346..601).contains(&i) || i >= 615;
            if let Ok(when) = verify(&t, &sig, &root) {
                assert!(
                    !signed,
                    "signed byte {i} changed and it still verified ({when})"
                );
            }
        }
        assert!(verify(b"", &sig, &root).is_err());
        assert!(verify(&token[..token.len() / 2], &sig, &root).is_err());
        // The signer named by the right serial number under another issuer: no
        // certificate is that one.
        let leaf = Certificate::from_der(&root.timestamp_authorities[0].chain[0]).unwrap();
        let issuer = leaf.tbs_certificate().issuer().to_der().unwrap();
        // Its sid, in the SignerInfo before the signed attributes (which name the
        // issuer again, signed).
        let at = (237..346)
            .find(|&i| token[i..].starts_with(&issuer))
            .expect("the signer's issuer in the SignerInfo");
        let mut renamed = token.clone();
        renamed[at + issuer.len() - 1] ^= 0x01;
        let e = verify(&renamed, &sig, &root).unwrap_err();
        assert!(e.contains("signing certificate is not known"), "{e}");
        // A trusted root without that authority.
        let mut bare = root;
        bare.timestamp_authorities.clear();
        assert!(verify(&token, &sig, &bare)
            .unwrap_err()
            .contains("no timestamp authority trusted here"));
    }
}
