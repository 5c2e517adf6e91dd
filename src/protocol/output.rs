//! Outgoing frames, encoded into one write buffer per connection so that
//! everything produced while handling a batch of input goes out in a single
//! socket write.

use amq_protocol::protocol::{gen_class, AMQPClass};
use bytes::{BufMut, Bytes, BytesMut};

use super::frame::{
    FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, FRAME_OVERHEAD,
};

/// Accumulates encoded frames until the connection flushes them.
#[derive(Debug)]
pub struct FrameWriter {
    buf: BytesMut,
    scratch: Vec<u8>,
    frame_max: u32,
}

impl FrameWriter {
    /// A writer that splits bodies so no frame exceeds `frame_max` bytes.
    pub fn new(frame_max: u32) -> Self {
        FrameWriter {
            buf: BytesMut::with_capacity(64 * 1024),
            scratch: Vec::with_capacity(256),
            frame_max,
        }
    }

    /// Change the frame size limit after tune-ok.
    pub fn set_frame_max(&mut self, frame_max: u32) {
        self.frame_max = frame_max;
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Take everything encoded so far.
    pub fn take(&mut self) -> Bytes {
        self.buf.split().freeze()
    }

    /// Take the first `n` bytes encoded (at most all).
    pub fn take_prefix(&mut self, n: usize) -> Bytes {
        let n = n.min(self.buf.len());
        self.buf.split_to(n).freeze()
    }

    /// Drop everything encoded after the first `n` bytes.
    pub fn truncate(&mut self, n: usize) {
        self.buf.truncate(n);
    }

    /// Raw bytes (the protocol header reply).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// A method frame.
    pub fn method(&mut self, channel: u16, method: &AMQPClass) {
        let scratch = std::mem::take(&mut self.scratch);
        let scratch = match cookie_factory::gen_simple(gen_class(method), scratch) {
            Ok(v) => v,
            // Generation into a Vec cannot run out of space; an error here
            // would be a bug in the codec, so drop the frame loudly.
            Err(e) => {
                tracing::error!(error = ?e, "failed to encode method frame");
                Vec::new()
            }
        };
        self.buf.reserve(scratch.len() + FRAME_OVERHEAD);
        self.buf.put_u8(FRAME_METHOD);
        self.buf.put_u16(channel);
        self.buf.put_u32(scratch.len() as u32);
        self.buf.extend_from_slice(&scratch);
        self.buf.put_u8(FRAME_END);
        self.scratch = scratch;
        self.scratch.clear();
    }

    /// A content header and the body frames, split at frame_max.
    pub fn content(&mut self, channel: u16, properties: &[u8], body: &[u8]) {
        let header_len = 12 + properties.len();
        self.buf
            .reserve(header_len + body.len() + FRAME_OVERHEAD * (2 + body.len() / 4096));
        self.buf.put_u8(FRAME_HEADER);
        self.buf.put_u16(channel);
        self.buf.put_u32(header_len as u32);
        self.buf.put_u16(60);
        self.buf.put_u16(0);
        self.buf.put_u64(body.len() as u64);
        self.buf.extend_from_slice(properties);
        self.buf.put_u8(FRAME_END);
        let chunk = (self.frame_max as usize)
            .saturating_sub(FRAME_OVERHEAD)
            .max(1);
        for part in body.chunks(chunk) {
            self.buf.put_u8(FRAME_BODY);
            self.buf.put_u16(channel);
            self.buf.put_u32(part.len() as u32);
            self.buf.extend_from_slice(part);
            self.buf.put_u8(FRAME_END);
        }
    }

    /// A basic.deliver method frame, encoded by hand: it is written once per
    /// message delivered, and this avoids building the method struct.
    pub fn deliver(
        &mut self,
        channel: u16,
        consumer_tag: &str,
        delivery_tag: u64,
        redelivered: bool,
        exchange: &str,
        routing_key: &str,
    ) {
        fn short(s: &str) -> &[u8] {
            &s.as_bytes()[..s.len().min(255)]
        }
        let (ct, ex, rk) = (short(consumer_tag), short(exchange), short(routing_key));
        let len = 4 + 1 + ct.len() + 8 + 1 + 1 + ex.len() + 1 + rk.len();
        self.buf.reserve(len + FRAME_OVERHEAD);
        self.buf.put_u8(FRAME_METHOD);
        self.buf.put_u16(channel);
        self.buf.put_u32(len as u32);
        self.buf.put_u16(60);
        self.buf.put_u16(60);
        for (i, s) in [ct, ex, rk].into_iter().enumerate() {
            self.buf.put_u8(s.len() as u8);
            self.buf.extend_from_slice(s);
            if i == 0 {
                self.buf.put_u64(delivery_tag);
                self.buf.put_u8(u8::from(redelivered));
            }
        }
        self.buf.put_u8(FRAME_END);
    }

    /// A heartbeat frame.
    pub fn heartbeat(&mut self) {
        self.buf
            .extend_from_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic;
    use amq_protocol::types::ShortString;

    #[test]
    fn hand_encoded_deliver_matches_the_codec() {
        let mut hand = FrameWriter::new(131_072);
        hand.deliver(7, "ctag", 99, true, "ex", "a.b");
        let mut codec = FrameWriter::new(131_072);
        codec.method(
            7,
            &AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: ShortString::from("ctag"),
                delivery_tag: 99,
                redelivered: true,
                exchange: ShortString::from("ex"),
                routing_key: ShortString::from("a.b"),
            })),
        );
        assert_eq!(hand.take(), codec.take());
    }
}
