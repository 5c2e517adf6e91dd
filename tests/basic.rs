//! basic.*: publish/consume/get, properties and bodies, returns,
//! acknowledgements, redelivery, prefetch and consumer fairness.

mod common;

use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Consumer};

async fn consume(ch: &Channel, q: &str, tag: &str) -> Consumer {
    ch.basic_consume(
        q.into(),
        tag.into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("basic.consume")
}

fn rich_headers() -> FieldTable {
    let mut nested = FieldTable::default();
    nested.insert(
        "inner".into(),
        AMQPValue::LongString(LongString::from("deep")),
    );
    nested.insert("n".into(), AMQPValue::LongLongInt(-1));
    let array = FieldArray::from(vec![
        AMQPValue::LongInt(1),
        AMQPValue::LongString(LongString::from("two")),
        AMQPValue::Boolean(false),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Double(0.5)])),
        AMQPValue::Void,
    ]);
    let mut h = FieldTable::default();
    h.insert("bool".into(), AMQPValue::Boolean(true));
    h.insert("i8".into(), AMQPValue::ShortShortInt(-8));
    h.insert("u8".into(), AMQPValue::ShortShortUInt(200));
    h.insert("i16".into(), AMQPValue::ShortInt(-1616));
    h.insert("u16".into(), AMQPValue::ShortUInt(61616));
    h.insert("i32".into(), AMQPValue::LongInt(-32_323_232));
    h.insert("u32".into(), AMQPValue::LongUInt(3_232_323_232));
    h.insert("i64".into(), AMQPValue::LongLongInt(-6_464_646_464_646_464));
    h.insert("f32".into(), AMQPValue::Float(1.5));
    h.insert("f64".into(), AMQPValue::Double(-2.25e100));
    h.insert(
        "decimal".into(),
        AMQPValue::DecimalValue(DecimalValue {
            scale: 2,
            value: 12345,
        }),
    );
    h.insert(
        "str".into(),
        AMQPValue::LongString(LongString::from("héllo wörld")),
    );
    h.insert(
        "binary-str".into(),
        AMQPValue::LongString(LongString::from(vec![0u8, 0xff, 0xce, 1, 2])),
    );
    h.insert(
        "empty-str".into(),
        AMQPValue::LongString(LongString::from("")),
    );
    h.insert("array".into(), AMQPValue::FieldArray(array));
    h.insert("ts".into(), AMQPValue::Timestamp(1_700_000_000));
    h.insert("table".into(), AMQPValue::FieldTable(nested));
    h.insert(
        "bytes".into(),
        AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 2, 0xce, 0xff])),
    );
    h.insert("void".into(), AMQPValue::Void);
    h
}

fn full_properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/octet-stream".into())
        .with_content_encoding("identity".into())
        .with_headers(rich_headers())
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("corr-42".into())
        .with_reply_to("reply-here".into())
        .with_expiration("600000".into())
        .with_message_id("msg-1".into())
        .with_timestamp(1_234_567_890)
        .with_type("test.type".into())
        .with_user_id("guest".into())
        .with_app_id("warren-tests".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_and_headers_survive_the_trip() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        let q = temp_queue(&ch).await;
        let mut consumer = consume(&ch, &q, "props").await;
        let props = full_properties();
        publish_with(&ch, "", &q, b"payload", props.clone()).await;
        let d = next_delivery(&mut consumer).await;
        assert_eq!(d.data, b"payload");
        assert_eq!(d.properties, props);
        assert_eq!(d.exchange.as_str(), "");
        assert_eq!(d.routing_key.as_str(), q);
        assert!(!d.redelivered);

        // Same through basic.get, and with no properties at all.
        publish_with(&ch, "", &q, b"again", props.clone()).await;
        publish(&ch, "", &q, b"bare").await;
        let (_conn2, ch2) = broker.channel().await;
        let q2 = temp_queue(&ch2).await;
        publish_with(&ch2, "", &q2, b"via get", props.clone()).await;
        publish(&ch2, "", &q2, b"bare").await;
        let m = ch2
            .basic_get(q2.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.delivery.properties, props);
        let m = ch2
            .basic_get(q2.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.delivery.properties, BasicProperties::default());
        let d = next_delivery(&mut consumer).await;
        assert_eq!(d.properties, props);
        let d = next_delivery(&mut consumer).await;
        assert_eq!(d.properties, BasicProperties::default());
    })
    .await
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

