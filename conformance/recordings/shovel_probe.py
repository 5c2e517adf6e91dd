#!/usr/bin/env python3
"""Probe RabbitMQ 3.10 dynamic-shovel behaviour through the management HTTP API.

Requires a local RabbitMQ (AMQP 127.0.0.1:5672, management 127.0.0.1:15672,
guest/guest) with rabbitmq_management, rabbitmq_shovel and
rabbitmq_shovel_management enabled.  Needs `requests` and `pika`.

Usage: python3 shovel_probe.py [output.md]
Writes a raw transcript (request, status, body) of every probe to the output
file (default /work/notes/shovel_probe_output.md) and to stdout.
"""
import json
import sys
import threading
import time

import pika
import requests

API = "http://127.0.0.1:15672/api"
AUTH = ("guest", "guest")
OUT = sys.argv[1] if len(sys.argv) > 1 else "/work/notes/shovel_probe_output.md"
out_lines = []


def emit(s=""):
    print(s, flush=True)
    out_lines.append(s)


def section(title):
    emit("")
    emit("## " + title)
    emit("")


def jdump(obj):
    return json.dumps(obj, indent=2, ensure_ascii=False)


def api(method, path, body=None, show=True, note=None):
    url = API + path
    t0 = time.time()
    r = requests.request(method, url, auth=AUTH,
                         data=None if body is None else json.dumps(body),
                         headers={"content-type": "application/json"})
    dt = time.time() - t0
    try:
        parsed = r.json() if r.content else None
    except ValueError:
        parsed = r.text
    if show:
        emit("```")
        emit("%s /api%s" % (method, path) + (("    # " + note) if note else ""))
        if body is not None:
            emit(jdump(body))
        emit("-> HTTP %d  (content-type: %s, content-length: %s, %.0f ms)" % (
            r.status_code, r.headers.get("content-type"),
            r.headers.get("content-length"), dt * 1000))
        if parsed is not None:
            emit(jdump(parsed) if not isinstance(parsed, str) else parsed)
        else:
            emit("<empty body>")
        emit("```")
    return r.status_code, parsed


def conn():
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", 5672, "/", pika.PlainCredentials("guest", "guest")))


def reset_queue(name, durable=True, arguments=None):
    c = conn()
    ch = c.channel()
    ch.queue_delete(name)
    if durable is not None:
        ch.queue_declare(name, durable=durable, arguments=arguments)
    c.close()


def delete_queue(name):
    c = conn()
    c.channel().queue_delete(name)
    c.close()


def publish(queue, n, start=0, exchange="", payload_size=16):
    c = conn()
    ch = c.channel()
    ch.confirm_delivery()
    for i in range(start, start + n):
        props = pika.BasicProperties(
            delivery_mode=2,
            message_id="m-%d" % i,
            correlation_id="c-%d" % i,
            content_type="text/plain",
            app_id="probe",
            type="probe-type",
            timestamp=1700000000 + i,
            priority=3,
            headers={"x-probe": "h-%d" % i, "seq": i},
        )
        body = ("msg-%d|" % i).encode().ljust(payload_size, b".")
        ch.basic_publish(exchange, queue, body, props)
    c.close()


def qcount(name):
    """messages in queue according to AMQP passive declare (None if missing)"""
    c = conn()
    ch = c.channel()
    try:
        ok = ch.queue_declare(name, passive=True)
        n = ok.method.message_count
        c.close()
        return n
    except pika.exceptions.ChannelClosedByBroker as e:
        try:
            c.close()
        except Exception:
            pass
        return "missing (%s)" % e.reply_code


def get_one(name):
    c = conn()
    ch = c.channel()
    m, props, body = ch.basic_get(name, auto_ack=False)
    res = None
    if m is not None:
        res = {
            "method": {"exchange": m.exchange, "routing_key": m.routing_key,
                       "redelivered": m.redelivered,
                       "message_count": m.message_count},
            "properties": {k: (v.decode() if isinstance(v, bytes) else v)
                           for k, v in vars(props).items() if v is not None},
            "body": (lambda b: b if len(b) <= 40 else b[:40] + "...(%d bytes)" % len(body))(body.decode(errors="replace")),
        }
        ch.basic_nack(m.delivery_tag, requeue=True)
    c.close()
    return res


