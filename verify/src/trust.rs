//! The trust configuration (`[trust]`, `[[trust.roots]]`): which keys Signet trusts for
//! which repositories, and the policy mode. Loading it reads every key, so a bad file
//! stops the server (and `signet trust check`) instead of failing at verification time.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sigstore::crypto::CosignVerificationKey;

use crate::gpg::GpgKey;
use crate::reference::DockerReferenceCheck;
use crate::requirements::{Requirement, RequirementConfig};
use signet_oci::RepoPattern;

use crate::keyless::KeylessRoot;
use crate::notation::identity::TrustedIdentities;
pub use crate::notation::Level as NotationLevel;
use crate::notation::NotationRoot;

/// What happens to a manifest pull without a valid signature.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// No check (the default).
    #[default]
    Off,
    /// Served, and logged (tracing target `audit`).
    Audit,
    /// Refused with 403 `DENIED`.
    Enforce,
}

impl PolicyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::Off => "off",
            PolicyMode::Audit => "audit",
            PolicyMode::Enforce => "enforce",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrustConfig {
    /// The policy for repositories no root names a policy for.
    pub policy: PolicyMode,
    /// A platform manifest passes the policy when an index listing it has a valid
    /// signature (what lets `image@sha256:<arm64>` of an index signed without
    /// `--recursive` pull).
    pub inherit_from_index: bool,
    pub roots: Vec<TrustRootConfig>,
    /// Whether simple-signing payloads must name the repository they are verified in
    /// (see `verify::reference`); a root may override it.
    pub docker_reference: DockerReferenceCheck,
    /// The names clients reach this registry by (`registry.example.com`,
    /// `localhost:5000`). When set, a checked docker-reference must name one of them
    /// as its host; empty (the default): the host is not compared.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub registry_names: Vec<String>,
    /// Rules beyond "signed by a root covering the repository" (see
    /// `verify::requirements`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requirements: Vec<RequirementConfig>,
    /// How often the server looks for signatures and attestations without a verdict
    /// under the current configuration and verifies them (seconds, at least 1).
    pub verify_interval_secs: u64,
    /// A notation trust policy and trust store (`[trust.notation]`): each policy
    /// statement becomes a root for Notary Project signatures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notation: Option<NotationTrustPolicyConfig>,
}

/// `[trust.notation]`: the files the notation CLI verifies with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NotationTrustPolicyConfig {
    /// `trustpolicy.json` (or `trustpolicy.oci.json`), version 1.0.
    pub trust_policy: PathBuf,
    /// The trust store folder: the one holding `x509/`.
    pub trust_store: PathBuf,
    /// The pull policy of the repositories the statements scope (default: `[trust]
    /// policy`); a statement of level `audit` serves and logs, one of `skip` asks for
    /// nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyMode>,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            policy: PolicyMode::Off,
            inherit_from_index: true,
            roots: Vec::new(),
            docker_reference: DockerReferenceCheck::Default,
            registry_names: Vec::new(),
            requirements: Vec::new(),
            verify_interval_secs: 2,
            notation: None,
        }
    }
}

