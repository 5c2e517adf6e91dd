"""Exchange declaration rules and routing semantics of every built-in type."""
import struct

import pika
import pika.exceptions as pe
import pytest

from amqp_raw import RawConnection, basic_publish, body_frame, header_frame, table, method_frame
from conftest import (SENTINEL, channel_error, get_until_sentinel, pump_for)


def excl_queue(ch):
    return ch.queue_declare("", exclusive=True).method.queue


# ------------------------------------------------------------ default exchange
def test_default_exchange_routes_by_queue_name(conn, ch, queue):
    ch.basic_publish("", queue, b"hello")
    ch.basic_publish("", queue, SENTINEL)
    assert get_until_sentinel(conn, ch, queue) == [b"hello"]


def test_default_exchange_unknown_queue_is_dropped_or_returned(conn, ch, name):
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append((m, b)))
    ch.basic_publish("", name, b"nowhere", mandatory=True)
    pump_for(conn, 0.5)
    assert len(returned) == 1
    m, b = returned[0]
    assert (m.reply_code, m.reply_text, m.exchange, m.routing_key) == (312, "NO_ROUTE", "", name)
    assert b == b"nowhere"


DEFAULT_EX_OPS = {
    "declare": lambda ch, q: ch.exchange_declare(""),
    "declare_passive": lambda ch, q: ch.exchange_declare("", passive=True),
    "declare_durable_direct": lambda ch, q: ch.exchange_declare("", "direct", durable=True),
    "delete": lambda ch, q: ch.exchange_delete(""),
    "queue_bind": lambda ch, q: ch.queue_bind(q, "", "rk"),
    "queue_unbind": lambda ch, q: ch.queue_unbind(q, "", q),
    "exchange_bind_source": lambda ch, q: ch.exchange_bind("amq.fanout", "", "rk"),
    "exchange_bind_destination": lambda ch, q: ch.exchange_bind("", "amq.fanout", "rk"),
    "exchange_unbind_source": lambda ch, q: ch.exchange_unbind("amq.fanout", "", "rk"),
}


@pytest.mark.parametrize("op", sorted(DEFAULT_EX_OPS))
def test_operations_on_default_exchange_are_403(conn, queue, op):
    c = conn.channel()
    with channel_error(403, "ACCESS_REFUSED - operation not permitted on the default exchange"):
        DEFAULT_EX_OPS[op](c, queue)
    assert conn.is_open


def test_amq_default_alias_does_not_exist(conn, ch, queue):
    # RabbitMQ 3.10 has no 'amq.default' alias for the default exchange
    with channel_error(404, "NOT_FOUND - no exchange 'amq.default' in vhost '/'"):
        ch.basic_publish("amq.default", queue, b"x")
        ch.queue_declare(queue, passive=True)


# ------------------------------------------------------------ amq.* reserved
def test_declare_new_amq_prefixed_exchange_is_403(ch):
    with channel_error(403, "ACCESS_REFUSED - exchange name 'amq.conformance-new' contains reserved prefix 'amq.*'"):
        ch.exchange_declare("amq.conformance-new", "direct")


def test_passive_declare_missing_amq_prefixed_is_404_not_403(ch):
    # passive declare skips the reserved-prefix check
    with channel_error(404, "NOT_FOUND - no exchange 'amq.conformance-new' in vhost '/'"):
        ch.exchange_declare("amq.conformance-new", passive=True)


def test_amq_prefix_check_is_case_sensitive(ch, name):
    n = "AMQ." + name
    ch.exchange_declare(n, "direct", auto_delete=True)
    ch.exchange_delete(n)


@pytest.mark.parametrize("ex,typ", [("amq.direct", "direct"), ("amq.fanout", "fanout"),
                                    ("amq.topic", "topic"), ("amq.headers", "headers"),
                                    ("amq.match", "headers")])
def test_standard_exchanges_exist_and_redeclare_equivalently(ch, ex, typ):
    ch.exchange_declare(ex, passive=True)
    ch.exchange_declare(ex, typ, durable=True)


def test_redeclare_amq_direct_with_different_type_is_406(ch):
    with channel_error(406, "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'amq.direct' in vhost '/': received 'fanout' but current is 'direct'"):
        ch.exchange_declare("amq.direct", "fanout", durable=True)


