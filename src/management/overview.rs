//! The node as a whole: `/api/overview` (totals, rates, listeners),
//! `/api/nodes`, `/api/cluster-name`, and the feature lists newer tools
//! ask for (`/api/feature-flags`, `/api/deprecated-features`,
//! `/api/extensions`).

use std::sync::atomic::Ordering::Relaxed;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::format::rate;
use super::listing::{respond, respond_one, Params};
use super::{wait_synced, AppState, Body};

/// The RabbitMQ version Warren answers as (tools check it to pick routes
/// and fields; Warren serves 3.13's API).
pub const RABBITMQ_VERSION: &str = "3.13.7";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/overview", get(overview))
        .route("/cluster-name", get(cluster_name).put(set_cluster_name))
        .route("/nodes", get(nodes))
        .route("/nodes/{node}", get(node))
        .route("/extensions", get(empty))
        .route("/feature-flags", get(empty))
        .route("/deprecated-features", get(empty))
        .route("/deprecated-features/used", get(empty))
}

fn exchange_types() -> Value {
    let t = |name: &str, description: &str| json!({"name": name, "description": description, "enabled": true});
    json!([
        t(
            "direct",
            "AMQP direct exchange, as per the AMQP specification"
        ),
        t(
            "fanout",
            "AMQP fanout exchange, as per the AMQP specification"
        ),
        t(
            "headers",
            "AMQP headers exchange, as per the AMQP specification"
        ),
        t(
            "topic",
            "AMQP topic exchange, as per the AMQP specification"
        ),
        t("x-delayed-message", "Delayed Message Exchange"),
        t("x-consistent-hash", "Consistent Hashing Exchange"),
    ])
}

fn listeners(s: &AppState) -> Value {
    let node = &s.broker.node_name;
    Value::Array(
        s.listeners
            .iter()
            .map(|l| {
                json!({"node": node, "protocol": l.protocol, "ip_address": l.addr.ip().to_string(),
                       "port": l.addr.port(), "socket_opts": {}})
            })
            .collect(),
    )
}

async fn overview(State(s): State<AppState>, c: Caller, Query(p): Query<Params>) -> Json<Value> {
    let b = &s.broker;
    let totals = b.connections.totals();
    let r = s.sampler.node_rates();
    let (mut queues, mut exchanges, mut ready, mut unacked, mut consumers) = (0, 0, 0, 0, 0);
    let (mut ready_rate, mut unacked_rate) = (0.0, 0.0);
    let mut churn = (0, 0, 0);
    for v in b.vhosts() {
        exchanges += v.exchanges().len();
        let (d, c, x) = v.queue_churn();
        churn = (churn.0 + d, churn.1 + c, churn.2 + x);
        for q in v.queues() {
            let g = q.gauges();
            queues += 1;
            ready += g.ready;
            consumers += g.consumers;
            unacked += q.stats.unacked();
            let (r, u) = q.stats.depth_rates();
            (ready_rate, unacked_rate) = (ready_rate + r, unacked_rate + u);
        }
    }
    let channels: usize = b
        .connections
        .list()
        .iter()
        .map(|e| e.snapshot().channels.len())
        .sum();
    let mut v = json!({
        "management_version": RABBITMQ_VERSION,
        "rates_mode": "basic",
        "sample_retention_policies": {"global": [600, 3600, 28800, 86400], "basic": [600, 3600], "detailed": [600]},
        "exchange_types": exchange_types(),
        "product_version": env!("CARGO_PKG_VERSION"),
        "product_name": "Warren",
        "rabbitmq_version": RABBITMQ_VERSION,
        "cluster_name": b.cluster_name(),
        "cluster_tags": {},
        "node_tags": {},
        "erlang_version": "none (Rust)",
        "erlang_full_version": "none (Rust)",
        "crypto_lib_version": "",
        "disable_stats": false,
        "default_queue_type": "classic",
        "is_op_policy_updating_enabled": true,
        "enable_queue_totals": false,
        "require_definition_json_extension": false,
        "statistics_db_event_queue": 0,
        "message_stats": super::format::message_stats(&totals, &r),
        "churn_rates": {
            "connection_created": b.connections.opened_total.load(Relaxed),
            "connection_closed": b.connections.closed_total.load(Relaxed),
            "channel_created": b.connections.channels_opened_total.load(Relaxed),
            "channel_closed": b.connections.channels_closed_total.load(Relaxed),
            "queue_declared": churn.0,
            "queue_created": churn.1,
            "queue_deleted": churn.2,
        },
        "queue_totals": {
            "messages": ready + unacked, "messages_details": rate(ready_rate + unacked_rate),
            "messages_ready": ready, "messages_ready_details": rate(ready_rate),
            "messages_unacknowledged": unacked, "messages_unacknowledged_details": rate(unacked_rate),
        },
        "object_totals": {
            "connections": b.connections.count(), "channels": channels,
            "exchanges": exchanges, "queues": queues, "consumers": consumers,
        },
    });
    if c.is_monitor() {
        v["node"] = Value::from(b.node_name.clone());
        v["listeners"] = listeners(&s);
        v["contexts"] = json!([{"node": b.node_name, "description": "Warren management API",
                                "path": "/", "port": s.listeners.iter().find(|l| l.protocol == "http").map(|l| l.addr.port().to_string())}]);
    }
    Json(respond_one(v, &p))
}

