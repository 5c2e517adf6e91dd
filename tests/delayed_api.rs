//! Warren's own management routes for delayed messages: listing what an
//! `x-delayed-message` exchange holds and cancelling one, with the
//! cancellation surviving a restart and a cancelled message never routed.

mod common;

use std::time::Duration;

use common::{bounded, free_port, publish_with, table, Broker};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::Value;

async fn start_in(dir: std::path::PathBuf) -> Broker {
    Broker::start_in(dir, |c| c.management_port = free_port()).await
}

async fn delayed_exchange(ch: &lapin::Channel, name: &str) {
    let args = table(&[(
        "x-delayed-type",
        AMQPValue::LongString(LongString::from("direct")),
    )]);
    let opts = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(
        name.into(),
        lapin::ExchangeKind::Custom("x-delayed-message".into()),
        opts,
        args,
    )
    .await
    .expect("declare delayed exchange");
}

async fn publish_delayed(ch: &lapin::Channel, exchange: &str, body: &str, delay_ms: i32) {
    let props =
        common::persistent().with_headers(table(&[("x-delay", AMQPValue::LongInt(delay_ms))]));
    publish_with(ch, exchange, "k", body.as_bytes(), props).await;
}

fn payloads(listing: &Value) -> Vec<&str> {
    let items = listing.as_array().expect("a list");
    items
        .iter()
        .map(|m| m["payload"].as_str().expect("payload"))
        .collect()
}

fn id_of(listing: &Value, payload: &str) -> u64 {
    let items = listing.as_array().expect("a list");
    let m = items
        .iter()
        .find(|m| m["payload"] == payload)
        .expect("listed");
    m["id"].as_u64().expect("id")
}

#[tokio::test]
async fn held_messages_are_listed_by_due_time_and_a_cancelled_one_never_comes_back() {
    bounded(Duration::from_secs(30), async {
        let dir = common::fresh_data_dir();
        let broker = start_in(dir.clone()).await;
        let (_c, ch) = broker.channel().await;
        common::confirm(&ch).await;
        delayed_exchange(&ch, "later").await;
        delayed_exchange(&ch, "elsewhere").await;
        common::declare_durable(&ch, "target").await;
        ch.queue_bind(
            "target".into(),
            "later".into(),
            "k".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
        publish_delayed(&ch, "later", "in-60s", 60_000).await;
        publish_delayed(&ch, "later", "in-30s", 30_000).await;
        publish_delayed(&ch, "later", "in-90s", 90_000).await;
        publish_delayed(&ch, "elsewhere", "not-mine", 10_000).await;

        let (status, listing) = broker
            .api("GET", "/exchanges/%2F/later/delayed", None)
            .await;
        assert_eq!(status, 200, "{listing}");
        assert_eq!(payloads(&listing), ["in-30s", "in-60s", "in-90s"]);
        let first = &listing[0];
        assert_eq!(first["routing_key"], "k");
        assert_eq!(first["exchange"], "later");
        assert_eq!(first["persistent"], true);
        assert_eq!(first["properties"]["headers"]["x-delay"], 30_000);
        let remaining = first["delay_remaining_ms"].as_u64().expect("remaining");
        assert!((20_000..=30_000).contains(&remaining), "{remaining}");

        let (_, limited) = broker
            .api("GET", "/exchanges/%2F/later/delayed?limit=1", None)
            .await;
        assert_eq!(payloads(&limited), ["in-30s"]);

        let id = id_of(&listing, "in-60s");
        let path = format!("/exchanges/%2F/later/delayed/{id}");
        assert_eq!(broker.api("DELETE", &path, None).await.0, 204);
        assert_eq!(broker.api("DELETE", &path, None).await.0, 404);
        // Held by another exchange: not this one's to cancel.
        let (_, other) = broker
            .api("GET", "/exchanges/%2F/elsewhere/delayed", None)
            .await;
        let other_id = id_of(&other, "not-mine");
        let wrong = format!("/exchanges/%2F/later/delayed/{other_id}");
        assert_eq!(broker.api("DELETE", &wrong, None).await.0, 404);

        // Two due soon, one cancelled: only the other is routed. The
        // cancelled one is due 2 s on, so the cancel is in time on a slow
        // machine too.
        publish_delayed(&ch, "later", "soon-kept", 400).await;
        publish_delayed(&ch, "later", "soon-cancelled", 2_000).await;
        let (_, listing) = broker
            .api("GET", "/exchanges/%2F/later/delayed", None)
            .await;
        let id = id_of(&listing, "soon-cancelled");
        let path = format!("/exchanges/%2F/later/delayed/{id}");
        assert_eq!(broker.api("DELETE", &path, None).await.0, 204);
        let mut consumer = common::consume(&ch, "target").await;
        let d = common::next_delivery(&mut consumer).await;
        assert_eq!(d.data, b"soon-kept");
        tokio::time::sleep(Duration::from_millis(2_200)).await;
        common::assert_no_delivery(&mut consumer).await;
        drop(consumer);
        broker.stop().await;

        // The cancellation is durable: after a restart only the two left
        // are held.
        let broker = start_in(dir).await;
        let (status, listing) = broker
            .api("GET", "/exchanges/%2F/later/delayed", None)
            .await;
        assert_eq!(status, 200, "{listing}");
        assert_eq!(payloads(&listing), ["in-30s", "in-90s"]);
        broker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bad_requests_get_a_json_reason() {
    bounded(Duration::from_secs(20), async {
        let broker = Broker::start_with(|c| c.management_port = free_port()).await;
        let (_c, ch) = broker.channel().await;
        delayed_exchange(&ch, "later").await;
        let (status, body) = broker
            .api("GET", "/exchanges/%2F/amq.direct/delayed", None)
            .await;
        assert_eq!(status, 400);
        assert_eq!(
            body["reason"],
            "exchange 'amq.direct' in vhost '/' is not an x-delayed-message exchange"
        );
        let (status, body) = broker
            .api("GET", "/exchanges/%2F/later/delayed?limit=none", None)
            .await;
        assert_eq!(status, 400);
        assert_eq!(body["reason"], "limit must be a positive integer");
        assert_eq!(
            broker
                .api("GET", "/exchanges/%2F/missing/delayed", None)
                .await
                .0,
            404
        );
        assert_eq!(
            broker
                .api("DELETE", "/exchanges/%2F/later/delayed/abc", None)
                .await
                .0,
            404
        );
        assert_eq!(
            broker
                .api("DELETE", "/exchanges/%2F/later/delayed/12345", None)
                .await
                .0,
            404
        );
        assert_eq!(
            broker
                .api("GET", "/exchanges/nowhere/later/delayed", None)
                .await
                .0,
            404
        );
        broker.stop().await;
    })
    .await;
}
