//! Immutable tags (`[[retention.immutable]]`): tags that may be pushed once (and pushed
//! again at the same manifest) but never moved or deleted, except by an administrator
//! who explicitly overrides the rules (`?override_immutable=true` on the manifest
//! `PUT` or `DELETE`).
//!
//! The rules are applied by the one write path ([`signet_storage::registry::TagRules`]),
//! so every writer keeps them: pushes, deletes, sync, pull-through. Attachment tags
//! (`sha256-<hex>.sig`/`.att`/`.sbom`, referrers fallback tags) are protected only by a
//! rule that says `attachment_tags = true`, so cosign can keep appending signatures to
//! a released image.

use serde::{Deserialize, Serialize};
use signet_oci::attachments::AttachmentTag;
use signet_storage::registry::TagRules;
use signet_storage::RepoName;

use super::{Pattern, RetentionConfig, TagRegex};

/// One `[[retention.immutable]]` rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImmutableRule {
    /// Named in refusals (`403 DENIED ... (rule "releases")`) and the audit log.
    pub name: String,
    /// Repository patterns, in the access rules' grammar (`prod/**`).
    pub repositories: Vec<Pattern>,
    /// A regular expression the whole tag must match (`v[0-9]+\.[0-9]+\.[0-9]+`).
    pub tags: TagRegex,
    /// Protect attachment tags too (only those the regex matches).
    #[serde(default)]
    pub attachment_tags: bool,
}

/// The compiled rules.
pub struct ImmutableTags {
    rules: Vec<ImmutableRule>,
}

impl ImmutableTags {
    /// The rules of `config`; `None` when there are none.
    pub fn of(config: &RetentionConfig) -> Option<Self> {
        (!config.immutable.is_empty()).then(|| ImmutableTags {
            rules: config.immutable.clone(),
        })
    }
}

impl TagRules for ImmutableTags {
    fn immutable(&self, repo: &RepoName, tag: &str) -> Option<String> {
        let attachment = AttachmentTag::parse(tag).is_some();
        self.rules
            .iter()
            .find(|r| {
                (r.attachment_tags || !attachment)
                    && r.repositories.iter().any(|p| p.matches(repo.as_str()))
                    && r.tags.is_match(tag)
            })
            .map(|r| r.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(toml: &str) -> ImmutableTags {
        let config: RetentionConfig = toml::from_str(toml).unwrap();
        ImmutableTags::of(&config).unwrap()
    }

    #[test]
    fn a_rule_protects_whole_matching_tags_of_its_repositories() {
        let r = rules(
            r#"
            [[immutable]]
            name = "releases"
            repositories = ["prod/**"]
            tags = 'v[0-9]+\.[0-9]+\.[0-9]+'
            "#,
        );
        let prod: RepoName = "prod/app".parse().unwrap();
        let dev: RepoName = "dev/app".parse().unwrap();
        assert_eq!(r.immutable(&prod, "v1.2.3").as_deref(), Some("releases"));
        // The regex matches whole tags only.
        assert_eq!(r.immutable(&prod, "v1.2.3-rc1"), None);
        assert_eq!(r.immutable(&prod, "latest"), None);
        assert_eq!(r.immutable(&dev, "v1.2.3"), None);
    }

    #[test]
    fn attachment_tags_need_a_rule_that_names_them() {
        let sig = format!("sha256-{}.sig", "a".repeat(64));
        let prod: RepoName = "prod/app".parse().unwrap();
        let everything = rules(
            r#"
            [[immutable]]
            name = "all"
            repositories = ["prod/**"]
            tags = '.*'
            "#,
        );
        assert_eq!(everything.immutable(&prod, &sig), None);
        assert!(everything.immutable(&prod, "latest").is_some());
        let signatures = rules(
            r#"
            [[immutable]]
            name = "signatures"
            repositories = ["prod/**"]
            tags = 'sha256-[0-9a-f]{64}\.sig'
            attachment_tags = true
            "#,
        );
        assert_eq!(
            signatures.immutable(&prod, &sig).as_deref(),
            Some("signatures")
        );
    }

    #[test]
    fn bad_patterns_and_regexes_are_refused_when_read() {
        for bad in [
            "[[immutable]]\nname = \"x\"\nrepositories = [\"prod/**\"]\ntags = \"(\"",
            "[[immutable]]\nname = \"x\"\nrepositories = [\"\"]\ntags = \"v.*\"",
            "[[immutable]]\nrepositories = [\"prod/**\"]\ntags = \"v.*\"",
        ] {
            assert!(toml::from_str::<RetentionConfig>(bad).is_err(), "{bad}");
        }
        let config: RetentionConfig = toml::from_str(
            "[[immutable]]\nname = \"x\"\nrepositories = [\"prod/**\"]\ntags = \"v.*\"",
        )
        .unwrap();
        let again: RetentionConfig = toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
        assert_eq!(again, config);
    }
}
