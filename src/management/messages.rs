//! Messages over HTTP: `POST /api/queues/{vhost}/{queue}/get` (with each of
//! RabbitMQ's ack modes) and `POST /api/exchanges/{vhost}/{exchange}/publish`.
//! Both go through the queue and routing code AMQP uses; a persistent
//! publish is answered once the store has synced it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::format::vhost;
use super::json::{json_to_properties, loose_u64, properties_to_json};
use super::queues::{parse_body, API_CONNECTION};
use super::{authz, wait_synced, AppState, Body};
use crate::auth::access::{Perm, Resource};
use crate::broker::message::{decode_properties, encode_properties, Message, QueuedMessage};
use crate::broker::queue::{Queue, Stored};

/// Most messages one get request takes.
const MAX_GET_COUNT: u64 = 10_000;

#[derive(Debug, Deserialize)]
struct GetBody {
    #[serde(default)]
    count: Value,
    ackmode: String,
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default)]
    truncate: Value,
}

/// What to do with the messages a get took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AckMode {
    AckRequeue,
    Ack,
    RejectRequeue,
    Reject,
}

impl AckMode {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ack_requeue_true" => AckMode::AckRequeue,
            "ack_requeue_false" => AckMode::Ack,
            "reject_requeue_true" => AckMode::RejectRequeue,
            "reject_requeue_false" => AckMode::Reject,
            _ => return None,
        })
    }
}

pub async fn get(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, name)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let body: GetBody = parse_body(body)?;
    let mode = AckMode::parse(&body.ackmode)
        .ok_or_else(|| ApiError::bad_request(format!("unknown ackmode {}", body.ackmode)))?;
    let count = match &body.count {
        Value::Null => 1,
        v => loose_u64(v).ok_or_else(|| ApiError::bad_request("count must be a number"))?,
    }
    .min(MAX_GET_COUNT);
    let base64 = match body.encoding.as_deref() {
        None | Some("auto") => false,
        Some("base64") => true,
        Some(other) => return Err(ApiError::bad_request(format!("unknown encoding {other}"))),
    };
    let truncate = loose_u64(&body.truncate).map(|t| t as usize);
    let q = vhost(&s, &c, &vh)?.queue(&name, API_CONNECTION)?;
    authz::allow(&s, &c, &vh, Perm::Read, Resource::Queue, &name)?;
    let mut taken: Vec<QueuedMessage> = Vec::new();
    let mut items = Vec::new();
    for _ in 0..count {
        let Some((m, remaining)) = q.get(false) else {
            break;
        };
        q.stats.got(true, m.redelivered);
        items.push(message_json(&q, &m, remaining, base64, truncate));
        taken.push(m);
    }
    settle(&q, taken, mode);
    Ok(Json(Value::Array(items)))
}

/// Settle what a get took, as its ack mode says.
fn settle(q: &Arc<Queue>, taken: Vec<QueuedMessage>, mode: AckMode) {
    q.stats.settled(taken.len() as u64, mode == AckMode::Ack);
    match mode {
        AckMode::AckRequeue | AckMode::RejectRequeue => q.requeue(taken),
        AckMode::Ack => q.settle(taken.iter().filter_map(|m| m.disk)),
        AckMode::Reject => q.discard(taken),
    }
    q.dispatch();
}

fn message_json(
    q: &Queue,
    m: &QueuedMessage,
    remaining: u32,
    base64: bool,
    truncate: Option<usize>,
) -> Value {
    let properties = properties_json(&q.delivery_properties(m, true));
    let body = &m.message.body;
    let shown = &body[..truncate.map_or(body.len(), |t| t.min(body.len()))];
    let (payload, encoding) = payload_json(shown, base64);
    json!({
        "payload_bytes": body.len(),
        "redelivered": m.redelivered,
        "exchange": &*m.message.exchange,
        "routing_key": &*m.message.routing_key,
        "message_count": remaining,
        "properties": properties,
        "payload": payload,
        "payload_encoding": encoding,
    })
}

/// Encoded properties as the API shows them (`{}` if they do not decode).
pub fn properties_json(raw: &[u8]) -> Value {
    decode_properties(raw)
        .map(|p| properties_to_json(&p))
        .unwrap_or_else(|| json!({}))
}

/// A payload as the API shows it: text when it is UTF-8 (and `base64` is
/// not asked for), else base64; with its `payload_encoding`.
pub fn payload_json(shown: &[u8], base64: bool) -> (String, &'static str) {
    match std::str::from_utf8(shown) {
        Ok(text) if !base64 => (text.to_string(), "string"),
        _ => (
            base64::engine::general_purpose::STANDARD.encode(shown),
            "base64",
        ),
    }
}

#[derive(Debug, Deserialize)]
struct PublishBody {
    #[serde(default)]
    routing_key: String,
    #[serde(default)]
    payload: String,
    #[serde(default)]
    payload_encoding: Option<String>,
    #[serde(default)]
    properties: Value,
}

pub async fn publish(
    State(s): State<AppState>,
    c: Caller,
    Path((vh, exchange)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let body: PublishBody = parse_body(body)?;
    let v = vhost(&s, &c, &vh)?;
    let exchange = match exchange.as_str() {
        "amq.default" => String::new(),
        _ => exchange,
    };
    if body.routing_key.len() > 255 {
        return Err(ApiError::bad_request(
            "routing_key is longer than 255 bytes",
        ));
    }
    authz::allow(&s, &c, &vh, Perm::Write, Resource::Exchange, &exchange)?;
    if v.is_topic_exchange(&exchange) {
        s.broker
            .access
            .check_topic(&c.name, &vh, &exchange, &body.routing_key, Perm::Write)
            .map_err(authz::refused)?;
    }
    let payload = match body.payload_encoding.as_deref() {
        None | Some("string") => Bytes::from(body.payload.into_bytes()),
        Some("base64") => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(body.payload.trim())
                .map_err(|e| ApiError::bad_request(format!("payload is not base64: {e}")))?,
        ),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown payload_encoding {other}"
            )))
        }
    };
    if payload.len() as u64 > s.broker.config.max_message_size {
        return Err(ApiError::bad_request(
            "payload larger than max_message_size",
        ));
    }
    let props = json_to_properties(&body.properties).map_err(ApiError::bad_request)?;
    if props
        .user_id()
        .as_ref()
        .is_some_and(|u| u.as_str() != c.name)
    {
        return Err(ApiError::bad_request(format!(
            "user_id property set to '{}' but authenticated user was '{}'",
            props.user_id().as_ref().map_or("", |u| u.as_str()),
            c.name
        )));
    }
    let expiration_ms =
        match props.expiration() {
            None => None,
            Some(e) => Some(e.as_str().parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("invalid expiration '{}'", e.as_str()))
            })?),
        };
    let properties = encode_properties(&props)
        .ok_or_else(|| ApiError::bad_request("properties cannot be encoded"))?;
    let rk = body.routing_key.as_str();
    let mut queues = Vec::new();
    v.route(&exchange, &[rk], Some(&props), &mut queues)?;
    let message = Arc::new(Message {
        exchange: Arc::from(exchange.as_str()),
        routing_key: Arc::from(rk),
        persistent: props.delivery_mode() == &Some(2),
        expiration_ms,
        properties,
        body: payload,
    });
    let mut stored = Stored::Done;
    for q in &queues {
        stored = stored.and(q.publish(message.clone()));
    }
    if stored == Stored::Failed {
        return Err(ApiError::internal("the store refused the message"));
    }
    wait_synced(&s, stored.sync_round()).await?;
    Ok(Json(json!({ "routed": !queues.is_empty() })))
}