def show_msg(name, label):
    m = get_one(name)
    emit("First message in `%s` (%s), via pika basic_get (then requeued):" % (name, label))
    emit("```")
    emit(jdump(m, ) if m else "None")
    emit("```")
    return m


def wait_param_gone(name, timeout=30):
    t0 = time.time()
    while time.time() - t0 < timeout:
        st, _ = api("GET", "/parameters/shovel/%2F/" + name, show=False)
        if st == 404:
            return time.time() - t0
        time.sleep(0.05)
    return None


def wait_state(name, states=("running",), timeout=20):
    t0 = time.time()
    while time.time() - t0 < timeout:
        st, body = api("GET", "/shovels/%2F", show=False)
        for s in body or []:
            if s.get("name") == name and s.get("state") in states:
                return s
        time.sleep(0.05)
    return None


def clear_all_shovels():
    st, params = api("GET", "/parameters/shovel", show=False)
    for p in params or []:
        api("DELETE", "/parameters/shovel/%s/%s" % (
            requests.utils.quote(p["vhost"], safe=""), p["name"]), show=False)
    time.sleep(0.5)


class Poller(threading.Thread):
    """Polls GET /api/shovels as fast as possible and keeps the first body seen
    for every distinct state of the named shovel (plus 'absent')."""

    def __init__(self, name, path="/shovels"):
        super().__init__(daemon=True)
        self.name_ = name
        self.path = path
        self.stop_flag = False
        self.seen = {}
        self.order = []
        self.polls = 0

    def run(self):
        while not self.stop_flag:
            st, body = api("GET", self.path, show=False)
            self.polls += 1
            ent = [s for s in (body or []) if s.get("name") == self.name_]
            key = ent[0]["state"] if ent else "absent"
            if key not in self.seen:
                self.seen[key] = (time.time(), st, body)
                self.order.append(key)


MOVE1 = {"src-protocol": "amqp091", "src-uri": "amqp://", "src-queue": "dlq",
         "dest-protocol": "amqp091", "dest-uri": "amqp://", "dest-queue": "work",
         "src-delete-after": "queue-length", "ack-mode": "on-confirm"}


def probe_a():
    section("A. queue-length shovel moving 1000 persistent messages dlq -> work")
    clear_all_shovels()
    reset_queue("dlq")
    reset_queue("work")
    publish("dlq", 1000, payload_size=2048)
    emit("Before: dlq=%s work=%s" % (qcount("dlq"), qcount("work")))
    poller = Poller("move1")
    poller.start()
    time.sleep(0.2)
    t_put = time.time()
    api("PUT", "/parameters/shovel/%2F/move1", {"value": MOVE1})
    # immediately look at everything
    api("GET", "/parameters/shovel/%2F/move1", note="right after PUT")
    api("GET", "/shovels", note="right after PUT")
    api("GET", "/shovels/%2F", note="right after PUT")
    api("GET", "/shovels/vhost/%2F/move1", note="right after PUT")
    gone = wait_param_gone("move1")
    time.sleep(1.0)
    poller.stop_flag = True
    poller.join()
    emit("Parameter move1 disappeared from /api/parameters/shovel/%%2F/move1 %.3fs after PUT returned"
         % (gone if gone is not None else -1))
    emit("Poller (%d polls of GET /api/shovels) saw states in order: %s" % (poller.polls, poller.order))
    for k in poller.order:
        ts, st, body = poller.seen[k]
        emit("First GET /api/shovels body with move1 state=%s (t=+%.3fs after PUT, HTTP %d):" % (k, ts - t_put, st))
        emit("```")
        emit(jdump(body))
        emit("```")
    emit("After completion:")
    api("GET", "/parameters/shovel")
    api("GET", "/parameters/shovel/%2F/move1")
    api("GET", "/shovels")
    api("GET", "/shovels/%2F")
    api("GET", "/shovels/vhost/%2F/move1")
    emit("After: dlq=%s work=%s" % (qcount("dlq"), qcount("work")))
    show_msg("work", "default: no forward headers")

    section("A2. same, with dest-add-forward-headers + dest-add-timestamp-header = true (to see the exact added headers)")
    reset_queue("dlq")
    reset_queue("work")
    publish("dlq", 3)
    v = dict(MOVE1)
    v["dest-add-forward-headers"] = True
    v["dest-add-timestamp-header"] = True
    api("PUT", "/parameters/shovel/%2F/move1h", {"value": v})
    wait_param_gone("move1h")
    emit("After: dlq=%s work=%s" % (qcount("dlq"), qcount("work")))
    show_msg("work", "with forward + timestamp headers")

    section("A3. legacy keys add-forward-headers / add-timestamp-header, src-exchange source, dest-exchange")
    reset_queue("work")
    c = conn(); ch = c.channel()
    ch.queue_bind("work", "amq.direct", routing_key="k")
    c.close()
    v = {"src-uri": "amqp://", "src-exchange": "amq.topic", "src-exchange-key": "rk.#",
         "dest-uri": "amqp://", "dest-exchange": "amq.direct", "dest-exchange-key": "k",
         "add-forward-headers": True, "add-timestamp-header": True}
    api("PUT", "/parameters/shovel/%2F/xfwd", {"value": v})
    wait_state("xfwd")
    api("GET", "/shovels/%2F", note="src-exchange shovel running")
    c = conn(); ch = c.channel()
    ch.basic_publish("amq.topic", "rk.a", b"via-topic",
                     pika.BasicProperties(delivery_mode=2, message_id="topic-1", headers={"x-probe": "t"}))
    c.close()
    time.sleep(1)
    show_msg("work", "src-exchange + dest-exchange, legacy header keys")
    api("DELETE", "/parameters/shovel/%2F/xfwd")


