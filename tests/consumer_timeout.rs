//! Consumer timeouts: a delivery held past its consumer's timeout goes
//! back to its queue (redelivered, its delivery count up) and another
//! consumer gets it; the late consumer is cancelled with basic.cancel
//! while its channel and its other deliveries go on, and its late ack is
//! ignored. With `consumer_timeout_closes_channel`, RabbitMQ's behaviour:
//! the channel is closed with 406.

mod common;

use std::time::Duration;

use common::{bounded, Broker};
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};

fn args(pairs: &[(&str, i64)]) -> FieldTable {
    common::table(
        &pairs
            .iter()
            .map(|(k, v)| (*k, AMQPValue::LongLongInt(*v)))
            .collect::<Vec<_>>(),
    )
}

async fn consume(ch: &lapin::Channel, queue: &str, tag: &str) -> lapin::Consumer {
    ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    ch.basic_consume(
        queue.into(),
        tag.into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_held_delivery_goes_to_another_consumer_and_the_channel_goes_on() {
    bounded(Duration::from_secs(30), async {
        let b = Broker::start().await;
        let (_ca, a) = b.channel().await;
        let q = "timed";
        let queue_args = args(&[("x-consumer-timeout", 1000), ("x-delivery-limit", 5)]);
        a.queue_declare(q.into(), QueueDeclareOptions::default(), queue_args)
            .await
            .unwrap();
        common::publish(&a, "", q, b"got").await;
        common::publish(&a, "", q, b"held").await;
        common::wait_for_count(&a, q, 2).await;
        // A basic.get delivery has no consumer and no timeout.
        let got = a
            .basic_get(q.into(), BasicGetOptions::default())
            .await
            .unwrap()
            .expect("m0");
        let mut late = consume(&a, q, "late").await;
        let held = late.next().await.expect("a delivery").expect("ok");
        assert_eq!(&held.data[..], b"held");
        // Cancelled by the server once the timeout has passed.
        let ended = tokio::time::timeout(Duration::from_secs(5), late.next()).await;
        assert!(
            matches!(ended, Ok(None)),
            "the late consumer was not cancelled: {ended:?}"
        );

        let (_cb, other) = b.channel().await;
        let mut next = consume(&other, q, "next").await;
        let again = next.next().await.expect("a delivery").expect("ok");
        assert_eq!(&again.data[..], b"held");
        assert!(again.redelivered);
        let count = again
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-delivery-count").cloned());
        assert_eq!(count, Some(AMQPValue::LongLongInt(1)));
        again.ack(BasicAckOptions::default()).await.unwrap();

        // A late ack naming the taken-back delivery (here: all up to it,
        // the basic.get one included) is no error; the channel goes on.
        assert!(held.delivery_tag > got.delivery_tag);
        let up_to = BasicAckOptions { multiple: true };
        held.ack(up_to).await.unwrap();
        common::passive_declare(&a, q)
            .await
            .expect("the channel is open");
        assert!(a.status().connected());
        assert_eq!(common::ready_count(&a, q).await.unwrap(), 0);
        b.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_rabbitmq_behaviour_closes_the_channel() {
    bounded(Duration::from_secs(30), async {
        let b = Broker::start_with(|c| {
            c.consumer_timeout_ms = 1000;
            c.consumer_timeout_closes_channel = true;
        })
        .await;
        let (_c, ch) = b.channel().await;
        common::declare_queue(&ch, "strict").await;
        common::publish(&ch, "", "strict", b"m").await;
        let mut consumer = consume(&ch, "strict", "c").await;
        let _held = consumer.next().await.expect("a delivery").expect("ok");
        for _ in 0..50 {
            if !ch.status().connected() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!ch.status().connected(), "the channel is still open");
        let (_c2, check) = b.channel().await;
        common::wait_for_count(&check, "strict", 1).await;
        b.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_reused_consumer_tag_is_not_cancelled_for_its_predecessor() {
    bounded(Duration::from_secs(30), async {
        let b = Broker::start().await;
        let (_c, ch) = b.channel().await;
        let queue_args = args(&[("x-consumer-timeout", 1000)]);
        ch.queue_declare("reuse".into(), QueueDeclareOptions::default(), queue_args)
            .await
            .unwrap();
        common::publish(&ch, "", "reuse", b"m").await;
        let mut first = consume(&ch, "reuse", "w").await;
        let held = first.next().await.expect("a delivery").expect("ok");
        // The client cancels "w" itself, still holding the delivery, and
        // starts a new consumer under the same tag.
        ch.basic_cancel("w".into(), Default::default())
            .await
            .unwrap();
        let mut second = ch
            .basic_consume(
                "reuse".into(),
                "w".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        // The old delivery times out and comes back to the new consumer,
        // which is not cancelled for it.
        let again = tokio::time::timeout(Duration::from_secs(5), second.next())
            .await
            .expect("redelivered in time")
            .expect("the new consumer still runs")
            .expect("ok");
        assert_eq!(&again.data[..], b"m");
        assert!(again.redelivered);
        assert!(again.delivery_tag > held.delivery_tag);
        again.ack(BasicAckOptions::default()).await.unwrap();
        common::passive_declare(&ch, "reuse")
            .await
            .expect("the channel is open");
        b.stop().await;
    })
    .await;
}
