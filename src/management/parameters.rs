//! `/api/parameters` and `/api/global-parameters`: RabbitMQ's runtime
//! parameters. Warren knows two vhost components: `vhost-limits` (name
//! `limits`, value the vhost's whole limit set, as RabbitMQ stores vhost
//! limits) and `shovel` (dynamic shovels, see `crate::shovel`); other
//! components (federation) are refused as RabbitMQ refuses a component
//! whose plugin is off. Global parameters hold any JSON; `cluster_name`
//! names the cluster.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::listing::{respond, Params};
use super::policies::{check_vhost, may_manage};
use super::{blocking, declared, wait_synced, AppState, Body};
use crate::auth::access::LimitUpdate;
use crate::shovel::definition::{unknown_keys, ShovelDef};
use crate::shovel::grants;
use crate::shovel::uri::credentials;
use crate::store::access::LimitScope;

/// The component backed by vhost limits, and its one parameter's name.
const VHOST_LIMITS: &str = "vhost-limits";
const LIMITS_NAME: &str = "limits";
/// Dynamic shovels.
const SHOVEL: &str = crate::shovel::COMPONENT;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/parameters", get(|s, c, p| list(s, c, None, None, p)))
        .route(
            "/parameters/{component}",
            get(|s, c, Path(k): Path<String>, p| list(s, c, Some(k), None, p)),
        )
        .route(
            "/parameters/{component}/{vhost}",
            get(|s, c, Path((k, v)): Path<(String, String)>, p| list(s, c, Some(k), Some(v), p)),
        )
        .route(
            "/parameters/{component}/{vhost}/{name}",
            get(show).put(put).delete(delete),
        )
        .route("/global-parameters", get(list_global))
        .route(
            "/global-parameters/{name}",
            get(show_global).put(put_global).delete(delete_global),
        )
}

fn parameter_json(vhost: &str, limits: &BTreeMap<String, i64>) -> Value {
    json!({"value": limits, "vhost": vhost, "component": VHOST_LIMITS, "name": LIMITS_NAME})
}

/// Every parameter Warren has: one `vhost-limits` entry per vhost with
/// limits, then the shovels.
pub fn all_parameters(s: &crate::broker::Broker) -> Vec<(String, Value)> {
    let defs = s.access.defs();
    let limits = defs
        .vhost_limits
        .iter()
        .map(|(vhost, limits)| (vhost.clone(), parameter_json(vhost, limits)));
    let others = defs
        .parameters
        .iter()
        .map(|((vhost, component, name), value)| {
            let item =
                json!({"value": value, "vhost": vhost, "component": component, "name": name});
            (vhost.clone(), item)
        });
    limits.chain(others).collect()
}

async fn list(
    State(s): State<AppState>,
    c: Caller,
    component: Option<String>,
    vhost: Option<String>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    c.require_policymaker()?;
    if let Some(v) = &vhost {
        if !s.broker.access.has_vhost(v) {
            return Err(ApiError::not_found());
        }
    }
    let items = all_parameters(&s.broker)
        .into_iter()
        .filter(|(v, _)| may_manage(&s, &c, v) && vhost.as_ref().is_none_or(|want| want == v))
        .filter(|(_, item)| component.as_ref().is_none_or(|k| item["component"] == **k))
        .map(|(_, item)| item)
        .collect();
    Ok(Json(respond(items, &p)?))
}

/// The vhost's limits if `component`/`name` is its `vhost-limits`
/// parameter and it has some.
fn find(s: &AppState, component: &str, vhost: &str, name: &str) -> Option<BTreeMap<String, i64>> {
    if component != VHOST_LIMITS || name != LIMITS_NAME {
        return None;
    }
    s.broker.access.limits_of(LimitScope::Vhost, vhost)
}