def probe_b():
    section("B1. src-delete-after = 10 (number)")
    clear_all_shovels()
    reset_queue("dlq")
    reset_queue("work")
    publish("dlq", 1000)
    v = dict(MOVE1)
    v["src-delete-after"] = 10
    api("PUT", "/parameters/shovel/%2F/move10", {"value": v})
    gone = wait_param_gone("move10")
    emit("parameter gone after %s s" % gone)
    time.sleep(0.5)
    api("GET", "/shovels/%2F")
    emit("After: dlq=%s work=%s" % (qcount("dlq"), qcount("work")))
    show_msg("work", "first moved")
    show_msg("dlq", "first remaining")

    section("B1b. src-delete-after = 10 with ack-mode on-publish, and 0")
    for mode, n in (("on-publish", 10), ("on-confirm", 0)):
        reset_queue("dlq")
        reset_queue("work")
        publish("dlq", 100)
        v = dict(MOVE1)
        v["src-delete-after"] = n
        v["ack-mode"] = mode
        api("PUT", "/parameters/shovel/%2F/moven", {"value": v}, note="ack-mode %s, delete-after %d" % (mode, n))
        gone = wait_param_gone("moven")
        time.sleep(0.5)
        emit("ack-mode=%s delete-after=%d: parameter gone after %s s; dlq=%s work=%s" % (
            mode, n, gone, qcount("dlq"), qcount("work")))

    section("B2. dest-exchange amq.direct + dest-exchange-key k (instead of dest-queue)")
    reset_queue("dlq")
    reset_queue("work")
    reset_queue("kq")
    c = conn(); ch = c.channel()
    ch.queue_bind("kq", "amq.direct", routing_key="k")
    c.close()
    publish("dlq", 1000)
    v = dict(MOVE1)
    del v["dest-queue"]
    v["dest-exchange"] = "amq.direct"
    v["dest-exchange-key"] = "k"
    poller = Poller("movex")
    poller.start()
    api("PUT", "/parameters/shovel/%2F/movex", {"value": v})
    gone = wait_param_gone("movex")
    time.sleep(0.5)
    poller.stop_flag = True
    poller.join()
    emit("parameter gone after %s s; states seen: %s" % (gone, poller.order))
    if "running" in poller.seen:
        emit("```")
        emit(jdump([s for s in poller.seen["running"][2] if s.get("name") == "movex"]))
        emit("```")
    emit("After: dlq=%s work=%s kq=%s" % (qcount("dlq"), qcount("work"), qcount("kq")))
    show_msg("kq", "dest-exchange amq.direct / key k")

    section("B3. dest-exchange without dest-exchange-key (original routing key kept?)")
    reset_queue("dlq")
    reset_queue("kq")
    c = conn(); ch = c.channel()
    ch.queue_bind("kq", "amq.direct", routing_key="dlq")
    c.close()
    publish("dlq", 5)
    v = dict(MOVE1)
    del v["dest-queue"]
    v["dest-exchange"] = "amq.direct"
    api("PUT", "/parameters/shovel/%2F/movex2", {"value": v})
    wait_param_gone("movex2")
    emit("After: dlq=%s kq=%s" % (qcount("dlq"), qcount("kq")))
    show_msg("kq", "dest-exchange only")

    section("B4. neither dest-queue nor dest-exchange (publish to default exchange with original routing key)")
    reset_queue("dlq")
    reset_queue("work")
    publish("dlq", 5)
    v = dict(MOVE1)
    del v["dest-queue"]
    api("PUT", "/parameters/shovel/%2F/movenone", {"value": v})
    wait_param_gone("movenone")
    emit("After: dlq=%s work=%s (messages were re-published to '' with routing key 'dlq')" % (qcount("dlq"), qcount("work")))


