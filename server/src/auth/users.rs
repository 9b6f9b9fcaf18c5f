//! The accounts: users (bcrypt passwords, from the configuration and an htpasswd file)
//! and robots (long random tokens, configured as their SHA-256). Verifying a bcrypt
//! password costs tens of milliseconds by design, so a success is remembered for
//! `credential_cache_secs`, keyed by a hash of the credentials — never the password.
//!
//! A refusal costs the same whoever is named: an unknown name, or a robot's wrong token,
//! is checked against a dummy bcrypt hash of the configured accounts' highest cost, so
//! the time of an answer does not tell which accounts exist.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use super::config::{AuthConfig, Secret};
use super::htpasswd;
use super::rules::Identity;

/// How an account proves who it is.
#[derive(Debug, Clone)]
enum Credential {
    Bcrypt(Secret),
    TokenSha256([u8; 32]),
}

#[derive(Debug, Clone)]
struct Account {
    credential: Credential,
    identity: Identity,
}

/// Cached verifications above this many entries are swept of expired ones.
const CACHE_SWEEP_AT: usize = 10_000;

#[derive(Debug)]
pub struct Directory {
    accounts: HashMap<String, Account>,
    /// Verified when no real bcrypt check runs on a refusal; `None` without bcrypt users.
    dummy: Option<Secret>,
    cache_for: Duration,
    verified: Mutex<HashMap<[u8; 32], (Instant, Identity)>>,
}

