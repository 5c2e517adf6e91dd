//! Stress for parked consumers (review of the O(log n) consumer set):
//! consumers that cannot take a message (per-consumer prefetch, channel-wide
//! qos, full connection) are parked and must be woken when they can take
//! again. Random churn (acks, multiple acks, nack/reject with and without
//! requeue, cancel and re-consume, global qos changes, transactions with
//! commit and rollback, channel close and reopen) runs while publishers
//! fill several queues (one of them single-active-consumer) shared by
//! several channels on several connections, with mixed x-priority. Once
//! the churn stops and the consumers left ack promptly, every message must
//! be settled within a bound (a lost wake-up leaves messages ready next to
//! an idle consumer forever), and no delivery may ever exceed a
//! consumer's prefetch or its channel's global limit.
//!
//! Seeded (`STRESS_SEED=n` runs one seed only); each run is bounded.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;

const CHAOS: u8 = 0;
const DRAIN: u8 = 1;
const STOP: u8 = 2;

/// What every task shares.
struct Shared {
    settled: Mutex<HashSet<u64>>,
    violations: Mutex<Vec<String>>,
    phase: AtomicU8,
    queues: Vec<String>,
    /// What happened to each message (for the report).
    history: Mutex<std::collections::HashMap<u64, Vec<String>>>,
}

impl Shared {
    fn violation(&self, v: String) {
        let mut vs = self.violations.lock().unwrap();
        if vs.len() < 50 {
            vs.push(v);
        }
    }
    fn note(&self, id: u64, what: String) {
        self.history
            .lock()
            .unwrap()
            .entry(id)
            .or_default()
            .push(what);
    }
    fn settle(&self, id: u64) {
        self.settled.lock().unwrap().insert(id);
    }
}

enum Ev {
    Delivery(usize, Box<lapin::message::Delivery>),
    Ended(usize),
}

struct Cons {
    tag: String,
    queue: usize,
    prefetch: u32,
    no_ack: bool,
    permanent: bool,
    priority: i32,
    live: bool,
    /// Unacked at the broker as far as the client knows (held plus
    /// settled inside an uncommitted transaction).
    count: u32,
    epoch: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum How {
    Ack,
    Requeue,
    Discard,
}

struct Driver {
    name: String,
    conn: Arc<Connection>,
    ch: Channel,
    epoch: u32,
    rng: StdRng,
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<(u32, Ev)>,
    cons: Vec<Cons>,
    /// delivery tag -> (consumer slot, message id)
    held: BTreeMap<u64, (usize, u64)>,
    /// Settled in the open transaction: (slot, id, how).
    tx_pending: Vec<(usize, u64, How)>,
    transactional: bool,
    /// (tag, slot, id) of what `tx_pending` holds, for a rollback.
    tx_tags: Vec<(u64, usize, u64)>,
    /// Channel-wide limit (0: none) and the limits set recently.
    global: u32,
    recent_globals: Vec<(Instant, u32)>,
    /// Per-consumer prefetch for new consumers.
    consumer_prefetch: u32,
    global_only: bool,
    /// Every tag up to this one has been seen.
    prefix: u64,
    seen_above: BTreeSet<u64>,
    next_tag_n: u64,
}

fn id_of(d: &lapin::message::Delivery) -> u64 {
    std::str::from_utf8(&d.data)
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("numeric body")
}

impl Driver {
    fn total(&self) -> u32 {
        self.cons.iter().map(|c| c.count).sum()
    }

    async fn setup_channel(&mut self) {
        self.ch = self.conn.create_channel().await.expect("channel");
        self.epoch += 1;
        self.prefix = 0;
        self.seen_above.clear();
        if self.transactional {
            self.ch.tx_select().await.expect("tx.select");
        }
        let g = self.global;
        self.set_global(g).await;
    }

    async fn set_global(&mut self, g: u32) {
        if let Err(e) = self
            .ch
            .basic_qos(g as u16, BasicQosOptions { global: true })
            .await
        {
            self.shared
                .violation(format!("{}: qos global failed: {e}", self.name));
            return;
        }
        self.global = g;
        self.recent_globals.push((Instant::now(), g));
        let now = Instant::now();
        self.recent_globals
            .retain(|(t, _)| now.duration_since(*t) < Duration::from_secs(3));
    }