def probe_c_d():
    section("C. parameter GET bodies (shovel with src-delete-after never)")
    clear_all_shovels()
    reset_queue("feed")
    reset_queue("feedout")
    v = {"src-protocol": "amqp091", "src-uri": "amqp://", "src-queue": "feed",
         "dest-protocol": "amqp091", "dest-uri": "amqp://", "dest-queue": "feedout",
         "src-delete-after": "never", "ack-mode": "on-confirm"}
    api("PUT", "/parameters/shovel/%2F/feeder", {"value": v}, note="create")
    api("PUT", "/parameters/shovel/%2F/feeder", {"value": v}, note="same again (update)")
    api("PUT", "/parameters/shovel/%2F/minimal", {"value": {"src-uri": "amqp://", "src-queue": "feed2", "dest-uri": "amqp://"}},
        note="minimal definition")
    api("PUT", "/parameters/shovel/%2F/withcomponent",
        {"component": "shovel", "vhost": "/", "name": "withcomponent",
         "value": {"src-uri": ["amqp://", "amqp://guest:guest@localhost:5672/%2F"], "src-queue": "feed3",
                   "dest-uri": "amqp://guest:guest@localhost:5672", "dest-queue": "feed3out"}},
        note="full object like the README, list of URIs, credentials in URI")
    wait_state("feeder")
    wait_state("minimal")
    wait_state("withcomponent")
    time.sleep(1.5)
    api("GET", "/shovels/vhost/%2F/feeder", show=False)
    api("PUT", "/parameters/shovel/%2F/feeder", {"value": v}, show=False)
    st, body = api("GET", "/shovels/%2F", show=False)
    emit("Immediately after re-PUTting the identical definition of the running 'feeder' (HTTP 204), its /api/shovels entry is: %s"
         % json.dumps([b for b in body if b["name"] == "feeder"]))
    wait_state("feeder")
    time.sleep(1.5)
    v2 = dict(v, **{"reconnect-delay": 2})
    api("PUT", "/parameters/shovel/%2F/feeder", {"value": v2}, note="changed definition of a running shovel")
    st, body = api("GET", "/shovels/%2F", show=False)
    emit("Immediately after re-PUTting a CHANGED definition of 'feeder', its /api/shovels entry is: %s"
         % json.dumps([b for b in body if b["name"] == "feeder"]))
    api("PUT", "/parameters/shovel/%2F/feeder", {"value": v}, show=False)
    wait_state("feeder")
    time.sleep(0.5)
    api("GET", "/parameters/shovel")
    api("GET", "/parameters/shovel/%2F")
    api("GET", "/parameters/shovel/%2F/feeder")
    api("GET", "/parameters/shovel/%2F/nosuch")
    api("GET", "/parameters/shovel/nosuchvhost")
    api("GET", "/parameters")
    api("GET", "/shovels")
    api("GET", "/shovels/%2F")
    api("GET", "/shovels/nosuchvhost")
    api("GET", "/shovels/vhost/%2F/feeder", note="per-shovel route")
    api("GET", "/shovels/vhost/%2F/nosuch")
    api("GET", "/shovels/vhost/nosuchvhost/feeder")
    api("POST", "/parameters/shovel/%2F/postshovel", {"value": v}, note="POST (README mentions it)")
    api("GET", "/consumers/%2F", note="shovel consumers: prefetch_count default")
    st, conns = api("GET", "/connections", show=False)
    emit("Connections opened by shovels (name, user, vhost, protocol, client_properties.connection_name):")
    emit("```")
    emit(jdump([{k: c.get(k) for k in ("name", "user", "vhost", "protocol", "type", "peer_host")} |
                {"connection_name": c.get("client_properties", {}).get("connection_name"),
                 "product": c.get("client_properties", {}).get("product")} for c in conns or []]))
    emit("```")
    api("DELETE", "/parameters/shovel/%2F/minimal", show=False)
    api("DELETE", "/parameters/shovel/%2F/withcomponent", show=False)

    section("D. deleting / restarting a running 'never' shovel while the source is being fed")
    stop = {"v": False}
    fed = {"n": 0}

    def feeder():
        c = conn(); ch = c.channel()
        i = 0
        while not stop["v"]:
            ch.basic_publish("", "feed", b"feed-%d" % i, pika.BasicProperties(delivery_mode=2))
            i += 1
            fed["n"] = i
            time.sleep(0.002)
        c.close()

    th = threading.Thread(target=feeder, daemon=True)
    th.start()
    time.sleep(1.5)
    api("GET", "/shovels/vhost/%2F/feeder", note="running while fed")
    api("DELETE", "/shovels/vhost/%2F/feeder/restart", note="restart route")
    api("GET", "/shovels/%2F", note="immediately after restart")
    s = wait_state("feeder")
    time.sleep(0.5)
    api("GET", "/shovels/%2F", note="after restart settled")
    api("GET", "/parameters/shovel/%2F/feeder", note="parameter still there after restart?")
    api("DELETE", "/shovels/vhost/%2F/nosuch/restart", note="restart unknown shovel")
    api("DELETE", "/shovels/vhost/%2F/feeder", note="delete via /api/shovels route")
    api("GET", "/parameters/shovel/%2F/feeder", note="parameter after DELETE /api/shovels/vhost/%2F/feeder")
    time.sleep(0.5)
    api("GET", "/shovels/%2F", note="after DELETE /api/shovels/vhost/%2F/feeder")
    api("DELETE", "/shovels/vhost/%2F/feeder", note="again (no longer exists)")
    api("DELETE", "/shovels/%2F", note="DELETE on the per-vhost list route")
    # recreate and delete through parameters
    api("PUT", "/parameters/shovel/%2F/feeder", {"value": v}, note="recreate")
    wait_state("feeder")
    time.sleep(1)
    api("DELETE", "/parameters/shovel/%2F/feeder", note="delete running shovel via parameters")
    api("GET", "/shovels/%2F", note="right after DELETE parameter")
    time.sleep(0.5)
    api("GET", "/shovels/%2F", note="0.5s later")
    api("DELETE", "/parameters/shovel/%2F/feeder", note="again (no longer exists)")
    time.sleep(0.5)
    stop["v"] = True
    th.join()
    time.sleep(0.5)
    nf, nfo = qcount("feed"), qcount("feedout")
    emit("published into feed: %d; feed=%s feedout=%s; feed+feedout-published = %d (>0 means duplicates from "
         "in-flight unconfirmed messages being requeued at restart/delete)" % (fed["n"], nf, nfo, nf + nfo - fed["n"]))


