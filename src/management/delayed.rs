//! Warren's own routes for the messages an `x-delayed-message` exchange
//! holds (RabbitMQ's plugin cannot show them):
//! - `GET /api/exchanges/{vhost}/{name}/delayed[?limit=N]`: the earliest
//!   due first (default 100, at most 1,000), each with its `id`, due time
//!   and the message as `/get` shows one;
//! - `DELETE /api/exchanges/{vhost}/{name}/delayed/{id}`: cancel one (it
//!   is dropped, never routed): 204, or 404 if it is not held (any more).
//!
//! Listing needs `read` permission on the exchange, cancelling
//! `configure`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::exchanges::path_name;
use super::format::vhost;
use super::listing::{limit_param, Params};
use super::messages::{payload_json, properties_json};
use super::{authz, blocking, AppState};
use crate::auth::access::{Perm, Resource};
use crate::broker::delayed::HeldInfo;
use crate::broker::message::now_ms;
use crate::broker::VHost;

/// Messages a listing shows by default, and at most.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1_000;
/// Payload bytes a listing shows of each message.
const PAYLOAD_SHOWN_BYTES: usize = 1_024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/exchanges/{vhost}/{name}/delayed", get(list))
        .route("/exchanges/{vhost}/{name}/delayed/{id}", delete(cancel))
}

/// The vhost and exchange name, checked to be a delayed-message exchange
/// the caller may act on as `perm` says.
fn delayed_exchange(
    s: &AppState,
    c: &Caller,
    vh: &str,
    name: &str,
    perm: Perm,
) -> ApiResult<(std::sync::Arc<VHost>, String)> {
    let v = vhost(s, c, vh)?;
    let name = path_name(name).to_string();
    let x = v.find_exchange(&name).ok_or_else(ApiError::not_found)?;
    authz::allow(s, c, vh, perm, Resource::Exchange, &name)?;
    if !x.delayed {
        return Err(ApiError::bad_request(format!(
            "exchange '{name}' in vhost '{vh}' is not an x-delayed-message exchange"
        )));
    }
    Ok((v, name))
}

async fn list(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, name)): Path<(String, String)>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    let limit = limit_param(&p, DEFAULT_LIMIT, MAX_LIMIT)?;
    let (v, name) = delayed_exchange(&s, &c, &vh, &name, Perm::Read)?;
    // The listing may read bodies back from disk.
    let held = blocking(move || Ok(v.delayed.list(&name, limit))).await?;
    let now = now_ms();
    Ok(Json(Value::Array(
        held.iter().map(|h| held_json(h, now)).collect(),
    )))
}

async fn cancel(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, name, id)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let id: u64 = id.parse().map_err(|_| ApiError::not_found())?;
    let (v, name) = delayed_exchange(&s, &c, &vh, &name, Perm::Configure)?;
    match blocking(move || Ok(v.delayed.cancel(&name, id))).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::not_found()),
    }
}

fn held_json(h: &HeldInfo, now: u64) -> Value {
    let m = &h.message;
    let properties = properties_json(&m.properties);
    let shown = &m.body[..m.body.len().min(PAYLOAD_SHOWN_BYTES)];
    let (payload, encoding) = payload_json(shown, false);
    json!({
        "id": h.id,
        "exchange": &*m.exchange,
        "routing_key": &*m.routing_key,
        "due_at": h.due_ms,
        "delay_remaining_ms": h.due_ms.saturating_sub(now),
        "persistent": m.persistent,
        "payload_bytes": m.body.len(),
        "properties": properties,
        "payload": payload,
        "payload_encoding": encoding,
    })
}
