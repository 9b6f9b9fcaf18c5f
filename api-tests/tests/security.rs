//! Tenants and encodings: the route table drives the requests.
//!
//! A multi-tenant registry: alice owns `alice/**`, bob owns `bob/**`, both pull
//! `prod/**` and alice pushes it, root is admin, and `prod/**` enforces cosign
//! signatures. Every route of the server's own table (`signet_server::request::routes`)
//! is tried with every method it serves: anonymously (401), as another tenant (403 or
//! 404, never bob's data), and with encoding tricks in each path segment and each query
//! parameter. Whatever the trick, authorisation and policy decide on what the handler
//! serves: alice never reads bob's bytes, an unsigned image under `prod/` is never
//! served, and bob gets his own content through an escaped path like through a plain
//! one. A route added to the table is covered without anyone remembering to add it
//! here, and the exhaustive `match` on its kind makes the build say so.
//!
//! Requests are sent as written ([`signet_api_tests::raw`]): HTTP libraries would
//! resolve `.` and `..` segments before the server ever saw them.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use signet_api_tests::cosign::{trust_root, Key};
use signet_api_tests::pki::auth_users;
use signet_api_tests::raw::{send, RawResponse};
use signet_api_tests::{sha256, Registry};
use signet_server::request::routes::{Kind, Spec, Var, ROUTES};

const OPEN_KINDS: [Kind; 5] = [
    Kind::TokenService,
    Kind::TokenRevoke,
    Kind::Healthz,
    Kind::Readyz,
    Kind::Ui,
];

/// The methods each route serves. Exhaustive: a new kind does not build until it is here.
fn methods(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Base | Kind::Ui => &["GET", "HEAD"],
        Kind::Discover
        | Kind::Catalog
        | Kind::Healthz
        | Kind::Readyz
        | Kind::Metrics
        | Kind::Tags
        | Kind::Referrers
        | Kind::RepositoryDiscover
        | Kind::Attachments
        | Kind::SignetTags => &["GET"],
        Kind::TokenService | Kind::SyncJobs => &["GET", "POST"],
        Kind::SyncJob => &["GET", "DELETE"],
        Kind::SyncJobRun | Kind::SyncJobCancel | Kind::UploadStart | Kind::TokenRevoke => &["POST"],
        Kind::Upload => &["GET", "PATCH", "PUT", "DELETE"],
        Kind::Blob => &["GET", "HEAD", "DELETE"],
        Kind::Manifest => &["GET", "HEAD", "PUT", "DELETE"],
        Kind::Signatures => &["GET", "PUT"],
        Kind::SignatureDelete => &["DELETE"],
    }
}

/// Who sends a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    User(&'static str, &'static str),
}

const ALICE: Who = Who::User("alice", "alice-pw");
const BOB: Who = Who::User("bob", "bob-pw");
const ROOT: Who = Who::User("root", "root-pw");

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Sends a request as `who`; `content_type` for bodies that need one.
fn request(
    r: &Registry,
    who: Who,
    method: &str,
    target: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> RawResponse {
    let authorization = match who {
        Who::Anonymous => None,
        Who::User(name, password) => Some(format!(
            "Basic {}",
            B64.encode(format!("{name}:{password}"))
        )),
    };
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &authorization {
        headers.push(("Authorization", a));
    }
    if let Some(t) = content_type {
        headers.push(("Content-Type", t));
    }
    send(&r.host, method, target, &headers, body)
}

/// What bob holds in `bob/secret`, which alice must never read.
struct Secret {
    manifest: Vec<u8>,
    manifest_digest: String,
    layer: Vec<u8>,
    layer_digest: String,
    session: String,
    signature_id: String,
}

struct Tenants {
    r: Registry,
    secret: Secret,
    /// The digest of an unsigned image at `prod/app:v1`.
    unsigned: String,
    _keys: tempfile::TempDir,
}

fn tenants_config(public_key: &str) -> String {
    let users = [
        ("alice", "alice-pw"),
        ("bob", "bob-pw"),
        ("root", "root-pw"),
    ];
    format!(
        r#"
[auth]
enabled = true
admins = ["root"]
{users}
[[auth.rules]]
repositories = ["alice/**"]
pull = ["alice"]
push = ["alice"]
delete = ["alice"]

[[auth.rules]]
repositories = ["bob/**"]
pull = ["bob"]
push = ["bob"]
delete = ["bob"]

[[auth.rules]]
repositories = ["prod/**"]
pull = ["alice", "bob"]
push = ["alice"]

[trust]
policy = "off"
{root}policy = "enforce"
"#,
        users = auth_users(&users),
        root = trust_root("release", public_key, &["prod/**"]),
    )
}

fn image_config(note: &str) -> Vec<u8> {
    format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"note":"{note}"}}"#
    )
    .into_bytes()
}

