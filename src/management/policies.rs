//! `/api/policies` and `/api/operator-policies`: list, show, set (PUT
//! `pattern`, `definition`, `priority`, `apply-to`) and clear; a change
//! applies to the vhost's queues before it is answered. Policymakers and
//! administrators only, as in RabbitMQ.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::json::loose_u64;
use super::listing::{respond, Params};
use super::{blocking, declared, wait_synced, AppState, Body};
use crate::store::access::PolicyDef;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/policies", get(|s, c, p| list(s, c, None, p, false)))
        .route(
            "/policies/{vhost}",
            get(|s, c, Path(vh): Path<String>, p| list(s, c, Some(vh), p, false)),
        )
        .route(
            "/policies/{vhost}/{name}",
            get(|s, c, path| show(s, c, path, false))
                .put(|s, c, path, body| put(s, c, path, body, false))
                .delete(|s, c, path| delete(s, c, path, false)),
        )
        .route(
            "/operator-policies",
            get(|s, c, p| list(s, c, None, p, true)),
        )
        .route(
            "/operator-policies/{vhost}",
            get(|s, c, Path(vh): Path<String>, p| list(s, c, Some(vh), p, true)),
        )
        .route(
            "/operator-policies/{vhost}/{name}",
            get(|s, c, path| show(s, c, path, true))
                .put(|s, c, path, body| put(s, c, path, body, true))
                .delete(|s, c, path| delete(s, c, path, true)),
        )
}

/// A policy as the API and definitions show it.
pub fn policy_json(p: &PolicyDef) -> Value {
    json!({
        "vhost": p.vhost,
        "name": p.name,
        "pattern": p.pattern,
        "apply-to": p.apply_to,
        "definition": p.definition,
        "priority": p.priority,
    })
}

/// A policymaker manages policies only in vhosts it may use
/// (administrators in all).
pub(super) fn may_manage(s: &AppState, c: &Caller, vhost: &str) -> bool {
    c.is_admin() || s.broker.access.may_open(&c.name, vhost)
}

pub(super) fn check_vhost(s: &AppState, c: &Caller, vhost: &str) -> ApiResult<()> {
    match may_manage(s, c, vhost) {
        true => Ok(()),
        false => Err(ApiError::not_authorised(
            "User not authorised to access virtual host",
        )),
    }
}

fn policies(s: &AppState, vhost: Option<&str>, operator: bool) -> Vec<PolicyDef> {
    let defs = s.broker.access.defs();
    let all = defs.policies.into_values();
    all.filter(|p| p.operator == operator && vhost.is_none_or(|v| p.vhost == v))
        .collect()
}

async fn list(
    State(s): State<AppState>,
    c: Caller,
    vhost: Option<String>,
    Query(p): Query<Params>,
    operator: bool,
) -> ApiResult<Json<Value>> {
    c.require_policymaker()?;
    if let Some(v) = &vhost {
        if !s.broker.access.has_vhost(v) {
            return Err(ApiError::not_found());
        }
    }
    let items = policies(&s, vhost.as_deref(), operator)
        .iter()
        .filter(|p| may_manage(&s, &c, &p.vhost))
        .map(policy_json)
        .collect();
    Ok(Json(respond(items, &p)?))
}

async fn show(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, name)): Path<(String, String)>,
    operator: bool,
) -> ApiResult<Json<Value>> {
    c.require_policymaker()?;
    check_vhost(&s, &c, &vh)?;
    let found = policies(&s, Some(&vh), operator)
        .into_iter()
        .find(|p| p.name == name);
    Ok(Json(policy_json(&found.ok_or_else(ApiError::not_found)?)))
}

async fn put(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, name)): Path<(String, String)>,
    Body(body): Body,
    operator: bool,
) -> ApiResult<StatusCode> {
    c.require_policymaker()?;
    check_vhost(&s, &c, &vh)?;
    let text = |k: &str, default: Option<&str>| -> ApiResult<String> {
        match (body.get(k), default) {
            (Some(Value::String(v)), _) => Ok(v.clone()),
            (None, Some(d)) => Ok(d.to_string()),
            _ => Err(ApiError::bad_request(format!("{k} must be a string"))),
        }
    };
    let priority = match body.get("priority") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64().unwrap_or(0),
        Some(v) => loose_u64(v)
            .and_then(|n| i64::try_from(n).ok())
            .ok_or_else(|| ApiError::bad_request("priority must be an integer"))?,
    };
    let def = PolicyDef {
        vhost: vh.clone(),
        name: name.clone(),
        pattern: text("pattern", None)?,
        apply_to: text("apply-to", Some("all"))?,
        priority,
        definition: body.get("definition").cloned().unwrap_or(Value::Null),
        operator,
    };
    let existed = policies(&s, Some(&vh), operator)
        .iter()
        .any(|p| p.name == name);
    let broker = s.broker.clone();
    let ticket = blocking(move || Ok(broker.put_policy(def)?)).await?;
    wait_synced(&s, ticket).await?;
    Ok(declared(existed))
}

async fn delete(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, name)): Path<(String, String)>,
    operator: bool,
) -> ApiResult<StatusCode> {
    c.require_policymaker()?;
    check_vhost(&s, &c, &vh)?;
    let broker = s.broker.clone();
    let ticket = blocking(move || Ok(broker.delete_policy(&vh, &name, operator)?)).await?;
    wait_synced(&s, ticket).await?;
    Ok(StatusCode::NO_CONTENT)
}