def test_redeclare_amq_direct_non_durable_is_406(ch):
    with channel_error(406, "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'amq.direct' in vhost '/': received 'false' but current is 'true'"):
        ch.exchange_declare("amq.direct", "direct", durable=False)


def test_delete_amq_exchange_is_403(ch):
    with channel_error(403, "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed"):
        ch.exchange_delete("amq.direct")


# ------------------------------------------------------------ declare / delete
def test_passive_declare_missing_exchange_is_404(ch, name):
    with channel_error(404, "NOT_FOUND - no exchange '%s' in vhost '/'" % name):
        ch.exchange_declare(name, passive=True)


def test_passive_declare_ignores_type_mismatch(ch, name):
    ch.exchange_declare(name, "direct")
    ch.exchange_declare(name, "fanout", passive=True)


@pytest.mark.parametrize("kwargs,arg,received,current", [
    (dict(exchange_type="fanout"), "type", "fanout", "direct"),
    (dict(durable=True), "durable", "true", "false"),
    (dict(auto_delete=True), "auto_delete", "true", "false"),
    (dict(internal=True), "internal", "true", "false"),
])
def test_redeclare_exchange_with_different_property_is_406(conn, name, kwargs, arg, received, current):
    c = conn.channel()
    c.exchange_declare(name, "direct")
    kw = dict(exchange_type="direct")
    kw.update(kwargs)
    with channel_error(406, "PRECONDITION_FAILED - inequivalent arg '%s' for exchange '%s' in vhost '/': received '%s' but current is '%s'"
                       % (arg, name, received, current)):
        c.exchange_declare(name, **kw)
    conn.channel().exchange_declare(name, "direct")  # still the original, still equivalent


def test_redeclare_exchange_with_different_alternate_exchange_is_406(ch, name):
    ch.exchange_declare(name, "direct")
    with channel_error(406, "PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange '%s'" % name):
        ch.exchange_declare(name, "direct", arguments={"alternate-exchange": "foo"})


def test_redeclare_exchange_with_unknown_x_argument_is_ok(ch, name):
    ch.exchange_declare(name, "direct")
    ch.exchange_declare(name, "direct", arguments={"x-conformance-unknown": "v"})


def test_alternate_exchange_argument_must_be_string(ch, name):
    with channel_error(406, "PRECONDITION_FAILED - invalid type 'signedint' for arg 'alternate-exchange' in exchange '%s' in vhost '/'" % name):
        ch.exchange_declare(name, "direct", arguments={"alternate-exchange": 5})


def test_empty_exchange_type_is_connection_error_503(conn, ch, name):
    with pytest.raises(pe.ConnectionClosedByBroker) as ei:
        ch.exchange_declare(name, "")
    assert ei.value.reply_code == 503
    assert ei.value.reply_text.startswith("COMMAND_INVALID - invalid exchange type ''"), ei.value.reply_text


def test_delete_if_unused_when_bound_is_406(conn, ch, name, queue):
    ch.exchange_declare(name, "fanout")
    ch.queue_bind(queue, name)
    with channel_error(406, "PRECONDITION_FAILED - exchange '%s' in vhost '/' in use" % name):
        ch.exchange_delete(name, if_unused=True)
    c = conn.channel()
    c.exchange_declare(name, passive=True)
    c.queue_unbind(queue, name)
    c.exchange_delete(name, if_unused=True)
    with channel_error(404, "NOT_FOUND"):
        c.exchange_declare(name, passive=True)


def test_delete_if_unused_source_of_exchange_binding_is_406(ch, names):
    src, dst = names("src"), names("dst")
    ch.exchange_declare(src, "fanout")
    ch.exchange_declare(dst, "fanout")
    ch.exchange_bind(dst, src)
    with channel_error(406, "PRECONDITION_FAILED - exchange '%s' in vhost '/' in use" % src):
        ch.exchange_delete(src, if_unused=True)


def test_delete_if_unused_destination_only_is_allowed(ch, names):
    # being the *destination* of a binding does not count as "in use"
    src, dst = names("src"), names("dst")
    ch.exchange_declare(src, "fanout")
    ch.exchange_declare(dst, "fanout")
    ch.exchange_bind(dst, src)
    ch.exchange_delete(dst, if_unused=True)
    ch.exchange_delete(src, if_unused=True)


def test_delete_missing_exchange_succeeds(ch, name):
    ch.exchange_delete(name)
    ch.exchange_delete(name, if_unused=True)


