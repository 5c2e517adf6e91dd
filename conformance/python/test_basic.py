"""basic.*: properties, bodies, returns, consumers, get, ack/nack/reject, recover, qos."""
import datetime
import decimal
import os

import pika
import pika.exceptions as pe
import pytest

from amqp_raw import broker_credentials
from conftest import (SENTINEL, channel_error, consume_n, drain, get_until_sentinel, pump,
                      pump_for)


def wait_ready(conn, ch, q, n):
    pump(conn, lambda: ch.queue_declare(q, passive=True).method.message_count == n)


def publish_n(ch, q, n, fmt=b"m%d"):
    for i in range(n):
        ch.basic_publish("", q, fmt % i)


# ------------------------------------------------------------ properties / headers
HEADERS = {
    "str": "text", "unicode": "ünïcødé ✓", "empty_str": "",
    "int0": 0, "int1": 1, "int_neg": -5, "int32_max": 2 ** 31 - 1, "int32_min": -2 ** 31,
    "int_above_32": 2 ** 31, "int40": 2 ** 40, "int40_neg": -2 ** 40, "int63_max": 2 ** 63 - 1,
    "true": True, "false": False, "void": None,
    "decimal": decimal.Decimal("3.14"), "decimal_int": decimal.Decimal("42"),
    "decimal_neg": decimal.Decimal("-1.5"),
    "timestamp": datetime.datetime(2020, 1, 2, 3, 4, 5),
    "table": {"a": 1, "b": {"c": [1, "x"]}}, "empty_table": {},
    "array": [1, "two", None, True, [3], {"k": "v"}], "empty_array": [],
    "bytes": b"\x00\xffraw",
}


def full_props():
    user, _, _ = broker_credentials()
    return pika.BasicProperties(
        content_type="application/json", content_encoding="gzip", headers=HEADERS,
        delivery_mode=2, priority=7, correlation_id="corr-id", reply_to="reply-q",
        expiration="60000", message_id="msg-id", timestamp=1234567890, type="my-type",
        user_id=user, app_id="my-app", cluster_id="cluster")


PROP_NAMES = ["content_type", "content_encoding", "delivery_mode", "priority",
              "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type",
              "user_id", "app_id", "cluster_id"]


def assert_props_equal(got, sent):
    for a in PROP_NAMES:
        assert getattr(got, a) == getattr(sent, a), a
    assert got.headers == sent.headers
    for k, v in sent.headers.items():
        # pika decodes 64-bit ints as its `long` subclass of int
        assert isinstance(got.headers[k], type(v)) or (type(v) is int and isinstance(got.headers[k], int)), k


def test_all_properties_and_header_types_roundtrip_get(conn, ch, queue):
    props = full_props()
    ch.basic_publish("", queue, b"body", props)
    wait_ready(conn, ch, queue, 1)
    m, p, b = ch.basic_get(queue, auto_ack=True)
    assert b == b"body"
    assert_props_equal(p, props)


def test_all_properties_and_header_types_roundtrip_consume(conn, ch, queue):
    props = full_props()
    ch.basic_publish("", queue, b"body", props)
    _, got = consume_n(conn, ch, queue, 1, auto_ack=True)
    m, p, b = got[0]
    assert b == b"body"
    assert_props_equal(p, props)


def test_properties_roundtrip_via_topic_and_headers_exchange(conn, ch, names):
    # routing through exchanges that inspect the message must not alter properties
    t, h = names("t"), names("h")
    ch.exchange_declare(t, "topic")
    ch.exchange_declare(h, "headers")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, t, "#")
    ch.queue_bind(q, h, "", arguments={"x-match": "any", "str": "text"})
    props = full_props()
    ch.basic_publish(t, "a.b", b"1", props)
    ch.basic_publish(h, "", b"2", props)
    _, got = consume_n(conn, ch, q, 2, auto_ack=True)
    assert [b for _, _, b in got] == [b"1", b"2"]
    for _, p, _ in got:
        assert_props_equal(p, props)


def test_no_properties_delivers_no_properties(conn, ch, queue):
    ch.basic_publish("", queue, b"bare")
    wait_ready(conn, ch, queue, 1)
    m, p, b = ch.basic_get(queue, auto_ack=True)
    assert b == b"bare"
    for a in PROP_NAMES + ["headers"]:
        assert getattr(p, a) is None, a  # the broker adds nothing


def test_float_header_is_not_encodable_by_pika(ch, queue):
    # pika 1.3 cannot encode float field values (the raw-frame suite covers 'f'/'d')
    with pytest.raises(pe.UnsupportedAMQPFieldException):
        ch.basic_publish("", queue, b"x", pika.BasicProperties(headers={"f": 1.5}))


