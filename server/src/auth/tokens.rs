//! Bearer tokens: Signet is its own token service. `GET /v2/token` (Basic credentials
//! or none, `scope` repeatable) and `POST /v2/token` (OAuth2 password and refresh-token
//! grants, as docker uses) answer a short-lived JWT signed with ES256, carrying only the
//! scopes the rules grant. Signing uses aws-lc-rs, the crypto provider rustls already
//! runs on: no second crypto library.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING,
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
        if header.get("alg").and_then(|a| a.as_str()) != Some("ES256") {
            return Err(TokenError::Malformed);
        }
        let signature = B64URL
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        let signing_input = &token[..header_and_payload_len(token)];
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref())
            .verify(signing_input.as_bytes(), &signature)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: Claims = B64URL
            .decode(payload)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or(TokenError::Malformed)?;
        let now = now();
        if claims.exp <= now || claims.nbf > now + 60 {
            return Err(TokenError::Expired);
        }
        if claims.iss != ISSUER || claims.aud != audience {
            return Err(TokenError::WrongAudience);
        }
        Ok(claims)
    }
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
