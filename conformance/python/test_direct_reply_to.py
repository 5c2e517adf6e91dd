"""Direct reply-to (amq.rabbitmq.reply-to), recorded against RabbitMQ 3.10."""
import pika
import pika.exceptions as pe
import pytest

REPLY_TO = "amq.rabbitmq.reply-to"


def test_reply_reaches_the_requesting_channel(new_conn, name):
    server = new_conn().channel()
    server.queue_declare(name)
    client_conn = new_conn()
    client = client_conn.channel()
    replies = []
    client.basic_consume(REPLY_TO, lambda c, m, p, b: replies.append((m, p, b)), auto_ack=True)
    assert client.queue_declare(REPLY_TO, passive=True).method.consumer_count == 1
    client.basic_publish("", name, b"ping",
                         pika.BasicProperties(reply_to=REPLY_TO, correlation_id="c-9"))
    method, props, body = None, None, None
    for _ in range(100):
        method, props, body = server.basic_get(name, auto_ack=True)
        if method:
            break
        server.connection.sleep(0.02)
    assert body == b"ping"
    assert props.reply_to.startswith(REPLY_TO + ".")
    server.basic_publish("", props.reply_to, b"pong", pika.BasicProperties(correlation_id="c-9"))
    for _ in range(100):
        if replies:
            break
        client_conn.process_data_events(time_limit=0.05)
    assert replies, "no reply"
    m, p, b = replies[0]
    assert b == b"pong"
    assert p.correlation_id == "c-9"
    assert m.routing_key.startswith(REPLY_TO + ".")


def test_reply_to_without_a_reply_consumer_is_refused(conn, name):
    ch = conn.channel()
    ch.queue_declare(name)
    with pytest.raises(pe.ChannelClosedByBroker) as e:
        ch.basic_publish("", name, b"x", pika.BasicProperties(reply_to=REPLY_TO))
        ch.queue_declare(name, passive=True)
    assert e.value.reply_code == 406
    assert "fast reply consumer does not exist" in e.value.reply_text


def test_reply_to_an_unknown_name_is_dropped_silently(ch, name):
    ch.queue_declare(name)
    ch.basic_publish("", REPLY_TO + ".nobody-holds-this", b"lost")
    assert ch.queue_declare(name, passive=True).method.message_count == 0
