//! The decision for one repository: which manifests retention keeps, which it deletes,
//! and why. A pure function of the repository's inventory, the rules that govern it,
//! the immutable-tag rules, the signatures found, and the time, so the dry run prints
//! exactly what the real run then tries.
//!
//! Retention decides on *artifacts*, as Harbor does: a manifest with a tag of its own, or
//! an untagged manifest that no index lists. A rule looks at artifacts by their tags
//! (an artifact is kept whole when any of its tags is kept) and keeps some; an artifact
//! no rule keeps is deleted with every tag. Whatever the rules say, an artifact is kept
//! when an immutable-tag rule protects one of its tags or when it was written within the
//! grace period. What an artifact contains follows it: a kept index keeps the manifests
//! it lists, a deleted one takes those nothing else keeps; attachments are deleted with
//! their subject and never decided on their own.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;
use signet_oci::attachments::AttachmentTag;
use signet_storage::meta::{Inventory, InventoryManifest, ManifestSeen};
use signet_storage::Digest;

use super::rules::{Keep, RetentionRule};

/// What retention knows of one repository when it decides.
pub struct Facts<'a> {
    pub repository: &'a str,
    pub inventory: &'a Inventory,
    /// The rules that govern the repository, in configuration order.
    pub rules: &'a [&'a RetentionRule],
    /// The immutable-tag rule protecting a tag, if any.
    pub immutable: &'a dyn Fn(&str) -> Option<String>,
    /// For each manifest, the trust roots that gave a valid signature on it or on an
    /// index listing it (read only when a rule keeps signed manifests).
    pub signed_by: &'a HashMap<Digest, BTreeSet<String>>,
    /// Unix seconds.
    pub now: i64,
    pub grace_secs: i64,
}

/// The decision for one repository.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    /// In the order they must be deleted: an index before what it lists.
    pub delete: Vec<Deletion>,
    pub keep: Vec<Kept>,
}

/// A manifest retention deletes, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deletion {
    pub repository: String,
    pub digest: Digest,
    pub tags: Vec<String>,
    /// Each governing rule's answer, or what it is part of.
    pub why: Vec<String>,
    /// Its attachments, deleted with it (signatures, attestations, SBOMs, referrers).
    pub attachments: Vec<Digest>,
    /// How it was seen: the delete happens only while it is still so.
    #[serde(skip)]
    pub seen: ManifestSeen,
}

/// An artifact retention keeps, and the first reason it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kept {
    pub repository: String,
    pub digest: Digest,
    pub tags: Vec<String>,
    pub why: String,
}

/// One artifact as the rules see it.
struct Artifact<'a> {
    manifest: &'a InventoryManifest,
    /// Its tags that are not attachment tags.
    tags: Vec<&'a str>,
}

impl Artifact<'_> {
    fn digest(&self) -> &Digest {
        &self.manifest.digest
    }

    /// The last push of the manifest or of one of `tags` onto it.
    fn pushed_at(&self, tags: &[&str]) -> i64 {
        self.manifest
            .tags
            .iter()
            .filter(|t| tags.contains(&t.name.as_str()))
            .map(|t| t.updated_at)
            .fold(self.manifest.pushed_at, i64::max)
    }

    /// The last pull, or the last push when none came after it.
    fn used_at(&self, tags: &[&str]) -> i64 {
        self.pushed_at(tags)
            .max(self.manifest.pulled_at.unwrap_or(i64::MIN))
    }
}

