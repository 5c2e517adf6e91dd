//! The counters the management API shows per exchange, channel and
//! connection, as a client's traffic makes them: RabbitMQ's
//! `message_stats` (`publish_in`/`publish_out` on exchanges; `publish`,
//! `confirm`, `get`, `ack`, `return_unroutable`, `drop_unroutable` on
//! channels and the node) and the connection's byte rates. Connections
//! report once a second, so each check waits for the figure to arrive.

mod common;

use std::time::Duration;

use common::{bounded, free_port, Broker};
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};
use serde_json::{json, Value};

/// GET `path` until `pick` finds what it wants in the answer (10 s at most).
async fn wait_for(b: &Broker, path: &str, pick: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..100 {
        let (_, v) = b.api("GET", path, None).await;
        if pick(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{path} never showed the figures: {}",
        b.api("GET", path, None).await.1
    );
}

#[tokio::test]
async fn exchanges_channels_and_connections_count_what_clients_do() {
    bounded(Duration::from_secs(30), async {
        let b = Broker::start_with(|c| c.management_port = free_port()).await;
        let (_c, ch) = b.channel().await;
        common::confirm(&ch).await;
        ch.exchange_declare(
            "stats-x".into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        common::declare_queue(&ch, "stats-q").await;
        ch.queue_bind(
            "stats-q".into(),
            "stats-x".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        for _ in 0..20 {
            common::publish_with(&ch, "stats-x", "", b"m", BasicProperties::default()).await;
        }
        for _ in 0..5 {
            common::publish_with(&ch, "", "nowhere", b"m", BasicProperties::default()).await;
        }
        let mandatory = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        ch.basic_publish(
            "amq.direct".into(),
            "nowhere".into(),
            mandatory,
            b"m",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        for _ in 0..4 {
            let got = ch
                .basic_get("stats-q".into(), BasicGetOptions::default())
                .await
                .unwrap();
            got.expect("a message")
                .ack(BasicAckOptions::default())
                .await
                .unwrap();
        }

        let x = wait_for(&b, "/exchanges/%2F/stats-x", |x| {
            x["message_stats"]["publish_in"] == 20
        })
        .await;
        assert_eq!(x["message_stats"]["publish_out"], 20);
        assert!(x["message_stats"]["publish_in_details"]["rate"].is_number());
        let d = wait_for(&b, "/exchanges/%2F/amq.default", |x| {
            x["message_stats"]["publish_in"] == 5
        })
        .await;
        assert_eq!(d["message_stats"]["publish_out"], 0, "nothing was routed");

        let chans = wait_for(&b, "/channels", |c| c[0]["message_stats"]["ack"] == 4).await;
        let stats = &chans[0]["message_stats"];
        for (field, want) in [
            ("publish", 26),
            ("confirm", 26),
            ("drop_unroutable", 5),
            ("return_unroutable", 1),
            ("get", 4),
            ("deliver_get", 4),
            ("redeliver", 0),
        ] {
            assert_eq!(stats[field], want, "{field} in {stats}");
        }
        assert!(stats["publish_details"]["rate"].is_number());

        let conns = b.api("GET", "/connections", None).await.1;
        assert!(conns[0]["recv_oct"].as_u64().unwrap() > 26, "{conns}");
        assert!(conns[0]["recv_oct_details"]["rate"].is_number());
        assert!(conns[0]["send_oct_details"]["rate"].is_number());

        // A closed channel's counts stay in the node's.
        ch.close(200, "bye".into()).await.unwrap();
        let o = wait_for(&b, "/overview", |o| o["message_stats"]["publish"] == 26).await;
        assert_eq!(o["message_stats"]["ack"], 4);
        b.stop().await;
    })
    .await;
}

#[tokio::test]
async fn consumer_utilisation_shows_a_consumer_held_back_by_its_prefetch() {
    bounded(Duration::from_secs(40), async {
        let b = Broker::start_with(|c| c.management_port = free_port()).await;
        let (_c, ch) = b.channel().await;
        common::declare_queue(&ch, "held").await;
        common::declare_queue(&ch, "free").await;
        ch.basic_qos(1, Default::default()).await.unwrap();
        // Never acks: after the first message it can take no more.
        let _held = common::consume(&ch, "held").await;
        let (_c2, ch2) = b.channel().await;
        let no_ack = lapin::options::BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let _free = ch2
            .basic_consume("free".into(), "f".into(), no_ack, FieldTable::default())
            .await
            .unwrap();
        for q in ["held", "free"] {
            for _ in 0..3 {
                common::publish(&ch, "", q, b"m").await;
            }
        }
        let (_, empty) = b.api("GET", "/queues", None).await;
        assert!(empty
            .as_array()
            .unwrap()
            .iter()
            .all(|q| q["consumer_utilisation"].is_number()));
        // Rates need two samples, 5 s apart.
        let mut last = Value::Null;
        for _ in 0..60 {
            let (_, held) = b.api("GET", "/queues/%2F/held", None).await;
            let (_, free) = b.api("GET", "/queues/%2F/free", None).await;
            let (h, f) = (&held["consumer_utilisation"], &free["consumer_utilisation"]);
            if h.as_f64().is_some_and(|u| u < 0.2) && f == 1.0 {
                assert_eq!(held["consumer_capacity"], *h);
                assert!(held["memory"].as_u64().unwrap() > 0);
                b.stop().await;
                return;
            }
            last = json!([held, free]);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("utilisation never showed the held consumer: {last}");
    })
    .await;
}

#[tokio::test]
async fn a_channel_closed_on_an_error_counts_once_if_the_client_vanishes() {
    bounded(Duration::from_secs(20), async {
        let b = Broker::start_with(|c| c.management_port = free_port()).await;
        let mut raw = common::raw::Raw::handshake(&b).await;
        raw.send(&common::raw::channel_open(1)).await;
        raw.send(&common::raw::durable_queue_declare(
            1,
            "no-such-queue",
            true,
        ))
        .await;
        // Open-Ok, then the 404 Channel.Close; no Close-Ok goes back.
        loop {
            let f = raw.read_frame().await.expect("a frame");
            if f.is(1, 20, 40) {
                break;
            }
        }
        drop(raw);
        let o = wait_for(&b, "/overview", |o| o["object_totals"]["connections"] == 0).await;
        assert_eq!(o["churn_rates"]["channel_created"], 1);
        assert_eq!(
            o["churn_rates"]["channel_closed"], 1,
            "{}",
            o["churn_rates"]
        );
        b.stop().await;
    })
    .await;
}
