//! The route table: every route's path shape and the query parameters it reads, in the
//! order they are tried. Handlers are registered against a [`Kind`] of this table
//! (`request::resource`), so what a request is and which handler serves it come from one
//! place.
//!
//! A path is split on `/` before anything is decoded, and each segment is then
//! percent-decoded once; a segment that decodes to something holding a `/` cannot match.
//! A repository route takes every segment between its prefix and its fixed suffix as
//! the name, so the last marker wins, as in `/v2/a/manifests/b/blobs/<digest>` (the
//! blob of repository `a/manifests/b`).

use std::borrow::Cow;

use super::query::Param;
use crate::error::ApiError;

/// What a route is, without its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Base,
    Discover,
    Catalog,
    TokenService,
    TokenRevoke,
    Healthz,
    Readyz,
    Metrics,
    Ui,
    SyncJobs,
    SyncJob,
    SyncJobRun,
    SyncJobCancel,
    UploadStart,
    Upload,
    Blob,
    Manifest,
    Tags,
    Referrers,
    RepositoryDiscover,
    Attachments,
    SignetTags,
    Signatures,
    SignatureDelete,
}

/// A variable segment of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// A tag or a digest (`<reference>`).
    Reference,
    Digest,
    /// An upload session's id.
    Session,
    /// An atomic signature's id.
    SignatureId,
    /// A sync job's name.
    Job,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    Literal(&'static str),
    Var(Var),
}

use Segment::{Literal as L, Var as V};

/// Where a route's path lives.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// One of these exact paths, each as its segments (`/v2/` is `["v2", ""]`): a
    /// path is compared as the slices of segments, with nothing split per request.
    Exact(&'static [Path]),
    /// `/ui`, and any path below `/ui/`.
    Ui,
    /// The prefix, then exactly these segments.
    Fixed {
        prefix: Path,
        segments: &'static [Segment],
    },
    /// The prefix, a repository name of one or more segments, then these segments.
    Repository {
        prefix: Path,
        suffix: &'static [Segment],
    },
}

/// One route of the table.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub kind: Kind,
    pub shape: Shape,
    pub params: &'static [Param],
    /// The route's name in metrics and logs (the path template).
    pub pattern: &'static str,
}

/// A path or a path's prefix, as its segments.
type Path = &'static [&'static str];

const V2: Path = &["v2"];
const EXTENSIONS: Path = &["extensions", "v2"];
const SYNC_JOBS: Path = &["v2", "_signet", "sync", "jobs"];

const PAGE: [Param; 2] = [
    Param::one("n", ApiError::SizeInvalid),
    Param::one("last", ApiError::SizeInvalid),
];

