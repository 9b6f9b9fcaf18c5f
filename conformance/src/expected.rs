//! Expected-results files: the checks a known registry fails, each with why.
//!
//! ```toml
//! registry = "docker-registry (distribution 2.8.2)"
//!
//! [[expected]]
//! check = "discovery.referrers_unknown_empty"
//! reason = "distribution 2.8.2 has no referrers API"
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedFile {
    #[serde(default)]
    pub registry: Option<String>,
    #[serde(default)]
    pub expected: Vec<ExpectedFailure>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedFailure {
    pub check: String,
    pub reason: String,
}

/// A parsed file: which registry it describes, and check id -> reason.
#[derive(Debug, Default)]
pub struct Expectations {
    pub registry: Option<String>,
    pub failures: BTreeMap<String, String>,
}

pub fn parse(text: &str) -> Result<Expectations> {
    let file: ExpectedFile = toml::from_str(text)?;
    let mut map = BTreeMap::new();
    for e in file.expected {
        anyhow::ensure!(
            !e.reason.trim().is_empty(),
            "{}: an expected failure needs a reason",
            e.check
        );
        anyhow::ensure!(
            map.insert(e.check.clone(), e.reason).is_none(),
            "{} is listed twice",
            e.check
        );
    }
    Ok(Expectations {
        registry: file.registry,
        failures: map,
    })
}

pub fn load(path: &Path) -> Result<Expectations> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_list() {
        let m = parse("registry = \"signet\"\nexpected = []\n").unwrap();
        assert!(m.failures.is_empty());
        assert_eq!(m.registry.as_deref(), Some("signet"));
    }

    #[test]
    fn entries_with_reasons() {
        let m = parse(
            r#"
registry = "x"
[[expected]]
check = "discovery.tags_list_n"
reason = "no pagination"
[[expected]]
check = "push.sha512_blob"
reason = "sha256 only"
"#,
        )
        .unwrap();
        assert_eq!(m.failures.len(), 2);
        assert_eq!(m.failures["push.sha512_blob"], "sha256 only");
    }

    #[test]
    fn rejects_missing_reason_duplicates_and_typos() {
        assert!(parse("[[expected]]\ncheck = \"a.b\"\n").is_err());
        assert!(parse("[[expected]]\ncheck = \"a.b\"\nreason = \"  \"\n").is_err());
        assert!(parse("[[expected]]\ncheck = \"a.b\"\nreason = \"r\"\n[[expected]]\ncheck = \"a.b\"\nreason = \"r\"\n").is_err());
        assert!(parse("[[expected]]\ncheck = \"a.b\"\nreasn = \"r\"\n").is_err());
    }
}
