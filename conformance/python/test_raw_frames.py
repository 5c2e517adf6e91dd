"""Raw-socket protocol tests: hand-built frames, exact Connection.Close contents.

RabbitMQ sometimes just drops TCP (no Connection.Close); those cases assert
("eof", ...) i.e. EOF or RST with no Close frame before it.
"""
import os
import struct
import time

import pytest

from amqp_raw import (PROTOCOL_HEADER, RawConnection, basic_publish, body_frame,
                      broker_credentials, channel_open, frame, header_frame, longstr, method_frame,
                      shortstr, table)

@pytest.fixture
def raw():
    conns = []

    def factory(handshake=True, **kw):
        r = RawConnection()
        conns.append(r)
        if handshake:
            r.handshake(**kw)
        return r

    yield factory
    for r in conns:
        r.close()


def assert_close(result, code, text, class_id, method_id):
    assert result[0] == "close", result
    assert result[1:] == (code, text, class_id, method_id), result


def assert_dropped(r, result):
    """TCP closed/reset without any Connection.Close frame."""
    assert result[0] == "eof", result
    assert r.other_frames == [], r.other_frames


def qos_roundtrip(r, ch=1):
    r.send(method_frame(ch, 60, 10, struct.pack(">IHB", 0, 0, 0)))
    r.expect_method(ch, 60, 11)


def start_ok_frame(mech="PLAIN", response=b"\x00guest\x00guest", client_props=b"\x00\x00\x00\x00"):
    return method_frame(0, 10, 11, client_props + shortstr(mech) + longstr(response) + shortstr("en_US"))


def credentials_response():
    user, pw, _ = broker_credentials()
    return b"\x00" + user.encode() + b"\x00" + pw.encode()


# ------------------------------------------------------------ handshake basics
def _skip_table(buf, off):
    n, = struct.unpack(">I", buf[off:off + 4])
    return off + 4 + n


def test_start_and_tune_contents(raw):
    r = raw(handshake=False)
    r.send(PROTOCOL_HEADER)
    args = r.expect_method(0, 10, 10)
    assert args[:2] == b"\x00\x09"  # version-major 0, version-minor 9
    off = _skip_table(args, 2)
    n, = struct.unpack(">I", args[off:off + 4])
    mechanisms = args[off + 4:off + 4 + n].decode()
    off += 4 + n
    n, = struct.unpack(">I", args[off:off + 4])
    locales = args[off + 4:off + 4 + n].decode()
    assert set(mechanisms.split()) == {"PLAIN", "AMQPLAIN"}
    assert locales == "en_US"
    r.send(start_ok_frame(response=credentials_response()))
    tune = r.expect_method(0, 10, 30)
    # RabbitMQ defaults: channel_max 2047, frame_max 131072, heartbeat 60
    assert struct.unpack(">HIH", tune[:8]) == (2047, 131072, 60)


def test_full_handshake_and_client_close(raw):
    r = raw()
    r.open_channel(1)
    r.send(method_frame(0, 10, 50, struct.pack(">H", 200) + shortstr("bye") + struct.pack(">HH", 0, 0)))
    r.expect_method(0, 10, 51)
    # RabbitMQ leaves closing the socket to the client after close-ok ...
    assert r.read_all_until_eof(1.0) == (b"", "timeout")
    # ... and ignores anything sent afterwards
    r.send(channel_open(2))
    assert r.read_all_until_eof(1.0) == (b"", "timeout")


def test_channel_close_roundtrip_and_reopen(raw):
    r = raw()
    r.open_channel(1)
    r.send(method_frame(1, 20, 40, struct.pack(">H", 200) + shortstr("") + struct.pack(">HH", 0, 0)))
    r.expect_method(1, 20, 41)
    r.open_channel(1)
    qos_roundtrip(r)


@pytest.mark.parametrize("header", [
    b"AMQP\x00\x00\x09\x00",   # wrong revision
    b"AMQP\x00\x00\x08\x00",   # wrong minor
    b"AMQP\x00\x01\x00\x00",   # AMQP 1.0
    b"AMQP\x03\x01\x00\x00",   # AMQP 1.0 SASL
    b"GET / HTTP/1.1\r\n\r\n",  # not AMQP at all
    b"\xff" * 8,
])
def test_wrong_protocol_header_gets_091_header_and_close(raw, header):
    r = raw(handshake=False)
    r.send(header)
    data, how = r.read_all_until_eof(3)
    assert data == b"AMQP\x00\x00\x09\x01"
    assert how in ("eof", "reset")


