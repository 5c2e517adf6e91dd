"""AMQPS through pika, as RabbitMQ 3.10 serves it with
`ssl_options.verify = verify_peer`, `fail_if_no_peer_cert = false` and
the EXTERNAL mechanism (rabbitmq_auth_mechanism_ssl,
`ssl_cert_login_from = common_name`): PLAIN over TLS, EXTERNAL with a
client certificate, the connection's TLS fields in the management API, and
the refusals (a certificate naming no user, EXTERNAL without a
certificate, a server the client does not trust, plain AMQP on the TLS
port).

conformance/run.sh sets AMQPS_URL (amqps://127.0.0.1:PORT/%2F) and TLS_DIR
(the files of make_certs.py) for Warren; for RabbitMQ, point them at its
TLS listener and the files its rabbitmq.conf names."""
import os
import socket
import ssl
import time
import urllib.parse
import uuid

import pika
import pika.exceptions as pe
import pytest

from test_permissions import MANAGEMENT_URL, api  # noqa: F401  (the API helper)
import json
import base64
import urllib.request

AMQPS_URL = os.environ.get("AMQPS_URL")
TLS_DIR = os.environ.get("TLS_DIR")
pytestmark = pytest.mark.skipif(not (AMQPS_URL and TLS_DIR), reason="AMQPS_URL and TLS_DIR not set")
CERT_USER = "tls-client"


def context(ca="ca.pem", client=None):
    ctx = ssl.create_default_context(cafile=os.path.join(TLS_DIR, ca))
    if client:
        ctx.load_cert_chain(os.path.join(TLS_DIR, client + ".pem"), os.path.join(TLS_DIR, client + ".key"))
    return ctx


def params(ctx, credentials):
    url = urllib.parse.urlparse(AMQPS_URL)
    return pika.ConnectionParameters(
        host="127.0.0.1", port=url.port, virtual_host="/", credentials=credentials,
        ssl_options=pika.SSLOptions(ctx, "127.0.0.1"),
        connection_attempts=1, socket_timeout=5, stack_timeout=10)


def connections():
    url = urllib.parse.urlparse(AMQPS_URL)
    token = base64.b64encode(b"guest:guest").decode()
    req = urllib.request.Request(MANAGEMENT_URL + "/api/connections")
    req.add_header("authorization", "Basic " + token)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def listed(user, timeout=10.0):
    """The API's row for `user`'s connection (stats may lag a few seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [c for c in connections() if c.get("user") == user and c.get("ssl")]
        if rows and rows[0].get("ssl_protocol"):
            return rows[0]
        if time.monotonic() > deadline:
            raise AssertionError("no TLS connection of %s listed" % user)
        time.sleep(0.2)


@pytest.fixture(scope="module", autouse=True)
def cert_user():
    """The user the client certificate names: no password, all permissions."""
    api("PUT", "/users/" + CERT_USER, {"password_hash": "", "tags": ""})
    api("PUT", "/permissions/%2F/" + CERT_USER, {"configure": ".*", "write": ".*", "read": ".*"})
    yield
    api("DELETE", "/users/" + CERT_USER)


def test_plain_login_over_tls_round_trip():
    conn = pika.BlockingConnection(params(context(), pika.PlainCredentials("guest", "guest")))
    try:
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.confirm_delivery()
        body = os.urandom(200_000)  # several TLS records and frames
        ch.basic_publish("", q, body)
        m, _, got = ch.basic_get(q, auto_ack=True)
        assert got == body
    finally:
        conn.close()


def test_external_logs_in_as_the_certificates_cn():
    conn = pika.BlockingConnection(params(context(client=CERT_USER), pika.credentials.ExternalCredentials()))
    try:
        ch = conn.channel()
        ch.queue_declare("", exclusive=True)
        row = listed(CERT_USER)
        assert row["auth_mechanism"] == "EXTERNAL"
        assert row["ssl_protocol"] in ("tlsv1.3", "tlsv1.2")
        # The certificate's subject is CN, then O: shown last RDN first.
        assert row["peer_cert_subject"] == "O=Warren conformance,CN=tls-client"
        assert row["peer_cert_issuer"] == "CN=Warren conformance CA"
    finally:
        conn.close()


REFUSED = ("ACCESS_REFUSED - Login was refused using authentication mechanism EXTERNAL. "
           "For details see the broker logfile.")


def test_external_with_a_certificate_naming_no_user_is_refused():
    with pytest.raises(pe.ProbableAuthenticationError) as ei:
        pika.BlockingConnection(params(context(client="tls-stranger"), pika.credentials.ExternalCredentials()))
    assert REFUSED in str(ei.value)


def test_external_without_a_certificate_is_refused_alike():
    # EXTERNAL is offered on a listener with verify_peer; a client that
    # sent no certificate is refused like a wrong login.
    with pytest.raises(pe.ProbableAuthenticationError) as ei:
        pika.BlockingConnection(params(context(), pika.credentials.ExternalCredentials()))
    assert REFUSED in str(ei.value)


def test_a_client_that_does_not_trust_the_server_fails_its_handshake():
    with pytest.raises(ssl.SSLCertVerificationError):
        pika.BlockingConnection(params(context(ca="other-ca.pem"), pika.PlainCredentials("guest", "guest")))


def test_plain_amqp_on_the_tls_port_gets_no_amqp_answer():
    url = urllib.parse.urlparse(AMQPS_URL)
    with socket.create_connection(("127.0.0.1", url.port), timeout=10) as s:
        s.sendall(b"AMQP\x00\x00\x09\x01")
        data = b""
        while True:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:  # RabbitMQ resets it
                break
            if not chunk:
                break
            data += chunk
    # The server ends the connection (after a TLS alert at most): it never
    # answers in AMQP.
    assert not data.startswith(b"AMQP") and not data.startswith(b"\x01\x00\x00"), data
