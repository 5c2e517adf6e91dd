//! The metadata log over TCP: pipelined durable declares and binds are
//! answered only once durable, and every answered one is there after a
//! kill -9 (during declare and bind storms and, with a tiny
//! `metadata_log_bytes`, during compactions), exactly once; a damaged
//! entry is skipped with a log line instead of stopping the start.

mod common;
// Shared with tests/hostile.rs, which uses the rest of it.
#[allow(dead_code)]
#[path = "common/hostile.rs"]
mod hostile;

use std::collections::BTreeSet;
use std::time::Duration;

use common::child::ChildBroker;
use common::disk::DataDir;
use common::raw::{self, method, shortstr};
use common::{bounded, uniq};
use hostile::Wire;
use rand::Rng;

/// Queues (each with one binding) a storm declares before it is killed.
const STORM: usize = 1_500;
/// Kill-and-restart cycles.
const CYCLES: usize = 3;

fn config(dir: &DataDir) -> std::path::PathBuf {
    // A tiny log limit: the storm compacts many times, so kills land in
    // compactions too.
    dir.write_config("fsync = \"always\"\nmetadata_log_bytes = 4096\n")
}

/// Declare `STORM` queues with a binding each, pipelined in batches, and
/// count the answers until the broker is killed (after a random number of
/// them): how many declare-oks and bind-oks arrived.
async fn storm_until_killed(broker: &mut ChildBroker, prefix: &str) -> (usize, usize) {
    const BATCH: usize = 100;
    let mut w = Wire::login(broker.port).await;
    let kill_after = rand::thread_rng().gen_range(STORM / 2..STORM * 2);
    let (mut declared, mut bound) = (0, 0);
    'storm: for start in (0..STORM).step_by(BATCH) {
        let frames: Vec<u8> = (start..start + BATCH)
            .flat_map(|i| {
                let q = format!("{prefix}-{i}");
                let mut f = raw::durable_queue_declare(1, &q, false);
                f.extend(raw::queue_bind(
                    1,
                    &q,
                    "amq.topic",
                    &format!("{prefix}.{i}"),
                ));
                f
            })
            .collect();
        w.send(&frames).await;
        for _ in 0..2 * BATCH {
            if declared + bound >= kill_after {
                break 'storm;
            }
            match w.next().await.method() {
                Some((50, 11)) => declared += 1,
                Some((50, 21)) => bound += 1,
                other => panic!("unexpected answer {other:?}"),
            }
        }
    }
    broker.kill();
    (declared, bound)
}

