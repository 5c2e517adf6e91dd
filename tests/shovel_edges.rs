//! Dynamic shovels at their edges, each found by a hostile review: a
//! policymaker reaching into another vhost, a mailbox that fills and
//! stalls the move, a destination that refuses some copies or goes away,
//! credentials shown back, an exclusive source, restarting a finished one.

mod common;

use std::time::Duration;

use common::{bounded, free_port, poll_async as poll, Broker};
use lapin::options::BasicGetOptions;
use lapin::types::AMQPValue;
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(15);
const TICK: Duration = Duration::from_millis(50);

async fn start() -> Broker {
    Broker::start_with(|c| c.management_port = free_port()).await
}

fn shovel(src: &str, dest: &str, extra: Value) -> Value {
    let mut v = json!({"src-uri": "amqp://", "src-queue": src, "dest-uri": "amqp://",
                       "dest-queue": dest, "reconnect-delay": 1});
    if let (Some(v), Value::Object(more)) = (v.as_object_mut(), extra) {
        v.extend(more);
    }
    json!({ "value": v })
}

async fn ready(broker: &Broker, queue: &str) -> u64 {
    let (_, q) = broker
        .api("GET", &format!("/queues/%2F/{queue}"), None)
        .await;
    q["messages_ready"].as_u64().unwrap_or(0)
}

/// Bodies got (and acked) from `queue` until it is empty.
async fn take_all(ch: &lapin::Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
    {
        out.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
    }
    out
}

#[tokio::test]
async fn a_policymaker_cannot_shovel_across_vhosts_or_with_a_wrong_password() {
    bounded(Duration::from_secs(20), async {
        let broker = start().await;
        for vhost in ["pmv", "secret"] {
            assert_eq!(
                broker.api("PUT", &format!("/vhosts/{vhost}"), None).await.0,
                201
            );
        }
        let user = json!({"password": "pm", "tags": "policymaker"});
        broker.api("PUT", "/users/pm", Some(user)).await;
        let all = json!({"configure": ".*", "write": ".*", "read": ".*"});
        broker.api("PUT", "/permissions/pmv/pm", Some(all)).await;
        let steal = json!({"value": {"src-uri": "amqp:///secret", "src-queue": "payroll",
                                     "dest-uri": "amqp:///pmv", "dest-queue": "loot"}});
        let (status, reply) = broker
            .api_as("pm", "PUT", "/parameters/shovel/pmv/steal", Some(steal))
            .await;
        assert_eq!(status, 400, "{reply}");
        assert_eq!(
            reply["reason"],
            "Validation failed\n\nuser \"pm\" may not connect to vhost \"secret\"\n"
        );
        let wrong = json!({"value": {"src-uri": "amqp://guest:nope@localhost/pmv", "src-queue": "a",
                                     "dest-uri": "amqp:///pmv", "dest-queue": "b"}});
        let (status, reply) = broker
            .api_as("pm", "PUT", "/parameters/shovel/pmv/wrong", Some(wrong))
            .await;
        assert_eq!(status, 400, "{reply}");
        // Its own vhost is fine.
        let own = json!({"value": {"src-uri": "amqp:///pmv", "src-queue": "a",
                                   "dest-uri": "amqp:///pmv", "dest-queue": "b"}});
        let (status, reply) = broker
            .api_as("pm", "PUT", "/parameters/shovel/pmv/own", Some(own))
            .await;
        assert_eq!(status, 201, "{reply}");
        broker.stop().await;
    })
    .await
}

#[tokio::test]
async fn large_messages_do_not_stall_a_shovel_on_its_full_mailbox() {
    bounded(Duration::from_secs(60), async {
        let broker = start().await;
        let (_c, ch) = broker.channel().await;
        common::declare_queue(&ch, "big-src").await;
        let body = vec![b'x'; 16 * 1024];
        for _ in 0..1_500 {
            common::publish(&ch, "", "big-src", &body).await;
        }
        let def = shovel(
            "big-src",
            "big-dest",
            json!({"src-delete-after": "queue-length"}),
        );
        assert_eq!(
            broker
                .api("PUT", "/parameters/shovel/%2F/big", Some(def))
                .await
                .0,
            201
        );
        let moved = poll(PATIENCE, TICK, || async {
            (ready(&broker, "big-dest").await == 1_500).then_some(())
        })
        .await;
        assert!(
            moved.is_some(),
            "moved {} of 1500",
            ready(&broker, "big-dest").await
        );
        broker.stop().await;
    })
    .await
}

