//! Dead-lettering of persistent messages under kill -9: a consumer rejects
//! (requeue=false) everything from a durable work queue whose dead-letter
//! exchange routes to a durable parking queue, while the broker (a child
//! process) is killed at random moments. After every restart no message is
//! lost: each confirmed message is in the work queue or the parking queue
//! (both at once is allowed: a crash in the middle of a move may leave a
//! copy in each, which at-least-once permits), and at the end every one of
//! them is parked.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::child::{connect, ChildBroker};
use common::disk::DataDir;
use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::Channel;
use rand::{Rng, SeedableRng};

const WORK: &str = "dlc-work";
const PARKED: &str = "dlc-parked";
const MESSAGES: u32 = 400;
const CYCLES: usize = 8;

async fn declare(ch: &Channel) {
    declare_durable(ch, PARKED).await;
    let mut a = FieldTable::default();
    a.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from("")),
    );
    a.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(LongString::from(PARKED)),
    );
    ch.queue_declare(WORK.into(), durable(), a)
        .await
        .expect("declare work queue");
}

/// Every message number in a queue, read without taking them (the channel
/// is closed afterwards, which puts them back).
async fn numbers_in(conn: &lapin::Connection, queue: &str) -> Vec<u32> {
    let ch = conn.create_channel().await.expect("channel");
    let count = ready_count(&ch, queue).await.expect("count");
    let mut out = Vec::new();
    for _ in 0..count {
        let m = ch
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .expect("get")
            .expect("a message, as counted");
        let text = String::from_utf8_lossy(&m.delivery.data).into_owned();
        out.push(text.parse().expect("a number"));
    }
    let _ = ch.close(200, "read".into()).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_dead_letters_survive_kill_9() {
    bounded(Duration::from_secs(50), async {
        let seed: u64 = rand::random();
        eprintln!("seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let dir = DataDir::new();
        let config = dir.write_config("fsync = \"always\"\nsegment_bytes = 65536\n");

        let mut broker = ChildBroker::start(dir.path(), &config);
        let conn = connect(broker.port).await;
        let ch = conn.create_channel().await.expect("channel");
        declare(&ch).await;
        confirm(&ch).await;
        publish_confirmed(&ch, WORK, (0..MESSAGES).map(|i| i.to_string().into_bytes())).await;
        broker.kill();
        drop(conn);

        let all: BTreeSet<u32> = (0..MESSAGES).collect();
        for cycle in 0..CYCLES {
            let mut broker = ChildBroker::start(dir.path(), &config);
            let conn = connect(broker.port).await;
            let mut seen: BTreeSet<u32> = numbers_in(&conn, WORK).await.into_iter().collect();
            seen.extend(numbers_in(&conn, PARKED).await);
            let missing: Vec<_> = all.difference(&seen).collect();
            assert!(missing.is_empty(), "cycle {cycle}: lost {missing:?}");
            // Reject everything from the work queue until the kill.
            let ch = conn.create_channel().await.expect("channel");
            ch.basic_qos(50, BasicQosOptions::default())
                .await
                .expect("qos");
            let mut c = ch
                .basic_consume(
                    WORK.into(),
                    "rejecter".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("consume");
            let rejecter = tokio::spawn(async move {
                while let Some(Ok(d)) = c.next().await {
                    if d.reject(BasicRejectOptions { requeue: false })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            tokio::time::sleep(Duration::from_millis(rng.gen_range(5..=120))).await;
            broker.kill();
            rejecter.abort();
            let _ = rejecter.await;
            drop(conn);
            broker.assert_no_panic();
        }

        // The end: let the last rejections finish, then everything must be
        // parked, each message at least once.
        let broker = ChildBroker::start(dir.path(), &config);
        let conn = connect(broker.port).await;
        let ch = conn.create_channel().await.expect("channel");
        let mut c = ch
            .basic_consume(
                WORK.into(),
                "last".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        while ready_count(&ch, WORK).await.expect("count") > 0 {
            if let Ok(Some(Ok(d))) =
                tokio::time::timeout(Duration::from_millis(200), c.next()).await
            {
                d.reject(BasicRejectOptions { requeue: false })
                    .await
                    .expect("reject");
            }
        }
        ch.basic_cancel("last".into(), BasicCancelOptions::default())
            .await
            .expect("cancel");
        while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_millis(200), c.next()).await
        {
            d.reject(BasicRejectOptions { requeue: false })
                .await
                .expect("reject");
        }
        wait_for_count(&ch, WORK, 0).await;
        let parked: BTreeSet<u32> = numbers_in(&conn, PARKED).await.into_iter().collect();
        let missing: Vec<_> = all.difference(&parked).collect();
        assert!(missing.is_empty(), "never parked: {missing:?}");
        broker.assert_no_panic();
    })
    .await
}
