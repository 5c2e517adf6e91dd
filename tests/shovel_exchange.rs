//! Shovels whose source is an exchange (`src-exchange`,
//! `src-exchange-key`), as RabbitMQ's: the shovel binds a queue of its own
//! (server-named, exclusive) and moves what reaches it; the queue goes
//! when the shovel is deleted. Recorded against RabbitMQ 3.10.8 in
//! conformance/recordings/rabbitmq-shovel.md (A3, H).

mod common;

use std::time::Duration;

use common::{bounded, free_port, poll_async as poll, Broker};
use lapin::options::BasicGetOptions;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(15);
const TICK: Duration = Duration::from_millis(50);

async fn start() -> Broker {
    Broker::start_with(|c| c.management_port = free_port()).await
}

/// The shovel's status (RabbitMQ answers a list of one).
async fn status(broker: &Broker, name: &str) -> Value {
    let path = format!("/shovels/vhost/%2F/{name}");
    let (_, s) = broker.api("GET", &path, None).await;
    s[0].clone()
}

/// The shovel's status once it is in `state`.
async fn state(broker: &Broker, name: &str, state: &str) -> Value {
    let found = poll(PATIENCE, TICK, || async {
        let s = status(broker, name).await;
        (s["state"] == state).then_some(s)
    })
    .await;
    found.unwrap_or_else(|| panic!("shovel {name} is not {state}"))
}

async fn running(broker: &Broker, name: &str) -> Value {
    state(broker, name, "running").await
}