def test_incomplete_protocol_header_gets_no_reply(raw):
    r = raw(handshake=False)
    r.send(b"AMQP")
    data, how = r.read_all_until_eof(1.0)
    assert (data, how) == (b"", "timeout")  # still waiting for the other 4 bytes


def test_frames_split_across_writes_are_reassembled(raw):
    r = raw()
    f = channel_open(1)
    r.send(f[:3])
    time.sleep(0.2)
    r.send(f[3:9])
    time.sleep(0.2)
    r.send(f[9:])
    r.expect_method(1, 20, 11)


def test_many_frames_in_one_write(raw):
    r = raw()
    r.send(b"".join(channel_open(i) for i in range(1, 11)))
    for i in range(1, 11):
        r.expect_method(i, 20, 11)


# ------------------------------------------------------------ framing errors
def test_garbage_bytes_after_handshake_501(raw):
    r = raw()
    r.send(b"\xff" * 20)
    assert_close(r.read_until_close(), 501,
                 "FRAME_ERROR - type 255, all octets = <<>>: {frame_too_large,4294967295,131064}", 0, 0)


def test_garbage_text_after_handshake_501(raw):
    r = raw()
    r.send(b"hello world garbage bytes here\n" * 3)
    # 'h' = type 104, "ello" = size 1701604463 ... parsed as a frame header
    assert_close(r.read_until_close(), 501,
                 "FRAME_ERROR - type 104, all octets = <<>>: {frame_too_large,1819222135,131064}", 0, 0)


def test_truncated_frame_then_half_close_drops_tcp(raw):
    r = raw()
    r.send(channel_open(1)[:5])
    time.sleep(0.2)
    r.sock.shutdown(1)  # SHUT_WR: EOF mid-frame
    assert_dropped(r, r.read_until_close())


def test_truncated_frame_without_close_server_waits(raw):
    r = raw()
    r.send(channel_open(1)[:5])
    assert r.read_until_close(1.0) == ("timeout",)


@pytest.mark.parametrize("frame_max,size,ok", [
    (4096, 4096, True),      # payload may be as large as frame_max itself (8-byte fudge)
    (4096, 4097, False),
    (131072, 131072, True),
    (131072, 131073, False),
])
def test_body_frame_size_limit(raw, frame_max, size, ok):
    r = raw(frame_max=frame_max)
    r.open_channel(1)
    r.send(basic_publish(1, "", "conformance-nowhere"))
    r.send(header_frame(1, size))
    r.send(body_frame(1, b"x" * size))
    if ok:
        qos_roundtrip(r)
    else:
        # reported limit is frame_max - 8
        assert_close(r.read_until_close(), 501,
                     "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,%d,%d}" % (size, frame_max - 8), 0, 0)


def test_method_frame_larger_than_frame_max_501(raw):
    r = raw(frame_max=4096)
    r.open_channel(1)
    args = struct.pack(">H", 0) + shortstr("q" * 200) + b"\x00" + table([("k", b"S", longstr(b"v" * 5000))])
    f = method_frame(1, 50, 10, args)
    r.send(f)
    assert_close(r.read_until_close(), 501,
                 "FRAME_ERROR - type 1, all octets = <<>>: {frame_too_large,%d,4088}" % (len(f) - 8), 0, 0)


def test_bad_frame_end_501(raw):
    r = raw()
    f = channel_open(1)
    r.send(f[:-1] + b"\x00")
    assert_close(r.read_until_close(), 501,
                 "FRAME_ERROR - type 1, all octets = <<0,20,0,10,0>>: {invalid_frame_end_marker,0}", 0, 0)


@pytest.mark.parametrize("ftype,channel,payload,text", [
    (9, 0, b"", "FRAME_ERROR - type 9, all octets = <<>>: unknown_frame"),
    (0, 0, b"", "FRAME_ERROR - type 0, all octets = <<>>: unknown_frame"),
    (8, 0, b"xx", 'FRAME_ERROR - type 8, all octets = <<"xx">>: unknown_frame'),  # heartbeat with payload
])
def test_unknown_or_malformed_frame_type_501(raw, ftype, channel, payload, text):
    r = raw()
    r.send(frame(ftype, channel, payload))
    assert_close(r.read_until_close(), 501, text, 0, 0)


