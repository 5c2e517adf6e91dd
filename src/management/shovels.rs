//! `/api/shovels` (RabbitMQ's shovel management plugin): the dynamic
//! shovels running, with their state, and Warren's progress fields
//! `messages_moved` and `messages_to_move` (what `src-delete-after` asks
//! for, once known). Shovels are declared and deleted as `shovel`
//! parameters (see `parameters.rs`), or deleted and restarted here:
//! - `GET /api/shovels/vhost/{vhost}/{name}`: as RabbitMQ 3.10, the
//!   vhost's shovels (an array), or 404 if `name` is not one of them;
//! - `DELETE /api/shovels/vhost/{vhost}/{name}`: delete its parameter;
//! - `DELETE /api/shovels/vhost/{vhost}/{name}/restart`: start it again.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::format::{sees_vhost, vhost};
use super::listing::{respond, Params};
use super::AppState;
use crate::shovel::definition::{Dest, Source};
use crate::shovel::status::{State as ShovelState, Status};
use crate::shovel::uri::redact;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/shovels", get(|s, c, p| list(s, c, None, p)))
        .route(
            "/shovels/{vhost}",
            get(|s, c, Path(v): Path<String>, p| list(s, c, Some(v), p)),
        )
        .route("/shovels/vhost/{vhost}/{name}", get(one).delete(remove))
        .route("/shovels/vhost/{vhost}/{name}/restart", delete(restart))
}

/// The vhost (visible to the caller) and name of an existing shovel.
fn existing(s: &AppState, c: &Caller, vh: &str, name: &str) -> ApiResult<()> {
    vhost(s, c, vh)?;
    match s.broker.shovels.exists(vh, name) {
        true => Ok(()),
        false => Err(ApiError::not_found()),
    }
}

async fn one(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, name)): Path<(String, String)>,
    p: Query<Params>,
) -> ApiResult<Json<Value>> {
    existing(&s, &c, &vh, &name)?;
    list(State(s), c, Some(vh), p).await
}

/// An existing shovel the caller may delete or restart (policymaker, as
/// for its parameter).
fn managed(s: &AppState, c: &Caller, vh: &str, name: &str) -> ApiResult<()> {
    c.require_policymaker()?;
    existing(s, c, vh, name)
}

async fn remove(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    managed(&s, &c, &vh, &name)?;
    super::parameters::delete_shovel(&s, vh, name).await
}

async fn restart(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    managed(&s, &c, &vh, &name)?;
    tracing::info!(vhost = %vh, shovel = %name, by = %c.name, "restarting a shovel through the management API");
    match s.broker.shovels.restart(&vh, &name) {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::not_found()),
    }
}

async fn list(
    State(s): State<AppState>,
    c: Caller,
    only: Option<String>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    if let Some(v) = &only {
        vhost(&s, &c, v)?;
    }
    let node = &s.broker.node_name;
    let items = s
        .broker
        .shovels
        .statuses()
        .iter()
        .filter(|st| only.as_ref().is_none_or(|v| *v == st.vhost))
        .filter(|st| sees_vhost(&s, &c, &st.vhost))
        .map(|st| status_json(st, node))
        .collect();
    Ok(Json(respond(items, &p)?))
}

/// A shovel as RabbitMQ's plugin shows a dynamic one, with its progress.
fn status_json(st: &Status, node: &str) -> Value {
    let snap = st.snapshot();
    let (state, reason) = match &snap.state {
        ShovelState::Starting(why) => ("starting", why.clone()),
        ShovelState::Running => ("running", None),
        ShovelState::Terminated(why) => ("terminated", Some(why.clone())),
    };
    let d = &st.def;
    let mut v = json!({
        "node": node,
        "timestamp": super::format::datetime(snap.at_ms),
        "name": st.name,
        "vhost": st.vhost,
        "type": "dynamic",
        "state": state,
        // Without user and password, as RabbitMQ shows them.
        "src_uri": redact(&d.src_uri),
        "src_protocol": "amqp091",
        "dest_uri": redact(&d.dest_uri),
        "dest_protocol": "amqp091",
        "messages_moved": snap.moved,
        "messages_to_move": snap.total,
    });
    match &d.src {
        Source::Queue(q) => v["src_queue"] = json!(q),
        Source::Exchange { name, key } => {
            v["src_exchange"] = json!(name);
            v["src_exchange_key"] = json!(key);
        }
    }
    match &d.dest {
        Dest::Queue(q) => v["dest_queue"] = json!(q),
        Dest::Exchange { name, key } => {
            v["dest_exchange"] = json!(name);
            if let Some(k) = key {
                v["dest_exchange_key"] = json!(k);
            }
        }
        Dest::AsPublished => {}
    }
    if let Some(r) = reason {
        v["reason"] = json!(r);
    }
    v
}
