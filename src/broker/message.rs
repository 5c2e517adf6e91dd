//! A message as the broker holds it: the published [`Message`] (shared by
//! every queue it was routed to), its place in one queue
//! ([`QueuedMessage`]), and reading and rewriting its encoded properties.

use std::sync::Arc;

use amq_protocol::protocol::basic::{parse_properties, AMQPProperties};
use bytes::Bytes;

pub use crate::message::Message;

/// The delivery_mode in an encoded property list (0 when absent or
/// malformed).
pub fn delivery_mode(raw: &[u8]) -> u8 {
    octet_property(raw, 12)
}

/// The priority in an encoded property list (0 when absent or malformed).
pub fn priority(raw: &[u8]) -> u8 {
    octet_property(raw, 11)
}

/// One of the two octet properties, delivery_mode (flag bit 12) or
/// priority (bit 11), read without decoding: they follow content-type,
/// content-encoding and headers, which are skipped by their lengths.
fn octet_property(raw: &[u8], wanted: u16) -> u8 {
    let Some((flag_bytes, mut rest)) = raw.split_first_chunk::<2>() else {
        return 0;
    };
    let flags = u16::from_be_bytes(*flag_bytes);
    if flags & (1 << wanted) == 0 {
        return 0;
    }
    for bit in (wanted + 1..=15).rev() {
        if flags & (1 << bit) == 0 {
            continue;
        }
        let len = if bit == 12 {
            1
        } else if bit == 13 {
            match rest.split_first_chunk::<4>() {
                Some((n, tail)) => {
                    rest = tail;
                    u32::from_be_bytes(*n) as usize
                }
                None => return 0,
            }
        } else {
            match rest.split_first() {
                Some((n, tail)) => {
                    rest = tail;
                    usize::from(*n)
                }
                None => return 0,
            }
        };
        match rest.get(len..) {
            Some(tail) => rest = tail,
            None => return 0,
        }
    }
    rest.first().copied().unwrap_or(0)
}

/// Decode an encoded property list (refused when its headers nest too
/// deep for the recursive parser: properties also come back from disk).
pub fn decode_properties(raw: &[u8]) -> Option<AMQPProperties> {
    crate::protocol::nesting::check_properties(raw).ok()?;
    parse_properties(raw).ok().map(|(_, p)| p)
}

/// The per-message TTL of an encoded property list, as accepted at
/// publish (a message read back from disk carries only its properties).
pub fn expiration_ms(raw: &[u8]) -> Option<u64> {
    let props = decode_properties(raw)?;
    props.expiration().as_ref()?.as_str().parse().ok()
}

/// Check an encoded basic property list without decoding it: the flags
/// name only basic's 14 properties (no continuation) and every field fits
/// in the bytes given. Used where decoding (which allocates) is skipped, so
/// that no malformed header reaches a consumer's client.
pub fn properties_well_formed(raw: &[u8]) -> bool {
    let Some((flag_bytes, mut rest)) = raw.split_first_chunk::<2>() else {
        return false;
    };
    let flags = u16::from_be_bytes(*flag_bytes);
    if flags & 0b11 != 0 {
        return false;
    }
    for bit in (2..=15).rev() {
        if flags & (1 << bit) == 0 {
            continue;
        }
        let len = match bit {
            // headers: a long-length table.
            13 => match rest.split_first_chunk::<4>() {
                Some((n, tail)) => {
                    rest = tail;
                    u32::from_be_bytes(*n) as usize
                }
                None => return false,
            },
            // delivery_mode, priority: one octet.
            12 | 11 => 1,
            // timestamp: 64 bits.
            6 => 8,
            // the rest are short strings.
            _ => match rest.split_first() {
                Some((n, tail)) => {
                    rest = tail;
                    usize::from(*n)
                }
                None => return false,
            },
        };
        if rest.len() < len {
            return false;
        }
        rest = &rest[len..];
    }
    true
}

/// The property list with header `x-delivery-count` set to `count`
/// (x-delivery-limit queues show consumers how often a message came back).
pub fn with_delivery_count(raw: &Bytes, count: u32) -> Bytes {
    with_header(
        raw,
        "x-delivery-count",
        amq_protocol::types::AMQPValue::LongLongInt(i64::from(count)),
    )
}

