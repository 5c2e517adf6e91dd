//! Request/reply: the server answers fib(n) requests arriving on
//! `rpc_queue`, replying to each request's `reply_to` queue with its
//! `correlation_id`; the client waits (with a timeout) for the matching reply.
//!
//! ```text
//! cargo run --example rpc -- server
//! cargo run --example rpc -- client 30
//! ```
//! The broker is `AMQP_URL` (default: a local RabbitMQ/Warren).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

const QUEUE: &str = "rpc_queue";
const TIMEOUT: Duration = Duration::from_secs(10);

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn usage() -> ! {
    eprintln!("usage: rpc server | rpc client N");
    std::process::exit(2)
}

/// fib(n), or None when it does not fit in a u128 (n > 186).
fn fib(n: u32) -> Option<u128> {
    let (mut a, mut b) = (0u128, 1u128);
    for _ in 0..n {
        let next = a.checked_add(b)?;
        a = b;
        b = next;
    }
    Some(a)
}

async fn server(ch: &Channel) -> Result<()> {
    ch.queue_declare(
        QUEUE.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.basic_qos(1, BasicQosOptions::default()).await?;
    let mut requests = ch
        .basic_consume(
            QUEUE.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    println!(" [*] awaiting RPC requests on {QUEUE:?}; press Ctrl+C to exit");
    while let Some(request) = requests.next().await {
        let request = request?;
        let text = String::from_utf8_lossy(&request.data).trim().to_string();
        let answer = match text.parse::<u32>().ok().map(|n| (n, fib(n))) {
            Some((n, Some(f))) => {
                println!(" [.] fib({n}) = {f}");
                f.to_string()
            }
            Some((n, None)) => format!("error: fib({n}) is too large"),
            None => format!("error: {text:?} is not a number"),
        };
        match request.properties.reply_to() {
            Some(reply_to) => {
                let mut props = BasicProperties::default();
                if let Some(id) = request.properties.correlation_id() {
                    props = props.with_correlation_id(id.clone());
                }
                ch.basic_publish(
                    "".into(),
                    reply_to.clone(),
                    BasicPublishOptions::default(),
                    answer.as_bytes(),
                    props,
                )
                .await?;
            }
            None => eprintln!(" [!] request without reply_to dropped"),
        }
        request.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}

async fn client(ch: &Channel, n: &str) -> Result<()> {
    let reply_queue = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions::exclusive(),
            FieldTable::default(),
        )
        .await?;
    let mut replies = ch
        .basic_consume(
            reply_queue.name().clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let correlation_id = format!("{:x}-{:x}", std::process::id(), nanos);
    println!(" [x] requesting fib({n})");
    // Confirms plus mandatory: an absent server queue is reported at once.
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let confirmation = ch
        .basic_publish(
            "".into(),
            QUEUE.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            n.as_bytes(),
            BasicProperties::default()
                .with_reply_to(reply_queue.name().clone())
                .with_correlation_id(correlation_id.as_str().into()),
        )
        .await?
        .await?;
    if confirmation.take_message().is_some() {
        return Err(
            format!("no {QUEUE:?} queue to take the request; start `rpc server` first").into(),
        );
    }
    let wait = async {
        while let Some(reply) = replies.next().await {
            let reply = reply?;
            if reply
                .properties
                .correlation_id()
                .as_ref()
                .map(|c| c.as_str())
                == Some(correlation_id.as_str())
            {
                return Ok::<_, lapin::Error>(Some(
                    String::from_utf8_lossy(&reply.data).into_owned(),
                ));
            }
        }
        Ok(None)
    };
    match tokio::time::timeout(TIMEOUT, wait).await {
        Ok(Ok(Some(answer))) => {
            println!(" [.] got {answer}");
            Ok(())
        }
        Ok(Ok(None)) => Err("the reply consumer was cancelled".into()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(format!("no reply within {TIMEOUT:?}; is `rpc server` running?").into()),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let conn = Connection::connect(&url(), ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["server"] => {
            tokio::select! {
                r = server(&ch) => r,
                _ = tokio::signal::ctrl_c() => {
                    println!(" [*] interrupted");
                    Ok(())
                }
            }
        }
        ["client", n] => client(&ch, n).await,
        _ => usage(),
    };
    conn.close(200, "bye".into()).await?;
    result
}
