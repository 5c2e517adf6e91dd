//! `/api/shovels` (RabbitMQ's shovel management plugin): the dynamic
//! shovels running, with their state, and Warren's progress fields
//! `messages_moved` and `messages_to_move` (what `src-delete-after` asks
//! for, once known). Shovels are declared and deleted as `shovel`
//! parameters (see `parameters.rs`).

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::Caller;
use super::error::ApiResult;
use super::format::{sees_vhost, vhost};
use super::listing::{respond, Params};
use super::AppState;
use crate::shovel::definition::Dest;
use crate::shovel::status::{State as ShovelState, Status};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/shovels", get(|s, c, p| list(s, c, None, p)))
        .route(
            "/shovels/{vhost}",
            get(|s, c, Path(v): Path<String>, p| list(s, c, Some(v), p)),
        )
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
        "src_uri": d.src_uri,
        "src_protocol": "amqp091",
        "src_queue": d.src_queue,
        "dest_uri": d.dest_uri,
        "dest_protocol": "amqp091",
        "messages_moved": snap.moved,
        "messages_to_move": snap.total,
    });
    match &d.dest {
        Dest::Queue(q) => v["dest_queue"] = json!(q),
        Dest::Exchange { name, key } => {
            v["dest_exchange"] = json!(name);
            if let Some(k) = key {
                v["dest_exchange_key"] = json!(k);
            }
        }
    }
    if let Some(r) = reason {
        v["reason"] = json!(r);
    }
    v
}
