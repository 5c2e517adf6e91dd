//! Who may do what, at run time: `/api/whoami`, `/api/users`,
//! `/api/vhosts`, `/api/permissions` and `/api/topic-permissions`, read and
//! written through the broker's access model (every change durable in the
//! metadata log before it is answered). Administrators only, but for
//! whoami and the vhost list, which every management user sees (limited
//! to the vhosts it may use).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::format::sees_vhost;
use super::json::tags_of;
use super::listing::{respond, respond_one, Params};
use super::queues::parse_body;
use super::{blocking, declared, wait_synced, AppState, Body};
use crate::auth::access::AccessError;
use crate::auth::password::{Algorithm, PasswordHash};
use crate::store::access::{PermissionDef, TopicPermissionDef, UserDef, VhostDef};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/whoami", get(whoami))
        .route("/users", get(users))
        .route("/users/without-permissions", get(without_permissions))
        .route("/users/bulk-delete", post(bulk_delete))
        .route("/users/{name}", get(user).put(put_user).delete(delete_user))
        .route("/users/{name}/permissions", get(user_permissions))
        .route(
            "/users/{name}/topic-permissions",
            get(user_topic_permissions),
        )
        .route("/vhosts", get(vhosts))
        .route(
            "/vhosts/{vhost}",
            get(vhost_show).put(put_vhost).delete(delete_vhost),
        )
        .route("/vhosts/{vhost}/permissions", get(vhost_permissions))
        .route(
            "/vhosts/{vhost}/topic-permissions",
            get(vhost_topic_permissions),
        )
        .route("/permissions", get(permissions))
        .route(
            "/permissions/{vhost}/{user}",
            get(permission)
                .put(put_permission)
                .delete(delete_permission),
        )
        .route("/topic-permissions", get(topic_permissions))
        .route(
            "/topic-permissions/{vhost}/{user}",
            get(topic_permission)
                .put(put_topic_permission)
                .delete(delete_topic_permissions),
        )
        .route(
            "/topic-permissions/{vhost}/{user}/{exchange}",
            axum::routing::delete(delete_topic_permission),
        )
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::NotFound => ApiError::not_found(),
            AccessError::Invalid(why) => ApiError::bad_request(why),
            AccessError::Store(why) => ApiError::internal(why),
        }
    }
}

async fn whoami(c: Caller) -> Json<Value> {
    Json(json!({"name": c.name, "tags": c.tags, "is_internal_user": true}))
}

/// A user as RabbitMQ lists and exports it (the hash, never a password).
pub fn user_json(u: &UserDef) -> Value {
    json!({
        "name": u.name,
        "password_hash": u.password_hash,
        "hashing_algorithm": u.hashing_algorithm,
        "tags": u.tags,
        "limits": {},
    })
}

pub fn permission_json(p: &PermissionDef) -> Value {
    json!({"user": p.user, "vhost": p.vhost, "configure": p.configure, "write": p.write, "read": p.read})
}

pub fn topic_permission_json(p: &TopicPermissionDef) -> Value {
    json!({"user": p.user, "vhost": p.vhost, "exchange": p.exchange, "write": p.write, "read": p.read})
}

async fn users(
    State(s): State<AppState>,
    c: Caller,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    let items = s
        .broker
        .access
        .defs()
        .users
        .values()
        .map(user_json)
        .collect();
    Ok(Json(respond(items, &p)?))
}

async fn without_permissions(State(s): State<AppState>, c: Caller) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    let defs = s.broker.access.defs();
    let items: Vec<Value> = defs
        .users
        .values()
        .filter(|u| !defs.permissions.keys().any(|(user, _)| *user == u.name))
        .map(user_json)
        .collect();
    Ok(Json(Value::Array(items)))
}

async fn user(
    State(s): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    let defs = s.broker.access.defs();
    let u = defs.users.get(&name).ok_or_else(ApiError::not_found)?;
    Ok(Json(respond_one(user_json(u), &p)))
}