def test_delete_exchange_removes_its_bindings(conn, ch, name, queue):
    ch.exchange_declare(name, "fanout")
    ch.queue_bind(queue, name)
    ch.exchange_delete(name)
    ch.exchange_declare(name, "fanout")
    ch.basic_publish(name, "", b"after-recreate")
    ch.basic_publish("", queue, SENTINEL)
    assert get_until_sentinel(conn, ch, queue) == []


def test_auto_delete_exchange_goes_when_last_binding_removed(conn, ch, name):
    ch.exchange_declare(name, "fanout", auto_delete=True)
    # never bound: still there
    ch.exchange_declare(name, passive=True)
    q = excl_queue(ch)
    ch.queue_bind(q, name)
    ch.queue_unbind(q, name)
    with channel_error(404, "NOT_FOUND - no exchange '%s' in vhost '/'" % name):
        ch.exchange_declare(name, passive=True)


def test_bind_missing_queue_or_exchange_is_404(conn, name, queue):
    c = conn.channel()
    c.exchange_declare(name, "direct")
    with channel_error(404, "NOT_FOUND - no queue 'conf-missing-q' in vhost '/'"):
        c.queue_bind("conf-missing-q", name, "rk")
    c = conn.channel()
    with channel_error(404, "NOT_FOUND - no exchange 'conf-missing-x' in vhost '/'"):
        c.queue_bind(queue, "conf-missing-x", "rk")
    c = conn.channel()
    with channel_error(404, "NOT_FOUND - no exchange 'conf-missing-x' in vhost '/'"):
        c.exchange_bind(name, "conf-missing-x", "rk")
    c = conn.channel()
    with channel_error(404, "NOT_FOUND - no exchange 'conf-missing-x' in vhost '/'"):
        c.exchange_bind("conf-missing-x", name, "rk")


def test_unbind_nonexistent_binding_is_ok(ch, name, queue):
    ch.exchange_declare(name, "direct")
    ch.queue_unbind(queue, name, "never-bound")
    ch.queue_unbind(queue, "conf-missing-x", "rk")      # missing exchange: ok too
    ch.queue_unbind("conf-missing-q", name, "rk")       # missing queue: ok too
    ch.exchange_unbind(name, "amq.direct", "never-bound")


# ------------------------------------------------------------ direct / fanout
def test_direct_routing(conn, ch, name):
    ch.exchange_declare(name, "direct")
    qa, qb, qc = excl_queue(ch), excl_queue(ch), excl_queue(ch)
    ch.queue_bind(qa, name, "a")
    ch.queue_bind(qb, name, "b")
    ch.queue_bind(qc, name, "a")
    ch.queue_bind(qc, name, "b")
    ch.queue_bind(qc, name, "a")  # duplicate binding is idempotent
    for rk in ("a", "b", "c", "A", ""):
        ch.basic_publish(name, rk, rk.encode() or b"-")
    for q in (qa, qb, qc):
        ch.basic_publish("", q, SENTINEL)
    assert get_until_sentinel(conn, ch, qa) == [b"a"]
    assert get_until_sentinel(conn, ch, qb) == [b"b"]
    assert get_until_sentinel(conn, ch, qc) == [b"a", b"b"]


def test_fanout_ignores_routing_key(conn, ch, name):
    ch.exchange_declare(name, "fanout")
    qs = [excl_queue(ch) for _ in range(3)]
    for i, q in enumerate(qs):
        ch.queue_bind(q, name, "key-%d" % i)
    ch.basic_publish(name, "whatever", b"m1")
    ch.basic_publish(name, "", b"m2")
    for q in qs:
        ch.basic_publish("", q, SENTINEL)
    for q in qs:
        assert get_until_sentinel(conn, ch, q) == [b"m1", b"m2"]


# ------------------------------------------------------------ topic
TOPIC_KEYS = ["", "a", "b", "a.b", "a..b", "a.x.b", "a.x.y.b", "a.", ".", ".a", "..",
              "a.b.c", "x.b", "A.b"]
