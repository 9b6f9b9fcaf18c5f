//! Configuration, layered: built-in defaults → TOML file (`--config`) → environment
//! (`SIGNET__SECTION__KEY`) → command-line flags.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub limits: LimitsConfig,
    pub uploads: UploadsConfig,
    pub signatures: SignaturesConfig,
    pub attachments: AttachmentsConfig,
    pub gc: GcConfig,
    pub log: LogConfig,
    pub auth: crate::auth::AuthConfig,
    pub rate_limit: crate::auth::limits::RateLimitConfig,
    pub metrics: MetricsConfig,
    /// Mirroring jobs (`[[sync.jobs]]`), run by `signet sync run <job>`.
    pub sync: crate::sync::SyncConfig,
    /// Trust roots and the signature policy (`[trust]`, `[[trust.roots]]`).
    pub trust: crate::verify::trust::TrustConfig,
    /// Immutable tags (`[[retention.immutable]]`).
    pub retention: crate::retention::RetentionConfig,
    #[serde(default)]
    pub notifications: crate::notify::NotificationsConfig,
    /// The file this configuration was read from (`--config`): what SIGHUP reads again.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `GET /metrics` (Prometheus). With authentication on it needs the admin role unless
/// `public` is true (then anyone who can reach the port can read it: per-route request
/// counts, latencies, byte totals, GC results; no repository names or digests).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub public: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// HTTP worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// Seconds in-flight requests get to finish on SIGTERM/SIGINT.
    pub shutdown_timeout_secs: u64,
    /// Seconds between SIGTERM and the stop: `/readyz` answers 503 and the server still
    /// serves, so load balancers take it out before it stops accepting.
    pub drain_secs: u64,
    /// Certificate and key for HTTPS; none (the default): plain HTTP.
    pub tls: crate::tls::TlsConfig,
}

#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Where the embedded defaults keep their data (SQLite file and blob folder).
    pub data_dir: PathBuf,
    /// Metadata database URL; empty means `sqlite://<data_dir>/signet.db`.
    pub metadata_url: String,
    /// Blob folder; empty means `<data_dir>/blobs`.
    pub blob_dir: String,
    /// Blobs in an S3-compatible bucket instead of `blob_dir`: on when `bucket` is set.
    /// Replicas sharing one bucket and one PostgreSQL database serve the same registry.
    pub s3: signet_storage::S3Config,
    /// What a cached answer promises between replicas on PostgreSQL. `read-after-write`:
    /// a write one replica acknowledged is served by every other at once (each cached
    /// answer waits for one small read of the database's change counters, shared by all
    /// requests that arrive meanwhile). `bounded`: served within 1 s, with no database
    /// round trip on a cached answer. One process, or SQLite, is always exact.
    pub replica_consistency: ReplicaConsistency,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicaConsistency {
    #[default]
    ReadAfterWrite,
    Bounded,
}

/// The metadata URL may carry a database password: it never shows in `Debug` output.
impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field("data_dir", &self.data_dir)
            .field("metadata_url", &redact_password(&self.metadata_url))
            .field("blob_dir", &self.blob_dir)
            // Its `Debug` redacts the secret key.
            .field("s3", &self.s3)
            .field("replica_consistency", &self.replica_consistency)
            .finish_non_exhaustive()
    }
}

