//! A dynamic shovel's definition: the value of a `shovel` runtime
//! parameter (RabbitMQ's keys), checked and read into [`ShovelDef`].
//!
//! Warren's shovels move messages between queues and exchanges of this
//! broker: a URI names a vhost of it (`amqp://`, `amqp:///vhost`, or a
//! user and `localhost`); a URI of another host is refused. The source is
//! a queue or an exchange (`source.rs`); the destination a queue or an
//! exchange.

use serde_json::{Map, Value};

pub use super::source::Source;

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
    /// Neither given: as RabbitMQ, to the exchange each message was
    /// published to, with its own routing key.
    AsPublished,
}

/// A checked shovel definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShovelDef {
    /// `src-uri` as given.
    pub src_uri: String,
    /// The vhost it names.
    pub src_vhost: String,
    /// `src-queue`, or `src-exchange` with `src-exchange-key`.
    pub src: Source,
    /// `src-queue-args`: the source's arguments if the shovel declares it.
    pub src_queue_args: Map<String, Value>,
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
    /// `dest-queue-args`: the destination's arguments if the shovel
    /// declares it.
    pub dest_queue_args: Map<String, Value>,
    /// `ack-mode`.
    pub ack_mode: AckMode,
    /// `reconnect-delay`, seconds.
    pub reconnect_delay_s: u64,
    /// `dest-add-forward-headers`: add the `x-shovelled` header.
    pub add_forward_headers: bool,
    /// `dest-add-timestamp-header`: add `x-shovelled-timestamp`.
    pub add_timestamp_header: bool,
}

impl ShovelDef {
    /// Check the parameter `value` of shovel `name`; the error has one line
    /// per failed check, in RabbitMQ's words (Erlang terms HTML-escaped, as
    /// its API shows them).
    pub fn parse(value: &Value, name: &str) -> Result<ShovelDef, String> {
        let Value::Object(v) = value else {
            return Err(format!(
                "the value of shovel {name} should be an object, actually was {}",
                erl(value)
            ));
        };
        let mut errors = Errors::default();
        for (k, want) in [("src-protocol", "amqp091"), ("dest-protocol", "amqp091")] {
            if let Some(p) = v.get(k).filter(|p| p.as_str() != Some(want)) {
                errors.push(format!(
                    "{k} should be \"amqp091\" (Warren shovels speak AMQP 0-9-1), actually was {}",
                    erl(p)
                ));
            }
        }
        let source = errors.take(Source::parse(v, queue_name, text));
        let src = errors.take(uri(v, "src-uri", name));
        let dest = errors.take(uri(v, "dest-uri", name));
        let dest_kind = errors.take(destination(v));
        let delete_after = errors.take(delete_after(v));
        let ack_mode = errors.take(ack_mode(v));
        if ack_mode == Some(AckMode::NoAck) && matches!(delete_after, Some(DeleteAfter::Count(_))) {
            errors.push("Cannot specify 'no-ack' and numerical 'delete-after'".into());
        }
        if matches!(source, Some(Source::Exchange { .. }))
            && delete_after == Some(DeleteAfter::QueueLength)
        {
            // RabbitMQ takes it and then fails to start, again and again.
            errors.push("Cannot specify 'src-exchange' and 'queue-length' 'delete-after': an exchange has no length".into());
        }
        let prefetch = errors.take(prefetch(v));
        let reconnect_delay_s = errors.take(reconnect_delay(v));
        let src_queue_args = errors.take(queue_args(v, "src-queue-args"));
        let dest_queue_args = errors.take(queue_args(v, "dest-queue-args"));
        let add_forward_headers = errors.take(flag(
            v,
            &["dest-add-forward-headers", "add-forward-headers"],
        ));
        let add_timestamp_header = errors.take(flag(
            v,
            &["dest-add-timestamp-header", "add-timestamp-header"],
        ));
        errors.into_result()?;
        // Every `take` above succeeded when there are no errors.
        let missing = || "an internal check failed".to_string();
        let source = source.ok_or_else(missing)?;
        let (src_uri, src_vhost) = src.ok_or_else(missing)?;
        let (dest_uri, dest_vhost) = dest.ok_or_else(missing)?;
        let dest = dest_kind.flatten().unwrap_or(Dest::AsPublished);
        if src_vhost == dest_vhost {
            loops(&source, &dest)?;
        }
        Ok(ShovelDef {
            dest,
            src_uri,
            src_vhost,
            src: source,
            src_queue_args: src_queue_args.ok_or_else(missing)?,
            prefetch: prefetch.ok_or_else(missing)?,
            delete_after: delete_after.ok_or_else(missing)?,
            dest_uri,
            dest_vhost,
            dest_queue_args: dest_queue_args.ok_or_else(missing)?,
            ack_mode: ack_mode.ok_or_else(missing)?,
            reconnect_delay_s: reconnect_delay_s.ok_or_else(missing)?,
            add_forward_headers: add_forward_headers.ok_or_else(missing)?,
            add_timestamp_header: add_timestamp_header.ok_or_else(missing)?,
        })
    }
}

