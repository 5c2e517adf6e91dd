'use strict';
// Resource alarms (disk and memory): connection.blocked / connection.unblocked.
//
// Recorded against RabbitMQ 3.10.8 (CONFORMANCE_TARGET=rabbitmq), where the
// alarms are driven with rabbitmqctl. Against Warren (the default target)
// each test starts its own Warren child process (binary from WARREN_BIN,
// default target/debug/warren of this repository) in a temporary data dir on
// port 0, with `alarm_check_interval_ms = 100`.
//
// Disk alarm, same mechanism on both targets: the free-disk limit is set to
// (free bytes of the broker's data filesystem - 300 MB) (`disk_free_limit` in
// Warren's config, `rabbitmqctl set_disk_free_limit` on RabbitMQ), then a
// 600 MB filler file written to that filesystem raises the alarm and deleting
// it clears it. (The filler grows past 600 MB if other activity freed space
// meanwhile.) RabbitMQ polls free space only every 10 s while alarmed, so on
// RabbitMQ the same limit is set again after writing/deleting the filler,
// which makes it check at once.
//
// Memory alarm: Warren is restarted (same data dir) with
// `memory_high_watermark = "1MB"`, which keeps the alarm on; RabbitMQ gets
// `rabbitmqctl set_vm_memory_high_watermark 0.000001`.
//
// RabbitMQ behaviour relied on: connection.blocked goes to a connection (that
// announced the `connection.blocked` capability, as amqplib does) when it
// publishes during an alarm, with reason "low on disk" / "low on memory"; the
// broker stops reading from it and routes the held publish once the alarm
// clears, sending connection.unblocked. A connection that only consumes is
// not blocked and keeps being served.

const { test, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn, execFileSync } = require('node:child_process');
const h = require('./helpers');

const { amqp } = h;
const TARGET = process.env.CONFORMANCE_TARGET || 'warren';
const MB = 1000 * 1000;
const MARGIN = 300 * MB; // limit = free - MARGIN
const FILLER = 600 * MB; // writing this much drops free space MARGIN below the limit
const TEST_TIMEOUT = 30000;

// ---------------------------------------------------------------- helpers

function freeBytes(p) {
  const s = fs.statfsSync(p, { bigint: true });
  return Number(s.bavail * s.bsize);
}

/** Write at least nbytes to file (fsynced), and keep going (up to 3x) while free space of fsPath is not below `below`. */
function writeFiller(file, nbytes, fsPath, below) {
  const chunk = Buffer.alloc(8 << 20);
  const fd = fs.openSync(file, 'w');
  try {
    let written = 0;
    while (written < nbytes || (freeBytes(fsPath) >= below && written < 3 * nbytes)) {
      fs.writeSync(fd, chunk);
      written += chunk.length;
      if (written >= nbytes) fs.fsyncSync(fd);
    }
  } finally {
    fs.closeSync(fd);
  }
}

function removeFile(file) {
  try { fs.unlinkSync(file); } catch (e) { if (e.code !== 'ENOENT') throw e; }
}

async function waitUntil(pred, ms, what) {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await h.sleep(20);
  }
}

/** amqplib connection to `url` recording blocked/unblocked events. */
async function connectTo(url) {
  const conn = await amqp.connect(url);
  conn.on('error', () => {});
  conn.blockedReasons = [];
  conn.unblockedCount = 0;
  conn.on('blocked', (reason) => conn.blockedReasons.push(reason));
  conn.on('unblocked', () => { conn.unblockedCount += 1; });
  return conn;
}

async function closeQuietly(conn) {
  if (!conn) return;
  try { await Promise.race([conn.close(), h.sleep(2000)]); } catch (_) { /* already closed */ }
}

/**
 * Publishes '0', '1', ... to `queue` on its own confirm channel, one at a
 * time (each awaits its confirm), every 20 ms, until stop() or `count`.
 */