/// Tried in this order; the first shape that matches decides. Uploads come before blobs:
/// `/v2/<name>/blobs/uploads` is an upload, not the blob `uploads`.
pub const ROUTES: &[Spec] = &[
    Spec {
        kind: Kind::Base,
        shape: Shape::Exact(&[&["v2", ""], &["v2"]]),
        params: &[],
        pattern: "/v2/",
    },
    Spec {
        kind: Kind::Discover,
        shape: Shape::Exact(&[&["v2", "_oci", "ext", "discover"]]),
        params: &[],
        pattern: "/v2/_oci/ext/discover",
    },
    Spec {
        kind: Kind::Catalog,
        shape: Shape::Exact(&[&["v2", "_catalog"]]),
        params: &PAGE,
        pattern: "/v2/_catalog",
    },
    Spec {
        kind: Kind::TokenService,
        shape: Shape::Exact(&[&["v2", "token"]]),
        params: &[
            Param::one("service", ApiError::Unsupported),
            Param::many("scope", ApiError::Unsupported),
            Param::one("account", ApiError::Unsupported),
            Param::one("client_id", ApiError::Unsupported),
            Param::one("offline_token", ApiError::Unsupported),
        ],
        pattern: "/v2/token",
    },
    Spec {
        kind: Kind::TokenRevoke,
        shape: Shape::Exact(&[&["v2", "token", "revoke"]]),
        params: &[],
        pattern: "/v2/token/revoke",
    },
    Spec {
        kind: Kind::Healthz,
        shape: Shape::Exact(&[&["healthz"]]),
        params: &[],
        pattern: "/healthz",
    },
    Spec {
        kind: Kind::Readyz,
        shape: Shape::Exact(&[&["readyz"]]),
        params: &[],
        pattern: "/readyz",
    },
    Spec {
        kind: Kind::Metrics,
        shape: Shape::Exact(&[&["metrics"]]),
        params: &[],
        pattern: "/metrics",
    },
    Spec {
        kind: Kind::Ui,
        shape: Shape::Ui,
        params: &[],
        pattern: "/ui/{path:.*}",
    },
    Spec {
        kind: Kind::SyncJobs,
        shape: Shape::Exact(&[&["v2", "_signet", "sync", "jobs"]]),
        params: &[],
        pattern: "/v2/_signet/sync/jobs",
    },
    Spec {
        kind: Kind::SyncJob,
        shape: Shape::Fixed {
            prefix: SYNC_JOBS,
            segments: &[V(Var::Job)],
        },
        params: &[],
        pattern: "/v2/_signet/sync/jobs/{name}",
    },
    Spec {
        kind: Kind::SyncJobRun,
        shape: Shape::Fixed {
            prefix: SYNC_JOBS,
            segments: &[V(Var::Job), L("run")],
        },
        params: &[],
        pattern: "/v2/_signet/sync/jobs/{name}/run",
    },
    Spec {
        kind: Kind::SyncJobCancel,
        shape: Shape::Fixed {
            prefix: SYNC_JOBS,
            segments: &[V(Var::Job), L("cancel")],
        },
        params: &[],
        pattern: "/v2/_signet/sync/jobs/{name}/cancel",
    },
    Spec {
        kind: Kind::UploadStart,
        shape: Shape::Repository {
            prefix: V2,
            suffix: &[L("blobs"), L("uploads"), L("")],
        },
        params: &UPLOAD_START,
        pattern: "/v2/{name:.+}/blobs/uploads/",
    },
    Spec {
        kind: Kind::UploadStart,
        shape: Shape::Repository {
            prefix: V2,
            suffix: &[L("blobs"), L("uploads")],
        },
        params: &UPLOAD_START,
        pattern: "/v2/{name:.+}/blobs/uploads/",
    },
    Spec {
        kind: Kind::Upload,
        shape: Shape::Repository {
            prefix: V2,
            suffix: &[L("blobs"), L("uploads"), V(Var::Session)],
        },
        params: &[Param::one("digest", ApiError::DigestInvalid)],
        pattern: "/v2/{name:.+}/blobs/uploads/{id}",
    },
    Spec {
        kind: Kind::Blob,
        shape: Shape::Repository {
            prefix: V2,
            suffix: &[L("blobs"), V(Var::Digest)],
        },
        params: &[],
        pattern: "/v2/{name:.+}/blobs/{digest}",
    },
    Spec {
        kind: Kind::Manifest,
        shape: Shape::Repository {
            prefix: V2,
            suffix: &[L("manifests"), V(Var::Reference)],
        },
        params: &[
            Param::many("tag", ApiError::TagInvalid),
            Param::one("override_immutable", ApiError::Unsupported),
        ],
        pattern: "/v2/{name:.+}/manifests/{reference}",
    },
    Spec {
        kind: Kind::Tags,
        shape: Shape::Repository {
            prefix: V2,
            suffix: &[L("tags"), L("list")],
        },
        params: &PAGE,
        pattern: "/v2/{name:.+}/tags/list",
    },
    Spec {
        kind: Kind::Referrers,
        shape: Shape::Repository {
            prefix: V2,
            suffix: &[L("referrers"), V(Var::Digest)],
        },
        params: &[Param::one("artifactType", ApiError::Unsupported)],
        pattern: "/v2/{name:.+}/referrers/{digest}",
    },
    Spec {
        kind: Kind::RepositoryDiscover,
        shape: Shape::Repository {
            prefix: V2,
            suffix: &[L("_oci"), L("ext"), L("discover")],
        },
        params: &[],
        pattern: "/v2/{name:.+}/_oci/ext/discover",
    },
    Spec {
        kind: Kind::Attachments,
        shape: Shape::Repository {
            prefix: V2,
            suffix: &[L("_signet"), L("attachments"), V(Var::Reference)],
        },
        params: &[Param::one("recursive", ApiError::Unsupported)],
        pattern: "/v2/{name:.+}/_signet/attachments/{reference}",
    },
    Spec {
        kind: Kind::SignetTags,
        shape: Shape::Repository {
            prefix: V2,
            suffix: &[L("_signet"), L("tags")],
        },
        params: &[
            Param::one("n", ApiError::SizeInvalid),
            Param::one("last", ApiError::SizeInvalid),
            Param::one("attachments", ApiError::Unsupported),
            Param::one("signatures", ApiError::Unsupported),
        ],
        pattern: "/v2/{name:.+}/_signet/tags",
    },
    Spec {
        kind: Kind::Signatures,
        shape: Shape::Repository {
            prefix: EXTENSIONS,
            suffix: &[L("signatures"), V(Var::Digest)],
        },
        params: &[],
        pattern: "/extensions/v2/{name:.+}/signatures/{digest}",
    },
    Spec {
        kind: Kind::SignatureDelete,
        shape: Shape::Repository {
            prefix: EXTENSIONS,
            suffix: &[L("signatures"), V(Var::Digest), V(Var::SignatureId)],
        },
        params: &[],
        pattern: "/extensions/v2/{name:.+}/signatures/{digest}/{id}",
    },
];

