"""Message TTL, dead-lettering and queue length limits: the RabbitMQ queue
arguments x-message-ttl, x-dead-letter-exchange, x-dead-letter-routing-key,
x-max-length, x-max-length-bytes and x-overflow, and the per-message
`expiration` property. Recorded against RabbitMQ 3.10.8 (x-death as in 3.10:
one entry per (queue, reason), most recent first; no x-last-death-* headers).
"""
import calendar
import struct
import time

import pika
import pika.exceptions as pe
import pytest

from conftest import pump


# ---------------------------------------------------------------- helpers
def count(ch, q):
    return ch.queue_declare(q, passive=True).method.message_count


def wait_count(conn, ch, q, n, timeout=3.0):
    pump(conn, lambda: count(ch, q) == n, timeout)


def get_one(conn, ch, q, auto_ack=False, timeout=3.0):
    """basic_get, polling until a message arrives; fails the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        m, p, b = ch.basic_get(q, auto_ack=auto_ack)
        if m is not None:
            return m, p, b
        if time.monotonic() > deadline:
            raise AssertionError("no message on %s within %.1fs" % (q, timeout))
        conn.process_data_events(time_limit=0.02)


def dead_letter_target(ch, names):
    """A fanout dead-letter exchange with one queue bound to it."""
    dlx, dlq = names("dlx"), names("dlq")
    ch.exchange_declare(dlx, "fanout")
    ch.queue_declare(dlq)
    ch.queue_bind(dlq, dlx)
    return dlx, dlq


def x_death(props):
    return (props.headers or {}).get("x-death")


def death_summary(props):
    return [(d["queue"], d["reason"], d["count"]) for d in (x_death(props) or [])]


def epoch(dt):
    """pika decodes AMQP timestamps as naive UTC datetimes."""
    return calendar.timegm(dt.utctimetuple())


@pytest.fixture
def raw_props(monkeypatch):
    """Raw basic property bytes of every content header pika decodes, so a
    test can check field types that pika's decoder drops ('l' vs 'I')."""
    captured = []
    orig = pika.spec.BasicProperties.decode

    def spy(self, encoded, offset=0):
        captured.append(bytes(encoded[offset:]))
        return orig(self, encoded, offset)

    monkeypatch.setattr(pika.spec.BasicProperties, "decode", spy)
    return captured


_FIXED = {"t": 1, "b": 1, "B": 1, "s": 2, "u": 2, "I": 4, "i": 4, "f": 4,
          "L": 8, "d": 8, "D": 5, "V": 0}


def typed_value(b, off):
    """Decode one field value keeping its type tag: ((tag, value), next_offset)."""
    tag = chr(b[off])
    off += 1
    if tag in "Sx":
        (n,) = struct.unpack_from(">I", b, off)
        return (tag, b[off + 4:off + 4 + n].decode()), off + 4 + n
    if tag == "l":
        return (tag, struct.unpack_from(">q", b, off)[0]), off + 8
    if tag == "T":
        return (tag, struct.unpack_from(">Q", b, off)[0]), off + 8
    if tag == "A":
        (n,) = struct.unpack_from(">I", b, off)
        end, off, vals = off + 4 + n, off + 4, []
        while off < end:
            v, off = typed_value(b, off)
            vals.append(v)
        return (tag, vals), end
    if tag == "F":
        t, end = typed_table(b, off)
        return (tag, t), end
    assert tag in _FIXED, "unknown field type tag %r" % tag
    return (tag, None), off + _FIXED[tag]


def typed_table(b, off):
    (n,) = struct.unpack_from(">I", b, off)
    end, off, out = off + 4 + n, off + 4, {}
    while off < end:
        klen = b[off]
        key = b[off + 1:off + 1 + klen].decode()
        out[key], off = typed_value(b, off + 1 + klen)
    return out, end


def typed_headers(raw):
    """The type-tagged headers table of raw basic property bytes (flags first)."""
    (flags,) = struct.unpack_from(">H", raw, 0)
    off = 2
    if flags & 0x8000:  # content-type
        off += 1 + raw[off]
    if flags & 0x4000:  # content-encoding
        off += 1 + raw[off]
    if not flags & 0x2000:
        return None
    return typed_table(raw, off)[0]


# ---------------------------------------------------------------- TTL
def test_x_message_ttl_expires_messages(conn, ch, name):
    ch.queue_declare(name, arguments={"x-message-ttl": 100})
    ch.basic_publish("", name, b"short-lived")
    time.sleep(0.4)
    assert ch.basic_get(name, auto_ack=True)[0] is None