function startPublisher(conn, queue, { count = Infinity, persistent = false } = {}) {
  const p = { confirmed: [], error: null, stopped: false };
  p.done = (async () => {
    const ch = await conn.createConfirmChannel();
    ch.on('error', () => {});
    for (let i = 0; !p.stopped && i < count; i++) {
      await new Promise((resolve, reject) => {
        ch.sendToQueue(queue, Buffer.from(String(i)), { persistent }, (err) => (err ? reject(err) : resolve()));
      });
      p.confirmed.push(i);
      await h.sleep(20);
    }
  })().catch((e) => { if (!p.stopped) p.error = e; });
  p.stop = async (ms = 10000) => { p.stopped = true; await Promise.race([p.done, h.sleep(ms)]); };
  return p;
}

/** A consuming connection (manual ack) recording bodies. */
async function startConsumer(url, queue, queueOpts) {
  const conn = await connectTo(url);
  const ch = await conn.createChannel();
  ch.on('error', () => {});
  await ch.assertQueue(queue, queueOpts);
  await ch.prefetch(50);
  const c = { conn, ch, got: [] };
  c.start = () => ch.consume(queue, (m) => {
    if (m === null) return;
    c.got.push(m.content.toString());
    ch.ack(m);
  });
  return c;
}

async function deleteQueue(url, q) {
  let conn;
  try {
    conn = await amqp.connect(url);
    conn.on('error', () => {});
    const ch = await conn.createChannel();
    await ch.deleteQueue(q);
  } catch (_) { /* ignore */ } finally { await closeQuietly(conn); }
}

// ---------------------------------------------------------------- targets

class RabbitTarget {
  constructor(tmp) {
    this.url = h.AMQP_URL;
    this.dataFs = process.env.RABBITMQ_DATA_DIR || '/var/lib/rabbitmq';
    // the filler must land on the filesystem RabbitMQ watches
    const sameFs = fs.statSync(tmp).dev === fs.statSync(this.dataFs).dev;
    this.filler = path.join(sameFs ? tmp : this.dataFs, `alarm-filler-${h.uniq('f')}`);
    this.origDisk = RabbitTarget.evalErl('rabbit_disk_monitor:get_disk_free_limit().');
    this.origMem = RabbitTarget.evalErl('vm_memory_monitor:get_vm_memory_high_watermark().');
    this.limit = null;
  }

  static ctl(...args) {
    execFileSync('rabbitmqctl', ['-q', ...args], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 30000 });
  }

  static evalErl(expr) {
    try {
      return execFileSync('rabbitmqctl', ['-q', 'eval', expr], { encoding: 'utf8', timeout: 30000 }).trim();
    } catch (_) { return null; }
  }

  async start() {}

  async armDisk() {
    this.limit = freeBytes(this.dataFs) - MARGIN;
    RabbitTarget.ctl('set_disk_free_limit', String(this.limit));
  }

  fillDisk() {
    writeFiller(this.filler, FILLER, this.dataFs, this.limit - 100 * MB);
    RabbitTarget.ctl('set_disk_free_limit', String(this.limit)); // check now
  }

  clearDisk() {
    removeFile(this.filler);
    if (this.limit !== null) RabbitTarget.ctl('set_disk_free_limit', String(this.limit)); // check now
  }

  async raiseMemoryAlarm() {
    RabbitTarget.ctl('set_vm_memory_high_watermark', '0.000001');
  }

  async close() {
    removeFile(this.filler);
    const disk = this.origDisk && /^\d+$/.test(this.origDisk) ? this.origDisk : '50MB';
    const mem = this.origMem || '0.4';
    const abs = /\{absolute,\s*(\d+)\}/.exec(mem);
    try {
      RabbitTarget.ctl('set_disk_free_limit', disk);
      if (abs) RabbitTarget.ctl('set_vm_memory_high_watermark', 'absolute', abs[1]);
      else RabbitTarget.ctl('set_vm_memory_high_watermark', /^[0-9.]+$/.test(mem) ? mem : '0.4');
    } catch (_) { /* best effort */ }
  }
}

