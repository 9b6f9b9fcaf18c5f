//! GPG "simple signing" fixtures shared by the tests that drive skopeo and podman with
//! real keys: a throwaway keyring, exported public keys and containers-policy files.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::{require_tool, run};

/// A throwaway GPG home under `dir` with one key for `name`; its fingerprint.
pub struct GpgKey {
    pub home: PathBuf,
    pub fingerprint: String,
}

impl GpgKey {
    pub fn generate(dir: &Path, name: &str) -> GpgKey {
        require_tool("gpg");
        let home = dir.join(format!("gnupg-{name}"));
        std::fs::create_dir_all(&home).unwrap();
        run(Command::new("gpg")
            .env("GNUPGHOME", &home)
            .args(["--batch", "--passphrase", "", "--quick-gen-key"])
            .arg(format!("{name} <{name}@example.com>"))
            .args(["default", "default", "never"]));
        let listing = run(Command::new("gpg")
            .env("GNUPGHOME", &home)
            .args(["--list-keys", "--with-colons"]));
        let fingerprint = listing
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .expect("fingerprint")
            .to_string();
        GpgKey { home, fingerprint }
    }

    /// Writes the public key to `to`, armored or binary.
    pub fn export(&self, to: &Path, armor: bool) {
        let mut cmd = Command::new("gpg");
        cmd.env("GNUPGHOME", &self.home).arg("--export");
        if armor {
            cmd.arg("--armor");
        }
        let out = cmd.arg(&self.fingerprint).output().unwrap();
        assert!(out.status.success(), "gpg --export");
        std::fs::write(to, out.stdout).unwrap();
    }
}

impl GpgKey {
    /// `skopeo copy --sign-by` this key from `from` to `to` (transport-prefixed
    /// references; destinations over plain HTTP), with `registries_d` when given (a
    /// lookaside store, say).
    pub fn skopeo_sign(&self, dir: &Path, registries_d: Option<&Path>, from: &str, to: &str) {
        require_tool("skopeo");
        let mut cmd = Command::new("skopeo");
        cmd.env("GNUPGHOME", &self.home);
        if let Some(d) = registries_d {
            cmd.arg("--registries.d").arg(d);
        }
        run(cmd
            .arg("--policy")
            .arg(accept_anything_policy(dir))
            .args(["copy", "--dest-tls-verify=false", "--sign-by"])
            .arg(&self.fingerprint)
            .arg(from)
            .arg(to));
    }
}

/// A containers policy accepting anything (for copies that sign or that only move).
pub fn accept_anything_policy(dir: &Path) -> PathBuf {
    let path = dir.join("policy-any.json");
    std::fs::write(&path, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
    path
}

/// A containers policy requiring a signature by `key` for images of `scope` (a
/// `HOST/repo`), signed for the repository `identity`.
pub fn signed_by_policy(
    dir: &Path,
    name: &str,
    scope: &str,
    key: &Path,
    identity: &str,
) -> PathBuf {
    let policy = json!({
        "default": [{"type": "reject"}],
        "transports": {
            "docker": {
                scope: [{
                    "type": "signedBy",
                    "keyType": "GPGKeys",
                    "keyPath": key,
                    "signedIdentity": {"type": "exactRepository", "dockerRepository": identity},
                }]
            },
            "oci": {"": [{"type": "insecureAcceptAnything"}]},
            "dir": {"": [{"type": "insecureAcceptAnything"}]},
        }
    });
    let path = dir.join(format!("policy-{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&policy).unwrap()).unwrap();
    path
}

/// An OCI layout under `dir` holding one small image tagged `v1`, built with umoci.
pub fn oci_layout(dir: &Path) -> PathBuf {
    require_tool("umoci");
    let layout = dir.join("layout");
    let l = layout.to_str().unwrap();
    run(Command::new("umoci").args(["init", "--layout", l]));
    run(Command::new("umoci").args(["new", "--image", &format!("{l}:v1")]));
    let file = dir.join("payload.txt");
    std::fs::write(&file, format!("{:?}", std::time::SystemTime::now())).unwrap();
    run(Command::new("umoci").args([
        "insert",
        "--image",
        &format!("{l}:v1"),
        file.to_str().unwrap(),
        "/payload.txt",
    ]));
    layout
}

/// `skopeo copy` of `image` (`HOST/repo:tag`, plain HTTP) into a `dir:` folder under
/// `policy`, signatures not kept.
pub fn skopeo_pull(policy: &Path, image: &str, dest: &Path) -> std::process::Output {
    require_tool("skopeo");
    Command::new("skopeo")
        .arg("--policy")
        .arg(policy)
        .args(["copy", "--src-tls-verify=false", "--remove-signatures"])
        .arg(format!("docker://{image}"))
        .arg(format!("dir:{}", dest.display()))
        .output()
        .unwrap()
}
