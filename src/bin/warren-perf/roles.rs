//! The load tasks: producers (optionally rate-limited, optionally with a
//! window of unconfirmed publishes), consumers (auto-ack, or manual ack with
//! prefetch and multi-ack) and idle connections that only heartbeat.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::protocol::{basic, confirm, connection, AMQPClass};
use amq_protocol::types::{FieldTable, ShortString};
use bytes::Bytes;
use tokio::sync::Semaphore;
use warren::protocol::output::FrameWriter;
use warren::protocol::Frame;

use crate::client::{Client, Result, Target};
use crate::confirms::ConfirmTracker;
use crate::stats::{now_us, Counters, Latencies};

/// What a producer publishes.
#[derive(Clone, Debug)]
pub struct PublishSpec {
    pub exchange: String,
    pub routing_key: String,
    pub size: usize,
    /// Encoded content-header properties.
    pub properties: Bytes,
    /// Outstanding unconfirmed publishes allowed (None: no confirms).
    pub confirm_window: Option<u32>,
    /// Messages per second for this producer (None: as fast as possible).
    pub rate: Option<f64>,
    /// Stop after this many messages (backlog mode).
    pub limit: Option<u64>,
}

/// Most messages encoded into one socket write.
const PUBLISH_BATCH: u64 = 64;

pub async fn producer(
    target: Target,
    spec: PublishSpec,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let mut client = Client::connect(&target, 0).await?;
    let window = match spec.confirm_window {
        Some(w) => {
            client
                .call(AMQPClass::Confirm(confirm::AMQPMethod::Select(
                    confirm::Select { nowait: false },
                )))
                .await?;
            Some(Arc::new(Semaphore::new(w.max(1) as usize)))
        }
        None => None,
    };
    let Client {
        mut reader,
        mut writer,
    } = client;
    // Confirms, returns and errors arrive on the reading half.
    let reader_counters = counters.clone();
    let reader_window = window.clone();
    let reader_task = tokio::spawn(async move {
        let mut tracker = ConfirmTracker::default();
        loop {
            let frame = match reader.frame().await {
                Ok(f) => f,
                Err(e) => return e,
            };
            if let Frame::Method { method, .. } = frame {
                let (tag, multiple, nack) = match *method {
                    AMQPClass::Basic(basic::AMQPMethod::Ack(a)) => {
                        (a.delivery_tag, a.multiple, false)
                    }
                    AMQPClass::Basic(basic::AMQPMethod::Nack(n)) => {
                        (n.delivery_tag, n.multiple, true)
                    }
                    AMQPClass::Basic(basic::AMQPMethod::Return(_)) => {
                        reader_counters.returned.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => {
                        return String::new()
                    }
                    other => return format!("producer got {other:?}"),
                };
                let newly = tracker.settle(tag, multiple);
                let counter = if nack {
                    &reader_counters.nacked
                } else {
                    &reader_counters.confirmed
                };
                counter.fetch_add(newly, Ordering::Relaxed);
                if let Some(w) = &reader_window {
                    w.add_permits(newly as usize);
                }
            }
        }
    });

    // The publish method frame never changes: encode it once.
    let mut template = FrameWriter::new(131_072);
    template.method(
        1,
        &AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: ShortString::from(spec.exchange.as_str()),
            routing_key: ShortString::from(spec.routing_key.as_str()),
            mandatory: false,
            immediate: false,
        })),
    );
    let publish_frame = template.take();
    let mut body = vec![0u8; spec.size.max(8)];
    let started = Instant::now();
    let mut sent: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut n = PUBLISH_BATCH;
        if let Some(limit) = spec.limit {
            n = n.min(limit - sent);
            if n == 0 {
                break;
            }
        }
        if let Some(rate) = spec.rate {
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            if due <= sent {
                tokio::time::sleep(Duration::from_micros(200)).await;
                continue;
            }
            n = n.min(due - sent);
        }
        if let Some(w) = &window {
            let available = w.available_permits() as u64;
            if available == 0 {
                // Wait for at least one confirm.
                match tokio::time::timeout(Duration::from_millis(100), w.acquire()).await {
                    Ok(Ok(p)) => p.forget(),
                    _ => continue,
                }
                n = 1;
            } else {
                n = n.min(available);
                if let Ok(p) = w.try_acquire_many(n as u32) {
                    p.forget();
                }
            }
        }
        for _ in 0..n {
            body[..8].copy_from_slice(&now_us().to_be_bytes());
            writer.out.raw(&publish_frame);
            writer.out.content(1, &spec.properties, &body);
        }
        writer.flush().await?;
        sent += n;
        counters.published.fetch_add(n, Ordering::Relaxed);
    }
    // Let outstanding confirms arrive before closing.
    if let Some(w) = &window {
        let want = spec.confirm_window.unwrap_or(1).max(1) as usize;
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while w.available_permits() < want {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }
    // Close politely so the broker has handled every publish before the
    // run deletes its topology.
    writer.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: ShortString::from("done"),
            class_id: 0,
            method_id: 0,
        })),
    );
    writer.flush().await?;
    match tokio::time::timeout(Duration::from_secs(5), reader_task).await {
        Ok(Ok(e)) if !e.is_empty() => Err(e),
        _ => Ok(()),
    }
}

