//! The `[tls]` and `[management.tls]` tables: where certificates live and
//! how peers are verified, with RabbitMQ's meanings of `verify_peer` and
//! `fail_if_no_peer_cert`. Checking the files themselves is left to
//! `crate::tls`, which reads them at boot and on SIGHUP.

use std::path::PathBuf;

use serde::Deserialize;

/// Certificate files and peer verification, shared by every TLS listener.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM: the server's certificate, then any intermediates.
    pub cert_file: PathBuf,
    /// PEM: the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM: the CAs a client certificate must chain to.
    pub ca_file: PathBuf,
    /// Ask clients for a certificate and verify any they send.
    pub verify_peer: bool,
    /// With `verify_peer`: refuse clients that send no certificate.
    pub fail_if_no_peer_cert: bool,
    /// Time a client has to finish the TLS handshake, milliseconds.
    pub handshake_timeout_ms: u64,
}

impl Default for TlsFiles {
    fn default() -> Self {
        TlsFiles {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            ca_file: PathBuf::new(),
            verify_peer: false,
            fail_if_no_peer_cert: false,
            // RabbitMQ's ssl_handshake_timeout.
            handshake_timeout_ms: 5000,
        }
    }
}

impl TlsFiles {
    /// Whether a certificate is configured, which turns the listener on.
    pub fn enabled(&self) -> bool {
        !self.cert_file.as_os_str().is_empty()
    }

    /// Check the settings' consistency; the error names the key under
    /// `table` (e.g. `tls`).
    pub fn validate(&self, table: &str) -> Result<(), String> {
        let key = |k: &str| format!("invalid value for `{table}.{k}`");
        if !self.enabled() {
            return if self.key_file.as_os_str().is_empty() {
                Ok(())
            } else {
                Err(format!("{}: key_file needs cert_file", key("cert_file")))
            };
        }
        if self.key_file.as_os_str().is_empty() {
            return Err(format!("{}: cert_file needs key_file", key("key_file")));
        }
        if self.verify_peer && self.ca_file.as_os_str().is_empty() {
            return Err(format!(
                "{}: verify_peer needs the CAs to verify against",
                key("ca_file")
            ));
        }
        if self.fail_if_no_peer_cert && !self.verify_peer {
            return Err(format!(
                "{}: fail_if_no_peer_cert needs verify_peer = true",
                key("fail_if_no_peer_cert")
            ));
        }
        if self.handshake_timeout_ms == 0 {
            return Err(format!("{}: must be positive", key("handshake_timeout_ms")));
        }
        Ok(())
    }
}

/// Where an EXTERNAL login takes the user name from, as RabbitMQ's
/// `ssl_cert_login_from`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CertLoginFrom {
    /// The subject's common name (CN).
    #[default]
    CommonName,
    /// The whole subject as an RFC 4514 string, as RabbitMQ formats it.
    DistinguishedName,
    /// A subject alternative name: `cert_login_san_type`, `cert_login_san_index`.
    SubjectAlternativeName,
}

/// Which kind of subject alternative name names the user.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SanType {
    /// A DNS name.
    #[default]
    Dns,
    /// An e-mail address (rfc822Name).
    Email,
    /// A URI.
    Uri,
    /// An IP address, in its usual text form.
    Ip,
}

/// The `[tls]` table: the AMQPS listener.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(try_from = "toml::Table")]
pub struct AmqpTls {
    /// Certificates and verification.
    pub files: TlsFiles,
    /// The listener's own keys.
    pub listener: AmqpListener,
}

/// The AMQPS listener's keys besides the files.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpListener {
    /// AMQPS port, on `bind` (0 picks a free one); the listener is on
    /// only when `cert_file` is set.
    pub port: u16,
    /// Where EXTERNAL takes the user name from.
    pub cert_login_from: CertLoginFrom,
    /// With `subject_alternative_name`: which kind of name.
    pub cert_login_san_type: SanType,
    /// With `subject_alternative_name`: which one of that kind (from 0).
    pub cert_login_san_index: usize,
}

/// The `[management.tls]` table: HTTPS for the API and for Prometheus.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(try_from = "toml::Table")]
pub struct HttpTls {
    /// Certificates and verification.
    pub files: TlsFiles,
    /// The listeners' own keys.
    pub listener: HttpListener,
}

/// The HTTPS listeners' keys besides the files.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpListener {
    /// HTTPS port of the management API, on `management_bind` (0: none).
    pub port: u16,
    /// HTTPS port of the Prometheus endpoint (0: none).
    pub prometheus_port: u16,
}

/// The `[management]` table (today only its `tls` part).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Management {
    /// HTTPS settings.
    pub tls: HttpTls,
}

impl TryFrom<toml::Table> for AmqpTls {
    type Error = String;
    fn try_from(table: toml::Table) -> Result<Self, String> {
        let own = [
            "port",
            "cert_login_from",
            "cert_login_san_type",
            "cert_login_san_index",
        ];
        let (listener, files) = split(table, &own)?;
        Ok(AmqpTls { files, listener })
    }
}

impl TryFrom<toml::Table> for HttpTls {
    type Error = String;
    fn try_from(table: toml::Table) -> Result<Self, String> {
        let (listener, files) = split(table, &["port", "prometheus_port"])?;
        Ok(HttpTls { files, listener })
    }
}

/// The keys of [`TlsFiles`].
const FILE_KEYS: [&str; 6] = [
    "cert_file",
    "key_file",
    "ca_file",
    "verify_peer",
    "fail_if_no_peer_cert",
    "handshake_timeout_ms",
];

/// Deserialize a TLS table's `own` keys as `T` and the rest as the files
/// (TOML keeps them in one table; serde's flatten would lose
/// `deny_unknown_fields`, so a misspelt key would go unnoticed).
fn split<T: serde::de::DeserializeOwned>(
    mut table: toml::Table,
    own: &[&str],
) -> Result<(T, TlsFiles), String> {
    let mut mine = toml::Table::new();
    for key in own {
        if let Some(v) = table.remove(*key) {
            mine.insert(key.to_string(), v);
        }
    }
    let listener = mine
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_string())?;
    let files = table.try_into().map_err(|e: toml::de::Error| {
        let text = e.message().to_string();
        match text.split_once(", expected one of") {
            // The files' error knows only their keys: name them all.
            Some((unknown, _)) => {
                let keys: Vec<String> = FILE_KEYS
                    .iter()
                    .chain(own)
                    .map(|k| format!("`{k}`"))
                    .collect();
                format!("{unknown}, expected one of {}", keys.join(", "))
            }
            None => text,
        }
    })?;
    Ok((listener, files))
}
