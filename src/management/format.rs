//! The JSON objects of the API: queues, exchanges and bindings as RabbitMQ
//! shows them (field names and shapes from RabbitMQ 3.10's answers), plus
//! the helpers every handler uses to find a vhost and format times.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::json::table_to_json;
use super::AppState;
use crate::broker::connections::{Totals, TotalsRates};
use crate::broker::exchange::{Binding, Destination, Exchange};
use crate::broker::queue::Queue;
use crate::broker::VHost;

/// The vhost named in a path: 404 if there is none, 401 if the caller
/// may not use it (administrators and monitors may use any; others need
/// permissions in it, as in RabbitMQ).
pub fn vhost(state: &AppState, caller: &Caller, name: &str) -> ApiResult<Arc<VHost>> {
    let v = state.broker.vhost(name).ok_or_else(ApiError::not_found)?;
    match sees_vhost(state, caller, name) {
        true => Ok(v),
        false => Err(ApiError::not_authorised(
            "User not authorised to access virtual host",
        )),
    }
}

/// The vhosts the caller may use, by name.
pub fn visible_vhosts(state: &AppState, caller: &Caller) -> Vec<Arc<VHost>> {
    let all = state.broker.vhosts();
    all.into_iter()
        .filter(|v| sees_vhost(state, caller, &v.name))
        .collect()
}

/// Whether the caller may see vhost `name`: monitors (administrators
/// included) see every vhost, others those they have permissions in.
pub fn sees_vhost(state: &AppState, caller: &Caller, name: &str) -> bool {
    caller.is_monitor() || state.broker.access.may_open(&caller.name, name)
}

/// `{"rate": r}`, RabbitMQ's `*_details`.
pub fn rate(r: f64) -> Value {
    json!(Rate::of(r))
}

/// `{"rate": r}` as a typed value (for the typed queue object).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Rate {
    rate: f64,
}

impl Rate {
    fn of(r: f64) -> Self {
        Rate {
            rate: (r * 10.0).round() / 10.0,
        }
    }
}

/// A queue as the API shows it. Typed rather than a `Value`: a list of
/// 10,000 queues is serialized straight from these.
#[derive(Debug, Serialize)]
pub struct QueueJson<'a> {
    name: Arc<str>,
    vhost: Arc<str>,
    #[serde(rename = "type")]
    kind: &'static str,
    node: &'a str,
    state: &'static str,
    durable: bool,
    auto_delete: bool,
    exclusive: bool,
    arguments: Value,
    policy: Option<String>,
    operator_policy: Option<String>,
    effective_policy_definition: Value,
    consumers: u64,
    consumer_utilisation: f64,
    consumer_capacity: f64,
    memory: u64,
    messages: u64,
    messages_details: Rate,
    messages_ready: u64,
    messages_ready_details: Rate,
    messages_unacknowledged: u64,
    messages_unacknowledged_details: Rate,
    message_bytes: u64,
    message_bytes_ready: u64,
    exclusive_consumer_tag: Option<String>,
    message_stats: MessageStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_since: Option<String>,
    /// A stream's replicas (this node) and readers per node, as RabbitMQ.
    #[serde(skip_serializing_if = "Option::is_none")]
    members: Option<[&'a str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    online: Option<[&'a str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    readers: Option<Value>,
    /// Warren's own: a stream's offsets, segments and consumers' lag.
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<Value>,
}

/// Warren's `stream` object of a stream queue: offsets, segments, bytes
/// on disk, retention, each consumer's offset and lag, tracked offsets.
fn stream_json(info: &crate::broker::stream::StreamInfo) -> Value {
    let log = &info.log;
    let consumers: Vec<Value> = info
        .readers
        .iter()
        .map(|r| json!({"consumer_tag": &*r.tag, "channel": r.channel, "offset": r.offset, "lag": r.lag}))
        .collect();
    let tracked: serde_json::Map<String, Value> = info
        .tracked
        .iter()
        .map(|(name, offset)| (name.clone(), json!(offset)))
        .collect();
    json!({
        "first_offset": log.first_offset,
        "last_offset": (log.next_offset > log.first_offset).then(|| log.next_offset - 1),
        "next_offset": log.next_offset,
        "messages": log.next_offset - log.first_offset,
        "segments": log.segments,
        "bytes": log.bytes,
        "max_length_bytes": info.retention.max_bytes,
        "max_age_ms": info.retention.max_age_ms,
        "max_segment_size_bytes": info.retention.segment_bytes,
        "consumers": consumers,
        "tracked_offsets": tracked,
    })
}

