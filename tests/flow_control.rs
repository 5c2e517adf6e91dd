//! Flow control: a queue whose consumers' connections cannot take more
//! holds back its publishers instead of growing without bound, and lets
//! them go again once the consumer catches up.

mod common;

use std::time::Duration;

use common::raw::{basic_consume, Raw, DELIVER};
use common::{declare_queue, uniq, within, Broker};
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;

/// A consumer on a raw socket: it subscribes in no-ack mode and then
/// reads nothing until told to, so the broker's writes to it back up.
async fn stalled_consumer(broker: &Broker, queue: &str) -> Raw {
    let mut r = Raw::handshake(broker).await;
    r.open_channel(1).await;
    r.send(&basic_consume(1, queue, "stalled", true)).await;
    r.expect_method(1, 60, 21).await;
    r
}

/// Read and count deliveries until `n` arrived.
async fn drain(r: &mut Raw, n: u64) {
    let mut got = 0;
    while got < n {
        if r.next().await.method() == Some(DELIVER) {
            got += 1;
        }
    }
}

async fn ready_count(broker: &Broker, queue_name: &str) -> u32 {
    let (_c, ch) = broker.channel().await;
    ch.queue_declare(
        queue_name.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
    .message_count()
}

/// Publish `total` 4 KiB messages to `q` from a new connection, in a task.
async fn flood(broker: &Broker, q: &str, total: u64) -> tokio::task::JoinHandle<()> {
    let (pconn, pch) = broker.channel().await;
    let q = q.to_string();
    let body = vec![b'x'; 4096];
    tokio::spawn(async move {
        for _ in 0..total {
            pch.basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            )
            .await
            .unwrap();
        }
        drop(pconn);
    })
}

/// Start `flood` and check that, with the queue's consumer stalled, the
/// publisher is still held back after a while.
async fn held_back_flood(broker: &Broker, q: &str, total: u64) -> tokio::task::JoinHandle<()> {
    let publisher = flood(broker, q, total).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !publisher.is_finished(),
        "the publisher should be held back"
    );
    publisher
}

/// Delete `q` and check that the publisher it held back finishes.
async fn delete_and_expect_release(
    ch: &lapin::Channel,
    q: &str,
    publisher: tokio::task::JoinHandle<()>,
) {
    ch.queue_delete(q.into(), Default::default()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), publisher)
        .await
        .expect("the publisher must resume once its queue is gone")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_saturated_queue_releases_its_publisher() {
    // Regression: the saturated flag was only recomputed on dispatch, so a
    // publisher held back by a queue that was then deleted stayed held
    // back for good.
    within(async {
        let broker = Broker::start().await;
        let q = uniq("flow-del");
        let (_c, ch) = broker.channel().await;
        declare_queue(&ch, &q).await;
        let _consumer = stalled_consumer(&broker, &q).await;
        let publisher = held_back_flood(&broker, &q, 20_000).await;
        delete_and_expect_release(&ch, &q, publisher).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consumer_holds_publishers_back_and_releases_them() {
    // 160 MB through a debug client and broker: more than TEST_TIMEOUT on
    // a loaded machine.
    common::bounded(Duration::from_secs(45), async {
        let broker = Broker::start().await;
        let q = uniq("flow");
        let (_pc, pch) = broker.channel().await;
        declare_queue(&pch, &q).await;
        let mut consumer = stalled_consumer(&broker, &q).await;

        // Publish far more than the consumer's socket and mailbox can hold.
        const TOTAL: u64 = 40_000;
        let publisher = held_back_flood(&broker, &q, TOTAL).await;
        let ready = ready_count(&broker, &q).await;
        assert!(
            ready <= (warren::broker::queue::FLOW_HIGH_WATERMARK as u32) * 2,
            "ready messages grew to {ready} though the consumer is stalled"
        );

        // Once the consumer reads, everything flows.
        let drain = tokio::spawn(async move {
            drain(&mut consumer, TOTAL).await;
            consumer
        });
        publisher.await.unwrap();
        let _consumer = drain.await.unwrap();
        assert_eq!(ready_count(&broker, &q).await, 0);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_watermarks_apply() {
    within(async {
        let broker = Broker::start_with(|c| {
            c.flow_high_watermark = 100;
            c.flow_low_watermark = 50;
        })
        .await;
        let q = uniq("flow-cfg");
        let (_c, ch) = broker.channel().await;
        declare_queue(&ch, &q).await;
        let _consumer = stalled_consumer(&broker, &q).await;
        let publisher = held_back_flood(&broker, &q, 20_000).await;
        let ready = ready_count(&broker, &q).await;
        assert!(
            ready <= 200,
            "ready messages grew to {ready} with a high watermark of 100"
        );
        delete_and_expect_release(&ch, &q, publisher).await;
    })
    .await
}
