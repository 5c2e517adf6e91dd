//! The consumers of one queue, and the choice of the one the next message
//! goes to, in O(log n) of the number of consumers (amortised).
//!
//! Rules (as before this module): consumers are ordered by descending
//! x-priority, then arrival. A message goes to the highest priority group
//! that has a consumer able to take it (its connection's mailbox has room,
//! and it is no-ack or gets a unit of prefetch credit), round-robin within
//! the group: the search starts after the last consumer served if that one
//! was in this group, else at the group's start, and wraps around. With a
//! single active consumer only the first in arrival order is ever tried.
//!
//! Scanning every consumer per message costs O(n) once most of them wait
//! for acks (60,000 prefetch-1 consumers: 230 µs per publish). So a
//! consumer found unable to take is *parked*: it leaves the `active` set
//! (ordered by key, so "the next one after the cursor in the top group" is
//! one range lookup) and waits on the one thing that stopped it:
//! - its own prefetch ([`Blocked::Consumer`]): woken by that credit's next
//!   release, which carries its key;
//! - its channel's prefetch ([`Blocked::Channel`], basic.qos global=true,
//!   shared by the channel's consumers on any queue): kept in a bucket per
//!   channel; each unit released wakes one of them, the next in
//!   round-robin order (an ack on one consumer may let *another* consumer
//!   of the channel take; waking all of them per ack would cost O(n));
//! - its connection's mailbox ([`Blocked::Connection`]): a bucket per
//!   connection, all woken when the connection reports it has drained (the
//!   existing `take_starved` point, at half the backlog limit).
//!
//! Each park is paid for by one earlier wake or insertion, so picking is
//! O(log n) amortised per message, and removal by id is O(log n).
//!
//! No lost wake-ups: a queue registers with the [`Waiters`] of everything
//! it has consumers parked on *before* checking once more that it is still
//! full (and unparks at once if not), and the freeing side changes the
//! counters before notifying. Either the re-check sees the change or the
//! notification finds the registration (both sides go through the waiters'
//! mutex). Every place that frees credit or drains a mailbox already
//! dispatches the affected queues afterwards, and dispatch reads the wake
//! list before picking. Channel wakes are counted: a woken consumer that
//! does not use the unit (it was cancelled, or another queue of the
//! channel took the unit) either leaves a delivery whose release wakes
//! again, or is replaced: removing a consumer wakes one more of its
//! channel's bucket while that channel has room.
//!
//! What differs from a full scan: a consumer woken from a channel bucket
//! competes from then on, so among consumers parked on one channel-wide
//! limit the freed units go in round-robin order from the cursor at the
//! time of the release rather than of the next message; and deliveries to
//! a connection found full resume once it has drained to half its limit
//! rather than at the first free slot (the hysteresis `take_starved`
//! already had).
//!
//! Saturation (flow control) counts consumers parked on their connection
//! while they had credit, instead of scanning all consumers.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ahash::AHashMap;

use super::consumer::{Blocked, ChannelCredit, ConnHandle, Consumer};
use super::wake::{Waiters, Wake, WakeList};
pub use blocked::BlockedTime;

/// A consumer's place: descending priority, then arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    rank: Reverse<i64>,
    seq: u64,
}

#[derive(Debug)]
struct Entry {
    consumer: Consumer,
    parked: Option<Blocked>,
}

/// Consumers parked on one channel or connection.
#[derive(Debug)]
struct Bucket<R> {
    resource: R,
    keys: BTreeSet<Key>,
}

/// What a channel or a connection holds its waiting queues in.
trait Resource {
    fn waiters(&self) -> &Waiters;
}

impl Resource for Arc<ChannelCredit> {
    fn waiters(&self) -> &Waiters {
        &self.waiters
    }
}

impl Resource for ConnHandle {
    fn waiters(&self) -> &Waiters {
        &self.waiters
    }
}

/// The consumers of a queue.
#[derive(Debug)]
pub struct ConsumerSet {
    single_active: bool,
    entries: BTreeMap<Key, Entry>,
    /// (connection id, consumer id) to key.
    by_id: AHashMap<(u64, u64), Key>,
    active: BTreeSet<Key>,
    /// Where the round-robin search starts: just after the last consumer
    /// served.
    cursor: Option<Key>,
    parking: Parking,
    exclusive: usize,
    next_seq: u64,
    /// Time with every consumer parked (for `consumer_utilisation`).
    blocked: Arc<BlockedTime>,
}

