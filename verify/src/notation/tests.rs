//! Envelopes made by the notation CLI (`verify/testdata/notation`, sources noted there)
//! and envelopes made here in both encodings: valid, tampered, expired, another root's,
//! another signer's.

use std::path::{Path, PathBuf};

use chrono::TimeZone as _;

use super::testing::{self, Signing, TestCa, TestSigner};
use super::*;
use crate::trust::{Trust, TrustConfig, TrustRootConfig};
use crate::VerdictKind;

const E2E_SUBJECT: &str = "sha256:cc2ae4e91a31a77086edbdbf4711de48e5fa3ebdacad3403e61777a9e1a53b6f";
const GO_SUBJECT: &str = "sha256:19dbd2e48e921426ee8ace4dc892edfb2ecdc1d1a72d5416c83670c30acecef0";
const SUBJECT: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/notation")
        .join(name)
}

fn digest(s: &str) -> Digest {
    s.parse().unwrap()
}

/// A root named `release` with `ca` as its `ca` store (or signing authority store).
fn root_config(dir: &Path, ca_pem: &str, identity: &str, level: Level) -> TrustRootConfig {
    let file = dir.join(format!("ca-{}.pem", Sha256Hex::of(ca_pem)));
    std::fs::write(&file, ca_pem).unwrap();
    TrustRootConfig {
        name: "release".into(),
        notation_ca: vec![file],
        notation_identities: vec![identity.to_string()],
        notation_level: Some(level),
        ..Default::default()
    }
}

struct Sha256Hex;
impl Sha256Hex {
    fn of(s: &str) -> String {
        use sha2::{Digest as _, Sha256};
        hex::encode(&Sha256::digest(s.as_bytes())[..6])
    }
}

fn trust(roots: Vec<TrustRootConfig>) -> Trust {
    Trust::load(&TrustConfig {
        roots,
        ..Default::default()
    })
    .unwrap()
}

fn check(trust: &Trust, media_type: &str, envelope: &[u8], subject: &str) -> Verdict {
    let roots: Vec<&TrustRoot> = trust.roots.iter().collect();
    let subject = digest(subject);
    let subject = Subject {
        digest: &subject,
        descriptor: None,
    };
    verify(&roots, media_type, envelope, &subject, Utc::now())
}

const ID: &str = "x509.subject: C=US, ST=WA, O=Acme, CN=release";

fn acme(ca: &TestCa, from: i32, to: i32) -> TestSigner {
    ca.signer(&testing::subject("Acme", "release"), from, to)
}

fn no_timestamp(_: &[u8]) -> Option<Vec<u8>> {
    None
}

type Make = fn(&TestSigner, &Signing, &dyn Fn(&[u8]) -> Option<Vec<u8>>) -> Vec<u8>;

