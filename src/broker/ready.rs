//! The ready messages of one queue, in delivery order: a bounded window in
//! memory, and behind it the on-disk tail of the queue's log.
//!
//! Messages are kept sorted by their queue sequence number, so a requeued
//! message goes back to its original position. Every message in memory has
//! a lower sequence number than every message in the tail: once a message
//! did not fit the window, later ones go to disk too until the tail has
//! been read back. Persistent messages of durable queues are also written
//! to the log when they fit the window, so they survive a restart.
//!
//! A priority queue (x-max-priority) keeps its messages ordered by priority,
//! then sequence number, all in memory (its persistent messages are still
//! written to the log, and read back whole at recovery).

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use super::message::{Message, QueuedMessage};
use crate::store::queue_log::Recovery;
use crate::store::{message_bytes, DiskRef, QueueLog, Store};

/// Ready (not yet delivered, or requeued) messages.
#[derive(Debug)]
pub struct ReadyMessages {
    items: VecDeque<QueuedMessage>,
    mem_bytes: u64,
    /// Body bytes of all ready messages, in memory and on disk (for
    /// x-max-length-bytes).
    body_bytes: u64,
    next_seq: u64,
    store: Arc<Store>,
    /// A durable queue's log (always there), or a transient queue's spill
    /// log (made at the first spill).
    log: Option<QueueLog>,
    durable: bool,
    /// x-max-priority: order by priority (capped at this) before sequence.
    max_priority: Option<u8>,
}

impl ReadyMessages {
    /// The ready messages of a queue; a durable queue brings its log (new,
    /// or recovered with what recovery found).
    pub fn new(
        store: Arc<Store>,
        durable_log: Option<(QueueLog, Recovery)>,
        max_priority: Option<u8>,
    ) -> Self {
        let durable = durable_log.is_some();
        let (log, recovered) = match durable_log {
            Some((log, recovered)) => (Some(log), recovered),
            None => (None, Recovery::default()),
        };
        let mut ready = ReadyMessages {
            items: VecDeque::new(),
            mem_bytes: 0,
            body_bytes: recovered.body_bytes,
            next_seq: recovered.next_seq,
            store,
            log,
            durable,
            max_priority,
        };
        if max_priority.is_some() {
            // A priority queue holds everything in memory, in order.
            if let Some(log) = ready.log.as_mut() {
                ready.mem_bytes += log.read_tail(u64::MAX, &mut ready.items);
            }
            let mut items: Vec<QueuedMessage> = ready.items.drain(..).collect();
            items.sort_by_key(|m| ready.order_key(m));
            ready.items = items.into();
        }
        ready
    }

    /// Delivery order: higher priority first (priority queues), then
    /// sequence number.
    fn order_key(&self, m: &QueuedMessage) -> (std::cmp::Reverse<u8>, u64) {
        let p = match self.max_priority {
            Some(max) => super::message::priority(&m.message.properties).min(max),
            None => 0,
        };
        (std::cmp::Reverse(p), m.seq)
    }

    fn log_mut(&mut self) -> io::Result<&mut QueueLog> {
        if self.log.is_none() {
            let path = self.store.transient_path();
            self.log = Some(QueueLog::create(&path, false, self.store.segment_bytes)?);
        }
        self.log
            .as_mut()
            .ok_or_else(|| io::Error::other("queue log missing"))
    }

    /// The log, if the queue has one.
    pub fn log(&mut self) -> Option<&mut QueueLog> {
        self.log.as_mut()
    }

    fn tail_count(&self) -> u64 {
        self.log.as_ref().map_or(0, QueueLog::tail_count)
    }

    /// Append a newly routed message. Returns its record when one was
    /// written that must be synced before the message is confirmed.
    pub fn push(
        &mut self,
        message: Arc<Message>,
        expires_at_ms: Option<u64>,
    ) -> io::Result<Option<DiskRef>> {
        let seq = self.next_seq;
        let persistent = self.durable && message.persistent;
        let size = message_bytes(&message);
        let body = message.body.len() as u64;
        let fits = self.mem_bytes + size <= self.store.window_bytes;
        if self.max_priority.is_some() || (self.tail_count() == 0 && fits) {
            let disk = match persistent {
                true => Some(
                    self.log_mut()?
                        .append(seq, expires_at_ms, &message, true, false)?,
                ),
                false => None,
            };
            self.next_seq += 1;
            self.mem_bytes += size;
            self.body_bytes += body;
            self.insert(QueuedMessage {
                seq,
                message,
                redelivered: false,
                disk,
                expires_at_ms,
                delivery_count: 0,
            });
            return Ok(disk);
        }
        let r = self
            .log_mut()?
            .append(seq, expires_at_ms, &message, persistent, true)?;
        self.next_seq += 1;
        self.body_bytes += body;
        Ok(persistent.then_some(r))
    }