def probe_e():
    section("E. validation errors")
    clear_all_shovels()
    base = {"src-uri": "amqp://", "src-queue": "vq", "dest-uri": "amqp://", "dest-queue": "vq2"}
    cases = [
        ("missing src-uri", {k: v for k, v in base.items() if k != "src-uri"}),
        ("missing dest-uri", {k: v for k, v in base.items() if k != "dest-uri"}),
        ("both dest-queue and dest-exchange", dict(base, **{"dest-exchange": "amq.direct"})),
        ("both src-queue and src-exchange", dict(base, **{"src-exchange": "amq.direct"})),
        ("src-delete-after bogus", dict(base, **{"src-delete-after": "bogus"})),
        ("src-delete-after -1", dict(base, **{"src-delete-after": -1})),
        ("src-delete-after 1.5", dict(base, **{"src-delete-after": 1.5})),
        ("src-delete-after \"10\" (string)", dict(base, **{"src-delete-after": "10"})),
        ("ack-mode bogus", dict(base, **{"ack-mode": "bogus"})),
        ("ack-mode no-ack + numeric delete-after", dict(base, **{"ack-mode": "no-ack", "src-delete-after": 5})),
        ("no src-queue, no src-exchange", {k: v for k, v in base.items() if k != "src-queue"}),
        ("src-protocol bogus", dict(base, **{"src-protocol": "bogus"})),
        ("src-uri not a URI", dict(base, **{"src-uri": "http://x"})),
        ("src-uri unknown vhost", dict(base, **{"src-uri": "amqp:///nosuchvhost"})),
        ("src-prefetch-count string", dict(base, **{"src-prefetch-count": "ten"})),
        ("reconnect-delay string", dict(base, **{"reconnect-delay": "x"})),
        ("unknown key", dict(base, **{"bogus-key": 1})),
        ("dest-queue not a string", dict(base, **{"dest-queue": 5})),
        ("multiple errors at once", {"src-delete-after": "bogus", "ack-mode": "bogus"}),
    ]
    for label, val in cases:
        emit("### " + label)
        api("PUT", "/parameters/shovel/%2F/bad", {"value": val})
    emit("### unknown vhost in the path")
    api("PUT", "/parameters/shovel/nosuchvhost/bad", {"value": base})
    emit("### body without 'value'")
    api("PUT", "/parameters/shovel/%2F/bad", base)
    emit("### value is not an object")
    api("PUT", "/parameters/shovel/%2F/bad", {"value": "x"})
    emit("### malformed JSON")
    r = requests.put(API + "/parameters/shovel/%2F/bad", auth=AUTH, data="{not json",
                     headers={"content-type": "application/json"})
    emit("```\nPUT /api/parameters/shovel/%%2F/bad  body: {not json\n-> HTTP %d\n%s\n```" % (r.status_code, r.text))
    api("GET", "/parameters/shovel", note="nothing was stored by the failed PUTs")