# observed on RabbitMQ 3.10: pattern -> keys (in publish order) it matches
TOPIC_EXPECTED = {
    "*": ["a", "b"],  # "" is zero words: '*' needs exactly one
    "#": TOPIC_KEYS,
    "#.#": TOPIC_KEYS,
    "a.*.b": ["a..b", "a.x.b"],  # '*' matches an empty word
    "#.": ["a.", ".", ".."],
    ".#": [".", ".a", ".."],
    "a.#": ["a", "a.b", "a..b", "a.x.b", "a.x.y.b", "a.", "a.b.c"],  # '#' matches zero words
    "#.b": ["b", "a.b", "a..b", "a.x.b", "a.x.y.b", "x.b", "A.b"],
    "a.#.b": ["a.b", "a..b", "a.x.b", "a.x.y.b"],
    "a.#.#.b": ["a.b", "a..b", "a.x.b", "a.x.y.b"],
    "*.*": ["a.b", "a.", ".", ".a", "x.b", "A.b"],
    "a.*": ["a.b", "a."],
    "*.": ["a.", "."],
    ".": ["."],
    "": [""],
    "a": ["a"],
    "#.*": [k for k in TOPIC_KEYS if k != ""],
    "*.#": [k for k in TOPIC_KEYS if k != ""],
}


def test_topic_matching_matrix(conn, ch, name):
    ch.exchange_declare(name, "topic")
    qs = {}
    for pattern in TOPIC_EXPECTED:
        qs[pattern] = excl_queue(ch)
        ch.queue_bind(qs[pattern], name, pattern)
    for k in TOPIC_KEYS:
        ch.basic_publish(name, k, k.encode())
    for q in qs.values():
        ch.basic_publish("", q, SENTINEL)
    got = {p: [b.decode() for b in get_until_sentinel(conn, ch, q)] for p, q in qs.items()}
    assert got == TOPIC_EXPECTED


def test_topic_multiple_matching_bindings_deliver_once(conn, ch, name):
    ch.exchange_declare(name, "topic")
    q = excl_queue(ch)
    for p in ("a.b", "a.*", "#", "*.b", "a.#"):
        ch.queue_bind(q, name, p)
    ch.basic_publish(name, "a.b", b"once")
    ch.basic_publish("", q, SENTINEL)
    assert get_until_sentinel(conn, ch, q) == [b"once"]


def test_topic_unbind(conn, ch, name):
    ch.exchange_declare(name, "topic")
    q = excl_queue(ch)
    ch.queue_bind(q, name, "a.*")
    ch.basic_publish(name, "a.1", b"1")
    ch.queue_unbind(q, name, "a.*")
    ch.basic_publish(name, "a.2", b"2")
    ch.basic_publish("", q, SENTINEL)
    assert get_until_sentinel(conn, ch, q) == [b"1"]


# ------------------------------------------------------------ headers
HEADER_BINDINGS = {
    "all_a1_b2": {"x-match": "all", "a": 1, "b": "two"},
    "any_a1_b2": {"x-match": "any", "a": 1, "b": "two"},
    "default_is_all": {"a": 1, "b": "two"},
    "all_no_keys": {"x-match": "all"},        # matches everything
    "any_no_keys": {"x-match": "any"},        # matches nothing
    "no_args": {},
    "all_ignores_x_keys": {"x-match": "all", "x-foo": "bar"},
    "all_with_x": {"x-match": "all-with-x", "x-foo": "bar"},
    "any_ignores_x_keys": {"x-match": "any", "x-foo": "bar", "a": 1},
    "any_with_x": {"x-match": "any-with-x", "x-foo": "bar", "a": 5},
    "void_means_present": {"x-match": "all", "a": None},
    "str_1": {"x-match": "all", "a": "1"},
    "long_2_40": {"x-match": "all", "a": 2 ** 40},
    "bool_true": {"x-match": "all", "t": True},
    "bytes_two": {"x-match": "all", "s": b"two"},
    "all_with_x_no_keys": {"x-match": "all-with-x"},
}
HEADER_MESSAGES = [
    ("none", None), ("empty", {}), ("a1", {"a": 1}), ("a1b2", {"a": 1, "b": "two"}),
    ("a1b2c3", {"a": 1, "b": "two", "c": 3}), ("b2", {"b": "two"}), ("a2b2", {"a": 2, "b": "two"}),
    ("astr1", {"a": "1"}), ("abig", {"a": 2 ** 40}), ("xfoo", {"x-foo": "bar"}),
    ("xfoo_a5", {"x-foo": "bar", "a": 5}), ("avoid", {"a": None}), ("t", {"t": True}),
    ("t1", {"t": 1}), ("sstr", {"s": "two"}), ("sbytes", {"s": b"two"}),
    ("xmatchhdr", {"x-match": "all-with-x"}),
]
ALL_MSGS = [k for k, _ in HEADER_MESSAGES]
HEADER_EXPECTED = {
    "all_a1_b2": ["a1b2", "a1b2c3"],
    "any_a1_b2": ["a1", "a1b2", "a1b2c3", "b2", "a2b2"],
    "default_is_all": ["a1b2", "a1b2c3"],
    "all_no_keys": ALL_MSGS,
    "any_no_keys": [],
    "no_args": ALL_MSGS,
    "all_ignores_x_keys": ALL_MSGS,
    "all_with_x": ["xfoo", "xfoo_a5"],
    "any_ignores_x_keys": ["a1", "a1b2", "a1b2c3"],
    "any_with_x": ["xfoo", "xfoo_a5"],
    "void_means_present": ["a1", "a1b2", "a1b2c3", "a2b2", "astr1", "abig", "xfoo_a5", "avoid"],
    "str_1": ["astr1"],
    "long_2_40": ["abig"],
    "bool_true": ["t"],  # bool true != int 1
    "bytes_two": ["sstr", "sbytes"],  # byte-array 'x' and longstr 'S' compare equal
    "all_with_x_no_keys": ALL_MSGS,  # x-match itself is never a match key
}