/// Pushes blobs with one `POST ?digest=` each.
fn push_blobs(r: &Registry, who: Who, repo: &str, blobs: &[&[u8]]) {
    for blob in blobs {
        let target = format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(blob));
        let resp = request(r, who, "POST", &target, None, blob);
        assert_eq!(resp.status, 201, "{resp:?}");
    }
}

fn put_manifest(
    r: &Registry,
    who: Who,
    repo: &str,
    reference: &str,
    manifest: &[u8],
) -> RawResponse {
    let target = format!("/v2/{repo}/manifests/{reference}");
    request(r, who, "PUT", &target, Some(OCI_MANIFEST), manifest)
}

/// An OCI image manifest: an image config, one tar layer, and `extra` fields.
fn runnable_manifest(config: &[u8], layer: &[u8], extra: Value) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(layer), "size": layer.len()}],
    });
    for (k, v) in extra.as_object().unwrap() {
        m[k] = v.clone();
    }
    serde_json::to_vec(&m).unwrap()
}

/// Pushes a one-layer image under `tag`; returns the manifest bytes.
fn push_image(r: &Registry, who: Who, repo: &str, tag: &str, note: &str, layer: &[u8]) -> Vec<u8> {
    let config = image_config(note);
    push_blobs(r, who, repo, &[&config, layer]);
    let manifest = runnable_manifest(&config, layer, json!({}));
    let resp = put_manifest(r, who, repo, tag, &manifest);
    assert_eq!(resp.status, 201, "{resp:?}");
    manifest
}

impl Tenants {
    fn start() -> Tenants {
        let keys = tempfile::tempdir().unwrap();
        let public = Key::generate().write_public(keys.path(), "release");
        let r = Registry::start_with_config(&tenants_config(&public));
        let layer = b"bob's secret layer: password=hunter2".to_vec();
        let manifest = push_image(&r, BOB, "bob/secret", "v1", "bob", &layer);
        let manifest_digest = sha256(&manifest);
        let resp = request(&r, BOB, "POST", "/v2/bob/secret/blobs/uploads/", None, b"");
        assert_eq!(resp.status, 202, "{resp:?}");
        let session = resp
            .header("location")
            .and_then(|l| l.rsplit('/').next())
            .unwrap()
            .to_string();
        let signature_id = "0123456789abcdef0123456789abcdef".to_string();
        let upload = json!({
            "schemaVersion": 2, "type": "atomic",
            "name": format!("{manifest_digest}@{signature_id}"),
            "content": B64.encode(b"bob's gpg signature"),
        });
        let target = format!("/extensions/v2/bob/secret/signatures/{manifest_digest}");
        let body = serde_json::to_vec(&upload).unwrap();
        let resp = request(&r, BOB, "PUT", &target, Some("application/json"), &body);
        assert_eq!(resp.status, 201, "{resp:?}");
        let unsigned = sha256(&push_image(
            &r,
            ALICE,
            "prod/app",
            "v1",
            "prod",
            b"unsigned prod layer",
        ));
        push_image(&r, ALICE, "alice/x", "v1", "alice", b"alice's own layer");
        Tenants {
            r,
            secret: Secret {
                layer_digest: sha256(&layer),
                layer,
                manifest_digest,
                manifest,
                session,
                signature_id,
            },
            unsigned,
            _keys: keys,
        }
    }