def probe_f():
    section("F1. source queue does not exist (src-delete-after never)")
    clear_all_shovels()
    delete_queue("nosrc")
    delete_queue("nodst")
    v = {"src-uri": "amqp://", "src-queue": "nosrc", "dest-uri": "amqp://", "dest-queue": "nodst",
         "dest-queue-args": {"x-max-length": 100}}
    api("PUT", "/parameters/shovel/%2F/mkq", {"value": v})
    wait_state("mkq")
    api("GET", "/shovels/%2F")
    for q in ("nosrc", "nodst"):
        st, body = api("GET", "/queues/%2F/" + q, show=False)
        emit("queue %s: HTTP %d %s" % (q, st, jdump({k: body.get(k) for k in (
            "name", "durable", "auto_delete", "exclusive", "arguments", "type")}) if st == 200 else body))
    api("DELETE", "/parameters/shovel/%2F/mkq", show=False)

    section("F2. source queue does not exist, src-delete-after queue-length")
    delete_queue("nosrc")
    delete_queue("nodst")
    v = dict(MOVE1, **{"src-queue": "nosrc", "dest-queue": "nodst"})
    poller = Poller("mkq2")
    poller.start()
    api("PUT", "/parameters/shovel/%2F/mkq2", {"value": v})
    gone = wait_param_gone("mkq2")
    time.sleep(0.5)
    poller.stop_flag = True
    poller.join()
    emit("parameter gone after %s s; /api/shovels states seen: %s" % (gone, poller.order))
    for q in ("nosrc", "nodst"):
        st, body = api("GET", "/queues/%2F/" + q, show=False)
        emit("queue %s: HTTP %d %s" % (q, st, jdump({k: body.get(k) for k in (
            "name", "durable", "auto_delete", "exclusive", "arguments")}) if st == 200 else body))

    section("F3. queue-length on an EMPTY existing queue")
    reset_queue("dlq")
    poller = Poller("empty")
    poller.start()
    api("PUT", "/parameters/shovel/%2F/empty", {"value": MOVE1})
    gone = wait_param_gone("empty")
    time.sleep(0.5)
    poller.stop_flag = True
    poller.join()
    emit("parameter gone after %s s; /api/shovels states seen: %s" % (gone, poller.order))

    section("F4. source queue exists with different properties (non-durable, x-max-length) -> passive declare only")
    reset_queue("nd", durable=False, arguments={"x-max-length": 50})
    v = {"src-uri": "amqp://", "src-queue": "nd", "dest-uri": "amqp://", "dest-queue": "ndout",
         "src-queue-args": {"x-max-length": 7}}
    api("PUT", "/parameters/shovel/%2F/nd", {"value": v})
    wait_state("nd", states=("running", "terminated"))
    api("GET", "/shovels/%2F")
    st, body = api("GET", "/queues/%2F/nd", show=False)
    emit("queue nd after: durable=%s arguments=%s" % (body.get("durable"), body.get("arguments")))
    api("DELETE", "/parameters/shovel/%2F/nd", show=False)
    delete_queue("nd"); delete_queue("ndout")

    section("F5. error states: src-exchange that does not exist; unreachable dest-uri; bad credentials")
    v = {"src-uri": "amqp://", "src-exchange": "no-such-exchange", "dest-uri": "amqp://", "dest-queue": "x1",
         "reconnect-delay": 1}
    api("PUT", "/parameters/shovel/%2F/badx", {"value": v})
    v = {"src-uri": "amqp://", "src-queue": "x2", "dest-uri": "amqp://localhost:1", "dest-queue": "x3",
         "reconnect-delay": 1}
    api("PUT", "/parameters/shovel/%2F/baddest", {"value": v})
    v = {"src-uri": "amqp://nobody:wrong@localhost", "src-queue": "x4", "dest-uri": "amqp://", "dest-queue": "x5"}
    api("PUT", "/parameters/shovel/%2F/badauth", {"value": v})
    time.sleep(0.3)
    api("GET", "/shovels/%2F", note="0.3 s after")
    time.sleep(3)
    api("GET", "/shovels/%2F", note="3.3 s after")
    time.sleep(4)
    api("GET", "/shovels/%2F", note="7.3 s after")
    api("GET", "/shovels/vhost/%2F/badx")
    api("DELETE", "/shovels/vhost/%2F/baddest/restart", note="restart a terminated shovel")
    api("GET", "/parameters/shovel/%2F")
    for n in ("badx", "baddest", "badauth"):
        api("DELETE", "/parameters/shovel/%2F/" + n, show=False)
    for q in ("x1", "x2", "x3", "x4", "x5", "nosrc", "nodst"):
        delete_queue(q)


