"""Permissions over AMQP as RabbitMQ 3.10 enforces them, through pika: every
method against a user whose configure, write and read regexes each cover a
different set of names, the refusal codes and texts, topic permissions, and
connection.open to a vhost without permissions. The user and vhost are made
through the management API (MANAGEMENT_URL; RabbitMQ's default port
otherwise), so the suite runs unchanged against Warren and RabbitMQ."""
import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pika
import pika.exceptions as pe
import pytest

from conftest import AMQP_URL, make_params

MANAGEMENT_URL = os.environ.get("MANAGEMENT_URL", "http://127.0.0.1:15672")
RUN = uuid.uuid4().hex[:8]
USER, PASSWORD = "conf-perm-%s" % RUN, "pw-%s" % RUN
CLOSED_VHOST = "conf-perm-closed-%s" % RUN
# Names the user may configure, write or read: one prefix each.
PERMS = {"configure": "^cp-conf-", "write": r"^(cp-write-|amq\.topic$)", "read": "^cp-read-"}


def name(kind, what):
    """A resource name with the run's suffix: cp-conf-q-<run>, ..."""
    return "cp-%s-%s-%s" % (kind, what, RUN)


def api(method, path, body=None):
    """A management API request as the URL's user (guest)."""
    url = urllib.parse.urlparse(AMQP_URL)
    token = base64.b64encode(
        ("%s:%s" % (urllib.parse.unquote(url.username or "guest"),
                    urllib.parse.unquote(url.password or "guest"))).encode()).decode()
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(MANAGEMENT_URL + "/api" + path, data=data, method=method)
    req.add_header("authorization", "Basic " + token)
    req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


def quote(s):
    return urllib.parse.quote(s, safe="")


@pytest.fixture(scope="module", autouse=True)
def limited_user():
    """The user, its permissions in '/', a vhost it has none in, and the
    resources the cases use (declared as guest)."""
    api("PUT", "/users/" + USER, {"password": PASSWORD, "tags": ""})
    api("PUT", "/permissions/%2F/" + USER, PERMS)
    api("PUT", "/topic-permissions/%2F/" + USER,
        {"exchange": "amq.topic", "write": r"^allowed\.", "read": ".*"})
    api("PUT", "/vhosts/" + quote(CLOSED_VHOST), {})
    guest = pika.BlockingConnection(make_params())
    ch = guest.channel()
    for kind in ("conf", "write", "read", "none"):
        ch.queue_declare(name(kind, "q"))
        ch.exchange_declare(name(kind, "x"), "direct")
    yield
    for kind in ("conf", "write", "read", "none"):
        ch.queue_delete(name(kind, "q"))
        ch.exchange_delete(name(kind, "x"))
    guest.close()
    for path in ("/users/" + USER, "/vhosts/" + quote(CLOSED_VHOST)):
        try:
            api("DELETE", path)
        except urllib.error.HTTPError:
            pass


def limited_params(vhost="/", password=PASSWORD):
    url = urllib.parse.urlparse(AMQP_URL)
    return pika.ConnectionParameters(
        url.hostname, url.port or 5672, vhost, pika.PlainCredentials(USER, password),
        connection_attempts=1, socket_timeout=5, stack_timeout=10)


def refused(kind, resource):
    return "ACCESS_REFUSED - access to %s '%s' in vhost '/' refused for user '%s'" % (
        kind, resource, USER)