/// Both encodings, by name.
fn encodings() -> [(&'static str, Make); 2] {
    [
        (JWS_MEDIA_TYPE, |s, g, t| testing::jws(s, g, t)),
        (COSE_MEDIA_TYPE, |s, g, t| testing::cose(s, g, t)),
    ]
}

#[test]
fn envelopes_of_the_notation_cli_verify() {
    let dir = tempfile::tempdir().unwrap();
    for (envelope, cert, cn, subject) in [
        ("e2e-valid.jws.json", "e2e.crt", "e2e", E2E_SUBJECT),
        (
            "notation-go-jws_signature.sig",
            "NotationExample.pem",
            "alpine",
            GO_SUBJECT,
        ),
    ] {
        let bytes = std::fs::read(testdata(envelope)).unwrap();
        let pem = std::fs::read_to_string(testdata(cert)).unwrap();
        let id = format!("x509.subject: C=US, ST=WA, O=Notary, CN={cn}");
        let t = trust(vec![root_config(dir.path(), &pem, &id, Level::Strict)]);
        let v = check(&t, JWS_MEDIA_TYPE, &bytes, subject);
        assert!(v.is_valid(), "{envelope}: {v:?}");
        assert_eq!(v.root.as_deref(), Some("release"));
        assert!(
            v.signer.as_deref().unwrap().contains(&format!("CN={cn}")),
            "{v:?}"
        );
        // The payload describes the manifest: its size and media type too.
        let roots: Vec<&TrustRoot> = t.roots.iter().collect();
        let d = digest(subject);
        let (size, media) = if cn == "e2e" {
            (417, "application/vnd.oci.artifact.manifest.v1+json")
        } else {
            (481, "application/vnd.oci.image.manifest.v1+json")
        };
        for (descriptor, ok) in [((size, media), true), ((size + 1, media), false)] {
            let s = Subject {
                digest: &d,
                descriptor: Some(descriptor),
            };
            let v = verify(&roots, JWS_MEDIA_TYPE, &bytes, &s, Utc::now());
            assert_eq!(v.is_valid(), ok, "{v:?}");
        }
        // Not a signature of another manifest.
        let v = check(&t, JWS_MEDIA_TYPE, &bytes, SUBJECT);
        assert!(v.summary().contains("not sha256:1111"), "{v:?}");
        // Another signer of the same trust store is not this identity.
        let other = trust(vec![root_config(
            dir.path(),
            &pem,
            "x509.subject: C=US, ST=WA, O=Notary, CN=someone-else",
            Level::Strict,
        )]);
        let v = check(&other, JWS_MEDIA_TYPE, &bytes, subject);
        assert!(v.summary().contains("not a trusted identity"), "{v:?}");
        // Any change to the signed part breaks the signature.
        let mut json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let payload = json["payload"].as_str().unwrap().to_string();
        let decoded = URL_SAFE_NO_PAD.decode(&payload).unwrap();
        let edited = String::from_utf8(decoded)
            .unwrap()
            .replace("\"size\":", "\"size\":1");
        json["payload"] = URL_SAFE_NO_PAD.encode(edited).into();
        let v = check(
            &t,
            JWS_MEDIA_TYPE,
            &serde_json::to_vec(&json).unwrap(),
            subject,
        );
        assert!(v.summary().contains("bad signature"), "{v:?}");
    }
}

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

#[test]
fn made_envelopes_verify_in_both_encodings_and_tampering_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Acme Root");
    let signer = acme(&ca, 2020, 2080);
    let t = trust(vec![root_config(dir.path(), &ca.pem, ID, Level::Strict)]);
    for (media_type, make) in encodings() {
        let good = make(&signer, &Signing::new(SUBJECT), &no_timestamp);
        let v = check(&t, media_type, &good, SUBJECT);
        assert!(v.is_valid(), "{media_type}: {v:?}");
        assert_eq!(
            v.signer.as_deref(),
            Some("CN=release, C=US, ST=WA, O=Acme"),
            "{media_type}"
        );
        // The last bytes of both encodings are the signature's.
        let mut tampered = good.clone();
        let at = tampered.len() - 10;
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        let v = check(&t, media_type, &tampered, SUBJECT);
        assert_eq!(v.verdict, VerdictKind::Invalid, "{media_type}");
        // Another media type's parser refuses it; truncation never panics.
        assert!(check(&t, media_type, &good[..good.len() / 2], SUBJECT)
            .summary()
            .contains("malformed"));
        // A critical header this verifier does not know.
        let unknown = Signing {
            unknown_critical: true,
            ..Signing::new(SUBJECT)
        };
        let v = check(
            &t,
            media_type,
            &make(&signer, &unknown, &no_timestamp),
            SUBJECT,
        );
        assert!(
            v.summary().contains("not understood"),
            "{media_type}: {v:?}"
        );
    }
    // Each byte of a COSE envelope changed in turn: never a panic, never a pass
    // unless the byte is outside what is signed (the unprotected header).
    // Both encodings: a change that still verifies changed nothing that is signed
    // (what it changed is in the unprotected header, or a base64 padding bit).
    for (media_type, make) in encodings() {
        let good = make(&signer, &Signing::new(SUBJECT), &no_timestamp);
        let original = envelope::parse(media_type, &good).unwrap();
        let mut passed = 0;
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x01;
            if check(&t, media_type, &b, SUBJECT).is_valid() {
                passed += 1;
                let changed = envelope::parse(media_type, &b).unwrap();
                assert_eq!(changed.signed, original.signed, "{media_type} byte {i}");
                assert_eq!(
                    changed.signature, original.signature,
                    "{media_type} byte {i}"
                );
                assert_eq!(changed.chain[0], original.chain[0], "{media_type} byte {i}");
            }
        }
        assert!(
            passed < good.len() / 2,
            "{media_type}: {passed} changes passed"
        );
    }
}

