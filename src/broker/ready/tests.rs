//! The queue's storage against a reference model: random sequences of
//! push / deliver / ack / requeue / purge / restart must leave the same
//! visible queue as a plain sorted list would (sorted by priority level,
//! then sequence number).

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::ReadyMessages;
use crate::broker::message::{Message, QueuedMessage};
use crate::config::Config;
use crate::store::{QueueLog, Store};

fn store(window: u64, segment: u64) -> Arc<Store> {
    let cfg = Config {
        data_dir: std::env::temp_dir().join(format!("warren-model-{}", rand::random::<u64>())),
        queue_memory_bytes: window,
        segment_bytes: segment,
        fsync: crate::config::Fsync::Never,
        ..Default::default()
    };
    Arc::new(Store::open(&cfg).expect("open store"))
}

fn message(id: u32, persistent: bool, size: usize) -> Arc<Message> {
    with_priority(id, persistent, size, None)
}

/// A message with the priority property set (flag bit 11, one octet).
fn with_priority(id: u32, persistent: bool, size: usize, priority: Option<u8>) -> Arc<Message> {
    let mut body = id.to_le_bytes().to_vec();
    body.resize(size.max(4), b'x');
    let properties = match priority {
        Some(p) => Bytes::from(vec![0x08, 0, p]),
        None => Bytes::from_static(&[0, 0]),
    };
    Arc::new(Message {
        exchange: Arc::from(""),
        routing_key: Arc::from("q"),
        properties,
        body: Bytes::from(body),
        persistent,
        expiration_ms: None,
    })
}

fn id_of(m: &QueuedMessage) -> u32 {
    u32::from_le_bytes(m.message.body[..4].try_into().expect("4 bytes"))
}

/// What the model keeps per message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Expected {
    persistent: bool,
    delivered: bool,
}

struct Harness {
    store: Arc<Store>,
    dir: std::path::PathBuf,
    ready: ReadyMessages,
    /// (level, seq) → message, the ready set of the model.
    model_ready: BTreeMap<Key, (u32, Expected)>,
    unacked: Vec<(Key, u32, QueuedMessage)>,
    max_priority: Option<u8>,
}

/// Delivery order: higher levels first, then sequence number.
type Key = (Reverse<u8>, u64);

impl Harness {
    fn new(durable: bool, window: u64, segment: u64) -> Harness {
        Self::with_levels(durable, window, segment, None)
    }

    fn with_levels(durable: bool, window: u64, segment: u64, max: Option<u8>) -> Harness {
        let store = store(window, segment);
        let dir = store.queue_path("q1");
        let log = durable.then(|| {
            (
                QueueLog::create(&dir, true, segment).expect("create log"),
                Default::default(),
            )
        });
        Harness {
            ready: ReadyMessages::new(store.clone(), log, max).expect("ready"),
            store,
            dir,
            model_ready: BTreeMap::new(),
            unacked: Vec::new(),
            max_priority: max,
        }
    }

    fn check_len(&self) {
        assert_eq!(self.ready.len(), self.model_ready.len());
    }

    fn pop(&mut self) {
        let got = self.ready.pop();
        let want = self.model_ready.pop_first();
        match (got, want) {
            (None, None) => {}
            (Some(m), Some((key, (id, exp)))) => {
                assert_eq!((m.seq, id_of(&m)), (key.1, id), "head of queue");
                assert_eq!(m.redelivered, exp.delivered, "redelivered flag of {id}");
                if let Some(r) = m.disk {
                    self.ready.mark_delivered(r);
                }
                if std::env::var("MODEL_TRACE").is_ok() {
                    eprintln!(
                        "  popped {id} key {key:?} {:?} redelivered {}",
                        m.disk, m.redelivered
                    );
                }
                self.unacked.push((key, id, m));
            }
            (got, want) => panic!("pop gave {:?}, model {want:?}", got.map(|m| id_of(&m))),
        }
    }

