"""rabbitmqadmin against the broker's management API: v2 (the Rust
rabbitmqadmin-ng, RABBITMQADMIN_V2; conformance/run.sh installs it) and,
where it is installed, the classic Python v1 (RABBITMQADMIN_V1 or
`rabbitmqadmin` on PATH, shipped with RabbitMQ's Debian package). Listing,
declaring, publishing, getting, users and permissions, definitions export
and import, health checks; a user declared with v2 (hashed client-side)
logs in over AMQP."""
import json
import os
import shutil
import subprocess
import urllib.parse

import pika
import pytest

from conftest import AMQP_URL

MANAGEMENT_URL = os.environ.get("MANAGEMENT_URL", "http://127.0.0.1:15672")
API = urllib.parse.urlparse(MANAGEMENT_URL)
V2 = os.environ.get("RABBITMQADMIN_V2")
V1 = os.environ.get("RABBITMQADMIN_V1") or shutil.which("rabbitmqadmin")


def v2(*args, check=True):
    if not V2 or not os.path.exists(V2):
        pytest.skip("rabbitmqadmin v2 is not installed (RABBITMQADMIN_V2)")
    cmd = [V2, "--non-interactive", "-H", API.hostname, "-P", str(API.port),
           "-u", "guest", "-p", "guest", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    return r


def v1(*args):
    if not V1:
        pytest.skip("rabbitmqadmin v1 is not installed")
    cmd = ["python3", V1, "-H", API.hostname, "-P", str(API.port), "-u", "guest", "-p", "guest",
           "-f", "raw_json", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    return r.stdout


def test_v2_declares_publishes_gets_and_lists(names):
    q, x = names("v2q"), names("v2x")
    v2("declare", "queue", "--name", q, "--durable", "true")
    v2("declare", "exchange", "--name", x, "--type", "topic", "--durable", "true")
    v2("declare", "binding", "--source", x, "--destination-type", "queue",
       "--destination", q, "--routing-key", "k.#")
    out = v2("publish", "message", "-e", x, "-k", "k.1", "-m", "hello").stdout
    assert "routed" in out
    got = v2("get", "messages", "-q", q, "-c", "1", "-a", "ack_requeue_false").stdout
    assert "hello" in got
    assert q in v2("list", "queues").stdout
    assert x in v2("list", "exchanges").stdout
    assert "k.#" in v2("list", "bindings").stdout
    assert "passed" in v2("health_check", "local_alarms").stdout
    assert v2("show", "overview").stdout
    v2("delete", "queue", "--name", q)
    assert q not in v2("list", "queues").stdout
    v2("delete", "exchange", "--name", x)


def test_v2_user_logs_in_over_amqp(names):
    user = names("v2user")
    v2("declare", "user", "--name", user, "--password", "s3cret", "--tags", "management")
    v2("declare", "permissions", "--user", user, "--configure", ".*", "--read", ".*", "--write", ".*")
    try:
        p = pika.URLParameters(AMQP_URL)
        p.credentials = pika.PlainCredentials(user, "s3cret")
        c = pika.BlockingConnection(p)
        c.close()
    finally:
        v2("delete", "user", "--name", user)


def test_v2_definitions_round_trip(tmp_path, names):
    q = names("v2defs")
    v2("declare", "queue", "--name", q, "--durable", "true")
    path = tmp_path / "defs.json"
    v2("definitions", "export", "--file", str(path))
    defs = json.loads(path.read_text())
    assert any(item["name"] == q for item in defs["queues"])
    v2("delete", "queue", "--name", q)
    v2("definitions", "import", "--file", str(path))
    assert q in v2("list", "queues").stdout
    v2("delete", "queue", "--name", q)


def test_v1_lists_declares_publishes_and_gets(names):
    q = names("v1q")
    v1("declare", "queue", "name=" + q, "durable=true")
    v1("publish", "exchange=amq.default", "routing_key=" + q, "payload=hello")
    got = json.loads(v1("get", "queue=" + q, "ackmode=ack_requeue_false"))
    assert got[0]["payload"] == "hello"
    queues = json.loads(v1("list", "queues", "name", "messages"))
    assert any(item["name"] == q for item in queues)
    overview = json.loads(v1("show", "overview"))
    assert overview[0]["rabbitmq_version"]
    v1("delete", "queue", "name=" + q)
