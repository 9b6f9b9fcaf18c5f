//! One `[[retention.rules]]` rule: which repositories it governs, which of their
//! manifests it looks at, and what it keeps of them. As in Harbor, a rule only keeps;
//! what no rule of a governed repository keeps is deleted.

use serde::{Deserialize, Serialize};

use super::{Pattern, Span, TagRegex};

/// One `[[retention.rules]]` rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    /// Named in reports and the audit log.
    pub name: String,
    /// The repositories it governs, in the access rules' grammar (`ci/**`).
    pub repositories: Vec<Pattern>,
    /// Of those, the ones it does not govern.
    #[serde(default)]
    pub exclude_repositories: Vec<Pattern>,
    /// The tags it looks at: a regular expression the whole tag must match (default:
    /// every tag). Attachment tags are never looked at: attachments follow their subject.
    #[serde(default)]
    pub tags: Option<TagRegex>,
    /// Tags it does not look at, though `tags` matches them.
    #[serde(default)]
    pub exclude_tags: Option<TagRegex>,
    /// It looks at untagged manifests too (Harbor's "untagged artifacts"). With
    /// `untagged = true` and neither `tags` nor `exclude_tags`, only at untagged ones.
    #[serde(default)]
    pub untagged: bool,
    /// What it keeps of the manifests it looks at.
    pub keep: Keep,
}

/// What a rule keeps of the manifests it looks at.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Keep {
    /// All of them: with `tags`, every tag the regex matches.
    Always,
    /// The N most recently pushed (the manifest, or one of its tags moved onto it).
    MostRecentlyPushed(usize),
    /// The N most recently pulled; a manifest never pulled counts from its push.
    MostRecentlyPulled(usize),
    /// The N with the highest semantic-version tags (`1.2.3`, `v1.2.3-rc.1`); manifests
    /// with no such tag are not kept by this rule.
    HighestSemver(usize),
    /// Those pushed within the span (`30d`).
    PushedWithin(Span),
    /// Those pulled, or pushed and not pulled since, within the span.
    PulledWithin(Span),
    /// Those with a valid signature from one of these trust roots (`[[trust.roots]]`
    /// names; empty: any root), on the manifest or on an index listing it.
    SignedBy(Vec<String>),
}

impl Keep {
    /// What the rule keeps, in words.
    pub fn describe(&self) -> String {
        match self {
            Keep::Always => "keeps every one".into(),
            Keep::MostRecentlyPushed(n) => format!("keeps the {n} most recently pushed"),
            Keep::MostRecentlyPulled(n) => format!("keeps the {n} most recently pulled"),
            Keep::HighestSemver(n) => format!("keeps the {n} highest versions"),
            Keep::PushedWithin(span) => format!("keeps those pushed within {span}"),
            Keep::PulledWithin(span) => format!("keeps those pulled within {span}"),
            Keep::SignedBy(roots) if roots.is_empty() => {
                "keeps those with a valid signature".into()
            }
            Keep::SignedBy(roots) => {
                format!(
                    "keeps those with a valid signature from {}",
                    roots.join(", ")
                )
            }
        }
    }
}

impl RetentionRule {
    /// Does the rule govern `repo`?
    pub fn governs(&self, repo: &str) -> bool {
        self.repositories.iter().any(|p| p.matches(repo))
            && !self.exclude_repositories.iter().any(|p| p.matches(repo))
    }

    /// Does it look at tagged manifests?
    fn looks_at_tagged(&self) -> bool {
        self.tags.is_some() || self.exclude_tags.is_some() || !self.untagged
    }

    /// Does it look at `tag` (not an attachment tag)?
    pub fn selects_tag(&self, tag: &str) -> bool {
        self.looks_at_tagged()
            && self.tags.as_ref().is_none_or(|t| t.is_match(tag))
            && !self.exclude_tags.as_ref().is_some_and(|t| t.is_match(tag))
    }

    /// Does it look at untagged manifests?
    pub fn selects_untagged(&self) -> bool {
        self.untagged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml_text: &str) -> RetentionRule {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn keep_reads_as_a_word_or_a_one_key_table() {
        for (text, keep) in [
            (r#"keep = "always""#, Keep::Always),
            (
                "keep = { most_recently_pushed = 10 }",
                Keep::MostRecentlyPushed(10),
            ),
            (
                "keep = { most_recently_pulled = 3 }",
                Keep::MostRecentlyPulled(3),
            ),
            ("keep = { highest_semver = 5 }", Keep::HighestSemver(5)),
            (
                r#"keep = { pushed_within = "30d" }"#,
                Keep::PushedWithin(Span { secs: 30 * 86_400 }),
            ),
            (
                r#"keep = { pulled_within = "12h" }"#,
                Keep::PulledWithin(Span { secs: 43_200 }),
            ),
            (
                r#"keep = { signed_by = ["release"] }"#,
                Keep::SignedBy(vec!["release".into()]),
            ),
        ] {
            let r = rule(&format!("name = \"r\"\nrepositories = [\"**\"]\n{text}"));
            assert_eq!(r.keep, keep, "{text}");
            let again: RetentionRule = toml::from_str(&toml::to_string(&r).unwrap()).unwrap();
            assert_eq!(again, r);
        }
        for bad in [
            r#"keep = "never""#,
            "keep = { most_recently_pushed = -1 }",
            r#"keep = { pushed_within = "30" }"#,
            "keep = { most_recently_pushed = 1, highest_semver = 2 }",
        ] {
            let text = format!("name = \"r\"\nrepositories = [\"**\"]\n{bad}");
            assert!(toml::from_str::<RetentionRule>(&text).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_rule_governs_its_repositories_but_the_excluded() {
        let r = rule(
            r#"
            name = "ci"
            repositories = ["ci/**"]
            exclude_repositories = ["ci/keep/**"]
            keep = "always"
            "#,
        );
        assert!(r.governs("ci/app"));
        assert!(!r.governs("ci/keep/app"));
        assert!(!r.governs("prod/app"));
    }

    #[test]
    fn tags_and_untagged_select_what_the_rule_looks_at() {
        let every_tag = rule("name = \"r\"\nrepositories = [\"**\"]\nkeep = \"always\"");
        assert!(every_tag.selects_tag("latest") && !every_tag.selects_untagged());

        let filtered = rule(
            r#"
            name = "r"
            repositories = ["**"]
            tags = 'main-.*'
            exclude_tags = 'main-old.*'
            keep = "always"
            "#,
        );
        assert!(filtered.selects_tag("main-1"));
        assert!(!filtered.selects_tag("xmain-1"), "whole tags only");
        assert!(!filtered.selects_tag("main-old-1"));

        let only_untagged = rule(
            "name = \"r\"\nrepositories = [\"**\"]\nuntagged = true\nkeep = { pushed_within = \"7d\" }",
        );
        assert!(only_untagged.selects_untagged() && !only_untagged.selects_tag("latest"));

        let both = rule(
            "name = \"r\"\nrepositories = [\"**\"]\nuntagged = true\ntags = '.*'\nkeep = \"always\"",
        );
        assert!(both.selects_untagged() && both.selects_tag("latest"));
    }
}
