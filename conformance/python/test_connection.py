"""Connection-level behaviour: handshake, capabilities, auth, vhost, tuning."""
import os

import pika
import pika.exceptions as pe
import pytest

from conftest import connect, make_params, pump, safe_close


def test_connect_and_close():
    c = connect()
    assert c.is_open
    chan = c.channel()
    assert chan.is_open
    c.close()
    assert c.is_closed
    assert chan.is_closed


def test_server_properties_capabilities(conn):
    props = conn._impl.server_properties
    assert isinstance(props, dict)
    caps = props["capabilities"]
    for cap in ("publisher_confirms", "exchange_exchange_bindings", "basic.nack",
                "consumer_cancel_notify", "per_consumer_qos",
                "authentication_failure_close", "direct_reply_to"):
        assert caps.get(cap) is True, (cap, caps)
    # product/version are informational strings (content not asserted)
    for key in ("product", "version"):
        assert key in props


def test_wrong_password_is_refused():
    p = make_params(credentials=pika.PlainCredentials("guest", "definitely-wrong-password"))
    with pytest.raises((pe.ProbableAuthenticationError, pe.AuthenticationError)) as ei:
        pika.BlockingConnection(p)
    # server sends Connection.Close 403 (authentication_failure_close capability)
    assert "403" in str(ei.value), str(ei.value)
    assert "ACCESS_REFUSED" in str(ei.value), str(ei.value)


def test_unknown_user_is_refused():
    p = make_params(credentials=pika.PlainCredentials("no-such-user-xyz", "pw"))
    with pytest.raises((pe.ProbableAuthenticationError, pe.AuthenticationError)) as ei:
        pika.BlockingConnection(p)
    assert "403" in str(ei.value) and "ACCESS_REFUSED" in str(ei.value), str(ei.value)


def test_unknown_vhost_is_refused():
    p = make_params(virtual_host="no-such-vhost-conformance")
    with pytest.raises(pe.ProbableAccessDeniedError) as ei:
        pika.BlockingConnection(p)
    # Connection.Close 530 NOT_ALLOWED in reply to connection.open
    assert "530" in str(ei.value), str(ei.value)
    assert "NOT_ALLOWED" in str(ei.value), str(ei.value)


def test_heartbeat_negotiation_keeps_connection_alive(name):
    c = connect(heartbeat=1)
    try:
        assert c._impl.params.heartbeat == 1
        chan = c.channel()
        chan.queue_declare(name, auto_delete=True)
        # idle for ~3s while servicing I/O: heartbeats must flow both ways
        c.sleep(3.0)
        assert c.is_open
        chan.basic_publish("", name, b"after-idle")
        m, _, b = chan.basic_get(name, auto_ack=True)
        assert b == b"after-idle"
        chan.queue_delete(name)
    finally:
        safe_close(c)


def test_heartbeat_disabled_by_client():
    c = connect(heartbeat=0)
    try:
        assert c._impl.params.heartbeat == 0
        c.sleep(1.0)
        assert c.is_open
        c.channel().close()
    finally:
        safe_close(c)


def test_small_frame_max_large_body_roundtrip(name):
    c = connect(frame_max=4096)
    try:
        assert c._impl.params.frame_max == 4096
        chan = c.channel()
        chan.queue_declare(name)
        body = os.urandom(100 * 1024)
        chan.basic_publish("", name, body,
                           pika.BasicProperties(headers={"k": "v" * 100}))
        m, p, b = chan.basic_get(name, auto_ack=True)
        assert b == body
        assert p.headers == {"k": "v" * 100}
        # and via a consumer too
        chan.basic_publish("", name, body)
        got = []
        chan.basic_consume(name, lambda ch_, m_, p_, b_: got.append(b_), auto_ack=True)
        pump(c, lambda: got)
        assert got == [body]
        chan.queue_delete(name)
    finally:
        safe_close(c)


def test_channel_max_negotiation():
    c = connect(channel_max=3)
    try:
        assert c._impl.params.channel_max == 3
        chans = [c.channel() for _ in range(3)]
        assert [x.channel_number for x in chans] == [1, 2, 3]
        # pika itself refuses to allocate a 4th channel number
        with pytest.raises(pe.NoFreeChannels):
            c.channel()
        assert c.is_open
    finally:
        safe_close(c)


def test_channel_max_overflow_closes_connection_530():
    c = connect(channel_max=3)
    try:
        for _ in range(3):
            c.channel()
        # force channel number 4 past pika's allocator: broker counts open channels
        with pytest.raises(pe.ConnectionClosedByBroker) as ei:
            c.channel(channel_number=4)
            c.process_data_events(time_limit=1)
        assert ei.value.reply_code == 530
        assert ei.value.reply_text.startswith(
            "NOT_ALLOWED - number of channels opened (3) has reached the negotiated channel_max (3)"), \
            ei.value.reply_text
    finally:
        safe_close(c)


def test_closing_channel_frees_slot_under_channel_max():
    c = connect(channel_max=2)
    try:
        a = c.channel()
        b = c.channel()
        a.close()
        d = c.channel()
        assert d.is_open and b.is_open
    finally:
        safe_close(c)


def test_many_channels(name):
    c = connect()
    try:
        chans = [c.channel() for _ in range(200)]
        assert len({x.channel_number for x in chans}) == 200
        chans[0].queue_declare(name)
        for i, x in enumerate(chans):
            x.basic_publish("", name, str(i).encode())
        # publishes from different channels: each channel's order is preserved,
        # and all arrive
        got = []
        chans[-1].basic_consume(name, lambda ch_, m_, p_, b_: got.append(b_), auto_ack=True)
        pump(c, lambda: len(got) >= 200)
        assert sorted(int(b) for b in got) == list(range(200))
        for x in chans[1:]:
            x.close()
        assert chans[0].is_open
        chans[0].queue_delete(name)
    finally:
        safe_close(c)


def test_blocking_connection_close_is_idempotent_after_broker_close():
    c = connect()
    chan = c.channel()
    with pytest.raises(pe.ConnectionClosedByBroker):
        chan.exchange_declare("conf-bad-type", exchange_type="no-such-type")
    assert c.is_closed
    assert chan.is_closed