/// Decides for one repository.
pub fn plan(facts: &Facts<'_>) -> Plan {
    let inventory = facts.inventory;
    let by_digest: HashMap<&Digest, &InventoryManifest> =
        inventory.manifests.iter().map(|m| (&m.digest, m)).collect();
    let by_text: HashMap<String, &InventoryManifest> = inventory
        .manifests
        .iter()
        .map(|m| (m.digest.to_string(), m))
        .collect();
    let mut parents: HashMap<&Digest, Vec<&Digest>> = HashMap::new();
    for m in &inventory.manifests {
        for child in &m.children {
            parents.entry(child).or_default().push(&m.digest);
        }
    }
    let artifacts: Vec<Artifact<'_>> = inventory
        .manifests
        .iter()
        .filter_map(|m| {
            let tags: Vec<&str> = m
                .tags
                .iter()
                .map(|t| t.name.as_str())
                .filter(|t| AttachmentTag::parse(t).is_none())
                .collect();
            let attachment = m.is_attachment || (tags.is_empty() && !m.tags.is_empty());
            let listed = parents.contains_key(&m.digest);
            (!attachment && (!tags.is_empty() || !listed)).then_some(Artifact { manifest: m, tags })
        })
        .collect();

    // Why each artifact is kept (the first reason found), or each rule's answer.
    let mut kept: HashMap<&Digest, String> = HashMap::new();
    let mut answers: HashMap<&Digest, Vec<String>> = HashMap::new();
    for a in &artifacts {
        if let Some(rule) = a.tags.iter().find_map(|t| (facts.immutable)(t)) {
            kept.insert(a.digest(), format!("immutable-tag rule {rule:?}"));
        } else if recent(a.manifest, facts) {
            kept.insert(a.digest(), "written within the grace period".into());
        }
    }
    for rule in facts.rules {
        let looked_at: Vec<(&Artifact<'_>, Vec<&str>)> = artifacts
            .iter()
            .filter_map(|a| {
                let tags: Vec<&str> = a
                    .tags
                    .iter()
                    .copied()
                    .filter(|t| rule.selects_tag(t))
                    .collect();
                let looks = if a.tags.is_empty() {
                    rule.selects_untagged()
                } else {
                    !tags.is_empty()
                };
                looks.then_some((a, tags))
            })
            .collect();
        let (keeps, declined) = apply(&rule.keep, &looked_at, facts);
        for d in keeps {
            kept.entry(d)
                .or_insert_with(|| format!("rule {:?} {}", rule.name, rule.keep.describe()));
        }
        let looked: HashSet<&Digest> = looked_at.iter().map(|(a, _)| a.digest()).collect();
        for a in &artifacts {
            let answer = match declined.get(a.digest()) {
                Some(why) => why.clone(),
                None if looked.contains(a.digest()) => continue,
                None if a.tags.is_empty() => "untagged, which it does not look at".into(),
                None => "no tag it looks at".into(),
            };
            answers
                .entry(a.digest())
                .or_default()
                .push(format!("rule {:?}: {answer}", rule.name));
        }
    }

    // What kept artifacts list is kept with them.
    let mut live: HashSet<&Digest> = kept.keys().copied().collect();
    let mut stack: Vec<&Digest> = live.iter().copied().collect();
    while let Some(d) = stack.pop() {
        for child in by_digest
            .get(d)
            .map(|m| m.children.as_slice())
            .unwrap_or(&[])
        {
            if live.insert(child) {
                stack.push(child);
            }
        }
    }

    let mut plan = Plan::default();
    let mut doomed: Vec<(&InventoryManifest, Vec<String>)> = Vec::new();
    for a in &artifacts {
        if let Some(why) = kept.get(a.digest()) {
            plan.keep.push(Kept {
                repository: facts.repository.to_string(),
                digest: a.digest().clone(),
                tags: a.tags.iter().map(|t| t.to_string()).collect(),
                why: why.clone(),
            });
        } else if !live.contains(a.digest()) {
            let why = answers.remove(a.digest()).unwrap_or_default();
            doomed.push((a.manifest, why));
        }
    }
    // Untagged manifests listed only by doomed indexes go with them.
    let mut gone: HashSet<&Digest> = doomed.iter().map(|(m, _)| &m.digest).collect();
    loop {
        let more: Vec<&InventoryManifest> = inventory
            .manifests
            .iter()
            .filter(|m| {
                !gone.contains(&m.digest)
                    && !live.contains(&m.digest)
                    && !m.is_attachment
                    && m.tags.is_empty()
                    && !recent(m, facts)
                    && parents
                        .get(&m.digest)
                        .is_some_and(|ps| ps.iter().all(|p| gone.contains(p)))
            })
            .collect();
        if more.is_empty() {
            break;
        }
        for m in more {
            gone.insert(&m.digest);
            let part_of = parents[&m.digest]
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            doomed.push((m, vec![format!("listed only by {part_of}, deleted")]));
        }
    }
    // An index before what it lists, so no deletion finds its manifest still listed.
    let mut pending: HashSet<&Digest> = doomed.iter().map(|(m, _)| &m.digest).collect();
    while !doomed.is_empty() {
        let (ready, wait): (Vec<_>, Vec<_>) = doomed.into_iter().partition(|(m, _)| {
            parents
                .get(&m.digest)
                .is_none_or(|ps| ps.iter().all(|p| !pending.contains(p)))
        });
        if ready.is_empty() {
            // A cycle cannot be pushed (a digest names its content); nothing is deleted.
            break;
        }
        for (m, why) in ready {
            pending.remove(&m.digest);
            plan.delete.push(Deletion {
                repository: facts.repository.to_string(),
                digest: m.digest.clone(),
                tags: m.tags.iter().map(|t| t.name.clone()).collect(),
                why,
                attachments: attachments_of(m, &by_text),
                seen: m.seen(),
            });
        }
        doomed = wait;
    }
    plan
}

/// Written within the grace period: pushed, or one of its tags set.
fn recent(m: &InventoryManifest, facts: &Facts<'_>) -> bool {
    let since = facts.now - facts.grace_secs;
    m.pushed_at >= since || m.tags.iter().any(|t| t.updated_at >= since)
}

/// The artifacts `keep` keeps of those a rule looks at (each with the tags it looks
/// at), and the answer for each it does not.
fn apply<'a>(
    keep: &Keep,
    looked_at: &[(&'a Artifact<'a>, Vec<&str>)],
    facts: &Facts<'_>,
) -> (Vec<&'a Digest>, HashMap<&'a Digest, String>) {
    let mut keeps = Vec::new();
    let mut declined = HashMap::new();
    match keep {
        Keep::Always => {
            return (
                looked_at.iter().map(|(a, _)| a.digest()).collect(),
                declined,
            )
        }
        Keep::MostRecentlyPushed(n) => {
            let mut ranked: Vec<_> = looked_at.iter().collect();
            ranked.sort_by_key(|(a, tags)| (Reverse(a.pushed_at(tags)), a.digest().to_string()));
            first_n(
                ranked.into_iter().map(|(a, _)| *a),
                *n,
                "most recently pushed",
                &mut keeps,
                &mut declined,
            );
        }
        Keep::MostRecentlyPulled(n) => {
            let mut ranked: Vec<_> = looked_at.iter().collect();
            ranked.sort_by_key(|(a, tags)| (Reverse(a.used_at(tags)), a.digest().to_string()));
            first_n(
                ranked.into_iter().map(|(a, _)| *a),
                *n,
                "most recently pulled",
                &mut keeps,
                &mut declined,
            );
        }
        Keep::HighestSemver(n) => {
            let mut versioned = Vec::new();
            for (a, tags) in looked_at {
                match tags.iter().filter_map(|t| semver_of(t)).max() {
                    Some(v) => versioned.push((v, *a)),
                    None => {
                        declined.insert(a.digest(), "no semantic-version tag".into());
                    }
                }
            }
            versioned.sort_by(|(v1, a1), (v2, a2)| v2.cmp(v1).then(a1.digest().cmp(a2.digest())));
            first_n(
                versioned.into_iter().map(|(_, a)| a),
                *n,
                "highest versions",
                &mut keeps,
                &mut declined,
            );
        }
        Keep::PushedWithin(span) => {
            for (a, tags) in looked_at {
                if a.pushed_at(tags) >= facts.now - span.secs() {
                    keeps.push(a.digest());
                } else {
                    declined.insert(a.digest(), format!("last pushed more than {span} ago"));
                }
            }
        }
        Keep::PulledWithin(span) => {
            for (a, tags) in looked_at {
                if a.used_at(tags) >= facts.now - span.secs() {
                    keeps.push(a.digest());
                } else {
                    declined.insert(
                        a.digest(),
                        format!("neither pulled nor pushed within {span}"),
                    );
                }
            }
        }
        Keep::SignedBy(roots) => {
            for (a, _) in looked_at {
                let by = facts.signed_by.get(a.digest());
                let signed =
                    by.is_some_and(|by| roots.is_empty() || roots.iter().any(|r| by.contains(r)));
                if signed {
                    keeps.push(a.digest());
                } else {
                    declined.insert(a.digest(), "no valid signature from its roots".into());
                }
            }
        }
    }
    (keeps, declined)
}