async fn cluster_name(State(s): State<AppState>, _c: Caller) -> Json<Value> {
    Json(json!({"name": s.broker.cluster_name()}))
}

/// `PUT /api/cluster-name` `{"name": ...}`: sets the `cluster_name`
/// global parameter.
async fn set_cluster_name(
    State(s): State<AppState>,
    c: Caller,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    c.require_admin()?;
    let name = match body.get("name") {
        Some(Value::String(n)) if !n.is_empty() => n.clone(),
        _ => return Err(ApiError::bad_request("name must be a non-empty string")),
    };
    let ticket = s
        .broker
        .access
        .put_global_parameter("cluster_name", Value::String(name))?;
    wait_synced(&s, ticket).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// This node's facts (read on a blocking thread: they come from /proc).
async fn node_json(s: &AppState) -> Value {
    let b = s.broker.clone();
    let readings = b.alarms.readings();
    let alarms = b.alarms.current();
    let fds = tokio::task::spawn_blocking(|| {
        std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
    })
    .await
    .unwrap_or(0);
    let fd_total = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft);
    let uptime_ms = b.started.elapsed().as_millis().min(u128::from(u32::MAX)) as u64;
    json!({
        "name": b.node_name,
        "type": "disc",
        "running": true,
        "being_drained": false,
        "uptime": uptime_ms,
        "run_queue": 0,
        "processors": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "os_pid": std::process::id().to_string(),
        "fd_used": fds,
        "fd_total": fd_total,
        "sockets_used": b.connections.count(),
        "sockets_total": b.config.max_connections,
        "proc_used": 0,
        "proc_total": 0,
        "mem_used": readings.memory_used,
        "mem_limit": readings.memory_limit,
        "mem_alarm": alarms.memory,
        "disk_free": readings.disk_free,
        "disk_free_limit": readings.disk_free_limit,
        "disk_free_alarm": alarms.disk,
        "rates_mode": "basic",
        "enabled_plugins": ["rabbitmq_management", "rabbitmq_prometheus"],
        "exchange_types": exchange_types(),
        "applications": [],
        "partitions": [],
        "net_ticktime": 60,
        "config_files": [],
        "log_files": [],
        "db_dir": b.config.data_dir.display().to_string(),
    })
}

async fn nodes(
    State(s): State<AppState>,
    _c: Caller,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    Ok(Json(respond(vec![node_json(&s).await], &p)?))
}

async fn node(
    State(s): State<AppState>,
    _c: Caller,
    Path(name): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    if name != s.broker.node_name {
        return Err(ApiError::not_found());
    }
    Ok(Json(respond_one(node_json(&s).await, &p)))
}

async fn empty(_c: Caller) -> Json<Value> {
    Json(json!([]))
}
