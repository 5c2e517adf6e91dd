//! The management HTTP API driven by `rabbitmq_http_client`, the crate
//! rabbitmqadmin v2 is built on, plus raw requests for what a client
//! library would not send (bad input). Expectations were recorded against
//! RabbitMQ 3.10 where the behaviour is RabbitMQ's.

mod common;

use std::time::Duration;

use common::{bounded, free_port, Broker};
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use rabbitmq_http_client::api::Client;
use rabbitmq_http_client::commons::{BindingDestinationType, PaginationParams};
use rabbitmq_http_client::requests::{BindingDeletionParams, ExchangeParams, QueueParams};
use serde_json::{json, Value};

type Api = Client<String, &'static str, &'static str>;

/// A broker with the management API (and metrics) on free ports.
async fn start() -> (Broker, Api) {
    let broker = Broker::start_with(|c| {
        c.management_port = free_port();
        c.prometheus_port = free_port();
    })
    .await;
    let api = Client::new(broker.api_url().expect("api on"), "guest", "guest");
    (broker, api)
}

/// A raw request: status and JSON body (Null when not JSON).
async fn raw(
    broker: &Broker,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    let url = format!("{}{}", broker.api_url().expect("api on"), path);
    let client = reqwest::Client::new();
    let mut req = client.request(method.parse().expect("method"), url);
    if let Some((u, p)) = auth {
        req = req.basic_auth(u, Some(p));
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

const GUEST: Option<(&str, &str)> = Some(("guest", "guest"));

/// A request expected to fail: method, path, credentials, body, status.
type BadCase = (
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
    Option<Vec<u8>>,
    u16,
);

#[tokio::test]
async fn queues_are_declared_listed_and_paged() {
    bounded(Duration::from_secs(20), async {
        let (broker, api) = start().await;
        for name in ["orders", "orders-dlq", "audit"] {
            api.declare_queue("/", &QueueParams::new_durable_classic_queue(name, None))
                .await
                .expect("declare");
        }
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        common::publish(&ch, "", "orders", b"one").await;
        common::publish(&ch, "", "orders", b"two").await;

        let q = api.get_queue_info("/", "orders").await.expect("show");
        assert_eq!(
            (q.message_count, q.durable, q.queue_type.as_str()),
            (2, true, "classic")
        );
        let names: Vec<String> = api
            .list_queues_in("/")
            .await
            .unwrap()
            .into_iter()
            .map(|q| q.name)
            .collect();
        assert_eq!(names, ["audit", "orders", "orders-dlq"]);
        let page = api
            .list_queues_in_paged("/", &PaginationParams::new(2, 2))
            .await
            .expect("paged");
        assert_eq!(page.len(), 1);

        // KEDA's query: a caseless regex, one page.
        let (status, v) = raw(
            &broker,
            "GET",
            "/queues/%2F?page=1&use_regex=true&pagination=false&name=%5EORD&page_size=100",
            GUEST,
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            (
                v["filtered_count"].as_u64(),
                v["total_count"].as_u64(),
                v["page_count"].as_u64()
            ),
            (Some(2), Some(3), Some(1))
        );
        assert_eq!(v["items"][0]["messages"], 2);
        assert!(v["items"][0]["message_stats"]["publish_details"]["rate"].is_number());
        // The UI's sorts by a count, paged and not: ties keep name order,
        // reversed as a whole.
        common::publish(&ch, "", "audit", b"a").await;
        for (query, want) in [
            ("sort=messages_ready", ["orders-dlq", "audit", "orders"]),
            (
                "sort=messages&sort_reverse=true",
                ["orders", "audit", "orders-dlq"],
            ),
            (
                "sort=consumers&page=1&page_size=2",
                ["audit", "orders", "orders-dlq"],
            ),
        ] {
            let (status, v) =
                raw(&broker, "GET", &format!("/queues/%2F?{query}"), GUEST, None).await;
            assert_eq!(status, 200, "{query}: {v}");
            let items = v.get("items").unwrap_or(&v);
            let names: Vec<&str> = items
                .as_array()
                .expect("a list")
                .iter()
                .map(|q| q["name"].as_str().expect("name"))
                .collect();
            assert_eq!(names, want[..names.len()], "{query}");
        }
        // Flower's all-vhosts call, with its trailing slash.
        let (status, v) = raw(&broker, "GET", "/queues/", GUEST, None).await;
        assert_eq!(status, 200);
        assert_eq!(v.as_array().map(Vec::len), Some(3));

        api.purge_queue("/", "orders").await.expect("purge");
        assert_eq!(
            api.get_queue_info("/", "orders")
                .await
                .unwrap()
                .message_count,
            0
        );
        api.delete_queue("/", "audit", false).await.expect("delete");
        assert!(api.get_queue_info("/", "audit").await.is_err());
        // Declared over HTTP means declared: AMQP sees it, durable.
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        ch.queue_declare("orders-dlq".into(), passive, FieldTable::default())
            .await
            .expect("exists");
    })
    .await;
}

#[tokio::test]
async fn publish_and_get_over_http_with_each_ack_mode() {
    bounded(Duration::from_secs(20), async {
        let (broker, api) = start().await;
        api.declare_queue("/", &QueueParams::new_durable_classic_queue("dead", None))
            .await
            .unwrap();
        let mut args = serde_json::Map::new();
        args.insert("x-dead-letter-exchange".into(), json!(""));
        args.insert("x-dead-letter-routing-key".into(), json!("dead"));
        api.declare_queue(
            "/",
            &QueueParams::new_durable_classic_queue("work", Some(args)),
        )
        .await
        .unwrap();
        let mut props = serde_json::Map::new();
        props.insert("delivery_mode".into(), json!(2));
        props.insert("headers".into(), json!({"attempt": 1}));
        for body in ["a", "b", "c"] {
            let routed = api
                .publish_message("/", "amq.default", "work", body, props.clone())
                .await
                .expect("publish");
            assert!(routed.routed);
        }
        let unrouted = api
            .publish_message("/", "amq.default", "nowhere", "x", Default::default())
            .await
            .unwrap();
        assert!(!unrouted.routed);

        let got = api
            .get_messages("/", "work", 2, "ack_requeue_true")
            .await
            .expect("get");
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].payload.as_str(), got[0].message_count), ("a", 2));
        assert_eq!(
            got[0].properties.0.get("headers"),
            Some(&json!({"attempt": 1}))
        );
        assert_eq!(
            api.get_queue_info("/", "work").await.unwrap().message_count,
            3,
            "requeued"
        );

        let got = api
            .get_messages("/", "work", 1, "ack_requeue_false")
            .await
            .unwrap();
        assert!(got[0].redelivered, "it was requeued once");
        let got = api
            .get_messages("/", "work", 1, "reject_requeue_false")
            .await
            .unwrap();
        assert_eq!(got[0].payload, "b");
        assert_eq!(
            api.get_queue_info("/", "work").await.unwrap().message_count,
            1
        );
        let dead = api
            .get_messages("/", "dead", 1, "ack_requeue_false")
            .await
            .unwrap();
        assert_eq!(
            dead[0].payload, "b",
            "rejected without requeue is dead-lettered"
        );
        let (status, v) = raw(
            &broker,
            "POST",
            "/queues/%2F/work/get",
            GUEST,
            Some(br#"{"count":1,"ackmode":"nope"}"#.to_vec()),
        )
        .await;
        assert_eq!((status, v["error"].as_str()), (400, Some("bad_request")));
    })
    .await;
}

