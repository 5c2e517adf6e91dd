"""Resource alarms (disk and memory): connection.blocked / connection.unblocked.

Recorded against RabbitMQ 3.10.8 (CONFORMANCE_TARGET=rabbitmq), where the
alarms are driven with rabbitmqctl. Against Warren (the default target) each
test starts its own Warren child process (binary from WARREN_BIN, default
target/debug/warren of this repository) in a temporary data dir on port 0,
with `alarm_check_interval_ms = 100`.

Disk alarm, same mechanism on both targets: the free-disk limit is set to
(free bytes of the broker's data filesystem - 300 MB) (`disk_free_limit` in
Warren's config, `rabbitmqctl set_disk_free_limit` on RabbitMQ), then a 600 MB
filler file written to that filesystem raises the alarm and deleting it clears
it. (The filler grows past 600 MB if other activity freed space meanwhile, so
that free space really ends up below the limit.) RabbitMQ polls free space
only every 10 s while alarmed, so on RabbitMQ the same limit is set again
after writing/deleting the filler, which makes it check at once.

Memory alarm: Warren is restarted (same data dir) with
`memory_high_watermark = "1MB"`, which keeps the alarm on; RabbitMQ gets
`rabbitmqctl set_vm_memory_high_watermark 0.000001`.

RabbitMQ behaviour these tests rely on (see /work/oracle.md):
- connection.blocked is sent to a connection (that announced the
  `connection.blocked` capability) when it publishes during an alarm; the
  reason is "low on disk" / "low on memory". The broker then stops reading
  from that connection; the held publish is routed once the alarm clears,
  and connection.unblocked is sent.
- A connection that only consumes is not blocked and keeps being served.

pika's BlockingConnection only dispatches its blocked/unblocked callbacks
from process_data_events, which a publisher stuck in a confirmed
basic_publish never reaches; the callbacks are therefore registered on the
underlying pika connection (`conn._impl.add_on_connection_blocked_callback`,
the same pika API one level down), which runs them as soon as the frame is
read.
"""
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid

import pika
import pytest

from conftest import AMQP_URL, make_params, safe_close

TARGET = os.environ.get("CONFORMANCE_TARGET", "warren")
MB = 1000 * 1000
MARGIN = 300 * MB   # limit = free - MARGIN
FILLER = 600 * MB   # writing this much drops free space MARGIN below the limit
HERE = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------- helpers
def free_bytes(path):
    s = os.statvfs(path)
    return s.f_bavail * s.f_frsize


def write_filler(path, nbytes, fs, below):
    """Write at least nbytes to path (fsynced), and keep going (up to 3x
    nbytes) while the free space of fs is not below `below`."""
    chunk = b"\0" * (8 << 20)
    written = 0
    with open(path, "wb") as f:
        while written < nbytes or (free_bytes(fs) >= below and written < 3 * nbytes):
            f.write(chunk)
            written += len(chunk)
            if written >= nbytes:
                f.flush()
                os.fsync(f.fileno())


def remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(0.02)


def params(url, **overrides):
    # Longer than any wait in these tests; a safety net so that a publisher
    # stuck behind an alarm that never clears still gives up.
    overrides.setdefault("blocked_connection_timeout", 25)
    return make_params(url, **overrides)


class BlockEvents:
    """Records connection.blocked / unblocked frames on a pika connection."""

    def __init__(self, conn):
        self.blocked = []     # reasons, in arrival order
        self.unblocked = 0
        self.is_blocked = threading.Event()
        self.is_unblocked = threading.Event()
        conn._impl.add_on_connection_blocked_callback(self._on_blocked)
        conn._impl.add_on_connection_unblocked_callback(self._on_unblocked)

    def _on_blocked(self, _conn, frame):
        self.blocked.append(frame.method.reason)
        self.is_unblocked.clear()
        self.is_blocked.set()

    def _on_unblocked(self, _conn, _frame):
        self.unblocked += 1
        self.is_unblocked.set()


class Publisher(threading.Thread):
    """Publishes '0', '1', ... to `queue` on its own connection with publisher
    confirms (each basic_publish returns once confirmed), one every 20 ms,
    until stop() or `count` messages. `confirmed` lists the confirmed ids."""

    def __init__(self, url, queue, count=None, persistent=False):
        super().__init__(daemon=True)
        self.conn = pika.BlockingConnection(params(url))
        self.events = BlockEvents(self.conn)
        self.queue = queue
        self.count = count
        self.persistent = persistent
        self.confirmed = []
        self.attempted = 0
        self.error = None
        self._halt = threading.Event()

    def run(self):
        try:
            ch = self.conn.channel()
            ch.confirm_delivery()
            props = pika.BasicProperties(delivery_mode=2 if self.persistent else 1)
            i = 0
            while not self._halt.is_set() and (self.count is None or i < self.count):
                self.attempted = i + 1
                ch.basic_publish("", self.queue, str(i).encode(), props)
                self.confirmed.append(i)
                i += 1
                time.sleep(0.02)
        except Exception as e:  # noqa: BLE001 - reported by the test
            if not self._halt.is_set():
                self.error = e
        finally:
            safe_close(self.conn)

    def stop(self, timeout=10):
        self._halt.set()
        self.join(timeout)


