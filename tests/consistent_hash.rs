//! The `x-consistent-hash` exchange through lapin (RabbitMQ's
//! consistent-hash plugin's semantics, recorded with pika against RabbitMQ
//! 3.10.8 in conformance/python/test_consistent_hash.py): binding keys are
//! weights, each message goes to one queue by a hash of its routing key, a
//! header or a property; 100,000 keys over 4 queues spread within 10 % of
//! even and every key's messages land on one queue; keys keep their queue
//! across a restart.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{assert_code, bounded, reply_text, Broker};
use futures_lite::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

const QUEUES: [&str; 4] = ["ch-0", "ch-1", "ch-2", "ch-3"];

async fn hash_exchange(
    ch: &Channel,
    name: &str,
    args: FieldTable,
    durable: bool,
) -> lapin::Result<()> {
    let opts = ExchangeDeclareOptions {
        durable,
        ..Default::default()
    };
    ch.exchange_declare(
        name.into(),
        ExchangeKind::Custom("x-consistent-hash".into()),
        opts,
        args,
    )
    .await
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, weight: &str) -> lapin::Result<()> {
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        weight.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
}

/// Publish `key` as routing key and body.
async fn publish_key(ch: &Channel, exchange: &str, key: &str) {
    let opts = BasicPublishOptions::default();
    ch.basic_publish(
        exchange.into(),
        key.into(),
        opts,
        key.as_bytes(),
        BasicProperties::default(),
    )
    .await
    .unwrap();
}

