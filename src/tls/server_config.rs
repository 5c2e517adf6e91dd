//! Building a rustls `ServerConfig` from the PEM files a `[tls]` table
//! names: TLS 1.2 and 1.3 only, ring as the provider, client certificates
//! asked for and checked as `verify_peer` and `fail_if_no_peer_cert` say.
//! Reads files, so it runs on a blocking thread (see `super::Reloadable`).

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;

/// Read the files and build the config; the error names the key of the
/// file at fault under `table` (e.g. `tls.cert_file`).
pub fn build(files: &TlsFiles, table: &str) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key_err = |key: &str, why: String| format!("invalid value for `{table}.{key}`: {why}");
    let chain = certificates(&files.cert_file).map_err(|e| key_err("cert_file", e))?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| {
        key_err(
            "key_file",
            format!("{}: no private key read ({e})", files.key_file.display()),
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let builder = if files.verify_peer {
        let mut roots = RootCertStore::empty();
        let cas = certificates(&files.ca_file).map_err(|e| key_err("ca_file", e))?;
        for ca in cas {
            roots
                .add(ca)
                .map_err(|e| key_err("ca_file", format!("{}: {e}", files.ca_file.display())))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = if files.fail_if_no_peer_cert {
            verifier
        } else {
            verifier.allow_unauthenticated()
        };
        let verifier = verifier
            .build()
            .map_err(|e| key_err("ca_file", e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    builder
        .with_single_cert(chain, key)
        .map_err(|e| key_err("key_file", format!("does not fit the certificate: {e}")))
}

/// Every certificate in a PEM file; an error if there is none.
fn certificates(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}