def test_user_id_mismatch_is_406(ch, queue):
    user, _, _ = broker_credentials()
    with channel_error(406, "PRECONDITION_FAILED - user_id property set to 'not-%s' but authenticated user was '%s'" % (user, user)):
        ch.basic_publish("", queue, b"x", pika.BasicProperties(user_id="not-" + user))
        ch.queue_declare(queue, passive=True)


@pytest.mark.parametrize("exp,text", [
    ("abc", "PRECONDITION_FAILED - invalid expiration 'abc': no_integer"),
    ("-1", "PRECONDITION_FAILED - invalid expiration '-1': {value_negative,-1}"),
])
def test_invalid_expiration_is_406(ch, queue, exp, text):
    with channel_error(406, text):
        ch.basic_publish("", queue, b"x", pika.BasicProperties(expiration=exp))
        ch.queue_declare(queue, passive=True)


# ------------------------------------------------------------ bodies
@pytest.mark.parametrize("size", [0, 1, 131063, 131064, 131065, 262128, 262129, 1024 * 1024])
def test_body_sizes_roundtrip(conn, ch, queue, size):
    # default frame_max 131072 -> 131064 body bytes per frame
    body = os.urandom(size)
    ch.basic_publish("", queue, body)
    ch.basic_publish("", queue, SENTINEL)
    assert get_until_sentinel(conn, ch, queue) == [body]


def test_large_body_via_consumer(conn, ch, queue):
    body = os.urandom(1024 * 1024 + 7)
    ch.basic_publish("", queue, body)
    ch.basic_publish("", queue, b"")
    _, got = consume_n(conn, ch, queue, 2, auto_ack=True)
    assert [b for _, _, b in got] == [body, b""]


# ------------------------------------------------------------ mandatory / return
def test_mandatory_unroutable_is_returned_312(conn, ch, name):
    ch.exchange_declare(name, "direct")
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append((m, p, b)))
    props = pika.BasicProperties(message_id="abc", headers={"h": 1})
    ch.basic_publish(name, "nobody", b"returned-body", props, mandatory=True)
    pump(conn, lambda: returned)
    m, p, b = returned[0]
    assert (m.reply_code, m.reply_text, m.exchange, m.routing_key) == (312, "NO_ROUTE", name, "nobody")
    assert b == b"returned-body"
    assert p.message_id == "abc" and p.headers == {"h": 1}
    pump_for(conn, 0.2)
    assert len(returned) == 1


def test_mandatory_routable_is_not_returned(conn, ch, queue):
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append(m))
    ch.basic_publish("", queue, b"ok", mandatory=True)
    ch.basic_publish("", queue, SENTINEL)
    assert get_until_sentinel(conn, ch, queue) == [b"ok"]
    pump_for(conn, 0.2)
    assert returned == []


def test_non_mandatory_unroutable_is_silently_dropped(conn, ch, name):
    ch.exchange_declare(name, "direct")
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append(m))
    ch.basic_publish(name, "nobody", b"dropped")
    pump_for(conn, 0.3)
    assert returned == []
    assert ch.is_open


# ------------------------------------------------------------ consumers
def test_consume_deliver_fields(conn, ch, queue):
    ch.basic_publish("", queue, b"x")
    tag, got = consume_n(conn, ch, queue, 1, consumer_tag="my-tag")
    assert tag == "my-tag"
    m, _, b = got[0]
    assert (m.consumer_tag, m.delivery_tag, m.redelivered, m.exchange, m.routing_key) == \
        ("my-tag", 1, False, "", queue)
    ch.basic_ack(m.delivery_tag)


def test_server_generated_consumer_tag(conn, ch, queue):
    tag = ch.basic_consume(queue, lambda *a: None)
    assert tag.startswith("ctag")  # pika generates it client-side
    assert ch.basic_cancel(tag) == []


def test_cancel_stops_deliveries_and_keeps_unacked(conn, ch, queue):
    ch.basic_qos(prefetch_count=1)
    publish_n(ch, queue, 3)
    tag, got = consume_n(conn, ch, queue, 1)
    ch.basic_cancel(tag)
    pump_for(conn, 0.2)
    assert len(got) == 1
    # unacked delivery can still be acked after cancel
    ch.basic_ack(got[0][0].delivery_tag)
    assert ch.queue_declare(queue, passive=True).method.message_count == 2