    /// A path of `spec` in `repo`, naming bob's things.
    fn path(&self, spec: &Spec, repo: &str) -> String {
        spec.render(repo, |v| match (spec.kind, v) {
            (Kind::Blob, Var::Digest) => self.secret.layer_digest.clone(),
            (_, Var::Digest) => self.secret.manifest_digest.clone(),
            (_, Var::Reference) => "v1".into(),
            (_, Var::Session) => self.secret.session.clone(),
            (_, Var::SignatureId) => self.secret.signature_id.clone(),
            (_, Var::Job) => "nightly".into(),
        })
    }

    /// A request of `spec` with `method`, with a body where the method takes one.
    fn send(&self, who: Who, spec: &Spec, method: &str, target: &str) -> RawResponse {
        let (content_type, body): (Option<&str>, &[u8]) = match (spec.kind, method) {
            (Kind::Manifest, "PUT") => (Some(OCI_MANIFEST), &self.secret.manifest),
            (Kind::Signatures, "PUT") => (Some("application/json"), b"{}"),
            (Kind::SyncJobs, "POST") => (Some("application/json"), b"{}"),
            (_, "PATCH" | "PUT") => (None, b"appended bytes"),
            _ => (None, b""),
        };
        request(&self.r, who, method, target, content_type, body)
    }

    /// Bob's things are all there, as they were.
    fn assert_bob_intact(&self) {
        let get = |path: &str| request(&self.r, BOB, "GET", path, None, b"");
        let m = get("/v2/bob/secret/manifests/v1");
        assert_eq!(m.status, 200, "{m:?}");
        assert_eq!(m.body, self.secret.manifest);
        let b = get(&format!(
            "/v2/bob/secret/blobs/{}",
            self.secret.layer_digest
        ));
        assert_eq!(b.body, self.secret.layer);
        let s = get(&format!(
            "/extensions/v2/bob/secret/signatures/{}",
            self.secret.manifest_digest
        ));
        assert!(String::from_utf8_lossy(&s.body).contains(&self.secret.signature_id));
        let u = get(&format!(
            "/v2/bob/secret/blobs/uploads/{}",
            self.secret.session
        ));
        assert_eq!(u.status, 204, "bob's upload session is still open: {u:?}");
    }

    /// Whether a response carries anything of bob's.
    fn leaks(&self, resp: &RawResponse) -> bool {
        let signature = B64.encode(b"bob's gpg signature");
        [
            &self.secret.layer[..],
            &self.secret.manifest[..],
            signature.as_bytes(),
        ]
        .iter()
        .any(|needle| resp.body.windows(needle.len()).any(|w| w == *needle))
    }
}

fn repository_specs() -> impl Iterator<Item = &'static Spec> {
    ROUTES.iter().filter(|s| s.has_repository())
}

// ---------------------------------------------------------------------------------
// The route table, every route and method
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn every_route_of_the_table_is_served() {
    let t = Tenants::start();
    for spec in ROUTES {
        for method in methods(spec.kind) {
            let target = t.path(spec, "bob/secret");
            let resp = t.send(ROOT, spec, method, &target);
            let unrouted =
                resp.status == 405 || (resp.status == 404 && resp.error_code() == "UNSUPPORTED");
            assert!(
                !unrouted,
                "{method} {target} ({:?}) is not served: {resp:?}",
                spec.kind
            );
        }
    }
}

#[tokio::test]
async fn anonymous_callers_are_challenged_on_every_route() {
    let t = Tenants::start();
    for spec in ROUTES.iter().filter(|s| !OPEN_KINDS.contains(&s.kind)) {
        for method in methods(spec.kind) {
            let target = t.path(spec, "bob/secret");
            let resp = t.send(Who::Anonymous, spec, method, &target);
            assert_eq!(resp.status, 401, "{method} {target}: {resp:?}");
            assert!(
                resp.header("www-authenticate")
                    .is_some_and(|c| c.starts_with("Bearer realm=")),
                "{method} {target}: {resp:?}"
            );
            assert!(!t.leaks(&resp));
        }
    }
    t.assert_bob_intact();
}