    /// When the head message expires, if it does.
    pub fn head_expiry(&mut self) -> Option<u64> {
        self.refill();
        self.items.front().and_then(|m| m.expires_at_ms)
    }

    /// Body bytes of all ready messages.
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }

    /// Take the head, reading the tail back when the window runs low.
    pub fn pop(&mut self) -> Option<QueuedMessage> {
        self.refill();
        let m = self.items.pop_front()?;
        self.mem_bytes = self.mem_bytes.saturating_sub(message_bytes(&m.message));
        self.body_bytes = self.body_bytes.saturating_sub(m.message.body.len() as u64);
        Some(m)
    }

    /// Read the tail back when the window runs low.
    fn refill(&mut self) {
        let window = self.store.window_bytes;
        if self.mem_bytes < window / 2 && self.tail_count() > 0 {
            let budget = window - self.mem_bytes;
            if let Some(log) = self.log.as_mut() {
                self.mem_bytes += log.read_tail(budget, &mut self.items);
            }
        }
    }

    /// Put a message back at its original position, marked redelivered.
    pub fn requeue(&mut self, mut m: QueuedMessage) {
        m.redelivered = true;
        self.unpop(m);
    }

    /// Put back a message that was never handed out (redelivered unchanged).
    pub fn unpop(&mut self, m: QueuedMessage) {
        self.mem_bytes += message_bytes(&m.message);
        self.body_bytes += m.message.body.len() as u64;
        self.insert(m);
    }

    /// Put a message in memory at its place in delivery order.
    fn insert(&mut self, m: QueuedMessage) {
        if self.max_priority.is_none() && self.items.back().is_none_or(|b| b.seq < m.seq) {
            self.items.push_back(m);
            return;
        }
        // Requeues usually belong at or near the front.
        let key = self.order_key(&m);
        let pos = self.items.partition_point(|x| self.order_key(x) < key);
        self.items.insert(pos, m);
    }

    /// A delivered or dropped message is settled: its record may go.
    /// Entries are buffered until `flush_acks`.
    pub fn settle(&mut self, r: DiskRef) {
        if let Some(log) = self.log.as_mut() {
            if let Err(e) = log.settle(r) {
                log_ack_error(&e, "cannot record an ack");
            }
        }
    }

    /// Note that a message was delivered (buffered).
    pub fn mark_delivered(&mut self, r: DiskRef) {
        if let Some(log) = self.log.as_mut() {
            if let Err(e) = log.mark_delivered(r) {
                log_ack_error(&e, "cannot record a delivery");
            }
        }
    }

    /// Note that a message went back to the queue for the `count`-th time
    /// (buffered).
    pub fn mark_returned(&mut self, r: DiskRef, count: u32) {
        if let Some(log) = self.log.as_mut() {
            if let Err(e) = log.mark_returned(r, count) {
                log_ack_error(&e, "cannot record a requeue");
            }
        }
    }

    /// Write buffered acks to the OS.
    pub fn flush_acks(&mut self) {
        if let Some(log) = self.log.as_mut() {
            if let Err(e) = log.flush_acks() {
                log_ack_error(&e, "cannot write acks");
            }
        }
    }

    /// Drop every message; returns how many there were.
    pub fn purge(&mut self) -> usize {
        let mut n = self.items.len();
        for m in std::mem::take(&mut self.items) {
            if let Some(r) = m.disk {
                self.settle(r);
            }
        }
        self.mem_bytes = 0;
        self.body_bytes = 0;
        if let Some(log) = self.log.as_mut() {
            match log.purge_tail() {
                Ok(t) => n += t as usize,
                Err(e) => tracing::error!(error = %e, "cannot purge queued messages on disk"),
            }
        }
        self.flush_acks();
        n
    }

    /// Drop every message and delete the log's files (queue.delete).
    pub fn remove(&mut self) -> usize {
        let n = self.len();
        self.items.clear();
        self.mem_bytes = 0;
        self.body_bytes = 0;
        if let Some(log) = self.log.take() {
            log.remove();
        }
        n
    }

    /// Number of ready messages.
    pub fn len(&self) -> usize {
        self.items.len() + self.tail_count() as usize
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages held in memory.
    pub fn in_memory(&self) -> usize {
        self.items.len()
    }
}

/// An ack file write failed: while the disk is full (the store retries
/// and recovers) that is expected and logged quietly; anything else is an
/// error.
fn log_ack_error(e: &io::Error, what: &str) {
    if crate::store::syncer::is_out_of_space(e) {
        tracing::debug!(error = %e, what, "ack write waits for disk space");
    } else {
        tracing::error!(error = %e, what);
    }
}

#[cfg(test)]
mod tests;
