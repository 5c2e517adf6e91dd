"""Publisher confirms and transactions."""
import struct

import pika.exceptions as pe
import pytest

from amqp_raw import RawConnection, basic_publish, body_frame, header_frame, method_frame
from conftest import SENTINEL, channel_error, get_until_sentinel, pump, pump_for


# ------------------------------------------------------------ confirms
def test_confirm_delivery_publish_is_acked(conn, ch, queue):
    ch.confirm_delivery()
    for i in range(50):
        assert ch.basic_publish("", queue, b"%d" % i) is None  # pika raises on nack/return
    # confirmed => enqueued
    assert ch.queue_declare(queue, passive=True).method.message_count == 50


def test_confirm_unroutable_non_mandatory_is_acked(ch, name):
    ch.exchange_declare(name, "direct")
    ch.confirm_delivery()
    ch.basic_publish(name, "nobody", b"x")  # acked, no error


def test_confirm_unroutable_mandatory_raises_unroutable(conn, ch, name):
    ch.exchange_declare(name, "direct")
    ch.confirm_delivery()
    with pytest.raises(pe.UnroutableError) as ei:
        ch.basic_publish(name, "nobody", b"returned", mandatory=True)
    msgs = ei.value.messages
    assert len(msgs) == 1
    assert (msgs[0].method.reply_code, msgs[0].method.reply_text) == (312, "NO_ROUTE")
    assert msgs[0].body == b"returned"
    assert ch.is_open
    ch.basic_publish(name, "nobody", b"x")


def test_confirm_publish_to_missing_exchange_closes_channel_404(conn, ch):
    ch.confirm_delivery()
    with channel_error(404, "NOT_FOUND - no exchange 'conf-missing-x' in vhost '/'"):
        ch.basic_publish("conf-missing-x", "k", b"x")
    assert conn.is_open


def test_confirm_select_after_tx_select_is_406(ch):
    ch.tx_select()
    with channel_error(406, "PRECONDITION_FAILED - cannot switch from tx to confirm mode"):
        ch.confirm_delivery()


def test_tx_select_after_confirm_select_is_406(ch):
    ch.confirm_delivery()
    with channel_error(406, "PRECONDITION_FAILED - cannot switch from confirm to tx mode"):
        ch.tx_select()


def _raw_confirm_session():
    r = RawConnection().handshake()
    r.open_channel(1)
    r.send(method_frame(1, 85, 10, b"\x00"))  # confirm.select nowait=false
    r.expect_method(1, 85, 11)
    return r


def _read_acks(r, last_tag):
    """Collect basic.ack frames until last_tag is covered; returns list of (tag, multiple)."""
    acks = []
    while not acks or acks[-1][0] < last_tag:
        ch, cid, mid, args = r.read_method()
        assert (ch, cid, mid) == (1, 60, 80), (ch, cid, mid, args)
        tag, bits = struct.unpack(">QB", args[:9])
        acks.append((tag, bool(bits & 1)))
    return acks


def test_raw_confirm_delivery_tags_cover_every_publish(queue):
    r = _raw_confirm_session()
    try:
        for i in range(10):
            r.send(basic_publish(1, "", queue))
            r.send(header_frame(1, 1))
            r.send(body_frame(1, b"x"))
        acks = _read_acks(r, 10)
        covered = set()
        prev = 0
        for tag, multiple in acks:
            assert tag > prev
            covered |= set(range(prev + 1, tag + 1)) if multiple else {tag}
            prev = tag
        assert covered == set(range(1, 11))
    finally:
        r.close()


def test_raw_confirm_return_precedes_ack(name):
    r = _raw_confirm_session()
    try:
        r.send(method_frame(1, 40, 10, struct.pack(">H", 0) + bytes([len(name)]) + name.encode()
                            + b"\x06direct" + b"\x00" + struct.pack(">I", 0)))
        r.expect_method(1, 40, 11)
        r.send(basic_publish(1, name, "nobody", mandatory=True))
        r.send(header_frame(1, 3))
        r.send(body_frame(1, b"abc"))
        ch, cid, mid, args = r.read_method()
        assert (ch, cid, mid) == (1, 60, 50)  # basic.return first
        code, = struct.unpack(">H", args[:2])
        assert code == 312 and args[3:3 + args[2]] == b"NO_ROUTE"
        ftype, _, payload = r.read_frame()
        assert ftype == 2 and struct.unpack(">Q", payload[4:12])[0] == 3
        ftype, _, payload = r.read_frame()
        assert (ftype, payload) == (3, b"abc")
        assert _read_acks(r, 1) == [(1, False)]  # then the ack (not a nack)
    finally:
        r.close()