#[tokio::test]
async fn another_tenant_is_refused_on_every_route() {
    let t = Tenants::start();
    for spec in ROUTES {
        for method in methods(spec.kind) {
            let target = t.path(spec, "bob/secret");
            let resp = t.send(ALICE, spec, method, &target);
            assert!(!t.leaks(&resp), "{method} {target} leaks: {resp:?}");
            let expected: &[u16] = match spec.kind {
                _ if spec.has_repository() => &[403, 404],
                Kind::Metrics
                | Kind::SyncJobs
                | Kind::SyncJob
                | Kind::SyncJobRun
                | Kind::SyncJobCancel => &[403],
                // Registry-wide and open routes answer alice; the catalog shows her own.
                _ => continue,
            };
            assert!(
                expected.contains(&resp.status),
                "{method} {target}: {resp:?}"
            );
        }
    }
    let catalog = request(&t.r, ALICE, "GET", "/v2/_catalog", None, b"");
    let listed: Value = serde_json::from_slice(&catalog.body).unwrap();
    assert_eq!(listed["repositories"], json!(["alice/x", "prod/app"]));
    t.assert_bob_intact();
}

// ---------------------------------------------------------------------------------
// Encoding tricks: one reading for the gate, the policy and the handler
// ---------------------------------------------------------------------------------

/// A path rewritten, and whether it still names the same resource.
struct Trick {
    path: String,
    same: bool,
    what: String,
}

/// Every trick on a path: each segment with a character escaped (the same resource),
/// `:` escaped, an escaped or doubled slash in the name, `.` and `..` segments, upper
/// case, a trailing slash.
fn tricks(path: &str, name: &str) -> Vec<Trick> {
    let mut out = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        let Some(first) = segment.chars().next() else {
            continue;
        };
        let mut escaped = segments.clone();
        let replaced = format!("%{:02X}{}", first as u32, &segment[first.len_utf8()..]);
        escaped[i] = &replaced;
        out.push(Trick {
            path: escaped.join("/"),
            same: true,
            what: format!("segment {i} escaped"),
        });
    }
    let lower = |p: String, what: &str, same: bool| Trick {
        path: p,
        same,
        what: what.to_string(),
    };
    if path.contains(':') {
        out.push(lower(path.replace(':', "%3a"), "':' escaped", true));
    }
    let (first, rest) = name.split_once('/').unwrap();
    let swap = |with: &str| path.replacen(name, with, 1);
    out.push(lower(
        swap(&format!("{first}%2F{rest}")),
        "an escaped slash in the name",
        false,
    ));
    out.push(lower(
        swap(&format!("{first}//{rest}")),
        "a doubled slash",
        false,
    ));
    out.push(lower(
        swap(&format!("{first}/./{rest}")),
        "a . segment",
        false,
    ));
    out.push(lower(
        swap(&format!("alice/x/../../{name}")),
        "a .. walk from alice/x",
        false,
    ));
    out.push(lower(
        swap(&format!("{first}/%2e%2e/{name}")),
        "an escaped .. segment",
        false,
    ));
    out.push(lower(
        swap(&name.to_uppercase()),
        "an upper-case name",
        false,
    ));
    if !path.ends_with('/') {
        out.push(lower(format!("{path}/"), "a trailing slash", false));
    }
    out
}

#[tokio::test]
async fn encoding_tricks_never_reach_another_tenant() {
    let t = Tenants::start();
    for spec in repository_specs() {
        let canonical = t.path(spec, "bob/secret");
        for trick in tricks(&canonical, "bob/secret") {
            for method in methods(spec.kind) {
                let resp = t.send(ALICE, spec, method, &trick.path);
                assert!(
                    !(200..400).contains(&resp.status) && !t.leaks(&resp),
                    "alice: {method} {} ({}): {resp:?}",
                    trick.path,
                    trick.what
                );
            }
            // Bob reads his own things through an equivalent path as through the plain
            // one, and gets nothing through one that names something else.
            for method in methods(spec.kind)
                .iter()
                .filter(|m| ["GET", "HEAD"].contains(m))
            {
                let plain = t.send(BOB, spec, method, &canonical);
                let tricked = t.send(BOB, spec, method, &trick.path);
                if trick.same {
                    assert_eq!(
                        (tricked.status, &tricked.body),
                        (plain.status, &plain.body),
                        "bob: {method} {} ({})",
                        trick.path,
                        trick.what
                    );
                } else {
                    assert!(
                        (400..500).contains(&tricked.status),
                        "bob: {method} {} ({}): {tricked:?}",
                        trick.path,
                        trick.what
                    );
                }
            }
        }
        // Every declared query parameter given twice.
        for param in spec.params.iter().filter(|p| !p.many) {
            let target = format!("{canonical}?{0}=a&{0}=b", param.name);
            for who in [ALICE, BOB] {
                for method in methods(spec.kind) {
                    let resp = t.send(who, spec, method, &target);
                    assert!(
                        !(200..300).contains(&resp.status),
                        "{method} {target}: {resp:?}"
                    );
                    assert!(!t.leaks(&resp) || who == BOB);
                }
            }
        }
    }
    t.assert_bob_intact();
}