def test_truncated_method_arguments_501(raw):
    r = raw()
    r.open_channel(1)
    r.send(method_frame(1, 50, 10, b"\x00"))  # queue.declare cut short
    assert_close(r.read_until_close(), 501, "FRAME_ERROR - cannot decode <<0>>", 50, 10)


@pytest.mark.parametrize("class_id,method_id", [(60, 99), (99, 10)])
def test_unknown_class_or_method_drops_tcp(raw, class_id, method_id):
    # RabbitMQ's reader crashes ({unknown_method_id,...}) and the socket is reset without a Close
    r = raw()
    r.open_channel(1)
    r.send(method_frame(1, class_id, method_id))
    assert_dropped(r, r.read_until_close())


# ------------------------------------------------------------ channel state errors
def test_method_on_unopened_channel_504(raw):
    r = raw()
    r.send(method_frame(5, 50, 10, struct.pack(">H", 0) + shortstr("") + b"\x00" + struct.pack(">I", 0)))
    assert_close(r.read_until_close(), 504, "CHANNEL_ERROR - expected 'channel.open'", 50, 10)


def test_second_channel_open_504(raw):
    r = raw()
    r.open_channel(1)
    r.send(channel_open(1))
    assert_close(r.read_until_close(), 504, "CHANNEL_ERROR - second 'channel.open' seen", 20, 10)


def test_channel_open_on_channel_zero_504(raw):
    r = raw()
    r.send(channel_open(0))
    assert_close(r.read_until_close(), 504,
                 "CHANNEL_ERROR - unexpected method in connection state running", 20, 10)


def test_channel_method_on_channel_zero_504(raw):
    r = raw()
    r.send(method_frame(0, 50, 10, struct.pack(">H", 0) + shortstr("") + b"\x00" + struct.pack(">I", 0)))
    assert_close(r.read_until_close(), 504,
                 "CHANNEL_ERROR - unexpected method in connection state running", 50, 10)


def test_method_after_channel_close_504(raw):
    r = raw()
    r.open_channel(1)
    r.send(method_frame(1, 20, 40, struct.pack(">H", 200) + shortstr("") + struct.pack(">HH", 0, 0)))
    r.expect_method(1, 20, 41)
    r.send(method_frame(1, 60, 10, struct.pack(">IHB", 0, 0, 0)))
    assert_close(r.read_until_close(), 504, "CHANNEL_ERROR - expected 'channel.open'", 60, 10)


def test_unsolicited_channel_close_ok_503(raw):
    r = raw()
    r.open_channel(1)
    r.send(method_frame(1, 20, 41))
    assert_close(r.read_until_close(), 503, "COMMAND_INVALID - unimplemented method", 20, 41)


@pytest.mark.parametrize("class_id,method_id,args", [
    (10, 51, b""),                                                      # connection.close-ok
    (10, 11, struct.pack(">I", 0) + shortstr("PLAIN") + longstr(b"\x00a\x00b") + shortstr("en_US")),
])
def test_connection_method_after_open_504(raw, class_id, method_id, args):
    r = raw()
    r.send(method_frame(0, class_id, method_id, args))
    assert_close(r.read_until_close(), 504,
                 "CHANNEL_ERROR - unexpected method in connection state running", class_id, method_id)


def test_channel_max_overflow_530(raw):
    r = raw(channel_max=3)
    for ch in (1, 2, 3):
        r.open_channel(ch)
    r.send(channel_open(4))
    assert_close(r.read_until_close(), 530,
                 "NOT_ALLOWED - number of channels opened (3) has reached the negotiated channel_max (3)", 0, 0)


def test_channel_numbers_above_channel_max_are_accepted(raw):
    # RabbitMQ only limits the *number* of open channels, not the channel number
    r = raw(channel_max=3)
    r.open_channel(7)
    r.open_channel(65535)
    qos_roundtrip(r, 65535)


# ------------------------------------------------------------ content framing errors
def test_body_without_header_505(raw):
    r = raw()
    r.open_channel(1)
    r.send(body_frame(1, b"hello"))
    assert_close(r.read_until_close(), 505,
                 "UNEXPECTED_FRAME - expected method frame, got non method frame instead", 0, 0)