/// A user from a PUT body: `password` (hashed here with a fresh salt) or
/// `password_hash` (with `hashing_algorithm`, default SHA-256), and tags
/// as a list or a comma-separated string.
pub fn user_from_body(name: &str, body: &Value) -> ApiResult<UserDef> {
    let text = |k: &str| body.get(k).and_then(Value::as_str);
    let algorithm_name = text("hashing_algorithm")
        .unwrap_or(Algorithm::default().name())
        .to_string();
    let algorithm = Algorithm::parse(&algorithm_name).ok_or_else(|| {
        ApiError::bad_request(format!("unknown hashing_algorithm '{algorithm_name}'"))
    })?;
    let password_hash = match (text("password"), body.get("password_hash")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "password and password_hash are mutually exclusive",
            ))
        }
        (Some(p), None) => PasswordHash::new(p, algorithm).encoded(),
        (None, Some(Value::String(h))) => h.clone(),
        (None, Some(Value::Null) | None) => String::new(),
        (None, Some(_)) => return Err(ApiError::bad_request("password_hash must be a string")),
    };
    let mut tags =
        tags_of(body.get("tags").unwrap_or(&Value::Null)).map_err(ApiError::bad_request)?;
    // RabbitMQ's legacy boolean.
    if body.get("administrator").and_then(Value::as_bool) == Some(true)
        && !tags.iter().any(|t| t == "administrator")
    {
        tags.push("administrator".into());
    }
    Ok(UserDef {
        name: name.to_string(),
        password_hash,
        hashing_algorithm: algorithm.name().to_string(),
        tags,
    })
}

async fn put_user(
    State(s): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    c.require_admin()?;
    let def = user_from_body(&name, &body)?;
    let existed = s.broker.access.tags(&name).is_some();
    let ticket = s.broker.access.put_user(def)?;
    wait_synced(&s, ticket).await?;
    Ok(declared(existed))
}

async fn delete_user(
    State(s): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    c.require_admin()?;
    let ticket = s.broker.access.delete_user(&name)?;
    s.broker
        .close_user_connections(&name, &format!("user '{name}' is deleted"));
    wait_synced(&s, ticket).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct BulkDelete {
    users: Vec<String>,
}

async fn bulk_delete(
    State(s): State<AppState>,
    c: Caller,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    c.require_admin()?;
    let body: BulkDelete = parse_body(body)?;
    let mut ticket = 0;
    for name in body.users {
        if let Ok(t) = s.broker.access.delete_user(&name) {
            s.broker
                .close_user_connections(&name, &format!("user '{name}' is deleted"));
            ticket = ticket.max(t);
        }
    }
    wait_synced(&s, ticket).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn vhost_json(s: &AppState, def: &VhostDef) -> Value {
    let (mut ready, mut unacked) = (0u64, 0u64);
    if let Some(v) = s.broker.vhost(&def.name) {
        for q in v.queues() {
            ready += q.gauges().ready;
            unacked += q.stats.unacked();
        }
    }
    json!({
        "name": def.name,
        "description": def.description,
        "tags": def.tags,
        "metadata": {"description": def.description, "tags": def.tags},
        "default_queue_type": "classic",
        "tracing": false,
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
    })
}

async fn vhosts(
    State(s): State<AppState>,
    c: Caller,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    let defs = s.broker.access.defs();
    let items = defs
        .vhosts
        .values()
        .filter(|v| sees_vhost(&s, &c, &v.name))
        .map(|v| vhost_json(&s, v))
        .collect();
    Ok(Json(respond(items, &p)?))
}

async fn vhost_show(
    State(s): State<AppState>,
    c: Caller,
    Path(vh): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    let defs = s.broker.access.defs();
    let v = defs
        .vhosts
        .get(&vh)
        .filter(|v| sees_vhost(&s, &c, &v.name))
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(respond_one(vhost_json(&s, v), &p)))
}

async fn put_vhost(
    State(s): State<AppState>,
    c: Caller,
    Path(vh): Path<String>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    c.require_admin()?;
    let description = body
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let tags = tags_of(body.get("tags").unwrap_or(&Value::Null)).map_err(ApiError::bad_request)?;
    let def = VhostDef {
        name: vh.clone(),
        description,
        tags,
    };
    let broker = s.broker.clone();
    let (mut ticket, created) = blocking(move || Ok(broker.put_vhost(def)?)).await?;
    if created {
        // As RabbitMQ: the user who creates a vhost may use it.
        let grant = PermissionDef {
            user: c.name.clone(),
            vhost: vh,
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        };
        ticket = ticket.max(s.broker.access.put_permission(grant)?);
    }
    wait_synced(&s, ticket).await?;
    Ok(declared(!created))
}

async fn delete_vhost(
    State(s): State<AppState>,
    c: Caller,
    Path(vh): Path<String>,
) -> ApiResult<StatusCode> {
    c.require_admin()?;
    let broker = s.broker.clone();
    let ticket = blocking(move || Ok(broker.delete_vhost(&vh)?)).await?;
    wait_synced(&s, ticket).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn permission_list(s: &AppState, keep: impl Fn(&PermissionDef) -> bool) -> Vec<Value> {
    let defs = s.broker.access.defs();
    defs.permissions
        .values()
        .filter(|p| keep(p))
        .map(permission_json)
        .collect()
}

async fn permissions(
    State(s): State<AppState>,
    c: Caller,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    Ok(Json(respond(permission_list(&s, |_| true), &p)?))
}

async fn user_permissions(
    State(s): State<AppState>,
    c: Caller,
    Path(user): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    s.broker
        .access
        .tags(&user)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(respond(permission_list(&s, |x| x.user == user), &p)?))
}

async fn vhost_permissions(
    State(s): State<AppState>,
    c: Caller,
    Path(vh): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    if !s.broker.access.has_vhost(&vh) {
        return Err(ApiError::not_found());
    }
    Ok(Json(respond(permission_list(&s, |x| x.vhost == vh), &p)?))
}

async fn permission(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, user)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    let defs = s.broker.access.defs();
    let p = defs
        .permissions
        .get(&(user, vh))
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(permission_json(p)))
}

