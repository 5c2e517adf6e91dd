"""RabbitMQ queue extensions (length limits, TTL, dead-lettering, ...),
recorded against RabbitMQ 3.10. Warren builds these in a later issue; until
then conformance/run.sh leaves this file out when it runs against Warren
(set CONFORMANCE_EXTENSIONS=1 to include it).
"""
import pika.exceptions as pe
import pytest


def test_confirm_nack_on_reject_publish_overflow(conn, ch, name):
    ch.queue_declare(name, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    ch.basic_publish("", name, b"1")
    with pytest.raises(pe.NackError):
        ch.basic_publish("", name, b"2")
    assert ch.queue_declare(name, passive=True).method.message_count == 1