/// What a verdict depends on, hashed: every root's name, scope, settings and the bytes
/// of its key files, each root's Notary Project trust material (`notation`, already
/// read), and the docker-reference settings. The policy modes and the requirements
/// are left out: they decide what a verdict means for a pull, not the verdict, so
/// changing them re-verifies nothing.
fn fingerprint(config: &TrustConfig, notation: &[String]) -> anyhow::Result<String> {
    use sha2::{Digest as _, Sha256};
    let file = |p: &std::path::Path| -> anyhow::Result<String> {
        if p.as_os_str().is_empty() {
            return Ok(String::new());
        }
        let bytes =
            std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
        Ok(hex::encode(Sha256::digest(&bytes)))
    };
    let mut roots = Vec::new();
    for r in &config.roots {
        let gpg: Vec<String> = r
            .gpg_keys
            .iter()
            .map(|k| file(k))
            .collect::<Result<_, _>>()?;
        roots.push(serde_json::json!({
            "name": r.name,
            "repositories": r.repositories,
            "public_key": file(&r.public_key)?,
            "trusted_root": file(&r.trusted_root)?,
            "issuer": r.issuer,
            "subject": r.subject,
            "subject_regex": r.subject_regex,
            "gpg_keys": gpg,
            "docker_reference": r.docker_reference,
        }));
    }
    let material = serde_json::json!({
        "roots": roots,
        "notation": notation,
        "docker_reference": config.docker_reference,
        "registry_names": config.registry_names,
    });
    Ok(hex::encode(Sha256::digest(material.to_string().as_bytes())))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrustRootConfig {
    pub name: String,
    /// Repository patterns (`team/*`: one level, `team/**`: any depth, `**`: all);
    /// empty: every repository.
    pub repositories: Vec<String>,
    /// A cosign public key file (PEM `PUBLIC KEY`, e.g. `cosign.pub`).
    #[serde(skip_serializing_if = "path_is_empty")]
    pub public_key: PathBuf,
    /// Keyless: a Sigstore `trusted_root.json` (Fulcio CAs, Rekor keys, timestamp
    /// authorities); with `issuer` and `subject` or `subject_regex`.
    #[serde(skip_serializing_if = "path_is_empty")]
    pub trusted_root: PathBuf,
    /// Keyless: the OIDC issuer the Fulcio certificate must name (exact).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub issuer: String,
    /// Keyless: the certificate's identity (SAN email or URI), exact.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subject: String,
    /// Keyless: a regular expression the whole identity must match.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subject_regex: String,
    /// OpenPGP public key files (armored or binary, as `gpg --export` writes them)
    /// for atomic signatures.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gpg_keys: Vec<PathBuf>,
    /// Overrides `[trust] docker_reference` for this root's signatures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_reference: Option<DockerReferenceCheck>,
    /// The policy for the repositories this root covers (default: `[trust] policy`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyMode>,
    /// Notary Project signatures: CA certificate files (PEM or DER) for the
    /// `notary.x509` scheme (a trust store of type `ca`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notation_ca: Vec<PathBuf>,
    /// Certificate files for `notary.x509.signingAuthority` (type `signingAuthority`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notation_signing_authority: Vec<PathBuf>,
    /// Timestamp authority certificate files for RFC 3161 countersignatures (`tsa`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notation_tsa: Vec<PathBuf>,
    /// Who may sign: `x509.subject: C=.., ST=.., O=.., CN=..` entries, or `*`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notation_identities: Vec<String>,
    /// The verification level (default `strict`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notation_level: Option<NotationLevel>,
}

fn path_is_empty(p: &std::path::Path) -> bool {
    p.as_os_str().is_empty()
}

/// A root with its key (or keyless trusted root) read.
pub struct TrustRoot {
    pub name: String,
    /// The OpenPGP certificates of atomic signatures.
    pub gpg_keys: Vec<GpgKey>,
    pub docker_reference: DockerReferenceCheck,
    /// `[trust] registry_names`, for the docker-reference check.
    pub registry_names: Vec<String>,
    /// The repositories it covers; empty: every one.
    pub repositories: Vec<RepoPattern>,
    /// The cosign public key of a key root.
    pub key: Option<CosignVerificationKey>,
    /// The trusted root and identity of a keyless root.
    pub keyless: Option<KeylessRoot>,
    /// What it trusts for Notary Project signatures.
    pub notation: Option<NotationRoot>,
    /// Repositories left out although `repositories` covers them: a trust policy's
    /// `*` statement leaves out what the other statements scope.
    pub excludes: Vec<RepoPattern>,
    pub policy: PolicyMode,
}

impl TrustRoot {
    pub fn covers(&self, repo: &str) -> bool {
        (self.repositories.is_empty() || self.repositories.iter().any(|p| p.matches(repo)))
            && !self.excludes.iter().any(|p| p.matches(repo))
    }
}

/// The loaded trust configuration.
pub struct Trust {
    pub roots: Vec<TrustRoot>,
    pub default_policy: PolicyMode,
    pub inherit_from_index: bool,
    pub requirements: Vec<Requirement>,
    /// Identifies what verdicts depend on (see [`fingerprint`]); stored with each
    /// verdict, so one reached under another configuration is known to be stale.
    pub fingerprint: String,
    /// `[trust] verify_interval_secs`.
    pub verify_interval_secs: u64,
}

impl Default for Trust {
    fn default() -> Self {
        let config = TrustConfig::default();
        Trust {
            requirements: Vec::new(),
            roots: Vec::new(),
            default_policy: PolicyMode::Off,
            inherit_from_index: true,
            fingerprint: fingerprint(&config, &[]).expect("no files to read"),
            verify_interval_secs: config.verify_interval_secs,
        }
    }
}

impl Trust {
    pub fn load(config: &TrustConfig) -> anyhow::Result<Trust> {
        let mut roots = Vec::new();
        let mut names = std::collections::HashSet::new();
        for root in &config.roots {
            if root.name.is_empty() {
                anyhow::bail!("a [[trust.roots]] entry has no name");
            }
            if !names.insert(root.name.as_str()) {
                anyhow::bail!("trust root {:?} is declared twice", root.name);
            }
            let (key, keyless) = match (
                root.public_key.as_os_str().is_empty(),
                root.trusted_root.as_os_str().is_empty(),
            ) {
                (false, true) => (Some(load_key(root)?), None),
                (true, false) => {
                    let k = KeylessRoot::load(
                        &root.trusted_root,
                        &root.issuer,
                        &root.subject,
                        &root.subject_regex,
                    )
                    .map_err(|e| anyhow::anyhow!("trust root {:?}: {e}", root.name))?;
                    (None, Some(k))
                }
                (true, true) if !root.gpg_keys.is_empty() || has_notation(root) => (None, None),
                (true, true) => anyhow::bail!(
                    "trust root {:?} has neither public_key, trusted_root, gpg_keys nor notation_ca/notation_signing_authority",
                    root.name
                ),
                (false, false) => anyhow::bail!(
                    "trust root {:?} has both public_key and trusted_root; declare two roots",
                    root.name
                ),
            };
            if key.is_some()
                && !(root.issuer.is_empty()
                    && root.subject.is_empty()
                    && root.subject_regex.is_empty())
            {
                anyhow::bail!(
                    "trust root {:?}: issuer, subject and subject_regex apply to keyless roots (trusted_root) only",
                    root.name
                );
            }
            let repositories = root
                .repositories
                .iter()
                .map(|p| RepoPattern::new(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("trust root {:?}: {e}", root.name))?;
            let mut gpg_keys = Vec::new();
            for file in &root.gpg_keys {
                let keys = crate::gpg::load_keys(file)
                    .map_err(|e| anyhow::anyhow!("trust root {:?}: {e}", root.name))?;
                gpg_keys.extend(keys);
            }
            let notation = notation_root(root)
                .map_err(|e| anyhow::anyhow!("trust root {:?}: {e}", root.name))?;
            let policy = root.policy.unwrap_or(config.policy);
            // A notation level that serves unverified or skips applies to a root of
            // its own: it must not relax the root's cosign or GPG keys.
            let relaxed = notation
                .as_ref()
                .is_some_and(|n| n.pull_policy(PolicyMode::Enforce) != PolicyMode::Enforce);
            if relaxed && (key.is_some() || keyless.is_some() || !gpg_keys.is_empty()) {
                anyhow::bail!(
                    "trust root {:?}: notation_level audit or skip needs a root of its own, without public_key, trusted_root or gpg_keys",
                    root.name
                );
            }
            roots.push(TrustRoot {
                name: root.name.clone(),
                gpg_keys,
                docker_reference: root.docker_reference.unwrap_or(config.docker_reference),
                registry_names: config.registry_names.clone(),
                repositories,
                key,
                keyless,
                policy: notation.as_ref().map_or(policy, |n| n.pull_policy(policy)),
                notation,
                excludes: Vec::new(),
            });
        }
        if let Some(notation) = &config.notation {
            for root in trust_policy_roots(config, notation)? {
                if config.roots.iter().any(|r| r.name == root.name) {
                    anyhow::bail!(
                        "trust policy {:?} has the name of a [[trust.roots]] entry",
                        root.name
                    );
                }
                roots.push(root);
            }
        }
        // A trust policy's roots get their scopes from its file: they count too.
        let notation_material: Vec<String> = roots
            .iter()
            .map(|r| match &r.notation {
                Some(n) => {
                    let scope: Vec<&str> = r.repositories.iter().map(RepoPattern::as_str).collect();
                    let excludes: Vec<&str> = r.excludes.iter().map(RepoPattern::as_str).collect();
                    format!("{}:{}:{scope:?}:{excludes:?}", r.name, n.material())
                }
                None => String::new(),
            })
            .collect();
        let requirements = crate::requirements::load(
            &config.requirements,
            &roots.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        )?;
        Ok(Trust {
            requirements,
            roots,
            default_policy: config.policy,
            inherit_from_index: config.inherit_from_index,
            fingerprint: fingerprint(config, &notation_material)?,
            verify_interval_secs: config.verify_interval_secs.max(1),
        })
    }

    /// The roots that apply to `repo`.
    pub fn roots_for<'a>(&'a self, repo: &'a str) -> impl Iterator<Item = &'a TrustRoot> + 'a {
        self.roots.iter().filter(move |r| r.covers(repo))
    }

    /// The requirements that apply to `repo`.
    pub fn requirements_for<'a>(
        &'a self,
        repo: &'a str,
    ) -> impl Iterator<Item = &'a RequirementConfig> + 'a {
        self.requirements
            .iter()
            .filter(move |r| r.covers(repo))
            .map(|r| &r.config)
    }

    /// The strictest policy among the roots and requirements covering `repo`;
    /// `[trust] policy` when none does.
    pub fn policy_for(&self, repo: &str) -> PolicyMode {
        let roots = self.roots_for(repo).map(|r| r.policy);
        let requirements = self.requirements_for(repo).filter_map(|r| r.policy);
        roots
            .chain(requirements)
            .max()
            .unwrap_or(self.default_policy)
    }

    /// What `signet trust check` prints.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "trust configuration OK: {} root(s), default policy {}, inherit_from_index {}\n",
            self.roots.len(),
            self.default_policy.as_str(),
            self.inherit_from_index
        );
        for root in &self.roots {
            let covers = if root.repositories.is_empty() {
                "every repository".to_string()
            } else {
                let names: Vec<&str> = root.repositories.iter().map(RepoPattern::as_str).collect();
                names.join(", ")
            };
            let what = match (&root.key, &root.keyless, &root.notation) {
                (Some(key), _, _) => format!("cosign public key ({})", key_kind(key)),
                (None, Some(k), _) => k.describe(),
                (None, None, Some(n)) => n.describe(),
                (None, None, None) => String::new(),
            };
            let what = with_gpg_keys(what, &root.gpg_keys);
            let what = if root.docker_reference == DockerReferenceCheck::Default {
                what
            } else {
                format!(
                    "{what}, docker-reference {}",
                    root.docker_reference.as_str()
                )
            };
            out.push_str(&format!(
                "root {}: {what}, covers {covers}, policy {}\n",
                root.name,
                root.policy.as_str()
            ));
        }
        for requirement in &self.requirements {
            out.push_str(&requirement.config.describe());
            out.push('\n');
        }
        out
    }
}

