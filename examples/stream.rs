//! An event log that new services replay: a stream queue keeps every
//! event (for 7 days here), publishers append with confirms, and each
//! reader chooses where to start. A reader with a name of its own has its
//! position stored by the broker at each ack and resumes there next time.
//!
//! ```text
//! cargo run --example stream -- publish 100        # append 100 events
//! cargo run --example stream -- replay first       # all, from the oldest
//! cargo run --example stream -- replay 1h          # the last hour's
//! cargo run --example stream -- replay 42          # from offset 42
//! cargo run --example stream -- follow billing     # resumes where "billing" stopped
//! ```
//! The broker is `AMQP_URL` (default: guest on 127.0.0.1:5672). A replay
//! stops after 2 s without a message; a follower runs until stopped.

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

const STREAM: &str = "events";

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The stream (idempotent: every program declares it).
async fn declare(ch: &Channel) -> Result<()> {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    args.insert("x-max-age".into(), AMQPValue::LongString("7D".into()));
    let opts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(STREAM.into(), opts, args).await?;
    Ok(())
}

async fn publish(ch: &Channel, n: u64) -> Result<()> {
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    for i in 0..n {
        let body = format!("event {i}");
        let confirm = ch
            .basic_publish(
                "".into(),
                STREAM.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default(),
            )
            .await?;
        confirm.await?;
    }
    println!("appended {n} events");
    Ok(())
}

/// Where a replay starts: first, last, next, an offset or an interval.
fn start(spec: &str) -> AMQPValue {
    match spec.parse::<i64>() {
        Ok(n) => AMQPValue::LongLongInt(n),
        Err(_) => AMQPValue::LongString(spec.into()),
    }
}

/// Read and ack; with `idle`, stop after that long without a message.
async fn read(ch: &Channel, tag: &str, args: FieldTable, idle: Option<Duration>) -> Result<()> {
    // A stream consumer needs a prefetch: acks are its credit.
    ch.basic_qos(100, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            STREAM.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await?;
    loop {
        let next = match idle {
            Some(d) => match tokio::time::timeout(d, consumer.next()).await {
                Ok(n) => n,
                Err(_) => return Ok(()),
            },
            None => consumer.next().await,
        };
        let Some(delivery) = next else {
            return Ok(());
        };
        let d = delivery?;
        let offset = d
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-stream-offset").cloned());
        let offset = match offset {
            Some(AMQPValue::LongLongInt(o)) => o,
            _ => -1,
        };
        println!("{offset:>8}  {}", String::from_utf8_lossy(&d.data));
        d.ack(BasicAckOptions::default()).await?;
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let conn = Connection::connect(&url(), ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    declare(&ch).await?;
    match (args.first().map(String::as_str), args.get(1)) {
        (Some("publish"), n) => publish(&ch, n.and_then(|n| n.parse().ok()).unwrap_or(10)).await?,
        (Some("replay"), spec) => {
            let mut t = FieldTable::default();
            t.insert(
                "x-stream-offset".into(),
                start(spec.map_or("first", String::as_str)),
            );
            read(&ch, "", t, Some(Duration::from_secs(2))).await?
        }
        // No x-stream-offset and a tag of our own: the broker tracks the
        // offset under the tag (a first run starts at "next").
        (Some("follow"), Some(name)) => read(&ch, name, FieldTable::default(), None).await?,
        _ => eprintln!("usage: stream publish N | replay first|last|next|OFFSET|1h | follow NAME"),
    }
    conn.close(200, "bye".into()).await?;
    Ok(())
}
