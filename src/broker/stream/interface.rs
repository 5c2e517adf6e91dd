//! The stream behind the queue interface: what each call of
//! [`QueueKind`] means for a log that is never settled message by message
//! (gets, purges and requeues do nothing; the connection refuses them
//! first with RabbitMQ's codes).

use std::sync::Arc;

use amq_protocol::types::FieldTable;

use super::options::ConsumeOptions;
use super::StreamQueue;
use crate::broker::consumer::Consumer;
use crate::broker::message::{Message, QueuedMessage};
use crate::broker::policy::Matched;
use crate::broker::queue::kind::{Effects, QueueKind, Returned};
use crate::broker::queue::{ConsumerRemoval, DeleteRefused, Gauges, Queue, Stored};
use crate::protocol::AmqpError;
use crate::store::DiskRef;

impl QueueKind for StreamQueue {
    fn publish(&self, q: &Arc<Queue>, m: Arc<Message>, now: u64, fx: &mut Effects) -> Stored {
        StreamQueue::publish(self, q, m, now, fx)
    }

    fn add_consumer(
        &self,
        q: &Arc<Queue>,
        c: Consumer,
        options: Option<ConsumeOptions>,
        now: u64,
        fx: &mut Effects,
    ) -> Result<(), AmqpError> {
        let options = match options {
            Some(o) => o,
            // A consumer with no arguments reads from the next message.
            None => ConsumeOptions::parse(&FieldTable::default(), &c.tag, now, &q.name, &q.vhost)?,
        };
        StreamQueue::add_consumer(self, q, c, options, fx)
    }

    fn cancel_consumer(
        &self,
        q: &Arc<Queue>,
        conn_id: u64,
        consumer_id: u64,
        now: u64,
        fx: &mut Effects,
    ) -> ConsumerRemoval {
        QueueKind::remove_consumers(self, q, conn_id, &[consumer_id], now, fx)
    }

    fn remove_consumers(
        &self,
        _q: &Arc<Queue>,
        conn_id: u64,
        ids: &[u64],
        _now: u64,
        _fx: &mut Effects,
    ) -> ConsumerRemoval {
        ConsumerRemoval {
            removed: StreamQueue::remove_consumers(self, conn_id, ids),
            // Streams are never auto-delete.
            should_auto_delete: false,
        }
    }

    fn dispatch(&self, q: &Arc<Queue>, _now: u64, fx: &mut Effects) {
        StreamQueue::dispatch(self, q, fx)
    }

    fn get(
        &self,
        _q: &Arc<Queue>,
        _no_ack: bool,
        _now: u64,
        _fx: &mut Effects,
    ) -> Option<(QueuedMessage, u32)> {
        None
    }

    /// Stream deliveries have no records of their own to settle.
    fn settle(&self, _refs: Returned<'_, DiskRef>) {}

    /// Streams never requeue (as RabbitMQ's): the log keeps the message.
    fn requeue(
        &self,
        _q: &Arc<Queue>,
        _ms: Returned<'_, QueuedMessage>,
        _now: u64,
        _fx: &mut Effects,
    ) {
    }

    /// A reject settles nothing: the log keeps every message.
    fn discard(
        &self,
        _q: &Arc<Queue>,
        _ms: Returned<'_, QueuedMessage>,
        _now: u64,
        _fx: &mut Effects,
    ) {
    }

    fn return_undelivered(&self, _q: &Arc<Queue>, _m: QueuedMessage, _now: u64, _fx: &mut Effects) {
    }

    /// Nothing needs the body of a stream delivery back: an ack needs its
    /// offset only, a nack requeues nothing.
    fn page_out(&self, _q: &Queue, m: &mut QueuedMessage) -> bool {
        m.message = Arc::new(m.message.without_body());
        m.body_on_disk = true;
        true
    }

    fn purge(&self, _q: &Queue) -> u32 {
        0
    }

    /// RabbitMQ deletes a stream whatever if-unused and if-empty say, and
    /// its delete-ok counts no message.
    fn delete(
        &self,
        _if_unused: bool,
        _if_empty: bool,
        fx: &mut Effects,
    ) -> Result<u32, DeleteRefused> {
        StreamQueue::delete(self, fx);
        Ok(0)
    }

    fn is_deleted(&self) -> bool {
        StreamQueue::is_deleted(self)
    }

    fn apply_policy(&self, q: &Arc<Queue>, matched: Matched, _now: u64, fx: &mut Effects) {
        StreamQueue::apply_policy(self, q, matched, fx)
    }

    fn applied_policy(&self) -> Matched {
        StreamQueue::applied_policy(self)
    }

    fn delivery_properties(&self, m: &QueuedMessage, _get: bool) -> bytes::Bytes {
        super::delivery_properties(m)
    }

    /// RabbitMQ's declare-ok counts no message in a stream (the API's
    /// `messages` does).
    fn message_count(&self) -> u32 {
        0
    }

    /// As RabbitMQ's declare-ok for a stream (the API counts them).
    fn consumer_count(&self) -> u32 {
        0
    }

    fn gauges(&self) -> Gauges {
        let (log, readers) = self.sizes();
        Gauges {
            ready: log.next_offset - log.first_offset,
            ready_bytes: log.bytes,
            consumers: readers as u64,
            memory_bytes: std::mem::size_of::<Queue>() as u64
                + std::mem::size_of::<StreamQueue>() as u64
                + crate::store::stream_log::TAIL_BYTES,
        }
    }

    fn consumer_timeout_ms(&self, q: &Queue) -> Option<u64> {
        StreamQueue::consumer_timeout_ms(self, &q.declared)
    }

    fn flush_for_sync(&self, out: &mut Vec<Arc<std::fs::File>>) -> std::io::Result<()> {
        StreamQueue::flush_for_sync(self, out)
    }

    fn pass(&self, q: &Arc<Queue>, now: u64, fx: &mut Effects) {
        StreamQueue::pass(self, q, now, fx)
    }

    fn stream_acked(&self, tag: &str, next: u64) {
        self.acked(tag, next)
    }

    fn stream_taken_back(&self, tag: &Arc<str>, offset: u64) {
        self.taken_back(tag, offset)
    }

    fn as_stream(&self) -> Option<&StreamQueue> {
        Some(self)
    }
}