def test_headers_matching_matrix(conn, ch, name):
    ch.exchange_declare(name, "headers")
    qs = {}
    for k, args in HEADER_BINDINGS.items():
        qs[k] = excl_queue(ch)
        ch.queue_bind(qs[k], name, "", arguments=args)
    for k, h in HEADER_MESSAGES:
        ch.basic_publish(name, "ignored", k.encode(), pika.BasicProperties(headers=h))
    for q in qs.values():
        ch.basic_publish("", q, SENTINEL)
    got = {k: [b.decode() for b in get_until_sentinel(conn, ch, q)] for k, q in qs.items()}
    assert got == HEADER_EXPECTED


@pytest.mark.parametrize("xmatch", ["ALL", "Any", "foo", ""])
def test_headers_invalid_x_match_value_is_406(ch, name, queue, xmatch):
    ch.exchange_declare(name, "headers")
    shown = '<<"%s">>' % xmatch if xmatch else "<<>>"  # Erlang binary formatting
    with channel_error(406, "PRECONDITION_FAILED - Invalid x-match field value %s; expected all, any, all-with-x, or any-with-x" % shown):
        ch.queue_bind(queue, name, "", arguments={"x-match": xmatch, "a": 1})


def test_headers_x_match_wrong_type_is_406(ch, name, queue):
    ch.exchange_declare(name, "headers")
    with channel_error(406, "PRECONDITION_FAILED - Invalid x-match field type signedint (value 1); expected longstr"):
        ch.queue_bind(queue, name, "", arguments={"x-match": 1, "a": 1})


def _raw_headers_publish(exchange, items):
    """Publish one message per (tag, type_char, raw_bytes) with header n=<typed value>."""
    r = RawConnection().handshake()
    try:
        r.open_channel(1)
        for tag, tchar, raw in items:
            r.send(basic_publish(1, exchange, ""))
            r.send(header_frame(1, len(tag), flags=0x2000, props=table([("n", tchar, raw)])))
            r.send(body_frame(1, tag.encode()))
        # channel.close round trip: everything above has been processed
        r.send(method_frame(1, 20, 40, struct.pack(">H", 200) + b"\x00" + struct.pack(">HH", 0, 0)))
        r.expect_method(1, 20, 41)
    finally:
        r.close()