/// The property list with header `name` set to `value` (unchanged if it
/// cannot be decoded).
pub fn with_header(raw: &Bytes, name: &str, value: amq_protocol::types::AMQPValue) -> Bytes {
    let Some(props) = decode_properties(raw) else {
        return raw.clone();
    };
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(name.into(), value);
    encode_properties(&props.with_headers(headers)).unwrap_or_else(|| raw.clone())
}

/// Encode a property list.
pub fn encode_properties(props: &AMQPProperties) -> Option<Bytes> {
    cookie_factory::gen_simple(
        amq_protocol::protocol::basic::gen_properties(props),
        Vec::new(),
    )
    .ok()
    .map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};

    #[test]
    fn well_formed_properties_pass() {
        let mut h = FieldTable::default();
        h.insert(
            ShortString::from("k"),
            AMQPValue::LongString(LongString::from("v")),
        );
        let props = AMQPProperties::default()
            .with_content_type(ShortString::from("text/plain"))
            .with_headers(h)
            .with_delivery_mode(2)
            .with_timestamp(7)
            .with_app_id(ShortString::from("app"));
        let raw = encode_properties(&props).unwrap();
        assert!(properties_well_formed(&raw));
        assert!(properties_well_formed(&[0, 0]));
    }

    #[test]
    fn delivery_mode_is_found_behind_earlier_fields() {
        let mut h = FieldTable::default();
        h.insert(
            ShortString::from("k"),
            AMQPValue::LongString(LongString::from("v")),
        );
        let props = AMQPProperties::default()
            .with_content_type(ShortString::from("text/plain"))
            .with_content_encoding(ShortString::from("gzip"))
            .with_headers(h)
            .with_delivery_mode(2)
            .with_priority(9);
        assert_eq!(delivery_mode(&encode_properties(&props).unwrap()), 2);
        assert_eq!(priority(&encode_properties(&props).unwrap()), 9);
        let no_mode = AMQPProperties::default().with_priority(4);
        assert_eq!(priority(&encode_properties(&no_mode).unwrap()), 4);
        let transient = AMQPProperties::default().with_delivery_mode(1);
        assert_eq!(delivery_mode(&encode_properties(&transient).unwrap()), 1);
        assert_eq!(delivery_mode(&[0, 0]), 0);
        assert_eq!(delivery_mode(&[0x90, 0, 200]), 0);
    }

    #[test]
    fn malformed_properties_fail() {
        // content-type flagged, length 200, 3 bytes given.
        assert!(!properties_well_formed(&[
            0x80, 0x00, 200, b'a', b'b', b'c'
        ]));
        // continuation bit.
        assert!(!properties_well_formed(&[0x00, 0x01]));
        // timestamp flagged, too short.
        assert!(!properties_well_formed(&[0x00, 0x40, 0, 0, 0]));
        assert!(!properties_well_formed(&[0x80]));
    }
}

/// A message's place in one queue.
#[derive(Clone, Debug)]
pub struct QueuedMessage {
    /// Position in the queue, increasing with each enqueue; a requeued
    /// message returns to its original position by this number.
    pub seq: u64,
    /// The shared message.
    pub message: Arc<Message>,
    /// Set once the message has been delivered and returned.
    pub redelivered: bool,
    /// Its record on disk, if it has one.
    pub disk: Option<crate::store::DiskRef>,
    /// When it expires in this queue (Unix milliseconds).
    pub expires_at_ms: Option<u64>,
    /// Times it went back to this queue unacked (x-delivery-count).
    pub delivery_count: u32,
    /// Delivered and unacked, its body was dropped from memory: `message`
    /// has an empty body and the record at `disk` holds the real one.
    pub body_on_disk: bool,
}

impl From<crate::store::queue_log::TailRecord> for QueuedMessage {
    fn from(r: crate::store::queue_log::TailRecord) -> Self {
        QueuedMessage {
            seq: r.seq,
            message: Arc::new(r.message),
            redelivered: r.redelivered,
            disk: Some(r.disk),
            expires_at_ms: r.expires_at_ms,
            delivery_count: r.delivery_count,
            body_on_disk: false,
        }
    }
}

impl QueuedMessage {
    /// A message that was never put in a queue (refused by a length limit
    /// and dead-lettered, or a direct reply): no place, no record.
    pub fn unqueued(message: Arc<Message>) -> Self {
        QueuedMessage {
            seq: 0,
            message,
            redelivered: false,
            disk: None,
            expires_at_ms: None,
            delivery_count: 0,
            body_on_disk: false,
        }
    }
}

/// Milliseconds since the Unix epoch (message expiry is kept in wall-clock
/// time so it survives restarts).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
