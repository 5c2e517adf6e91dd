"""The management API and Prometheus endpoint read by the tools operators
point at RabbitMQ: Celery Flower's broker tab (its own `Broker` class) and
a Prometheus scrape parsed by `prometheus_client`, checking every metric
Grafana dashboard 10991 ("RabbitMQ-Overview") queries. Runs against Warren
or RabbitMQ (MANAGEMENT_URL, PROMETHEUS_URL; RabbitMQ's default ports
otherwise)."""
import asyncio
import os
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import AMQP_URL

MANAGEMENT_URL = os.environ.get("MANAGEMENT_URL", "http://127.0.0.1:15672")
PROMETHEUS_URL = os.environ.get("PROMETHEUS_URL", "http://127.0.0.1:15692")

# Each metric dashboard 10991 queries, with the type it declares.
DASHBOARD_METRICS = {
    "rabbitmq_identity_info": "unknown",
    "rabbitmq_build_info": "unknown",
    "rabbitmq_erlang_uptime_seconds": "gauge",
    "rabbitmq_queue_messages_ready": "gauge",
    "rabbitmq_queue_messages_unacked": "gauge",
    "rabbitmq_queue_messages": "gauge",
    "rabbitmq_connections": "gauge",
    "rabbitmq_channels": "gauge",
    "rabbitmq_consumers": "gauge",
    "rabbitmq_queues": "gauge",
    "rabbitmq_connections_opened": "counter",
    "rabbitmq_connections_closed": "counter",
    "rabbitmq_channels_opened": "counter",
    "rabbitmq_channels_closed": "counter",
    "rabbitmq_queues_declared": "counter",
    "rabbitmq_queues_created": "counter",
    "rabbitmq_queues_deleted": "counter",
    "rabbitmq_global_messages_received": "counter",
    "rabbitmq_global_messages_received_confirm": "counter",
    "rabbitmq_global_messages_routed": "counter",
    "rabbitmq_global_messages_unroutable_dropped": "counter",
    "rabbitmq_global_messages_unroutable_returned": "counter",
    "rabbitmq_global_messages_confirmed": "counter",
    "rabbitmq_global_messages_delivered": "counter",
    "rabbitmq_global_messages_delivered_consume_manual_ack": "counter",
    "rabbitmq_global_messages_delivered_consume_auto_ack": "counter",
    "rabbitmq_global_messages_delivered_get_manual_ack": "counter",
    "rabbitmq_global_messages_delivered_get_auto_ack": "counter",
    "rabbitmq_global_messages_get_empty": "counter",
    "rabbitmq_global_messages_redelivered": "counter",
    "rabbitmq_global_messages_acknowledged": "counter",
    "rabbitmq_global_publishers": "gauge",
    "rabbitmq_global_consumers": "gauge",
    "rabbitmq_process_resident_memory_bytes": "gauge",
    "rabbitmq_resident_memory_limit_bytes": "gauge",
    "rabbitmq_disk_space_available_bytes": "gauge",
    "rabbitmq_disk_space_available_limit_bytes": "gauge",
    "rabbitmq_process_open_fds": "gauge",
    "rabbitmq_process_max_fds": "gauge",
}

# The `le` label values the dashboard's message-size panel selects.
SIZE_BUCKETS = ["100.0", "1000.0", "10000.0", "100000.0", "1e+06", "1e+07", "5e+07", "1e+08", "+Inf"]


def scrape(path="/metrics"):
    with urllib.request.urlopen(PROMETHEUS_URL + path, timeout=5) as r:
        return r.read().decode()


def test_prometheus_has_every_dashboard_metric():
    families = {f.name: f for f in text_string_to_metric_families(scrape())}
    for name, kind in DASHBOARD_METRICS.items():
        assert name in families, name
        assert families[name].type == kind, (name, families[name].type)
    identity = families["rabbitmq_identity_info"].samples[0].labels
    for label in ("rabbitmq_node", "rabbitmq_cluster"):
        assert identity.get(label), label
    # RabbitMQ 3.13+ (and Warren) also name the endpoint; 3.10 does not.
    assert identity.get("rabbitmq_endpoint", "aggregated") == "aggregated"
    build = families["rabbitmq_build_info"].samples[0].labels
    if "rabbitmq_message_size_bytes" not in families and build.get("product_name") != "Warren":
        return  # RabbitMQ 3.10 predates the histogram (4.x has it)
    sizes = families["rabbitmq_message_size_bytes"]
    assert sizes.type == "histogram"
    les = [s.labels["le"] for s in sizes.samples if s.name.endswith("_bucket")
           and s.labels.get("protocol") == "amqp091"]
    assert les == SIZE_BUCKETS


def test_prometheus_counts_what_clients_do(ch, queue):
    before = {f.name: f for f in text_string_to_metric_families(scrape())}
    for i in range(3):
        ch.basic_publish("", queue, b"x" * 500)
    ch.basic_get(queue, auto_ack=True)

    def total(families, name):
        return sum(s.value for s in families[name].samples if s.name == name + "_total")

    name = "rabbitmq_global_messages_delivered_get_auto_ack"
    want = total(before, name) + 1
    # Warren's connections report their counters once a second.
    deadline = time.monotonic() + 5
    while True:
        after = {f.name: f for f in text_string_to_metric_families(scrape())}
        if total(after, name) >= want or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert total(after, name) == want


def test_flower_broker_tab_reads_queue_lengths(ch, queue):
    flower_broker = pytest.importorskip("flower.utils.broker")
    for _ in range(4):
        ch.basic_publish("", queue, b"task")
    ch.basic_get(queue, auto_ack=False)
    # Flower builds its API URL from the broker URL's vhost and asks for
    # /api/queues/{vhost}, the vhost `/` giving the trailing-slash form.
    api = MANAGEMENT_URL.replace("http://", "http://guest:guest@") + "/api/"
    # Celery's usual URL for the vhost `/` ends in `//`.
    celery_url = AMQP_URL.rsplit("/", 1)[0] + "//"
    broker = flower_broker.RabbitMQ(celery_url, http_api=api)

    async def look():
        return await broker.queues([queue])

    # RabbitMQ's statistics lag by up to 5 s; Warren's queue counts don't.
    deadline = time.monotonic() + 12
    while True:
        found = asyncio.run(look())
        assert len(found) == 1
        q = found[0]
        # Flower reads these with .get (RabbitMQ omits them until its
        # first statistics event).
        counts = (q.get("messages"), q.get("messages_ready"), q.get("messages_unacknowledged"))
        if counts == (4, 3, 1) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert q["name"] == queue
    assert counts == (4, 3, 1)
    assert "consumers" in q