const UPLOAD_START: [Param; 4] = [
    Param::one("mount", ApiError::DigestInvalid),
    Param::one("from", ApiError::NameInvalid),
    Param::one("digest", ApiError::DigestInvalid),
    Param::one("digest-algorithm", ApiError::Unsupported),
];

/// A path matched against the table: the route, its repository name (still to be
/// validated) and its variable segments, decoded.
#[derive(Debug)]
pub struct Matched {
    pub spec: &'static Spec,
    pub name: Option<String>,
    pub vars: Vec<(Var, String)>,
    /// The part below `/ui/` of a UI path.
    pub rest: Option<String>,
}

/// Why a path is not one of the table's, or not readable at all.
#[derive(Debug, PartialEq, Eq)]
pub enum NoMatch {
    /// No route has this shape.
    Unknown,
    /// A segment's encoding is broken, or it decodes to a `/` or a control character.
    Malformed,
}

/// Matches a raw (still encoded) path against the table.
pub fn find(raw_path: &str) -> Result<Matched, NoMatch> {
    let segments = split(raw_path)?;
    let decoded: Vec<&str> = segments.iter().map(|s| s.as_ref()).collect();
    for spec in ROUTES {
        if let Some(m) = spec.shape.matches(&decoded) {
            return Ok(Matched {
                spec,
                name: m.0,
                vars: m.1,
                rest: m.2,
            });
        }
    }
    Err(NoMatch::Unknown)
}

/// The path's segments after the leading `/`, each decoded once.
fn split(raw_path: &str) -> Result<Vec<Cow<'_, str>>, NoMatch> {
    let Some(rest) = raw_path.strip_prefix('/') else {
        return Err(NoMatch::Unknown);
    };
    // Room for the common paths (`/v2/<two-part name>/manifests/<tag>` is 5 segments)
    // from the start: collecting grows a vector from 4, moving it once per request.
    let mut segments = Vec::with_capacity(8);
    for raw in rest.split('/') {
        segments.push(decode_segment(raw)?);
    }
    Ok(segments)
}

/// One segment, decoded; refused if it decodes to a `/` or a control character.
fn decode_segment(raw: &str) -> Result<Cow<'_, str>, NoMatch> {
    // Nearly every segment is printable ASCII without an escape: nothing to decode and
    // nothing to refuse, in one pass over its bytes.
    if raw.bytes().all(|b| b.is_ascii_graphic() && b != b'%') {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = super::decode::percent_decode(raw, false).ok_or(NoMatch::Malformed)?;
    if decoded.contains('/') || decoded.chars().any(char::is_control) {
        return Err(NoMatch::Malformed);
    }
    Ok(decoded)
}

type ShapeMatch = (Option<String>, Vec<(Var, String)>, Option<String>);