    async fn consume(&mut self, queue: usize, permanent: bool) {
        let prefetch = if self.global_only {
            0
        } else {
            self.rng.gen_range(1..=4)
        };
        if prefetch != self.consumer_prefetch {
            if let Err(e) = self
                .ch
                .basic_qos(prefetch as u16, BasicQosOptions { global: false })
                .await
            {
                self.shared
                    .violation(format!("{}: qos failed: {e}", self.name));
                return;
            }
            self.consumer_prefetch = prefetch;
        }
        // no-ack consumers only as extras (they take anything).
        let no_ack = !permanent && self.rng.gen_ratio(1, 8);
        let priority = [0, 0, 0, 5, -3][self.rng.gen_range(0..5)];
        self.next_tag_n += 1;
        let tag = format!("{}-{}", self.name, self.next_tag_n);
        let args = table(&[("x-priority", AMQPValue::LongInt(priority))]);
        let consumer = match self
            .ch
            .basic_consume(
                self.shared.queues[queue].as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions {
                    no_ack,
                    ..Default::default()
                },
                args,
            )
            .await
        {
            Ok(c) => c,
            Err(e) => {
                self.shared
                    .violation(format!("{}: consume failed: {e}", self.name));
                return;
            }
        };
        let slot = self.cons.len();
        self.cons.push(Cons {
            tag,
            queue,
            prefetch,
            no_ack,
            permanent,
            priority,
            live: true,
            count: 0,
            epoch: self.epoch,
        });
        let tx = self.tx.clone();
        let epoch = self.epoch;
        let mut consumer = consumer;
        tokio::spawn(async move {
            while let Some(item) = consumer.next().await {
                match item {
                    Ok(d) => {
                        if tx.send((epoch, Ev::Delivery(slot, Box::new(d)))).is_err() {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            let _ = tx.send((epoch, Ev::Ended(slot)));
        });
    }

    fn allowed_global(&self) -> Option<u32> {
        let mut max = self.global;
        if max == 0 {
            return None;
        }
        for (_, g) in &self.recent_globals {
            if *g == 0 {
                return None;
            }
            max = max.max(*g);
        }
        Some(max)
    }

    async fn on_delivery(&mut self, slot: usize, d: lapin::message::Delivery) {
        let tag = d.delivery_tag;
        let id = id_of(&d);
        // Tags are consecutive per channel.
        self.seen_above.insert(tag);
        while self.seen_above.remove(&(self.prefix + 1)) {
            self.prefix += 1;
        }
        let c = &self.cons[slot];
        self.shared.note(
            id,
            format!(
                "{} tag {tag} to {} (live {} noack {} epoch {})",
                self.name, c.tag, c.live, c.no_ack, self.epoch
            ),
        );
        if c.no_ack {
            self.shared.settle(id);
            return;
        }
        if c.prefetch > 0 && c.count + 1 > c.prefetch {
            self.shared.violation(format!(
                "{}: consumer {} (prefetch {}) got a delivery with {} unacked",
                self.name, c.tag, c.prefetch, c.count
            ));
        }
        if let Some(limit) = self.allowed_global() {
            let total = self.total();
            if total + 1 > limit {
                self.shared.violation(format!(
                    "{}: channel limit {limit} exceeded: delivery with {total} unacked",
                    self.name
                ));
            }
        }
        self.cons[slot].count += 1;
        self.held.insert(tag, (slot, id));
        if self.shared.phase.load(Ordering::Acquire) != CHAOS {
            self.settle_one(tag, How::Ack).await;
            self.commit().await;
        }
    }

    fn record(&mut self, tag: u64, slot: usize, id: u64, how: How) {
        if self.transactional {
            self.tx_pending.push((slot, id, how));
            self.tx_tags.push((tag, slot, id));
        } else {
            self.applied(slot, id, how);
        }
    }

    fn applied(&mut self, slot: usize, id: u64, how: How) {
        self.shared
            .note(id, format!("{} applied {how:?}", self.name));
        self.cons[slot].count -= 1;
        if how != How::Requeue {
            self.shared.settle(id);
        }
    }

    async fn settle_one(&mut self, tag: u64, how: How) {
        let Some((slot, id)) = self.held.remove(&tag) else {
            return;
        };
        let r = match how {
            How::Ack => {
                self.ch
                    .basic_ack(tag, BasicAckOptions { multiple: false })
                    .await
            }
            How::Requeue => {
                self.ch
                    .basic_nack(
                        tag,
                        BasicNackOptions {
                            multiple: false,
                            requeue: true,
                        },
                    )
                    .await
            }
            How::Discard => {
                self.ch
                    .basic_reject(tag, BasicRejectOptions { requeue: false })
                    .await
            }
        };
        if let Err(e) = r {
            self.shared
                .violation(format!("{}: settle {tag} {how:?} failed: {e}", self.name));
        }
        self.record(tag, slot, id, how);
    }

    /// Settle every held delivery up to `tag` (all seen) at once.
    async fn settle_multiple(&mut self, tag: u64, how: How) {
        // The tag itself must be unacked (else it is unknown to the
        // broker), and every tag before it seen.
        let Some(tag) = self
            .held
            .range(..=tag.min(self.prefix))
            .next_back()
            .map(|(t, _)| *t)
        else {
            return;
        };
        let upto: Vec<u64> = self.held.range(..=tag).map(|(t, _)| *t).collect();
        let r = match how {
            How::Ack => {
                self.ch
                    .basic_ack(tag, BasicAckOptions { multiple: true })
                    .await
            }
            _ => {
                self.ch
                    .basic_nack(
                        tag,
                        BasicNackOptions {
                            multiple: true,
                            requeue: how == How::Requeue,
                        },
                    )
                    .await
            }
        };
        if let Err(e) = r {
            self.shared.violation(format!(
                "{}: settle multiple {tag} {how:?} failed: {e}",
                self.name
            ));
        }
        for t in upto {
            let (slot, id) = self.held.remove(&t).expect("held");
            self.record(t, slot, id, how);
        }
    }

    async fn commit(&mut self) {
        if !self.transactional || self.tx_pending.is_empty() {
            return;
        }
        if let Err(e) = self.ch.tx_commit().await {
            self.shared
                .violation(format!("{}: commit failed: {e}", self.name));
        }
        self.tx_tags.clear();
        for (slot, id, how) in std::mem::take(&mut self.tx_pending) {
            self.applied(slot, id, how);
        }
    }

    async fn rollback(&mut self) {
        let tags = std::mem::take(&mut self.tx_tags);
        if !self.transactional {
            return;
        }
        if let Err(e) = self.ch.tx_rollback().await {
            self.shared
                .violation(format!("{}: rollback failed: {e}", self.name));
        }
        // The settled deliveries are unacked again, under their tags.
        for (tag, slot, id) in tags {
            self.held.insert(tag, (slot, id));
        }
        self.tx_pending.clear();
    }

    fn random_held(&mut self) -> Option<u64> {
        if self.held.is_empty() {
            return None;
        }
        let i = self.rng.gen_range(0..self.held.len());
        self.held.keys().nth(i).copied()
    }

    async fn chaos_step(&mut self) {
        let roll = self.rng.gen_range(0..1000);
        match roll {
            0..=299 => {
                if let Some(t) = self.random_held() {
                    self.settle_one(t, How::Ack).await;
                }
            }
            300..=379 => {
                if let Some(t) = self.random_held() {
                    self.settle_multiple(t, How::Ack).await;
                }
            }
            380..=449 => {
                if let Some(t) = self.random_held() {
                    self.settle_one(t, How::Requeue).await;
                }
            }
            450..=479 => {
                if let Some(t) = self.random_held() {
                    self.settle_one(t, How::Discard).await;
                }
            }
            480..=499 => {
                if let Some(t) = self.random_held() {
                    self.settle_multiple(t, How::Requeue).await;
                }
            }
            500..=514 => {
                // Cancel a non-permanent consumer.
                let live: Vec<usize> = (0..self.cons.len())
                    .filter(|&i| {
                        self.cons[i].live
                            && !self.cons[i].permanent
                            && self.cons[i].epoch == self.epoch
                    })
                    .collect();
                if !live.is_empty() {
                    let i = live[self.rng.gen_range(0..live.len())];
                    let tag = self.cons[i].tag.clone();
                    self.cons[i].live = false;
                    if let Err(e) = self
                        .ch
                        .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                        .await
                    {
                        self.shared
                            .violation(format!("{}: cancel failed: {e}", self.name));
                    }
                }
            }
            515..=529 => {
                let live = self.cons.iter().filter(|c| c.live).count();
                if live < 6 {
                    let q = self.rng.gen_range(0..self.shared.queues.len());
                    self.consume(q, false).await;
                }
            }
            530..=549 => {
                let g = if self.global_only {
                    self.rng.gen_range(1..=6)
                } else {
                    [0, 1, 2, 3, 5][self.rng.gen_range(0..5)]
                };
                self.set_global(g).await;
            }
            550..=579 if self.transactional => {
                self.commit().await;
            }
            580..=589 if self.transactional => {
                self.rollback().await;
            }
            590..=592 => self.reopen().await,
            _ => {
                // Hold what we have for a while: parks consumers.
                tokio::time::sleep(Duration::from_micros(self.rng.gen_range(0..1500))).await;
            }
        }
    }

    /// Close the channel (the broker requeues its unacked deliveries and
    /// cancels its consumers) and open a fresh one with the same
    /// permanent consumers.
    async fn reopen(&mut self) {
        // No-ack deliveries in flight would be lost with the channel (as
        // the protocol allows): only channels without them are reopened.
        if self.cons.iter().any(|c| c.live && c.no_ack) {
            return;
        }
        if let Err(e) = self.ch.close(200, "reopen".into()).await {
            self.shared
                .violation(format!("{}: channel close failed: {e}", self.name));
        }
        for (_, (slot, _)) in std::mem::take(&mut self.held) {
            self.cons[slot].count -= 1;
        }
        for (slot, _, _) in std::mem::take(&mut self.tx_pending) {
            self.cons[slot].count -= 1;
        }
        self.tx_tags.clear();
        let permanent: Vec<usize> = self
            .cons
            .iter()
            .filter(|c| c.live && c.permanent)
            .map(|c| c.queue)
            .collect();
        for c in &mut self.cons {
            c.live = false;
        }
        self.consumer_prefetch = 0;
        self.setup_channel().await;
        for q in permanent {
            self.consume(q, true).await;
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<(u32, Ev)>) -> Driver {
        let mut drained = false;
        loop {
            let phase = self.shared.phase.load(Ordering::Acquire);
            if phase == STOP {
                return self;
            }
            if phase == DRAIN && !drained {
                drained = true;
                self.commit().await;
                let tags: Vec<u64> = self.held.keys().copied().collect();
                for t in tags {
                    self.settle_one(t, How::Ack).await;
                }
                self.commit().await;
            }
            // Take what has arrived, then maybe act.
            match tokio::time::timeout(Duration::from_millis(1), rx.recv()).await {
                Ok(Some((epoch, ev))) => {
                    if epoch != self.epoch {
                        if let Ev::Delivery(slot, d) = &ev {
                            // A no-ack delivery is settled once sent.
                            if self.cons[*slot].no_ack {
                                self.shared.settle(id_of(d));
                            }
                        }
                        // Deliveries of a closed channel: requeued by the
                        // broker, nothing to do.
                        continue;
                    }
                    match ev {
                        Ev::Delivery(slot, d) => self.on_delivery(slot, *d).await,
                        Ev::Ended(slot) => self.cons[slot].live = false,
                    }
                }
                Ok(None) => return self,
                Err(_) => {}
            }
            if self.shared.phase.load(Ordering::Acquire) == CHAOS && self.rng.gen_ratio(1, 2) {
                self.chaos_step().await;
            }
        }
    }
}

async fn declare_all(ch: &Channel, queues: &[String]) {
    for (i, q) in queues.iter().enumerate() {
        let args = if i == 0 {
            table(&[("x-single-active-consumer", AMQPValue::Boolean(true))])
        } else {
            FieldTable::default()
        };
        ch.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), args)
            .await
            .expect("declare");
    }
}

async fn stress(seed: u64) {
    let broker = Broker::start().await;
    let mut rng = StdRng::seed_from_u64(seed);
    let queues: Vec<String> = (0..4).map(|i| uniq(&format!("stress{i}"))).collect();
    let (admin_conn, admin) = broker.channel().await;
    declare_all(&admin, &queues).await;
    let shared = Arc::new(Shared {
        settled: Mutex::new(HashSet::new()),
        violations: Mutex::new(Vec::new()),
        phase: AtomicU8::new(CHAOS),
        queues: queues.clone(),
        history: Mutex::new(Default::default()),
    });

    // 3 connections x 2 channels; one channel transactional, two with
    // channel-wide qos only.
    let mut drivers = Vec::new();
    let mut conns = Vec::new();
    for c in 0..3 {
        let conn = Arc::new(broker.connect().await);
        conns.push(conn.clone());
        let mut events = conn.events_listener();
        let sh = shared.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.next().await {
                if let lapin::Event::Error(e) = ev {
                    sh.violation(format!("conn{c}: server error: {e}"));
                }
            }
        });
        for k in 0..2 {
            let n = c * 2 + k;
            let (tx, rx) = mpsc::unbounded_channel();
            let global_only = n == 1 || n == 4;
            let mut d = Driver {
                name: format!("ch{n}"),
                conn: conn.clone(),
                ch: conn.create_channel().await.expect("placeholder"),
                epoch: 0,
                rng: StdRng::seed_from_u64(rng.gen()),
                shared: shared.clone(),
                tx,
                cons: Vec::new(),
                held: BTreeMap::new(),
                tx_pending: Vec::new(),
                transactional: n == 2,
                tx_tags: Vec::new(),
                global: if global_only {
                    rng.gen_range(1..=4)
                } else {
                    [0, 0, 2, 3][rng.gen_range(0..4)]
                },
                recent_globals: Vec::new(),
                consumer_prefetch: 0,
                global_only,
                prefix: 0,
                seen_above: BTreeSet::new(),
                next_tag_n: 0,
            };
            let _ = d.ch.close(200, "placeholder".into()).await;
            d.setup_channel().await;
            // Extras first (so the single-active queue's first consumer
            // can be cancelled), then one permanent consumer on a queue,
            // so every queue keeps consumers to the end.
            for _ in 0..rng.gen_range(1..=3) {
                let q = rng.gen_range(0..queues.len());
                d.consume(q, false).await;
            }
            d.consume(n % queues.len(), true).await;
            if n < 2 {
                d.consume((n + 2) % queues.len(), true).await;
            }
            drivers.push((d, rx));
        }
    }
    let handles: Vec<_> = drivers
        .into_iter()
        .map(|(d, rx)| tokio::spawn(d.run(rx)))
        .collect();

    // Publishers.
    const PER_PUBLISHER: u64 = 1500;
    let mut pubs = Vec::new();
    for p in 0..2u64 {
        let (conn, ch) = broker.channel().await;
        let queues = queues.clone();
        let mut prng = StdRng::seed_from_u64(rng.gen());
        pubs.push(tokio::spawn(async move {
            for i in 0..PER_PUBLISHER {
                let id = p * 1_000_000 + i;
                let q = &queues[prng.gen_range(0..queues.len())];
                ch.basic_publish(
                    "".into(),
                    q.as_str().into(),
                    BasicPublishOptions::default(),
                    id.to_string().as_bytes(),
                    BasicProperties::default(),
                )
                .await
                .expect("publish");
                if i % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(prng.gen_range(0..4))).await;
                }
            }
            drop(conn);
        }));
    }
    for p in pubs {
        p.await.expect("publisher");
    }
    // A little more churn with nothing coming in.
    tokio::time::sleep(Duration::from_millis(500)).await;
    shared.phase.store(DRAIN, Ordering::Release);

