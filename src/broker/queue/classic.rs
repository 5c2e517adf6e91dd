//! The classic kind of queue: messages settled one by one, with TTLs,
//! dead-lettering, length limits, delivery limits and single active
//! consumer. Its ready messages are one FIFO lane, or one lane per
//! priority level with `x-max-priority` (see `broker::ready`).
//!
//! All mutable state sits behind one short-held mutex (never held across
//! `.await`: nothing in here is async). Publishers push under it and
//! dispatch happens in the same critical section, handing messages to
//! consumers round-robin, each only while it has prefetch credit. Store
//! writes (segment appends, ack entries) also happen under it: they go to
//! buffers or are plain `write`s to the OS; fsyncs run on the store's
//! sync thread, which flushes the queue through `SyncSource`. Every call
//! gets the time from its caller and returns timers and notifications as
//! effects (see `kind.rs`).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::kind::{Effect, Effects};
use super::{Gauges, Queue, Stored};
use crate::broker::consumer_set::ConsumerSet;
use crate::broker::dead_letter::{DeadLetter, Reason};
use crate::broker::message::{Message, QueuedMessage};
use crate::broker::queue_policy::{Overflow, QueuePolicy};
use crate::broker::ready::ReadyMessages;
use crate::store::{DiskRef, SyncSource};
use parking_lot::Mutex;

mod applied_policy;
mod delivery;
mod interface;
mod lifecycle;
#[cfg(test)]
mod tests;

/// A classic (or priority) queue's messages and consumers.
#[derive(Debug)]
pub struct ClassicQueue {
    state: Mutex<QueueState>,
    /// The policy in force has a delivery limit (read per delivery).
    has_delivery_limit: AtomicBool,
    saturated: AtomicBool,
    /// A message published now would stay in memory (ready messages wait,
    /// or no consumer can take one): a hint, set after each dispatch, that
    /// publishers use to copy small messages out of their read buffer
    /// only when they will be kept.
    keeps: AtomicBool,
}

#[derive(Debug)]
struct QueueState {
    /// What the queue does: its arguments with the matching policies.
    policy: QueuePolicy,
    /// The policies applied, as the API shows them.
    applied: crate::broker::policy::Matched,
    ready: ReadyMessages,
    consumers: ConsumerSet,
    had_consumer: bool,
    deleted: bool,
    /// Messages to route to the dead-letter exchange (by the housekeeping
    /// task, outside this lock).
    dead_letters: Vec<DeadLetter>,
    /// The housekeeping task has been told about `dead_letters`.
    dead_letters_announced: bool,
    /// The head expiry the housekeeping task will wake this queue for.
    expiry_scheduled: Option<u64>,
    /// x-expires: when the queue was last used (Unix ms), and whether the
    /// housekeeping task will check it.
    last_used_ms: u64,
    unused_check_scheduled: bool,
}

/// One call into the queue: the queue it serves, the time it happens at,
/// and the effects it asks for.
struct Call<'a> {
    q: &'a Arc<Queue>,
    now: u64,
    fx: &'a mut Effects,
}

/// What a message in memory costs besides its body: the queued entry, the
/// shared message and its properties (an estimate).
const MESSAGE_OVERHEAD_BYTES: u64 =
    (std::mem::size_of::<QueuedMessage>() + std::mem::size_of::<Message>() + 64) as u64;

impl ClassicQueue {
    /// A queue with `ready` (empty, or recovered from disk) that does
    /// what `policy` (its arguments) says; `now_ms` starts x-expires.
    pub fn new(policy: QueuePolicy, ready: ReadyMessages, now_ms: u64) -> Self {
        let consumers = ConsumerSet::new(policy.single_active_consumer);
        ClassicQueue {
            has_delivery_limit: AtomicBool::new(policy.delivery_limit.is_some()),
            state: Mutex::new(QueueState {
                policy,
                applied: Default::default(),
                ready,
                consumers,
                had_consumer: false,
                deleted: false,
                dead_letters: Vec::new(),
                dead_letters_announced: false,
                expiry_scheduled: None,
                last_used_ms: now_ms,
                unused_check_scheduled: false,
            }),
            saturated: AtomicBool::new(false),
            keeps: AtomicBool::new(true),
        }
    }

    /// The blocked-time clock of its consumers (for the queue's stats).
    pub fn blocked_time(&self) -> Arc<crate::broker::consumer_set::BlockedTime> {
        self.state.lock().consumers.blocked_time()
    }

