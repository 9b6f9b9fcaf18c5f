//! Keyless Sigstore verification, entirely offline: the test stands up its own Fulcio
//! (a root and an intermediate CA issuing short-lived code-signing certificates with
//! the Fulcio OIDC extensions), its own Rekor (an ECDSA key signing SETs over the
//! canonical entry, a real Merkle tree with inclusion proofs and a signed checkpoint)
//! and writes the `trusted_root.json` Signet is configured with. Cosign `.sig` layers
//! and Sigstore v0.3 bundle referrers pushed over HTTP must verify, and each kind of
//! tampering must give `invalid` with the reason that names it.

use std::process::Command;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData as _, SanType,
    SigningKey as _, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519,
};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use signet_api_tests::cosign::{
    attachment_tag, pae, push_cosign_manifest, push_referrer, simple_signing_payload, trust_check,
    verdict_of, DSSE, IN_TOTO, SIG_ANNOTATION, SIMPLESIGNING,
};
use signet_api_tests::oci::{descriptor, error_code, get, push_image, OCI_MANIFEST};
use signet_api_tests::{client, require_tool, sha256, signet_binary, Registry};

const CERT_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
const BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";
const TIMESTAMP_ANNOTATION: &str = "dev.sigstore.cosign/rfc3161timestamp";
const BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const PROVENANCE: &str = "https://slsa.dev/provenance/v0.2";
const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

const ISSUER: &str = "https://token.actions.example.com";
const IDENTITY: &str = "release@signet.example";

/// 2026-01-01T00:00:00Z: leaf certificates are valid for this day.
const DAY_START: i64 = 1_767_225_600;
/// Noon of that day: when the test Rekor integrates entries.
const NOON: i64 = DAY_START + 12 * 3600;

// ---------------------------------------------------------------------------------
// A Fulcio of our own
// ---------------------------------------------------------------------------------

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
    der: Vec<u8>,
}

impl Ca {
    /// A P-384 root CA named `cn`.
    fn root(cn: &str) -> Ca {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let params = ca_params(cn);
        let cert = params.self_signed(&key).unwrap();
        Ca::new(params, key, cert)
    }

    fn new(params: CertificateParams, key: KeyPair, cert: rcgen::Certificate) -> Ca {
        Ca {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            params,
            key,
        }
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "signet.example");
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2040, 1, 1);
    p
}

struct Fulcio {
    root: Ca,
    intermediate: Ca,
}

impl Fulcio {
    fn new(name: &str) -> Fulcio {
        let root = Ca::root(&format!("{name} root"));
        let int_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let mut int_params = ca_params(&format!("{name} intermediate"));
        int_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        let int_cert = int_params.signed_by(&int_key, &root.issuer()).unwrap();
        Fulcio {
            intermediate: Ca::new(int_params, int_key, int_cert),
            root,
        }
    }

    /// A Fulcio-style leaf: empty subject, the identity in the SAN, code signing, the
    /// OIDC issuer in both Fulcio extensions, valid for `DAY_START`'s day.
    fn issue(&self, identity: &str, issuer: &str) -> Leaf {
        self.issue_between(identity, issuer, (2026, 1, 1), (2026, 1, 2))
    }

    fn issue_between(
        &self,
        identity: &str,
        issuer: &str,
        from: (i32, u8, u8),
        to: (i32, u8, u8),
    ) -> Leaf {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names = vec![if identity.contains("://") {
            SanType::URI(identity.try_into().unwrap())
        } else {
            SanType::Rfc822Name(identity.try_into().unwrap())
        }];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        p.not_before = date_time_ymd(from.0, from.1, from.2);
        p.not_after = date_time_ymd(to.0, to.1, to.2);
        // 1.3.6.1.4.1.57264.1.1: the raw issuer URL; .1.8: a DER UTF8String.
        let mut utf8 = vec![0x0c, issuer.len() as u8];
        utf8.extend_from_slice(issuer.as_bytes());
        p.custom_extensions = vec![
            CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 4, 1, 57264, 1, 1],
                issuer.as_bytes().to_vec(),
            ),
            CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 57264, 1, 8], utf8),
        ];
        let cert = p.signed_by(&key, &self.intermediate.issuer()).unwrap();
        Leaf {
            key,
            pem: cert.pem(),
            der: cert.der().to_vec(),
            chain_pem: format!("{}{}", self.intermediate.pem, self.root.pem),
        }
    }
}

struct Leaf {
    key: KeyPair,
    pem: String,
    der: Vec<u8>,
    /// What cosign puts in the chain annotation: intermediate, then root.
    chain_pem: String,
}

impl Leaf {
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.key.sign(msg).unwrap()
    }
}

// ---------------------------------------------------------------------------------
// A Rekor of our own
// ---------------------------------------------------------------------------------

struct Rekor {
    key: KeyPair,
    spki: Vec<u8>,
    log_id: [u8; 32],
    /// The checkpoint origin (and key name).
    origin: String,
}

impl Rekor {
    /// A Rekor v1 log: ECDSA P-256, its log ID the SHA-256 of the DER key.
    fn new() -> Rekor {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let spki = key.subject_public_key_info();
        let log_id = Sha256::digest(&spki).into();
        Rekor {
            key,
            spki,
            log_id,
            origin: "signet-test-log - 2605736670972794746".into(),
        }
    }

    /// A Rekor v2 (tile) log: Ed25519, its log ID the C2SP signed-note key ID,
    /// SHA-256(origin || LF || 0x01 || raw key).
    fn v2(origin: &str) -> Rekor {
        let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let spki = key.subject_public_key_info();
        let mut h = Sha256::new();
        h.update(origin.as_bytes());
        h.update(b"\n\x01");
        h.update(&spki[spki.len() - 32..]);
        Rekor {
            key,
            spki,
            log_id: h.finalize().into(),
            origin: origin.into(),
        }
    }

    /// The SET: a signature over the canonical JSON of the entry (keys sorted, no
    /// spaces), written out by hand so no serializer setting can change it.
    fn set(&self, body: &[u8], integrated_time: i64, log_index: u64, log_id: &[u8]) -> Vec<u8> {
        let canonical = format!(
            "{{\"body\":\"{}\",\"integratedTime\":{integrated_time},\"logID\":\"{}\",\"logIndex\":{log_index}}}",
            B64.encode(body),
            hex::encode(log_id)
        );
        self.key.sign(canonical.as_bytes()).unwrap()
    }