/// Why a shovel within one vhost would move each message back where it
/// came from, forever (RabbitMQ lets it; Warren's loop has no network to
/// slow it down).
fn loops(source: &Source, dest: &Dest) -> Result<(), String> {
    let why = match (source, dest) {
        (Source::Queue(q), Dest::Queue(d)) if q == d => "'dest-queue' is 'src-queue'",
        (Source::Exchange { name, .. }, Dest::Exchange { name: d, .. }) if name == d => {
            "'dest-exchange' is 'src-exchange'"
        }
        (Source::Exchange { .. }, Dest::AsPublished) => {
            "with 'src-exchange' and no 'dest-exchange' or 'dest-queue', messages go back to their exchange"
        }
        _ => return Ok(()),
    };
    Err(format!("{why}: the shovel would move messages in a loop"))
}

/// RabbitMQ's refusal of the keys of `value` it does not know, if any.
/// Checked when a shovel is declared through the API; a definition stored
/// earlier (or imported) with such keys still runs, the keys ignored.
pub fn unknown_keys(value: &Value, name: &str) -> Option<String> {
    let unknown: Vec<String> = value
        .as_object()?
        .iter()
        .filter(|(k, _)| !KNOWN_KEYS.contains(&k.as_str()))
        .map(|(k, val)| format!("{{{},{}}}", erl(&Value::String(k.clone())), erl(val)))
        .collect();
    (!unknown.is_empty()).then(|| format!("Unrecognised terms [{}] in {name}", unknown.join(",")))
}

/// The keys of a shovel definition Warren reads (RabbitMQ's, with the
/// legacy names it still accepts); any other key is refused, as RabbitMQ
/// does.
const KNOWN_KEYS: &[&str] = &[
    "src-protocol",
    "src-uri",
    "src-queue",
    "src-queue-args",
    "src-exchange",
    "src-exchange-key",
    "src-prefetch-count",
    "prefetch-count",
    "src-delete-after",
    "delete-after",
    "dest-protocol",
    "dest-uri",
    "dest-queue",
    "dest-queue-args",
    "dest-exchange",
    "dest-exchange-key",
    "dest-add-forward-headers",
    "add-forward-headers",
    "dest-add-timestamp-header",
    "add-timestamp-header",
    "ack-mode",
    "reconnect-delay",
    // Accepted as RabbitMQ does; Warren moves properties unchanged.
    "dest-publish-properties",
    "publish-properties",
    "dest-publish-fields",
    "publish-fields",
];

/// Failed checks, in the order found.
#[derive(Default)]
struct Errors(Vec<String>);

impl Errors {
    fn push(&mut self, e: String) {
        self.0.push(e);
    }

    /// The value of a check, or None with its error kept.
    fn take<T>(&mut self, r: Result<T, String>) -> Option<T> {
        r.map_err(|e| self.0.push(e)).ok()
    }

    fn into_result(self) -> Result<(), String> {
        match self.0.is_empty() {
            true => Ok(()),
            false => Err(self.0.join("\n")),
        }
    }
}

/// A JSON value as RabbitMQ's validation messages print the Erlang term
/// it decodes to (`<<"text">>` for a string), HTML-escaped as its API
/// answers them.
pub fn erl(v: &Value) -> String {
    term(v)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn term(v: &Value) -> String {
    let binary = |s: &str| format!("<<{}>>", Value::String(s.to_string()));
    match v {
        Value::String(s) => binary(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(term).collect();
            format!("[{}]", items.join(","))
        }
        Value::Object(m) => {
            let pairs: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{{{},{}}}", binary(k), term(v)))
                .collect();
            format!("[{}]", pairs.join(","))
        }
        other => other.to_string(),
    }
}

/// An optional string value.
fn text(v: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!(
            "{key} should be binary, actually was {}",
            erl(other)
        )),
    }
}

/// A queue name: 1 to 255 bytes (a shovel declares a missing queue by
/// this name: an empty one would be server-named, a new one each time).
fn queue_name(v: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match text(v, key)? {
        Some(q) if q.is_empty() || q.len() > 255 => Err(format!(
            "{key} should be a queue name of 1 to 255 bytes, actually was {}",
            erl(&Value::String(q))
        )),
        other => Ok(other),
    }
}

