"""Unacked messages of a closed channel / connection are requeued in original order."""
import pika

from conftest import connect, consume_n, drain, pump


def wait_ready(conn, ch, q, n):
    pump(conn, lambda: ch.queue_declare(q, passive=True).method.message_count == n)


def test_unacked_requeued_on_channel_close_in_order(conn, ch, queue):
    for i in range(6):
        ch.basic_publish("", queue, b"m%d" % i)
    c = conn.channel()
    _, got = consume_n(conn, c, queue, 6)
    assert [b for _, _, b in got] == [b"m%d" % i for i in range(6)]
    assert all(not m.redelivered for m, _, _ in got)
    c.basic_ack(got[1][0].delivery_tag)
    c.basic_ack(got[4][0].delivery_tag)
    c.close()
    wait_ready(conn, ch, queue, 4)
    msgs = drain(ch, queue)
    assert [(b, m.redelivered) for m, _, b in msgs] == \
        [(b"m0", True), (b"m2", True), (b"m3", True), (b"m5", True)]


def test_unacked_requeued_before_never_delivered(conn, ch, queue):
    for i in range(5):
        ch.basic_publish("", queue, b"m%d" % i)
    c = conn.channel()
    c.basic_qos(prefetch_count=2)
    _, got = consume_n(conn, c, queue, 2)
    c.close()
    wait_ready(conn, ch, queue, 5)
    msgs = drain(ch, queue)
    assert [(b, m.redelivered) for m, _, b in msgs] == \
        [(b"m0", True), (b"m1", True), (b"m2", False), (b"m3", False), (b"m4", False)]


def test_unacked_basic_get_requeued_on_channel_close(conn, ch, queue):
    for i in range(3):
        ch.basic_publish("", queue, b"m%d" % i)
    wait_ready(conn, ch, queue, 3)
    c = conn.channel()
    assert c.basic_get(queue)[2] == b"m0"
    assert c.basic_get(queue)[2] == b"m1"
    c.close()
    wait_ready(conn, ch, queue, 3)
    msgs = drain(ch, queue)
    assert [(b, m.redelivered) for m, _, b in msgs] == \
        [(b"m0", True), (b"m1", True), (b"m2", False)]


def test_unacked_requeued_on_connection_close_in_order(conn, ch, queue):
    for i in range(6):
        ch.basic_publish("", queue, b"m%d" % i)
    other = connect()
    try:
        c = other.channel()
        _, got = consume_n(other, c, queue, 6)
        c.basic_ack(got[2][0].delivery_tag)
    finally:
        other.close()
    wait_ready(conn, ch, queue, 5)
    _, again = consume_n(conn, ch, queue, 5, auto_ack=True)
    assert [(b, m.redelivered) for m, _, b in again] == \
        [(b"m0", True), (b"m1", True), (b"m3", True), (b"m4", True), (b"m5", True)]


def test_unacked_requeued_when_channel_closed_by_error(conn, ch, queue):
    for i in range(3):
        ch.basic_publish("", queue, b"m%d" % i)
    c = conn.channel()
    _, got = consume_n(conn, c, queue, 3)
    try:
        c.queue_declare("conf-definitely-missing-queue", passive=True)
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404
    else:
        raise AssertionError("expected 404")
    wait_ready(conn, ch, queue, 3)
    msgs = drain(ch, queue)
    assert [(b, m.redelivered) for m, _, b in msgs] == [(b"m%d" % i, True) for i in range(3)]


def test_requeued_messages_go_to_other_consumer(conn, queue):
    a = conn.channel()
    b = conn.channel()
    for i in range(4):
        a.basic_publish("", queue, b"m%d" % i)
    _, got_a = consume_n(conn, a, queue, 4)
    got_b = []
    b.basic_consume(queue, lambda c, m, p, body: got_b.append((body, m.redelivered)), auto_ack=True)
    a.close()
    pump(conn, lambda: len(got_b) == 4)
    assert got_b == [(b"m%d" % i, True) for i in range(4)]
