//! Topology at scale, in a reduced form that a debug build runs in
//! seconds: a bind costs the same with 20,000 bindings on the exchange as
//! with none; closing a connection that owns thousands of exclusive
//! queues visits only their own bindings, not every binding in the vhost;
//! thousands of durable queues with messages keep the broker's open files
//! under `max_open_files`, do not stall another client while declared,
//! and all come back after a restart. (Full-size figures come from
//! `benches/topology.py`.)

mod common;
// Shared with tests/hostile.rs, which uses the rest of it.
#[allow(dead_code)]
#[path = "common/hostile.rs"]
mod hostile;

use std::time::{Duration, Instant};

use common::child::ChildBroker;
use common::raw::{self, Raw};
use common::{bounded, uniq, Broker};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// queue.declare of an exclusive, non-durable queue.
fn exclusive_declare(channel: u16, queue: &str) -> Vec<u8> {
    let mut a = 0u16.to_be_bytes().to_vec();
    a.extend(raw::shortstr(queue));
    a.push(0b0000_0100);
    a.extend_from_slice(&raw::EMPTY_TABLE);
    raw::method(channel, 50, 10, &a)
}

/// Send `frames` at once and wait for `n` answers `class.method`.
async fn pipelined(r: &mut Raw, frames: &[u8], n: usize, class: u16, method: u16) -> Duration {
    let started = Instant::now();
    r.send(frames).await;
    for _ in 0..n {
        r.expect_method(1, class, method).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn bind_cost_does_not_grow_with_the_bindings() {
    let _cpu = hostile::CPU.write().await;
    bounded(Duration::from_secs(60), async {
        let broker = Broker::start().await;
        let mut r = Raw::handshake(&broker).await;
        r.open_channel(1).await;
        let q = uniq("many-bindings");
        r.send(&raw::queue_declare(1, &q)).await;
        r.expect_method(1, 50, 11).await;
        const BATCH: usize = 2_000;
        const BATCHES: usize = 10;
        let mut times = Vec::new();
        for b in 0..BATCHES {
            let frames: Vec<u8> = (0..BATCH)
                .flat_map(|i| raw::queue_bind(1, &q, "amq.topic", &format!("k.{b}.{i}.#")))
                .collect();
            times.push(pipelined(&mut r, &frames, BATCH, 50, 21).await);
        }
        // The fastest of the first three batches against the fastest of
        // the last three: one slow batch on a busy machine says nothing.
        let first = times[..3].iter().min().copied().unwrap_or_default();
        let last = times[BATCHES - 3..]
            .iter()
            .min()
            .copied()
            .unwrap_or_default();
        println!("2,000 binds: first batches {first:?}, last (16,000+ bindings before) {last:?}");
        // A linear duplicate check makes the last batch ~10x the first.
        assert!(
            last < first * 3 + Duration::from_millis(200),
            "binds slowed down as bindings grew: {times:?}"
        );
        broker.stop().await;
    })
    .await
}

#[tokio::test]
async fn closing_a_connection_with_many_exclusive_queues_does_not_stall_others() {
    let _cpu = hostile::CPU.write().await;
    bounded(Duration::from_secs(60), async {
        let broker = Broker::start().await;
        // 20,000 bindings of other queues in the vhost.
        let mut other = Raw::handshake(&broker).await;
        other.open_channel(1).await;
        let kept = uniq("kept");
        other.send(&raw::queue_declare(1, &kept)).await;
        other.expect_method(1, 50, 11).await;
        let frames: Vec<u8> = (0..20_000)
            .flat_map(|i| raw::queue_bind(1, &kept, "amq.topic", &format!("other.{i}")))
            .collect();
        pipelined(&mut other, &frames, 20_000, 50, 21).await;
        // A connection owning 2,000 exclusive queues, each bound once.
        let mut owner = Raw::handshake(&broker).await;
        owner.open_channel(1).await;
        let prefix = uniq("excl");
        let mut frames = Vec::new();
        for i in 0..2_000 {
            let name = format!("{prefix}-{i}");
            frames.extend(exclusive_declare(1, &name));
            frames.extend(raw::queue_bind(1, &name, "amq.topic", &format!("own.{i}")));
        }
        owner.send(&frames).await;
        for _ in 0..2_000 {
            owner.expect_method(1, 50, 11).await;
            owner.expect_method(1, 50, 21).await;
        }
        // Close it, then time a topology operation of the other client.
        let mut close = 200u16.to_be_bytes().to_vec();
        close.extend(raw::shortstr("bye"));
        close.extend([0, 0, 0, 0]);
        owner.send(&raw::method(0, 10, 50, &close)).await;
        owner.expect_method(0, 10, 51).await;
        // The cleanup runs as the connection ends: sample for a second.
        let mut stalled = Duration::ZERO;
        for _ in 0..40 {
            let started = Instant::now();
            other.send(&raw::queue_declare(1, &uniq("after"))).await;
            other.expect_method(1, 50, 11).await;
            stalled = stalled.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        println!("slowest declare after the close: {stalled:?}");
        assert!(
            stalled < Duration::from_secs(2),
            "the exclusive queues' cleanup stalled the vhost for {stalled:?}"
        );
        broker.stop().await;
    })
    .await
}

/// With its descriptors used up, the broker refuses new clients at once
/// (they see the connection end instead of waiting unanswered) and keeps
/// accepting: once descriptors are free again, clients are served.
#[tokio::test]
async fn running_out_of_descriptors_refuses_clients_and_recovers() {
    bounded(Duration::from_secs(60), async {
        let data = std::env::temp_dir().join(uniq("warren-fds"));
        let config = data.with_extension("toml");
        std::fs::write(&config, "").expect("write config");
        let broker = ChildBroker::start(&data, &config);
        let limited = std::process::Command::new("prlimit")
            .arg(format!("--pid={}", broker.pid()))
            .arg("--nofile=64:64")
            .status();
        if !limited.is_ok_and(|s| s.success()) {
            println!("skipped: prlimit could not lower the child's descriptor limit");
            return;
        }
        let addr = format!("127.0.0.1:{}", broker.port);
        // Hold connections (each past the AMQP header) until refusals start.
        let mut held = Vec::new();
        let mut refused = 0;
        for _ in 0..120 {
            let mut s = TcpStream::connect(&addr).await.expect("connect");
            s.writable().await.expect("writable");
            let _ = s.try_write(b"AMQP\x00\x00\x09\x01");
            let mut buf = [0u8; 64];
            match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => held.push(s),
                Ok(_) => refused += 1,
                Err(_) => panic!("a client waited 2 s unanswered: accept stalled"),
            }
        }
        assert!(refused > 0, "the descriptor limit was never reached");
        assert!(!held.is_empty());
        println!("{} clients served, {refused} refused at once", held.len());
        held.clear();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let conn = common::child::connect(broker.port).await;
        let _ = conn.close(200, "bye".into()).await;
        assert!(broker.output().contains("out of file descriptors"));
        drop(broker);
        let _ = std::fs::remove_dir_all(&data);
        let _ = std::fs::remove_file(&config);
    })
    .await
}

/// Descriptors the process holds.
fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_durable_queues_keep_open_files_bounded_and_others_served() {
    let _cpu = hostile::CPU.write().await;
    const QUEUES: usize = 3_000;
    const BATCH: usize = 500;
    const MAX_OPEN_FILES: usize = 64;
    bounded(Duration::from_secs(120), async {
        let dir = common::disk::DataDir::new();
        let config = dir.write_config(&format!("max_open_files = {MAX_OPEN_FILES}\n"));
        let mut broker = ChildBroker::start(dir.path(), &config);
        let prober = hostile::Prober::start(broker.port).await;
        let mut w = hostile::Wire::login(broker.port).await;
        let prefix = uniq("durable");
        let name = |i: usize| format!("{prefix}-{i}");
        for start in (0..QUEUES).step_by(BATCH) {
            let mut frames = Vec::new();
            for i in start..start + BATCH {
                frames.extend(raw::durable_queue_declare(1, &name(i), false));
                frames.extend(raw::queue_bind(1, &name(i), "amq.topic", &name(i)));
                // One persistent message each, so each has files.
                frames.extend(raw::basic_publish(1, "", &name(i)));
                frames.extend(persistent_header(1));
                frames.extend(raw::frame(3, 1, b"m"));
            }
            w.send(&frames).await;
            for _ in 0..BATCH {
                w.expect_method(1, 50, 11).await;
                w.expect_method(1, 50, 21).await;
            }
        }
        let (slowest, samples) = prober.finish().await;
        let fds = open_descriptors(broker.pid());
        println!("{QUEUES} durable queues with a message: {fds} descriptors open; other client's slowest publish+get {slowest:?} ({samples} samples)");
        assert!(
            fds <= MAX_OPEN_FILES + 32,
            "{fds} descriptors open with max_open_files = {MAX_OPEN_FILES}"
        );
        assert!(
            slowest < Duration::from_secs(3),
            "another client waited {slowest:?} while durable queues were declared"
        );
        broker.terminate().await;
        let broker = ChildBroker::start(dir.path(), &config);
        let mut w = hostile::Wire::login(broker.port).await;
        let frames: Vec<u8> = (0..QUEUES)
            .flat_map(|i| raw::durable_queue_declare(1, &name(i), true))
            .collect();
        w.send(&frames).await;
        for i in 0..QUEUES {
            let args = w.expect_method(1, 50, 11).await;
            let count = raw::declare_ok_message_count(&args);
            assert_eq!(count, 1, "queue {} after the restart", name(i));
        }
    })
    .await
}

/// A content header of a 1-byte persistent message (delivery-mode 2).
fn persistent_header(channel: u16) -> Vec<u8> {
    let mut p = 60u16.to_be_bytes().to_vec();
    p.extend(0u16.to_be_bytes());
    p.extend(1u64.to_be_bytes());
    p.extend(0x1000u16.to_be_bytes());
    p.push(2);
    raw::frame(2, channel, &p)
}

/// Deleting a queue with a large backlog answers at once: its files are
/// unlinked in the background, off the locks, while other clients go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_queue_with_a_large_backlog_returns_at_once() {
    let _cpu = hostile::CPU.write().await;
    const BODY: usize = 64 * 1024;
    const MESSAGES: usize = 1_600; // 100 MiB
    bounded(Duration::from_secs(90), async {
        let broker = Broker::start_with(|c| {
            c.fsync = warren::config::Fsync::Never;
            c.segment_bytes = 1 << 20;
        })
        .await;
        let (_conn, ch) = broker.channel().await;
        let q = uniq("big-backlog");
        common::declare_durable(&ch, &q).await;
        common::confirm(&ch).await;
        common::publish_confirmed(&ch, &q, (0..MESSAGES).map(|i| vec![i as u8; BODY])).await;
        let queues = broker.data_dir.join("queues");
        let used = common::disk::disk_use(&queues);
        assert!(used > 90 << 20, "only {used} bytes on disk");
        let prober = hostile::Prober::start(broker.port).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let deleted = ch
            .queue_delete(q.as_str().into(), Default::default())
            .await
            .expect("queue.delete");
        let took = started.elapsed();
        let (slowest, _) = prober.finish().await;
        println!("deleting {MESSAGES} messages ({used} bytes): delete-ok after {took:?}; other client's slowest publish+get {slowest:?}");
        assert_eq!(deleted, MESSAGES as u32);
        assert!(took < Duration::from_secs(1), "queue.delete took {took:?}");
        assert!(slowest < Duration::from_secs(1), "another client waited {slowest:?}");
        common::disk::wait_for_disk_below(&queues, 1 << 20, Duration::from_secs(30)).await;
        broker.stop().await;
    })
    .await
}
