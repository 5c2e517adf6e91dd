//! What a verified client certificate says: the user name SASL EXTERNAL
//! logs in as (RabbitMQ's `ssl_cert_login_from`), and the subject and
//! issuer as RabbitMQ shows them (RFC 4514, last RDN first).

use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry as oid;
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

use crate::config::{AmqpListener, CertLoginFrom, SanType};

/// The parts of a peer certificate the broker uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerCert {
    /// The user EXTERNAL logs in as (None: the certificate names none).
    pub login: Option<String>,
    /// The subject, RFC 4514.
    pub subject: String,
    /// The issuer, RFC 4514.
    pub issuer: String,
    /// "not before - not after", as RabbitMQ's `peer_cert_validity`.
    pub validity: String,
}

/// Read a certificate (DER) as `how` says; None if it does not parse
/// (rustls has verified it, so only an odd extension would do that).
pub fn peer_cert(der: &[u8], how: &AmqpListener) -> Option<PeerCert> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = rfc4514(cert.subject());
    let login = match how.cert_login_from {
        // Every CN, joined with commas, as RabbitMQ 3.10 does: a
        // certificate with two CNs names neither user alone.
        CertLoginFrom::CommonName => {
            let cns: Vec<&str> = cert
                .subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .collect();
            (!cns.is_empty()).then(|| cns.join(","))
        }
        CertLoginFrom::DistinguishedName => Some(subject.clone()),
        CertLoginFrom::SubjectAlternativeName => {
            san(&cert, how.cert_login_san_type, how.cert_login_san_index)
        }
    };
    let validity = cert.validity();
    Some(PeerCert {
        login,
        subject,
        issuer: rfc4514(cert.issuer()),
        validity: format!(
            "{} - {}",
            time_text(validity.not_before),
            time_text(validity.not_after)
        ),
    })
}

fn time_text(t: x509_parser::time::ASN1Time) -> String {
    let t = t.to_datetime();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The `index`th subject alternative name of `kind`.
fn san(cert: &X509Certificate<'_>, kind: SanType, index: usize) -> Option<String> {
    let ext = cert.subject_alternative_name().ok()??;
    ext.value
        .general_names
        .iter()
        .filter_map(|name| match (kind, name) {
            (SanType::Dns, GeneralName::DNSName(s))
            | (SanType::Email, GeneralName::RFC822Name(s))
            | (SanType::Uri, GeneralName::URI(s)) => Some(s.to_string()),
            (SanType::Ip, GeneralName::IPAddress(b)) => ip_text(b),
            _ => None,
        })
        .nth(index)
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    let ip: std::net::IpAddr = match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok()?.into(),
        16 => <[u8; 16]>::try_from(bytes).ok()?.into(),
        _ => return None,
    };
    Some(ip.to_string())
}

/// A name as RabbitMQ's `rabbit_ssl` formats it: RDNs in reverse order,
/// `SHORT=value` joined by commas, multi-valued RDNs joined by `+`.
fn rfc4514(name: &X509Name<'_>) -> String {
    let mut rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type();
                    let value = atv.as_str().map(escape).unwrap_or_else(|_| {
                        let raw = atv.attr_value().data;
                        format!(
                            "#{}",
                            raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
                        )
                    });
                    format!("{}={value}", short_name(oid))
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.reverse();
    rdns.join(",")
}

fn short_name(o: &oid::Oid<'_>) -> String {
    let known = [
        (&oid::OID_X509_COMMON_NAME, "CN"),
        (&oid::OID_X509_SURNAME, "SN"),
        (&oid::OID_X509_COUNTRY_NAME, "C"),
        (&oid::OID_X509_LOCALITY_NAME, "L"),
        (&oid::OID_X509_STATE_OR_PROVINCE_NAME, "ST"),
        (&oid::OID_X509_ORGANIZATION_NAME, "O"),
        (&oid::OID_X509_ORGANIZATIONAL_UNIT, "OU"),
        (&oid::OID_DOMAIN_COMPONENT, "DC"),
        (&oid::OID_PKCS9_EMAIL_ADDRESS, "EMAILADDRESS"),
    ];
    known
        .iter()
        .find(|(k, _)| *k == o)
        .map(|(_, s)| s.to_string())
        .unwrap_or_else(|| o.to_id_string())
}

/// RFC 4514 escaping of an attribute value.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let edge = (i == 0 && (c == ' ' || c == '#')) || (i == last && c == ' ');
        if edge || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType as RcSan};

    fn cert(cn: &str, sans: Vec<RcSan>) -> Vec<u8> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Acme, Inc");
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn how(from: CertLoginFrom, kind: SanType, index: usize) -> AmqpListener {
        AmqpListener {
            cert_login_from: from,
            cert_login_san_type: kind,
            cert_login_san_index: index,
            ..Default::default()
        }
    }

    #[test]
    fn login_names_come_from_cn_dn_or_san() {
        let der = cert(
            "alice",
            vec![
                RcSan::DnsName("a.example".try_into().unwrap()),
                RcSan::Rfc822Name("alice@example.com".try_into().unwrap()),
                RcSan::DnsName("b.example".try_into().unwrap()),
                RcSan::IpAddress([10, 0, 0, 1].into()),
            ],
        );
        let got = |from, kind, i| peer_cert(&der, &how(from, kind, i)).unwrap().login;
        use CertLoginFrom::*;
        assert_eq!(got(CommonName, SanType::Dns, 0).as_deref(), Some("alice"));
        assert_eq!(
            got(DistinguishedName, SanType::Dns, 0).as_deref(),
            // The certificate's order is O, CN: RabbitMQ shows it reversed.
            Some("CN=alice,O=Acme\\, Inc")
        );
        let san = SubjectAlternativeName;
        assert_eq!(got(san, SanType::Dns, 1).as_deref(), Some("b.example"));
        assert_eq!(
            got(san, SanType::Email, 0).as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(got(san, SanType::Ip, 0).as_deref(), Some("10.0.0.1"));
        assert_eq!(got(san, SanType::Uri, 0), None);
        assert_eq!(got(san, SanType::Dns, 2), None);
        let p = peer_cert(&der, &how(CommonName, SanType::Dns, 0)).unwrap();
        assert_eq!(p.issuer, p.subject);
        assert!(p.validity.contains(" - "), "{}", p.validity);
    }

    #[test]
    fn garbage_is_no_certificate() {
        assert_eq!(
            peer_cert(b"not a certificate", &AmqpListener::default()),
            None
        );
    }

    #[test]
    fn rfc4514_escapes_specials() {
        assert_eq!(escape(" a,b+c "), "\\ a\\,b\\+c\\ ");
        assert_eq!(escape("#x"), "\\#x");
    }
}
