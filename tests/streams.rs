//! Stream queues through lapin: offsets (first, next, a number, a time),
//! the `x-stream-offset` header, acks as credit, independent readers,
//! exact filtering, retention by size and age and through policies, the
//! API's stream fields, and a reader far behind reading from disk.

mod common;

use std::time::Duration;

use common::stream::*;
use common::{assert_code, bounded, reply_text, table, Broker};
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

#[tokio::test]
async fn readers_start_where_they_ask_and_read_independently() {
    bounded(Duration::from_secs(30), async {
        let b = Broker::start().await;
        let (_c, ch) = b.channel().await;
        common::confirm(&ch).await;
        declare_stream(&ch, "events", &[]).await;
        publish_numbered(&ch, "events", 0, 100).await;
        let conn = b.connect().await;
        let first_ch = conn.create_channel().await.unwrap();
        let mut first = reader(
            &first_ch,
            "events",
            "",
            10,
            offset_arg(AMQPValue::LongString("first".into())),
        )
        .await;
        let from_ch = conn.create_channel().await.unwrap();
        let mut from_40 = reader(
            &from_ch,
            "events",
            "",
            10,
            offset_arg(AMQPValue::LongLongInt(40)),
        )
        .await;
        let next_ch = conn.create_channel().await.unwrap();
        let mut next = reader(&next_ch, "events", "", 10, FieldTable::default()).await;
        assert_eq!(take_acked(&mut first, 100).await, numbered(0, 100));
        assert_eq!(take_acked(&mut from_40, 60).await, numbered(40, 60));
        common::assert_no_delivery(&mut next).await;
        publish_numbered(&ch, "events", 100, 5).await;
        assert_eq!(take_acked(&mut next, 5).await, numbered(100, 5));
        assert_eq!(take_acked(&mut first, 5).await, numbered(100, 5));
        // Past the end: waits for that offset.
        let later_ch = conn.create_channel().await.unwrap();
        let mut later = reader(
            &later_ch,
            "events",
            "",
            10,
            offset_arg(AMQPValue::LongLongInt(107)),
        )
        .await;
        publish_numbered(&ch, "events", 105, 3).await;
        assert_eq!(take_acked(&mut later, 1).await, numbered(107, 1));
    })
    .await
}

#[tokio::test]
async fn a_timestamp_offset_skips_what_came_before() {
    bounded(Duration::from_secs(30), async {
        let b = Broker::start().await;
        let (_c, ch) = b.channel().await;
        common::confirm(&ch).await;
        declare_stream(&ch, "ts", &[]).await;
        publish_numbered(&ch, "ts", 0, 10).await;
        // Timestamps are whole seconds: start the later batch in a new one.
        let cut = common::next_second().await;
        publish_numbered(&ch, "ts", 10, 10).await;
        let rch = b.connect().await.create_channel().await.unwrap();
        let mut c = reader(&rch, "ts", "", 50, offset_arg(AMQPValue::Timestamp(cut))).await;
        assert_eq!(take_acked(&mut c, 10).await, numbered(10, 10));
        common::assert_no_delivery(&mut c).await;
    })
    .await
}

#[tokio::test]
async fn acks_are_credit_and_nothing_is_requeued() {
    bounded(Duration::from_secs(30), async {
        let b = Broker::start().await;
        let (_c, ch) = b.channel().await;
        common::confirm(&ch).await;
        declare_stream(&ch, "credit", &[]).await;
        publish_numbered(&ch, "credit", 0, 10).await;
        let conn = b.connect().await;
        let rch = conn.create_channel().await.unwrap();
        let mut c = reader(
            &rch,
            "credit",
            "",
            2,
            offset_arg(AMQPValue::LongString("first".into())),
        )
        .await;
        let a = common::next_delivery(&mut c).await;
        let _b2 = common::next_delivery(&mut c).await;
        common::assert_no_delivery(&mut c).await;
        a.ack(BasicAckOptions::default()).await.unwrap();
        let third = common::next_delivery(&mut c).await;
        assert_eq!(&third.data[..], b"2");
        // A nack is refused with RabbitMQ's 540.
        let err = rch
            .basic_nack(
                third.delivery_tag,
                lapin::options::BasicNackOptions::default(),
            )
            .await;
        let _ = err;
        let closed = common::poll(Duration::from_secs(5), Duration::from_millis(20), || {
            (!conn.status().connected()).then_some(())
        })
        .await;
        assert!(closed.is_some(), "the connection is closed");
    })
    .await
}

