//! The headers a shovel adds to what it moves when asked
//! (`dest-add-forward-headers`, `dest-add-timestamp-header`), as
//! RabbitMQ's shovel writes them: `x-shovelled`, an array of one table
//! saying which shovel moved it from where to where, and
//! `x-shovelled-timestamp`, Unix seconds.

use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};
use bytes::Bytes;

use super::definition::{Dest, ShovelDef, Source};
use super::uri::redact;
use crate::broker::message::{decode_properties, with_header};

/// What the shovel adds to each message's properties.
#[derive(Debug, Clone)]
pub struct Stamp {
    forward: Option<AMQPValue>,
    timestamp: bool,
}

impl Stamp {
    /// The stamp of shovel `name` of `vhost`, moving on `node`; None if
    /// it adds nothing.
    pub fn new(def: &ShovelDef, node: &str, vhost: &str, name: &str) -> Option<Stamp> {
        if !def.add_forward_headers && !def.add_timestamp_header {
            return None;
        }
        let forward = def.add_forward_headers.then(|| {
            let mut t = FieldTable::default();
            let mut put = |k: &str, v: &str| {
                t.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
            };
            put("shovelled-by", node);
            put("shovel-type", "dynamic");
            put("shovel-name", name);
            put("shovel-vhost", vhost);
            // Without user and password, as RabbitMQ writes them.
            put("src-uri", &redact(&def.src_uri));
            put("dest-uri", &redact(&def.dest_uri));
            match &def.src {
                Source::Queue(q) => put("src-queue", q),
                Source::Exchange { name, key } => {
                    put("src-exchange", name);
                    put("src-exchange-key", key);
                }
            }
            match &def.dest {
                Dest::Queue(q) => put("dest-queue", q),
                Dest::Exchange { name, key } => {
                    put("dest-exchange", name);
                    if let Some(k) = key {
                        put("dest-exchange-key", k);
                    }
                }
                Dest::AsPublished => {}
            }
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(t)]))
        });
        Some(Stamp {
            forward,
            timestamp: def.add_timestamp_header,
        })
    }

    /// `properties` with the headers added (`now_s`: Unix seconds).
    pub fn apply(&self, properties: &Bytes, now_s: u64) -> Bytes {
        let mut out = properties.clone();
        if let Some(f) = &self.forward {
            out = with_header(&out, "x-shovelled", prepended(&out, f));
        }
        if self.timestamp {
            let ts = AMQPValue::LongLongInt(i64::try_from(now_s).unwrap_or(i64::MAX));
            out = with_header(&out, "x-shovelled-timestamp", ts);
        }
        out
    }
}

/// This shovel's entry before those of earlier shovels, as RabbitMQ
/// keeps a message's forwarding history.
fn prepended(properties: &Bytes, ours: &AMQPValue) -> AMQPValue {
    let earlier = decode_properties(properties).and_then(|p| {
        match p.headers().as_ref()?.inner().get("x-shovelled") {
            Some(AMQPValue::FieldArray(a)) => Some(a.as_slice().to_vec()),
            _ => None,
        }
    });
    let AMQPValue::FieldArray(mine) = ours else {
        return ours.clone();
    };
    let mut all = mine.as_slice().to_vec();
    all.extend(earlier.unwrap_or_default());
    AMQPValue::FieldArray(FieldArray::from(all))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn forward_and_timestamp_headers_name_the_shovel_and_the_time() {
        let def = ShovelDef::parse(
            &json!({"src-uri": "amqp://", "src-queue": "dlq", "dest-uri": "amqp://",
                    "dest-queue": "work", "dest-add-forward-headers": true,
                    "dest-add-timestamp-header": true}),
            "move1h",
        )
        .expect("valid");
        let stamp = Stamp::new(&def, "warren@vm", "/", "move1h").expect("adds headers");
        let stamped = stamp.apply(&Bytes::from_static(&[0, 0]), 1_796_382_346);
        let props = decode_properties(&stamped).expect("decodes");
        let headers = props.headers().clone().expect("headers");
        let h = headers.inner();
        assert_eq!(
            h.get("x-shovelled-timestamp"),
            Some(&AMQPValue::LongLongInt(1_796_382_346))
        );
        let Some(AMQPValue::FieldArray(a)) = h.get("x-shovelled") else {
            panic!("x-shovelled is an array: {h:?}");
        };
        let Some(AMQPValue::FieldTable(t)) = a.as_slice().first() else {
            panic!("of one table");
        };
        let text = |k: &str| match t.inner().get(k) {
            Some(AMQPValue::LongString(s)) => s.to_string(),
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(text("shovel-name"), "move1h");
        assert_eq!(text("src-queue"), "dlq");
        assert_eq!(text("dest-queue"), "work");
        assert_eq!(text("shovelled-by"), "warren@vm");
    }

    #[test]
    fn without_the_flags_nothing_is_added() {
        let def = ShovelDef::parse(
            &json!({"src-uri": "amqp://", "src-queue": "a", "dest-uri": "amqp://"}),
            "plain",
        )
        .expect("valid");
        assert!(Stamp::new(&def, "n", "/", "plain").is_none());
    }

    #[test]
    fn a_message_shovelled_twice_keeps_both_entries_newest_first() {
        let def = ShovelDef::parse(
            &json!({"src-uri": "amqp://", "src-queue": "a", "dest-uri": "amqp://",
                    "dest-queue": "b", "add-forward-headers": true}),
            "first",
        )
        .expect("valid");
        let first = Stamp::new(&def, "n", "/", "first").expect("stamp");
        let second = Stamp::new(&def, "n", "/", "second").expect("stamp");
        let twice = second.apply(&first.apply(&Bytes::from_static(&[0, 0]), 1), 2);
        let props = decode_properties(&twice).expect("decodes");
        let headers = props.headers().clone().expect("headers");
        let Some(AMQPValue::FieldArray(a)) = headers.inner().get("x-shovelled") else {
            panic!("an array");
        };
        let names: Vec<String> = a
            .as_slice()
            .iter()
            .map(|e| match e {
                AMQPValue::FieldTable(t) => match t.inner().get("shovel-name") {
                    Some(AMQPValue::LongString(s)) => s.to_string(),
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(names, ["second", "first"]);
    }
}
