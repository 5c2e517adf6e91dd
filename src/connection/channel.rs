//! Per-channel state owned by the connection task: consumers, unacked
//! deliveries, prefetch, confirm/tx mode and the publish being assembled.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use indexmap::IndexMap;

use super::content::ContentState;
use super::stats::ExchangeCounts;
use super::tx_confirm::{Confirms, TxBuffer};
pub use super::unacked::Unacked;
use super::unacked::UnackedList;
use crate::broker::connections::Totals;
use crate::broker::consumer::ChannelCredit;
use crate::broker::message::QueuedMessage;
use crate::broker::queue::Queue;
use crate::store::DiskRef;

/// A consumer as its channel knows it.
#[derive(Debug)]
pub struct ChannelConsumer {
    pub queue: Arc<Queue>,
    /// Registration id (see `Consumer::id`).
    pub id: u64,
    /// What basic.consume asked for, as the management API shows it.
    pub no_ack: bool,
    pub exclusive: bool,
    pub prefetch: u32,
    pub arguments: amq_protocol::types::FieldTable,
    /// Deliveries unacked this long are taken back (see
    /// `consumer_timeout.rs`).
    pub timeout: Option<std::time::Duration>,
}

/// A channel's consumer of direct replies (`amq.rabbitmq.reply-to`).
#[derive(Debug)]
pub struct ReplyConsumer {
    pub tag: Arc<str>,
    /// Registration id (see `Consumer::id`).
    pub id: u64,
    /// The reply name requests from this channel carry.
    pub name: String,
}

/// How a delivery is settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    Ack,
    Requeue,
    Discard,
}

/// Lifecycle of a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelState {
    Open,
    /// The server sent Channel.Close and waits for Close-Ok; other methods
    /// are discarded, as RabbitMQ does.
    Closing,
}

#[derive(Debug)]
pub struct Channel {
    pub id: u16,
    pub state: ChannelState,
    pub content: ContentState,
    next_delivery_tag: u64,
    pub unacked: UnackedList,
    pub consumers: IndexMap<Arc<str>, ChannelConsumer>,
    pub credit: Arc<ChannelCredit>,
    /// basic.qos(global=false) value, applied to consumers created after it.
    pub consumer_prefetch: u32,
    /// Confirm mode: publishes not yet confirmed.
    pub confirms: Option<Confirms>,
    /// The queue last declared on this channel: an empty queue name in
    /// later methods means this one.
    pub last_queue: Option<String>,
    pub tx: Option<TxBuffer>,
    pub reply_consumer: Option<ReplyConsumer>,
    /// The properties of the last message published here, as copied out
    /// of the read buffer (see `PendingPublish::body`).
    pub last_properties: bytes::Bytes,
    /// Counters since the channel opened (the connection's are these plus
    /// its closed channels').
    pub totals: Totals,
    /// Messages in and out per exchange, not yet added to the exchanges.
    pub exchange_counts: ExchangeCounts,
    /// Tags of deliveries taken back on a consumer timeout: a late ack of
    /// one is ignored rather than closing the channel (bounded).
    pub expired_tags: std::collections::BTreeSet<u64>,
    /// Some delivery here had a consumer timeout (the channel is checked).
    pub had_deadlines: bool,
}

impl Channel {
    /// A new channel whose unacked bodies count towards `unacked_total`
    /// (its connection's).
    pub fn new(id: u16, unacked_total: Arc<AtomicU64>) -> Self {
        Channel {
            id,
            state: ChannelState::Open,
            content: ContentState::Idle,
            next_delivery_tag: 1,
            unacked: UnackedList::new(unacked_total),
            consumers: IndexMap::new(),
            credit: Arc::new(ChannelCredit::default()),
            consumer_prefetch: 0,
            confirms: None,
            last_queue: None,
            tx: None,
            reply_consumer: None,
            last_properties: bytes::Bytes::new(),
            totals: Totals::default(),
            exchange_counts: ExchangeCounts::default(),
            expired_tags: Default::default(),
            had_deadlines: false,
        }
    }

