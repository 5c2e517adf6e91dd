//! Queues: naming, equivalence, exclusivity, auto-delete, purge and delete.

mod common;

use std::time::Duration;

use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::Channel;

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

async fn counts(ch: &Channel, q: &str) -> (u32, u32) {
    let q = ch
        .queue_declare(q.into(), passive(), FieldTable::default())
        .await
        .expect("passive declare");
    (q.message_count(), q.consumer_count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_named_queues() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        let a = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let b = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        for q in [&a, &b] {
            assert!(q.name().as_str().starts_with("amq.gen-"), "{}", q.name());
            assert!(
                q.name().as_str().len() > "amq.gen-".len() + 8,
                "{}",
                q.name()
            );
            assert_eq!(q.message_count(), 0);
            assert_eq!(q.consumer_count(), 0);
        }
        assert_ne!(a.name(), b.name());
        // The generated name routes through the default exchange.
        publish(&ch, "", a.name().as_str(), b"to generated").await;
        assert_eq!(get_all(&ch, a.name().as_str()).await, vec!["to generated"]);
        ch.queue_delete(a.name().clone(), QueueDeleteOptions::default())
            .await
            .unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amq_prefix_queue_name_is_403() {
    within(async {
        let broker = Broker::start().await;
        let (conn, ch) = broker.channel().await;
        let res = ch
            .queue_declare(
                "amq.mine".into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await;
        let err = assert_code(res, 403);
        assert!(
            reply_text(&err).starts_with("ACCESS_REFUSED"),
            "{}",
            reply_text(&err)
        );
        assert!(conn.status().connected());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_must_be_equivalent_406() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let q = uniq("eq");
        declare_queue(&ch, &q).await;
        declare_queue(&ch, &q).await; // identical: fine

        let res = ch
            .queue_declare(
                q.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        let err = assert_code(res, 406);
        assert!(
            reply_text(&err).starts_with("PRECONDITION_FAILED"),
            "{}",
            reply_text(&err)
        );

        let ch = conn.create_channel().await.unwrap();
        let mut args = FieldTable::default();
        args.insert("x-message-ttl".into(), AMQPValue::LongInt(60_000));
        let res = ch
            .queue_declare(q.as_str().into(), QueueDeclareOptions::default(), args)
            .await;
        assert_code(res, 406);

        let ch = conn.create_channel().await.unwrap();
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_reports_counts_or_404() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let q = temp_queue(&ch).await;
        for i in 0..3 {
            publish(&ch, "", &q, format!("m{i}").as_bytes()).await;
        }
        // Publishing is asynchronous: RabbitMQ's counts catch up shortly.
        wait_for_count(&ch, &q, 3).await;
        assert_eq!(counts(&ch, &q).await, (3, 0));
        let ch2 = conn.create_channel().await.unwrap();
        ch2.basic_qos(1, BasicQosOptions::default()).await.unwrap();
        let mut consumer = ch2
            .basic_consume(
                q.as_str().into(),
                "c1".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let _d = next_delivery(&mut consumer).await;
        // One unacked (not counted), two ready, one consumer.
        let mut seen = (0, 0);
        for _ in 0..100 {
            seen = counts(&ch, &q).await;
            if seen == (2, 1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(seen, (2, 1));

        let res = ch
            .queue_declare(
                uniq("missing").as_str().into(),
                passive(),
                FieldTable::default(),
            )
            .await;
        let err = assert_code(res, 404);
        assert!(
            reply_text(&err).starts_with("NOT_FOUND"),
            "{}",
            reply_text(&err)
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_is_locked_to_its_connection_405() {
    within(async {
        let broker = Broker::start().await;
        let (owner, och) = broker.channel().await;
        let q = uniq("excl");
        och.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        publish(&och, "", &q, b"mine").await;

        let other = broker.connect().await;
        let ch = other.create_channel().await.unwrap();
        let res = ch
            .queue_declare(
                q.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        let err = assert_code(res, 405);
        assert!(
            reply_text(&err).starts_with("RESOURCE_LOCKED"),
            "{}",
            reply_text(&err)
        );

        let ch = other.create_channel().await.unwrap();
        assert_code(
            ch.queue_declare(
                q.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await,
            405,
        );
        let ch = other.create_channel().await.unwrap();
        assert_code(
            ch.queue_declare(q.as_str().into(), passive(), FieldTable::default())
                .await,
            405,
        );
        let ch = other.create_channel().await.unwrap();
        let res = ch
            .basic_consume(
                q.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await;
        assert_code(res.map(|_| ()), 405);
        let ch = other.create_channel().await.unwrap();
        assert_code(
            ch.basic_get(q.as_str().into(), BasicGetOptions::default())
                .await
                .map(|_| ()),
            405,
        );
        let ch = other.create_channel().await.unwrap();
        assert_code(
            ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default())
                .await,
            405,
        );
        let ch = other.create_channel().await.unwrap();
        assert_code(
            ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await,
            405,
        );
        assert!(other.status().connected());

        // The owner is unaffected.
        assert_eq!(get_all(&och, &q).await, vec!["mine"]);

        // The queue goes away with its connection.
        owner.close(200, "".into()).await.unwrap();
        let ch = other.create_channel().await.unwrap();
        let mut gone = false;
        for _ in 0..250 {
            match ch
                .queue_declare(q.as_str().into(), passive(), FieldTable::default())
                .await
            {
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => {
                    assert_eq!(reply_code(&e), Some(404), "{e:?}");
                    gone = true;
                    break;
                }
            }
        }
        assert!(gone, "exclusive queue outlived its connection");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_consumer_refusal_fails_the_consume_403() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let q = temp_queue(&ch).await;
        let _c = ch
            .basic_consume(
                q.as_str().into(),
                "first".into(),
                BasicConsumeOptions {
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let ch2 = conn.create_channel().await.unwrap();
        let res = ch2
            .basic_consume(
                q.as_str().into(),
                "second".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await;
        let err = assert_code(res.map(|_| ()), 403);
        assert!(
            reply_text(&err).starts_with("ACCESS_REFUSED"),
            "{}",
            reply_text(&err)
        );

        // And an exclusive consumer cannot join a queue that has consumers.
        let q2 = temp_queue(&ch).await;
        let _c2 = ch
            .basic_consume(
                q2.as_str().into(),
                "plain".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let ch3 = conn.create_channel().await.unwrap();
        let res = ch3
            .basic_consume(
                q2.as_str().into(),
                "excl".into(),
                BasicConsumeOptions {
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        assert_code(res.map(|_| ()), 403);
        assert!(conn.status().connected());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_consumer_keeps_the_queue_to_itself() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let mut events = conn.events_listener();
        let ch = conn.create_channel().await.unwrap();
        let q = temp_queue(&ch).await;
        let mut only = ch
            .basic_consume(
                q.as_str().into(),
                "first".into(),
                BasicConsumeOptions {
                    exclusive: true,
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        // The intruder's channel is closed with 403, whatever consume answered.
        let ch2 = conn.create_channel().await.unwrap();
        let _ = ch2
            .basic_consume(
                q.as_str().into(),
                "second".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await;
        let err = next_channel_error(&mut events).await;
        assert_eq!(reply_code(&err), Some(403), "{err:?}");
        for i in 0..4 {
            publish(&ch, "", &q, format!("m{i}").as_bytes()).await;
        }
        assert_eq!(
            bodies(&next_deliveries(&mut only, 4).await),
            vec!["m0", "m1", "m2", "m3"]
        );
        assert!(conn.status().connected());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_queue_goes_with_its_last_consumer() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        let q = uniq("ad");
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        // Never consumed: it stays.
        assert_eq!(counts(&ch, &q).await, (0, 0));
        let c1 = ch
            .basic_consume(
                q.as_str().into(),
                "c1".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let c2 = ch
            .basic_consume(
                q.as_str().into(),
                "c2".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        assert_eq!(counts(&ch, &q).await, (0, 2));
        ch.basic_cancel(c1.tag(), BasicCancelOptions::default())
            .await
            .unwrap();
        assert_eq!(counts(&ch, &q).await, (0, 1));
        ch.basic_cancel(c2.tag(), BasicCancelOptions::default())
            .await
            .unwrap();
        let res = ch
            .queue_declare(q.as_str().into(), passive(), FieldTable::default())
            .await;
        assert_code(res, 404);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_returns_the_ready_count() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let q = uniq("purge");
        declare_queue(&ch, &q).await;
        for i in 0..5 {
            publish(&ch, "", &q, format!("m{i}").as_bytes()).await;
        }
        // Two taken and left unacked on another channel: purge leaves them.
        let taker = conn.create_channel().await.unwrap();
        for want in ["m0", "m1"] {
            let m = taker
                .basic_get(q.as_str().into(), BasicGetOptions::default())
                .await
                .unwrap()
                .expect("a message");
            assert_eq!(m.delivery.data, want.as_bytes());
        }
        assert_eq!(
            ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default())
                .await
                .unwrap(),
            3
        );
        assert_eq!(
            ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default())
                .await
                .unwrap(),
            0
        );
        assert!(ch
            .basic_get(q.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()
            .is_none());
        // Closing the taker's channel requeues the two unacked ones.
        taker.close(200, "".into()).await.unwrap();
        wait_for_count(&ch, &q, 2).await;
        assert_eq!(get_all(&ch, &q).await, vec!["m0", "m1"]);

        let res = ch
            .queue_purge(
                uniq("missing").as_str().into(),
                QueuePurgeOptions::default(),
            )
            .await;
        assert_code(res, 404);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_unused_and_if_empty_406() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let q = uniq("del");
        declare_queue(&ch, &q).await;
        publish(&ch, "", &q, b"one").await;
        publish(&ch, "", &q, b"two").await;

        let ch2 = conn.create_channel().await.unwrap();
        let res = ch2
            .queue_delete(
                q.as_str().into(),
                QueueDeleteOptions {
                    if_empty: true,
                    ..Default::default()
                },
            )
            .await;
        let err = assert_code(res, 406);
        assert!(
            reply_text(&err).starts_with("PRECONDITION_FAILED"),
            "{}",
            reply_text(&err)
        );

        let consumer_ch = conn.create_channel().await.unwrap();
        let empty = temp_queue(&consumer_ch).await;
        let _c = consumer_ch
            .basic_consume(
                empty.as_str().into(),
                "busy".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let ch3 = conn.create_channel().await.unwrap();
        let res = ch3
            .queue_delete(
                empty.as_str().into(),
                QueueDeleteOptions {
                    if_unused: true,
                    ..Default::default()
                },
            )
            .await;
        assert_code(res, 406);

        // Plain delete reports the messages it dropped.
        assert_eq!(
            ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await
                .unwrap(),
            2
        );
        assert_code(
            ch.queue_declare(q.as_str().into(), passive(), FieldTable::default())
                .await,
            404,
        );
        // Deleting a missing queue is not an error.
        let ch4 = conn.create_channel().await.unwrap();
        assert_eq!(
            ch4.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await
                .unwrap(),
            0
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_queue_cancels_its_consumers() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let q = uniq("gone");
        declare_queue(&ch, &q).await;
        let mut consumer = ch
            .basic_consume(
                q.as_str().into(),
                "watcher".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let admin = conn.create_channel().await.unwrap();
        admin
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
        // basic.cancel from the server ends the stream.
        match tokio::time::timeout(Duration::from_secs(5), consumer.next()).await {
            Ok(None) => {}
            other => panic!("expected the consumer to be cancelled, got {other:?}"),
        }
        assert!(ch.status().connected(), "the channel stays open");
        temp_queue(&ch).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_and_unbind_missing_things() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let q = temp_queue(&ch).await;
        let res = ch
            .queue_bind(
                q.as_str().into(),
                uniq("nox").as_str().into(),
                "k".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await;
        assert_code(res, 404);
        // Unbinding a binding that does not exist (queue and exchange do) is fine.
        let ch = conn.create_channel().await.unwrap();
        ch.queue_unbind(
            q.as_str().into(),
            "amq.direct".into(),
            "never-bound".into(),
            FieldTable::default(),
        )
        .await
        .expect("unbind of a missing binding");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_queue_name_means_the_last_declared_queue() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        let q = temp_queue(&ch).await;
        ch.queue_bind(
            "".into(),
            "amq.fanout".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind the last declared queue");
        publish(&ch, "amq.fanout", "", b"via last").await;
        let m = ch
            .basic_get("".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("message");
        assert_eq!(m.delivery.data, b"via last");
        assert_eq!(m.delivery.exchange.as_str(), "amq.fanout");
        assert_eq!(
            ch.queue_purge("".into(), QueuePurgeOptions::default())
                .await
                .unwrap(),
            0
        );
        ch.queue_unbind(
            "".into(),
            "amq.fanout".into(),
            "".into(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        assert_eq!(counts(&ch, &q).await, (0, 0));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_queue_goes_when_its_consumer_channel_closes() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let admin = conn.create_channel().await.unwrap();
        let q = uniq("ad-close");
        admin
            .queue_declare(
                q.as_str().into(),
                QueueDeclareOptions {
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let _c = ch
            .basic_consume(
                q.as_str().into(),
                "c".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        ch.close(200, "".into()).await.unwrap();
        let mut gone = false;
        for _ in 0..250 {
            let probe = conn.create_channel().await.unwrap();
            match probe
                .queue_declare(q.as_str().into(), passive(), FieldTable::default())
                .await
            {
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => {
                    assert_eq!(reply_code(&e), Some(404), "{e:?}");
                    gone = true;
                    break;
                }
            }
        }
        assert!(gone, "auto-delete queue outlived its only consumer");
    })
    .await
}
