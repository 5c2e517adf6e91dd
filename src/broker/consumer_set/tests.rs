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

/// Consumers `ids` of connection `c`, each with per-consumer `prefetch`
/// (0: none), all on one channel whose channel-wide limit is `limit`.
fn sharing_channel(
    c: &Conn,
    limit: u32,
    prefetch: u32,
    ids: std::ops::RangeInclusive<u64>,
) -> (ConsumerSet, Arc<ChannelCredit>) {
    let chan = Arc::new(ChannelCredit::default());
    chan.set_prefetch(limit);
    let mut set = ConsumerSet::new(false);
    for id in ids {
        set.insert(consumer(Spec {
            prefetch,
            chan: chan.clone(),
            ..spec(c, id)
        }));
    }
    (set, chan)
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
    let (mut set, chan) = sharing_channel(&c, 2, 0, 1..=4);
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
    let (mut set, _chan) = sharing_channel(&c, 1, 0, 1..=3);
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
    let (mut set, chan) = sharing_channel(&c, 1, 1, 1..=3);
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

/// Review: a queue with consumers parked on two channels' global qos, and
/// no ready messages (another consumer took the rest), never calls `pick`,
/// so nothing reads its wake list; every release on either channel (acks
/// of deliveries from *other* queues) appends to it, and alternating
/// releases do not coalesce. The list grows without bound while the queue
/// stays empty (memory growth proportional to the acks of the channels).
#[test]
fn wake_list_stays_bounded_while_the_queue_is_empty() {
    let c = conn(1);
    let chans: Vec<Arc<ChannelCredit>> =
        (0..2).map(|_| Arc::new(ChannelCredit::default())).collect();
    let mut set = ConsumerSet::new(false);
    // Each channel's one unit is held by a consumer of another queue.
    let others: Vec<ConsumerCredit> = chans
        .iter()
        .map(|ch| {
            ch.set_prefetch(1);
            let other = ConsumerCredit::new(0, ch.clone());
            other.try_acquire().expect("unit");
            other
        })
        .collect();
    for (i, ch) in chans.iter().enumerate() {
        set.insert(consumer(Spec {
            prefetch: 0,
            channel: i as u16 + 1,
            chan: ch.clone(),
            ..spec(&c, i as u64 + 1)
        }));
    }
    assert_eq!(next(&mut set), None, "both parked on their channels");
    // The queue is now empty (no more picks); the other queues' consumers
    // take and ack, alternately on the two channels.
    for _ in 0..10_000 {
        for o in &others {
            o.release();
            o.try_acquire().expect("unit again");
        }
    }
    let pending = set.parking.wake.take().len();
    assert!(
        pending <= 2,
        "the wake list holds {pending} entries for 2 things waited on"
    );
}

/// Review: random churn against a model. After each change the queue
/// "dispatches" (picks until none); a consumer left idle that could take
/// (its connection under half its limit, as `take_starved` wakes it then,
/// and credit on both limits) would be a lost wake-up. Also checks the
/// limits, and that nothing stays registered once everyone has gone.
#[test]
fn random_churn_never_leaves_an_able_consumer_idle() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    for seed in 0..std::env::var("CHURN_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100u64)
    {
        let mut rng = StdRng::seed_from_u64(seed);
        let single_active = seed % 5 == 0;
        let conns: Vec<Conn> = (1..=2).map(conn).collect();
        // Channel credit of (connection, channel): index ci * 3 + chi.
        let chans: Vec<Arc<ChannelCredit>> =
            (0..6).map(|_| Arc::new(ChannelCredit::default())).collect();
        for ch in &chans {
            ch.set_prefetch(rng.gen_range(0..4));
        }
        let mut set = ConsumerSet::new(single_active);
        // Per connection: deliveries sitting in its mailbox.
        let mut backlog = [0usize; 2];
        // Outstanding deliveries: the credit to release.
        let mut outstanding: Vec<Arc<ConsumerCredit>> = Vec::new();
        let mut credits: Vec<Arc<ConsumerCredit>> = Vec::new();
        let mut ids: Vec<(u64, u64)> = Vec::new();
        let mut next_id = 0u64;
        let half = CONNECTION_BACKLOG_LIMIT / 2;

        for step in 0..400 {
            match rng.gen_range(0..100) {
                0..=14 if ids.len() < 12 => {
                    next_id += 1;
                    let ci = rng.gen_range(0..2usize);
                    let chi = rng.gen_range(0..3usize);
                    let c = Consumer {
                        id: next_id,
                        tag: Arc::from("t"),
                        channel: chi as u16 + 1,
                        conn: conns[ci].handle.clone(),
                        no_ack: rng.gen_ratio(1, 6),
                        exclusive: false,
                        credit: Arc::new(ConsumerCredit::new(
                            rng.gen_range(0..3),
                            chans[ci * 3 + chi].clone(),
                        )),
                        priority: rng.gen_range(0..3),
                    };
                    credits.push(c.credit.clone());
                    ids.push((conns[ci].handle.id, next_id));
                    set.insert(c);
                }
                15..=22 if !ids.is_empty() => {
                    let (cid, id) = ids.swap_remove(rng.gen_range(0..ids.len()));
                    let key = set.find(cid, id).expect("consumer");
                    set.remove(key);
                }
                23..=59 if !outstanding.is_empty() => {
                    let n = rng.gen_range(1..=outstanding.len().min(3));
                    for _ in 0..n {
                        let c = outstanding.swap_remove(rng.gen_range(0..outstanding.len()));
                        c.release();
                    }
                }
                60..=69 => {
                    let ch = &chans[rng.gen_range(0..6)];
                    ch.set_prefetch(rng.gen_range(0..5));
                }
                70..=79 => {
                    // The connection writes some out, then looks at
                    // `take_starved` (end of its pass).
                    let ci = rng.gen_range(0..2);
                    let n = rng.gen_range(0..=backlog[ci]);
                    for _ in 0..n {
                        conns[ci].handle.delivery_taken(0);
                    }
                    backlog[ci] -= n;
                    conns[ci].handle.take_starved();
                }
                80..=84 => {
                    // Something else fills a connection's mailbox.
                    let ci = rng.gen_range(0..2);
                    let n = rng.gen_range(0..CONNECTION_BACKLOG_LIMIT);
                    conns[ci].handle.add_backlog(n);
                    backlog[ci] += n;
                }
                _ => {}
            }
            // Dispatch (a queue with plenty of messages).
            let mut served = 0;
            while let Some(key) = set.pick() {
                let c = set.get(key).expect("picked");
                let ci = (c.conn.id - 1) as usize;
                c.conn.add_backlog(1);
                backlog[ci] += 1;
                if !c.no_ack {
                    outstanding.push(c.credit.clone());
                    assert!(
                        c.credit.prefetch == 0
                            || c.credit.outstanding.load(Ordering::Acquire) <= c.credit.prefetch,
                        "seed {seed} step {step}: over prefetch"
                    );
                }
                set.served(key);
                served += 1;
                assert!(served < 100_000, "seed {seed}: endless dispatch");
            }
            // Nobody able may be idle.
            let able = |c: &Consumer| {
                let ci = (c.conn.id - 1) as usize;
                backlog[ci] < half
                    && (c.no_ack || (c.credit.has_own_room() && c.credit.channel.has_room()))
            };
            let keys: Vec<Key> = match single_active {
                true => set.first().into_iter().collect(),
                false => set.entries.keys().copied().collect(),
            };
            for key in keys {
                let c = set.get(key).expect("consumer");
                assert!(
                    !able(c),
                    "seed {seed} step {step}: consumer {} idle though able (parked {:?})",
                    c.id,
                    set.parked(key)
                );
            }
        }
        // Everyone goes: nothing may stay registered.
        for (cid, id) in ids.drain(..) {
            let key = set.find(cid, id).expect("consumer");
            set.remove(key);
        }
        assert!(set.is_empty());
        for c in &credits {
            assert!(
                c.waiters.is_empty(),
                "seed {seed}: consumer registration left"
            );
        }
        for ch in &chans {
            assert!(
                ch.waiters.is_empty(),
                "seed {seed}: channel registration left"
            );
        }
        for c in &conns {
            assert!(
                c.handle.waiters.is_empty(),
                "seed {seed}: connection registration left"
            );
        }
        assert!(set.parking.channels.is_empty() && set.parking.conns.is_empty());
        assert!(!set.any_waiting_on_connection());
    }
}

/// Review: deleting the queue (drain) unregisters from everything its
/// consumers were parked on.
#[test]
fn drain_unregisters_every_kind_of_park() {
    let full = conn(1);
    let other = conn(2);
    let chan = Arc::new(ChannelCredit::default());
    chan.set_prefetch(1);
    let mut set = ConsumerSet::new(false);
    set.insert(consumer(Spec {
        prefetch: 0,
        chan: chan.clone(),
        ..spec(&other, 1)
    }));
    set.insert(consumer(Spec {
        prefetch: 0,
        chan: chan.clone(),
        ..spec(&other, 2)
    }));
    set.insert(consumer(spec(&other, 3)));
    set.insert(consumer(Spec {
        no_ack: true,
        ..spec(&full, 4)
    }));
    full.handle.add_backlog(CONNECTION_BACKLOG_LIMIT);
    let mut got = Vec::new();
    while let Some(id) = next(&mut set) {
        got.push(id);
    }
    assert_eq!(got, vec![1, 3]);
    let three = set
        .get(set.find(2, 3).expect("3"))
        .expect("3")
        .credit
        .clone();
    assert_eq!(three.waiters.len(), 1);
    assert_eq!(chan.waiters.len(), 1);
    assert_eq!(full.handle.waiters.len(), 1);
    assert_eq!(set.drain().len(), 4);
    assert!(three.waiters.is_empty());
    assert!(chan.waiters.is_empty());
    assert!(full.handle.waiters.is_empty());
}

/// Review: real threads race releases, qos changes and a connection
/// draining its mailbox against a queue that dispatches under its lock
/// (as the broker does); deliveries must keep flowing, and once all stop
/// no consumer able to take may be left parked.
#[test]
fn threads_racing_releases_and_drains_never_lose_a_wake() {
    use parking_lot::Mutex;
    use rand::{Rng, SeedableRng};
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicBool, AtomicU64};
    use std::time::{Duration, Instant};

    let c = conn(1);
    let handle = c.handle.clone();
    let chans: Vec<Arc<ChannelCredit>> =
        (0..2).map(|_| Arc::new(ChannelCredit::default())).collect();
    chans[0].set_prefetch(3);
    chans[1].set_prefetch(0);
    let mut set = ConsumerSet::new(false);
    for id in 1..=12u64 {
        set.insert(consumer(Spec {
            prefetch: (id % 3) as u32,
            channel: (id % 2) as u16 + 1,
            chan: chans[(id % 2) as usize].clone(),
            no_ack: id % 4 == 0,
            priority: (id % 3) as i64,
            ..spec(&c, id)
        }));
    }
    let set = Arc::new(Mutex::new(set));
    let mailbox: Arc<Mutex<VecDeque<Option<Arc<ConsumerCredit>>>>> = Arc::default();
    let client: Arc<Mutex<Vec<Arc<ConsumerCredit>>>> = Arc::default();
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    let dispatch = {
        let (set, mailbox, delivered) = (set.clone(), mailbox.clone(), delivered.clone());
        move || {
            let mut s = set.lock();
            while let Some(key) = s.pick() {
                let c = s.get(key).expect("picked");
                c.conn.add_backlog(1);
                let credit = (!c.no_ack).then(|| c.credit.clone());
                if let Some(cr) = &credit {
                    assert!(
                        cr.prefetch == 0 || cr.outstanding.load(Ordering::Acquire) <= cr.prefetch
                    );
                }
                mailbox.lock().push_back(credit);
                s.served(key);
                delivered.fetch_add(1, Ordering::Relaxed);
            }
        }
    };

    let mut threads = Vec::new();
    // The connection: takes deliveries from its mailbox in batches, hands
    // them to the client, then looks at take_starved.
    {
        let (mailbox, client, stop, dispatch, handle) = (
            mailbox.clone(),
            client.clone(),
            stop.clone(),
            dispatch.clone(),
            handle.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut rng = rand::rngs::StdRng::seed_from_u64(1);
            while !stop.load(Ordering::Acquire) {
                let n = rng.gen_range(1..600);
                for _ in 0..n {
                    let Some(d) = mailbox.lock().pop_front() else {
                        break;
                    };
                    handle.delivery_taken(0);
                    if let Some(cr) = d {
                        client.lock().push(cr);
                    }
                }
                if handle.take_starved() {
                    dispatch();
                }
                if rng.gen_ratio(1, 20) {
                    std::thread::sleep(Duration::from_micros(rng.gen_range(0..300)));
                }
            }
        }));
    }
    // Two ackers.
    for t in 0..2u64 {
        let (client, stop, dispatch) = (client.clone(), stop.clone(), dispatch.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = rand::rngs::StdRng::seed_from_u64(10 + t);
            while !stop.load(Ordering::Acquire) {
                let cr = {
                    let mut cl = client.lock();
                    match cl.len() {
                        0 => None,
                        n => Some(cl.swap_remove(rng.gen_range(0..n))),
                    }
                };
                match cr {
                    Some(cr) => {
                        cr.release();
                        dispatch();
                    }
                    None => std::thread::yield_now(),
                }
            }
        }));
    }
    // qos changes on the limited channel.
    {
        let (stop, dispatch, ch) = (stop.clone(), dispatch.clone(), chans[0].clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = rand::rngs::StdRng::seed_from_u64(99);
            while !stop.load(Ordering::Acquire) {
                ch.set_prefetch(rng.gen_range(1..6));
                dispatch();
                std::thread::sleep(Duration::from_micros(rng.gen_range(0..2000)));
            }
        }));
    }
    dispatch();
    let start = Instant::now();
    let mut last = (0, Instant::now());
    while start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
        let d = delivered.load(Ordering::Relaxed);
        if d != last.0 {
            last = (d, Instant::now());
        }
        assert!(
            last.1.elapsed() < Duration::from_secs(1),
            "no delivery for 1 s after {d}: stalled"
        );
    }
    stop.store(true, Ordering::Release);
    for t in threads {
        t.join().expect("thread");
    }
    let set = set.lock();
    let backlog_small = mailbox.lock().len() < CONNECTION_BACKLOG_LIMIT / 2;
    for e in set.entries.values() {
        let c = &e.consumer;
        let able =
            backlog_small && (c.no_ack || (c.credit.has_own_room() && c.credit.channel.has_room()));
        assert!(
            !(able && e.parked.is_some()),
            "consumer {} parked ({:?}) though able, after {} deliveries",
            c.id,
            e.parked,
            delivered.load(Ordering::Relaxed)
        );
    }
}

