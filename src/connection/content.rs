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
    /// The properties and the body as one `Bytes` each. Frames are
    /// slices of the connection's read buffer, and a slice keeps the whole
    /// buffer (64 KiB or more) alive: so the properties and small bodies,
    /// which queues may keep long after the buffer's other frames are
    /// gone, are copied out; a large single-frame body is passed on
    /// without a copy, since it is most of its buffer anyway.
    /// `last_properties` is the copy made for the channel's previous
    /// message: publishers mostly repeat their properties, so an equal
    /// list shares it instead of being copied again.
    pub fn body(mut self, last_properties: &mut Bytes) -> (basic::Publish, Bytes, Bytes) {
        if *last_properties != self.properties {
            *last_properties = Bytes::copy_from_slice(&self.properties);
        }
        let properties = last_properties.clone();
        let body = match self.parts.len() {
            0 => Bytes::new(),
            1 => match self.parts.pop().unwrap_or_default() {
                small if small.len() < COPY_BELOW_BYTES => Bytes::copy_from_slice(&small),
                large => large,
            },
            _ => {
                let mut b = BytesMut::with_capacity(self.received as usize);
                for p in &self.parts {
                    b.extend_from_slice(p);
                }
                b.freeze()
            }
        };
        (self.publish, properties, body)
    }
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
