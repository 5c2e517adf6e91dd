//! Exchanges: declaration rules and reply codes, and routing for each type,
//! exchange-to-exchange bindings and alternate exchanges.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, ExchangeKind};

async fn declare(ch: &Channel, name: &str, kind: ExchangeKind) {
    ch.exchange_declare(
        name.into(),
        kind,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("exchange.declare");
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) {
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("queue.bind");
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_every_type_and_redeclare_identically() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        for kind in [
            ExchangeKind::Direct,
            ExchangeKind::Fanout,
            ExchangeKind::Topic,
            ExchangeKind::Headers,
        ] {
            let name = uniq("x");
            declare(&ch, &name, kind.clone()).await;
            declare(&ch, &name, kind.clone()).await;
            ch.exchange_declare(
                name.as_str().into(),
                kind,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("passive declare of an existing exchange");
            ch.exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
                .await
                .unwrap();
        }
        // The predeclared exchanges exist.
        for name in [
            "amq.direct",
            "amq.fanout",
            "amq.topic",
            "amq.headers",
            "amq.match",
        ] {
            ch.exchange_declare(
                name.into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("{name} should exist: {e:?}"));
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_with_other_type_is_406() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let name = uniq("x");
        declare(&ch, &name, ExchangeKind::Direct).await;
        let res = ch
            .exchange_declare(
                name.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await;
        let err = assert_code(res, 406);
        assert!(
            reply_text(&err).starts_with("PRECONDITION_FAILED"),
            "{}",
            reply_text(&err)
        );
        assert!(!ch.status().connected());

        let ch = conn.create_channel().await.unwrap();
        let res = ch
            .exchange_declare(
                name.as_str().into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        assert_code(res, 406);

        // The original is unchanged.
        let ch = conn.create_channel().await.unwrap();
        declare(&ch, &name, ExchangeKind::Direct).await;
        ch.exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_of_missing_exchange_is_404() {
    within(async {
        let broker = Broker::start().await;
        let (conn, ch) = broker.channel().await;
        let res = ch
            .exchange_declare(
                uniq("nope").as_str().into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        assert_code(res, 404);
        assert!(conn.status().connected());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amq_prefix_is_reserved_403() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        for name in ["amq.custom", "amq.direct.other"] {
            let ch = conn.create_channel().await.unwrap();
            let res = ch
                .exchange_declare(
                    name.into(),
                    ExchangeKind::Direct,
                    ExchangeDeclareOptions::default(),
                    FieldTable::default(),
                )
                .await;
            let err = assert_code(res, 403);
            assert!(
                reply_text(&err).starts_with("ACCESS_REFUSED"),
                "{}",
                reply_text(&err)
            );
        }
        // Redeclaring a predeclared exchange with its own properties is fine
        // (the equivalence check comes first: durable=false would be 406).
        let ch = conn.create_channel().await.unwrap();
        ch.exchange_declare(
            "amq.direct".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("equivalent redeclare of amq.direct");
        let res = ch
            .exchange_declare(
                "amq.direct".into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await;
        assert_code(res, 406);
        let ch = conn.create_channel().await.unwrap();
        let res = ch
            .exchange_delete("amq.direct".into(), ExchangeDeleteOptions::default())
            .await;
        assert_code(res, 403);
        assert!(conn.status().connected());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_exchange_cannot_be_declared_deleted_or_bound_403() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let setup = conn.create_channel().await.unwrap();
        let q = temp_queue(&setup).await;

        let ch = conn.create_channel().await.unwrap();
        let res = ch
            .exchange_declare(
                "".into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await;
        assert_code(res, 403);

        let ch = conn.create_channel().await.unwrap();
        assert_code(
            ch.exchange_delete("".into(), ExchangeDeleteOptions::default())
                .await,
            403,
        );

        let ch = conn.create_channel().await.unwrap();
        let res = ch
            .queue_bind(
                q.as_str().into(),
                "".into(),
                "k".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await;
        assert_code(res, 403);

        let ch = conn.create_channel().await.unwrap();
        let res = ch
            .queue_unbind(
                q.as_str().into(),
                "".into(),
                q.as_str().into(),
                FieldTable::default(),
            )
            .await;
        assert_code(res, 403);
        assert!(conn.status().connected());

        // Publishing through the default exchange still works.
        publish(&setup, "", &q, b"direct to queue").await;
        assert_eq!(get_all(&setup, &q).await, vec!["direct to queue"]);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_missing_exchange_is_ok_and_if_unused_is_406() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        ch.exchange_delete(
            uniq("never").as_str().into(),
            ExchangeDeleteOptions::default(),
        )
        .await
        .expect("deleting a missing exchange is not an error (RabbitMQ ≥ 3.2)");

        let x = uniq("x");
        declare(&ch, &x, ExchangeKind::Direct).await;
        let q = temp_queue(&ch).await;
        bind(&ch, &q, &x, "k").await;
        let res = ch
            .exchange_delete(
                x.as_str().into(),
                ExchangeDeleteOptions {
                    if_unused: true,
                    ..Default::default()
                },
            )
            .await;
        assert_code(res, 406);

        let ch = conn.create_channel().await.unwrap();
        ch.queue_unbind(
            q.as_str().into(),
            x.as_str().into(),
            "k".into(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.exchange_delete(
            x.as_str().into(),
            ExchangeDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .await
        .expect("unused exchange deletes");
        let res = ch
            .exchange_declare(
                x.as_str().into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        assert_code(res, 404);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_missing_exchange_closes_channel_404() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let mut events = conn.events_listener();
        let ch = conn.create_channel().await.unwrap();
        ch.basic_publish(
            uniq("missing").as_str().into(),
            "k".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await
        .unwrap();
        let err = next_channel_error(&mut events).await;
        assert_eq!(reply_code(&err), Some(404), "{err:?}");
        assert!(
            reply_text(&err).starts_with("NOT_FOUND"),
            "{}",
            reply_text(&err)
        );
        assert!(conn.status().connected());
        let ch2 = conn.create_channel().await.unwrap();
        temp_queue(&ch2).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_routing_by_exact_key() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        let x = uniq("direct");
        declare(&ch, &x, ExchangeKind::Direct).await;
        let q1 = temp_queue(&ch).await;
        let q2 = temp_queue(&ch).await;
        bind(&ch, &q1, &x, "orange").await;
        bind(&ch, &q2, &x, "black").await;
        bind(&ch, &q2, &x, "green").await;
        bind(&ch, &q2, &x, "green").await; // idempotent
        for key in ["orange", "black", "green", "blue", "Orange", ""] {
            publish(&ch, &x, key, key.as_bytes()).await;
        }
        assert_eq!(get_all(&ch, &q1).await, vec!["orange"]);
        assert_eq!(get_all(&ch, &q2).await, vec!["black", "green"]);

        // Unbinding stops the routing.
        ch.queue_unbind(
            q2.as_str().into(),
            x.as_str().into(),
            "green".into(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        publish(&ch, &x, "green", b"after unbind").await;
        publish(&ch, &x, "black", b"black again").await;
        assert_eq!(get_all(&ch, &q2).await, vec!["black again"]);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_bound_twice_gets_one_copy() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        let x = uniq("topic");
        declare(&ch, &x, ExchangeKind::Topic).await;
        let q = temp_queue(&ch).await;
        bind(&ch, &q, &x, "a.*").await;
        bind(&ch, &q, &x, "#").await;
        bind(&ch, &q, &x, "a.b").await;
        publish(&ch, &x, "a.b", b"once").await;
        assert_eq!(get_all(&ch, &q).await, vec!["once"]);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_ignores_the_routing_key() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        let x = uniq("fanout");
        declare(&ch, &x, ExchangeKind::Fanout).await;
        let qs = [
            temp_queue(&ch).await,
            temp_queue(&ch).await,
            temp_queue(&ch).await,
        ];
        bind(&ch, &qs[0], &x, "").await;
        bind(&ch, &qs[1], &x, "whatever").await;
        bind(&ch, &qs[2], &x, "x.y").await;
        publish(&ch, &x, "some.key", b"one").await;
        publish(&ch, &x, "", b"two").await;
        for q in &qs {
            assert_eq!(get_all(&ch, q).await, vec!["one", "two"], "queue {q}");
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_patterns() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        let x = uniq("topic");
        declare(&ch, &x, ExchangeKind::Topic).await;
        let patterns = [
            "*.orange.*",
            "*.*.rabbit",
            "lazy.#",
            "#",
            "a.#.z",
            "*",
            "#.end",
            "exact.key",
        ];
        let mut queues = Vec::new();
        for p in patterns {
            let q = temp_queue(&ch).await;
            bind(&ch, &q, &x, p).await;
            queues.push(q);
        }
        let keys = [
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "quick.orange.fox",
            "lazy.brown.fox",
            "lazy",
            "quick.orange.male.rabbit",
            "a.z",
            "a.b.c.z",
            "a.z.b",
            "single",
            "",
            "the.end",
            "end",
            "exact.key",
            "exact.keys",
        ];
        for k in keys {
            publish(&ch, &x, k, k.as_bytes()).await;
        }
        let expect: [&[&str]; 8] = [
            &[
                "quick.orange.rabbit",
                "lazy.orange.elephant",
                "quick.orange.fox",
            ],
            &["quick.orange.rabbit"],
            &["lazy.orange.elephant", "lazy.brown.fox", "lazy"],
            &keys,
            &["a.z", "a.b.c.z"],
            &["lazy", "single", "end"],
            &["the.end", "end"],
            &["exact.key"],
        ];
        for ((p, q), want) in patterns.iter().zip(&queues).zip(expect) {
            assert_eq!(get_all(&ch, q).await, want, "pattern {p:?}");
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_exchange_all_and_any() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        let x = uniq("headers");
        declare(&ch, &x, ExchangeKind::Headers).await;
        let q_all = temp_queue(&ch).await;
        let q_any = temp_queue(&ch).await;
        let q_empty = temp_queue(&ch).await;
        ch.queue_bind(
            q_all.as_str().into(),
            x.as_str().into(),
            "ignored".into(),
            QueueBindOptions::default(),
            table(&[
                ("x-match", s("all")),
                ("format", s("pdf")),
                ("type", s("report")),
            ]),
        )
        .await
        .unwrap();
        ch.queue_bind(
            q_any.as_str().into(),
            x.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            table(&[
                ("x-match", s("any")),
                ("format", s("pdf")),
                ("n", AMQPValue::LongInt(7)),
            ]),
        )
        .await
        .unwrap();
        // No x-match means "all"; no other keys means everything matches.
        ch.queue_bind(
            q_empty.as_str().into(),
            x.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

        let msgs: [(&str, FieldTable); 5] = [
            (
                "pdf-report",
                table(&[
                    ("format", s("pdf")),
                    ("type", s("report")),
                    ("extra", AMQPValue::Boolean(true)),
                ]),
            ),
            ("pdf-only", table(&[("format", s("pdf"))])),
            ("n7", table(&[("n", AMQPValue::LongInt(7))])),
            (
                "zip-report",
                table(&[("format", s("zip")), ("type", s("report"))]),
            ),
            ("none", FieldTable::default()),
        ];
        for (body, headers) in msgs {
            publish_with(
                &ch,
                &x,
                "rk",
                body.as_bytes(),
                BasicProperties::default().with_headers(headers),
            )
            .await;
        }
        publish(&ch, &x, "rk", b"no-headers-property").await;
        assert_eq!(get_all(&ch, &q_all).await, vec!["pdf-report"]);
        assert_eq!(
            get_all(&ch, &q_any).await,
            vec!["pdf-report", "pdf-only", "n7"]
        );
        assert_eq!(
            get_all(&ch, &q_empty).await,
            vec![
                "pdf-report",
                "pdf-only",
                "n7",
                "zip-report",
                "none",
                "no-headers-property"
            ]
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_to_exchange_binding() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        let src = uniq("src");
        let dst = uniq("dst");
        declare(&ch, &src, ExchangeKind::Direct).await;
        declare(&ch, &dst, ExchangeKind::Fanout).await;
        let q_dst = temp_queue(&ch).await;
        let q_src = temp_queue(&ch).await;
        bind(&ch, &q_dst, &dst, "").await;
        bind(&ch, &q_src, &src, "other").await;
        ch.exchange_bind(
            dst.as_str().into(),
            src.as_str().into(),
            "k".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("exchange.bind");

        publish(&ch, &src, "k", b"via-binding").await;
        publish(&ch, &src, "other", b"direct-only").await;
        publish(&ch, &dst, "anything", b"straight-to-dst").await;
        assert_eq!(
            get_all(&ch, &q_dst).await,
            vec!["via-binding", "straight-to-dst"]
        );
        assert_eq!(get_all(&ch, &q_src).await, vec!["direct-only"]);

        ch.exchange_unbind(
            dst.as_str().into(),
            src.as_str().into(),
            "k".into(),
            ExchangeUnbindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("exchange.unbind");
        publish(&ch, &src, "k", b"after-unbind").await;
        assert!(get_all(&ch, &q_dst).await.is_empty());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_bind_to_missing_exchange_is_404() {
    within(async {
        let broker = Broker::start().await;
        let (conn, ch) = broker.channel().await;
        let x = uniq("x");
        declare(&ch, &x, ExchangeKind::Fanout).await;
        let res = ch
            .exchange_bind(
                x.as_str().into(),
                uniq("missing").as_str().into(),
                "".into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await;
        assert_code(res, 404);
        let ch = conn.create_channel().await.unwrap();
        let res = ch
            .queue_bind(
                uniq("missing-q").as_str().into(),
                x.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await;
        assert_code(res, 404);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternate_exchange_catches_unroutable_messages() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        let ae = uniq("ae");
        let main = uniq("main");
        declare(&ch, &ae, ExchangeKind::Fanout).await;
        ch.exchange_declare(
            main.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            table(&[("alternate-exchange", s(&ae))]),
        )
        .await
        .unwrap();
        let q_main = temp_queue(&ch).await;
        let q_ae = temp_queue(&ch).await;
        bind(&ch, &q_main, &main, "known").await;
        bind(&ch, &q_ae, &ae, "").await;

        publish(&ch, &main, "known", b"routed").await;
        publish(&ch, &main, "unknown", b"unroutable").await;
        // Mandatory: routed via the AE, so no basic.return.
        ch.basic_publish(
            main.as_str().into(),
            "unknown2".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"mandatory-unroutable",
            BasicProperties::default(),
        )
        .await
        .unwrap();
        assert_eq!(get_all(&ch, &q_main).await, vec!["routed"]);
        assert_eq!(
            get_all(&ch, &q_ae).await,
            vec!["unroutable", "mandatory-unroutable"]
        );
        assert!(
            ch.wait_for_confirms().await.unwrap().is_empty(),
            "nothing returned"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_internal_exchange_is_403() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let mut events = conn.events_listener();
        let ch = conn.create_channel().await.unwrap();
        let x = uniq("internal");
        ch.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                internal: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.basic_publish(
            x.as_str().into(),
            "".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await
        .unwrap();
        let err = next_channel_error(&mut events).await;
        assert_eq!(reply_code(&err), Some(403), "{err:?}");
        let ch = conn.create_channel().await.unwrap();
        ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_exchange_goes_with_its_last_binding() {
    within(async {
        let broker = Broker::start().await;
        let (conn, ch) = broker.channel().await;
        let x = uniq("ad");
        ch.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        let q = temp_queue(&ch).await;
        bind(&ch, &q, &x, "a").await;
        bind(&ch, &q, &x, "b").await;
        ch.queue_unbind(
            q.as_str().into(),
            x.as_str().into(),
            "a".into(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        declare_passive_ok(&ch, &x).await;
        ch.queue_unbind(
            q.as_str().into(),
            x.as_str().into(),
            "b".into(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let res = ch
            .exchange_declare(
                x.as_str().into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        assert_code(res, 404);
        assert!(conn.status().connected());
    })
    .await
}

async fn declare_passive_ok(ch: &Channel, x: &str) {
    ch.exchange_declare(
        x.into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("exchange still exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_binding_ignores_x_arguments() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        let x = uniq("hx");
        declare(&ch, &x, ExchangeKind::Headers).await;
        let q = temp_queue(&ch).await;
        ch.queue_bind(
            q.as_str().into(),
            x.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            table(&[
                ("x-match", s("all")),
                ("x-custom", AMQPValue::LongInt(1)),
                ("a", AMQPValue::LongInt(1)),
            ]),
        )
        .await
        .unwrap();
        publish_with(
            &ch,
            &x,
            "",
            b"a-only",
            BasicProperties::default().with_headers(table(&[("a", AMQPValue::LongInt(1))])),
        )
        .await;
        publish_with(
            &ch,
            &x,
            "",
            b"a-2",
            BasicProperties::default().with_headers(table(&[("a", AMQPValue::LongInt(2))])),
        )
        .await;
        assert_eq!(get_all(&ch, &q).await, vec!["a-only"]);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_empty_words() {
    within(async {
        let broker = Broker::start().await;
        let (_conn, ch) = broker.channel().await;
        let x = uniq("te");
        declare(&ch, &x, ExchangeKind::Topic).await;
        let star = temp_queue(&ch).await;
        let hash = temp_queue(&ch).await;
        bind(&ch, &star, &x, "a.*.b").await;
        bind(&ch, &hash, &x, "a.#.b").await;
        for k in ["a..b", "a.x.b", "a.b", "a.x.y.b", "a.b."] {
            publish(&ch, &x, k, k.as_bytes()).await;
        }
        assert_eq!(get_all(&ch, &star).await, vec!["a..b", "a.x.b"]);
        assert_eq!(
            get_all(&ch, &hash).await,
            vec!["a..b", "a.x.b", "a.b", "a.x.y.b"]
        );
    })
    .await
}
