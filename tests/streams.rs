//! Stream queues through lapin: offsets (first, next, a number, a time),
//! the `x-stream-offset` header, acks as credit, independent readers,
//! exact filtering, retention by size, server-side offset tracking across
//! reconnects and restarts, and a reader far behind reading from disk.

mod common;

use std::time::Duration;

use common::{assert_code, bounded, reply_text, table, Broker};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Consumer};

fn stream_args(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut pairs = vec![("x-queue-type", AMQPValue::LongString("stream".into()))];
    pairs.extend(extra.iter().cloned());
    table(&pairs)
}

async fn declare_stream(ch: &Channel, name: &str, extra: &[(&str, AMQPValue)]) {
    ch.queue_declare(name.into(), common::durable(), stream_args(extra))
        .await
        .expect("declare stream");
}

/// Publish `n` messages numbered from `from`, with confirms.
async fn publish_numbered(ch: &Channel, stream: &str, from: u64, n: u64) {
    common::publish_confirmed(
        ch,
        stream,
        (from..from + n).map(|i| i.to_string().into_bytes()),
    )
    .await;
}

/// A consumer of `stream` with `prefetch` on its own channel.
async fn reader(
    ch: &Channel,
    stream: &str,
    tag: &str,
    prefetch: u16,
    args: FieldTable,
) -> Consumer {
    ch.basic_qos(prefetch, BasicQosOptions::default())
        .await
        .unwrap();
    ch.basic_consume(
        stream.into(),
        tag.into(),
        BasicConsumeOptions::default(),
        args,
    )
    .await
    .expect("consume")
}

fn offset_arg(v: AMQPValue) -> FieldTable {
    table(&[("x-stream-offset", v)])
}

/// The next `n` deliveries, acked one by one: (offset header, body).
async fn take_acked(c: &mut Consumer, n: usize) -> Vec<(i64, String)> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let d = common::next_delivery(c).await;
        let offset = d
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-stream-offset").cloned());
        let Some(AMQPValue::LongLongInt(o)) = offset else {
            panic!("no x-stream-offset header: {offset:?}");
        };
        d.ack(BasicAckOptions::default()).await.unwrap();
        out.push((o, String::from_utf8_lossy(&d.data).into_owned()));
    }
    out
}

fn numbered(from: u64, n: u64) -> Vec<(i64, String)> {
    (from..from + n)
        .map(|i| (i as i64, i.to_string()))
        .collect()
}

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
