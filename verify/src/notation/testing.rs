//! Test material for Notary Project signatures (feature `test-support`): a CA, signing
//! certificates, envelopes in both encodings, and RFC 3161 tokens from a test timestamp
//! authority. What a real signer makes, built here so tests can also make what it
//! never would (tampered, expired, another root's).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use coset::cbor::value::Value as Cbor;
use coset::{iana, CoseSign1Builder, HeaderBuilder, RegisteredLabel, TaggedCborSerializable};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use sha2::{Digest as _, Sha256};
use x509_cert::der::{Decode as _, Encode as _};

use super::envelope::PAYLOAD_CONTENT_TYPE;
use crate::timestamp::der_tlv;

/// A test certificate authority.
pub struct TestCa {
    pub der: Vec<u8>,
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A signing certificate, its chain (leaf first) and key.
pub struct TestSigner {
    pub chain: Vec<Vec<u8>>,
    key: KeyPair,
}

/// A subject as `C=US, ST=WA, O=<org>, CN=<cn>`.
pub fn subject(org: &str, cn: &str) -> Vec<(DnType, String)> {
    vec![
        (DnType::CountryName, "US".into()),
        (DnType::StateOrProvinceName, "WA".into()),
        (DnType::OrganizationName, org.into()),
        (DnType::CommonName, cn.into()),
    ]
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        for (t, v) in subject("Signet Test", name) {
            params.distinguished_name.push(t, v);
        }
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2090, 1, 1);
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A code-signing certificate for `dn`, valid from `from` to `to` (years).
    pub fn signer(&self, dn: &[(DnType, String)], from: i32, to: i32) -> TestSigner {
        self.issue(dn, from, to, ExtendedKeyUsagePurpose::CodeSigning)
    }

    /// A timestamp authority's certificate.
    pub fn tsa(&self, name: &str) -> TestSigner {
        self.issue(
            &subject("Signet Test", name),
            2020,
            2090,
            ExtendedKeyUsagePurpose::TimeStamping,
        )
    }

    fn issue(
        &self,
        dn: &[(DnType, String)],
        from: i32,
        to: i32,
        usage: ExtendedKeyUsagePurpose,
    ) -> TestSigner {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("leaf key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        for (t, v) in dn {
            params.distinguished_name.push(t.clone(), v.clone());
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(to, 1, 1);
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        TestSigner {
            chain: vec![cert.der().to_vec(), self.der.clone()],
            key,
        }
    }
}

impl TestSigner {
    /// ES256 as JWS and COSE want it: r || s.
    fn sign_fixed(&self, message: &[u8]) -> Vec<u8> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &self.key.serialize_der())
                .expect("key");
        pair.sign(&SystemRandom::new(), message)
            .expect("sign")
            .as_ref()
            .to_vec()
    }
}

/// What to put in an envelope.
#[derive(Clone)]
pub struct Signing {
    /// The digest the payload names.
    pub subject: String,
    /// The size and media type it gives the subject.
    pub subject_size: u64,
    pub subject_media_type: String,
    /// `notary.x509` or `notary.x509.signingAuthority`.
    pub scheme: &'static str,
    pub signing_time: DateTime<Utc>,
    pub expiry: Option<DateTime<Utc>>,
    /// A critical header this verifier does not know, to be refused.
    pub unknown_critical: bool,
}

impl Signing {
    /// A signature of the digest `subject` (size 0, an OCI image manifest).
    pub fn new(subject: &str) -> Signing {
        Signing {
            subject: subject.to_string(),
            subject_size: 0,
            subject_media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            scheme: "notary.x509",
            signing_time: Utc::now(),
            expiry: None,
            unknown_critical: false,
        }
    }

    /// A signature of the OCI image manifest `manifest`, described as notation does.
    pub fn of_manifest(manifest: &[u8]) -> Signing {
        Signing {
            subject_size: manifest.len() as u64,
            ..Signing::new(&format!("sha256:{}", hex::encode(Sha256::digest(manifest))))
        }
    }

    fn payload(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"targetArtifact": {
            "mediaType": self.subject_media_type,
            "digest": self.subject,
            "size": self.subject_size,
        }}))
        .expect("payload")
    }

    fn critical(&self) -> Vec<String> {
        let mut crit = vec!["io.cncf.notary.signingScheme".to_string()];
        if self.expiry.is_some() {
            crit.push("io.cncf.notary.expiry".into());
        }
        if self.scheme == "notary.x509.signingAuthority" {
            crit.push("io.cncf.notary.authenticSigningTime".into());
        }
        if self.unknown_critical {
            crit.push("io.example.mustUnderstand".into());
        }
        crit
    }

    fn time_header(&self) -> &'static str {
        if self.scheme == "notary.x509.signingAuthority" {
            "io.cncf.notary.authenticSigningTime"
        } else {
            "io.cncf.notary.signingTime"
        }
    }
}

