//! Warren's own routes for unacked deliveries: which consumer holds which
//! messages, and for how long (RabbitMQ shows only counts):
//! - `GET /api/queues/{vhost}/{name}/unacked[?limit=N]`: every connection
//!   of the vhost the caller may see is asked for its deliveries from
//!   that queue (read permission on it needed; not another connection's
//!   exclusive queue);
//! - `GET /api/connections/{name}/unacked[?limit=N]`: one connection's,
//!   from the queues the caller may read.
//!
//! Both answer `{"total", "consumers": [...], "messages": [...],
//! "connections_unanswered", "unanswered": [...]}`: per consumer (a
//! `null` tag holds basic.get deliveries) its count, bytes and the age of
//! its oldest; then the oldest deliveries, at most `limit` (default 100,
//! at most 1,000). A connection that does not answer within 2 s (its
//! client stopped reading, so its task is stuck writing) is listed under
//! `unanswered` with the unacked counts of its last one-second snapshot:
//! the stuck consumer is the one an operator looks for.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::auth::Caller;
use super::connections::find_connection;
use super::error::ApiResult;
use super::format::vhost;
use super::listing::{limit_param, Params};
use super::queues::API_CONNECTION;
use super::{authz, AppState};
use crate::auth::access::{Perm, Resource};
use crate::broker::connections::ConnectionEntry;
use crate::broker::message::now_ms;
use crate::broker::queue::Queue;
use crate::broker::unacked_view::{HeldDelivery, Holder, UnackedReport, MAX_LISTED};

/// Deliveries listed when no limit is given.
const DEFAULT_LIMIT: usize = 100;

/// Requests to these routes answered at once; more wait their turn (each
/// asks every connection of a vhost).
static ASKING: Semaphore = Semaphore::const_new(4);

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
    // As for /get: another connection's exclusive queue is refused.
    let queue = v.queue(&name, API_CONNECTION)?;
    authz::allow(&s, &c, &vh, Perm::Read, Resource::Queue, &name)?;
    let conns: Vec<_> = s
        .broker
        .connections
        .list()
        .into_iter()
        .filter(|e| *e.vhost == *v.name && c.may_see_user(&e.user))
        .collect();
    let _turn = ASKING.acquire().await;
    let answers = ask_all(conns, Some(queue.clone()), limit).await;
    Ok(Json(merge(answers, Some(&queue), limit, |_| true)))
}

async fn of_connection(
    State(s): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    let limit = limit_param(&p, DEFAULT_LIMIT, MAX_LISTED)?;
    let e = find_connection(&s, &c, &name)?;
    let vh = e.vhost.to_string();
    let _turn = ASKING.acquire().await;
    let answers = ask_all(vec![e], None, limit).await;
    // Only what comes from queues the caller may read.
    let may_read = |q: &str| authz::allow(&s, &c, &vh, Perm::Read, Resource::Queue, q).is_ok();
    Ok(Json(merge(answers, None, limit, may_read)))
}

/// Each connection with its report (None: it did not answer).
type Answers = Vec<(Arc<ConnectionEntry>, Option<UnackedReport>)>;

/// Ask each connection at once.
async fn ask_all(
    conns: Vec<Arc<ConnectionEntry>>,
    queue: Option<Arc<Queue>>,
    limit: usize,
) -> Answers {
    let mut asks = JoinSet::new();
    for e in conns {
        let queue = queue.clone();
        asks.spawn(async move {
            let report = e.unacked(queue, limit).await;
            (e, report)
        });
    }
    let mut answers = Vec::new();
    while let Some(joined) = asks.join_next().await {
        if let Ok(answer) = joined {
            answers.push(answer);
        }
    }
    answers
}

/// The reports as one answer: ages from one clock reading, the oldest
/// `limit` deliveries over all connections, rendered only once chosen.
fn merge(
    answers: Answers,
    queue: Option<&Arc<Queue>>,
    limit: usize,
    may_read: impl Fn(&str) -> bool,
) -> Value {
    let now = now_ms();
    let mut consumers = Vec::new();
    let mut oldest: Vec<(&ConnectionEntry, &HeldDelivery)> = Vec::new();
    let mut unanswered = Vec::new();
    let mut total = 0;
    for (e, report) in &answers {
        let Some(r) = report else {
            unanswered.push(snapshot_json(e, queue));
            continue;
        };
        for h in r.holders.iter().filter(|h| may_read(&h.queue)) {
            total += h.count;
            consumers.push(holder_json(e, h, now));
        }
        oldest.extend(
            r.deliveries
                .iter()
                .filter(|d| may_read(&d.queue))
                .map(|d| (&**e, d)),
        );
    }
    oldest.sort_by_key(|(e, d)| (d.delivered_at_ms, e.id, d.channel, d.delivery_tag));
    oldest.truncate(limit);
    json!({
        "total": total,
        "consumers": consumers,
        "messages": oldest.iter().map(|(e, d)| delivery_json(e, d, now)).collect::<Vec<_>>(),
        "connections_unanswered": unanswered.len(),
        "unanswered": unanswered,
    })
}

/// RabbitMQ's channel name: the connection's, then the number.
fn channel_name(e: &ConnectionEntry, channel: u16) -> String {
    format!("{} ({channel})", e.name)
}

/// A connection that did not answer, as its last snapshot shows it: its
/// channels with consumers (on `queue`, if asked about one) or unacked
/// deliveries, with the snapshot's counts.
fn snapshot_json(e: &ConnectionEntry, queue: Option<&Arc<Queue>>) -> Value {
    let snap = e.snapshot();
    let channels: Vec<Value> = snap
        .channels
        .iter()
        // Its consumers on the queue asked about, else whatever held
        // something a second ago (the snapshot may predate the stall).
        .filter(|ch| match queue {
            Some(q) => ch.consumers.iter().any(|c| c.queue == q.name),
            None => ch.unacked > 0 || !ch.consumers.is_empty(),
        })
        .map(|ch| {
            json!({
                "channel": channel_name(e, ch.number),
                "channel_number": ch.number,
                "unacked": ch.unacked,
                "consumer_tags": ch.consumers.iter().map(|c| &*c.tag).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"connection": e.name, "user": e.user, "channels": channels})
}

fn holder_json(e: &ConnectionEntry, h: &Holder, now: u64) -> Value {
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
        "oldest_held_ms": now.saturating_sub(h.oldest_at_ms),
    })
}

fn delivery_json(e: &ConnectionEntry, d: &HeldDelivery, now: u64) -> Value {
    json!({
        "connection": e.name,
        "channel": channel_name(e, d.channel),
        "channel_number": d.channel,
        "consumer_tag": d.consumer_tag.as_deref(),
        "delivery_tag": d.delivery_tag,
        "queue": &*d.queue,
        "delivered_at": d.delivered_at_ms,
        "held_ms": now.saturating_sub(d.delivered_at_ms),
        "redelivered": d.redelivered,
        "exchange": d.exchange,
        "routing_key": d.routing_key,
        "payload_bytes": d.payload_bytes,
        "message_id": d.message_id,
    })
}