#[tokio::test]
async fn consume_refusals_have_rabbitmqs_codes() {
    bounded(Duration::from_secs(30), async {
        let b = Broker::start().await;
        let (_c, ch) = b.channel().await;
        declare_stream(&ch, "strict", &[]).await;
        let conn = b.connect().await;
        let rch = conn.create_channel().await.unwrap();
        let e = assert_code(
            rch.basic_consume(
                "strict".into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await,
            406,
        );
        assert!(reply_text(&e).contains("consumer prefetch count is not set"));
        let rch = conn.create_channel().await.unwrap();
        let e = assert_code(
            rch.basic_get("strict".into(), lapin::options::BasicGetOptions::default())
                .await,
            540,
        );
        assert!(reply_text(&e).contains("basic.get not supported by stream queues"));
        let (_c2, ch2) = b.channel().await;
        let e = assert_code(
            ch2.queue_declare("weak".into(), Default::default(), stream_args(&[]))
                .await,
            406,
        );
        assert!(reply_text(&e).contains("invalid property 'non-durable'"));
    })
    .await
}

#[tokio::test]
async fn filters_deliver_exactly_the_matching_messages() {
    bounded(Duration::from_secs(30), async {
        let b = Broker::start().await;
        let (_c, ch) = b.channel().await;
        common::confirm(&ch).await;
        declare_stream(&ch, "regions", &[]).await;
        let region = |r: Option<&str>| {
            let h = match r {
                Some(r) => table(&[("x-stream-filter-value", AMQPValue::LongString(r.into()))]),
                None => FieldTable::default(),
            };
            BasicProperties::default().with_headers(h)
        };
        // 10,000 messages of which 3 are "eu": a filtered scan crosses the
        // per-pass limit and goes on in a task of its own.
        let mut confirms = Vec::new();
        for i in 0..10_000u32 {
            let r = match i {
                17 | 5_000 | 9_999 => Some("eu"),
                i if i % 2 == 0 => Some("us"),
                _ => None,
            };
            let confirm = ch
                .basic_publish(
                    "".into(),
                    "regions".into(),
                    Default::default(),
                    i.to_string().as_bytes(),
                    region(r),
                )
                .await
                .unwrap();
            confirms.push(confirm);
        }
        for c in confirms {
            assert!(c.await.unwrap().is_ack());
        }
        let conn = b.connect().await;
        let rch = conn.create_channel().await.unwrap();
        let args = table(&[
            ("x-stream-offset", AMQPValue::LongString("first".into())),
            ("x-stream-filter", AMQPValue::LongString("eu".into())),
        ]);
        let mut eu = reader(&rch, "regions", "", 10, args).await;
        let got: Vec<String> = take_acked(&mut eu, 3)
            .await
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        assert_eq!(got, ["17", "5000", "9999"]);
        common::assert_no_delivery(&mut eu).await;
        let rch = conn.create_channel().await.unwrap();
        let args = table(&[
            ("x-stream-offset", AMQPValue::LongString("first".into())),
            ("x-stream-filter", AMQPValue::LongString("eu".into())),
            ("x-stream-match-unfiltered", AMQPValue::Boolean(true)),
        ]);
        let mut eu_or_none = reader(&rch, "regions", "", 100, args).await;
        // The odd numbers carry no filter value, save 17 and 9,999 ("eu").
        let got = take_acked(&mut eu_or_none, 5_001).await;
        assert!(got.iter().all(|(o, _)| *o == 5_000 || o % 2 == 1));
        common::assert_no_delivery(&mut eu_or_none).await;
    })
    .await
}

#[tokio::test]
async fn retention_by_size_keeps_the_stream_within_its_bound() {
    bounded(Duration::from_secs(30), async {
        let b = Broker::start().await;
        let (_c, ch) = b.channel().await;
        common::confirm(&ch).await;
        let bound = 1_000_000u64;
        declare_stream(
            &ch,
            "bounded",
            &[
                ("x-max-length-bytes", AMQPValue::LongLongInt(bound as i64)),
                (
                    "x-stream-max-segment-size-bytes",
                    AMQPValue::LongLongInt(100_000),
                ),
            ],
        )
        .await;
        let body = vec![7u8; 1_000];
        common::publish_confirmed(&ch, "bounded", (0..5_000).map(|_| body.clone())).await;
        let on_disk = common::disk::disk_use(&b.data_dir.join("queues"));
        // The bound plus the active segment (RabbitMQ's rule), plus files' slack.
        assert!(
            on_disk <= bound + 100_000 + 64 * 1024,
            "{on_disk} bytes on disk"
        );
        let rch = b.connect().await.create_channel().await.unwrap();
        let mut c = reader(
            &rch,
            "bounded",
            "",
            10,
            offset_arg(AMQPValue::LongString("first".into())),
        )
        .await;
        let (first, _) = take_acked(&mut c, 1).await[0].clone();
        assert!(first > 3_000, "the head moved: first offset {first}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_far_behind_reads_from_disk() {
    bounded(Duration::from_secs(60), async {
        let b = Broker::start().await;
        let (_c, ch) = b.channel().await;
        common::confirm(&ch).await;
        declare_stream(
            &ch,
            "history",
            &[(
                "x-stream-max-segment-size-bytes",
                AMQPValue::LongLongInt(1_000_000),
            )],
        )
        .await;
        // 40 MB: ten times the in-memory tail.
        let n = 20_000u64;
        common::publish_confirmed(
            &ch,
            "history",
            (0..n).map(|i| {
                let mut body = i.to_be_bytes().to_vec();
                body.resize(2_000, (i % 251) as u8);
                body
            }),
        )
        .await;
        let rch = b.connect().await.create_channel().await.unwrap();
        let mut c = reader(
            &rch,
            "history",
            "",
            500,
            offset_arg(AMQPValue::LongString("first".into())),
        )
        .await;
        for i in 0..n {
            let d = common::next_delivery(&mut c).await;
            let got = u64::from_be_bytes(d.data[..8].try_into().unwrap());
            assert_eq!(got, i, "offset {i}");
            assert!(d.data[8..].iter().all(|&x| x == (i % 251) as u8));
            if (i + 1).is_multiple_of(100) {
                d.ack(BasicAckOptions { multiple: true }).await.unwrap();
            }
        }
    })
    .await
}

#[tokio::test]
async fn policies_set_retention_and_the_api_shows_offsets_and_lag() {
    bounded(Duration::from_secs(30), async {
        let b = Broker::start_with(|c| c.management_port = common::free_port()).await;
        let (_c, ch) = b.channel().await;
        common::confirm(&ch).await;
        declare_stream(&ch, "audit", &[]).await;
        declare_stream(&ch, "kept", &[]).await;
        let policy = serde_json::json!({
            "pattern": "^audit$", "apply-to": "streams",
            "definition": {"max-length-bytes": 300_000, "stream-max-segment-size-bytes": 100_000}
        });
        assert_eq!(b.api("PUT", "/policies/%2F/cap", Some(policy)).await.0, 201);
        let bad = serde_json::json!({"pattern": ".*", "definition": {"max-age": "1X"}});
        assert_eq!(b.api("PUT", "/policies/%2F/bad", Some(bad)).await.0, 400);
        let body = vec![1u8; 1_000];
        for q in ["audit", "kept"] {
            common::publish_confirmed(&ch, q, (0..2_000).map(|_| body.clone())).await;
        }
        let rch = b.connect().await.create_channel().await.unwrap();
        let mut c = reader(
            &rch,
            "audit",
            "",
            7,
            offset_arg(AMQPValue::LongString("first".into())),
        )
        .await;
        let _ = common::next_deliveries(&mut c, 7).await;
        let (_, audit) = b.api("GET", "/queues/%2F/audit", None).await;
        assert_eq!(audit["type"], "stream");
        assert_eq!(audit["policy"], "cap");
        let s = &audit["stream"];
        assert!(s["bytes"].as_u64().unwrap() <= 400_000, "{s}");
        assert!(s["first_offset"].as_u64().unwrap() > 1_000, "{s}");
        assert_eq!(s["last_offset"], 1_999);
        let first = s["first_offset"].as_u64().unwrap();
        let reader_info = &s["consumers"][0];
        assert_eq!(reader_info["offset"].as_u64().unwrap(), first + 7);
        assert_eq!(reader_info["lag"].as_u64().unwrap(), 2_000 - first - 7);
        let (_, kept) = b.api("GET", "/queues/%2F/kept", None).await;
        assert_eq!(
            kept["stream"]["first_offset"], 0,
            "the policy is for `audit` only"
        );
        assert_eq!(kept["messages"], 2_000);
    })
    .await
}

#[tokio::test]
async fn retention_by_age_drops_old_segments_as_publishers_go_on() {
    bounded(Duration::from_secs(30), async {
        let b = Broker::start().await;
        let (_c, ch) = b.channel().await;
        common::confirm(&ch).await;
        declare_stream(
            &ch,
            "recent",
            &[
                ("x-max-age", AMQPValue::LongString("1s".into())),
                (
                    "x-stream-max-segment-size-bytes",
                    AMQPValue::LongLongInt(65_536),
                ),
            ],
        )
        .await;
        let body = vec![3u8; 1_000];
        common::publish_confirmed(&ch, "recent", (0..500).map(|_| body.clone())).await;
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        common::publish_confirmed(&ch, "recent", (0..200).map(|_| body.clone())).await;
        let rch = b.connect().await.create_channel().await.unwrap();
        let mut c = reader(
            &rch,
            "recent",
            "",
            10,
            offset_arg(AMQPValue::LongString("first".into())),
        )
        .await;
        let (first, _) = take_acked(&mut c, 1).await[0].clone();
        // Whole segments go: the one the old messages end in may stay.
        assert!(
            first >= 400,
            "old segments were deleted: first offset {first}"
        );
    })
    .await
}

#[tokio::test]
async fn a_reader_at_the_end_gets_a_message_whose_append_wrote_the_buffer() {
    bounded(Duration::from_secs(20), async {
        let b = Broker::start().await;
        let (_c, ch) = b.channel().await;
        common::confirm(&ch).await;
        declare_stream(&ch, "big", &[]).await;
        let rch = b.connect().await.create_channel().await.unwrap();
        let mut c = reader(&rch, "big", "", 10, FieldTable::default()).await;
        // 2 MiB: its append writes the buffer itself (and so moves the
        // written mark past the waiting reader).
        common::publish_confirmed(&ch, "big", std::iter::once(vec![9u8; 2 << 20])).await;
        let d = common::next_delivery(&mut c).await;
        assert_eq!(d.data.len(), 2 << 20);
        // And past the in-memory tail's trim, with small messages.
        common::publish_confirmed(&ch, "big", (0..60).map(|_| vec![1u8; 100_000])).await;
        for _ in 0..60 {
            let d = common::next_delivery(&mut c).await;
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
    })
    .await
}
