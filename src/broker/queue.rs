//! A queue: what every kind of queue shares (name, flags, arguments,
//! counters, the vhost's context) and the interface the connection layer
//! and the vhost call. Each call reads the clock once, hands it to the
//! queue's kind (`classic`, or `broker::stream`) with an empty list of
//! effects, and carries out the effects once the kind's lock is released
//! (see `kind.rs` for the interface and what stays under the lock).

use std::fs::File;
use std::sync::Arc;

use amq_protocol::types::FieldTable;

use super::chores::ChoreSender;
use super::consumer::Consumer;
use super::dead_letter::DeadLetter;
use super::message::{now_ms, Message, QueuedMessage};
use super::policy::Matched;
use super::queue_policy::QueuePolicy;
use super::ready::ReadyMessages;
use super::stream::options::ConsumeOptions;
use super::stream::StreamQueue;
use crate::protocol::AmqpError;
use crate::store::{DiskRef, Store, SyncSource};
use classic::ClassicQueue;
use kind::{Effects, QueueKind};

pub mod classic;
pub mod kind;
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
    /// the policies that match it, the kind's policy in force.
    pub declared: QueuePolicy,
    /// Counters for the management API and metrics.
    pub stats: stats::QueueStats,
    /// With `x-message-deduplication`: the keys seen (checked by publishers).
    pub dedup: Option<super::dedup::Cache>,
    /// The messages and consumers: classic (or priority) or stream.
    kind: Box<dyn QueueKind>,
    pub(crate) ctx: QueueContext,
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
    /// A classic (or priority) queue with the given messages (empty, or
    /// recovered from disk).
    pub fn new(def: QueueDef<'_>, ready: ReadyMessages, ctx: QueueContext) -> Self {
        let policy = QueuePolicy::from_arguments(&def.arguments);
        let classic = ClassicQueue::new(policy, ready, now_ms());
        let blocked = classic.blocked_time();
        Queue::with_kind(def, Box::new(classic), blocked, ctx)
    }

    /// A stream queue over `stream`.
    pub fn new_stream(def: QueueDef<'_>, stream: StreamQueue, ctx: QueueContext) -> Self {
        Queue::with_kind(def, Box::new(stream), Default::default(), ctx)
    }

    fn with_kind(
        def: QueueDef<'_>,
        kind: Box<dyn QueueKind>,
        blocked: Arc<crate::broker::consumer_set::BlockedTime>,
        ctx: QueueContext,
    ) -> Self {
        Queue {
            name: Arc::from(def.name),
            vhost: Arc::from(def.vhost),
            durable: def.disk_dir.is_some(),
            exclusive_owner: def.exclusive_owner,
            auto_delete: def.auto_delete,
            declared: QueuePolicy::from_arguments(&def.arguments),
            // Checked at declare.
            dedup: super::dedup::Settings::parse(&def.arguments)
                .ok()
                .flatten()
                .map(super::dedup::Cache::new),
            arguments: def.arguments,
            disk_dir: def.disk_dir,
            stats: stats::QueueStats::new(blocked),
            kind,
            ctx,
        }
    }

    /// Run `f` on the kind at the current time, then carry out the effects
    /// it returned (its lock released by then).
    fn call<R>(self: &Arc<Self>, f: impl FnOnce(&dyn QueueKind, u64, &mut Effects) -> R) -> R {
        let mut fx = Effects::default();
        let r = f(&*self.kind, now_ms(), &mut fx);
        fx.perform(self);
        r
    }

    /// The stream of a stream queue.
    pub fn as_stream(&self) -> Option<&StreamQueue> {
        self.kind.as_stream()
    }

    /// Whether this is a stream queue.
    pub fn is_stream(&self) -> bool {
        self.kind.as_stream().is_some()
    }

    /// Enqueue a routed message and hand out what consumers can take.
    pub fn publish(self: &Arc<Self>, message: Arc<Message>) -> Stored {
        self.call(|k, now, fx| k.publish(self, message, now, fx))
    }

    /// The housekeeping task's wake-up for the head expiry `at_ms` (None:
    /// look now, at start).
    pub fn expire_due(self: &Arc<Self>, at_ms: Option<u64>) {
        self.call(|k, now, fx| k.expire_due(self, at_ms, now, fx))
    }

    /// The properties a delivery of `m` carries (`get`: for basic.get).
    pub fn delivery_properties(&self, m: &QueuedMessage, get: bool) -> bytes::Bytes {
        self.kind.delivery_properties(m, get)
    }

    /// Hand the dead letters over to the housekeeping task.
    pub fn take_dead_letters(&self) -> Vec<DeadLetter> {
        self.kind.take_dead_letters()
    }

    /// Rejected or nacked without requeue: dead-letter or drop them.
    pub fn discard(self: &Arc<Self>, messages: impl IntoIterator<Item = QueuedMessage>) {
        let mut it = messages.into_iter();
        self.call(|k, now, fx| k.discard(self, &mut it, now, fx))
    }

    /// Keep an unacked message's body on disk only (its connection holds
    /// too many in memory); false if it stays in memory (the queue is
    /// gone, or the record could not be written).
    pub fn page_out(&self, m: &mut QueuedMessage) -> bool {
        self.kind.page_out(self, m)
    }

    /// basic.get: take the head message, with the count left behind it.
    /// With no-ack the message is settled at once.
    pub fn get(self: &Arc<Self>, no_ack: bool) -> Option<(QueuedMessage, u32)> {
        self.call(|k, now, fx| k.get(self, no_ack, now, fx))
    }

    /// Settle delivered messages that have records (ack, or reject without
    /// requeue): their records may go. The entries reach the OS before this
    /// returns, so an ack the broker has answered survives a crash.
    pub fn settle(&self, refs: impl IntoIterator<Item = DiskRef>) {
        self.kind.settle(&mut refs.into_iter())
    }

    /// Return unacked messages to their original positions.
    pub fn requeue(self: &Arc<Self>, messages: impl IntoIterator<Item = QueuedMessage>) {
        let mut it = messages.into_iter();
        self.call(|k, now, fx| k.requeue(self, &mut it, now, fx))
    }

    /// Put back a message that was dispatched but never reached the client
    /// (its connection went away first); it keeps its redelivered flag.
    pub fn return_undelivered(self: &Arc<Self>, message: QueuedMessage) {
        self.call(|k, now, fx| k.return_undelivered(self, message, now, fx))
    }

    /// Drop all ready messages; returns how many.
    pub fn purge(&self) -> u32 {
        self.kind.purge(self)
    }

    /// The message count declare-ok reports: ready messages (unacked ones
    /// excluded, as RabbitMQ reports; 0 for a stream, as RabbitMQ's).
    pub fn message_count(&self) -> u32 {
        self.kind.message_count()
    }

    /// Ready messages, their body bytes and the consumers, read at once.
    pub fn gauges(&self) -> Gauges {
        self.kind.gauges()
    }

    /// The queue's consumer timeout (argument or policy), ms.
    pub fn consumer_timeout_ms(&self) -> Option<u64> {
        self.kind.consumer_timeout_ms(self)
    }

    /// Registered consumers, as declare-ok reports them (0 for a stream,
    /// as RabbitMQ's; the API counts them).
    pub fn consumer_count(&self) -> u32 {
        self.kind.consumer_count()
    }

    /// Whether a message published now would probably stay in memory
    /// (publishers copy small bodies out of their read buffer only then).
    pub fn would_keep(&self) -> bool {
        self.kind.would_keep()
    }

    /// A stream's pass (see `stream`).
    pub fn stream_pass(self: &Arc<Self>) {
        self.call(|k, now, fx| k.pass(self, now, fx))
    }

    /// A stream consumer under `tag` has acked everything before `next`.
    pub fn stream_acked(&self, tag: &str, next: u64) {
        self.kind.stream_acked(tag, next)
    }

    /// Deliveries to a stream consumer under `tag` from `offset` on were
    /// taken back unacked.
    pub fn stream_taken_back(&self, tag: &Arc<str>, offset: u64) {
        self.kind.stream_taken_back(tag, offset)
    }

    /// Whether this queue has been deleted.
    pub fn is_deleted(&self) -> bool {
        self.kind.is_deleted()
    }

    /// Hand out ready messages to consumers with credit.
    pub fn dispatch(self: &Arc<Self>) {
        self.call(|k, now, fx| k.dispatch(self, now, fx))
    }

    /// Whether publishers to this queue should pause: its ready messages
    /// pile up because its consumers' connections cannot take more.
    pub fn is_saturated(&self) -> bool {
        self.kind.is_saturated()
    }

    /// Recompute saturation now (a held-back publisher polls this, so a
    /// queue that changed without dispatching cannot hold it forever).
    pub fn recheck_saturation(&self) -> bool {
        self.kind.recheck_saturation(self)
    }

    /// Register a consumer, enforcing exclusive consumption.
    pub fn add_consumer(self: &Arc<Self>, consumer: Consumer) -> Result<(), AmqpError> {
        self.call(|k, now, fx| k.add_consumer(self, consumer, None, now, fx))
    }

    /// Register a consumer of a stream queue (the connection checked its
    /// prefetch and ack mode).
    pub fn add_stream_consumer(
        self: &Arc<Self>,
        consumer: Consumer,
        options: ConsumeOptions,
    ) -> Result<(), AmqpError> {
        self.call(|k, now, fx| k.add_consumer(self, consumer, Some(options), now, fx))
    }

    /// basic.cancel: remove one consumer (by its connection's id for it)
    /// and hand out at once what it would have taken.
    pub fn remove_consumer(self: &Arc<Self>, conn_id: u64, consumer_id: u64) -> ConsumerRemoval {
        self.call(|k, now, fx| k.cancel_consumer(self, conn_id, consumer_id, now, fx))
    }

    /// Remove consumers of a closing channel (by their connection's ids
    /// for them) without dispatching: the caller requeues the channel's
    /// unacked messages first, so they keep their place, as in RabbitMQ.
    pub fn remove_consumers(
        self: &Arc<Self>,
        conn_id: u64,
        consumer_ids: &[u64],
    ) -> ConsumerRemoval {
        self.call(|k, now, fx| k.remove_consumers(self, conn_id, consumer_ids, now, fx))
    }

    /// x-expires: note a use (declare, get, consumer coming or going) and
    /// make sure the housekeeping task will look at the queue again.
    pub fn touch(self: &Arc<Self>) {
        self.call(|k, now, fx| k.touch(now, fx))
    }

    /// The housekeeping task's x-expires check (called with the topology
    /// lock held, so the check and the delete are one step): delete the
    /// queue if it has gone unused for its x-expires, else schedule the
    /// next check. True when it was deleted.
    pub fn delete_if_expired(self: &Arc<Self>) -> bool {
        self.call(|k, now, fx| k.delete_if_expired(now, fx))
    }

    /// Mark deleted, drop messages, and cancel consumers (each connection
    /// gets basic.cancel). Returns the number of messages dropped.
    pub fn mark_deleted(self: &Arc<Self>) -> u32 {
        self.mark_deleted_if(false, false).unwrap_or(0)
    }

    /// Delete only if the conditions hold, checked and applied under the
    /// queue's lock so no consumer or message can slip in between (a
    /// stream is deleted whatever they say, as RabbitMQ's).
    pub fn mark_deleted_if(
        self: &Arc<Self>,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u32, DeleteRefused> {
        self.call(|k, _, fx| k.delete(if_unused, if_empty, fx))
    }

    /// Apply `matched` (the policies that now match this queue).
    pub fn apply_policy(self: &Arc<Self>, matched: Matched) {
        self.call(|k, now, fx| k.apply_policy(self, matched, now, fx))
    }

    /// The policies applied (for the API).
    pub fn applied_policy(&self) -> Matched {
        self.kind.applied_policy()
    }

    /// Where dead letters go: exchange and routing key (None: dropped).
    pub fn dead_letter_target(&self) -> (Option<String>, Option<String>) {
        self.kind.dead_letter_target()
    }
}

impl SyncSource for Queue {
    fn flush_for_sync(&self, out: &mut Vec<Arc<File>>) -> std::io::Result<()> {
        self.kind.flush_for_sync(out)
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
