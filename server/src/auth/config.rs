//! The `[auth]` section: who exists (users, robots, an htpasswd file), what they may do
//! (rules per repository pattern), and how tokens are issued. Off by default: the
//! embedded defaults serve everyone anonymously.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A value that must never reach a log or a `Debug` print: password hashes, token
/// hashes, and the passwords and tokens clients send.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `false` (the default): every request is served anonymously, as if every rule
    /// allowed everyone everything.
    pub enabled: bool,
    /// An htpasswd file of bcrypt entries (`htpasswd -B`); empty: none. Other hash
    /// kinds are refused at start.
    pub htpasswd: String,
    /// The token realm sent in `WWW-Authenticate`; empty: `<scheme>://<Host>/v2/token`
    /// from each request.
    pub realm: String,
    /// The token service name (`service=` of the challenge, `aud` of tokens).
    pub service: String,
    /// Lifetime of a bearer token.
    pub token_ttl_secs: u64,
    /// A PEM file holding the P-256 private key that signs tokens (PKCS#8 or SEC1).
    /// Empty: a key generated at start, so tokens die with the process and are valid
    /// on this replica only; several replicas must share a configured key. Refresh
    /// tokens (`docker login`'s identity token) are issued only with a configured key.
    pub token_key: String,
    /// Lifetime of a refresh token.
    pub refresh_ttl_secs: u64,
    /// A verified password is remembered this long (keyed by a hash of the
    /// credentials), so bcrypt runs once per client, not once per request. 0: never.
    pub credential_cache_secs: u64,
    /// Accounts with the admin role: every action on every repository, and the
    /// administration endpoints.
    pub admins: Vec<String>,
    pub users: Vec<UserConfig>,
    pub robots: Vec<RobotConfig>,
    pub rules: Vec<RuleConfig>,
    /// External token issuers whose bearer tokens are accepted like Signet's own.
    pub issuers: Vec<IssuerConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            htpasswd: String::new(),
            realm: String::new(),
            service: "signet".into(),
            token_ttl_secs: 300,
            token_key: String::new(),
            refresh_ttl_secs: 30 * 24 * 3600,
            credential_cache_secs: 60,
            admins: Vec::new(),
            users: Vec::new(),
            robots: Vec::new(),
            rules: Vec::new(),
            issuers: Vec::new(),
        }
    }
}

/// An external token service trusted by its public key: a bearer token whose `iss` is
/// `name`, signed (ES256 with a P-256 key, or RS256) by the key in `public_key` (a PEM
/// `PUBLIC KEY` file), with `aud` = `service` (empty: `[auth] service`), is accepted
/// like Signet's own: its `access` claim (Docker token format) is all it grants. Its
/// `sub` is known as `<name>:<sub>`, and it never carries the admin role.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IssuerConfig {
    pub name: String,
    pub public_key: String,
    pub service: String,
}

impl AuthConfig {
    /// Every credential replaced by `***`, hashes included (for `signet config`): a
    /// bcrypt hash can be attacked offline, a token's SHA-256 names a robot's token.
    pub fn redact(&mut self) {
        for user in &mut self.users {
            user.password_bcrypt = Secret::new("***");
        }
        for robot in &mut self.robots {
            robot.token_sha256 = Secret::new("***");
        }
    }
}

/// A person, with a bcrypt password hash (`htpasswd -nbB name password`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    pub password_bcrypt: Secret,
}

/// A robot account (CI, sync): it logs in with its name and a long random token, of
/// which only the SHA-256 (hex) is configured (`printf %s "$TOKEN" | sha256sum`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RobotConfig {
    pub name: String,
    pub token_sha256: Secret,
}

/// Who may do what on the repositories matching any of `repositories` (globs: `*`
/// within one path segment, `**` across segments, `?` one character). Names are users
/// and robots, `anonymous` (callers without credentials) and `*` (any authenticated
/// caller). Rules add up; `push` and `delete` include `pull`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RuleConfig {
    pub repositories: Vec<String>,
    pub pull: Vec<String>,
    pub push: Vec<String>,
    pub delete: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug() {
        let user = UserConfig {
            name: "alice".into(),
            password_bcrypt: Secret::new("$2y$05$abcdefghijklmnopqrstuv"),
        };
        let printed = format!("{user:?}");
        assert!(printed.contains("alice"));
        assert!(!printed.contains("abcdef"), "{printed}");
        assert_eq!(Secret::new("x").to_string(), "***");
    }
}