/// A JWS envelope; `timestamp(signature)` may return an RFC 3161 token to carry.
pub fn jws(
    signer: &TestSigner,
    signing: &Signing,
    timestamp: impl Fn(&[u8]) -> Option<Vec<u8>>,
) -> Vec<u8> {
    let mut protected = serde_json::json!({
        "alg": "ES256",
        "crit": signing.critical(),
        "cty": PAYLOAD_CONTENT_TYPE,
        "io.cncf.notary.signingScheme": signing.scheme,
    });
    protected[signing.time_header()] = signing.signing_time.to_rfc3339().into();
    if let Some(expiry) = signing.expiry {
        protected["io.cncf.notary.expiry"] = expiry.to_rfc3339().into();
    }
    if signing.unknown_critical {
        protected["io.example.mustUnderstand"] = "yes".into();
    }
    let protected = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&protected).unwrap());
    let payload = URL_SAFE_NO_PAD.encode(signing.payload());
    let signature = signer.sign_fixed(format!("{protected}.{payload}").as_bytes());
    let mut header = serde_json::json!({
        "x5c": signer.chain.iter().map(|c| STANDARD.encode(c)).collect::<Vec<_>>(),
        "io.cncf.notary.signingAgent": "signet-test",
    });
    if let Some(token) = timestamp(&signature) {
        header["io.cncf.notary.timestampSignature"] = STANDARD.encode(token).into();
    }
    serde_json::to_vec(&serde_json::json!({
        "payload": payload,
        "protected": protected,
        "header": header,
        "signature": URL_SAFE_NO_PAD.encode(&signature),
    }))
    .unwrap()
}

/// A COSE envelope (tagged COSE_Sign1), times as tag 1 epoch seconds as notation
/// writes them.
pub fn cose(
    signer: &TestSigner,
    signing: &Signing,
    timestamp: impl Fn(&[u8]) -> Option<Vec<u8>>,
) -> Vec<u8> {
    let epoch = |t: DateTime<Utc>| Cbor::Tag(1, Box::new(Cbor::Integer(t.timestamp().into())));
    let mut protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .content_type(PAYLOAD_CONTENT_TYPE.to_string())
        .text_value(
            "io.cncf.notary.signingScheme".into(),
            Cbor::Text(signing.scheme.into()),
        )
        .text_value(signing.time_header().into(), epoch(signing.signing_time));
    for name in signing.critical() {
        protected = protected.add_critical_label(RegisteredLabel::Text(name));
    }
    if let Some(expiry) = signing.expiry {
        protected = protected.text_value("io.cncf.notary.expiry".into(), epoch(expiry));
    }
    if signing.unknown_critical {
        protected =
            protected.text_value("io.example.mustUnderstand".into(), Cbor::Text("yes".into()));
    }
    let chain = Cbor::Array(
        signer
            .chain
            .iter()
            .map(|c| Cbor::Bytes(c.clone()))
            .collect(),
    );
    let unsigned = CoseSign1Builder::new()
        .protected(protected.build())
        .payload(signing.payload())
        .create_signature(b"", |tbs| signer.sign_fixed(tbs))
        .build();
    let mut unprotected = HeaderBuilder::new().value(33, chain).text_value(
        "io.cncf.notary.signingAgent".into(),
        Cbor::Text("signet-test".into()),
    );
    if let Some(token) = timestamp(&unsigned.signature) {
        unprotected = unprotected.text_value(
            "io.cncf.notary.timestampSignature".into(),
            Cbor::Bytes(token),
        );
    }
    let sign1 = coset::CoseSign1 {
        unprotected: unprotected.build(),
        ..unsigned
    };
    sign1.to_tagged_vec().expect("COSE encoding")
}

/// An RFC 3161 token by `tsa` over `signature`, dated `at`.
pub fn timestamp_token(tsa: &TestSigner, signature: &[u8], at: DateTime<Utc>) -> Vec<u8> {
    const SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
    const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    const SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
    const TST_INFO: &[u8] = &[
        0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x04,
    ];
    const MESSAGE_DIGEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x04];
    let seq = |parts: &[Vec<u8>]| der_tlv(0x30, &parts.concat());
    let oid = |o: &[u8]| der_tlv(0x06, o);
    let sha256_id = seq(&[oid(SHA256)]);
    let tst_info = seq(&[
        der_tlv(0x02, &[1]),
        oid(&[0x2a, 0x03, 0x04]),
        seq(&[sha256_id.clone(), der_tlv(0x04, &Sha256::digest(signature))]),
        der_tlv(0x02, &[7]),
        der_tlv(0x18, at.format("%Y%m%d%H%M%SZ").to_string().as_bytes()),
    ]);
    let attribute = seq(&[
        oid(MESSAGE_DIGEST),
        der_tlv(0x31, &der_tlv(0x04, &Sha256::digest(&tst_info))),
    ]);
    let signed_attrs = der_tlv(0x31, &attribute);
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &tsa.key.serialize_der())
        .expect("TSA key");
    let sig = pair
        .sign(&SystemRandom::new(), &signed_attrs)
        .expect("sign");
    let cert = x509_cert::Certificate::from_der(&tsa.chain[0]).expect("TSA certificate");
    let issuer = cert.tbs_certificate().issuer().to_der().expect("issuer");
    let serial = der_tlv(0x02, cert.tbs_certificate().serial_number().as_bytes());
    let mut implicit_attrs = signed_attrs.clone();
    implicit_attrs[0] = 0xa0;
    let signer_info = seq(&[
        der_tlv(0x02, &[1]),
        seq(&[issuer, serial]),
        sha256_id.clone(),
        implicit_attrs,
        seq(&[oid(ECDSA_SHA256)]),
        der_tlv(0x04, sig.as_ref()),
    ]);
    let signed_data = seq(&[
        der_tlv(0x02, &[3]),
        der_tlv(0x31, &sha256_id),
        seq(&[oid(TST_INFO), der_tlv(0xa0, &der_tlv(0x04, &tst_info))]),
        der_tlv(0xa0, &tsa.chain[0]),
        der_tlv(0x31, &signer_info),
    ]);
    seq(&[oid(SIGNED_DATA), der_tlv(0xa0, &signed_data)])
}
