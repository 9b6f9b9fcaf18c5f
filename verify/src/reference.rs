//! The simple-signing payload's `critical.identity.docker-reference`: which image the
//! signer meant. Whether it must name the repository being verified is a choice:
//!
//! - `cosign verify` never compares it (only the manifest digest and, on request,
//!   annotations), which is what lets `cosign copy`, `cosign sign` through a proxy and
//!   mirrors keep signatures valid under another name;
//! - containers/image (skopeo, podman, CRI-O) checks it for atomic and sigstore
//!   signatures with `matchRepoDigestOrExact` by default: the repository must match.
//!
//! So by default ([`DockerReferenceCheck::Default`]) Signet does what the client that
//! made the signature would do on verification: cosign signatures are not checked,
//! atomic signatures must name this repository. `repository` checks every signature,
//! `ignore` none. By default the registry host is not compared: Signet is reached under
//! many names (a load balancer, `localhost`, a mirror's address) and does not know
//! which one a signer used; the repository path is what identifies the image. With
//! `[trust] registry_names` the host must be one of those names as well.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::trust::TrustRoot;

/// `docker_reference` in `[trust]` or on a root (the root's wins).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DockerReferenceCheck {
    /// Atomic signatures must name the repository; cosign signatures are not checked.
    #[default]
    Default,
    /// Every signature's docker-reference must name the repository.
    Repository,
    /// Never checked (signatures copied between repositories stay valid).
    Ignore,
}

impl DockerReferenceCheck {
    pub fn as_str(self) -> &'static str {
        match self {
            DockerReferenceCheck::Default => "default",
            DockerReferenceCheck::Repository => "repository",
            DockerReferenceCheck::Ignore => "ignore",
        }
    }

    fn applies_to(self, format: SignatureFormat) -> bool {
        match self {
            DockerReferenceCheck::Default => format == SignatureFormat::Atomic,
            DockerReferenceCheck::Repository => true,
            DockerReferenceCheck::Ignore => false,
        }
    }
}

/// Which kind of simple-signing signature is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureFormat {
    Cosign,
    Atomic,
}

/// `Ok` when the payload's docker-reference is acceptable for `repo` under `root`'s
/// setting; otherwise why not.
pub fn check(
    root: &TrustRoot,
    format: SignatureFormat,
    payload: &Value,
    repo: &str,
) -> Result<(), String> {
    if !root.docker_reference.applies_to(format) {
        return Ok(());
    }
    let Some(reference) = payload["critical"]["identity"]["docker-reference"].as_str() else {
        return Err("docker-reference mismatch: the payload names no docker-reference".into());
    };
    let Some((host, named)) = parse(reference) else {
        return Err(format!(
            "docker-reference mismatch: {reference:?} is not an image reference"
        ));
    };
    if !root.registry_names.is_empty() && !root.registry_names.contains(&host) {
        return Err(format!(
            "docker-reference mismatch: {reference:?} names registry {host:?}, not one of \
             [trust] registry_names ({})",
            root.registry_names.join(", ")
        ));
    }
    match named {
        named if named == repo => Ok(()),
        named => Err(format!(
            "docker-reference mismatch: the payload names repository {named:?} ({reference:?}), \
             this is {repo:?} (set docker_reference = \"ignore\" on root {:?} to accept copies)",
            root.name
        )),
    }
}

/// The repository path of a docker reference: host, tag and digest removed, Docker
/// Hub's implicit `library/` added (`busybox` and `docker.io/busybox` name
/// `library/busybox`).
pub fn repository_of(reference: &str) -> Option<String> {
    parse(reference).map(|(_, path)| path)
}

/// The registry host (`docker.io` when none is named) and repository path of a
/// docker reference.
pub fn parse(reference: &str) -> Option<(String, String)> {
    let name = reference.split('@').next().unwrap_or_default();
    let name = match name.rsplit_once('/') {
        Some((path, last)) => match last.split_once(':') {
            Some((last, _tag)) => format!("{path}/{last}"),
            None => name.to_string(),
        },
        None => name.split(':').next().unwrap_or_default().to_string(),
    };
    if name.is_empty() {
        return None;
    }
    let (host, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (Some(first), rest.to_string())
        }
        _ => (None, name.clone()),
    };
    if path.is_empty() || path.split('/').any(str::is_empty) {
        return None;
    }
    let docker_hub = matches!(
        host,
        None | Some("docker.io") | Some("index.docker.io") | Some("registry-1.docker.io")
    );
    let host = host.unwrap_or("docker.io").to_string();
    if docker_hub && !path.contains('/') {
        return Some((host, format!("library/{path}")));
    }
    Some((host, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_paths() {
        let cases = [
            ("127.0.0.1:5000/team/app:v1", "team/app"),
            ("127.0.0.1:5000/team/app", "team/app"),
            ("localhost/app@sha256:abcd", "app"),
            ("registry.example.com/a/b/c:latest", "a/b/c"),
            ("busybox", "library/busybox"),
            ("busybox:1.36", "library/busybox"),
            ("docker.io/busybox", "library/busybox"),
            ("docker.io/team/app", "team/app"),
            ("team/app:v2", "team/app"),
        ];
        for (reference, repo) in cases {
            assert_eq!(
                repository_of(reference).as_deref(),
                Some(repo),
                "{reference}"
            );
        }
        assert_eq!(repository_of(""), None);
        assert_eq!(
            parse("localhost:5000/team/app:v1"),
            Some(("localhost:5000".into(), "team/app".into()))
        );
        assert_eq!(
            parse("busybox"),
            Some(("docker.io".into(), "library/busybox".into()))
        );
        assert_eq!(repository_of("host.example//x"), None);
    }

    #[test]
    fn the_default_checks_only_atomic() {
        let d = DockerReferenceCheck::Default;
        assert!(d.applies_to(SignatureFormat::Atomic));
        assert!(!d.applies_to(SignatureFormat::Cosign));
        assert!(DockerReferenceCheck::Repository.applies_to(SignatureFormat::Cosign));
        assert!(!DockerReferenceCheck::Ignore.applies_to(SignatureFormat::Atomic));
    }
}