/// `dest-queue` or `dest-exchange` (with its key); None: neither given.
fn destination(v: &Map<String, Value>) -> Result<Option<Dest>, String> {
    match (queue_name(v, "dest-queue")?, text(v, "dest-exchange")?) {
        (Some(_), Some(_)) => Err("Cannot specify 'dest-exchange' and 'dest-queue'".into()),
        (Some(q), None) => Ok(Some(Dest::Queue(q))),
        (None, Some(x)) => Ok(Some(Dest::Exchange {
            name: x,
            key: text(v, "dest-exchange-key")?,
        })),
        (None, None) => Ok(None),
    }
}

/// A queue-arguments key: an object (empty when absent).
fn queue_args(v: &Map<String, Value>, key: &str) -> Result<Map<String, Value>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => {
            // Checked now, as queue.declare arguments, not when declaring.
            crate::management::json::json_to_table(&Value::Object(m.clone()))
                .map_err(|why| format!("{key} is not valid: {why}"))?;
            Ok(m.clone())
        }
        Some(other) => Err(format!(
            "{key} should be a table, actually was {}",
            erl(other)
        )),
    }
}

/// A boolean under any of `keys` (the first given wins); false if none.
fn flag(v: &Map<String, Value>, keys: &[&str]) -> Result<bool, String> {
    match keys.iter().find_map(|k| v.get(*k).map(|x| (k, x))) {
        None => Ok(false),
        Some((_, Value::Bool(b))) => Ok(*b),
        Some((k, other)) => Err(format!(
            "{k} should be boolean, actually was {}",
            erl(other)
        )),
    }
}

/// A URI key (a string, or a list whose first URI is used) and the vhost
/// it names.
fn uri(v: &Map<String, Value>, key: &str, shovel: &str) -> Result<(String, String), String> {
    let given = match v.get(key) {
        None => return Err(format!("Key \"{key}\" not found in {shovel}")),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(list)) => match list.first() {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(format!("{key} should be a URI or a list of URIs")),
        },
        Some(other) => {
            return Err(format!(
                "{key} should be a URI, actually was {}",
                erl(other)
            ))
        }
    };
    let vhost = super::uri::local_vhost(&given)
        .map_err(|why| format!("{given:?} not a valid URI: {why}"))?;
    Ok((given, vhost))
}

fn prefetch(v: &Map<String, Value>) -> Result<u32, String> {
    let Some((key, p)) = ["src-prefetch-count", "prefetch-count"]
        .iter()
        .find_map(|k| v.get(*k).map(|p| (k, p)))
    else {
        return Ok(DEFAULT_PREFETCH);
    };
    p.as_u64()
        .filter(|&n| n > 0)
        .map(|n| n.min(u64::from(MAX_PREFETCH)) as u32)
        .ok_or_else(|| {
            format!(
                "{key} should be a number greater than 0, actually was {}",
                erl(p)
            )
        })
}

fn delete_after(v: &Map<String, Value>) -> Result<DeleteAfter, String> {
    let Some((key, given)) = ["src-delete-after", "delete-after"]
        .iter()
        .find_map(|k| v.get(*k).map(|p| (k, p)))
    else {
        return Ok(DeleteAfter::Never);
    };
    match given {
        Value::String(s) if s == "never" => Ok(DeleteAfter::Never),
        Value::String(s) if s == "queue-length" => Ok(DeleteAfter::QueueLength),
        n => n.as_u64().map(DeleteAfter::Count).ok_or_else(|| {
            format!(
                "{key} should be a number greater than or equal to 0, \"never\" or \"queue-length\", actually was {}",
                erl(n)
            )
        }),
    }
}

fn ack_mode(v: &Map<String, Value>) -> Result<AckMode, String> {
    let Some(given) = v.get("ack-mode") else {
        return Ok(AckMode::OnConfirm);
    };
    match given.as_str() {
        Some("on-confirm") => Ok(AckMode::OnConfirm),
        Some("on-publish") => Ok(AckMode::OnPublish),
        Some("no-ack") => Ok(AckMode::NoAck),
        _ => Err(format!(
            "ack-mode should be one of {}, actually was {}",
            erl(&serde_json::json!(["no-ack", "on-publish", "on-confirm"])),
            erl(given)
        )),
    }
}