/// Where parked consumers wait, and the queue's wake list.
#[derive(Debug)]
struct Parking {
    wake: Arc<WakeList>,
    channels: AHashMap<(u64, u16), Bucket<Arc<ChannelCredit>>>,
    conns: AHashMap<u64, Bucket<ConnHandle>>,
    /// Consumers parked on their connection (they had credit).
    on_connection: usize,
}

impl ConsumerSet {
    /// An empty set; with `single_active`, priorities are ignored and only
    /// the first consumer is ever given messages.
    pub fn new(single_active: bool) -> Self {
        ConsumerSet {
            single_active,
            entries: BTreeMap::new(),
            by_id: AHashMap::new(),
            active: BTreeSet::new(),
            cursor: None,
            parking: Parking {
                wake: WakeList::new(),
                channels: AHashMap::new(),
                conns: AHashMap::new(),
                on_connection: 0,
            },
            exclusive: 0,
            next_seq: 0,
            blocked: Arc::default(),
        }
    }

    /// The clock of time with every consumer parked.
    pub fn blocked_time(&self) -> Arc<BlockedTime> {
        self.blocked.clone()
    }

    /// Act on wakes now if every consumer is parked (the blocked clock
    /// runs): cheap otherwise, a check of the clock.
    pub fn wake_if_all_parked(&mut self) {
        if self.blocked.is_running() {
            self.wake_up();
        }
    }

    /// Start or stop the blocked clock after `active` or `entries`
    /// changed.
    fn mark_blocked(&self) {
        let all_parked = match self.single_active {
            // Only the first is ever given messages.
            true => self
                .entries
                .values()
                .next()
                .is_some_and(|e| e.parked.is_some()),
            false => self.active.is_empty() && !self.entries.is_empty(),
        };
        match all_parked {
            true => self.blocked.start(),
            false => self.blocked.stop(),
        }
    }

    /// Number of consumers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No consumers.
    /// Whether some consumer is not parked (could take a message now).
    pub fn any_active(&self) -> bool {
        !self.active.is_empty()
    }

    /// Whether there are no consumers.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Some consumer holds the queue exclusively.
    pub fn has_exclusive(&self) -> bool {
        self.exclusive > 0
    }

    /// Some consumer that had credit is waiting for its connection to
    /// drain (see `Queue::update_saturation`).
    pub fn any_waiting_on_connection(&self) -> bool {
        self.parking.on_connection > 0
    }

