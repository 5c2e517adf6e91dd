//! Retries with back-off through a dead-letter exchange: a failing job is
//! rejected, waits in a "retry" queue until its TTL runs out, and comes
//! back to the work queue; after `MAX_ATTEMPTS` it is parked in a "failed"
//! queue for a human to look at.
//!
//! ```text
//! cargo run --example retry -- producer 5
//! cargo run --example retry -- worker
//! ```
//! The worker fails every job whose body contains "fail" (so `producer`
//! sends a mix). Topology, all durable:
//!
//! ```text
//! jobs (x-dead-letter-exchange = jobs.retry)
//!   --reject--> jobs.retry (fanout) --> jobs.wait (x-message-ttl = RETRY_MS,
//!                                                 x-dead-letter-exchange = "",
//!                                                 x-dead-letter-routing-key = jobs)
//!   <--expired-- (back to jobs)
//! jobs.failed: where the worker publishes a job after MAX_ATTEMPTS
//! ```
//! The attempt count is read from the `x-death` header that the broker adds
//! each time a message is dead-lettered. The broker is `AMQP_URL`.

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

const JOBS: &str = "jobs";
const RETRY_EXCHANGE: &str = "jobs.retry";
const WAIT: &str = "jobs.wait";
const FAILED: &str = "jobs.failed";
const MAX_ATTEMPTS: i64 = 3;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn retry_ms() -> i32 {
    std::env::var("RETRY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn usage() -> ! {
    eprintln!("usage: retry producer N | retry worker");
    std::process::exit(2)
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// Declare the work queue, the retry exchange and wait queue, and the
/// parking queue (idempotent: every program run declares them).
async fn declare(ch: &Channel) -> Result<()> {
    let durable = QueueDeclareOptions::durable();
    let mut jobs_args = FieldTable::default();
    jobs_args.insert("x-dead-letter-exchange".into(), text(RETRY_EXCHANGE));
    ch.queue_declare(JOBS.into(), durable, jobs_args).await?;
    ch.exchange_declare(
        RETRY_EXCHANGE.into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    let mut wait_args = FieldTable::default();
    wait_args.insert("x-message-ttl".into(), AMQPValue::LongInt(retry_ms()));
    wait_args.insert("x-dead-letter-exchange".into(), text(""));
    wait_args.insert("x-dead-letter-routing-key".into(), text(JOBS));
    ch.queue_declare(WAIT.into(), durable, wait_args).await?;
    ch.queue_bind(
        WAIT.into(),
        RETRY_EXCHANGE.into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(FAILED.into(), durable, FieldTable::default())
        .await?;
    Ok(())
}

/// How many times the message was rejected from the work queue so far.
fn rejections(props: &BasicProperties) -> i64 {
    let Some(headers) = props.headers() else {
        return 0;
    };
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
        return 0;
    };
    deaths
        .as_slice()
        .iter()
        .filter_map(|d| match d {
            AMQPValue::FieldTable(t) => Some(t),
            _ => None,
        })
        .filter(|t| {
            matches!(t.inner().get("queue"), Some(AMQPValue::LongString(q)) if q.as_bytes() == JOBS.as_bytes())
        })
        .map(|t| match t.inner().get("count") {
            Some(AMQPValue::LongLongInt(n)) => *n,
            _ => 0,
        })
        .sum()
}

async fn producer(ch: &Channel, n: u32) -> Result<()> {
    declare(ch).await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    for i in 1..=n {
        let body = if i % 2 == 0 {
            format!("job {i} (will fail)")
        } else {
            format!("job {i}")
        };
        ch.basic_publish(
            "".into(),
            JOBS.into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await?;
        println!(" [x] sent {body:?}");
    }
    ch.wait_for_confirms().await?;
    Ok(())
}

async fn worker(ch: &Channel) -> Result<()> {
    declare(ch).await?;
    ch.basic_qos(10, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            JOBS.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    println!(" [*] working on {JOBS:?}; press Ctrl+C to exit");
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        let body = String::from_utf8_lossy(&delivery.data).into_owned();
        let attempt = rejections(&delivery.properties) + 1;
        if !body.contains("fail") {
            println!(" [x] {body:?} done (attempt {attempt})");
            delivery.ack(BasicAckOptions::default()).await?;
        } else if attempt < MAX_ATTEMPTS {
            println!(
                " [!] {body:?} failed (attempt {attempt}); retrying in {} ms",
                retry_ms()
            );
            delivery
                .reject(BasicRejectOptions { requeue: false })
                .await?;
        } else {
            println!(" [!] {body:?} failed {attempt} times; parking it in {FAILED:?}");
            ch.basic_publish(
                "".into(),
                FAILED.into(),
                BasicPublishOptions::default(),
                &delivery.data,
                delivery.properties.clone(),
            )
            .await?
            .await?;
            delivery.ack(BasicAckOptions::default()).await?;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let conn = Connection::connect(&url(), ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["producer", n] => producer(&ch, n.parse().unwrap_or_else(|_| usage())).await?,
        ["producer"] => producer(&ch, 1).await?,
        ["worker"] => {
            tokio::select! {
                r = worker(&ch) => r?,
                _ = tokio::signal::ctrl_c() => println!(" [*] interrupted"),
            }
        }
        _ => usage(),
    }
    conn.close(200, "bye".into()).await?;
    Ok(())
}