def test_cancel_unknown_consumer_tag_is_ok(ch):
    assert ch.basic_cancel("conformance-unknown-tag") == []
    assert ch.is_open


def test_exclusive_consumer_conflicts_are_403(conn, ch, queue):
    ch.basic_consume(queue, lambda *a: None, exclusive=True)
    other = conn.channel()
    with channel_error(403, "ACCESS_REFUSED - queue '%s' in vhost '/' in exclusive use" % queue):
        other.basic_consume(queue, lambda *a: None)
    assert ch.is_open
    # the same channel gets no exemption
    with channel_error(403, "ACCESS_REFUSED - queue '%s' in vhost '/' in exclusive use" % queue):
        ch.basic_consume(queue, lambda *a: None)
    # closing that channel cancelled the exclusive consumer: queue is free again
    c3 = conn.channel()
    c3.basic_consume(queue, lambda *a: None)
    assert c3.queue_declare(queue, passive=True).method.consumer_count == 1


def test_exclusive_consume_when_consumer_exists_is_403(conn, ch, queue):
    ch.basic_consume(queue, lambda *a: None)
    c = conn.channel()
    with channel_error(403, "ACCESS_REFUSED - queue '%s' in vhost '/' in exclusive use" % queue):
        c.basic_consume(queue, lambda *a: None, exclusive=True)


def test_consumer_cancel_notification_on_queue_delete(conn, ch, queue):
    cancels = []
    ch.add_on_cancel_callback(lambda frame: cancels.append(frame.method))
    tag = ch.basic_consume(queue, lambda *a: None, consumer_tag="cancel-me")
    conn.channel().queue_delete(queue)
    pump(conn, lambda: cancels)
    assert isinstance(cancels[0], pika.spec.Basic.Cancel)
    assert cancels[0].consumer_tag == "cancel-me"
    assert ch.is_open
    assert tag not in ch.consumer_tags


def test_round_robin_between_competing_consumers(conn, queue):
    a, b = conn.channel(), conn.channel()
    got = []
    a.basic_consume(queue, lambda c, m, p, body: got.append(("a", body)), auto_ack=True)
    b.basic_consume(queue, lambda c, m, p, body: got.append(("b", body)), auto_ack=True)
    pub = conn.channel()
    publish_n(pub, queue, 10)
    pump(conn, lambda: len(got) == 10)
    by = {"a": [x for w, x in got if w == "a"], "b": [x for w, x in got if w == "b"]}
    assert len(by["a"]) == 5 and len(by["b"]) == 5
    # strict alternation: consumers get every other message, in order
    assert sorted(by["a"] + by["b"]) == sorted(b"m%d" % i for i in range(10))
    evens = [b"m%d" % i for i in range(0, 10, 2)]
    odds = [b"m%d" % i for i in range(1, 10, 2)]
    assert {tuple(by["a"]), tuple(by["b"])} == {tuple(evens), tuple(odds)}


# ------------------------------------------------------------ basic.get
def test_basic_get_message_count_and_empty(conn, ch, queue):
    publish_n(ch, queue, 3)
    wait_ready(conn, ch, queue, 3)
    counts = []
    for i in range(3):
        m, p, b = ch.basic_get(queue, auto_ack=True)
        assert b == b"m%d" % i and m.redelivered is False
        counts.append(m.message_count)
    assert counts == [2, 1, 0]  # messages remaining after this one
    assert ch.basic_get(queue) == (None, None, None)


def test_delivery_tags_are_per_channel_and_shared_by_get_and_consume(conn, queue):
    a = conn.channel()
    publish_n(a, queue, 3)
    wait_ready(conn, a, queue, 3)
    m1 = a.basic_get(queue)[0]
    m2 = a.basic_get(queue)[0]
    b = conn.channel()
    m3 = b.basic_get(queue)[0]
    assert (m1.delivery_tag, m2.delivery_tag, m3.delivery_tag) == (1, 2, 1)
    a.basic_publish("", queue, b"x")
    _, got = consume_n(conn, a, queue, 1)
    assert got[0][0].delivery_tag == 3


# ------------------------------------------------------------ ack / nack / reject
def get_all(conn, ch, q, n, ready=None):
    """Wait until `ready` (default n) messages are ready, then basic_get n unacked."""
    wait_ready(conn, ch, q, n if ready is None else ready)
    return [ch.basic_get(q)[0] for _ in range(n)]


