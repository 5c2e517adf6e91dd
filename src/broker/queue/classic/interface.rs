//! The classic queue behind the queue interface: each call of
//! [`QueueKind`] handed to the method that does it.

use std::sync::Arc;

use super::{Call, ClassicQueue};
use crate::broker::consumer::Consumer;
use crate::broker::dead_letter::DeadLetter;
use crate::broker::message::{Message, QueuedMessage};
use crate::broker::policy::Matched;
use crate::broker::queue::kind::{Effects, QueueKind, Returned};
use crate::broker::queue::{ConsumerRemoval, DeleteRefused, Gauges, Queue, Stored};
use crate::broker::stream::options::ConsumeOptions;
use crate::protocol::AmqpError;
use crate::store::DiskRef;

/// The call's context.
fn call<'a>(q: &'a Arc<Queue>, now: u64, fx: &'a mut Effects) -> Call<'a> {
    Call { q, now, fx }
}

impl QueueKind for ClassicQueue {
    fn publish(&self, q: &Arc<Queue>, m: Arc<Message>, now: u64, fx: &mut Effects) -> Stored {
        ClassicQueue::publish(self, &mut call(q, now, fx), m)
    }

    fn add_consumer(
        &self,
        q: &Arc<Queue>,
        c: Consumer,
        _stream: Option<ConsumeOptions>,
        now: u64,
        fx: &mut Effects,
    ) -> Result<(), AmqpError> {
        ClassicQueue::add_consumer(self, &mut call(q, now, fx), c)
    }

    fn cancel_consumer(
        &self,
        q: &Arc<Queue>,
        conn_id: u64,
        consumer_id: u64,
        now: u64,
        fx: &mut Effects,
    ) -> ConsumerRemoval {
        ClassicQueue::cancel_consumer(self, &mut call(q, now, fx), conn_id, consumer_id)
    }

    fn remove_consumers(
        &self,
        q: &Arc<Queue>,
        conn_id: u64,
        ids: &[u64],
        now: u64,
        fx: &mut Effects,
    ) -> ConsumerRemoval {
        ClassicQueue::remove_consumers(self, &mut call(q, now, fx), conn_id, ids)
    }

    fn dispatch(&self, q: &Arc<Queue>, now: u64, fx: &mut Effects) {
        ClassicQueue::dispatch(self, &mut call(q, now, fx))
    }

    fn get(
        &self,
        q: &Arc<Queue>,
        no_ack: bool,
        now: u64,
        fx: &mut Effects,
    ) -> Option<(QueuedMessage, u32)> {
        ClassicQueue::get(self, &mut call(q, now, fx), no_ack)
    }

    fn settle(&self, refs: Returned<'_, DiskRef>) {
        ClassicQueue::settle(self, refs)
    }

    fn requeue(&self, q: &Arc<Queue>, ms: Returned<'_, QueuedMessage>, now: u64, fx: &mut Effects) {
        ClassicQueue::requeue(self, &mut call(q, now, fx), ms)
    }

    fn discard(&self, q: &Arc<Queue>, ms: Returned<'_, QueuedMessage>, now: u64, fx: &mut Effects) {
        ClassicQueue::discard(self, &mut call(q, now, fx), ms)
    }

    fn return_undelivered(&self, q: &Arc<Queue>, m: QueuedMessage, now: u64, fx: &mut Effects) {
        ClassicQueue::return_undelivered(self, &mut call(q, now, fx), m)
    }

    fn page_out(&self, q: &Queue, m: &mut QueuedMessage) -> bool {
        ClassicQueue::page_out(self, q, m)
    }

    fn purge(&self, q: &Queue) -> u32 {
        ClassicQueue::purge(self, q)
    }

    fn delete(
        &self,
        if_unused: bool,
        if_empty: bool,
        fx: &mut Effects,
    ) -> Result<u32, DeleteRefused> {
        ClassicQueue::delete(self, if_unused, if_empty, fx)
    }

    fn is_deleted(&self) -> bool {
        ClassicQueue::is_deleted(self)
    }

    fn apply_policy(&self, q: &Arc<Queue>, matched: Matched, now: u64, fx: &mut Effects) {
        ClassicQueue::apply_policy(self, &mut call(q, now, fx), matched)
    }

    fn applied_policy(&self) -> Matched {
        ClassicQueue::applied_policy(self)
    }

    fn delivery_properties(&self, m: &QueuedMessage, get: bool) -> bytes::Bytes {
        ClassicQueue::delivery_properties(self, m, get)
    }

    fn message_count(&self) -> u32 {
        self.state.lock().ready.len() as u32
    }

    fn consumer_count(&self) -> u32 {
        self.state.lock().consumers.len() as u32
    }

    fn gauges(&self) -> Gauges {
        ClassicQueue::gauges(self)
    }

    fn consumer_timeout_ms(&self, _q: &Queue) -> Option<u64> {
        ClassicQueue::consumer_timeout_ms(self)
    }

    fn flush_for_sync(&self, out: &mut Vec<Arc<std::fs::File>>) -> std::io::Result<()> {
        self.state.lock().ready.flush_for_sync(out)
    }

    fn expire_due(&self, q: &Arc<Queue>, at_ms: Option<u64>, now: u64, fx: &mut Effects) {
        ClassicQueue::expire_due(self, &mut call(q, now, fx), at_ms)
    }

    fn take_dead_letters(&self) -> Vec<DeadLetter> {
        ClassicQueue::take_dead_letters(self)
    }

    fn touch(&self, now: u64, fx: &mut Effects) {
        ClassicQueue::touch(self, now, fx)
    }

    fn delete_if_expired(&self, now: u64, fx: &mut Effects) -> bool {
        ClassicQueue::delete_if_expired(self, now, fx)
    }

    fn dead_letter_target(&self) -> (Option<String>, Option<String>) {
        ClassicQueue::dead_letter_target(self)
    }

    fn would_keep(&self) -> bool {
        ClassicQueue::would_keep(self)
    }

    fn is_saturated(&self) -> bool {
        ClassicQueue::is_saturated(self)
    }

    fn recheck_saturation(&self, q: &Queue) -> bool {
        ClassicQueue::recheck_saturation(self, q)
    }
}