def test_header_without_method_505(raw):
    r = raw()
    r.open_channel(1)
    r.send(header_frame(1, 3))
    assert_close(r.read_until_close(), 505,
                 "UNEXPECTED_FRAME - expected method frame, got non method frame instead", 0, 0)


def test_body_after_zero_size_header_505(raw):
    r = raw()
    r.open_channel(1)
    r.send(basic_publish(1, "", "conformance-nowhere"))
    r.send(header_frame(1, 0))  # message complete here
    r.send(body_frame(1, b"x"))
    assert_close(r.read_until_close(), 505,
                 "UNEXPECTED_FRAME - expected method frame, got non method frame instead", 0, 0)


def test_method_instead_of_header_505(raw):
    r = raw()
    r.open_channel(1)
    r.send(basic_publish(1, "", "conformance-nowhere"))
    r.send(method_frame(1, 60, 10, struct.pack(">IHB", 0, 0, 0)))
    assert_close(r.read_until_close(), 505,
                 "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead",
                 60, 40)


def test_header_with_wrong_class_505(raw):
    r = raw()
    r.open_channel(1)
    r.send(basic_publish(1, "", "conformance-nowhere"))
    r.send(header_frame(1, 1, class_id=61))
    assert_close(r.read_until_close(), 505,
                 "UNEXPECTED_FRAME - expected content header for class 60, got one for class 61 instead",
                 60, 40)


@pytest.mark.parametrize("declared,sent", [(3, b"hello"), (10, b"hello")])
def test_body_size_mismatch(raw, declared, sent):
    r = raw()
    r.open_channel(1)
    r.send(basic_publish(1, "", "conformance-nowhere"))
    r.send(header_frame(1, declared))
    r.send(body_frame(1, sent))
    # no error yet: the server keeps waiting for body frames (even past the declared size)
    assert r.read_until_close(0.5) == ("timeout",)
    r.send(basic_publish(1, "", "conformance-nowhere"))
    assert_close(r.read_until_close(), 505,
                 "UNEXPECTED_FRAME - expected content body, got non content body frame instead", 60, 40)


def test_content_interleaved_on_other_channel_505(raw):
    r = raw()
    r.open_channel(1)
    r.open_channel(2)
    r.send(basic_publish(1, "", "conformance-nowhere"))
    r.send(header_frame(2, 1))
    assert_close(r.read_until_close(), 505,
                 "UNEXPECTED_FRAME - expected method frame, got non method frame instead", 0, 0)


def test_heartbeat_on_nonzero_channel_505(raw):
    r = raw()
    r.open_channel(1)
    r.send(frame(8, 1, b""))
    assert_close(r.read_until_close(), 505, "UNEXPECTED_FRAME - type 8, all octets = <<>>", 0, 0)


def test_body_on_channel_zero_505(raw):
    r = raw()
    r.send(frame(3, 0, b"xx"))
    assert_close(r.read_until_close(), 505, 'UNEXPECTED_FRAME - type 3, all octets = <<"xx">>', 0, 0)


def test_header_on_channel_zero_505(raw):
    r = raw()
    r.send(header_frame(0, 1))
    assert_close(r.read_until_close(), 505,
                 "UNEXPECTED_FRAME - type 2, all octets = <<0,60,0,0,0,0,0,0,0,0,0,1,0,0>>", 0, 0)


# RabbitMQ also refuses b"U" (the 0-9-1 spec's 16-bit signed int); Warren
# accepts it on purpose (see the README's differences), so only an unknown
# letter is tested here.
@pytest.mark.parametrize("tchar", [b"Z"])
def test_unknown_field_type_in_headers_541(raw, tchar):
    r = raw()
    r.open_channel(1)
    r.send(basic_publish(1, "", "conformance-nowhere"))
    r.send(header_frame(1, 1, flags=0x2000, props=table([("n", tchar, struct.pack(">h", 1))])))
    r.send(body_frame(1, b"x"))
    assert_close(r.read_until_close(), 541, "INTERNAL_ERROR", 0, 0)


