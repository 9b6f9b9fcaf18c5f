//! Offline verification of signatures on OCI content: pure functions over bytes and
//! trust material, with no HTTP, no storage and no network. The registry reads the bytes
//! (an attachment's manifest and layers, an atomic signature) and asks for a verdict.
//!
//! - [`trust`]: the `[trust]` configuration and its roots, keys read once;
//!   [`requirements`]: `[[trust.requirements]]`, what a policy asks beyond a signature;
//! - [`cosign`]: cosign simple-signing and DSSE layers, by key or keyless;
//! - [`bundle`]: Sigstore bundles (v0.1 to v0.3) as OCI referrers;
//! - [`gpg`]: atomic ("simple signing") signatures with the pure-Rust `pgp` crate;
//! - [`keyless`]: Fulcio certificates and their evidence: [`rekor`] (SET, inclusion
//!   proof, checkpoint), [`sct`] (embedded SCTs), [`timestamp`] (RFC 3161), against a
//!   [`trusted_root`];
//! - [`reference`]: the payload's docker-reference against the repository.
#![forbid(unsafe_code)]

pub mod bundle;
pub mod cosign;
pub mod gpg;
pub mod keyless;
pub mod notation;
pub mod reference;
pub mod rekor;
pub mod requirements;
pub mod sct;
pub mod timestamp;
pub mod trust;
pub mod trusted_root;

use serde::Serialize;

pub use signet_oci::attachments::VerdictKind;
pub use trust::{PolicyMode, Trust, TrustConfig, TrustRoot};

/// One attachment's verdict, as shown under `verification` in the coverage extension.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Verdict {
    pub verdict: VerdictKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(rename = "predicateType", skip_serializing_if = "Option::is_none")]
    pub predicate_type: Option<String>,
    /// Who signed, as the evidence names it: a keyless certificate's identity, the
    /// fingerprint of the GPG key that signed. A cosign key root has only its name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// When it was reached (seconds since the epoch); `None` until it is stored.
    #[serde(rename = "checkedAt", skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<i64>,
}

impl Verdict {
    fn of(verdict: VerdictKind, root: Option<String>, reason: Option<String>) -> Self {
        Verdict {
            verdict,
            root,
            reason,
            predicate_type: None,
            signer: None,
            checked_at: None,
        }
    }

    pub fn valid(root: &str, predicate_type: Option<String>) -> Self {
        Verdict {
            predicate_type,
            ..Verdict::of(VerdictKind::Valid, Some(root.to_string()), None)
        }
    }

    pub fn invalid(reason: impl Into<String>) -> Self {
        Verdict::of(VerdictKind::Invalid, None, Some(reason.into()))
    }

    pub fn no_trust_root() -> Self {
        Verdict::of(
            VerdictKind::NoTrustRoot,
            None,
            Some("no trust root applies to this repository".into()),
        )
    }

    pub fn unsupported(reason: impl Into<String>) -> Self {
        Verdict::of(VerdictKind::Unsupported, None, Some(reason.into()))
    }

    /// Evidence with no signature of its own: an in-toto statement BuildKit stored in an
    /// image index. `predicate_type` names what it states (the first, when several).
    pub fn unsigned(predicate_type: Option<String>) -> Self {
        Verdict {
            predicate_type,
            ..Verdict::of(
                VerdictKind::Unsigned,
                None,
                Some("an unsigned in-toto statement: it counts through a valid signature on the index that carries it".into()),
            )
        }
    }

    /// The same verdict, naming who signed.
    pub fn signed_by(mut self, signer: Option<String>) -> Self {
        self.signer = signer;
        self
    }

    pub fn is_valid(&self) -> bool {
        self.verdict == VerdictKind::Valid
    }

    /// One line for humans: `valid (root release)`, `invalid: bad signature: …`.
    pub fn summary(&self) -> String {
        match self.verdict {
            VerdictKind::Valid => {
                let mut s = format!("valid (root {}", self.root.as_deref().unwrap_or("?"));
                if let Some(p) = &self.predicate_type {
                    s.push_str(&format!(", predicate {p}"));
                }
                s.push(')');
                if let Some(signer) = &self.signer {
                    s.push_str(&format!(", signed by {signer}"));
                }
                s
            }
            VerdictKind::Invalid => format!("invalid: {}", self.reason.as_deref().unwrap_or("?")),
            VerdictKind::NoTrustRoot => "no-trust-root".into(),
            VerdictKind::Unsupported => {
                format!("unsupported: {}", self.reason.as_deref().unwrap_or("?"))
            }
            VerdictKind::Unsigned => match &self.predicate_type {
                Some(p) => format!("unsigned (predicate {p})"),
                None => "unsigned".into(),
            },
        }
    }
}
