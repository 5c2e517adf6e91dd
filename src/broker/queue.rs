//! A queue: its declared properties, its ready messages and its consumers.
//!
//! All mutable state sits behind one short-held mutex per queue (never held
//! across `.await`: nothing in here is async). Publishers push under it and
//! dispatch happens in the same critical section, handing messages to
//! consumers round-robin, each only while it has prefetch credit.
//! Store writes (segment appends, ack entries) also happen under it: they
//! go to buffers or are plain `write`s to the OS; fsyncs run on the
//! store's sync thread, which flushes the queue through `SyncSource`.

use std::fs::File;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use amq_protocol::types::FieldTable;
use parking_lot::Mutex;

use super::chores::{Chore, ChoreSender};
use super::consumer_set::ConsumerSet;
use super::dead_letter::{DeadLetter, Reason};
use super::message::{now_ms, Message, QueuedMessage};
use super::queue_policy::{Overflow, QueuePolicy};
use super::ready::ReadyMessages;
use crate::store::{DiskRef, Store, SyncSource};

mod applied_policy;
mod delivery;
mod lifecycle;
pub mod stats;

/// A declared queue.
#[derive(Debug)]
pub struct Queue {
    /// Name.
    pub name: Arc<str>,
    /// Vhost name, for error texts.
    pub vhost: Arc<str>,
    /// Survives restarts.
    pub durable: bool,
    /// Owning connection of an exclusive queue.
    pub exclusive_owner: Option<u64>,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
    /// Its directory under the store's `queues/` (durable queues).
    pub disk_dir: Option<String>,
    /// What its arguments make it do (TTL, dead-lettering, limits); with
    /// the policies that match it, `QueueState::policy` (see
    /// `applied_policy.rs`).
    pub declared: QueuePolicy,
    /// `QueueState::policy` has a delivery limit (read per delivery).
    has_delivery_limit: AtomicBool,
    /// Counters for the management API and metrics.
    pub stats: stats::QueueStats,
    /// With `x-message-deduplication`: the keys seen (checked by publishers).
    pub dedup: Option<super::dedup::Cache>,
    /// A stream queue's log and readers: every call below is handed to it
    /// (its `state` stays empty).
    pub stream: Option<super::stream::StreamQueue>,
    state: Mutex<QueueState>,
    saturated: AtomicBool,
    /// A message published now would stay in memory (ready messages wait,
    /// or no consumer can take one): a hint, set after each dispatch, that
    /// publishers use to copy small messages out of their read buffer
    /// only when they will be kept.
    keeps: AtomicBool,
    ctx: QueueContext,
}

/// What every queue of a vhost shares.
#[derive(Clone, Debug)]
pub struct QueueContext {
    /// Flow-control watermarks.
    pub flow: FlowLimits,
    /// The data directory.
    pub store: Arc<Store>,
    /// The vhost's housekeeping task (expiry timers, dead letters).
    pub chores: Option<ChoreSender>,
}

/// What became of a published message at one queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// In the queue; nothing to wait for before confirming.
    Done,
    /// Written to disk; confirm once the store's sync round reaches this.
    AfterSync(u64),
    /// A queue refused it (x-overflow reject-publish): nack it; copies in
    /// other queues wait for this sync round (0: none).
    Rejected(u64),
    /// The store failed: the message is not stored (nack it).
    Failed,
}

impl Stored {
    /// The sync round to wait for (0: none).
    pub fn sync_round(self) -> u64 {
        match self {
            Stored::AfterSync(t) | Stored::Rejected(t) => t,
            Stored::Done | Stored::Failed => 0,
        }
    }

    /// The outcome of a message that went to two queues.
    pub fn and(self, other: Stored) -> Stored {
        let round = self.sync_round().max(other.sync_round());
        match (self, other) {
            (Stored::Failed, _) | (_, Stored::Failed) => Stored::Failed,
            (Stored::Rejected(_), _) | (_, Stored::Rejected(_)) => Stored::Rejected(round),
            _ if round > 0 => Stored::AfterSync(round),
            _ => Stored::Done,
        }
    }
}

