//! The AMQP URIs of a shovel definition: which vhost of this broker one
//! names (Warren's shovels move messages within the broker only), the
//! user and password it carries, and the URI as shown back without them.

/// The vhost of this broker that an AMQP URI names.
pub fn local_vhost(uri: &str) -> Result<String, String> {
    let rest = uri
        .strip_prefix("amqp://")
        .ok_or("only amqp:// URIs of this broker are supported")?;
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let host = authority.rsplit('@').next().unwrap_or_default();
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    if !matches!(host, "" | "localhost" | "127.0.0.1" | "::1") {
        return Err("Warren shovels move messages within this broker only".into());
    }
    match path {
        // `amqp://` and `amqp://host/` name the default vhost.
        None | Some("") => Ok("/".into()),
        Some(p) => {
            percent_decode(p).ok_or_else(|| "its vhost is not valid percent-encoding".into())
        }
    }
}

/// The user and password an `amqp://user:pass@host/...` URI gives.
pub fn credentials(uri: &str) -> Option<(String, String)> {
    let rest = uri.strip_prefix("amqp://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    Some((percent_decode(user)?, percent_decode(pass)?))
}

/// The URI without its user and password, as RabbitMQ shows shovel URIs.
pub fn redact(uri: &str) -> String {
    let Some(rest) = uri.strip_prefix("amqp://") else {
        return uri.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((_, host)) => format!("amqp://{host}{}", &rest[end..]),
        None => uri.to_string(),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_vhosts_of_this_broker_only() {
        assert_eq!(
            local_vhost("amqp://guest:guest@localhost:5672/dev"),
            Ok("dev".into())
        );
        assert_eq!(local_vhost("amqp://"), Ok("/".into()));
        assert_eq!(local_vhost("amqp://localhost"), Ok("/".into()));
        assert!(local_vhost("amqp://elsewhere.example/").is_err());
        assert!(local_vhost("amqps://localhost/").is_err());
        assert!(local_vhost("amqp:///%zz").is_err());
    }

    #[test]
    fn credentials_are_read_and_redacted() {
        let uri = "amqp://ad%40min:Top:Secret@localhost:5672/prod";
        assert_eq!(
            credentials(uri),
            Some(("ad@min".into(), "Top:Secret".into()))
        );
        assert_eq!(redact(uri), "amqp://localhost:5672/prod");
        assert_eq!(credentials("amqp:///x"), None);
        assert_eq!(redact("amqp://"), "amqp://");
    }
}
