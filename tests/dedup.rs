//! Deduplication through lapin, as LavinMQ and RabbitMQ's community plugin
//! offer it: an exchange or a queue declared with
//! `x-message-deduplication: true` drops a message whose
//! `x-deduplication-header` (or, without it, message-id) it has seen among
//! its last `x-cache-size` keys, within `x-cache-ttl`; the duplicate is
//! confirmed (its first copy is in) and never returned as unroutable.

mod common;

use std::time::Duration;

use common::{assert_code, bounded, reply_text, table, Broker};
use lapin::options::{
    BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

fn dedup_args(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut pairs = vec![("x-message-deduplication", AMQPValue::Boolean(true))];
    pairs.extend(extra.iter().cloned());
    table(&pairs)
}

fn keyed(key: &str) -> BasicProperties {
    let h = table(&[("x-deduplication-header", AMQPValue::LongString(key.into()))]);
    BasicProperties::default().with_headers(h)
}

/// Publish with confirms; whether it was acked.
async fn publish(
    ch: &Channel,
    exchange: &str,
    rk: &str,
    props: BasicProperties,
    mandatory: bool,
) -> bool {
    let opts = BasicPublishOptions {
        mandatory,
        ..Default::default()
    };
    let confirm = ch
        .basic_publish(exchange.into(), rk.into(), opts, b"m", props)
        .await
        .unwrap();
    confirm.await.unwrap().is_ack()
}

#[tokio::test]
async fn an_exchange_drops_what_it_has_seen_and_confirms_it() {
    bounded(Duration::from_secs(20), async {
        let b = Broker::start().await;
        let (_c, ch) = b.channel().await;
        common::confirm(&ch).await;
        ch.exchange_declare(
            "once".into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            dedup_args(&[]),
        )
        .await
        .unwrap();
        common::declare_queue(&ch, "once-q").await;
        ch.queue_bind(
            "once-q".into(),
            "once".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        assert!(publish(&ch, "once", "", keyed("order-1"), true).await);
        // The retry of a publish whose confirm was lost: acked, dropped,
        // not returned although mandatory.
        assert!(publish(&ch, "once", "", keyed("order-1"), true).await);
        assert!(publish(&ch, "once", "", keyed("order-2"), false).await);
        // Without the header, the message id is the key.
        let by_id = || BasicProperties::default().with_message_id("id-9".into());
        assert!(publish(&ch, "once", "", by_id(), false).await);
        assert!(publish(&ch, "once", "", by_id(), false).await);
        // Neither: never a duplicate.
        assert!(publish(&ch, "once", "", BasicProperties::default(), false).await);
        assert!(publish(&ch, "once", "", BasicProperties::default(), false).await);
        common::wait_for_count(&ch, "once-q", 5).await;
    })
    .await
}

#[tokio::test]
async fn a_queue_deduplicates_within_its_cache_size_and_ttl() {
    bounded(Duration::from_secs(20), async {
        let b = Broker::start().await;
        let (_c, ch) = b.channel().await;
        common::confirm(&ch).await;
        let args = dedup_args(&[
            ("x-cache-size", AMQPValue::LongInt(2)),
            ("x-cache-ttl", AMQPValue::LongInt(1500)),
            (
                "x-deduplication-header",
                AMQPValue::LongString("job".into()),
            ),
        ]);
        ch.queue_declare("jobs".into(), QueueDeclareOptions::default(), args)
            .await
            .unwrap();
        let job = |k: &str| {
            BasicProperties::default()
                .with_headers(table(&[("job", AMQPValue::LongString(k.into()))]))
        };
        assert!(publish(&ch, "", "jobs", job("a"), true).await);
        assert!(publish(&ch, "", "jobs", job("a"), true).await);
        common::wait_for_count(&ch, "jobs", 1).await;
        // Two more keys push "a" out of a cache of two.
        assert!(publish(&ch, "", "jobs", job("b"), false).await);
        assert!(publish(&ch, "", "jobs", job("c"), false).await);
        assert!(publish(&ch, "", "jobs", job("a"), false).await);
        common::wait_for_count(&ch, "jobs", 4).await;
        // After the TTL, "c" is new again.
        tokio::time::sleep(Duration::from_millis(1600)).await;
        assert!(publish(&ch, "", "jobs", job("c"), false).await);
        common::wait_for_count(&ch, "jobs", 5).await;
    })
    .await
}

#[tokio::test]
async fn bad_arguments_are_refused() {
    bounded(Duration::from_secs(20), async {
        let b = Broker::start().await;
        for (name, args) in [
            ("q1", dedup_args(&[("x-cache-size", AMQPValue::LongInt(0))])),
            (
                "q2",
                dedup_args(&[("x-cache-ttl", AMQPValue::LongString("soon".into()))]),
            ),
            (
                "q3",
                table(&[(
                    "x-message-deduplication",
                    AMQPValue::LongString("yes".into()),
                )]),
            ),
        ] {
            let (_c, ch) = b.channel().await;
            let e = assert_code(
                ch.queue_declare(name.into(), QueueDeclareOptions::default(), args)
                    .await,
                406,
            );
            assert!(
                reply_text(&e).contains("invalid value for 'x-"),
                "{}",
                reply_text(&e)
            );
        }
    })
    .await
}

#[tokio::test]
async fn a_durable_queue_remembers_its_stored_keys_across_a_restart() {
    bounded(Duration::from_secs(30), async {
        let dir = common::fresh_data_dir();
        let b = Broker::start_in(dir.clone(), |_| {}).await;
        let (c, ch) = b.channel().await;
        common::confirm(&ch).await;
        let opts = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare("durable-once".into(), opts, dedup_args(&[]))
            .await
            .unwrap();
        let persistent = |k: &str| keyed(k).with_delivery_mode(2);
        for k in ["a", "b"] {
            assert!(publish(&ch, "", "durable-once", persistent(k), false).await);
        }
        // "a" is consumed and acked: settled, its record still on disk.
        let got = ch
            .basic_get(
                "durable-once".into(),
                lapin::options::BasicGetOptions::default(),
            )
            .await
            .unwrap()
            .expect("a message");
        got.delivery.ack(Default::default()).await.unwrap();
        c.close(200, "bye".into()).await.unwrap();
        b.stop().await;

        let b = Broker::start_in(dir, |_| {}).await;
        let (_c, ch) = b.channel().await;
        common::confirm(&ch).await;
        // Both keys are known again: the queued one and the acked one.
        for k in ["a", "b", "c"] {
            assert!(publish(&ch, "", "durable-once", persistent(k), false).await);
        }
        // "b" from before the restart and the new "c".
        common::wait_for_count(&ch, "durable-once", 2).await;
    })
    .await
}

#[tokio::test]
async fn a_message_not_stored_leaves_no_key_behind() {
    bounded(Duration::from_secs(20), async {
        let b = Broker::start().await;
        // A rolled-back transaction: its publish's key is not recorded.
        let (_c, tx) = b.channel().await;
        let args = dedup_args(&[]);
        tx.queue_declare("tx-once".into(), QueueDeclareOptions::default(), args)
            .await
            .unwrap();
        tx.tx_select().await.unwrap();
        let send = || {
            let opts = BasicPublishOptions::default();
            tx.basic_publish("".into(), "tx-once".into(), opts, b"m", keyed("k"))
        };
        send().await.unwrap();
        tx.tx_rollback().await.unwrap();
        send().await.unwrap();
        tx.tx_commit().await.unwrap();
        common::wait_for_count(&tx, "tx-once", 1).await;

        // A publish the queue rejects (full, reject-publish) is nacked; its
        // retry, once there is room, is stored, not dropped as a duplicate.
        let (_c, ch) = b.channel().await;
        common::confirm(&ch).await;
        let args = dedup_args(&[
            ("x-max-length", AMQPValue::LongInt(1)),
            ("x-overflow", AMQPValue::LongString("reject-publish".into())),
        ]);
        ch.queue_declare("full-once".into(), QueueDeclareOptions::default(), args)
            .await
            .unwrap();
        assert!(publish(&ch, "", "full-once", keyed("first"), false).await);
        assert!(
            !publish(&ch, "", "full-once", keyed("second"), false).await,
            "nacked: full"
        );
        ch.queue_purge("full-once".into(), Default::default())
            .await
            .unwrap();
        assert!(publish(&ch, "", "full-once", keyed("second"), false).await);
        common::wait_for_count(&ch, "full-once", 1).await;
    })
    .await
}
