//! A dynamic shovel's definition: the value of a `shovel` runtime
//! parameter (RabbitMQ's keys), checked and read into [`ShovelDef`].
//!
//! Warren's shovels move messages between queues and exchanges of this
//! broker: a URI names a vhost of it (`amqp://`, `amqp:///vhost`, or a
//! user and `localhost`); a URI of another host is refused. The source is
//! a queue (`src-queue`); the destination a queue or an exchange.

use serde_json::{Map, Value};

/// Prefetch of a shovel's consumer unless `src-prefetch-count` says
/// otherwise (RabbitMQ's default).
pub const DEFAULT_PREFETCH: u32 = 1_000;
/// Largest prefetch accepted (what a shovel may hold unsettled).
pub const MAX_PREFETCH: u32 = 65_535;

/// When a shovel stops and deletes itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteAfter {
    /// Never: it moves whatever arrives.
    Never,
    /// Once it moved as many as the source held when it started.
    QueueLength,
    /// Once it moved this many.
    Count(u64),
}

/// When the source is acked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckMode {
    /// Once the destination has stored the copy (no loss).
    OnConfirm,
    /// Once the copy is handed to the destination.
    OnPublish,
    /// At once, when delivered to the shovel.
    NoAck,
}

/// Where moved messages go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    /// To this queue (through the default exchange).
    Queue(String),
    /// To this exchange, with this routing key (None: the message's own).
    Exchange {
        /// The exchange.
        name: String,
        /// `dest-exchange-key`.
        key: Option<String>,
    },
}

/// A checked shovel definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShovelDef {
    /// `src-uri` as given.
    pub src_uri: String,
    /// The vhost it names.
    pub src_vhost: String,
    /// `src-queue`.
    pub src_queue: String,
    /// `src-prefetch-count`.
    pub prefetch: u32,
    /// `src-delete-after`.
    pub delete_after: DeleteAfter,
    /// `dest-uri` as given.
    pub dest_uri: String,
    /// The vhost it names.
    pub dest_vhost: String,
    /// `dest-queue`, or `dest-exchange` with `dest-exchange-key`.
    pub dest: Dest,
    /// `ack-mode`.
    pub ack_mode: AckMode,
    /// `reconnect-delay`, seconds.
    pub reconnect_delay_s: u64,
}

impl ShovelDef {
    /// Check a parameter `value` of vhost `vhost`; the error says what is
    /// wrong, as RabbitMQ's validation does.
    pub fn parse(value: &Value) -> Result<ShovelDef, String> {
        let Value::Object(v) = value else {
            return Err("the shovel definition must be a JSON object".into());
        };
        for (k, want) in [("src-protocol", "amqp091"), ("dest-protocol", "amqp091")] {
            if let Some(p) = v.get(k).filter(|p| p.as_str() != Some(want)) {
                return Err(format!(
                    "{k} {p} is not supported: Warren shovels speak amqp091"
                ));
            }
        }
        let (src_uri, src_vhost) = uri(v, "src-uri")?;
        let (dest_uri, dest_vhost) = uri(v, "dest-uri")?;
        if v.contains_key("src-exchange") {
            return Err(
                "src-exchange is not supported: Warren shovels read from a queue (src-queue)"
                    .into(),
            );
        }
        let src_queue = text(v, "src-queue")?.ok_or("Key \"src-queue\" not found in shovel")?;
        let dest = match (text(v, "dest-queue")?, text(v, "dest-exchange")?) {
            (Some(_), Some(_)) => {
                return Err("Cannot specify both 'dest-queue' and 'dest-exchange'".into())
            }
            (Some(q), None) => Dest::Queue(q),
            (None, Some(x)) => Dest::Exchange {
                name: x,
                key: text(v, "dest-exchange-key")?,
            },
            // RabbitMQ's default: the queue named like the source.
            (None, None) => Dest::Queue(src_queue.clone()),
        };
        Ok(ShovelDef {
            src_uri,
            src_vhost,
            src_queue,
            prefetch: prefetch(v)?,
            delete_after: delete_after(v)?,
            dest_uri,
            dest_vhost,
            dest,
            ack_mode: ack_mode(v)?,
            reconnect_delay_s: reconnect_delay(v)?,
        })
    }
}

/// An optional string value.
fn text(v: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{key} should be a string, actually was {other}")),
    }
}

