//! Definitions export and import in RabbitMQ's JSON format (cluster-wide
//! and per vhost): vhosts, users, permissions, topic permissions, durable
//! exchanges, queues and bindings. An import merges, as RabbitMQ's does,
//! going through the same paths as the API's own routes and AMQP.

use amq_protocol::protocol::{exchange, queue};
use amq_protocol::types::ShortString;
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_DISPOSITION;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::format::{self, vhost};
use super::json::{json_to_table, table_to_json};
use super::listing::Params;
use super::parameters;
use super::policies::policy_json;
use super::queues::API_CONNECTION;
use super::users::{permission_json, topic_permission_json, user_from_body, user_json};
use super::{blocking, wait_synced, AppState, Body};
use crate::broker::exchange::Destination;
use crate::broker::{Broker, VHost};
use crate::store::access::{PermissionDef, PolicyDef, TopicPermissionDef, VhostDef};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/definitions", get(export).post(import))
        // RabbitMQ's legacy name for the same.
        .route("/all-configuration", get(export).post(import))
        .route("/definitions/{vhost}", get(export_vhost).post(import_vhost))
}

/// The durable topology of a vhost, items with or without their `vhost`.
fn topology(v: &VHost, with_vhost: bool) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let tag = |mut item: Value| {
        if let Some(m) = item.as_object_mut() {
            m.remove("properties_key");
            if !with_vhost {
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
    // Only bindings whose two ends are exported too (a binding to a
    // transient queue could not be imported).
    let durable_exchange = |name: &str| v.find_exchange(name).is_some_and(|x| x.durable);
    let bindings = v
        .bindings()
        .iter()
        .filter(|(src, b)| {
            durable_exchange(src)
                && match &b.dest {
                    Destination::Queue(q) => v
                        .find_queue(q)
                        .is_some_and(|q| q.durable && q.exclusive_owner.is_none()),
                    Destination::Exchange(x) => durable_exchange(x),
                }
        })
        .map(|(src, b)| tag(format::binding(&v.name, src, b)))
        .collect();
    (queues, exchanges, bindings)
}

async fn export(
    State(s): State<AppState>,
    c: Caller,
    Query(p): Query<Params>,
) -> ApiResult<impl IntoResponse> {
    c.require_admin()?;
    let defs = s.broker.access.defs();
    let (mut queues, mut exchanges, mut bindings) = (Vec::new(), Vec::new(), Vec::new());
    for v in s.broker.vhosts() {
        let (q, x, b) = topology(&v, true);
        queues.extend(q);
        exchanges.extend(x);
        bindings.extend(b);
    }
    let vhosts: Vec<Value> = defs
        .vhosts
        .values()
        .map(|v| json!({"name": v.name, "limits": [], "metadata": {"description": v.description, "tags": v.tags}}))
        .collect();
    let body = json!({
        "rabbit_version": super::overview::RABBITMQ_VERSION,
        "rabbitmq_version": super::overview::RABBITMQ_VERSION,
        "product_name": "Warren",
        "product_version": env!("CARGO_PKG_VERSION"),
        "rabbitmq_definition_format": "cluster",
        "original_cluster_name": s.broker.cluster_name(),
        "explanation": format!("Definitions of cluster '{}'", s.broker.cluster_name()),
        "users": defs.users.values().map(user_json).collect::<Vec<_>>(),
        "vhosts": vhosts,
        "permissions": defs.permissions.values().map(permission_json).collect::<Vec<_>>(),
        "topic_permissions": defs.topic_permissions.values().map(topic_permission_json).collect::<Vec<_>>(),
        "parameters": parameters::all_parameters(&s.broker).into_iter().map(|(_, p)| p).collect::<Vec<_>>(),
        "global_parameters": parameters::global_parameters(&s.broker),
        "policies": defs.policies.values().filter(|p| !p.operator).map(policy_json).collect::<Vec<_>>(),
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    });
    Ok(download(body, &p))
}

async fn export_vhost(
    State(s): State<AppState>,
    c: Caller,
    Path(vh): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult<impl IntoResponse> {
    c.require_admin()?;
    let v = vhost(&s, &c, &vh)?;
    let defs = s.broker.access.defs();
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
        "limits": defs.vhost_limits.get(&*v.name).cloned().unwrap_or_default(),
        "parameters": parameters::all_parameters(&s.broker).into_iter().filter(|(vh, _)| *vh == *v.name).map(|(_, p)| p).collect::<Vec<_>>(),
        "policies": defs.policies.values().filter(|p| !p.operator && p.vhost == *v.name).map(policy_json).map(|mut p| { if let Some(m) = p.as_object_mut() { m.remove("vhost"); } p }).collect::<Vec<_>>(),
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

/// The array under `key` (missing: empty; not an array: 400).
fn list<'a>(body: &'a Value, key: &str) -> ApiResult<&'a [Value]> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(ApiError::bad_request(format!("{key} must be a list"))),
    }
}

fn text<'a>(item: &'a Value, key: &str) -> ApiResult<&'a str> {
    item.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request(format!("{key} missing or not a string in {item}")))
}