async fn roundtrip_sizes(broker: &Broker, sizes: &[usize]) {
    let (_conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    let mut consumer = consume(&ch, &q, "sizes").await;
    for &n in sizes {
        publish(&ch, "", &q, &pattern(n)).await;
    }
    for &n in sizes {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(d.data.len(), n, "body length");
        assert!(d.data == pattern(n), "body of {n} bytes differs");
    }
    // And via basic.get.
    let q2 = temp_queue(&ch).await;
    for &n in sizes {
        publish(&ch, "", &q2, &pattern(n)).await;
    }
    for &n in sizes {
        let m = ch
            .basic_get(q2.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("a message");
        assert!(
            m.delivery.data == pattern(n),
            "body of {n} bytes differs via get"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_empty_large_and_on_frame_boundaries() {
    within(async {
        let broker = Broker::start().await;
        // frame_max 131072: a body frame carries at most 131064 bytes.
        roundtrip_sizes(
            &broker,
            &[0, 1, 131_063, 131_064, 131_065, 262_128, 1 << 20],
        )
        .await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_frame_bodies_with_small_frame_max() {
    within(async {
        // lapin never accepts less than 8192 (its FRAME_MIN_SIZE), so use
        // that: a body frame then carries at most 8184 bytes.
        let broker = Broker::start_with(|c| c.frame_max = 8192).await;
        roundtrip_sizes(&broker, &[0, 8183, 8184, 8185, 100_000, 1 << 20]).await;
        broker.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_unroutable_is_returned_312() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        let missing = uniq("nowhere");
        let props = BasicProperties::default()
            .with_message_id("ret-1".into())
            .with_headers(rich_headers());
        ch.basic_publish(
            "".into(),
            missing.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"come back",
            props.clone(),
        )
        .await
        .unwrap();
        // Not mandatory: silently dropped.
        ch.basic_publish(
            "".into(),
            missing.as_str().into(),
            BasicPublishOptions::default(),
            b"dropped",
            BasicProperties::default(),
        )
        .await
        .unwrap();
        ch.basic_publish(
            "amq.direct".into(),
            "no-binding".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"",
            BasicProperties::default(),
        )
        .await
        .unwrap();
        // A synchronous round trip: the returns precede its reply.
        temp_queue(&ch).await;
        let returned = ch.wait_for_confirms().await.unwrap();
        assert_eq!(returned.len(), 2, "{returned:?}");
        let r = &returned[0];
        assert_eq!(r.reply_code, 312);
        assert_eq!(r.reply_text.as_str(), "NO_ROUTE");
        assert_eq!(r.delivery.exchange.as_str(), "");
        assert_eq!(r.delivery.routing_key.as_str(), missing);
        assert_eq!(r.delivery.data, b"come back");
        assert_eq!(r.delivery.properties, props);
        let r = &returned[1];
        assert_eq!(r.reply_code, 312);
        assert_eq!(r.delivery.exchange.as_str(), "amq.direct");
        assert_eq!(r.delivery.routing_key.as_str(), "no-binding");
        assert!(r.delivery.data.is_empty());
        assert!(ch.status().connected());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_get_empty() {
    within(async {
        let broker = Broker::start().await;
        let (conn, ch) = broker.channel().await;
        let q = temp_queue(&ch).await;
        assert!(ch
            .basic_get(q.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()
            .is_none());
        for b in ["a", "b", "c"] {
            publish(&ch, "", &q, b.as_bytes()).await;
        }
        let mut tags = Vec::new();
        for (body, remaining) in [("a", 2), ("b", 1), ("c", 0)] {
            let m = ch
                .basic_get(q.as_str().into(), BasicGetOptions::default())
                .await
                .unwrap()
                .expect("message");
            assert_eq!(m.delivery.data, body.as_bytes());
            assert_eq!(m.message_count, remaining);
            assert!(!m.delivery.redelivered);
            assert_eq!(m.delivery.routing_key.as_str(), q);
            tags.push(m.delivery.delivery_tag);
        }
        assert_eq!(
            tags,
            vec![1, 2, 3],
            "delivery tags count from 1 per channel"
        );
        assert!(ch
            .basic_get(q.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()
            .is_none());
        ch.basic_ack(3, BasicAckOptions { multiple: true })
            .await
            .unwrap();
        // Acked: nothing comes back when the channel closes.
        ch.close(200, "".into()).await.unwrap();
        let ch2 = conn.create_channel().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(ch2
            .basic_get(q.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()
            .is_none());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_nack_reject_requeue_in_original_order() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        let q = temp_queue(&ch).await;
        for i in 0..5 {
            publish(&ch, "", &q, format!("m{i}").as_bytes()).await;
        }
        let mut tags = Vec::new();
        for _ in 0..5 {
            let m = ch
                .basic_get(q.as_str().into(), BasicGetOptions::default())
                .await
                .unwrap()
                .unwrap();
            tags.push(m.delivery.delivery_tag);
        }
        ch.basic_ack(tags[1], BasicAckOptions::default())
            .await
            .unwrap();
        ch.basic_reject(tags[3], BasicRejectOptions { requeue: true })
            .await
            .unwrap();
        ch.basic_nack(
            tags[0],
            BasicNackOptions {
                multiple: false,
                requeue: true,
            },
        )
        .await
        .unwrap();
        ch.basic_reject(tags[4], BasicRejectOptions { requeue: false })
            .await
            .unwrap();
        ch.basic_ack(tags[2], BasicAckOptions::default())
            .await
            .unwrap();
        publish(&ch, "", &q, b"m5").await;

        let mut got = Vec::new();
        while let Some(m) = ch
            .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            got.push((
                String::from_utf8(m.delivery.data).unwrap(),
                m.delivery.redelivered,
            ));
        }
        assert_eq!(
            got,
            vec![
                ("m0".to_string(), true),
                ("m3".to_string(), true),
                ("m5".to_string(), false)
            ]
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_nack_multiple_requeues_in_order() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        let q = temp_queue(&ch).await;
        for i in 0..6 {
            publish(&ch, "", &q, format!("m{i}").as_bytes()).await;
        }
        let mut consumer = consume(&ch, &q, "nacker").await;
        let first = next_deliveries(&mut consumer, 6).await;
        assert_eq!(bodies(&first), vec!["m0", "m1", "m2", "m3", "m4", "m5"]);
        assert!(first.iter().all(|d| !d.redelivered));
        // Ack m3, then nack everything up to m4 (m0..m2, m4) with requeue.
        first[3].ack(BasicAckOptions::default()).await.unwrap();
        first[4]
            .nack(BasicNackOptions {
                multiple: true,
                requeue: true,
            })
            .await
            .unwrap();
        let again = next_deliveries(&mut consumer, 4).await;
        assert_eq!(bodies(&again), vec!["m0", "m1", "m2", "m4"]);
        assert!(again.iter().all(|d| d.redelivered));
        assert!(
            again[0].delivery_tag > first[5].delivery_tag,
            "redeliveries get new tags"
        );
        // m5 (tag 6) is still unacked too: one multiple ack on the last tag
        // settles everything.
        again[3]
            .ack(BasicAckOptions { multiple: true })
            .await
            .unwrap();
        assert_no_delivery(&mut consumer).await;
        ch.basic_cancel("nacker".into(), BasicCancelOptions::default())
            .await
            .unwrap();
        wait_for_count(&ch, &q, 0).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_delivery_tag_is_406() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let mut events = conn.events_listener();

        let ch = conn.create_channel().await.unwrap();
        ch.basic_ack(999, BasicAckOptions::default()).await.unwrap();
        let err = next_channel_error(&mut events).await;
        assert_eq!(reply_code(&err), Some(406), "{err:?}");
        assert!(
            reply_text(&err).starts_with("PRECONDITION_FAILED"),
            "{}",
            reply_text(&err)
        );

        // Double ack.
        let ch = conn.create_channel().await.unwrap();
        let q = temp_queue(&ch).await;
        publish(&ch, "", &q, b"x").await;
        let m = ch
            .basic_get(q.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()
            .unwrap();
        ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
            .await
            .unwrap();
        ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
            .await
            .unwrap();
        let err = next_channel_error(&mut events).await;
        assert_eq!(reply_code(&err), Some(406), "{err:?}");

        // Nack and reject of unknown tags too.
        let ch = conn.create_channel().await.unwrap();
        ch.basic_nack(
            5,
            BasicNackOptions {
                multiple: false,
                requeue: true,
            },
        )
        .await
        .unwrap();
        assert_eq!(
            reply_code(&next_channel_error(&mut events).await),
            Some(406)
        );
        let ch = conn.create_channel().await.unwrap();
        ch.basic_reject(5, BasicRejectOptions { requeue: true })
            .await
            .unwrap();
        assert_eq!(
            reply_code(&next_channel_error(&mut events).await),
            Some(406)
        );

        // A delivery made with no-ack has nothing to ack.
        let ch = conn.create_channel().await.unwrap();
        publish(&ch, "", &q, b"y").await;
        let m = ch
            .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .unwrap();
        ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
            .await
            .unwrap();
        assert_eq!(
            reply_code(&next_channel_error(&mut events).await),
            Some(406)
        );
        assert!(conn.status().connected());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_per_consumer_limits_unacked() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        let q = temp_queue(&ch).await;
        for i in 0..6 {
            publish(&ch, "", &q, format!("m{i}").as_bytes()).await;
        }
        ch.basic_qos(2, BasicQosOptions { global: false })
            .await
            .unwrap();
        let mut c = consume(&ch, &q, "limited").await;
        let ds = next_deliveries(&mut c, 2).await;
        assert_eq!(bodies(&ds), vec!["m0", "m1"]);
        assert_no_delivery(&mut c).await;
        ds[0].ack(BasicAckOptions::default()).await.unwrap();
        let d = next_delivery(&mut c).await;
        assert_eq!(d.data, b"m2");
        assert_no_delivery(&mut c).await;
        // Acking several at once opens as many slots.
        d.ack(BasicAckOptions { multiple: true }).await.unwrap();
        let ds = next_deliveries(&mut c, 2).await;
        assert_eq!(bodies(&ds), vec!["m3", "m4"]);
        assert_no_delivery(&mut c).await;
        ds[1].ack(BasicAckOptions { multiple: true }).await.unwrap();
        let d = next_delivery(&mut c).await;
        assert_eq!(d.data, b"m5");
        d.ack(BasicAckOptions::default()).await.unwrap();
        wait_for_count(&ch, &q, 0).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_global_is_shared_by_the_channel() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        let q1 = temp_queue(&ch).await;
        let q2 = temp_queue(&ch).await;
        for i in 0..5 {
            publish(&ch, "", &q1, format!("a{i}").as_bytes()).await;
            publish(&ch, "", &q2, format!("b{i}").as_bytes()).await;
        }
        ch.basic_qos(3, BasicQosOptions { global: true })
            .await
            .unwrap();
        let mut c1 = consume(&ch, &q1, "c1").await;
        let mut c2 = consume(&ch, &q2, "c2").await;
        let mut held = Vec::new();
        loop {
            tokio::select! {
                Some(Ok(d)) = futures_lite::StreamExt::next(&mut c1) => held.push(d),
                Some(Ok(d)) = futures_lite::StreamExt::next(&mut c2) => held.push(d),
                _ = tokio::time::sleep(QUIET) => break,
            }
        }
        assert_eq!(
            held.len(),
            3,
            "global prefetch 3 shared by two consumers: {:?}",
            bodies(&held)
        );
        held[0].ack(BasicAckOptions::default()).await.unwrap();
        let mut more = 0;
        loop {
            tokio::select! {
                Some(Ok(_)) = futures_lite::StreamExt::next(&mut c1) => more += 1,
                Some(Ok(_)) = futures_lite::StreamExt::next(&mut c2) => more += 1,
                _ = tokio::time::sleep(QUIET) => break,
            }
        }
        assert_eq!(more, 1, "one ack frees exactly one slot");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_zero_is_unlimited_and_no_ack_ignores_prefetch() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        let q = temp_queue(&ch).await;
        ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
        for i in 0..20 {
            publish(&ch, "", &q, format!("m{i}").as_bytes()).await;
        }
        let mut c = ch
            .basic_consume(
                q.as_str().into(),
                "noack".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let ds = next_deliveries(&mut c, 20).await;
        assert_eq!(ds.last().unwrap().data, b"m19");
        assert_eq!(get_all(&ch, &q).await, Vec::<String>::new());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_consumers_round_robin() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let pch = conn.create_channel().await.unwrap();
        let q = temp_queue(&pch).await;
        let cha = conn.create_channel().await.unwrap();
        let chb = conn.create_channel().await.unwrap();
        let mut a = consume(&cha, &q, "a").await;
        let mut b = consume(&chb, &q, "b").await;
        for i in 0..6 {
            publish(&pch, "", &q, format!("m{i}").as_bytes()).await;
        }
        let da = next_deliveries(&mut a, 3).await;
        let db = next_deliveries(&mut b, 3).await;
        assert_eq!(bodies(&da), vec!["m0", "m2", "m4"]);
        assert_eq!(bodies(&db), vec!["m1", "m3", "m5"]);
        assert_no_delivery(&mut a).await;
        assert_no_delivery(&mut b).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_of_a_closed_channel_are_redelivered_in_order() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let pch = conn.create_channel().await.unwrap();
        let q = temp_queue(&pch).await;
        for i in 0..5 {
            publish(&pch, "", &q, format!("m{i}").as_bytes()).await;
        }
        let first = conn.create_channel().await.unwrap();
        let mut c1 = consume(&first, &q, "first").await;
        let ds = next_deliveries(&mut c1, 5).await;
        ds[2].ack(BasicAckOptions::default()).await.unwrap();
        first.close(200, "".into()).await.unwrap();

        let second = conn.create_channel().await.unwrap();
        let mut c2 = consume(&second, &q, "second").await;
        let again = next_deliveries(&mut c2, 4).await;
        assert_eq!(bodies(&again), vec!["m0", "m1", "m3", "m4"]);
        assert!(again.iter().all(|d| d.redelivered));
        assert_eq!(again[0].delivery_tag, 1, "a new channel numbers from 1");
        assert_no_delivery(&mut c2).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_of_a_closed_connection_are_redelivered() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        let q = uniq("durable-work");
        declare_queue(&ch, &q).await;
        for i in 0..3 {
            publish(&ch, "", &q, format!("m{i}").as_bytes()).await;
        }
        let other = broker.connect().await;
        let och = other.create_channel().await.unwrap();
        let mut c = consume(&och, &q, "doomed").await;
        let _ds = next_deliveries(&mut c, 3).await;
        other.close(200, "".into()).await.unwrap();
        wait_for_count(&ch, &q, 3).await;
        let mut got = Vec::new();
        while let Some(m) = ch
            .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            assert!(m.delivery.redelivered);
            got.push(String::from_utf8(m.delivery.data).unwrap());
        }
        assert_eq!(got, vec!["m0", "m1", "m2"]);
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_requeues_unacked() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        let q = temp_queue(&ch).await;
        for i in 0..3 {
            publish(&ch, "", &q, format!("m{i}").as_bytes()).await;
        }
        let mut c = consume(&ch, &q, "r").await;
        let _ = next_deliveries(&mut c, 3).await;
        ch.basic_recover(BasicRecoverOptions { requeue: true })
            .await
            .unwrap();
        let again = next_deliveries(&mut c, 3).await;
        assert_eq!(bodies(&again), vec!["m0", "m1", "m2"]);
        assert!(again.iter().all(|d| d.redelivered));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_deliveries_and_tags() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let q = temp_queue(&ch).await;
        // A server-generated consumer tag.
        let c = consume(&ch, &q, "").await;
        assert!(c.tag().as_str().starts_with("amq.ctag-"), "{}", c.tag());
        ch.basic_cancel(c.tag(), BasicCancelOptions::default())
            .await
            .unwrap();
        publish(&ch, "", &q, b"kept").await;
        wait_for_count(&ch, &q, 1).await;

        // Reusing a live consumer tag on the same channel is a hard 530.
        let _c1 = consume(&ch, &q, "dup").await;
        let res = ch
            .basic_consume(
                q.as_str().into(),
                "dup".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await;
        assert_code(res.map(|_| ()), 530);
        assert!(!conn.status().connected());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_messages_keep_publish_order() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        let q = temp_queue(&ch).await;
        let mut c = ch
            .basic_consume(
                q.as_str().into(),
                "order".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let n = 2000;
        let (_pconn, pch) = broker.channel().await;
        for i in 0..n {
            pch.basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                format!("{i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap();
        }
        for i in 0..n {
            let d = next_delivery(&mut c).await;
            assert_eq!(d.data, format!("{i}").as_bytes());
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_id_must_match_the_login_406() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let mut events = conn.events_listener();
        let ch = conn.create_channel().await.unwrap();
        let q = temp_queue(&ch).await;
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default().with_user_id("mallory".into()),
        )
        .await
        .unwrap();
        let err = next_channel_error(&mut events).await;
        assert_eq!(reply_code(&err), Some(406), "{err:?}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_is_refused_406() {
    within(async {
        let broker = Broker::start_with(|c| c.max_message_size = 10_000).await;
        let conn = broker.connect().await;
        let mut events = conn.events_listener();
        let ch = conn.create_channel().await.unwrap();
        let q = temp_queue(&ch).await;
        publish(&ch, "", &q, &pattern(10_000)).await;
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            &pattern(10_001),
            BasicProperties::default(),
        )
        .await
        .unwrap();
        let err = next_channel_error(&mut events).await;
        assert_eq!(reply_code(&err), Some(406), "{err:?}");
        let ch = conn.create_channel().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let got = get_all(&ch, &q).await;
        assert_eq!(got.len(), 1, "only the message at the limit was queued");
        broker.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_without_requeue_is_not_implemented_540() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        // RabbitMQ only implements basic.recover with requeue=true.
        let res = ch
            .basic_recover(BasicRecoverOptions { requeue: false })
            .await;
        assert_code(res, 540);
        assert!(!conn.status().connected());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_order_ignores_the_order_of_rejects() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        let q = temp_queue(&ch).await;
        for i in 0..5 {
            publish(&ch, "", &q, format!("m{i}").as_bytes()).await;
        }
        let mut tags = Vec::new();
        for _ in 0..4 {
            let m = ch
                .basic_get(q.as_str().into(), BasicGetOptions::default())
                .await
                .unwrap()
                .unwrap();
            tags.push(m.delivery.delivery_tag);
        }
        for i in [3, 1, 2, 0] {
            ch.basic_reject(tags[i], BasicRejectOptions { requeue: true })
                .await
                .unwrap();
        }
        assert_eq!(get_all(&ch, &q).await, vec!["m0", "m1", "m2", "m3", "m4"]);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_applies_to_consumers_created_after_it() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        let q = temp_queue(&ch).await;
        for i in 0..5 {
            publish(&ch, "", &q, format!("m{i}").as_bytes()).await;
        }
        ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
        let mut c = consume(&ch, &q, "grow").await;
        assert_eq!(next_delivery(&mut c).await.data, b"m0");
        assert_no_delivery(&mut c).await;
        // basic.qos applies to consumers created afterwards in RabbitMQ; a
        // second consumer with a larger prefetch gets its own share.
        ch.basic_qos(3, BasicQosOptions::default()).await.unwrap();
        let mut c2 = consume(&ch, &q, "grow2").await;
        let ds = next_deliveries(&mut c2, 3).await;
        assert_eq!(bodies(&ds), vec!["m1", "m2", "m3"]);
        assert_no_delivery(&mut c).await;
        assert_no_delivery(&mut c2).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeued_messages_go_to_the_remaining_consumer() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let pch = conn.create_channel().await.unwrap();
        let q = temp_queue(&pch).await;
        let ch1 = conn.create_channel().await.unwrap();
        ch1.basic_qos(2, BasicQosOptions::default()).await.unwrap();
        let mut c1 = consume(&ch1, &q, "one").await;
        for i in 0..4 {
            publish(&pch, "", &q, format!("m{i}").as_bytes()).await;
        }
        let got1 = next_deliveries(&mut c1, 2).await;
        assert_eq!(bodies(&got1), vec!["m0", "m1"]);
        let ch2 = conn.create_channel().await.unwrap();
        let mut c2 = consume(&ch2, &q, "two").await;
        let got2 = next_deliveries(&mut c2, 2).await;
        assert_eq!(bodies(&got2), vec!["m2", "m3"]);
        ch1.close(200, "".into()).await.unwrap();
        let again = next_deliveries(&mut c2, 2).await;
        assert_eq!(bodies(&again), vec!["m0", "m1"]);
        assert!(again.iter().all(|d| d.redelivered));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_consume_on_missing_queue_are_404() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let res = ch
            .basic_get(uniq("missing").as_str().into(), BasicGetOptions::default())
            .await;
        assert_code(res.map(|_| ()), 404);
        let ch = conn.create_channel().await.unwrap();
        let res = ch
            .basic_consume(
                uniq("missing").as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await;
        assert_code(res.map(|_| ()), 404);
        assert!(conn.status().connected());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_can_be_settled_after_cancel() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        let q = temp_queue(&ch).await;
        for i in 0..3 {
            publish(&ch, "", &q, format!("m{i}").as_bytes()).await;
        }
        ch.basic_qos(3, BasicQosOptions::default()).await.unwrap();
        let mut c = consume(&ch, &q, "leaving").await;
        let ds = next_deliveries(&mut c, 3).await;
        ch.basic_cancel("leaving".into(), BasicCancelOptions::default())
            .await
            .unwrap();
        ch.basic_ack(ds[0].delivery_tag, BasicAckOptions::default())
            .await
            .unwrap();
        ch.basic_nack(
            ds[1].delivery_tag,
            BasicNackOptions {
                multiple: false,
                requeue: true,
            },
        )
        .await
        .unwrap();
        ch.basic_reject(ds[2].delivery_tag, BasicRejectOptions { requeue: false })
            .await
            .unwrap();
        let m = ch
            .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("requeued m1");
        assert_eq!(m.delivery.data, b"m1");
        assert!(m.delivery.redelivered);
        assert!(ch
            .basic_get(q.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()
            .is_none());
        assert!(ch.status().connected());
    })
    .await
}
