"""Queue declaration, exclusivity, auto-delete, bind/unbind, purge and delete."""
import re

import pika.exceptions as pe
import pytest

from conftest import SENTINEL, channel_error, connect, get_until_sentinel, pump

LOCKED = ("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '%s' in vhost '/'. "
          "It could be originally declared on another connection or the exclusive property "
          "value does not match that of the original declaration.")


def test_server_named_queue(ch):
    ok = ch.queue_declare("", exclusive=True).method
    assert re.fullmatch(r"amq\.gen-[A-Za-z0-9_\-]{22}", ok.queue), ok.queue
    assert (ok.message_count, ok.consumer_count) == (0, 0)
    ok2 = ch.queue_declare("", exclusive=True).method
    assert ok2.queue != ok.queue
    # the server-generated name is usable like any other
    ch.queue_declare(ok.queue, passive=True)


def test_declare_amq_prefixed_queue_is_403(ch):
    with channel_error(403, "ACCESS_REFUSED - queue name 'amq.conformance-q' contains reserved prefix 'amq.*'"):
        ch.queue_declare("amq.conformance-q")


def test_passive_declare_missing_queue_is_404(conn, ch, name):
    with channel_error(404, "NOT_FOUND - no queue '%s' in vhost '/'" % name):
        ch.queue_declare(name, passive=True)
    assert conn.is_open


def test_declare_ok_counts(conn, ch, queue):
    for i in range(3):
        ch.basic_publish("", queue, b"m%d" % i)
    c2 = conn.channel()
    c2.basic_qos(prefetch_count=1)
    c2.basic_consume(queue, lambda *a: None)
    c3 = conn.channel()
    c3.basic_qos(prefetch_count=1)
    c3.basic_consume(queue, lambda *a: None)

    def counts():
        ok = ch.queue_declare(queue, passive=True).method
        return ok.message_count, ok.consumer_count

    # message_count counts only ready (not unacked) messages
    pump(conn, lambda: counts() == (1, 2))
    ok = ch.queue_declare(queue).method  # non-passive redeclare returns counts too
    assert (ok.queue, ok.message_count, ok.consumer_count) == (queue, 1, 2)


def test_redeclare_same_properties_is_ok(ch, name):
    ch.queue_declare(name, auto_delete=True, arguments={"x-max-length": 10})
    ch.queue_declare(name, auto_delete=True, arguments={"x-max-length": 10})


@pytest.mark.parametrize("kwargs,text", [
    (dict(auto_delete=True), "inequivalent arg 'auto_delete' for queue '{q}' in vhost '/': received 'true' but current is 'false'"),
    (dict(durable=True), "inequivalent arg 'durable' for queue '{q}' in vhost '/': received 'true' but current is 'false'"),
    (dict(arguments={"x-max-length": 10}), "inequivalent arg 'x-max-length' for queue '{q}' in vhost '/': received the value '10' of type 'signedint' but current is none"),
])
def test_redeclare_queue_with_different_property_is_406(conn, name, kwargs, text):
    c = conn.channel()
    c.queue_declare(name)
    with channel_error(406, "PRECONDITION_FAILED - " + text.format(q=name)):
        c.queue_declare(name, **kwargs)


def test_redeclare_queue_with_different_arg_value_is_406(ch, name):
    ch.queue_declare(name, arguments={"x-max-length": 10})
    with channel_error(406, "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '%s' in vhost '/': received '11' but current is '10'" % name):
        ch.queue_declare(name, arguments={"x-max-length": 11})


def test_redeclare_with_unknown_x_argument_is_ok(ch, name):
    ch.queue_declare(name)
    ch.queue_declare(name, arguments={"x-conformance-unknown": 1})


def test_passive_declare_ignores_differences(ch, name):
    ch.queue_declare(name)
    ok = ch.queue_declare(name, passive=True, durable=True, auto_delete=True,
                          arguments={"x-max-length": 1}).method
    assert ok.queue == name


def test_invalid_queue_arguments_are_406(conn, name):
    c = conn.channel()
    with channel_error(406, "PRECONDITION_FAILED - invalid arg 'x-max-length' for queue '%s' in vhost '/': \"expected integer, got longstr\"" % name):
        c.queue_declare(name, arguments={"x-max-length": "ten"})
    c = conn.channel()
    with channel_error(406, "PRECONDITION_FAILED - invalid arg 'x-max-length' for queue '%s' in vhost '/': {value_negative,-1}" % name):
        c.queue_declare(name, arguments={"x-max-length": -1})


