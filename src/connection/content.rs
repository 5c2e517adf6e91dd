//! Assembly of a published message from its method, header and body frames.

use bytes::{Bytes, BytesMut};

use amq_protocol::protocol::basic;

/// Single-frame bodies shorter than this are copied out of the read
/// buffer (see [`PendingPublish::body`]).
const COPY_BELOW_BYTES: usize = 16 * 1024;

/// A publish whose content is arriving.
#[derive(Debug)]
pub struct PendingPublish {
    pub publish: basic::Publish,
    pub properties: Bytes,
    pub body_size: u64,
    pub parts: Vec<Bytes>,
    pub received: u64,
}

impl PendingPublish {
    /// The body as one `Bytes`: a single frame is passed on without a copy
    /// (see [`compact`] for messages that will be kept).
    pub fn body(mut self) -> (basic::Publish, Bytes, Bytes) {
        let body = match self.parts.len() {
            0 => Bytes::new(),
            1 => self.parts.pop().unwrap_or_default(),
            _ => {
                let mut b = BytesMut::with_capacity(self.received as usize);
                for p in &self.parts {
                    b.extend_from_slice(p);
                }
                b.freeze()
            }
        };
        (self.publish, self.properties, body)
    }
}

/// A message that will be kept (queued behind others, delayed, held by a
/// transaction) with its properties and a small body copied out of the
/// read buffer: as received they are slices of the connection's 64 KiB
/// buffer, which one small kept message would keep alive whole. A large
/// single-frame body is most of its buffer anyway and is left as it is.
/// `last_properties` is the copy made for the channel's previous kept
/// message: publishers mostly repeat their properties, so an equal list
/// shares it instead of being copied again. A message delivered at once is
/// not copied: its buffer is freed as soon as it is written out.
pub fn compact(properties: &Bytes, body: Bytes, last_properties: &mut Bytes) -> (Bytes, Bytes) {
    if *last_properties != *properties {
        *last_properties = Bytes::copy_from_slice(properties);
    }
    let body = match body.len() < COPY_BELOW_BYTES && !body.is_empty() {
        true => Bytes::copy_from_slice(&body),
        false => body,
    };
    (last_properties.clone(), body)
}

/// Where a channel is in receiving content.
#[derive(Debug, Default)]
pub enum ContentState {
    /// Expecting a method frame.
    #[default]
    Idle,
    /// basic.publish seen; the content header comes next.
    ExpectHeader(basic::Publish),
    /// Header seen; body frames come until `body_size` bytes arrived.
    ExpectBody(PendingPublish),
}
