//! SASL responses from connection.start-ok, decoded the way RabbitMQ's
//! mechanisms read them.
//!
//! - PLAIN (RFC 4616): `authzid NUL user NUL password`. The authorization
//!   id must be empty or the user itself (Warren has no proxy login), and
//!   nothing may follow the password.
//! - AMQPLAIN: a field table without its length prefix holding `LOGIN` and
//!   `PASSWORD` as strings.
//!
//! An empty password is refused by the caller like a wrong one, as
//! RabbitMQ's internal backend does.

use amq_protocol::types::AMQPValue;

use crate::protocol::nesting;

/// The mechanisms Warren implements (RabbitMQ's names).
pub const KNOWN: [&str; 3] = ["PLAIN", "AMQPLAIN", "EXTERNAL"];

/// The mechanisms to offer in connection.start, in the configured order
/// (`auth_mechanisms`): EXTERNAL only where a client certificate can be
/// verified (`external_possible`), as RabbitMQ offers it only with
/// rabbitmq_auth_mechanism_ssl on.
pub fn offered(configured: &[String], external_possible: bool) -> Vec<&str> {
    configured
        .iter()
        .map(String::as_str)
        .filter(|m| *m != "EXTERNAL" || external_possible)
        .collect()
}

/// A user name and password taken from a response.
#[derive(Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The user to log in as.
    pub user: String,
    /// The password as sent.
    pub password: String,
}

/// Why a response gave no credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum SaslError {
    /// A mechanism Warren does not offer.
    UnknownMechanism(String),
    /// The response does not have the mechanism's shape.
    Malformed(&'static str),
    /// An AMQPLAIN table nested deeper than Warren parses.
    TooDeep,
}

impl std::fmt::Display for SaslError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SaslError::UnknownMechanism(m) => write!(f, "unknown authentication mechanism '{m}'"),
            SaslError::Malformed(why) => write!(f, "malformed response: {why}"),
            SaslError::TooDeep => write!(f, "AMQPLAIN table nested too deep"),
        }
    }
}

/// Decode `response` for `mechanism`.
pub fn parse(mechanism: &str, response: &[u8]) -> Result<Credentials, SaslError> {
    match mechanism {
        "PLAIN" => plain(response),
        "AMQPLAIN" => amqplain(response),
        other => Err(SaslError::UnknownMechanism(other.to_string())),
    }
}

fn utf8(bytes: &[u8], what: &'static str) -> Result<String, SaslError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| SaslError::Malformed(what))
}

fn plain(response: &[u8]) -> Result<Credentials, SaslError> {
    let mut parts = response.split(|b| *b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed(
            "PLAIN expects authzid, user and password separated by NUL",
        ));
    };
    if !authzid.is_empty() && authzid != user {
        return Err(SaslError::Malformed(
            "PLAIN authorization id must be empty or the user",
        ));
    }
    Ok(Credentials {
        user: utf8(user, "user name is not UTF-8")?,
        password: utf8(password, "password is not UTF-8")?,
    })
}

fn amqplain(response: &[u8]) -> Result<Credentials, SaslError> {
    if nesting::check_table_body(response).is_err() {
        return Err(SaslError::TooDeep);
    }
    let Ok(len) = u32::try_from(response.len()) else {
        return Err(SaslError::Malformed("AMQPLAIN response too long"));
    };
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(response);
    let Ok((_, table)) = amq_protocol::types::parsing::parse_field_table(&framed[..]) else {
        return Err(SaslError::Malformed(
            "AMQPLAIN response is not a field table",
        ));
    };
    let text = |key: &str| match table.inner().get(key) {
        Some(AMQPValue::LongString(s)) => utf8(s.as_bytes(), "AMQPLAIN value is not UTF-8"),
        Some(AMQPValue::ShortString(s)) => Ok(s.as_str().to_string()),
        _ => Err(SaslError::Malformed(
            "AMQPLAIN needs LOGIN and PASSWORD as strings",
        )),
    };
    Ok(Credentials {
        user: text("LOGIN")?,
        password: text("PASSWORD")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(user: &str, password: &str) -> Result<Credentials, SaslError> {
        Ok(Credentials {
            user: user.into(),
            password: password.into(),
        })
    }

    #[test]
    fn plain_takes_an_empty_or_matching_authzid() {
        assert_eq!(parse("PLAIN", b"\0guest\0secret"), creds("guest", "secret"));
        assert_eq!(
            parse("PLAIN", b"guest\0guest\0secret"),
            creds("guest", "secret")
        );
        assert_eq!(parse("PLAIN", b"\0guest\0"), creds("guest", ""));
    }

    #[test]
    fn plain_refuses_other_shapes() {
        for bad in [
            &b"admin\0guest\0guest"[..],
            b"\0guest\0guest\0junk",
            b"guestguest",
            b"\0guest",
            b"",
            b"\0\xff\0pw",
        ] {
            assert!(
                matches!(parse("PLAIN", bad), Err(SaslError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    fn amqplain_body(fields: &[(&str, u8, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (k, kind, v) in fields {
            body.push(k.len() as u8);
            body.extend_from_slice(k.as_bytes());
            body.push(*kind);
            body.extend_from_slice(v);
        }
        body
    }

    #[test]
    fn amqplain_reads_login_and_password() {
        let s = |v: &str| {
            let mut b = (v.len() as u32).to_be_bytes().to_vec();
            b.extend_from_slice(v.as_bytes());
            b
        };
        let body = amqplain_body(&[("LOGIN", b'S', &s("guest")), ("PASSWORD", b'S', &s("pw"))]);
        assert_eq!(parse("AMQPLAIN", &body), creds("guest", "pw"));
        let body = amqplain_body(&[("LOGIN", b'I', &[0, 0, 0, 7]), ("PASSWORD", b'S', &s("pw"))]);
        assert!(matches!(
            parse("AMQPLAIN", &body),
            Err(SaslError::Malformed(_))
        ));
        assert!(matches!(
            parse("AMQPLAIN", b"\x05LOG"),
            Err(SaslError::Malformed(_))
        ));
    }

    #[test]
    fn unknown_mechanisms_are_named() {
        assert_eq!(
            parse("EXTERNAL", b""),
            Err(SaslError::UnknownMechanism("EXTERNAL".into()))
        );
    }
}