# ------------------------------------------------------------ byte-exact properties
def _all_types_table():
    return table([
        ("b", b"b", struct.pack(">b", -3)), ("B", b"B", struct.pack(">B", 250)),
        ("s", b"s", struct.pack(">h", -300)), ("u", b"u", struct.pack(">H", 60000)),
        ("I", b"I", struct.pack(">i", -70000)), ("i", b"i", struct.pack(">I", 4000000000)),
        ("l", b"l", struct.pack(">q", -2 ** 40)),
        ("f", b"f", struct.pack(">f", 1.5)), ("d", b"d", struct.pack(">d", -2.25)),
        ("D", b"D", struct.pack(">BI", 2, 314)),
        ("S", b"S", longstr("hello")), ("x", b"x", longstr(b"\x00\x01")),
        ("T", b"T", struct.pack(">Q", 1700000000)), ("t", b"t", b"\x01"), ("V", b"V", b""),
        ("A", b"A", longstr(b"I" + struct.pack(">i", 1) + b"f" + struct.pack(">f", 2.5))),
        ("F", b"F", table([("n", b"d", struct.pack(">d", 0.1))])),
    ])


def test_properties_delivered_byte_exact(raw, names):
    user, _, _ = broker_credentials()
    q, x = names("q"), names("x")
    flags = 0xFFFC  # all 14 basic properties present
    props = (shortstr("text/plain") + shortstr("utf-8") + _all_types_table() + b"\x02" + b"\x05"
             + shortstr("corr") + shortstr("rt") + shortstr("1000000") + shortstr("mid")
             + struct.pack(">Q", 123) + shortstr("typ") + shortstr(user) + shortstr("app")
             + shortstr("clus"))
    r = raw()
    r.open_channel(1)
    r.send(method_frame(1, 50, 10, struct.pack(">H", 0) + shortstr(q) + b"\x00" + struct.pack(">I", 0)))
    r.expect_method(1, 50, 11)
    r.send(method_frame(1, 40, 10, struct.pack(">H", 0) + shortstr(x) + shortstr("topic") + b"\x00" + struct.pack(">I", 0)))
    r.expect_method(1, 40, 11)
    r.send(method_frame(1, 50, 20, struct.pack(">H", 0) + shortstr(q) + shortstr(x) + shortstr("#") + b"\x00" + struct.pack(">I", 0)))
    r.expect_method(1, 50, 21)
    for ex, rk in (("", q), (x, "a.b")):
        r.send(basic_publish(1, ex, rk))
        r.send(header_frame(1, 4, flags=flags, props=props))
        r.send(body_frame(1, b"body"))
    got = 0
    deadline = time.monotonic() + 5
    while got < 2:
        assert time.monotonic() < deadline
        r.send(method_frame(1, 60, 70, struct.pack(">H", 0) + shortstr(q) + b"\x01"))  # basic.get no-ack
        ch, cid, mid, args = r.read_method()
        if (cid, mid) == (60, 72):  # get-empty: not routed yet
            time.sleep(0.05)
            continue
        assert (ch, cid, mid) == (1, 60, 71)
        ftype, _, payload = r.read_frame()
        assert ftype == 2
        assert struct.unpack(">HHQ", payload[:12]) == (60, 0, 4)
        assert payload[12:] == struct.pack(">H", flags) + props  # byte-for-byte
        assert r.read_frame() == (3, 1, b"body")
        got += 1


# ------------------------------------------------------------ auth / vhost / tuning failures
AUTH_FAILURE_CLOSE = table([("capabilities", b"F", table([("authentication_failure_close", b"t", b"\x01")]))])


@pytest.mark.parametrize("response", [b"\x00guest\x00wrong-password", b"\x00no-such-user\x00x"])
def test_auth_failure_with_capability_is_403(raw, response):
    r = raw(handshake=False)
    r.send(PROTOCOL_HEADER)
    r.expect_method(0, 10, 10)
    r.send(start_ok_frame(response=response, client_props=AUTH_FAILURE_CLOSE))
    assert_close(r.read_until_close(), 403,
                 "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. "
                 "For details see the broker logfile.", 0, 0)


def test_unknown_vhost_530(raw):
    r = raw(handshake=False)
    r.send(PROTOCOL_HEADER)
    r.expect_method(0, 10, 10)
    r.send(start_ok_frame(response=credentials_response()))
    r.expect_method(0, 10, 30)
    r.send(method_frame(0, 10, 31, struct.pack(">HIH", 2047, 131072, 0)))
    r.send(method_frame(0, 10, 40, shortstr("conformance-nope") + shortstr("") + b"\x00"))
    assert_close(r.read_until_close(), 530, "NOT_ALLOWED - vhost conformance-nope not found", 10, 40)


