//! Replay of a long stream by the `warren` binary: a million messages are
//! published with confirms; a reader from `first` gets every one in order;
//! a reader from a timestamp gets only the later half; a reader with a
//! tracked offset is cut off by a kill -9 of the broker, reconnects with
//! the same tag after the restart and resumes with no gap (duplicates only
//! within its unacked window, counted and printed).
//! `WARREN_REPLAY_MESSAGES` changes the count.

mod common;

use std::time::{Duration, Instant};

use common::child::{connect, ChildBroker};
use common::disk::DataDir;
use common::{bounded, table};
use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, Consumer};

const STREAM: &str = "replay";
const PREFETCH: u16 = 500;
/// Acks go out once per this many deliveries (multiple=true).
const ACK_EVERY: u64 = 100;

fn count() -> u64 {
    std::env::var("WARREN_REPLAY_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn body(i: u64) -> Vec<u8> {
    let mut b = i.to_be_bytes().to_vec();
    b.resize(32, 0x5a);
    b
}

fn index(data: &[u8]) -> u64 {
    u64::from_be_bytes(data[..8].try_into().expect("8-byte index"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_messages_replay_by_offset_time_and_tracked_offset() {
    bounded(Duration::from_secs(420), replay()).await
}

async fn replay() {
    let n = count();
    let dir = DataDir::new();
    let config = dir.write_config("");
    let mut broker = ChildBroker::start(dir.path(), &config);
    let conn = connect(broker.port).await;
    let ch = conn.create_channel().await.unwrap();
    let args = table(&[
        ("x-queue-type", AMQPValue::LongString("stream".into())),
        (
            "x-stream-max-segment-size-bytes",
            AMQPValue::LongLongInt(4_000_000),
        ),
    ]);
    ch.queue_declare(STREAM.into(), common::durable(), args)
        .await
        .unwrap();
    let started = Instant::now();
    publish(&conn, 0, n / 2).await;
    // The later half starts in a new second (stream timestamps are seconds).
    let cut = common::next_second().await;
    publish(&conn, n / 2, n - n / 2).await;
    eprintln!("published {n} in {:?}", started.elapsed());

    let started = Instant::now();
    let (from_first, from_time) = tokio::join!(
        read_all(&conn, offset("first"), "", n),
        read_all(
            &conn,
            table(&[("x-stream-offset", AMQPValue::Timestamp(cut))]),
            "",
            n - n / 2
        ),
    );
    assert_eq!(
        from_first,
        (0, n, 0),
        "from first: first index, count, out of order"
    );
    assert_eq!(from_time, (n / 2, n - n / 2, 0), "from the timestamp");
    eprintln!(
        "two readers read {} in {:?}",
        n + n - n / 2,
        started.elapsed()
    );

    // The tracked reader: killed at about a third, then resumed.
    let seen = tracked_until(&conn, n / 3).await;
    broker.kill();
    let mut broker = ChildBroker::start(dir.path(), &config);
    let conn = connect(broker.port).await;
    let resumed = tracked_rest(&conn, n).await;
    let first_after = resumed
        .first()
        .copied()
        .expect("resumed reader got messages");
    let dups = seen.saturating_sub(first_after);
    eprintln!(
        "tracked reader: {seen} before the kill, resumed at {first_after}: {dups} duplicates"
    );
    assert!(
        first_after <= seen,
        "no gap: resumed at {first_after}, had {seen}"
    );
    assert!(
        dups <= u64::from(PREFETCH) + ACK_EVERY,
        "duplicates only in the unacked window: {dups}"
    );
    let expected: Vec<u64> = (first_after..n).collect();
    assert!(
        resumed == expected,
        "every index after the resume point, once, in order"
    );
    let _ = broker.terminate().await;
    broker.assert_no_panic();
}

fn offset(v: &str) -> FieldTable {
    table(&[("x-stream-offset", AMQPValue::LongString(v.into()))])
}

/// Publish `count` messages from index `from`, confirms in a window.
async fn publish(conn: &Connection, from: u64, count: u64) {
    let ch = conn.create_channel().await.unwrap();
    common::confirm(&ch).await;
    let mut pending = std::collections::VecDeque::new();
    for i in from..from + count {
        let confirm = ch
            .basic_publish(
                "".into(),
                STREAM.into(),
                BasicPublishOptions::default(),
                &body(i),
                BasicProperties::default(),
            )
            .await
            .unwrap();
        pending.push_back(confirm);
        if pending.len() >= 2_000 {
            for c in pending.drain(..1_000) {
                assert!(c.await.unwrap().is_ack());
            }
        }
    }
    for c in pending {
        assert!(c.await.unwrap().is_ack());
    }
}

async fn consumer(conn: &Connection, args: FieldTable, tag: &str) -> (lapin::Channel, Consumer) {
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .unwrap();
    let c = ch
        .basic_consume(
            STREAM.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .unwrap();
    (ch, c)
}

async fn next(c: &mut Consumer) -> lapin::message::Delivery {
    match tokio::time::timeout(Duration::from_secs(10), c.next()).await {
        Ok(Some(Ok(d))) => d,
        other => panic!("no delivery: {other:?}"),
    }
}

/// Read `count` messages: (first index, count, deliveries out of order).
async fn read_all(conn: &Connection, args: FieldTable, tag: &str, count: u64) -> (u64, u64, u64) {
    let (ch, mut c) = consumer(conn, args, tag).await;
    let mut first = None;
    let mut prev = None;
    let mut disorder = 0;
    for k in 0..count {
        let d = next(&mut c).await;
        let i = index(&d.data);
        first.get_or_insert(i);
        disorder += u64::from(prev.is_some_and(|p| i != p + 1));
        prev = Some(i);
        if (k + 1).is_multiple_of(ACK_EVERY) {
            d.ack(BasicAckOptions { multiple: true }).await.unwrap();
        }
    }
    let _ = ch.close(200, "done".into()).await;
    (first.unwrap_or(0), count, disorder)
}

/// The tracked reader's first run: reads (acking every `ACK_EVERY`) until
/// it has `stop_after` messages; returns how many it saw.
async fn tracked_until(conn: &Connection, stop_after: u64) -> u64 {
    let args = table(&[
        ("x-stream-offset", AMQPValue::LongString("first".into())),
        (
            "x-stream-automatic-offset-tracking",
            AMQPValue::Boolean(true),
        ),
    ]);
    let (_ch, mut c) = consumer(conn, args, "replayer").await;
    for k in 0..stop_after {
        let d = next(&mut c).await;
        assert_eq!(index(&d.data), k);
        if (k + 1).is_multiple_of(ACK_EVERY) {
            d.ack(BasicAckOptions { multiple: true }).await.unwrap();
        }
    }
    // Acks are written to the OS before the next method is read: a
    // round trip makes sure the last one was handled before the kill.
    let probe = conn.create_channel().await.unwrap();
    let _ = probe.close(200, "sync".into()).await;
    stop_after
}

/// After the restart: the same tag, no offset; reads to the end.
async fn tracked_rest(conn: &Connection, n: u64) -> Vec<u64> {
    let (_ch, mut c) = consumer(conn, FieldTable::default(), "replayer").await;
    let mut got = Vec::new();
    loop {
        let d = next(&mut c).await;
        let i = index(&d.data);
        got.push(i);
        if (got.len() as u64).is_multiple_of(ACK_EVERY) {
            d.ack(BasicAckOptions { multiple: true }).await.unwrap();
        }
        if i == n - 1 {
            return got;
        }
    }
}
