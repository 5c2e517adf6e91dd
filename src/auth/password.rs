//! Password hashes as RabbitMQ stores and exports them, so that users
//! move between RabbitMQ and Warren (definitions files, rabbitmqadmin's
//! client-side hashes) without anyone knowing their passwords.
//!
//! RabbitMQ's format (`rabbit_password.erl`): a 4-byte random salt, then
//! `H(salt ++ password)`, base64-encoded; `H` is SHA-256 by default
//! (`rabbit_password_hashing_sha256`), or SHA-512 or MD5 (legacy).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use md5::Md5;
use sha2::{Digest, Sha256, Sha512};

/// Bytes of salt before the digest.
const SALT_LEN: usize = 4;

/// A hashing algorithm, by RabbitMQ's module name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Algorithm {
    /// `rabbit_password_hashing_sha256` (RabbitMQ's default).
    #[default]
    Sha256,
    /// `rabbit_password_hashing_sha512`.
    Sha512,
    /// `rabbit_password_hashing_md5` (RabbitMQ before 3.6).
    Md5,
}

impl Algorithm {
    /// The algorithm named as in definitions files and the HTTP API.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "rabbit_password_hashing_sha256" => Algorithm::Sha256,
            "rabbit_password_hashing_sha512" => Algorithm::Sha512,
            "rabbit_password_hashing_md5" => Algorithm::Md5,
            _ => return None,
        })
    }

    /// RabbitMQ's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "rabbit_password_hashing_sha256",
            Algorithm::Sha512 => "rabbit_password_hashing_sha512",
            Algorithm::Md5 => "rabbit_password_hashing_md5",
        }
    }

    fn digest(self, salt: &[u8], password: &[u8]) -> Vec<u8> {
        fn of<D: Digest>(salt: &[u8], password: &[u8]) -> Vec<u8> {
            let mut d = D::new();
            d.update(salt);
            d.update(password);
            d.finalize().to_vec()
        }
        match self {
            Algorithm::Sha256 => of::<Sha256>(salt, password),
            Algorithm::Sha512 => of::<Sha512>(salt, password),
            Algorithm::Md5 => of::<Md5>(salt, password),
        }
    }

    fn digest_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
            Algorithm::Md5 => 16,
        }
    }
}

/// A stored password: salt and digest, and how the digest was made.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    algorithm: Algorithm,
    /// Salt followed by the digest.
    bytes: Vec<u8>,
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never printed whole, even in debug output.
        write!(f, "PasswordHash({})", self.algorithm.name())
    }
}

impl PasswordHash {
    /// Hash `password` with a fresh random salt.
    pub fn new(password: &str, algorithm: Algorithm) -> Self {
        let salt: [u8; SALT_LEN] = rand::random();
        Self::with_salt(password, algorithm, salt)
    }

    fn with_salt(password: &str, algorithm: Algorithm, salt: [u8; SALT_LEN]) -> Self {
        let mut bytes = salt.to_vec();
        bytes.extend(algorithm.digest(&salt, password.as_bytes()));
        PasswordHash { algorithm, bytes }
    }

    /// A hash as RabbitMQ exports it (base64 of salt and digest); an error
    /// text if it is not valid base64 or not the algorithm's length.
    pub fn parse(base64: &str, algorithm: Algorithm) -> Result<Self, String> {
        let bytes = BASE64
            .decode(base64.trim())
            .map_err(|e| format!("password_hash is not valid base64: {e}"))?;
        let want = SALT_LEN + algorithm.digest_len();
        if bytes.len() != want {
            return Err(format!(
                "password_hash has {} bytes; {} takes {want} (4 of salt and the digest)",
                bytes.len(),
                algorithm.name()
            ));
        }
        Ok(PasswordHash { algorithm, bytes })
    }

    /// The base64 form RabbitMQ exports.
    pub fn encoded(&self) -> String {
        BASE64.encode(&self.bytes)
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Whether `password` is the one hashed (compared in constant time).
    pub fn verify(&self, password: &str) -> bool {
        let (salt, digest) = self.bytes.split_at(SALT_LEN.min(self.bytes.len()));
        let computed = self.algorithm.digest(salt, password.as_bytes());
        constant_time_eq(&computed, digest)
    }
}

/// Whether `a` and `b` are equal, in a time that depends on their lengths
/// only (so that a comparison with a secret tells nothing of where they
/// differ).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn salt(hex: &str) -> [u8; 4] {
        let v: Vec<u8> = (0..4)
            .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap())
            .collect();
        v.try_into().unwrap()
    }

    #[test]
    fn rabbitmq_test_vectors() {
        // From the shared operations notes (recomputed with Python hashlib).
        let h = PasswordHash::with_salt("test12", Algorithm::Sha256, salt("908DC60A"));
        assert_eq!(
            h.encoded(),
            "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"
        );
        let h = PasswordHash::with_salt("simon", Algorithm::Md5, salt("CAD5089B"));
        assert_eq!(h.encoded(), "ytUIm8s3AnKsXQjptplKFytfVxI=");
    }

    #[test]
    fn parsed_hashes_verify_their_password_only() {
        let h = PasswordHash::parse(
            "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR",
            Algorithm::Sha256,
        )
        .unwrap();
        assert!(h.verify("test12"));
        assert!(!h.verify("test13"));
        assert!(!h.verify(""));
        let h = PasswordHash::parse("ytUIm8s3AnKsXQjptplKFytfVxI=", Algorithm::Md5).unwrap();
        assert!(h.verify("simon"));
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512, Algorithm::Md5] {
            let h = PasswordHash::new("pässword", algorithm);
            let back = PasswordHash::parse(&h.encoded(), algorithm).unwrap();
            assert!(back.verify("pässword") && !back.verify("password"));
        }
    }

    #[test]
    fn bad_hashes_are_refused_with_a_reason() {
        assert!(PasswordHash::parse("not base64!", Algorithm::Sha256)
            .unwrap_err()
            .contains("base64"));
        // A SHA-256 hash read as SHA-512 has the wrong length.
        let err = PasswordHash::parse(
            "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR",
            Algorithm::Sha512,
        )
        .unwrap_err();
        assert!(err.contains("36 bytes"), "{err}");
        assert_eq!(Algorithm::parse("sha256"), None);
        assert_eq!(
            Algorithm::parse("rabbit_password_hashing_sha512"),
            Some(Algorithm::Sha512)
        );
    }

    #[test]
    fn debug_output_hides_the_hash() {
        let h = PasswordHash::new("secret", Algorithm::Sha256);
        assert_eq!(
            format!("{h:?}"),
            "PasswordHash(rabbit_password_hashing_sha256)"
        );
    }
}
