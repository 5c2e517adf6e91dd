//! Configuration: the TOML file, its defaults, and validation with errors
//! that name the offending key. The defaults live in `config/warren.toml`
//! (embedded, so the binary and the documented example cannot drift).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::auth::password::{constant_time_eq, Algorithm, PasswordHash};

use crate::alarms::size::{SizeSetting, WatermarkSetting};

mod tls;
pub use tls::{
    AmqpListener, AmqpTls, CertLoginFrom, HttpListener, HttpTls, Management, SanType, TlsFiles,
};

/// The example config shipped in the repository, which is also the default.
pub const DEFAULT_CONFIG: &str = include_str!("../config/warren.toml");

/// When a persistent message counts as stored (see `crate::store`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Confirm after fdatasync (group commit).
    #[default]
    Always,
    /// Confirm after the write to the OS.
    Never,
}

/// A user that may log in: with `password` in plain text, or with
/// `password_hash` as RabbitMQ exports it (base64 of a 4-byte salt and
/// the digest) and its `hashing_algorithm` (default
/// `rabbit_password_hashing_sha256`).
#[derive(Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Password in plain text.
    #[serde(default)]
    pub password: Option<String>,
    /// RabbitMQ's password hash, base64.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// RabbitMQ's name of the hash's algorithm.
    #[serde(default)]
    pub hashing_algorithm: Option<String>,
    /// Like RabbitMQ's guest: may only log in over a loopback address.
    #[serde(default)]
    pub loopback_only: bool,
    /// RabbitMQ's user tags: `administrator`, `monitoring`,
    /// `policymaker`, `management` (any of them lets the user into the
    /// management API).
    #[serde(default)]
    pub tags: Vec<String>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No password or hash in logs.
        f.debug_struct("User")
            .field("name", &self.name)
            .field("loopback_only", &self.loopback_only)
            .field("tags", &self.tags)
            .finish_non_exhaustive()
    }
}

impl User {
    /// The user's hash, parsed; an error text naming what is wrong.
    fn hash(&self) -> Result<Option<PasswordHash>, String> {
        let algorithm = match &self.hashing_algorithm {
            None => Algorithm::default(),
            Some(name) => Algorithm::parse(name)
                .ok_or_else(|| format!("unknown hashing_algorithm '{name}'"))?,
        };
        match &self.password_hash {
            // RabbitMQ exports a user without a password so: it cannot
            // log in with one.
            Some(h) if h.is_empty() => Ok(None),
            Some(h) => PasswordHash::parse(h, algorithm).map(Some),
            None => Ok(None),
        }
    }

    /// Check the user's password settings.
    fn validate(&self) -> Result<(), String> {
        match (&self.password, &self.password_hash) {
            (Some(_), Some(_)) => return Err("has both password and password_hash".into()),
            (None, None) => return Err("needs password or password_hash".into()),
            (Some(_), None) if self.hashing_algorithm.is_some() => {
                return Err("hashing_algorithm applies to password_hash only".into())
            }
            _ => {}
        }
        self.hash().map(|_| ())
    }

    /// Whether `given` is this user's password (an empty one never is, as
    /// in RabbitMQ).
    pub fn check_password(&self, given: &str) -> bool {
        if given.is_empty() {
            return false;
        }
        match (&self.password, self.hash()) {
            (_, Ok(Some(hash))) => hash.verify(given),
            (Some(plain), _) => constant_time_eq(plain.as_bytes(), given.as_bytes()),
            _ => false,
        }
    }
}

