//! Bearer tokens: Signet is its own token service. `GET /v2/token` (Basic credentials
//! or none, `scope` repeatable) and `POST /v2/token` (OAuth2 password and refresh-token
//! grants, as docker uses) answer a short-lived JWT signed with ES256, carrying only the
//! scopes the rules grant. Signing uses aws-lc-rs, the crypto provider rustls already
//! runs on: no second crypto library.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, ParsedPublicKey, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_2048_8192_SHA256,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::rules::{Action, Identity};

/// What a token grants on one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Access {
    pub fn repository(name: &str, actions: &[Action]) -> Self {
        Access {
            kind: "repository".into(),
            name: name.into(),
            actions: actions.iter().map(|a| a.as_str().to_string()).collect(),
        }
    }

    pub fn allows(&self, repository: &str, action: Action) -> bool {
        self.kind == "repository"
            && self.name == repository
            && self
                .actions
                .iter()
                .any(|a| a == action.as_str() || a == "*")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The account; empty for an anonymous token.
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<Access>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub robot: bool,
    /// A refresh token (docker's identity token): only good for getting access tokens.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refresh: bool,
    /// A refresh token's credential: a fingerprint of the password hash or robot token
    /// it was issued for, so that changing or removing it ends the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cred: Option<String>,
    /// A refresh token good once: using it returns its replacement. Those that docker
    /// keeps from `docker login` (its identity token) are not, since docker presents the
    /// one it stored on every later command.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub once: bool,
}

impl Claims {
    pub fn identity(&self) -> Identity {
        Identity {
            name: self.sub.clone(),
            robot: self.robot,
            admin: self.admin,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("bad token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not valid here")]
    WrongAudience,
}

pub const ISSUER: &str = "signet";

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs and verifies tokens with one P-256 key.
pub struct TokenKeys {
    key: EcdsaKeyPair,
    kid: String,
    rng: SystemRandom,
    /// Whether the key outlives the process (configured, not generated).
    pub persistent: bool,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("kid", &self.kid)
            .field("persistent", &self.persistent)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// A fresh key, valid for this process only.
    pub fn generate() -> anyhow::Result<Self> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("cannot generate a token signing key"))?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(|_| anyhow::anyhow!("cannot load the generated token signing key"))?;
        Ok(Self::with_key(key, false))
    }

    /// A P-256 private key from a PEM file (PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::PrivateKeyDer;
        let der = PrivateKeyDer::from_pem_file(path).map_err(|e| {
            anyhow::anyhow!("[auth] token_key {}: no private key: {e}", path.display())
        })?;
        let key =
            EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, der.secret_der())
                .map_err(|e| {
                    anyhow::anyhow!(
                        "[auth] token_key {}: not a P-256 private key: {e}",
                        path.display()
                    )
                })?;
        Ok(Self::with_key(key, true))
    }

    fn with_key(key: EcdsaKeyPair, persistent: bool) -> Self {
        let kid = hex::encode(&Sha256::digest(key.public_key().as_ref())[..8]);
        TokenKeys {
            key,
            kid,
            rng: SystemRandom::new(),
            persistent,
        }
    }

    pub fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            B64URL.encode(serde_json::to_vec(&header)?),
            B64URL.encode(serde_json::to_vec(claims)?)
        );
        let signature = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| anyhow::anyhow!("signing a token failed"))?;
        Ok(format!(
            "{signing_input}.{}",
            B64URL.encode(signature.as_ref())
        ))
    }

    /// Checks signature, expiry and audience; returns the claims.
    pub fn verify(&self, token: &str, audience: &str) -> Result<Claims, TokenError> {
        verify_token(token, ISSUER, audience, |alg, input, signature| {
            alg == "ES256"
                && UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref())
                    .verify(input, signature)
                    .is_ok()
        })
    }
}

/// An external token issuer trusted by its public key (`[[auth.issuers]]`).
pub struct Issuer {
    pub name: String,
    pub audience: String,
    alg: &'static str,
    key: ParsedPublicKey,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("name", &self.name)
            .field("audience", &self.audience)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// Reads a PEM `PUBLIC KEY` (SubjectPublicKeyInfo): P-256 (ES256) or RSA (RS256).
    pub fn load(name: &str, path: &Path, audience: &str) -> anyhow::Result<Self> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::SubjectPublicKeyInfoDer;
        if name.is_empty() {
            anyhow::bail!("[[auth.issuers]] needs a name (the tokens' iss)");
        }
        let der = SubjectPublicKeyInfoDer::from_pem_file(path).map_err(|e| {
            anyhow::anyhow!(
                "[[auth.issuers]] {name}: public_key {}: no public key: {e}",
                path.display()
            )
        })?;
        Self::from_spki(name, der.as_ref(), audience).map_err(|_| {
            anyhow::anyhow!(
                "[[auth.issuers]] {name}: public_key {}: neither a P-256 nor an RSA public key",
                path.display()
            )
        })
    }

    pub fn from_spki(name: &str, spki: &[u8], audience: &str) -> Result<Self, TokenError> {
        let (alg, key) = if let Ok(key) = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, spki) {
            ("ES256", key)
        } else if let Ok(key) = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, spki) {
            ("RS256", key)
        } else {
            return Err(TokenError::Malformed);
        };
        Ok(Issuer {
            name: name.into(),
            audience: audience.into(),
            alg,
            key,
        })
    }

    /// Checks signature, expiry, issuer and audience. The claims come back with the
    /// subject qualified by the issuer and without the admin, robot and refresh marks.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut claims = verify_token(token, &self.name, &self.audience, |alg, input, sig| {
            alg == self.alg && self.key.verify_sig(input, sig).is_ok()
        })?;
        claims.sub = format!("{}:{}", self.name, claims.sub);
        claims.admin = false;
        claims.robot = false;
        claims.refresh = false;
        Ok(claims)
    }
}