#[test]
fn another_root_another_identity_and_no_root() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Acme Root");
    let rogue = TestCa::new("Rogue Root");
    for (media_type, make) in encodings() {
        let by_rogue = make(
            &acme(&rogue, 2020, 2080),
            &Signing::new(SUBJECT),
            &no_timestamp,
        );
        let t = trust(vec![root_config(dir.path(), &ca.pem, ID, Level::Strict)]);
        let v = check(&t, media_type, &by_rogue, SUBJECT);
        assert!(v.summary().contains("authenticity"), "{media_type}: {v:?}");
        // The audit level logs authenticity: the verdict stays invalid, the pull
        // policy of the root becomes audit.
        let audit = trust(vec![root_config(dir.path(), &ca.pem, ID, Level::Audit)]);
        assert_eq!(
            check(&audit, media_type, &by_rogue, SUBJECT).verdict,
            VerdictKind::Invalid
        );
        assert_eq!(audit.policy_for("any"), PolicyMode::Audit);

        let mallory = ca.signer(&testing::subject("Acme", "mallory"), 2020, 2080);
        let v = check(
            &t,
            media_type,
            &make(&mallory, &Signing::new(SUBJECT), &no_timestamp),
            SUBJECT,
        );
        assert!(
            v.summary().contains("not a trusted identity"),
            "{media_type}: {v:?}"
        );
        let any = trust(vec![root_config(dir.path(), &ca.pem, "*", Level::Strict)]);
        let v = check(
            &any,
            media_type,
            &make(&mallory, &Signing::new(SUBJECT), &no_timestamp),
            SUBJECT,
        );
        assert!(v.is_valid(), "{media_type}: {v:?}");

        let none = trust(Vec::new());
        let good = make(
            &acme(&ca, 2020, 2080),
            &Signing::new(SUBJECT),
            &no_timestamp,
        );
        assert_eq!(
            check(&none, media_type, &good, SUBJECT).verdict,
            VerdictKind::NoTrustRoot
        );
    }
}

#[test]
fn expired_certificates_and_signatures_follow_the_level() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Acme Root");
    let old = acme(&ca, 2021, 2022);
    let tsa = ca.tsa("Acme TSA");
    let strict = trust(vec![root_config(dir.path(), &ca.pem, ID, Level::Strict)]);
    let permissive = trust(vec![root_config(
        dir.path(),
        &ca.pem,
        ID,
        Level::Permissive,
    )]);
    let mut with_tsa = root_config(dir.path(), &ca.pem, ID, Level::Strict);
    let tsa_file = dir.path().join("tsa.pem");
    std::fs::write(&tsa_file, &ca.pem).unwrap();
    with_tsa.notation_tsa = vec![tsa_file];
    let timestamped = trust(vec![with_tsa]);
    let in_2021 = Utc.with_ymd_and_hms(2021, 6, 1, 0, 0, 0).unwrap();
    for (media_type, make) in encodings() {
        let signing = Signing {
            signing_time: in_2021,
            ..Signing::new(SUBJECT)
        };
        let plain = make(&old, &signing, &no_timestamp);
        let v = check(&strict, media_type, &plain, SUBJECT);
        assert!(
            v.summary().contains("authentic timestamp"),
            "{media_type}: {v:?}"
        );
        let v = check(&permissive, media_type, &plain, SUBJECT);
        assert!(v.is_valid(), "{media_type}: {v:?}");
        assert!(v
            .reason
            .as_deref()
            .unwrap()
            .contains("logged: authentic timestamp"));
        // A timestamp from a trusted TSA while the certificate was valid.
        let stamped = make(&old, &signing, &|sig| {
            Some(testing::timestamp_token(&tsa, sig, in_2021))
        });
        let v = check(&timestamped, media_type, &stamped, SUBJECT);
        assert!(v.is_valid(), "{media_type}: {v:?}");
        // Dated after the certificate expired: no help.
        let late = make(&old, &signing, &|sig| {
            Some(testing::timestamp_token(&tsa, sig, Utc::now()))
        });
        assert!(!check(&timestamped, media_type, &late, SUBJECT).is_valid());
        // A timestamp over another signature.
        let other = make(&old, &signing, &|_| {
            Some(testing::timestamp_token(
                &tsa,
                b"another signature",
                in_2021,
            ))
        });
        let v = check(&timestamped, media_type, &other, SUBJECT);
        assert!(
            v.summary().contains("message imprint"),
            "{media_type}: {v:?}"
        );

        // An expired signature: refused when strict, logged when permissive.
        let current = acme(&ca, 2020, 2080);
        let lapsed = Signing {
            expiry: Some(Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()),
            ..Signing::new(SUBJECT)
        };
        let env = make(&current, &lapsed, &no_timestamp);
        assert!(check(&strict, media_type, &env, SUBJECT)
            .summary()
            .contains("expired"));
        let v = check(&permissive, media_type, &env, SUBJECT);
        assert!(
            v.is_valid() && v.reason.as_deref().unwrap().contains("expiry"),
            "{v:?}"
        );
    }
}