    /// Add a consumer (after those of its priority).
    pub fn insert(&mut self, consumer: Consumer) -> Key {
        let rank = match self.single_active {
            true => Reverse(0),
            false => Reverse(consumer.priority),
        };
        let key = Key {
            rank,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        self.by_id.insert((consumer.conn.id, consumer.id), key);
        self.exclusive += usize::from(consumer.exclusive);
        self.entries.insert(
            key,
            Entry {
                consumer,
                parked: None,
            },
        );
        self.active.insert(key);
        self.mark_blocked();
        key
    }

    /// The consumer at `key`.
    pub fn get(&self, key: Key) -> Option<&Consumer> {
        self.entries.get(&key).map(|e| &e.consumer)
    }

    /// The key of a consumer, by connection and consumer id.
    pub fn find(&self, conn_id: u64, consumer_id: u64) -> Option<Key> {
        self.by_id.get(&(conn_id, consumer_id)).copied()
    }

    /// The first consumer in order (the active one with a single active
    /// consumer).
    pub fn first(&self) -> Option<Key> {
        self.entries.keys().next().copied()
    }

    /// Remove a consumer.
    pub fn remove(&mut self, key: Key) -> Option<Consumer> {
        let entry = self.entries.remove(&key)?;
        let c = entry.consumer;
        self.by_id.remove(&(c.conn.id, c.id));
        self.exclusive -= usize::from(c.exclusive);
        match entry.parked {
            None => {
                self.active.remove(&key);
            }
            Some(b) => self.parking.leave(key, &c, b),
        }
        self.mark_blocked();
        // It may have been the one woken for a unit of its channel's
        // credit: wake another in its place.
        let chan = (c.conn.id, c.channel);
        if self
            .parking
            .channels
            .get(&chan)
            .is_some_and(|b| b.resource.has_room())
        {
            self.wake_channel(chan, 1);
        }
        Some(c)
    }

    /// Remove every consumer (the queue is deleted).
    pub fn drain(&mut self) -> Vec<Consumer> {
        self.parking.unregister_all(&self.entries);
        self.by_id.clear();
        self.active.clear();
        self.blocked.stop();
        self.exclusive = 0;
        std::mem::take(&mut self.entries)
            .into_values()
            .map(|e| e.consumer)
            .collect()
    }

    /// The consumer the next message goes to, which has taken the credit
    /// for it; those found unable to take are parked on the way. Call
    /// [`ConsumerSet::served`] once the message is sent.
    pub fn pick(&mut self) -> Option<Key> {
        self.wake_up();
        loop {
            let key = match self.single_active {
                true => self
                    .entries
                    .iter()
                    .next()
                    .filter(|(_, e)| e.parked.is_none())
                    .map(|(k, _)| *k)?,
                false => next_in(&self.active, self.cursor)?,
            };
            let consumer = &self.entries.get(&key)?.consumer;
            match try_take(consumer) {
                Ok(()) => return Some(key),
                Err(blocked) => self.park(key, blocked),
            }
        }
    }

    /// The message picked for `key` was sent: the next search starts
    /// after it.
    pub fn served(&mut self, key: Key) {
        self.cursor = Some(Key {
            rank: key.rank,
            seq: key.seq.saturating_add(1),
        });
    }

    /// Act on what has been freed since the last look.
    fn wake_up(&mut self) {
        for (wake, units) in self.parking.wake.take() {
            match wake {
                Wake::Consumer(key) => {
                    if self.parked(key) == Some(Blocked::Consumer) {
                        self.unpark(key);
                    }
                }
                Wake::Channel(conn, channel) => self.wake_channel((conn, channel), units),
                Wake::Connection(conn) => {
                    let keys: Vec<Key> = match self.parking.conns.get(&conn) {
                        Some(b) => b.keys.iter().copied().collect(),
                        None => Vec::new(),
                    };
                    for key in keys {
                        self.unpark(key);
                    }
                }
            }
        }
    }

    /// Wake up to `units` consumers parked on a channel's credit, in
    /// round-robin order.
    fn wake_channel(&mut self, chan: (u64, u16), units: u32) {
        for _ in 0..units {
            let next = self
                .parking
                .channels
                .get(&chan)
                .and_then(|b| next_in(&b.keys, self.cursor));
            match next {
                Some(key) => self.unpark(key),
                None => break,
            }
        }
    }

    fn parked(&self, key: Key) -> Option<Blocked> {
        self.entries.get(&key).and_then(|e| e.parked)
    }

    /// Take `key` out of the rotation until what blocks it frees up. It
    /// registers first and checks again after, so a release in between is
    /// seen one way or the other (it comes straight back if so).
    fn park(&mut self, key: Key, blocked: Blocked) {
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        self.active.remove(&key);
        entry.parked = Some(blocked);
        if self.parking.join(key, &entry.consumer, blocked) {
            self.unpark(key);
        } else {
            self.mark_blocked();
        }
    }

    /// Put a parked consumer back in the rotation.
    fn unpark(&mut self, key: Key) {
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        let Some(blocked) = entry.parked.take() else {
            return;
        };
        self.active.insert(key);
        self.parking.leave(key, &entry.consumer, blocked);
        self.mark_blocked();
    }
}

impl Parking {
    /// Park `key` (consumer `c`) on what blocks it; true if that has room
    /// again already (checked after registering).
    fn join(&mut self, key: Key, c: &Consumer, blocked: Blocked) -> bool {
        match blocked {
            Blocked::Consumer => {
                c.credit.waiters.register(&self.wake, Wake::Consumer(key));
                c.credit.has_own_room()
            }
            Blocked::Channel => {
                let chan = (c.conn.id, c.channel);
                let resource = &c.credit.channel;
                join_bucket(&mut self.channels, chan, resource, key, &self.wake, || {
                    Wake::Channel(chan.0, chan.1)
                });
                resource.has_room()
            }
            Blocked::Connection => {
                self.on_connection += 1;
                let conn = c.conn.id;
                join_bucket(&mut self.conns, conn, &c.conn, key, &self.wake, || {
                    Wake::Connection(conn)
                });
                // Marks the connection starved again if still full, after
                // registering (see `ConnHandle::take_starved`).
                c.conn.has_room()
            }
        }
    }