    /// A signed note for a tree of `size` with `root`, as Rekor writes checkpoints.
    fn checkpoint(&self, size: u64, root: &[u8; 32]) -> String {
        let text = format!("{}\n{size}\n{}\n", self.origin, B64.encode(root));
        let mut sig = self.log_id[..4].to_vec();
        sig.extend(self.key.sign(text.as_bytes()).unwrap());
        let name = self.origin.split(' ').next().unwrap();
        format!("{text}\n\u{2014} {name} {}\n", B64.encode(sig))
    }
}

/// RFC 6962 hashing, written independently of the server's.
fn leaf_hash(data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0]);
    h.update(data);
    h.finalize().into()
}

fn node_hash(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

fn mth(leaves: &[Vec<u8>]) -> [u8; 32] {
    if leaves.len() == 1 {
        return leaf_hash(&leaves[0]);
    }
    let k = leaves.len().next_power_of_two() / 2;
    node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
}

fn audit_path(m: usize, leaves: &[Vec<u8>]) -> Vec<[u8; 32]> {
    if leaves.len() <= 1 {
        return Vec::new();
    }
    let k = leaves.len().next_power_of_two() / 2;
    let (mut p, other) = if m < k {
        (audit_path(m, &leaves[..k]), mth(&leaves[k..]))
    } else {
        (audit_path(m - k, &leaves[k..]), mth(&leaves[..k]))
    };
    p.push(other);
    p
}

fn pem_b64(pem: &str) -> String {
    B64.encode(pem.as_bytes())
}

/// A hashedrekord entry body for a signature over content with this SHA-256.
fn hashedrekord(digest_hex: &str, sig: &[u8], leaf: &Leaf) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": digest_hex}},
            "signature": {"content": B64.encode(sig), "publicKey": {"content": pem_b64(&leaf.pem)}},
        },
    }))
    .unwrap()
}

// ---------------------------------------------------------------------------------
// The world: CAs, logs, the trusted root file, Signet
// ---------------------------------------------------------------------------------

struct World {
    _dir: tempfile::TempDir,
    trusted_root: String,
    fulcio: Fulcio,
    rekor: Rekor,
    /// A Rekor v2 log beside the v1 one.
    rekor_v2: Rekor,
    tsa: Tsa,
}

/// A timestamp authority: a root and a signing certificate with the (critical)
/// time-stamping usage, driven through `openssl ts`.
struct Tsa {
    root: Ca,
    signer_pem: String,
    signer_der: Vec<u8>,
    signer_key_pem: String,
}

impl Tsa {
    fn new(name: &str) -> Tsa {
        let root = Ca::root(&format!("{name} root"));
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{name} signer"));
        p.distinguished_name = dn;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2040, 1, 1);
        // extKeyUsage = timeStamping, critical (RFC 3161 and openssl insist).
        let mut eku = CustomExtension::from_oid_content(
            &[2, 5, 29, 37],
            vec![
                0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08,
            ],
        );
        eku.set_criticality(true);
        p.custom_extensions = vec![eku];
        let cert = p.signed_by(&key, &root.issuer()).unwrap();
        Tsa {
            root,
            signer_pem: cert.pem(),
            signer_der: cert.der().to_vec(),
            signer_key_pem: key.serialize_pem(),
        }
    }

    /// An RFC 3161 timestamp response over `data` (SHA-256 imprint), made now.
    fn stamp(&self, data: &[u8]) -> Vec<u8> {
        let openssl = require_tool("openssl");
        let dir = tempfile::tempdir().unwrap();
        let at = |f: &str| dir.path().join(f);
        std::fs::write(at("data"), data).unwrap();
        std::fs::write(at("signer.pem"), &self.signer_pem).unwrap();
        std::fs::write(at("chain.pem"), &self.root.pem).unwrap();
        std::fs::write(at("signer.key"), &self.signer_key_pem).unwrap();
        std::fs::write(
            at("ts.cnf"),
            format!(
                "[tsa]\ndefault_tsa = signet\n[signet]\ndir = {0}\nserial = {0}/serial\n\
                 signer_cert = {0}/signer.pem\ncerts = {0}/chain.pem\nsigner_key = {0}/signer.key\n\
                 signer_digest = sha256\ndefault_policy = 1.3.6.1.4.1.57264.2\n\
                 digests = sha256, sha384, sha512\naccuracy = secs:1\nordering = no\n\
                 tsa_name = no\ness_cert_id_chain = no\ness_cert_id_alg = sha256\n",
                dir.path().display()
            ),
        )
        .unwrap();
        std::fs::write(at("serial"), "01\n").unwrap();
        let run = |args: &[&str]| {
            let out = Command::new(&openssl).args(args).output().unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let p = |f: &str| at(f).display().to_string();
        run(&[
            "ts",
            "-query",
            "-data",
            &p("data"),
            "-sha256",
            "-cert",
            "-no_nonce",
            "-out",
            &p("req.tsq"),
        ]);
        run(&[
            "ts",
            "-reply",
            "-config",
            &p("ts.cnf"),
            "-queryfile",
            &p("req.tsq"),
            "-out",
            &p("resp.tsr"),
        ]);
        std::fs::read(at("resp.tsr")).unwrap()
    }
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let fulcio = Fulcio::new("signet test fulcio");
        let rekor = Rekor::new();
        let rekor_v2 = Rekor::v2("log2026.rekor.signet.example");
        let tsa = Tsa::new("signet test tsa");
        let trusted_root = json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [{
                "baseUrl": "https://rekor.signet.example",
                "hashAlgorithm": "SHA2_256",
                "publicKey": {"rawBytes": B64.encode(&rekor.spki), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                              "validFor": {"start": "2020-01-01T00:00:00Z"}},
                "logId": {"keyId": B64.encode(rekor.log_id)},
            }, {
                "baseUrl": "https://log2026.rekor.signet.example",
                "hashAlgorithm": "SHA2_256",
                "publicKey": {"rawBytes": B64.encode(&rekor_v2.spki), "keyDetails": "PKIX_ED25519",
                              "validFor": {"start": "2026-01-01T00:00:00Z"}},
                "logId": {"keyId": B64.encode(rekor_v2.log_id)},
            }],
            "certificateAuthorities": [{
                "subject": {"organization": "signet.example", "commonName": "signet test fulcio"},
                "uri": "https://fulcio.signet.example",
                "certChain": {"certificates": [
                    {"rawBytes": B64.encode(&fulcio.intermediate.der)},
                    {"rawBytes": B64.encode(&fulcio.root.der)},
                ]},
                "validFor": {"start": "2020-01-01T00:00:00Z"},
            }],
            "ctlogs": [],
            "timestampAuthorities": [{
                "subject": {"organization": "signet.example", "commonName": "signet test tsa"},
                "uri": "https://tsa.signet.example",
                "certChain": {"certificates": [
                    {"rawBytes": B64.encode(&tsa.signer_der)},
                    {"rawBytes": B64.encode(&tsa.root.der)},
                ]},
                "validFor": {"start": "2020-01-01T00:00:00Z"},
            }],
        });
        let path = dir.path().join("trusted_root.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&trusted_root).unwrap()).unwrap();
        World {
            trusted_root: path.display().to_string(),
            _dir: dir,
            fulcio,
            rekor,
            rekor_v2,
            tsa,
        }
    }

    fn config(&self, policy: &str) -> String {
        format!(
            "[trust]\npolicy = \"{policy}\"\n\
             [[trust.roots]]\nname = \"release\"\nrepositories = [\"keyless/**\"]\n\
             trusted_root = \"{}\"\nissuer = \"{ISSUER}\"\nsubject = \"{IDENTITY}\"\n",
            self.trusted_root
        )
    }

    /// A second keyless root, for `strict/**`, that checks docker-references.
    fn config_with_strict_root(&self) -> String {
        format!(
            "{}[[trust.roots]]\nname = \"strict\"\nrepositories = [\"strict/**\"]\n\
             trusted_root = \"{}\"\nissuer = \"{ISSUER}\"\nsubject_regex = \".*@signet[.]example\"\n\
             docker_reference = \"repository\"\n",
            self.config("off"),
            self.trusted_root
        )
    }
}

