//! A channel's deliveries that the client has not settled yet, and the
//! connection's budget for their bodies in memory.
//!
//! A consumer without a prefetch limit that never acks could make Warren
//! hold every message it was sent. So each connection counts the body
//! bytes its channels' unacked deliveries hold (`UNACKED_MEMORY_BYTES` at
//! most): beyond it the oldest are paged out, their bodies kept on disk
//! only by their queue ([`Queue::page_out`]) and read back if they are
//! requeued or dead-lettered. An ack needs only the record's position.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::broker::consumer::ConsumerCredit;
use crate::broker::message::QueuedMessage;
use crate::broker::queue::Queue;
use crate::protocol::AmqpError;
use crate::store::message_bytes;

/// Body bytes (with bookkeeping) that one connection's unacked deliveries
/// may keep in memory before the oldest are paged out to disk.
pub const UNACKED_MEMORY_BYTES: u64 = 16 << 20;

/// A delivery the client has not settled yet.
#[derive(Debug)]
pub struct Unacked {
    pub tag: u64,
    pub queue: Arc<Queue>,
    pub message: QueuedMessage,
    /// Prefetch credit to give back (None for basic.get deliveries).
    pub credit: Option<Arc<ConsumerCredit>>,
    /// When its consumer's timeout runs out, and that consumer's tag and
    /// id (a tag may be reused by a later consumer).
    pub deadline: Option<(std::time::Instant, Arc<str>, u64)>,
    /// Its consumer's tag (None for basic.get); on a stream, the name
    /// under which an ack's offset is tracked.
    pub consumer_tag: Option<Arc<str>>,
    /// When it was sent (the session's clock of that pass).
    pub delivered_at: std::time::Instant,
}

impl Unacked {
    /// The consumer tag an ack's offset is tracked under (stream only).
    pub fn stream_tag(&self) -> Option<&Arc<str>> {
        self.consumer_tag
            .as_ref()
            .filter(|_| self.queue.is_stream())
    }

    /// Bytes its body holds in memory.
    fn held(&self) -> u64 {
        match self.message.body_on_disk {
            true => 0,
            false => message_bytes(&self.message.message),
        }
    }
}

/// One channel's unacked deliveries, in delivery-tag order.
#[derive(Debug)]
pub struct UnackedList {
    items: VecDeque<Unacked>,
    /// Bytes the items' bodies hold in memory.
    held: u64,
    /// Every item up to this tag has been paged out (or was looked at).
    paged_through: u64,
    /// The connection's total of `held` over its channels.
    connection: Arc<AtomicU64>,
}

impl UnackedList {
    /// An empty list counting towards `connection`'s total.
    pub fn new(connection: Arc<AtomicU64>) -> Self {
        UnackedList {
            items: VecDeque::new(),
            held: 0,
            paged_through: 0,
            connection,
        }
    }

    fn add_held(&mut self, n: u64) {
        self.held += n;
        self.connection.fetch_add(n, Ordering::Relaxed);
    }

    fn sub_held(&mut self, n: u64) {
        let n = n.min(self.held);
        self.held -= n;
        self.connection.fetch_sub(n, Ordering::Relaxed);
    }

    /// Take the deliveries past their deadline, with their consumers'
    /// tags and ids.
    pub fn take_expired(&mut self, now: std::time::Instant) -> Vec<(Unacked, Arc<str>, u64)> {
        let due = |u: &Unacked| u.deadline.as_ref().is_some_and(|(at, _, _)| *at <= now);
        if !self.items.iter().any(due) {
            return Vec::new();
        }
        let (expired, kept): (VecDeque<Unacked>, VecDeque<Unacked>) =
            std::mem::take(&mut self.items).into_iter().partition(due);
        self.items = kept;
        self.sub_held(expired.iter().map(Unacked::held).sum());
        expired
            .into_iter()
            .filter_map(|u| {
                let (_, tag, id) = u.deadline.clone()?;
                Some((u, tag, id))
            })
            .collect()
    }

    /// The deliveries held, in delivery-tag order.
    pub fn iter(&self) -> impl Iterator<Item = &Unacked> {
        self.items.iter()
    }

    /// Deliveries held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Add a delivery (its tag is the highest so far).
    pub fn push(&mut self, u: Unacked) {
        self.add_held(u.held());
        self.items.push_back(u);
    }

    /// Take the deliveries an ack/nack/reject names: one tag, or with
    /// `multiple` every tag up to it (0 meaning all). With `multiple`,
    /// `tag` itself need not be held when `tag_must_exist` is false (it was
    /// taken back on a consumer timeout).
    pub fn take_checked(
        &mut self,
        tag: u64,
        multiple: bool,
        tag_must_exist: bool,
    ) -> Result<Vec<Unacked>, AmqpError> {
        let unknown = || AmqpError::precondition_failed(format!("unknown delivery tag {tag}"));
        let taken: Vec<Unacked> = if multiple {
            if tag == 0 {
                return Ok(self.take_all());
            }
            if tag_must_exist && !self.items.iter().any(|u| u.tag == tag) {
                return Err(unknown());
            }
            let n = self.items.partition_point(|u| u.tag <= tag);
            self.items.drain(..n).collect()
        } else {
            let pos = self
                .items
                .binary_search_by_key(&tag, |u| u.tag)
                .map_err(|_| unknown())?;
            self.items.remove(pos).into_iter().collect()
        };
        self.sub_held(taken.iter().map(Unacked::held).sum());
        Ok(taken)
    }

    /// Take every delivery.
    pub fn take_all(&mut self) -> Vec<Unacked> {
        self.sub_held(self.held);
        self.items.drain(..).collect()
    }

    /// Give back deliveries taken earlier (a rolled-back transaction's),
    /// in delivery-tag order.
    pub fn put_back(&mut self, mut back: Vec<Unacked>) {
        if back.is_empty() {
            return;
        }
        self.add_held(back.iter().map(Unacked::held).sum());
        back.extend(self.items.drain(..));
        back.sort_by_key(|u| u.tag);
        self.items = back.into();
        self.paged_through = 0;
    }

    /// Page out the oldest bodies still in memory until the connection's
    /// total is under `target` bytes or nothing is left to page.
    pub fn page_out(&mut self, target: u64) {
        let start = self.items.partition_point(|u| u.tag <= self.paged_through);
        let mut freed = 0;
        for u in self.items.range_mut(start..) {
            if self
                .connection
                .load(Ordering::Relaxed)
                .saturating_sub(freed)
                <= target
            {
                break;
            }
            let before = u.held();
            if before > 0 && u.queue.page_out(&mut u.message) {
                freed += before - u.held();
            }
            self.paged_through = u.tag;
        }
        self.sub_held(freed);
    }
}

impl Drop for UnackedList {
    fn drop(&mut self) {
        self.connection.fetch_sub(self.held, Ordering::Relaxed);
    }
}