def test_per_message_expiration_expires_the_message(conn, ch, name):
    ch.queue_declare(name)
    ch.basic_publish("", name, b"short", pika.BasicProperties(expiration="100"))
    ch.basic_publish("", name, b"long", pika.BasicProperties(expiration="60000"))
    time.sleep(0.4)
    m, p, b = ch.basic_get(name, auto_ack=True)
    assert b == b"long"
    assert p.expiration == "60000"
    assert ch.basic_get(name, auto_ack=True)[0] is None


def test_queue_ttl_and_message_expiration_lower_wins(conn, ch, names):
    qa, qb = names("qa"), names("qb")
    ch.queue_declare(qa, arguments={"x-message-ttl": 100})
    ch.basic_publish("", qa, b"queue-ttl-wins", pika.BasicProperties(expiration="60000"))
    ch.queue_declare(qb, arguments={"x-message-ttl": 60000})
    ch.basic_publish("", qb, b"message-ttl-wins", pika.BasicProperties(expiration="100"))
    ch.basic_publish("", qb, b"stays")
    wait_count(conn, ch, qa, 0)
    wait_count(conn, ch, qb, 1)
    assert ch.basic_get(qb, auto_ack=True)[2] == b"stays"


def test_per_message_ttl_only_at_the_head(conn, ch, names):
    dlx, dlq = dead_letter_target(ch, names)
    q = names("q")
    ch.queue_declare(q, arguments={"x-dead-letter-exchange": dlx})
    ch.basic_publish("", q, b"long", pika.BasicProperties(expiration="60000"))
    ch.basic_publish("", q, b"short", pika.BasicProperties(expiration="50"))
    time.sleep(0.3)
    # 'short' has expired but sits behind 'long': still counted, not dead-lettered
    assert count(ch, q) == 2
    assert count(ch, dlq) == 0
    assert ch.basic_get(q, auto_ack=True)[2] == b"long"
    assert ch.basic_get(q, auto_ack=True)[0] is None  # now at the head, it goes
    _, p, b = get_one(conn, ch, dlq, auto_ack=True)
    assert b == b"short"
    assert death_summary(p) == [(q, "expired", 1)]
    assert count(ch, q) == 0


def test_ttl_zero_delivered_to_waiting_consumer_else_expired(conn, ch, names):
    dlx, dlq = dead_letter_target(ch, names)
    q = names("q")
    ch.queue_declare(q, arguments={"x-message-ttl": 0, "x-dead-letter-exchange": dlx})
    ch.basic_publish("", q, b"nobody-home")
    assert count(ch, q) == 0
    assert ch.basic_get(q, auto_ack=True)[0] is None
    _, p, b = get_one(conn, ch, dlq, auto_ack=True)
    assert b == b"nobody-home"
    assert death_summary(p) == [(q, "expired", 1)]
    # per-message expiration "0" on a queue without TTL: same
    plain = names("plain")
    ch.queue_declare(plain)
    ch.basic_publish("", plain, b"gone", pika.BasicProperties(expiration="0"))
    ch.basic_publish("", plain, b"after")
    wait_count(conn, ch, plain, 1)
    assert ch.basic_get(plain, auto_ack=True)[2] == b"after"
    # with a consumer waiting, the message is delivered
    got = []
    ch.basic_consume(q, lambda c, m, p_, b_: got.append(b_), auto_ack=True)
    ch.basic_publish("", q, b"someone-home")
    pump(conn, lambda: got, 3.0)
    assert got == [b"someone-home"]
    assert count(ch, dlq) == 0


# ------------------------------------------------------- dead-lettering
def test_dead_letter_rejected_message(conn, ch, names):
    dlx, dlq = dead_letter_target(ch, names)
    q = names("q")
    ch.queue_declare(q, arguments={"x-dead-letter-exchange": dlx})
    ch.basic_publish("", q, b"dead")
    m, _, _ = get_one(conn, ch, q)
    ch.basic_reject(m.delivery_tag, requeue=False)
    m, p, b = get_one(conn, ch, dlq, auto_ack=True)
    assert b == b"dead"
    assert (m.exchange, m.routing_key) == (dlx, q)
    (d,) = x_death(p)
    assert (d["queue"], d["reason"], d["count"], d["exchange"], d["routing-keys"]) == \
        (q, "rejected", 1, "", [q])
    assert p.headers["x-first-death-queue"] == q
    assert p.headers["x-first-death-reason"] == "rejected"
    assert p.headers["x-first-death-exchange"] == ""


