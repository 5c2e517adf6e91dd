//! The consumer set on its own: order, parking and wake-ups, with real
//! credits and connection handles (mailboxes nobody reads).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::*;
use crate::broker::consumer::{ConnEvent, ConsumerCredit, CONNECTION_BACKLOG_LIMIT};

struct Conn {
    handle: ConnHandle,
    _rx: UnboundedReceiver<ConnEvent>,
}

fn conn(id: u64) -> Conn {
    let (tx, rx) = unbounded_channel();
    Conn {
        handle: ConnHandle::new(id, tx),
        _rx: rx,
    }
}

struct Spec<'a> {
    conn: &'a Conn,
    id: u64,
    channel: u16,
    prefetch: u32,
    chan: Arc<ChannelCredit>,
    priority: i64,
    no_ack: bool,
}

fn spec(conn: &Conn, id: u64) -> Spec<'_> {
    Spec {
        conn,
        id,
        channel: 1,
        prefetch: 1,
        chan: Arc::default(),
        priority: 0,
        no_ack: false,
    }
}

fn consumer(s: Spec<'_>) -> Consumer {
    Consumer {
        id: s.id,
        tag: Arc::from(format!("c{}", s.id)),
        channel: s.channel,
        conn: s.conn.handle.clone(),
        no_ack: s.no_ack,
        exclusive: false,
        credit: Arc::new(ConsumerCredit::new(s.prefetch, s.chan)),
        priority: s.priority,
    }
}

/// Pick and serve; the consumer id that got the message.
fn next(set: &mut ConsumerSet) -> Option<u64> {
    let key = set.pick()?;
    set.served(key);
    set.get(key).map(|c| c.id)
}

fn ack(set: &ConsumerSet, conn: u64, id: u64) {
    let key = set.find(conn, id).expect("consumer");
    set.get(key).expect("consumer").credit.release();
}

#[test]
fn round_robin_then_parks_and_wakes_on_ack() {
    let c = conn(1);
    let mut set = ConsumerSet::new(false);
    for id in 1..=3 {
        set.insert(consumer(spec(&c, id)));
    }
    assert_eq!(next(&mut set), Some(1));
    assert_eq!(next(&mut set), Some(2));
    assert_eq!(next(&mut set), Some(3));
    assert_eq!(next(&mut set), None);
    assert!(set.active.is_empty(), "all parked on their own credit");
    // Nothing is scanned now, and nothing left registered but the three.
    assert_eq!(next(&mut set), None);
    ack(&set, 1, 2);
    assert_eq!(next(&mut set), Some(2));
    ack(&set, 1, 3);
    ack(&set, 1, 1);
    assert_eq!(next(&mut set), Some(3), "round-robin goes on after 2");
    assert_eq!(next(&mut set), Some(1));
    assert_eq!(next(&mut set), None);
}

#[test]
fn higher_priority_first_lower_only_when_it_cannot() {
    let c = conn(1);
    let mut set = ConsumerSet::new(false);
    set.insert(consumer(Spec {
        priority: 0,
        ..spec(&c, 1)
    }));
    set.insert(consumer(Spec {
        priority: 5,
        ..spec(&c, 2)
    }));
    set.insert(consumer(Spec {
        priority: 5,
        ..spec(&c, 3)
    }));
    assert_eq!(next(&mut set), Some(2));
    assert_eq!(next(&mut set), Some(3));
    assert_eq!(next(&mut set), Some(1), "the high ones are full");
    assert_eq!(next(&mut set), None);
    ack(&set, 1, 1);
    ack(&set, 1, 3);
    assert_eq!(next(&mut set), Some(3), "high priority first again");
    assert_eq!(next(&mut set), Some(1));
}