async fn show(
    State(s): State<AppState>,
    c: Caller,
    Path((component, vhost, name)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    c.require_policymaker()?;
    check_vhost(&s, &c, &vhost)?;
    if component == SHOVEL {
        let value = s
            .broker
            .access
            .parameter(&vhost, SHOVEL, &name)
            .ok_or_else(ApiError::not_found)?;
        return Ok(Json(
            json!({"value": value, "vhost": vhost, "component": SHOVEL, "name": name}),
        ));
    }
    let limits = find(&s, &component, &vhost, &name).ok_or_else(ApiError::not_found)?;
    Ok(Json(parameter_json(&vhost, &limits)))
}

/// RabbitMQ's text for a refused parameter.
fn validation_failed(why: &str) -> ApiError {
    ApiError::bad_request(format!("Validation failed\n\n{why}\n"))
}

/// A `vhost-limits` value: an object of known limit names to integers.
pub fn limits_of(value: &Value) -> ApiResult<BTreeMap<String, i64>> {
    let Value::Object(m) = value else {
        return Err(validation_failed("limits must be an object"));
    };
    let known = LimitScope::Vhost.names();
    let unknown: Vec<&str> = m
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(validation_failed(&format!(
            "Unrecognised terms {unknown:?} in limits"
        )));
    }
    m.iter()
        .map(|(k, v)| match v.as_i64() {
            Some(n) => Ok((k.clone(), n)),
            None => Err(validation_failed(&format!(
                "{k} should be a number, actually was {v}"
            ))),
        })
        .collect()
}

/// Whether Warren has parameters of `component`.
pub fn is_known_component(component: &str) -> bool {
    component == VHOST_LIMITS || component == SHOVEL
}

/// Check a component and name Warren knows.
pub fn check_component(component: &str, name: &str) -> ApiResult<()> {
    if component == SHOVEL {
        return Ok(());
    }
    if component != VHOST_LIMITS {
        return Err(validation_failed(&format!(
            "component {component} not found"
        )));
    }
    if name != LIMITS_NAME {
        return Err(validation_failed(&format!(
            "the {VHOST_LIMITS} parameter is named '{LIMITS_NAME}'"
        )));
    }
    Ok(())
}

/// Set a `vhost-limits` parameter (the API's PUT and definitions import);
/// the sync round.
pub fn put_parameter(s: &crate::broker::Broker, item: &Value) -> ApiResult<u64> {
    let text = |k: &str| {
        item.get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad_request(format!("{k} missing or not a string")))
    };
    let (component, vhost, name) = (text("component")?, text("vhost")?, text("name")?);
    check_component(component, name)?;
    let value = item
        .get("value")
        .ok_or_else(|| ApiError::bad_request("value is missing"))?;
    if component == SHOVEL {
        let def = ShovelDef::parse(value, name).map_err(|why| validation_failed(&why))?;
        // As RabbitMQ: the same value again does not restart the shovel.
        let same = s.access.parameter(vhost, SHOVEL, name).as_ref() == Some(value)
            && s.shovels.exists(vhost, name);
        let ticket = s.access.put_parameter(vhost, SHOVEL, name, value.clone())?;
        if !same {
            s.shovels.start(vhost, name, def);
        }
        return Ok(ticket);
    }
    let limits = limits_of(value)?;
    Ok(s.put_limits(LimitScope::Vhost, vhost, &limits, LimitUpdate::Replace)?)
}

async fn put(
    State(s): State<AppState>,
    c: Caller,
    Path((component, vhost, name)): Path<(String, String, String)>,
    Body(mut body): Body,
) -> ApiResult<StatusCode> {
    c.require_policymaker()?;
    check_vhost(&s, &c, &vhost)?;
    if s.broker.vhost(&vhost).is_none() {
        return Err(ApiError::vhost_not_found());
    }
    if !body.is_object() {
        return Err(ApiError::bad_request("body must be a JSON object"));
    }
    if component == SHOVEL {
        if let Some(why) = body.get("value").and_then(|v| unknown_keys(v, &name)) {
            return Err(validation_failed(&why));
        }
        shovel_access(&s, &c, &name, body.get("value"))?;
    }
    let existed = match component.as_str() {
        SHOVEL => s.broker.access.parameter(&vhost, SHOVEL, &name).is_some(),
        _ => find(&s, &component, &vhost, &name).is_some(),
    };
    body["component"] = json!(component);
    body["vhost"] = json!(vhost);
    body["name"] = json!(name);
    let broker = s.broker.clone();
    let ticket = blocking(move || put_parameter(&broker, &body)).await?;
    wait_synced(&s, ticket).await?;
    Ok(declared(existed))
}