def test_nack_requeue_false_dead_letters_like_reject(conn, ch, names):
    dlx, dlq = dead_letter_target(ch, names)
    q = names("q")
    ch.queue_declare(q, arguments={"x-dead-letter-exchange": dlx})
    ch.basic_publish("", q, b"n1")
    ch.basic_publish("", q, b"n2")
    get_one(conn, ch, q)
    m2, _, _ = get_one(conn, ch, q)
    ch.basic_nack(m2.delivery_tag, multiple=True, requeue=False)
    wait_count(conn, ch, dlq, 2)
    got = [get_one(conn, ch, dlq, auto_ack=True) for _ in range(2)]
    assert [b for (_, _, b) in got] == [b"n1", b"n2"]
    for _, p, _ in got:
        assert death_summary(p) == [(q, "rejected", 1)]
        assert x_death(p)[0]["exchange"] == ""
        assert x_death(p)[0]["routing-keys"] == [q]
        assert p.headers["x-first-death-reason"] == "rejected"
    assert count(ch, q) == 0


def test_dead_letter_routing_key_overrides_routing_key(conn, ch, names):
    dlx, parked, by_orig, q = names("dlx"), names("parked"), names("orig"), names("q")
    ch.exchange_declare(dlx, "direct")
    ch.queue_declare(parked)
    ch.queue_declare(by_orig)
    ch.queue_bind(parked, dlx, "parked")
    ch.queue_bind(by_orig, dlx, q)
    ch.queue_declare(q, arguments={"x-dead-letter-exchange": dlx,
                                   "x-dead-letter-routing-key": "parked"})
    ch.basic_publish("", q, b"rerouted")
    m, _, _ = get_one(conn, ch, q)
    ch.basic_reject(m.delivery_tag, requeue=False)
    m, p, b = get_one(conn, ch, parked, auto_ack=True)
    assert b == b"rerouted"
    assert (m.exchange, m.routing_key) == (dlx, "parked")
    assert death_summary(p) == [(q, "rejected", 1)]
    assert x_death(p)[0]["routing-keys"] == [q]  # the original key
    assert x_death(p)[0]["exchange"] == ""
    assert count(ch, by_orig) == 0


def test_expired_message_dead_lettered_with_original_expiration(conn, ch, names):
    dlx, dlq = dead_letter_target(ch, names)
    q = names("q")
    ch.queue_declare(q, arguments={"x-dead-letter-exchange": dlx})
    before = time.time()
    ch.basic_publish("", q, b"ttl", pika.BasicProperties(
        expiration="100", message_id="m-ttl", headers={"h": "v"}))
    m, p, b = get_one(conn, ch, dlq, auto_ack=True)
    assert b == b"ttl"
    assert (m.exchange, m.routing_key) == (dlx, q)
    assert p.expiration is None
    assert p.message_id == "m-ttl"
    assert p.headers["h"] == "v"
    assert p.headers["x-first-death-queue"] == q
    assert p.headers["x-first-death-reason"] == "expired"
    assert p.headers["x-first-death-exchange"] == ""
    (d,) = x_death(p)
    assert sorted(d) == ["count", "exchange", "original-expiration", "queue", "reason",
                         "routing-keys", "time"]
    assert (d["queue"], d["reason"], d["count"], d["exchange"], d["routing-keys"]) == \
        (q, "expired", 1, "", [q])
    assert d["original-expiration"] == "100"
    assert before - 5 <= epoch(d["time"]) <= time.time() + 5
    assert count(ch, q) == 0