def test_reject_requeue_goes_back_to_original_position(conn, ch, queue):
    publish_n(ch, queue, 3)
    ms = get_all(conn, ch, queue, 2, ready=3)  # m0, m1 unacked; m2 ready
    ch.basic_reject(ms[0].delivery_tag, requeue=True)
    msgs = drain(ch, queue)
    assert [(b, m.redelivered) for m, _, b in msgs] == [(b"m0", True), (b"m2", False)]


def test_nack_requeue_restores_fifo_order(conn, ch, queue):
    publish_n(ch, queue, 5)
    ms = get_all(conn, ch, queue, 5)
    ch.basic_nack(ms[3].delivery_tag, requeue=True)
    ch.basic_nack(ms[1].delivery_tag, requeue=True)
    ch.basic_nack(ms[4].delivery_tag, multiple=True, requeue=True)  # m0, m2, m4
    msgs = drain(ch, queue)
    assert [(b, m.redelivered) for m, _, b in msgs] == [(b"m%d" % i, True) for i in range(5)]


def test_reject_and_nack_without_requeue_discard(conn, ch, queue):
    publish_n(ch, queue, 4)
    ms = get_all(conn, ch, queue, 4)
    ch.basic_reject(ms[0].delivery_tag, requeue=False)
    ch.basic_nack(ms[2].delivery_tag, multiple=True, requeue=False)  # m1, m2
    ch.basic_nack(ms[3].delivery_tag, requeue=True)
    assert [b for _, _, b in drain(ch, queue)] == [b"m3"]


def test_ack_multiple(conn, ch, queue):
    publish_n(ch, queue, 4)
    ms = get_all(conn, ch, queue, 4)
    ch.basic_ack(ms[2].delivery_tag, multiple=True)  # m0..m2
    ch.basic_nack(0, multiple=True, requeue=True)     # only m3 left to requeue
    assert [b for _, _, b in drain(ch, queue)] == [b"m3"]


def test_ack_zero_multiple_acks_everything(conn, ch, queue):
    publish_n(ch, queue, 3)
    get_all(conn, ch, queue, 3)
    ch.basic_ack(0, multiple=True)
    ch.close()
    c = conn.channel()
    assert c.queue_declare(queue, passive=True).method.message_count == 0
    assert c.basic_get(queue) == (None, None, None)


def test_ack_zero_multiple_with_nothing_outstanding_is_ok(ch):
    ch.basic_ack(0, multiple=True)
    ch.basic_qos(prefetch_count=0)  # sync round trip: channel still open
    assert ch.is_open


@pytest.mark.parametrize("op", ["ack", "nack", "reject"])
def test_unknown_delivery_tag_is_406(conn, ch, op):
    with channel_error(406, "PRECONDITION_FAILED - unknown delivery tag 99"):
        getattr(ch, "basic_" + op)(99)
        ch.basic_qos(prefetch_count=0)
    assert conn.is_open


def test_ack_zero_non_multiple_is_406(ch):
    with channel_error(406, "PRECONDITION_FAILED - unknown delivery tag 0"):
        ch.basic_ack(0)
        ch.basic_qos(prefetch_count=0)


def test_ack_multiple_beyond_last_tag_is_406(conn, ch, queue):
    publish_n(ch, queue, 1)
    m = get_all(conn, ch, queue, 1)[0]
    with channel_error(406, "PRECONDITION_FAILED - unknown delivery tag %d" % (m.delivery_tag + 5)):
        ch.basic_ack(m.delivery_tag + 5, multiple=True)
        ch.basic_qos(prefetch_count=0)


def test_double_ack_is_406(conn, ch, queue):
    publish_n(ch, queue, 1)
    m = get_all(conn, ch, queue, 1)[0]
    ch.basic_ack(m.delivery_tag)
    with channel_error(406, "PRECONDITION_FAILED - unknown delivery tag %d" % m.delivery_tag):
        ch.basic_ack(m.delivery_tag)
        ch.basic_qos(prefetch_count=0)


def test_ack_of_auto_acked_delivery_is_406(conn, ch, queue):
    publish_n(ch, queue, 1)
    wait_ready(conn, ch, queue, 1)
    m = ch.basic_get(queue, auto_ack=True)[0]
    with channel_error(406, "PRECONDITION_FAILED - unknown delivery tag %d" % m.delivery_tag):
        ch.basic_ack(m.delivery_tag)
        ch.basic_qos(prefetch_count=0)


def test_ack_on_other_channel_is_406(conn, ch, queue):
    publish_n(ch, queue, 1)
    m = get_all(conn, ch, queue, 1)[0]
    other = conn.channel()
    with channel_error(406, "PRECONDITION_FAILED - unknown delivery tag %d" % m.delivery_tag):
        other.basic_ack(m.delivery_tag)
        other.basic_qos(prefetch_count=0)
    ch.basic_ack(m.delivery_tag)