/// How a `.sig` is to be made (each field one way to tamper with it).
#[derive(Clone, Copy)]
struct SigPlan<'a> {
    leaf: &'a Leaf,
    /// The subject the payload names (another image's digest: a copied signature).
    names: &'a str,
    integrated_time: i64,
    /// The key that signs the SET (another key: a forged SET).
    set_signer: &'a Rekor,
    /// The repository the payload's docker-reference names (default: the one pushed to).
    reference: Option<&'a str>,
    /// A timestamp authority stamping the signature (`--timestamp-server-url`).
    tsa: Option<&'a Tsa>,
}

impl<'a> SigPlan<'a> {
    /// A genuine signature by `leaf`, logged at noon in the world's Rekor.
    fn new(w: &'a World, leaf: &'a Leaf) -> SigPlan<'a> {
        SigPlan {
            leaf,
            names: "",
            integrated_time: NOON,
            set_signer: &w.rekor,
            reference: None,
            tsa: None,
        }
    }
}

impl SigPlan<'_> {
    /// What keyless cosign annotates a layer with: the certificate and its chain, the
    /// Rekor bundle of the entry `body` at `log_index` (its SET by `set_signer`), and,
    /// with a timestamp authority, its stamp over `stamped`.
    fn keyless_annotations(&self, w: &World, body: &[u8], log_index: u64, stamped: &[u8]) -> Value {
        let set = self
            .set_signer
            .set(body, self.integrated_time, log_index, &w.rekor.log_id);
        let bundle = json!({
            "SignedEntryTimestamp": B64.encode(&set),
            "Payload": {
                "body": B64.encode(body),
                "integratedTime": self.integrated_time,
                "logIndex": log_index,
                "logID": hex::encode(w.rekor.log_id),
            },
        });
        let mut annotations = json!({
            CERT_ANNOTATION: self.leaf.pem,
            CHAIN_ANNOTATION: self.leaf.chain_pem,
            BUNDLE_ANNOTATION: bundle.to_string(),
        });
        if let Some(tsa) = self.tsa {
            annotations[TIMESTAMP_ANNOTATION] = json!(
                json!({"SignedRFC3161Timestamp": B64.encode(tsa.stamp(stamped))}).to_string()
            );
        }
        annotations
    }
}

/// A keyless `.sig` pushed as `cosign sign` writes it: the simple-signing layer with
/// signature, certificate, chain and Rekor bundle annotations. Returns its digest.
async fn push_keyless_sig(
    c: &Client,
    r: &Registry,
    w: &World,
    repo: &str,
    subject: &str,
    plan: &SigPlan<'_>,
) -> String {
    let payload = simple_signing_payload(r, plan.reference.unwrap_or(repo), plan.names);
    let sig = plan.leaf.sign(&payload);
    let body = hashedrekord(&hex::encode(Sha256::digest(&payload)), &sig, plan.leaf);
    // cosign stamps the raw signature bytes of a `.sig`.
    let mut annotations = plan.keyless_annotations(w, &body, 4242, &sig);
    annotations[SIG_ANNOTATION] = json!(B64.encode(&sig));
    let tag = attachment_tag(subject, "sig");
    push_cosign_manifest(c, r, repo, &tag, SIMPLESIGNING, &payload, annotations).await
}