impl Shape {
    /// `segments` are the whole path's, decoded.
    fn matches(&self, segments: &[&str]) -> Option<ShapeMatch> {
        match self {
            Shape::Exact(paths) => paths.contains(&segments).then(|| (None, Vec::new(), None)),
            Shape::Ui => match segments {
                ["ui"] => Some((None, Vec::new(), None)),
                ["ui", rest @ ..] => Some((None, Vec::new(), Some(rest.join("/")))),
                _ => None,
            },
            Shape::Fixed {
                prefix,
                segments: shape,
            } => {
                let rest = segments.strip_prefix(*prefix)?;
                if rest.len() != shape.len() {
                    return None;
                }
                let vars = match_segments(shape, rest)?;
                Some((None, vars, None))
            }
            Shape::Repository { prefix, suffix } => {
                let rest = segments.strip_prefix(*prefix)?;
                if rest.len() <= suffix.len() {
                    return None;
                }
                let (name, tail) = rest.split_at(rest.len() - suffix.len());
                let vars = match_segments(suffix, tail)?;
                Some((Some(name.join("/")), vars, None))
            }
        }
    }
}

fn match_segments(shape: &[Segment], actual: &[&str]) -> Option<Vec<(Var, String)>> {
    let mut vars = Vec::new();
    for (expected, got) in shape.iter().zip(actual) {
        match expected {
            Segment::Literal(l) if l == got => {}
            Segment::Literal(_) => return None,
            // A variable is never empty: `/v2/a/blobs/` names no blob.
            Segment::Var(_) if got.is_empty() => return None,
            Segment::Var(v) => vars.push((*v, (*got).to_string())),
        }
    }
    Some(vars)
}

impl Spec {
    /// A path of this route, with `name` as the repository and `value` giving each
    /// variable: the inverse of [`find`], used to test the table against itself.
    pub fn render(&self, name: &str, value: impl Fn(Var) -> String) -> String {
        let segments = |shape: &[Segment]| -> String {
            shape
                .iter()
                .map(|s| match s {
                    Segment::Literal(l) => (*l).to_string(),
                    Segment::Var(v) => value(*v),
                })
                .collect::<Vec<_>>()
                .join("/")
        };
        match self.shape {
            Shape::Exact(paths) => format!("/{}", paths[0].join("/")),
            Shape::Ui => "/ui/".to_string(),
            Shape::Fixed {
                prefix,
                segments: s,
            } => format!("/{}/{}", prefix.join("/"), segments(s)),
            Shape::Repository { prefix, suffix } => {
                format!("/{}/{name}/{}", prefix.join("/"), segments(suffix))
            }
        }
    }

