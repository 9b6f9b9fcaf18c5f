//! htpasswd files, bcrypt entries only (`htpasswd -B`). MD5 (`$apr1$`), SHA-1
//! (`{SHA}`), crypt and plain entries are refused with the line that holds them: a
//! registry should not quietly accept hashes that are cheap to crack.

use std::path::Path;

use super::config::Secret;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HtpasswdError {
    #[error("cannot read htpasswd file {path}: {error}")]
    Read { path: String, error: String },
    #[error("htpasswd line {line}: expected `name:hash`")]
    Malformed { line: usize },
    #[error(
        "htpasswd line {line} (user {user:?}): only bcrypt entries are supported \
         (create them with `htpasswd -B`); this one is {kind}"
    )]
    NotBcrypt {
        line: usize,
        user: String,
        kind: &'static str,
    },
}

/// Reads the file: `(name, bcrypt hash)` per entry.
pub fn load(path: &Path) -> Result<Vec<(String, Secret)>, HtpasswdError> {
    let text = std::fs::read_to_string(path).map_err(|e| HtpasswdError::Read {
        path: path.display().to_string(),
        error: e.to_string(),
    })?;
    parse(&text)
}

pub fn parse(text: &str) -> Result<Vec<(String, Secret)>, HtpasswdError> {
    let mut entries = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let entry = raw.trim();
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        let (user, hash) = entry
            .split_once(':')
            .filter(|(u, h)| !u.is_empty() && !h.is_empty())
            .ok_or(HtpasswdError::Malformed { line })?;
        if !is_bcrypt(hash) {
            return Err(HtpasswdError::NotBcrypt {
                line,
                user: user.to_string(),
                kind: hash_kind(hash),
            });
        }
        entries.push((user.to_string(), Secret::new(hash)));
    }
    Ok(entries)
}

/// `$2a$`, `$2b$`, `$2x$`, `$2y$` with a cost and 53 characters of salt and hash.
pub fn is_bcrypt(hash: &str) -> bool {
    let Some(rest) = ["$2a$", "$2b$", "$2x$", "$2y$"]
        .iter()
        .find_map(|p| hash.strip_prefix(p))
    else {
        return false;
    };
    let Some((cost, tail)) = rest.split_once('$') else {
        return false;
    };
    cost.len() == 2 && cost.bytes().all(|b| b.is_ascii_digit()) && tail.len() == 53
}

fn hash_kind(hash: &str) -> &'static str {
    if hash.starts_with("$apr1$") {
        "MD5 (apr1)"
    } else if hash.starts_with("{SHA}") {
        "SHA-1"
    } else if hash.starts_with("$1$") {
        "MD5-crypt"
    } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
        "SHA-crypt"
    } else if hash.starts_with('$') {
        "an unknown hash"
    } else {
        "crypt or plain text"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> String {
        bcrypt::hash("secret", 4).unwrap()
    }

    #[test]
    fn reads_bcrypt_entries_and_skips_comments() {
        let hash = alice();
        let text = format!("# users\n\nalice:{hash}\n");
        let entries = parse(&text).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0, "alice");
        assert_eq!(entries[0].1.expose(), hash);
    }

    #[test]
    fn refuses_other_hashes_clearly() {
        let cases = [
            ("bob:$apr1$abc$def", "MD5 (apr1)"),
            ("bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1"),
            ("bob:$6$salt$hash", "SHA-crypt"),
            ("bob:rl8AXF8dL1sy.", "crypt or plain text"),
        ];
        for (line, kind) in cases {
            let err = parse(&format!("alice:{}\n{line}\n", alice())).unwrap_err();
            assert_eq!(
                err,
                HtpasswdError::NotBcrypt {
                    line: 2,
                    user: "bob".into(),
                    kind
                }
            );
            assert!(err.to_string().contains("htpasswd -B"));
        }
        assert_eq!(
            parse("nocolon\n").unwrap_err(),
            HtpasswdError::Malformed { line: 1 }
        );
    }
}