/// The shovel's own queues (server-named, exclusive).
async fn own_queues(broker: &Broker) -> Vec<Value> {
    let (_, queues) = broker.api("GET", "/queues/%2F", None).await;
    let queues = queues.as_array().cloned().unwrap_or_default();
    queues
        .into_iter()
        .filter(|q| {
            q["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("amq.gen-"))
        })
        .collect()
}

#[tokio::test]
async fn a_shovel_moves_what_an_exchange_routes_to_its_key() {
    bounded(Duration::from_secs(30), async {
        let broker = start().await;
        let (_conn, ch) = broker.channel().await;
        let value = json!({"value": {"src-uri": "amqp://", "src-exchange": "amq.topic",
            "src-exchange-key": "orders.#", "dest-uri": "amqp://", "dest-queue": "collected",
            "dest-add-forward-headers": true}});
        let (status, reply) = broker
            .api("PUT", "/parameters/shovel/%2F/orders", Some(value))
            .await;
        assert_eq!(status, 201, "{reply}");
        let s = running(&broker, "orders").await;
        assert_eq!(s["src_exchange"], "amq.topic");
        assert_eq!(s["src_exchange_key"], "orders.#");
        assert!(s.get("src_queue").is_none(), "{s}");

        let own = own_queues(&broker).await;
        assert_eq!(own.len(), 1, "{own:?}");
        assert_eq!(
            (own[0]["durable"].clone(), own[0]["exclusive"].clone()),
            (json!(false), json!(true))
        );
        let own_name = own[0]["name"].as_str().unwrap_or_default().to_string();
        let path = format!("/queues/%2F/{own_name}/bindings");
        let (_, bindings) = broker.api("GET", &path, None).await;
        assert!(
            bindings.as_array().is_some_and(|b| b
                .iter()
                .any(|b| b["source"] == "amq.topic" && b["routing_key"] == "orders.#")),
            "{bindings}"
        );

        for (i, key) in (0..60).map(|i| (i, if i % 3 == 0 { "other.x" } else { "orders.eu" })) {
            let body = format!("m{i}");
            common::publish_with(&ch, "amq.topic", key, body.as_bytes(), common::persistent())
                .await;
        }
        let moved = poll(PATIENCE, TICK, || async {
            let (_, q) = broker.api("GET", "/queues/%2F/collected", None).await;
            (q["messages_ready"] == 40).then_some(())
        })
        .await;
        assert!(moved.is_some(), "40 orders.* messages did not arrive");
        let first = ch
            .basic_get("collected".into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
            .expect("a message");
        assert_eq!(first.delivery.data, b"m1");
        let headers = first
            .delivery
            .properties
            .headers()
            .clone()
            .unwrap_or_default();
        let Some(AMQPValue::FieldArray(entries)) = headers.inner().get("x-shovelled") else {
            panic!("no x-shovelled header: {headers:?}");
        };
        let Some(AMQPValue::FieldTable(entry)) = entries.as_slice().first() else {
            panic!("x-shovelled is empty");
        };
        let src = |k: &str| match entry.inner().get(k) {
            Some(AMQPValue::LongString(s)) => s.to_string(),
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(
            (src("src-exchange"), src("src-exchange-key")),
            ("amq.topic".into(), "orders.#".into())
        );

        // Deleting the shovel deletes its queue.
        let (status, _) = broker
            .api("DELETE", "/parameters/shovel/%2F/orders", None)
            .await;
        assert_eq!(status, 204);
        let gone = poll(PATIENCE, TICK, || async {
            own_queues(&broker).await.is_empty().then_some(())
        })
        .await;
        assert!(gone.is_some(), "the shovel's queue outlived it");
    })
    .await
}

#[tokio::test]
async fn without_a_key_the_binding_is_the_queue_name_and_a_count_ends_it() {
    bounded(Duration::from_secs(30), async {
        let broker = start().await;
        let (_conn, ch) = broker.channel().await;
        common::declare_queue(&ch, "d").await;
        let value = json!({"value": {"src-uri": "amqp://", "src-exchange": "amq.direct",
            "dest-uri": "amqp://", "dest-queue": "d", "src-delete-after": 3}});
        let (status, reply) = broker
            .api("PUT", "/parameters/shovel/%2F/direct", Some(value))
            .await;
        assert_eq!(status, 201, "{reply}");
        running(&broker, "direct").await;
        let own = own_queues(&broker).await;
        let own_name = own[0]["name"].as_str().unwrap_or_default().to_string();
        // As RabbitMQ: an empty key binds with the queue's own name, so a
        // message routed with "" does not reach it.
        for key in [
            "",
            own_name.as_str(),
            own_name.as_str(),
            own_name.as_str(),
            own_name.as_str(),
        ] {
            common::publish(&ch, "amq.direct", key, key.as_bytes()).await;
        }
        let done = state(&broker, "direct", "terminated").await;
        assert_eq!(done["messages_moved"], 3, "{done}");
        let (_, d) = broker.api("GET", "/queues/%2F/d", None).await;
        assert_eq!(d["messages_ready"], 3, "{d}");
        // Finished: its parameter and its queue (with the 4th message) are gone.
        assert!(own_queues(&broker).await.is_empty());

        let length = json!({"value": {"src-uri": "amqp://", "src-exchange": "amq.direct",
            "dest-uri": "amqp://", "dest-queue": "d", "src-delete-after": "queue-length"}});
        let (status, reply) = broker
            .api("PUT", "/parameters/shovel/%2F/len", Some(length))
            .await;
        assert_eq!(status, 400, "{reply}");
        assert!(
            reply["reason"]
                .as_str()
                .is_some_and(|r| r.contains("an exchange has no length")),
            "{reply}"
        );
    })
    .await
}

#[tokio::test]
async fn a_missing_source_exchange_waits_and_starts_once_it_exists() {
    bounded(Duration::from_secs(30), async {
        let broker = start().await;
        let (_conn, ch) = broker.channel().await;
        let value = json!({"value": {"src-uri": "amqp://", "src-exchange": "later",
            "dest-uri": "amqp://", "dest-queue": "landed", "reconnect-delay": 1}});
        let (code, _) = broker
            .api("PUT", "/parameters/shovel/%2F/later", Some(value))
            .await;
        assert_eq!(code, 201);
        // Starting, then waiting with the reason once the first attempt
        // failed.
        let waiting = poll(PATIENCE, TICK, || async {
            let s = status(&broker, "later").await;
            let why = s["reason"].as_str().unwrap_or_default().to_string();
            (s["state"] == "starting" && why.contains("later")).then_some(s)
        })
        .await;
        assert!(waiting.is_some(), "{}", status(&broker, "later").await);
        // A failed start leaves no queue behind.
        assert!(own_queues(&broker).await.is_empty());
        ch.exchange_declare(
            "later".into(),
            lapin::ExchangeKind::Fanout,
            Default::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare the exchange");
        running(&broker, "later").await;
        common::publish(&ch, "later", "any", b"hello").await;
        let landed = poll(PATIENCE, TICK, || async {
            let (_, q) = broker.api("GET", "/queues/%2F/landed", None).await;
            (q["messages_ready"] == 1).then_some(())
        })
        .await;
        assert!(landed.is_some(), "the message did not arrive");
    })
    .await
}

#[tokio::test]
async fn copies_the_destination_refused_wait_in_the_shovels_queue() {
    bounded(Duration::from_secs(40), async {
        let broker = start().await;
        let (_conn, ch) = broker.channel().await;
        // The destination takes 2, then refuses (a policy, lifted later).
        let cap = json!({"pattern": "^capped$", "apply-to": "queues",
            "definition": {"max-length": 2, "overflow": "reject-publish"}});
        assert_eq!(
            broker.api("PUT", "/policies/%2F/cap", Some(cap)).await.0,
            201
        );
        common::declare_queue(&ch, "capped").await;
        let value = json!({"value": {"src-uri": "amqp://", "src-exchange": "amq.fanout",
            "dest-uri": "amqp://", "dest-queue": "capped", "reconnect-delay": 1}});
        let (status, _) = broker
            .api("PUT", "/parameters/shovel/%2F/capped", Some(value))
            .await;
        assert_eq!(status, 201);
        running(&broker, "capped").await;
        for i in 0..10 {
            common::publish(&ch, "amq.fanout", "", format!("m{i}").as_bytes()).await;
        }
        let waiting = state(&broker, "capped", "starting").await;
        assert!(
            waiting["reason"]
                .as_str()
                .is_some_and(|r| r.contains("refused")),
            "{waiting}"
        );
        // The refused ones are still in the shovel's queue: once the cap
        // goes, every message arrives.
        assert_eq!(broker.api("DELETE", "/policies/%2F/cap", None).await.0, 204);
        let all = poll(PATIENCE, TICK, || async {
            let (_, q) = broker.api("GET", "/queues/%2F/capped", None).await;
            (q["messages_ready"] == 10).then_some(())
        })
        .await;
        let (_, q) = broker.api("GET", "/queues/%2F/capped", None).await;
        assert!(all.is_some(), "only {} of 10 arrived", q["messages_ready"]);
        assert_eq!(
            own_queues(&broker).await.len(),
            1,
            "one queue of its own, kept"
        );
    })
    .await
}
