#!/usr/bin/env python3
"""Topology at scale: pipelined durable queue declares, each with one
binding, while another client's publish+get latency is sampled; then the
restart time and the broker's RSS and open descriptors.

Runs against a release Warren it starts (on a fresh data dir) and, if one
listens on 127.0.0.1:5672, against RabbitMQ in the same run (its queues
are deleted afterwards).

Usage: python3 benches/topology.py [--queues 100000] [--batch 1000]
                                   [--no-build] [--skip-rabbitmq]
"""

import argparse
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAME_END = 0xCE


def shortstr(s):
    b = s.encode()
    return bytes([len(b)]) + b


def method(channel, class_id, method_id, args=b""):
    payload = struct.pack(">HH", class_id, method_id) + args
    return struct.pack(">BHI", 1, channel, len(payload)) + payload + bytes([FRAME_END])


def frame(ty, channel, payload):
    return struct.pack(">BHI", ty, channel, len(payload)) + payload + bytes([FRAME_END])


class Wire:
    """A raw AMQP 0-9-1 client: just enough to pipeline methods."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.s.sendall(b"AMQP\x00\x00\x09\x01")
        self.expect(10, 10)
        resp = b"\x00guest\x00guest"
        start_ok = struct.pack(">I", 0) + shortstr("PLAIN") + struct.pack(">I", len(resp)) + resp + shortstr("en_US")
        self.s.sendall(method(0, 10, 11, start_ok))
        self.expect(10, 30)
        self.s.sendall(method(0, 10, 31, struct.pack(">HIH", 2047, 131072, 0)))
        self.s.sendall(method(0, 10, 40, shortstr("/") + shortstr("") + b"\x00"))
        self.expect(10, 41)
        self.s.sendall(method(1, 20, 10, shortstr("")))
        self.expect(20, 11)

    def frame(self):
        while True:
            while len(self.buf) < 7:
                self.fill()
            ty, ch, size = struct.unpack(">BHI", self.buf[:7])
            while len(self.buf) < 8 + size:
                self.fill()
            payload = self.buf[7 : 7 + size]
            self.buf = self.buf[8 + size :]
            if ty != 8:
                return ty, ch, payload

    def fill(self):
        data = self.s.recv(1 << 20)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def expect(self, class_id, method_id):
        ty, ch, payload = self.frame()
        got = struct.unpack(">HH", payload[:4])
        if got != (class_id, method_id):
            raise RuntimeError(f"expected {class_id}.{method_id}, got {got}: {payload[4:80]!r}")
        return payload[4:]


def declare(name, durable=True):
    return method(1, 50, 10, struct.pack(">H", 0) + shortstr(name) + bytes([2 if durable else 0]) + b"\x00\x00\x00\x00")


def bind(queue, exchange, key):
    return method(1, 50, 20, struct.pack(">H", 0) + shortstr(queue) + shortstr(exchange) + shortstr(key) + b"\x00" + b"\x00\x00\x00\x00")


def delete(name):
    return method(1, 50, 40, struct.pack(">H", 0) + shortstr(name) + b"\x00")


def pipelined(w, frames_per_item, items, batch):
    """Send items in batches of `batch`, reading every answer; items/s."""
    started = time.monotonic()
    for at in range(0, len(items), batch):
        chunk = items[at : at + batch]
        w.s.sendall(b"".join(f for item in chunk for f in frames_per_item(item)))
        for _ in range(len(chunk) * len(frames_per_item(chunk[0]))):
            w.frame()
    return len(items) / (time.monotonic() - started)


class Prober(threading.Thread):
    """Another client: publish one message to its own queue and get it
    back, every 20 ms, timing each round trip."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.w = Wire(port)
        self.q = f"probe-{os.getpid()}-{time.monotonic_ns()}"
        self.w.s.sendall(method(1, 50, 10, struct.pack(">H", 0) + shortstr(self.q) + bytes([8]) + b"\x00\x00\x00\x00"))
        self.w.expect(50, 11)
        self.samples = []
        self.stop = False

    def run(self):
        props = struct.pack(">HHQH", 60, 0, 1, 0)
        while not self.stop:
            t0 = time.monotonic()
            self.w.s.sendall(
                method(1, 60, 40, struct.pack(">H", 0) + shortstr("") + shortstr(self.q) + b"\x00")
                + frame(2, 1, props)
                + frame(3, 1, b"x")
                + method(1, 60, 70, struct.pack(">H", 0) + shortstr(self.q) + b"\x01")
            )
            while True:
                ty, ch, payload = self.w.frame()
                if ty == 3:
                    break
            self.samples.append(time.monotonic() - t0)
            time.sleep(0.02)

    def finish(self):
        self.stop = True
        self.join(10)
        s = sorted(self.samples)
        if not s:
            return None, None
        return s[int(len(s) * 0.99) - 1 if len(s) > 1 else 0] * 1000, s[-1] * 1000


