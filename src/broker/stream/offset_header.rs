//! Adding the `x-stream-offset` header to a delivery's encoded properties
//! without decoding them: every stream delivery carries it, and a decode
//! and re-encode of the whole property list per delivery would cost more
//! than the rest of the delivery. The headers table is the third property
//! (after content-type and content-encoding), so the entry is spliced in
//! at its end, or a table holding only it is inserted.

use bytes::{BufMut, Bytes, BytesMut};

const KEY: &[u8] = b"x-stream-offset";
const FLAG_CONTENT_TYPE: u16 = 1 << 15;
const FLAG_CONTENT_ENCODING: u16 = 1 << 14;
const FLAG_HEADERS: u16 = 1 << 13;

/// The properties with the header `x-stream-offset` = `offset` (an AMQP
/// long), or None when the list is unusual (a continuation flag, a table
/// that already names the key, or malformed): the caller then decodes.
pub fn with_offset(raw: &[u8], offset: u64) -> Option<Bytes> {
    let flags = u16::from_be_bytes(*raw.first_chunk::<2>()?);
    if flags & 1 != 0 {
        return None;
    }
    let mut pos = 2;
    for flag in [FLAG_CONTENT_TYPE, FLAG_CONTENT_ENCODING] {
        if flags & flag != 0 {
            pos += 1 + usize::from(*raw.get(pos)?);
        }
    }
    let mut entry = Vec::with_capacity(1 + KEY.len() + 9);
    entry.push(KEY.len() as u8);
    entry.extend_from_slice(KEY);
    entry.push(b'l');
    entry.extend_from_slice(&(offset as i64).to_be_bytes());
    let mut out = BytesMut::with_capacity(raw.len() + entry.len() + 4);
    if flags & FLAG_HEADERS != 0 {
        let len = u32::from_be_bytes(*raw.get(pos..)?.first_chunk::<4>()?) as usize;
        let table = raw.get(pos + 4..pos + 4 + len)?;
        if table
            .windows(KEY.len() + 1)
            .any(|w| w[0] == KEY.len() as u8 && &w[1..] == KEY)
        {
            return None;
        }
        out.put_slice(&raw[..pos]);
        out.put_u32(u32::try_from(len + entry.len()).ok()?);
        out.put_slice(table);
        out.put_slice(&entry);
        out.put_slice(&raw[pos + 4 + len..]);
    } else {
        out.put_u16(flags | FLAG_HEADERS);
        out.put_slice(&raw[2..pos.min(raw.len())]);
        out.put_u32(entry.len() as u32);
        out.put_slice(&entry);
        out.put_slice(raw.get(pos..)?);
    }
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::message::{decode_properties, encode_properties};
    use amq_protocol::protocol::basic::AMQPProperties;
    use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};

    fn offset_of(raw: &[u8]) -> Option<AMQPValue> {
        let p = decode_properties(raw)?;
        p.headers()
            .as_ref()?
            .inner()
            .get("x-stream-offset")
            .cloned()
    }

    #[test]
    fn the_header_is_added_to_any_property_list() {
        let mut h = FieldTable::default();
        h.insert("a".into(), AMQPValue::LongString(LongString::from("b")));
        let lists = [
            AMQPProperties::default(),
            AMQPProperties::default().with_content_type(ShortString::from("text/plain")),
            AMQPProperties::default()
                .with_content_type(ShortString::from("t"))
                .with_content_encoding(ShortString::from("gzip"))
                .with_headers(h.clone())
                .with_delivery_mode(2)
                .with_message_id(ShortString::from("id-1")),
            AMQPProperties::default()
                .with_headers(FieldTable::default())
                .with_priority(3),
        ];
        for props in lists {
            let raw = encode_properties(&props).unwrap();
            let out = with_offset(&raw, 1 << 40).expect("fast path");
            assert_eq!(
                offset_of(&out),
                Some(AMQPValue::LongLongInt(1 << 40)),
                "{props:?}"
            );
            let back = decode_properties(&out).unwrap();
            assert_eq!(back.content_type(), props.content_type());
            assert_eq!(back.message_id(), props.message_id());
            assert_eq!(back.priority(), props.priority());
            assert_eq!(back.delivery_mode(), props.delivery_mode());
            if let Some(AMQPValue::LongString(v)) =
                back.headers().as_ref().and_then(|t| t.inner().get("a"))
            {
                assert_eq!(v.as_bytes(), b"b");
            }
        }
    }

    #[test]
    fn unusual_lists_are_left_to_the_decoder() {
        let mut h = FieldTable::default();
        h.insert("x-stream-offset".into(), AMQPValue::LongLongInt(5));
        let raw = encode_properties(&AMQPProperties::default().with_headers(h)).unwrap();
        assert!(with_offset(&raw, 9).is_none(), "the key is there already");
        assert!(
            with_offset(&[0x20, 0x00, 0, 0, 0, 9], 1).is_none(),
            "table past the end"
        );
        assert!(with_offset(&[0x00], 1).is_none());
    }
}
