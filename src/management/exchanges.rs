//! `/api/exchanges`: list, show, declare (PUT), delete, publish (in
//! [`super::messages`]) and the bindings an exchange is source or
//! destination of. The path name `amq.default` means the default exchange.

use amq_protocol::protocol::exchange;
use amq_protocol::types::ShortString;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::format::{self, vhost, visible_vhosts};
use super::json::{json_to_table, loose_bool};
use super::listing::{respond, respond_one, Params};
use super::queues::parse_body;
use super::{authz, messages, wait_synced, AppState, Body};
use crate::auth::access::{Perm, Resource};
use crate::broker::exchange::Destination;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/exchanges", get(list_all))
        .route("/exchanges/{vhost}", get(list_vhost))
        .route(
            "/exchanges/{vhost}/{name}",
            get(show).put(declare).delete(delete),
        )
        .route("/exchanges/{vhost}/{name}/publish", post(messages::publish))
        .route("/exchanges/{vhost}/{name}/bindings/source", get(as_source))
        .route(
            "/exchanges/{vhost}/{name}/bindings/destination",
            get(as_destination),
        )
}

/// The exchange a path names (`amq.default` is the default exchange).
pub fn path_name(name: &str) -> &str {
    match name {
        "amq.default" => "",
        other => other,
    }
}

async fn list_all(
    State(s): State<AppState>,
    c: Caller,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    let mut items = Vec::new();
    for v in visible_vhosts(&s, &c) {
        items.extend(v.exchanges().iter().map(|x| format::exchange(x, &v.name)));
    }
    Ok(Json(respond(items, &p)?))
}

async fn list_vhost(
    State(s): State<AppState>,
    c: Caller,
    Path(vh): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    let v = vhost(&s, &c, &vh)?;
    let items = v
        .exchanges()
        .iter()
        .map(|x| format::exchange(x, &vh))
        .collect();
    Ok(Json(respond(items, &p)?))
}

async fn show(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, name)): Path<(String, String)>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    let x = vhost(&s, &c, &vh)?
        .find_exchange(path_name(&name))
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(respond_one(format::exchange(&x, &vh), &p)))
}

#[derive(Debug, Deserialize)]
struct DeclareBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "loose_bool")]
    durable: bool,
    #[serde(default, deserialize_with = "loose_bool")]
    auto_delete: bool,
    #[serde(default, deserialize_with = "loose_bool")]
    internal: bool,
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
    let name = path_name(&name);
    if name.len() > 255 {
        return Err(ApiError::bad_request(
            "exchange names are at most 255 bytes",
        ));
    }
    let kind = body
        .kind
        .ok_or_else(|| ApiError::bad_request("type is required"))?;
    if kind.len() > 255 {
        return Err(ApiError::bad_request("type is longer than 255 bytes"));
    }
    let arguments = json_to_table(&body.arguments).map_err(ApiError::bad_request)?;
    s.broker
        .access
        .check_exchange_declare(&c.name, &vh, name, &arguments)
        .map_err(authz::refused)?;
    let existed = v.find_exchange(name).is_some();
    let d = exchange::Declare {
        exchange: ShortString::from(name),
        kind: ShortString::from(kind.as_str()),
        passive: false,
        durable: body.durable,
        auto_delete: body.auto_delete,
        internal: body.internal,
        nowait: false,
        arguments,
    };
    let ticket = v.declare_exchange(&d)?;
    wait_synced(&s, ticket).await?;
    Ok(super::declared(existed))
}

async fn delete(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, name)): Path<(String, String)>,
    Query(p): Query<Params>,
) -> ApiResult<StatusCode> {
    let v = vhost(&s, &c, &vh)?;
    let name = path_name(&name);
    if v.find_exchange(name).is_none() {
        return Err(ApiError::not_found());
    }
    authz::allow(&s, &c, &vh, Perm::Configure, Resource::Exchange, name)?;
    let if_unused = p.get("if-unused").is_some_and(|x| x == "true");
    let ticket = v.delete_exchange(name, if_unused)?;
    wait_synced(&s, ticket).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn as_source(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, name)): Path<(String, String)>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    let v = vhost(&s, &c, &vh)?;
    let x = v
        .find_exchange(path_name(&name))
        .ok_or_else(ApiError::not_found)?;
    let items = match x.name.is_empty() {
        true => v
            .queues()
            .iter()
            .map(|q| format::default_binding(&vh, &q.name))
            .collect(),
        false => x
            .bindings()
            .iter()
            .map(|b| format::binding(&vh, &x.name, b))
            .collect(),
    };
    Ok(Json(respond(items, &p)?))
}

async fn as_destination(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, name)): Path<(String, String)>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    let v = vhost(&s, &c, &vh)?;
    let name = path_name(&name);
    if v.find_exchange(name).is_none() {
        return Err(ApiError::not_found());
    }
    let items = v
        .bindings()
        .iter()
        .filter(|(_, b)| matches!(&b.dest, Destination::Exchange(d) if **d == *name))
        .map(|(src, b)| format::binding(&vh, src, b))
        .collect();
    Ok(Json(respond(items, &p)?))
}
