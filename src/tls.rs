//! TLS for the proxy listener: a rustls `ServerConfig` from PEM files, ALPN `h2` and
//! `http/1.1`, TLS 1.2 and 1.3 only, and certificate reload without dropping connections.
//!
//! Invariants: the certificate in use is swapped atomically ([`Certs::reload`]); a
//! reload that fails (unreadable file, no key, key not matching) keeps the current
//! certificate and says why; connections already established keep their session.
//! Knows no routes and no HTTP.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {file}")]
    Read {
        file: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{file} holds no certificate")]
    NoCertificate { file: PathBuf },
    #[error("{file} holds a private key rustls cannot use")]
    Key {
        file: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS setup failed")]
    Config(#[source] rustls::Error),
}

/// The certificate files and the certificate currently served from them.
#[derive(Debug)]
pub struct Certs {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
}

impl Certs {
    /// Loads the pair now; an error names the file at fault.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let current = ArcSwap::from(load_pair(cert, key)?);
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current,
        })
    }

    /// Reads the files again and serves the new certificate to new handshakes.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.current.store(load_pair(&self.cert, &self.key)?);
        Ok(())
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The crypto provider of every TLS config keygate builds (listener and upstreams): ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect)
        .map_err(|source| TlsError::Read {
            file: cert.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            file: cert.to_owned(),
        });
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Read {
        file: key.to_owned(),
        source,
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|source| TlsError::Key {
            file: key.to_owned(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => Ok(Arc::new(certified)),
        Err(_) => Err(TlsError::Mismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
        }),
    }
}

/// A server config serving `certs`, offering `h2` then `http/1.1`.
pub fn server_config(certs: Arc<Certs>) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