#[test]
fn a_signing_authority_vouches_for_the_signing_time() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Acme Signing Authority");
    let file = dir.path().join("sa.pem");
    std::fs::write(&file, &ca.pem).unwrap();
    let sa = trust(vec![TrustRootConfig {
        name: "release".into(),
        notation_signing_authority: vec![file],
        notation_identities: vec![ID.into()],
        ..Default::default()
    }]);
    let ca_only = trust(vec![root_config(dir.path(), &ca.pem, ID, Level::Strict)]);
    let old = acme(&ca, 2021, 2022);
    for (media_type, make) in encodings() {
        let signing = Signing {
            scheme: "notary.x509.signingAuthority",
            signing_time: Utc.with_ymd_and_hms(2021, 6, 1, 0, 0, 0).unwrap(),
            ..Signing::new(SUBJECT)
        };
        let env = make(&old, &signing, &no_timestamp);
        let v = check(&sa, media_type, &env, SUBJECT);
        assert!(v.is_valid(), "{media_type}: {v:?}");
        let v = check(&ca_only, media_type, &env, SUBJECT);
        assert!(
            v.summary().contains("signingAuthority"),
            "{media_type}: {v:?}"
        );
        // Outside the certificate's validity.
        let late = Signing {
            signing_time: Utc.with_ymd_and_hms(2023, 6, 1, 0, 0, 0).unwrap(),
            ..signing.clone()
        };
        assert!(!check(&sa, media_type, &make(&old, &late, &no_timestamp), SUBJECT).is_valid());
    }
}

