//! One message record in a segment file: how a message is laid out on disk
//! and checked when read back.
//!
//! ```text
//! record  = len:u32 crc:u32 payload[len]          (little-endian)
//! crc     = CRC-32 (IEEE) of payload
//! payload = seq:u64 flags:u8 priority:u8 delivery_count:u16
//!           expires_at_ms:u64
//!           exchange_len:u8 exchange  routing_key_len:u8 routing_key
//!           properties_len:u32 properties
//!           extension_len:u32 extension
//!           body (the rest)
//! ```
//! `priority`, `delivery_count`, `expires_at_ms` and `extension` (room for
//! x-death and other per-message state) are written as zero/empty today and
//! kept for the queue extensions.

use std::sync::Arc;

use bytes::Bytes;

use crate::message::Message;

/// Bytes before the payload: length and checksum.
pub const HEADER_LEN: usize = 8;
/// Fixed part of the payload (everything but the variable-length fields).
pub const MIN_PAYLOAD: usize = 8 + 1 + 1 + 2 + 8 + 1 + 1 + 4 + 4;
/// Largest payload accepted when reading (record offsets are 32-bit; the
/// largest message body Warren takes is 512 MiB, properties come on top).
pub const MAX_PAYLOAD: usize = (u32::MAX / 2) as usize;

/// Record flag: the message is persistent (delivery_mode 2) and was
/// written for durability; records without it are spilled transient
/// messages, skipped on recovery.
pub const FLAG_PERSISTENT: u8 = 1;

/// A record's fixed fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordMeta {
    /// The queue sequence number it was written with.
    pub seq: u64,
    /// Flag bits (`FLAG_*`).
    pub flags: u8,
    /// When the message expires in its queue (Unix milliseconds).
    pub expires_at_ms: Option<u64>,
    /// Body length (filled in when read; ignored when written).
    pub body_len: u64,
}

/// Append the record for `message` to `out`; returns its total length.
pub fn encode(out: &mut Vec<u8>, meta: &RecordMeta, message: &Message) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    out.extend_from_slice(&meta.seq.to_le_bytes());
    out.push(meta.flags);
    out.push(0); // priority
    out.extend_from_slice(&0u16.to_le_bytes()); // delivery count
    out.extend_from_slice(&meta.expires_at_ms.unwrap_or(0).to_le_bytes());
    // Exchange names and routing keys are short strings (≤ 255 bytes) in
    // the protocol, so one length byte holds them.
    push_short(out, message.exchange.as_bytes());
    push_short(out, message.routing_key.as_bytes());
    out.extend_from_slice(&(message.properties.len() as u32).to_le_bytes());
    out.extend_from_slice(&message.properties);
    out.extend_from_slice(&0u32.to_le_bytes()); // extension
    out.extend_from_slice(&message.body);
    let payload_len = out.len() - start - HEADER_LEN;
    let crc = crc32fast::hash(&out[start + HEADER_LEN..]);
    out[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

fn push_short(out: &mut Vec<u8>, s: &[u8]) {
    let s = &s[..s.len().min(255)];
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

/// The record header at the start of `buf`: (payload length, checksum).
pub fn header(buf: &[u8]) -> Option<(usize, u32)> {
    let (len, rest) = buf.split_first_chunk::<4>()?;
    let (crc, _) = rest.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*len) as usize, u32::from_le_bytes(*crc)))
}

/// Whether `payload` matches the checksum and its fields fit. The cheap
/// structural check goes first: scanning for the next record after damage
/// tries every offset, and must not checksum megabytes at each.
pub fn verify(payload: &[u8], crc: u32) -> bool {
    fields(payload).is_some() && crc32fast::hash(payload) == crc
}

/// The variable-length fields of a payload.
struct Fields<'a> {
    exchange: &'a [u8],
    routing_key: &'a [u8],
    properties: &'a [u8],
    body: &'a [u8],
}

