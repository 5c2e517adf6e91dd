//! Warren's own routes for unacked deliveries: which consumer holds which
//! messages and for how long, per queue and per connection, through a
//! real client's consumers and basic.get.

mod common;

use std::time::Duration;

use common::{bounded, consume_tagged, free_port, Broker};
use lapin::options::{BasicGetOptions, BasicQosOptions};
use serde_json::Value;

async fn start() -> Broker {
    Broker::start_with(|c| c.management_port = free_port()).await
}

fn consumer<'a>(report: &'a Value, tag: Option<&str>) -> &'a Value {
    let all = report["consumers"].as_array().expect("consumers");
    all.iter()
        .find(|c| c["consumer_tag"].as_str() == tag)
        .unwrap_or_else(|| panic!("holder {tag:?} in {report}"))
}

#[tokio::test]
async fn each_consumer_shows_what_it_holds_and_for_how_long() {
    bounded(Duration::from_secs(30), async {
        let broker = start().await;
        let (_c, ch) = broker.channel().await;
        common::declare_queue(&ch, "work").await;
        common::declare_queue(&ch, "other").await;
        for i in 0..25 {
            let props = lapin::BasicProperties::default().with_message_id(format!("m{i}").into());
            common::publish_with(&ch, "", "work", b"0123456789", props).await;
        }
        common::publish(&ch, "", "other", b"x").await;

        // A consumer holding 10 (its prefetch), one basic.get holding 1,
        // and a consumer on another queue that must not be listed.
        let (_c2, slow) = broker.channel().await;
        slow.basic_qos(10, BasicQosOptions::default())
            .await
            .expect("qos");
        let mut held = consume_tagged(&slow, "work", "slow-worker").await;
        let first = common::next_deliveries(&mut held, 10).await;
        let got = slow
            .basic_get("work".into(), BasicGetOptions::default())
            .await
            .expect("get")
            .expect("a message");
        let mut elsewhere = consume_tagged(&ch, "other", "elsewhere").await;
        common::next_delivery(&mut elsewhere).await;
        tokio::time::sleep(Duration::from_millis(300)).await;

        let (status, report) = broker.api("GET", "/queues/%2F/work/unacked", None).await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["total"], 11, "{report}");
        assert_eq!(report["connections_unanswered"], 0);
        let c = consumer(&report, Some("slow-worker"));
        assert_eq!(c["unacked"], 10);
        assert_eq!(c["queue"], "work");
        assert_eq!(c["bytes_in_memory"], 100);
        assert!(c["oldest_held_ms"].as_u64().expect("age") >= 300, "{c}");
        assert!(c["channel"].as_str().expect("name").ends_with("(1)"), "{c}");
        assert_eq!(consumer(&report, None)["unacked"], 1);
        let messages = report["messages"].as_array().expect("messages");
        assert_eq!(messages.len(), 11);
        // Oldest first: the consumer's first delivery leads.
        assert_eq!(messages[0]["message_id"], "m0");
        assert_eq!(messages[0]["consumer_tag"], "slow-worker");
        assert_eq!(messages[0]["delivery_tag"], first[0].delivery_tag);
        assert_eq!(messages[0]["payload_bytes"], 10);
        assert_eq!(messages[0]["routing_key"], "work");
        assert!(messages.iter().all(|m| m["queue"] == "work"));

        // A limit lists fewer, but the counts still cover everything.
        let (_, limited) = broker
            .api("GET", "/queues/%2F/work/unacked?limit=3", None)
            .await;
        assert_eq!(limited["messages"].as_array().expect("list").len(), 3);
        assert_eq!(limited["total"], 11);

        // Acking changes what is held.
        for d in &first[..4] {
            d.acker.ack(Default::default()).await.expect("ack");
        }
        got.acker.ack(Default::default()).await.expect("ack");
        let (_, after) = broker.api("GET", "/queues/%2F/work/unacked", None).await;
        assert_eq!(after["total"], 10, "{after}");
        assert!(after["consumers"]
            .as_array()
            .expect("consumers")
            .iter()
            .all(|c| c["consumer_tag"] == "slow-worker"));

        // Acked inside a transaction: still held (and listed) until the
        // commit, as the queue counts it.
        let listed = |r: &Value, id: &str| {
            let all = r["messages"].as_array().expect("messages");
            all.iter().any(|m| m["message_id"] == id)
        };
        slow.tx_select().await.expect("tx.select");
        first[4]
            .acker
            .ack(Default::default())
            .await
            .expect("ack in tx");
        let (_, in_tx) = broker.api("GET", "/queues/%2F/work/unacked", None).await;
        assert_eq!(in_tx["total"], 10, "{in_tx}");
        assert!(listed(&in_tx, "m4"), "{in_tx}");
        slow.tx_commit().await.expect("tx.commit");
        let (_, committed) = broker.api("GET", "/queues/%2F/work/unacked", None).await;
        assert!(!listed(&committed, "m4"), "{committed}");
        broker.stop().await;
    })
    .await
}

