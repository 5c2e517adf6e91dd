//! The Prometheus endpoint on its own port (15692): `/metrics` (node-wide
//! sums) and `/metrics/per-object` (per queue), in the text format with
//! RabbitMQ's metric names, types and labels, so Grafana dashboard 10991
//! works unchanged. Unauthenticated, as RabbitMQ's is by default.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use super::overview::RABBITMQ_VERSION;
use crate::broker::connections::MESSAGE_SIZE_BOUNDS;
use crate::broker::queue::Gauges;
use crate::broker::Broker;

/// The protocol label of the global counters.
const PROTOCOL: &str = "protocol=\"amqp091\"";
/// The queue-type label of delivery counters.
const QUEUE_TYPE: &str = "queue_type=\"rabbit_classic_queue\"";

/// The endpoint's routes.
pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/metrics", get(aggregated))
        .route("/metrics/per-object", get(per_object))
        .with_state(broker)
}

/// Serve metrics on `listener` until `shutdown`.
pub async fn serve(
    listeners: Vec<super::http::Bound>,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) {
    super::http::serve_all(listeners, router(broker), shutdown, "prometheus").await;
}

async fn aggregated(State(b): State<Arc<Broker>>) -> impl IntoResponse {
    text(render(&b, false).await)
}

async fn per_object(State(b): State<Arc<Broker>>) -> impl IntoResponse {
    text(render(&b, true).await)
}

fn text(body: String) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
}

/// The text exposition, built on a blocking thread (it reads every queue
/// and /proc).
async fn render(b: &Arc<Broker>, per_object: bool) -> String {
    let b = b.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = Exposition::default();
        identity(&mut out, &b, per_object);
        queues(&mut out, &b, per_object);
        traffic(&mut out, &b);
        process(&mut out, &b);
        out.0
    })
    .await
    .unwrap_or_default()
}

