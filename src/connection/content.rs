//! Assembly of a published message from its method, header and body frames.

use bytes::{Bytes, BytesMut};

use amq_protocol::protocol::basic;

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
    /// The body as one `Bytes`: a single frame is passed on without a copy.
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