def test_handshake_failures_drop_tcp_without_close(raw):
    """Negotiation/auth failures without authentication_failure_close: RabbitMQ closes
    the socket silently (after a ~3 s delay), never sending Connection.Close."""
    cases = {}

    def after_start_ok(**kw):
        r = raw(handshake=False)
        r.send(PROTOCOL_HEADER)
        r.expect_method(0, 10, 10)
        r.send(start_ok_frame(**kw))
        return r

    def after_tune_ok(channel_max=2047, frame_max=131072, heartbeat=0):
        r = after_start_ok(response=credentials_response())
        r.expect_method(0, 10, 30)
        r.send(method_frame(0, 10, 31, struct.pack(">HIH", channel_max, frame_max, heartbeat)))
        r.send(method_frame(0, 10, 40, shortstr("/") + shortstr("") + b"\x00"))
        return r

    t0 = time.monotonic()
    cases["wrong password, no capability"] = after_start_ok(response=b"\x00guest\x00wrong-password")
    cases["unknown mechanism"] = after_start_ok(mech="NOPE", client_props=AUTH_FAILURE_CLOSE)
    cases["malformed PLAIN response"] = after_start_ok(response=b"garbage", client_props=AUTH_FAILURE_CLOSE)
    cases["channel_max 0 (unlimited)"] = after_tune_ok(channel_max=0)
    cases["channel_max above server's"] = after_tune_ok(channel_max=3000)
    cases["frame_max below 4096"] = after_tune_ok(frame_max=1024)
    cases["frame_max 0 (unlimited)"] = after_tune_ok(frame_max=0)
    cases["frame_max above server's"] = after_tune_ok(frame_max=200000)
    results = {k: r.read_until_close(max(0.1, 8 - (time.monotonic() - t0))) for k, r in cases.items()}
    elapsed = time.monotonic() - t0
    # Warren answers a malformed SASL response or an unknown mechanism with
    # 403 when the client advertised authentication_failure_close (the
    # issue asks for it; RabbitMQ closes silently). README: differences.
    on_rabbitmq = os.environ.get("CONFORMANCE_TARGET") == "rabbitmq"
    refused = {"unknown mechanism", "malformed PLAIN response"}
    for k, r in cases.items():
        if k in refused and not on_rabbitmq:
            assert results[k][:2] == ("close", 403), (k, results[k])
        else:
            assert results[k][0] == "eof", (k, results[k])
        assert r.other_frames == [], (k, r.other_frames)
    assert elapsed < 8


def test_client_heartbeat_timeout_drops_tcp(raw):
    r = raw(heartbeat=1)
    t0 = time.monotonic()
    res = r.read_until_close(8)
    elapsed = time.monotonic() - t0
    # the server sent heartbeats (skipped by read_until_close) and then dropped us
    assert res[0] == "eof", res
    assert r.other_frames == []
    assert 1.5 < elapsed < 6, elapsed


def test_server_sends_heartbeats(raw):
    r = raw(heartbeat=1)
    r.sock.settimeout(3)
    ftype, ch, payload = r.read_frame()
    assert (ftype, ch, payload) == (8, 0, b"")


def test_heartbeating_client_stays_connected(raw):
    r = raw(heartbeat=1)
    r.open_channel(1)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 3.5:
        r.send(frame(8, 0, b""))
        time.sleep(0.4)
    qos_roundtrip(r)


@pytest.mark.timeout(25)
def test_unfinished_handshake_is_dropped_after_10s(raw):
    t0 = time.monotonic()
    stages = {}
    stages["nothing sent"] = raw(handshake=False)
    r = raw(handshake=False)
    r.send(b"AM")
    stages["partial protocol header"] = r
    r = raw(handshake=False)
    r.send(PROTOCOL_HEADER)
    r.expect_method(0, 10, 10)
    stages["no start-ok"] = r
    r = raw(handshake=False)
    r.send(PROTOCOL_HEADER)
    r.expect_method(0, 10, 10)
    r.send(start_ok_frame(response=credentials_response()))
    r.expect_method(0, 10, 30)
    stages["no tune-ok"] = r
    r = raw(handshake=False)
    r.send(PROTOCOL_HEADER)
    r.expect_method(0, 10, 10)
    r.send(start_ok_frame(response=credentials_response()))
    r.expect_method(0, 10, 30)
    r.send(method_frame(0, 10, 31, struct.pack(">HIH", 2047, 131072, 0)))
    stages["no connection.open"] = r
    opened = raw(heartbeat=0)  # control: a finished handshake with heartbeats off is kept
    results = {k: s.read_until_close(max(0.1, 15 - (time.monotonic() - t0))) for k, s in stages.items()}
    elapsed = time.monotonic() - t0
    for k, s in stages.items():
        assert results[k][0] == "eof", (k, results[k])
        assert s.other_frames == [], (k, s.other_frames)
    assert 9 <= elapsed < 14, elapsed
    opened.open_channel(1)
    qos_roundtrip(opened)  # still alive


