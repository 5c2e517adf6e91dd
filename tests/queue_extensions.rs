//! Consumer-side queue extensions through lapin: single active consumer,
//! consumer priorities (x-priority), and x-expires.

mod common;

use std::time::Duration;

use common::{assert_code, next_delivery, publish, ready_count, table, within, Broker};
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Consumer};

async fn consumer(ch: &Channel, queue: &str, tag: &str, a: FieldTable) -> Consumer {
    ch.basic_consume(queue.into(), tag.into(), BasicConsumeOptions::default(), a)
        .await
        .expect("basic.consume")
}

/// No delivery arrives within a short while.
async fn quiet(c: &mut Consumer) {
    let got =
        tokio::time::timeout(Duration::from_millis(200), futures_lite::StreamExt::next(c)).await;
    assert!(got.is_err(), "unexpected delivery {got:?}");
}

#[tokio::test]
async fn a_single_active_consumer_gets_everything_until_it_goes() {
    within(async {
        let broker = Broker::start().await;
        let (_c, ch) = broker.channel().await;
        let a = table(&[("x-single-active-consumer", AMQPValue::Boolean(true))]);
        ch.queue_declare("sac".into(), Default::default(), a)
            .await
            .expect("declare");
        let mut first = consumer(&ch, "sac", "first", FieldTable::default()).await;
        let mut second = consumer(&ch, "sac", "second", FieldTable::default()).await;
        for b in ["1", "2", "3"] {
            publish(&ch, "", "sac", b.as_bytes()).await;
        }
        for b in ["1", "2", "3"] {
            let d = next_delivery(&mut first).await;
            assert_eq!(d.data, b.as_bytes());
            d.ack(BasicAckOptions::default()).await.expect("ack");
        }
        quiet(&mut second).await;
        ch.basic_cancel("first".into(), BasicCancelOptions::default())
            .await
            .expect("cancel");
        publish(&ch, "", "sac", b"4").await;
        assert_eq!(&next_delivery(&mut second).await.data, b"4");
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn higher_priority_consumers_are_served_first() {
    within(async {
        let broker = Broker::start().await;
        let (_c, ch) = broker.channel().await;
        ch.queue_declare("prio".into(), Default::default(), FieldTable::default())
            .await
            .expect("declare");
        ch.basic_qos(2, BasicQosOptions::default())
            .await
            .expect("qos");
        let mut low = consumer(&ch, "prio", "low", FieldTable::default()).await;
        let mut high = consumer(
            &ch,
            "prio",
            "high",
            table(&[("x-priority", AMQPValue::LongInt(10))]),
        )
        .await;
        for i in 0..4 {
            publish(&ch, "", "prio", format!("m{i}").as_bytes()).await;
        }
        // The high-priority consumer takes what its prefetch allows; the
        // rest goes to the low one.
        assert_eq!(&next_delivery(&mut high).await.data, b"m0");
        assert_eq!(&next_delivery(&mut high).await.data, b"m1");
        assert_eq!(&next_delivery(&mut low).await.data, b"m2");
        assert_eq!(&next_delivery(&mut low).await.data, b"m3");
        // A non-integer priority is refused.
        let (_c2, ch2) = broker.channel().await;
        let bad = table(&[(
            "x-priority",
            AMQPValue::LongString(LongString::from("high")),
        )]);
        let r = ch2
            .basic_consume(
                "prio".into(),
                "bad".into(),
                BasicConsumeOptions::default(),
                bad,
            )
            .await;
        assert_code(r, 406);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_unused_queue_expires_and_a_used_one_does_not() {
    within(async {
        let broker = Broker::start().await;
        let (_c, ch) = broker.channel().await;
        let a = table(&[("x-expires", AMQPValue::LongInt(1_000))]);
        ch.queue_declare("fades".into(), Default::default(), a.clone())
            .await
            .expect("declare");
        ch.queue_declare("kept".into(), Default::default(), a)
            .await
            .expect("declare");
        let _c = consumer(&ch, "kept", "keeper", FieldTable::default()).await;
        // Not polled: a passive declare is a use, renewing the lease.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let (_c2, ch2) = broker.channel().await;
        assert_code(ready_count(&ch2, "fades").await, 404);
        assert_eq!(
            ready_count(&ch, "kept").await.expect("kept is still there"),
            0
        );
        broker.stop().await;
    })
    .await;
}

/// Direct reply-to: the requester consumes amq.rabbitmq.reply-to without
/// acks and publishes with that reply_to; the server's reply to the
/// rewritten name reaches it without any queue.
#[tokio::test]
async fn direct_reply_to_routes_replies_to_the_requesting_channel() {
    within(async {
        let broker = Broker::start().await;
        let (_c, server) = broker.channel().await;
        server
            .queue_declare("rpc".into(), Default::default(), FieldTable::default())
            .await
            .expect("declare");
        let mut requests = consumer(&server, "rpc", "server", FieldTable::default()).await;

        let (_c2, client) = broker.channel().await;
        // Without a reply consumer, such a publish is refused (406).
        let (_c3, early) = broker.channel().await;
        let props = lapin::BasicProperties::default()
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_correlation_id("c1".into());
        early
            .basic_publish(
                "".into(),
                "rpc".into(),
                Default::default(),
                b"x",
                props.clone(),
            )
            .await
            .expect("publish");
        // The channel is closed (406 fast reply consumer does not exist;
        // the conformance suites check code and text): the next request on
        // it fails, with the 406 itself or, when the close arrived first,
        // as a request on a closed channel.
        let closed = ready_count(&early, "rpc")
            .await
            .expect_err("channel closed");
        assert!(
            matches!(common::reply_code(&closed), Some(406) | None),
            "{closed:?}"
        );
        assert!(!early.status().connected(), "channel still open");

        let mut replies = client
            .basic_consume(
                "amq.rabbitmq.reply-to".into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume replies");
        let info = client
            .queue_declare(
                "amq.rabbitmq.reply-to".into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("passive declare of the pseudo-queue");
        assert_eq!(info.consumer_count(), 1);
        client
            .basic_publish("".into(), "rpc".into(), Default::default(), b"2+2", props)
            .await
            .expect("publish request");
        let request = next_delivery(&mut requests).await;
        let reply_to = request.properties.reply_to().clone().expect("reply_to");
        assert!(
            reply_to.as_str().starts_with("amq.rabbitmq.reply-to."),
            "{reply_to}"
        );
        request.ack(BasicAckOptions::default()).await.expect("ack");
        server
            .basic_publish(
                "".into(),
                reply_to.as_str().into(),
                Default::default(),
                b"4",
                lapin::BasicProperties::default().with_correlation_id("c1".into()),
            )
            .await
            .expect("publish reply");
        let reply = next_delivery(&mut replies).await;
        assert_eq!(&reply.data, b"4");
        assert_eq!(
            reply
                .properties
                .correlation_id()
                .as_ref()
                .map(|c| c.as_str()),
            Some("c1")
        );
        // A reply to a name nobody holds is dropped without an error.
        publish(&server, "", "amq.rabbitmq.reply-to.nobody", b"lost").await;
        assert_eq!(
            ready_count(&server, "rpc")
                .await
                .expect("server channel still open"),
            0
        );
        broker.stop().await;
    })
    .await;
}

/// x-max-priority on a durable queue: higher priorities first, FIFO within
/// one, and the order survives a restart.
#[tokio::test]
async fn a_durable_priority_queue_keeps_its_order_across_a_restart() {
    within(async {
        let dir = common::fresh_data_dir();
        let broker = Broker::start_in(dir.clone(), |_| {}).await;
        let (_c, ch) = broker.channel().await;
        let a = table(&[("x-max-priority", AMQPValue::ShortShortUInt(5))]);
        ch.queue_declare("urgent".into(), common::durable(), a)
            .await
            .expect("declare");
        common::confirm(&ch).await;
        for (body, p) in [("a0", 0), ("b5", 5), ("c1", 1), ("d9", 9), ("e5", 5)] {
            let props = common::persistent().with_priority(p);
            common::publish_with(&ch, "", "urgent", body.as_bytes(), props).await;
        }
        broker.stop().await;
        let broker = Broker::start_in(dir.clone(), |_| {}).await;
        let (_c, ch) = broker.channel().await;
        let mut out = Vec::new();
        for _ in 0..5 {
            let m = ch
                .basic_get("urgent".into(), BasicGetOptions { no_ack: true })
                .await
                .expect("get")
                .expect("a message");
            out.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
        }
        // 9 counts as the maximum, 5, and is first in its level.
        assert_eq!(out, ["b5", "d9", "e5", "c1", "a0"]);
        broker.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

async fn delayed_exchange(ch: &Channel, name: &str, durable: bool) {
    let a = table(&[(
        "x-delayed-type",
        AMQPValue::LongString(LongString::from("direct")),
    )]);
    ch.exchange_declare(
        name.into(),
        lapin::ExchangeKind::Custom("x-delayed-message".into()),
        ExchangeDeclareOptions {
            durable,
            ..Default::default()
        },
        a,
    )
    .await
    .expect("declare delayed exchange");
}

fn delay(ms: i32) -> lapin::BasicProperties {
    common::persistent().with_headers(table(&[("x-delay", AMQPValue::LongInt(ms))]))
}

#[tokio::test]
async fn delayed_messages_are_routed_when_due_in_due_order() {
    within(async {
        let broker = Broker::start().await;
        let (_c, ch) = broker.channel().await;
        delayed_exchange(&ch, "later", false).await;
        ch.queue_declare("soon".into(), Default::default(), FieldTable::default())
            .await
            .expect("declare");
        ch.queue_bind(
            "soon".into(),
            "later".into(),
            "k".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
        // Delays long enough that a slow machine still counts before "fast"
        // is due.
        common::publish_with(&ch, "later", "k", b"slow", delay(2_000)).await;
        common::publish_with(&ch, "later", "k", b"fast", delay(1_000)).await;
        common::publish_with(&ch, "later", "k", b"now", common::persistent()).await;
        assert_eq!(
            ready_count(&ch, "soon").await.expect("count"),
            1,
            "only the undelayed one"
        );
        let mut c = consumer(&ch, "soon", "c", FieldTable::default()).await;
        let order: Vec<Vec<u8>> = [
            next_delivery(&mut c).await,
            next_delivery(&mut c).await,
            next_delivery(&mut c).await,
        ]
        .into_iter()
        .map(|d| d.data)
        .collect();
        assert_eq!(order, [b"now".to_vec(), b"fast".to_vec(), b"slow".to_vec()]);
        // Without x-delayed-type the exchange cannot be declared.
        let (_c2, ch2) = broker.channel().await;
        let r = ch2
            .exchange_declare(
                "broken".into(),
                lapin::ExchangeKind::Custom("x-delayed-message".into()),
                Default::default(),
                FieldTable::default(),
            )
            .await;
        assert_code(r, 406);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn delayed_messages_survive_a_restart_and_do_not_fire_early() {
    within(async {
        let dir = common::fresh_data_dir();
        let broker = Broker::start_in(dir.clone(), |_| {}).await;
        let (_c, ch) = broker.channel().await;
        delayed_exchange(&ch, "durable-later", true).await;
        ch.queue_declare("target".into(), common::durable(), FieldTable::default())
            .await
            .expect("declare");
        ch.queue_bind(
            "target".into(),
            "durable-later".into(),
            "k".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
        common::confirm(&ch).await;
        // Due after the restart even on a slow machine.
        common::publish_with(&ch, "durable-later", "k", b"tick", delay(3_000)).await;
        broker.stop().await;

        let broker = Broker::start_in(dir.clone(), |_| {}).await;
        let (_c, ch) = broker.channel().await;
        assert_eq!(
            ready_count(&ch, "target").await.expect("count"),
            0,
            "not yet due"
        );
        common::wait_for_count(&ch, "target", 1).await;
        broker.stop().await;
        // Routed and stored in the queue: gone from the delayed log, so a
        // further restart does not route it again.
        let broker = Broker::start_in(dir.clone(), |_| {}).await;
        let (_c, ch) = broker.channel().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(ready_count(&ch, "target").await.expect("count"), 1);
        broker.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

// ---------------------------------------------------------------------------
// Regressions found in review (each failed before its fix).

/// A single active consumer's unacked messages go to its successor before
/// anything newer when its channel closes.
#[tokio::test]
async fn single_active_consumer_failover_keeps_the_order() {
    within(async {
        let broker = Broker::start().await;
        let (_c, ch) = broker.channel().await;
        let a = table(&[("x-single-active-consumer", AMQPValue::Boolean(true))]);
        ch.queue_declare("sac-order".into(), Default::default(), a)
            .await
            .expect("declare");
        let (_ca, cha) = broker.channel().await;
        cha.basic_qos(5, BasicQosOptions::default())
            .await
            .expect("qos");
        let mut first = consumer(&cha, "sac-order", "first", FieldTable::default()).await;
        let (_cb, chb) = broker.channel().await;
        let mut second = consumer(&chb, "sac-order", "second", FieldTable::default()).await;
        for i in 0..8 {
            publish(&ch, "", "sac-order", format!("{i}").as_bytes()).await;
        }
        for _ in 0..5 {
            next_delivery(&mut first).await;
        }
        cha.close(200, "bye".into()).await.expect("close");
        let mut got = Vec::new();
        for _ in 0..8 {
            got.push(String::from_utf8(next_delivery(&mut second).await.data).expect("utf8"));
        }
        assert_eq!(got, ["0", "1", "2", "3", "4", "5", "6", "7"]);
        broker.stop().await;
    })
    .await;
}

/// A direct reply and a delayed message published in a transaction that
/// is rolled back never happen.
#[tokio::test]
async fn rolled_back_replies_and_delayed_messages_do_not_happen() {
    within(async {
        let broker = Broker::start().await;
        let (_c, client) = broker.channel().await;
        let mut replies = client
            .basic_consume(
                "amq.rabbitmq.reply-to".into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume replies");
        client
            .queue_declare("rpc-tx".into(), Default::default(), FieldTable::default())
            .await
            .expect("declare");
        let props = lapin::BasicProperties::default().with_reply_to("amq.rabbitmq.reply-to".into());
        publish_props(&client, "", "rpc-tx", b"req", props).await;
        let (_s, server) = broker.channel().await;
        let req = server
            .basic_get("rpc-tx".into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
            .expect("request");
        let name = req
            .delivery
            .properties
            .reply_to()
            .clone()
            .expect("reply_to");
        delayed_exchange(&server, "tx-later", false).await;
        server
            .queue_declare(
                "tx-target".into(),
                Default::default(),
                FieldTable::default(),
            )
            .await
            .expect("declare");
        server
            .queue_bind(
                "tx-target".into(),
                "tx-later".into(),
                "k".into(),
                Default::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
        server.tx_select().await.expect("tx.select");
        publish_props(
            &server,
            "",
            name.as_str(),
            b"rolled back",
            Default::default(),
        )
        .await;
        publish_props(&server, "tx-later", "k", b"rolled back", delay(50)).await;
        server.tx_rollback().await.expect("rollback");
        quiet(&mut replies).await;
        assert_eq!(ready_count(&server, "tx-target").await.expect("count"), 0);
        publish_props(&server, "", name.as_str(), b"committed", Default::default()).await;
        server.tx_commit().await.expect("commit");
        assert_eq!(&next_delivery(&mut replies).await.data, b"committed");
        broker.stop().await;
    })
    .await;
}

async fn publish_props(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: lapin::BasicProperties,
) {
    ch.basic_publish(exchange.into(), key.into(), Default::default(), body, props)
        .await
        .expect("publish");
}

/// A request with a BCC header keeps its rewritten reply_to.
#[tokio::test]
async fn a_bcc_header_does_not_undo_the_reply_to_rewrite() {
    within(async {
        let broker = Broker::start().await;
        let (_c, ch) = broker.channel().await;
        let _replies = ch
            .basic_consume(
                "amq.rabbitmq.reply-to".into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume replies");
        ch.queue_declare("bcc-a".into(), Default::default(), FieldTable::default())
            .await
            .expect("declare");
        ch.queue_declare("bcc-b".into(), Default::default(), FieldTable::default())
            .await
            .expect("declare");
        let bcc =
            AMQPValue::FieldArray(vec![AMQPValue::LongString(LongString::from("bcc-b"))].into());
        let props = lapin::BasicProperties::default()
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_headers(table(&[("BCC", bcc)]));
        publish_props(&ch, "", "bcc-a", b"req", props).await;
        for q in ["bcc-a", "bcc-b"] {
            let m = ch
                .basic_get(q.into(), BasicGetOptions { no_ack: true })
                .await
                .expect("get")
                .expect("request");
            let reply_to = m.delivery.properties.reply_to().clone().expect("reply_to");
            assert!(
                reply_to.as_str().starts_with("amq.rabbitmq.reply-to."),
                "{q}: {reply_to}"
            );
        }
        broker.stop().await;
    })
    .await;
}

/// Publishing to an internal delayed exchange is refused (403), as for any
/// internal exchange, instead of being held and dropped later.
#[tokio::test]
async fn an_internal_delayed_exchange_refuses_publishes() {
    within(async {
        let broker = Broker::start().await;
        let (_c, ch) = broker.channel().await;
        let a = table(&[(
            "x-delayed-type",
            AMQPValue::LongString(LongString::from("direct")),
        )]);
        ch.exchange_declare(
            "inner-later".into(),
            lapin::ExchangeKind::Custom("x-delayed-message".into()),
            ExchangeDeclareOptions {
                internal: true,
                ..Default::default()
            },
            a,
        )
        .await
        .expect("declare");
        publish_props(&ch, "inner-later", "k", b"x", delay(50)).await;
        // The channel is closed with 403: the next request on it fails with
        // the 403 itself or, when the close arrived first, as a request on
        // a closed channel.
        let closed = ready_count(&ch, "nothing-here")
            .await
            .expect_err("channel closed");
        assert!(
            matches!(common::reply_code(&closed), Some(403) | None),
            "{closed:?}"
        );
        assert!(!ch.status().connected(), "channel still open");
        broker.stop().await;
    })
    .await;
}
