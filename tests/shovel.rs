//! Dynamic shovels through the management API, checked with a client:
//! moving 100,000 messages loses none and duplicates none; killed with
//! SIGKILL mid-move, the broker comes back, the shovel goes on, and every
//! message arrives (at least once: duplicates only for the batch in
//! flight, counted and reported).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::child::{self, ChildBroker};
use common::disk::DataDir;
use common::{bounded, free_port, poll_async as poll, Broker};
use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde_json::{json, Value};

const MESSAGES: u32 = 100_000;

/// A request to a management API at `base` (`http://host:port/api`) as
/// guest.
async fn api(base: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method.parse().expect("a method"), format!("{base}{path}"))
        .basic_auth("guest", Some("guest"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn move_all(src: &str, dest: &str) -> Value {
    json!({"value": {
        "src-protocol": "amqp091", "src-uri": "amqp://", "src-queue": src,
        "dest-protocol": "amqp091", "dest-uri": "amqp://", "dest-queue": dest,
        "src-delete-after": "queue-length", "ack-mode": "on-confirm"
    }})
}

/// Publish `n` persistent messages numbered 0.. to `queue`, confirmed.
async fn fill(ch: &lapin::Channel, queue: &str, n: u32) {
    common::confirm(ch).await;
    common::publish_confirmed(ch, queue, (0..n).map(|i| i.to_le_bytes().to_vec())).await;
}

/// Consume every message of `queue` (`count` of them), acking; the
/// numbers read, in order.
async fn drain(ch: &lapin::Channel, queue: &str, count: u32) -> Vec<u32> {
    ch.basic_qos(2_000, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "drain".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut ids = Vec::with_capacity(count as usize);
    while ids.len() < count as usize {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("a delivery within 10 s")
            .expect("consumer open")
            .expect("delivery");
        ids.push(u32::from_le_bytes(d.data[..4].try_into().expect("4 bytes")));
        if ids.len() % 1_000 == 0 || ids.len() == count as usize {
            d.acker
                .ack(BasicAckOptions { multiple: true })
                .await
                .expect("ack");
        }
    }
    ids
}

/// Wait until the shovel's parameter is gone (it deletes itself when
/// done), reporting its progress if it takes too long.
async fn wait_done(base: &str, name: &str, patience: Duration) {
    let path = format!("/parameters/shovel/%2F/{name}");
    let done = poll(patience, Duration::from_millis(100), || async {
        (api(base, "GET", &path, None).await.0 == 404).then_some(())
    });
    if done.await.is_none() {
        let (_, shovels) = api(base, "GET", "/shovels", None).await;
        panic!("shovel {name} not done within {patience:?}: {shovels}");
    }
}

async fn ready(ch: &lapin::Channel, queue: &str) -> u32 {
    common::ready_count(ch, queue)
        .await
        .expect("passive declare")
}

#[tokio::test]
async fn a_shovel_moves_100k_messages_once_each_and_deletes_itself() {
    bounded(Duration::from_secs(240), async {
        let broker = Broker::start_with(|c| c.management_port = free_port()).await;
        let base = broker.api_url().expect("api");
        let (_c, ch) = broker.channel().await;
        common::declare_durable(&ch, "dlq").await;
        common::declare_durable(&ch, "work").await;
        fill(&ch, "dlq", MESSAGES).await;

        let (status, body) = api(
            &base,
            "PUT",
            "/parameters/shovel/%2F/redrive",
            Some(move_all("dlq", "work")),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let (_, shovels) = api(&base, "GET", "/shovels/%2F", None).await;
        let s = &shovels[0];
        assert_eq!(
            (s["name"].as_str(), s["type"].as_str()),
            (Some("redrive"), Some("dynamic"))
        );
        assert_eq!(s["src_queue"], "dlq");
        assert_eq!(s["dest_queue"], "work");
        wait_done(&base, "redrive", Duration::from_secs(120)).await;

        assert_eq!(ready(&ch, "dlq").await, 0);
        assert_eq!(ready(&ch, "work").await, MESSAGES);
        let ids = drain(&ch, "work", MESSAGES).await;
        assert_eq!(
            ids,
            (0..MESSAGES).collect::<Vec<_>>(),
            "all, once, in order"
        );
        // Still shown for a while, finished, with what it moved.
        let (_, shovels) = api(&base, "GET", "/shovels", None).await;
        assert_eq!(shovels[0]["state"], "terminated", "{shovels}");
        assert_eq!(shovels[0]["reason"], "done");
        assert_eq!(shovels[0]["messages_moved"], MESSAGES);
        assert_eq!(shovels[0]["messages_to_move"], MESSAGES);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_shovel_killed_mid_move_goes_on_after_restart_and_loses_nothing() {
    bounded(Duration::from_secs(300), async {
        let dir = DataDir::new();
        let config = dir.write_config("");
        let api_port = free_port();
        let base = format!("http://127.0.0.1:{api_port}/api");
        let mut broker = ChildBroker::start_with_api(dir.path(), &config, api_port);
        let conn = child::connect(broker.port).await;
        let ch = conn.create_channel().await.expect("channel");
        common::declare_durable(&ch, "dlq").await;
        common::declare_durable(&ch, "work").await;
        fill(&ch, "dlq", MESSAGES).await;
        // Small batches, so the kill lands mid-move.
        let mut def = move_all("dlq", "work");
        def["value"]["src-prefetch-count"] = json!(200);
        let (status, body) = api(&base, "PUT", "/parameters/shovel/%2F/redrive", Some(def)).await;
        assert_eq!(status, 201, "{body}");
        let moved = poll(Duration::from_secs(60), Duration::from_millis(5), || async {
            let (_, shovels) = api(&base, "GET", "/shovels", None).await;
            let n = shovels[0]["messages_moved"].as_u64().unwrap_or(0);
            (n >= 10_000).then_some(n)
        })
        .await
        .expect("10,000 moved within 60 s");
        broker.kill();
        drop(conn);

        let broker = ChildBroker::start_with_api(dir.path(), &config, api_port);
        wait_done(&base, "redrive", Duration::from_secs(120)).await;
        let conn = child::connect(broker.port).await;
        let ch = conn.create_channel().await.expect("channel");
        assert_eq!(ready(&ch, "dlq").await, 0);
        let count = ready(&ch, "work").await;
        let ids = drain(&ch, "work", count).await;
        let unique: HashSet<u32> = ids.iter().copied().collect();
        assert_eq!(unique.len() as u32, MESSAGES, "every message arrived");
        let duplicates = ids.len() - unique.len();
        eprintln!(
            "shovel crash test: killed after at least {moved} moved; {} delivered, {duplicates} duplicates",
            ids.len()
        );
        assert!(duplicates <= 200, "duplicates beyond one batch: {duplicates}");
        broker.assert_no_panic();
    })
    .await;
}

#[tokio::test]
async fn bad_shovel_definitions_are_refused_with_a_reason() {
    bounded(Duration::from_secs(20), async {
        let broker = Broker::start_with(|c| c.management_port = free_port()).await;
        let base = broker.api_url().expect("api");
        let cases = [
            json!({"value": {"src-queue": "q", "dest-uri": "amqp://", "dest-queue": "w"}}),
            json!({"value": {"src-uri": "amqp://", "src-queue": "q", "dest-uri": "amqp://",
                              "dest-queue": "w", "dest-exchange": "x"}}),
            json!({"value": {"src-uri": "amqp://", "src-queue": "q", "dest-uri": "amqp://",
                              "dest-queue": "w", "src-delete-after": "bogus"}}),
            json!({"value": {"src-uri": "amqp://", "src-queue": "q", "dest-uri": "amqp://",
                              "dest-queue": "w", "ack-mode": "bogus"}}),
            json!({"value": {"src-uri": "amqp://elsewhere.example", "src-queue": "q",
                              "dest-uri": "amqp://", "dest-queue": "w"}}),
        ];
        for body in cases {
            let (status, reply) = api(
                &base,
                "PUT",
                "/parameters/shovel/%2F/bad",
                Some(body.clone()),
            )
            .await;
            assert_eq!(status, 400, "{body} -> {reply}");
            let reason = reply["reason"].as_str().unwrap_or_default();
            assert!(reason.starts_with("Validation failed"), "{reply}");
        }
        assert_eq!(
            api(&base, "GET", "/parameters/shovel/%2F/bad", None)
                .await
                .0,
            404
        );
        assert_eq!(
            api(&base, "DELETE", "/parameters/shovel/%2F/bad", None)
                .await
                .0,
            404
        );

        // Unknown keys and vhosts are refused as RabbitMQ refuses them.
        let mut bogus = move_all("q", "w");
        bogus["value"]["bogus-key"] = json!(1);
        let (status, reply) = api(&base, "PUT", "/parameters/shovel/%2F/bad", Some(bogus)).await;
        assert_eq!(status, 400);
        assert_eq!(
            reply["reason"],
            "Validation failed\n\nUnrecognised terms [{&lt;&lt;\"bogus-key\"&gt;&gt;,1}] in bad\n"
        );
        let (status, reply) = api(
            &base,
            "PUT",
            "/parameters/shovel/nosuchvhost/bad",
            Some(move_all("q", "w")),
        )
        .await;
        assert_eq!(
            (status, reply),
            (
                404,
                json!({"error": "not_found", "reason": "vhost_not_found"})
            )
        );

        // A shovel whose destination exchange does not exist waits, says
        // why, is exported with the definitions, and stops when deleted.
        let waits = json!({"value": {"src-uri": "amqp://", "src-queue": "q", "dest-uri": "amqp://",
                                     "dest-exchange": "nox"}});
        let (status, _) = api(&base, "PUT", "/parameters/shovel/%2F/waits", Some(waits)).await;
        assert_eq!(status, 201);
        let reason = poll(
            Duration::from_secs(5),
            Duration::from_millis(20),
            || async {
                let (_, shovels) = api(&base, "GET", "/shovels", None).await;
                shovels[0]["reason"].as_str().map(str::to_string)
            },
        )
        .await
        .expect("a reason");
        assert_eq!(reason, "no exchange 'nox' in vhost '/'");
        let (_, defs) = api(&base, "GET", "/definitions", None).await;
        let exported = defs["parameters"].as_array().expect("parameters");
        assert!(
            exported
                .iter()
                .any(|p| p["component"] == "shovel" && p["name"] == "waits"),
            "{defs}"
        );
        assert_eq!(
            api(&base, "DELETE", "/parameters/shovel/%2F/waits", None)
                .await
                .0,
            204
        );
        let (_, shovels) = api(&base, "GET", "/shovels", None).await;
        assert_eq!(shovels, json!([]));
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn missing_queues_are_declared_and_the_shovel_routes_act_on_it() {
    bounded(Duration::from_secs(30), async {
        let broker = Broker::start_with(|c| c.management_port = free_port()).await;
        let base = broker.api_url().expect("api");
        let def = json!({"value": {"src-uri": "amqp://", "src-queue": "nosrc", "dest-uri": "amqp://",
                                   "dest-queue": "nodst", "dest-queue-args": {"x-max-length": 100},
                                   "dest-add-forward-headers": true, "dest-add-timestamp-header": true}});
        let (status, _) = api(&base, "PUT", "/parameters/shovel/%2F/mkq", Some(def.clone())).await;
        assert_eq!(status, 201);
        // As RabbitMQ: both declared durable, the destination with its
        // arguments, and the shovel runs.
        let dest = poll(Duration::from_secs(5), Duration::from_millis(20), || async {
            let (status, q) = api(&base, "GET", "/queues/%2F/nodst", None).await;
            (status == 200).then_some(q)
        })
        .await
        .expect("nodst declared");
        assert_eq!(dest["durable"], true);
        assert_eq!(dest["arguments"], json!({"x-max-length": 100}));
        let (_, src) = api(&base, "GET", "/queues/%2F/nosrc", None).await;
        assert_eq!((src["durable"].clone(), src["arguments"].clone()), (json!(true), json!({})));

        // What arrives at the source is moved, with the shovel's headers.
        let (_c, ch) = broker.channel().await;
        common::publish(&ch, "", "nosrc", b"moved").await;
        let got = poll(Duration::from_secs(5), Duration::from_millis(20), || async {
            ch.basic_get("nodst".into(), Default::default())
                .await
                .expect("get")
        })
        .await
        .expect("moved to nodst");
        let headers = got.properties.headers().clone().expect("headers");
        let h = headers.inner();
        assert!(h.contains_key("x-shovelled-timestamp"), "{h:?}");
        let Some(lapin::types::AMQPValue::FieldArray(by)) = h.get("x-shovelled") else {
            panic!("x-shovelled: {h:?}");
        };
        assert_eq!(by.as_slice().len(), 1);

        // RabbitMQ's per-shovel routes: the vhost's list, restart, delete.
        let (status, list) = api(&base, "GET", "/shovels/vhost/%2F/mkq", None).await;
        assert_eq!(status, 200);
        assert_eq!(list[0]["name"], "mkq");
        assert_eq!(api(&base, "GET", "/shovels/vhost/%2F/nosuch", None).await.0, 404);
        let restart = "/shovels/vhost/%2F/mkq/restart";
        assert_eq!(api(&base, "DELETE", restart, None).await.0, 204);
        assert_eq!(api(&base, "DELETE", "/shovels/vhost/%2F/nosuch/restart", None).await.0, 404);
        // The same value again: 204, kept as it is.
        assert_eq!(api(&base, "PUT", "/parameters/shovel/%2F/mkq", Some(def)).await.0, 204);
        common::publish(&ch, "", "nosrc", b"after restart").await;
        poll(Duration::from_secs(5), Duration::from_millis(20), || async {
            ch.basic_get("nodst".into(), Default::default())
                .await
                .expect("get")
        })
        .await
        .expect("the restarted shovel moves too");
        assert_eq!(api(&base, "DELETE", "/shovels/vhost/%2F/mkq", None).await.0, 204);
        assert_eq!(api(&base, "GET", "/parameters/shovel/%2F/mkq", None).await.0, 404);
        assert_eq!(api(&base, "DELETE", "/shovels/vhost/%2F/mkq", None).await.0, 404);
        broker.stop().await;
    })
    .await;
}
