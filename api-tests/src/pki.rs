//! Test PKI and credentials for the TLS and `[auth]` tests: a throwaway CA with a
//! server certificate for 127.0.0.1 and localhost (made with rcgen), a token-signing
//! key, and `[[auth.users]]` entries with bcrypt password hashes.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

/// A CA and a server certificate it signed, as PEM files in one folder: `ca.crt`,
/// `server.crt`, `server.key`.
pub struct TestPki {
    pub ca_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes `dir` (if need be) and writes a fresh CA (common name `ca_name`) and a server
/// certificate for `localhost` and `127.0.0.1` into it.
pub fn make_pki(dir: &Path, ca_name: &str) -> TestPki {
    std::fs::create_dir_all(dir).expect("PKI folder");
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let key = KeyPair::generate().expect("server key");
    let cert = params.signed_by(&key, &issuer).expect("server certificate");
    let pki = TestPki {
        ca_pem: ca_cert.pem(),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    };
    std::fs::write(dir.join("ca.crt"), &pki.ca_pem).expect("write ca.crt");
    std::fs::write(&pki.cert, cert.pem()).expect("write server.crt");
    std::fs::write(&pki.key, key.serialize_pem()).expect("write server.key");
    pki
}

/// Writes a fresh ECDSA P-256 private key (PEM) to `path`, as `[auth] token_key` takes.
pub fn write_token_key(path: &Path) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("token key");
    std::fs::write(path, key.serialize_pem()).expect("write the token key");
}

/// bcrypt at the lowest cost: tests log in often and need no real hardening.
pub fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash(password, 4).expect("bcrypt")
}

/// `[[auth.users]]` entries for `(name, password)` pairs.
pub fn auth_users(users: &[(&str, &str)]) -> String {
    users
        .iter()
        .map(|(name, password)| {
            format!(
                "\n[[auth.users]]\nname = \"{name}\"\npassword_bcrypt = \"{}\"\n",
                bcrypt_hash(password)
            )
        })
        .collect()
}