impl Directory {
    pub fn from_config(config: &AuthConfig) -> anyhow::Result<Self> {
        let mut accounts = HashMap::new();
        let admin = |name: &str| config.admins.iter().any(|a| a == name);
        let mut add = |name: &str, credential: Credential, robot: bool| -> anyhow::Result<()> {
            if name.is_empty() || name == "anonymous" || name == "*" || name.contains(':') {
                anyhow::bail!("[auth] account name {name:?} is reserved or invalid");
            }
            let account = Account {
                credential,
                identity: Identity {
                    name: name.to_string(),
                    robot,
                    admin: admin(name),
                },
            };
            if accounts.insert(name.to_string(), account).is_some() {
                anyhow::bail!("[auth] account {name:?} is defined twice");
            }
            Ok(())
        };
        if !config.htpasswd.is_empty() {
            for (name, hash) in htpasswd::load(Path::new(&config.htpasswd))? {
                add(&name, Credential::Bcrypt(hash), false)?;
            }
        }
        for user in &config.users {
            if !htpasswd::is_bcrypt(user.password_bcrypt.expose()) {
                anyhow::bail!(
                    "[auth] user {:?}: password_bcrypt must be a bcrypt hash ($2y$…, `htpasswd -nbB`)",
                    user.name
                );
            }
            add(
                &user.name,
                Credential::Bcrypt(user.password_bcrypt.clone()),
                false,
            )?;
        }
        for robot in &config.robots {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(robot.token_sha256.expose().trim(), &mut digest).map_err(
                |_| {
                    anyhow::anyhow!(
                        "[auth] robot {:?}: token_sha256 must be 64 hex characters",
                        robot.name
                    )
                },
            )?;
            add(&robot.name, Credential::TokenSha256(digest), true)?;
        }
        let dummy = dummy_hash(&accounts)?;
        Ok(Directory {
            accounts,
            dummy,
            cache_for: Duration::from_secs(config.credential_cache_secs),
            verified: Mutex::new(HashMap::new()),
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.accounts.contains_key(name)
    }

    /// The identity of an account that still exists (for refresh tokens).
    pub fn identity(&self, name: &str) -> Option<Identity> {
        self.accounts.get(name).map(|a| a.identity.clone())
    }

    /// A fingerprint of the account's stored credential (its password hash or robot
    /// token digest): refresh tokens carry it, and stop working when it changes.
    pub fn credential_fingerprint(&self, name: &str) -> Option<String> {
        let account = self.accounts.get(name)?;
        let mut h = Sha256::new();
        h.update(b"signet refresh token credential v1\0");
        h.update(name.as_bytes());
        h.update(b"\0");
        match &account.credential {
            Credential::Bcrypt(hash) => h.update(hash.expose().as_bytes()),
            Credential::TokenSha256(digest) => h.update(digest),
        }
        Some(hex::encode(&h.finalize()[..16]))
    }

    /// Checks a name and password (or robot token). bcrypt runs on the blocking pool.
    pub async fn verify(&self, name: &str, password: &Secret) -> Option<Identity> {
        let Some(account) = self.accounts.get(name) else {
            self.spend_a_bcrypt_check(password).await;
            return None;
        };
        match &account.credential {
            Credential::TokenSha256(expected) => {
                let actual: [u8; 32] = Sha256::digest(password.expose().as_bytes()).into();
                let ok = aws_lc_rs::constant_time::verify_slices_are_equal(&actual, expected);
                if ok.is_err() {
                    self.spend_a_bcrypt_check(password).await;
                    return None;
                }
                Some(account.identity.clone())
            }
            Credential::Bcrypt(hash) => {
                let key = cache_key(name, password, hash);
                if let Some(identity) = self.cached(&key) {
                    return Some(identity);
                }
                if !bcrypt_matches(password, hash).await {
                    return None;
                }
                self.remember(key, &account.identity);
                Some(account.identity.clone())
            }
        }
    }

    /// Takes as long as refusing a wrong password does.
    async fn spend_a_bcrypt_check(&self, password: &Secret) {
        if let Some(dummy) = &self.dummy {
            bcrypt_matches(password, dummy).await;
        }
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Identity> {
        let cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(key)
            .filter(|(until, _)| *until > Instant::now())
            .map(|(_, identity)| identity.clone())
    }

    fn remember(&self, key: [u8; 32], identity: &Identity) {
        if self.cache_for.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_SWEEP_AT {
            cache.retain(|_, (until, _)| *until > now);
            if cache.len() >= CACHE_SWEEP_AT {
                cache.clear();
            }
        }
        cache.insert(key, (now + self.cache_for, identity.clone()));
    }
}

/// bcrypt on the blocking pool (it takes tens of milliseconds on purpose).
async fn bcrypt_matches(password: &Secret, hash: &Secret) -> bool {
    let (password, hash) = (password.clone(), hash.clone());
    actix_web::rt::task::spawn_blocking(move || {
        bcrypt::verify(password.expose(), hash.expose()).unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// A bcrypt hash no password is known for, at the highest cost of the accounts' hashes
/// (`$2b$<cost>$...`); `None` when no account has a bcrypt password.
fn dummy_hash(accounts: &HashMap<String, Account>) -> anyhow::Result<Option<Secret>> {
    let cost = accounts
        .values()
        .filter_map(|a| match &a.credential {
            Credential::Bcrypt(hash) => hash.expose().get(4..6)?.parse::<u32>().ok(),
            Credential::TokenSha256(_) => None,
        })
        .max();
    let Some(cost) = cost else {
        return Ok(None);
    };
    let mut unguessable = [0u8; 32];
    aws_lc_rs::rand::fill(&mut unguessable).map_err(|_| anyhow::anyhow!("no randomness"))?;
    let hash = bcrypt::hash(hex::encode(unguessable), cost.clamp(4, 31))?;
    Ok(Some(Secret::new(hash)))
}

/// Name, password and the stored hash, hashed: a changed password never matches an
/// old entry, and the cache holds nothing a password can be read back from.
fn cache_key(name: &str, password: &Secret, hash: &Secret) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [name, password.expose(), hash.expose()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::config::{RobotConfig, UserConfig};

    fn config() -> AuthConfig {
        AuthConfig {
            enabled: true,
            admins: vec!["alice".into()],
            users: vec![UserConfig {
                name: "alice".into(),
                password_bcrypt: Secret::new(bcrypt::hash("wonderland", 4).unwrap()),
            }],
            robots: vec![RobotConfig {
                name: "ci".into(),
                token_sha256: Secret::new(hex::encode(Sha256::digest(b"long-random-token"))),
            }],
            ..AuthConfig::default()
        }
    }

    #[actix_web::test]
    async fn verifies_users_and_robots() {
        let dir = Directory::from_config(&config()).unwrap();
        let alice = dir
            .verify("alice", &Secret::new("wonderland"))
            .await
            .unwrap();
        assert!(alice.admin && !alice.robot);
        // Second time from the cache.
        assert!(dir
            .verify("alice", &Secret::new("wonderland"))
            .await
            .is_some());
        assert!(dir.verify("alice", &Secret::new("wrong")).await.is_none());
        assert!(dir
            .verify("nobody", &Secret::new("wonderland"))
            .await
            .is_none());
        let ci = dir
            .verify("ci", &Secret::new("long-random-token"))
            .await
            .unwrap();
        assert!(ci.robot && !ci.admin);
        assert!(dir.verify("ci", &Secret::new("other")).await.is_none());
    }

    /// The least time of a few refusals, so a busy moment does not decide.
    async fn least_time(dir: &Directory, name: &str) -> Duration {
        let mut least = Duration::MAX;
        for _ in 0..3 {
            let started = Instant::now();
            assert!(dir.verify(name, &Secret::new("wrong")).await.is_none());
            least = least.min(started.elapsed());
        }
        least
    }

    #[actix_web::test]
    async fn a_refusal_costs_the_same_for_known_and_unknown_names() {
        let mut c = config();
        c.users[0].password_bcrypt = Secret::new(bcrypt::hash("wonderland", 8).unwrap());
        let dir = Directory::from_config(&c).unwrap();
        let known = least_time(&dir, "alice").await;
        for name in ["nobody", "ci"] {
            let other = least_time(&dir, name).await;
            // Without the dummy check an unknown name is refused in microseconds, a
            // thousandth of a bcrypt check.
            assert!(
                other.as_secs_f64() >= 0.3 * known.as_secs_f64(),
                "{name}: {other:?}, a wrong password: {known:?}"
            );
        }
    }

    #[test]
    fn refuses_bad_configurations() {
        let mut c = config();
        c.users[0].password_bcrypt = Secret::new("plain");
        assert!(Directory::from_config(&c).is_err());
        let mut c = config();
        c.robots[0].name = "alice".into();
        assert!(Directory::from_config(&c).is_err());
        let mut c = config();
        c.robots[0].token_sha256 = Secret::new("abc");
        assert!(Directory::from_config(&c).is_err());
    }
}
