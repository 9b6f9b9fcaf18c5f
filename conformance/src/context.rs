//! What every check gets: the registry, this run's names, what the registry
//! advertises, shared scenarios, and a record of what to clean up.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Result};
use tokio::sync::OnceCell;

use crate::checks;
use crate::client::{Registry, Resp};
use crate::fixtures::{Blob, Image, Manifest};

/// The five areas a check belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Area {
    Pull,
    Push,
    Discovery,
    Management,
    Clients,
}

impl Area {
    pub const ALL: [Area; 5] = [
        Area::Pull,
        Area::Push,
        Area::Discovery,
        Area::Management,
        Area::Clients,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Area::Pull => "pull",
            Area::Push => "push",
            Area::Discovery => "discovery",
            Area::Management => "management",
            Area::Clients => "clients",
        }
    }

    pub fn parse(s: &str) -> Option<Area> {
        Area::ALL.into_iter().find(|a| a.name() == s)
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

pub type CheckFuture = Pin<Box<dyn Future<Output = Result<()>>>>;

/// A named check. Its id is `<area>.<name>`; it passes when `run` returns
/// `Ok`, fails with the error's one-line message, or skips with [`Skip`].
pub struct Check {
    pub area: Area,
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(Arc<Ctx>) -> CheckFuture,
}

impl Check {
    pub fn id(&self) -> String {
        format!("{}.{}", self.area, self.name)
    }
}

/// Declares a [`Check`] from an `async fn(&Ctx) -> Result<()>`.
#[macro_export]
macro_rules! check {
    ($area:expr, $name:literal, $about:literal, $f:path) => {
        $crate::context::Check {
            area: $area,
            name: $name,
            about: $about,
            run: |c: std::sync::Arc<$crate::context::Ctx>| Box::pin(async move { $f(&c).await }),
        }
    };
}

/// Returned (as an error) by a check whose feature the registry does not offer.
#[derive(Debug)]
pub struct Skip(pub String);

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Skip {}

pub fn skip(reason: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Skip(reason.into()))
}

/// Features the registry advertises on `GET /v2/`.
#[derive(Debug, Clone, Default)]
pub struct Features {
    pub signatures_extension: bool,
}

enum Pushed {
    Manifest { repo: String, digest: String },
    Blob { repo: String, digest: String },
}

pub struct Ctx {
    pub reg: Registry,
    /// `<namespace>/<run id>`: every repository of this run starts with it.
    pub prefix: String,
    pub features: Features,
    pub pull: checks::pull::State,
    pub push: checks::push::State,
    pub discovery: checks::discovery::State,
    pub management: checks::management::State,
    pub clients: checks::clients::State,
    pushed: Mutex<Vec<Pushed>>,
}

const SKIP_MARK: &str = "skip: ";

/// Runs a shared scenario once; later callers get the same outcome.
pub async fn once<T, F, Fut>(cell: &OnceCell<Result<Arc<T>, String>>, f: F) -> Result<Arc<T>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let r = cell
        .get_or_init(|| async {
            f().await
                .map(Arc::new)
                .map_err(|e| match e.downcast_ref::<Skip>() {
                    Some(s) => format!("{SKIP_MARK}{s}"),
                    None => format!("{e:#}"),
                })
        })
        .await;
    r.clone().map_err(|e| match e.strip_prefix(SKIP_MARK) {
        Some(reason) => skip(reason),
        None => anyhow!("scenario setup failed: {e}"),
    })
}

impl Ctx {
    pub fn new(reg: Registry, prefix: String, features: Features) -> Self {
        Self {
            reg,
            prefix,
            features,
            pull: Default::default(),
            push: Default::default(),
            discovery: Default::default(),
            management: Default::default(),
            clients: Default::default(),
            pushed: Mutex::new(Vec::new()),
        }
    }

    /// A repository name of this run, e.g. `conformance/1a2b3c4d/pull`.
    pub fn repo(&self, purpose: &str) -> String {
        format!("{}/{purpose}", self.prefix)
    }

    pub fn remember_manifest(&self, repo: &str, digest: &str) {
        self.pushed.lock().expect("lock").push(Pushed::Manifest {
            repo: repo.to_owned(),
            digest: digest.to_owned(),
        });
    }

    pub fn remember_blob(&self, repo: &str, digest: &str) {
        self.pushed.lock().expect("lock").push(Pushed::Blob {
            repo: repo.to_owned(),
            digest: digest.to_owned(),
        });
    }

    /// Pushes a blob (POST + PUT ?digest=), failing unless 201.
    pub async fn push_blob(&self, repo: &str, blob: &Blob) -> Result<()> {
        let r = self
            .reg
            .push_blob_digest(repo, &blob.data, &blob.digest)
            .await?;
        self.remember_blob(repo, &blob.digest);
        r.expect(&format!("push blob {}", short(&blob.digest)), &[201])?;
        Ok(())
    }

    /// PUTs a manifest under `reference` (tag or digest) and returns the response.
    pub async fn put_manifest(&self, repo: &str, reference: &str, m: &Manifest) -> Result<Resp> {
        let r = self
            .reg
            .put_manifest_raw(repo, reference, &m.media_type, m.bytes.clone())
            .await?;
        if (200..300).contains(&r.status) {
            self.remember_manifest(repo, &m.digest);
        }
        Ok(r)
    }

    /// PUTs a manifest and fails unless the registry answers 201.
    pub async fn push_manifest(&self, repo: &str, reference: &str, m: &Manifest) -> Result<Resp> {
        let r = self.put_manifest(repo, reference, m).await?;
        r.expect(&format!("PUT manifest {reference}"), &[201])?;
        Ok(r)
    }

    /// Pushes an image's blobs and its manifest under `reference`.
    pub async fn push_image(&self, repo: &str, reference: &str, img: &Image) -> Result<Resp> {
        for b in img.blobs() {
            self.push_blob(repo, b).await?;
        }
        self.push_manifest(repo, reference, &img.manifest).await
    }

    /// Best-effort removal of everything this run pushed: manifests first
    /// (newest first, so referrers and indexes go before what they name),
    /// then blobs. Returns (deleted, attempted).
    pub async fn cleanup(&self) -> (usize, usize) {
        let pushed = std::mem::take(&mut *self.pushed.lock().expect("lock"));
        let mut manifests: Vec<(String, String)> = Vec::new();
        let mut blobs: Vec<(String, String)> = Vec::new();
        for p in pushed.into_iter().rev() {
            match p {
                Pushed::Manifest { repo, digest } => manifests.push((repo, digest)),
                Pushed::Blob { repo, digest } => blobs.push((repo, digest)),
            }
        }
        let mut seen = std::collections::HashSet::new();
        let (mut ok, mut tried) = (0, 0);
        for (kind, list) in [("manifests", manifests), ("blobs", blobs)] {
            for (repo, digest) in list {
                if !seen.insert((kind, repo.clone(), digest.clone())) {
                    continue;
                }
                tried += 1;
                if let Ok(r) = self.reg.delete(&format!("v2/{repo}/{kind}/{digest}")).await {
                    // 404: already gone (a check deleted it) - that is fine too.
                    if r.status == 202 || r.status == 404 {
                        ok += 1;
                    }
                }
            }
        }
        (ok, tried)
    }
}

/// `sha256:0123456789ab` - enough of a digest for a message.
pub fn short(digest: &str) -> &str {
    let end = digest.find(':').map(|i| i + 13).unwrap_or(12);
    &digest[..end.min(digest.len())]
}