/// `what` followed by the root's GPG keys (fingerprint and first user id).
fn with_gpg_keys(what: String, keys: &[GpgKey]) -> String {
    if keys.is_empty() {
        return what;
    }
    let listed: Vec<String> = keys
        .iter()
        .map(|k| match k.user_id() {
            Some(uid) => format!("{} ({uid})", k.fingerprint()),
            None => k.fingerprint(),
        })
        .collect();
    let gpg = format!("GPG key {}", listed.join(", "));
    if what.is_empty() {
        gpg
    } else {
        format!("{what} and {gpg}")
    }
}

fn has_notation(root: &TrustRootConfig) -> bool {
    !root.notation_ca.is_empty() || !root.notation_signing_authority.is_empty()
}

/// The Notary Project trust of a `[[trust.roots]]` entry, if it has any.
fn notation_root(root: &TrustRootConfig) -> anyhow::Result<Option<NotationRoot>> {
    if !has_notation(root) {
        if !root.notation_tsa.is_empty()
            || !root.notation_identities.is_empty()
            || root.notation_level.is_some()
        {
            anyhow::bail!("notation_tsa, notation_identities and notation_level need notation_ca or notation_signing_authority");
        }
        return Ok(None);
    }
    let read = |files: &[PathBuf]| -> anyhow::Result<Vec<_>> {
        let mut certs = Vec::new();
        for file in files {
            certs.extend(crate::notation::read_certificates(file)?);
        }
        Ok(certs)
    };
    let identities = TrustedIdentities::parse(&root.notation_identities)
        .map_err(|e| anyhow::anyhow!("notation_identities: {e}"))?;
    let level = root.notation_level.unwrap_or_default();
    let checks =
        crate::notation::Checks::of(level, &Default::default()).map_err(anyhow::Error::msg)?;
    Ok(Some(NotationRoot::new(
        read(&root.notation_ca)?,
        read(&root.notation_signing_authority)?,
        read(&root.notation_tsa)?,
        identities,
        level,
        checks,
        Default::default(),
    )))
}