/// Keeps the first `n` of `ranked`; the others are "not among the `n` `what`".
fn first_n<'a>(
    ranked: impl Iterator<Item = &'a Artifact<'a>>,
    n: usize,
    what: &str,
    keeps: &mut Vec<&'a Digest>,
    declined: &mut HashMap<&'a Digest, String>,
) {
    for (i, a) in ranked.enumerate() {
        if i < n {
            keeps.push(a.digest());
        } else {
            declined.insert(a.digest(), format!("not among the {n} {what}"));
        }
    }
}

/// A tag read as a semantic version (`1.2.3`, `v1.2.3-rc.1`).
fn semver_of(tag: &str) -> Option<semver::Version> {
    let bare = tag.strip_prefix(['v', 'V']).unwrap_or(tag);
    semver::Version::parse(bare).ok()
}

/// The manifests deleted with `m`: its attachments, theirs, and so on.
fn attachments_of(
    m: &InventoryManifest,
    by_text: &HashMap<String, &InventoryManifest>,
) -> Vec<Digest> {
    let mut found: Vec<Digest> = Vec::new();
    let mut queue: Vec<&InventoryManifest> = vec![m];
    while let Some(subject) = queue.pop() {
        for a in &subject.attachments {
            // An atomic signature is a row, not a manifest: not found here.
            let Some(attached) = by_text.get(a) else {
                continue;
            };
            if attached.digest != m.digest && !found.contains(&attached.digest) {
                found.push(attached.digest.clone());
                queue.push(attached);
            }
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use signet_storage::meta::TagSeen;

    use super::*;

    const NOW: i64 = 10_000_000;
    const DAY: i64 = 86_400;

    fn digest(name: &str) -> Digest {
        Digest::sha256_of(name.as_bytes())
    }

    /// A manifest pushed `age` seconds ago with `tags`, each set `age` seconds ago.
    fn manifest(name: &str, age: i64, tags: &[&str]) -> InventoryManifest {
        InventoryManifest {
            digest: digest(name),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            pushed_at: NOW - age,
            pulled_at: None,
            tags: tags
                .iter()
                .map(|t| TagSeen {
                    name: t.to_string(),
                    updated_at: NOW - age,
                })
                .collect(),
            children: Vec::new(),
            is_attachment: false,
            attachments: Vec::new(),
        }
    }

    fn rule(text: &str) -> RetentionRule {
        toml::from_str(&format!("name = \"r\"\nrepositories = [\"**\"]\n{text}")).unwrap()
    }

    fn named(name: &str, text: &str) -> RetentionRule {
        RetentionRule {
            name: name.into(),
            ..rule(text)
        }
    }

    struct Case {
        manifests: Vec<InventoryManifest>,
        rules: Vec<RetentionRule>,
        immutable: Vec<&'static str>,
        signed: HashMap<Digest, BTreeSet<String>>,
    }

    impl Case {
        fn new(manifests: Vec<InventoryManifest>, rules: Vec<RetentionRule>) -> Self {
            Case {
                manifests,
                rules,
                immutable: Vec::new(),
                signed: HashMap::new(),
            }
        }

        fn plan(&self) -> Plan {
            let inventory = Inventory {
                manifests: self.manifests.clone(),
            };
            let rules: Vec<&RetentionRule> = self.rules.iter().collect();
            let immutable = |tag: &str| {
                self.immutable
                    .contains(&tag)
                    .then(|| "releases".to_string())
            };
            plan(&Facts {
                repository: "app",
                inventory: &inventory,
                rules: &rules,
                immutable: &immutable,
                signed_by: &self.signed,
                now: NOW,
                grace_secs: 3600,
            })
        }

        /// The names of the deleted manifests, in deletion order.
        fn deleted(&self) -> Vec<String> {
            let plan = self.plan();
            plan.delete
                .iter()
                .map(|d| self.name_of(&d.digest))
                .collect()
        }

        fn name_of(&self, d: &Digest) -> String {
            let i = self.manifests.iter().position(|m| &m.digest == d).unwrap();
            format!("m{i}")
        }
    }

    /// m0..m(n-1), m0 the newest, one day apart, tagged `t0`...
    fn series(n: usize) -> Vec<InventoryManifest> {
        (0..n)
            .map(|i| manifest(&format!("m{i}"), (i as i64 + 1) * DAY, &[&format!("t{i}")]))
            .collect()
    }

    #[test]
    fn most_recently_pushed_keeps_n_and_says_why_the_rest_go() {
        let case = Case::new(series(5), vec![rule("keep = { most_recently_pushed = 2 }")]);
        assert_eq!(case.deleted(), ["m2", "m3", "m4"]);
        let plan = case.plan();
        assert_eq!(
            plan.delete[0].why,
            [r#"rule "r": not among the 2 most recently pushed"#]
        );
        assert_eq!(plan.delete[0].tags, ["t2"]);
        assert_eq!(plan.keep.len(), 2);
        assert!(plan.keep[0]
            .why
            .contains("keeps the 2 most recently pushed"));
    }

    #[test]
    fn a_tag_moved_onto_an_old_manifest_makes_it_recent() {
        let mut manifests = series(3);
        manifests[2].tags[0].updated_at = NOW - 2 * 3600;
        let case = Case::new(manifests, vec![rule("keep = { most_recently_pushed = 1 }")]);
        assert_eq!(case.deleted(), ["m0", "m1"]);
    }

    #[test]
    fn highest_semver_ranks_versions_not_strings() {
        let manifests = vec![
            manifest("a", 5 * DAY, &["v1.9.0"]),
            manifest("b", 4 * DAY, &["1.10.0"]),
            manifest("c", 3 * DAY, &["1.10.0-rc.1"]),
            manifest("d", 2 * DAY, &["latest"]),
            manifest("e", 6 * DAY, &["0.1.0"]),
        ];
        let case = Case::new(manifests, vec![rule("keep = { highest_semver = 2 }")]);
        // 1.10.0 and 1.10.0-rc.1 rank above 1.9.0.
        assert_eq!(case.deleted(), ["m0", "m3", "m4"]);
        let plan = case.plan();
        let latest = plan.delete.iter().find(|d| d.tags == ["latest"]).unwrap();
        assert_eq!(latest.why, [r#"rule "r": no semantic-version tag"#]);
    }

    #[test]
    fn pushed_and_pulled_within_count_days_and_a_push_is_a_use() {
        let mut manifests = series(4);
        manifests[3].pulled_at = Some(NOW - DAY / 2);
        manifests[2].pulled_at = Some(NOW - 10 * DAY);
        let pushed = Case::new(
            manifests.clone(),
            vec![rule(r#"keep = { pushed_within = "2d" }"#)],
        );
        assert_eq!(pushed.deleted(), ["m2", "m3"]);
        let pulled = Case::new(manifests, vec![rule(r#"keep = { pulled_within = "2d" }"#)]);
        // m0 and m1 were pushed within two days and never pulled; m3 was pulled.
        assert_eq!(pulled.deleted(), ["m2"]);
        assert!(pulled.plan().delete[0].why[0].contains("neither pulled nor pushed within 2d"));
    }

    #[test]
    fn most_recently_pulled_ranks_by_the_last_use() {
        let mut manifests = series(3);
        manifests[2].pulled_at = Some(NOW - 60 * 60 * 2);
        let case = Case::new(manifests, vec![rule("keep = { most_recently_pulled = 1 }")]);
        assert_eq!(case.deleted(), ["m0", "m1"]);
    }

    #[test]
    fn always_with_a_tag_regex_keeps_what_it_matches_and_nothing_else() {
        let manifests = vec![
            manifest("a", 9 * DAY, &["v1.0.0"]),
            manifest("b", 2 * DAY, &["main-123"]),
            manifest("c", 3 * DAY, &["v2.0.0"]),
        ];
        let case = Case::new(
            manifests,
            vec![rule(
                r#"tags = 'v.*'
keep = "always""#,
            )],
        );
        assert_eq!(case.deleted(), ["m1"]);
        assert_eq!(
            case.plan().delete[0].why,
            [r#"rule "r": no tag it looks at"#]
        );
    }

    #[test]
    fn an_artifact_is_kept_whole_when_any_of_its_tags_is_kept() {
        let manifests = vec![
            manifest("a", 9 * DAY, &["harbor-1.8", "harbor-latest"]),
            manifest("b", 5 * DAY, &["other"]),
        ];
        let case = Case::new(
            manifests,
            vec![rule(
                r#"tags = '.*-latest'
keep = "always""#,
            )],
        );
        assert_eq!(case.deleted(), ["m1"]);
    }

    #[test]
    fn signed_by_keeps_what_its_roots_signed() {
        let mut case = Case::new(
            series(3),
            vec![rule(r#"keep = { signed_by = ["release"] }"#)],
        );
        case.signed
            .insert(digest("m1"), BTreeSet::from(["release".to_string()]));
        case.signed
            .insert(digest("m2"), BTreeSet::from(["dev".to_string()]));
        assert_eq!(case.deleted(), ["m0", "m2"]);
        let any = Case {
            rules: vec![rule("keep = { signed_by = [] }")],
            ..case
        };
        assert_eq!(any.deleted(), ["m0"]);
    }

    #[test]
    fn rules_are_or_ed_and_each_answers_for_what_goes() {
        let mut manifests = series(6);
        manifests[5].tags[0].name = "v1.0.0".into();
        let case = Case::new(
            manifests,
            vec![
                named("recent", "keep = { most_recently_pushed = 2 }"),
                named("releases", "tags = 'v.*'\nkeep = \"always\""),
            ],
        );
        assert_eq!(case.deleted(), ["m2", "m3", "m4"]);
        assert_eq!(
            case.plan().delete[0].why,
            [
                r#"rule "recent": not among the 2 most recently pushed"#,
                r#"rule "releases": no tag it looks at"#,
            ]
        );
    }

    #[test]
    fn untagged_manifests_go_unless_a_rule_looks_at_them() {
        let manifests = vec![
            manifest("tagged", 30 * DAY, &["v1"]),
            manifest("old", 10 * DAY, &[]),
            manifest("new", 2 * DAY, &[]),
        ];
        let tags_only = Case::new(manifests.clone(), vec![rule("keep = \"always\"")]);
        assert_eq!(tags_only.deleted(), ["m1", "m2"]);
        assert!(tags_only.plan().delete[0].why[0].contains("untagged"));
        let untagged_after_a_week = Case::new(
            manifests,
            vec![
                named("tags", "keep = \"always\""),
                named(
                    "untagged",
                    "untagged = true\nkeep = { pushed_within = \"7d\" }",
                ),
            ],
        );
        assert_eq!(untagged_after_a_week.deleted(), ["m1"]);
    }

    #[test]
    fn immutable_tags_and_the_grace_period_always_keep() {
        let mut manifests = series(3);
        manifests.push(manifest("fresh", 60, &["fresh"]));
        let mut case = Case::new(manifests, vec![rule("keep = { most_recently_pushed = 0 }")]);
        case.immutable = vec!["t1"];
        assert_eq!(case.deleted(), ["m0", "m2"]);
        let plan = case.plan();
        let why: Vec<&str> = plan.keep.iter().map(|k| k.why.as_str()).collect();
        assert!(why.contains(&r#"immutable-tag rule "releases""#), "{why:?}");
        assert!(why.contains(&"written within the grace period"), "{why:?}");
    }

    #[test]
    fn an_index_takes_its_platforms_unless_a_kept_index_lists_them() {
        let amd = manifest("amd64", 9 * DAY, &[]);
        let arm = manifest("arm64", 9 * DAY, &[]);
        let shared = manifest("shared", 9 * DAY, &[]);
        let mut old = manifest("old-index", 9 * DAY, &["old"]);
        old.children = vec![
            amd.digest.clone(),
            arm.digest.clone(),
            shared.digest.clone(),
        ];
        let mut new = manifest("new-index", DAY, &["new"]);
        new.children = vec![shared.digest.clone()];
        let case = Case::new(
            vec![amd, arm, shared, old, new],
            vec![rule("keep = { most_recently_pushed = 1 }")],
        );
        // The index first, then the platforms only it listed.
        assert_eq!(case.deleted(), ["m3", "m0", "m1"]);
        let plan = case.plan();
        assert!(plan.delete[1].why[0].starts_with("listed only by sha256:"));
        assert_eq!(
            plan.keep.len(),
            1,
            "children are not artifacts of their own"
        );
    }

    #[test]
    fn attachments_are_never_decided_and_go_with_their_subject() {
        let mut image = manifest("image", 9 * DAY, &["t"]);
        let mut sig = manifest("sig", 9 * DAY, &[]);
        sig.is_attachment = true;
        sig.tags = vec![TagSeen {
            name: format!("sha256-{}.sig", image.digest.hex()),
            updated_at: NOW - 9 * DAY,
        }];
        let mut sbom = manifest("sbom-of-sig", 9 * DAY, &[]);
        sbom.is_attachment = true;
        sig.attachments = vec![sbom.digest.to_string()];
        image.attachments = vec![sig.digest.to_string(), "sha256:atomic".into()];
        let case = Case::new(
            vec![image, sig.clone(), sbom.clone()],
            vec![rule("keep = { most_recently_pushed = 0 }")],
        );
        assert_eq!(case.deleted(), ["m0"]);
        let mut expected = vec![sig.digest, sbom.digest];
        expected.sort();
        assert_eq!(case.plan().delete[0].attachments, expected);
    }

    #[test]
    fn the_plan_carries_what_it_saw_for_the_conditional_delete() {
        let mut m = manifest("m", 9 * DAY, &["b", "a"]);
        m.attachments = vec!["z".into(), "y".into()];
        let case = Case::new(vec![m], vec![rule("keep = { most_recently_pushed = 0 }")]);
        let seen = &case.plan().delete[0].seen;
        assert_eq!(seen.pushed_at, NOW - 9 * DAY);
        let names: Vec<&str> = seen.tags.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(seen.attachments, ["y", "z"]);
    }
}