#[tokio::test]
async fn exchanges_and_bindings_route_as_declared() {
    bounded(Duration::from_secs(20), async {
        let (broker, api) = start().await;
        api.declare_exchange("/", &ExchangeParams::durable_topic("events", None))
            .await
            .unwrap();
        api.declare_queue("/", &QueueParams::new_durable_classic_queue("eu", None))
            .await
            .unwrap();
        api.bind_queue("/", "eu", "events", Some("eu.#"), None)
            .await
            .expect("bind");
        let x = api.get_exchange_info("/", "events").await.unwrap();
        assert_eq!((x.exchange_type.as_str(), x.durable), ("topic", true));
        let bindings = api.list_queue_bindings("/", "eu").await.unwrap();
        let keys: Vec<&str> = bindings.iter().map(|b| b.routing_key.as_str()).collect();
        assert_eq!(keys, ["eu", "eu.#"], "the default exchange's binding first");
        assert!(
            api.publish_message("/", "events", "eu.orders", "x", Default::default())
                .await
                .unwrap()
                .routed
        );
        assert!(
            !api.publish_message("/", "events", "us.orders", "x", Default::default())
                .await
                .unwrap()
                .routed
        );
        let del = BindingDeletionParams {
            virtual_host: "/",
            source: "events",
            destination: "eu",
            destination_type: BindingDestinationType::Queue,
            routing_key: "eu.#",
            arguments: None,
        };
        api.delete_binding(&del, false).await.expect("unbind");
        assert!(
            !api.publish_message("/", "events", "eu.orders", "x", Default::default())
                .await
                .unwrap()
                .routed
        );
        api.delete_exchange("/", "events", false).await.unwrap();
        assert!(api.get_exchange_info("/", "events").await.is_err());
        // The same refusal AMQP gets.
        let (status, v) = raw(
            &broker,
            "PUT",
            "/exchanges/%2F/amq.nope",
            GUEST,
            Some(br#"{"type":"direct"}"#.to_vec()),
        )
        .await;
        assert_eq!(status, 403, "{v}");
        let (status, v) = raw(
            &broker,
            "PUT",
            "/exchanges/%2F/x",
            GUEST,
            Some(br#"{"type":"nonsense"}"#.to_vec()),
        )
        .await;
        assert_eq!(status, 400, "{v}");
    })
    .await;
}

#[tokio::test]
async fn connections_channels_and_consumers_show_and_close() {
    bounded(Duration::from_secs(20), async {
        let (broker, api) = start().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare(
            "jobs".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        for i in 0..5u8 {
            common::publish(&ch, "", "jobs", &[i]).await;
        }
        ch.basic_qos(3, BasicQosOptions::default()).await.unwrap();
        let _consumer = ch
            .basic_consume(
                "jobs".into(),
                "worker-1".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        // Snapshots are copied once a second.
        let mut seen = None;
        for _ in 0..40 {
            let chans = api.list_channels().await.unwrap();
            if chans
                .first()
                .is_some_and(|c| c.messages_unacknowledged == 3)
            {
                seen = Some(chans);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let chans = seen.expect("the channel shows 3 unacked (prefetch 3)");
        assert_eq!(chans[0].prefetch_count, 3);
        let q = api.get_queue_info("/", "jobs").await.unwrap();
        assert_eq!(
            (
                q.message_count,
                q.unacknowledged_message_count,
                q.consumer_count
            ),
            (5, 3, 1)
        );
        let consumers = api.list_consumers().await.unwrap();
        assert_eq!(consumers[0].consumer_tag, "worker-1");
        let conns = api.list_connections().await.unwrap();
        assert_eq!(conns.len(), 1);
        assert_eq!(conns[0].protocol, "AMQP 0-9-1");

        api.close_connection(&conns[0].name, Some("maintenance"), false)
            .await
            .expect("close");
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if !conn.status().connected() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(closed.is_ok(), "the client saw its connection closed");
        // Its deliveries went back to the queue.
        let requeued = async {
            loop {
                let q = api.get_queue_info("/", "jobs").await.unwrap();
                if q.unacknowledged_message_count == 0 && q.message_count == 5 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), requeued)
            .await
            .expect("requeued");
    })
    .await;
}

#[tokio::test]
async fn node_overview_health_and_identity() {
    bounded(Duration::from_secs(20), async {
        let (broker, api) = start().await;
        let me = api.current_user().await.unwrap();
        assert_eq!(me.name, "guest");
        let o = api.overview().await.expect("overview");
        assert_eq!(o.product_name, "Warren");
        let nodes = api.list_nodes().await.expect("nodes");
        assert_eq!(nodes.len(), 1);
        api.health_check_cluster_wide_alarms()
            .await
            .expect("no alarms");
        api.health_check_port_listener(broker.port)
            .await
            .expect("amqp port listens");
        assert!(api.health_check_port_listener(1).await.is_err());
        let (status, v) = raw(&broker, "GET", "/aliveness-test/%2F", GUEST, None).await;
        assert_eq!((status, v), (200, json!({"status": "ok"})));
        let vhosts = api.list_vhosts().await.unwrap();
        assert_eq!(vhosts[0].name, "/");
        let users = api.list_users().await.unwrap();
        assert_eq!(users[0].name, "guest");
        let hash = format!("{:?}", users[0].password_hash);
        assert!(hash.len() > 20 && !hash.contains("\"guest\""), "{hash}");
        let defs = api
            .export_cluster_wide_definitions_as_data()
            .await
            .expect("definitions");
        assert_eq!(defs.users.len(), 1);
        // Raised alarms make the check fail with 503, as RabbitMQ's.
        broker.alarms().set(warren::alarms::AlarmState {
            memory: true,
            disk: false,
        });
        let (status, v) = raw(&broker, "GET", "/health/checks/alarms", GUEST, None).await;
        assert_eq!((status, v["status"].as_str()), (503, Some("failed")));
        assert_eq!(v["alarms"][0]["resource"], "memory");
    })
    .await;
}

#[tokio::test]
async fn bad_requests_get_json_reasons() {
    bounded(Duration::from_secs(20), async {
        let (broker, _api) = start().await;
        let cases: Vec<BadCase> = vec![
            ("GET", "/queues", None, None, 401),
            ("GET", "/queues", Some(("guest", "wrong")), None, 401),
            ("GET", "/queues/%2F/missing", GUEST, None, 404),
            ("GET", "/queues/no-such-vhost", GUEST, None, 404),
            ("GET", "/no/such/route", GUEST, None, 404),
            (
                "PUT",
                "/queues/%2F/q",
                GUEST,
                Some(b"{not json".to_vec()),
                400,
            ),
            (
                "PUT",
                "/queues/%2F/q",
                GUEST,
                Some(br#"{"durable": 7}"#.to_vec()),
                400,
            ),
            (
                "PUT",
                "/queues/%2F/q",
                GUEST,
                Some(br#"{"arguments": {"x-max-length": "ten"}}"#.to_vec()),
                400,
            ),
            (
                "GET",
                "/queues?page=1&name=(&use_regex=true",
                GUEST,
                None,
                400,
            ),
            ("GET", "/queues?page=9", GUEST, None, 400),
            ("PATCH", "/queues/%2F/q", GUEST, None, 405),
            (
                "PUT",
                "/queues/%2F/q",
                GUEST,
                Some(vec![b' '; 11_000_000]),
                413,
            ),
        ];
        for (method, path, auth, body, want) in cases {
            let (status, v) = raw(&broker, method, path, auth, body).await;
            assert_eq!(status, want, "{method} {path}: {v}");
            assert!(
                v["error"].is_string() && v["reason"].is_string(),
                "{method} {path}: {v}"
            );
        }
        let (status, v) = raw(&broker, "GET", "/queues", Some(("guest", "wrong")), None).await;
        assert_eq!(
            (status, v),
            (
                401,
                json!({"error": "not_authorized", "reason": "Login failed"})
            )
        );
    })
    .await;
}

#[tokio::test]
async fn prometheus_exposes_rabbitmq_metric_names() {
    bounded(Duration::from_secs(20), async {
        let (broker, api) = start().await;
        api.declare_queue("/", &QueueParams::new_durable_classic_queue("m", None))
            .await
            .unwrap();
        for _ in 0..3 {
            api.publish_message("/", "amq.default", "m", "12345", Default::default())
                .await
                .unwrap();
        }
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        common::publish(&ch, "", "m", &[0u8; 2000]).await;
        let _ = conn.close(200, "bye".into()).await;
        let addr = broker.prometheus_addr().expect("metrics on");
        let scrape = |path: &'static str| async move {
            let url = format!("http://{addr}{path}");
            reqwest::get(url).await.unwrap().text().await.unwrap()
        };
        // The connection is counted closed once its task has ended.
        let mut text = scrape("/metrics").await;
        for _ in 0..100 {
            if text.contains("rabbitmq_connections_closed_total 1") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            text = scrape("/metrics").await;
        }
        let value = |series: &str| -> f64 {
            text.lines()
                .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{series} missing in:\n{text}"))
        };
        assert_eq!(value("rabbitmq_queue_messages_ready"), 4.0);
        assert_eq!(value("rabbitmq_queues"), 1.0);
        assert_eq!(value("rabbitmq_connections_closed_total"), 1.0);
        assert_eq!(
            value("rabbitmq_global_messages_received_total{protocol=\"amqp091\"}"),
            1.0,
            "AMQP publishes"
        );
        assert_eq!(
            value("rabbitmq_message_size_bytes_bucket{protocol=\"amqp091\",le=\"1000.0\"}"),
            0.0
        );
        assert_eq!(
            value("rabbitmq_message_size_bytes_bucket{protocol=\"amqp091\",le=\"10000.0\"}"),
            1.0
        );
        assert_eq!(
            value("rabbitmq_message_size_bytes_bucket{protocol=\"amqp091\",le=\"+Inf\"}"),
            1.0
        );
        assert!(text.contains("rabbitmq_identity_info{rabbitmq_node="));
        let per_object = reqwest::get(format!("http://{addr}/metrics/per-object"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            per_object.contains("rabbitmq_queue_messages_ready{vhost=\"/\",queue=\"m\"} 4"),
            "{per_object}"
        );
    })
    .await;
}

#[tokio::test]
async fn long_routing_keys_never_break_a_connection() {
    bounded(Duration::from_secs(20), async {
        let (broker, api) = start().await;
        // Over HTTP a routing key is refused past 255 bytes, as AMQP's
        // short string limits it.
        let long = "k".repeat(300);
        let body = json!({"routing_key": long, "payload": "x", "payload_encoding": "string", "properties": {}});
        let (status, _) = raw(&broker, "POST", "/exchanges/%2F/amq.fanout/publish", GUEST, Some(body.to_string().into_bytes())).await;
        assert_eq!(status, 400);
        // A dead-letter routing key given as a long string reaches
        // deliveries cut to 255 bytes; the connection and message survive.
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let args = common::table(&[
            ("x-dead-letter-exchange", lapin::types::AMQPValue::LongString("amq.fanout".into())),
            ("x-dead-letter-routing-key", lapin::types::AMQPValue::LongString(long.as_str().into())),
            ("x-message-ttl", lapin::types::AMQPValue::LongInt(0)),
        ]);
        ch.queue_declare("ttl0".into(), QueueDeclareOptions::default(), args).await.unwrap();
        ch.queue_declare("sink".into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
        let bind = lapin::options::QueueBindOptions::default();
        ch.queue_bind("sink".into(), "amq.fanout".into(), "".into(), bind, FieldTable::default()).await.unwrap();
        common::publish(&ch, "", "ttl0", b"m").await;
        common::wait_for_count(&ch, "sink", 1).await;
        let got = ch.basic_get("sink".into(), lapin::options::BasicGetOptions { no_ack: true }).await.unwrap();
        let got = got.expect("the dead letter");
        assert_eq!(got.delivery.routing_key.as_str(), &long[..255]);
        let _ = api;
    })
    .await;
}