/// The variable-length fields of a payload, if they fit it.
fn fields(payload: &[u8]) -> Option<Fields<'_>> {
    let flags = *payload.get(8)?;
    if payload.len() < MIN_PAYLOAD || flags & !FLAG_PERSISTENT != 0 {
        return None;
    }
    let mut r = Reader(payload.get(20..)?);
    let exchange = r.short()?;
    let routing_key = r.short()?;
    let props_len = r.u32()? as usize;
    let properties = r.take(props_len)?;
    let ext_len = r.u32()? as usize;
    r.take(ext_len)?;
    Some(Fields {
        exchange,
        routing_key,
        properties,
        body: r.0,
    })
}

/// The encoded properties of a verified payload.
pub fn properties(payload: &[u8]) -> Option<&[u8]> {
    Some(fields(payload)?.properties)
}

/// The fixed fields of a verified payload.
pub fn meta(payload: &[u8]) -> Option<RecordMeta> {
    let (seq, rest) = payload.split_first_chunk::<8>()?;
    let flags = *rest.first()?;
    let expires = u64::from_le_bytes(payload.get(12..20)?.try_into().ok()?);
    Some(RecordMeta {
        seq: u64::from_le_bytes(*seq),
        flags,
        expires_at_ms: (expires != 0).then_some(expires),
        body_len: fields(payload)?.body.len() as u64,
    })
}

/// Decode a verified payload into its metadata and a message whose bytes
/// are copied out of the read buffer (so buffers are not kept alive).
pub fn decode(payload: &[u8]) -> Option<(RecordMeta, Message)> {
    let meta = meta(payload)?;
    let Fields {
        exchange,
        routing_key,
        properties,
        body,
    } = fields(payload)?;
    let persistent = meta.flags & FLAG_PERSISTENT != 0;
    Some((
        meta,
        Message {
            exchange: Arc::from(String::from_utf8_lossy(exchange)),
            routing_key: Arc::from(String::from_utf8_lossy(routing_key)),
            properties: Bytes::copy_from_slice(properties),
            body: Bytes::copy_from_slice(body),
            persistent,
            expiration_ms: None,
        },
    ))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    fn short(&mut self) -> Option<&'a [u8]> {
        let n = *self.take(1)?.first()?;
        self.take(usize::from(n))
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes(b.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &'static [u8]) -> Message {
        Message {
            exchange: Arc::from("amq.direct"),
            routing_key: Arc::from("key"),
            properties: Bytes::from_static(&[0x10, 0x00, 2]),
            body: Bytes::from_static(body),
            persistent: true,
            expiration_ms: None,
        }
    }

    fn plain(seq: u64) -> RecordMeta {
        RecordMeta {
            seq,
            ..Default::default()
        }
    }

    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        let meta = RecordMeta {
            seq: 42,
            flags: FLAG_PERSISTENT,
            expires_at_ms: Some(1_700_000_000_000),
            body_len: 0,
        };
        let n = encode(&mut out, &meta, &message(b"hello"));
        assert_eq!(n, out.len());
        let (len, crc) = header(&out).unwrap();
        let payload = &out[HEADER_LEN..HEADER_LEN + len];
        assert!(verify(payload, crc));
        let (meta, m) = decode(payload).unwrap();
        assert_eq!(meta.seq, 42);
        assert_eq!(meta.flags, FLAG_PERSISTENT);
        assert_eq!(meta.expires_at_ms, Some(1_700_000_000_000));
        assert_eq!(meta.body_len, 5);
        assert_eq!(&*m.exchange, "amq.direct");
        assert_eq!(&*m.routing_key, "key");
        assert_eq!(&m.properties[..], &[0x10, 0x00, 2]);
        assert_eq!(&m.body[..], b"hello");
        assert!(m.persistent);
    }

    #[test]
    fn flipped_byte_fails_the_checksum() {
        let mut out = Vec::new();
        encode(&mut out, &plain(1), &message(b"payload"));
        let last = out.len() - 1;
        out[last] ^= 0x40;
        let (len, crc) = header(&out).unwrap();
        assert!(!verify(&out[HEADER_LEN..HEADER_LEN + len], crc));
    }

    #[test]
    fn body_is_stored_verbatim() {
        let mut out = Vec::new();
        encode(&mut out, &plain(1), &message(b"find-me"));
        assert!(out.windows(7).any(|w| w == b"find-me"));
    }
}
