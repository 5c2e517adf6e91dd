//! The management API's per-node and legacy routes as RabbitMQ 3.10
//! answers them: login attempts per protocol, the memory breakdown, the
//! deprecated node health check, `/api/all-configuration` (the old name of
//! definitions) and the queue rebalance (nothing to move on one node).

mod common;

use std::time::Duration;

use common::{bounded, free_port, Broker};
use serde_json::{json, Value};

#[tokio::test]
async fn node_routes_answer_as_rabbitmq_does() {
    bounded(Duration::from_secs(20), async {
        let b = Broker::start_with(|c| c.management_port = free_port()).await;
        let (_, overview) = b.api("GET", "/overview", None).await;
        let node = overview["node"].as_str().unwrap().to_string();
        // One AMQP login that works, one that fails, and HTTP requests.
        let (_c, _ch) = b.channel().await;
        let refused = lapin::Connection::connect(
            &b.url_as("guest", "wrong", "/"),
            lapin::ConnectionProperties::default(),
        )
        .await;
        assert!(refused.is_err());
        let (status, _) = b.api_as("nobody", "GET", "/overview", None).await;
        assert_eq!(status, 401);
        let (_, rows) = b.api("GET", &format!("/auth/attempts/{node}"), None).await;
        let row = |p: &str| {
            rows.as_array()
                .unwrap()
                .iter()
                .find(|r| r["protocol"] == p)
                .cloned()
        };
        let amqp = row("amqp091").expect("amqp091 row");
        assert_eq!(
            (
                amqp["auth_attempts_succeeded"].as_u64(),
                amqp["auth_attempts_failed"].as_u64()
            ),
            (Some(1), Some(1))
        );
        let http = row("http").expect("http row");
        assert!(
            http["auth_attempts_succeeded"].as_u64().unwrap() >= 2,
            "{http}"
        );
        assert_eq!(http["auth_attempts_failed"], 1);
        assert_eq!(
            http["auth_attempts"],
            http["auth_attempts_succeeded"].as_u64().unwrap() + 1
        );
        let (_, source) = b
            .api("GET", &format!("/auth/attempts/{node}/source"), None)
            .await;
        let of = |user: &str, p: &str| {
            let rows = source.as_array().unwrap().iter();
            rows.clone()
                .find(|r| r["username"] == user && r["protocol"] == p)
                .cloned()
        };
        let guest_amqp = of("guest", "amqp091").expect("guest over AMQP");
        assert_eq!(guest_amqp["remote_address"], "127.0.0.1");
        assert_eq!(guest_amqp["auth_attempts_succeeded"], 1);
        assert_eq!(guest_amqp["auth_attempts_failed"], 1);
        let nobody = of("nobody", "http").expect("the refused HTTP login");
        assert_eq!(nobody["auth_attempts_failed"], 1);
        assert_eq!(
            b.api("GET", "/auth/attempts/rabbit@elsewhere", None)
                .await
                .0,
            404
        );

        let (_, memory) = b.api("GET", &format!("/nodes/{node}/memory"), None).await;
        let total = &memory["memory"]["total"];
        assert!(total["rss"].as_u64().unwrap() > 0, "{memory}");
        assert!(memory["memory"]["queue_procs"].is_u64());

        assert_eq!(
            b.api("GET", "/healthchecks/node", None).await.1,
            json!({"status": "ok"})
        );
        let (status, _) = b
            .api("GET", &format!("/healthchecks/node/{node}"), None)
            .await;
        assert_eq!(status, 200);
        let (_, legacy) = b.api("GET", "/all-configuration", None).await;
        let (_, defs) = b.api("GET", "/definitions", None).await;
        assert_eq!(legacy["users"], defs["users"]);
        assert_eq!(b.api("POST", "/rebalance/queues", None).await.0, 204);

        // Monitoring users and administrators only.
        let user = json!({"password": "mgr", "tags": "management"});
        assert_eq!(b.api("PUT", "/users/mgr", Some(user)).await.0, 201);
        let (status, e) = b
            .api_as("mgr", "GET", &format!("/nodes/{node}/memory"), None)
            .await;
        assert_eq!(
            (status, e["error"].clone()),
            (401, Value::from("not_authorised"))
        );
        b.stop().await;
    })
    .await;
}