/// How a consumer acknowledges.
#[derive(Clone, Copy, Debug)]
pub struct AckSpec {
    pub auto_ack: bool,
    pub prefetch: u16,
    pub multi_ack: u32,
}

pub async fn consumer(
    target: Target,
    queue: String,
    ack: AckSpec,
    arguments: FieldTable,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) -> Result<Latencies> {
    let mut client = Client::connect(&target, 0).await?;
    if !ack.auto_ack {
        client.qos(ack.prefetch).await?;
    }
    client
        .call(AMQPClass::Basic(basic::AMQPMethod::Consume(
            basic::Consume {
                queue: ShortString::from(queue.as_str()),
                consumer_tag: ShortString::from(""),
                no_local: false,
                no_ack: ack.auto_ack,
                exclusive: false,
                nowait: false,
                arguments,
            },
        )))
        .await?;
    let Client {
        mut reader,
        mut writer,
    } = client;
    let mut lat = Latencies::default();
    let mut tag = 0u64;
    let mut remaining = 0u64;
    let mut first_chunk = true;
    let mut unacked_run = 0u32;
    // One reusable timer to notice `stop` (a timeout per frame would cost a
    // timer registration per message).
    let mut check = tokio::time::interval(Duration::from_millis(100));
    loop {
        let frame = tokio::select! {
            f = reader.frame() => f?,
            _ = check.tick() => {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                continue;
            }
        };
        let complete = match frame {
            Frame::Method { method, .. } => {
                if let AMQPClass::Basic(basic::AMQPMethod::Deliver(d)) = *method {
                    tag = d.delivery_tag;
                    first_chunk = true;
                }
                false
            }
            Frame::Header { body_size, .. } => {
                remaining = body_size;
                body_size == 0
            }
            Frame::Body { payload, .. } => {
                if first_chunk && payload.len() >= 8 {
                    let mut ts = [0u8; 8];
                    ts.copy_from_slice(&payload[..8]);
                    lat.record(now_us().saturating_sub(u64::from_be_bytes(ts)));
                    first_chunk = false;
                }
                remaining = remaining.saturating_sub(payload.len() as u64);
                remaining == 0
            }
            Frame::Heartbeat { .. } => false,
        };
        if !complete {
            continue;
        }
        counters.consumed.fetch_add(1, Ordering::Relaxed);
        if !ack.auto_ack {
            unacked_run += 1;
            if unacked_run >= ack.multi_ack.max(1) {
                writer.method(
                    1,
                    AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                        delivery_tag: tag,
                        multiple: true,
                    })),
                );
                writer.flush().await?;
                unacked_run = 0;
            }
        }
    }
    Ok(lat)
}

/// Hold a connection open doing nothing but heartbeats until `stop`.
/// Returns whether it was still connected at the end.
pub async fn idle(target: Target, heartbeat_s: u16, stop: Arc<AtomicBool>) -> Result<bool> {
    // A broker out of file descriptors may leave connects hanging.
    let client = tokio::time::timeout(
        Duration::from_secs(10),
        Client::connect(&target, heartbeat_s),
    )
    .await
    .map_err(|_| "connect timed out".to_string())??;
    let Client {
        mut reader,
        mut writer,
    } = client;
    let every = Duration::from_millis(u64::from(heartbeat_s.max(1)) * 500);
    let mut tick = tokio::time::interval(every);
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(true);
        }
        tokio::select! {
            _ = tick.tick() => {
                writer.out.heartbeat();
                writer.flush().await?;
            }
            f = reader.frame() => {
                f?;
            }
        }
    }
}
