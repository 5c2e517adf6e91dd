//! `/api/vhost-limits` and `/api/user-limits`: RabbitMQ's per-vhost
//! (`max-connections`, `max-queues`) and per-user (`max-connections`,
//! `max-channels`) limits, stored durably and in effect once set (see
//! `broker/limits.rs`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::{blocking, wait_synced, AppState, Body};
use crate::auth::access::LimitUpdate;
use crate::store::access::LimitScope;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/vhost-limits",
            get(|s, c| list(s, c, LimitScope::Vhost, None)),
        )
        .route(
            "/vhost-limits/{vhost}",
            get(|s, c, Path(t): Path<String>| list(s, c, LimitScope::Vhost, Some(t))),
        )
        .route(
            "/vhost-limits/{vhost}/{name}",
            put(|s, c, p, b| set(s, c, LimitScope::Vhost, p, b))
                .delete(|s, c, p| clear(s, c, LimitScope::Vhost, p)),
        )
        .route(
            "/user-limits",
            get(|s, c| list(s, c, LimitScope::User, None)),
        )
        .route(
            "/user-limits/{user}",
            get(|s, c, Path(t): Path<String>| list(s, c, LimitScope::User, Some(t))),
        )
        .route(
            "/user-limits/{user}/{name}",
            put(|s, c, p, b| set(s, c, LimitScope::User, p, b))
                .delete(|s, c, p| clear(s, c, LimitScope::User, p)),
        )
}

fn key(scope: LimitScope) -> &'static str {
    match scope {
        LimitScope::Vhost => "vhost",
        LimitScope::User => "user",
    }
}

async fn list(
    State(s): State<AppState>,
    c: Caller,
    scope: LimitScope,
    target: Option<String>,
) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    let defs = s.broker.access.defs();
    let items: Vec<Value> = defs
        .limits(scope)
        .iter()
        .filter(|(t, _)| target.as_ref().is_none_or(|want| *t == want))
        .map(|(t, limits)| json!({key(scope): t, "value": limits}))
        .collect();
    Ok(Json(Value::Array(items)))
}

async fn set(
    State(s): State<AppState>,
    c: Caller,
    scope: LimitScope,
    Path((target, name)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    c.require_admin()?;
    let value = match body.get("value") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(v)) => v.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| ApiError::bad_request("value must be an integer"))?;
    let limits = std::collections::BTreeMap::from([(name, value)]);
    let broker = s.broker.clone();
    let ticket =
        blocking(move || Ok(broker.put_limits(scope, &target, &limits, LimitUpdate::Merge)?))
            .await?;
    wait_synced(&s, ticket).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn clear(
    State(s): State<AppState>,
    c: Caller,
    scope: LimitScope,
    Path((target, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    c.require_admin()?;
    let broker = s.broker.clone();
    let ticket = blocking(move || Ok(broker.delete_limit(scope, &target, Some(&name))?)).await?;
    wait_synced(&s, ticket).await?;
    Ok(StatusCode::NO_CONTENT)
}
