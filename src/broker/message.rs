//! A published message as the broker holds it: immutable, shared by every
//! queue it was routed to (`Arc`), body and properties as `Bytes` so a
//! fan-out to N queues copies nothing.

use std::sync::Arc;

use amq_protocol::protocol::basic::{parse_properties, AMQPProperties};
use bytes::Bytes;

/// An immutable published message.
#[derive(Debug)]
pub struct Message {
    /// The exchange it was published to.
    pub exchange: Arc<str>,
    /// The routing key it was published with.
    pub routing_key: Arc<str>,
    /// The encoded content-header properties, exactly as published.
    pub properties: Bytes,
    /// The body.
    pub body: Bytes,
}

impl Message {
    /// Decode the properties; `None` if the publisher sent something
    /// amq-protocol cannot parse (the raw bytes are still delivered as is).
    pub fn decoded_properties(&self) -> Option<AMQPProperties> {
        decode_properties(&self.properties)
    }

    /// Whether delivery_mode is 2.
    pub fn is_persistent(&self) -> bool {
        self.decoded_properties()
            .and_then(|p| *p.delivery_mode())
            .is_some_and(|m| m == 2)
    }
}

/// Decode an encoded property list.
pub fn decode_properties(raw: &[u8]) -> Option<AMQPProperties> {
    parse_properties(raw).ok().map(|(_, p)| p)
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
}