/// One root per statement of a notation trust policy; a statement none of whose
/// scopes names this registry (see `[trust] registry_names`) makes none.
fn trust_policy_roots(
    config: &TrustConfig,
    notation: &NotationTrustPolicyConfig,
) -> anyhow::Result<Vec<TrustRoot>> {
    let policies =
        crate::notation::trust_policy::load(&notation.trust_policy, &notation.trust_store)?;
    let pattern = |repo: &str| {
        RepoPattern::new(repo).map_err(|e| anyhow::anyhow!("trust policy scope {repo:?}: {e}"))
    };
    let mut scoped = Vec::new();
    let mut owner: std::collections::HashMap<String, &str> = Default::default();
    for policy in policies.iter().filter(|p| !p.wildcard) {
        for repo in policy.repositories(&config.registry_names) {
            // Two registries' scopes may name one repository here (with no
            // `registry_names`, every host is this registry): one policy must apply.
            if let Some(other) = owner.insert(repo.clone(), &policy.name) {
                anyhow::bail!(
                    "trust policies {other:?} and {:?} both scope repository {repo:?} of this registry; set [trust] registry_names",
                    policy.name
                );
            }
            scoped.push(pattern(&repo)?);
        }
    }
    let mut roots = Vec::new();
    for policy in policies {
        let (repositories, excludes) = if policy.wildcard {
            (Vec::new(), scoped.clone())
        } else {
            let repos = policy.repositories(&config.registry_names);
            if repos.is_empty() {
                continue;
            }
            let repos = repos.iter().map(|r| pattern(r)).collect::<Result<_, _>>()?;
            (repos, Vec::new())
        };
        let default = notation.policy.unwrap_or(config.policy);
        roots.push(TrustRoot {
            name: policy.name,
            gpg_keys: Vec::new(),
            docker_reference: config.docker_reference,
            registry_names: config.registry_names.clone(),
            repositories,
            key: None,
            keyless: None,
            policy: policy.root.pull_policy(default),
            notation: Some(policy.root),
            excludes,
        });
    }
    Ok(roots)
}

fn load_key(root: &TrustRootConfig) -> anyhow::Result<CosignVerificationKey> {
    let pem = std::fs::read(&root.public_key).map_err(|e| {
        anyhow::anyhow!(
            "trust root {:?}: cannot read {}: {e}",
            root.name,
            root.public_key.display()
        )
    })?;
    CosignVerificationKey::try_from_pem(&pem).map_err(|e| {
        anyhow::anyhow!(
            "trust root {:?}: {} is not a supported public key (PEM PUBLIC KEY): {e}",
            root.name,
            root.public_key.display()
        )
    })
}

fn key_kind(key: &CosignVerificationKey) -> &'static str {
    match key {
        CosignVerificationKey::ECDSA_P256_SHA256_ASN1(_) => "ECDSA P-256",
        CosignVerificationKey::ECDSA_P384_SHA384_ASN1(_) => "ECDSA P-384",
        CosignVerificationKey::ECDSA_P521_SHA512_ASN1(_) => "ECDSA P-521",
        CosignVerificationKey::ED25519(_) => "Ed25519",
        CosignVerificationKey::RSA_PSS_SHA256(_) | CosignVerificationKey::RSA_PKCS1_SHA256(_) => {
            "RSA"
        }
    }
}