#[tokio::test]
async fn copies_a_full_destination_refuses_are_kept_and_not_duplicated() {
    bounded(Duration::from_secs(30), async {
        let broker = start().await;
        let (_c, ch) = broker.channel().await;
        let args = common::table(&[
            ("x-max-length", AMQPValue::LongInt(3)),
            ("x-overflow", AMQPValue::LongString("reject-publish".into())),
        ]);
        ch.queue_declare("narrow".into(), Default::default(), args)
            .await
            .expect("declare");
        common::declare_queue(&ch, "wide").await;
        for i in 0..10 {
            common::publish(&ch, "", "wide", format!("n{i}").as_bytes()).await;
        }
        let def = shovel("wide", "narrow", json!({}));
        assert_eq!(
            broker
                .api("PUT", "/parameters/shovel/%2F/narrow", Some(def))
                .await
                .0,
            201
        );
        let mut got = Vec::new();
        for _ in 0..4 {
            poll(PATIENCE, TICK, || async {
                (ready(&broker, "narrow").await > 0).then_some(())
            })
            .await
            .expect("moved on");
            got.extend(take_all(&ch, "narrow").await);
            if got.len() >= 10 {
                break;
            }
        }
        let want: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
        assert_eq!(got, want, "each once, in order");
        assert_eq!(ready(&broker, "wide").await, 0);
        broker.stop().await;
    })
    .await
}

#[tokio::test]
async fn a_deleted_destination_queue_loses_nothing() {
    bounded(Duration::from_secs(30), async {
        let broker = start().await;
        let (_c, ch) = broker.channel().await;
        let def = shovel("feed", "sink", json!({}));
        assert_eq!(
            broker
                .api("PUT", "/parameters/shovel/%2F/feed", Some(def))
                .await
                .0,
            201
        );
        poll(PATIENCE, TICK, || async {
            (broker.api("GET", "/queues/%2F/sink", None).await.0 == 200).then_some(())
        })
        .await
        .expect("sink declared");
        assert_eq!(broker.api("DELETE", "/queues/%2F/sink", None).await.0, 204);
        for i in 0..5 {
            common::publish(&ch, "", "feed", format!("m{i}").as_bytes()).await;
        }
        // Kept at the source, then moved once the shovel declares the
        // destination again.
        poll(PATIENCE, TICK, || async {
            (ready(&broker, "sink").await == 5).then_some(())
        })
        .await
        .expect("all five arrive");
        broker.stop().await;
    })
    .await
}

#[tokio::test]
async fn credentials_are_not_shown_and_exclusive_or_finished_shovels_are_refused() {
    bounded(Duration::from_secs(30), async {
        let broker = start().await;
        let (_c, ch) = broker.channel().await;
        let exclusive = common::temp_queue(&ch).await;
        let def = json!({"value": {"src-uri": "amqp://guest:guest@localhost", "src-queue": exclusive,
                                   "dest-uri": "amqp://", "dest-queue": "elsewhere",
                                   "reconnect-delay": 1}});
        assert_eq!(broker.api("PUT", "/parameters/shovel/%2F/excl", Some(def)).await.0, 201);
        let why = poll(PATIENCE, TICK, || async {
            let (_, all) = broker.api("GET", "/shovels", None).await;
            all[0]["reason"].as_str().map(String::from)
        })
        .await
        .expect("a reason");
        assert!(why.contains("exclusive"), "{why}");
        let (_, all) = broker.api("GET", "/shovels", None).await;
        assert_eq!(all[0]["src_uri"], "amqp://localhost");
        broker.api("DELETE", "/parameters/shovel/%2F/excl", None).await;

        // A finished shovel stays listed a while, but cannot be restarted.
        common::declare_queue(&ch, "once").await;
        common::publish(&ch, "", "once", b"1").await;
        let def = shovel("once", "done", json!({"src-delete-after": "queue-length"}));
        assert_eq!(broker.api("PUT", "/parameters/shovel/%2F/once", Some(def)).await.0, 201);
        poll(PATIENCE, TICK, || async {
            let (status, _) = broker.api("GET", "/parameters/shovel/%2F/once", None).await;
            (status == 404).then_some(())
        })
        .await
        .expect("finished");
        let (status, _) = broker
            .api("DELETE", "/shovels/vhost/%2F/once/restart", None)
            .await;
        assert_eq!(status, 404);
        assert_eq!(ready(&broker, "done").await, 1);
        broker.stop().await;
    })
    .await
}
