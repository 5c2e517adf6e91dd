//! What a shovel may not do with its messages: publish where its URI's
//! user may not (checked per copy, and again on every start), into an
//! exchange that cannot take them (internal, missing), or back into its
//! source queue. In each case the
//! messages stay at the source and the shovel says why, as RabbitMQ's
//! shovel, whose channel the broker would close, keeps them.

mod common;

use std::time::Duration;

use common::{bounded, free_port, poll_async as poll, Broker};
use lapin::options::ExchangeDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(15);
const TICK: Duration = Duration::from_millis(50);

async fn start() -> Broker {
    Broker::start_with(|c| c.management_port = free_port()).await
}

/// Vhost "perm", where guest may do anything and `user` (password "pw")
/// has `perms`; a channel of guest's in it.
async fn perm_vhost(broker: &Broker, user: &str, perms: Value) -> (Connection, Channel) {
    assert_eq!(broker.api("PUT", "/vhosts/perm", None).await.0, 201);
    let all = json!({"configure": ".*", "write": ".*", "read": ".*"});
    broker
        .api("PUT", "/permissions/perm/guest", Some(all))
        .await;
    let password = json!({"password": "pw", "tags": ""});
    broker
        .api("PUT", &format!("/users/{user}"), Some(password))
        .await;
    broker
        .api("PUT", &format!("/permissions/perm/{user}"), Some(perms))
        .await;
    let url = broker.url_as("guest", "guest", "perm");
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    (conn, ch)
}

/// The shovel's status once `ready` holds for it.
async fn status_when(broker: &Broker, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let found = poll(PATIENCE, TICK, || async {
        let (_, s) = broker.api("GET", path, None).await;
        let s = s[0].clone();
        ready(&s).then_some(s)
    })
    .await;
    match found {
        Some(s) => s,
        None => panic!("{path}: {}", broker.api("GET", path, None).await.1),
    }
}

fn waiting_because(why: &'static str) -> impl Fn(&Value) -> bool {
    move |s| s["state"] == "starting" && s["reason"].as_str().is_some_and(|r| r.contains(why))
}