    /// Whether the route names a repository.
    pub fn has_repository(&self) -> bool {
        matches!(self.shape, Shape::Repository { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(path: &str) -> Option<(Kind, Option<String>)> {
        find(path).ok().map(|m| (m.spec.kind, m.name))
    }

    fn repo(kind: Kind, name: &str) -> Option<(Kind, Option<String>)> {
        Some((kind, Some(name.to_string())))
    }

    #[test]
    fn finds_each_route() {
        assert_eq!(kind("/v2/"), Some((Kind::Base, None)));
        assert_eq!(kind("/v2"), Some((Kind::Base, None)));
        assert_eq!(kind("/v2/_catalog"), Some((Kind::Catalog, None)));
        assert_eq!(kind("/v2/token"), Some((Kind::TokenService, None)));
        assert_eq!(
            kind("/v2/a/b/blobs/uploads/"),
            repo(Kind::UploadStart, "a/b")
        );
        assert_eq!(kind("/v2/a/blobs/uploads"), repo(Kind::UploadStart, "a"));
        assert_eq!(kind("/v2/a/blobs/uploads/x1"), repo(Kind::Upload, "a"));
        assert_eq!(kind("/v2/a/blobs/sha256:00"), repo(Kind::Blob, "a"));
        assert_eq!(
            kind("/v2/a/b/c/manifests/v1"),
            repo(Kind::Manifest, "a/b/c")
        );
        assert_eq!(kind("/v2/a/tags/list"), repo(Kind::Tags, "a"));
        assert_eq!(
            kind("/v2/a/referrers/sha256:00"),
            repo(Kind::Referrers, "a")
        );
        assert_eq!(
            kind("/v2/a/_oci/ext/discover"),
            repo(Kind::RepositoryDiscover, "a")
        );
        assert_eq!(kind("/v2/_oci/ext/discover"), Some((Kind::Discover, None)));
        assert_eq!(
            kind("/v2/a/_signet/attachments/v1"),
            repo(Kind::Attachments, "a")
        );
        assert_eq!(kind("/v2/a/b/_signet/tags"), repo(Kind::SignetTags, "a/b"));
        assert_eq!(
            kind("/extensions/v2/a/b/signatures/sha256:00"),
            repo(Kind::Signatures, "a/b")
        );
        assert_eq!(
            kind("/extensions/v2/a/signatures/sha256:00/abc"),
            repo(Kind::SignatureDelete, "a")
        );
        assert_eq!(kind("/v2/_signet/sync/jobs"), Some((Kind::SyncJobs, None)));
        assert_eq!(kind("/v2/_signet/sync/jobs/a"), Some((Kind::SyncJob, None)));
        assert_eq!(
            kind("/v2/_signet/sync/jobs/a/run"),
            Some((Kind::SyncJobRun, None))
        );
        assert_eq!(kind("/healthz"), Some((Kind::Healthz, None)));
        assert_eq!(kind("/metrics"), Some((Kind::Metrics, None)));
        assert_eq!(kind("/ui"), Some((Kind::Ui, None)));
        assert_eq!(kind("/ui/image"), Some((Kind::Ui, None)));
    }

    #[test]
    fn the_last_marker_wins() {
        assert_eq!(
            kind("/v2/x/manifests/y/blobs/sha256:00"),
            repo(Kind::Blob, "x/manifests/y")
        );
    }

    #[test]
    fn decodes_each_segment_once() {
        assert_eq!(
            kind("/v2/prod/%61pp/manifests/v1"),
            repo(Kind::Manifest, "prod/app")
        );
        let m = find("/v2/a/manifests/%761").unwrap();
        assert_eq!(m.vars, [(Var::Reference, "v1".to_string())]);
        let m = find("/v2/a/manifests/sha256%3Aab").unwrap();
        assert_eq!(m.vars, [(Var::Reference, "sha256:ab".to_string())]);
        // Markers decode too: every reader sees the same route.
        assert_eq!(kind("/v2/a/manifest%73/v1"), repo(Kind::Manifest, "a"));
    }

    #[test]
    fn refuses_what_does_not_decode_to_a_segment() {
        for path in [
            "/v2/prod%2Fapp/manifests/v1",
            "/v2/a/manifests/%zz",
            "/v2/a/manifests/v%00",
            "/v2/a/manifests/%0a",
            // Unescaped too, and beyond ASCII (U+0085 is a control character).
            "/v2/a/manifests/v\u{7f}",
            "/v2/a/manifests/v\u{85}",
        ] {
            assert_eq!(find(path).unwrap_err(), NoMatch::Malformed, "{path}");
        }
    }

    #[test]
    fn shapes_that_name_nothing() {
        assert_eq!(kind("/v2//blobs/x"), repo(Kind::Blob, ""));
        assert_eq!(kind("/v2/a/blobs/"), None);
        assert_eq!(kind("/v2/a/manifests/v1/"), None);
        assert_eq!(kind("/healthz/x"), None);
        assert_eq!(kind("/uix"), None);
        assert_eq!(kind("/v2/a/MANIFESTS/v1"), None);
        assert_eq!(kind("x"), None);
    }

    #[test]
    fn renders_what_it_finds() {
        for spec in ROUTES {
            let path = spec.render("team/app", |v| match v {
                Var::Reference => "v1".into(),
                Var::Digest => format!("sha256:{}", "a".repeat(64)),
                Var::Session => "s1".into(),
                Var::SignatureId => "b".repeat(32),
                Var::Job => "nightly".into(),
            });
            let m = find(&path).unwrap();
            assert_eq!(m.spec.kind, spec.kind, "{path}");
            if spec.has_repository() {
                assert_eq!(m.name.as_deref(), Some("team/app"), "{path}");
            }
        }
    }
}