/// Everything Warren can be configured with.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub bind: IpAddr,
    /// AMQP port (0 picks a free one).
    pub port: u16,
    /// Where durable data lives.
    pub data_dir: PathBuf,
    /// tracing filter, e.g. "info" or "warren=debug".
    pub log_level: String,
    /// Heartbeat interval offered in connection.tune, seconds (0 = off).
    pub heartbeat_s: u16,
    /// Largest frame offered in connection.tune, bytes (≥ 4096).
    pub frame_max: u32,
    /// Most channels open at once per connection, offered in tune (1–65535).
    pub channel_max: u16,
    /// Largest message body accepted, bytes.
    pub max_message_size: u64,
    /// Time a client has to finish the handshake, milliseconds.
    pub handshake_timeout_ms: u64,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Runtime worker threads (0: one per CPU core).
    pub worker_threads: usize,
    /// Flow control: ready messages above which a queue whose consumers'
    /// connections are full holds its publishers back.
    pub flow_high_watermark: usize,
    /// Flow control: publishers resume under this many ready messages.
    pub flow_low_watermark: usize,
    /// When persistent messages are confirmed: after fdatasync ("always")
    /// or after the write to the OS ("never").
    pub fsync: Fsync,
    /// Size at which a queue's segment file is closed and a new one begun.
    pub segment_bytes: u64,
    /// Message bytes a queue keeps in memory; the rest wait on disk.
    pub queue_memory_bytes: u64,
    /// Size of the metadata log at which it is compacted into a snapshot
    /// (or the last snapshot's size, if larger).
    pub metadata_log_bytes: u64,
    /// Segment and ack files open at once at most (0: half the process's
    /// descriptor limit); the least recently used are closed.
    pub max_open_files: usize,
    /// Virtual hosts.
    pub vhosts: Vec<String>,
    /// Memory use above which publishers are blocked: a fraction of the
    /// memory available (RAM or the cgroup's limit) or an absolute size.
    pub memory_high_watermark: WatermarkSetting,
    /// Free disk space on the data directory's file system below which
    /// publishers are blocked (0: no disk alarm).
    pub disk_free_limit: SizeSetting,
    /// Bytes of publishes all uncommitted transactions of one connection
    /// may hold; a publish beyond it closes its channel with 406.
    pub max_transaction_bytes: u64,
    /// Time between samples of memory use and free disk space.
    pub alarm_check_interval_ms: u64,
    /// A delivery not acked within this time is returned to its queue and
    /// its consumer cancelled (0: no timeout; queues and consumers may set
    /// their own with `x-consumer-timeout`).
    pub consumer_timeout_ms: u64,
    /// On a consumer timeout, close the channel with 406 as RabbitMQ
    /// does, instead of returning the delivery and cancelling the consumer.
    pub consumer_timeout_closes_channel: bool,
    /// SASL mechanisms offered, in order (RabbitMQ's `auth_mechanisms`):
    /// `PLAIN`, `AMQPLAIN`, `EXTERNAL` (the last only on TLS listeners
    /// with `verify_peer`).
    pub auth_mechanisms: Vec<String>,
    /// Users.
    pub users: Vec<User>,
    /// Address the management HTTP API and Prometheus listen on.
    pub management_bind: IpAddr,
    /// Management HTTP API port (0: no API).
    pub management_port: u16,
    /// Prometheus metrics port (0: no metrics listener).
    pub prometheus_port: u16,
    /// Largest request body the management API reads, bytes.
    pub management_max_body_bytes: usize,
    /// A definitions file (RabbitMQ's JSON export) imported at every boot,
    /// merging into what the data directory holds (empty: none).
    pub load_definitions: String,
    /// This node's name in the API and metrics (RabbitMQ's `rabbit@host`
    /// form; empty: `warren@` and the host name).
    pub node_name: String,
    /// AMQPS: the listener and its certificates.
    pub tls: AmqpTls,
    /// The management listeners' HTTPS.
    pub management: Management,
}

/// A configuration problem, naming the key.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Default for Config {
    fn default() -> Self {
        match Config::parse(DEFAULT_CONFIG) {
            Ok(c) => c,
            // The embedded file is covered by a unit test; this is a build bug.
            Err(e) => panic!("embedded default config is invalid: {e}"),
        }
    }
}

