//! Delivery: handing a classic queue's ready messages to its consumers
//! (under the queue's lock, in the publisher's or acker's task),
//! registering and removing consumers, and the flow-control saturation
//! that follows from both.

use std::sync::atomic::Ordering;

use super::{after_change, expire_head, Call, ClassicQueue, QueueState};
use crate::broker::consumer::{ConnEvent, Consumer, Delivery};
use crate::broker::queue::{ConsumerRemoval, Queue};
use crate::protocol::AmqpError;

impl ClassicQueue {
    /// Hand out ready messages to consumers with credit.
    pub(super) fn dispatch(&self, c: &mut Call<'_>) {
        let mut st = self.state.lock();
        self.dispatch_at(c, &mut st);
    }

    /// Dispatch as at the call's time (a publish passes the time its
    /// message arrived, so that a TTL-0 message still reaches a ready
    /// consumer however long the enqueue took).
    pub(super) fn dispatch_at(&self, c: &mut Call<'_>, st: &mut QueueState) {
        // Messages due before this millisecond are never delivered (checked
        // at the head, where RabbitMQ checks per-message TTLs too); one due
        // now may still go to a consumer that is ready for it (TTL 0).
        dispatch_loop(c, st, c.now.saturating_sub(1));
        after_change(c, st);
        self.update_saturation(c.q, st);
        self.update_keeps(st);
    }

    /// Refresh the `keeps` hint.
    fn update_keeps(&self, st: &QueueState) {
        let keeps = !st.ready.is_empty() || !st.consumers.any_active();
        self.keeps.store(keeps, Ordering::Relaxed);
    }

    /// Flow control: the queue is saturated when its ready messages pile up
    /// because its consumers' connections cannot take more (their mailboxes
    /// are full), i.e. delivery is slower than publishing. Publishers then
    /// pause reading until it drains (high/low watermarks for hysteresis).
    /// Consumers that are merely slow to ack do not saturate a queue: that
    /// backlog is what queues are for, and holding publishers back on acks
    /// could deadlock two connections that consume from each other.
    pub(super) fn update_saturation(&self, q: &Queue, st: &QueueState) {
        let was = self.saturated.load(Ordering::Relaxed);
        let mark = if was { q.ctx.flow.low } else { q.ctx.flow.high };
        // Only consumers that could take a message (no-ack, or with
        // prefetch credit) but found their connection full count: one
        // waiting for its own acks is not held up by its connection,
        // whatever else fills that connection. They are counted as they
        // are parked (see `consumer_set`), not scanned.
        let now = st.ready.len() > mark && !st.deleted && st.consumers.any_waiting_on_connection();
        if now != was {
            self.saturated.store(now, Ordering::Relaxed);
        }
    }

    /// Whether publishers to this queue should pause (see `update_saturation`).
    pub(super) fn is_saturated(&self) -> bool {
        self.saturated.load(Ordering::Relaxed)
    }

    /// Whether a message published now would probably stay in memory.
    pub(super) fn would_keep(&self) -> bool {
        self.keeps.load(Ordering::Relaxed)
    }

    /// Recompute saturation now (a held-back publisher polls this, so a
    /// queue that changed without dispatching cannot hold it forever).
    pub(super) fn recheck_saturation(&self, q: &Queue) -> bool {
        let st = self.state.lock();
        self.update_saturation(q, &st);
        self.is_saturated()
    }

    /// Register a consumer, enforcing exclusive consumption.
    pub(super) fn add_consumer(
        &self,
        c: &mut Call<'_>,
        consumer: Consumer,
    ) -> Result<(), AmqpError> {
        let mut st = self.state.lock();
        if st.deleted {
            return Err(AmqpError::not_found(format!(
                "no queue '{}' in vhost '{}'",
                c.q.name, c.q.vhost
            )));
        }
        if st.consumers.has_exclusive() || (consumer.exclusive && !st.consumers.is_empty()) {
            return Err(AmqpError::access_refused(format!(
                "queue '{}' in vhost '{}' in exclusive use",
                c.q.name, c.q.vhost
            )));
        }
        // Kept in descending priority, in arrival order within a priority
        // (with a single active consumer, in arrival order only: the first
        // is the active one).
        st.consumers.insert(consumer);
        st.had_consumer = true;
        st.last_used_ms = c.now;
        self.dispatch_at(c, &mut st);
        Ok(())
    }

