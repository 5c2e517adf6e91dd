//! Consumers as queues see them, the prefetch credit shared between a
//! queue and the channel that consumes from it, and the events a queue sends
//! to a connection task.
//!
//! Credit rules: a queue may hand a message to a consumer only after taking a
//! unit of credit (`ConsumerCredit::try_acquire`); the channel returns it on
//! ack/nack/reject and then asks the consumer's queue to dispatch again
//! (a release also wakes consumers the queue parked on that credit, see
//! `consumer_set`). A
//! no-ack consumer needs no prefetch credit but is still bounded by its
//! connection's backlog of unwritten deliveries, so one slow connection never
//! grows without limit and never stalls the queue's other consumers.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;

use super::message::QueuedMessage;
use super::queue::Queue;
use super::wake::Waiters;

/// How many deliveries may wait in a connection's mailbox before its
/// consumers are treated as full until the connection catches up.
pub const CONNECTION_BACKLOG_LIMIT: usize = 2_000;
/// Message bytes that may wait in a connection's mailbox, whatever their
/// count: a slow reader of large messages holds at most this much.
pub const CONNECTION_BACKLOG_BYTES: usize = 8 << 20;

/// Events queues send to a connection task.
#[derive(Debug)]
pub enum ConnEvent {
    /// Deliver a message to a consumer.
    Deliver(Delivery),
    /// The queue went away: tell the client with basic.cancel.
    ConsumerCancelled {
        /// Channel of the consumer.
        channel: u16,
        /// Registration id of the consumer.
        consumer_id: u64,
        /// Its tag (to find it without a search).
        consumer_tag: Arc<str>,
    },
}

/// A message a queue handed to one consumer.
#[derive(Debug)]
pub struct Delivery {
    /// Channel of the consumer.
    pub channel: u16,
    /// Registration id of the consumer (tags can be reused).
    pub consumer_id: u64,
    /// Consumer tag.
    pub consumer_tag: Arc<str>,
    /// The queue it came from (for ack/requeue); None for a direct reply.
    pub queue: Option<Arc<Queue>>,
    /// The message.
    pub message: QueuedMessage,
    /// Credit taken for it (None for no-ack consumers).
    pub credit: Option<Arc<ConsumerCredit>>,
}

impl Delivery {
    /// Bytes it holds in a mailbox (body and properties).
    pub fn size(&self) -> usize {
        let m = &self.message.message;
        m.body.len() + m.properties.len()
    }
}

/// The sending side of a connection's mailbox, with its backlog counter.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    /// Unique connection id.
    pub id: u64,
    tx: UnboundedSender<ConnEvent>,
    backlog: Arc<AtomicUsize>,
    backlog_bytes: Arc<AtomicUsize>,
    starved: Arc<AtomicBool>,
    /// Queues with consumers parked until this connection drains.
    pub waiters: Arc<Waiters>,
}

impl ConnHandle {
    /// Wrap a connection's mailbox.
    pub fn new(id: u64, tx: UnboundedSender<ConnEvent>) -> Self {
        ConnHandle {
            id,
            tx,
            backlog: Arc::new(AtomicUsize::new(0)),
            backlog_bytes: Arc::new(AtomicUsize::new(0)),
            starved: Arc::new(AtomicBool::new(false)),
            waiters: Arc::default(),
        }
    }

    /// Whether the connection can take another delivery now; if not, it is
    /// marked so that it wakes its queues once it has caught up.
    pub fn has_room(&self) -> bool {
        if !self.is_backlogged() {
            true
        } else {
            self.starved.store(true, Ordering::Release);
            false
        }
    }

    /// Whether the connection's mailbox is full, by count or by bytes (no
    /// side effects).
    pub fn is_backlogged(&self) -> bool {
        self.backlog.load(Ordering::Acquire) >= CONNECTION_BACKLOG_LIMIT
            || self.backlog_bytes.load(Ordering::Acquire) >= CONNECTION_BACKLOG_BYTES
    }

    /// Send a delivery; gives the event back if the connection is gone.
    pub fn send(&self, event: ConnEvent) -> Result<(), ConnEvent> {
        let bytes = match &event {
            ConnEvent::Deliver(d) => {
                let bytes = d.size();
                self.backlog.fetch_add(1, Ordering::AcqRel);
                self.backlog_bytes.fetch_add(bytes, Ordering::AcqRel);
                Some(bytes)
            }
            _ => None,
        };
        self.tx.send(event).map_err(|e| {
            if let Some(bytes) = bytes {
                self.delivery_taken(bytes);
            }
            e.0
        })
    }

    /// Called by the connection for each delivery taken from its mailbox,
    /// with the delivery's [`Delivery::size`].
    pub fn delivery_taken(&self, bytes: usize) {
        self.backlog.fetch_sub(1, Ordering::AcqRel);
        self.backlog_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Pretend `n` more deliveries wait in the mailbox (tests).
    #[cfg(test)]
    pub fn add_backlog(&self, n: usize) {
        self.backlog.fetch_add(n, Ordering::AcqRel);
    }

    /// Clears and returns whether some queue found this connection full;
    /// if so, the queues with consumers parked on it are told (the caller
    /// then dispatches them).
    pub fn take_starved(&self) -> bool {
        let drained = self.backlog.load(Ordering::Acquire) < CONNECTION_BACKLOG_LIMIT / 2
            && self.backlog_bytes.load(Ordering::Acquire) < CONNECTION_BACKLOG_BYTES / 2
            && self.starved.swap(false, Ordering::AcqRel);
        if drained {
            self.waiters.notify(1);
        }
        drained
    }
}

/// Why a consumer cannot take a message now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// Its own prefetch is used up.
    Consumer,
    /// Its channel's prefetch (basic.qos global) is used up.
    Channel,
    /// Its connection's mailbox is full.
    Connection,
}