impl Config {
    /// Parse a complete config from TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Load a file whose keys override the defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        Self::with_overrides(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    /// Merge a TOML fragment over the defaults.
    pub fn with_overrides(text: &str) -> Result<Self, ConfigError> {
        let mut base: toml::Table =
            toml::from_str(DEFAULT_CONFIG).map_err(|e| ConfigError(e.to_string()))?;
        let overrides: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        merge(&mut base, overrides);
        let config: Config = base
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The AMQPS port if the TLS listener is on.
    pub fn tls_port(&self) -> Option<u16> {
        self.tls.files.enabled().then_some(self.tls.listener.port)
    }

    /// Check value ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err =
            |key: &str, why: &str| Err(ConfigError(format!("invalid value for `{key}`: {why}")));
        if self.frame_max < 4096 {
            return err("frame_max", "must be at least 4096");
        }
        if self.channel_max == 0 {
            return err("channel_max", "must be between 1 and 65535");
        }
        if self.max_message_size == 0 || self.max_message_size > 512 * 1024 * 1024 {
            return err("max_message_size", "must be between 1 and 536870912 bytes");
        }
        if self.handshake_timeout_ms == 0 {
            return err("handshake_timeout_ms", "must be positive");
        }
        if self.max_connections == 0 {
            return err("max_connections", "must be positive");
        }
        if self.flow_high_watermark == 0 || self.flow_low_watermark >= self.flow_high_watermark {
            return err(
                "flow_low_watermark",
                "must be below flow_high_watermark, which must be positive",
            );
        }
        if !(4096..=1 << 30).contains(&self.segment_bytes) {
            return err("segment_bytes", "must be between 4096 and 1073741824");
        }
        if !(4096..=1 << 30).contains(&self.metadata_log_bytes) {
            return err("metadata_log_bytes", "must be between 4096 and 1073741824");
        }
        if self.queue_memory_bytes < 4096 {
            return err("queue_memory_bytes", "must be at least 4096");
        }
        if let Err(why) = self.memory_high_watermark.validate() {
            return err("memory_high_watermark", &why);
        }
        if let Err(why) = self.disk_free_limit.bytes() {
            return err("disk_free_limit", &why);
        }
        if self.max_transaction_bytes == 0 {
            return err("max_transaction_bytes", "must be positive");
        }
        if self.alarm_check_interval_ms == 0 {
            return err("alarm_check_interval_ms", "must be positive");
        }
        if !(1024..=1 << 30).contains(&self.management_max_body_bytes) {
            return err(
                "management_max_body_bytes",
                "must be between 1024 and 1073741824",
            );
        }
        for user in &self.users {
            if let Err(why) = user.validate() {
                return err("users", &format!("user '{}' {why}", user.name));
            }
        }
        for (i, vhost) in self.vhosts.iter().enumerate() {
            if self.vhosts[..i].contains(vhost) {
                return err("vhosts", &format!("'{vhost}' is listed twice"));
            }
        }
        if self.vhosts.is_empty() {
            return err("vhosts", "at least one vhost is needed");
        }
        for (i, m) in self.auth_mechanisms.iter().enumerate() {
            if !crate::auth::sasl::KNOWN.contains(&m.as_str()) {
                return err(
                    "auth_mechanisms",
                    &format!("unknown mechanism '{m}' (PLAIN, AMQPLAIN or EXTERNAL)"),
                );
            }
            if self.auth_mechanisms[..i].contains(m) {
                return err("auth_mechanisms", &format!("'{m}' is listed twice"));
            }
        }
        if self.auth_mechanisms.is_empty() {
            return err("auth_mechanisms", "at least one mechanism is needed");
        }
        self.tls.files.validate("tls").map_err(ConfigError)?;
        self.management
            .tls
            .files
            .validate("management.tls")
            .map_err(ConfigError)?;
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return Err(ConfigError(format!("invalid value for `log_level`: {e}")));
        }
        Ok(())
    }
}