/// `scheme://user:password@host/...` with the password replaced by `***`.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest manifest accepted, in bytes (413 above).
    pub max_manifest_bytes: usize,
    /// Most `?tag=` values one manifest PUT by digest may carry (414 above).
    pub max_tags_per_push: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UploadsConfig {
    /// Sessions idle this long are closed and their staged bytes removed.
    pub expire_after_secs: u64,
    /// How often idle sessions are looked for.
    pub expiry_interval_secs: u64,
    /// Advertised as `OCI-Chunk-Min-Length`: clients that honour it send fewer, larger
    /// chunks (each chunk is one staged object).
    pub chunk_min_length: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SignaturesConfig {
    /// Largest atomic signature accepted through the signatures extension, in bytes.
    pub max_content_bytes: usize,
}

impl Default for SignaturesConfig {
    fn default() -> Self {
        Self {
            max_content_bytes: 256 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AttachmentsConfig {
    /// Deleting a manifest deletes its attachments (signatures, attestations, SBOMs,
    /// referrers), recursively. `false` keeps them.
    pub delete_with_subject: bool,
    /// The referrers API also lists cosign's tag attachments (`sha256-<hex>.sig` ...),
    /// with cosign's artifact types. `false` gives the spec's strict behaviour.
    pub tag_attachments_in_referrers: bool,
}

impl Default for AttachmentsConfig {
    fn default() -> Self {
        Self {
            delete_with_subject: true,
            tag_attachments_in_referrers: true,
        }
    }
}

/// Garbage collection (`signet gc`, and on a schedule inside `signet serve`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// Seconds between scheduled collections in the server; 0 turns the schedule off
    /// (`signet gc` still works).
    pub interval_secs: u64,
    /// Manifests, blob links and blobs pushed (or pushed again) this recently are never
    /// collected. It must exceed the longest push (blobs first, manifest last): a blob
    /// collected between the two makes the manifest PUT fail with MANIFEST_BLOB_UNKNOWN.
    pub grace_secs: u64,
    /// Collect manifests no tag reaches (through index children and attachments).
    pub delete_untagged: bool,
    /// Seconds a collector's lease lasts between renewals. One that is killed blocks
    /// the next collection until its lease lapses; a single replica can shorten this.
    pub lease_secs: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        Self {
            interval_secs: 24 * 3600,
            grace_secs: 3600,
            delete_untagged: false,
            lease_secs: signet_storage::gc::DEFAULT_LEASE_SECS,
        }
    }
}

impl GcConfig {
    /// The storage options for one collection under this configuration.
    pub fn options(&self, config: &Config, dry_run: bool) -> signet_storage::gc::GcOptions {
        signet_storage::gc::GcOptions {
            grace_secs: self.grace_secs,
            delete_untagged: self.delete_untagged,
            attachments_follow_subject: config.attachments.delete_with_subject,
            dry_run,
            expire_uploads_after_secs: Some(config.uploads.expire_after_secs),
            lease_secs: self.lease_secs,
            round: signet_storage::gc::ROUND,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `signet_server=debug,info`.
    pub level: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:5000".into(),
            workers: 0,
            shutdown_timeout_secs: 30,
            drain_secs: 5,
            tls: Default::default(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./signet-data"),
            metadata_url: String::new(),
            blob_dir: String::new(),
            s3: Default::default(),
            replica_consistency: ReplicaConsistency::default(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_manifest_bytes: 4 * 1024 * 1024,
            max_tags_per_push: 100,
        }
    }
}

impl Default for UploadsConfig {
    fn default() -> Self {
        Self {
            expire_after_secs: 24 * 3600,
            expiry_interval_secs: 600,
            chunk_min_length: 1024 * 1024,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

impl StorageConfig {
    pub fn metadata_url(&self) -> String {
        if self.metadata_url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("signet.db").display())
        } else {
            self.metadata_url.clone()
        }
    }

    pub fn blob_dir(&self) -> PathBuf {
        if self.blob_dir.is_empty() {
            self.data_dir.join("blobs")
        } else {
            PathBuf::from(&self.blob_dir)
        }
    }
}

/// Values given on the command line; they override every other layer.
#[derive(Debug, Default, Serialize)]
pub struct CliOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Builds the configuration from every layer.
    pub fn load(file: Option<&Path>, cli: &CliOverrides) -> Result<Config, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(Box::new(figment::Error::from(format!(
                    "configuration file {} does not exist",
                    file.display()
                ))));
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Env::prefixed("SIGNET__").split("__").lowercase(true));
        if let Some(listen) = &cli.listen {
            figment = figment.merge(Serialized::default("server.listen", listen));
        }
        if let Some(dir) = &cli.data_dir {
            figment = figment.merge(Serialized::default("storage.data_dir", dir));
        }
        let mut config: Config = figment.extract().map_err(Box::new)?;
        config.source = file.map(Path::to_path_buf);
        Ok(config)
    }

    /// The configuration as TOML, every credential redacted: the database password, the
    /// S3 secret, password and token hashes, upstream passwords and keys.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        shown.auth.redact();
        shown.storage.metadata_url = redact_password(&shown.storage.metadata_url);
        if !shown.storage.s3.secret_access_key.is_empty() {
            shown.storage.s3.secret_access_key = "***".into();
        }
        shown.sync.redact();
        // Endpoint headers carry tokens (an Authorization header); secrets are never
        // serialized at all.
        for endpoint in &mut shown.notifications.endpoints {
            endpoint.url = endpoint.shown_url();
            for value in endpoint.headers.values_mut() {
                *value = "***".into();
            }
        }
        toml::to_string_pretty(&shown).expect("the configuration always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_toml() {
        let text = Config::default().to_toml();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, Config::default());
    }

    #[test]
    // figment's own test jail returns its (large) error type.
    #[allow(clippy::result_large_err)]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("signet.toml");
        std::fs::write(
            &file,
            "[server]\nlisten = \"127.0.0.1:7000\"\n[limits]\nmax_manifest_bytes = 1000\n",
        )
        .unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("SIGNET__LIMITS__MAX_MANIFEST_BYTES", "2000");
            let cfg = Config::load(Some(&file), &CliOverrides::default()).unwrap();
            assert_eq!(cfg.server.listen, "127.0.0.1:7000");
            assert_eq!(cfg.limits.max_manifest_bytes, 2000);
            let cli = CliOverrides {
                listen: Some("127.0.0.1:0".into()),
                data_dir: Some("/tmp/x".into()),
            };
            let cfg = Config::load(Some(&file), &cli).unwrap();
            assert_eq!(cfg.server.listen, "127.0.0.1:0");
            assert_eq!(cfg.storage.metadata_url(), "sqlite:///tmp/x/signet.db");
            Ok(())
        });
    }

    #[test]
    fn the_readme_retention_example_loads() {
        let readme = include_str!("../../README.md");
        let section = &readme[readme.find("### Retention rules").expect("the section")..];
        let start = section.find("```toml\n").expect("its example") + "```toml\n".len();
        let example = &section[start..start + section[start..].find("```").unwrap()];
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("signet.toml");
        std::fs::write(&file, example).unwrap();
        let cfg = Config::load(Some(&file), &CliOverrides::default()).unwrap();
        let names: Vec<&str> = cfg
            .retention
            .rules
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(
            names,
            ["last-ten", "releases", "signed", "untagged-after-a-week"]
        );
        assert_eq!(
            cfg.retention.rules[0].keep,
            crate::retention::Keep::MostRecentlyPushed(10)
        );
        assert_eq!(cfg.retention.rules[1].keep, crate::retention::Keep::Always);
        assert!(cfg.retention.rules[3].selects_untagged());
        assert_eq!(cfg.retention.interval_secs, 86_400);
    }

    #[test]
    fn the_readme_notifications_example_loads() {
        let readme = include_str!("../../README.md");
        let section = &readme[readme.find("## Notifications").expect("the section")..];
        let start = section.find("```toml\n").expect("its example") + "```toml\n".len();
        let example = &section[start..start + section[start..].find("```").unwrap()];
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("signet.toml");
        std::fs::write(&file, example).unwrap();
        let config = Config::load(Some(&file), &CliOverrides::default()).unwrap();
        config.notifications.validate().unwrap();
        let names: Vec<&str> = config
            .notifications
            .endpoints
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(names, ["deployer", "legacy-audit"]);
        assert_eq!(
            config.notifications.endpoints[1].format,
            crate::notify::Format::Distribution
        );
        assert_eq!(config.notifications.max_attempts, 8);
        let shown = config.to_toml();
        assert!(!shown.contains("3xampl3"), "{shown}");
    }

    #[test]
    fn database_passwords_are_never_shown() {
        assert_eq!(
            redact_password("postgres://signet:s3cret@db:5432/signet"),
            "postgres://signet:***@db:5432/signet"
        );
        assert_eq!(
            redact_password("postgres://signet@db/x"),
            "postgres://signet@db/x"
        );
        assert_eq!(redact_password("sqlite://./a.db"), "sqlite://./a.db");
        let mut config = Config::default();
        config.storage.metadata_url = "postgres://u:s3cret@127.0.0.1/p".into();
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(!config.to_toml().contains("s3cret"));
    }

    #[test]
    fn s3_secrets_are_never_shown() {
        let mut config = Config::default();
        config.storage.s3.bucket = "b".into();
        config.storage.s3.secret_access_key = "s3cret".into();
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(!config.to_toml().contains("s3cret"));
    }

    #[test]
    fn password_and_token_hashes_are_never_shown() {
        let mut config = Config::default();
        config.auth.users.push(crate::auth::config::UserConfig {
            name: "alice".into(),
            password_bcrypt: crate::auth::Secret::new("$2y$05$bcrypthashbcrypthash"),
        });
        config.auth.robots.push(crate::auth::config::RobotConfig {
            name: "ci".into(),
            token_sha256: crate::auth::Secret::new("ab".repeat(32)),
        });
        let shown = config.to_toml();
        assert!(shown.contains("alice") && shown.contains("ci"), "{shown}");
        assert!(!shown.contains("bcrypthash"), "{shown}");
        assert!(!shown.contains(&"ab".repeat(32)), "{shown}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("signet.toml");
        std::fs::write(&file, "[server]\nlisen = \"x\"\n").unwrap();
        assert!(Config::load(Some(&file), &CliOverrides::default()).is_err());
    }
}