async fn ready(broker: &Broker, vhost: &str, queue: &str) -> u64 {
    let (_, q) = broker
        .api("GET", &format!("/queues/{vhost}/{queue}"), None)
        .await;
    q["messages_ready"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn an_internal_destination_exchange_leaves_the_messages_at_the_source() {
    bounded(Duration::from_secs(30), async {
        let broker = start().await;
        let (_conn, ch) = broker.channel().await;
        let internal = ExchangeDeclareOptions {
            internal: true,
            ..Default::default()
        };
        ch.exchange_declare(
            "inner".into(),
            ExchangeKind::Fanout,
            internal,
            FieldTable::default(),
        )
        .await
        .expect("declare");
        common::declare_queue(&ch, "src").await;
        for i in 0..5 {
            common::publish(&ch, "", "src", format!("m{i}").as_bytes()).await;
        }
        let value = json!({"value": {"src-uri": "amqp://", "src-queue": "src", "dest-uri": "amqp://",
                                     "dest-exchange": "inner", "reconnect-delay": 1}});
        let (status, reply) = broker
            .api("PUT", "/parameters/shovel/%2F/inner", Some(value))
            .await;
        assert_eq!(status, 201, "{reply}");
        let s = status_when(&broker, "/shovels/vhost/%2F/inner", waiting_because("internal")).await;
        assert_eq!(s["messages_moved"], 0, "{s}");
        assert_eq!(ready(&broker, "%2F", "src").await, 5);
    })
    .await
}

#[tokio::test]
async fn each_copy_is_published_as_the_uri_user_and_checked_again_on_restart() {
    bounded(Duration::from_secs(30), async {
        let broker = start().await;
        // Carol reads anything, writes only to amq.topic.
        let perms = json!({"configure": "", "write": "^amq\\.topic$", "read": ".*"});
        let (_conn, ch) = perm_vhost(&broker, "carol", perms).await;
        common::declare_queue(&ch, "inbox").await;
        common::publish(&ch, "", "inbox", b"to the default exchange").await;
        // No destination: each message goes back to its own exchange, here
        // the default one, which carol may not write to.
        let value = json!({"value": {"src-uri": "amqp://carol:pw@localhost/perm", "src-queue": "inbox",
                                     "dest-uri": "amqp://carol:pw@localhost/perm", "reconnect-delay": 1}});
        let (status, reply) = broker
            .api("PUT", "/parameters/shovel/perm/asis", Some(value))
            .await;
        assert_eq!(status, 201, "{reply}");
        let path = "/shovels/vhost/perm/asis";
        let s = status_when(&broker, path, waiting_because("amq.default")).await;
        assert_eq!(s["messages_moved"], 0, "{s}");
        assert_eq!(ready(&broker, "perm", "inbox").await, 1);

        // Her permissions revoked, the shovel does not start again.
        assert_eq!(
            broker
                .api("DELETE", "/permissions/perm/carol", None)
                .await
                .0,
            204
        );
        let restart = format!("{path}/restart");
        assert_eq!(broker.api("DELETE", &restart, None).await.0, 204);
        status_when(&broker, path, waiting_because("may not connect")).await;
        assert_eq!(ready(&broker, "perm", "inbox").await, 1);
    })
    .await
}

#[tokio::test]
async fn a_copy_that_would_return_to_its_source_queue_stays_there() {
    bounded(Duration::from_secs(30), async {
        let broker = start().await;
        let (_conn, ch) = broker.channel().await;
        common::declare_queue(&ch, "inbox").await;
        common::publish(&ch, "", "inbox", b"published to the default exchange").await;
        // No destination: the message would go back to the default
        // exchange, which routes it into "inbox" again.
        let value = json!({"value": {"src-uri": "amqp://", "src-queue": "inbox", "dest-uri": "amqp://",
                                     "reconnect-delay": 1}});
        let (status, reply) = broker
            .api("PUT", "/parameters/shovel/%2F/back", Some(value))
            .await;
        assert_eq!(status, 201, "{reply}");
        let s = status_when(&broker, "/shovels/vhost/%2F/back", waiting_because("a loop")).await;
        assert_eq!(s["messages_moved"], 0, "{s}");
        assert_eq!(ready(&broker, "%2F", "inbox").await, 1);
    })
    .await
}

#[tokio::test]
async fn a_uri_user_is_held_to_their_own_permissions() {
    bounded(Duration::from_secs(20), async {
        let broker = start().await;
        // Bob may read "public" and write anywhere, and configure nothing.
        let bob = json!({"configure": "", "write": ".*", "read": "^public$"});
        let (_conn, ch) = perm_vhost(&broker, "bob", bob).await;
        for q in ["payroll", "public", "out"] {
            common::declare_queue(&ch, q).await;
        }
        let as_bob = |src: Value| {
            let mut v = json!({"src-uri": "amqp://bob:pw@localhost/perm",
                               "dest-uri": "amqp://bob:pw@localhost/perm", "dest-queue": "out"});
            if let (Some(v), Value::Object(src)) = (v.as_object_mut(), src) {
                v.extend(src);
            }
            json!({ "value": v })
        };
        let refused = [
            (json!({"src-queue": "payroll"}), "access to queue 'payroll'"),
            (json!({"src-queue": "new-one"}), "access to queue 'new-one'"),
            (
                json!({"src-exchange": "amq.topic", "src-exchange-key": "#"}),
                "access to queue 'amq.gen-shovel'",
            ),
        ];
        for (src, what) in refused {
            let (status, reply) = broker
                .api("PUT", "/parameters/shovel/perm/tap", Some(as_bob(src)))
                .await;
            assert_eq!(status, 400, "{reply}");
            let why = format!("ACCESS_REFUSED - {what} in vhost 'perm' refused for user 'bob'");
            assert_eq!(reply["reason"], format!("Validation failed\n\n{why}\n"));
        }
        let ok = as_bob(json!({"src-queue": "public"}));
        let (status, reply) = broker
            .api("PUT", "/parameters/shovel/perm/ok", Some(ok))
            .await;
        assert_eq!(status, 201, "{reply}");
    })
    .await
}
