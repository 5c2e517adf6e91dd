//! The churn side of the parked-consumer stress: one client connection
//! ("driver") that consumes, acks, nacks, rejects, cancels and re-consumes,
//! changes its channel-wide limit, and runs transactions at random, while
//! checking each delivery against its consumer's prefetch and its
//! channel's limit; and the state every task shares.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::AMQPValue;
use lapin::{Channel, Connection};
use rand::rngs::StdRng;
use rand::Rng;
use tokio::sync::mpsc;

use crate::common::*;

pub(super) const CHAOS: u8 = 0;
pub(super) const DRAIN: u8 = 1;
pub(super) const STOP: u8 = 2;

/// What every task shares.
pub(super) struct Shared {
    pub(super) settled: Mutex<HashSet<u64>>,
    pub(super) violations: Mutex<Vec<String>>,
    pub(super) phase: AtomicU8,
    pub(super) queues: Vec<String>,
    /// What happened to each message (for the report).
    pub(super) history: Mutex<std::collections::HashMap<u64, Vec<String>>>,
}

impl Shared {
    pub(super) fn violation(&self, v: String) {
        let mut vs = self.violations.lock().unwrap();
        if vs.len() < 50 {
            vs.push(v);
        }
    }
    pub(super) fn note(&self, id: u64, what: String) {
        self.history
            .lock()
            .unwrap()
            .entry(id)
            .or_default()
            .push(what);
    }
    pub(super) fn settle(&self, id: u64) {
        self.settled.lock().unwrap().insert(id);
    }
}

pub(super) enum Ev {
    Delivery(usize, Box<lapin::message::Delivery>),
    Ended(usize),
}

pub(super) struct Cons {
    pub(super) tag: String,
    pub(super) queue: usize,
    pub(super) prefetch: u32,
    pub(super) no_ack: bool,
    pub(super) permanent: bool,
    pub(super) priority: i32,
    pub(super) live: bool,
    /// Unacked at the broker as far as the client knows (held plus
    /// settled inside an uncommitted transaction).
    pub(super) count: u32,
    pub(super) epoch: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum How {
    Ack,
    Requeue,
    Discard,
}

pub(super) struct Driver {
    pub(super) name: String,
    pub(super) conn: Arc<Connection>,
    pub(super) ch: Channel,
    pub(super) epoch: u32,
    pub(super) rng: StdRng,
    pub(super) shared: Arc<Shared>,
    pub(super) tx: mpsc::UnboundedSender<(u32, Ev)>,
    pub(super) cons: Vec<Cons>,
    /// delivery tag -> (consumer slot, message id)
    pub(super) held: BTreeMap<u64, (usize, u64)>,
    /// Settled in the open transaction: (slot, id, how).
    pub(super) tx_pending: Vec<(usize, u64, How)>,
    pub(super) transactional: bool,
    /// (tag, slot, id) of what `tx_pending` holds, for a rollback.
    pub(super) tx_tags: Vec<(u64, usize, u64)>,
    /// Channel-wide limit (0: none) and the limits set recently.
    pub(super) global: u32,
    pub(super) recent_globals: Vec<(Instant, u32)>,
    /// Per-consumer prefetch for new consumers.
    pub(super) consumer_prefetch: u32,
    pub(super) global_only: bool,
    /// Every tag up to this one has been seen.
    pub(super) prefix: u64,
    pub(super) seen_above: BTreeSet<u64>,
    pub(super) next_tag_n: u64,
}

pub(super) fn id_of(d: &lapin::message::Delivery) -> u64 {
    std::str::from_utf8(&d.data)
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("numeric body")
}

impl Driver {
    pub(super) fn total(&self) -> u32 {
        self.cons.iter().map(|c| c.count).sum()
    }

    pub(super) async fn setup_channel(&mut self) {
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

    pub(super) async fn set_global(&mut self, g: u32) {
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

    pub(super) async fn consume(&mut self, queue: usize, permanent: bool) {
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

    pub(super) fn allowed_global(&self) -> Option<u32> {
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

    pub(super) async fn on_delivery(&mut self, slot: usize, d: lapin::message::Delivery) {
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

    pub(super) fn record(&mut self, tag: u64, slot: usize, id: u64, how: How) {
        if self.transactional {
            self.tx_pending.push((slot, id, how));
            self.tx_tags.push((tag, slot, id));
        } else {
            self.applied(slot, id, how);
        }
    }

    pub(super) fn applied(&mut self, slot: usize, id: u64, how: How) {
        self.shared
            .note(id, format!("{} applied {how:?}", self.name));
        self.cons[slot].count -= 1;
        if how != How::Requeue {
            self.shared.settle(id);
        }
    }

    pub(super) async fn settle_one(&mut self, tag: u64, how: How) {
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
    pub(super) async fn settle_multiple(&mut self, tag: u64, how: How) {
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

    pub(super) async fn commit(&mut self) {
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

    pub(super) async fn rollback(&mut self) {
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

    pub(super) fn random_held(&mut self) -> Option<u64> {
        if self.held.is_empty() {
            return None;
        }
        let i = self.rng.gen_range(0..self.held.len());
        self.held.keys().nth(i).copied()
    }

    pub(super) async fn chaos_step(&mut self) {
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
    pub(super) async fn reopen(&mut self) {
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

    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<(u32, Ev)>) -> Driver {
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