class WarrenTarget {
  constructor(tmp) {
    this.tmp = tmp;
    const defaultBin = path.resolve(__dirname, '..', '..', '..', 'target', 'debug', 'warren');
    this.bin = path.resolve(process.env.WARREN_BIN || defaultBin);
    this.dataDir = path.join(tmp, 'data');
    this.dataFs = tmp;
    this.filler = path.join(tmp, 'alarm-filler');
    this.child = null;
    this.url = null;
    this.limit = null;
  }

  async start(config = {}) {
    try { fs.accessSync(this.bin, fs.constants.X_OK); } catch (_) {
      throw new Error(`Warren binary not found at ${this.bin} (set WARREN_BIN)`);
    }
    const cfg = { alarm_check_interval_ms: 100, ...config };
    const cfgPath = path.join(this.tmp, 'warren.toml');
    fs.writeFileSync(cfgPath, Object.entries(cfg)
      .map(([k, v]) => `${k} = ${typeof v === 'string' ? JSON.stringify(v) : v}\n`).join(''));
    // No HTTP listeners: their fixed default ports would clash.
    const child = spawn(this.bin, ['--port', '0', '--data-dir', this.dataDir, '--config', cfgPath,
      '--log-level', 'warn,warren=info', '--management-port', '0', '--prometheus-port', '0'],
    { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    let log = '';
    child.exited = new Promise((resolve) => child.once('exit', resolve));
    this.url = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => fail('no addr= line within 10 s'), 10000);
      function fail(why) { clearTimeout(timer); reject(new Error(`Warren did not start (${why}), config ${JSON.stringify(cfg)}:\n${log.slice(-3000)}`)); }
      const onData = (d) => {
        log += d.toString();
        const m = /addr=127\.0\.0\.1:(\d+)/.exec(log);
        if (m) { clearTimeout(timer); resolve(`amqp://guest:guest@127.0.0.1:${m[1]}/%2F`); }
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      child.once('exit', (code) => fail(`exited with ${code}`));
      child.once('error', (e) => fail(e.message));
    }).catch(async (e) => { await this.stop(); throw e; });
  }

  async stop() {
    const child = this.child;
    if (!child) return;
    this.child = null;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const exited = await Promise.race([child.exited.then(() => true), h.sleep(5000).then(() => false)]);
      if (!exited) { child.kill('SIGKILL'); await child.exited; }
    }
  }

  async armDisk() {
    await this.stop();
    this.limit = freeBytes(this.dataFs) - MARGIN;
    await this.start({ disk_free_limit: this.limit });
  }

  fillDisk() { writeFiller(this.filler, FILLER, this.dataFs, this.limit - 100 * MB); }

  clearDisk() { removeFile(this.filler); }

  async raiseMemoryAlarm() {
    await this.stop();
    await this.start({ memory_high_watermark: '1MB' });
  }

  async close() {
    await this.stop();
    removeFile(this.filler);
  }
}

let current = null; // { target, tmp, cleanups }

async function openTarget() {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'conf-alarms-'));
  const target = TARGET === 'rabbitmq' ? new RabbitTarget(tmp) : new WarrenTarget(tmp);
  current = { target, tmp, cleanups: [] };
  await target.start();
  return target;
}