def test_headers_integer_widths_match(conn, ch, name):
    ch.exchange_declare(name, "headers")
    q = excl_queue(ch)
    ch.queue_bind(q, name, "", arguments={"x-match": "all", "n": 1})  # pika encodes 'I'
    items = [("b", b"b", struct.pack(">b", 1)), ("B", b"B", struct.pack(">B", 1)),
             ("s", b"s", struct.pack(">h", 1)), ("u", b"u", struct.pack(">H", 1)),
             ("I", b"I", struct.pack(">i", 1)), ("i", b"i", struct.pack(">I", 1)),
             ("l", b"l", struct.pack(">q", 1)),
             ("I2", b"I", struct.pack(">i", 2)), ("b-1", b"b", struct.pack(">b", -1)),
             ("S1", b"S", struct.pack(">I", 1) + b"1"),
             ("D1", b"D", struct.pack(">BI", 0, 1)),
             ("t1", b"t", b"\x01"),
             # RabbitMQ 3.10 compares values with Erlang ==, so 1.0 == 1 and timestamp 1 == 1
             ("f1.0", b"f", struct.pack(">f", 1.0)), ("d1.0", b"d", struct.pack(">d", 1.0)),
             ("d1.5", b"d", struct.pack(">d", 1.5)), ("T1", b"T", struct.pack(">Q", 1))]
    _raw_headers_publish(name, items)
    ch.basic_publish("", q, SENTINEL)
    got = [b.decode() for b in get_until_sentinel(conn, ch, q)]
    assert got == ["b", "B", "s", "u", "I", "i", "l", "f1.0", "d1.0", "T1"]


def test_headers_large_integer_binding(conn, ch, name):
    ch.exchange_declare(name, "headers")
    q = excl_queue(ch)
    ch.queue_bind(q, name, "", arguments={"n": 2 ** 40})  # pika encodes 'l'
    items = [("l", b"l", struct.pack(">q", 2 ** 40)), ("l+1", b"l", struct.pack(">q", 2 ** 40 + 1)),
             ("I", b"I", struct.pack(">i", 0))]
    _raw_headers_publish(name, items)
    ch.basic_publish("", q, SENTINEL)
    assert [b.decode() for b in get_until_sentinel(conn, ch, q)] == ["l"]


def test_headers_unbind_requires_same_arguments(conn, ch, name):
    ch.exchange_declare(name, "headers")
    q = excl_queue(ch)
    ch.queue_bind(q, name, "", arguments={"a": 1})
    ch.queue_unbind(q, name, "", arguments={"a": 2})   # different args: nothing removed
    ch.basic_publish(name, "", b"1", pika.BasicProperties(headers={"a": 1}))
    ch.queue_unbind(q, name, "", arguments={"a": 1})
    ch.basic_publish(name, "", b"2", pika.BasicProperties(headers={"a": 1}))
    ch.basic_publish("", q, SENTINEL)
    assert get_until_sentinel(conn, ch, q) == [b"1"]


# ------------------------------------------------------------ exchange-to-exchange
def test_exchange_to_exchange_bind_and_unbind(conn, ch, names):
    src, dst = names("src"), names("dst")
    ch.exchange_declare(src, "direct")
    ch.exchange_declare(dst, "fanout")
    q = excl_queue(ch)
    ch.queue_bind(q, dst)
    ch.exchange_bind(dst, src, "k")
    ch.basic_publish(src, "k", b"routed")
    ch.basic_publish(src, "other", b"not-routed")
    ch.exchange_unbind(dst, src, "k")
    ch.basic_publish(src, "k", b"after-unbind")
    ch.basic_publish("", q, SENTINEL)
    assert get_until_sentinel(conn, ch, q) == [b"routed"]


def test_exchange_binding_cycle_delivers_one_copy_per_queue(conn, ch, names):
    x1, x2, x3 = names("x1"), names("x2"), names("x3")
    for x in (x1, x2, x3):
        ch.exchange_declare(x, "fanout")
    ch.exchange_bind(x2, x1)
    ch.exchange_bind(x3, x2)
    ch.exchange_bind(x1, x3)  # cycle
    qa, qb = excl_queue(ch), excl_queue(ch)
    ch.queue_bind(qa, x1)
    ch.queue_bind(qa, x2)
    ch.queue_bind(qa, x3)
    ch.queue_bind(qb, x3)
    ch.basic_publish(x1, "", b"m")
    ch.basic_publish(x2, "", b"n")
    ch.basic_publish("", qa, SENTINEL)
    ch.basic_publish("", qb, SENTINEL)
    assert get_until_sentinel(conn, ch, qa) == [b"m", b"n"]
    assert get_until_sentinel(conn, ch, qb) == [b"m", b"n"]


def test_exchange_self_binding(conn, ch, name):
    ch.exchange_declare(name, "fanout")
    ch.exchange_bind(name, name)
    q = excl_queue(ch)
    ch.queue_bind(q, name)
    ch.basic_publish(name, "", b"once")
    ch.basic_publish("", q, SENTINEL)
    assert get_until_sentinel(conn, ch, q) == [b"once"]


