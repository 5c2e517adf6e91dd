//! A full disk, end to end: the `warren` binary runs as a child process
//! with its data directory on a small tmpfs that also holds a filler file.
//! Persistent messages are published with confirms to a durable queue until
//! the disk is full: from then on publishes are nacked. The filler is
//! deleted, and without a restart new publishes must be confirmed again
//! within a few seconds. After a restart every confirmed message must be
//! there exactly once (a nacked one may be there or not, at most once).
//!
//! Needs root (mount); skipped, with the reason printed, when the tmpfs
//! cannot be mounted. The tmpfs is always unmounted.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::child::{connect, ChildBroker};
use common::{bounded, declare_durable, passive_declare, persistent, uniq};
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Connection};
use tokio_stream::StreamExt;

/// Size of the file system under the data directory.
const TMPFS_SIZE: &str = "64m";
/// Freed once the disk is full: room for the held writes and more.
const FILLER_BYTES: usize = 16 << 20;
/// Message bodies: an 8-byte index, then a byte pattern.
const BODY_BYTES: usize = 64 * 1024;
/// Publishes awaiting their confirms at once while filling.
const BATCH: u64 = 16;
/// More than the file system can hold.
const MAX_PUBLISHES: u64 = 2000;
/// How long publishers may stay refused after space is back.
const RECOVERY_BOUND: Duration = Duration::from_secs(5);
const QUEUE: &str = "filling";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_nacks_publishers_until_space_is_freed_and_loses_nothing_confirmed() {
    if let Some(tmpfs) = Tmpfs::mount(TMPFS_SIZE) {
        // The broker lives in the future: a failure or the time bound
        // drops (kills) it before the tmpfs is unmounted.
        bounded(Duration::from_secs(30), fill_free_restart(&tmpfs)).await;
    }
}

/// Small segments, so that segments are rolled near the full disk too.
/// `disk_free_limit = 0`: the disk alarm would otherwise block publishers
/// long before the disk is full.
const CONFIG: &str = "segment_bytes = 1048576\ndisk_free_limit = 0\n";

/// A broker on the tmpfs beside a filler file, and a confirm channel with
/// the durable queue declared.
async fn start_beside_filler(tmpfs: &Tmpfs) -> (ChildBroker, Connection, Channel, PathBuf) {
    let filler = tmpfs.dir.join("filler");
    std::fs::write(&filler, vec![0x5a; FILLER_BYTES]).expect("write the filler file");
    let config = tmpfs.config_path();
    std::fs::write(&config, CONFIG).expect("write the config file");
    let broker = ChildBroker::start(&tmpfs.dir.join("data"), &config);
    let conn = connect(broker.port).await;
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    declare_durable(&ch, QUEUE).await;
    // Declared but never written to: its directory and first segment are
    // created by the first write, which meets the full disk.
    declare_durable(&ch, FRESH).await;
    (broker, conn, ch, filler)
}

/// A queue that gets its first message while the disk is full.
const FRESH: &str = "fresh";

/// Publish one persistent message to `queue`: whether it was confirmed.
async fn publish_one(ch: &Channel, queue: &str) -> bool {
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        b"first",
        persistent(),
    )
    .await
    .expect("publish")
    .await
    .expect("confirm")
    .is_ack()
}