/// A text exposition being written.
#[derive(Default)]
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# TYPE {name} {kind}\n# HELP {name} {help}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        match labels.is_empty() {
            true => {
                let _ = writeln!(self.0, "{name} {value}");
            }
            false => {
                let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
            }
        }
    }

    fn one(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        labels: &str,
        value: impl std::fmt::Display,
    ) {
        self.family(name, kind, help);
        self.sample(name, labels, value);
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn identity(out: &mut Exposition, b: &Broker, per_object: bool) {
    let endpoint = if per_object {
        "per-object"
    } else {
        "aggregated"
    };
    let node = esc(&b.node_name);
    let cluster = esc(&b.cluster_name());
    let id = match b.access.global_parameter(crate::auth::access::CLUSTER_ID) {
        Some(serde_json::Value::String(id)) => esc(&id),
        _ => format!("warren-{node}"),
    };
    out.one(
        "rabbitmq_identity_info",
        "untyped",
        "RabbitMQ node & cluster identity info",
        &format!("rabbitmq_node=\"{node}\",rabbitmq_cluster=\"{cluster}\",rabbitmq_cluster_permanent_id=\"{id}\",rabbitmq_endpoint=\"{endpoint}\""),
        1,
    );
    out.one(
        "rabbitmq_build_info",
        "untyped",
        "RabbitMQ & Erlang/OTP version info",
        &format!(
            "rabbitmq_version=\"{RABBITMQ_VERSION}\",prometheus_plugin_version=\"{v}\",prometheus_client_version=\"{v}\",erlang_version=\"none\",product_name=\"Warren\",product_version=\"{v}\"",
            v = env!("CARGO_PKG_VERSION")
        ),
        1,
    );
    out.one(
        "rabbitmq_erlang_uptime_seconds",
        "gauge",
        "Node uptime",
        "",
        b.started.elapsed().as_secs_f64(),
    );
}

/// A per-queue metric family: name, help, and how to read it off a row.
type QueueFamily = (&'static str, &'static str, fn(&Row) -> u64);

/// One queue's figures.
struct Row {
    labels: String,
    gauges: Gauges,
    unacked: u64,
    published: u64,
}

fn queues(out: &mut Exposition, b: &Broker, per_object: bool) {
    let mut rows = Vec::new();
    let (mut declared, mut created, mut deleted) = (0, 0, 0);
    for v in b.vhosts() {
        let (d, c, x) = v.queue_churn();
        (declared, created, deleted) = (declared + d, created + c, deleted + x);
        for q in v.queues() {
            let labels = format!("vhost=\"{}\",queue=\"{}\"", esc(&v.name), esc(&q.name));
            rows.push(Row {
                labels,
                gauges: q.gauges(),
                unacked: q.stats.unacked(),
                published: q.stats.counts().published,
            });
        }
    }
    let gauges: [QueueFamily; 6] = [
        (
            "rabbitmq_queue_messages_ready",
            "Messages ready to be delivered to consumers",
            |r| r.gauges.ready,
        ),
        (
            "rabbitmq_queue_messages_unacked",
            "Messages delivered to consumers but not yet acknowledged",
            |r| r.unacked,
        ),
        (
            "rabbitmq_queue_messages",
            "Sum of ready and unacknowledged messages - total queue depth",
            |r| r.gauges.ready + r.unacked,
        ),
        (
            "rabbitmq_queue_messages_bytes",
            "Size in bytes of ready messages",
            |r| r.gauges.ready_bytes,
        ),
        ("rabbitmq_queue_consumers", "Consumers on a queue", |r| {
            r.gauges.consumers
        }),
        (
            "rabbitmq_queue_messages_published_total",
            "Total number of messages published to queues",
            |r| r.published,
        ),
    ];
    for (name, help, get) in gauges {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        out.family(name, kind, help);
        match per_object {
            true => rows
                .iter()
                .for_each(|r| out.sample(name, &r.labels, get(r))),
            false => out.sample(name, "", rows.iter().map(get).sum::<u64>()),
        }
    }
    if per_object {
        out.family(
            "rabbitmq_queue_info",
            "gauge",
            "A metric with a constant '1' value and labels that provide some queue details",
        );
        for r in &rows {
            out.sample(
                "rabbitmq_queue_info",
                &format!(
                    "{},queue_type=\"rabbit_classic_queue\",membership=\"leader\"",
                    r.labels
                ),
                1,
            );
        }
    }
    out.one(
        "rabbitmq_queues",
        "gauge",
        "Queues available",
        "",
        rows.len(),
    );
    out.one(
        "rabbitmq_queues_declared_total",
        "counter",
        "Total number of queues declared",
        "",
        declared,
    );
    out.one(
        "rabbitmq_queues_created_total",
        "counter",
        "Total number of queues created",
        "",
        created,
    );
    out.one(
        "rabbitmq_queues_deleted_total",
        "counter",
        "Total number of queues deleted",
        "",
        deleted,
    );
    let consumers: u64 = rows.iter().map(|r| r.gauges.consumers).sum();
    out.one(
        "rabbitmq_consumers",
        "gauge",
        "Consumers currently connected",
        "",
        consumers,
    );
    out.one(
        "rabbitmq_global_consumers",
        "gauge",
        "Current number of consumers",
        PROTOCOL,
        consumers,
    );
}

fn traffic(out: &mut Exposition, b: &Broker) {
    let c = &b.connections;
    let list = c.list();
    let t = c.totals();
    let channels: usize = list.iter().map(|e| e.snapshot().channels.len()).sum();
    let publishers = list
        .iter()
        .filter(|e| e.snapshot().totals.published > 0)
        .count();
    out.one(
        "rabbitmq_connections",
        "gauge",
        "Connections currently open",
        "",
        list.len(),
    );
    out.one(
        "rabbitmq_channels",
        "gauge",
        "Channels currently open",
        "",
        channels,
    );
    for (name, help, v) in [
        (
            "rabbitmq_connections_opened_total",
            "Total number of connections opened",
            c.opened_total.load(Relaxed),
        ),
        (
            "rabbitmq_connections_closed_total",
            "Total number of connections closed or terminated",
            c.closed_total.load(Relaxed),
        ),
        (
            "rabbitmq_channels_opened_total",
            "Total number of channels opened",
            c.channels_opened_total.load(Relaxed),
        ),
        (
            "rabbitmq_channels_closed_total",
            "Total number of channels closed",
            c.channels_closed_total.load(Relaxed),
        ),
    ] {
        out.one(name, "counter", help, "", v);
    }
    out.one(
        "rabbitmq_global_publishers",
        "gauge",
        "Current number of publishers",
        PROTOCOL,
        publishers,
    );
    for (name, help, v) in [
        ("rabbitmq_global_messages_received_total", "Total number of messages received from publishers", t.published),
        ("rabbitmq_global_messages_received_confirm_total", "Total number of messages received from publishers expecting confirmations", t.published_confirm),
        ("rabbitmq_global_messages_routed_total", "Total number of messages routed to queues or streams", t.routed),
        ("rabbitmq_global_messages_unroutable_dropped_total", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable", t.unroutable_dropped),
        ("rabbitmq_global_messages_unroutable_returned_total", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable", t.unroutable_returned),
        ("rabbitmq_global_messages_confirmed_total", "Total number of messages confirmed to publishers", t.confirmed),
    ] {
        out.one(name, "counter", help, PROTOCOL, v);
    }
    let labels = format!("{PROTOCOL},{QUEUE_TYPE}");
    for (name, help, v) in [
        ("rabbitmq_global_messages_delivered_total", "Total number of messages delivered to consumers", t.deliver_get()),
        ("rabbitmq_global_messages_delivered_consume_manual_ack_total", "Total number of messages delivered to consumers using basic.consume with manual acknowledgment", t.delivered_ack),
        ("rabbitmq_global_messages_delivered_consume_auto_ack_total", "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment", t.delivered_no_ack),
        ("rabbitmq_global_messages_delivered_get_manual_ack_total", "Total number of messages delivered to consumers using basic.get with manual acknowledgment", t.get_ack),
        ("rabbitmq_global_messages_delivered_get_auto_ack_total", "Total number of messages delivered to consumers using basic.get with automatic acknowledgment", t.get_no_ack),
        ("rabbitmq_global_messages_get_empty_total", "Total number of times basic.get operations fetched no message", t.get_empty),
        ("rabbitmq_global_messages_redelivered_total", "Total number of messages redelivered to consumers", t.redelivered),
        ("rabbitmq_global_messages_acknowledged_total", "Total number of messages acknowledged by consumers", t.acked),
    ] {
        out.one(name, "counter", help, &labels, v);
    }
    let name = "rabbitmq_message_size_bytes";
    out.family(
        name,
        "histogram",
        "Size of messages received from publishers",
    );
    let bounds = [
        "100.0", "1000.0", "10000.0", "100000.0", "1e+06", "1e+07", "5e+07", "1e+08",
    ];
    debug_assert_eq!(bounds.len(), MESSAGE_SIZE_BOUNDS.len());
    let mut cumulative = 0;
    for (le, n) in bounds.iter().chain(["+Inf"].iter()).zip(t.size_buckets) {
        cumulative += n;
        out.sample(
            &format!("{name}_bucket"),
            &format!("{PROTOCOL},le=\"{le}\""),
            cumulative,
        );
    }
    out.sample(&format!("{name}_sum"), PROTOCOL, t.size_sum);
    out.sample(&format!("{name}_count"), PROTOCOL, cumulative);
}

fn process(out: &mut Exposition, b: &Broker) {
    let r = b.alarms.readings();
    let a = b.alarms.current();
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    let max_fds = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft);
    for (name, help, v) in [
        (
            "rabbitmq_process_resident_memory_bytes",
            "Memory used in bytes",
            r.memory_used,
        ),
        (
            "rabbitmq_resident_memory_limit_bytes",
            "Memory high watermark in bytes",
            r.memory_limit,
        ),
        (
            "rabbitmq_disk_space_available_bytes",
            "Disk space available in bytes",
            r.disk_free,
        ),
        (
            "rabbitmq_disk_space_available_limit_bytes",
            "Free disk space low watermark in bytes",
            r.disk_free_limit,
        ),
        (
            "rabbitmq_process_open_fds",
            "Open file descriptors",
            fds as u64,
        ),
        (
            "rabbitmq_process_max_fds",
            "Open file descriptors limit",
            max_fds,
        ),
        (
            "rabbitmq_alarms_memory_used_watermark",
            "is 1 if VM memory watermark alarm is in effect",
            u64::from(a.memory),
        ),
        (
            "rabbitmq_alarms_free_disk_space_watermark",
            "is 1 if VM disk space alarm is in effect",
            u64::from(a.disk),
        ),
    ] {
        out.one(name, "gauge", help, "", v);
    }
}
