//! Repository patterns: one grammar wherever a configuration names repositories — access
//! rules (`[[auth.rules]]`), trust roots and requirements (`[trust]`), sync selection
//! (`[[sync.jobs]] repositories`) — so `team/**` means the same to each.
//!
//! The grammar (matched by `globset`, with `/` as a literal separator):
//! - `*` any characters within one path segment (`team/*` is `team/app`, not
//!   `team/app/sub`), `?` one character other than `/`;
//! - `**` as a whole segment: any number of segments (`team/**` is `team/app` and
//!   `team/app/sub`, but not `team` itself; `**/app` is `app` and `x/y/app`);
//! - `[abc]`, `[a-z]` one of those characters, `{a,b}` one of those alternatives;
//! - anything else matches itself. A pattern without any of these is an exact name.

use std::fmt;

use globset::{GlobBuilder, GlobMatcher};

/// A compiled repository pattern.
#[derive(Clone)]
pub struct RepoPattern {
    text: String,
    matcher: GlobMatcher,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("repository pattern {pattern:?}: {reason}")]
pub struct InvalidPattern {
    pub pattern: String,
    pub reason: String,
}

impl RepoPattern {
    pub fn new(pattern: &str) -> Result<Self, InvalidPattern> {
        let invalid = |reason: String| InvalidPattern {
            pattern: pattern.to_string(),
            reason,
        };
        if pattern.is_empty() {
            return Err(invalid("empty".into()));
        }
        let glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| invalid(e.kind().to_string()))?;
        Ok(RepoPattern {
            text: pattern.to_string(),
            matcher: glob.compile_matcher(),
        })
    }

    pub fn matches(&self, repository: &str) -> bool {
        self.matcher.is_match(repository)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Whether `text` holds any of the grammar's special characters, or is a plain name.
pub fn is_pattern(text: &str) -> bool {
    text.contains(['*', '?', '[', '{'])
}

impl fmt::Debug for RepoPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoPattern({:?})", self.text)
    }
}

impl fmt::Display for RepoPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for RepoPattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, name: &str) -> bool {
        RepoPattern::new(pattern).unwrap().matches(name)
    }

    #[test]
    fn the_grammar() {
        assert!(m("team/*", "team/app"));
        assert!(!m("team/*", "team/app/sub"));
        assert!(!m("team/*", "team"));
        assert!(!m("team/*", "other/app"));
        assert!(m("team/**", "team/app"));
        assert!(m("team/**", "team/app/sub"));
        assert!(!m("team/**", "team"));
        assert!(!m("team/**", "teamx/app"));
        assert!(m("**", "a/b/c"));
        assert!(m("**/app", "a/b/app"));
        assert!(m("**/app", "app"));
        assert!(!m("**/app", "a/xapp"));
        assert!(m("team/app-*", "team/app-1"));
        assert!(m("lib?", "libs"));
        assert!(!m("lib?", "lib/"));
        assert!(m("exact", "exact"));
        assert!(!m("exact", "exact2"));
        assert!(!m("exact", "x/exact"));
        assert!(m("team/{app,web}", "team/web"));
        assert!(m("r[0-9]", "r7"));
    }

    #[test]
    fn plain_names_are_told_apart() {
        assert!(!is_pattern("team/app"));
        for p in ["team/*", "team/**", "lib?", "r[0-9]", "team/{a,b}"] {
            assert!(is_pattern(p), "{p}");
        }
    }

    #[test]
    fn refuses_broken_patterns() {
        assert!(RepoPattern::new("").is_err());
        assert!(RepoPattern::new("team/[").is_err());
        assert!(RepoPattern::new("team/{a").is_err());
    }
}
