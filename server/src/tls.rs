//! TLS with rustls on aws-lc-rs (the one crypto provider in the process): a certificate
//! chain and key from PEM files, reloaded on SIGHUP and when either file changes, so a
//! renewed certificate takes effect without a restart. A reload that fails keeps the
//! certificate in use and logs why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// `[server.tls]`: both empty (the default) serves plain HTTP.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// How often the files are checked for changes; 0: only on SIGHUP.
    pub reload_check_secs: u64,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert.is_empty() || !self.key.is_empty()
    }
}

/// The process-wide provider: aws-lc-rs. Installing it explicitly keeps rustls from
/// guessing (and panicking) should another provider ever be linked in.
pub fn provider() -> Arc<CryptoProvider> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// Serves whatever certificate was loaded last.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    stamp: RwLock<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("[server.tls] cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("[server.tls] cert {}: no certificate", cert.display());
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("[server.tls] key {}: {e}", key.display()))?;
    let certified = CertifiedKey::from_der(chain, key_der, provider)
        .map_err(|e| anyhow::anyhow!("[server.tls] certificate and key: {e}"))?;
    Ok(certified)
}

impl ReloadingCert {
    pub fn open(config: &TlsConfig, provider: Arc<CryptoProvider>) -> anyhow::Result<Arc<Self>> {
        if config.cert.is_empty() || config.key.is_empty() {
            anyhow::bail!("[server.tls] needs both cert and key");
        }
        let (cert, key) = (PathBuf::from(&config.cert), PathBuf::from(&config.key));
        let stamp = (modified(&cert), modified(&key));
        let certified = load(&cert, &key, &provider)?;
        Ok(Arc::new(ReloadingCert {
            cert,
            key,
            provider,
            current: RwLock::new(Arc::new(certified)),
            stamp: RwLock::new(stamp),
        }))
    }

    /// Loads the files again; on failure the old certificate stays.
    pub fn reload(&self, why: &str) {
        let stamp = (modified(&self.cert), modified(&self.key));
        match load(&self.cert, &self.key, &self.provider) {
            Ok(certified) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(certified);
                *self.stamp.write().unwrap_or_else(|e| e.into_inner()) = stamp;
                tracing::info!(cert = %self.cert.display(), why, "TLS certificate reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %e, why, "TLS certificate reload failed; keeping the current one")
            }
        }
    }

    fn changed(&self) -> bool {
        let now = (modified(&self.cert), modified(&self.key));
        *self.stamp.read().unwrap_or_else(|e| e.into_inner()) != now
    }

    /// The rustls server configuration (HTTP/1.1 and h2 are negotiated by actix).
    pub fn server_config(self: &Arc<Self>) -> anyhow::Result<rustls::ServerConfig> {
        let config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        Ok(config)
    }

    /// Reloads on SIGHUP and, every `check_secs`, when a file changed.
    pub fn watch(self: &Arc<Self>, check_secs: u64) {
        let this = self.clone();
        actix_web::rt::spawn(async move {
            let Ok(mut hangup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                tracing::warn!("cannot listen for SIGHUP; TLS reload on change only");
                return;
            };
            while hangup.recv().await.is_some() {
                this.reload("SIGHUP");
            }
        });
        if check_secs == 0 {
            return;
        }
        let this = self.clone();
        actix_web::rt::spawn(async move {
            let mut ticker = actix_web::rt::time::interval(Duration::from_secs(check_secs));
            loop {
                ticker.tick().await;
                if this.changed() {
                    this.reload("files changed");
                }
            }
        });
    }
}
