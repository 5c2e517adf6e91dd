//! Topic routing: messages on the topic exchange `topic_logs` carry a
//! `<facility>.<severity>` routing key; receivers bind with patterns where
//! `*` is one word and `#` is zero or more.
//!
//! ```text
//! cargo run --example topic_logs -- receive "kern.*" "*.critical"
//! cargo run --example topic_logs -- emit kern.critical "A critical kernel error"
//! ```
//! The broker is `AMQP_URL` (default: a local RabbitMQ/Warren).

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

const EXCHANGE: &str = "topic_logs";

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn usage() -> ! {
    eprintln!(
        "usage: topic_logs emit <facility.severity> MSG... | topic_logs receive <pattern>..."
    );
    std::process::exit(2)
}

async fn declare(ch: &Channel) -> Result<()> {
    ch.exchange_declare(
        EXCHANGE.into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

async fn emit(ch: &Channel, key: &str, msg: &str) -> Result<()> {
    declare(ch).await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    ch.basic_publish(
        EXCHANGE.into(),
        key.into(),
        BasicPublishOptions::default(),
        msg.as_bytes(),
        BasicProperties::default(),
    )
    .await?
    .await?;
    println!(" [x] sent {key}: {msg:?}");
    Ok(())
}

async fn receive(ch: &Channel, patterns: &[String]) -> Result<()> {
    declare(ch).await?;
    let queue = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions::exclusive(),
            FieldTable::default(),
        )
        .await?;
    for pattern in patterns {
        ch.queue_bind(
            queue.name().clone(),
            EXCHANGE.into(),
            pattern.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    let mut consumer = ch
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    println!(" [*] waiting for logs matching {patterns:?}; press Ctrl+C to exit");
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        println!(
            " [x] {}: {}",
            delivery.routing_key,
            String::from_utf8_lossy(&delivery.data)
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(role) = args.first() else { usage() };
    if !matches!(role.as_str(), "emit" | "receive") || args.len() < 2 {
        usage();
    }
    let conn = Connection::connect(&url(), ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    if role == "emit" {
        let msg = if args.len() > 2 {
            args[2..].join(" ")
        } else {
            "Hello World!".to_string()
        };
        emit(&ch, &args[1], &msg).await?;
    } else {
        tokio::select! {
            r = receive(&ch, &args[1..]) => r?,
            _ = tokio::signal::ctrl_c() => println!(" [*] interrupted"),
        }
    }
    conn.close(200, "bye".into()).await?;
    Ok(())
}