# ------------------------------------------------------------ exclusive
def test_exclusive_queue_locked_for_other_connections(conn, ch, new_conn, name):
    ch.queue_declare(name, exclusive=True)
    other = new_conn()
    ops = {
        "declare_exclusive": lambda c: c.queue_declare(name, exclusive=True),
        "declare_non_exclusive": lambda c: c.queue_declare(name),
        "declare_passive": lambda c: c.queue_declare(name, passive=True),
        "consume": lambda c: c.basic_consume(name, lambda *a: None),
        "get": lambda c: c.basic_get(name),
        "purge": lambda c: c.queue_purge(name),
        "bind": lambda c: c.queue_bind(name, "amq.fanout"),
        "delete": lambda c: c.queue_delete(name),
    }
    for op, f in ops.items():
        c = other.channel()
        with channel_error(405, LOCKED % name):
            f(c)
    assert other.is_open


def test_exclusive_queue_other_connection_may_publish(conn, ch, new_conn, name):
    ch.queue_declare(name, exclusive=True)
    ch.queue_bind(name, "amq.direct", name)
    oc = new_conn()
    other = oc.channel()
    other.basic_publish("", name, b"from-other")
    other.basic_publish("amq.direct", name, b"via-direct")
    other.basic_publish("", name, SENTINEL)
    assert get_until_sentinel(conn, ch, name) == [b"from-other", b"via-direct"]
    # unbinding an existing binding is locked ...
    with channel_error(405, LOCKED % name):
        other.queue_unbind(name, "amq.direct", name)
    # ... but unbinding a non-existent binding succeeds without the exclusivity check
    oc.channel().queue_unbind(name, "amq.direct", "never-bound")


def test_exclusive_owner_redeclare_non_exclusive_is_405(conn, ch, name):
    ch.queue_declare(name, exclusive=True)
    c = conn.channel()
    with channel_error(405, LOCKED % name):
        c.queue_declare(name, exclusive=False)


def test_exclusive_queue_ignores_durable_on_redeclare(conn, ch, name):
    ch.queue_declare(name, exclusive=True)
    # exclusive queues are forced non-durable, so the durable flag is not compared
    ch.queue_declare(name, exclusive=True, durable=True)


def test_exclusive_queue_deleted_when_owner_connection_closes(new_conn, name):
    owner = connect()
    try:
        owner.channel().queue_declare(name, exclusive=True)
        watcher = new_conn().channel()
        with channel_error(405, "RESOURCE_LOCKED"):
            watcher.queue_declare(name, passive=True)
    finally:
        owner.close()
    w = new_conn().channel()
    with channel_error(404, "NOT_FOUND - no queue '%s' in vhost '/'" % name):
        w.queue_declare(name, passive=True)


def test_exclusive_queue_survives_channel_close(conn, name):
    c = conn.channel()
    c.queue_declare(name, exclusive=True)
    c.close()
    conn.channel().queue_declare(name, passive=True)


# ------------------------------------------------------------ auto-delete
def test_auto_delete_queue_survives_until_first_consumer(conn, ch, name):
    ch.queue_declare(name, auto_delete=True)
    conn.sleep(0.2)
    ch.queue_declare(name, passive=True)  # never had a consumer: still there


def test_auto_delete_queue_deleted_after_last_consumer_cancels(conn, ch, new_conn, name):
    ch.queue_declare(name, auto_delete=True)
    t1 = ch.basic_consume(name, lambda *a: None)
    c2 = conn.channel()
    t2 = c2.basic_consume(name, lambda *a: None)
    ch.basic_cancel(t1)
    ch.queue_declare(name, passive=True)  # one consumer left
    c2.basic_cancel(t2)
    w = new_conn().channel()

    def gone():
        try:
            w.queue_declare(name, passive=True)
            return False
        except pe.ChannelClosedByBroker as e:
            assert e.reply_code == 404
            return True

    assert gone()


def test_auto_delete_queue_deleted_when_consumer_channel_closes(conn, name, new_conn):
    c = conn.channel()
    c.queue_declare(name, auto_delete=True)
    c.basic_consume(name, lambda *a: None)
    c.close()
    w = new_conn().channel()
    with channel_error(404, "NOT_FOUND"):
        w.queue_declare(name, passive=True)


# ------------------------------------------------------------ "" = last declared queue
def test_empty_queue_name_means_last_declared(conn, ch):
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind("", "amq.direct", "conformance-last-declared-" + q)
    ch.basic_publish("", q, b"m")
    ch.basic_publish("", q, SENTINEL)
    assert get_until_sentinel(conn, ch, "") == [b"m"]
    tag = ch.basic_consume("", lambda *a: None)
    assert ch.queue_declare(q, passive=True).method.consumer_count == 1
    ch.basic_cancel(tag)


