//! Trusted identities (`x509.subject: C=US, ST=WA, O=Example, CN=release`) and how a
//! signing certificate's subject is matched against them: every attribute the
//! identity names must be in the subject with the same value; the subject may carry
//! more. As in notation, an identity must name at least C, ST and O, so that one
//! common name alone never identifies a signer.

use x509_cert::name::Name;

const PREFIX: &str = "x509.subject:";
const REQUIRED: &[&str] = &["C", "ST", "O"];

/// A distinguished name as attribute/value pairs (attribute names upper-case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistinguishedName(Vec<(String, String)>);

impl DistinguishedName {
    /// RFC 4514 text as notation writes it: `C=US, ST=WA, O=Example`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in split_unescaped(text, ',') {
            let part = part.trim();
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not ATTRIBUTE=value"))?;
            let key = key.trim().to_ascii_uppercase();
            if key.is_empty() || pairs.iter().any(|(k, _)| *k == key) {
                return Err(format!("attribute {key:?} is empty or given twice"));
            }
            pairs.push((key, unescape(value.trim())));
        }
        Ok(DistinguishedName(pairs))
    }

    /// The subject of a certificate. A multi-valued RDN or an attribute given twice
    /// is refused: with `O=Evil, O=Acme` a subset match would be ambiguous.
    pub fn of(name: &Name) -> Result<Self, String> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for rdn in name.iter_rdn() {
            if rdn.len() != 1 {
                return Err("the certificate's subject has a multi-valued RDN".into());
            }
            for atv in rdn.iter() {
                let text = atv.to_string();
                let (key, value) = text
                    .split_once('=')
                    .ok_or("the certificate's subject has an unreadable attribute")?;
                let key = key.to_ascii_uppercase();
                if pairs.iter().any(|(k, _)| *k == key) {
                    return Err(format!("the certificate's subject names {key} twice"));
                }
                pairs.push((key, unescape(value)));
            }
        }
        Ok(DistinguishedName(pairs))
    }

    /// Whether every attribute of `self` is in `subject`, with the same value.
    pub fn is_subset_of(&self, subject: &DistinguishedName) -> bool {
        self.0.iter().all(|pair| subject.0.contains(pair))
    }
}

impl std::fmt::Display for DistinguishedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&parts.join(", "))
    }
}

/// Whom a root trusts to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustedIdentities {
    /// `*`: any certificate that chains to the trust store.
    Any,
    Subjects(Vec<DistinguishedName>),
}

impl TrustedIdentities {
    /// `["*"]`, or `x509.subject: …` entries.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        if entries.is_empty() {
            return Err(
                "no trusted identities (use \"*\" to trust any signer of the trust store)".into(),
            );
        }
        if entries.iter().any(|e| e.trim() == "*") {
            if entries.len() > 1 {
                return Err("\"*\" must be the only trusted identity".into());
            }
            return Ok(TrustedIdentities::Any);
        }
        let mut subjects = Vec::new();
        for entry in entries {
            let dn = entry.trim().strip_prefix(PREFIX).ok_or_else(|| {
                format!("trusted identity {entry:?} does not start with {PREFIX}")
            })?;
            let dn = DistinguishedName::parse(dn)
                .map_err(|e| format!("trusted identity {entry:?}: {e}"))?;
            for required in REQUIRED {
                if !dn.0.iter().any(|(k, _)| k == required) {
                    return Err(format!(
                        "trusted identity {entry:?} must name at least C, ST and O"
                    ));
                }
            }
            subjects.push(dn);
        }
        Ok(TrustedIdentities::Subjects(subjects))
    }

    pub fn admits(&self, subject: &DistinguishedName) -> bool {
        match self {
            TrustedIdentities::Any => true,
            TrustedIdentities::Subjects(list) => list.iter().any(|dn| dn.is_subset_of(subject)),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            TrustedIdentities::Any => "any signer".into(),
            TrustedIdentities::Subjects(list) => {
                let names: Vec<String> = list.iter().map(|d| format!("[{d}]")).collect();
                names.join(" or ")
            }
        }
    }
}

/// `text` cut at each `sep` not escaped by a backslash.
fn split_unescaped(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            c if c == sep => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// RFC 4514 escapes undone: `\,` and the like, and `\hh` hex pairs.
fn unescape(value: &str) -> String {
    let mut out = Vec::new();
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => {
                    out.push(b);
                    i += 3;
                }
                None => {
                    out.push(bytes[i + 1]);
                    i += 2;
                }
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_matches_a_subject_that_has_all_its_attributes() {
        let ids =
            TrustedIdentities::parse(&["x509.subject: C=US, ST=WA, O=Notary, CN=e2e".to_string()])
                .unwrap();
        let subject = DistinguishedName::parse("C=US, ST=WA, L=Seattle, O=Notary, CN=e2e").unwrap();
        assert!(ids.admits(&subject));
        let other = DistinguishedName::parse("C=US, ST=WA, O=Notary, CN=e2f").unwrap();
        assert!(!ids.admits(&other));
        let escaped = DistinguishedName::parse(r"C=US, ST=WA, O=Acme\, Inc., CN=x").unwrap();
        assert!(escaped.0.contains(&("O".into(), "Acme, Inc.".into())));
        // `\+4` is an escaped plus and a 4, not a byte.
        let plus = DistinguishedName::parse(r"C=US, ST=WA, O=a\+4").unwrap();
        assert!(plus.0.contains(&("O".into(), "a+4".into())));
    }

    #[test]
    fn identities_must_be_specific_enough() {
        assert!(TrustedIdentities::parse(&["x509.subject: CN=e2e".into()]).is_err());
        assert!(TrustedIdentities::parse(&["CN=e2e, C=US, ST=WA, O=N".into()]).is_err());
        assert!(
            TrustedIdentities::parse(&["*".into(), "x509.subject: C=US, ST=WA, O=N".into()])
                .is_err()
        );
        assert!(TrustedIdentities::parse(&[]).is_err());
        assert!(
            TrustedIdentities::parse(&["x509.subject: C=US, C=CA, ST=WA, O=N".into()]).is_err()
        );
        assert_eq!(
            TrustedIdentities::parse(&["*".into()]).unwrap(),
            TrustedIdentities::Any
        );
    }
}