    /// basic.cancel: remove one consumer (by its connection's id for it)
    /// and hand out at once what it would have taken (to a single active
    /// consumer's successor, or lower priorities).
    pub(super) fn cancel_consumer(
        &self,
        c: &mut Call<'_>,
        conn_id: u64,
        consumer_id: u64,
    ) -> ConsumerRemoval {
        let mut st = self.state.lock();
        let key = st.consumers.find(conn_id, consumer_id);
        let was_first = key.is_some() && key == st.consumers.first();
        let gone = key.and_then(|k| st.consumers.remove(k));
        let removed = gone.is_some();
        // A single active consumer cancelled while holding unacked messages:
        // its successor starts once those are settled (acked or requeued,
        // which dispatches), so requeued ones keep their place, as in
        // RabbitMQ.
        let still_holding = c.q.declared.single_active_consumer
            && was_first
            && gone.is_some_and(|c| c.credit.outstanding.load(Ordering::Acquire) > 0);
        if removed && !still_holding {
            self.dispatch_at(c, &mut st);
        }
        self.after_removal(c, &mut st, removed)
    }

    /// Remove consumers of a closing channel (by their connection's ids
    /// for them), O(log n) each. Unlike basic.cancel it does not dispatch:
    /// the caller requeues the channel's unacked messages first, so they
    /// keep their place ahead of the rest, as in RabbitMQ.
    pub(super) fn remove_consumers(
        &self,
        c: &mut Call<'_>,
        conn_id: u64,
        consumer_ids: &[u64],
    ) -> ConsumerRemoval {
        let mut st = self.state.lock();
        let mut removed = false;
        for &id in consumer_ids {
            if let Some(key) = st.consumers.find(conn_id, id) {
                removed |= st.consumers.remove(key).is_some();
            }
        }
        self.after_removal(c, &mut st, removed)
    }

    fn after_removal(
        &self,
        c: &mut Call<'_>,
        st: &mut QueueState,
        removed: bool,
    ) -> ConsumerRemoval {
        if removed && st.consumers.is_empty() {
            // x-expires counts from here.
            st.last_used_ms = c.now;
            super::lifecycle::schedule_unused_check(c, st, c.now);
        }
        self.update_saturation(c.q, st);
        self.update_keeps(st);
        ConsumerRemoval {
            removed,
            should_auto_delete: removed
                && c.q.auto_delete
                && st.had_consumer
                && st.consumers.is_empty()
                && !st.deleted,
        }
    }
}

fn dispatch_loop(c: &mut Call<'_>, st: &mut QueueState, due: u64) {
    let mut marked = false;
    loop {
        expire_head(c.q, st, due);
        if st.ready.is_empty() || st.consumers.is_empty() {
            // Parked consumers are woken by the next pick; with nothing
            // to pick, act on their wakes now so the blocked clock
            // (consumer utilisation) stops when they are free.
            st.consumers.wake_if_all_parked();
            break;
        }
        let Some(key) = st.consumers.pick() else {
            break;
        };
        let Some(message) = st.ready.pop() else {
            break;
        };
        let disk = message.disk;
        let Some(consumer) = st.consumers.get(key) else {
            st.ready.unpop(message);
            break;
        };
        let no_ack = consumer.no_ack;
        let credit = (!consumer.no_ack).then(|| consumer.credit.clone());
        let event = ConnEvent::Deliver(Delivery {
            channel: consumer.channel,
            consumer_id: consumer.id,
            consumer_tag: consumer.tag.clone(),
            queue: Some(c.q.clone()),
            message,
            credit: credit.clone(),
        });
        // Sent under the lock (see `kind.rs`): a full or closed mailbox
        // decides what this loop does next.
        match consumer.conn.send(event) {
            Ok(()) => {
                st.consumers.served(key);
                // No-ack deliveries are settled by the connection once
                // written (one that comes back undelivered is not).
                if let Some(r) = disk.filter(|_| !no_ack) {
                    st.ready.mark_delivered(r);
                    marked |= r.logged;
                }
            }
            Err(ConnEvent::Deliver(Delivery { message, .. })) => {
                // The connection is gone; its cleanup will remove the
                // consumer too, but drop it now so dispatch can go on.
                if let Some(credit) = credit {
                    credit.release();
                }
                st.ready.unpop(message);
                st.consumers.remove(key);
            }
            Err(_) => break,
        }
    }
    if marked {
        // Written (not synced) before the deliveries leave, so a crash
        // still brings them back marked redelivered.
        st.ready.flush_acks();
    }
}
