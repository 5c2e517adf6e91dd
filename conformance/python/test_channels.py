"""Channel lifecycle; soft (channel) vs hard (connection) errors."""
import pika
import pika.exceptions as pe
import pytest
from pika import spec

from conftest import channel_error, connection_error, send_raw_method, pump


def test_soft_error_closes_only_the_channel(conn, ch, name):
    other = conn.channel()
    with channel_error(404, "NOT_FOUND - no queue '%s' in vhost '/'" % name):
        ch.queue_declare(name, passive=True)
    assert ch.is_closed
    assert conn.is_open
    assert other.is_open
    # connection still fully usable
    c2 = conn.channel()
    c2.queue_declare(name, auto_delete=True)
    c2.basic_publish("", name, b"x")
    m, _, b = c2.basic_get(name, auto_ack=True)
    assert b == b"x"
    c2.queue_delete(name)


def test_closed_channel_number_can_be_reopened(conn):
    a = conn.channel()
    n = a.channel_number
    with channel_error(404, "NOT_FOUND"):
        a.exchange_declare("conf-missing-x-" + str(n), passive=True)
    b = conn.channel(channel_number=n)
    assert b.is_open
    b.exchange_declare("amq.direct", passive=True)


def test_channel_close_by_client(conn):
    a = conn.channel()
    a.close()
    assert a.is_closed
    with pytest.raises(pe.ChannelWrongStateError):
        a.queue_declare("", exclusive=True)
    assert conn.is_open


def test_unknown_exchange_type_is_connection_error_503(conn, ch, name):
    with connection_error(503, "COMMAND_INVALID - unknown exchange type 'x-no-such-type'"):
        ch.exchange_declare(name, exchange_type="x-no-such-type")
    assert conn.is_closed


def test_duplicate_consumer_tag_on_one_channel_is_530(conn, ch, queue):
    ch.basic_consume(queue, lambda *a: None, consumer_tag="dup-tag")
    # pika refuses duplicate tags client-side, so send the raw method
    with connection_error(530, "NOT_ALLOWED - attempt to reuse consumer tag 'dup-tag'"):
        send_raw_method(ch, spec.Basic.Consume(queue=queue, consumer_tag="dup-tag"))
        pump(conn, lambda: False, timeout=3)
    assert conn.is_closed


def test_same_consumer_tag_on_two_channels_is_fine(conn, queue):
    a = conn.channel()
    b = conn.channel()
    assert a.basic_consume(queue, lambda *x: None, consumer_tag="same") == "same"
    assert b.basic_consume(queue, lambda *x: None, consumer_tag="same") == "same"
    ok = a.queue_declare(queue, passive=True)
    assert ok.method.consumer_count == 2


def test_qos_prefetch_size_nonzero_is_540(conn, ch):
    with connection_error(540, "NOT_IMPLEMENTED - prefetch_size!=0 (1)"):
        ch.basic_qos(prefetch_size=1, prefetch_count=0)
    assert conn.is_closed


def test_recover_requeue_false_is_540(conn, ch):
    with connection_error(540, "NOT_IMPLEMENTED - requeue=false"):
        ch.basic_recover(requeue=False)
    assert conn.is_closed


def test_publish_immediate_is_540(conn, ch, queue):
    # pika's basic_publish has no `immediate` argument; send the raw method
    with connection_error(540, "NOT_IMPLEMENTED - immediate=true"):
        send_raw_method(ch, spec.Basic.Publish(exchange="", routing_key=queue, immediate=True),
                        (pika.BasicProperties(), b"body"))
        pump(conn, lambda: False, timeout=3)
    assert conn.is_closed


def test_channel_flow_active_true_ok(ch):
    assert ch.flow(True) is True


def test_channel_flow_active_false_is_540(conn, ch):
    # RabbitMQ does not support client-initiated flow(active=false)
    with connection_error(540, "NOT_IMPLEMENTED - active=false"):
        ch.flow(False)
    assert conn.is_closed


def test_errors_on_one_channel_do_not_affect_consumers_on_another(conn, queue):
    a = conn.channel()
    got = []
    a.basic_consume(queue, lambda c, m, p, b: got.append(b), auto_ack=True)
    bad = conn.channel()
    with channel_error(404, "NOT_FOUND"):
        bad.basic_publish("conf-no-such-exchange-xyz", "rk", b"x")
        bad.queue_declare("", exclusive=True)  # sync op to surface the async error
    a.basic_publish("", queue, b"still-alive")
    pump(conn, lambda: got)
    assert got == [b"still-alive"]


def test_publish_to_missing_exchange_closes_channel_404(conn, ch):
    with channel_error(404, "NOT_FOUND - no exchange 'conf-nope-ex' in vhost '/'"):
        ch.basic_publish("conf-nope-ex", "rk", b"x")
        ch.queue_declare("", exclusive=True)
    assert conn.is_open
