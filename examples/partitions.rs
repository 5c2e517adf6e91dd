//! Kafka-style consumer groups over AMQP: an `x-consistent-hash` exchange
//! spreads messages over partition queues by key (every message of one
//! key lands on one partition, in order), and each partition queue has
//! `x-single-active-consumer`, so however many group members consume,
//! one reads each partition at a time and another takes over when it goes.
//!
//! ```text
//! cargo run --example partitions -- member A      # start members (any number)
//! cargo run --example partitions -- member B
//! cargo run --example partitions -- produce 1000  # events for 50 customers
//! ```
//! Each member consumes from every partition; the broker makes one member
//! active per partition, so a customer's events are handled by one member,
//! in the order they were published. Stop member A and B takes over A's
//! partitions. Topology, all durable:
//!
//! ```text
//! orders (x-consistent-hash) --weight 1--> orders.p0 .. orders.p3
//!                                          (x-single-active-consumer)
//! ```
//! The broker is `AMQP_URL` (default: guest on 127.0.0.1:5672).

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

const EXCHANGE: &str = "orders";
const PARTITIONS: usize = 4;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn partition(i: usize) -> String {
    format!("{EXCHANGE}.p{i}")
}

/// The exchange and the partitions (idempotent: every program declares them).
async fn topology(ch: &Channel) -> Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let kind = ExchangeKind::Custom("x-consistent-hash".into());
    ch.exchange_declare(EXCHANGE.into(), kind, durable, FieldTable::default())
        .await?;
    let mut args = FieldTable::default();
    args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    for i in 0..PARTITIONS {
        let q = partition(i);
        let opts = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare(q.as_str().into(), opts, args.clone())
            .await?;
        // The binding key is the partition's weight: equal shares.
        ch.queue_bind(
            q.as_str().into(),
            EXCHANGE.into(),
            "1".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

/// Publish `n` events for 50 customers; the routing key is the customer.
async fn produce(ch: &Channel, n: usize) -> Result<()> {
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    for i in 0..n {
        let customer = format!("customer-{}", i % 50);
        let body = format!("{customer} event {}", i / 50);
        let props = BasicProperties::default().with_delivery_mode(2);
        ch.basic_publish(
            EXCHANGE.into(),
            customer.as_str().into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            props,
        )
        .await?
        .await?;
    }
    println!("published {n} events");
    Ok(())
}

/// Consume every partition; the broker makes this member active on some.
async fn member(ch: &Channel, name: &str) -> Result<()> {
    ch.basic_qos(10, BasicQosOptions::default()).await?;
    let mut consumers = Vec::new();
    for i in 0..PARTITIONS {
        let tag = format!("{name}-p{i}");
        let c = ch
            .basic_consume(
                partition(i).as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        consumers.push(c);
    }
    println!("member {name} consuming {PARTITIONS} partitions (active where the broker says)");
    let mut all = futures_lite::stream::iter(Vec::new()).boxed();
    for c in consumers {
        all = all.race(c).boxed();
    }
    while let Some(delivery) = all.next().await {
        let delivery = delivery?;
        println!(
            "{name} <- {}: {}",
            delivery.routing_key,
            String::from_utf8_lossy(&delivery.data)
        );
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let conn = Connection::connect(&url(), ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    topology(&ch).await?;
    match args.first().map(String::as_str) {
        Some("produce") => {
            produce(
                &ch,
                args.get(1).and_then(|n| n.parse().ok()).unwrap_or(1000),
            )
            .await
        }
        Some("member") => member(&ch, args.get(1).map(String::as_str).unwrap_or("member")).await,
        _ => {
            eprintln!("usage: partitions produce N | partitions member NAME");
            Ok(())
        }
    }
}
