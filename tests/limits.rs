//! Vhost and user limits enforced with RabbitMQ 3.10's refusals (recorded
//! with pika against RabbitMQ 3.10.8): a vhost's `max-connections` and a
//! user's at connection.open (530), a user's `max-channels` at
//! channel.open (530, the connection closes), a vhost's `max-queues` when
//! a declare would create a queue (406; redeclaring is fine). Limits set
//! through the API apply at once and after a restart.

mod common;

use std::time::Duration;

use common::{assert_code, bounded, free_port, reply_text, Broker};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde_json::json;

async fn connect_as(b: &Broker, user: &str, vhost: &str) -> lapin::Result<Connection> {
    let password = if user == "guest" { "guest" } else { user };
    Connection::connect(
        &b.url_as(user, password, vhost),
        ConnectionProperties::default(),
    )
    .await
}

async fn declare(ch: &lapin::Channel, name: &str) -> lapin::Result<lapin::Queue> {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
}

async fn with_api(dir: Option<std::path::PathBuf>) -> Broker {
    let adjust = |c: &mut warren::Config| c.management_port = free_port();
    match dir {
        Some(d) => Broker::start_in(d, adjust).await,
        None => Broker::start_with(adjust).await,
    }
}

#[tokio::test]
async fn vhost_connection_limit_counts_open_connections() {
    bounded(Duration::from_secs(20), async {
        let b = with_api(None).await;
        assert_eq!(b.api("PUT", "/vhosts/lim", Some(json!({}))).await.0, 201);
        let limit = json!({"value": 1});
        assert_eq!(b.api("PUT", "/vhost-limits/lim/max-connections", Some(limit)).await.0, 204);
        let first = connect_as(&b, "guest", "lim").await.expect("first connection");
        let e = assert_code(connect_as(&b, "guest", "lim").await, 530);
        assert_eq!(
            reply_text(&e),
            "NOT_ALLOWED - access to vhost 'lim' refused for user 'guest': connection limit (1) is reached"
        );
        // Other vhosts are not limited; a closed connection frees its place.
        let _other = connect_as(&b, "guest", "%2F").await.expect("vhost /");
        first.close(200, "bye".into()).await.unwrap();
        // The server forgets a connection once its task has ended.
        for _ in 0..250 {
            let (_, open) = b.api("GET", "/vhosts/lim/connections", None).await;
            if open == json!([]) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _again = connect_as(&b, "guest", "lim").await.expect("room again");
        // Lifting the limit applies at once.
        assert_eq!(b.api("DELETE", "/vhost-limits/lim/max-connections", None).await.0, 204);
        let _more = connect_as(&b, "guest", "lim").await.expect("no limit");
        b.stop().await;
    })
    .await;
}

#[tokio::test]
async fn vhost_queue_limit_refuses_new_queues_only() {
    bounded(Duration::from_secs(30), async {
        let dir = common::fresh_data_dir();
        let b = with_api(Some(dir.clone())).await;
        let (_c, ch) = b.channel().await;
        declare(&ch, "q1").await.expect("q1");
        let limit = json!({"value": 1});
        assert_eq!(b.api("PUT", "/vhost-limits/%2F/max-queues", Some(limit)).await.0, 204);
        declare(&ch, "q1").await.expect("redeclaring an existing queue");
        let e = assert_code(declare(&ch, "q2").await, 406);
        assert_eq!(
            reply_text(&e),
            "PRECONDITION_FAILED - cannot declare queue 'q2': queue limit in vhost '/' (1) is reached"
        );
        // Through the HTTP API too.
        let (status, e) = b.api("PUT", "/queues/%2F/q3", Some(json!({}))).await;
        assert_eq!(status, 400, "{e}");
        assert!(e["reason"].as_str().unwrap().contains("queue limit in vhost '/' (1)"), "{e}");
        b.stop().await;

        // The limit outlives a restart (q1 was transient: room for one).
        let b = with_api(Some(dir.clone())).await;
        let (_c, ch) = b.channel().await;
        declare(&ch, "q2").await.expect("the only queue");
        assert_code(declare(&ch, "q3").await, 406);
        assert_eq!(b.api("DELETE", "/vhost-limits/%2F/max-queues", None).await.0, 204);
        let (_c, ch) = b.channel().await;
        declare(&ch, "q3").await.expect("lifted");
        b.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test]
async fn user_limits_on_connections_and_channels() {
    bounded(Duration::from_secs(20), async {
        let b = with_api(None).await;
        let user = json!({"password": "lu", "tags": ""});
        assert_eq!(b.api("PUT", "/users/lu", Some(user)).await.0, 201);
        let all = json!({"configure": ".*", "write": ".*", "read": ".*"});
        assert_eq!(b.api("PUT", "/permissions/%2F/lu", Some(all)).await.0, 201);

        let limit = json!({"value": 1});
        assert_eq!(b.api("PUT", "/user-limits/lu/max-connections", Some(limit)).await.0, 204);
        let first = connect_as(&b, "lu", "%2F").await.expect("first");
        let e = assert_code(connect_as(&b, "lu", "%2F").await, 530);
        assert_eq!(
            reply_text(&e),
            "NOT_ALLOWED - connection refused for user 'lu': user connection limit (1) is reached"
        );
        let _guest = b.connect().await; // other users are not counted
        assert_eq!(b.api("DELETE", "/user-limits/lu/max-connections", None).await.0, 204);

        let limit = json!({"value": 1});
        assert_eq!(b.api("PUT", "/user-limits/lu/max-channels", Some(limit)).await.0, 204);
        let _ch = first.create_channel().await.expect("first channel");
        // Counted across the user's connections; the refusal closes the
        // connection, as in RabbitMQ.
        let second = connect_as(&b, "lu", "%2F").await.expect("second connection");
        let e = assert_code(second.create_channel().await, 530);
        assert_eq!(
            reply_text(&e),
            "NOT_ALLOWED - number of channels opened for user 'lu' has reached the maximum allowed user limit of (1)"
        );
        assert!(!second.status().connected());
        let unlimited = json!({"value": -1});
        assert_eq!(b.api("PUT", "/user-limits/lu/max-channels", Some(unlimited)).await.0, 204);
        first.create_channel().await.expect("a negative limit is none");
        b.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_cannot_pass_a_connection_limit_together() {
    bounded(Duration::from_secs(60), async {
        let b = with_api(None).await;
        assert_eq!(b.api("PUT", "/vhosts/race", Some(json!({}))).await.0, 201);
        let limit = json!({"value": 3});
        assert_eq!(
            b.api("PUT", "/vhost-limits/race/max-connections", Some(limit))
                .await
                .0,
            204
        );
        let url = b.url_as("guest", "guest", "race");
        // Many clients at once: before admissions were counted, several
        // could pass the check before any had registered.
        for round in 0..5 {
            let opens: Vec<_> = (0..40)
                .map(|_| {
                    let url = url.clone();
                    tokio::spawn(async move {
                        Connection::connect(&url, ConnectionProperties::default()).await
                    })
                })
                .collect();
            let mut open = Vec::new();
            for o in opens {
                if let Ok(c) = o.await.unwrap() {
                    open.push(c);
                }
            }
            assert_eq!(open.len(), 3, "round {round}: {} opened", open.len());
            for c in open {
                c.close(200, "bye".into()).await.unwrap();
            }
            // Closed connections are forgotten once their tasks end.
            for _ in 0..250 {
                let (_, list) = b.api("GET", "/vhosts/race/connections", None).await;
                if list.as_array().is_some_and(Vec::is_empty) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    })
    .await
}