#[test]
fn a_notation_trust_policy_and_store_become_roots() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Acme Root");
    let store = dir.path().join("truststore");
    std::fs::create_dir_all(store.join("x509/ca/acme")).unwrap();
    std::fs::write(store.join("x509/ca/acme/root.crt"), &ca.pem).unwrap();
    let policy = dir.path().join("trustpolicy.json");
    std::fs::write(
        &policy,
        serde_json::to_vec(&serde_json::json!({"version": "1.0", "trustPolicies": [
            {"name": "apps", "registryScopes": ["localhost:5000/team/app"],
             "signatureVerification": {"level": "strict"},
             "trustStores": ["ca:acme"], "trustedIdentities": [ID]},
            {"name": "legacy", "registryScopes": ["localhost:5000/legacy/tool"],
             "signatureVerification": {"level": "skip"}},
            {"name": "rest", "registryScopes": ["*"],
             "signatureVerification": {"level": "audit"},
             "trustStores": ["ca:acme"], "trustedIdentities": ["*"]}
        ]}))
        .unwrap(),
    )
    .unwrap();
    let t = Trust::load(&TrustConfig {
        policy: PolicyMode::Enforce,
        notation: Some(crate::trust::NotationTrustPolicyConfig {
            trust_policy: policy,
            trust_store: store,
            policy: None,
        }),
        ..Default::default()
    })
    .unwrap();
    let names = |repo: &str| -> Vec<String> { t.roots_for(repo).map(|r| r.name.clone()).collect() };
    assert_eq!(names("team/app"), vec!["apps"]);
    assert_eq!(names("legacy/tool"), vec!["legacy"]);
    assert_eq!(names("other/thing"), vec!["rest"]);
    assert_eq!(t.policy_for("team/app"), PolicyMode::Enforce);
    assert_eq!(t.policy_for("legacy/tool"), PolicyMode::Off);
    assert_eq!(t.policy_for("other/thing"), PolicyMode::Audit);
    let env = testing::jws(&acme(&ca, 2020, 2080), &Signing::new(SUBJECT), no_timestamp);
    let subject = digest(SUBJECT);
    let subject = Subject {
        digest: &subject,
        descriptor: None,
    };
    let roots: Vec<&TrustRoot> = t.roots_for("team/app").collect();
    let v = verify(&roots, JWS_MEDIA_TYPE, &env, &subject, Utc::now());
    assert_eq!(v.root.as_deref(), Some("apps"), "{v:?}");
    // A skip statement verifies nothing.
    let roots: Vec<&TrustRoot> = t.roots_for("legacy/tool").collect();
    let v = verify(&roots, JWS_MEDIA_TYPE, &env, &subject, Utc::now());
    assert_eq!(v.verdict, VerdictKind::NoTrustRoot);
    assert!(t.describe().contains("notation:"), "{}", t.describe());
}

#[test]
fn configurations_that_would_weaken_or_blur_trust_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Acme Root");
    // A notation level that serves unverified, on a root that also holds a cosign key.
    let key = dir.path().join("cosign.pub");
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(&key, pair.public_key_pem()).unwrap();
    let mixed = TrustRootConfig {
        public_key: key,
        ..root_config(dir.path(), &ca.pem, ID, Level::Audit)
    };
    let e = Trust::load(&TrustConfig {
        roots: vec![mixed],
        ..Default::default()
    })
    .err()
    .unwrap();
    assert!(e.to_string().contains("a root of its own"), "{e}");
    // Two registries' scopes naming one repository, with no registry_names to tell
    // them apart.
    let store = dir.path().join("truststore");
    std::fs::create_dir_all(store.join("x509/ca/acme")).unwrap();
    std::fs::write(store.join("x509/ca/acme/root.pem"), &ca.pem).unwrap();
    let policy = dir.path().join("trustpolicy.json");
    let statement = |name: &str, scope: &str| {
        serde_json::json!({"name": name, "registryScopes": [scope],
            "signatureVerification": {"level": "strict"},
            "trustStores": ["ca:acme"], "trustedIdentities": ["*"]})
    };
    std::fs::write(
        &policy,
        serde_json::json!({"version": "1.0", "trustPolicies": [
            statement("a", "a.example/app"), statement("b", "b.example/app")]})
        .to_string(),
    )
    .unwrap();
    let config = |names: Vec<String>| TrustConfig {
        registry_names: names,
        notation: Some(crate::trust::NotationTrustPolicyConfig {
            trust_policy: policy.clone(),
            trust_store: store.clone(),
            policy: None,
        }),
        ..Default::default()
    };
    let e = Trust::load(&config(Vec::new())).err().unwrap();
    assert!(e.to_string().contains("both scope repository"), "{e}");
    let t = Trust::load(&config(vec!["b.example".into()])).unwrap();
    let names: Vec<&str> = t.roots_for("app").map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["b"]);
    // A symbolic link in a trust store.
    std::os::unix::fs::symlink(
        store.join("x509/ca/acme/root.pem"),
        store.join("x509/ca/acme/link.pem"),
    )
    .unwrap();
    let e = Trust::load(&config(vec!["b.example".into()]))
        .err()
        .unwrap();
    assert!(e.to_string().contains("symbolic links"), "{e}");
}