/// Default ready-message count above which a queue whose consumers'
/// connections are full holds its publishers back.
pub const FLOW_HIGH_WATERMARK: usize = 5_000;
/// Default count under which publishers resume.
pub const FLOW_LOW_WATERMARK: usize = 2_500;

/// Flow-control watermarks of a queue (see `Queue::update_saturation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowLimits {
    /// Hold publishers back above this many ready messages.
    pub high: usize,
    /// Let them go again under this many.
    pub low: usize,
}

impl Default for FlowLimits {
    fn default() -> Self {
        FlowLimits {
            high: FLOW_HIGH_WATERMARK,
            low: FLOW_LOW_WATERMARK,
        }
    }
}

#[derive(Debug)]
struct QueueState {
    /// What the queue does: its arguments with the matching policies.
    policy: QueuePolicy,
    /// The policies applied, as the API shows them.
    applied: super::policy::Matched,
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

/// Why a conditional delete did not happen.
#[derive(Debug, PartialEq, Eq)]
pub enum DeleteRefused {
    /// if-unused, and the queue has consumers.
    InUse,
    /// if-empty, and the queue has ready messages.
    NotEmpty,
}

/// What removing a consumer left behind.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConsumerRemoval {
    /// A consumer was removed.
    pub removed: bool,
    /// The queue is auto-delete and has just lost its last consumer.
    pub should_auto_delete: bool,
}

