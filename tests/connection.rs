//! Connection and channel lifecycle: handshake, authentication, vhosts,
//! negotiation, soft vs hard errors.

mod common;

use std::time::Duration;

use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_close() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        assert!(conn.status().connected());
        assert_eq!(conn.status().vhost().as_str(), "/");
        assert_eq!(conn.status().username(), "guest");
        conn.close(200, "bye".into())
            .await
            .expect("connection.close");
        assert!(!conn.status().connected());
        assert!(
            conn.create_channel().await.is_err(),
            "a closed connection opens no channel"
        );
        broker.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tune_offers_rabbitmq_defaults() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let c = conn.configuration();
        assert_eq!(c.frame_max(), 131072);
        assert_eq!(c.channel_max(), 2047);
        assert_eq!(c.heartbeat(), 60);
        conn.close(200, "".into()).await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tune_follows_the_config() {
    within(async {
        let broker = Broker::start_with(|c| {
            c.frame_max = 8192;
            c.channel_max = 3;
            c.heartbeat_s = 7;
        })
        .await;
        let conn = broker.connect().await;
        let c = conn.configuration();
        assert_eq!(c.frame_max(), 8192);
        assert_eq!(c.channel_max(), 3);
        assert_eq!(c.heartbeat(), 7);
        conn.close(200, "".into()).await.unwrap();
        broker.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused_with_403() {
    within(async {
        let broker = Broker::start().await;
        let res = Connection::connect(
            &broker.url_as("guest", "not-the-password", "%2f"),
            ConnectionProperties::default(),
        )
        .await;
        let err = assert_code(res.map(|_| ()), 403);
        assert!(
            reply_text(&err).starts_with("ACCESS_REFUSED"),
            "{}",
            reply_text(&err)
        );
        // The broker is unaffected.
        let conn = broker.connect().await;
        conn.close(200, "".into()).await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_is_refused_with_403() {
    within(async {
        let broker = Broker::start().await;
        let res = Connection::connect(
            &broker.url_as("nobody", "guest", "%2f"),
            ConnectionProperties::default(),
        )
        .await;
        assert_code(res.map(|_| ()), 403);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_vhost_is_refused_with_530() {
    within(async {
        let broker = Broker::start().await;
        let res = Connection::connect(
            &broker.url_as("guest", "guest", "no-such-vhost"),
            ConnectionProperties::default(),
        )
        .await;
        let err = assert_code(res.map(|_| ()), 530);
        assert!(
            reply_text(&err).starts_with("NOT_ALLOWED"),
            "{}",
            reply_text(&err)
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_vhost_is_isolated() {
    within(async {
        let broker = Broker::start_with(|c| c.vhosts = vec!["/".into(), "other".into()]).await;
        let (_c1, ch1) = broker.channel().await;
        let q = uniq("iso");
        declare_queue(&ch1, &q).await;

        let conn2 = Connection::connect(
            &broker.url_as("guest", "guest", "other"),
            ConnectionProperties::default(),
        )
        .await
        .expect("connect to vhost other");
        assert_eq!(conn2.status().vhost().as_str(), "other");
        let ch2 = conn2.create_channel().await.unwrap();
        let res = ch2
            .queue_declare(
                q.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        assert_code(res, 404);
        broker.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_open_and_close_independently() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let mut chans = Vec::new();
        for _ in 0..20 {
            chans.push(conn.create_channel().await.expect("channel.open"));
        }
        let mut ids: Vec<u16> = chans.iter().map(|c| c.id()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 20, "channel ids are distinct");
        for ch in chans.iter().step_by(2) {
            ch.close(200, "done".into()).await.expect("channel.close");
            assert!(!ch.status().connected());
        }
        for ch in chans.iter().skip(1).step_by(2) {
            assert!(ch.status().connected());
            temp_queue(ch).await;
        }
        // Closed channel numbers can be reused.
        let again = conn.create_channel().await.unwrap();
        temp_queue(&again).await;
        conn.close(200, "".into()).await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_error_closes_only_the_channel() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let bad = conn.create_channel().await.unwrap();
        let good = conn.create_channel().await.unwrap();
        let q = temp_queue(&good).await;
        let mut consumer = good
            .basic_consume(
                q.as_str().into(),
                "c".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();

        let res = bad
            .queue_declare(
                uniq("missing").as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        let err = assert_code(res, 404);
        assert!(
            reply_text(&err).starts_with("NOT_FOUND"),
            "{}",
            reply_text(&err)
        );
        assert!(!bad.status().connected(), "the failing channel is closed");
        assert!(bad.basic_qos(1, BasicQosOptions::default()).await.is_err());

        // The connection and the other channel (and its consumer) live on.
        assert!(conn.status().connected());
        assert!(good.status().connected());
        publish(&good, "", &q, b"still here").await;
        let d = next_delivery(&mut consumer).await;
        assert_eq!(d.data, b"still here");
        let third = conn
            .create_channel()
            .await
            .expect("new channel after a soft error");
        temp_queue(&third).await;
        conn.close(200, "".into()).await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_error_closes_the_connection() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let other = conn.create_channel().await.unwrap();
        let q = temp_queue(&other).await;
        let mut consumer = other
            .basic_consume(
                q.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();

        let res = ch
            .exchange_declare(
                uniq("x").as_str().into(),
                ExchangeKind::Custom("x-no-such-type".into()),
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await;
        let err = assert_code(res, 503);
        assert!(
            reply_text(&err).starts_with("COMMAND_INVALID"),
            "{}",
            reply_text(&err)
        );

        // Every channel of the connection is gone: the consumer ends.
        let end = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match consumer.next().await {
                    Some(Ok(_)) => continue,
                    other => return other.map(|r| r.map(|_| ())),
                }
            }
        })
        .await
        .expect("consumer of the dead connection ends");
        if let Some(Err(e)) = &end {
            assert_eq!(reply_code(e), Some(503), "{e:?}");
        }
        assert!(!conn.status().connected());
        assert!(conn.create_channel().await.is_err());

        // Other connections are fine.
        let (_c2, ch2) = broker.channel().await;
        temp_queue(&ch2).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_an_idle_connection_alive() {
    within(async {
        let broker = Broker::start_with(|c| c.heartbeat_s = 1).await;
        let conn = broker.connect().await;
        assert_eq!(conn.configuration().heartbeat(), 1);
        let ch = conn.create_channel().await.unwrap();
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert!(conn.status().connected());
        temp_queue(&ch).await;
        conn.close(200, "".into()).await.unwrap();
        broker.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_closes_clients_with_320() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let q = temp_queue(&ch).await;
        let mut consumer = ch
            .basic_consume(
                q.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        broker.stop().await;
        match tokio::time::timeout(Duration::from_secs(5), consumer.next()).await {
            Ok(Some(Err(e))) => assert_eq!(reply_code(&e), Some(320), "{e:?}"),
            other => panic!("expected the consumer to fail with 320, got {other:?}"),
        }
        assert!(!conn.status().connected());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_config_is_accepted() {
    within(async {
        let broker = Broker::start_with(|c| c.max_connections = 2).await;
        let a = broker.connect().await;
        let b = broker.connect().await;
        a.close(200, "".into()).await.unwrap();
        // A slot frees up once a connection is closed.
        let c = broker.connect().await;
        b.close(200, "".into()).await.unwrap();
        c.close(200, "".into()).await.unwrap();
        broker.stop().await;
    })
    .await
}