#[tokio::test]
async fn encoding_tricks_never_serve_an_unsigned_image_under_enforce() {
    let t = Tenants::start();
    let manifest = ROUTES.iter().find(|s| s.kind == Kind::Manifest).unwrap();
    for reference in ["v1".to_string(), t.unsigned.clone()] {
        let canonical = manifest.render("prod/app", |_| reference.clone());
        for trick in tricks(&canonical, "prod/app") {
            let resp = request(&t.r, ALICE, "GET", &trick.path, None, b"");
            if trick.same {
                assert_eq!(
                    resp.status, 403,
                    "{} ({}): {resp:?}",
                    trick.path, trick.what
                );
                assert_eq!(resp.error_code(), "DENIED");
            } else {
                assert!(
                    (400..500).contains(&resp.status),
                    "{} ({}): {resp:?}",
                    trick.path,
                    trick.what
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Cross-repository mounts
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_mount_links_only_from_a_repository_the_caller_may_pull() {
    let t = Tenants::start();
    let bobs = &t.secret.layer_digest;
    let mount = |query: &str| {
        request(
            &t.r,
            ALICE,
            "POST",
            &format!("/v2/alice/x/blobs/uploads/?{query}"),
            None,
            b"",
        )
    };
    // The attack of the first pass: the gate read the first `from`, the handler the last.
    let resp = mount(&format!("mount={bobs}&from=alice/x&from=bob/secret"));
    assert_eq!(
        (resp.status, resp.error_code().as_str()),
        (400, "NAME_INVALID"),
        "{resp:?}"
    );
    let resp = mount(&format!("from=bob/secret&from=alice/x&mount={bobs}"));
    assert_eq!(resp.status, 400, "{resp:?}");
    let resp = mount(&format!("mount={bobs}&mount={bobs}&from=alice/x"));
    assert_eq!(
        (resp.status, resp.error_code().as_str()),
        (400, "DIGEST_INVALID"),
        "{resp:?}"
    );
    // From a repository alice may not pull, and without `from`: an upload session, the
    // same answer whether the digest exists or not.
    let missing = format!("sha256:{}", "e".repeat(64));
    for query in [
        format!("mount={bobs}&from=bob/secret"),
        format!("mount={bobs}&from=bob%2Fsecret"),
        format!("mount={missing}&from=bob/secret"),
        format!("mount={bobs}"),
        format!("%6dount={bobs}&%66rom=bob/secret"),
    ] {
        let resp = mount(&query);
        assert_eq!(resp.status, 202, "{query}: {resp:?}");
    }
    for method in ["GET", "HEAD"] {
        let resp = request(
            &t.r,
            ALICE,
            method,
            &format!("/v2/alice/x/blobs/{bobs}"),
            None,
            b"",
        );
        assert_eq!(resp.status, 404, "{resp:?}");
        assert!(!t.leaks(&resp));
    }
    // Her own blobs mount where she pushes.
    let own = sha256(b"alice's own layer");
    let resp = request(
        &t.r,
        ALICE,
        "POST",
        &format!("/v2/alice/y/blobs/uploads/?mount={own}&from=alice/x"),
        None,
        b"",
    );
    assert_eq!(resp.status, 201, "{resp:?}");
    t.assert_bob_intact();
}
