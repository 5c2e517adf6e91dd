//! The ready messages of one queue, in delivery order.
//!
//! This is the queue's storage boundary: today it keeps messages in memory;
//! the durable store replaces what sits behind these methods. Messages are
//! kept sorted by their queue sequence number so a requeued message goes
//! back to its original position.

use std::collections::VecDeque;
use std::sync::Arc;

use super::message::{Message, QueuedMessage};

/// Ready (not yet delivered, or requeued) messages.
#[derive(Debug, Default)]
pub struct ReadyMessages {
    items: VecDeque<QueuedMessage>,
    next_seq: u64,
    bytes: u64,
}

impl ReadyMessages {
    /// Append a newly routed message.
    pub fn push(&mut self, message: Arc<Message>) {
        self.bytes += message.body.len() as u64;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.items.push_back(QueuedMessage {
            seq,
            message,
            redelivered: false,
        });
    }

    /// Take the head.
    pub fn pop(&mut self) -> Option<QueuedMessage> {
        let m = self.items.pop_front()?;
        self.bytes -= m.message.body.len() as u64;
        Some(m)
    }

    /// Put a message back at its original position, marked redelivered.
    pub fn requeue(&mut self, mut m: QueuedMessage) {
        m.redelivered = true;
        self.bytes += m.message.body.len() as u64;
        // Requeues usually belong at or near the front.
        let pos = self.items.partition_point(|x| x.seq < m.seq);
        self.items.insert(pos, m);
    }

    /// Put back a message that was never handed out (redelivered unchanged).
    pub fn unpop(&mut self, m: QueuedMessage) {
        self.bytes += m.message.body.len() as u64;
        let pos = self.items.partition_point(|x| x.seq < m.seq);
        self.items.insert(pos, m);
    }

    /// Drop every message; returns how many there were.
    pub fn purge(&mut self) -> usize {
        let n = self.items.len();
        self.items.clear();
        self.bytes = 0;
        n
    }

    /// Number of ready messages.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Total body bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(body: &'static str) -> Arc<Message> {
        Arc::new(Message {
            exchange: Arc::from(""),
            routing_key: Arc::from("q"),
            properties: Bytes::from_static(&[0, 0]),
            body: Bytes::from_static(body.as_bytes()),
        })
    }

    #[test]
    fn requeue_restores_original_position() {
        let mut r = ReadyMessages::default();
        for b in ["a", "b", "c", "d"] {
            r.push(msg(b));
        }
        let a = r.pop().unwrap();
        let b = r.pop().unwrap();
        let c = r.pop().unwrap();
        r.requeue(c);
        r.requeue(a);
        r.requeue(b);
        let order: Vec<_> = std::iter::from_fn(|| r.pop())
            .map(|m| (m.message.body.clone(), m.redelivered))
            .collect();
        assert_eq!(
            order,
            vec![
                (Bytes::from_static(b"a"), true),
                (Bytes::from_static(b"b"), true),
                (Bytes::from_static(b"c"), true),
                (Bytes::from_static(b"d"), false)
            ]
        );
        assert_eq!(r.bytes(), 0);
    }

    #[test]
    fn purge_counts() {
        let mut r = ReadyMessages::default();
        r.push(msg("x"));
        r.push(msg("y"));
        assert_eq!(r.purge(), 2);
        assert!(r.is_empty());
    }
}
