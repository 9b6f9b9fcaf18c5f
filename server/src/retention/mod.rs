//! Retention (`[retention]`): which tags may never move (`immutable`), and which
//! manifests are kept and which deleted (`rules`), with the pulls that rules about use
//! read (`pulls`).
//!
//! - `immutable`: the immutable-tag rules, handed to the write path as its `TagRules`.
//! - `rules`: one `[[retention.rules]]` rule: the repositories and tags it looks at and
//!   what it keeps of them.
//! - `plan`: the decision for one repository, a pure function of what the store holds,
//!   the rules and the time; the dry run and the real run both print it.
//! - `run`: one run over every repository a rule governs: read, plan, delete each
//!   manifest only if it is still as planned, report, audit.
//! - `pulls`: the last pull of each manifest, kept in memory and written in batches.

mod immutable;
pub mod plan;
pub mod pulls;
pub mod rules;
pub mod run;

use std::fmt;
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use signet_oci::RepoPattern;

pub use immutable::{ImmutableRule, ImmutableTags};
pub use rules::{Keep, RetentionRule};

/// `[retention]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// `[[retention.immutable]]`: the first rule that matches a tag protects it.
    pub immutable: Vec<ImmutableRule>,
    /// `[[retention.rules]]`: a manifest of a repository some rule governs is kept when
    /// any rule keeps it, and deleted otherwise (Harbor's OR).
    pub rules: Vec<RetentionRule>,
    /// Seconds between scheduled runs in the server; 0 (the default) schedules none
    /// (`signet retention` still runs).
    pub interval_secs: u64,
    /// Manifests pushed, and tags set, this recently are always kept: it must exceed the
    /// longest push (an index's children are untagged until the index arrives).
    pub grace_secs: u64,
    /// Seconds between writes of the pulls each process saw (the last pull of each
    /// manifest, for `pulled_within` and `most_recently_pulled`).
    pub record_pulls_every_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            immutable: Vec::new(),
            rules: Vec::new(),
            interval_secs: 0,
            grace_secs: 3600,
            record_pulls_every_secs: 60,
        }
    }
}

/// A repository pattern, checked when the configuration is read.
#[derive(Clone, PartialEq)]
pub struct Pattern(RepoPattern);

impl Pattern {
    pub fn matches(&self, repo: &str) -> bool {
        self.0.matches(repo)
    }
}

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

impl TagRegex {
    pub fn is_match(&self, tag: &str) -> bool {
        self.regex.is_match(tag)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
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

/// A span of time written `30d`, `12h`, `15m` or `90s`, checked when the
/// configuration is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    secs: u64,
}

impl Span {
    pub fn secs(self) -> i64 {
        self.secs as i64
    }

    pub fn duration(self) -> Duration {
        Duration::from_secs(self.secs)
    }

    fn parse(text: &str) -> Result<Span, String> {
        let unit_at = text
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("{text:?}: a span needs a unit (d, h, m or s)"))?;
        let (number, unit) = text.split_at(unit_at);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("{text:?}: not a number of days, hours, minutes or seconds"))?;
        let per = match unit {
            "d" => 86_400,
            "h" => 3_600,
            "m" => 60,
            "s" => 1,
            _ => return Err(format!("{text:?}: the unit is one of d, h, m, s")),
        };
        n.checked_mul(per)
            .map(|secs| Span { secs })
            .ok_or_else(|| format!("{text:?}: too long"))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.secs;
        match s {
            _ if s % 86_400 == 0 => write!(f, "{}d", s / 86_400),
            _ if s % 3_600 == 0 => write!(f, "{}h", s / 3_600),
            _ if s % 60 == 0 => write!(f, "{}m", s / 60),
            _ => write!(f, "{s}s"),
        }
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Span::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_and_print_in_their_units() {
        for (text, secs) in [
            ("30d", 30 * 86_400),
            ("12h", 43_200),
            ("15m", 900),
            ("90s", 90),
        ] {
            let span = Span::parse(text).unwrap();
            assert_eq!(span.secs(), secs);
            assert_eq!(span.to_string(), text);
        }
        for bad in ["30", "d", "-1d", "3w", "1.5d", "99999999999999999999d"] {
            assert!(Span::parse(bad).is_err(), "{bad}");
        }
    }
}
