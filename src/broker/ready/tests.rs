//! The queue's storage against a reference model: random sequences of
//! push / deliver / ack / requeue / purge / restart must leave the same
//! visible queue as a plain sorted list would.

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
    let mut body = id.to_le_bytes().to_vec();
    body.resize(size.max(4), b'x');
    Arc::new(Message {
        exchange: Arc::from(""),
        routing_key: Arc::from("q"),
        properties: Bytes::from_static(&[0, 0]),
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
    /// seq → message, the ready set of the model.
    model_ready: BTreeMap<u64, (u32, Expected)>,
    unacked: Vec<(u64, u32, QueuedMessage)>,
}

impl Harness {
    fn new(durable: bool, window: u64, segment: u64) -> Harness {
        let store = store(window, segment);
        let dir = store.queue_path("q1");
        let log = durable.then(|| {
            (
                QueueLog::create(&dir, true, segment).expect("create log"),
                Default::default(),
            )
        });
        Harness {
            ready: ReadyMessages::new(store.clone(), log, None),
            store,
            dir,
            model_ready: BTreeMap::new(),
            unacked: Vec::new(),
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
            (Some(m), Some((seq, (id, exp)))) => {
                assert_eq!((m.seq, id_of(&m)), (seq, id), "head of queue");
                assert_eq!(m.redelivered, exp.delivered, "redelivered flag of {id}");
                if let Some(r) = m.disk {
                    self.ready.mark_delivered(r);
                }
                if std::env::var("MODEL_TRACE").is_ok() {
                    eprintln!(
                        "  popped {id} seq {seq} {:?} redelivered {}",
                        m.disk, m.redelivered
                    );
                }
                self.unacked.push((seq, id, m));
            }
            (got, want) => panic!("pop gave {:?}, model {want:?}", got.map(|m| id_of(&m))),
        }
    }

    fn restart(&mut self) {
        if let Some(log) = self.ready.log() {
            log.flush_for_sync(&mut Vec::new()).expect("flush");
        }
        // Unacked messages come back (as after a crash); transient ones
        // and everything of a transient queue are gone.
        for (seq, id, m) in self.unacked.drain(..) {
            self.model_ready.insert(
                seq,
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
        self.ready = ReadyMessages::new(self.store.clone(), Some((log, report)), None);
    }
}

fn run(seed: u64, ops: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut h = Harness::new(true, 4096, 4096);
    let mut next_id = 0u32;
    for step in 0..ops {
        let op = rng.gen_range(0..100);
        if std::env::var("MODEL_TRACE").is_ok() {
            eprintln!("seed {seed} step {step} op {op} len {}", h.ready.len());
        }
        match op {
            0..=39 => {
                let persistent = rng.gen_bool(0.8);
                let m = message(next_id, persistent, rng.gen_range(4..700));
                let seq = h.ready.next_seq;
                h.ready.push(m, None).expect("push");
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
                let (seq, id, m) = h.unacked.swap_remove(i);
                let persistent = m.message.persistent;
                h.ready.requeue(m);
                h.model_ready.insert(
                    seq,
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
        run(seed, 600);
    }
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