    let total = 2 * PER_PUBLISHER as usize;
    let drained = poll(Duration::from_secs(10), Duration::from_millis(50), || {
        (shared.settled.lock().unwrap().len() >= total).then_some(())
    })
    .await;
    let mut report = String::new();
    if drained.is_none() {
        let settled = shared.settled.lock().unwrap().len();
        report.push_str(&format!(
            "seed {seed}: only {settled} of {total} settled 10 s after the churn stopped\n"
        ));
        for q in &queues {
            let ready = ready_count(&admin, q).await.unwrap_or(u32::MAX);
            let consumers = passive_declare(&admin, q)
                .await
                .map(|d| d.consumer_count())
                .unwrap_or(u32::MAX);
            report.push_str(&format!("  {q}: {ready} ready, {consumers} consumers\n"));
        }
    }
    if drained.is_none() {
        let settled = shared.settled.lock().unwrap().clone();
        let history = shared.history.lock().unwrap();
        let mut n = 0;
        for p in 0..2u64 {
            for i in 0..PER_PUBLISHER {
                let id = p * 1_000_000 + i;
                if !settled.contains(&id) && n < 15 {
                    n += 1;
                    report.push_str(&format!("  unsettled {id}: {:?}\n", history.get(&id)));
                }
            }
        }
    }
    shared.phase.store(STOP, Ordering::Release);
    for h in handles {
        let d = h.await.expect("driver");
        if drained.is_none() {
            report.push_str(&format!(
                "  {} global {} held {} tx {}: {}\n",
                d.name,
                d.global,
                d.held.len(),
                d.tx_pending.len(),
                d.cons
                    .iter()
                    .filter(|c| c.live)
                    .map(|c| format!(
                        "{}(q{} pf{} prio{} noack{} count{})",
                        c.tag, c.queue, c.prefetch, c.priority, c.no_ack, c.count
                    ))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
    }
    let violations = shared.violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "seed {seed}: {violations:#?}");
    assert!(drained.is_some(), "{report}");
    for q in &queues {
        assert_eq!(
            ready_count(&admin, q).await.expect("count"),
            0,
            "{q} drained"
        );
    }
    drop(conns);
    drop(admin_conn);
}

fn seeds(default: &[u64]) -> Vec<u64> {
    match std::env::var("STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(s) => vec![s],
        None => default.to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parked_consumers_always_drain_the_queues_a() {
    for seed in seeds(&[1]) {
        bounded(Duration::from_secs(40), stress(seed)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parked_consumers_always_drain_the_queues_b() {
    for seed in seeds(&[2]) {
        bounded(Duration::from_secs(40), stress(seed)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parked_consumers_always_drain_the_queues_c() {
    for seed in seeds(&[3]) {
        bounded(Duration::from_secs(40), stress(seed)).await;
    }
}

/// basic.qos with the global flag.
fn qos_global(channel: u16, prefetch_count: u16) -> Vec<u8> {
    let mut a = 0u32.to_be_bytes().to_vec();
    a.extend_from_slice(&prefetch_count.to_be_bytes());
    a.push(1);
    common::raw::method(channel, 60, 10, &a)
}

fn basic_ack_multiple(channel: u16, tag: u64) -> Vec<u8> {
    let mut a = tag.to_be_bytes().to_vec();
    a.push(1);
    common::raw::method(channel, 60, 80, &a)
}

/// A connection whose mailbox fills and drains again and again (its client
/// stops reading for a while, then reads a burst): its consumers, no-ack
/// and manual-ack under a channel-wide limit, on two queues that another
/// connection's consumer also drains (so a queue may go empty while they
/// wait for their connection), must get every message in the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumers_of_a_connection_that_fills_and_drains_get_everything() {
    use common::raw::{basic_consume, Raw, DELIVER};
    bounded(Duration::from_secs(60), async {
        let broker = Broker::start().await;
        let (_admin_conn, admin) = broker.channel().await;
        let qa = uniq("mailbox-a");
        let qb = uniq("mailbox-b");
        declare_queue(&admin, &qa).await;
        declare_queue(&admin, &qb).await;

        let mut r = Raw::handshake(&broker).await;
        r.open_channel(1).await;
        r.open_channel(2).await;
        r.send(&basic_consume(1, &qa, "na", true)).await;
        r.expect_method(1, 60, 21).await;
        r.send(&qos_global(2, 300)).await;
        r.expect_method(2, 60, 11).await;
        r.send(&basic_consume(2, &qa, "ma", false)).await;
        r.expect_method(2, 60, 21).await;
        r.send(&basic_consume(2, &qb, "mb", false)).await;
        r.expect_method(2, 60, 21).await;

        // Another connection's slow consumer on queue a.
        let (lconn, lch) = broker.channel().await;
        lch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
        let mut lc = consume(&lch, &qa).await;
        let seen = Arc::new(Mutex::new(HashSet::<u64>::new()));
        let lseen = seen.clone();
        let slow = tokio::spawn(async move {
            while let Some(Ok(d)) = lc.next().await {
                lseen.lock().unwrap().insert(body_id(&d.data));
                tokio::time::sleep(Duration::from_micros(300)).await;
                d.ack(BasicAckOptions::default()).await.unwrap();
            }
            drop(lconn);
        });

        const TOTAL: u64 = 16_000;
        let mut praw = Raw::handshake(&broker).await;
        praw.open_channel(1).await;
        let (qa2, qb2) = (qa.clone(), qb.clone());
        let publisher = tokio::spawn(async move {
            use common::raw::{basic_publish, content_header, frame, FRAME_BODY};
            for chunk in 0..TOTAL / 500 {
                let mut out = Vec::new();
                for i in chunk * 500..(chunk + 1) * 500 {
                    let mut body = format!("{i:>12}").into_bytes();
                    body.resize(4096, b'x');
                    let q = if i % 3 == 0 { &qb2 } else { &qa2 };
                    out.extend(basic_publish(1, "", q));
                    out.extend(content_header(1, body.len() as u64));
                    out.extend(frame(FRAME_BODY, 1, &body));
                }
                praw.send(&out).await;
            }
            // A round trip: everything before it was routed.
            praw.send(&common::raw::queue_declare(1, "mailbox-sync"))
                .await;
            praw.expect_method(1, 50, 11).await;
        });

        // Read in bursts, stopping for a while between them.
        let mut unacked_ch2 = 0u64;
        let mut last_tag_ch2 = 0u64;
        let mut burst = 0u64;
        let started = Instant::now();
        let mut published_done_at: Option<Instant> = None;
        loop {
            if seen.lock().unwrap().len() as u64 >= TOTAL {
                break;
            }
            if publisher.is_finished() && published_done_at.is_none() {
                published_done_at = Some(Instant::now());
            }
            if let Some(t) = published_done_at {
                let settled = seen.lock().unwrap().len();
                assert!(
                    t.elapsed() < Duration::from_secs(15),
                    "stall: {settled} of {TOTAL} delivered 15 s after publishing ended; \
                     queue a {} ready, queue b {} ready",
                    ready_count(&admin, &qa).await.unwrap_or(u32::MAX),
                    ready_count(&admin, &qb).await.unwrap_or(u32::MAX),
                );
            }
            let paused = published_done_at.is_none() && started.elapsed() < Duration::from_secs(20);
            if paused && burst >= 2500 {
                burst = 0;
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
            let f = match tokio::time::timeout(Duration::from_millis(200), r.next()).await {
                Ok(f) => f,
                Err(_) => {
                    // Quiet: ack what channel 2 holds, if anything.
                    if unacked_ch2 > 0 {
                        r.send(&basic_ack_multiple(2, last_tag_ch2)).await;
                        unacked_ch2 = 0;
                    }
                    continue;
                }
            };
            if f.method() != Some(DELIVER) {
                continue;
            }
            let args = &f.payload[4..];
            let tag_len = args[0] as usize;
            let tag = u64::from_be_bytes(args[1 + tag_len..9 + tag_len].try_into().unwrap());
            let body = r.skip_content().await;
            seen.lock().unwrap().insert(body_id(&body));
            burst += 1;
            if f.channel == 2 {
                unacked_ch2 += 1;
                last_tag_ch2 = tag;
                if unacked_ch2 >= 100 {
                    r.send(&basic_ack_multiple(2, tag)).await;
                    unacked_ch2 = 0;
                }
            }
        }
        publisher.await.unwrap();
        slow.abort();
    })
    .await
}

fn body_id(body: &[u8]) -> u64 {
    std::str::from_utf8(&body[..12])
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