async fn delete(
    State(s): State<AppState>,
    c: Caller,
    Path((component, vhost, name)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    c.require_policymaker()?;
    check_vhost(&s, &c, &vhost)?;
    if component == SHOVEL {
        return delete_shovel(&s, vhost, name).await;
    }
    if find(&s, &component, &vhost, &name).is_none() {
        return Err(ApiError::not_found());
    }
    let broker = s.broker.clone();
    let ticket =
        blocking(move || Ok(broker.delete_limit(LimitScope::Vhost, &vhost, None)?)).await?;
    wait_synced(&s, ticket).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A shovel declared through the API moves only between vhosts its
/// declarer may open, as RabbitMQ checks (its connection would log in as
/// the user a URI names, else as the caller): a policymaker of one vhost
/// cannot reach into another. A user a URI names is checked as each run
/// checks it: password, vhost and permissions (`shovel/grants.rs`).
fn shovel_access(s: &AppState, c: &Caller, name: &str, value: Option<&Value>) -> ApiResult<()> {
    let Some(Ok(def)) = value.map(|v| ShovelDef::parse(v, name)) else {
        // Not a valid definition: `put_parameter` says why.
        return Ok(());
    };
    for (uri, vhost) in [
        (&def.src_uri, &def.src_vhost),
        (&def.dest_uri, &def.dest_vhost),
    ] {
        if credentials(uri).is_none() && !s.broker.access.may_open(&c.name, vhost) {
            return Err(validation_failed(&format!(
                "user \"{}\" may not connect to vhost \"{vhost}\"",
                c.name
            )));
        }
    }
    grants::for_run(&s.broker, &def).map_err(|why| validation_failed(&why))
}

/// Delete shovel `name`'s parameter and stop it (also
/// `DELETE /api/shovels/vhost/{vhost}/{name}`).
pub async fn delete_shovel(s: &AppState, vhost: String, name: String) -> ApiResult<StatusCode> {
    let broker = s.broker.clone();
    let ticket = blocking(move || {
        let deleted = broker.access.delete_parameter(&vhost, SHOVEL, &name);
        // Stopped even without a parameter: nothing may run unlisted.
        broker.shovels.stop(&vhost, &name);
        Ok(deleted?)
    })
    .await?;
    wait_synced(s, ticket).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every global parameter as the API and definitions show it.
pub fn global_parameters(s: &crate::broker::Broker) -> Vec<Value> {
    let defs = s.access.defs();
    defs.global_parameters
        .into_iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect()
}

async fn list_global(
    State(s): State<AppState>,
    c: Caller,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    c.require_policymaker()?;
    Ok(Json(respond(global_parameters(&s.broker), &p)?))
}

async fn show_global(
    State(s): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    c.require_policymaker()?;
    let value = s
        .broker
        .access
        .global_parameter(&name)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(json!({"value": value, "name": name})))
}

async fn put_global(
    State(s): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    c.require_policymaker()?;
    let value = body
        .get("value")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("value is missing"))?;
    let existed = s.broker.access.global_parameter(&name).is_some();
    let ticket = s.broker.access.put_global_parameter(&name, value)?;
    wait_synced(&s, ticket).await?;
    Ok(declared(existed))
}

async fn delete_global(
    State(s): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    c.require_policymaker()?;
    let ticket = s.broker.access.delete_global_parameter(&name)?;
    wait_synced(&s, ticket).await?;
    Ok(StatusCode::NO_CONTENT)
}
