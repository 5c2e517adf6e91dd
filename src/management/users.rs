//! Who may do what: `/api/whoami`, `/api/users`, `/api/vhosts`,
//! `/api/permissions`, topic permissions, and the definitions export.
//!
//! Users and vhosts come from the config file in this version, and every
//! user may use every vhost (as on AMQP), so permissions are shown as
//! `.*` for each pair. Run-time changes come with the durable user model.

use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_DISPOSITION;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::format::{self, vhost};
use super::json::table_to_json;
use super::listing::{respond, respond_one, Params};
use super::AppState;
use crate::auth::password::{Algorithm, PasswordHash};
use crate::config::User;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/whoami", get(whoami))
        .route("/users", get(users))
        .route("/users/without-permissions", get(without_permissions))
        .route("/users/{name}", get(user))
        .route("/users/{name}/permissions", get(user_permissions))
        .route("/users/{name}/topic-permissions", get(empty_list))
        .route("/vhosts", get(vhosts))
        .route("/vhosts/{vhost}", get(vhost_show))
        .route("/vhosts/{vhost}/permissions", get(vhost_permissions))
        .route("/vhosts/{vhost}/topic-permissions", get(empty_list))
        .route("/permissions", get(permissions))
        .route("/permissions/{vhost}/{user}", get(permission))
        .route("/topic-permissions", get(empty_list))
        .route("/definitions", get(definitions))
        .route("/definitions/{vhost}", get(vhost_definitions))
}

async fn whoami(c: Caller) -> Json<Value> {
    Json(json!({"name": c.name, "tags": c.tags, "is_internal_user": true}))
}

/// A user as RabbitMQ lists and exports it: never a plain password.
fn user_json(u: &User) -> Value {
    let (hash, algorithm) = match (&u.password_hash, &u.password) {
        (Some(h), _) => (
            h.clone(),
            u.hashing_algorithm
                .clone()
                .unwrap_or_else(|| Algorithm::default().name().to_string()),
        ),
        // A config password is shown only hashed (with a fresh salt).
        (None, Some(p)) => (
            PasswordHash::new(p, Algorithm::default()).encoded(),
            Algorithm::default().name().to_string(),
        ),
        (None, None) => (String::new(), Algorithm::default().name().to_string()),
    };
    json!({
        "name": u.name,
        "password_hash": hash,
        "hashing_algorithm": algorithm,
        "tags": u.tags,
        "limits": {},
    })
}

fn find_user<'a>(s: &'a AppState, name: &str) -> ApiResult<&'a User> {
    s.broker
        .config
        .users
        .iter()
        .find(|u| u.name == name)
        .ok_or_else(ApiError::not_found)
}

async fn users(
    State(s): State<AppState>,
    c: Caller,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    let items = s.broker.config.users.iter().map(user_json).collect();
    Ok(Json(respond(items, &p)?))
}

async fn without_permissions(c: Caller) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    Ok(Json(json!([])))
}

async fn user(
    State(s): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    Ok(Json(respond_one(user_json(find_user(&s, &name)?), &p)))
}