def probe_g():
    section("G1. src-prefetch-count default and explicit")
    clear_all_shovels()
    reset_queue("pf")
    for name, extra in (("pfdefault", {}), ("pf5", {"src-prefetch-count": 5}),
                        ("pflegacy", {"prefetch-count": 7}), ("pfnoack", {"ack-mode": "no-ack"})):
        v = {"src-uri": "amqp://", "src-queue": "pf", "dest-uri": "amqp://", "dest-queue": "pfout"} | extra
        api("PUT", "/parameters/shovel/%2F/" + name, {"value": v}, show=False)
        wait_state(name)
    time.sleep(6)  # consumer stats are emitted every 5 s
    st, cons = api("GET", "/consumers/%2F", show=False)
    st2, chans = api("GET", "/channels", show=False)
    chan_prefetch = {c["name"]: (c.get("prefetch_count"), c.get("global_prefetch_count"),
                                 c.get("confirm"), c.get("connection_details", {}).get("name"))
                     for c in chans or []}
    emit("```")
    for c in cons or []:
        ch = c["channel_details"]
        emit("consumer on %s: connection_name=%s prefetch_count=%s ack_required=%s arguments=%s  channel(prefetch,global_prefetch,confirm)=%s" % (
            c["queue"]["name"], ch.get("connection_name"), c.get("prefetch_count"),
            c.get("ack_required"), c.get("arguments"), chan_prefetch.get(ch.get("name"))))
    emit("```")
    emit("All channels (prefetch_count, global_prefetch_count, confirm, connection):")
    emit("```")
    emit(jdump(chan_prefetch))
    emit("```")
    st, conns = api("GET", "/connections", show=False)
    emit("One shovel connection as shown by GET /api/connections (selected fields):")
    emit("```")
    c0 = sorted(conns or [], key=lambda c: c["name"])[0] if conns else {}
    emit(jdump({k: c0.get(k) for k in ("name", "type", "protocol", "user", "vhost", "node", "host", "port",
                                         "peer_host", "peer_port", "ssl", "channels", "client_properties")}))
    emit("```")
    emit("Number of connections for 4 running shovels: %d" % len(conns or []))
    clear_all_shovels()
    delete_queue("pf"); delete_queue("pfout")

    section("G2. does queue-length count at start? publish 5000, start shovel, publish 500 more while it runs")
    reset_queue("dlq")
    reset_queue("work")
    publish("dlq", 5000, payload_size=1024)
    n0 = qcount("dlq")
    poller = Poller("grow")
    poller.start()
    extra = {"n": 0, "stop": False}

    def extra_pub():
        c = conn(); ch = c.channel()
        ch.confirm_delivery()
        for i in range(5000, 5500):
            ch.basic_publish("", "dlq", b"extra-%d" % i, pika.BasicProperties(
                delivery_mode=2, message_id="m-%d" % i, headers={"x-probe": "h-%d" % i, "seq": i}))
            extra["n"] += 1
        c.close()

    th = threading.Thread(target=extra_pub, daemon=True)
    t_put = time.time()
    api("PUT", "/parameters/shovel/%2F/grow", {"value": dict(MOVE1, **{"src-prefetch-count": 50})})
    th.start()
    gone = wait_param_gone("grow", timeout=60)
    t_gone = time.time()
    extras_at_finish = extra["n"]
    th.join()
    time.sleep(1)
    poller.stop_flag = True
    poller.join()
    emit("dlq before=%d; shovel finished (parameter gone) %.2fs after PUT; %d of the 500 extra messages had "
         "already been published (confirmed) into dlq by then; /api/shovels states seen %s (running first seen at +%.3fs)" % (
        n0, t_gone - t_put, extras_at_finish, poller.order,
        poller.seen["running"][0] - t_put if "running" in poller.seen else -1))
    emit("After: dlq=%s work=%s" % (qcount("dlq"), qcount("work")))
    show_msg("dlq", "first remaining in source")
    c = conn(); ch = c.channel()
    last = None
    while True:
        m, p, b = ch.basic_get("work", auto_ack=False)
        if m is None:
            break
        last = p.message_id
    c.close()
    emit("last message_id in work: %s" % last)


def main():
    emit("# Raw transcript of shovel_probe.py against RabbitMQ")
    st, ov = api("GET", "/overview", show=False)
    emit("RabbitMQ %s, node %s, cluster_name %s, run at %s" % (
        ov["rabbitmq_version"], ov["node"], ov["cluster_name"], time.strftime("%Y-%m-%d %H:%M:%S")))
    which = sys.argv[2].split(",") if len(sys.argv) > 2 else ["a", "b", "cd", "e", "f", "g"]
    table = {"a": probe_a, "b": probe_b, "cd": probe_c_d, "e": probe_e, "f": probe_f, "g": probe_g}
    try:
        for w in which:
            table[w]()
    finally:
        clear_all_shovels()
        with open(OUT, "w") as f:
            f.write("\n".join(out_lines) + "\n")


if __name__ == "__main__":
    main()
