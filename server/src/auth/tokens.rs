//! Bearer tokens: Signet is its own token service. `GET /v2/token` (Basic credentials
//! or none, `scope` repeatable) and `POST /v2/token` (OAuth2 password and refresh-token
//! grants, as docker uses) answer a short-lived JWT signed with ES256, carrying only the
//! scopes the rules grant. Tokens are made and checked by `jsonwebtoken` on its
//! aws-lc-rs backend, the crypto provider rustls already runs on: no second crypto
//! library, and no JWT code of our own.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, ParsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_2048_8192_SHA256,
};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize};
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
    #[serde(default)]
    pub sub: String,
    /// Other issuers may send a list; [`verify_token`] checked it names us.
    #[serde(default, deserialize_with = "one_audience")]
    pub aud: String,
    pub exp: u64,
    // Other issuers may omit `nbf`, `iat` and `jti`.
    #[serde(default)]
    pub nbf: u64,
    #[serde(default)]
    pub iat: u64,
    #[serde(default)]
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
    signing: EncodingKey,
    verifying: DecodingKey,
    kid: String,
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
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| anyhow::anyhow!("cannot generate a token signing key"))?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(|_| anyhow::anyhow!("cannot load the generated token signing key"))?;
        Self::with_key(&key, false)
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
        Self::with_key(&key, true)
    }

    fn with_key(key: &EcdsaKeyPair, persistent: bool) -> anyhow::Result<Self> {
        // jsonwebtoken reads PKCS#8 only: a SEC1 key is re-encoded.
        let pkcs8 = key
            .to_pkcs8v1()
            .map_err(|_| anyhow::anyhow!("cannot encode the token signing key"))?;
        let public = key.public_key().as_ref();
        Ok(TokenKeys {
            signing: EncodingKey::from_ec_der(pkcs8.as_ref()),
            verifying: DecodingKey::from_ec_der(public),
            kid: hex::encode(&Sha256::digest(public)[..8]),
            persistent,
        })
    }

    pub fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.signing)
            .map_err(|e| anyhow::anyhow!("signing a token failed: {e}"))
    }

    /// Checks signature, expiry and audience; returns the claims.
    pub fn verify(&self, token: &str, audience: &str) -> Result<Claims, TokenError> {
        verify_token(token, &self.verifying, Algorithm::ES256, ISSUER, audience)
    }
}

/// An external token issuer trusted by its public key (`[[auth.issuers]]`).
pub struct Issuer {
    pub name: String,
    pub audience: String,
    alg: Algorithm,
    key: DecodingKey,
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
        if name.is_empty() {
            anyhow::bail!("[[auth.issuers]] needs a name (the tokens' iss)");
        }
        let pem = std::fs::read(path).map_err(|e| {
            anyhow::anyhow!(
                "[[auth.issuers]] {name}: public_key {}: {e}",
                path.display()
            )
        })?;
        Self::from_pem(name, &pem, audience).map_err(|e| {
            anyhow::anyhow!(
                "[[auth.issuers]] {name}: public_key {}: {e}",
                path.display()
            )
        })
    }

    /// The issuer of a PEM `PUBLIC KEY`: its kind (P-256 or RSA) is read first, so that
    /// a key of any other kind is refused here rather than by every token later.
    pub fn from_pem(name: &str, pem: &[u8], audience: &str) -> anyhow::Result<Self> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::SubjectPublicKeyInfoDer;
        let spki = SubjectPublicKeyInfoDer::from_pem_slice(pem)
            .map_err(|e| anyhow::anyhow!("no public key: {e}"))?;
        let (alg, key) = if ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, spki.as_ref()).is_ok() {
            (Algorithm::ES256, DecodingKey::from_ec_pem(pem)?)
        } else if ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, spki.as_ref()).is_ok() {
            (Algorithm::RS256, DecodingKey::from_rsa_pem(pem)?)
        } else {
            anyhow::bail!("neither a P-256 nor an RSA public key");
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
        let mut claims = verify_token(token, &self.key, self.alg, &self.name, &self.audience)?;
        claims.sub = format!("{}:{}", self.name, claims.sub);
        claims.admin = false;
        claims.robot = false;
        claims.refresh = false;
        Ok(claims)
    }
}

/// The `iss` of a token, unverified: which key to check it with.
pub fn unverified_issuer(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Iss {
        iss: String,
    }
    jsonwebtoken::dangerous::insecure_decode_claims::<Iss>(token)
        .ok()
        .map(|c| c.iss)
}

/// How long before its `nbf` a token is taken: clocks differ between issuers.
const NOT_BEFORE_LEEWAY: u64 = 60;

/// Checks a JWT's algorithm and signature, then expiry, issuer and audience (a string
/// or a list containing `audience`).
fn verify_token(
    token: &str,
    key: &DecodingKey,
    alg: Algorithm,
    issuer: &str,
    audience: &str,
) -> Result<Claims, TokenError> {
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    // Expiry is exact; `nbf` has its own leeway below.
    validation.leeway = 0;
    validation.validate_nbf = false;
    let mut claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => TokenError::Expired,
            ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => TokenError::WrongAudience,
            ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => TokenError::WrongAudience,
            _ => TokenError::Malformed,
        })?
        .claims;
    if claims.nbf > now() + NOT_BEFORE_LEEWAY {
        return Err(TokenError::Expired);
    }
    claims.aud = audience.to_string();
    Ok(claims)
}

/// An `aud` claim as one string: the first of a list (the validation checked that the
/// list names us; the claims then carry our audience).
fn one_audience<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Audience {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Audience::deserialize(d)? {
        Audience::One(a) => a,
        Audience::Many(list) => list.into_iter().next().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
    use base64::Engine as _;

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