    fn restart(&mut self) {
        self.ready.flush_for_sync(&mut Vec::new()).expect("flush");
        // Unacked messages come back (as after a crash); transient ones
        // and everything of a transient queue are gone.
        for (key, id, m) in self.unacked.drain(..) {
            self.model_ready.insert(
                key,
                (
                    id,
                    Expected {
                        persistent: m.message.persistent,
                        delivered: true,
                    },
                ),
            );
        }
        self.model_ready.retain(|_, (_, e)| e.persistent);
        let (log, report) =
            QueueLog::recover(&self.dir, self.store.segment_bytes).expect("recover");
        assert_eq!(report.corrupt_records + report.torn_tails, 0);
        let max = self.max_priority;
        self.ready =
            ReadyMessages::new(self.store.clone(), Some((log, report)), max).expect("ready");
    }
}

fn run(seed: u64, ops: usize, max: Option<u8>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut h = Harness::with_levels(true, 4096, 4096, max);
    let mut next_id = 0u32;
    for step in 0..ops {
        let op = rng.gen_range(0..100);
        if std::env::var("MODEL_TRACE").is_ok() {
            eprintln!("seed {seed} step {step} op {op} len {}", h.ready.len());
        }
        match op {
            0..=39 => {
                let persistent = rng.gen_bool(0.8);
                // Priorities above the maximum count as the maximum.
                let priority = max.map(|m| rng.gen_range(0..=m.saturating_add(1)));
                let level = priority.zip(max).map_or(0, |(p, m)| p.min(m));
                let size = rng.gen_range(4..700);
                let m = with_priority(next_id, persistent, size, priority);
                let seq = (Reverse(level), h.ready.next_seq);
                let r = h.ready.push(m, None).expect("push");
                if std::env::var("MODEL_TRACE").is_ok() {
                    eprintln!("  pushed {next_id} key {seq:?} {r:?}");
                }
                let expected = Expected {
                    persistent,
                    delivered: false,
                };
                h.model_ready.insert(seq, (next_id, expected));
                next_id += 1;
            }
            40..=64 => h.pop(),
            65..=79 if !h.unacked.is_empty() => {
                let i = rng.gen_range(0..h.unacked.len());
                let (_, _, m) = h.unacked.swap_remove(i);
                if let Some(r) = m.disk {
                    h.ready.settle(r);
                }
                h.ready.flush_acks();
            }
            80..=91 if !h.unacked.is_empty() => {
                let i = rng.gen_range(0..h.unacked.len());
                let (key, id, m) = h.unacked.swap_remove(i);
                let persistent = m.message.persistent;
                h.ready.requeue(m);
                h.model_ready.insert(
                    key,
                    (
                        id,
                        Expected {
                            persistent,
                            delivered: true,
                        },
                    ),
                );
            }
            92..=93 => {
                let n = h.ready.purge();
                assert_eq!(n, h.model_ready.len());
                h.model_ready.clear();
            }
            _ => h.restart(),
        }
        h.check_len();
    }
    h.restart();
    while !h.model_ready.is_empty() {
        h.pop();
    }
    assert!(h.ready.pop().is_none());
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.store.close();
        let _ = std::fs::remove_dir_all(self.store.data_dir());
    }
}

#[test]
fn storage_matches_the_model_over_random_runs() {
    for seed in 0..24 {
        run(seed, 600, None);
    }
}

#[test]
fn priority_levels_match_the_model_over_random_runs() {
    for seed in 0..24 {
        run(seed, 600, Some([1, 3, 9][seed as usize % 3]));
    }
}