def proc_stats(pid):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) // 1024
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds


def wait_port(port, proc, limit=120):
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if proc.poll() is not None:
            raise RuntimeError("warren exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return time.monotonic() - started
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("warren did not listen")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_declares(port, names, batch, label, bindings=True):
    prober = Prober(port)
    prober.start()
    w = Wire(port)
    per_queue = (lambda n: [declare(n), bind(n, "amq.topic", n)]) if bindings else (lambda n: [declare(n)])
    rate = pipelined(w, per_queue, names, batch)
    p99, worst = prober.finish()
    what = "durable queues + bindings" if bindings else "durable queues"
    print(f"{label}: {len(names)} {what} at {rate:,.0f}/s; other client's publish+get p99 {p99:.1f} ms, max {worst:.1f} ms")
    return w, rate, p99


def bind_many(w, names, total, batch, label):
    """Add `total` topic bindings to amq.topic, spread over the queues,
    pipelined; report the cost per bind of the first and last batches."""
    items = [(names[i % len(names)], f"b.{i}.#") for i in range(total)]
    costs = []
    started = time.monotonic()
    for at in range(0, total, batch):
        t0 = time.monotonic()
        pipelined(w, lambda it: [bind(it[0], "amq.topic", it[1])], items[at : at + batch], batch)
        costs.append((time.monotonic() - t0) / len(items[at : at + batch]) * 1e6)
    rate = total / (time.monotonic() - started)
    first, last = costs[0], costs[-1]
    print(f"{label}: {total} more topic bindings at {rate:,.0f}/s; per bind {first:.1f} us in the first batch, {last:.1f} us in the last (max {max(costs):.1f})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--queues", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--skip-rabbitmq", action="store_true")
    ap.add_argument("--bindings", type=int, default=0, help="then this many more topic bindings, spread over the queues")
    ap.add_argument("--no-bindings", action="store_true", help="declare the queues without bindings")
    ap.add_argument("--keep-data", help="use this data dir and keep it (for profiling a restart)")
    ap.add_argument("--fd-limit", type=int, default=0, help="ulimit -n for warren (0: inherit)")
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "warren"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target", "release", "warren")
    data = args.keep_data or tempfile.mkdtemp(prefix="warren-topology-")
    port = free_port()
    names = [f"tq-{i}" for i in range(args.queues)]

    def start():
        pre = (lambda: __import__("resource").setrlimit(__import__("resource").RLIMIT_NOFILE, (args.fd_limit, args.fd_limit))) if args.fd_limit else None
        return subprocess.Popen([binary, "--port", str(port), "--data-dir", data, "--log-level", "warn",
                                 "--management-port", "0", "--prometheus-port", "0"], preexec_fn=pre)

    try:
        proc = start()
        wait_port(port, proc)
        w, rate, p99 = run_declares(port, names, args.batch, "warren", not args.no_bindings)
        if args.bindings:
            bind_many(w, names, args.bindings, args.batch, "warren")
        w.s.close()
        time.sleep(1)
        rss, fds = proc_stats(proc.pid)
        print(f"warren: RSS {rss} MB, open descriptors {fds} with {args.queues} idle durable queues")
        proc.terminate()
        proc.wait(60)
        proc = start()
        listen_s = wait_port(port, proc, 600)
        rss2, fds2 = proc_stats(proc.pid)
        print(f"warren: restart with {args.queues} durable queues and bindings listening after {listen_s:.2f} s; RSS {rss2} MB, descriptors {fds2}")
        proc.terminate()
        proc.wait(60)
    finally:
        if not args.keep_data:
            shutil.rmtree(data, ignore_errors=True)
    if args.skip_rabbitmq:
        return
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=0.5).close()
    except OSError:
        print("RabbitMQ not listening on 5672: skipped")
        return
    w, rate, p99 = run_declares(5672, names, args.batch, "rabbitmq", not args.no_bindings)
    if args.bindings:
        bind_many(w, names, args.bindings, args.batch, "rabbitmq")
    pipelined(w, lambda n: [delete(n)], names, args.batch)


if __name__ == "__main__":
    main()