#[test]
fn channel_wide_prefetch_wakes_other_consumers_of_the_channel() {
    let c = conn(1);
    let chan = Arc::new(ChannelCredit::default());
    chan.set_prefetch(2);
    let mut set = ConsumerSet::new(false);
    for id in 1..=4 {
        set.insert(consumer(Spec {
            prefetch: 0,
            chan: chan.clone(),
            ..spec(&c, id)
        }));
    }
    assert_eq!(next(&mut set), Some(1));
    assert_eq!(next(&mut set), Some(2));
    assert_eq!(next(&mut set), None);
    assert_eq!(chan.waiters.len(), 1, "one registration for the channel");
    // An ack on consumer 1 frees a unit that consumer 3 (next in turn)
    // takes.
    ack(&set, 1, 1);
    assert_eq!(next(&mut set), Some(3));
    assert_eq!(next(&mut set), None);
    ack(&set, 1, 2);
    ack(&set, 1, 3);
    assert_eq!(next(&mut set), Some(4));
    assert_eq!(next(&mut set), Some(1), "wraps around");
    assert_eq!(next(&mut set), None);
    // Raising the limit wakes as many as it makes room for.
    chan.set_prefetch(0);
    assert_eq!(next(&mut set), Some(2));
    assert_eq!(next(&mut set), Some(3));
    assert_eq!(next(&mut set), Some(4));
}

#[test]
fn cancelled_consumer_woken_for_a_channel_unit_is_replaced() {
    let c = conn(1);
    let chan = Arc::new(ChannelCredit::default());
    chan.set_prefetch(1);
    let mut set = ConsumerSet::new(false);
    for id in 1..=3 {
        set.insert(consumer(Spec {
            prefetch: 0,
            chan: chan.clone(),
            ..spec(&c, id)
        }));
    }
    assert_eq!(next(&mut set), Some(1));
    assert_eq!(next(&mut set), None);
    ack(&set, 1, 1);
    // The wake-up is read; 2 is active again, then cancelled before any
    // message comes: 3 must not be left waiting on a free channel.
    set.wake_up();
    let two = set.find(1, 2).expect("2");
    set.remove(two);
    assert_eq!(next(&mut set), Some(3));
}

#[test]
fn full_connection_parks_until_it_drains() {
    let full = conn(1);
    let other = conn(2);
    let mut set = ConsumerSet::new(false);
    set.insert(consumer(Spec {
        no_ack: true,
        ..spec(&full, 1)
    }));
    set.insert(consumer(Spec {
        prefetch: 0,
        ..spec(&other, 2)
    }));
    full.handle.add_backlog(CONNECTION_BACKLOG_LIMIT);
    assert_eq!(next(&mut set), Some(2));
    assert_eq!(next(&mut set), Some(2), "1 is parked on its connection");
    assert!(set.any_waiting_on_connection());
    assert_eq!(full.handle.waiters.len(), 1);
    for _ in 0..CONNECTION_BACKLOG_LIMIT / 2 {
        full.handle.delivery_taken(0);
    }
    assert!(!full.handle.take_starved(), "not drained enough yet");
    assert_eq!(next(&mut set), Some(2), "still parked");
    full.handle.delivery_taken(0);
    assert!(full.handle.take_starved());
    assert_eq!(next(&mut set), Some(1));
    assert!(!set.any_waiting_on_connection());
    assert!(full.handle.waiters.is_empty(), "unregistered once empty");
}

#[test]
fn single_active_consumer_only_the_first() {
    let c = conn(1);
    let mut set = ConsumerSet::new(true);
    set.insert(consumer(spec(&c, 1)));
    set.insert(consumer(Spec {
        priority: 9,
        ..spec(&c, 2)
    }));
    assert_eq!(next(&mut set), Some(1), "priority is ignored");
    assert_eq!(next(&mut set), None, "the second never gets one");
    let first = set.first().expect("first");
    set.remove(first);
    assert_eq!(next(&mut set), Some(2));
}

#[test]
fn removal_by_id_and_drop_unregister_everything() {
    let c = conn(1);
    let chan = Arc::new(ChannelCredit::default());
    chan.set_prefetch(1);
    let mut set = ConsumerSet::new(false);
    for id in 1..=3 {
        set.insert(consumer(Spec {
            chan: chan.clone(),
            ..spec(&c, id)
        }));
    }
    assert_eq!(next(&mut set), Some(1));
    assert_eq!(next(&mut set), None);
    let one = set.find(1, 1).expect("1");
    let credit = set.get(one).expect("1").credit.clone();
    assert!(set.remove(one).is_some());
    assert!(set.find(1, 1).is_none());
    assert_eq!(set.len(), 2);
    assert_eq!(credit.outstanding.load(Ordering::Acquire), 1);
    drop(set);
    assert!(chan.waiters.is_empty());
}
