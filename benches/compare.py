#!/usr/bin/env python3
"""Side-by-side benchmark of Warren and RabbitMQ with warren-perf.

Starts a release Warren on a free port and, if a RabbitMQ is listening on
127.0.0.1:5672 (e.g. `apt-get install rabbitmq-server && rabbitmq-server
-detached`), runs the scenarios of issue 5 against both brokers, interleaved
(Warren, RabbitMQ, Warren, RabbitMQ, ...) for several rounds. While each run
goes, the broker process is sampled for CPU time and peak RSS. Prints a table
of medians and Warren/RabbitMQ ratios. Every run is bounded in time and
warren-perf deletes the queues it declares.

With `--baseline BIN` (another build of Warren, e.g. the previous
release's `target/release/warren`), that binary runs the same scenarios in
the same interleaving, and a second table gives this Warren's figures as
ratios of the baseline's: the check that a change costs nothing.

With `--tls DIR` (the files of conformance/make_certs.py: ca.pem,
server.pem, server.key), every client connects over TLS: Warren gets a
[tls] listener on those files and RabbitMQ is expected on 127.0.0.1:5671
with the same certificate (listeners.ssl.default, ssl_options.*).

Usage: python3 benches/compare.py [--rounds 3] [--duration 10] [--quick]
                                  [--only S1,S2] [--json-out FILE] [--no-build]
                                  [--baseline BIN] [--tls DIR]
"""
import argparse
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PERF = os.path.join(ROOT, "target", "release", "warren-perf")
WARREN = os.path.join(ROOT, "target", "release", "warren")
TICKS = os.sysconf("SC_CLK_TCK")


def scenarios(duration, quick):
    d = str(duration)
    backlog = "200000" if quick else "1000000"
    idle = "2000" if quick else "10000"
    return [
        ("S1", "1p/1c 16 B transient, autoack", ["-s", "16", "-a", "-z", d], "consume_rate"),
        ("S2", "1p/1c 1 KiB, manual ack, prefetch 100, multi-ack 10",
         ["-s", "1024", "-q", "100", "--multi-ack", "10", "-z", d], "consume_rate"),
        ("S3", "1p/1c 1 KiB persistent, durable queue, confirms 64, manual ack",
         ["-s", "1024", "--persistent", "-c", "64", "-q", "100", "-z", d], "consume_rate"),
        ("S4", "fanout 1p -> 4 queues, 4c, 256 B",
         ["-s", "256", "--exchange-type", "fanout", "--queues", "4", "-y", "4", "-a", "-z", d], "consume_rate"),
        ("S5", "topic, 100 bindings with * and #, 1p/1c, 256 B",
         ["-s", "256", "--exchange-type", "topic", "--extra-bindings", "99", "-a", "-z", d], "consume_rate"),
        ("S6", "fixed 1,000 msg/s, 256 B (latency)",
         ["-s", "256", "-r", "1000", "-a", "-z", d], "p99_us"),
        ("S7", "backlog %s x 1 KiB persistent, then drain" % backlog,
         ["-s", "1024", "--persistent", "-c", "256", "--backlog", backlog, "-q", "500", "--multi-ack", "50",
          "-z", d], "both_rates"),
        ("S9", "stream: %s x 1 KiB published with confirms 256, then 10 consumers from first" % backlog,
         ["-s", "1024", "--persistent", "-c", "256", "--backlog", backlog, "-q", "500", "--multi-ack", "50",
          "--queue-arg", "x-queue-type=stream", "--consumer-arg", "x-stream-offset=first", "-y", "10",
          "-z", d], "both_rates"),
        ("S8", "%s idle connections with heartbeats" % idle,
         ["--idle-connections", idle, "--heartbeat", "10", "-z", str(max(10, duration))], "rss_per_conn"),
    ]


