//! A notation trust policy (`trustpolicy.json` or `trustpolicy.oci.json`, version 1.0)
//! and the trust store folder it names stores in, read as the notation CLI reads them:
//! `<store>/x509/{ca,signingAuthority,tsa}/<name>/` holding PEM or DER certificates.
//! Each policy statement becomes one trust root (see `trust::Trust::load`).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use rustls_pki_types::CertificateDer;
use serde::Deserialize;

use super::identity::TrustedIdentities;
use super::{read_certificates, Action, Checks, Level, NotationRoot, VerifyTimestamp};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Document {
    version: String,
    trust_policies: Vec<Statement>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Statement {
    name: String,
    registry_scopes: Vec<String>,
    signature_verification: SignatureVerification,
    #[serde(default)]
    trust_stores: Vec<String>,
    #[serde(default)]
    trusted_identities: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SignatureVerification {
    level: Level,
    #[serde(default, rename = "override")]
    overrides: BTreeMap<String, Action>,
    #[serde(default)]
    verify_timestamp: VerifyTimestamp,
}

/// One policy statement, its trust stores read.
pub struct Policy {
    pub name: String,
    /// `*`: every repository no other statement names.
    pub wildcard: bool,
    /// `registry/repository` scopes, as written.
    pub scopes: Vec<String>,
    pub root: NotationRoot,
}

impl Policy {
    /// The repositories of this registry among the scopes: a scope's registry part
    /// must be one of `registry_names` (any, when none is configured).
    pub fn repositories(&self, registry_names: &[String]) -> Vec<String> {
        self.scopes
            .iter()
            .filter_map(|scope| scope.split_once('/'))
            .filter(|(host, _)| {
                registry_names.is_empty()
                    || registry_names.iter().any(|n| n.eq_ignore_ascii_case(host))
            })
            .map(|(_, repo)| repo.to_string())
            .collect()
    }
}

/// Reads `policy_path` and the stores it names under `store`.
pub fn load(policy_path: &Path, store: &Path) -> anyhow::Result<Vec<Policy>> {
    let bytes = std::fs::read(policy_path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", policy_path.display()))?;
    let document: Document = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", policy_path.display()))?;
    parse(document, store).map_err(|e| anyhow::anyhow!("{}: {e}", policy_path.display()))
}

fn parse(document: Document, store: &Path) -> anyhow::Result<Vec<Policy>> {
    if document.version != "1.0" {
        anyhow::bail!(
            "trust policy version {:?} is not supported (1.0 is)",
            document.version
        );
    }
    if document.trust_policies.is_empty() {
        anyhow::bail!("the trust policy has no statements");
    }
    let mut names = HashSet::new();
    let mut scopes_seen = HashSet::new();
    let mut policies = Vec::new();
    for statement in document.trust_policies {
        let name = statement.name.clone();
        if name.is_empty() || !names.insert(name.clone()) {
            anyhow::bail!("trust policy name {name:?} is empty or used twice");
        }
        let wildcard = statement.registry_scopes.iter().any(|s| s == "*");
        if statement.registry_scopes.is_empty() || (wildcard && statement.registry_scopes.len() > 1)
        {
            anyhow::bail!(
                "trust policy {name:?}: registryScopes must be \"*\" alone or a list of registry/repository scopes"
            );
        }
        for scope in &statement.registry_scopes {
            let well_formed = scope.split_once('/').is_some_and(|(h, r)| {
                !h.is_empty() && !r.is_empty() && !r.contains(['*', '?', '[', ']', '{', '}'])
            });
            if scope != "*" && !well_formed {
                anyhow::bail!(
                    "trust policy {name:?}: scope {scope:?} is not registry/repository (no wildcards but \"*\" alone)"
                );
            }
            if !scopes_seen.insert(scope.clone()) {
                anyhow::bail!("scope {scope:?} is in more than one trust policy");
            }
        }
        let verification = &statement.signature_verification;
        let checks = Checks::of(verification.level, &verification.overrides)
            .map_err(|e| anyhow::anyhow!("trust policy {name:?}: {e}"))?;
        let root = if verification.level == Level::Skip {
            if wildcard {
                anyhow::bail!("trust policy {name:?}: the \"*\" scope cannot skip verification");
            }
            if !statement.trust_stores.is_empty() || !statement.trusted_identities.is_empty() {
                anyhow::bail!(
                    "trust policy {name:?}: the skip level takes no trust stores or identities"
                );
            }
            NotationRoot::new(
                Vec::new(),
                Vec::new(),
                Vec::new(),
                TrustedIdentities::Any,
                Level::Skip,
                checks,
                VerifyTimestamp::Always,
            )
        } else {
            let identities = TrustedIdentities::parse(&statement.trusted_identities)
                .map_err(|e| anyhow::anyhow!("trust policy {name:?}: {e}"))?;
            let (ca, signing_authority, tsa) = read_stores(&name, &statement.trust_stores, store)?;
            NotationRoot::new(
                ca,
                signing_authority,
                tsa,
                identities,
                verification.level,
                checks,
                verification.verify_timestamp,
            )
        };
        policies.push(Policy {
            name,
            wildcard,
            scopes: statement.registry_scopes,
            root,
        });
    }
    Ok(policies)
}

type Stores = (
    Vec<CertificateDer<'static>>,
    Vec<CertificateDer<'static>>,
    Vec<CertificateDer<'static>>,
);

/// The certificates of `type:name` references, by type.
fn read_stores(policy: &str, references: &[String], store: &Path) -> anyhow::Result<Stores> {
    let (mut ca, mut signing_authority, mut tsa) = (Vec::new(), Vec::new(), Vec::new());
    if references.is_empty() {
        anyhow::bail!("trust policy {policy:?} names no trust store");
    }
    for reference in references {
        let (kind, name) = reference.split_once(':').ok_or_else(|| {
            anyhow::anyhow!("trust policy {policy:?}: trust store {reference:?} is not type:name")
        })?;
        let target = match kind {
            "ca" => &mut ca,
            "signingAuthority" => &mut signing_authority,
            "tsa" => &mut tsa,
            other => anyhow::bail!(
                "trust policy {policy:?}: trust store type {other:?} is not ca, signingAuthority or tsa"
            ),
        };
        // notation's rule for store names, which also keeps them inside the folder.
        let named_well = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            && !matches!(name, "" | "." | "..");
        if !named_well {
            anyhow::bail!(
                "trust policy {policy:?}: trust store name {name:?} is not [A-Za-z0-9_.-]+"
            );
        }
        let folder = store.join("x509").join(kind).join(name);
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&folder)
            .map_err(|e| anyhow::anyhow!("trust store {}: {e}", folder.display()))?
        {
            let path = entry?.path();
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.file_type().is_symlink() {
                anyhow::bail!("trust store {}: symbolic links are refused", path.display());
            }
            let certificate_file = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| ["pem", "crt", "cer"].contains(&e.to_ascii_lowercase().as_str()));
            if meta.is_file() && certificate_file {
                files.push(path);
            }
        }
        files.sort();
        if files.is_empty() {
            anyhow::bail!("trust store {} holds no certificate", folder.display());
        }
        for file in files {
            target.extend(read_certificates(&file)?);
        }
    }
    if ca.is_empty() && signing_authority.is_empty() {
        anyhow::bail!("trust policy {policy:?} names no ca or signingAuthority trust store");
    }
    Ok((ca, signing_authority, tsa))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(json: serde_json::Value) -> Document {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_documents_rules_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let bad = [
            serde_json::json!({"version": "2.0", "trustPolicies": []}),
            serde_json::json!({"version": "1.0", "trustPolicies": []}),
            serde_json::json!({"version": "1.0", "trustPolicies": [
                {"name": "a", "registryScopes": ["*", "r.io/x"], "signatureVerification": {"level": "skip"}}]}),
            serde_json::json!({"version": "1.0", "trustPolicies": [
                {"name": "a", "registryScopes": ["r.io/x"], "signatureVerification": {"level": "skip"}},
                {"name": "b", "registryScopes": ["r.io/x"], "signatureVerification": {"level": "skip"}}]}),
            serde_json::json!({"version": "1.0", "trustPolicies": [
                {"name": "a", "registryScopes": ["nohost"], "signatureVerification": {"level": "skip"}}]}),
            serde_json::json!({"version": "1.0", "trustPolicies": [
                {"name": "a", "registryScopes": ["r.io/x"], "signatureVerification": {"level": "skip"},
                 "trustStores": ["ca:x"], "trustedIdentities": ["*"]}]}),
            serde_json::json!({"version": "1.0", "trustPolicies": [
                {"name": "a", "registryScopes": ["r.io/x"], "signatureVerification": {"level": "strict",
                 "override": {"integrity": "log"}}, "trustStores": ["ca:x"], "trustedIdentities": ["*"]}]}),
            serde_json::json!({"version": "1.0", "trustPolicies": [
                {"name": "a", "registryScopes": ["r.io/x"], "signatureVerification": {"level": "strict"},
                 "trustStores": ["ca:../../etc"], "trustedIdentities": ["*"]}]}),
            serde_json::json!({"version": "1.0", "trustPolicies": [
                {"name": "a", "registryScopes": ["r.io/x"], "signatureVerification": {"level": "strict"},
                 "trustStores": ["ca:missing"], "trustedIdentities": ["*"]}]}),
            serde_json::json!({"version": "1.0", "trustPolicies": [
                {"name": "a", "registryScopes": ["r.io/team/*"], "signatureVerification": {"level": "skip"}}]}),
            serde_json::json!({"version": "1.0", "trustPolicies": [
                {"name": "a", "registryScopes": ["*"], "signatureVerification": {"level": "skip"}}]}),
            serde_json::json!({"version": "1.0", "trustPolicies": [
                {"name": "a", "registryScopes": ["r.io/x"], "signatureVerification": {"level": "strict",
                 "override": {"expiry": "skip"}}, "trustStores": ["ca:x"], "trustedIdentities": ["*"]}]}),
        ];
        for json in bad {
            assert!(parse(document(json.clone()), dir.path()).is_err(), "{json}");
        }
        let ok = serde_json::json!({"version": "1.0", "trustPolicies": [
            {"name": "a", "registryScopes": ["localhost:5000/team/app", "other.io/x"],
             "signatureVerification": {"level": "skip"}},
            {"name": "b", "registryScopes": ["r.io/y"], "signatureVerification": {"level": "skip"}}]});
        let policies = parse(document(ok), dir.path()).unwrap();
        assert_eq!(policies[0].repositories(&[]), vec!["team/app", "x"]);
        assert_eq!(
            policies[0].repositories(&["LOCALHOST:5000".to_string()]),
            vec!["team/app"]
        );
        assert!(!policies[1].wildcard);
    }
}