# ------------------------------------------------------------ transactions
def test_tx_commit_and_rollback_without_select_are_406(conn):
    c = conn.channel()
    with channel_error(406, "PRECONDITION_FAILED - channel is not transactional"):
        c.tx_commit()
    c = conn.channel()
    with channel_error(406, "PRECONDITION_FAILED - channel is not transactional"):
        c.tx_rollback()


def test_tx_select_twice_is_ok(ch):
    ch.tx_select()
    ch.tx_select()
    ch.tx_commit()


def test_tx_publish_visible_only_after_commit(conn, ch, queue):
    ch.tx_select()
    ch.basic_publish("", queue, b"t1")
    ch.basic_publish("", queue, b"t2")
    other = conn.channel()
    pump_for(conn, 0.2)
    assert other.queue_declare(queue, passive=True).method.message_count == 0
    ch.tx_commit()
    pump(conn, lambda: other.queue_declare(queue, passive=True).method.message_count == 2)
    assert [b for _, _, b in [other.basic_get(queue, auto_ack=True) for _ in range(2)]] == [b"t1", b"t2"]


def test_tx_rollback_discards_publishes(conn, ch, queue):
    ch.tx_select()
    ch.basic_publish("", queue, b"rolled-back")
    ch.tx_rollback()
    ch.basic_publish("", queue, b"committed")
    ch.tx_commit()
    other = conn.channel()
    other.basic_publish("", queue, SENTINEL)
    assert get_until_sentinel(conn, other, queue) == [b"committed"]


def test_tx_rollback_of_ack_leaves_message_unacked(conn, ch, queue):
    ch.basic_publish("", queue, b"m")
    pump(conn, lambda: ch.queue_declare(queue, passive=True).method.message_count == 1)
    ch.tx_select()
    m, _, _ = ch.basic_get(queue)
    ch.basic_ack(m.delivery_tag)
    ch.tx_rollback()
    # not acked, not requeued: still outstanding on this channel
    assert ch.queue_declare(queue, passive=True).method.message_count == 0
    ch.close()
    c = conn.channel()
    m2, _, b2 = c.basic_get(queue, auto_ack=True)
    assert (b2, m2.redelivered) == (b"m", True)


def test_tx_rolled_back_ack_can_be_acked_again(conn, ch, queue):
    ch.basic_publish("", queue, b"m")
    pump(conn, lambda: ch.queue_declare(queue, passive=True).method.message_count == 1)
    ch.tx_select()
    m, _, _ = ch.basic_get(queue)
    ch.basic_ack(m.delivery_tag)
    ch.tx_rollback()
    ch.basic_ack(m.delivery_tag)
    ch.tx_commit()
    ch.close()
    c = conn.channel()
    assert c.basic_get(queue) == (None, None, None)


def test_tx_commit_of_ack_applies(conn, ch, queue):
    ch.basic_publish("", queue, b"m")
    pump(conn, lambda: ch.queue_declare(queue, passive=True).method.message_count == 1)
    ch.tx_select()
    m, _, _ = ch.basic_get(queue)
    ch.basic_ack(m.delivery_tag)
    ch.tx_commit()
    ch.close()
    assert conn.channel().basic_get(queue) == (None, None, None)


def test_tx_mandatory_return_is_sent_on_commit(conn, ch, name):
    ch.exchange_declare(name, "direct")
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append((m.reply_code, b)))
    ch.tx_select()
    ch.basic_publish(name, "nobody", b"r1", mandatory=True)
    pump_for(conn, 0.3)
    assert returned == []  # deferred until commit
    ch.tx_commit()
    pump(conn, lambda: returned)
    assert returned == [(312, b"r1")]


def test_tx_mandatory_rollback_sends_no_return(conn, ch, name):
    ch.exchange_declare(name, "direct")
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append(m))
    ch.tx_select()
    ch.basic_publish(name, "nobody", b"r1", mandatory=True)
    ch.tx_rollback()
    pump_for(conn, 0.3)
    assert returned == []


def test_tx_publish_to_missing_exchange_closes_channel(conn, ch):
    ch.tx_select()
    with channel_error(404, "NOT_FOUND - no exchange 'conf-missing-x' in vhost '/'"):
        ch.basic_publish("conf-missing-x", "k", b"x")
        ch.tx_commit()
    assert conn.is_open


def test_tx_unknown_delivery_tag_is_406(ch):
    ch.tx_select()
    with channel_error(406, "PRECONDITION_FAILED - unknown delivery tag 55"):
        ch.basic_ack(55)
        ch.tx_commit()