/// A keyless `.att` as `cosign attest` writes it: a DSSE envelope layer whose Rekor
/// entry is an `intoto` v0.0.2 record. `about` is the digest the statement names.
async fn push_keyless_att(
    c: &Client,
    r: &Registry,
    w: &World,
    repo: &str,
    subject: &str,
    plan: &SigPlan<'_>,
) -> String {
    let (about, leaf) = (plan.names, plan.leaf);
    let statement = serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": PROVENANCE,
        "subject": [{"name": format!("{}/{repo}", r.host), "digest": {"sha256": about.trim_start_matches("sha256:")}}],
        "predicate": {"builder": {"id": "https://ci.signet.example/builder"}},
    }))
    .unwrap();
    let sig = leaf.sign(&pae(IN_TOTO, &statement));
    let envelope = serde_json::to_vec(&json!({
        "payloadType": IN_TOTO,
        "payload": B64.encode(&statement),
        "signatures": [{"keyid": "", "sig": B64.encode(&sig)}],
    }))
    .unwrap();
    // intoto v0.0.2 keeps each signature base64-encoded once more.
    let body = serde_json::to_vec(&json!({
        "apiVersion": "0.0.2",
        "kind": "intoto",
        "spec": {"content": {
            "envelope": {"payloadType": IN_TOTO, "signatures": [{
                "publicKey": pem_b64(&leaf.pem),
                "sig": B64.encode(B64.encode(&sig)),
            }]},
            "hash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(&envelope))},
            "payloadHash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(&statement))},
        }},
    }))
    .unwrap();
    // cosign stamps an attestation's signed envelope (it has no bare signature).
    let mut annotations = plan.keyless_annotations(w, &body, 77, &envelope);
    annotations[SIG_ANNOTATION] = json!("");
    annotations["predicateType"] = json!(PROVENANCE);
    let tag = attachment_tag(subject, "att");
    push_cosign_manifest(c, r, repo, &tag, DSSE, &envelope, annotations).await
}

/// How a bundle is to be made.
#[derive(Clone, Copy)]
struct BundlePlan<'a> {
    leaf: &'a Leaf,
    /// DSSE statement (cosign v3's `cosign sign`) or a message signature over the
    /// manifest bytes.
    dsse: bool,
    /// Flip one bit of one audit path hash.
    bad_proof: bool,
    /// Whether the entry carries its SET (inclusion promise).
    set: bool,
    /// A timestamp authority dating the signature.
    tsa: Option<&'a Tsa>,
    /// Log the entry in the Rekor v2 log (v0.0.2 bodies, no SET, no integration time).
    v2: bool,
}