/// `n` messages of `queues`, as (queue, body), consumed with no-ack.
async fn drain(ch: &Channel, queues: &[&str], n: usize) -> Vec<(String, String)> {
    let mut consumers = Vec::new();
    for &q in queues {
        let opts = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let c = ch
            .basic_consume(q.into(), "".into(), opts, FieldTable::default())
            .await
            .unwrap();
        consumers.push((q, c));
    }
    let tags: Vec<_> = consumers.iter().map(|(_, c)| c.tag()).collect();
    let mut out = Vec::with_capacity(n);
    let mut merged = futures_lite::stream::iter(Vec::<(String, String)>::new()).boxed();
    for (q, c) in consumers {
        let q = q.to_string();
        let s = c.map(move |d| (q.clone(), String::from_utf8(d.unwrap().data).unwrap()));
        merged = futures_lite::StreamExt::boxed(merged.race(s));
    }
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), merged.next()).await {
            Ok(Some(item)) => out.push(item),
            _ => panic!("only {} of {n} messages arrived", out.len()),
        }
    }
    // Cancelled, or they would take (and lose) the next drain's messages.
    for tag in tags {
        ch.basic_cancel(tag, Default::default()).await.unwrap();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_spread_evenly_and_stay_on_one_queue() {
    bounded(Duration::from_secs(120), async {
        let b = Broker::start().await;
        let (_c, ch) = b.channel().await;
        hash_exchange(&ch, "by-key", FieldTable::default(), false)
            .await
            .unwrap();
        for q in QUEUES {
            common::declare_queue(&ch, q).await;
            bind(&ch, q, "by-key", "10").await.unwrap();
        }
        const KEYS: usize = 100_000;
        const AGAIN: usize = 20_000;
        for i in (0..KEYS).chain(0..AGAIN) {
            publish_key(&ch, "by-key", &format!("customer-{i}")).await;
        }
        let got = drain(&ch, &QUEUES, KEYS + AGAIN).await;
        let mut per_queue: HashMap<&str, usize> = HashMap::new();
        let mut home: HashMap<&str, &str> = HashMap::new();
        for (q, key) in &got {
            *per_queue.entry(q).or_default() += 1;
            let first = *home.entry(key).or_insert(q);
            assert_eq!(first, q, "{key} reached two queues");
        }
        assert_eq!(home.len(), KEYS);
        let even = (KEYS + AGAIN) as f64 / 4.0;
        for q in QUEUES {
            let n = per_queue.get(q).copied().unwrap_or(0) as f64;
            assert!(
                (n - even).abs() < even * 0.10,
                "{q}: {n} of {even}; {per_queue:?}"
            );
        }
    })
    .await
}

#[tokio::test]
async fn headers_properties_and_weights() {
    bounded(Duration::from_secs(30), async {
        let b = Broker::start().await;
        let (_c, ch) = b.channel().await;
        let mut args = FieldTable::default();
        args.insert("hash-header".into(), AMQPValue::LongString("tenant".into()));
        hash_exchange(&ch, "by-header", args, false).await.unwrap();
        let mut args = FieldTable::default();
        args.insert(
            "hash-property".into(),
            AMQPValue::LongString("message_id".into()),
        );
        hash_exchange(&ch, "by-id", args, false).await.unwrap();
        for q in &QUEUES[..2] {
            common::declare_queue(&ch, q).await;
            bind(&ch, q, "by-header", "1").await.unwrap();
            bind(&ch, q, "by-id", "1").await.unwrap();
        }
        // Routing keys differ, the header is the same: one queue gets all.
        for i in 0..20 {
            let mut h = FieldTable::default();
            h.insert("tenant".into(), AMQPValue::LongString("acme".into()));
            let props = BasicProperties::default().with_headers(h);
            ch.basic_publish(
                "by-header".into(),
                format!("rk-{i}").as_str().into(),
                BasicPublishOptions::default(),
                b"h",
                props,
            )
            .await
            .unwrap();
            let props = BasicProperties::default().with_message_id("order-7".into());
            ch.basic_publish(
                "by-id".into(),
                format!("rk-{i}").as_str().into(),
                BasicPublishOptions::default(),
                b"p",
                props,
            )
            .await
            .unwrap();
        }
        // The two exchanges may pick different queues, but each picks one.
        let got = drain(&ch, &QUEUES[..2], 40).await;
        let queue_of = |body: &str| {
            let qs: std::collections::BTreeSet<&String> = got
                .iter()
                .filter(|(_, b)| b == body)
                .map(|(q, _)| q)
                .collect();
            qs.len()
        };
        assert_eq!((queue_of("h"), queue_of("p")), (1, 1));
        // Distinct message ids spread over both queues.
        for i in 0..200 {
            let props =
                BasicProperties::default().with_message_id(format!("id-{i}").as_str().into());
            ch.basic_publish(
                "by-id".into(),
                "same-key".into(),
                BasicPublishOptions::default(),
                b"i",
                props,
            )
            .await
            .unwrap();
        }
        let got = drain(&ch, &QUEUES[..2], 200).await;
        let on_first = got.iter().filter(|(q, _)| q == "ch-0").count();
        assert!((60..=140).contains(&on_first), "{on_first} of 200 on ch-0");
        // CC keys add no destinations: one copy per message, as RabbitMQ.
        // (A fresh channel: closing `ch` ends the drains' consumers.)
        ch.close(200, "done".into()).await.unwrap();
        let (_c2, ch) = b.channel().await;
        hash_exchange(&ch, "by-key", FieldTable::default(), false)
            .await
            .unwrap();
        for q in &QUEUES[..2] {
            bind(&ch, q, "by-key", "1").await.unwrap();
        }
        common::confirm(&ch).await;
        for i in 0..50 {
            let cc: Vec<AMQPValue> = (0..5)
                .map(|j| AMQPValue::LongString(format!("cc-{i}-{j}").into()))
                .collect();
            let h = common::table(&[("CC", AMQPValue::FieldArray(cc.into()))]);
            let props = BasicProperties::default().with_headers(h);
            common::publish_with(&ch, "by-key", &format!("k-{i}"), b"c", props).await;
        }
        let queued = common::ready_count(&ch, "ch-0").await.unwrap()
            + common::ready_count(&ch, "ch-1").await.unwrap();
        assert_eq!(queued, 50, "one copy per message");

        // RabbitMQ's refusals, recorded.
        let (_c2, ch2) = b.channel().await;
        let e = assert_code(bind(&ch2, "ch-0", "by-header", "abc").await, 406);
        assert_eq!(
            reply_text(&e),
            "PRECONDITION_FAILED - The binding key must be an integer: <<\"abc\">>"
        );
        let (_c3, ch3) = b.channel().await;
        let e = assert_code(bind(&ch3, "ch-0", "by-header", "0").await, 406);
        assert_eq!(
            reply_text(&e),
            "PRECONDITION_FAILED - The binding key must be greater than 0"
        );
        let (_c4, ch4) = b.channel().await;
        let mut both = FieldTable::default();
        both.insert("hash-header".into(), AMQPValue::LongString("h".into()));
        both.insert(
            "hash-property".into(),
            AMQPValue::LongString("message_id".into()),
        );
        let e = assert_code(hash_exchange(&ch4, "both", both, false).await, 406);
        assert_eq!(
            reply_text(&e),
            "PRECONDITION_FAILED - hash-header and hash-property are mutually exclusive"
        );
    })
    .await
}

#[tokio::test]
async fn keys_keep_their_queue_across_a_restart() {
    bounded(Duration::from_secs(60), async {
        let dir = common::fresh_data_dir();
        let placed = |b: &Broker| {
            let url = b.url().to_string();
            async move {
                let c = lapin::Connection::connect(&url, Default::default())
                    .await
                    .unwrap();
                let ch = c.create_channel().await.unwrap();
                for i in 0..200 {
                    publish_key(&ch, "durable-hash", &format!("k{i}")).await;
                }
                let got = drain(&ch, &QUEUES, 200).await;
                got.into_iter()
                    .map(|(q, k)| (k, q))
                    .collect::<HashMap<_, _>>()
            }
        };
        let b = Broker::start_in(dir.clone(), |_| {}).await;
        let (_c, ch) = b.channel().await;
        hash_exchange(&ch, "durable-hash", FieldTable::default(), true)
            .await
            .unwrap();
        for (q, w) in QUEUES.iter().zip(["1", "2", "3", "4"]) {
            common::declare_durable(&ch, q).await;
            bind(&ch, q, "durable-hash", w).await.unwrap();
        }
        let before = placed(&b).await;
        drop(ch);
        b.stop().await;
        let b = Broker::start_in(dir, |_| {}).await;
        let after = placed(&b).await;
        assert_eq!(before, after);
    })
    .await
}
