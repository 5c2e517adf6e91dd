//! Per-node detail routes: `/api/nodes/{node}/memory` (RabbitMQ's memory
//! breakdown, from what Warren can tell apart: its resident set and its
//! queues' messages in memory) and `/api/auth/attempts/{node}` (logins
//! per protocol, and per source). Monitoring users and administrators only, as in
//! RabbitMQ.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::{blocking, AppState};
use crate::auth::attempts::AuthProtocol;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/nodes/{node}/memory", get(memory))
        .route("/auth/attempts/{node}", get(attempts))
        .route("/auth/attempts/{node}/source", get(attempts_by_source))
}

/// 401 unless the caller monitors, 404 unless `node` is this one.
fn check(s: &AppState, c: &Caller, node: &str) -> ApiResult<()> {
    if !c.is_monitor() {
        return Err(ApiError::not_authorised(
            "User not authorised to access object",
        ));
    }
    match node == s.broker.node_name {
        true => Ok(()),
        false => Err(ApiError::not_found()),
    }
}

async fn memory(
    State(s): State<AppState>,
    c: Caller,
    Path(node): Path<String>,
) -> ApiResult<Json<Value>> {
    check(&s, &c, &node)?;
    let broker = s.broker.clone();
    // Every queue's lock, briefly: off the async workers.
    let queues: u64 = blocking(move || {
        Ok(broker
            .vhosts()
            .iter()
            .flat_map(|v| v.queues())
            .map(|q| q.gauges().memory_bytes)
            .sum())
    })
    .await?;
    let rss = s.broker.alarms.readings().memory_used;
    Ok(Json(json!({"memory": {
        "queue_procs": queues,
        "other_proc": rss.saturating_sub(queues),
        "strategy": "rss",
        "total": {"rss": rss, "allocated": rss, "erlang": rss},
    }})))
}

async fn attempts(
    State(s): State<AppState>,
    c: Caller,
    Path(node): Path<String>,
) -> ApiResult<Json<Value>> {
    check(&s, &c, &node)?;
    let rows = s
        .broker
        .access
        .attempts
        .counts()
        .iter()
        .map(|a| attempt_counts(a.protocol, a.succeeded, a.failed))
        .collect();
    Ok(Json(Value::Array(rows)))
}

/// Per client address, user and protocol.
async fn attempts_by_source(
    State(s): State<AppState>,
    c: Caller,
    Path(node): Path<String>,
) -> ApiResult<Json<Value>> {
    check(&s, &c, &node)?;
    let rows = s
        .broker
        .access
        .attempts
        .by_source()
        .iter()
        .map(|a| {
            let mut row = attempt_counts(a.protocol, a.succeeded, a.failed);
            row["remote_address"] = json!(a.address.to_string());
            row["username"] = json!(a.user);
            row
        })
        .collect();
    Ok(Json(Value::Array(rows)))
}

/// One row of login counts, as RabbitMQ shows it.
fn attempt_counts(protocol: AuthProtocol, succeeded: u64, failed: u64) -> Value {
    json!({"protocol": protocol.name(), "auth_attempts": succeeded + failed,
           "auth_attempts_failed": failed, "auth_attempts_succeeded": succeeded})
}
