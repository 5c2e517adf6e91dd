//! Policies set, changed and cleared through the management API on queues
//! that hold messages, each effect observed by a client, with RabbitMQ's
//! precedence against x-arguments and operator policies (RabbitMQ 3.10
//! trims a queue at once when a max-length policy lands, as here).

mod common;

use std::time::Duration;

use common::{bounded, free_port, Broker};
use lapin::options::{BasicGetOptions, BasicRejectOptions, QueueDeclareOptions};
use lapin::types::AMQPValue;
use serde_json::{json, Value};

/// PUT/DELETE/GET on the API as guest; status and JSON body.
async fn call(broker: &Broker, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    broker.api(method, path, body).await
}

async fn set_policy(broker: &Broker, kind: &str, name: &str, pattern: &str, definition: Value) {
    let body =
        json!({"pattern": pattern, "definition": definition, "apply-to": "queues", "priority": 1});
    let (status, v) = call(broker, "PUT", &format!("/{kind}/%2F/{name}"), Some(body)).await;
    assert!(status == 201 || status == 204, "{status} {v}");
}

async fn count(ch: &lapin::Channel, q: &str) -> u32 {
    common::ready_count(ch, q).await.expect("queue exists")
}

#[tokio::test]
async fn max_length_policy_trims_at_once_and_clearing_it_lifts_the_limit() {
    bounded(Duration::from_secs(20), async {
        let broker = Broker::start_with(|c| c.management_port = free_port()).await;
        let (_c, ch) = broker.channel().await;
        common::declare_queue(&ch, "jobs").await;
        for i in 0..5u8 {
            common::publish(&ch, "", "jobs", &[b'0' + i]).await;
        }
        common::wait_for_count(&ch, "jobs", 5).await;
        set_policy(
            &broker,
            "policies",
            "cap",
            "^jobs$",
            json!({"max-length": 2}),
        )
        .await;
        assert_eq!(count(&ch, "jobs").await, 2, "trimmed from the head");
        assert_eq!(common::get_all(&ch, "jobs").await, ["3", "4"]);
        let (_, q) = call(&broker, "GET", "/queues/%2F/jobs", None).await;
        assert_eq!(
            (q["policy"].as_str(), &q["effective_policy_definition"]),
            (Some("cap"), &json!({"max-length": 2}))
        );
        // Changed: the new limit applies.
        set_policy(
            &broker,
            "policies",
            "cap",
            "^jobs$",
            json!({"max-length": 3}),
        )
        .await;
        for i in 0..5u8 {
            common::publish(&ch, "", "jobs", &[b'a' + i]).await;
        }
        assert_eq!(common::get_all(&ch, "jobs").await, ["c", "d", "e"]);
        // Cleared: no limit.
        let (status, _) = call(&broker, "DELETE", "/policies/%2F/cap", None).await;
        assert_eq!(status, 204);
        for i in 0..5u8 {
            common::publish(&ch, "", "jobs", &[b'a' + i]).await;
        }
        common::wait_for_count(&ch, "jobs", 5).await;
    })
    .await;
}

#[tokio::test]
async fn dead_letter_and_ttl_policies_apply_to_existing_queues() {
    bounded(Duration::from_secs(20), async {
        let broker = Broker::start_with(|c| c.management_port = free_port()).await;
        let (_c, ch) = broker.channel().await;
        common::declare_queue(&ch, "work").await;
        common::declare_queue(&ch, "parked").await;
        set_policy(&broker, "policies", "dlx", "^work$", json!({"dead-letter-exchange": "", "dead-letter-routing-key": "parked", "message-ttl": 200})).await;
        common::publish(&ch, "", "work", b"poison").await;
        let m = ch.basic_get("work".into(), BasicGetOptions::default()).await.unwrap().expect("a message");
        m.reject(BasicRejectOptions { requeue: false }).await.unwrap();
        common::wait_for_count(&ch, "parked", 1).await;
        // The TTL applies to messages published from now on: expired ones
        // are dead-lettered too.
        common::publish(&ch, "", "work", b"late").await;
        common::wait_for_count(&ch, "parked", 2).await;
        assert_eq!(count(&ch, "work").await, 0);
    })
    .await;
}

