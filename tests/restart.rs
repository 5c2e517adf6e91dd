//! Restarts on the same data directory: durable exchanges, queues and
//! bindings survive and transient or exclusive ones do not; persistent
//! messages on durable queues come back in order (redelivered when they
//! had been delivered but not acked), transient and acked ones do not; a
//! backlog larger than the in-memory window comes back whole; draining,
//! purging and deleting release disk space; a data directory serves one
//! broker at a time. Mostly in-process (graceful `stop`, then `start_in`
//! the same directory); one restart goes through the binary and SIGTERM.

mod common;

use std::time::Duration;

use common::child::{connect, ChildBroker, STEP};
use common::disk::{disk_use, wait_for_disk_below, DataDir};
use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, Consumer, ExchangeKind};
use warren::config::Fsync;

/// Small segments, so that a few hundred kilobytes span several files.
const SEGMENT_BYTES: u64 = 64 * 1024;
/// How long space released in the background may take to show on disk.
const DISK_PATIENCE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_topology_survives_a_restart() {
    within(async {
        let dir = DataDir::new();
        let broker = start(&dir, |_| {}).await;
        let (_conn, ch) = broker.channel().await;
        ch.exchange_declare(
            "keep-x".into(),
            ExchangeKind::Topic,
            durable_exchange(),
            FieldTable::default(),
        )
        .await
        .expect("declare durable exchange");
        ch.queue_declare("keep-q".into(), durable(), max_length(1000))
            .await
            .expect("declare durable queue");
        ch.queue_bind(
            "keep-q".into(),
            "keep-x".into(),
            "orders.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
        declare_durable(&ch, "keep-direct").await;
        ch.queue_bind(
            "keep-direct".into(),
            "amq.direct".into(),
            "direct-key".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind to amq.direct");
        broker.stop().await;

        let broker = start(&dir, |_| {}).await;
        let (conn, ch) = broker.channel().await;
        ch.exchange_declare(
            "keep-x".into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the durable exchange is still there");
        assert_eq!(queue_count(&ch, "keep-q").await, Ok(0));
        assert_eq!(queue_count(&ch, "keep-direct").await, Ok(0));
        // The definitions came back as declared, not just by name.
        let other = conn.create_channel().await.expect("open channel");
        assert_code(
            other
                .exchange_declare(
                    "keep-x".into(),
                    ExchangeKind::Direct,
                    durable_exchange(),
                    FieldTable::default(),
                )
                .await,
            406,
        );
        let other = conn.create_channel().await.expect("open channel");
        assert_code(
            other
                .queue_declare("keep-q".into(), durable(), max_length(5))
                .await,
            406,
        );
        ch.queue_declare("keep-q".into(), durable(), max_length(1000))
            .await
            .expect("an equivalent redeclare is fine");
        // And the bindings route.
        confirm(&ch).await;
        publish_with(&ch, "keep-x", "orders.eu.1", b"via topic", persistent()).await;
        publish_with(&ch, "amq.direct", "direct-key", b"via direct", persistent()).await;
        assert_eq!(get_all(&ch, "keep-q").await, ["via topic"]);
        assert_eq!(get_all(&ch, "keep-direct").await, ["via direct"]);
        broker.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_and_exclusive_topology_is_gone_after_a_restart() {
    within(async {
        let dir = DataDir::new();
        let broker = start(&dir, |_| {}).await;
        let (conn, ch) = broker.channel().await;
        ch.exchange_declare(
            "gone-x".into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare transient exchange");
        declare_queue(&ch, "gone-q").await;
        ch.queue_declare(
            "gone-exclusive".into(),
            QueueDeclareOptions {
                durable: true,
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare durable exclusive queue");
        declare_durable(&ch, "kept").await;
        // A durable queue bound to a transient exchange: the binding goes
        // with the exchange, the queue stays.
        ch.queue_bind(
            "kept".into(),
            "gone-x".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
        // Stopped with the owning connection still open.
        broker.stop().await;
        drop(conn);

        let broker = start(&dir, |_| {}).await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.expect("open channel");
        assert_eq!(
            queue_count(&ch, "kept").await,
            Ok(0),
            "the durable queue should survive"
        );
        for queue in ["gone-q", "gone-exclusive"] {
            let ch = conn.create_channel().await.expect("open channel");
            assert_eq!(queue_count(&ch, queue).await, Err(404), "queue {queue}");
        }
        let ch = conn.create_channel().await.expect("open channel");
        assert_code(
            ch.exchange_declare(
                "gone-x".into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await,
            404,
        );
        broker.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_messages_come_back_in_order_and_transient_ones_do_not() {
    within(async {
        let dir = DataDir::new();
        let broker = start(&dir, |_| {}).await;
        let (_conn, ch) = broker.channel().await;
        declare_durable(&ch, "msgs").await;
        declare_queue(&ch, "transient-q").await;
        ch.queue_bind(
            "msgs".into(),
            "amq.direct".into(),
            "routed-key".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
        confirm(&ch).await;
        for i in 0..20 {
            let props = persistent()
                .with_content_type("text/plain".into())
                .with_correlation_id(format!("corr-{i}").into())
                .with_headers(header("n", i));
            publish_with(&ch, "", "msgs", format!("p{i}").as_bytes(), props).await;
            let transient = BasicProperties::default().with_delivery_mode(1);
            publish_with(&ch, "", "msgs", format!("t{i}").as_bytes(), transient).await;
            publish(&ch, "", "msgs", format!("d{i}").as_bytes()).await;
        }
        publish_with(&ch, "amq.direct", "routed-key", b"routed", persistent()).await;
        publish_with(&ch, "", "transient-q", b"lost with its queue", persistent()).await;
        broker.stop().await;

        let broker = start(&dir, |_| {}).await;
        let (_conn, ch) = broker.channel().await;
        let mut expected: Vec<String> = (0..20).map(|i| format!("p{i}")).collect();
        expected.push("routed".into());
        assert_eq!(queue_count(&ch, "msgs").await, Ok(expected.len() as u32));
        for (i, want) in expected.iter().enumerate() {
            let m = ch
                .basic_get("msgs".into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get")
                .unwrap_or_else(|| panic!("message {i} ({want}) is missing"));
            let d = &m.delivery;
            assert_eq!(String::from_utf8_lossy(&d.data), *want);
            assert!(!d.redelivered, "{want} was never delivered");
            assert_eq!(d.properties.delivery_mode(), &Some(2), "{want}");
            if *want == "routed" {
                assert_eq!(d.exchange.as_str(), "amq.direct");
                assert_eq!(d.routing_key.as_str(), "routed-key");
            } else {
                assert_eq!(d.exchange.as_str(), "");
                assert_eq!(d.routing_key.as_str(), "msgs");
                assert_eq!(
                    d.properties.content_type().as_ref().map(|s| s.as_str()),
                    Some("text/plain")
                );
                assert_eq!(
                    d.properties.correlation_id().as_ref().map(|s| s.as_str()),
                    Some(format!("corr-{i}").as_str())
                );
                assert_eq!(d.properties.headers(), &Some(header("n", i as i64)));
            }
        }
        assert_eq!(get_all(&ch, "msgs").await, Vec::<String>::new());
        assert_eq!(queue_count(&ch, "transient-q").await, Err(404));
        broker.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_stay_gone_and_unacked_ones_come_back_redelivered() {
    within(async {
        let dir = DataDir::new();
        let broker = start(&dir, |_| {}).await;
        let (_conn, ch) = broker.channel().await;
        declare_durable(&ch, "acks").await;
        confirm(&ch).await;
        for i in 0..10 {
            publish_with(&ch, "", "acks", format!("m{i}").as_bytes(), persistent()).await;
        }
        // m0..m3 are delivered (prefetch 4, then the consumer is
        // cancelled); m1 and m0 are acked (out of order), m2 and m3 stay
        // unacked, m4..m9 are never delivered.
        let (_conn2, consumer_ch) = broker.channel().await;
        consumer_ch
            .basic_qos(4, BasicQosOptions::default())
            .await
            .expect("basic.qos");
        let mut consumer = consume(&consumer_ch, "acks").await;
        let first = next_deliveries(&mut consumer, 4).await;
        assert_eq!(bodies(&first), ["m0", "m1", "m2", "m3"]);
        cancel(&consumer_ch, &consumer).await;
        for d in [&first[1], &first[0]] {
            consumer_ch
                .basic_ack(d.delivery_tag, BasicAckOptions::default())
                .await
                .expect("ack");
        }
        // A round trip: the acks have been processed.
        assert_eq!(queue_count(&consumer_ch, "acks").await, Ok(6));
        broker.stop().await;

        let broker = start(&dir, |_| {}).await;
        let (_conn, ch) = broker.channel().await;
        let mut consumer = consume(&ch, "acks").await;
        let back = next_deliveries(&mut consumer, 8).await;
        assert_eq!(
            bodies(&back),
            ["m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"]
        );
        let redelivered: Vec<bool> = back.iter().map(|d| d.redelivered).collect();
        assert_eq!(
            redelivered,
            [true, true, false, false, false, false, false, false],
            "redelivered flags of m2..m9"
        );
        assert_no_delivery(&mut consumer).await;
        broker.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_taken_by_get_reject_or_nack_do_not_come_back() {
    within(async {
        let dir = DataDir::new();
        let broker = start(&dir, |_| {}).await;
        let (_conn, ch) = broker.channel().await;
        declare_durable(&ch, "taken").await;
        confirm(&ch).await;
        for i in 0..6 {
            publish_with(&ch, "", "taken", format!("g{i}").as_bytes(), persistent()).await;
        }
        let get = |no_ack| {
            let ch = ch.clone();
            async move {
                ch.basic_get("taken".into(), BasicGetOptions { no_ack })
                    .await
                    .expect("basic.get")
                    .expect("a message")
                    .delivery
            }
        };
        assert_eq!(get(true).await.data, b"g0");
        let g1 = get(false).await;
        ch.basic_ack(g1.delivery_tag, BasicAckOptions::default())
            .await
            .expect("ack");
        let g2 = get(false).await;
        ch.basic_reject(g2.delivery_tag, BasicRejectOptions { requeue: false })
            .await
            .expect("reject");
        let g3 = get(false).await;
        ch.basic_nack(
            g3.delivery_tag,
            BasicNackOptions {
                multiple: false,
                requeue: false,
            },
        )
        .await
        .expect("nack");
        let g4 = get(false).await;
        assert_eq!(g4.data, b"g4");
        ch.basic_nack(
            g4.delivery_tag,
            BasicNackOptions {
                multiple: false,
                requeue: true,
            },
        )
        .await
        .expect("nack and requeue");
        assert_eq!(queue_count(&ch, "taken").await, Ok(2));
        broker.stop().await;

        let broker = start(&dir, |_| {}).await;
        let (_conn, ch) = broker.channel().await;
        assert_eq!(get_all(&ch, "taken").await, ["g4", "g5"]);
        broker.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_larger_than_the_memory_window_survives_and_drains_to_little_disk() {
    // No fsync: this is about the memory window and segment clean-up,
    // and 5,000 fsyncs could take longer than the test may.
    let small = |c: &mut warren::Config| {
        no_fsync(c);
        c.queue_memory_bytes = 64 * 1024;
    };
    const COUNT: u32 = 5000;
    bounded(Duration::from_secs(45), async {
        let dir = DataDir::new();
        let broker = start(&dir, small).await;
        let (_conn, ch) = broker.channel().await;
        declare_durable(&ch, "backlog").await;
        confirm(&ch).await;
        publish_confirmed(&ch, "backlog", (0..COUNT).map(kib_body)).await;
        assert_eq!(queue_count(&ch, "backlog").await, Ok(COUNT));
        let on_disk = disk_use(&dir.queues());
        assert!(
            on_disk >= u64::from(COUNT) * 1024,
            "{COUNT} persistent 1 KiB messages take only {on_disk} bytes on disk"
        );
        broker.stop().await;

        let broker = start(&dir, small).await;
        let (_conn, ch) = broker.channel().await;
        assert_eq!(queue_count(&ch, "backlog").await, Ok(COUNT));
        ch.basic_qos(200, BasicQosOptions::default())
            .await
            .expect("basic.qos");
        let mut consumer = consume(&ch, "backlog").await;
        for i in 0..COUNT {
            let d = next_delivery(&mut consumer).await;
            assert!(
                d.data == kib_body(i),
                "message {i} of the backlog: got {:?}",
                String::from_utf8_lossy(&d.data[..d.data.len().min(24)])
            );
            assert!(!d.redelivered, "message {i} was never delivered");
            ch.basic_ack(d.delivery_tag, BasicAckOptions::default())
                .await
                .expect("ack");
        }
        assert_no_delivery(&mut consumer).await;
        assert_eq!(queue_count(&ch, "backlog").await, Ok(0));
        wait_for_disk_below(&dir.queues(), 1024 * 1024, DISK_PATIENCE).await;
        broker.stop().await;

        let broker = start(&dir, small).await;
        let (_conn, ch) = broker.channel().await;
        assert_eq!(queue_count(&ch, "backlog").await, Ok(0));
        assert_eq!(get_all(&ch, "backlog").await, Vec::<String>::new());
        wait_for_disk_below(&dir.queues(), 1024 * 1024, DISK_PATIENCE).await;
        broker.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_releases_disk_space() {
    bounded(Duration::from_secs(30), async {
        let dir = DataDir::new();
        let (broker, _conn, ch) = filled(&dir, "purged").await;
        let purged = ch
            .queue_purge("purged".into(), QueuePurgeOptions::default())
            .await
            .expect("queue.purge");
        assert_eq!(purged, 1000);
        wait_for_disk_below(&dir.queues(), 256 * 1024, DISK_PATIENCE).await;
        // The queue goes on working, and only what came after the purge
        // survives a restart.
        publish_with(&ch, "", "purged", b"after the purge", persistent()).await;
        broker.stop().await;

        let broker = start(&dir, no_fsync).await;
        let (_conn, ch) = broker.channel().await;
        assert_eq!(get_all(&ch, "purged").await, ["after the purge"]);
        wait_for_disk_below(&dir.queues(), 256 * 1024, DISK_PATIENCE).await;
        broker.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_queue_releases_its_disk_space() {
    bounded(Duration::from_secs(30), async {
        let dir = DataDir::new();
        let (broker, _conn, ch) = filled(&dir, "deleted").await;
        let deleted = ch
            .queue_delete("deleted".into(), QueueDeleteOptions::default())
            .await
            .expect("queue.delete");
        assert_eq!(deleted, 1000);
        wait_for_disk_below(&dir.queues(), 4096, DISK_PATIENCE).await;
        // A new queue by the same name starts empty, and stays empty
        // across a restart (the old queue's data must not come back).
        declare_durable(&ch, "deleted").await;
        broker.stop().await;

        let broker = start(&dir, no_fsync).await;
        let (_conn, ch) = broker.channel().await;
        assert_eq!(queue_count(&ch, "deleted").await, Ok(0));
        ch.queue_delete("deleted".into(), QueueDeleteOptions::default())
            .await
            .expect("queue.delete");
        broker.stop().await;

        let broker = start(&dir, no_fsync).await;
        let (_conn, ch) = broker.channel().await;
        assert_eq!(queue_count(&ch, "deleted").await, Err(404));
        wait_for_disk_below(&dir.queues(), 4096, DISK_PATIENCE).await;
        broker.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_broker_on_the_same_data_dir_is_refused() {
    bounded(Duration::from_secs(20), async {
        let dir = DataDir::new();
        let first = start(&dir, |_| {}).await;
        let name = dir.path().display().to_string();

        // In-process.
        let cfg = warren::Config {
            port: 0,
            log_level: "off".into(),
            data_dir: dir.path().to_path_buf(),
            management_port: 0,
            prometheus_port: 0,
            ..Default::default()
        };
        match warren::RunningServer::start(cfg).await {
            Ok(second) => {
                second.stop().await;
                panic!("a second broker started on {name}");
            }
            Err(e) => assert!(
                e.to_string().contains(&name),
                "the error should name the data directory {name}: {e}"
            ),
        }

        // Through the binary: refuses, says why, exits non-zero.
        let mut child = ChildBroker::spawn(dir.path());
        let status = child.wait_for_exit(STEP).await;
        let printed = child.output();
        let status = match status {
            Some(status) => status,
            None => {
                child.kill();
                panic!("a second warren on {name} kept running; output:\n{printed}");
            }
        };
        assert!(
            !status.success(),
            "a second warren on {name} exited with {status}; output:\n{printed}"
        );
        // The output threads may lag the exit a little.
        let named = child.find_line(|l| l.contains(&name), Duration::from_secs(2));
        if named.await.is_none() {
            panic!(
                "the refusal should name {name}; output:\n{}",
                child.output()
            );
        }

        // Once the first one has stopped, the directory is free again.
        first.stop().await;
        let again = start(&dir, |_| {}).await;
        again.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_keeps_persistent_messages_across_sigterm() {
    bounded(Duration::from_secs(40), async {
        let dir = DataDir::new();
        let config = dir.write_config(&format!("segment_bytes = {SEGMENT_BYTES}\n"));
        let mut broker = ChildBroker::start(dir.path(), &config);
        let conn = connect(broker.port).await;
        let ch = conn.create_channel().await.expect("open channel");
        declare_durable(&ch, "sigterm").await;
        confirm(&ch).await;
        for i in 0..50 {
            let body = format!("s{i}");
            publish_with(&ch, "", "sigterm", body.as_bytes(), persistent()).await;
            publish(&ch, "", "sigterm", format!("transient {i}").as_bytes()).await;
        }
        let consumer_ch = conn.create_channel().await.expect("open channel");
        consumer_ch
            .basic_qos(5, BasicQosOptions::default())
            .await
            .expect("basic.qos");
        let mut consumer = consume(&consumer_ch, "sigterm").await;
        let first = next_deliveries(&mut consumer, 5).await;
        assert_eq!(bodies(&first)[0], "s0");
        cancel(&consumer_ch, &consumer).await;
        for d in &first[..3] {
            consumer_ch
                .basic_ack(d.delivery_tag, BasicAckOptions::default())
                .await
                .expect("ack");
        }
        queue_count(&consumer_ch, "sigterm")
            .await
            .expect("passive declare");
        let status = broker.terminate().await;
        assert!(status.success(), "warren exited with {status} on SIGTERM");
        drop(conn);

        let mut broker = ChildBroker::start(dir.path(), &config);
        let conn = connect(broker.port).await;
        let ch = conn.create_channel().await.expect("open channel");
        // The first five deliveries alternated persistent and transient
        // messages; the acked ones are gone, the unacked persistent one is
        // redelivered, and the transient ones are gone.
        let acked_persistent = bodies(&first[..3])
            .iter()
            .filter(|b| b.starts_with('s'))
            .count();
        let mut consumer = consume(&ch, "sigterm").await;
        let expected: Vec<String> = (acked_persistent..50).map(|i| format!("s{i}")).collect();
        let back = next_deliveries(&mut consumer, expected.len()).await;
        assert_eq!(bodies(&back), expected);
        for d in &back {
            let body = String::from_utf8_lossy(&d.data).into_owned();
            let was_delivered = bodies(&first).contains(&body);
            assert_eq!(d.redelivered, was_delivered, "redelivered flag of {body}");
        }
        assert_no_delivery(&mut consumer).await;
        let status = broker.terminate().await;
        assert!(status.success(), "warren exited with {status} on SIGTERM");
    })
    .await
}

// ---------------------------------------------------------------------------
// Helpers.

/// Start an in-process broker on `dir` with small segments (and whatever
/// else `adjust` sets).
async fn start(dir: &DataDir, adjust: impl FnOnce(&mut warren::Config)) -> Broker {
    Broker::start_in(dir.path().to_path_buf(), |c| {
        c.segment_bytes = SEGMENT_BYTES;
        adjust(c);
    })
    .await
}

/// Small segments and no fsync, for tests about disk space (thousands of
/// fsyncs could take longer than the test may).
fn no_fsync(c: &mut warren::Config) {
    c.fsync = Fsync::Never;
    c.segment_bytes = SEGMENT_BYTES;
}

/// A broker on `dir` (with [`no_fsync`]) whose durable `queue` holds 1000
/// persistent 1 KiB messages, checked to take at least that much disk;
/// with a connection and a confirm channel to it.
async fn filled(dir: &DataDir, queue: &str) -> (Broker, Connection, Channel) {
    let broker = start(dir, no_fsync).await;
    let (conn, ch) = broker.channel().await;
    declare_durable(&ch, queue).await;
    confirm(&ch).await;
    publish_confirmed(&ch, queue, (0..1000).map(kib_body)).await;
    let before = disk_use(&dir.queues());
    assert!(before >= 1000 * 1024, "only {before} bytes on disk");
    (broker, conn, ch)
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn max_length(n: i64) -> FieldTable {
    header("x-max-length", n)
}

fn header(key: &str, n: i64) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(key.into(), AMQPValue::LongLongInt(n));
    t
}

/// The ready-message count of a queue (passive declare), or the reply code.
async fn queue_count(ch: &Channel, queue: &str) -> Result<u32, u16> {
    ready_count(ch, queue)
        .await
        .map_err(|e| reply_code(&e).unwrap_or_else(|| panic!("passive declare of {queue}: {e}")))
}

/// Stop a consumer's deliveries (its unacked ones stay unacked).
async fn cancel(ch: &Channel, consumer: &Consumer) {
    ch.basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await
        .expect("basic.cancel");
}

/// Body `i` of a backlog: its number, then filler up to 1 KiB.
fn kib_body(i: u32) -> Vec<u8> {
    let mut b = format!("backlog-{i:06}-").into_bytes();
    b.resize(1024, b'a' + (i % 26) as u8);
    b
}