    pub fn next_tag(&mut self) -> u64 {
        let t = self.next_delivery_tag;
        self.next_delivery_tag += 1;
        t
    }

    /// Settle deliveries: give back credit, requeue if asked, then let the
    /// affected queues dispatch again.
    pub fn settle(&mut self, items: Vec<Unacked>, how: Settle) {
        let mut touched: Vec<Arc<Queue>> = Vec::new();
        // Per queue: requeued or discarded messages, or acked records.
        let mut messages: Vec<(Arc<Queue>, Vec<QueuedMessage>)> = Vec::new();
        let mut on_disk: Vec<(Arc<Queue>, Vec<DiskRef>)> = Vec::new();
        let mut stream_acks: Vec<(Arc<Queue>, Arc<str>, u64)> = Vec::new();
        for u in items {
            if let Some(c) = &u.credit {
                c.release();
            }
            u.queue.stats.settled(1, how == Settle::Ack);
            if !touched.iter().any(|q| Arc::ptr_eq(q, &u.queue)) {
                touched.push(u.queue.clone());
            }
            match how {
                Settle::Requeue | Settle::Discard => {
                    if let Some(tag) = u.stream_tag() {
                        u.queue.stream_taken_back(tag, u.message.seq);
                    }
                    group(&mut messages, &u.queue, u.message)
                }
                Settle::Ack => {
                    if let Some(r) = u.message.disk {
                        group(&mut on_disk, &u.queue, r);
                    }
                    if let Some(tag) = u.stream_tag() {
                        note_stream_ack(&mut stream_acks, &u.queue, tag, u.message.seq);
                    }
                }
            }
        }
        for (q, msgs) in messages {
            match how {
                Settle::Requeue => q.requeue(msgs),
                _ => q.discard(msgs),
            }
        }
        for (q, refs) in on_disk {
            q.settle(refs);
        }
        for (q, tag, highest) in stream_acks {
            // A tracked place moves only past what is all acked: not past
            // a delivery of the same consumer still unacked.
            let unacked = self
                .unacked
                .iter()
                .find(|u| Arc::ptr_eq(&u.queue, &q) && u.stream_tag() == Some(&tag))
                .map(|u| u.message.seq);
            q.stream_acked(
                &tag,
                unacked.map_or(highest + 1, |low| low.min(highest + 1)),
            );
        }
        // Freed credit may let any of this channel's consumers take more
        // (channel-wide prefetch spans queues).
        let consumers = self.consumers.values();
        for q in distinct_queues(touched.iter().chain(consumers.map(|c| &c.queue))) {
            q.dispatch();
        }
    }
}

/// Each queue once, in first-seen order (consumers of one channel or
/// connection often share a queue: dispatching it once per consumer would
/// cost O(consumers) dispatches).
pub fn distinct_queues<'a>(queues: impl Iterator<Item = &'a Arc<Queue>>) -> Vec<Arc<Queue>> {
    let mut seen = ahash::AHashSet::new();
    queues
        .filter(|q| seen.insert(Arc::as_ptr(q)))
        .cloned()
        .collect()
}

/// Note an ack of a stream delivery: the highest offset acked per stream
/// and consumer tag.
fn note_stream_ack(
    acks: &mut Vec<(Arc<Queue>, Arc<str>, u64)>,
    queue: &Arc<Queue>,
    tag: &Arc<str>,
    offset: u64,
) {
    match acks
        .iter_mut()
        .find(|(q, t, _)| Arc::ptr_eq(q, queue) && t == tag)
    {
        Some((_, _, high)) => *high = (*high).max(offset),
        None => acks.push((queue.clone(), tag.clone(), offset)),
    }
}

/// Add `item` to the list kept for `queue`.
fn group<T>(lists: &mut Vec<(Arc<Queue>, Vec<T>)>, queue: &Arc<Queue>, item: T) {
    match lists.iter_mut().find(|(q, _)| Arc::ptr_eq(q, queue)) {
        Some((_, v)) => v.push(item),
        None => lists.push((queue.clone(), vec![item])),
    }
}
