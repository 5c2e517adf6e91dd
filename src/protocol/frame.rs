//! Incoming frame decoding.
//!
//! ```text
//! 0      1         3             7                  size+7     size+8
//! +------+---------+-------------+  +-------------+  +-----------+
//! | type | channel |    size     |  |   payload   |  | 0xCE end  |
//! +------+---------+-------------+  +-------------+  +-----------+
//!  u8     u16 BE    u32 BE
//! ```
//!
//! The header is parsed here; body payloads are split off the read buffer as
//! `Bytes` (no copy); method payloads go to amq-protocol's parser; content
//! header properties are kept as raw bytes so they reach consumers exactly as
//! the publisher encoded them.

use amq_protocol::protocol::{parse_class, AMQPClass};
use bytes::{Buf, Bytes, BytesMut};

use super::error::AmqpError;
use super::nesting::{self, MAX_DEPTH};

/// Frame type octets.
pub const FRAME_METHOD: u8 = 1;
/// Content header frame.
pub const FRAME_HEADER: u8 = 2;
/// Content body frame.
pub const FRAME_BODY: u8 = 3;
/// Heartbeat frame.
pub const FRAME_HEARTBEAT: u8 = 8;
/// The octet every frame ends with.
pub const FRAME_END: u8 = 0xCE;
/// The frame size every peer must accept, and the limit before tune-ok.
pub const FRAME_MIN_SIZE: u32 = 4096;
/// Bytes of framing around a payload: 7 of header, 1 of end marker.
pub const FRAME_OVERHEAD: usize = 8;

/// One decoded frame.
#[derive(Debug)]
pub enum Frame {
    /// A method frame.
    Method {
        /// Channel id.
        channel: u16,
        /// Class id of the method.
        class_id: u16,
        /// Method id within the class.
        method_id: u16,
        /// The decoded method.
        method: Box<AMQPClass>,
        /// The raw arguments (after the ids), for fields amq-protocol drops.
        raw_args: Bytes,
    },
    /// A content header frame.
    Header {
        /// Channel id.
        channel: u16,
        /// Content class (60 for basic).
        class_id: u16,
        /// Declared total body size.
        body_size: u64,
        /// The encoded property flags and values, untouched.
        properties: Bytes,
    },
    /// A content body frame.
    Body {
        /// Channel id.
        channel: u16,
        /// The payload slice.
        payload: Bytes,
    },
    /// A heartbeat frame (channel should be 0).
    Heartbeat {
        /// Channel id, which must be 0.
        channel: u16,
    },
}

impl Frame {
    /// The channel this frame arrived on.
    pub fn channel(&self) -> u16 {
        match self {
            Frame::Method { channel, .. }
            | Frame::Header { channel, .. }
            | Frame::Body { channel, .. }
            | Frame::Heartbeat { channel } => *channel,
        }
    }
}

/// Why the input could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Report this error with Connection.Close.
    Close(AmqpError),
    /// Drop the socket without a Close: RabbitMQ does this for a method id
    /// it does not know, and clients expect no answer.
    Drop(String),
}

impl From<AmqpError> for DecodeError {
    fn from(e: AmqpError) -> Self {
        DecodeError::Close(e)
    }
}

/// Render bytes the way RabbitMQ's error texts show an Erlang binary:
/// `<<"text">>` when printable, else `<<0,20,0,10,0>>`.
pub fn erlang_binary(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "<<>>".to_string();
    }
    if bytes.iter().all(|b| (32..127).contains(b)) {
        let text: String = bytes
            .iter()
            .flat_map(|&b| match b {
                b'"' => vec!['\\', '"'],
                b'\\' => vec!['\\', '\\'],
                b => vec![b as char],
            })
            .collect();
        return format!("<<\"{text}\">>");
    }
    let parts: Vec<String> = bytes.iter().map(|b| b.to_string()).collect();
    format!("<<{}>>", parts.join(","))
}