    fn publish(&self, c: &mut Call<'_>, message: Arc<Message>) -> Stored {
        let q = c.q;
        let mut st = self.state.lock();
        if st.deleted {
            return Stored::Done;
        }
        let durable_write = q.durable && message.persistent;
        if durable_write && q.ctx.store.syncer.failed() {
            return Stored::Failed;
        }
        let ttl = match (st.policy.message_ttl_ms, message.expiration_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let expires_at_ms = ttl.map(|t| c.now.saturating_add(t));
        let limited = st.policy.max_length.is_some() || st.policy.max_length_bytes.is_some();
        if limited && st.policy.overflow != Overflow::DropHead {
            let count = st.ready.len() as u64 + 1;
            let bytes = st.ready.body_bytes() + message.body.len() as u64;
            if st.policy.over_limit(count, bytes) {
                if st.policy.overflow == Overflow::RejectPublishDlx {
                    let m = QueuedMessage::unqueued(message);
                    drop_message(q, &mut st, m, Reason::Maxlen);
                    after_change(c, &mut st);
                }
                return Stored::Rejected(0);
            }
        }
        q.stats.published();
        let stored = match st.ready.push(message, expires_at_ms) {
            Ok(Some(r)) if r.logged => Stored::AfterSync(register_dirty(q, &mut st)),
            Ok(_) => Stored::Done,
            Err(e) => {
                tracing::error!(queue = %q.name, error = %e, "cannot store a message");
                if durable_write {
                    // What was written may be partial: stop, as a failed
                    // fsync does, rather than confirm around it.
                    q.ctx.store.syncer.fail(&e);
                }
                return Stored::Failed;
            }
        };
        if limited && st.policy.overflow == Overflow::DropHead {
            drop_over_limit(q, &mut st);
        }
        self.dispatch_at(c, &mut st);
        if ttl == Some(0) {
            // TTL 0: delivered above if a consumer could take it, else gone.
            expire_head(q, &mut st, c.now);
            after_change(c, &mut st);
        }
        stored
    }

    /// The housekeeping task's wake-up for the head expiry `at_ms` (None:
    /// look now, at start): expire what is due, deliver, and schedule the
    /// next expiry. A stale wake-up (the queue has asked for another time
    /// since) does nothing, so superseded timers do not multiply.
    fn expire_due(&self, c: &mut Call<'_>, at_ms: Option<u64>) {
        let mut st = self.state.lock();
        if at_ms.is_some() && st.expiry_scheduled.is_some() && st.expiry_scheduled != at_ms {
            return;
        }
        st.expiry_scheduled = None;
        if !st.deleted {
            self.dispatch_at(c, &mut st);
        }
    }

    /// The properties a delivery of `m` carries: as published, plus
    /// `x-delivery-count` on a queue with x-delivery-limit once it came back
    /// (and, for basic.get, from 0: RabbitMQ's quorum queues do the same).
    fn delivery_properties(&self, m: &QueuedMessage, get: bool) -> bytes::Bytes {
        let limited = self
            .has_delivery_limit
            .load(std::sync::atomic::Ordering::Relaxed);
        match limited && (get || m.delivery_count > 0) {
            true => {
                crate::broker::message::with_delivery_count(&m.message.properties, m.delivery_count)
            }
            false => m.message.properties.clone(),
        }
    }

    fn take_dead_letters(&self) -> Vec<DeadLetter> {
        let mut st = self.state.lock();
        st.dead_letters_announced = false;
        std::mem::take(&mut st.dead_letters)
    }

    /// Rejected or nacked without requeue: dead-letter or drop them.
    fn discard(&self, c: &mut Call<'_>, messages: &mut dyn Iterator<Item = QueuedMessage>) {
        let mut st = self.state.lock();
        for m in messages {
            if st.deleted {
                if let Some(r) = m.disk {
                    st.ready.settle(r);
                }
                continue;
            }
            if let Some(m) = restored(c.q, &mut st, m) {
                drop_message(c.q, &mut st, m, Reason::Rejected);
            }
        }
        after_change(c, &mut st);
    }

    fn page_out(&self, q: &Queue, m: &mut QueuedMessage) -> bool {
        let mut st = self.state.lock();
        if st.deleted {
            return false;
        }
        match st.ready.page_out(m) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(queue = %q.name, error = %e, "cannot page out an unacked message");
                false
            }
        }
    }

    /// basic.get: take the head message, with the count left behind it.
    /// With no-ack the message is settled at once.
    fn get(&self, c: &mut Call<'_>, no_ack: bool) -> Option<(QueuedMessage, u32)> {
        let mut st = self.state.lock();
        st.last_used_ms = c.now;
        expire_head(c.q, &mut st, c.now);
        let m = st.ready.pop();
        after_change(c, &mut st);
        let m = m?;
        if let Some(r) = m.disk {
            match no_ack {
                true => st.ready.settle(r),
                false => st.ready.mark_delivered(r),
            }
            st.ready.flush_acks();
        }
        self.update_saturation(c.q, &st);
        Some((m, st.ready.len() as u32))
    }

    /// Settle delivered messages that have records (ack, or reject without
    /// requeue): their records may go. The entries reach the OS before this
    /// returns, so an ack the broker has answered survives a crash.
    fn settle(&self, refs: &mut dyn Iterator<Item = DiskRef>) {
        let mut st = self.state.lock();
        for r in refs {
            st.ready.settle(r);
        }
        st.ready.flush_acks();
    }

    /// Return unacked messages to their original positions.
    fn requeue(&self, c: &mut Call<'_>, messages: &mut dyn Iterator<Item = QueuedMessage>) {
        let mut st = self.state.lock();
        if st.deleted {
            return;
        }
        for m in messages {
            let Some(mut m) = restored(c.q, &mut st, m) else {
                continue;
            };
            m.delivery_count = m.delivery_count.saturating_add(1);
            // x-delivery-limit: returned more often than the limit, the
            // message leaves (dead-lettered or dropped), as in RabbitMQ.
            if st
                .policy
                .delivery_limit
                .is_some_and(|l| u64::from(m.delivery_count) > l)
            {
                drop_message(c.q, &mut st, m, Reason::DeliveryLimit);
                continue;
            }
            // Only a limit needs the count across restarts.
            if let Some(r) = m.disk.filter(|_| st.policy.delivery_limit.is_some()) {
                st.ready.mark_returned(r, m.delivery_count);
            }
            st.ready.requeue(m);
        }
        self.dispatch_at(c, &mut st);
    }

    /// Put back a message that was dispatched but never reached the client
    /// (its connection went away first); it keeps its redelivered flag.
    fn return_undelivered(&self, c: &mut Call<'_>, message: QueuedMessage) {
        let mut st = self.state.lock();
        if st.deleted {
            return;
        }
        st.ready.unpop(message);
        self.dispatch_at(c, &mut st);
    }

    fn purge(&self, q: &Queue) -> u32 {
        let mut st = self.state.lock();
        let n = st.ready.purge() as u32;
        self.update_saturation(q, &st);
        n
    }

    fn gauges(&self) -> Gauges {
        let st = self.state.lock();
        let ready = st.ready.len() as u64;
        let ready_bytes = st.ready.body_bytes();
        // Messages in memory at the average body size, plus what each
        // costs besides its body (bodies shared by fan-out count in full).
        let per_message = ready_bytes / ready.max(1) + MESSAGE_OVERHEAD_BYTES;
        Gauges {
            ready,
            ready_bytes,
            consumers: st.consumers.len() as u64,
            memory_bytes: std::mem::size_of::<Queue>() as u64
                + std::mem::size_of::<ClassicQueue>() as u64
                + st.ready.in_memory() as u64 * per_message,
        }
    }
}

