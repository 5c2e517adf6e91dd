//! `/api/queues`: list (all vhosts or one), show, declare (PUT), delete,
//! purge (`DELETE .../contents`), the queue's bindings, and get
//! (`POST .../get`, in [`super::messages`]).

use std::sync::Arc;

use amq_protocol::protocol::queue;
use amq_protocol::types::ShortString;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::format::{self, vhost, visible_vhosts};
use super::json::{json_to_table, loose_bool};
use super::listing::{respond, respond_one, respond_typed, unsorted, Params};
use super::{authz, messages, wait_synced, AppState, Body};
use crate::auth::access::{Perm, Resource};
use crate::broker::queue::Queue;

/// Connection id of requests made through the API (no AMQP connection
/// has it, so exclusive queues stay their owner's).
pub const API_CONNECTION: u64 = 0;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/queues", get(list_all))
        .route("/queues/detailed", get(list_all))
        // One node: every queue is already where it would be moved.
        .route("/rebalance/queues", post(rebalance))
        .route("/queues/{vhost}", get(list_vhost))
        .route(
            "/queues/{vhost}/{name}",
            get(show).put(declare).delete(delete),
        )
        .route("/queues/{vhost}/{name}/bindings", get(bindings))
        .route(
            "/queues/{vhost}/{name}/contents",
            axum::routing::delete(purge),
        )
        .route("/queues/{vhost}/{name}/get", post(messages::get))
}

async fn list_all(
    State(s): State<AppState>,
    c: Caller,
    Query(p): Query<Params>,
) -> ApiResult<Response> {
    let visible = visible_vhosts(&s, &c);
    let queues: Vec<Arc<Queue>> = visible.iter().flat_map(|v| v.queues()).collect();
    list(&s, queues, &p)
}

async fn rebalance(c: Caller) -> ApiResult<StatusCode> {
    c.require_admin()?;
    Ok(StatusCode::NO_CONTENT)
}

/// Queues (in vhost, name order) as the list parameters ask.
fn list(s: &AppState, mut queues: Vec<Arc<Queue>>, p: &Params) -> ApiResult<Response> {
    let node = &s.broker.node_name;
    let p = sort_by_count(&mut queues, p);
    respond_typed(queues, &p, |q| &q.name, |q| format::queue(q, node))
}

/// Sort by a count the UI sorts by (`messages`, `messages_ready`,
/// `messages_unacknowledged`, `consumers`) without formatting every queue
/// to JSON first, as the generic sort would: the parameters then no
/// longer ask for a sort. Stable, then reversed, as the generic sort.
fn sort_by_count(queues: &mut [Arc<Queue>], p: &Params) -> Params {
    let count: fn(&Queue) -> u64 = match p.get("sort").map(String::as_str) {
        Some("messages") => |q| q.gauges().ready + format::queue_unacked(q),
        Some("messages_ready") => |q| q.gauges().ready,
        Some("messages_unacknowledged") => format::queue_unacked,
        Some("consumers") => |q| q.gauges().consumers,
        _ => return p.clone(),
    };
    queues.sort_by_cached_key(|q| count(q));
    if p.get("sort_reverse").is_some_and(|r| r == "true") {
        queues.reverse();
    }
    let mut rest = p.clone();
    rest.remove("sort");
    rest.remove("sort_reverse");
    rest
}

async fn list_vhost(
    State(s): State<AppState>,
    c: Caller,
    Path(vh): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult<Response> {
    list(&s, vhost(&s, &c, &vh)?.queues(), &p)
}

async fn show(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, name)): Path<(String, String)>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    let q = vhost(&s, &c, &vh)?
        .find_queue(&name)
        .ok_or_else(ApiError::not_found)?;
    let mut v = serde_json::to_value(format::queue(&q, &s.broker.node_name))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let consumers = super::connections::queue_consumers(&s, &c, &vh, &name);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("consumer_details".into(), Value::Array(consumers));
    }
    Ok(Json(respond_one(v, &p)))
}

/// The body of a queue declare.
#[derive(Debug, Deserialize)]
struct DeclareBody {
    #[serde(default, deserialize_with = "loose_bool")]
    durable: bool,
    #[serde(default, deserialize_with = "loose_bool")]
    auto_delete: bool,
    #[serde(default)]
    arguments: Value,
}

async fn declare(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, name)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    let v = vhost(&s, &c, &vh)?;
    let body: DeclareBody = parse_body(body)?;
    if name.is_empty() || name.len() > 255 {
        return Err(ApiError::bad_request("queue names are 1 to 255 bytes"));
    }
    let arguments = json_to_table(&body.arguments).map_err(ApiError::bad_request)?;
    s.broker
        .access
        .check_queue_declare(&c.name, &vh, &name, &arguments)
        .map_err(authz::refused)?;
    let existed = v.find_queue(&name).is_some();
    let d = queue::Declare {
        queue: ShortString::from(name.as_str()),
        passive: false,
        durable: body.durable,
        exclusive: false,
        auto_delete: body.auto_delete,
        nowait: false,
        arguments,
    };
    let info = v.declare_queue(&d, API_CONNECTION)?;
    wait_synced(&s, info.ticket).await?;
    Ok(super::declared(existed))
}

async fn delete(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, name)): Path<(String, String)>,
    Query(p): Query<Params>,
) -> ApiResult<StatusCode> {
    let v = vhost(&s, &c, &vh)?;
    if v.find_queue(&name).is_none() {
        return Err(ApiError::not_found());
    }
    authz::allow(&s, &c, &vh, Perm::Configure, Resource::Queue, &name)?;
    let flag = |k: &str| p.get(k).is_some_and(|x| x == "true");
    let (_, ticket) = v.delete_queue(&name, flag("if-unused"), flag("if-empty"), API_CONNECTION)?;
    wait_synced(&s, ticket).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn purge(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let q = vhost(&s, &c, &vh)?.queue(&name, API_CONNECTION)?;
    authz::allow(&s, &c, &vh, Perm::Read, Resource::Queue, &name)?;
    q.purge();
    Ok(StatusCode::NO_CONTENT)
}

async fn bindings(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, name)): Path<(String, String)>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    let v = vhost(&s, &c, &vh)?;
    if v.find_queue(&name).is_none() {
        return Err(ApiError::not_found());
    }
    let mut items = vec![format::default_binding(&vh, &name)];
    for (source, b) in v.bindings() {
        if matches!(&b.dest, crate::broker::exchange::Destination::Queue(q) if **q == *name) {
            items.push(format::binding(&vh, &source, &b));
        }
    }
    Ok(Json(respond(items, &unsorted(&p))?))
}

/// A JSON body as `T`, or 400 naming what is wrong.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: Value) -> ApiResult<T> {
    serde_json::from_value(body).map_err(|e| ApiError::bad_request(e.to_string()))
}
