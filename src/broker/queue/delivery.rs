//! Delivery: handing a queue's ready messages to its consumers (under the
//! queue's lock, in the publisher's or acker's task), registering and
//! removing consumers, and the flow-control saturation that follows from
//! both.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{ConsumerRemoval, Queue, QueueState};
use crate::broker::consumer::{ConnEvent, Consumer, Delivery};
use crate::broker::message::now_ms;
use crate::protocol::AmqpError;

impl Queue {
    /// Hand out ready messages to consumers with credit.
    pub fn dispatch(self: &Arc<Self>) {
        if let Some(s) = &self.stream {
            return s.dispatch(self);
        }
        let mut st = self.state.lock();
        self.dispatch_locked(&mut st);
    }

    pub(super) fn dispatch_locked(self: &Arc<Self>, st: &mut QueueState) {
        self.dispatch_at(st, now_ms());
    }

    /// Dispatch as at time `now` (a publish passes the time its message
    /// arrived, so that a TTL-0 message still reaches a ready consumer
    /// however long the enqueue took).
    pub(super) fn dispatch_at(self: &Arc<Self>, st: &mut QueueState, now: u64) {
        // Messages due before this millisecond are never delivered (checked
        // at the head, where RabbitMQ checks per-message TTLs too); one due
        // now may still go to a consumer that is ready for it (TTL 0).
        self.dispatch_loop(st, now.saturating_sub(1));
        self.after_change(st);
        self.update_saturation(st);
        self.update_keeps(st);
    }

    /// Refresh the `keeps` hint.
    pub(super) fn update_keeps(&self, st: &QueueState) {
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
    pub(super) fn update_saturation(&self, st: &QueueState) {
        let was = self.saturated.load(Ordering::Relaxed);
        let mark = if was {
            self.ctx.flow.low
        } else {
            self.ctx.flow.high
        };
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
    pub fn is_saturated(&self) -> bool {
        self.saturated.load(Ordering::Relaxed)
    }

    /// Recompute saturation now (a held-back publisher polls this, so a
    /// queue that changed without dispatching cannot hold it forever).
    pub fn recheck_saturation(&self) -> bool {
        let st = self.state.lock();
        self.update_saturation(&st);
        self.is_saturated()
    }

    fn dispatch_loop(self: &Arc<Self>, st: &mut QueueState, due: u64) {
        let mut marked = false;
        loop {
            self.expire_head(st, due);
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
            let Some(c) = st.consumers.get(key) else {
                st.ready.unpop(message);
                break;
            };
            let no_ack = c.no_ack;
            let credit = (!c.no_ack).then(|| c.credit.clone());
            let event = ConnEvent::Deliver(Delivery {
                channel: c.channel,
                consumer_id: c.id,
                consumer_tag: c.tag.clone(),
                queue: Some(self.clone()),
                message,
                credit: credit.clone(),
            });
            match c.conn.send(event) {
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

    /// Register a consumer of a stream queue (the connection checked its
    /// prefetch and ack mode).
    pub fn add_stream_consumer(
        self: &Arc<Self>,
        consumer: Consumer,
        options: crate::broker::stream::options::ConsumeOptions,
    ) -> Result<(), AmqpError> {
        match &self.stream {
            Some(s) => s.add_consumer(self, consumer, options),
            None => self.add_consumer(consumer),
        }
    }

    /// Register a consumer, enforcing exclusive consumption.
    pub fn add_consumer(self: &Arc<Self>, consumer: Consumer) -> Result<(), AmqpError> {
        let mut st = self.state.lock();
        if st.deleted {
            return Err(AmqpError::not_found(format!(
                "no queue '{}' in vhost '{}'",
                self.name, self.vhost
            )));
        }
        if st.consumers.has_exclusive() || (consumer.exclusive && !st.consumers.is_empty()) {
            return Err(AmqpError::access_refused(format!(
                "queue '{}' in vhost '{}' in exclusive use",
                self.name, self.vhost
            )));
        }
        // Kept in descending priority, in arrival order within a priority
        // (with a single active consumer, in arrival order only: the first
        // is the active one).
        st.consumers.insert(consumer);
        st.had_consumer = true;
        st.last_used_ms = now_ms();
        self.dispatch_locked(&mut st);
        Ok(())
    }

    /// basic.cancel: remove one consumer (by its connection's id for it)
    /// and hand out at once what it would have taken (to a single active
    /// consumer's successor, or lower priorities).
    pub fn remove_consumer(self: &Arc<Self>, conn_id: u64, consumer_id: u64) -> ConsumerRemoval {
        if self.stream.is_some() {
            return self.remove_consumers(conn_id, &[consumer_id]);
        }
        let mut st = self.state.lock();
        let key = st.consumers.find(conn_id, consumer_id);
        let was_first = key.is_some() && key == st.consumers.first();
        let gone = key.and_then(|k| st.consumers.remove(k));
        let removed = gone.is_some();
        // A single active consumer cancelled while holding unacked messages:
        // its successor starts once those are settled (acked or requeued,
        // which dispatches), so requeued ones keep their place, as in
        // RabbitMQ.
        let still_holding = self.declared.single_active_consumer
            && was_first
            && gone.is_some_and(|c| c.credit.outstanding.load(Ordering::Acquire) > 0);
        if removed && !still_holding {
            self.dispatch_locked(&mut st);
        }
        self.after_removal(&mut st, removed)
    }

    /// Remove consumers of a closing channel (by their connection's ids
    /// for them), O(log n) each. Unlike basic.cancel it does not dispatch:
    /// the caller requeues the channel's unacked messages first, so they
    /// keep their place ahead of the rest, as in RabbitMQ.
    pub fn remove_consumers(
        self: &Arc<Self>,
        conn_id: u64,
        consumer_ids: &[u64],
    ) -> ConsumerRemoval {
        if let Some(s) = &self.stream {
            return ConsumerRemoval {
                removed: s.remove_consumers(conn_id, consumer_ids),
                should_auto_delete: false,
            };
        }
        let mut st = self.state.lock();
        let mut removed = false;
        for &id in consumer_ids {
            if let Some(key) = st.consumers.find(conn_id, id) {
                removed |= st.consumers.remove(key).is_some();
            }
        }
        self.after_removal(&mut st, removed)
    }

    fn after_removal(self: &Arc<Self>, st: &mut QueueState, removed: bool) -> ConsumerRemoval {
        if removed && st.consumers.is_empty() {
            // x-expires counts from here.
            let now = now_ms();
            st.last_used_ms = now;
            self.schedule_unused_check(st, now);
        }
        self.update_saturation(st);
        self.update_keeps(st);
        ConsumerRemoval {
            removed,
            should_auto_delete: removed
                && self.auto_delete
                && st.had_consumer
                && st.consumers.is_empty()
                && !st.deleted,
        }
    }
}
