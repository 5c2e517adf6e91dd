//! TLS for `amqps://` URLs: a rustls client config trusting the CA file
//! given with `--tls-ca` (the broker's certificate must name the URL's host).

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::client::Result;

/// A client config trusting the certificates in `ca_file` (PEM).
pub fn client_config(ca_file: &str) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file).map_err(|e| format!("{ca_file}: {e}"))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{ca_file}: {e}"))?;
        roots.add(cert).map_err(|e| format!("{ca_file}: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
