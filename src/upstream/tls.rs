//! rustls client configs for `https://` targets: the CA to trust (a PEM file, else the
//! system trust store), an optional client certificate (mTLS), and the name verified.
//!
//! Invariants: the crypto provider is the listener's ([`crate::tls::provider`]); TLS 1.2 and
//! 1.3 only; ALPN offers `http/1.1` (keygate speaks HTTP/1.1 upstream); certificate and name
//! are verified unless `tls.insecure_skip_verify` is set, and then the handshake's
//! signatures are still checked (only the chain and name are not).
//!
//! Why `rustls-native-certs` for the system store, not `webpki-roots`: the config promises
//! "the system trust store", which is where an operator adds a company CA (the
//! `ca-certificates` bundle, `SSL_CERT_FILE`); a compiled-in Mozilla list would ignore it.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::UpstreamTls;
use crate::tls::TlsError;

/// Why an upstream's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    #[error(transparent)]
    Files(#[from] TlsError),
    #[error("the system trust store holds no usable CA certificate; set `tls.ca` to a PEM file")]
    NoSystemRoots,
    #[error("{file} holds no CA certificate rustls can use")]
    BadCa {
        file: std::path::PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// The client config for one upstream's `https://` targets.
pub fn client_config(tls: &UpstreamTls) -> Result<Arc<ClientConfig>, UpstreamTlsError> {
    let provider = crate::tls::provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    } else {
        builder.with_root_certificates(roots(tls.ca.as_deref())?)
    };
    let mut config = match &tls.client_auth {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let (chain, key_der) = client_pair(cert, key)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|source| TlsError::Key {
                    file: key.clone(),
                    source,
                })?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The CA certificates of `ca`, or of the system trust store.
fn roots(ca: Option<&Path>) -> Result<RootCertStore, UpstreamTlsError> {
    let mut store = RootCertStore::empty();
    let Some(file) = ca else {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "a certificate of the system trust store could not be read");
        }
        store.add_parsable_certificates(found.certs);
        if store.is_empty() {
            return Err(UpstreamTlsError::NoSystemRoots);
        }
        return Ok(store);
    };
    for cert in read_certs(file)? {
        store.add(cert).map_err(|source| UpstreamTlsError::BadCa {
            file: file.to_owned(),
            source,
        })?;
    }
    Ok(store)
}

fn read_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
        .and_then(Iterator::collect)
        .map_err(|source| TlsError::Read {
            file: file.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            file: file.to_owned(),
        });
    }
    Ok(certs)
}

fn client_pair(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = read_certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Read {
        file: key.to_owned(),
        source,
    })?;
    Ok((chain, key_der))
}

/// `tls.insecure_skip_verify: true`: any certificate, any name; signatures still checked.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