    /// Forget that `key` was parked on `blocked`, unregistering from a
    /// resource nothing waits on any more.
    fn leave(&mut self, key: Key, c: &Consumer, blocked: Blocked) {
        match blocked {
            Blocked::Consumer => c.credit.waiters.unregister(&self.wake),
            Blocked::Channel => {
                leave_bucket(&mut self.channels, (c.conn.id, c.channel), key, &self.wake);
            }
            Blocked::Connection => {
                self.on_connection = self.on_connection.saturating_sub(1);
                leave_bucket(&mut self.conns, c.conn.id, key, &self.wake);
            }
        }
    }

    /// Unregister from everything (consumers parked on their own credit
    /// are in `entries`).
    fn unregister_all(&mut self, entries: &BTreeMap<Key, Entry>) {
        for e in entries.values() {
            if e.parked == Some(Blocked::Consumer) {
                e.consumer.credit.waiters.unregister(&self.wake);
            }
        }
        for b in self.channels.values() {
            b.resource.waiters().unregister(&self.wake);
        }
        for b in self.conns.values() {
            b.resource.waiters().unregister(&self.wake);
        }
        self.channels.clear();
        self.conns.clear();
        self.on_connection = 0;
    }
}

impl Drop for ConsumerSet {
    fn drop(&mut self) {
        self.parking.unregister_all(&self.entries);
    }
}

/// Whether `c` can take a message now (taking its credit if so), else what
/// stops it. A full connection with no credit left waits for the credit:
/// it could not take even once the connection drains.
fn try_take(c: &Consumer) -> Result<(), Blocked> {
    if !c.conn.has_room() {
        return match c.no_ack {
            true => Err(Blocked::Connection),
            false => Err(c.credit.blocker().unwrap_or(Blocked::Connection)),
        };
    }
    match c.no_ack {
        true => Ok(()),
        false => c.credit.try_acquire(),
    }
}

/// The first key of `set` in round-robin order: in its highest priority
/// group, the first at or after `cursor` if the cursor is in that group,
/// else the group's first.
fn next_in(set: &BTreeSet<Key>, cursor: Option<Key>) -> Option<Key> {
    let first = *set.first()?;
    if set.len() == 1 {
        // The common case: one consumer able to take; no range lookup.
        return Some(first);
    }
    let from_cursor = cursor
        .filter(|c| c.rank == first.rank)
        .and_then(|c| set.range(c..).next())
        .filter(|k| k.rank == first.rank);
    Some(from_cursor.copied().unwrap_or(first))
}

fn join_bucket<I: std::hash::Hash + Eq + Copy, R: Resource + Clone>(
    buckets: &mut AHashMap<I, Bucket<R>>,
    id: I,
    resource: &R,
    key: Key,
    list: &Arc<WakeList>,
    wake: impl FnOnce() -> Wake,
) {
    let bucket = buckets.entry(id).or_insert_with(|| Bucket {
        resource: resource.clone(),
        keys: BTreeSet::new(),
    });
    if bucket.keys.is_empty() {
        bucket.resource.waiters().register(list, wake());
    }
    bucket.keys.insert(key);
}

fn leave_bucket<I: std::hash::Hash + Eq + Copy, R: Resource>(
    buckets: &mut AHashMap<I, Bucket<R>>,
    id: I,
    key: Key,
    list: &WakeList,
) {
    let Some(bucket) = buckets.get_mut(&id) else {
        return;
    };
    bucket.keys.remove(&key);
    if bucket.keys.is_empty() {
        bucket.resource.waiters().unregister(list);
        buckets.remove(&id);
    }
}

#[path = "consumer_set/blocked.rs"]
mod blocked;
#[cfg(test)]
#[path = "consumer_set/tests.rs"]
mod tests;
