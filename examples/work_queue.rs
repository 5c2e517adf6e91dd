//! Work queue: a producer puts persistent tasks on the durable queue `tasks`;
//! workers share them out, one unacknowledged task at a time each.
//!
//! ```text
//! cargo run --example work_queue -- producer 10
//! cargo run --example work_queue -- worker
//! ```
//! Each dot in a task's body stands for one second of work (override with
//! `DOT_MS`). The broker is `AMQP_URL` (default: a local RabbitMQ/Warren).

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

const QUEUE: &str = "tasks";

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn usage() -> ! {
    eprintln!("usage: work_queue producer N | work_queue worker");
    std::process::exit(2)
}

async fn declare(ch: &Channel) -> Result<()> {
    ch.queue_declare(
        QUEUE.into(),
        QueueDeclareOptions::durable(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

async fn producer(ch: &Channel, n: u32) -> Result<()> {
    declare(ch).await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    for i in 1..=n {
        let body = format!("task {i} {}", ".".repeat((i % 3 + 1) as usize));
        ch.basic_publish(
            "".into(),
            QUEUE.into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await?;
        println!(" [x] sent {body:?}");
    }
    let returned = ch.wait_for_confirms().await?;
    if !returned.is_empty() {
        return Err(format!("{} task(s) were returned by the broker", returned.len()).into());
    }
    println!(" [x] all {n} task(s) confirmed by the broker");
    Ok(())
}

async fn worker(ch: &Channel) -> Result<()> {
    declare(ch).await?;
    ch.basic_qos(1, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            QUEUE.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let dot = Duration::from_millis(
        std::env::var("DOT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000),
    );
    println!(" [*] waiting for tasks on {QUEUE:?}; press Ctrl+C to exit");
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        let body = String::from_utf8_lossy(&delivery.data).into_owned();
        println!(" [x] received {body:?}");
        let dots = body.bytes().filter(|&b| b == b'.').count() as u32;
        tokio::time::sleep(dot * dots).await;
        delivery.ack(BasicAckOptions::default()).await?;
        println!(" [x] done");
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
        ["producer", n] => {
            let n: u32 = n.parse().unwrap_or_else(|_| usage());
            producer(&ch, n).await?;
        }
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