/// Put `overrides` over `base`, table by table: `[tls]` in a file
/// changes only the keys it names.
fn merge(base: &mut toml::Table, overrides: toml::Table) {
    for (k, v) in overrides {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_need_exactly_one_valid_password_setting() {
        let with = |user: &str| Config::with_overrides(&format!("[[users]]\n{user}"));
        assert!(with("name = \"a\"\npassword = \"p\"").is_ok());
        let hash = "password_hash = \"kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR\"";
        let c = with(&format!("name = \"a\"\n{hash}")).unwrap();
        assert!(c.users[0].check_password("test12"));
        assert!(!c.users[0].check_password("test1"));
        let bad_algorithm = format!("name = \"a\"\n{hash}\nhashing_algorithm = \"sha256\"");
        for (user, why) in [
            ("name = \"a\"", "needs password or password_hash"),
            (
                "name = \"a\"\npassword = \"p\"\npassword_hash = \"x\"",
                "both",
            ),
            ("name = \"a\"\npassword_hash = \"***\"", "base64"),
            (bad_algorithm.as_str(), "unknown hashing_algorithm"),
        ] {
            let e = with(user).unwrap_err().0;
            assert!(e.contains("`users`") && e.contains(why), "{user}: {e}");
        }
        assert!(!format!("{:?}", c.users[0]).contains("kI3G"));
        // As RabbitMQ exports a user without a password.
        let c = with("name = \"a\"\npassword_hash = \"\"").unwrap();
        assert!(!c.users[0].check_password("anything"));
    }

    #[test]
    fn a_vhost_listed_twice_is_refused() {
        let e = Config::with_overrides("vhosts = [\"/\", \"a\", \"/\"]")
            .unwrap_err()
            .0;
        assert!(
            e.contains("`vhosts`") && e.contains("'/' is listed twice"),
            "{e}"
        );
    }

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::default();
        assert_eq!(c.port, 5672);
        assert_eq!(c.frame_max, 131072);
        assert_eq!(c.max_message_size, 128 * 1024 * 1024);
        assert_eq!(c.users[0].name, "guest");
        assert!(c.users[0].loopback_only);
        assert_eq!(c.users[0].tags, ["administrator"]);
        assert_eq!((c.management_port, c.prometheus_port), (15672, 15692));
    }

    #[test]
    fn overrides_merge_over_defaults() {
        let c = Config::with_overrides("port = 5999\nheartbeat_s = 5").unwrap();
        assert_eq!(c.port, 5999);
        assert_eq!(c.heartbeat_s, 5);
        assert_eq!(c.channel_max, Config::default().channel_max);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::with_overrides("prot = 1").unwrap_err();
        assert!(e.0.contains("prot"), "{e}");
    }

    #[test]
    fn bad_type_is_named() {
        let e = Config::with_overrides("port = \"x\"").unwrap_err();
        assert!(e.0.contains("port"), "{e}");
    }

    #[test]
    fn flow_watermarks_must_be_ordered() {
        let e = Config::with_overrides("flow_low_watermark = 9000").unwrap_err();
        assert!(e.0.contains("flow_low_watermark"), "{e}");
        let c =
            Config::with_overrides("flow_high_watermark = 100\nflow_low_watermark = 50").unwrap();
        assert_eq!((c.flow_high_watermark, c.flow_low_watermark), (100, 50));
    }

    #[test]
    fn store_keys_parse_and_are_checked() {
        assert_eq!(Config::default().fsync, Fsync::Always);
        let c = Config::with_overrides("fsync = \"never\"\nsegment_bytes = 65536").unwrap();
        assert_eq!((c.fsync, c.segment_bytes), (Fsync::Never, 65536));
        let e = Config::with_overrides("fsync = \"sometimes\"").unwrap_err();
        assert!(e.0.contains("sometimes"), "{e}");
        let e = Config::with_overrides("segment_bytes = 10").unwrap_err();
        assert!(e.0.contains("segment_bytes"), "{e}");
    }

    #[test]
    fn alarm_keys_parse_and_are_checked() {
        let c = Config::default();
        assert_eq!(c.memory_high_watermark, WatermarkSetting::Fraction(0.4));
        assert_eq!(c.disk_free_limit.bytes(), Ok(50_000_000));
        let c =
            Config::with_overrides("memory_high_watermark = \"512MiB\"\ndisk_free_limit = 1000")
                .unwrap();
        assert_eq!(c.memory_high_watermark.bytes(1), 512 << 20);
        assert_eq!(c.disk_free_limit.bytes(), Ok(1000));
        for bad in [
            "memory_high_watermark = 1.5",
            "memory_high_watermark = \"lots\"",
            "disk_free_limit = \"5 parsecs\"",
        ] {
            let e = Config::with_overrides(bad).unwrap_err();
            let key = bad.split(' ').next().unwrap();
            assert!(e.0.contains(key), "{e}");
        }
    }

    #[test]
    fn tls_tables_merge_and_are_checked() {
        let c = Config::default();
        assert_eq!(c.tls_port(), None);
        assert_eq!(c.tls.listener.port, 5671);
        assert_eq!(c.tls.files.handshake_timeout_ms, 5000);
        assert_eq!(c.management.tls.listener.port, 15671);
        let c =
            Config::with_overrides("[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"").unwrap();
        assert_eq!(c.tls_port(), Some(5671));
        assert_eq!(c.tls.listener.cert_login_from, CertLoginFrom::CommonName);
        assert_eq!(c.auth_mechanisms, ["PLAIN", "AMQPLAIN"]);
        for (bad, key) in [
            ("[tls]\ncert_file = \"c\"", "`tls.key_file`"),
            (
                "[tls]\ncert_file = \"c\"\nkey_file = \"k\"\nverify_peer = true",
                "`tls.ca_file`",
            ),
            (
                "[tls]\ncert_file = \"c\"\nkey_file = \"k\"\nfail_if_no_peer_cert = true",
                "`tls.fail_if_no_peer_cert`",
            ),
            (
                "[management.tls]\ncert_file = \"c\"",
                "`management.tls.key_file`",
            ),
            ("[tls]\nverfy_peer = true", "`cert_login_from`"),
            (
                "auth_mechanisms = [\"PLAIN\", \"CRAM-MD5\"]",
                "`auth_mechanisms`",
            ),
            ("auth_mechanisms = []", "`auth_mechanisms`"),
            ("[tls]\ncert_login_from = \"cn\"", "cn"),
        ] {
            let e = Config::with_overrides(bad).unwrap_err().0;
            assert!(e.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn small_frame_max_is_refused() {
        let e = Config::with_overrides("frame_max = 100").unwrap_err();
        assert!(e.0.contains("frame_max"), "{e}");
    }
}
