"""The x-consistent-hash exchange (RabbitMQ's rabbitmq_consistent_hash_exchange
plugin, recorded against RabbitMQ 3.10.8 with the plugin enabled): binding
keys are weights with RabbitMQ's refusals, a key always reaches the same
queue, weights share the keys, `hash-header` and `hash-property` hash on a
header or a property, and a message without them is still routed."""
import collections

import pika
import pytest

from conftest import channel_error, drain


def declare(ch, name, **args):
    ch.exchange_declare(name, "x-consistent-hash", auto_delete=True, arguments=args or None)


def queues(ch, names, n):
    qs = [names("chq") for _ in range(n)]
    for q in qs:
        ch.queue_declare(q)
    return qs


def counts(ch, qs):
    return [ch.queue_declare(q, passive=True).method.message_count for q in qs]


def settle(conn, ch, qs, total):
    """Wait until `total` messages sit in `qs` (publishes are asynchronous)."""
    from conftest import pump
    pump(conn, lambda: sum(counts(ch, qs)) >= total, timeout=10)


@pytest.mark.parametrize("key,text", [
    ("abc", 'PRECONDITION_FAILED - The binding key must be an integer: <<"abc">>'),
    ("", 'PRECONDITION_FAILED - The binding key must be an integer: <<>>'),
    ("0", "PRECONDITION_FAILED - The binding key must be greater than 0"),
    ("-1", "PRECONDITION_FAILED - The binding key must be greater than 0"),
])
def test_binding_keys_must_be_positive_integers(new_conn, names, key, text):
    ch = new_conn().channel()
    x = names("chx")
    declare(ch, x)
    (q,) = queues(ch, names, 1)
    with channel_error(406, text):
        ch.queue_bind(q, x, key)


@pytest.mark.parametrize("args,text", [
    ({"hash-header": "h", "hash-property": "message_id"},
     "PRECONDITION_FAILED - hash-header and hash-property are mutually exclusive"),
    ({"hash-property": "nope"}, "PRECONDITION_FAILED - Unsupported property: nope"),
])
def test_exchange_arguments_are_checked(new_conn, names, args, text):
    ch = new_conn().channel()
    with channel_error(406, text):
        declare(ch, names("chx"), **args)


def test_weights_share_keys_and_each_key_sticks(conn, names):
    ch = conn.channel()
    x = names("chx")
    declare(ch, x)
    qs = queues(ch, names, 2)
    ch.queue_bind(qs[0], x, "1")
    ch.queue_bind(qs[1], x, "3")
    for i in range(4000):
        ch.basic_publish(x, "k%d" % i, b"%d" % i)
    for i in range(500):  # the same keys again
        ch.basic_publish(x, "k%d" % i, b"%d" % i)
    settle(conn, ch, qs, 4500)
    where = collections.defaultdict(set)
    for q in qs:
        for _, _, body in drain(ch, q, max_msgs=5000):
            where[body].add(q)
    assert all(len(v) == 1 for v in where.values())
    share = sum(1 for v in where.values() if qs[1] in v) / len(where)
    assert abs(share - 0.75) < 0.075, share


@pytest.mark.parametrize("args,props", [
    ({"hash-header": "tenant"}, pika.BasicProperties(headers={"tenant": "acme"})),
    ({"hash-property": "message_id"}, pika.BasicProperties(message_id="order-7")),
    ({"hash-property": "correlation_id"}, pika.BasicProperties(correlation_id="c-1")),
])
def test_hash_on_a_header_or_property(conn, names, args, props):
    ch = conn.channel()
    x = names("chx")
    declare(ch, x, **args)
    qs = queues(ch, names, 2)
    for q in qs:
        ch.queue_bind(q, x, "1")
    for i in range(20):  # routing keys differ, the hashed value does not
        ch.basic_publish(x, "rk%d" % i, b"same", props)
    ch.basic_publish(x, "rk", b"without")  # still routed, somewhere
    settle(conn, ch, qs, 21)
    bodies = {q: [b for _, _, b in drain(ch, q)] for q in qs}
    assert [q for q in qs if b"same" in bodies[q]] in ([qs[0]], [qs[1]]), bodies
    assert sum(len(v) for v in bodies.values()) == 21


def test_distinct_property_values_spread(conn, names):
    ch = conn.channel()
    x = names("chx")
    declare(ch, x, **{"hash-property": "message_id"})
    qs = queues(ch, names, 2)
    for q in qs:
        ch.queue_bind(q, x, "1")
    for i in range(400):  # one routing key, many message ids
        ch.basic_publish(x, "same", b"x", pika.BasicProperties(message_id="id-%d" % i))
    settle(conn, ch, qs, 400)
    c = counts(ch, qs)
    assert 120 <= c[0] <= 280, c
