"""Vhost and user limits through pika, with RabbitMQ 3.10's refusals: a
vhost's and a user's max-connections (530 at connection.open), a user's
max-channels (530 at channel.open, closing the connection), a vhost's
max-queues (406 for a new queue; redeclaring is fine). The limits are set
through the management API (MANAGEMENT_URL; RabbitMQ's default port
otherwise), so the suite runs unchanged against Warren and RabbitMQ."""
import urllib.error
import urllib.parse
import uuid

import pika
import pika.exceptions as pe
import pytest

from conftest import AMQP_URL
from test_permissions import api, quote

RUN = uuid.uuid4().hex[:8]
VHOST = "conf-lim-%s" % RUN
USER = "conf-lim-%s" % RUN


@pytest.fixture(scope="module", autouse=True)
def vhost_and_user():
    api("PUT", "/vhosts/" + quote(VHOST), {})
    api("PUT", "/permissions/%s/guest" % quote(VHOST), {"configure": ".*", "write": ".*", "read": ".*"})
    api("PUT", "/users/" + USER, {"password": USER, "tags": ""})
    api("PUT", "/permissions/%s/%s" % (quote(VHOST), USER), {"configure": ".*", "write": ".*", "read": ".*"})
    yield
    for path in ("/users/" + USER, "/vhosts/" + quote(VHOST)):
        try:
            api("DELETE", path)
        except urllib.error.HTTPError:
            pass


def connect(user=None):
    url = urllib.parse.urlparse(AMQP_URL)
    user = user or urllib.parse.unquote(url.username or "guest")
    password = USER if user == USER else urllib.parse.unquote(url.password or "guest")
    return pika.BlockingConnection(pika.ConnectionParameters(
        url.hostname, url.port or 5672, VHOST, pika.PlainCredentials(user, password),
        connection_attempts=1, socket_timeout=5, stack_timeout=10))


def set_limit(kind, target, name, value):
    if value is None:
        api("DELETE", "/%s/%s/%s" % (kind, quote(target), name))
    else:
        api("PUT", "/%s/%s/%s" % (kind, quote(target), name), {"value": value})


def test_vhost_max_connections():
    set_limit("vhost-limits", VHOST, "max-connections", 1)
    try:
        first = connect()
        with pytest.raises(pe.ProbableAccessDeniedError) as e:
            connect()
        assert ("(530) \"NOT_ALLOWED - access to vhost '%s' refused for user 'guest': "
                "connection limit (1) is reached\"" % VHOST) in str(e.value)
        first.close()
    finally:
        set_limit("vhost-limits", VHOST, "max-connections", None)


def test_vhost_max_queues_refuses_only_new_queues():
    conn = connect()
    ch = conn.channel()
    q1, q2 = "conf-lim-q1-" + RUN, "conf-lim-q2-" + RUN
    ch.queue_declare(q1)
    set_limit("vhost-limits", VHOST, "max-queues", 1)
    try:
        ch.queue_declare(q1)
        with pytest.raises(pe.ChannelClosedByBroker) as e:
            ch.queue_declare(q2)
        assert (e.value.reply_code, e.value.reply_text) == (
            406, "PRECONDITION_FAILED - cannot declare queue '%s': queue limit in vhost '%s' (1) "
                 "is reached" % (q2, VHOST))
    finally:
        set_limit("vhost-limits", VHOST, "max-queues", None)
        ch = conn.channel()
        ch.queue_delete(q1)
        conn.close()


def test_user_max_connections():
    set_limit("user-limits", USER, "max-connections", 1)
    try:
        first = connect(USER)
        with pytest.raises(pe.ProbableAccessDeniedError) as e:
            connect(USER)
        assert ("(530) \"NOT_ALLOWED - connection refused for user '%s': user connection limit "
                "(1) is reached\"" % USER) in str(e.value)
        first.close()
    finally:
        set_limit("user-limits", USER, "max-connections", None)


def test_user_max_channels_closes_the_connection():
    set_limit("user-limits", USER, "max-channels", 1)
    try:
        conn = connect(USER)
        conn.channel()
        with pytest.raises(pe.ConnectionClosedByBroker) as e:
            conn.channel()
        assert (e.value.reply_code, e.value.reply_text) == (
            530, "NOT_ALLOWED - number of channels opened for user '%s' has reached the maximum "
                 "allowed user limit of (1)" % USER)
        assert not conn.is_open
    finally:
        set_limit("user-limits", USER, "max-channels", None)
