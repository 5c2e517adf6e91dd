//! Server-side offset tracking of stream consumers through lapin: a
//! reader with a tag of its own resumes where it left off, across
//! reconnects and restarts, never past a delivery it did not ack, and at
//! the end of a log that lost its tail; a deleted stream stays deleted.

mod common;

use std::time::Duration;

use common::stream::*;
use common::{bounded, table, Broker};
use lapin::options::BasicAckOptions;
use lapin::types::{AMQPValue, FieldTable};

#[tokio::test]
async fn a_stable_tag_resumes_after_its_last_ack_across_reconnects_and_restarts() {
    bounded(Duration::from_secs(40), async {
        let dir = common::fresh_data_dir();
        let b = Broker::start_in(dir.clone(), |_| {}).await;
        let (_c, ch) = b.channel().await;
        common::confirm(&ch).await;
        declare_stream(&ch, "orders", &[]).await;
        // A first run from "first" with tracking asked for explicitly.
        let conn = b.connect().await;
        let rch = conn.create_channel().await.unwrap();
        let args = table(&[
            ("x-stream-offset", AMQPValue::LongString("first".into())),
            (
                "x-stream-automatic-offset-tracking",
                AMQPValue::Boolean(true),
            ),
        ]);
        publish_numbered(&ch, "orders", 0, 30).await;
        let mut c = reader(&rch, "orders", "billing", 5, args).await;
        assert_eq!(take_acked(&mut c, 12).await, numbered(0, 12));
        // Two delivered but not acked: they come again.
        let _ = common::next_deliveries(&mut c, 2).await;
        conn.close(200, "bye".into()).await.unwrap();
        // Reconnect with the same tag and no offset: resumes after 11.
        let conn = b.connect().await;
        let rch = conn.create_channel().await.unwrap();
        let mut c = reader(&rch, "orders", "billing", 5, FieldTable::default()).await;
        assert_eq!(take_acked(&mut c, 8).await, numbered(12, 8));
        conn.close(200, "bye".into()).await.unwrap();
        b.stop().await;
        // And after a restart.
        let b = Broker::start_in(dir.clone(), |_| {}).await;
        let conn = b.connect().await;
        let rch = conn.create_channel().await.unwrap();
        let mut c = reader(&rch, "orders", "billing", 5, FieldTable::default()).await;
        assert_eq!(take_acked(&mut c, 10).await, numbered(20, 10));
        common::assert_no_delivery(&mut c).await;
        // A generated tag does not track.
        let rch = conn.create_channel().await.unwrap();
        let mut fresh = reader(&rch, "orders", "", 5, FieldTable::default()).await;
        common::assert_no_delivery(&mut fresh).await;
        b.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
}

#[tokio::test]
async fn a_named_reader_resumes_where_it_started_if_it_never_acked() {
    bounded(Duration::from_secs(20), async {
        let b = Broker::start().await;
        let (_c, ch) = b.channel().await;
        common::confirm(&ch).await;
        declare_stream(&ch, "feed", &[]).await;
        publish_numbered(&ch, "feed", 0, 3).await;
        // First consume: starts at "next" (3) and gets nothing.
        let conn = b.connect().await;
        let rch = conn.create_channel().await.unwrap();
        let mut c = reader(&rch, "feed", "audit", 5, FieldTable::default()).await;
        common::assert_no_delivery(&mut c).await;
        conn.close(200, "bye".into()).await.unwrap();
        // Published while it was away: it gets them.
        publish_numbered(&ch, "feed", 3, 2).await;
        let rch = b.connect().await.create_channel().await.unwrap();
        let mut c = reader(&rch, "feed", "audit", 5, FieldTable::default()).await;
        assert_eq!(take_acked(&mut c, 2).await, numbered(3, 2));
    })
    .await
}

#[tokio::test]
async fn a_tracked_place_does_not_skip_deliveries_left_unacked() {
    bounded(Duration::from_secs(20), async {
        let b = Broker::start().await;
        let (_c, ch) = b.channel().await;
        common::confirm(&ch).await;
        declare_stream(&ch, "jobs", &[]).await;
        publish_numbered(&ch, "jobs", 0, 30).await;
        let args = table(&[
            ("x-stream-offset", AMQPValue::LongString("first".into())),
            (
                "x-stream-automatic-offset-tracking",
                AMQPValue::Boolean(true),
            ),
        ]);
        let conn = b.connect().await;
        let rch = conn.create_channel().await.unwrap();
        let mut c = reader(&rch, "jobs", "worker", 30, args).await;
        let got = common::next_deliveries(&mut c, 30).await;
        // Only offsets 0..5 and 19 are acked: 5..19 are not done.
        for d in got.iter().take(5).chain(std::iter::once(&got[19])) {
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
        conn.close(200, "bye".into()).await.unwrap();
        let rch = b.connect().await.create_channel().await.unwrap();
        let mut c = reader(&rch, "jobs", "worker", 30, FieldTable::default()).await;
        assert_eq!(take_acked(&mut c, 25).await, numbered(5, 25));
    })
    .await
}

#[tokio::test]
async fn a_tracked_place_past_the_recovered_end_resumes_at_the_end() {
    bounded(Duration::from_secs(20), async {
        let dir = common::fresh_data_dir();
        let b = Broker::start_in(dir.clone(), |_| {}).await;
        let (_c, ch) = b.channel().await;
        common::confirm(&ch).await;
        declare_stream(&ch, "ledger", &[]).await;
        publish_numbered(&ch, "ledger", 0, 10).await;
        b.stop().await;
        // As after a crash that lost the records a reader had seen: its
        // place is beyond what the segments hold.
        let stream_dir = std::fs::read_dir(dir.join("queues"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.join("00000001.seg").exists())
            .expect("the stream's directory");
        let mut offsets = warren::store::stream_offsets::StreamOffsets::open(&stream_dir).unwrap();
        offsets.store("books", 25).unwrap();
        let b = Broker::start_in(dir.clone(), |_| {}).await;
        let (_c, ch) = b.channel().await;
        common::confirm(&ch).await;
        publish_numbered(&ch, "ledger", 10, 3).await;
        let rch = b.connect().await.create_channel().await.unwrap();
        let mut c = reader(&rch, "ledger", "books", 5, FieldTable::default()).await;
        assert_eq!(take_acked(&mut c, 3).await, numbered(10, 3));
        b.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
}

#[tokio::test]
async fn a_deleted_stream_stays_deleted_after_late_acks() {
    bounded(Duration::from_secs(20), async {
        let b = Broker::start().await;
        let (_c, ch) = b.channel().await;
        common::confirm(&ch).await;
        declare_stream(&ch, "gone", &[]).await;
        publish_numbered(&ch, "gone", 0, 5).await;
        let rch = b.connect().await.create_channel().await.unwrap();
        let args = table(&[
            ("x-stream-offset", AMQPValue::LongString("first".into())),
            (
                "x-stream-automatic-offset-tracking",
                AMQPValue::Boolean(true),
            ),
        ]);
        let mut c = reader(&rch, "gone", "late", 5, args).await;
        let got = common::next_deliveries(&mut c, 5).await;
        ch.queue_delete("gone".into(), Default::default())
            .await
            .unwrap();
        for d in got {
            let _ = d.ack(BasicAckOptions::default()).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let left: Vec<_> = std::fs::read_dir(b.data_dir.join("queues"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".deleted"))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    })
    .await
}

#[tokio::test]
async fn a_delivery_taken_back_by_a_consumer_timeout_holds_the_tracked_place() {
    bounded(Duration::from_secs(20), async {
        let b = Broker::start().await;
        let (_c, ch) = b.channel().await;
        common::confirm(&ch).await;
        declare_stream(&ch, "slow", &[]).await;
        publish_numbered(&ch, "slow", 0, 5).await;
        let args = table(&[
            ("x-stream-offset", AMQPValue::LongString("first".into())),
            (
                "x-stream-automatic-offset-tracking",
                AMQPValue::Boolean(true),
            ),
            ("x-consumer-timeout", AMQPValue::LongLongInt(1_000)),
        ]);
        let conn = b.connect().await;
        let rch = conn.create_channel().await.unwrap();
        let mut c = reader(&rch, "slow", "to-app", 2, args).await;
        let first = common::next_delivery(&mut c).await;
        let second = common::next_delivery(&mut c).await;
        second.ack(BasicAckOptions::default()).await.unwrap();
        let third = common::next_delivery(&mut c).await;
        // Offset 0 is never acked: its consumer timeout takes it back.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        third.ack(BasicAckOptions::default()).await.unwrap();
        drop(first);
        conn.close(200, "bye".into()).await.unwrap();
        let rch = b.connect().await.create_channel().await.unwrap();
        let mut c = reader(&rch, "slow", "to-app", 10, FieldTable::default()).await;
        let (o, _) = take_acked(&mut c, 1).await[0].clone();
        assert_eq!(o, 0, "resumes at the delivery that was never acked");
    })
    .await
}
