//! Publisher confirms and transactions.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_publish_is_confirmed() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        let q = temp_queue(&ch).await;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        assert!(ch.status().confirm());
        let mut pending = Vec::new();
        for i in 0..200 {
            let key = if i % 3 == 0 {
                uniq("unroutable")
            } else {
                q.clone()
            };
            pending.push(
                ch.basic_publish(
                    "".into(),
                    key.as_str().into(),
                    BasicPublishOptions::default(),
                    format!("m{i}").as_bytes(),
                    BasicProperties::default(),
                )
                .await
                .unwrap(),
            );
        }
        for (i, p) in pending.into_iter().enumerate() {
            let c = p.await.unwrap_or_else(|e| panic!("confirm {i}: {e:?}"));
            assert_eq!(c, Confirmation::Ack(None), "publish {i}");
        }
        wait_for_count(&ch, &q, 133).await;
        // The batch API agrees.
        for _ in 0..50 {
            ch.basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                b"batch",
                BasicProperties::default(),
            )
            .await
            .unwrap();
        }
        assert!(ch.wait_for_confirms().await.unwrap().is_empty());
        wait_for_count(&ch, &q, 183).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returned_mandatory_message_is_acked_after_its_return() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let key = uniq("nowhere");
        let c = ch
            .basic_publish(
                "".into(),
                key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                b"bounce",
                BasicProperties::default().with_priority(3),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(c.is_ack());
        let ret = c
            .take_message()
            .expect("basic.return arrives before the ack");
        assert_eq!(ret.reply_code, 312);
        assert_eq!(ret.reply_text.as_str(), "NO_ROUTE");
        assert_eq!(ret.delivery.routing_key.as_str(), key);
        assert_eq!(ret.delivery.data, b"bounce");
        assert_eq!(
            ret.delivery.properties,
            BasicProperties::default().with_priority(3)
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_and_tx_do_not_mix_406() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm.select twice is fine");
        let err = assert_code(ch.tx_select().await, 406);
        assert!(
            reply_text(&err).starts_with("PRECONDITION_FAILED"),
            "{}",
            reply_text(&err)
        );

        let ch = conn.create_channel().await.unwrap();
        ch.tx_select().await.unwrap();
        ch.tx_select().await.expect("tx.select twice is fine");
        assert_code(
            ch.confirm_select(ConfirmSelectOptions::default()).await,
            406,
        );
        assert!(conn.status().connected());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_commit_publishes_and_rollback_discards() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let observer = conn.create_channel().await.unwrap();
        let q = temp_queue(&observer).await;

        let ch = conn.create_channel().await.unwrap();
        ch.tx_select().await.unwrap();
        for b in ["t1", "t2", "t3"] {
            publish(&ch, "", &q, b.as_bytes()).await;
        }
        // Nothing is visible before the commit.
        tokio::time::sleep(QUIET).await;
        wait_for_count(&observer, &q, 0).await;
        ch.tx_commit().await.unwrap();
        wait_for_count(&observer, &q, 3).await;

        publish(&ch, "", &q, b"r1").await;
        publish(&ch, "", &q, b"r2").await;
        ch.tx_rollback().await.unwrap();
        publish(&ch, "", &q, b"t4").await;
        ch.tx_commit().await.unwrap();
        assert_eq!(get_all(&observer, &q).await, vec!["t1", "t2", "t3", "t4"]);

        // Uncommitted publishes die with the channel.
        publish(&ch, "", &q, b"lost").await;
        ch.close(200, "".into()).await.unwrap();
        tokio::time::sleep(QUIET).await;
        wait_for_count(&observer, &q, 0).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_covers_acks() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let observer = conn.create_channel().await.unwrap();
        let q = temp_queue(&observer).await;
        for b in ["a", "b"] {
            publish(&observer, "", &q, b.as_bytes()).await;
        }

        let ch = conn.create_channel().await.unwrap();
        ch.tx_select().await.unwrap();
        let a = ch
            .basic_get(q.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()
            .unwrap();
        let b = ch
            .basic_get(q.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()
            .unwrap();
        ch.basic_ack(a.delivery.delivery_tag, BasicAckOptions::default())
            .await
            .unwrap();
        ch.basic_ack(b.delivery.delivery_tag, BasicAckOptions::default())
            .await
            .unwrap();
        // Rolled back acks are forgotten: both stay unacked ...
        ch.tx_rollback().await.unwrap();
        // ... so acking one of them again is valid, and this time committed.
        ch.basic_ack(a.delivery.delivery_tag, BasicAckOptions::default())
            .await
            .unwrap();
        ch.tx_commit().await.unwrap();
        // Closing the channel requeues only the never-committed one.
        ch.close(200, "".into()).await.unwrap();
        wait_for_count(&observer, &q, 1).await;
        let m = observer
            .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.delivery.data, b"b");
        assert!(m.delivery.redelivered);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_or_rollback_without_select_is_406() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let err = assert_code(ch.tx_commit().await, 406);
        assert!(
            reply_text(&err).starts_with("PRECONDITION_FAILED"),
            "{}",
            reply_text(&err)
        );
        let ch = conn.create_channel().await.unwrap();
        assert_code(ch.tx_rollback().await, 406);
        assert!(conn.status().connected());
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    })
    .await
}