def test_empty_queue_name_without_prior_declare_is_404(conn):
    c = conn.channel()
    with channel_error(404, "NOT_FOUND - no previously declared queue"):
        c.basic_get("")
    c = conn.channel()
    with channel_error(404, "NOT_FOUND - no previously declared queue"):
        c.basic_consume("", lambda *a: None)


# ------------------------------------------------------------ bind / unbind
def test_bind_and_unbind(conn, ch, queue):
    ch.queue_bind(queue, "amq.direct", "rk-" + queue)
    ch.basic_publish("amq.direct", "rk-" + queue, b"bound")
    ch.queue_unbind(queue, "amq.direct", "rk-" + queue)
    ch.basic_publish("amq.direct", "rk-" + queue, b"unbound")
    ch.basic_publish("", queue, SENTINEL)
    assert get_until_sentinel(conn, ch, queue) == [b"bound"]


def test_bind_twice_is_idempotent(conn, ch, queue):
    ch.queue_bind(queue, "amq.direct", "k-" + queue)
    ch.queue_bind(queue, "amq.direct", "k-" + queue)
    ch.basic_publish("amq.direct", "k-" + queue, b"once")
    ch.queue_unbind(queue, "amq.direct", "k-" + queue)  # a single unbind removes it
    ch.basic_publish("amq.direct", "k-" + queue, b"gone")
    ch.basic_publish("", queue, SENTINEL)
    assert get_until_sentinel(conn, ch, queue) == [b"once"]


def test_deleting_queue_removes_its_bindings(conn, ch, name):
    ch.queue_declare(name)
    ch.queue_bind(name, "amq.direct", "k-" + name)
    ch.queue_delete(name)
    ch.queue_declare(name)
    ch.basic_publish("amq.direct", "k-" + name, b"stale-binding")
    ch.basic_publish("", name, SENTINEL)
    assert get_until_sentinel(conn, ch, name) == []


# ------------------------------------------------------------ purge
def test_purge_returns_count(conn, ch, queue):
    for i in range(5):
        ch.basic_publish("", queue, b"%d" % i)
    pump(conn, lambda: ch.queue_declare(queue, passive=True).method.message_count == 5)
    ok = ch.queue_purge(queue)
    assert ok.method.message_count == 5
    assert ch.queue_declare(queue, passive=True).method.message_count == 0
    assert ch.queue_purge(queue).method.message_count == 0


def test_purge_does_not_touch_unacked(conn, ch, queue):
    for i in range(3):
        ch.basic_publish("", queue, b"%d" % i)
    pump(conn, lambda: ch.queue_declare(queue, passive=True).method.message_count == 3)
    m, _, b = ch.basic_get(queue, auto_ack=False)
    assert b == b"0"
    assert ch.queue_purge(queue).method.message_count == 2
    ch.basic_nack(m.delivery_tag, requeue=True)
    m2, _, b2 = ch.basic_get(queue, auto_ack=True)
    assert (b2, m2.redelivered) == (b"0", True)


def test_purge_missing_queue_is_404(ch, name):
    with channel_error(404, "NOT_FOUND - no queue '%s' in vhost '/'" % name):
        ch.queue_purge(name)


# ------------------------------------------------------------ delete
def test_delete_returns_message_count(conn, ch, queue):
    for i in range(4):
        ch.basic_publish("", queue, b"x")
    pump(conn, lambda: ch.queue_declare(queue, passive=True).method.message_count == 4)
    assert ch.queue_delete(queue).method.message_count == 4
    with channel_error(404, "NOT_FOUND"):
        ch.queue_declare(queue, passive=True)


def test_delete_if_unused_with_consumer_is_406(conn, ch, queue):
    ch.basic_consume(queue, lambda *a: None)
    c = conn.channel()
    with channel_error(406, "PRECONDITION_FAILED - queue '%s' in vhost '/' in use" % queue):
        c.queue_delete(queue, if_unused=True)
    ch.queue_declare(queue, passive=True)


def test_delete_if_empty_with_messages_is_406(conn, ch, queue):
    ch.basic_publish("", queue, b"x")
    pump(conn, lambda: ch.queue_declare(queue, passive=True).method.message_count == 1)
    c = conn.channel()
    with channel_error(406, "PRECONDITION_FAILED - queue '%s' in vhost '/' not empty" % queue):
        c.queue_delete(queue, if_empty=True)
    assert ch.queue_declare(queue, passive=True).method.message_count == 1


def test_delete_if_empty_and_if_unused_when_both_hold(ch, queue):
    assert ch.queue_delete(queue, if_unused=True, if_empty=True).method.message_count == 0


def test_delete_missing_queue_succeeds(ch, name):
    assert ch.queue_delete(name).method.message_count == 0
    assert ch.queue_delete(name, if_unused=True, if_empty=True).method.message_count == 0