impl<'a> BundlePlan<'a> {
    /// cosign v3's default by `leaf`: a DSSE statement, logged with its SET.
    fn new(leaf: &'a Leaf) -> BundlePlan<'a> {
        BundlePlan {
            leaf,
            dsse: true,
            bad_proof: false,
            set: true,
            tsa: None,
            v2: false,
        }
    }
}

/// A Sigstore v0.3 bundle for `subject` (whose manifest bytes are `manifest`), with a
/// Rekor entry placed at index 5 of a 7-leaf tree: SET, inclusion proof, checkpoint.
fn bundle(r: &Registry, w: &World, repo: &str, manifest: &[u8], plan: &BundlePlan<'_>) -> Value {
    let subject_hex = hex::encode(Sha256::digest(manifest));
    let (content, body, sig) = if plan.dsse {
        let statement = serde_json::to_vec(&json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": format!("{}/{repo}", r.host), "digest": {"sha256": subject_hex}}],
            "predicateType": COSIGN_SIGN_PREDICATE,
            "predicate": {},
        }))
        .unwrap();
        let sig = plan.leaf.sign(&pae(IN_TOTO, &statement));
        let envelope = json!({
            "payload": B64.encode(&statement),
            "payloadType": IN_TOTO,
            "signatures": [{"sig": B64.encode(&sig), "keyid": ""}],
        });
        let body = if plan.v2 {
            serde_json::to_vec(&json!({
                "apiVersion": "0.0.2",
                "kind": "dsse",
                "spec": {"dsseV002": {
                    "payloadHash": {"algorithm": "SHA2_256", "digest": B64.encode(Sha256::digest(&statement))},
                    "signatures": [{"content": B64.encode(&sig), "verifier": {
                        "x509Certificate": {"rawBytes": B64.encode(&plan.leaf.der)},
                        "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    }}],
                }},
            }))
            .unwrap()
        } else {
            serde_json::to_vec(&json!({
                "apiVersion": "0.0.1",
                "kind": "dsse",
                "spec": {
                    "envelopeHash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(envelope.to_string()))},
                    "payloadHash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(&statement))},
                    "signatures": [{"signature": B64.encode(&sig), "verifier": pem_b64(&plan.leaf.pem)}],
                },
            }))
            .unwrap()
        };
        (json!({"dsseEnvelope": envelope}), body, sig)
    } else {
        let sig = plan.leaf.sign(manifest);
        let body = if plan.v2 {
            serde_json::to_vec(&json!({
                "apiVersion": "0.0.2",
                "kind": "hashedrekord",
                "spec": {"hashedRekordV002": {
                    "data": {"algorithm": "SHA2_256", "digest": B64.encode(Sha256::digest(manifest))},
                    "signature": {"content": B64.encode(&sig), "verifier": {
                        "x509Certificate": {"rawBytes": B64.encode(&plan.leaf.der)},
                        "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    }},
                }},
            }))
            .unwrap()
        } else {
            hashedrekord(&subject_hex, &sig, plan.leaf)
        };
        (
            json!({"messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": B64.encode(Sha256::digest(manifest))},
                "signature": B64.encode(&sig),
            }}),
            body,
            sig,
        )
    };
    let index = 5usize;
    let mut leaves: Vec<Vec<u8>> = (0..7)
        .map(|i| format!("other entry {i}").into_bytes())
        .collect();
    leaves[index] = body.clone();
    let root = mth(&leaves);
    let mut hashes = audit_path(index, &leaves);
    if plan.bad_proof {
        hashes[1][0] ^= 1;
    }
    let log = if plan.v2 { &w.rekor_v2 } else { &w.rekor };
    let set = log.set(&body, NOON, index as u64, &log.log_id);
    let mut b = json!({
        "mediaType": BUNDLE_V03,
        "verificationMaterial": {
            "certificate": {"rawBytes": B64.encode(&plan.leaf.der)},
            "tlogEntries": [{
                "logIndex": index.to_string(),
                "logId": {"keyId": B64.encode(log.log_id)},
                "kindVersion": {"kind": if plan.dsse { "dsse" } else { "hashedrekord" },
                                "version": if plan.v2 { "0.0.2" } else { "0.0.1" }},
                "integratedTime": NOON.to_string(),
                "inclusionPromise": {"signedEntryTimestamp": B64.encode(&set)},
                "inclusionProof": {
                    "logIndex": index.to_string(),
                    "rootHash": B64.encode(root),
                    "treeSize": leaves.len().to_string(),
                    "hashes": hashes.iter().map(|h| B64.encode(h)).collect::<Vec<_>>(),
                    "checkpoint": {"envelope": log.checkpoint(leaves.len() as u64, &root)},
                },
                "canonicalizedBody": B64.encode(&body),
            }],
        },
    });
    b.as_object_mut()
        .unwrap()
        .extend(content.as_object().unwrap().clone());
    if !plan.set || plan.v2 {
        b["verificationMaterial"]["tlogEntries"][0]
            .as_object_mut()
            .unwrap()
            .remove("inclusionPromise");
    }
    if plan.v2 {
        // A tile log has no integration time: only the timestamp authority dates it.
        b["verificationMaterial"]["tlogEntries"][0]
            .as_object_mut()
            .unwrap()
            .remove("integratedTime");
    }
    if let Some(tsa) = plan.tsa {
        b["verificationMaterial"]["timestampVerificationData"] =
            json!({"rfc3161Timestamps": [{"signedTimestamp": B64.encode(tsa.stamp(&sig))}]});
    }
    b
}

/// Pushes `bundle` as cosign v3 does: an OCI referrer of `subject` whose one layer is
/// the bundle JSON. Returns the referrer's digest.
async fn push_bundle_referrer(
    c: &Client,
    r: &Registry,
    repo: &str,
    subject_manifest: &[u8],
    bundle: &Value,
) -> String {
    let bytes = serde_json::to_vec(bundle).unwrap();
    let annotations = json!({
        "dev.sigstore.bundle.content": "dsse-envelope",
        "dev.sigstore.bundle.predicateType": COSIGN_SIGN_PREDICATE,
    });
    let subject = descriptor(OCI_MANIFEST, subject_manifest);
    push_referrer(c, r, repo, subject, BUNDLE_V03, &bytes, annotations).await
}

/// The verdict on one signature of a coverage report, found by its digest.
async fn verdict(c: &Client, r: &Registry, repo: &str, reference: &str, sig: &str) -> Value {
    verdict_of(c, r, repo, reference, "signature", sig).await
}

fn assert_invalid(v: &Value, reason: &str) {
    assert_eq!(v["verdict"], "invalid", "{v}");
    let got = v["reason"].as_str().unwrap_or_default();
    assert!(got.contains(reason), "expected {reason:?} in {v}");
}

async fn image(c: &Client, r: &Registry, repo: &str) -> (Vec<u8>, String) {
    let manifest = push_image(c, r, repo, "v1", &[repo.as_bytes()]).await;
    let digest = sha256(&manifest);
    (manifest, digest)
}

/// Pushes `repo:v1` and its keyless `.sig` made as `plan` says, over the new image's
/// own digest; the signature's verdict.
async fn keyless_verdict(
    c: &Client,
    r: &Registry,
    w: &World,
    repo: &str,
    plan: &SigPlan<'_>,
) -> Value {
    let (_, d) = image(c, r, repo).await;
    let sig = push_keyless_sig(c, r, w, repo, &d, &SigPlan { names: &d, ..*plan }).await;
    verdict(c, r, repo, "v1", &sig).await
}

/// Pushes `repo:v1` and a bundle referrer for it made as `plan` says; the bundle's
/// verdict.
async fn bundle_verdict(
    c: &Client,
    r: &Registry,
    w: &World,
    repo: &str,
    plan: &BundlePlan<'_>,
) -> Value {
    tampered_bundle_verdict(c, r, w, repo, plan, |_| {}).await
}

/// As [`bundle_verdict`], with `tamper` changing the bundle before it is pushed.
async fn tampered_bundle_verdict(
    c: &Client,
    r: &Registry,
    w: &World,
    repo: &str,
    plan: &BundlePlan<'_>,
    tamper: impl FnOnce(&mut Value),
) -> Value {
    let (manifest, _) = image(c, r, repo).await;
    let mut b = bundle(r, w, repo, &manifest, plan);
    tamper(&mut b);
    let referrer = push_bundle_referrer(c, r, repo, &manifest, &b).await;
    verdict(c, r, repo, "v1", &referrer).await
}

/// Replaces the checkpoint of a bundle's inclusion proof with one `log` signs over
/// the same tree.
fn resign_checkpoint(b: &mut Value, log: &Rekor) {
    let proof = &mut b["verificationMaterial"]["tlogEntries"][0]["inclusionProof"];
    let root: [u8; 32] = B64
        .decode(proof["rootHash"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    proof["checkpoint"]["envelope"] = json!(log.checkpoint(7, &root));
}

// ---------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn keyless_sig_valid_and_every_tampering_named() {
    let w = World::new();
    let r = Registry::start_with_config(&w.config_with_strict_root());
    let c = client();
    let leaf = w.fulcio.issue(IDENTITY, ISSUER);
    let plan = SigPlan::new(&w, &leaf);

    // Signed as cosign does keylessly: valid, by the keyless root.
    let (_, good) = image(&c, &r, "keyless/app").await;
    let plan = SigPlan {
        names: &good,
        ..plan
    };
    let sig = push_keyless_sig(&c, &r, &w, "keyless/app", &good, &plan).await;
    let v = verdict(&c, &r, "keyless/app", "v1", &sig).await;
    assert_eq!(v["verdict"], "valid", "{v}");
    assert_eq!(v["root"], "release");

    // Each a genuine signature of its own image but for one thing.
    // Another identity, same issuer and CA.
    let intruder = w.fulcio.issue("intruder@signet.example", ISSUER);
    // The right identity from another OIDC issuer.
    let elsewhere = w
        .fulcio
        .issue(IDENTITY, "https://accounts.elsewhere.example");
    // A certificate from a CA the trusted root does not hold (its own chain attached).
    let rogue = Fulcio::new("rogue fulcio").issue(IDENTITY, ISSUER);
    // A SET signed by another key claiming the trusted log's ID.
    let forger = Rekor::new();
    let cases = [
        (
            "keyless/identity",
            SigPlan {
                leaf: &intruder,
                ..plan
            },
            "identity mismatch",
        ),
        (
            "keyless/issuer",
            SigPlan {
                leaf: &elsewhere,
                ..plan
            },
            "issuer mismatch",
        ),
        (
            "keyless/chain",
            SigPlan {
                leaf: &rogue,
                ..plan
            },
            "does not chain to a trusted Fulcio CA",
        ),
        (
            "keyless/set",
            SigPlan {
                set_signer: &forger,
                ..plan
            },
            "bad signed entry timestamp",
        ),
        // Integrated by Rekor the day after the certificate expired (a real SET).
        (
            "keyless/late",
            SigPlan {
                integrated_time: DAY_START + 2 * 86400,
                ..plan
            },
            "outside the certificate's validity",
        ),
        // And before it was issued.
        (
            "keyless/early",
            SigPlan {
                integrated_time: DAY_START - 60,
                ..plan
            },
            "outside the certificate's validity",
        ),
    ];
    for (repo, tampered, reason) in &cases {
        assert_invalid(&keyless_verdict(&c, &r, &w, repo, tampered).await, reason);
    }

    // A complete, genuine signature of `good` copied onto another image.
    let (_, d) = image(&c, &r, "keyless/copied").await;
    let sig = push_keyless_sig(&c, &r, &w, "keyless/copied", &d, &plan).await;
    assert_invalid(
        &verdict(&c, &r, "keyless/copied", "v1", &sig).await,
        "digest mismatch",
    );

    // Outside the root's repositories: no trust root applies.
    let v = keyless_verdict(&c, &r, &w, "elsewhere/app", &plan).await;
    assert_eq!(v["verdict"], "no-trust-root", "{v}");

    // A root matching the identity by pattern, checking docker-references: a payload
    // naming this repository is valid, one naming another repository is not.
    let v = keyless_verdict(&c, &r, &w, "strict/app", &plan).await;
    assert_eq!(v["verdict"], "valid", "{v}");
    assert_eq!(v["root"], "strict");
    let moved = SigPlan {
        reference: Some("strict/original"),
        ..plan
    };
    assert_invalid(
        &keyless_verdict(&c, &r, &w, "strict/moved", &moved).await,
        "docker-reference mismatch",
    );
    // The same copy under the lenient root (cosign's default) stays valid.
    let moved = SigPlan {
        reference: Some("keyless/original"),
        ..plan
    };
    let v = keyless_verdict(&c, &r, &w, "keyless/moved", &moved).await;
    assert_eq!(v["verdict"], "valid", "{v}");

    // `signet attachments` shows the verdicts too.
    let out = r.cli(&["attachments", "keyless/app:v1"]).output().unwrap();
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tree.contains("valid (root release)"), "{tree}");
    let out = r.cli(&["attachments", "keyless/set:v1"]).output().unwrap();
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        tree.contains("invalid: bad signed entry timestamp"),
        "{tree}"
    );
}

#[tokio::test]
async fn bundle_referrers_with_inclusion_proofs() {
    let w = World::new();
    let r = Registry::start_with_config(&w.config("off"));
    let c = client();
    let leaf = w.fulcio.issue(IDENTITY, ISSUER);

    // cosign v3's default: a DSSE bundle referrer with SET, inclusion proof, checkpoint.
    let plan = BundlePlan::new(&leaf);
    let v = bundle_verdict(&c, &r, &w, "keyless/bundle", &plan).await;
    assert_eq!(v["verdict"], "valid", "{v}");
    assert_eq!(v["root"], "release");
    assert_eq!(v["predicateType"], COSIGN_SIGN_PREDICATE);

    // A message-signature bundle over the manifest bytes: valid too.
    let message = BundlePlan {
        dsse: false,
        ..plan
    };
    let v = bundle_verdict(&c, &r, &w, "keyless/message", &message).await;
    assert_eq!(v["verdict"], "valid", "{v}");

    // One hash of the audit path changed: the inclusion proof fails.
    let bad_proof = BundlePlan {
        bad_proof: true,
        ..plan
    };
    assert_invalid(
        &bundle_verdict(&c, &r, &w, "keyless/proof", &bad_proof).await,
        "inclusion proof",
    );

    // A checkpoint signed by another key.
    let other_log = Rekor::new();
    let resigned = |b: &mut Value| resign_checkpoint(b, &other_log);
    assert_invalid(
        &tampered_bundle_verdict(&c, &r, &w, "keyless/checkpoint", &plan, resigned).await,
        "checkpoint is not signed by the trusted log key",
    );

    // A genuine bundle of one image attached to another: its statement names the first.
    // The same with a message signature.
    let (first, _) = image(&c, &r, "keyless/first").await;
    let (second, _) = image(&c, &r, "keyless/second").await;
    for plan in [plan, message] {
        let b = bundle(&r, &w, "keyless/first", &first, &plan);
        let referrer = push_bundle_referrer(&c, &r, "keyless/second", &second, &b).await;
        assert_invalid(
            &verdict(&c, &r, "keyless/second", "v1", &referrer).await,
            "digest mismatch",
        );
    }

    // A bundle by another identity.
    let stranger = w
        .fulcio
        .issue("https://ci.elsewhere.example/pipeline", ISSUER);
    let by_stranger = BundlePlan {
        leaf: &stranger,
        ..plan
    };
    assert_invalid(
        &bundle_verdict(&c, &r, &w, "keyless/stranger", &by_stranger).await,
        "identity mismatch",
    );
}

#[tokio::test]
async fn keyless_attestations_and_certificates_beside_key_roots() {
    let w = World::new();
    let leaf = w.fulcio.issue(IDENTITY, ISSUER);
    // A key root whose key is a certificate's key: `cosign sign --key --certificate`.
    let byo = w.fulcio.issue("byo@signet.example", ISSUER);
    let keys = tempfile::tempdir().unwrap();
    let byo_pub = keys.path().join("byo.pub");
    std::fs::write(&byo_pub, byo.key.public_key_pem()).unwrap();
    let config = format!(
        "{}[[trust.roots]]\nname = \"byo\"\nrepositories = [\"keyless/**\", \"byo/**\"]\npublic_key = \"{}\"\n",
        w.config("off"),
        byo_pub.display()
    );
    let r = Registry::start_with_config(&config);
    let c = client();
    let plan = SigPlan::new(&w, &leaf);

    // `cosign attest` keylessly: the DSSE layer verifies, with its predicate type.
    let (_, d) = image(&c, &r, "keyless/attested").await;
    let att_plan = SigPlan { names: &d, ..plan };
    let att = push_keyless_att(&c, &r, &w, "keyless/attested", &d, &att_plan).await;
    let v = verdict_of(&c, &r, "keyless/attested", "v1", "attestation", &att).await;
    assert_eq!(v["verdict"], "valid", "{v}");
    assert_eq!(v["root"], "release");
    assert_eq!(v["predicateType"], PROVENANCE);
    // A statement about another image, attached here.
    let (_, other) = image(&c, &r, "keyless/misattested").await;
    let att = push_keyless_att(&c, &r, &w, "keyless/misattested", &other, &att_plan).await;
    let v = verdict_of(&c, &r, "keyless/misattested", "v1", "attestation", &att).await;
    assert_invalid(&v, "digest mismatch");
    assert_eq!(v["predicateType"], PROVENANCE);

    // A keyless signature where a key root also applies: the keyless root accepts it,
    // and a wrong identity is reported as such, not as a key mismatch.
    let v = keyless_verdict(&c, &r, &w, "keyless/mixed", &plan).await;
    assert_eq!(v["verdict"], "valid", "{v}");
    assert_eq!(v["root"], "release");
    let stranger = w.fulcio.issue("intruder@signet.example", ISSUER);
    let by_stranger = SigPlan {
        leaf: &stranger,
        ..plan
    };
    assert_invalid(
        &keyless_verdict(&c, &r, &w, "keyless/mixed-stranger", &by_stranger).await,
        "identity mismatch",
    );

    // Signed with the key root's key and carrying its certificate (no Rekor entry):
    // the key decides, under the keyless root's repositories and outside them.
    for repo in ["keyless/byo", "byo/app"] {
        let (_, d) = image(&c, &r, repo).await;
        let payload = simple_signing_payload(&r, repo, &d);
        let annotations = json!({
            SIG_ANNOTATION: B64.encode(byo.sign(&payload)),
            CERT_ANNOTATION: byo.pem,
            CHAIN_ANNOTATION: byo.chain_pem,
        });
        let tag = attachment_tag(&d, "sig");
        let sig =
            push_cosign_manifest(&c, &r, repo, &tag, SIMPLESIGNING, &payload, annotations).await;
        let v = verdict(&c, &r, repo, "v1", &sig).await;
        assert_eq!(v["verdict"], "valid", "{repo}: {v}");
        assert_eq!(v["root"], "byo", "{repo}: {v}");
    }
}

#[tokio::test]
async fn bundles_dated_by_a_timestamp_authority() {
    let w = World::new();
    let r = Registry::start_with_config(&w.config("off"));
    let c = client();
    // `openssl ts` stamps the current time: a certificate valid around it.
    let leaf = w
        .fulcio
        .issue_between(IDENTITY, ISSUER, (2020, 1, 1), (2040, 1, 1));
    let plan = BundlePlan {
        set: false,
        tsa: Some(&w.tsa),
        ..BundlePlan::new(&leaf)
    };

    // No SET: the inclusion proof shows the entry, the TSA dates the signature.
    let v = bundle_verdict(&c, &r, &w, "keyless/stamped", &plan).await;
    assert_eq!(v["verdict"], "valid", "{v}");
    // With the SET too, both times are checked; a message signature as well.
    let both = BundlePlan {
        set: true,
        dsse: false,
        ..plan
    };
    let v = bundle_verdict(&c, &r, &w, "keyless/stamped-both", &both).await;
    assert_eq!(v["verdict"], "valid", "{v}");

    // The certificate expired long before the TSA dated the signature.
    let expired = w.fulcio.issue(IDENTITY, ISSUER);
    let late = BundlePlan {
        leaf: &expired,
        ..plan
    };
    assert_invalid(
        &bundle_verdict(&c, &r, &w, "keyless/stamped-late", &late).await,
        "outside the certificate's validity: the timestamp authority dated it",
    );

    // A timestamp authority the trusted root does not hold (its certificate embedded).
    let rogue = Tsa::new("rogue tsa");
    let rogue_plan = BundlePlan {
        tsa: Some(&rogue),
        ..plan
    };
    assert_invalid(
        &bundle_verdict(&c, &r, &w, "keyless/stamped-rogue", &rogue_plan).await,
        "timestamp: the TSA certificate does not chain to a trusted timestamp authority",
    );

    // Logged in the Rekor v2 (tile) log: v0.0.2 bodies, an Ed25519 checkpoint with
    // its C2SP key ID, no SET; both kinds of content.
    for dsse in [true, false] {
        let repo = if dsse {
            "keyless/v2-dsse"
        } else {
            "keyless/v2-message"
        };
        let v2 = BundlePlan {
            v2: true,
            dsse,
            ..plan
        };
        let v = bundle_verdict(&c, &r, &w, repo, &v2).await;
        assert_eq!(v["verdict"], "valid", "{repo}: {v}");
    }
    // A v2 entry whose checkpoint another log signed, and one with an altered path.
    let v2 = BundlePlan { v2: true, ..plan };
    let resigned = |b: &mut Value| resign_checkpoint(b, &w.rekor);
    assert_invalid(
        &tampered_bundle_verdict(&c, &r, &w, "keyless/v2-foreign", &v2, resigned).await,
        "checkpoint is not signed by the trusted log key",
    );
    let bad_path = BundlePlan {
        bad_proof: true,
        ..v2
    };
    assert_invalid(
        &bundle_verdict(&c, &r, &w, "keyless/v2-path", &bad_path).await,
        "inclusion proof",
    );

    // cosign `.sig` and `.att` layers with a timestamp annotation beside their Rekor
    // bundle: both times are checked.
    let sig_plan = SigPlan {
        tsa: Some(&w.tsa),
        ..SigPlan::new(&w, &leaf)
    };
    let (_, d) = image(&c, &r, "keyless/sig-stamped").await;
    let stamped = SigPlan {
        names: &d,
        ..sig_plan
    };
    let sig = push_keyless_sig(&c, &r, &w, "keyless/sig-stamped", &d, &stamped).await;
    let v = verdict(&c, &r, "keyless/sig-stamped", "v1", &sig).await;
    assert_eq!(v["verdict"], "valid", "{v}");
    let att = push_keyless_att(&c, &r, &w, "keyless/sig-stamped", &d, &stamped).await;
    let v = verdict_of(&c, &r, "keyless/sig-stamped", "v1", "attestation", &att).await;
    assert_eq!(v["verdict"], "valid", "{v}");
    let rogue_stamp = SigPlan {
        tsa: Some(&rogue),
        ..sig_plan
    };
    assert_invalid(
        &keyless_verdict(&c, &r, &w, "keyless/sig-rogue-stamp", &rogue_stamp).await,
        "timestamp: ",
    );

    // Neither a SET nor a timestamp: nothing dates the signature.
    let undated = BundlePlan { tsa: None, ..plan };
    assert_invalid(
        &bundle_verdict(&c, &r, &w, "keyless/undated", &undated).await,
        "no signed time",
    );
}

#[tokio::test]
async fn enforce_pulls_keyless_signed_and_refuses_unsigned() {
    let w = World::new();
    let r = Registry::start_with_config(&w.config("enforce"));
    let c = client();
    let leaf = w.fulcio.issue(IDENTITY, ISSUER);
    let plan = SigPlan::new(&w, &leaf);

    let (_, signed) = image(&c, &r, "keyless/signed").await;
    let signed_plan = SigPlan {
        names: &signed,
        ..plan
    };
    push_keyless_sig(&c, &r, &w, "keyless/signed", &signed, &signed_plan).await;
    let (status, body) = get(&c, &r.v2("keyless/signed/manifests/v1")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));