def test_retry_pattern_x_death_after_three_rounds(conn, ch, names, raw_props):
    work_x, retry_x, work, wait = names("workx"), names("retryx"), names("work"), names("wait")
    ch.exchange_declare(work_x, "direct")
    ch.exchange_declare(retry_x, "direct")
    ch.queue_declare(work, arguments={"x-dead-letter-exchange": retry_x})
    ch.queue_declare(wait, arguments={"x-message-ttl": 50, "x-dead-letter-exchange": work_x})
    ch.queue_bind(work, work_x, "task")
    ch.queue_bind(wait, retry_x, "task")
    before = time.time()
    ch.basic_publish(work_x, "task", b"job", pika.BasicProperties(message_id="job-1"))
    for rnd in (1, 2, 3):
        m, p, b = get_one(conn, ch, work)
        assert b == b"job"
        expected = [] if rnd == 1 else [(wait, "expired", rnd - 1), (work, "rejected", rnd - 1)]
        assert death_summary(p) == expected, "round %d" % rnd
        ch.basic_reject(m.delivery_tag, requeue=False)
    m, p, b = get_one(conn, ch, work, auto_ack=True)
    assert b == b"job"
    assert p.message_id == "job-1"
    assert (m.exchange, m.routing_key) == (work_x, "task")
    assert sorted(p.headers) == ["x-death", "x-first-death-exchange", "x-first-death-queue",
                                 "x-first-death-reason"]
    assert p.headers["x-first-death-queue"] == work
    assert p.headers["x-first-death-reason"] == "rejected"
    assert p.headers["x-first-death-exchange"] == work_x
    expired, rejected = x_death(p)  # most recent first
    for d in (expired, rejected):
        assert sorted(d) == ["count", "exchange", "queue", "reason", "routing-keys", "time"]
        assert before - 5 <= epoch(d["time"]) <= time.time() + 5
    assert (expired["queue"], expired["reason"], expired["count"]) == (wait, "expired", 3)
    assert (expired["exchange"], expired["routing-keys"]) == (retry_x, ["task"])
    assert (rejected["queue"], rejected["reason"], rejected["count"]) == (work, "rejected", 3)
    assert (rejected["exchange"], rejected["routing-keys"]) == (work_x, ["task"])
    # wire types: an array of tables; count a signed 64-bit integer ('l'),
    # time a timestamp ('T'), the names long strings ('S')
    typed = typed_headers(raw_props[-1])
    for k in ("x-first-death-queue", "x-first-death-reason", "x-first-death-exchange"):
        assert typed[k][0] == "S", k
    tag, entries = typed["x-death"]
    assert tag == "A" and len(entries) == 2
    for etag, e in entries:
        assert etag == "F"
        assert e["count"] == ("l", 3)
        assert e["time"][0] == "T"
        for k in ("queue", "reason", "exchange"):
            assert e[k][0] == "S", k
        assert e["routing-keys"] == ("A", [("S", "task")])


def test_expiry_cycle_to_same_queue_dropped_reject_cycle_allowed(conn, ch, names):
    loop = names("cycle")
    ch.queue_declare(loop, arguments={"x-message-ttl": 50, "x-dead-letter-exchange": "",
                                      "x-dead-letter-routing-key": loop})
    ch.basic_publish("", loop, b"loops")
    time.sleep(0.3)
    for _ in range(5):
        assert count(ch, loop) == 0, "expired message was re-queued"
        time.sleep(0.03)
    assert ch.basic_get(loop, auto_ack=True)[0] is None
    # rejection: allowed to come back to the same queue, again and again
    back = names("back")
    ch.queue_declare(back, arguments={"x-dead-letter-exchange": "",
                                      "x-dead-letter-routing-key": back})
    ch.basic_publish("", back, b"again")
    m, _, _ = get_one(conn, ch, back)
    ch.basic_reject(m.delivery_tag, requeue=False)
    m, p, b = get_one(conn, ch, back)
    assert b == b"again"
    assert m.redelivered is False
    assert death_summary(p) == [(back, "rejected", 1)]
    assert (x_death(p)[0]["exchange"], x_death(p)[0]["routing-keys"]) == ("", [back])
    ch.basic_reject(m.delivery_tag, requeue=False)
    _, p, _ = get_one(conn, ch, back, auto_ack=True)
    assert death_summary(p) == [(back, "rejected", 2)]


# --------------------------------------------------------- length limits
def test_max_length_drops_from_head_by_default(conn, ch, name):
    ch.queue_declare(name, arguments={"x-max-length": 2})
    for b in (b"1", b"2", b"3", b"4"):
        ch.basic_publish("", name, b)
    wait_count(conn, ch, name, 2)
    assert [ch.basic_get(name, auto_ack=True)[2] for _ in range(2)] == [b"3", b"4"]