fn flag(item: &Value, key: &str, default: bool) -> bool {
    match item.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => default,
    }
}

/// The object lists of a definitions file, in the order they are made.
const OBJECTS: [(&str, Kind); 3] = [
    ("exchanges", Kind::Exchange),
    ("queues", Kind::Queue),
    ("bindings", Kind::Binding),
];

#[derive(Clone, Copy)]
enum Kind {
    Exchange,
    Queue,
    Binding,
}

async fn import(State(s): State<AppState>, c: Caller, Body(body): Body) -> ApiResult<StatusCode> {
    c.require_admin()?;
    let broker = s.broker.clone();
    let ticket = blocking(move || import_all(&broker, &body)).await?;
    wait_synced(&s, ticket).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Import a whole definitions document (the API's POST, and
/// `load_definitions` at boot); the sync round that makes it durable.
pub fn import_all(broker: &Broker, body: &Value) -> ApiResult<u64> {
    if !body.is_object() {
        return Err(ApiError::bad_request("definitions must be a JSON object"));
    }
    let mut ticket = import_access(broker, body)?;
    for (key, kind) in OBJECTS {
        for item in list(body, key)? {
            let name = text(item, "vhost")?;
            let v = broker.vhost(name).ok_or_else(ApiError::not_found)?;
            ticket = ticket.max(import_object(&v, kind, item)?);
        }
    }
    for item in list(body, "policies")? {
        ticket = ticket.max(broker.put_policy(policy_of(item, false)?)?);
    }
    for item in list(body, "parameters")? {
        ticket = ticket.max(import_parameter(broker, item)?);
    }
    for item in list(body, "global_parameters")? {
        let name = text(item, "name")?;
        // The id names this data directory, not the one exported.
        if name == crate::auth::access::CLUSTER_ID {
            continue;
        }
        let value = item.get("value").cloned().unwrap_or(Value::Null);
        ticket = ticket.max(broker.access.put_global_parameter(name, value)?);
    }
    Ok(ticket)
}

/// A parameter from a definitions file; one of a component Warren does
/// not have (a RabbitMQ export's shovels or federation upstreams) is
/// skipped with a warning rather than failing the whole import.
fn import_parameter(broker: &Broker, item: &Value) -> ApiResult<u64> {
    let component = text(item, "component")?;
    if !parameters::is_known_component(component) {
        let parameter = item.get("name").and_then(Value::as_str).unwrap_or_default();
        tracing::warn!(
            component,
            parameter,
            "definitions: skipped a parameter of a component Warren does not have"
        );
        return Ok(0);
    }
    parameters::put_parameter(broker, item)
}

/// A policy from its definitions entry.
fn policy_of(item: &Value, operator: bool) -> ApiResult<PolicyDef> {
    Ok(PolicyDef {
        vhost: text(item, "vhost")?.into(),
        name: text(item, "name")?.into(),
        pattern: text(item, "pattern")?.into(),
        apply_to: item
            .get("apply-to")
            .and_then(Value::as_str)
            .unwrap_or("all")
            .into(),
        priority: item.get("priority").and_then(Value::as_i64).unwrap_or(0),
        definition: item.get("definition").cloned().unwrap_or(Value::Null),
        operator,
    })
}

async fn import_vhost(
    State(s): State<AppState>,
    c: Caller,
    Path(vh): Path<String>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    c.require_admin()?;
    let v = vhost(&s, &c, &vh)?;
    let broker = s.broker.clone();
    let ticket = blocking(move || import_into(&broker, &v, &body)).await?;
    wait_synced(&s, ticket).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A vhost's definitions (its objects, policies and parameters, whatever
/// vhost their items name); the sync round.
fn import_into(broker: &Broker, v: &VHost, body: &Value) -> ApiResult<u64> {
    if !body.is_object() {
        return Err(ApiError::bad_request("definitions must be a JSON object"));
    }
    let mut ticket = 0;
    for (key, kind) in OBJECTS {
        for item in list(body, key)? {
            ticket = ticket.max(import_object(v, kind, item)?);
        }
    }
    let here = |item: &Value| -> ApiResult<Value> {
        let Some(fields) = item.as_object() else {
            return Err(ApiError::bad_request(format!("not an object: {item}")));
        };
        let mut fields = fields.clone();
        fields.insert("vhost".into(), json!(&*v.name));
        Ok(Value::Object(fields))
    };
    for item in list(body, "policies")? {
        ticket = ticket.max(broker.put_policy(policy_of(&here(item)?, false)?)?);
    }
    for item in list(body, "parameters")? {
        ticket = ticket.max(import_parameter(broker, &here(item)?)?);
    }
    Ok(ticket)
}

/// Vhosts, users, permissions and topic permissions; the sync round.
fn import_access(broker: &Broker, body: &Value) -> ApiResult<u64> {
    let mut ticket = 0;
    for item in list(body, "vhosts")? {
        let def = VhostDef {
            name: text(item, "name")?.to_string(),
            description: item
                .pointer("/metadata/description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            tags: Vec::new(),
        };
        if !broker.access.has_vhost(&def.name) {
            ticket = ticket.max(broker.put_vhost(def)?.0);
        }
    }
    let legacy_md5 = body
        .get("rabbit_version")
        .and_then(Value::as_str)
        .is_some_and(|v| {
            ["3.0.", "3.1.", "3.2.", "3.3.", "3.4.", "3.5."]
                .iter()
                .any(|p| v.starts_with(p))
        });
    for item in list(body, "users")? {
        let mut item = item.clone();
        if legacy_md5 && item.get("hashing_algorithm").is_none() {
            item["hashing_algorithm"] = json!("rabbit_password_hashing_md5");
        }
        let def = user_from_body(text(&item, "name")?, &item)?;
        ticket = ticket.max(broker.access.put_user(def)?);
    }
    for item in list(body, "permissions")? {
        let def = PermissionDef {
            user: text(item, "user")?.into(),
            vhost: text(item, "vhost")?.into(),
            configure: text(item, "configure")?.into(),
            write: text(item, "write")?.into(),
            read: text(item, "read")?.into(),
        };
        ticket = ticket.max(broker.access.put_permission(def)?);
    }
    for item in list(body, "topic_permissions")? {
        let def = TopicPermissionDef {
            user: text(item, "user")?.into(),
            vhost: text(item, "vhost")?.into(),
            exchange: text(item, "exchange")?.into(),
            write: text(item, "write")?.into(),
            read: text(item, "read")?.into(),
        };
        ticket = ticket.max(broker.access.put_topic_permission(def)?);
    }
    Ok(ticket)
}

/// One exchange, queue or binding; the sync round.
fn import_object(v: &VHost, kind: Kind, item: &Value) -> ApiResult<u64> {
    let arguments = json_to_table(item.get("arguments").unwrap_or(&Value::Null))
        .map_err(ApiError::bad_request)?;
    if let Kind::Binding = kind {
        let dest = text(item, "destination")?;
        let dest = match text(item, "destination_type")? {
            "exchange" => Destination::Exchange(dest.into()),
            _ => Destination::Queue(dest.into()),
        };
        let key = item
            .get("routing_key")
            .and_then(Value::as_str)
            .unwrap_or_default();
        return Ok(v.bind(text(item, "source")?, dest, key, &arguments, API_CONNECTION)?);
    }
    let name = ShortString::from(text(item, "name")?);
    if let Kind::Exchange = kind {
        let d = exchange::Declare {
            exchange: name,
            kind: ShortString::from(text(item, "type")?),
            passive: false,
            durable: flag(item, "durable", true),
            auto_delete: flag(item, "auto_delete", false),
            internal: flag(item, "internal", false),
            nowait: false,
            arguments,
        };
        return Ok(v.declare_exchange(&d)?);
    }
    let d = queue::Declare {
        queue: name,
        passive: false,
        durable: flag(item, "durable", true),
        exclusive: false,
        auto_delete: flag(item, "auto_delete", false),
        nowait: false,
        arguments,
    };
    Ok(v.declare_queue(&d, API_CONNECTION)?.ticket)
}