#[test]
fn priority_levels_page_to_disk() {
    // 10 levels share a 1 MiB window: at most ~100 KiB each in memory.
    let mut h = Harness::with_levels(false, 1 << 20, 1 << 20, Some(9));
    for i in 0..2000u32 {
        let priority = Some((i % 10) as u8);
        h.ready
            .push(with_priority(i, false, 4000, priority), None)
            .expect("push");
    }
    assert_eq!(h.ready.len(), 2000);
    assert!(
        h.ready.in_memory() < 300,
        "{} in memory",
        h.ready.in_memory()
    );
    let got: Vec<u32> = std::iter::from_fn(|| h.ready.pop())
        .map(|m| id_of(&m))
        .collect();
    let mut want: Vec<u32> = (0..2000).collect();
    want.sort_by_key(|i| (Reverse(i % 10), *i));
    assert_eq!(got, want);
}

#[test]
fn transient_queue_spills_and_reads_back_in_order() {
    let mut h = Harness::new(false, 4096, 4096);
    for i in 0..500 {
        h.ready.push(message(i, false, 300), None).expect("push");
    }
    assert!(h.ready.in_memory() < 20, "window bounds memory");
    assert_eq!(h.ready.len(), 500);
    let ids: Vec<u32> = std::iter::from_fn(|| h.ready.pop())
        .map(|m| id_of(&m))
        .collect();
    assert_eq!(ids, (0..500).collect::<Vec<_>>());
}

#[test]
fn requeue_restores_original_position() {
    let mut h = Harness::new(false, 1 << 20, 1 << 20);
    for i in 0..4 {
        h.ready.push(message(i, false, 8), None).expect("push");
    }
    let a = h.ready.pop().unwrap();
    let b = h.ready.pop().unwrap();
    let c = h.ready.pop().unwrap();
    h.ready.requeue(c);
    h.ready.requeue(a);
    h.ready.requeue(b);
    let order: Vec<_> = std::iter::from_fn(|| h.ready.pop())
        .map(|m| (id_of(&m), m.redelivered))
        .collect();
    assert_eq!(order, vec![(0, true), (1, true), (2, true), (3, false)]);
}

#[test]
fn drained_durable_queue_gives_its_disk_back() {
    let mut h = Harness::new(true, 4096, 4096);
    for i in 0..400 {
        h.ready.push(message(i, true, 500), None).expect("push");
    }
    while let Some(m) = h.ready.pop() {
        if let Some(r) = m.disk {
            h.ready.settle(r);
        }
    }
    h.ready.flush_acks();
    let used: u64 = std::fs::read_dir(&h.dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(used < 4096 * 2, "{used} bytes left after draining");
}

#[test]
fn single_log_priority_queue_of_earlier_versions_is_read_back_in_order() {
    // Earlier versions wrote every level to the queue directory's own log.
    let store = store(1 << 20, 1 << 20);
    let dir = store.queue_path("q1");
    let mut log = QueueLog::create(&dir, true, 1 << 20).expect("create log");
    for i in 0..6u32 {
        let m = with_priority(i, true, 16, Some((i % 3) as u8));
        log.append(u64::from(i), None, &m, true, false)
            .expect("append");
    }
    log.flush_for_sync(&mut Vec::new()).expect("flush");
    drop(log);
    let reopen = || {
        let recovered = QueueLog::recover(&dir, 1 << 20).expect("recover");
        ReadyMessages::new(store.clone(), Some(recovered), Some(2)).expect("ready")
    };
    let mut ready = reopen();
    let first = ready.pop().expect("a message");
    assert_eq!(id_of(&first), 2, "highest priority first");
    ready.settle(first.disk.expect("stored"));
    ready
        .push(with_priority(6, true, 16, Some(2)), None)
        .expect("push");
    ready.flush_for_sync(&mut Vec::new()).expect("flush");
    drop(ready);
    let mut ready = reopen();
    let order: Vec<u32> = std::iter::from_fn(|| ready.pop())
        .map(|m| id_of(&m))
        .collect();
    assert_eq!(order, [5, 6, 1, 4, 0, 3]);
    store.close();
    let _ = std::fs::remove_dir_all(store.data_dir());
}
