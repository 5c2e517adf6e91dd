//! Dead-lettering: why a message died, and the message as it is republished
//! to the dead-letter exchange, with RabbitMQ's `x-death` history.
//!
//! `x-death` is an array of tables, one per (queue, reason), most recent
//! first: `count` (long), `reason`, `queue`, `time` (timestamp), `exchange`,
//! `routing-keys` (array), and `original-expiration` when the message had
//! one. `x-first-death-queue/-reason/-exchange` are set once. The
//! `expiration` property is removed, so the message does not expire again
//! on the same clock.

use std::sync::Arc;

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};

use super::arguments::as_text;
use super::message::{decode_properties, encode_properties, Message, QueuedMessage};

/// Why a message was dead-lettered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Rejected or nacked with requeue=false.
    Rejected,
    /// Its TTL ran out.
    Expired,
    /// Pushed out (or refused) by a length limit.
    Maxlen,
    /// Returned more often than x-delivery-limit allows.
    DeliveryLimit,
}

impl Reason {
    /// The name in x-death.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Expired => "expired",
            Reason::Maxlen => "maxlen",
            Reason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// A message leaving its queue for the dead-letter exchange.
#[derive(Debug)]
pub struct DeadLetter {
    /// The message, with its record in the source queue (settled once the
    /// copy is safely in its new queues).
    pub message: QueuedMessage,
    /// Why.
    pub reason: Reason,
}

/// The message to publish to `exchange` with `routing_key`, after dying in
/// `queue` for `reason` at `now_s`; also its updated x-death entries.
pub fn republished(
    m: &Message,
    queue: &str,
    reason: Reason,
    exchange: &str,
    routing_key: &str,
    now_s: u64,
) -> (Message, Vec<FieldTable>) {
    let props = decode_properties(&m.properties).unwrap_or_default();
    let mut headers = props.headers().clone().unwrap_or_default();
    let mut deaths: Vec<FieldTable> = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .filter_map(|v| match v {
                AMQPValue::FieldTable(t) => Some(t.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let same = |t: &FieldTable| {
        text(t, "queue").as_deref() == Some(queue)
            && text(t, "reason").as_deref() == Some(reason.name())
    };
    let entry = match deaths.iter().position(same) {
        Some(i) => {
            let mut t = deaths.remove(i);
            let count = match t.inner().get("count") {
                Some(v) => super::arguments::as_int(v).unwrap_or(0) as i64,
                None => 0,
            };
            t.insert("count".into(), AMQPValue::LongLongInt(count + 1));
            t
        }
        None => {
            let mut t = FieldTable::default();
            t.insert("count".into(), AMQPValue::LongLongInt(1));
            t.insert("reason".into(), long(reason.name()));
            t.insert("queue".into(), long(queue));
            t.insert("time".into(), AMQPValue::Timestamp(now_s));
            t.insert("exchange".into(), long(&m.exchange));
            let keys = FieldArray::from(vec![long(&m.routing_key)]);
            t.insert("routing-keys".into(), AMQPValue::FieldArray(keys));
            if let Some(exp) = props.expiration() {
                t.insert("original-expiration".into(), long(exp.as_str()));
            }
            t
        }
    };
    deaths.insert(0, entry);
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(
            deaths
                .iter()
                .cloned()
                .map(AMQPValue::FieldTable)
                .collect::<Vec<_>>(),
        )),
    );
    for (key, value) in [
        ("x-first-death-queue", queue),
        ("x-first-death-reason", reason.name()),
        ("x-first-death-exchange", &*m.exchange),
    ] {
        if !headers.contains_key(key) {
            headers.insert(key.into(), long(value));
        }
    }
    let props = without_expiration(props).with_headers(headers);
    let message = Message {
        exchange: Arc::from(exchange),
        routing_key: Arc::from(routing_key),
        properties: encode_properties(&props).unwrap_or_else(|| m.properties.clone()),
        body: m.body.clone(),
        persistent: m.persistent,
        expiration_ms: None,
    };
    (message, deaths)
}

/// RabbitMQ drops a dead-lettered message that would return to a queue it
/// already died in, unless a rejection happened on the way since (a cycle
/// of expiries only would loop forever with nobody acting on it): the
/// entries from the most recent back to the target queue's are checked.
pub fn is_cycle(deaths: &[FieldTable], target_queue: &str) -> bool {
    for t in deaths {
        if text(t, "reason").as_deref() == Some(Reason::Rejected.name()) {
            return false;
        }
        if text(t, "queue").as_deref() == Some(target_queue) {
            return true;
        }
    }
    false
}

fn without_expiration(p: AMQPProperties) -> AMQPProperties {
    let mut out = AMQPProperties::default();
    macro_rules! copy {
        ($get:ident, $with:ident) => {
            if let Some(v) = p.$get().clone() {
                out = out.$with(v);
            }
        };
    }
    copy!(content_type, with_content_type);
    copy!(content_encoding, with_content_encoding);
    copy!(delivery_mode, with_delivery_mode);
    copy!(priority, with_priority);
    copy!(correlation_id, with_correlation_id);
    copy!(reply_to, with_reply_to);
    copy!(message_id, with_message_id);
    copy!(timestamp, with_timestamp);
    copy!(kind, with_type);
    copy!(user_id, with_user_id);
    copy!(app_id, with_app_id);
    copy!(cluster_id, with_cluster_id);
    out
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn text(t: &FieldTable, key: &str) -> Option<String> {
    t.inner().get(key).and_then(as_text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::ShortString;
    use bytes::Bytes;

    fn message(props: &AMQPProperties) -> Message {
        Message {
            exchange: Arc::from("work-x"),
            routing_key: Arc::from("job"),
            properties: encode_properties(props).unwrap(),
            body: Bytes::from_static(b"payload"),
            persistent: true,
            expiration_ms: None,
        }
    }

    fn deaths_of(m: &Message) -> Vec<(String, String, i64)> {
        let p = decode_properties(&m.properties).unwrap();
        let h = p.headers().clone().unwrap();
        let Some(AMQPValue::FieldArray(a)) = h.inner().get("x-death") else {
            panic!("no x-death")
        };
        a.as_slice()
            .iter()
            .map(|v| match v {
                AMQPValue::FieldTable(t) => (
                    text(t, "queue").unwrap(),
                    text(t, "reason").unwrap(),
                    super::super::arguments::as_int(t.inner().get("count").unwrap()).unwrap()
                        as i64,
                ),
                _ => panic!("not a table"),
            })
            .collect()
    }

    #[test]
    fn retry_rounds_count_per_queue_and_reason_most_recent_first() {
        let props = AMQPProperties::default()
            .with_delivery_mode(2)
            .with_expiration(ShortString::from("60000"));
        let mut m = message(&props);
        for _ in 0..3 {
            m = republished(&m, "work", Reason::Rejected, "retry-x", "job", 1).0;
            m = republished(&m, "wait", Reason::Expired, "work-x", "job", 2).0;
        }
        assert_eq!(
            deaths_of(&m),
            vec![
                ("wait".to_string(), "expired".to_string(), 3),
                ("work".to_string(), "rejected".to_string(), 3)
            ]
        );
        let p = decode_properties(&m.properties).unwrap();
        assert!(p.expiration().is_none(), "expiration is removed");
        assert_eq!(p.delivery_mode(), &Some(2));
        let h = p.headers().clone().unwrap();
        assert_eq!(
            h.inner()
                .get("x-first-death-queue")
                .and_then(as_text)
                .as_deref(),
            Some("work")
        );
        assert_eq!(
            h.inner()
                .get("x-first-death-reason")
                .and_then(as_text)
                .as_deref(),
            Some("rejected")
        );
        assert_eq!(&*m.exchange, "work-x");
    }

    #[test]
    fn expiry_only_cycles_are_detected() {
        let m = message(&AMQPProperties::default());
        let (_, deaths) = republished(&m, "q", Reason::Expired, "", "q", 1);
        assert!(is_cycle(&deaths, "q"));
        assert!(!is_cycle(&deaths, "other"));
        // Rejected back into its own queue: not a cycle (someone acted).
        let (m2, deaths) = republished(&m, "q", Reason::Rejected, "", "q", 1);
        assert!(!is_cycle(&deaths, "q"));
        // Then expiring there: the span back to q's latest entry holds no
        // rejection, so it is a cycle (as rabbit_dead_letter:is_cycle).
        let (_, deaths) = republished(&m2, "q", Reason::Expired, "", "q", 1);
        assert!(is_cycle(&deaths, "q"));
        // An old rejection does not excuse a later loop of expiries.
        let (a, _) = republished(&m2, "a", Reason::Expired, "", "b", 1);
        let (_, deaths) = republished(&a, "b", Reason::Expired, "", "a", 1);
        assert!(is_cycle(&deaths, "a"));
    }
}