def test_max_length_drop_head_dead_letters_with_reason_maxlen(conn, ch, names):
    dlx, dlq = dead_letter_target(ch, names)
    q = names("q")
    ch.queue_declare(q, arguments={"x-max-length": 2, "x-overflow": "drop-head",
                                   "x-dead-letter-exchange": dlx})
    for b in (b"1", b"2", b"3"):
        ch.basic_publish("", q, b)
    _, p, b = get_one(conn, ch, dlq, auto_ack=True)
    assert b == b"1"
    assert death_summary(p) == [(q, "maxlen", 1)]
    assert (x_death(p)[0]["exchange"], x_death(p)[0]["routing-keys"]) == ("", [q])
    assert p.headers["x-first-death-reason"] == "maxlen"
    wait_count(conn, ch, q, 2)
    assert [ch.basic_get(q, auto_ack=True)[2] for _ in range(2)] == [b"2", b"3"]


def test_max_length_bytes_counts_body_bytes(conn, ch, name):
    ch.queue_declare(name, arguments={"x-max-length-bytes": 10})
    for b in (b"aaaa", b"bbbb", b"cccc"):
        ch.basic_publish("", name, b)
    wait_count(conn, ch, name, 2)
    assert [ch.basic_get(name, auto_ack=True)[2] for _ in range(2)] == [b"bbbb", b"cccc"]
    ch.basic_publish("", name, b"0123456789")  # exactly at the limit is allowed
    wait_count(conn, ch, name, 1)
    assert ch.basic_get(name, auto_ack=True)[2] == b"0123456789"