/// A message leaves the queue without being delivered: to the dead-letter
/// exchange if there is one (its record is settled once the copy is
/// stored), else dropped.
fn drop_message(q: &Queue, st: &mut QueueState, m: QueuedMessage, reason: Reason) {
    if st.policy.dead_letter_exchange.is_some() && q.ctx.chores.is_some() {
        st.dead_letters.push(DeadLetter { message: m, reason });
    } else if let Some(r) = m.disk {
        st.ready.settle(r);
    }
}

/// Drop (or dead-letter) expired messages at the head.
fn expire_head(q: &Queue, st: &mut QueueState, now: u64) {
    while st.ready.head_expiry().is_some_and(|at| at <= now) {
        let Some(m) = st.ready.pop() else {
            break;
        };
        drop_message(q, st, m, Reason::Expired);
    }
}

/// Drop (or dead-letter) messages from the head while over a length limit.
fn drop_over_limit(q: &Queue, st: &mut QueueState) {
    while st
        .policy
        .over_limit(st.ready.len() as u64, st.ready.body_bytes())
    {
        let Some(head) = st.ready.pop() else {
            break;
        };
        drop_message(q, st, head, Reason::Maxlen);
    }
}

/// After the head or the dead letters changed: ask for the housekeeping
/// task's timer and routing, and write out acks of dropped messages.
fn after_change(c: &mut Call<'_>, st: &mut QueueState) {
    st.ready.flush_acks();
    if c.q.ctx.chores.is_none() {
        return;
    }
    if let Some(at) = st.ready.head_expiry() {
        if st.expiry_scheduled.is_none_or(|s| at < s) {
            st.expiry_scheduled = Some(at);
            c.fx.push(Effect::ExpireAt(at));
        }
    }
    if !st.dead_letters.is_empty() && !st.dead_letters_announced {
        st.dead_letters_announced = true;
        c.fx.push(Effect::DeadLetters);
    }
}

/// A returning message with its body back in memory; None (its record
/// settled) if the body cannot be read back.
fn restored(q: &Queue, st: &mut QueueState, mut m: QueuedMessage) -> Option<QueuedMessage> {
    match st.ready.restore(&mut m) {
        Ok(()) => Some(m),
        Err(e) => {
            tracing::error!(queue = %q.name, error = %e, "cannot read an unacked message back; it is dropped");
            if let Some(r) = m.disk {
                st.ready.settle(r);
            }
            None
        }
    }
}

/// Have the sync thread flush this queue's buffers; returns the sync
/// round that will have done it.
fn register_dirty(q: &Arc<Queue>, st: &mut QueueState) -> u64 {
    if !st.ready.has_log() {
        return 0;
    }
    st.ready.sync_ticket(|| {
        let me: Arc<dyn SyncSource> = q.clone();
        Arc::downgrade(&me)
    })
}
