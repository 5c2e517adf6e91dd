//! Certificates for the TLS tests, made with rcgen at test time: a CA, a
//! server certificate for 127.0.0.1 and localhost, client certificates
//! (valid, expired, from another CA), written as PEM files into a
//! directory the broker's `[tls]` table points at; and a lapin connection
//! over TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Connection, ConnectionProperties};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate authority that signs test certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, PEM.
    pub pem: String,
}

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct Pair {
    pub cert: String,
    pub key: String,
}

impl Ca {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&self) -> Pair {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate whose subject's CN is `cn`.
    pub fn client(&self, cn: &str) -> Pair {
        self.client_valid(cn, (2020, 1, 1), (4000, 1, 1))
    }

    /// A client certificate that expired in 2021.
    pub fn expired_client(&self, cn: &str) -> Pair {
        self.client_valid(cn, (2020, 1, 1), (2021, 1, 1))
    }

    fn client_valid(&self, cn: &str, from: (i32, u8, u8), to: (i32, u8, u8)) -> Pair {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Warren tests");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Pair {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// The PEM files a broker's `[tls]` table names.
pub struct Files {
    pub dir: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
}

impl Files {
    /// Write `server` and `ca_pem` (the CAs clients must chain to) into `dir`.
    pub fn write(dir: &Path, server: &Pair, ca_pem: &str) -> Files {
        std::fs::create_dir_all(dir).unwrap();
        let files = Files {
            dir: dir.to_path_buf(),
            cert_file: dir.join("server.pem"),
            key_file: dir.join("server.key"),
            ca_file: dir.join("ca.pem"),
        };
        files.replace(server, ca_pem);
        files
    }

    /// Overwrite the files (for a reload).
    pub fn replace(&self, server: &Pair, ca_pem: &str) {
        std::fs::write(&self.cert_file, &server.cert).unwrap();
        std::fs::write(&self.key_file, &server.key).unwrap();
        std::fs::write(&self.ca_file, ca_pem).unwrap();
    }

    /// Set a config's `[tls]` to these files (port 0, peer verification as
    /// given).
    pub fn configure(&self, cfg: &mut warren::Config, verify_peer: bool, fail_if_no_cert: bool) {
        let f = &mut cfg.tls.files;
        f.cert_file = self.cert_file.clone();
        f.key_file = self.key_file.clone();
        f.ca_file = self.ca_file.clone();
        f.verify_peer = verify_peer;
        f.fail_if_no_peer_cert = fail_if_no_cert;
        cfg.tls.listener.port = 0;
    }
}

/// lapin over TLS to `url` (amqps://...), trusting `ca_pem`, presenting
/// `identity` if given.
pub async fn connect(
    url: &str,
    ca_pem: &str,
    identity: Option<&Pair>,
) -> lapin::Result<Connection> {
    let config = OwnedTLSConfig {
        identity: identity.map(|p| OwnedIdentity::PKCS8 {
            pem: p.cert.clone().into_bytes(),
            key: p.key.clone().into_bytes(),
        }),
        cert_chain: Some(ca_pem.to_string()),
    };
    let runtime = lapin::runtime::default_runtime().unwrap();
    Connection::connect_with_config(url, ConnectionProperties::default(), config, runtime).await
}

/// A rustls client config trusting `ca_pem`, presenting `identity`.
pub fn client_config(ca_pem: &str, identity: Option<&Pair>) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match identity {
        None => builder.with_no_client_auth(),
        Some(p) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(p.cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(p.key.as_bytes()).unwrap(),
            )
            .unwrap(),
    })
}
