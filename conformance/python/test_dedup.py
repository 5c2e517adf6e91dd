"""Deduplication as RabbitMQ's community plugin rabbitmq-message-deduplication
and LavinMQ define it, through pika: an exchange or a queue declared with
`x-message-deduplication: true` drops a message whose
`x-deduplication-header` (or message-id) it has seen among its last
`x-cache-size` keys; the duplicate is still confirmed. RabbitMQ 3.10 has no
such plugin here, so with CONFORMANCE_TARGET=rabbitmq these are skipped."""
import os

import pika
import pytest

from conftest import pump

pytestmark = pytest.mark.skipif(
    os.environ.get("CONFORMANCE_TARGET") == "rabbitmq",
    reason="needs the rabbitmq-message-deduplication plugin")


def props(key=None, message_id=None):
    headers = {"x-deduplication-header": key} if key else None
    return pika.BasicProperties(headers=headers, message_id=message_id)


def count(ch, q):
    return ch.queue_declare(q, passive=True).method.message_count


def test_exchange_drops_a_key_it_has_seen_and_confirms_it(conn, names):
    ch = conn.channel()
    ch.confirm_delivery()
    x, q = names("dx"), names("dq")
    ch.exchange_declare(x, "fanout", auto_delete=True,
                        arguments={"x-message-deduplication": True, "x-cache-size": 100})
    ch.queue_declare(q)
    ch.queue_bind(q, x)
    for key in ["order-1", "order-1", "order-2", "order-1"]:
        # Every publish is confirmed: a duplicate is safely in already.
        ch.basic_publish(x, "", b"m", props(key=key), mandatory=True)
    pump(conn, lambda: count(ch, q) >= 2)
    assert count(ch, q) == 2


def test_queue_uses_the_message_id_without_the_header(conn, names):
    ch = conn.channel()
    ch.confirm_delivery()
    q = names("dq")
    ch.queue_declare(q, arguments={"x-message-deduplication": True, "x-cache-size": 10})
    for mid in ["a", "b", "a", "c", "b"]:
        ch.basic_publish("", q, b"m", props(message_id=mid))
    pump(conn, lambda: count(ch, q) >= 3)
    got = []
    while True:
        m, p, _ = ch.basic_get(q, auto_ack=True)
        if m is None:
            break
        got.append(p.message_id)
    assert got == ["a", "b", "c"]


def test_a_bad_cache_size_is_refused(conn, names):
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(names("dq"), arguments={"x-message-deduplication": True, "x-cache-size": -1})
    assert e.value.reply_code == 406