async fn fill_free_restart(tmpfs: &Tmpfs) {
    let (mut broker, conn, ch, filler) = start_beside_filler(tmpfs).await;
    let data = tmpfs.dir.join("data");
    let config = tmpfs.config_path();

    let mut log = Outcomes::default();
    let mut next = fill_until_full(&ch, &mut log).await;
    // While the disk is full every persistent publish is nacked.
    let refused = next..next + 5;
    next += 5;
    log.publish_batch(&ch, refused.clone()).await;
    let acked_while_full: Vec<_> = log.acked.range(refused).collect();
    assert!(
        acked_while_full.is_empty(),
        "confirmed while full: {acked_while_full:?}"
    );
    // Creating a queue's first files on a full disk is a full disk too,
    // retried (it once failed the store until a restart).
    assert!(!publish_one(&ch, FRESH).await, "confirmed while full");

    std::fs::remove_file(&filler).expect("delete the filler file");
    let freed = Instant::now();
    let resumed = loop {
        let before = log.acked.len();
        log.publish_batch(&ch, next..next + 1).await;
        next += 1;
        if log.acked.len() > before {
            break freed.elapsed();
        }
        assert!(
            freed.elapsed() < RECOVERY_BOUND,
            "publishes still nacked {RECOVERY_BOUND:?} after space was freed; output:\n{}",
            broker.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        publish_one(&ch, FRESH).await,
        "the queue first written on the full disk still refuses; output:\n{}",
        broker.output()
    );
    let after = next..next + 20;
    log.publish_batch(&ch, after.clone()).await;
    assert_eq!(
        log.acked.range(after).count(),
        20,
        "not every publish after recovery was confirmed"
    );
    println!(
        "{} confirmed, {} nacked; confirms resumed {resumed:?} after space was freed",
        log.acked.len(),
        log.nacked.len()
    );
    broker.log_line(|l| l.contains("out of disk space")).await;
    broker.assert_no_panic();
    let _ = conn.close(200, "bye".into()).await;
    let status = broker.terminate().await;
    assert!(
        status.success(),
        "warren exited with {status}; output:\n{}",
        broker.output()
    );
    drop(broker);

    let broker = ChildBroker::start(&data, &config);
    let found = drain(broker.port).await;
    check_after_restart(&log, &found);
    // The failed writes left no fragments for recovery to step over.
    let output = broker.output();
    assert!(
        !output.contains("corrupt record") && !output.contains("torn record"),
        "recovery found damage; output:\n{output}"
    );
    broker.assert_no_panic();
}

/// Publish until the disk is full; returns the next index. Near the end
/// acks and nacks may alternate (a smaller write may still fit where a
/// larger one did not); a batch nacked whole means full.
async fn fill_until_full(ch: &Channel, log: &mut Outcomes) -> u64 {
    let mut next = 0;
    loop {
        assert!(
            next < MAX_PUBLISHES,
            "{next} publishes and the disk is not full"
        );
        let batch = next..next + BATCH;
        next += BATCH;
        log.publish_batch(ch, batch.clone()).await;
        if log.acked.range(batch).next().is_none() {
            return next;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_held_up_by_a_full_disk_resumes_when_space_is_freed() {
    if let Some(tmpfs) = Tmpfs::mount(TMPFS_SIZE) {
        bounded(Duration::from_secs(30), fill_consume_free(&tmpfs)).await;
    }
}

/// Messages whose records could not be written yet cannot be read back
/// for a consumer while the disk is full; once space is back the consumer
/// must get them without anyone publishing again.
async fn fill_consume_free(tmpfs: &Tmpfs) {
    let (broker, _conn, ch, filler) = start_beside_filler(tmpfs).await;
    let mut log = Outcomes::default();
    fill_until_full(&ch, &mut log).await;
    // Nacked messages may be queued too (their records wait in memory for
    // room): the consumer must get every one the queue holds.
    let queued = passive_declare(&ch, QUEUE)
        .await
        .expect("passive declare")
        .message_count() as usize;
    assert!(queued >= log.acked.len());

    let consumer = connect(broker.port).await;
    let cch = consumer.create_channel().await.expect("channel");
    let mut deliveries = cch
        .basic_consume(
            QUEUE.into(),
            "".into(),
            Default::default(),
            Default::default(),
        )
        .await
        .expect("basic.consume");
    let mut received = BTreeSet::new();
    let mut freed: Option<Instant> = None;
    while received.len() < queued {
        let wait = tokio::time::timeout(Duration::from_millis(500), deliveries.next()).await;
        match wait {
            Ok(Some(Ok(d))) => {
                // Not acked: settling would delete segments and so free
                // space itself.
                received.insert(u64::from_le_bytes(d.data[..8].try_into().expect("8 bytes")));
            }
            Ok(other) => panic!("consumer ended: {other:?}"),
            // Held up: now free the space (once), and publish nothing.
            Err(_) if freed.is_none() => {
                std::fs::remove_file(&filler).expect("delete the filler file");
                freed = Some(Instant::now());
            }
            Err(_) => {}
        }
        if let Some(t) = freed {
            assert!(
                t.elapsed() < RECOVERY_BOUND,
                "{} of {queued} queued messages not delivered {RECOVERY_BOUND:?} after space was freed; output:\n{}",
                queued - received.len(),
                broker.output()
            );
        }
    }
    assert!(log.acked.iter().all(|i| received.contains(i)));
    println!(
        "{} delivered ({} confirmed); space freed {}",
        received.len(),
        log.acked.len(),
        match freed {
            Some(_) => "while the consumer was held up",
            None => "never: the consumer was not held up",
        }
    );
    broker.assert_no_panic();
}

/// What the confirms said, by message index.
#[derive(Default)]
struct Outcomes {
    acked: BTreeSet<u64>,
    nacked: BTreeSet<u64>,
}

impl Outcomes {
    /// Publish messages `range` at once, then wait for their confirms.
    async fn publish_batch(&mut self, ch: &Channel, range: std::ops::Range<u64>) {
        let mut pending = Vec::new();
        for i in range {
            let confirm = ch
                .basic_publish(
                    "".into(),
                    QUEUE.into(),
                    BasicPublishOptions::default(),
                    &body(i),
                    persistent(),
                )
                .await
                .expect("publish");
            pending.push((i, confirm));
        }
        for (i, confirm) in pending {
            match confirm.await.expect("confirm").is_ack() {
                true => self.acked.insert(i),
                false => self.nacked.insert(i),
            };
        }
    }
}

fn body(i: u64) -> Vec<u8> {
    let mut b = i.to_le_bytes().to_vec();
    b.resize(BODY_BYTES, (i % 251) as u8);
    b
}

/// Take every message off the queue: how many times each index came back.
async fn drain(port: u16) -> BTreeMap<u64, usize> {
    let conn = connect(port).await;
    let ch = conn.create_channel().await.expect("channel");
    let mut found = BTreeMap::new();
    let options = BasicGetOptions { no_ack: true };
    while let Some(m) = ch
        .basic_get(QUEUE.into(), options)
        .await
        .expect("basic.get")
    {
        let data = &m.delivery.data;
        let index = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
        assert!(data == &body(index), "message {index} came back damaged");
        *found.entry(index).or_insert(0) += 1;
    }
    let _ = conn.close(200, "bye".into()).await;
    found
}

fn check_after_restart(log: &Outcomes, found: &BTreeMap<u64, usize>) {
    let lost: Vec<_> = log
        .acked
        .iter()
        .filter(|i| !found.contains_key(i))
        .collect();
    assert!(lost.is_empty(), "confirmed messages lost: {lost:?}");
    let twice: Vec<_> = found.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "messages back more than once: {twice:?}");
    let unknown: Vec<_> = found
        .keys()
        .filter(|i| !log.acked.contains(i) && !log.nacked.contains(i))
        .collect();
    assert!(unknown.is_empty(), "messages never published: {unknown:?}");
    let nacked_back = found.keys().filter(|i| log.nacked.contains(i)).count();
    println!(
        "after the restart: {} messages, {nacked_back} of them nacked ones",
        found.len()
    );
}

/// A tmpfs mounted on a fresh directory; unmounted and removed on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// None (with the reason printed) when it cannot be mounted.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = std::env::temp_dir().join(uniq("warren-tmpfs"));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("skipping: cannot create {}: {e}", dir.display());
            return None;
        }
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Tmpfs { dir }),
            Ok(out) => {
                let why = String::from_utf8_lossy(&out.stderr);
                eprintln!(
                    "skipping: cannot mount a tmpfs (needs root): {}",
                    why.trim()
                );
                let _ = std::fs::remove_dir(&dir);
                None
            }
            Err(e) => {
                eprintln!("skipping: cannot run mount: {e}");
                let _ = std::fs::remove_dir(&dir);
                None
            }
        }
    }

    /// Beside the mount point, not on the tmpfs.
    fn config_path(&self) -> PathBuf {
        PathBuf::from(format!("{}.toml", self.dir.display()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.config_path());
        // A killed child may take a moment to let go of its files.
        for _ in 0..50 {
            let out = Command::new("umount").arg(&self.dir).output();
            if out.is_ok_and(|o| o.status.success()) {
                let _ = std::fs::remove_dir(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}