afterEach(async () => {
  if (!current) return;
  const { target, tmp, cleanups } = current;
  current = null;
  for (const f of cleanups.reverse()) { try { await f(); } catch (_) { /* ignore */ } }
  await target.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

// ---------------------------------------------------------------- tests

test('disk alarm: publishers blocked and told, consumers served, unblocked when space returns', { timeout: TEST_TIMEOUT }, async () => {
  const broker = await openTarget();
  await broker.armDisk();
  const q = h.uniq('conf-alarm-disk');
  const consumer = await startConsumer(broker.url, q, { durable: false });
  const pubConn = await connectTo(broker.url);
  const pub = startPublisher(pubConn, q);
  current.cleanups.push(() => deleteQueue(broker.url, q), () => closeQuietly(consumer.conn),
    () => closeQuietly(pubConn), () => pub.stop(5000), () => broker.clearDisk());

  await waitUntil(() => pub.confirmed.length >= 10, 10000, '10 confirms before the alarm');
  assert.deepEqual(pubConn.blockedReasons, [], 'blocked before the disk alarm');

  broker.fillDisk();
  await waitUntil(() => pubConn.blockedReasons.length > 0, 15000, "the publisher's 'blocked' event");
  assert.equal(pubConn.blockedReasons[0], 'low on disk');
  // the broker stops taking the publisher's messages: no more confirms
  await h.sleep(300);
  const held = pub.confirmed.length;
  await h.sleep(1000);
  assert.equal(pub.confirmed.length, held, 'publishes were confirmed while blocked');
  assert.equal(pub.error, null);

  // a consumer on another connection drains what was queued before the alarm
  await consumer.start();
  await waitUntil(() => consumer.got.length >= held, 10000,
    `the consumer to receive the ${held} messages queued before the alarm`);
  assert.deepEqual(consumer.got.slice(0, held), [...Array(held).keys()].map(String));
  assert.deepEqual(consumer.conn.blockedReasons, [], 'a connection that never published was blocked');
  assert.equal(pub.confirmed.length, held);

  // the alarm clears: unblocked, and publishing resumes by itself
  broker.clearDisk();
  await waitUntil(() => pubConn.unblockedCount > 0, 15000, "the publisher's 'unblocked' event");
  await waitUntil(() => pub.confirmed.length >= held + 10, 10000, 'publishing to resume after unblock');
  await pub.stop();
  assert.equal(pub.error, null);
  const confirmed = pub.confirmed.map(String);
  await waitUntil(() => confirmed.every((b) => consumer.got.includes(b)), 10000,
    'every confirmed message to reach the consumer');
  assert.deepEqual(consumer.got.slice(0, confirmed.length), confirmed, 'messages lost or reordered');
  assert.deepEqual(pubConn.blockedReasons, ['low on disk']);
  assert.equal(pubConn.unblockedCount, 1);
});

test('memory alarm: publishers blocked and told, consumers served', { timeout: TEST_TIMEOUT }, async () => {
  const broker = await openTarget();
  const q = h.uniq('conf-alarm-mem');
  const n = 20;
  // queue durable messages before the alarm (Warren is restarted to raise it)
  {
    const conn = await connectTo(broker.url);
    const ch = await conn.createConfirmChannel();
    await ch.assertQueue(q, { durable: true });
    for (let i = 0; i < n; i++) ch.sendToQueue(q, Buffer.from(`pre-${i}`), { persistent: true });
    await h.withTimeout(ch.waitForConfirms(), 5000, 'waitForConfirms');
    await closeQuietly(conn);
  }
  if (TARGET === 'rabbitmq') current.cleanups.push(() => deleteQueue(broker.url, q));

  await broker.raiseMemoryAlarm();
  const pubConn = await connectTo(broker.url);
  const pub = startPublisher(pubConn, q, { count: 1, persistent: true });
  // on cleanup: stop Warren / restore RabbitMQ's watermark first, then the publisher
  current.cleanups.push(() => pub.stop(5000), () => closeQuietly(pubConn), () => broker.close());

  await waitUntil(() => pubConn.blockedReasons.length > 0, 10000, "the publisher's 'blocked' event");
  assert.deepEqual(pubConn.blockedReasons, ['low on memory']);

  const consumer = await startConsumer(broker.url, q, { durable: true });
  current.cleanups.push(() => closeQuietly(consumer.conn));
  await consumer.start();
  await waitUntil(() => consumer.got.length >= n, 10000,
    `the consumer to receive the ${n} messages queued before the alarm`);
  await h.sleep(1000);
  assert.deepEqual(consumer.got, [...Array(n).keys()].map((i) => `pre-${i}`), 'the blocked publish got through');
  assert.deepEqual(consumer.conn.blockedReasons, [], 'a connection that never published was blocked');
  assert.deepEqual(pub.confirmed, [], 'publish confirmed during the memory alarm');
  assert.equal(pubConn.unblockedCount, 0);
});