/// The `iss` of a token, unverified: which key to check it with.
pub fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let value: serde_json::Value = serde_json::from_slice(&B64URL.decode(payload).ok()?).ok()?;
    value.get("iss")?.as_str().map(str::to_string)
}

/// Parses a JWT, checks its signature with `check(alg, signing_input, signature)`, then
/// expiry, issuer and audience (a string or a list containing `audience`).
fn verify_token(
    token: &str,
    issuer: &str,
    audience: &str,
    check: impl FnOnce(&str, &[u8], &[u8]) -> bool,
) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header: serde_json::Value = B64URL
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or(TokenError::Malformed)?;
    let Some(alg) = header.get("alg").and_then(|a| a.as_str()) else {
        return Err(TokenError::Malformed);
    };
    if alg != "ES256" && alg != "RS256" {
        return Err(TokenError::Malformed);
    }
    let signature = B64URL
        .decode(signature)
        .map_err(|_| TokenError::Malformed)?;
    let signing_input = &token[..header_and_payload_len(token)];
    if !check(alg, signing_input.as_bytes(), &signature) {
        return Err(TokenError::BadSignature);
    }
    let mut value: serde_json::Value = B64URL
        .decode(payload)
        .ok()
        .and_then(|p| serde_json::from_slice(&p).ok())
        .ok_or(TokenError::Malformed)?;
    // Other issuers may send `aud` as a list, and omit `jti`, `iat`, `nbf` or `sub`.
    let obj = value.as_object_mut().ok_or(TokenError::Malformed)?;
    let aud_ok = match obj.get("aud") {
        Some(serde_json::Value::String(a)) => a == audience,
        Some(serde_json::Value::Array(list)) => list.iter().any(|a| a == audience),
        _ => false,
    };
    obj.insert("aud".into(), serde_json::Value::String(audience.into()));
    for key in ["sub", "jti"] {
        obj.entry(key).or_insert_with(|| "".into());
    }
    for key in ["iat", "nbf"] {
        obj.entry(key).or_insert_with(|| 0.into());
    }
    let claims: Claims = serde_json::from_value(value).map_err(|_| TokenError::Malformed)?;
    let now = now();
    if claims.exp <= now || claims.nbf > now + 60 {
        return Err(TokenError::Expired);
    }
    if claims.iss != issuer || !aud_ok {
        return Err(TokenError::WrongAudience);
    }
    Ok(claims)
}

/// Length of `header.payload` in a token known to have three parts.
fn header_and_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            iss: ISSUER.into(),
            sub: "alice".into(),
            aud: "signet".into(),
            exp,
            nbf: now(),
            iat: now(),
            jti: "1".into(),
            access: vec![Access::repository("team/app", &[Action::Pull])],
            admin: false,
            robot: false,
            refresh: false,
            cred: None,
            once: false,
        }
    }

    #[test]
    fn signs_and_verifies() {
        let keys = TokenKeys::generate().unwrap();
        let token = keys.sign(&claims(now() + 60)).unwrap();
        let back = keys.verify(&token, "signet").unwrap();
        assert!(back.access[0].allows("team/app", Action::Pull));
        assert!(!back.access[0].allows("team/app", Action::Push));
        assert!(!back.access[0].allows("team/other", Action::Pull));
        assert_eq!(
            keys.verify(&token, "elsewhere"),
            Err(TokenError::WrongAudience)
        );
        let other = TokenKeys::generate().unwrap();
        assert_eq!(
            other.verify(&token, "signet"),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn refuses_expired_and_edited_tokens() {
        let keys = TokenKeys::generate().unwrap();
        let expired = keys.sign(&claims(now() - 1)).unwrap();
        assert_eq!(keys.verify(&expired, "signet"), Err(TokenError::Expired));

        let token = keys.sign(&claims(now() + 60)).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut edited = claims(now() + 60);
        edited.access[0].actions.push("push".into());
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            B64URL.encode(serde_json::to_vec(&edited).unwrap()),
            parts[2]
        );
        assert_eq!(
            keys.verify(&forged, "signet"),
            Err(TokenError::BadSignature)
        );
        assert_eq!(keys.verify("a.b", "signet"), Err(TokenError::Malformed));
        let none_alg = format!("{}.{}.", B64URL.encode(br#"{"alg":"none"}"#), parts[1]);
        assert_eq!(keys.verify(&none_alg, "signet"), Err(TokenError::Malformed));
    }
}