    let (manifest, _) = image(&c, &r, "keyless/bundled").await;
    let b = bundle(
        &r,
        &w,
        "keyless/bundled",
        &manifest,
        &BundlePlan::new(&leaf),
    );
    push_bundle_referrer(&c, &r, "keyless/bundled", &manifest, &b).await;
    let (status, body) = get(&c, &r.v2("keyless/bundled/manifests/v1")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));

    let (_, unsigned) = image(&c, &r, "keyless/unsigned").await;
    let (status, body) = get(&c, &r.v2("keyless/unsigned/manifests/v1")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), "DENIED");
    assert!(
        String::from_utf8_lossy(&body).contains(&unsigned),
        "{}",
        String::from_utf8_lossy(&body)
    );

    // `signet verify` reaches the same verdicts, with the keyless root as evidence.
    let out = r.cli(&["verify", "keyless/signed:v1"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("valid (root release"), "{text}");
    let out = r.cli(&["verify", "keyless/unsigned:v1"]).output().unwrap();
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Signed, by someone else: refused, and the message says why.
    let (_, d) = image(&c, &r, "keyless/foreign").await;
    let stranger = w.fulcio.issue("intruder@signet.example", ISSUER);
    let by_stranger = SigPlan {
        leaf: &stranger,
        names: &d,
        ..plan
    };
    push_keyless_sig(&c, &r, &w, "keyless/foreign", &d, &by_stranger).await;
    let (status, body) = get(&c, &r.v2("keyless/foreign/manifests/v1")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        String::from_utf8_lossy(&body).contains("identity mismatch"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

#[test]
fn trust_check_describes_keyless_roots_and_names_a_bad_trusted_root() {
    let w = World::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("signet.toml");
    std::fs::write(&config, w.config("audit")).unwrap();
    let out = trust_check(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("root release: keyless"), "{stdout}");
    assert!(stdout.contains(ISSUER), "{stdout}");
    assert!(stdout.contains(IDENTITY), "{stdout}");
    assert!(stdout.contains("1 CA(s)"), "{stdout}");
    assert!(stdout.contains("2 Rekor log(s)"), "{stdout}");
    assert!(stdout.contains("1 timestamp authority"), "{stdout}");

    // A subject pattern instead of an exact identity.
    let pattern = w.config("audit").replace(
        &format!("subject = \"{IDENTITY}\""),
        "subject_regex = \".*@signet\\\\.example\"",
    );
    std::fs::write(&config, &pattern).unwrap();
    let out = trust_check(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("subject matching /.*@signet\\.example/"),
        "{stdout}"
    );

    // A trusted root whose Rekor key is not a key: refused, file and entry named.
    let bad = dir.path().join("broken_root.json");
    let mut root: Value = serde_json::from_slice(&std::fs::read(&w.trusted_root).unwrap()).unwrap();
    root["tlogs"][0]["publicKey"]["rawBytes"] = json!(B64.encode(b"not a key"));
    std::fs::write(&bad, serde_json::to_vec(&root).unwrap()).unwrap();
    std::fs::write(
        &config,
        w.config("audit")
            .replace(&w.trusted_root, &bad.display().to_string()),
    )
    .unwrap();
    let out = trust_check(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("broken_root.json"), "{stderr}");
    assert!(stderr.contains("tlogs[0]: publicKey"), "{stderr}");

    // Not JSON at all; and the server refuses to start with it.
    std::fs::write(&bad, b"not json").unwrap();
    let out = trust_check(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("broken_root.json"), "{stderr}");
    let serve = Command::new(signet_binary())
        .arg("--config")
        .arg(&config)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!serve.status.success());
    assert!(
        String::from_utf8_lossy(&serve.stderr).contains("broken_root.json"),
        "{}",
        String::from_utf8_lossy(&serve.stderr)
    );

    // A keyless root without an issuer.
    std::fs::write(
        &config,
        w.config("audit")
            .replace(&format!("issuer = \"{ISSUER}\"\n"), ""),
    )
    .unwrap();
    let out = trust_check(&config);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("issuer"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