/// After a restart: every answered queue exists and its binding routes to
/// it exactly once.
async fn check_answered(port: u16, prefix: &str, declared: usize, bound: usize) {
    let mut w = Wire::login(port).await;
    let frames: Vec<u8> = (0..declared)
        .flat_map(|i| raw::durable_queue_declare(1, &format!("{prefix}-{i}"), true))
        .collect();
    w.send(&frames).await;
    for i in 0..declared {
        let f = w.next().await;
        assert!(
            f.is(1, 50, 11),
            "queue {prefix}-{i} was declared (declare-ok sent) but is gone after kill -9: {:?}",
            f.method()
        );
    }
    // Route one message per answered binding (a sample, to stay quick)
    // and count what arrives.
    let mut sample: BTreeSet<usize> = (0..bound).rev().take(50).collect();
    let mut rng = rand::thread_rng();
    while bound > 0 && sample.len() < bound.min(150) {
        sample.insert(rng.gen_range(0..bound));
    }
    for &i in &sample {
        let q = format!("{prefix}-{i}");
        w.send(&raw::basic_publish(
            1,
            "amq.topic",
            &format!("{prefix}.{i}"),
        ))
        .await;
        w.send(&raw::content_header(1, 1)).await;
        w.send(&raw::frame(3, 1, b"x")).await;
        w.send(&raw::durable_queue_declare(1, &q, true)).await;
        let args = w.expect_method(1, 50, 11).await;
        let count = raw::declare_ok_message_count(&args);
        assert_eq!(
            count, 1,
            "binding of {q} (bind-ok sent) routed {count} copies after kill -9"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_declares_and_binds_survive_kill_9_during_storms_and_compactions() {
    bounded(Duration::from_secs(120), async {
        let dir = DataDir::new();
        let config = config(&dir);
        let mut history: Vec<(String, usize, usize)> = Vec::new();
        let mut compactions = 0;
        for cycle in 0..CYCLES {
            let mut broker = ChildBroker::start(dir.path(), &config);
            for (prefix, declared, bound) in &history {
                check_answered(broker.port, prefix, *declared, *bound).await;
            }
            broker.assert_no_panic();
            let prefix = uniq(&format!("storm{cycle}"));
            let (declared, bound) = storm_until_killed(&mut broker, &prefix).await;
            compactions += broker.output().matches("metadata compacted").count();
            println!(
                "cycle {cycle}: {declared} declares and {bound} binds answered before kill -9"
            );
            assert!(declared > 0, "no declare was answered");
            history.push((prefix, declared, bound));
        }
        let broker = ChildBroker::start(dir.path(), &config);
        for (prefix, declared, bound) in &history {
            check_answered(broker.port, prefix, *declared, *bound).await;
        }
        println!("compactions during the storms: {compactions}");
        assert!(compactions > 0, "no compaction ran during the storms");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_metadata_entry_is_skipped_and_logged() {
    bounded(Duration::from_secs(60), async {
        let dir = DataDir::new();
        let config = dir.write_config("fsync = \"always\"\n");
        let mut broker = ChildBroker::start(dir.path(), &config);
        let mut w = Wire::login(broker.port).await;
        for q in ["keep-a", "damaged-b", "keep-c"] {
            w.send(&raw::durable_queue_declare(1, q, false)).await;
            w.expect_method(1, 50, 11).await;
        }
        broker.terminate().await;
        let meta = dir.path().join("meta");
        let log = std::fs::read_dir(&meta)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "log"))
            .expect("a metadata log");
        let mut bytes = std::fs::read(&log).unwrap();
        let at = bytes
            .windows(9)
            .position(|w| w == b"damaged-b")
            .expect("the entry in the log");
        bytes[at] = b'D';
        std::fs::write(&log, &bytes).unwrap();
        let broker = ChildBroker::start(dir.path(), &config);
        let mut w = Wire::login(broker.port).await;
        for q in ["keep-a", "keep-c"] {
            w.send(&raw::durable_queue_declare(1, q, true)).await;
            w.expect_method(1, 50, 11).await;
        }
        w.send(&raw::durable_queue_declare(1, "damaged-b", true))
            .await;
        w.expect_method(1, 20, 40).await; // 404: skipped
        assert!(
            broker
                .output()
                .contains("skipping a damaged metadata entry"),
            "no log line for the damaged entry:\n{}",
            broker.output()
        );
    })
    .await
}

/// A client that pipelines durable declares and closes right behind them
/// gets every declare-ok, then the Close-Ok: held replies go out before
/// the connection ends, and nothing is encoded after the Close-Ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declares_pipelined_with_a_close_are_all_answered_before_close_ok() {
    bounded(Duration::from_secs(60), async {
        let dir = DataDir::new();
        let config = dir.write_config("fsync = \"always\"\n");
        let broker = ChildBroker::start(dir.path(), &config);
        let mut w = Wire::login(broker.port).await;
        let prefix = uniq("closing");
        let mut frames: Vec<u8> = (0..500)
            .flat_map(|i| raw::durable_queue_declare(1, &format!("{prefix}-{i}"), false))
            .collect();
        let mut close = 200u16.to_be_bytes().to_vec();
        close.extend(shortstr("bye"));
        close.extend([0, 0, 0, 0]);
        frames.extend(method(0, 10, 50, &close));
        w.send(&frames).await;
        for i in 0..500 {
            let f = w.next().await;
            assert!(f.is(1, 50, 11), "answer {i}: {:?}", f.method());
        }
        w.expect_method(0, 10, 51).await;
        assert!(w.next_opt().await.is_none(), "a frame after Close-Ok");
    })
    .await
}
