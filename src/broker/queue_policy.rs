//! What a queue's x-arguments make it do (already validated at declare by
//! `arguments::validate_queue_arguments`): message TTL, dead-lettering and
//! length limits.

use amq_protocol::types::FieldTable;

use super::arguments::{as_int, as_text};

/// What happens to a publish that would overflow a length limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Drop (or dead-letter) the oldest messages to make room.
    #[default]
    DropHead,
    /// Refuse the new message (nack it under confirms).
    RejectPublish,
    /// Refuse it and dead-letter it.
    RejectPublishDlx,
}

/// A queue's behaviour from its arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueuePolicy {
    /// x-message-ttl, milliseconds.
    pub message_ttl_ms: Option<u64>,
    /// x-dead-letter-exchange ("" is the default exchange).
    pub dead_letter_exchange: Option<String>,
    /// x-dead-letter-routing-key (else the message's own keys).
    pub dead_letter_routing_key: Option<String>,
    /// x-max-length, messages.
    pub max_length: Option<u64>,
    /// x-max-length-bytes, body bytes.
    pub max_length_bytes: Option<u64>,
    /// x-overflow.
    pub overflow: Overflow,
    /// x-overflow was given (a policy's cannot override it then).
    pub overflow_declared: bool,
    /// x-single-active-consumer.
    pub single_active_consumer: bool,
    /// x-expires: deleted after this long unused, milliseconds.
    pub expires_ms: Option<u64>,
    /// x-delivery-limit: returns allowed before a message is dead-lettered.
    pub delivery_limit: Option<u64>,
    /// x-max-priority (1–255; validated at declare).
    pub max_priority: Option<u8>,
    /// x-consumer-timeout: a delivery unacked this long, ms, is taken back.
    pub consumer_timeout_ms: Option<u64>,
}

impl QueuePolicy {
    /// Read the arguments a queue was declared with.
    pub fn from_arguments(args: &FieldTable) -> Self {
        let get = |k: &str| args.inner().get(k);
        let int = |k: &str| get(k).and_then(as_int).and_then(|i| u64::try_from(i).ok());
        let text = |k: &str| get(k).and_then(as_text);
        QueuePolicy {
            message_ttl_ms: int("x-message-ttl"),
            dead_letter_exchange: text("x-dead-letter-exchange"),
            dead_letter_routing_key: text("x-dead-letter-routing-key"),
            max_length: int("x-max-length"),
            max_length_bytes: int("x-max-length-bytes"),
            overflow: match text("x-overflow").as_deref() {
                Some("reject-publish") => Overflow::RejectPublish,
                Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
                _ => Overflow::DropHead,
            },
            overflow_declared: get("x-overflow").is_some(),
            single_active_consumer: matches!(
                get("x-single-active-consumer"),
                Some(amq_protocol::types::AMQPValue::Boolean(true))
            ),
            expires_ms: int("x-expires"),
            delivery_limit: int("x-delivery-limit"),
            max_priority: int("x-max-priority").map(|p| p.min(255) as u8),
            consumer_timeout_ms: int("x-consumer-timeout"),
        }
    }

    /// Whether a message of `body` bytes would go over a limit of a queue
    /// holding `count` messages of `bytes` body bytes.
    pub fn over_limit(&self, count: u64, bytes: u64) -> bool {
        self.max_length.is_some_and(|m| count > m)
            || self.max_length_bytes.is_some_and(|m| bytes > m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{AMQPValue, LongString};

    #[test]
    fn arguments_are_read() {
        let mut a = FieldTable::default();
        a.insert("x-message-ttl".into(), AMQPValue::LongInt(500));
        a.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from("dlx")),
        );
        a.insert("x-max-length".into(), AMQPValue::ShortShortUInt(2));
        a.insert(
            "x-overflow".into(),
            AMQPValue::LongString(LongString::from("reject-publish-dlx")),
        );
        let p = QueuePolicy::from_arguments(&a);
        assert_eq!(p.message_ttl_ms, Some(500));
        assert_eq!(p.dead_letter_exchange.as_deref(), Some("dlx"));
        assert_eq!(p.max_length, Some(2));
        assert_eq!(p.overflow, Overflow::RejectPublishDlx);
        assert!(!p.over_limit(2, 0) && p.over_limit(3, 0));
    }
}