/// `reconnect-delay`, seconds: any non-negative number, as RabbitMQ
/// takes it (a fraction rounds up to the next second).
fn reconnect_delay(v: &Map<String, Value>) -> Result<u64, String> {
    let Some(d) = v.get("reconnect-delay") else {
        return Ok(5);
    };
    d.as_f64()
        .filter(|s| *s >= 0.0 && s.is_finite())
        .map(|s| s.ceil().min(86_400.0) as u64)
        .ok_or_else(|| {
            format!(
                "reconnect-delay should be a number, actually was {}",
                erl(d)
            )
        })
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
            "move",
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
            assert!(ShovelDef::parse(&value, "bad").is_err(), "{value}");
        }
    }

    /// The texts RabbitMQ 3.10.8 answered (conformance/recordings/
    /// rabbitmq-shovel.md, section E), for the checks Warren shares.
    #[test]
    fn refusals_read_as_rabbitmq_words_them() {
        let base = json!({"src-uri": "amqp://", "src-queue": "vq", "dest-uri": "amqp://", "dest-queue": "vq2"});
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            ShovelDef::parse(&b, "bad").unwrap_err()
        };
        let without = |k: &str| {
            let mut b = base.clone();
            b.as_object_mut().unwrap().remove(k);
            ShovelDef::parse(&b, "bad").unwrap_err()
        };
        assert_eq!(without("src-uri"), "Key \"src-uri\" not found in bad");
        assert_eq!(
            without("src-queue"),
            "Must specify 'src-exchange' or 'src-queue'"
        );
        assert_eq!(
            with("dest-exchange", json!("x")),
            "Cannot specify 'dest-exchange' and 'dest-queue'"
        );
        let delete_after = "src-delete-after should be a number greater than or equal to 0, \"never\" or \"queue-length\", actually was";
        assert_eq!(
            with("src-delete-after", json!("bogus")),
            format!("{delete_after} &lt;&lt;\"bogus\"&gt;&gt;")
        );
        assert_eq!(
            with("src-delete-after", json!(-1)),
            format!("{delete_after} -1")
        );
        assert_eq!(
            with("src-delete-after", json!(1.5)),
            format!("{delete_after} 1.5")
        );
        assert_eq!(
            with("ack-mode", json!("bogus")),
            "ack-mode should be one of [&lt;&lt;\"no-ack\"&gt;&gt;,&lt;&lt;\"on-publish\"&gt;&gt;,&lt;&lt;\"on-confirm\"&gt;&gt;], actually was &lt;&lt;\"bogus\"&gt;&gt;"
        );
        assert_eq!(
            with("reconnect-delay", json!("x")),
            "reconnect-delay should be a number, actually was &lt;&lt;\"x\"&gt;&gt;"
        );
        let mut bogus = base.clone();
        bogus["bogus-key"] = json!(1);
        assert_eq!(
            unknown_keys(&bogus, "bad").as_deref(),
            Some("Unrecognised terms [{&lt;&lt;\"bogus-key\"&gt;&gt;,1}] in bad")
        );
        assert!(
            ShovelDef::parse(&bogus, "bad").is_ok(),
            "stored ones still run"
        );
        assert_eq!(
            with("dest-queue", json!(5)),
            "dest-queue should be binary, actually was 5"
        );
        let mut no_ack = base.clone();
        no_ack["ack-mode"] = json!("no-ack");
        no_ack["src-delete-after"] = json!(5);
        assert_eq!(
            ShovelDef::parse(&no_ack, "bad").unwrap_err(),
            "Cannot specify 'no-ack' and numerical 'delete-after'"
        );
        // Several failures: one line each.
        let several = ShovelDef::parse(&json!({"src-delete-after": "bogus"}), "bad").unwrap_err();
        assert_eq!(several.lines().count(), 4, "{several}");
    }

    #[test]
    fn queue_arguments_and_header_flags_are_read() {
        let d = ShovelDef::parse(
            &json!({"src-uri": "amqp://", "src-queue": "a", "dest-uri": "amqp://", "dest-queue": "b",
                    "dest-queue-args": {"x-max-length": 100}, "add-forward-headers": true,
                    "dest-add-timestamp-header": true}),
            "h",
        )
        .expect("valid");
        assert_eq!(d.dest_queue_args["x-max-length"], 100);
        assert!(d.src_queue_args.is_empty());
        assert!(d.add_forward_headers && d.add_timestamp_header);
        let base = json!({"src-uri": "amqp://", "src-queue": "a", "dest-uri": "amqp://", "reconnect-delay": 2.5});
        assert_eq!(
            ShovelDef::parse(&base, "f")
                .expect("valid")
                .reconnect_delay_s,
            3
        );
    }

    #[test]
    fn a_shovel_onto_its_own_source_or_an_unnamed_queue_is_refused() {
        let looped = json!({"src-uri": "amqp://", "src-queue": "q", "dest-uri": "amqp://", "dest-queue": "q"});
        assert!(ShovelDef::parse(&looped, "l").is_err());
        let unnamed = json!({"src-uri": "amqp://", "src-queue": "", "dest-uri": "amqp://", "dest-queue": "d"});
        assert!(ShovelDef::parse(&unnamed, "u").is_err());
        let long =
            json!({"src-uri": "amqp://", "src-queue": "x".repeat(256), "dest-uri": "amqp://"});
        assert!(ShovelDef::parse(&long, "long").is_err());
        let default = json!({"src-uri": "amqp://", "src-queue": "q", "dest-uri": "amqp://"});
        assert_eq!(
            ShovelDef::parse(&default, "d").expect("valid").dest,
            Dest::AsPublished
        );
    }
}