class Sampler(threading.Thread):
    """Samples a process's RSS (peak) and CPU time while a run goes."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kb = 0
        self.stop = threading.Event()

    def cpu_s(self):
        try:
            with open("/proc/%d/stat" % self.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / TICKS
        except (OSError, IndexError, ValueError):
            return 0.0

    def rss_kb(self):
        try:
            with open("/proc/%d/status" % self.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def run(self):
        while not self.stop.is_set():
            self.peak_kb = max(self.peak_kb, self.rss_kb())
            time.sleep(0.1)


def http_off_flags(binary):
    """Flags turning the HTTP listeners off, for builds that have them (a
    baseline build may predate them; RabbitMQ may hold their ports)."""
    usage = subprocess.run([binary, "--help"], capture_output=True, text=True).stdout
    if "--management-port" in usage:
        return ["--management-port", "0", "--prometheus-port", "0"]
    return []


def tls_config(tmp, config, tls_dir):
    """A config file: `config`'s keys, then a [tls] table on `tls_dir`'s files."""
    text = open(config).read() if config else ""
    text += '\n[tls]\nport = 0\ncert_file = "%s/server.pem"\nkey_file = "%s/server.key"\n' % (tls_dir, tls_dir)
    path = os.path.join(tmp, "warren-tls.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def start_warren(tmp, config="", binary=WARREN, tls_dir=""):
    """Start a Warren; its process and port (the AMQPS one with `tls_dir`)."""
    log_path = os.path.join(tmp, "warren.log")
    log = open(log_path, "w")
    if tls_dir:
        config = tls_config(tmp, config, tls_dir)
    extra = ["--config", config] if config else []
    extra += http_off_flags(binary)
    proc = subprocess.Popen([binary, *extra, "--port", "0", "--data-dir", os.path.join(tmp, "data"),
                             "--log-level", "warn,warren=info"], stdout=log, stderr=log)
    pattern = r"addr=127\.0\.0\.1:(\d+) protocol=\"?amqp/ssl" if tls_dir else r"addr=127\.0\.0\.1:(\d+)"
    for _ in range(100):
        time.sleep(0.1)
        m = re.search(pattern, open(log_path).read())
        if m:
            return proc, int(m.group(1))
    proc.kill()
    sys.exit("warren did not start: " + open(log_path).read())


def stop_warren(proc):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rabbitmq_pid():
    """The beam.smp of a RabbitMQ listening on 5672, if any."""
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError:
        return None
    out = subprocess.run(["pgrep", "-f", "beam.smp.*rabbit"], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else None


def run_one(port, pid, args, timeout_s, tls_dir=""):
    sampler = Sampler(pid)
    base_rss = sampler.rss_kb()
    cpu0, t0 = sampler.cpu_s(), time.monotonic()
    sampler.start()
    url = "amqp://guest:guest@127.0.0.1:%d/%%2f" % port
    if tls_dir:
        url = "amqps" + url[4:]
        args = ["--tls-ca", os.path.join(tls_dir, "ca.pem")] + args
    try:
        res = subprocess.run([PERF, "--url", url, "--json", "--quiet"] + args,
                             capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        sampler.stop.set()
        return {"error": "timed out after %ds" % timeout_s}
    sampler.stop.set()
    sampler.join()
    wall = time.monotonic() - t0
    if res.returncode != 0:
        return {"error": (res.stderr or res.stdout).strip()[-300:]}
    r = json.loads(res.stdout.strip().splitlines()[-1])
    r["broker_cpu_pct"] = 100.0 * (sampler.cpu_s() - cpu0) / wall
    r["broker_peak_rss_mb"] = sampler.peak_kb / 1024.0
    r["broker_base_rss_mb"] = base_rss / 1024.0
    return r


def metric(sid, kind, r):
    if "error" in r:
        return None
    if kind == "consume_rate":
        return r["consume_rate"]
    if kind == "p99_us":
        return r["latency_us"]["p99"]
    if kind == "both_rates":
        return (r["publish_rate"], r["consume_rate"])
    if kind == "rss_per_conn":
        n = max(1, r.get("idle_connected", 0))
        return ((r["broker_peak_rss_mb"] - r["broker_base_rss_mb"]) * 1024.0 / n, r.get("idle_connected", 0))
    return None


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="smaller backlog and fewer idle connections")
    ap.add_argument("--only", default="", help="comma-separated scenario ids")
    ap.add_argument("--json-out", default="")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--warren-config", default="",
                    help="config file for Warren (e.g. one with fsync = \"never\")")
    ap.add_argument("--baseline", default="",
                    help="another warren binary to measure in the same interleaving")
    ap.add_argument("--tls", default="",
                    help="directory of make_certs.py's files: every client uses TLS")
    a = ap.parse_args()

    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--bins"], cwd=ROOT, check=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass

    tmp = tempfile.mkdtemp(prefix="warren-bench-")
    tls_dir = os.path.abspath(a.tls) if a.tls else ""
    rpid = rabbitmq_pid()
    # Warren is started fresh for each run (None here), so that its peak RSS
    # is that run's; RabbitMQ cannot be restarted cheaply and keeps running.
    # (name, port, pid, binary): Warren builds have no port until started.
    brokers = [("warren", None, None, WARREN)]
    if a.baseline:
        brokers.append(("baseline", None, None, os.path.abspath(a.baseline)))
    if rpid:
        brokers.append(("rabbitmq", 5671 if a.tls else 5672, rpid, None))
    else:
        print("RabbitMQ not found on 127.0.0.1:5672: measuring Warren only", file=sys.stderr)
    only = set(s for s in a.only.split(",") if s)
    plan = [s for s in scenarios(a.duration, a.quick) if not only or s[0] in only]
    results = {}
    # S8 (thousands of connections) goes last: a broker that runs out of
    # file descriptors there (RabbitMQ can) must not spoil the other runs.
    order = [(rnd, s) for rnd in range(1, a.rounds + 1) for s in plan if s[0] != "S8"]
    order += [(rnd, s) for rnd in range(1, a.rounds + 1) for s in plan if s[0] == "S8"]
    try:
        for rnd, (sid, desc, args, kind) in order:
            if True:
                for name, port, pid, binary in brokers:
                    timeout_s = a.duration * 6 + 300 if sid != "S7" else 1800
                    print("round %d %s %-8s ..." % (rnd, sid, name), file=sys.stderr, flush=True)
                    if port is None:
                        warren, wport = start_warren(tmp, a.warren_config, binary, tls_dir)
                        try:
                            r = run_one(wport, warren.pid, args, timeout_s, tls_dir)
                        finally:
                            stop_warren(warren)
                    else:
                        r = run_one(port, pid, args, timeout_s, tls_dir)
                    if "error" in r:
                        print("  error: %s" % r["error"], file=sys.stderr)
                    results.setdefault(sid, {}).setdefault(name, []).append(r)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(results, f, indent=1)

    print_table(plan, results)
    if a.baseline:
        print_baseline(plan, results)


def print_baseline(plan, results):
    """This Warren against the baseline build: higher is better (p99: lower)."""
    print("\n| id | metric | Warren | baseline | Warren/baseline |")
    print("|---|---|---|---|---|")
    for sid, desc, args, kind in plan:
        per = results.get(sid, {})
        for idx, label in {"both_rates": ((0, "publish msg/s"), (1, "drain msg/s")),
                           "rss_per_conn": ((0, "RSS KB per connection"),),
                           }.get(kind, ((None, "p99 µs" if kind == "p99_us" else "consume msg/s"),)):
            vals = {}
            for name in ("warren", "baseline"):
                got = [metric(sid, kind, r) for r in per.get(name, [])]
                if idx is not None:
                    got = [v[idx] if v is not None else None for v in got]
                vals[name] = med(got)
            w, b = vals["warren"], vals["baseline"]
            ratio = "n/a" if not w or not b else "%.3f" % (w / b)
            print("| %s | %s | %s | %s | %s |" % (sid, label, "n/a" if w is None else "%.0f" % w,
                                                "n/a" if b is None else "%.0f" % b, ratio))


def print_table(plan, results):
    print("\n| id | scenario | metric | Warren | RabbitMQ | Warren/RabbitMQ | Warren CPU % | RabbitMQ CPU % | Warren peak RSS MB | RabbitMQ peak RSS MB | client CPU % (W/R) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for sid, desc, args, kind in plan:
        per = results.get(sid, {})
        def m(name, idx=None):
            vals = [metric(sid, kind, r) for r in per.get(name, [])]
            if idx is not None:
                vals = [v[idx] if v is not None else None for v in vals]
            return med(vals)
        def other(name, key):
            return med([r.get(key) for r in per.get(name, []) if "error" not in r])
        def fmt(v, unit=""):
            return "n/a" if v is None else ("%.0f%s" % (v, unit))
        def ratio(w, r, inverse=False):
            if w is None or r is None or (r == 0 if not inverse else w == 0):
                return "n/a"
            return "%.2f" % ((r / w) if inverse else (w / r))
        cpu = (fmt(other("warren", "broker_cpu_pct")), fmt(other("rabbitmq", "broker_cpu_pct")))
        rss = (fmt(other("warren", "broker_peak_rss_mb")), fmt(other("rabbitmq", "broker_peak_rss_mb")))
        ccpu = "%s / %s" % (fmt(other("warren", "client_cpu_pct")), fmt(other("rabbitmq", "client_cpu_pct")))
        if kind == "both_rates":
            for idx, label in ((0, "publish msg/s"), (1, "drain msg/s")):
                w, r = m("warren", idx), m("rabbitmq", idx)
                print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    sid, desc, label, fmt(w), fmt(r), ratio(w, r), cpu[0], cpu[1], rss[0], rss[1], ccpu))
        elif kind == "rss_per_conn":
            w, r = m("warren", 0), m("rabbitmq", 0)
            wc, rc = m("warren", 1), m("rabbitmq", 1)
            print("| %s | %s | RSS KB per connection (connected) | %s (%s) | %s (%s) | %s | %s | %s | %s | %s | %s |" % (
                sid, desc, fmt(w), fmt(wc), fmt(r), fmt(rc), ratio(w, r), cpu[0], cpu[1], rss[0], rss[1], ccpu))
        elif kind == "p99_us":
            w, r = m("warren"), m("rabbitmq")
            print("| %s | %s | p99 latency µs (RabbitMQ/Warren) | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                sid, desc, fmt(w), fmt(r), ratio(w, r, inverse=True), cpu[0], cpu[1], rss[0], rss[1], ccpu))
        else:
            w, r = m("warren"), m("rabbitmq")
            print("| %s | %s | consume msg/s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                sid, desc, fmt(w), fmt(r), ratio(w, r), cpu[0], cpu[1], rss[0], rss[1], ccpu))


if __name__ == "__main__":
    main()