/// Channel-wide prefetch (basic.qos global=true) and flow state.
#[derive(Debug, Default)]
pub struct ChannelCredit {
    /// 0 means unlimited.
    pub prefetch: AtomicU32,
    /// Unacked deliveries to this channel's consumers.
    pub outstanding: AtomicU32,
    /// Queues with consumers parked until this channel has credit.
    pub waiters: Waiters,
}

impl ChannelCredit {
    /// Whether the channel-wide limit leaves room for one more.
    pub fn has_room(&self) -> bool {
        let limit = self.prefetch.load(Ordering::Acquire);
        limit == 0 || self.outstanding.load(Ordering::Acquire) < limit
    }

    /// basic.qos global: set the limit, and wake as many parked consumers
    /// as it now leaves room for.
    pub fn set_prefetch(&self, limit: u32) {
        self.prefetch.store(limit, Ordering::Release);
        let room = match limit {
            0 => u32::MAX,
            _ => limit.saturating_sub(self.outstanding.load(Ordering::Acquire)),
        };
        if room > 0 {
            self.waiters.notify(room);
        }
    }
}

/// Per-consumer prefetch, linked to its channel's.
#[derive(Debug)]
pub struct ConsumerCredit {
    /// Per-consumer limit fixed at consume time; 0 means unlimited.
    pub prefetch: u32,
    /// Unacked deliveries to this consumer.
    pub outstanding: AtomicU32,
    /// The channel-wide limit.
    pub channel: Arc<ChannelCredit>,
    /// The queue, while this consumer is parked until its credit returns.
    pub waiters: Waiters,
}

impl ConsumerCredit {
    /// Credit for a consumer with this per-consumer limit (0: none) on a
    /// channel.
    pub fn new(prefetch: u32, channel: Arc<ChannelCredit>) -> Self {
        ConsumerCredit {
            prefetch,
            outstanding: AtomicU32::new(0),
            channel,
            waiters: Waiters::default(),
        }
    }

    /// Whether the per-consumer limit leaves room for one more.
    pub fn has_own_room(&self) -> bool {
        self.prefetch == 0 || self.outstanding.load(Ordering::Acquire) < self.prefetch
    }

    /// The limit that stops one more, if any (takes nothing).
    pub fn blocker(&self) -> Option<Blocked> {
        if !self.has_own_room() {
            Some(Blocked::Consumer)
        } else if !self.channel.has_room() {
            Some(Blocked::Channel)
        } else {
            None
        }
    }

    /// Take one unit of credit if both limits allow it, else say which
    /// does not.
    pub fn try_acquire(&self) -> Result<(), Blocked> {
        if !self.has_own_room() {
            return Err(Blocked::Consumer);
        }
        let ch = &self.channel;
        let limit = ch.prefetch.load(Ordering::Acquire);
        let took = ch
            .outstanding
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (limit == 0 || n < limit).then_some(n + 1)
            })
            .is_ok();
        if !took {
            return Err(Blocked::Channel);
        }
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Give back one unit (ack, nack, reject, requeue), telling the queues
    /// with consumers parked on either limit (the caller then dispatches
    /// the channel's queues).
    pub fn release(&self) {
        let dec = |n: u32| Some(n.saturating_sub(1));
        let _ = self
            .outstanding
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, dec);
        let _ = self
            .channel
            .outstanding
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, dec);
        self.waiters.notify(1);
        self.channel.waiters.notify(1);
    }
}

/// A consumer registered on a queue.
#[derive(Debug)]
pub struct Consumer {
    /// Unique per connection; a deliver or cancel event names the
    /// registration it was meant for, since a tag can be cancelled and
    /// reused while events for the old one are still in the mailbox.
    pub id: u64,
    /// Consumer tag.
    pub tag: Arc<str>,
    /// Channel it consumes on.
    pub channel: u16,
    /// Its connection.
    pub conn: ConnHandle,
    /// Auto-ack mode.
    pub no_ack: bool,
    /// Holds the queue exclusively.
    pub exclusive: bool,
    /// Prefetch credit.
    pub credit: Arc<ConsumerCredit>,
    /// x-priority: higher gets messages first.
    pub priority: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_and_channel_limits_both_apply() {
        let ch = Arc::new(ChannelCredit::default());
        ch.prefetch.store(3, Ordering::Release);
        let a = ConsumerCredit::new(2, ch.clone());
        let b = ConsumerCredit::new(0, ch.clone());
        assert!(a.try_acquire().is_ok());
        assert!(a.try_acquire().is_ok());
        assert_eq!(a.try_acquire(), Err(Blocked::Consumer), "consumer limit");
        assert!(b.try_acquire().is_ok());
        assert_eq!(b.try_acquire(), Err(Blocked::Channel), "channel limit");
        assert_eq!(a.blocker(), Some(Blocked::Consumer));
        a.release();
        assert_eq!(a.blocker(), None);
        assert!(b.try_acquire().is_ok());
    }
}