Q, X = "queue", "exchange"
# (what, action on a pika channel, None if allowed or (kind, resource) refused)
CASES = [
    ("declare a queue it may configure", lambda c: c.queue_declare(name("conf", "q2")), None),
    ("declare a queue it may not configure", lambda c: c.queue_declare(name("none", "q2")),
     (Q, name("none", "q2"))),
    ("declare an existing queue it may not configure",
     lambda c: c.queue_declare(name("read", "q")), (Q, name("read", "q"))),
    ("declare passively a queue it has no permission on",
     lambda c: c.queue_declare(name("none", "q"), passive=True), None),
    ("delete a queue it may not configure", lambda c: c.queue_delete(name("read", "q")),
     (Q, name("read", "q"))),
    ("purge a queue it may read", lambda c: c.queue_purge(name("read", "q")), None),
    ("purge a queue it may not read", lambda c: c.queue_purge(name("conf", "q")),
     (Q, name("conf", "q"))),
    ("declare an exchange it may configure",
     lambda c: c.exchange_declare(name("conf", "x2"), "fanout"), None),
    ("declare an exchange it may not configure",
     lambda c: c.exchange_declare(name("none", "x2"), "fanout"), (X, name("none", "x2"))),
    ("declare passively an exchange it has no permission on",
     lambda c: c.exchange_declare(name("none", "x"), "direct", passive=True), None),
    ("delete an exchange it may not configure",
     lambda c: c.exchange_delete(name("read", "x")), (X, name("read", "x"))),
    ("publish to an exchange it may write",
     lambda c: c.basic_publish(name("write", "x"), "k", b"m"), None),
    ("publish to an exchange it may not write",
     lambda c: c.basic_publish(name("read", "x"), "k", b"m"), (X, name("read", "x"))),
    ("publish to the default exchange", lambda c: c.basic_publish("", name("write", "q"), b"m"),
     (X, "amq.default")),
    ("bind a queue it may write to an exchange it may read",
     lambda c: c.queue_bind(name("write", "q"), name("read", "x"), "k"), None),
    ("bind a queue it may not write",
     lambda c: c.queue_bind(name("read", "q"), name("read", "x"), "k"), (Q, name("read", "q"))),
    ("bind from an exchange it may not read",
     lambda c: c.queue_bind(name("write", "q"), name("write", "x"), "k"),
     (X, name("write", "x"))),
    ("unbind from an exchange it may not read",
     lambda c: c.queue_unbind(name("write", "q"), name("write", "x"), "k"),
     (X, name("write", "x"))),
    ("bind an exchange it may write to one it may read",
     lambda c: c.exchange_bind(name("write", "x"), name("read", "x"), "k"), None),
    ("bind an exchange it may not write",
     lambda c: c.exchange_bind(name("read", "x"), name("read", "x"), "k"),
     (X, name("read", "x"))),
    ("get from a queue it may read", lambda c: c.basic_get(name("read", "q")), None),
    ("get from a queue it may not read", lambda c: c.basic_get(name("write", "q")),
     (Q, name("write", "q"))),
    ("consume a queue it may read",
     lambda c: c.basic_consume(name("read", "q"), lambda *a: None), None),
    ("consume a queue it may not read",
     lambda c: c.basic_consume(name("write", "q"), lambda *a: None), (Q, name("write", "q"))),
    ("publish to amq.topic with a key its topic permission allows",
     lambda c: c.basic_publish("amq.topic", "allowed.k", b"m"), None),
]


@pytest.mark.parametrize("what,action,outcome", CASES, ids=[c[0] for c in CASES])
def test_each_method_needs_its_permission(what, action, outcome):
    conn = pika.BlockingConnection(limited_params())
    try:
        ch = conn.channel()
        if outcome is None:
            action(ch)
            # A round trip surfaces a refused publish.
            ch.queue_declare(name("none", "q"), passive=True)
            return
        with pytest.raises(pe.ChannelClosedByBroker) as e:
            action(ch)
            ch.queue_declare(name("none", "q"), passive=True)
        assert (e.value.reply_code, e.value.reply_text) == (403, refused(*outcome))
    finally:
        if conn.is_open:
            conn.close()


def test_a_server_named_queue_needs_configure_on_its_generated_name():
    conn = pika.BlockingConnection(limited_params())
    try:
        with pytest.raises(pe.ChannelClosedByBroker) as e:
            conn.channel().queue_declare("")
        assert e.value.reply_code == 403
        assert e.value.reply_text.startswith("ACCESS_REFUSED - access to queue 'amq.gen-")
    finally:
        if conn.is_open:
            conn.close()


def test_a_topic_permission_refuses_other_routing_keys():
    conn = pika.BlockingConnection(limited_params())
    try:
        ch = conn.channel()
        with pytest.raises(pe.ChannelClosedByBroker) as e:
            ch.basic_publish("amq.topic", "denied.k", b"m")
            ch.queue_declare(name("none", "q"), passive=True)
        assert (e.value.reply_code, e.value.reply_text) == (
            403, "ACCESS_REFUSED - access to topic 'denied.k' in exchange 'amq.topic' "
                 "in vhost '/' refused for user '%s'" % USER)
    finally:
        if conn.is_open:
            conn.close()


def test_opening_a_vhost_without_permissions_is_530():
    # pika reports a close during the handshake as a probable denial.
    with pytest.raises(pe.ProbableAccessDeniedError) as e:
        pika.BlockingConnection(limited_params(vhost=CLOSED_VHOST))
    assert "(530) \"NOT_ALLOWED - access to vhost '%s' refused for user '%s'\"" % (
        CLOSED_VHOST, USER) in str(e.value)


def test_a_wrong_password_is_refused():
    with pytest.raises(pe.ProbableAuthenticationError) as e:
        pika.BlockingConnection(limited_params(password="wrong"))
    assert "ACCESS_REFUSED" in str(e.value)