def test_confirm_nack_on_reject_publish_overflow(conn, ch, name):
    ch.queue_declare(name, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    ch.basic_publish("", name, b"1")
    with pytest.raises(pe.NackError):
        ch.basic_publish("", name, b"2")
    assert ch.queue_declare(name, passive=True).method.message_count == 1


def test_reject_publish_without_confirms_drops_silently(conn, ch, names):
    dlx, dlq = dead_letter_target(ch, names)
    q = names("q")
    ch.queue_declare(q, arguments={"x-max-length": 1, "x-overflow": "reject-publish",
                                   "x-dead-letter-exchange": dlx})
    for b in (b"kept", b"dropped-1", b"dropped-2"):
        ch.basic_publish("", q, b)
    # RabbitMQ: a passive declare right after basic.publish can overtake the
    # enqueue (it reported 0 here), so wait for the first and then re-check.
    wait_count(conn, ch, q, 1)
    time.sleep(0.1)
    assert count(ch, q) == 1
    assert count(ch, dlq) == 0  # reject-publish does not dead-letter
    assert ch.is_open
    assert ch.basic_get(q, auto_ack=True)[2] == b"kept"
    ch.basic_publish("", q, b"after")
    assert get_one(conn, ch, q, auto_ack=True)[2] == b"after"


def test_reject_publish_dlx_nacks_and_dead_letters(conn, ch, names):
    dlx, dlq = dead_letter_target(ch, names)
    q = names("q")
    ch.queue_declare(q, arguments={"x-max-length": 1, "x-overflow": "reject-publish-dlx",
                                   "x-dead-letter-exchange": dlx})
    ch.confirm_delivery()
    ch.basic_publish("", q, b"fits")
    with pytest.raises(pe.NackError):
        ch.basic_publish("", q, b"overflows")
    _, p, b = get_one(conn, ch, dlq, auto_ack=True)
    assert b == b"overflows"
    assert death_summary(p) == [(q, "maxlen", 1)]
    assert (x_death(p)[0]["exchange"], x_death(p)[0]["routing-keys"]) == ("", [q])
    assert count(ch, q) == 1
    assert ch.basic_get(q, auto_ack=True)[2] == b"fits"


# ------------------------------------------------------ queue expiry (x-expires)
def queue_exists(conn, q):
    """Passive declare on a throwaway channel: True, or the ChannelClosedByBroker."""
    c = conn.channel()
    try:
        c.queue_declare(q, passive=True)
    except pe.ChannelClosedByBroker as e:
        return e
    c.close()
    return True


# A passive declare counts as use and renews the lease in RabbitMQ, so these
# tests sleep past x-expires and then look once (polling would keep the
# queue alive).
def test_x_expires_deletes_an_unused_queue(conn, ch, name):
    ch.queue_declare(name, arguments={"x-expires": 300})
    ch.basic_publish("", name, b"left behind")  # messages do not count as use
    time.sleep(1.2)
    err = queue_exists(conn, name)
    assert err is not True, "queue still exists after x-expires"
    assert err.reply_code == 404
    assert err.reply_text.startswith("NOT_FOUND - no queue"), err.reply_text


def test_x_expires_queue_with_consumer_is_kept_then_expires(conn, ch, name):
    ch.queue_declare(name, arguments={"x-expires": 300})
    tag = ch.basic_consume(name, lambda *a: None, auto_ack=True)
    time.sleep(0.8)
    assert queue_exists(conn, name) is True, "queue with a consumer was deleted"
    ch.basic_cancel(tag)
    time.sleep(1.2)
    err = queue_exists(conn, name)
    assert err is not True, "queue still exists after the consumer left"
    assert err.reply_code == 404


def test_x_expires_basic_get_counts_as_use(conn, ch, name):
    # Gets 0.2 s apart keep a 1.5 s lease alive (slack for a slow machine).
    ch.queue_declare(name, arguments={"x-expires": 1500})
    for _ in range(10):
        time.sleep(0.2)
        assert ch.basic_get(name, auto_ack=True)[0] is None
    assert count(ch, name) == 0


def test_x_expires_must_be_positive(conn, ch, name):
    with pytest.raises(pe.ChannelClosedByBroker) as ei:
        ch.queue_declare(name, arguments={"x-expires": 0})
    assert ei.value.reply_code == 406
    assert ei.value.reply_text.startswith(
        "PRECONDITION_FAILED - invalid arg 'x-expires' for queue"), ei.value.reply_text


# ------------------------------------------ delivery limit (quorum queues)
# RabbitMQ 3.10 supports x-delivery-limit only on quorum queues (durable, not
# exclusive, not auto-delete); x-delivery-count is added at delivery time.
def declare_delivery_limited(ch, names):
    dlq, q = names("dl-dlq"), names("dl-qq")
    ch.queue_declare(dlq)
    ch.queue_declare(q, durable=True, arguments={
        "x-queue-type": "quorum", "x-delivery-limit": 2,
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    return q, dlq


def test_delivery_limit_get_nack_requeue_until_dead_lettered(conn, ch, names):
    q, dlq = declare_delivery_limited(ch, names)
    ch.basic_publish("", q, b"poison", pika.BasicProperties(headers={"app": "v"}))
    counts, redelivered = [], []
    for _ in range(3):
        m, p, b = get_one(conn, ch, q)
        assert b == b"poison"
        assert p.headers["app"] == "v"
        counts.append(p.headers.get("x-delivery-count", "absent"))
        redelivered.append(m.redelivered)
        ch.basic_nack(m.delivery_tag, requeue=True)
    # basic.get in RabbitMQ 3.10 shows x-delivery-count from the first delivery on
    assert counts == [0, 1, 2], "x-delivery-count on deliveries 1..3"
    assert redelivered == [False, True, True]
    # the third return exceeds the limit of 2: dead-lettered, not redelivered
    m, p, b = get_one(conn, ch, dlq, auto_ack=True)
    assert ch.basic_get(q, auto_ack=True)[0] is None
    assert b == b"poison"
    assert (m.exchange, m.routing_key, m.redelivered) == ("", dlq, False)
    assert death_summary(p) == [(q, "delivery_limit", 1)]
    assert (x_death(p)[0]["exchange"], x_death(p)[0]["routing-keys"]) == ("", [q])
    assert p.headers["app"] == "v"
    assert p.headers["x-first-death-reason"] == "delivery_limit"
    assert p.headers["x-first-death-queue"] == q
    assert p.headers["x-first-death-exchange"] == ""
    assert "x-delivery-count" not in p.headers, "dead-lettered message carries x-delivery-count"
    assert count(ch, q) == 0
    ch.queue_delete(q)


def test_delivery_limit_consume_first_delivery_has_no_count(conn, ch, names):
    q, dlq = declare_delivery_limited(ch, names)
    ch.basic_qos(prefetch_count=1)
    seen = []

    def on_msg(c, m, p, b):
        seen.append((m.redelivered, (p.headers or {}).get("x-delivery-count", "absent")))
        c.basic_nack(m.delivery_tag, requeue=True)

    ch.basic_consume(q, on_msg)
    ch.basic_publish("", q, b"poison")
    _, p, _ = get_one(conn, ch, dlq, auto_ack=True)
    assert seen == [(False, "absent"), (True, 1), (True, 2)]
    assert death_summary(p) == [(q, "delivery_limit", 1)]
    ch.queue_delete(q)
