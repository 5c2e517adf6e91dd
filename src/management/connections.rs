//! `/api/connections`, `/api/channels` and `/api/consumers`: what the
//! node's registry holds (each connection's last one-second snapshot), and
//! closing a connection (`DELETE`, with an optional `X-Reason` header).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::format::{message_stats, rate, vhost};
use super::json::table_to_json;
use super::listing::{respond, respond_one, unsorted, Params};
use super::AppState;
use crate::broker::connections::{ChannelSnapshot, ConnectionEntry, TlsInfo};

/// RabbitMQ's reason when none is given.
const DEFAULT_REASON: &str = "Closed via management plugin";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/connections", get(list))
        .route("/connections/{name}", get(show).delete(close))
        .route("/connections/{name}/channels", get(channels_of))
        .route(
            "/connections/username/{user}",
            get(of_user).delete(close_user),
        )
        .route("/vhosts/{vhost}/connections", get(list_vhost))
        .route("/channels", get(channels))
        .route("/channels/{name}", get(channel))
        .route("/vhosts/{vhost}/channels", get(channels_vhost))
        .route("/consumers", get(consumers))
        .route("/consumers/{vhost}", get(consumers_vhost))
}

fn connection_json(c: &ConnectionEntry, node: &str) -> Value {
    let mut v = connection_fields(c, node);
    if let Value::Object(m) = &mut v {
        m.extend(tls_fields(c.tls.as_ref()));
    }
    v
}

/// RabbitMQ's `ssl*` and `peer_cert*` fields (null on plain TCP).
fn tls_fields(tls: Option<&TlsInfo>) -> serde_json::Map<String, Value> {
    let (kx, cipher, hash) = tls
        .map(|t| suite_parts(&t.cipher_suite))
        .unwrap_or_default();
    let fields = json!({
        "ssl": tls.is_some(),
        "ssl_protocol": tls.map(|t| t.protocol.as_str()),
        "ssl_key_exchange": tls.map(|_| kx),
        "ssl_cipher": tls.map(|_| cipher),
        "ssl_hash": tls.map(|_| hash),
        "peer_cert_subject": tls.and_then(|t| t.peer_subject.as_deref()),
        "peer_cert_issuer": tls.and_then(|t| t.peer_issuer.as_deref()),
        "peer_cert_validity": tls.and_then(|t| t.peer_validity.as_deref()),
    });
    match fields {
        Value::Object(m) => m,
        _ => Default::default(),
    }
}

/// A suite's key exchange, cipher and hash in Erlang's lower-case names:
/// `TLS13_AES_256_GCM_SHA384` → (`any`, `aes_256_gcm`, `sha384`);
/// `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256` → (`ecdhe_rsa`, `aes_128_gcm`, `sha256`).
fn suite_parts(suite: &str) -> (String, String, String) {
    let lower = suite.to_ascii_lowercase();
    let (kx, rest) = match lower.strip_prefix("tls13_") {
        Some(rest) => ("any", rest),
        None => lower
            .trim_start_matches("tls_")
            .split_once("_with_")
            .unwrap_or(("", &lower)),
    };
    let (cipher, hash) = rest.rsplit_once('_').unwrap_or((rest, ""));
    (kx.to_string(), cipher.to_string(), hash.to_string())
}

fn connection_fields(c: &ConnectionEntry, node: &str) -> Value {
    let snap = c.snapshot();
    json!({
        "name": c.name,
        "node": node,
        "vhost": &*c.vhost,
        "user": c.user,
        "user_who_performed_action": c.user,
        "protocol": "AMQP 0-9-1",
        "type": "network",
        "state": if snap.blocked { "blocked" } else { "running" },
        "host": c.local.ip().to_string(),
        "port": c.local.port(),
        "peer_host": c.peer.ip().to_string(),
        "peer_port": c.peer.port(),
        "auth_mechanism": c.auth_mechanism,
        "connected_at": c.connected_at_ms,
        "client_properties": table_to_json(&c.client_properties),
        "channels": snap.channels.len(),
        "channel_max": c.channel_max,
        "frame_max": c.frame_max,
        "timeout": c.heartbeat_s,
        "recv_oct": snap.totals.recv_oct,
        "recv_oct_details": rate(snap.rates.recv_oct),
        "send_oct": snap.totals.send_oct,
        "send_oct_details": rate(snap.rates.send_oct),
    })
}

