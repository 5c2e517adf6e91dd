//! Dead-lettering, TTLs and length limits through lapin: the retry pattern
//! with its x-death history, expiry (also while the broker is down),
//! max-length overflow modes, and persistent dead letters across a restart.

mod common;

use std::time::Duration;

use common::{
    confirm, consume, durable, next_delivery, persistent, publish, publish_with, ready_count,
    table, wait_for_count, within, Broker,
};
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

async fn queue(ch: &Channel, name: &str, opts: QueueDeclareOptions, a: FieldTable) {
    ch.queue_declare(name.into(), opts, a)
        .await
        .expect("queue.declare");
}

/// (queue, reason, count) of each x-death entry, in order.
fn deaths(props: &BasicProperties) -> Vec<(String, String, i64)> {
    let headers = props.headers().clone().expect("headers");
    let Some(AMQPValue::FieldArray(a)) = headers.inner().get("x-death") else {
        panic!("no x-death in {headers:?}");
    };
    let s = |t: &FieldTable, k: &str| match t.inner().get(k) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("{k}: {other:?}"),
    };
    a.as_slice()
        .iter()
        .map(|v| match v {
            AMQPValue::FieldTable(t) => {
                let Some(AMQPValue::LongLongInt(n)) = t.inner().get("count") else {
                    panic!("count is not a long: {t:?}");
                };
                (s(t, "queue"), s(t, "reason"), *n)
            }
            other => panic!("x-death entry {other:?}"),
        })
        .collect()
}

