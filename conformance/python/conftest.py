"""Shared fixtures for the AMQP 0-9-1 conformance suite (pika BlockingConnection)."""
import contextlib
import os
import sys
import time
import uuid

import pika
import pika.exceptions as pe
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from amqp_raw import broker_url  # noqa: E402

AMQP_URL = broker_url()


def make_params(url=None, **overrides):
    """pika parameters for `url` (default AMQP_URL) with bounded timeouts;
    overrides are set as attributes."""
    p = pika.URLParameters(url or AMQP_URL)
    p.connection_attempts = 1
    p.socket_timeout = 5
    p.stack_timeout = 10
    p.blocked_connection_timeout = 10
    for k, v in overrides.items():
        setattr(p, k, v)
    return p


def connect(**overrides):
    return pika.BlockingConnection(make_params(**overrides))


def safe_close(conn):
    try:
        if conn is not None and conn.is_open:
            conn.close()
    except Exception:
        pass


@pytest.fixture
def new_conn():
    """Factory for extra connections; all are closed at teardown."""
    conns = []

    def factory(**overrides):
        c = connect(**overrides)
        conns.append(c)
        return c

    yield factory
    for c in conns:
        safe_close(c)


@pytest.fixture
def conn(new_conn):
    return new_conn()


@pytest.fixture
def ch(conn):
    return conn.channel()


@pytest.fixture
def names():
    """Factory for unique names; every name handed out is deleted as queue and
    exchange at teardown (non-durable anyway)."""
    issued = []

    def factory(prefix="t"):
        n = "conf-%s-%s" % (prefix, uuid.uuid4().hex[:12])
        issued.append(n)
        return n

    yield factory
    if not issued:
        return
    c = None
    try:
        c = connect()
        for n in issued:
            for op in ("queue_delete", "exchange_delete"):
                try:
                    chan = c.channel()
                    getattr(chan, op)(n)
                    chan.close()
                except pe.ChannelClosed:
                    pass
    except Exception:
        pass
    finally:
        safe_close(c)


@pytest.fixture
def name(names):
    return names()


@pytest.fixture
def queue(ch, names):
    """A fresh, non-durable, auto-delete=False queue declared on `ch`."""
    q = names("q")
    ch.queue_declare(q)
    return q


@contextlib.contextmanager
def channel_error(code, prefix):
    """Expect the broker to close the channel with (code, text prefix)."""
    with pytest.raises(pe.ChannelClosedByBroker) as ei:
        yield ei
    assert ei.value.reply_code == code, (ei.value.reply_code, ei.value.reply_text)
    assert ei.value.reply_text.startswith(prefix), ei.value.reply_text


@contextlib.contextmanager
def connection_error(code, prefix):
    """Expect the broker to close the connection with (code, text prefix)."""
    with pytest.raises(pe.ConnectionClosedByBroker) as ei:
        yield ei
    assert ei.value.reply_code == code, (ei.value.reply_code, ei.value.reply_text)
    assert ei.value.reply_text.startswith(prefix), ei.value.reply_text


def pump(conn, until, timeout=5.0):
    """process_data_events until until() is true; fails the test on timeout."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached within %.1fs" % timeout)
        conn.process_data_events(time_limit=0.05)


def pump_for(conn, seconds):
    """process_data_events for a fixed time (to let unwanted events show up)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)


def send_raw_method(ch, method, content=None):
    """Send a method that pika's public API refuses to send (bypasses client-side checks)."""
    ch._impl._send_method(method, content)


def drain(ch, q, max_msgs=1000, auto_ack=True):
    """basic_get everything currently in q; returns list of (method, props, body)."""
    out = []
    for _ in range(max_msgs):
        m, p, b = ch.basic_get(q, auto_ack=auto_ack)
        if m is None:
            break
        out.append((m, p, b))
    return out


def bodies(msgs):
    return [b for (_, _, b) in msgs]


def consume_n(conn, ch, q, n, auto_ack=False, timeout=5.0, **kw):
    """Start a consumer on q and collect n deliveries (method, props, body). Returns (tag, msgs)."""
    got = []
    tag = ch.basic_consume(q, lambda c, m, p, b: got.append((m, p, b)), auto_ack=auto_ack, **kw)
    pump(conn, lambda: len(got) >= n, timeout)
    return tag, got


SENTINEL = b"__conformance_sentinel__"


def get_until_sentinel(conn, ch, q, timeout=5.0):
    """Poll basic_get (auto-ack) until SENTINEL is seen; returns the bodies before it.

    Publishing SENTINEL via the default exchange on the same channel after the
    messages under test makes "nothing else arrived" checks deterministic
    (per channel/queue ordering)."""
    out = []
    deadline = time.monotonic() + timeout
    while True:
        m, p, b = ch.basic_get(q, auto_ack=True)
        if m is None:
            if time.monotonic() > deadline:
                raise AssertionError("sentinel not received on %s; got %r" % (q, out))
            conn.process_data_events(time_limit=0.02)
            continue
        if b == SENTINEL:
            return out
        out.append(b)