#[tokio::test]
async fn a_connection_lists_its_own_and_bad_requests_are_refused() {
    bounded(Duration::from_secs(30), async {
        let broker = start().await;
        let (_c, ch) = broker.channel().await;
        common::declare_queue(&ch, "a").await;
        common::declare_queue(&ch, "b").await;
        common::publish(&ch, "", "a", b"1").await;
        common::publish(&ch, "", "b", b"2").await;
        let mut ca = consume_tagged(&ch, "a", "ca").await;
        let mut cb = consume_tagged(&ch, "b", "cb").await;
        common::next_delivery(&mut ca).await;
        common::next_delivery(&mut cb).await;

        let mut name = None;
        for _ in 0..50 {
            let (_, list) = broker.api("GET", "/connections", None).await;
            name = list[0]["name"].as_str().map(String::from);
            if name.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let name = name.expect("a connection listed");
        let path = format!("/connections/{}/unacked", urlencoding(&name));
        let (status, report) = broker.api("GET", &path, None).await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["total"], 2, "{report}");
        let queues: Vec<&str> = report["consumers"]
            .as_array()
            .expect("consumers")
            .iter()
            .map(|c| c["queue"].as_str().expect("queue"))
            .collect();
        assert_eq!(queues.len(), 2);
        assert!(queues.contains(&"a") && queues.contains(&"b"));

        let (status, _) = broker.api("GET", "/queues/%2F/nope/unacked", None).await;
        assert_eq!(status, 404);
        let (status, _) = broker.api("GET", "/connections/nope/unacked", None).await;
        assert_eq!(status, 404);
        let (status, body) = broker
            .api("GET", "/queues/%2F/a/unacked?limit=0", None)
            .await;
        assert_eq!(status, 400);
        assert!(body["reason"].as_str().expect("reason").contains("limit"));
        broker.stop().await;
    })
    .await
}

/// Percent-encode a connection name for a path segment.
fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn a_consumer_that_stopped_reading_is_still_shown() {
    bounded(Duration::from_secs(60), async {
        let broker = start().await;
        let (_c, ch) = broker.channel().await;
        common::declare_queue(&ch, "big").await;
        // A client that consumes and then never reads its socket again:
        // its connection task ends up stuck writing to it.
        let mut stuck = common::raw::Raw::handshake(&broker).await;
        stuck.open_channel(1).await;
        stuck
            .send(&common::raw::basic_consume(1, "big", "stuck-reader", false))
            .await;
        stuck.expect_method(1, 60, 21).await;
        let body = vec![7u8; 1 << 20];
        for _ in 0..40 {
            common::publish(&ch, "", "big", &body).await;
        }
        // Its task is stuck once the socket's buffers are full.
        let mut report = serde_json::Value::Null;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let (status, r) = broker.api("GET", "/queues/%2F/big/unacked", None).await;
            assert_eq!(status, 200, "{r}");
            report = r;
            if report["connections_unanswered"] == 1 {
                break;
            }
        }
        assert_eq!(report["connections_unanswered"], 1, "{report}");
        let channels = &report["unanswered"][0]["channels"];
        assert_eq!(
            channels[0]["consumer_tags"],
            serde_json::json!(["stuck-reader"]),
            "{report}"
        );
        drop(stuck);
        broker.stop().await;
    })
    .await
}

#[tokio::test]
async fn others_connections_and_exclusive_queues_stay_private() {
    bounded(Duration::from_secs(30), async {
        let broker = start().await;
        let (status, _) = broker
            .api(
                "PUT",
                "/users/watcher",
                Some(serde_json::json!({"password": "watcher", "tags": "management"})),
            )
            .await;
        assert_eq!(status, 201);
        let perms = serde_json::json!({"configure": "", "write": "", "read": ".*"});
        broker
            .api("PUT", "/permissions/%2F/watcher", Some(perms))
            .await;
        let (_c, ch) = broker.channel().await;
        common::declare_queue(&ch, "shared").await;
        common::publish(&ch, "", "shared", b"x").await;
        let mut c = consume_tagged(&ch, "shared", "guests").await;
        common::next_delivery(&mut c).await;
        let exclusive = common::temp_queue(&ch).await;

        // guest sees its own holder; watcher may read the queue but not
        // see guest's connection, so nothing of it.
        let (_, mine) = broker.api("GET", "/queues/%2F/shared/unacked", None).await;
        assert_eq!(mine["total"], 1);
        let (status, theirs) = broker
            .api_as("watcher", "GET", "/queues/%2F/shared/unacked", None)
            .await;
        assert_eq!(status, 200, "{theirs}");
        assert_eq!(theirs["total"], 0, "{theirs}");
        assert_eq!(theirs["consumers"], serde_json::json!([]));
        // Another connection's exclusive queue is refused, as for /get.
        let path = format!("/queues/%2F/{exclusive}/unacked");
        let (status, _) = broker.api("GET", &path, None).await;
        assert_ne!(status, 200);
        broker.stop().await;
    })
    .await
}
