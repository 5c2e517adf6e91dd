//! The interface every kind of queue implements, and the side effects a
//! kind returns instead of performing under its lock.
//!
//! A [`Queue`] is the part every kind shares (name, flags, arguments,
//! counters, the vhost's context) and a kind that owns the messages:
//! - `classic` (`queue/classic.rs`): messages settled one by one, TTLs,
//!   dead-lettering, length limits, single active consumer; its ready
//!   messages are one FIFO lane or, with `x-max-priority`, one lane per
//!   priority level (`broker/ready/priority.rs`);
//! - `stream` (`broker/stream/`): an append-only log read by cursors.
//!
//! The connection layer and the vhost call `Queue`'s methods only, which
//! read the clock once and hand the time to the kind, so a kind's state
//! changes depend on its inputs alone (tests drive them at chosen times).
//! What a change asks of the world outside the queue (a timer, a task,
//! a cancel notification, a directory to delete) comes back as
//! [`Effect`]s, which `Queue` performs after the kind's lock is released.
//! Two things stay inside the lock, on purpose: writes to the queue's own
//! files (its log is its state) and deliveries to consumers' mailboxes
//! (a full mailbox parks the consumer and a closed one removes it, which
//! the state must know before it hands out the next message).

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;

use super::{ConsumerRemoval, DeleteRefused, Gauges, Queue, Stored};
use crate::broker::chores::Chore;
use crate::broker::consumer::{ConnEvent, Consumer};
use crate::broker::dead_letter::DeadLetter;
use crate::broker::message::{Message, QueuedMessage};
use crate::broker::policy::Matched;
use crate::broker::stream::options::ConsumeOptions;
use crate::broker::stream::StreamQueue;
use crate::protocol::AmqpError;
use crate::store::DiskRef;

/// Messages handed back to a queue (requeued, rejected, settled).
pub type Returned<'a, T> = &'a mut dyn Iterator<Item = T>;

/// What a kind of queue does. Every method that changes state takes the
/// time (`now_ms`, Unix milliseconds) and collects its side effects in
/// `fx`, performed by the caller once the kind's lock is released.
pub trait QueueKind: Send + Sync + Debug {
    /// Enqueue (or append) a routed message and hand out what consumers
    /// can take.
    fn publish(&self, q: &Arc<Queue>, m: Arc<Message>, now_ms: u64, fx: &mut Effects) -> Stored;

    /// Register a consumer (`stream`: what a stream consumer asked for).
    fn add_consumer(
        &self,
        q: &Arc<Queue>,
        c: Consumer,
        stream: Option<ConsumeOptions>,
        now_ms: u64,
        fx: &mut Effects,
    ) -> Result<(), AmqpError>;

    /// basic.cancel of one consumer (by its connection's id for it).
    fn cancel_consumer(
        &self,
        q: &Arc<Queue>,
        conn_id: u64,
        consumer_id: u64,
        now_ms: u64,
        fx: &mut Effects,
    ) -> ConsumerRemoval;

    /// Remove the consumers of a closing channel, without dispatching.
    fn remove_consumers(
        &self,
        q: &Arc<Queue>,
        conn_id: u64,
        consumer_ids: &[u64],
        now_ms: u64,
        fx: &mut Effects,
    ) -> ConsumerRemoval;

    /// Hand out what consumers with credit can take.
    fn dispatch(&self, q: &Arc<Queue>, now_ms: u64, fx: &mut Effects);

    /// basic.get: the head message and the count left behind it.
    fn get(
        &self,
        q: &Arc<Queue>,
        no_ack: bool,
        now_ms: u64,
        fx: &mut Effects,
    ) -> Option<(QueuedMessage, u32)>;