/// A queue's `message_stats`.
#[derive(Debug, Serialize)]
struct MessageStats {
    publish: u64,
    publish_details: Rate,
    deliver: u64,
    deliver_details: Rate,
    deliver_no_ack: u64,
    deliver_no_ack_details: Rate,
    get: u64,
    get_details: Rate,
    get_no_ack: u64,
    get_no_ack_details: Rate,
    deliver_get: u64,
    deliver_get_details: Rate,
    ack: u64,
    ack_details: Rate,
    redeliver: u64,
    redeliver_details: Rate,
}

/// A queue with its counters, gauges and rates.
/// A queue's unacked messages as the API counts them: a stream holds none
/// (its deliveries stay in the log).
pub fn queue_unacked(q: &Queue) -> u64 {
    match q.as_stream() {
        Some(_) => 0,
        None => q.stats.unacked(),
    }
}

pub fn queue<'a>(q: &Queue, node: &'a str) -> QueueJson<'a> {
    let g = q.gauges();
    let stream = q.as_stream().map(|s| s.info());
    let unacked = queue_unacked(q);
    let c = q.stats.counts();
    let r = q.stats.rates();
    let (ready_rate, unacked_rate) = q.stats.depth_rates();
    let active = q.stats.active_ms();
    let utilisation = (q.stats.utilisation() * 1000.0).round() / 1000.0;
    let applied = q.applied_policy();
    let idle = active > 0 && r.published == 0.0 && r.deliver_get() == 0.0 && r.acked == 0.0;
    QueueJson {
        name: q.name.clone(),
        vhost: q.vhost.clone(),
        kind: if stream.is_some() {
            "stream"
        } else {
            "classic"
        },
        node,
        state: "running",
        durable: q.durable,
        auto_delete: q.auto_delete,
        exclusive: q.exclusive_owner.is_some(),
        arguments: table_to_json(&q.arguments),
        effective_policy_definition: Value::Object(applied.definition()),
        policy: applied.policy.map(|p| p.name),
        operator_policy: applied.operator.map(|p| p.name),
        consumers: g.consumers,
        consumer_utilisation: utilisation,
        consumer_capacity: utilisation,
        memory: g.memory_bytes,
        messages: g.ready + unacked,
        messages_details: Rate::of(ready_rate + unacked_rate),
        messages_ready: g.ready,
        messages_ready_details: Rate::of(ready_rate),
        messages_unacknowledged: unacked,
        messages_unacknowledged_details: Rate::of(unacked_rate),
        message_bytes: g.ready_bytes,
        message_bytes_ready: g.ready_bytes,
        exclusive_consumer_tag: None,
        message_stats: MessageStats {
            publish: c.published,
            publish_details: Rate::of(r.published),
            deliver: c.delivered_ack,
            deliver_details: Rate::of(r.delivered_ack),
            deliver_no_ack: c.delivered_no_ack,
            deliver_no_ack_details: Rate::of(r.delivered_no_ack),
            get: c.get_ack,
            get_details: Rate::of(r.get_ack),
            get_no_ack: c.get_no_ack,
            get_no_ack_details: Rate::of(r.get_no_ack),
            deliver_get: c.deliver_get(),
            deliver_get_details: Rate::of(r.deliver_get()),
            ack: c.acked,
            ack_details: Rate::of(r.acked),
            redeliver: c.redelivered,
            redeliver_details: Rate::of(r.redelivered),
        },
        idle_since: idle.then(|| timestamp(active)),
        members: stream.as_ref().map(|_| [node]),
        online: stream.as_ref().map(|_| [node]),
        readers: stream.as_ref().map(|s| json!({ node: s.readers.len() })),
        stream: stream.as_ref().map(stream_json),
    }
}