fn permission_json(user: &str, vhost: &str) -> Value {
    json!({"user": user, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"})
}

fn all_permissions(s: &AppState) -> Vec<Value> {
    let mut out = Vec::new();
    for u in &s.broker.config.users {
        for v in s.broker.vhosts() {
            out.push(permission_json(&u.name, &v.name));
        }
    }
    out
}

async fn permissions(
    State(s): State<AppState>,
    c: Caller,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    Ok(Json(respond(all_permissions(&s), &p)?))
}

async fn permission(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, user)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    vhost(&s, &vh)?;
    find_user(&s, &user)?;
    Ok(Json(permission_json(&user, &vh)))
}

async fn user_permissions(
    State(s): State<AppState>,
    c: Caller,
    Path(user): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    find_user(&s, &user)?;
    let items = s
        .broker
        .vhosts()
        .iter()
        .map(|v| permission_json(&user, &v.name))
        .collect();
    Ok(Json(respond(items, &p)?))
}

async fn vhost_permissions(
    State(s): State<AppState>,
    c: Caller,
    Path(vh): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    vhost(&s, &vh)?;
    let items = s
        .broker
        .config
        .users
        .iter()
        .map(|u| permission_json(&u.name, &vh))
        .collect();
    Ok(Json(respond(items, &p)?))
}

async fn empty_list(_c: Caller) -> Json<Value> {
    Json(json!([]))
}

fn vhost_json(s: &AppState, v: &crate::broker::VHost) -> Value {
    let (mut ready, mut unacked) = (0u64, 0u64);
    for q in v.queues() {
        ready += q.gauges().ready;
        unacked += q.stats.unacked();
    }
    let _ = s;
    json!({
        "name": &*v.name,
        "description": "",
        "tags": [],
        "metadata": {"description": "", "tags": []},
        "default_queue_type": "classic",
        "tracing": false,
        "cluster_state": {},
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
    })
}

async fn vhosts(
    State(s): State<AppState>,
    _c: Caller,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    let items = s
        .broker
        .vhosts()
        .iter()
        .map(|v| vhost_json(&s, v))
        .collect();
    Ok(Json(respond(items, &p)?))
}

async fn vhost_show(
    State(s): State<AppState>,
    _c: Caller,
    Path(vh): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    let v = vhost(&s, &vh)?;
    Ok(Json(respond_one(vhost_json(&s, &v), &p)))
}

/// The durable topology of a vhost in definitions form.
fn topology(v: &crate::broker::VHost, with_vhost: bool) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let tag = |mut item: Value| {
        if !with_vhost {
            if let Some(m) = item.as_object_mut() {
                m.remove("vhost");
            }
        }
        item
    };
    let queues = v
        .queues()
        .iter()
        .filter(|q| q.durable && q.exclusive_owner.is_none())
        .map(|q| {
            tag(json!({"name": &*q.name, "vhost": &*v.name, "durable": true,
                "auto_delete": q.auto_delete, "arguments": table_to_json(&q.arguments)}))
        })
        .collect();
    let exchanges = v
        .exchanges()
        .iter()
        .filter(|x| x.durable && !x.name.is_empty() && !x.name.starts_with("amq."))
        .map(|x| {
            tag(
                json!({"name": &*x.name, "vhost": &*v.name, "type": x.type_name(),
                "durable": true, "auto_delete": x.auto_delete, "internal": x.internal,
                "arguments": table_to_json(&x.arguments)}),
            )
        })
        .collect();
    let bindings = v
        .bindings()
        .iter()
        .map(|(src, b)| {
            let mut item = format::binding(&v.name, src, b);
            if let Some(m) = item.as_object_mut() {
                m.remove("properties_key");
            }
            tag(item)
        })
        .collect();
    (queues, exchanges, bindings)
}

async fn definitions(
    State(s): State<AppState>,
    c: Caller,
    Query(p): Query<Params>,
) -> ApiResult<impl IntoResponse> {
    c.require_admin()?;
    let (mut queues, mut exchanges, mut bindings) = (Vec::new(), Vec::new(), Vec::new());
    for v in s.broker.vhosts() {
        let (q, x, b) = topology(&v, true);
        queues.extend(q);
        exchanges.extend(x);
        bindings.extend(b);
    }
    let vhosts: Vec<Value> = s
        .broker
        .vhosts()
        .iter()
        .map(|v| json!({"name": &*v.name, "limits": [], "metadata": {"description": "", "tags": []}}))
        .collect();
    let body = json!({
        "rabbit_version": super::overview::RABBITMQ_VERSION,
        "rabbitmq_version": super::overview::RABBITMQ_VERSION,
        "product_name": "Warren",
        "product_version": env!("CARGO_PKG_VERSION"),
        "rabbitmq_definition_format": "cluster",
        "original_cluster_name": s.broker.node_name,
        "explanation": format!("Definitions of cluster '{}'", s.broker.node_name),
        "users": s.broker.config.users.iter().map(user_json).collect::<Vec<_>>(),
        "vhosts": vhosts,
        "permissions": all_permissions(&s),
        "topic_permissions": [],
        "parameters": [],
        "global_parameters": [],
        "policies": [],
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    });
    Ok(download(body, &p))
}

async fn vhost_definitions(
    State(s): State<AppState>,
    c: Caller,
    Path(vh): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult<impl IntoResponse> {
    c.require_admin()?;
    let v = vhost(&s, &vh)?;
    let (queues, exchanges, bindings) = topology(&v, false);
    let body = json!({
        "rabbit_version": super::overview::RABBITMQ_VERSION,
        "rabbitmq_version": super::overview::RABBITMQ_VERSION,
        "product_name": "Warren",
        "product_version": env!("CARGO_PKG_VERSION"),
        "rabbitmq_definition_format": "single_virtual_host",
        "original_vhost_name": &*v.name,
        "explanation": format!("Definitions of virtual host '{}'", v.name),
        "metadata": {"description": "", "tags": []},
        "description": "",
        "limits": {},
        "parameters": [],
        "policies": [],
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    });
    Ok(download(body, &p))
}

/// `?download=file` asks for an attachment, as the UI's export does.
fn download(body: Value, p: &Params) -> impl IntoResponse {
    let disposition = p
        .get("download")
        .filter(|f| {
            !f.is_empty()
                && f.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        })
        .map(|f| format!("attachment; filename=\"{f}\""));
    let mut resp = Json(body).into_response();
    if let Some(d) = disposition.and_then(|d| d.parse().ok()) {
        resp.headers_mut().insert(CONTENT_DISPOSITION, d);
    }
    resp
}