fn header_text(props: &BasicProperties, key: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

#[tokio::test]
async fn the_retry_pattern_counts_every_round_in_x_death() {
    within(async {
        let broker = Broker::start().await;
        let (_c, ch) = broker.channel().await;
        ch.exchange_declare(
            "retry-x".into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("exchange");
        queue(
            &ch,
            "work",
            Default::default(),
            table(&[("x-dead-letter-exchange", text("retry-x"))]),
        )
        .await;
        let wait_args = table(&[
            ("x-message-ttl", AMQPValue::LongInt(50)),
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text("work")),
        ]);
        queue(&ch, "wait", Default::default(), wait_args).await;
        ch.queue_bind(
            "wait".into(),
            "retry-x".into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
        publish(&ch, "", "work", b"job").await;
        let mut work = consume(&ch, "work").await;
        for round in 0..3 {
            let d = next_delivery(&mut work).await;
            assert_eq!(&d.data, b"job");
            if round > 0 {
                assert_eq!(deaths(&d.properties).len(), 2);
            }
            d.reject(BasicRejectOptions { requeue: false })
                .await
                .expect("reject");
        }
        let d = next_delivery(&mut work).await;
        assert_eq!(
            deaths(&d.properties),
            vec![
                ("wait".to_string(), "expired".to_string(), 3),
                ("work".to_string(), "rejected".to_string(), 3)
            ]
        );
        assert_eq!(
            header_text(&d.properties, "x-first-death-queue").as_deref(),
            Some("work")
        );
        assert_eq!(
            header_text(&d.properties, "x-first-death-reason").as_deref(),
            Some("rejected")
        );
        assert_eq!(
            header_text(&d.properties, "x-first-death-exchange").as_deref(),
            Some("")
        );
        // Delivered from the wait queue's dead-letter exchange, the default one.
        assert_eq!(d.exchange.as_str(), "");
        assert_eq!(d.routing_key.as_str(), "work");
        d.ack(BasicAckOptions::default()).await.expect("ack");
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn expired_messages_are_dead_lettered_without_their_expiration() {
    within(async {
        let broker = Broker::start().await;
        let (_c, ch) = broker.channel().await;
        queue(&ch, "dlq", Default::default(), FieldTable::default()).await;
        let a = table(&[
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text("dlq")),
        ]);
        queue(&ch, "ttl-src", Default::default(), a).await;
        let props = BasicProperties::default().with_expiration(ShortString::from("30"));
        publish_with(&ch, "", "ttl-src", b"old", props).await;
        let mut dlq = consume(&ch, "dlq").await;
        let d = next_delivery(&mut dlq).await;
        assert_eq!(&d.data, b"old");
        assert!(d.properties.expiration().is_none(), "expiration removed");
        assert_eq!(
            deaths(&d.properties),
            vec![("ttl-src".to_string(), "expired".to_string(), 1)]
        );
        let Some(AMQPValue::FieldArray(a)) = d
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-death").cloned())
        else {
            panic!("x-death");
        };
        let AMQPValue::FieldTable(entry) = &a.as_slice()[0] else {
            panic!("entry")
        };
        assert_eq!(entry.inner().get("original-expiration"), Some(&text("30")));
        assert_eq!(ready_count(&ch, "ttl-src").await.expect("count"), 0);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn ttl_zero_reaches_a_waiting_consumer_and_is_dropped_otherwise() {
    within(async {
        let broker = Broker::start().await;
        let (_c, ch) = broker.channel().await;
        queue(
            &ch,
            "ttl0",
            Default::default(),
            table(&[("x-message-ttl", AMQPValue::LongInt(0))]),
        )
        .await;
        publish(&ch, "", "ttl0", b"nobody").await;
        assert_eq!(ready_count(&ch, "ttl0").await.expect("count"), 0);
        let mut c = consume(&ch, "ttl0").await;
        publish(&ch, "", "ttl0", b"somebody").await;
        assert_eq!(&next_delivery(&mut c).await.data, b"somebody");
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn max_length_overflow_modes() {
    within(async {
        let broker = Broker::start().await;
        let (_c, ch) = broker.channel().await;
        queue(&ch, "dl", Default::default(), FieldTable::default()).await;
        let dl = [
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text("dl")),
        ];
        // drop-head: the oldest goes to the dead-letter queue.
        let mut a = table(&dl);
        a.insert("x-max-length".into(), AMQPValue::LongInt(2));
        queue(&ch, "head", Default::default(), a).await;
        for b in ["1", "2", "3"] {
            publish(&ch, "", "head", b.as_bytes()).await;
        }
        wait_for_count(&ch, "dl", 1).await;
        assert_eq!(ready_count(&ch, "head").await.expect("count"), 2);
        let mut dlc = consume(&ch, "dl").await;
        let d = next_delivery(&mut dlc).await;
        assert_eq!(&d.data, b"1");
        assert_eq!(
            deaths(&d.properties),
            vec![("head".to_string(), "maxlen".to_string(), 1)]
        );
        d.ack(BasicAckOptions::default()).await.expect("ack");

        // reject-publish-dlx: the publisher gets a nack, the message is
        // dead-lettered; reject-publish: a nack only.
        let (_c2, cch) = broker.channel().await;
        confirm(&cch).await;
        for (name, mode) in [("rp-dlx", "reject-publish-dlx"), ("rp", "reject-publish")] {
            let mut a = table(&dl);
            a.insert("x-max-length".into(), AMQPValue::LongInt(1));
            a.insert("x-overflow".into(), text(mode));
            queue(&cch, name, Default::default(), a).await;
            let fits = cch
                .basic_publish(
                    "".into(),
                    name.into(),
                    Default::default(),
                    b"fits",
                    BasicProperties::default(),
                )
                .await
                .expect("publish")
                .await
                .expect("confirm");
            assert!(fits.is_ack());
            let over = cch
                .basic_publish(
                    "".into(),
                    name.into(),
                    Default::default(),
                    b"over",
                    BasicProperties::default(),
                )
                .await
                .expect("publish")
                .await
                .expect("confirm");
            assert!(over.is_nack(), "{mode}: {over:?}");
            assert_eq!(ready_count(&cch, name).await.expect("count"), 1);
        }
        let d = next_delivery(&mut dlc).await;
        assert_eq!(&d.data, b"over");
        assert_eq!(
            deaths(&d.properties),
            vec![("rp-dlx".to_string(), "maxlen".to_string(), 1)]
        );
        let more = tokio::time::timeout(
            Duration::from_millis(200),
            futures_lite::StreamExt::next(&mut dlc),
        )
        .await;
        assert!(
            more.is_err(),
            "reject-publish does not dead-letter: {more:?}"
        );

        // x-max-length-bytes counts body bytes.
        queue(
            &ch,
            "bytes",
            Default::default(),
            table(&[("x-max-length-bytes", AMQPValue::LongInt(10))]),
        )
        .await;
        for b in ["aaaa", "bbbb", "cccc"] {
            publish(&ch, "", "bytes", b.as_bytes()).await;
        }
        assert_eq!(ready_count(&ch, "bytes").await.expect("count"), 2);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_expiry_only_cycle_back_into_the_same_queue_is_dropped() {
    within(async {
        let broker = Broker::start().await;
        let (_c, ch) = broker.channel().await;
        let a = table(&[
            ("x-message-ttl", AMQPValue::LongInt(20)),
            ("x-dead-letter-exchange", text("")),
        ]);
        queue(&ch, "loop", Default::default(), a).await;
        publish(&ch, "", "loop", b"round and round").await;
        common::wait_for_count(&ch, "loop", 0).await;
        // And it does not come back.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(ready_count(&ch, "loop").await.expect("count"), 0);
        broker.stop().await;
    })
    .await;
}

/// Dead letters of persistent messages between durable queues are stored
/// in the new queue and gone from the old one after a restart.
#[tokio::test]
async fn persistent_dead_letters_survive_a_restart() {
    within(async {
        let dir = common::fresh_data_dir();
        let broker = Broker::start_in(dir.clone(), |_| {}).await;
        let (_c, ch) = broker.channel().await;
        queue(&ch, "parked", durable(), FieldTable::default()).await;
        let a = table(&[
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text("parked")),
        ]);
        queue(&ch, "jobs", durable(), a).await;
        confirm(&ch).await;
        for i in 0..20 {
            publish_with(&ch, "", "jobs", format!("m{i}").as_bytes(), persistent()).await;
        }
        let mut jobs = consume(&ch, "jobs").await;
        for _ in 0..20 {
            let d = next_delivery(&mut jobs).await;
            d.nack(BasicNackOptions {
                multiple: false,
                requeue: false,
            })
            .await
            .expect("nack");
        }
        wait_for_count(&ch, "parked", 20).await;
        broker.stop().await;

        let broker = Broker::start_in(dir.clone(), |_| {}).await;
        let (_c, ch) = broker.channel().await;
        assert_eq!(ready_count(&ch, "jobs").await.expect("count"), 0);
        assert_eq!(ready_count(&ch, "parked").await.expect("count"), 20);
        let mut parked = consume(&ch, "parked").await;
        for i in 0..20 {
            let d = next_delivery(&mut parked).await;
            assert_eq!(d.data, format!("m{i}").into_bytes());
            assert_eq!(d.properties.delivery_mode(), &Some(2));
        }
        broker.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

/// A message whose TTL runs out while the broker is down is dead-lettered
/// when it starts.
#[tokio::test]
async fn messages_that_expire_while_the_broker_is_down_are_dead_lettered_at_start() {
    within(async {
        let dir = common::fresh_data_dir();
        let broker = Broker::start_in(dir.clone(), |_| {}).await;
        let (_c, ch) = broker.channel().await;
        queue(&ch, "late", durable(), FieldTable::default()).await;
        let a = table(&[
            ("x-message-ttl", AMQPValue::LongInt(200)),
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text("late")),
        ]);
        queue(&ch, "timed", durable(), a).await;
        confirm(&ch).await;
        publish_with(&ch, "", "timed", b"tick", persistent()).await;
        broker.stop().await;
        tokio::time::sleep(Duration::from_millis(400)).await;

        let broker = Broker::start_in(dir.clone(), |_| {}).await;
        let (_c, ch) = broker.channel().await;
        wait_for_count(&ch, "late", 1).await;
        assert_eq!(ready_count(&ch, "timed").await.expect("count"), 0);
        broker.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

/// The x-delivery-count header of a delivery, if any.
fn delivery_count(props: &BasicProperties) -> Option<i64> {
    match props.headers().as_ref()?.inner().get("x-delivery-count")? {
        AMQPValue::LongLongInt(n) => Some(*n),
        other => panic!("x-delivery-count is {other:?}"),
    }
}

async fn get_one(ch: &Channel, queue: &str) -> lapin::message::BasicGetMessage {
    for _ in 0..100 {
        if let Some(m) = ch
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .expect("basic.get")
        {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nothing to get from {queue}");
}

/// x-delivery-limit: a message returned more often than the limit is
/// dead-lettered (reason delivery_limit); consumers see the count in
/// x-delivery-count, and it survives a restart.
#[tokio::test]
async fn the_delivery_limit_counts_across_a_restart() {
    within(async {
        let dir = common::fresh_data_dir();
        let broker = Broker::start_in(dir.clone(), |_| {}).await;
        let (_c, ch) = broker.channel().await;
        queue(&ch, "poisoned", durable(), FieldTable::default()).await;
        let a = table(&[
            ("x-delivery-limit", AMQPValue::LongInt(2)),
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text("poisoned")),
        ]);
        queue(&ch, "inbox", durable(), a).await;
        confirm(&ch).await;
        publish_with(&ch, "", "inbox", b"poison", persistent()).await;
        let requeue = BasicNackOptions {
            multiple: false,
            requeue: true,
        };
        // basic.get shows the count from 0, as RabbitMQ's quorum queues do.
        for expected in [Some(0), Some(1)] {
            let m = get_one(&ch, "inbox").await;
            assert_eq!(delivery_count(&m.delivery.properties), expected);
            m.delivery.nack(requeue).await.expect("nack");
        }
        assert_eq!(ready_count(&ch, "inbox").await.expect("count"), 1);
        broker.stop().await;

        let broker = Broker::start_in(dir.clone(), |_| {}).await;
        let (_c, ch) = broker.channel().await;
        let m = get_one(&ch, "inbox").await;
        assert_eq!(
            delivery_count(&m.delivery.properties),
            Some(2),
            "count kept across the restart"
        );
        m.delivery.nack(requeue).await.expect("nack");
        let dead = get_one(&ch, "poisoned").await;
        assert_eq!(&dead.delivery.data, b"poison");
        assert_eq!(
            deaths(&dead.delivery.properties),
            vec![("inbox".to_string(), "delivery_limit".to_string(), 1)]
        );
        assert_eq!(ready_count(&ch, "inbox").await.expect("count"), 0);
        broker.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