/// RabbitMQ's `message_stats` of a channel or the node: counters since
/// start and their rates.
pub fn message_stats(totals: &Totals, r: &TotalsRates) -> Value {
    json!({
        "publish": totals.published, "publish_details": rate(r.published),
        "confirm": totals.confirmed, "confirm_details": rate(r.confirmed),
        "deliver_get": totals.deliver_get(), "deliver_get_details": rate(r.deliver_get),
        "deliver": totals.delivered_ack, "deliver_no_ack": totals.delivered_no_ack,
        "get": totals.get_ack, "get_no_ack": totals.get_no_ack, "get_empty": totals.get_empty,
        "ack": totals.acked, "ack_details": rate(r.acked),
        "redeliver": totals.redelivered, "redeliver_details": rate(r.redelivered),
        "return_unroutable": totals.unroutable_returned, "return_unroutable_details": rate(r.returned),
        "drop_unroutable": totals.unroutable_dropped, "drop_unroutable_details": rate(r.dropped),
    })
}

/// An exchange.
pub fn exchange(x: &Exchange, vhost: &str) -> Value {
    let (publish_in, publish_out) = x.stats.counts();
    let (rate_in, rate_out) = x.stats.rates();
    json!({
        "name": &*x.name,
        "vhost": vhost,
        "type": x.type_name(),
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": table_to_json(&x.arguments),
        "policy": x.policy_name(),
        "user_who_performed_action": "",
        "message_stats": {
            "publish_in": publish_in, "publish_in_details": rate(rate_in),
            "publish_out": publish_out, "publish_out_details": rate(rate_out),
        },
    })
}

/// A binding from `source`.
pub fn binding(vhost: &str, source: &str, b: &Binding) -> Value {
    let (dest, kind) = match &b.dest {
        Destination::Queue(q) => (q, "queue"),
        Destination::Exchange(x) => (x, "exchange"),
    };
    json!({
        "source": source,
        "vhost": vhost,
        "destination": &**dest,
        "destination_type": kind,
        "routing_key": &b.routing_key,
        "arguments": table_to_json(&b.arguments),
        "properties_key": properties_key(&b.routing_key, &table_to_json(&b.arguments)),
    })
}

/// The default exchange's implicit binding to a queue, as RabbitMQ lists it.
pub fn default_binding(vhost: &str, queue: &str) -> Value {
    json!({
        "source": "",
        "vhost": vhost,
        "destination": queue,
        "destination_type": "queue",
        "routing_key": queue,
        "arguments": {},
        "properties_key": properties_key(queue, &json!({})),
    })
}

/// The opaque key that names a binding in delete URLs: the routing key
/// (percent-encoded when shown in a URL by the client), `~` when it is
/// empty and there are no arguments, `key~hash` with arguments.
pub fn properties_key(routing_key: &str, arguments: &Value) -> String {
    let no_args = arguments.as_object().is_none_or(|m| m.is_empty());
    match (routing_key.is_empty(), no_args) {
        (true, true) => "~".to_string(),
        (false, true) => routing_key.to_string(),
        (_, false) => {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(arguments.to_string().as_bytes());
            use base64::Engine;
            let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..9]);
            format!("{routing_key}~{hash}")
        }
    }
}

/// Unix ms as RabbitMQ's API writes times: `2026-12-03T16:13:30.186+00:00`.
pub fn timestamp(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Unix ms as RabbitMQ's shovel status writes times: `2026-12-04 10:31:41`,
/// the hour unpadded (`9:05:00`: its format is `~w:~2.2.0w:~2.2.0w`).
pub fn datetime(ms: u64) -> String {
    let t = timestamp(ms);
    let hour = t[11..13].trim_start_matches('0');
    let hour = if hour.is_empty() { "0" } else { hour };
    format!("{} {hour}{}", &t[..10], &t[13..19])
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shovel_times_leave_the_hour_unpadded() {
        assert_eq!(datetime(0), "1970-01-01 0:00:00");
        assert_eq!(datetime(32_700_000), "1970-01-01 9:05:00");
        assert_eq!(datetime(79_199_000), "1970-01-01 21:59:59");
    }

    #[test]
    fn timestamps_in_rabbitmq_form() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000+00:00");
        assert_eq!(
            timestamp(1_796_314_410_186),
            "2026-12-03T16:13:30.186+00:00"
        );
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00.000+00:00");
    }

    #[test]
    fn properties_keys() {
        assert_eq!(properties_key("", &json!({})), "~");
        assert_eq!(properties_key("a.b", &json!({})), "a.b");
        let k = properties_key("a", &json!({"x": 1}));
        assert!(k.starts_with("a~") && k.len() > 3, "{k}");
        assert_ne!(k, properties_key("a", &json!({"x": 2})));
    }
}