# ------------------------------------------------------------ class/method ids of broker-side errors
def _declare_exclusive_queue(r):
    r.send(method_frame(1, 50, 10, struct.pack(">H", 0) + shortstr("") + b"\x08" + struct.pack(">I", 0)))
    a = r.expect_method(1, 50, 11)
    return a[1:1 + a[0]].decode()


def _dup_consumer_tag(r):
    q = _declare_exclusive_queue(r)
    for _ in range(2):
        r.send(method_frame(1, 60, 20, struct.pack(">H", 0) + shortstr(q) + shortstr("t") + b"\x00" + struct.pack(">I", 0)))


HARD_ERRORS = {
    "qos prefetch_size": (lambda r: r.send(method_frame(1, 60, 10, struct.pack(">IHB", 1, 0, 0))),
                          540, "NOT_IMPLEMENTED - prefetch_size!=0 (1)", 60, 10),
    "recover requeue=false": (lambda r: r.send(method_frame(1, 60, 110, b"\x00")),
                              540, "NOT_IMPLEMENTED - requeue=false", 60, 110),
    "recover-async requeue=false": (lambda r: r.send(method_frame(1, 60, 100, b"\x00")),
                                    540, "NOT_IMPLEMENTED - requeue=false", 60, 100),
    "publish immediate": (lambda r: (r.send(method_frame(1, 60, 40, struct.pack(">H", 0) + shortstr("")
                                                         + shortstr("conformance-nowhere") + b"\x02")),  # immediate bit
                                     r.send(header_frame(1, 1)), r.send(body_frame(1, b"x"))),
                          540, "NOT_IMPLEMENTED - immediate=true", 60, 40),
    "channel.flow active=false": (lambda r: r.send(method_frame(1, 20, 20, b"\x00")),
                                  540, "NOT_IMPLEMENTED - active=false", 20, 20),
    "unknown exchange type": (lambda r: r.send(method_frame(1, 40, 10, struct.pack(">H", 0) + shortstr("conformance-raw-x") + shortstr("nope") + b"\x00" + struct.pack(">I", 0))),
                              503, "COMMAND_INVALID - unknown exchange type 'nope'", 40, 10),
    "duplicate consumer tag": (_dup_consumer_tag, 530, "NOT_ALLOWED - attempt to reuse consumer tag 't'", 60, 20),
}


@pytest.mark.parametrize("case", sorted(HARD_ERRORS))
def test_hard_error_close_ids(raw, case):
    f, code, text, cid, mid = HARD_ERRORS[case]
    r = raw()
    r.open_channel(1)
    f(r)
    assert_close(r.read_until_close(), code, text, cid, mid)


def test_soft_error_is_channel_close_with_ids(raw):
    r = raw()
    r.open_channel(1)
    r.open_channel(2)
    r.send(method_frame(1, 50, 10, struct.pack(">H", 0) + shortstr("conformance-missing-q") + b"\x01" + struct.pack(">I", 0)))
    args = r.expect_method(1, 20, 40)  # channel.close, not connection.close
    code, = struct.unpack(">H", args[:2])
    text = args[3:3 + args[2]].decode()
    cid, mid = struct.unpack(">HH", args[3 + args[2]:7 + args[2]])
    assert (code, text, cid, mid) == (404, "NOT_FOUND - no queue 'conformance-missing-q' in vhost '/'", 50, 10)
    # until close-ok is sent, further methods on that channel are ignored
    r.send(method_frame(1, 60, 10, struct.pack(">IHB", 0, 0, 0)))
    qos_roundtrip(r, 2)  # other channel unaffected; nothing arrived for channel 1 meanwhile
    r.send(method_frame(1, 20, 41))  # channel.close-ok
    r.open_channel(1)
    qos_roundtrip(r, 1)