/// A URI key (a string, or a list whose first URI is used) and the vhost
/// it names.
fn uri(v: &Map<String, Value>, key: &str) -> Result<(String, String), String> {
    let given = match v.get(key) {
        None => return Err(format!("Key \"{key}\" not found in shovel")),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(list)) => match list.first() {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(format!("{key} should be a URI or a list of URIs")),
        },
        Some(other) => return Err(format!("{key} should be a URI, actually was {other}")),
    };
    let vhost = local_vhost(&given).map_err(|why| format!("{key} {given:?}: {why}"))?;
    Ok((given, vhost))
}

/// The vhost of this broker that an AMQP URI names.
fn local_vhost(uri: &str) -> Result<String, String> {
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

fn prefetch(v: &Map<String, Value>) -> Result<u32, String> {
    match v.get("src-prefetch-count") {
        None => Ok(DEFAULT_PREFETCH),
        Some(p) => p
            .as_u64()
            .filter(|&n| n > 0)
            .map(|n| n.min(u64::from(MAX_PREFETCH)) as u32)
            .ok_or_else(|| {
                format!("src-prefetch-count should be a positive number, actually was {p}")
            }),
    }
}

fn delete_after(v: &Map<String, Value>) -> Result<DeleteAfter, String> {
    match v.get("src-delete-after") {
        None => Ok(DeleteAfter::Never),
        Some(Value::String(s)) if s == "never" => Ok(DeleteAfter::Never),
        Some(Value::String(s)) if s == "queue-length" => Ok(DeleteAfter::QueueLength),
        Some(n) if n.as_u64().is_some() => Ok(DeleteAfter::Count(n.as_u64().unwrap_or(0))),
        Some(other) => Err(format!(
            "src-delete-after should be a number greater than or equal to 0 or one of \"never\", \"queue-length\", actually was {other}"
        )),
    }
}

fn ack_mode(v: &Map<String, Value>) -> Result<AckMode, String> {
    match v.get("ack-mode").and_then(Value::as_str) {
        None if !v.contains_key("ack-mode") => Ok(AckMode::OnConfirm),
        Some("on-confirm") => Ok(AckMode::OnConfirm),
        Some("on-publish") => Ok(AckMode::OnPublish),
        Some("no-ack") => Ok(AckMode::NoAck),
        _ => Err(format!(
            "ack-mode should be one of on-confirm, on-publish, no-ack, actually was {}",
            v.get("ack-mode").unwrap_or(&Value::Null)
        )),
    }
}

fn reconnect_delay(v: &Map<String, Value>) -> Result<u64, String> {
    match v.get("reconnect-delay") {
        None => Ok(5),
        Some(d) => d
            .as_u64()
            .ok_or_else(|| format!("reconnect-delay should be a number, actually was {d}")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_move_between_local_queues_is_read_with_rabbitmq_defaults() {
        let d = ShovelDef::parse(
            &json!({"src-uri": "amqp://", "src-queue": "dlq", "dest-uri": ["amqp:///%2F"],
                    "dest-queue": "work", "src-delete-after": "queue-length"}),
        )
        .expect("valid");
        assert_eq!(d.src_vhost, "/");
        assert_eq!(d.dest_vhost, "/");
        assert_eq!(d.dest, Dest::Queue("work".into()));
        assert_eq!(d.delete_after, DeleteAfter::QueueLength);
        assert_eq!(d.ack_mode, AckMode::OnConfirm);
        assert_eq!(d.prefetch, DEFAULT_PREFETCH);
    }

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
    fn bad_definitions_say_what_is_wrong() {
        let bad = [
            json!({"src-queue": "q", "dest-uri": "amqp://"}),
            json!({"src-uri": "amqp://", "src-queue": "q", "dest-uri": "amqp://", "dest-queue": "a", "dest-exchange": "x"}),
            json!({"src-uri": "amqp://", "src-queue": "q", "dest-uri": "amqp://", "src-delete-after": "bogus"}),
            json!({"src-uri": "amqp://", "src-queue": "q", "dest-uri": "amqp://", "ack-mode": "bogus"}),
            json!({"src-uri": "amqp://", "dest-uri": "amqp://", "dest-queue": "a"}),
            json!("not an object"),
        ];
        for value in bad {
            assert!(ShovelDef::parse(&value).is_err(), "{value}");
        }
    }
}