# ---------------------------------------------------------------- targets
class RabbitTarget:
    """The broker at AMQP_URL, alarms driven with rabbitmqctl."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.url = AMQP_URL
        self.data_fs = os.environ.get("RABBITMQ_DATA_DIR", "/var/lib/rabbitmq")
        # the filler must land on the filesystem RabbitMQ watches
        self.filler_dir = tmp if os.stat(tmp).st_dev == os.stat(self.data_fs).st_dev else self.data_fs
        self.filler = os.path.join(self.filler_dir, "alarm-filler-%s" % uuid.uuid4().hex[:8])
        self.orig_disk = self._eval("rabbit_disk_monitor:get_disk_free_limit().")
        self.orig_mem = self._eval("vm_memory_monitor:get_vm_memory_high_watermark().")
        self.limit = None

    @staticmethod
    def ctl(*args):
        subprocess.run(["rabbitmqctl", "-q"] + list(args), check=True, timeout=30,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def _eval(self, expr):
        try:
            r = subprocess.run(["rabbitmqctl", "-q", "eval", expr], capture_output=True,
                               text=True, timeout=30)
            return r.stdout.strip() if r.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            return None

    def arm_disk(self):
        self.limit = free_bytes(self.data_fs) - MARGIN
        self.ctl("set_disk_free_limit", str(self.limit))

    def fill_disk(self):
        write_filler(self.filler, FILLER, self.data_fs, self.limit - 100 * MB)
        self.ctl("set_disk_free_limit", str(self.limit))  # check now

    def clear_disk(self):
        remove(self.filler)
        if self.limit is not None:
            self.ctl("set_disk_free_limit", str(self.limit))  # check now

    def raise_memory_alarm(self):
        self.ctl("set_vm_memory_high_watermark", "0.000001")

    def close(self):
        remove(self.filler)
        disk = self.orig_disk if self.orig_disk and self.orig_disk.isdigit() else "50MB"
        mem = self.orig_mem or "0.4"
        m = re.match(r"\{absolute,\s*(\d+)\}", mem)
        try:
            self.ctl("set_disk_free_limit", disk)
            if m:
                self.ctl("set_vm_memory_high_watermark", "absolute", m.group(1))
            else:
                self.ctl("set_vm_memory_high_watermark", mem if re.match(r"^[0-9.]+$", mem) else "0.4")
        except subprocess.SubprocessError:
            pass


class WarrenTarget:
    """A dedicated Warren child process in a temporary data dir, port 0."""

    def __init__(self, tmp):
        self.tmp = tmp
        default_bin = os.path.join(HERE, "..", "..", "target", "debug", "warren")
        self.bin = os.path.abspath(os.environ.get("WARREN_BIN") or default_bin)
        if not os.access(self.bin, os.X_OK):
            pytest.fail("Warren binary not found at %s (set WARREN_BIN)" % self.bin)
        self.data_dir = os.path.join(tmp, "data")
        self.data_fs = tmp
        self.filler = os.path.join(tmp, "alarm-filler")
        self.proc = None
        self.url = None
        self.limit = None
        self.start({})

    def start(self, config):
        cfg = dict({"alarm_check_interval_ms": 100}, **config)
        cfg_path = os.path.join(self.tmp, "warren.toml")
        with open(cfg_path, "w") as f:
            for k, v in cfg.items():
                f.write("%s = %s\n" % (k, '"%s"' % v if isinstance(v, str) else v))
        log_path = os.path.join(self.tmp, "warren.log")
        log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [self.bin, "--port", "0", "--data-dir", self.data_dir, "--config", cfg_path,
             "--log-level", "warn,warren=info",
             "--management-port", "0", "--prometheus-port", "0"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 10
        while True:
            with open(log_path, "rb") as f:
                text = f.read().decode(errors="replace")
            m = re.search(r"addr=127\.0\.0\.1:(\d+)", text)
            if m:
                self.url = "amqp://guest:guest@127.0.0.1:%s/%%2F" % m.group(1)
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail("Warren did not start (config %r):\n%s" % (cfg, text[-3000:]))
            time.sleep(0.05)

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def arm_disk(self):
        self.stop()
        self.limit = free_bytes(self.data_fs) - MARGIN
        self.start({"disk_free_limit": self.limit})

    def fill_disk(self):
        write_filler(self.filler, FILLER, self.data_fs, self.limit - 100 * MB)

    def clear_disk(self):
        remove(self.filler)

    def raise_memory_alarm(self):
        self.stop()
        self.start({"memory_high_watermark": "1MB"})

    def close(self):
        self.stop()
        remove(self.filler)


@pytest.fixture
def broker():
    tmp = tempfile.mkdtemp(prefix="conf-alarms-")
    target = None
    try:
        target = RabbitTarget(tmp) if TARGET == "rabbitmq" else WarrenTarget(tmp)
        yield target
    finally:
        if target is not None:
            target.close()
        shutil.rmtree(tmp, ignore_errors=True)


class Consumer:
    """A consuming connection (main thread): manual ack, records bodies."""

    def __init__(self, url, queue):
        self.conn = pika.BlockingConnection(params(url))
        self.blocked = []
        self.conn.add_on_connection_blocked_callback(lambda _c, f: self.blocked.append(f.method.reason))
        self.ch = self.conn.channel()
        self.queue = queue
        self.got = []
        self.ch.basic_qos(prefetch_count=50)

    def start(self):
        def on_msg(ch, m, _p, body):
            self.got.append(body.decode())
            ch.basic_ack(m.delivery_tag)
        self.ch.basic_consume(self.queue, on_msg)

    def pump(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.conn.process_data_events(time_limit=0.05)

    def pump_until(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))
            self.conn.process_data_events(time_limit=0.05)


def delete_queue(url, q):
    try:
        c = pika.BlockingConnection(params(url))
        c.channel().queue_delete(q)
        c.close()
    except Exception:  # noqa: BLE001
        pass


# ---------------------------------------------------------------- tests
@pytest.mark.timeout(30)
def test_disk_alarm_blocks_publishers_serves_consumers_and_clears(broker):
    broker.arm_disk()
    q = "conf-alarm-disk-%s" % uuid.uuid4().hex[:12]
    consumer = Consumer(broker.url, q)
    consumer.ch.queue_declare(q)
    pub = Publisher(broker.url, q)
    try:
        pub.start()
        wait_until(lambda: len(pub.confirmed) >= 10, 10, "10 confirms before the alarm")
        assert not pub.events.blocked, "blocked before the disk alarm: %r" % pub.events.blocked

        broker.fill_disk()
        assert pub.events.is_blocked.wait(15), "publisher was not sent connection.blocked"
        assert pub.events.blocked[0] == "low on disk", pub.events.blocked
        # the broker stops taking the publisher's messages: no more confirms
        time.sleep(0.3)
        held = len(pub.confirmed)
        time.sleep(1.0)
        assert len(pub.confirmed) == held, "publishes were confirmed while blocked"
        assert pub.is_alive() and pub.error is None, pub.error

        # a consumer on another connection drains what was queued before the alarm
        consumer.start()
        consumer.pump_until(lambda: len(consumer.got) >= held, 10,
                            "the consumer to receive the %d messages queued before the alarm" % held)
        assert consumer.got[:held] == [str(i) for i in range(held)]
        assert consumer.blocked == [], "a connection that never published was blocked"
        assert len(pub.confirmed) == held

        # the alarm clears: unblocked, and publishing resumes by itself
        broker.clear_disk()
        assert pub.events.is_unblocked.wait(15), "publisher was not sent connection.unblocked"
        wait_until(lambda: len(pub.confirmed) >= held + 10, 10, "publishing to resume after unblock")
        pub.stop()
        assert not pub.is_alive() and pub.error is None, pub.error
        confirmed = [str(i) for i in pub.confirmed]
        consumer.pump_until(lambda: set(confirmed) <= set(consumer.got), 10,
                            "every confirmed message to reach the consumer")
        assert consumer.got[:len(confirmed)] == confirmed, "messages lost or reordered"
        assert pub.events.blocked == ["low on disk"] and pub.events.unblocked == 1
    finally:
        broker.clear_disk()
        pub.stop(5)
        safe_close(consumer.conn)
        delete_queue(broker.url, q)


@pytest.mark.timeout(30)
def test_memory_alarm_blocks_publishers_and_serves_consumers(broker):
    q = "conf-alarm-mem-%s" % uuid.uuid4().hex[:12]
    n = 20
    # queue durable messages before the alarm (Warren is restarted to raise it)
    c = pika.BlockingConnection(params(broker.url))
    ch = c.channel()
    ch.queue_declare(q, durable=True)
    ch.confirm_delivery()
    for i in range(n):
        ch.basic_publish("", q, ("pre-%d" % i).encode(), pika.BasicProperties(delivery_mode=2))
    c.close()

    broker.raise_memory_alarm()
    pub = consumer = None
    try:
        pub = Publisher(broker.url, q, count=1, persistent=True)
        pub.start()
        assert pub.events.is_blocked.wait(10), "publisher was not sent connection.blocked"
        assert pub.events.blocked == ["low on memory"], pub.events.blocked

        consumer = Consumer(broker.url, q)
        consumer.ch.queue_declare(q, durable=True)
        consumer.start()
        consumer.pump_until(lambda: len(consumer.got) >= n, 10,
                            "the consumer to receive the %d messages queued before the alarm" % n)
        consumer.pump(1.0)
        assert consumer.got == ["pre-%d" % i for i in range(n)], "the blocked publish got through"
        assert consumer.blocked == [], "a connection that never published was blocked"
        assert pub.confirmed == [] and pub.is_alive(), "publish confirmed during the memory alarm"
        assert pub.events.unblocked == 0
    finally:
        if consumer is not None:
            safe_close(consumer.conn)
        broker.close()  # clears the alarm (RabbitMQ) / stops Warren
        if pub is not None:
            pub.stop(5)
        if TARGET == "rabbitmq":
            delete_queue(broker.url, q)
