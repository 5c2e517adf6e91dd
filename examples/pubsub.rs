//! Publish/subscribe: every subscriber gets its own server-named, exclusive
//! queue bound to the fanout exchange `logs`, so each sees every message.
//!
//! ```text
//! cargo run --example pubsub -- subscribe
//! cargo run --example pubsub -- publish "hello everyone"
//! ```
//! The broker is `AMQP_URL` (default: a local RabbitMQ/Warren).

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

const EXCHANGE: &str = "logs";

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn usage() -> ! {
    eprintln!("usage: pubsub publish MSG... | pubsub subscribe");
    std::process::exit(2)
}

async fn declare(ch: &Channel) -> Result<()> {
    ch.exchange_declare(
        EXCHANGE.into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

async fn publish(ch: &Channel, msg: &str) -> Result<()> {
    declare(ch).await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    ch.basic_publish(
        EXCHANGE.into(),
        "".into(),
        BasicPublishOptions::default(),
        msg.as_bytes(),
        BasicProperties::default(),
    )
    .await?
    .await?;
    println!(" [x] published {msg:?} to exchange {EXCHANGE:?}");
    Ok(())
}

async fn subscribe(ch: &Channel) -> Result<()> {
    declare(ch).await?;
    let queue = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions::exclusive(),
            FieldTable::default(),
        )
        .await?;
    ch.queue_bind(
        queue.name().clone(),
        EXCHANGE.into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
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
    println!(
        " [*] subscribed to {EXCHANGE:?} with queue {}; press Ctrl+C to exit",
        queue.name()
    );
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        println!(" [x] {}", String::from_utf8_lossy(&delivery.data));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(role) = args.first() else { usage() };
    let conn = Connection::connect(&url(), ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    match role.as_str() {
        "publish" => {
            let msg = if args.len() > 1 {
                args[1..].join(" ")
            } else {
                "info: Hello World!".to_string()
            };
            publish(&ch, &msg).await?;
        }
        "subscribe" => {
            tokio::select! {
                r = subscribe(&ch) => r?,
                _ = tokio::signal::ctrl_c() => println!(" [*] interrupted"),
            }
        }
        _ => usage(),
    }
    conn.close(200, "bye".into()).await?;
    Ok(())
}
