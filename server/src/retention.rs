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

use std::fmt;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use signet_oci::attachments::AttachmentTag;
use signet_oci::RepoPattern;
use signet_storage::registry::TagRules;
use signet_storage::RepoName;

/// `[retention]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// `[[retention.immutable]]`: the first rule that matches a tag protects it.
    pub immutable: Vec<ImmutableRule>,
}

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
                    && r.repositories.iter().any(|p| p.0.matches(repo.as_str()))
                    && r.tags.regex.is_match(tag)
            })
            .map(|r| r.name.clone())
    }
}

/// A repository pattern, checked when the configuration is read.
#[derive(Clone, PartialEq)]
pub struct Pattern(RepoPattern);

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        RepoPattern::new(&text)
            .map(Pattern)
            .map_err(serde::de::Error::custom)
    }
}

/// A tag regular expression that must match the whole tag, compiled when the
/// configuration is read.
#[derive(Clone)]
pub struct TagRegex {
    text: String,
    regex: Regex,
}

impl PartialEq for TagRegex {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl fmt::Debug for TagRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TagRegex({:?})", self.text)
    }
}

impl Serialize for TagRegex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for TagRegex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let regex = Regex::new(&format!("^(?:{text})$"))
            .map_err(|e| serde::de::Error::custom(format!("tags {text:?}: {e}")))?;
        Ok(TagRegex { text, regex })
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