/// Decode one frame from the front of `buf`, or `Ok(None)` if more bytes are
/// needed. `frame_max` is the negotiated maximum frame size. Like RabbitMQ,
/// a payload of up to `frame_max` bytes is accepted (the spec would say
/// `frame_max - 8`), and the error texts follow RabbitMQ's.
pub fn decode_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, DecodeError> {
    if buf.len() < 7 {
        return Ok(None);
    }
    let frame_type = buf[0];
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    if size > frame_max as usize {
        return Err(AmqpError::frame_error(format!(
            "type {frame_type}, all octets = <<>>: {{frame_too_large,{size},{}}}",
            (frame_max as usize).saturating_sub(FRAME_OVERHEAD)
        ))
        .into());
    }
    if buf.len() < size + FRAME_OVERHEAD {
        buf.reserve(size + FRAME_OVERHEAD - buf.len());
        return Ok(None);
    }
    let end = buf[7 + size];
    if end != FRAME_END {
        return Err(AmqpError::frame_error(format!(
            "type {frame_type}, all octets = {}: {{invalid_frame_end_marker,{end}}}",
            erlang_binary(&buf[7..7 + size])
        ))
        .into());
    }
    let known = matches!(frame_type, FRAME_METHOD | FRAME_HEADER | FRAME_BODY)
        || (frame_type == FRAME_HEARTBEAT && size == 0);
    if !known {
        return Err(AmqpError::frame_error(format!(
            "type {frame_type}, all octets = {}: unknown_frame",
            erlang_binary(&buf[7..7 + size])
        ))
        .into());
    }
    buf.advance(7);
    let payload = buf.split_to(size).freeze();
    buf.advance(1);
    let frame = match frame_type {
        FRAME_METHOD => decode_method(channel, payload)?,
        FRAME_HEADER => decode_header(channel, payload)?,
        FRAME_BODY => Frame::Body { channel, payload },
        _ => Frame::Heartbeat { channel },
    };
    Ok(Some(frame))
}

fn decode_method(channel: u16, payload: Bytes) -> Result<Frame, DecodeError> {
    if payload.len() < 4 {
        return Err(
            AmqpError::frame_error(format!("cannot decode {}", erlang_binary(&payload))).into(),
        );
    }
    let class_id = u16::from_be_bytes([payload[0], payload[1]]);
    let method_id = u16::from_be_bytes([payload[2], payload[3]]);
    if !is_known_method(class_id, method_id) {
        return Err(DecodeError::Drop(format!(
            "unknown method {class_id}.{method_id}"
        )));
    }
    if nesting::check_method(class_id, method_id, &payload[4..]).is_err() {
        return Err(too_deep().at(class_id, method_id).into());
    }
    match parse_class(&payload[..]) {
        Ok((_, method)) => Ok(Frame::Method {
            channel,
            class_id,
            method_id,
            method: Box::new(method),
            raw_args: payload.slice(4..),
        }),
        Err(_) => Err(AmqpError::frame_error(format!(
            "cannot decode {}",
            erlang_binary(&payload[4..])
        ))
        .at(class_id, method_id)
        .into()),
    }
}

fn decode_header(channel: u16, payload: Bytes) -> Result<Frame, DecodeError> {
    if payload.len() < 14 {
        return Err(
            AmqpError::frame_error(format!("cannot decode {}", erlang_binary(&payload))).into(),
        );
    }
    let class_id = u16::from_be_bytes([payload[0], payload[1]]);
    if nesting::check_properties(&payload[12..]).is_err() {
        return Err(too_deep().into());
    }
    let mut size = [0u8; 8];
    size.copy_from_slice(&payload[4..12]);
    Ok(Frame::Header {
        channel,
        class_id,
        body_size: u64::from_be_bytes(size),
        properties: payload.slice(12..),
    })
}

/// The error for a field table nested deeper than Warren parses (RabbitMQ
/// has no limit; a clean close beats a stack overflow).
pub fn too_deep() -> AmqpError {
    AmqpError::syntax_error(format!(
        "field table or array nested deeper than {MAX_DEPTH} levels"
    ))
}