impl Queue {
    /// A queue with the given messages (empty, or recovered from disk).
    pub fn new(def: QueueDef<'_>, ready: ReadyMessages, ctx: QueueContext) -> Self {
        let policy = QueuePolicy::from_arguments(&def.arguments);
        let consumers = ConsumerSet::new(policy.single_active_consumer);
        Queue {
            name: Arc::from(def.name),
            vhost: Arc::from(def.vhost),
            durable: def.disk_dir.is_some(),
            exclusive_owner: def.exclusive_owner,
            auto_delete: def.auto_delete,
            has_delivery_limit: AtomicBool::new(policy.delivery_limit.is_some()),
            declared: policy.clone(),
            // Checked at declare.
            dedup: super::dedup::Settings::parse(&def.arguments)
                .ok()
                .flatten()
                .map(super::dedup::Cache::new),
            arguments: def.arguments,
            disk_dir: def.disk_dir,
            stream: None,
            stats: stats::QueueStats::new(consumers.blocked_time()),
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
                last_used_ms: now_ms(),
                unused_check_scheduled: false,
            }),
            saturated: AtomicBool::new(false),
            keeps: AtomicBool::new(true),
            ctx,
        }
    }

    /// A stream queue over `stream`.
    pub fn new_stream(
        def: QueueDef<'_>,
        stream: super::stream::StreamQueue,
        ctx: QueueContext,
    ) -> std::io::Result<Self> {
        let ready = ReadyMessages::new(ctx.store.clone(), None, None)?;
        let mut q = Queue::new(def, ready, ctx);
        q.stream = Some(stream);
        Ok(q)
    }

    /// Whether this is a stream queue.
    pub fn is_stream(&self) -> bool {
        self.stream.is_some()
    }

    /// Enqueue a routed message and hand out what consumers can take.
    pub fn publish(self: &Arc<Self>, message: Arc<Message>) -> Stored {
        if let Some(s) = &self.stream {
            return s.publish(self, message);
        }
        let mut st = self.state.lock();
        if st.deleted {
            return Stored::Done;
        }
        let durable_write = self.durable && message.persistent;
        if durable_write && self.ctx.store.syncer.failed() {
            return Stored::Failed;
        }
        let now = now_ms();
        let ttl = match (st.policy.message_ttl_ms, message.expiration_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let expires_at_ms = ttl.map(|t| now.saturating_add(t));
        let limited = st.policy.max_length.is_some() || st.policy.max_length_bytes.is_some();
        if limited && st.policy.overflow != Overflow::DropHead {
            let count = st.ready.len() as u64 + 1;
            let bytes = st.ready.body_bytes() + message.body.len() as u64;
            if st.policy.over_limit(count, bytes) {
                if st.policy.overflow == Overflow::RejectPublishDlx {
                    let m = QueuedMessage::unqueued(message);
                    self.drop_message(&mut st, m, Reason::Maxlen);
                    self.after_change(&mut st);
                }
                return Stored::Rejected(0);
            }
        }
        self.stats.published();
        let stored = match st.ready.push(message, expires_at_ms) {
            Ok(Some(r)) if r.logged => Stored::AfterSync(self.register_dirty(&mut st)),
            Ok(_) => Stored::Done,
            Err(e) => {
                tracing::error!(queue = %self.name, error = %e, "cannot store a message");
                if durable_write {
                    // What was written may be partial: stop, as a failed
                    // fsync does, rather than confirm around it.
                    self.ctx.store.syncer.fail(&e);
                }
                return Stored::Failed;
            }
        };
        if limited && st.policy.overflow == Overflow::DropHead {
            self.drop_over_limit(&mut st);
        }
        self.dispatch_at(&mut st, now);
        if ttl == Some(0) {
            // TTL 0: delivered above if a consumer could take it, else gone.
            self.expire_head(&mut st, now);
            self.after_change(&mut st);
        }
        stored
    }

    /// A message leaves the queue without being delivered: to the
    /// dead-letter exchange if there is one (its record is settled once the
    /// copy is stored), else dropped.
    fn drop_message(&self, st: &mut QueueState, m: QueuedMessage, reason: Reason) {
        if st.policy.dead_letter_exchange.is_some() && self.ctx.chores.is_some() {
            st.dead_letters.push(DeadLetter { message: m, reason });
        } else if let Some(r) = m.disk {
            st.ready.settle(r);
        }
    }

    /// Drop (or dead-letter) expired messages at the head.
    fn expire_head(&self, st: &mut QueueState, now: u64) {
        while st.ready.head_expiry().is_some_and(|at| at <= now) {
            let Some(m) = st.ready.pop() else {
                break;
            };
            self.drop_message(st, m, Reason::Expired);
        }
    }

    /// After the head or the dead letters changed: tell the housekeeping
    /// task what it must do, and write out acks of dropped messages.
    fn after_change(self: &Arc<Self>, st: &mut QueueState) {
        st.ready.flush_acks();
        let Some(chores) = &self.ctx.chores else {
            return;
        };
        if let Some(at) = st.ready.head_expiry() {
            if st.expiry_scheduled.is_none_or(|s| at < s) {
                st.expiry_scheduled = Some(at);
                let _ = chores.send(Chore::Expire {
                    at_ms: at,
                    queue: Arc::downgrade(self),
                });
            }
        }
        if !st.dead_letters.is_empty() && !st.dead_letters_announced {
            st.dead_letters_announced = true;
            let _ = chores.send(Chore::DeadLetters(Arc::downgrade(self)));
        }
    }

    /// The housekeeping task's wake-up for the head expiry `at_ms` (None:
    /// look now, at start): expire what is due, deliver, and schedule the
    /// next expiry. A stale wake-up (the queue has asked for another time
    /// since) does nothing, so superseded timers do not multiply.
    pub fn expire_due(self: &Arc<Self>, at_ms: Option<u64>) {
        let mut st = self.state.lock();
        if at_ms.is_some() && st.expiry_scheduled.is_some() && st.expiry_scheduled != at_ms {
            return;
        }
        st.expiry_scheduled = None;
        if !st.deleted {
            self.dispatch_locked(&mut st);
        }
    }

    /// The properties a delivery of `m` carries: as published, plus
    /// `x-delivery-count` on a queue with x-delivery-limit once it came back
    /// (and, for basic.get, from 0: RabbitMQ's quorum queues do the same).
    pub fn delivery_properties(&self, m: &QueuedMessage, get: bool) -> bytes::Bytes {
        if self.stream.is_some() {
            return super::stream::delivery_properties(m);
        }
        let limited = self
            .has_delivery_limit
            .load(std::sync::atomic::Ordering::Relaxed);
        match limited && (get || m.delivery_count > 0) {
            true => super::message::with_delivery_count(&m.message.properties, m.delivery_count),
            false => m.message.properties.clone(),
        }
    }

    /// Hand the dead letters over to the housekeeping task.
    pub fn take_dead_letters(&self) -> Vec<DeadLetter> {
        let mut st = self.state.lock();
        st.dead_letters_announced = false;
        std::mem::take(&mut st.dead_letters)
    }

    /// Rejected or nacked without requeue: dead-letter or drop them.
    pub fn discard(self: &Arc<Self>, messages: impl IntoIterator<Item = QueuedMessage>) {
        if self.stream.is_some() {
            // A stream keeps every message: a reject settles nothing.
            return;
        }
        let mut st = self.state.lock();
        for m in messages {
            if st.deleted {
                if let Some(r) = m.disk {
                    st.ready.settle(r);
                }
                continue;
            }
            if let Some(m) = self.restored(&mut st, m) {
                self.drop_message(&mut st, m, Reason::Rejected);
            }
        }
        self.after_change(&mut st);
    }

    /// Keep an unacked message's body on disk only (its connection holds
    /// too many in memory); false if it stays in memory (the queue is
    /// gone, or the record could not be written).
    pub fn page_out(&self, m: &mut QueuedMessage) -> bool {
        if self.stream.is_some() {
            // Nothing needs the body of a stream delivery back: an ack
            // needs its offset only, a nack requeues nothing.
            m.message = Arc::new(m.message.without_body());
            m.body_on_disk = true;
            return true;
        }
        let mut st = self.state.lock();
        if st.deleted {
            return false;
        }
        match st.ready.page_out(m) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(queue = %self.name, error = %e, "cannot page out an unacked message");
                false
            }
        }
    }

    /// A returning message with its body back in memory; None (its record
    /// settled) if the body cannot be read back.
    fn restored(&self, st: &mut QueueState, mut m: QueuedMessage) -> Option<QueuedMessage> {
        match st.ready.restore(&mut m) {
            Ok(()) => Some(m),
            Err(e) => {
                tracing::error!(queue = %self.name, error = %e, "cannot read an unacked message back; it is dropped");
                if let Some(r) = m.disk {
                    st.ready.settle(r);
                }
                None
            }
        }
    }

    /// Have the sync thread flush this queue's buffers; returns the sync
    /// round that will have done it.
    fn register_dirty(self: &Arc<Self>, st: &mut QueueState) -> u64 {
        if !st.ready.has_log() {
            return 0;
        }
        st.ready.sync_ticket(|| {
            let me: Arc<dyn SyncSource> = self.clone();
            Arc::downgrade(&me)
        })
    }

    /// basic.get: take the head message, with the count left behind it.
    /// With no-ack the message is settled at once.
    pub fn get(self: &Arc<Self>, no_ack: bool) -> Option<(QueuedMessage, u32)> {
        let mut st = self.state.lock();
        st.last_used_ms = now_ms();
        self.expire_head(&mut st, now_ms());
        let m = st.ready.pop();
        self.after_change(&mut st);
        let m = m?;
        if let Some(r) = m.disk {
            match no_ack {
                true => st.ready.settle(r),
                false => st.ready.mark_delivered(r),
            }
            st.ready.flush_acks();
        }
        self.update_saturation(&st);
        Some((m, st.ready.len() as u32))
    }

    /// Settle delivered messages that have records (ack, or reject without
    /// requeue): their records may go. The entries reach the OS before this
    /// returns, so an ack the broker has answered survives a crash.
    pub fn settle(&self, refs: impl IntoIterator<Item = DiskRef>) {
        let mut st = self.state.lock();
        for r in refs {
            st.ready.settle(r);
        }
        st.ready.flush_acks();
    }

    /// Return unacked messages to their original positions.
    pub fn requeue(self: &Arc<Self>, messages: impl IntoIterator<Item = QueuedMessage>) {
        if self.stream.is_some() {
            // Streams never requeue (as RabbitMQ's): the log keeps it.
            return;
        }
        let mut st = self.state.lock();
        if st.deleted {
            return;
        }
        for m in messages {
            let Some(mut m) = self.restored(&mut st, m) else {
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
                self.drop_message(&mut st, m, Reason::DeliveryLimit);
                continue;
            }
            // Only a limit needs the count across restarts.
            if let Some(r) = m.disk.filter(|_| st.policy.delivery_limit.is_some()) {
                st.ready.mark_returned(r, m.delivery_count);
            }
            st.ready.requeue(m);
        }
        self.dispatch_locked(&mut st);
    }

    /// Put back a message that was dispatched but never reached the client
    /// (its connection went away first); it keeps its redelivered flag.
    pub fn return_undelivered(self: &Arc<Self>, message: QueuedMessage) {
        if self.stream.is_some() {
            return;
        }
        let mut st = self.state.lock();
        if st.deleted {
            return;
        }
        st.ready.unpop(message);
        self.dispatch_locked(&mut st);
    }

    /// Drop all messages; returns how many.
    pub fn purge(&self) -> u32 {
        if self.stream.is_some() {
            return 0;
        }
        let mut st = self.state.lock();
        let n = st.ready.purge() as u32;
        self.update_saturation(&st);
        n
    }

    /// Ready messages (unacked ones excluded, as RabbitMQ reports).
    pub fn message_count(&self) -> u32 {
        if self.stream.is_some() {
            // RabbitMQ's declare-ok counts no message in a stream (the
            // API's `messages` does).
            return 0;
        }
        self.state.lock().ready.len() as u32
    }

    /// Ready messages, their body bytes and the consumers, read at once.
    pub fn gauges(&self) -> Gauges {
        if let Some(s) = &self.stream {
            let (log, readers) = s.sizes();
            return Gauges {
                ready: log.next_offset - log.first_offset,
                ready_bytes: log.bytes,
                consumers: readers as u64,
                memory_bytes: std::mem::size_of::<Queue>() as u64
                    + crate::store::stream_log::TAIL_BYTES,
            };
        }
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
                + st.ready.in_memory() as u64 * per_message,
        }
    }

    /// The queue's consumer timeout (argument or policy), ms.
    pub fn consumer_timeout_ms(&self) -> Option<u64> {
        self.state.lock().policy.consumer_timeout_ms
    }

    /// Registered consumers, as declare-ok reports them.
    pub fn consumer_count(&self) -> u32 {
        if self.stream.is_some() {
            // As RabbitMQ's declare-ok for a stream (the API counts them).
            return 0;
        }
        self.state.lock().consumers.len() as u32
    }

    /// Whether a message published now would probably stay in memory
    /// (see `keeps`).
    pub fn would_keep(&self) -> bool {
        self.keeps.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A stream's pass (see `stream`).
    pub fn stream_pass(self: &Arc<Self>) {
        if let Some(s) = &self.stream {
            s.pass(self);
        }
    }

    /// Whether this queue has been deleted.
    pub fn is_deleted(&self) -> bool {
        if let Some(s) = &self.stream {
            return s.is_deleted();
        }
        self.state.lock().deleted
    }
}

