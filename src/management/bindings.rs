//! `/api/bindings`: list (all, per vhost, between two objects), create
//! (`POST .../e/{source}/{q|e}/{destination}`) and delete by properties key.

use axum::extract::{Path, Query, State};
use axum::http::header::LOCATION;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::exchanges::path_name;
use super::format::{self, vhost, visible_vhosts};
use super::json::{json_to_table, percent_encode};
use super::listing::{respond, respond_one, unsorted, Params};
use super::queues::{parse_body, API_CONNECTION};
use super::{authz, wait_synced, AppState, Body};
use crate::auth::access::Resource;
use crate::broker::exchange::{Binding, Destination};
use crate::broker::VHost;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/bindings", get(list_all))
        .route("/bindings/{vhost}", get(list_vhost))
        .route(
            "/bindings/{vhost}/e/{source}/{dtype}/{dest}",
            get(between).post(create),
        )
        .route(
            "/bindings/{vhost}/e/{source}/{dtype}/{dest}/{props}",
            get(show).delete(delete),
        )
}

/// Every binding of a vhost as JSON, the default exchange's included.
fn all_of(v: &VHost) -> Vec<Value> {
    let mut items: Vec<Value> = v
        .queues()
        .iter()
        .map(|q| format::default_binding(&v.name, &q.name))
        .collect();
    items.extend(
        v.bindings()
            .iter()
            .map(|(src, b)| format::binding(&v.name, src, b)),
    );
    items
}

async fn list_all(
    State(s): State<AppState>,
    c: Caller,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    let items = visible_vhosts(&s, &c)
        .iter()
        .flat_map(|v| all_of(v))
        .collect();
    Ok(Json(respond(items, &unsorted(&p))?))
}

async fn list_vhost(
    State(s): State<AppState>,
    c: Caller,
    Path(vh): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    let v = vhost(&s, &c, &vh)?;
    Ok(Json(respond(all_of(&v), &unsorted(&p))?))
}

/// The destination a path names: `q` for a queue, `e` for an exchange.
fn destination(dtype: &str, dest: &str) -> ApiResult<Destination> {
    match dtype {
        "q" => Ok(Destination::Queue(dest.into())),
        "e" => Ok(Destination::Exchange(path_name(dest).into())),
        _ => Err(ApiError::not_found()),
    }
}

/// A destination as a permission check names it.
fn resource(dest: &Destination) -> (Resource, &str) {
    match dest {
        Destination::Queue(q) => (Resource::Queue, q),
        Destination::Exchange(x) => (Resource::Exchange, x),
    }
}

/// The bindings from `source` to `dest`, as JSON.
fn matching(v: &VHost, source: &str, dest: &Destination) -> ApiResult<Vec<Value>> {
    let x = v.find_exchange(source).ok_or_else(ApiError::not_found)?;
    let exists = match dest {
        Destination::Queue(q) => v.find_queue(q).is_some(),
        Destination::Exchange(e) => v.find_exchange(e).is_some(),
    };
    if !exists {
        return Err(ApiError::not_found());
    }
    if x.name.is_empty() {
        return Ok(match dest {
            Destination::Queue(q) => vec![format::default_binding(&v.name, q)],
            Destination::Exchange(_) => Vec::new(),
        });
    }
    Ok(x.bindings()
        .iter()
        .filter(|b| &b.dest == dest)
        .map(|b| format::binding(&v.name, &x.name, b))
        .collect())
}

async fn between(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, source, dtype, dest)): Path<(String, String, String, String)>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    let v = vhost(&s, &c, &vh)?;
    let items = matching(&v, path_name(&source), &destination(&dtype, &dest)?)?;
    Ok(Json(respond(items, &unsorted(&p))?))
}

async fn show(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, source, dtype, dest, props)): Path<(String, String, String, String, String)>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    let v = vhost(&s, &c, &vh)?;
    let items = matching(&v, path_name(&source), &destination(&dtype, &dest)?)?;
    let found = items
        .into_iter()
        .find(|b| b["properties_key"] == *props)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(respond_one(found, &p)))
}

#[derive(Debug, Deserialize)]
struct CreateBody {
    #[serde(default)]
    routing_key: String,
    #[serde(default)]
    arguments: Value,
}

async fn create(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, source, dtype, dest)): Path<(String, String, String, String)>,
    Body(body): Body,
) -> ApiResult<impl IntoResponse> {
    let v = vhost(&s, &c, &vh)?;
    let body: CreateBody = parse_body(body)?;
    let dest_name = dest.clone();
    let dest = destination(&dtype, &dest)?;
    let source = path_name(&source);
    let arguments = json_to_table(&body.arguments).map_err(ApiError::bad_request)?;
    authz::allow_bind(&s, &c, &vh, resource(&dest), source, &body.routing_key)?;
    let ticket = v.bind(source, dest, &body.routing_key, &arguments, API_CONNECTION)?;
    wait_synced(&s, ticket).await?;
    // As RabbitMQ: relative to the request, `{destination}/{properties_key}`.
    let key = format::properties_key(&body.routing_key, &body.arguments);
    Ok((
        StatusCode::CREATED,
        [(
            LOCATION,
            format!("{}/{}", percent_encode(&dest_name), percent_encode(&key)),
        )],
    ))
}

async fn delete(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, source, dtype, dest, props)): Path<(String, String, String, String, String)>,
) -> ApiResult<StatusCode> {
    let v = vhost(&s, &c, &vh)?;
    let dest = destination(&dtype, &dest)?;
    let source = path_name(&source);
    let x = v.find_exchange(source).ok_or_else(ApiError::not_found)?;
    let found: Option<Binding> = x.bindings().into_iter().find(|b| {
        b.dest == dest
            && format::properties_key(&b.routing_key, &super::json::table_to_json(&b.arguments))
                == props
    });
    let b = found.ok_or_else(ApiError::not_found)?;
    authz::allow_bind(&s, &c, &vh, resource(&b.dest), source, &b.routing_key)?;
    let ticket = v.unbind(source, b.dest, &b.routing_key, &b.arguments, API_CONNECTION)?;
    wait_synced(&s, ticket).await?;
    Ok(StatusCode::NO_CONTENT)
}