#[tokio::test]
async fn arguments_and_operator_policies_take_precedence_as_in_rabbitmq() {
    bounded(Duration::from_secs(20), async {
        let broker = Broker::start_with(|c| c.management_port = free_port()).await;
        let (_c, ch) = broker.channel().await;
        let args = common::table(&[("x-max-length", AMQPValue::LongInt(3))]);
        ch.queue_declare("capped".into(), QueueDeclareOptions::default(), args)
            .await
            .unwrap();
        set_policy(
            &broker,
            "policies",
            "loose",
            "^capped$",
            json!({"max-length": 10}),
        )
        .await;
        for i in 0..6u8 {
            common::publish(&ch, "", "capped", &[b'0' + i]).await;
        }
        assert_eq!(count(&ch, "capped").await, 3, "the argument's lower limit");
        set_policy(
            &broker,
            "operator-policies",
            "strict",
            ".*",
            json!({"max-length": 1}),
        )
        .await;
        assert_eq!(
            count(&ch, "capped").await,
            1,
            "the operator policy's lower limit, at once"
        );
        let (_, q) = call(&broker, "GET", "/queues/%2F/capped", None).await;
        assert_eq!(q["operator_policy"], "strict");
        assert_eq!(q["effective_policy_definition"]["max-length"], 1);
        // Refused as RabbitMQ refuses them.
        for (kind, body) in [
            (
                "policies",
                json!({"pattern": "(", "definition": {"max-length": 1}}),
            ),
            (
                "policies",
                json!({"pattern": "x", "definition": {"nope": 1}}),
            ),
            (
                "policies",
                json!({"pattern": "x", "definition": {"max-length": -1}}),
            ),
            (
                "operator-policies",
                json!({"pattern": "x", "definition": {"dead-letter-exchange": "x"}}),
            ),
        ] {
            let (status, v) = call(&broker, "PUT", &format!("/{kind}/%2F/bad"), Some(body)).await;
            assert_eq!(status, 400, "{v}");
            assert!(
                v["reason"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("Validation failed"),
                "{v}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn policies_survive_a_restart() {
    bounded(Duration::from_secs(20), async {
        let dir = common::fresh_data_dir();
        let broker = Broker::start_in(dir.clone(), |c| c.management_port = free_port()).await;
        set_policy(&broker, "policies", "cap", "^d$", json!({"max-length": 1})).await;
        let (_c, ch) = broker.channel().await;
        common::declare_durable(&ch, "d").await;
        broker.stop().await;
        let broker = Broker::start_in(dir.clone(), |c| c.management_port = free_port()).await;
        let (_c, ch) = broker.channel().await;
        for i in 0..3u8 {
            common::publish(&ch, "", "d", &[i]).await;
        }
        assert_eq!(count(&ch, "d").await, 1);
        let (_, list) = call(&broker, "GET", "/policies", None).await;
        assert_eq!(list[0]["name"], "cap");
        broker.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test]
async fn an_alternate_exchange_policy_catches_unroutable_messages() {
    bounded(Duration::from_secs(20), async {
        let broker = Broker::start_with(|c| c.management_port = free_port()).await;
        let (_c, ch) = broker.channel().await;
        let opts = lapin::options::ExchangeDeclareOptions::default();
        let kind = lapin::ExchangeKind::Direct;
        ch.exchange_declare("orders".into(), kind.clone(), opts, Default::default()).await.unwrap();
        ch.exchange_declare("lost".into(), lapin::ExchangeKind::Fanout, opts, Default::default()).await.unwrap();
        common::declare_queue(&ch, "caught").await;
        let bind = lapin::options::QueueBindOptions::default();
        ch.queue_bind("caught".into(), "lost".into(), "".into(), bind, Default::default()).await.unwrap();
        let body = json!({"pattern": "^orders$", "definition": {"alternate-exchange": "lost"}, "apply-to": "exchanges"});
        let (status, _) = call(&broker, "PUT", "/policies/%2F/ae", Some(body)).await;
        assert_eq!(status, 201);
        common::publish(&ch, "orders", "nowhere", b"1").await;
        common::wait_for_count(&ch, "caught", 1).await;
        let (_, x) = call(&broker, "GET", "/exchanges/%2F/orders", None).await;
        assert_eq!(x["policy"], "ae");
        // Cleared: unroutable messages are dropped again.
        call(&broker, "DELETE", "/policies/%2F/ae", None).await;
        common::publish(&ch, "orders", "nowhere", b"2").await;
        assert_eq!(count(&ch, "caught").await, 1);
        // An exchange declared later gets the policy too; its own argument
        // wins over a policy's.
        call(&broker, "PUT", "/policies/%2F/ae", Some(json!({"pattern": "^late", "definition": {"alternate-exchange": "lost"}, "apply-to": "exchanges"}))).await;
        ch.exchange_declare("late".into(), kind.clone(), opts, Default::default()).await.unwrap();
        common::publish(&ch, "late", "nowhere", b"3").await;
        common::wait_for_count(&ch, "caught", 2).await;
        let args = common::table(&[("alternate-exchange", AMQPValue::LongString("amq.direct".into()))]);
        ch.exchange_declare("late2".into(), kind, opts, args).await.unwrap();
        common::publish(&ch, "late2", "nowhere", b"4").await;
        assert_eq!(count(&ch, "caught").await, 2, "the argument's alternate exchange routes nowhere");
    })
    .await;
}
