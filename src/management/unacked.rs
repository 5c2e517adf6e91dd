//! Warren's own routes for unacked deliveries: which consumer holds which
//! messages, and for how long (RabbitMQ shows only counts):
//! - `GET /api/queues/{vhost}/{name}/unacked[?limit=N]`: every connection
//!   of the vhost is asked for its deliveries from that queue;
//! - `GET /api/connections/{name}/unacked[?limit=N]`: one connection's.
//!
//! Both answer `{"total", "consumers": [...], "messages": [...],
//! "connections_unanswered"}`: per consumer (a `null` tag holds
//! basic.get deliveries) its count, bytes and the age of its oldest; then
//! the oldest deliveries, at most `limit` (default 100, at most 1,000).
//! A connection that does not answer within 2 s is counted in
//! `connections_unanswered`, not waited for.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::auth::Caller;
use super::connections::find_connection;
use super::error::ApiResult;
use super::format::vhost;
use super::listing::{limit_param, Params};
use super::{authz, AppState};
use crate::auth::access::{Perm, Resource};
use crate::broker::connections::ConnectionEntry;
use crate::broker::unacked_view::{HeldDelivery, Holder, UnackedReport, MAX_LISTED};

/// Deliveries listed when no limit is given.
const DEFAULT_LIMIT: usize = 100;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/queues/{vhost}/{name}/unacked", get(of_queue))
        .route("/connections/{name}/unacked", get(of_connection))
}

async fn of_queue(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, name)): Path<(String, String)>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    let limit = limit_param(&p, DEFAULT_LIMIT, MAX_LISTED)?;
    let v = vhost(&s, &c, &vh)?;
    v.find_queue(&name)
        .ok_or_else(super::error::ApiError::not_found)?;
    authz::allow(&s, &c, &vh, Perm::Read, Resource::Queue, &name)?;
    let conns: Vec<_> = s
        .broker
        .connections
        .list()
        .into_iter()
        .filter(|e| *e.vhost == *v.name)
        .collect();
    Ok(Json(gather(conns, Some(Arc::from(name)), limit).await))
}

async fn of_connection(
    State(s): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    let limit = limit_param(&p, DEFAULT_LIMIT, MAX_LISTED)?;
    let e = find_connection(&s, &c, &name)?;
    Ok(Json(gather(vec![e], None, limit).await))
}

/// Ask each connection at once and merge their reports.
async fn gather(conns: Vec<Arc<ConnectionEntry>>, queue: Option<Arc<str>>, limit: usize) -> Value {
    let mut asks = JoinSet::new();
    for e in conns {
        let queue = queue.clone();
        asks.spawn(async move {
            let report = e.unacked(queue, limit).await;
            (e, report)
        });
    }
    let mut consumers = Vec::new();
    let mut messages: Vec<(u64, Value)> = Vec::new();
    let (mut total, mut unanswered) = (0, 0);
    while let Some(joined) = asks.join_next().await {
        let Ok((e, report)) = joined else {
            unanswered += 1;
            continue;
        };
        let Some(UnackedReport {
            holders,
            deliveries,
        }) = report
        else {
            unanswered += 1;
            continue;
        };
        total += holders.iter().map(|h| h.count).sum::<u64>();
        consumers.extend(holders.iter().map(|h| holder_json(&e, h)));
        messages.extend(deliveries.iter().map(|d| (d.held_ms, delivery_json(&e, d))));
    }
    messages.sort_by_key(|m| std::cmp::Reverse(m.0));
    messages.truncate(limit);
    json!({
        "total": total,
        "consumers": consumers,
        "messages": messages.into_iter().map(|(_, m)| m).collect::<Vec<_>>(),
        "connections_unanswered": unanswered,
    })
}

/// RabbitMQ's channel name: the connection's, then the number.
fn channel_name(e: &ConnectionEntry, channel: u16) -> String {
    format!("{} ({channel})", e.name)
}

fn holder_json(e: &ConnectionEntry, h: &Holder) -> Value {
    json!({
        "connection": e.name,
        "user": e.user,
        "vhost": &*e.vhost,
        "channel": channel_name(e, h.channel),
        "channel_number": h.channel,
        "consumer_tag": h.consumer_tag.as_deref(),
        "queue": &*h.queue,
        "unacked": h.count,
        "bytes_in_memory": h.bytes,
        "oldest_held_ms": h.oldest_ms,
    })
}

fn delivery_json(e: &ConnectionEntry, d: &HeldDelivery) -> Value {
    json!({
        "connection": e.name,
        "channel": channel_name(e, d.channel),
        "channel_number": d.channel,
        "consumer_tag": d.consumer_tag.as_deref(),
        "delivery_tag": d.delivery_tag,
        "queue": &*d.queue,
        "held_ms": d.held_ms,
        "redelivered": d.redelivered,
        "exchange": d.exchange,
        "routing_key": d.routing_key,
        "payload_bytes": d.payload_bytes,
        "message_id": d.message_id,
    })
}