/// Whether a class/method pair exists in AMQP 0-9-1 (with RabbitMQ's
/// extensions), to tell a malformed method from an unknown one.
fn is_known_method(class_id: u16, method_id: u16) -> bool {
    match class_id {
        10 => matches!(
            method_id,
            10 | 11 | 20 | 21 | 30 | 31 | 40 | 41 | 50 | 51 | 60 | 61 | 70 | 71
        ),
        20 => matches!(method_id, 10 | 11 | 20 | 21 | 40 | 41),
        30 => matches!(method_id, 10 | 11),
        40 => matches!(method_id, 10 | 11 | 20 | 21 | 30 | 31 | 40 | 51),
        50 => matches!(method_id, 10 | 11 | 20 | 21 | 30 | 31 | 40 | 41 | 50 | 51),
        60 => matches!(
            method_id,
            10 | 11
                | 20
                | 21
                | 30
                | 31
                | 40
                | 50
                | 60
                | 70
                | 71
                | 72
                | 80
                | 90
                | 100
                | 110
                | 111
                | 120
        ),
        85 => matches!(method_id, 10 | 11),
        90 => matches!(method_id, 10 | 11 | 20 | 21 | 30 | 31),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::output::FrameWriter;
    use amq_protocol::protocol::{basic, channel, AMQPClass};

    fn decode_all(bytes: &[u8], frame_max: u32) -> Result<Vec<Frame>, DecodeError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(f) = decode_frame(&mut buf, frame_max)? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn method_round_trip() {
        let mut w = FrameWriter::new(131072);
        w.method(
            3,
            &AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: 42,
                multiple: true,
            })),
        );
        let frames = decode_all(&w.take(), 131072).unwrap();
        match &frames[..] {
            [Frame::Method {
                channel: 3,
                class_id: 60,
                method_id: 80,
                method,
                ..
            }] => assert_eq!(
                **method,
                AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                    delivery_tag: 42,
                    multiple: true
                }))
            ),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn content_is_split_at_frame_max_and_reassembles() {
        let mut w = FrameWriter::new(4096);
        let body = Bytes::from((0..10_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let props = Bytes::from_static(&[0x80, 0x00, 3, b'a', b'/', b'b']);
        w.content(1, &props, &body);
        let frames = decode_all(&w.take(), 4096).unwrap();
        assert_eq!(frames.len(), 1 + 3);
        let mut got = Vec::new();
        for f in frames {
            match f {
                Frame::Header {
                    body_size,
                    properties,
                    ..
                } => {
                    assert_eq!(body_size, 10_000);
                    assert_eq!(properties, props);
                }
                Frame::Body { payload, .. } => {
                    assert!(payload.len() <= 4096 - FRAME_OVERHEAD);
                    got.extend_from_slice(&payload);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(&got[..], &body[..]);
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let mut w = FrameWriter::new(131072);
        w.method(
            1,
            &AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        );
        let bytes = w.take();
        let mut buf = BytesMut::from(&bytes[..bytes.len() - 1]);
        assert!(decode_frame(&mut buf, 131072).unwrap().is_none());
        buf.extend_from_slice(&bytes[bytes.len() - 1..]);
        assert!(decode_frame(&mut buf, 131072).unwrap().is_some());
        assert!(buf.is_empty());
    }

    fn close_error(e: DecodeError) -> AmqpError {
        match e {
            DecodeError::Close(e) => e,
            DecodeError::Drop(why) => panic!("expected a close, got a drop: {why}"),
        }
    }

    #[test]
    fn bad_frame_end_is_a_frame_error() {
        let err = close_error(decode_all(&[1, 0, 1, 0, 0, 0, 2, 0, 20, 0xAB], 4096).unwrap_err());
        assert_eq!(err.kind.code(), 501);
        assert_eq!(
            err.text,
            "FRAME_ERROR - type 1, all octets = <<0,20>>: {invalid_frame_end_marker,171}"
        );
    }

    #[test]
    fn oversized_frame_is_a_frame_error() {
        let err = close_error(decode_all(&[3, 0, 1, 0, 0, 0x10, 0x01], 4096).unwrap_err());
        assert_eq!(
            err.text,
            "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,4097,4088}"
        );
    }

    #[test]
    fn unknown_frame_type_is_a_frame_error() {
        let err = close_error(decode_all(&[9, 0, 0, 0, 0, 0, 0, FRAME_END], 4096).unwrap_err());
        assert_eq!(
            err.text,
            "FRAME_ERROR - type 9, all octets = <<>>: unknown_frame"
        );
        let err = close_error(
            decode_all(&[8, 0, 0, 0, 0, 0, 2, b'x', b'x', FRAME_END], 4096).unwrap_err(),
        );
        assert_eq!(
            err.text,
            "FRAME_ERROR - type 8, all octets = <<\"xx\">>: unknown_frame"
        );
    }

    #[test]
    fn unknown_method_drops_the_connection() {
        let frame = [1, 0, 1, 0, 0, 0, 4, 0, 99, 0, 1, FRAME_END];
        assert!(matches!(
            decode_all(&frame, 4096),
            Err(DecodeError::Drop(_))
        ));
    }

    #[test]
    fn truncated_arguments_cannot_be_decoded() {
        // queue.declare (50.10) with one byte of arguments.
        let frame = [1, 0, 1, 0, 0, 0, 5, 0, 50, 0, 10, 0, FRAME_END];
        let err = close_error(decode_all(&frame, 4096).unwrap_err());
        assert_eq!(err.text, "FRAME_ERROR - cannot decode <<0>>");
        assert_eq!((err.class_id, err.method_id), (50, 10));
    }
}