    /// Acked deliveries with records: their records may go.
    fn settle(&self, refs: Returned<'_, DiskRef>);

    /// Unacked deliveries come back to their places.
    fn requeue(
        &self,
        q: &Arc<Queue>,
        ms: Returned<'_, QueuedMessage>,
        now_ms: u64,
        fx: &mut Effects,
    );

    /// Rejected or nacked without requeue.
    fn discard(
        &self,
        q: &Arc<Queue>,
        ms: Returned<'_, QueuedMessage>,
        now_ms: u64,
        fx: &mut Effects,
    );

    /// A dispatched message that never reached its client.
    fn return_undelivered(&self, q: &Arc<Queue>, m: QueuedMessage, now_ms: u64, fx: &mut Effects);

    /// Keep an unacked delivery's body on disk only; false if it stays.
    fn page_out(&self, q: &Queue, m: &mut QueuedMessage) -> bool;

    /// queue.purge: drop the ready messages, returning how many.
    fn purge(&self, q: &Queue) -> u32;

    /// queue.delete (`if_unused`, `if_empty`: the conditions to check);
    /// the number of messages dropped.
    fn delete(
        &self,
        if_unused: bool,
        if_empty: bool,
        fx: &mut Effects,
    ) -> Result<u32, DeleteRefused>;

    /// Whether the queue was deleted.
    fn is_deleted(&self) -> bool;

    /// The policies matching the queue changed.
    fn apply_policy(&self, q: &Arc<Queue>, matched: Matched, now_ms: u64, fx: &mut Effects);

    /// The policies applied (for the API).
    fn applied_policy(&self) -> Matched;

    /// The properties a delivery of `m` carries (`get`: for basic.get).
    fn delivery_properties(&self, m: &QueuedMessage, get: bool) -> bytes::Bytes;

    /// The message count declare-ok reports.
    fn message_count(&self) -> u32;

    /// The consumer count declare-ok reports.
    fn consumer_count(&self) -> u32;

    /// What the queue holds now.
    fn gauges(&self) -> Gauges;

    /// The consumer timeout in force (argument or policy), ms.
    fn consumer_timeout_ms(&self, q: &Queue) -> Option<u64>;

    /// Write buffers to the OS and list the files to sync.
    fn flush_for_sync(&self, out: &mut Vec<Arc<std::fs::File>>) -> std::io::Result<()>;

    /// The housekeeping task's wake-up for a head expiry (classic).
    fn expire_due(&self, _q: &Arc<Queue>, _at_ms: Option<u64>, _now_ms: u64, _fx: &mut Effects) {}

    /// Dead letters waiting to be routed (classic).
    fn take_dead_letters(&self) -> Vec<DeadLetter> {
        Vec::new()
    }

    /// x-expires: note a use (classic).
    fn touch(&self, _now_ms: u64, _fx: &mut Effects) {}

    /// x-expires: delete if unused for long enough; true if deleted.
    fn delete_if_expired(&self, _now_ms: u64, _fx: &mut Effects) -> bool {
        false
    }

    /// Where dead letters go (exchange, routing key).
    fn dead_letter_target(&self) -> (Option<String>, Option<String>) {
        (None, None)
    }

    /// Whether a message published now would stay in memory.
    fn would_keep(&self) -> bool {
        true
    }

    /// Whether publishers to this queue should pause.
    fn is_saturated(&self) -> bool {
        false
    }

    /// Recompute saturation now.
    fn recheck_saturation(&self, _q: &Queue) -> bool {
        false
    }

    /// A stream's scheduled pass.
    fn pass(&self, _q: &Arc<Queue>, _now_ms: u64, _fx: &mut Effects) {}

    /// A stream consumer under `tag` has acked everything before `next`.
    fn stream_acked(&self, _tag: &str, _next: u64) {}

    /// Deliveries to a stream consumer under `tag` from `offset` on were
    /// taken back unacked.
    fn stream_taken_back(&self, _tag: &Arc<str>, _offset: u64) {}

    /// The stream, for a stream queue.
    fn as_stream(&self) -> Option<&StreamQueue> {
        None
    }
}

/// Something a queue's state change asks of the world outside it.
#[derive(Debug)]
pub enum Effect {
    /// Wake the queue (`expire_due`) when its head expires at this time.
    ExpireAt(u64),
    /// Route the queue's dead letters (`take_dead_letters`).
    DeadLetters,
    /// Check x-expires (`delete_if_expired`) at this time.
    CheckUnusedAt(u64),
    /// Tell a consumer it was cancelled (its queue was deleted).
    Cancel(Consumer),
    /// Run the stream's pass (`pass`) in a task of its own.
    StreamPass,
    /// Delete a directory (off the caller's thread).
    RemoveDir(PathBuf),
}

/// The effects of one call, in order.
#[derive(Debug, Default)]
pub struct Effects(Vec<Effect>);

impl Effects {
    /// Ask for `e`.
    pub fn push(&mut self, e: Effect) {
        self.0.push(e);
    }

    /// What was asked, for tests.
    pub fn as_slice(&self) -> &[Effect] {
        &self.0
    }

    /// Carry the effects out for `q` (its lock released).
    pub fn perform(self, q: &Arc<Queue>) {
        for e in self.0 {
            perform(q, e);
        }
    }
}

fn perform(q: &Arc<Queue>, e: Effect) {
    let chore = |c: Chore| {
        if let Some(chores) = &q.ctx.chores {
            let _ = chores.send(c);
        }
    };
    match e {
        Effect::ExpireAt(at_ms) => chore(Chore::Expire {
            at_ms,
            queue: Arc::downgrade(q),
        }),
        Effect::DeadLetters => chore(Chore::DeadLetters(Arc::downgrade(q))),
        Effect::CheckUnusedAt(at_ms) => chore(Chore::ExpireQueue {
            at_ms,
            queue: Arc::downgrade(q),
        }),
        Effect::Cancel(c) => {
            let _ = c.conn.send(ConnEvent::ConsumerCancelled {
                channel: c.channel,
                consumer_id: c.id,
                consumer_tag: c.tag.clone(),
            });
        }
        Effect::StreamPass => match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let q = q.clone();
                rt.spawn(async move {
                    tokio::task::yield_now().await;
                    q.stream_pass();
                });
            }
            // No runtime (unit tests): run it now.
            Err(_) => q.stream_pass(),
        },
        Effect::RemoveDir(path) => crate::store::reaper::remove_dir(&path),
    }
}
