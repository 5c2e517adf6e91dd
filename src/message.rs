//! A published message: immutable, shared by every queue it was routed to
//! (`Arc`), body and properties as `Bytes` so a fan-out to N queues copies
//! nothing. Below both the broker and the store: the store writes and
//! reads these, the broker routes and queues them.

use std::sync::Arc;

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
    /// delivery_mode 2: stored on disk when it reaches a durable queue.
    pub persistent: bool,
    /// The expiration property (per-message TTL), milliseconds.
    pub expiration_ms: Option<u64>,
}

impl Message {
    /// The same message without its body (kept on disk meanwhile). The
    /// properties are copied: as received they share the read buffer
    /// they arrived in, which they would keep alive.
    pub fn without_body(&self) -> Message {
        Message {
            exchange: self.exchange.clone(),
            routing_key: self.routing_key.clone(),
            properties: Bytes::copy_from_slice(&self.properties),
            body: Bytes::new(),
            persistent: self.persistent,
            expiration_ms: self.expiration_ms,
        }
    }
}
