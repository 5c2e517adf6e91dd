//! Topology at scale, in a reduced form that a debug build runs in
//! seconds: a bind costs the same with 20,000 bindings on the exchange as
//! with none, and closing a connection that owns thousands of exclusive
//! queues visits only their own bindings, not every binding in the vhost.
//! (Full-size figures come from benchmarks.)

mod common;

use std::time::{Duration, Instant};

use common::child::ChildBroker;
use common::raw::{self, Raw};
use common::{bounded, uniq, Broker};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// queue.bind of `queue` to `exchange` with `key` (no arguments).
fn queue_bind(channel: u16, queue: &str, exchange: &str, key: &str) -> Vec<u8> {
    let mut a = 0u16.to_be_bytes().to_vec();
    a.extend(raw::shortstr(queue));
    a.extend(raw::shortstr(exchange));
    a.extend(raw::shortstr(key));
    a.push(0);
    a.extend_from_slice(&raw::EMPTY_TABLE);
    raw::method(channel, 50, 20, &a)
}

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
                .flat_map(|i| queue_bind(1, &q, "amq.topic", &format!("k.{b}.{i}.#")))
                .collect();
            times.push(pipelined(&mut r, &frames, BATCH, 50, 21).await);
        }
        let (first, last) = (times[0], times[BATCHES - 1]);
        println!("2,000 binds: first batch {first:?}, last (18,000 bindings before) {last:?}");
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
    bounded(Duration::from_secs(60), async {
        let broker = Broker::start().await;
        // 20,000 bindings of other queues in the vhost.
        let mut other = Raw::handshake(&broker).await;
        other.open_channel(1).await;
        let kept = uniq("kept");
        other.send(&raw::queue_declare(1, &kept)).await;
        other.expect_method(1, 50, 11).await;
        let frames: Vec<u8> = (0..20_000)
            .flat_map(|i| queue_bind(1, &kept, "amq.topic", &format!("other.{i}")))
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
            frames.extend(queue_bind(1, &name, "amq.topic", &format!("own.{i}")));
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
            stalled < Duration::from_millis(500),
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
