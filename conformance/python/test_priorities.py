"""Priority queues (x-max-priority), recorded against RabbitMQ 3.10.8."""
import pika

from conftest import pump


def count(ch, q):
    return ch.queue_declare(q, passive=True).method.message_count


def wait_count(conn, ch, q, n, timeout=3.0):
    pump(conn, lambda: count(ch, q) == n, timeout)


def publish(ch, q, body, priority=None):
    ch.basic_publish("", q, body, pika.BasicProperties(priority=priority))


def get_all(ch, q, n):
    out = []
    for _ in range(n):
        m, _, b = ch.basic_get(q, auto_ack=True)
        assert m is not None, "queue ran dry after %r" % out
        out.append(b)
    return out


def test_higher_priorities_first(conn, ch, name):
    ch.queue_declare(name, arguments={"x-max-priority": 10})
    publish(ch, name, b"low", 1)
    publish(ch, name, b"none")
    publish(ch, name, b"high", 9)
    publish(ch, name, b"mid", 5)
    publish(ch, name, b"high2", 9)
    wait_count(conn, ch, name, 5)
    assert get_all(ch, name, 5) == [b"high", b"high2", b"mid", b"low", b"none"]
    assert ch.basic_get(name, auto_ack=True)[0] is None


def test_priority_above_max_counts_as_max_and_requeue_keeps_order(conn, ch, name):
    ch.queue_declare(name, arguments={"x-max-priority": 3})
    publish(ch, name, b"p3", 3)
    publish(ch, name, b"p200", 200)
    publish(ch, name, b"p1", 1)
    wait_count(conn, ch, name, 3)
    m, _, b = ch.basic_get(name)
    assert b == b"p3"
    ch.basic_nack(m.delivery_tag, requeue=True)
    wait_count(conn, ch, name, 3)
    assert get_all(ch, name, 3) == [b"p3", b"p200", b"p1"]


def test_fifo_within_a_priority(conn, ch, name):
    ch.queue_declare(name, arguments={"x-max-priority": 5})
    sent = [(b"a1", 2), (b"b1", 4), (b"a2", 2), (b"z1", None), (b"b2", 4),
            (b"a3", 2), (b"z2", 0), (b"b3", 4)]
    for body, prio in sent:
        publish(ch, name, body, prio)
    wait_count(conn, ch, name, len(sent))
    # no priority property is priority 0, FIFO with explicit 0
    assert get_all(ch, name, len(sent)) == [b"b1", b"b2", b"b3", b"a1", b"a2", b"a3",
                                            b"z1", b"z2"]


def test_priority_ignored_without_x_max_priority(conn, ch, name):
    ch.queue_declare(name)
    for body, prio in ((b"1", 1), (b"9", 9), (b"5", 5)):
        publish(ch, name, body, prio)
    wait_count(conn, ch, name, 3)
    got = ch.basic_get(name, auto_ack=True)
    assert got[2] == b"1"
    assert got[1].priority == 1  # the property itself is passed through
    assert get_all(ch, name, 2) == [b"9", b"5"]


def test_consumer_gets_priority_order_of_backlog(conn, ch, name):
    ch.queue_declare(name, arguments={"x-max-priority": 10})
    for body, prio in ((b"lo", 1), (b"hi", 8), (b"mid", 4)):
        publish(ch, name, body, prio)
    wait_count(conn, ch, name, 3)
    got = []
    ch.basic_consume(name, lambda c, m, p, b: got.append((b, p.priority)), auto_ack=True)
    pump(conn, lambda: len(got) >= 3)
    assert got == [(b"hi", 8), (b"mid", 4), (b"lo", 1)]