# ------------------------------------------------------------ recover
def test_recover_requeue_true_redelivers_unacked(conn, ch, queue):
    publish_n(ch, queue, 3)
    got = []
    ch.basic_consume(queue, lambda c, m, p, b: got.append((m, b)))
    pump(conn, lambda: len(got) == 3)
    ch.basic_ack(got[1][0].delivery_tag)
    ch.basic_recover(requeue=True)
    pump(conn, lambda: len(got) == 5)
    again = [(b, m.redelivered) for m, b in got[3:]]
    assert again == [(b"m0", True), (b"m2", True)]
    assert [m.delivery_tag for m, _ in got] == [1, 2, 3, 4, 5]


def test_recover_with_nothing_unacked_is_ok(ch):
    ch.basic_recover(requeue=True)
    assert ch.is_open


# ------------------------------------------------------------ qos
def test_prefetch_count_per_consumer(conn, ch, names):
    qa, qb = names("qa"), names("qb")
    for q in (qa, qb):
        ch.queue_declare(q)
        publish_n(ch, q, 5)
        wait_ready(conn, ch, q, 5)
    ch.basic_qos(prefetch_count=2)  # global=False: per consumer
    got = {qa: [], qb: []}
    for q in (qa, qb):
        ch.basic_consume(q, lambda c, m, p, b, q=q: got[q].append(m))
    pump(conn, lambda: len(got[qa]) == 2 and len(got[qb]) == 2)
    pump_for(conn, 0.3)
    assert (len(got[qa]), len(got[qb])) == (2, 2)
    ch.basic_ack(got[qa][0].delivery_tag)  # frees one slot for consumer A only
    pump(conn, lambda: len(got[qa]) == 3)
    pump_for(conn, 0.2)
    assert (len(got[qa]), len(got[qb])) == (3, 2)


def test_prefetch_count_global_is_shared_by_channel(conn, ch, names):
    qa, qb = names("qa"), names("qb")
    for q in (qa, qb):
        ch.queue_declare(q)
        publish_n(ch, q, 5)
        wait_ready(conn, ch, q, 5)
    ch.basic_qos(prefetch_count=3, global_qos=True)
    got = []
    for q in (qa, qb):
        ch.basic_consume(q, lambda c, m, p, b: got.append(m))
    pump(conn, lambda: len(got) == 3)
    pump_for(conn, 0.3)
    assert len(got) == 3
    ch.basic_ack(got[-1].delivery_tag, multiple=True)
    pump(conn, lambda: len(got) == 6)
    pump_for(conn, 0.2)
    assert len(got) == 6


def test_prefetch_global_and_per_consumer_combined(conn, ch, names):
    qa, qb = names("qa"), names("qb")
    for q in (qa, qb):
        ch.queue_declare(q)
        publish_n(ch, q, 5)
        wait_ready(conn, ch, q, 5)
    ch.basic_qos(prefetch_count=3, global_qos=True)   # channel-wide cap
    ch.basic_qos(prefetch_count=1, global_qos=False)  # per-consumer cap
    got = []
    for q in (qa, qb):
        ch.basic_consume(q, lambda c, m, p, b: got.append(m))
    pump(conn, lambda: len(got) == 2)
    pump_for(conn, 0.3)
    assert len(got) == 2  # each consumer limited to 1


def test_prefetch_applies_to_consumers_created_after_qos_only(conn, ch, queue):
    publish_n(ch, queue, 5)
    wait_ready(conn, ch, queue, 5)
    got = []
    ch.basic_qos(prefetch_count=1)
    ch.basic_consume(queue, lambda c, m, p, b: got.append(m))
    ch.basic_qos(prefetch_count=4)  # does not change the existing consumer's limit
    pump(conn, lambda: got)
    pump_for(conn, 0.3)
    assert len(got) == 1


def test_prefetch_does_not_limit_basic_get(conn, ch, queue):
    ch.basic_qos(prefetch_count=1)
    publish_n(ch, queue, 3)
    wait_ready(conn, ch, queue, 3)
    ms = [ch.basic_get(queue)[0] for _ in range(3)]
    assert all(m is not None for m in ms)


def test_prefetch_ignored_for_auto_ack_consumers(conn, ch, queue):
    ch.basic_qos(prefetch_count=1)
    publish_n(ch, queue, 5)
    _, got = consume_n(conn, ch, queue, 5, auto_ack=True)
    assert len(got) == 5