# ------------------------------------------------------------ alternate exchange
def test_alternate_exchange_receives_unroutable(conn, ch, names):
    x, ae = names("x"), names("ae")
    ch.exchange_declare(ae, "fanout")
    ch.exchange_declare(x, "direct", arguments={"alternate-exchange": ae})
    qx, qae = excl_queue(ch), excl_queue(ch)
    ch.queue_bind(qx, x, "known")
    ch.queue_bind(qae, ae)
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append(b))
    ch.basic_publish(x, "known", b"k", mandatory=True)
    ch.basic_publish(x, "unknown", b"u", mandatory=True)
    ch.basic_publish("", qx, SENTINEL)
    ch.basic_publish("", qae, SENTINEL)
    assert get_until_sentinel(conn, ch, qx) == [b"k"]
    assert get_until_sentinel(conn, ch, qae) == [b"u"]
    pump_for(conn, 0.2)
    assert returned == []  # routed via AE counts as routed for mandatory


def test_missing_alternate_exchange_means_unroutable(conn, ch, name):
    ch.exchange_declare(name, "direct", arguments={"alternate-exchange": "conf-missing-ae"})
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append(m))
    ch.basic_publish(name, "nokey", b"x", mandatory=True)
    pump_for(conn, 0.5)
    assert [(m.reply_code, m.reply_text, m.exchange, m.routing_key) for m in returned] == \
        [(312, "NO_ROUTE", name, "nokey")]


# ------------------------------------------------------------ internal exchange
def test_publish_to_internal_exchange_is_403(conn, ch, name):
    ch.exchange_declare(name, "fanout", internal=True)
    with channel_error(403, "ACCESS_REFUSED - cannot publish to internal exchange '%s' in vhost '/'" % name):
        ch.basic_publish(name, "", b"x")
        ch.exchange_declare(name, passive=True)
    assert conn.is_open


def test_internal_exchange_reachable_via_exchange_binding(conn, ch, names):
    front, internal = names("front"), names("internal")
    ch.exchange_declare(front, "fanout")
    ch.exchange_declare(internal, "fanout", internal=True)
    ch.exchange_bind(internal, front)
    q = excl_queue(ch)
    ch.queue_bind(q, internal)
    ch.basic_publish(front, "", b"via-front")
    ch.basic_publish("", q, SENTINEL)
    assert get_until_sentinel(conn, ch, q) == [b"via-front"]


# ------------------------------------------------------------ CC / BCC
def test_cc_and_bcc_headers(conn, ch, name):
    ch.exchange_declare(name, "direct")
    qa, qb, qc, qd = (excl_queue(ch) for _ in range(4))
    ch.queue_bind(qa, name, "a")
    ch.queue_bind(qb, name, "b")
    ch.queue_bind(qc, name, "c")
    ch.queue_bind(qd, name, "d")
    ch.basic_publish(name, "a", b"m", pika.BasicProperties(
        headers={"CC": ["b", "a"], "BCC": ["c"], "other": "kept"}))
    got = {}
    for q in (qa, qb, qc, qd):
        ch.basic_publish("", q, SENTINEL)
    for q in (qa, qb, qc, qd):
        msgs = []
        while True:
            m, p, b = ch.basic_get(q, auto_ack=True)
            if m is None:
                conn.process_data_events(time_limit=0.02)
                continue
            if b == SENTINEL:
                break
            msgs.append((m.routing_key, p.headers))
        got[q] = msgs
    expected_headers = {"CC": ["b", "a"], "other": "kept"}  # BCC stripped, CC kept
    assert got[qa] == [("a", expected_headers)]  # once, even though CC'd too
    assert got[qb] == [("a", expected_headers)]  # delivered routing key is the original
    assert got[qc] == [("a", expected_headers)]
    assert got[qd] == []


def test_cc_on_default_exchange(conn, ch, queue, names):
    q2 = names("q2")
    ch.queue_declare(q2)
    ch.basic_publish("", queue, b"m", pika.BasicProperties(headers={"CC": [q2]}))
    ch.basic_publish("", queue, SENTINEL)
    ch.basic_publish("", q2, SENTINEL)
    assert get_until_sentinel(conn, ch, queue) == [b"m"]
    assert get_until_sentinel(conn, ch, q2) == [b"m"]