/// A permission regex from a body (missing: RabbitMQ refuses).
fn regex_field(body: &Value, key: &str) -> ApiResult<String> {
    match body.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::bad_request(format!("{key} must be a string"))),
        None => Err(ApiError::bad_request(format!("{key} is required"))),
    }
}

async fn put_permission(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, user)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    c.require_admin()?;
    let def = PermissionDef {
        user: user.clone(),
        vhost: vh.clone(),
        configure: regex_field(&body, "configure")?,
        write: regex_field(&body, "write")?,
        read: regex_field(&body, "read")?,
    };
    let existed = s.broker.access.defs().permissions.contains_key(&(user, vh));
    let ticket = s.broker.access.put_permission(def)?;
    wait_synced(&s, ticket).await?;
    Ok(declared(existed))
}

async fn delete_permission(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    c.require_admin()?;
    let ticket = s.broker.access.delete_permission(&user, &vh)?;
    wait_synced(&s, ticket).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn topic_list(s: &AppState, keep: impl Fn(&TopicPermissionDef) -> bool) -> Vec<Value> {
    let defs = s.broker.access.defs();
    let items = defs.topic_permissions.values().filter(|p| keep(p));
    items.map(topic_permission_json).collect()
}

async fn topic_permissions(
    State(s): State<AppState>,
    c: Caller,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    Ok(Json(respond(topic_list(&s, |_| true), &p)?))
}

async fn user_topic_permissions(
    State(s): State<AppState>,
    c: Caller,
    Path(user): Path<String>,
) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    Ok(Json(Value::Array(topic_list(&s, |x| x.user == user))))
}

async fn vhost_topic_permissions(
    State(s): State<AppState>,
    c: Caller,
    Path(vh): Path<String>,
) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    Ok(Json(Value::Array(topic_list(&s, |x| x.vhost == vh))))
}

async fn topic_permission(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, user)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    let items = topic_list(&s, |x| x.vhost == vh && x.user == user);
    if items.is_empty() {
        return Err(ApiError::not_found());
    }
    Ok(Json(Value::Array(items)))
}

async fn put_topic_permission(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, user)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    c.require_admin()?;
    let def = TopicPermissionDef {
        user,
        vhost: vh,
        exchange: regex_field(&body, "exchange")?,
        write: regex_field(&body, "write")?,
        read: regex_field(&body, "read")?,
    };
    let ticket = s.broker.access.put_topic_permission(def)?;
    wait_synced(&s, ticket).await?;
    Ok(StatusCode::CREATED)
}

async fn delete_topic_permissions(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    c.require_admin()?;
    let ticket = s.broker.access.delete_topic_permissions(&user, &vh, None)?;
    wait_synced(&s, ticket).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_topic_permission(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, user, exchange)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    c.require_admin()?;
    let ticket = s
        .broker
        .access
        .delete_topic_permissions(&user, &vh, Some(&exchange))?;
    wait_synced(&s, ticket).await?;
    Ok(StatusCode::NO_CONTENT)
}