impl SyncSource for Queue {
    fn flush_for_sync(&self, out: &mut Vec<Arc<File>>) -> std::io::Result<()> {
        if let Some(s) = &self.stream {
            return s.flush_for_sync(out);
        }
        self.state.lock().ready.flush_for_sync(out)
    }
}

/// What a queue holds now (see [`Queue::gauges`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Ready messages.
    pub ready: u64,
    /// Their body bytes.
    pub ready_bytes: u64,
    /// Consumers.
    pub consumers: u64,
    /// Estimated bytes of memory the queue holds (its messages in memory).
    pub memory_bytes: u64,
}

/// What a message in memory costs besides its body: the queued entry, the
/// shared message and its properties (an estimate).
const MESSAGE_OVERHEAD_BYTES: u64 = (std::mem::size_of::<QueuedMessage>()
    + std::mem::size_of::<crate::broker::message::Message>()
    + 64) as u64;

/// The declared properties of a queue.
#[derive(Debug)]
pub struct QueueDef<'a> {
    /// Name.
    pub name: &'a str,
    /// Vhost name.
    pub vhost: &'a str,
    /// Directory under the store's `queues/`: set for durable queues.
    pub disk_dir: Option<String>,
    /// Owning connection of an exclusive queue.
    pub exclusive_owner: Option<u64>,
    /// auto-delete flag.
    pub auto_delete: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
}