fn channel_json(c: &ConnectionEntry, ch: &ChannelSnapshot, node: &str) -> Value {
    json!({
        "name": format!("{} ({})", c.name, ch.number),
        "number": ch.number,
        "node": node,
        "vhost": &*c.vhost,
        "user": c.user,
        "user_who_performed_action": c.user,
        "state": "running",
        "connection_details": {"name": c.name, "peer_host": c.peer.ip().to_string(), "peer_port": c.peer.port()},
        "consumer_count": ch.consumers.len(),
        "confirm": ch.confirm,
        "transactional": ch.transactional,
        "prefetch_count": ch.prefetch_count,
        "global_prefetch_count": ch.global_prefetch_count,
        "messages_unacknowledged": ch.unacked,
        "messages_unconfirmed": ch.unconfirmed,
        "messages_uncommitted": 0,
        "acks_uncommitted": 0,
        "message_stats": message_stats(&ch.totals, &ch.rates),
    })
}

/// Connections the caller may see, optionally of one vhost.
fn visible(s: &AppState, c: &Caller, vhost: Option<&str>) -> Vec<std::sync::Arc<ConnectionEntry>> {
    s.broker
        .connections
        .list()
        .into_iter()
        .filter(|e| c.may_see_user(&e.user) && vhost.is_none_or(|v| *e.vhost == *v))
        .collect()
}

/// An open connection the caller may see, by name; else a 404.
pub fn find_connection(
    s: &AppState,
    c: &Caller,
    name: &str,
) -> ApiResult<std::sync::Arc<ConnectionEntry>> {
    s.broker
        .connections
        .by_name(name)
        .filter(|e| c.may_see_user(&e.user))
        .ok_or_else(ApiError::not_found)
}

async fn list(
    State(s): State<AppState>,
    c: Caller,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    let node = &s.broker.node_name;
    let items = visible(&s, &c, None)
        .iter()
        .map(|e| connection_json(e, node))
        .collect();
    Ok(Json(respond(items, &p)?))
}

async fn list_vhost(
    State(s): State<AppState>,
    c: Caller,
    Path(vh): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    vhost(&s, &c, &vh)?;
    let node = &s.broker.node_name;
    let items = visible(&s, &c, Some(&vh))
        .iter()
        .map(|e| connection_json(e, node))
        .collect();
    Ok(Json(respond(items, &p)?))
}

async fn show(
    State(s): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    let e = find_connection(&s, &c, &name)?;
    Ok(Json(respond_one(
        connection_json(&e, &s.broker.node_name),
        &p,
    )))
}

async fn close(
    State(s): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let e = find_connection(&s, &c, &name)?;
    if !(c.name == e.user || c.tags.iter().any(|t| t == "administrator")) {
        return Err(ApiError::not_authorised("Not administrator user"));
    }
    let reason = headers
        .get("x-reason")
        .and_then(|r| r.to_str().ok())
        .unwrap_or(DEFAULT_REASON);
    tracing::info!(connection = %e.name, by = %c.name, reason, "closing a connection through the management API");
    e.close(reason);
    Ok(StatusCode::NO_CONTENT)
}

async fn of_user(
    State(s): State<AppState>,
    c: Caller,
    Path(user): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    let node = &s.broker.node_name;
    let items = visible(&s, &c, None)
        .iter()
        .filter(|e| e.user == user)
        .map(|e| connection_json(e, node))
        .collect();
    Ok(Json(respond(items, &p)?))
}

