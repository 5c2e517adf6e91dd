"""Tiny hand-rolled AMQP 0-9-1 client used by the raw-socket tests.

Only what the tests need: frame (de)serialisation with struct, a PLAIN
handshake, and a parser for Connection.Close.
"""
import os
import socket
import struct
import time
import urllib.parse

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = b"\xce"

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def broker_url():
    return os.environ.get("AMQP_URL", DEFAULT_URL)


def broker_address():
    u = urllib.parse.urlparse(broker_url())
    return u.hostname or "127.0.0.1", u.port or 5672


def broker_credentials():
    u = urllib.parse.urlparse(broker_url())
    user = urllib.parse.unquote(u.username or "guest")
    pw = urllib.parse.unquote(u.password or "guest")
    vhost = urllib.parse.unquote(u.path[1:]) if len(u.path) > 1 else "/"
    return user, pw, vhost


# ---------------------------------------------------------------- encoding
def shortstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">B", len(b)) + b


def longstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">I", len(b)) + b


def frame(ftype, channel, payload, end=FRAME_END):
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + end


def method_frame(channel, class_id, method_id, args=b""):
    return frame(FRAME_METHOD, channel, struct.pack(">HH", class_id, method_id) + args)


def header_frame(channel, body_size, flags=0, props=b"", class_id=60):
    return frame(FRAME_HEADER, channel,
                 struct.pack(">HHQH", class_id, 0, body_size, flags) + props)


def body_frame(channel, data):
    return frame(FRAME_BODY, channel, data)


def table(items):
    """Encode a field table from (name, type_char, raw_value_bytes) tuples."""
    out = b""
    for name, tchar, raw in items:
        out += shortstr(name) + tchar + raw
    return struct.pack(">I", len(out)) + out


def channel_open(ch):
    return method_frame(ch, 20, 10, shortstr(""))


def basic_publish(ch, exchange, routing_key, mandatory=False):
    return method_frame(ch, 60, 40, struct.pack(">H", 0) + shortstr(exchange)
                        + shortstr(routing_key) + bytes([1 if mandatory else 0]))


class Closed(Exception):
    pass


# ---------------------------------------------------------------- connection
class RawConnection:
    def __init__(self, timeout=5.0):
        self.sock = socket.create_connection(broker_address(), timeout=timeout)
        self.sock.settimeout(timeout)
        self.tune = None  # (channel_max, frame_max, heartbeat) proposed by server
        self.start_payload = None

    def send(self, data):
        self.sock.sendall(data)

    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            d = self.sock.recv(n - len(buf))
            if not d:
                raise Closed("EOF after %d/%d bytes" % (len(buf), n))
            buf += d
        return buf

    def read_frame(self):
        """Returns (type, channel, payload); raises Closed on EOF/reset."""
        try:
            hdr = self.recv_exact(7)
            ftype, ch, size = struct.unpack(">BHI", hdr)
            payload = self.recv_exact(size)
            end = self.recv_exact(1)
        except ConnectionResetError as e:
            raise Closed("reset: %s" % e)
        assert end == FRAME_END, "server sent bad frame-end %r" % end
        return ftype, ch, payload

    def read_method(self, skip_heartbeats=True):
        while True:
            ftype, ch, payload = self.read_frame()
            if ftype == FRAME_HEARTBEAT and skip_heartbeats:
                continue
            assert ftype == FRAME_METHOD, (ftype, ch, payload)
            cid, mid = struct.unpack(">HH", payload[:4])
            return ch, cid, mid, payload[4:]

    def expect_method(self, channel, class_id, method_id):
        ch, cid, mid, args = self.read_method()
        assert (ch, cid, mid) == (channel, class_id, method_id), \
            "expected %d/%d.%d, got %d/%d.%d %r" % (channel, class_id, method_id, ch, cid, mid, args)
        return args

    def handshake(self, channel_max=None, frame_max=None, heartbeat=0, vhost=None,
                  password=None, open_=True):
        """channel_max/frame_max default to the server's proposal (from Tune)."""
        user, pw, vh = broker_credentials()
        pw = pw if password is None else password
        vhost = vh if vhost is None else vhost
        self.send(PROTOCOL_HEADER)
        self.start_payload = self.expect_method(0, 10, 10)
        self.send(method_frame(0, 10, 11, struct.pack(">I", 0) + shortstr("PLAIN")
                               + longstr(b"\x00" + user.encode() + b"\x00" + pw.encode())
                               + shortstr("en_US")))
        args = self.expect_method(0, 10, 30)
        self.tune = struct.unpack(">HIH", args[:8])
        channel_max = self.tune[0] if channel_max is None else channel_max
        frame_max = self.tune[1] if frame_max is None else frame_max
        self.send(method_frame(0, 10, 31, struct.pack(">HIH", channel_max, frame_max, heartbeat)))
        if not open_:
            return self
        self.send(method_frame(0, 10, 40, shortstr(vhost) + shortstr("") + b"\x00"))
        self.expect_method(0, 10, 41)
        return self

    def open_channel(self, ch):
        self.send(channel_open(ch))
        self.expect_method(ch, 20, 11)

    def read_until_close(self, deadline=5.0):
        """Read frames until Connection.Close or EOF.

        Returns ("close", code, text, class_id, method_id) or ("eof", reason).
        Any other frame except heartbeats is collected in self.other_frames.
        """
        self.other_frames = []
        end = time.monotonic() + deadline
        while True:
            self.sock.settimeout(max(0.05, end - time.monotonic()))
            try:
                ftype, ch, payload = self.read_frame()
            except Closed as e:
                return ("eof", str(e))
            except socket.timeout:
                return ("timeout",)
            if ftype == FRAME_METHOD and payload[:4] == struct.pack(">HH", 10, 50):
                code, = struct.unpack(">H", payload[4:6])
                n = payload[6]
                text = payload[7:7 + n].decode()
                cid, mid = struct.unpack(">HH", payload[7 + n:11 + n])
                # be polite: acknowledge the close
                try:
                    self.send(method_frame(0, 10, 51))
                except OSError:
                    pass
                return ("close", code, text, cid, mid)
            if ftype != FRAME_HEARTBEAT:
                self.other_frames.append((ftype, ch, payload))

    def read_all_until_eof(self, deadline=5.0):
        """Read raw bytes until EOF/reset; returns (bytes, how)."""
        data = b""
        end = time.monotonic() + deadline
        while True:
            self.sock.settimeout(max(0.05, end - time.monotonic()))
            try:
                d = self.sock.recv(4096)
            except ConnectionResetError:
                return data, "reset"
            except socket.timeout:
                return data, "timeout"
            if not d:
                return data, "eof"
            data += d

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