#[test]
fn the_blocked_clock_runs_only_while_every_consumer_is_parked() {
    let c = conn(1);
    let mut set = ConsumerSet::new(false);
    let clock = set.blocked_time();
    set.insert(consumer(spec(&c, 1)));
    set.insert(consumer(spec(&c, 2)));
    assert_eq!(next(&mut set), Some(1));
    assert_eq!(next(&mut set), Some(2));
    assert_eq!(clock.total_ns(), 0, "each took a message: not blocked");
    assert_eq!(next(&mut set), None);
    std::thread::sleep(std::time::Duration::from_millis(3));
    let blocked = clock.total_ns();
    assert!(blocked >= 3_000_000, "{blocked}");
    ack(&set, 1, 1);
    // Nothing to deliver: the queue acts on the wake anyway.
    set.wake_if_all_parked();
    let stopped = clock.total_ns();
    assert!(!clock.is_running(), "a free consumer stops the clock");
    assert_eq!(next(&mut set), Some(1));
    std::thread::sleep(std::time::Duration::from_millis(2));
    assert_eq!(clock.total_ns(), stopped);
    // Parked again, then the consumers leave: no consumer is not blocked.
    assert_eq!(next(&mut set), None);
    for id in [1, 2] {
        let key = set.find(1, id).expect("consumer");
        set.remove(key);
    }
    let left = clock.total_ns();
    std::thread::sleep(std::time::Duration::from_millis(2));
    assert_eq!(clock.total_ns(), left);
}
