//! Health checks as RabbitMQ answers them (200 `{"status":"ok"}`, 503 with
//! a reason), and `/api/aliveness-test/{vhost}`, which really declares a
//! queue, publishes to it and gets the message back.

use std::sync::Arc;

use amq_protocol::protocol::queue;
use amq_protocol::types::{FieldTable, ShortString};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::json;

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::format::vhost;
use super::queues::API_CONNECTION;
use super::AppState;
use crate::broker::message::Message;

/// RabbitMQ's status for a failed check.
const FAILED: StatusCode = StatusCode::SERVICE_UNAVAILABLE;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health/checks/alarms", get(alarms))
        .route("/health/checks/local-alarms", get(alarms))
        .route("/health/checks/port-listener/{port}", get(port_listener))
        .route(
            "/health/checks/protocol-listener/{protocol}",
            get(protocol_listener),
        )
        .route("/health/checks/virtual-hosts", get(ok))
        .route("/health/checks/node-is-quorum-critical", get(ok))
        .route("/health/checks/node-is-mirror-sync-critical", get(ok))
        .route("/health/checks/is-in-service", get(ok))
        .route("/health/checks/ready-to-serve-clients", get(ok))
        .route("/aliveness-test/{vhost}", get(aliveness))
        // RabbitMQ 3.10's deprecated node check: the node answers.
        .route("/healthchecks/node", get(ok))
        .route("/healthchecks/node/{node}", get(node_ok))
}

async fn node_ok(
    State(s): State<AppState>,
    c: Caller,
    Path(node): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match node == s.broker.node_name {
        true => Ok(ok(c).await),
        false => Err(ApiError::not_found()),
    }
}

async fn ok(_c: Caller) -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn alarms(State(s): State<AppState>, _c: Caller) -> Response {
    let a = s.broker.alarms.current();
    if !a.any() {
        return Json(json!({"status": "ok"})).into_response();
    }
    let node = &s.broker.node_name;
    let mut list = Vec::new();
    if a.memory {
        list.push(json!({"resource": "memory", "node": node}));
    }
    if a.disk {
        list.push(json!({"resource": "disk", "node": node}));
    }
    let body = json!({"status": "failed", "reason": "There are alarms in effect in the cluster", "alarms": list});
    (FAILED, Json(body)).into_response()
}

async fn port_listener(
    State(s): State<AppState>,
    _c: Caller,
    Path(port): Path<String>,
) -> ApiResult<Response> {
    let port: u16 = port
        .parse()
        .map_err(|_| ApiError::bad_request("Invalid port"))?;
    let ports: Vec<u16> = s.listeners.iter().map(|l| l.addr.port()).collect();
    Ok(match ports.contains(&port) {
        true => Json(json!({"status": "ok", "port": port})).into_response(),
        false => {
            let body = json!({"status": "failed", "reason": "No active listener", "missing": port, "ports": ports});
            (FAILED, Json(body)).into_response()
        }
    })
}

async fn protocol_listener(
    State(s): State<AppState>,
    _c: Caller,
    Path(protocol): Path<String>,
) -> Response {
    let wanted = match protocol.to_ascii_lowercase().as_str() {
        "amqp" | "amqp091" | "amqp0-9-1" | "amqp0.9.1" => "amqp",
        "amqps" | "amqp/ssl" => "amqp/ssl",
        "http" | "management" => "http",
        "https" => "https",
        "prometheus" | "http/prometheus" => "http/prometheus",
        "https/prometheus" => "https/prometheus",
        other => return unknown_protocol(&s, other),
    };
    match s.listeners.iter().any(|l| l.protocol == wanted) {
        true => Json(json!({"status": "ok", "protocols": [wanted]})).into_response(),
        false => unknown_protocol(&s, wanted),
    }
}

fn unknown_protocol(s: &AppState, wanted: &str) -> Response {
    let protocols: Vec<&str> = s.listeners.iter().map(|l| l.protocol).collect();
    let body = json!({"status": "failed", "reason": "No active listener", "missing": wanted, "protocols": protocols});
    (FAILED, Json(body)).into_response()
}

async fn aliveness(
    State(s): State<AppState>,
    c: Caller,
    Path(vh): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let v = vhost(&s, &c, &vh)?;
    let name = "aliveness-test";
    let d = queue::Declare {
        queue: ShortString::from(name),
        passive: false,
        durable: false,
        exclusive: false,
        auto_delete: false,
        nowait: false,
        arguments: FieldTable::default(),
    };
    v.declare_queue(&d, API_CONNECTION)?;
    let q = v.queue(name, API_CONNECTION)?;
    let message = Arc::new(Message {
        exchange: Arc::from(""),
        routing_key: Arc::from(name),
        persistent: false,
        expiration_ms: None,
        properties: crate::broker::message::encode_properties(&Default::default())
            .unwrap_or_default(),
        body: Bytes::from_static(b"test_message"),
    });
    q.publish(message);
    match q.get(true) {
        Some((m, _)) if &m.message.body[..] == b"test_message" => Ok(Json(json!({"status": "ok"}))),
        _ => Err(ApiError {
            status: FAILED,
            error: "failed",
            reason: "the aliveness-test message did not come back".into(),
        }),
    }
}
