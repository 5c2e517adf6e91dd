//! Stream helpers for the stream test files: declaring, publishing
//! numbered messages, readers with a prefetch, and reading back with the
//! `x-stream-offset` header.

use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Consumer};

use super::table;

pub fn stream_args(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut pairs = vec![("x-queue-type", AMQPValue::LongString("stream".into()))];
    pairs.extend(extra.iter().cloned());
    table(&pairs)
}

pub async fn declare_stream(ch: &Channel, name: &str, extra: &[(&str, AMQPValue)]) {
    ch.queue_declare(name.into(), super::durable(), stream_args(extra))
        .await
        .expect("declare stream");
}

/// Publish `n` messages numbered from `from`, with confirms.
pub async fn publish_numbered(ch: &Channel, stream: &str, from: u64, n: u64) {
    super::publish_confirmed(
        ch,
        stream,
        (from..from + n).map(|i| i.to_string().into_bytes()),
    )
    .await;
}

/// A consumer of `stream` with `prefetch` on its own channel.
pub async fn reader(
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

pub fn offset_arg(v: AMQPValue) -> FieldTable {
    table(&[("x-stream-offset", v)])
}

/// The next `n` deliveries, acked one by one: (offset header, body).
pub async fn take_acked(c: &mut Consumer, n: usize) -> Vec<(i64, String)> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let d = super::next_delivery(c).await;
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

pub fn numbered(from: u64, n: u64) -> Vec<(i64, String)> {
    (from..from + n)
        .map(|i| (i as i64, i.to_string()))
        .collect()
}