async fn close_user(
    State(s): State<AppState>,
    c: Caller,
    Path(user): Path<String>,
) -> ApiResult<StatusCode> {
    c.require_admin()?;
    for e in s
        .broker
        .connections
        .list()
        .iter()
        .filter(|e| e.user == user)
    {
        e.close(DEFAULT_REASON);
    }
    Ok(StatusCode::NO_CONTENT)
}

fn channel_items(s: &AppState, conns: &[std::sync::Arc<ConnectionEntry>]) -> Vec<Value> {
    let node = &s.broker.node_name;
    conns
        .iter()
        .flat_map(|e| {
            let snap = e.snapshot();
            snap.channels
                .iter()
                .map(|ch| channel_json(e, ch, node))
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn channels_of(
    State(s): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    let e = find_connection(&s, &c, &name)?;
    Ok(Json(respond(channel_items(&s, &[e]), &p)?))
}

async fn channels(
    State(s): State<AppState>,
    c: Caller,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    let items = channel_items(&s, &visible(&s, &c, None));
    Ok(Json(respond(items, &p)?))
}

async fn channels_vhost(
    State(s): State<AppState>,
    c: Caller,
    Path(vh): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    vhost(&s, &c, &vh)?;
    let items = channel_items(&s, &visible(&s, &c, Some(&vh)));
    Ok(Json(respond(items, &p)?))
}

async fn channel(
    State(s): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    let found = channel_items(&s, &visible(&s, &c, None))
        .into_iter()
        .find(|ch| ch["name"] == *name)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(respond_one(found, &p)))
}

fn consumer_items(s: &AppState, conns: &[std::sync::Arc<ConnectionEntry>]) -> Vec<Value> {
    let node = &s.broker.node_name;
    let mut out = Vec::new();
    for e in conns {
        for ch in e.snapshot().channels {
            let details = json!({
                "name": format!("{} ({})", e.name, ch.number),
                "number": ch.number,
                "connection_name": e.name,
                "peer_host": e.peer.ip().to_string(),
                "peer_port": e.peer.port(),
                "user": e.user,
                "node": node,
            });
            for c in &ch.consumers {
                out.push(json!({
                    "consumer_tag": &*c.tag,
                    "queue": {"name": &*c.queue, "vhost": &*e.vhost},
                    "channel_details": details,
                    "ack_required": c.ack_required,
                    "exclusive": c.exclusive,
                    "prefetch_count": c.prefetch,
                    "arguments": table_to_json(&c.arguments),
                    "active": true,
                    "activity_status": "up",
                    "consumer_timeout": 0,
                }));
            }
        }
    }
    out
}

/// The consumers of one queue (the `consumer_details` of its page), as
/// far as the caller may see their connections.
pub(super) fn queue_consumers(s: &AppState, c: &Caller, vhost: &str, queue: &str) -> Vec<Value> {
    consumer_items(s, &visible(s, c, Some(vhost)))
        .into_iter()
        .filter(|item| item["queue"]["name"] == queue)
        .collect()
}

async fn consumers(
    State(s): State<AppState>,
    c: Caller,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    let items = consumer_items(&s, &visible(&s, &c, None));
    Ok(Json(respond(items, &unsorted(&p))?))
}

async fn consumers_vhost(
    State(s): State<AppState>,
    c: Caller,
    Path(vh): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    vhost(&s, &c, &vh)?;
    let items = consumer_items(&s, &visible(&s, &c, Some(&vh)));
    Ok(Json(respond(items, &unsorted(&p))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_split_into_erlang_names() {
        assert_eq!(
            suite_parts("TLS13_AES_256_GCM_SHA384"),
            ("any".into(), "aes_256_gcm".into(), "sha384".into())
        );
        assert_eq!(
            suite_parts("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
            (
                "ecdhe_rsa".into(),
                "chacha20_poly1305".into(),
                "sha256".into()
            )
        );
    }
}
