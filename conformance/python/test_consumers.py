"""Consumer-side RabbitMQ extensions: single active consumer
(x-single-active-consumer), consumer priorities (x-priority consume argument)
and the x-cancel-on-ha-failover consume argument. Recorded against RabbitMQ
3.10.8 (classic queues).

When the active consumer of a single-active-consumer queue is cancelled
while its channel still holds unacked messages, the next consumer starts
only once those are settled (so requeued ones keep their place). RabbitMQ
3.10 waits for a requeue even when the old channel acks instead; Warren
also starts the next consumer on an ack. Only the requeue case is tested.
"""
from conftest import pump, pump_for

SAC = {"x-single-active-consumer": True}


def recorder(ch, q, auto_ack=False, **kw):
    """Start a consumer appending (method, body) to the returned list."""
    got = []
    tag = ch.basic_consume(q, lambda c, m, p, b: got.append((m, b)), auto_ack=auto_ack, **kw)
    return tag, got


def bodies(got):
    return [b for (_, b) in got]


def count(ch, q):
    return ch.queue_declare(q, passive=True).method


# ------------------------------------------------- single active consumer
def test_sac_first_consumer_gets_all_second_takes_over_after_cancel(conn, names):
    a, b = conn.channel(), conn.channel()
    q = names("sac")
    a.queue_declare(q, arguments=SAC)
    tag_a, got_a = recorder(a, q)
    _, got_b = recorder(b, q)
    assert count(a, q).consumer_count == 2
    for s in (b"m0", b"m1", b"m2"):
        a.basic_publish("", q, s)
    pump(conn, lambda: len(got_a) >= 3)
    pump_for(conn, 0.2)
    assert bodies(got_a) == [b"m0", b"m1", b"m2"]
    assert bodies(got_b) == [], "the waiting consumer got messages"
    a.basic_ack(0, multiple=True)
    a.basic_cancel(tag_a)
    for s in (b"m3", b"m4"):
        a.basic_publish("", q, s)
    pump(conn, lambda: len(got_b) >= 2)
    pump_for(conn, 0.1)
    assert bodies(got_b) == [b"m3", b"m4"]
    assert bodies(got_a) == [b"m0", b"m1", b"m2"]
    assert count(a, q).consumer_count == 1


def test_sac_messages_requeued_after_cancel_go_to_second(conn, names):
    a, b = conn.channel(), conn.channel()
    q = names("sac")
    a.queue_declare(q, arguments=SAC)
    a.basic_qos(prefetch_count=2)
    tag_a, got_a = recorder(a, q)
    _, got_b = recorder(b, q, auto_ack=True)
    for i in range(5):
        a.basic_publish("", q, b"m%d" % i)
    pump(conn, lambda: len(got_a) >= 2)
    pump_for(conn, 0.2)
    # the active consumer is at its prefetch limit; the other one still gets nothing
    assert bodies(got_a) == [b"m0", b"m1"]
    assert bodies(got_b) == []
    assert count(a, q).message_count == 3
    a.basic_cancel(tag_a)
    a.basic_nack(0, multiple=True, requeue=True)
    pump(conn, lambda: len(got_b) >= 5)
    pump_for(conn, 0.1)
    # The cancelled consumer still held m0, m1: the next one starts only
    # once they are settled, so the requeued ones keep their place.
    assert [(b, m.redelivered) for (m, b) in got_b] == [
        (b"m0", True), (b"m1", True), (b"m2", False), (b"m3", False), (b"m4", False)]
    assert bodies(got_a) == [b"m0", b"m1"]


def test_sac_closing_active_channel_hands_everything_to_next(conn, names):
    a, b = conn.channel(), conn.channel()
    q = names("sac")
    a.queue_declare(q, arguments=SAC)
    a.basic_qos(prefetch_count=2)
    _, got_a = recorder(a, q)
    _, got_b = recorder(b, q, auto_ack=True)
    for i in range(5):
        b.basic_publish("", q, b"m%d" % i)
    pump(conn, lambda: len(got_a) >= 2)
    pump_for(conn, 0.2)
    assert bodies(got_b) == []
    a.close()
    pump(conn, lambda: len(got_b) >= 5)
    # the closed channel's unacked m0, m1 are requeued in their original
    # place before the next consumer gets anything
    assert bodies(got_b) == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert [m.redelivered for (m, _) in got_b] == [True, True, False, False, False]
    assert count(b, q).consumer_count == 1


# ------------------------------------------------------ consumer priorities
def test_consumer_priority_higher_gets_everything_it_can_take(conn, names):
    low_ch, high_ch = conn.channel(), conn.channel()
    q = names("cprio")
    low_ch.queue_declare(q)
    # the low-priority consumer subscribes first
    _, low = recorder(low_ch, q, auto_ack=True, arguments={"x-priority": 1})
    _, high = recorder(high_ch, q, auto_ack=True, arguments={"x-priority": 10})
    for i in range(6):
        low_ch.basic_publish("", q, b"m%d" % i)
    pump(conn, lambda: len(high) >= 6)
    pump_for(conn, 0.1)
    assert bodies(high) == [b"m%d" % i for i in range(6)]
    assert bodies(low) == []


def test_consumer_priority_with_prefetch_lower_gets_only_the_overflow(conn, names):
    low_ch, high_ch = conn.channel(), conn.channel()
    q = names("cprio")
    low_ch.queue_declare(q)
    low_ch.basic_qos(prefetch_count=10)
    high_ch.basic_qos(prefetch_count=2)
    _, low = recorder(low_ch, q, arguments={"x-priority": 0})
    _, high = recorder(high_ch, q, arguments={"x-priority": 10})
    for i in range(5):
        low_ch.basic_publish("", q, b"m%d" % i)
    pump(conn, lambda: len(low) >= 3)
    pump_for(conn, 0.1)
    assert bodies(high) == [b"m0", b"m1"]
    assert bodies(low) == [b"m2", b"m3", b"m4"]
    # room again on the high-priority consumer: the next message goes there
    high_ch.basic_ack(high[0][0].delivery_tag)
    high_ch.queue_declare(q, passive=True)  # round trip: the ack is processed
    low_ch.basic_publish("", q, b"m5")
    pump(conn, lambda: len(high) >= 3)
    pump_for(conn, 0.1)
    assert bodies(high) == [b"m0", b"m1", b"m5"]
    assert bodies(low) == [b"m2", b"m3", b"m4"]


def test_consumer_priority_negative_ranks_below_default(conn, names):
    neg_ch, def_ch = conn.channel(), conn.channel()
    q = names("cprio")
    neg_ch.queue_declare(q)
    _, neg = recorder(neg_ch, q, auto_ack=True, arguments={"x-priority": -5})
    _, default = recorder(def_ch, q, auto_ack=True)
    for i in range(4):
        neg_ch.basic_publish("", q, b"m%d" % i)
    pump(conn, lambda: len(default) >= 4)
    pump_for(conn, 0.1)
    assert bodies(neg) == []


# ----------------------------------------------------- x-cancel-on-ha-failover
def test_x_cancel_on_ha_failover_consume_argument_is_accepted(conn, ch, name):
    ch.queue_declare(name)
    tag, got = recorder(ch, name, auto_ack=True, arguments={"x-cancel-on-ha-failover": True})
    assert tag
    assert count(ch, name).consumer_count == 1
    ch.basic_publish("", name, b"hello")
    pump(conn, lambda: got)
    assert bodies(got) == [b"hello"]
    ch.basic_cancel(tag)
    assert ch.is_open
