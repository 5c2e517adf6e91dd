'use strict';
// Stream queues (`x-queue-type: stream`) over AMQP 0-9-1, from an amqplib
// user's angle. Recorded against RabbitMQ 3.10.8; the full set of recorded
// behaviours (exact texts, argument validation, management view) is in
// conformance/python/test_streams.py, this suite covers the essentials:
//
//  - a stream must be durable (406 otherwise); declare-ok counts are 0;
//  - consuming needs a per-consumer prefetch (`ch.prefetch(n)`, 406 without
//    one) and manual acks (540 with noAck, a connection error);
//  - `x-stream-offset` first / next / absent / integer / timestamp / interval;
//  - every delivery carries the header `x-stream-offset` (its offset, from 0);
//  - acks only give credit; basic.nack / basic.reject, basic.get and
//    queue.purge are 540 NOT_IMPLEMENTED (connection errors);
//  - consumers read independently; publisher confirms work;
//  - queue.delete (if-unused / if-empty ignored) cancels the consumers.
//
// amqplib sends a JS Date in a table as an (empty) nested table, so AMQP
// timestamps are sent with amqplib's typed-value syntax
// `{'!': 'timestamp', value: <seconds>}`.
//
// RabbitMQ 3.10 ignores the stream filtering consumer arguments (they came in
// 3.13); Warren filters exactly. The filtering test asserts only what holds
// either way. Streams are durable: every test deletes the ones it declares
// (h.cleanup deletes tracked queues).
const { test, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

afterEach(h.cleanup);

const re = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const STREAM = { 'x-queue-type': 'stream' };

/** Declare a fresh durable stream (deleted in cleanup). Returns its name. */
async function stream(conn, args = {}) {
  const ch = await h.openChannel(conn);
  const q = h.trackQueue(h.uniq('st'));
  const ok = await ch.assertQueue(q, { durable: true, arguments: { ...STREAM, ...args } });
  assert.deepEqual(ok, { queue: q, messageCount: 0, consumerCount: 0 });
  await ch.close();
  return q;
}

/**
 * Publish `bodies` to `q` one by one on a confirm channel, each waiting for
 * its confirm (on RabbitMQ each message is then a chunk of its own).
 */
async function publish(conn, q, bodies, options = {}) {
  const ch = await h.openChannel(conn, { confirm: true });
  for (const b of bodies) {
    ch.sendToQueue(q, Buffer.from(b), options);
    await h.withTimeout(ch.waitForConfirms(), 5000, 'waitForConfirms');
  }
  await ch.close();
}

const msgs = (prefix, n, start = 0) => Array.from({ length: n }, (_, i) => `${prefix}${start + i}`);
const offsetOf = (m) => m.properties.headers['x-stream-offset'];
const offsets = (arr) => arr.map(offsetOf);
const range = (a, b) => Array.from({ length: b - a }, (_, i) => a + i);

/**
 * Start a consumer on a new channel (or `opts.ch`) with prefetch
 * `opts.prefetch` (default 1000), acking every delivery unless opts.ack is
 * false. Returns the array the deliveries are recorded in, with .ch,
 * .consumerTag and .cancelled (set when the consumer callback receives null).
 */
async function reader(conn, q, { prefetch = 1000, ack = true, args, ch } = {}) {
  ch = ch || await h.openChannel(conn);
  await ch.prefetch(prefetch);
  const got = [];
  got.ch = ch;
  got.cancelled = false;
  const ok = await ch.consume(q, (m) => {
    if (m === null) { got.cancelled = true; return; }
    got.push(m);
    if (ack) ch.ack(m);
  }, { arguments: args });
  got.consumerTag = ok.consumerTag;
  return got;
}

/** Wait until `cond()` holds (fails the test after `ms`). */
async function until(cond, what, ms = 4000) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await h.sleep(10);
  }
}

/** Wait until `arr` has at least `n` entries. */
const waitLen = (arr, n, what = 'deliveries', ms = 4000) =>
  until(() => arr.length >= n, `${what}: ${n} deliveries (got ${arr.length})`, ms);

/** Consume from `q` until `n` deliveries arrived, then a short quiet period. */
async function read(conn, q, n, args) {
  const got = await reader(conn, q, { args });
  await waitLen(got, n, JSON.stringify(args));
  await h.sleep(100);
  await got.ch.cancel(got.consumerTag);
  return got;
}

// ------------------------------------------------------------------ declare

test('stream declare: durable stream declared; declare-ok counts are always 0', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const q = await stream(conn);
  await publish(conn, q, msgs('m', 5));
  const got = await reader(conn, q, { args: { 'x-stream-offset': 'first' } });
  await waitLen(got, 5);
  const ch = await h.openChannel(conn);
  // passive and active redeclare: 0 messages, 0 consumers whatever the stream holds
  assert.deepEqual(await ch.checkQueue(q), { queue: q, messageCount: 0, consumerCount: 0 });
  assert.deepEqual(await ch.assertQueue(q, { durable: true, arguments: STREAM }),
    { queue: q, messageCount: 0, consumerCount: 0 });
});

test('stream declare: non-durable, exclusive or auto-delete is refused with 406 and nothing is created', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const cases = [
    [{ durable: false }, 'non-durable'],
    [{ durable: true, exclusive: true }, 'exclusive-owner'],
    [{ durable: true, autoDelete: true }, 'auto-delete'],
  ];
  for (const [opts, prop] of cases) {
    const q = h.trackQueue(h.uniq('st'));
    let ch = await h.openChannel(conn);
    await h.expectChannelClose(ch, () => ch.assertQueue(q, { ...opts, arguments: STREAM }), 406,
      new RegExp(`^PRECONDITION_FAILED - invalid property '${prop}' for queue '${re(q)}' in vhost '/'$`));
    ch = await h.openChannel(conn);
    await h.expectChannelClose(ch, () => ch.checkQueue(q), 404,
      new RegExp(`^NOT_FOUND - no queue '${re(q)}' in vhost '/'$`));
  }
});

// ------------------------------------------------------------------ consume

test('stream consume: without a per-consumer prefetch (none, or only a global one) is refused with 406', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const q = await stream(conn);
  const text = new RegExp(`^PRECONDITION_FAILED - consumer prefetch count is not set for 'queue '${re(q)}' in vhost '/''$`);
  let ch = await h.openChannel(conn);
  await h.expectChannelClose(ch, () => ch.consume(q, () => {}), 406, text);
  ch = await h.openChannel(conn);
  await ch.prefetch(10, true); // global only
  await h.expectChannelClose(ch, () => ch.consume(q, () => {}), 406, text);
  // with ch.prefetch(n) (per consumer) it works
  ch = await h.openChannel(conn);
  await ch.prefetch(10);
  assert.match((await ch.consume(q, () => {})).consumerTag, /^amq\.ctag-/);
});

test('stream consume: noAck is refused with 540 NOT_IMPLEMENTED, closing the connection', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const q = await stream(conn);
  const ch = await h.openChannel(conn);
  await ch.prefetch(10);
  await h.expectConnectionClose(conn, () => ch.consume(q, () => {}, { noAck: true }), 540,
    new RegExp(`^NOT_IMPLEMENTED - automatic acknowledgement not supported by stream queues queue '${re(q)}' in vhost '/'$`));
});

// ------------------------------------------------------------------ offsets

test('x-stream-offset "first": everything in order; header x-stream-offset counts from 0', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const q = await stream(conn);
  await publish(conn, q, msgs('m', 10));
  const got = await reader(conn, q, { args: { 'x-stream-offset': 'first' } });
  await waitLen(got, 10);
  await publish(conn, q, ['later']);
  await waitLen(got, 11);
  await h.sleep(100);
  assert.deepEqual(h.bodies(got), [...msgs('m', 10), 'later']);
  // messages published without headers arrive with exactly {x-stream-offset: N}
  assert.deepEqual(got.map((m) => m.properties.headers), range(0, 11).map((i) => ({ 'x-stream-offset': i })));
  assert.ok(got.every((m) => Number.isInteger(offsetOf(m))));
  assert.deepEqual(got.map((m) => m.fields.deliveryTag), range(1, 12));
  assert.ok(got.every((m) => m.fields.redelivered === false && m.fields.exchange === '' && m.fields.routingKey === q));
});

test('x-stream-offset "next" or no offset: only messages published after the consumer started', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const q = await stream(conn);
  await publish(conn, q, msgs('old', 5));
  const next = await reader(conn, q, { args: { 'x-stream-offset': 'next' } });
  const absent = await reader(conn, q);
  await h.sleep(300);
  assert.deepEqual(h.bodies(next), []);
  assert.deepEqual(h.bodies(absent), []);
  await publish(conn, q, msgs('new', 3));
  await waitLen(next, 3, 'next');
  await waitLen(absent, 3, 'absent');
  await h.sleep(100);
  for (const got of [next, absent]) {
    assert.deepEqual(h.bodies(got), msgs('new', 3));
    assert.deepEqual(offsets(got), [5, 6, 7]);
  }
});

test('x-stream-offset integer: starts at that offset, also one beyond the end (waits for it)', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const q = await stream(conn);
  await publish(conn, q, msgs('m', 5));
  const at3 = await reader(conn, q, { args: { 'x-stream-offset': 3 } });
  const at8 = await reader(conn, q, { args: { 'x-stream-offset': 8 } });
  await waitLen(at3, 2, 'offset 3');
  await h.sleep(300);
  assert.deepEqual(h.bodies(at8), [], 'offset 8 is not written yet: nothing (not clamped to "next")');
  await publish(conn, q, msgs('m', 5, 5));
  await waitLen(at3, 7, 'offset 3');
  await waitLen(at8, 2, 'offset 8');
  await h.sleep(100);
  assert.deepEqual(offsets(at3), range(3, 10));
  assert.deepEqual(h.bodies(at3), msgs('m', 7, 3));
  assert.deepEqual(at8.map((m) => [offsetOf(m), m.content.toString()]), [[8, 'm8'], [9, 'm9']]);
});

test('x-stream-offset timestamp (AMQP timestamp, seconds) and interval strings', { timeout: h.T }, async () => {
  // Two batches 3 s apart. A timestamp starts at the first message written
  // at or after it; an interval like "2s" / "1h" at now minus the interval.
  // "2s" is read first, with a second of slack on either side (batch a is
  // 3 s old, batch b just written) for a slow machine.
  const conn = await h.connect();
  const q = await stream(conn);
  await publish(conn, q, msgs('a', 3));
  const aEnd = Date.now() / 1000;
  await h.sleep(3000);
  await publish(conn, q, msgs('b', 3));
  const boundary = Math.ceil(aEnd); // a whole second after batch a, before batch b
  const ts = (secs) => ({ '!': 'timestamp', value: secs });
  const all = [...msgs('a', 3), ...msgs('b', 3)];
  const cases = [
    ['2s', msgs('b', 3)], // first: batch b is well under two seconds old
    [ts(boundary), msgs('b', 3)],
    [ts(Date.UTC(2000, 0, 1) / 1000), all],
    ['1m', all],
    ['1h', all],
  ];
  for (const [spec, want] of cases) {
    const got = await read(conn, q, want.length, { 'x-stream-offset': spec });
    assert.deepEqual(h.bodies(got), want, JSON.stringify(spec));
    assert.deepEqual(offsets(got), range(6 - want.length, 6), JSON.stringify(spec));
  }
  // a timestamp in the future reads like "next"
  const future = await reader(conn, q, { args: { 'x-stream-offset': ts(Date.UTC(2100, 0, 1) / 1000) } });
  await h.sleep(200);
  assert.deepEqual(h.bodies(future), []);
  await publish(conn, q, ['c']);
  await waitLen(future, 1, 'future timestamp');
  await h.sleep(100);
  assert.deepEqual(future.map((m) => [offsetOf(m), m.content.toString()]), [[6, 'c']]);
});

test('x-stream-offset: an invalid interval is refused with 406', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const q = await stream(conn);
  for (const spec of ['1d', '0s']) {
    const ch = await h.openChannel(conn);
    await ch.prefetch(10);
    await h.expectChannelClose(ch, () => ch.consume(q, () => {}, { arguments: { 'x-stream-offset': spec } }), 406,
      new RegExp(`^PRECONDITION_FAILED - invalid arg 'x-stream-offset' for queue '${re(q)}' in vhost '/': \\{invalid_stream_offset_arg,\\{longstr,<<"${spec}">>\\}\\}$`));
  }
});

// ------------------------------------------------------------------ credit and acks

test('acks are credit: prefetch 2 gives exactly 2 deliveries until an ack; cancel then ack is fine', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const q = await stream(conn);
  await publish(conn, q, msgs('m', 10));
  const got = await reader(conn, q, { prefetch: 2, ack: false, args: { 'x-stream-offset': 'first' } });
  const ch = got.ch;
  await waitLen(got, 2);
  await h.sleep(300);
  assert.deepEqual(offsets(got), [0, 1]);
  ch.ack(got[0]);
  await waitLen(got, 3);
  await h.sleep(300);
  assert.deepEqual(offsets(got), [0, 1, 2]);
  ch.ack(got[2], true); // acks tags 2 and 3
  await waitLen(got, 5);
  await h.sleep(300);
  assert.deepEqual(offsets(got), [0, 1, 2, 3, 4]);
  assert.deepEqual(got.map((m) => m.fields.deliveryTag), [1, 2, 3, 4, 5]);
  assert.ok(got.every((m) => m.fields.redelivered === false));
  ch.ackAll(); // everything outstanding
  await waitLen(got, 7);
  await h.sleep(100);
  assert.deepEqual(offsets(got), range(0, 7));
  // cancel, then ack what is outstanding: no error, nothing more delivered
  await ch.cancel(got.consumerTag);
  ch.ackAll();
  await h.sleep(300);
  assert.deepEqual(offsets(got), range(0, 7));
  await h.sync(ch);
  assert.equal(ch.isClosed, false);
  assert.equal(conn.isClosed, false);
});

for (const [name, op] of [
  ['nack (requeue)', (ch, m) => ch.nack(m, false, true)],
  ['nack (no requeue)', (ch, m) => ch.nack(m, false, false)],
  ['reject', (ch, m) => ch.reject(m, true)],
]) {
  test(`${name} of a stream delivery closes the connection with 540 NOT_IMPLEMENTED`, { timeout: h.T }, async () => {
    const conn = await h.connect();
    const q = await stream(conn);
    await publish(conn, q, msgs('m', 3));
    const got = await reader(conn, q, { prefetch: 2, ack: false, args: { 'x-stream-offset': 'first' } });
    await waitLen(got, 2);
    await h.expectConnectionClose(conn, () => op(got.ch, got[0]), 540,
      new RegExp(`^NOT_IMPLEMENTED - basic\\.nack and basic\\.reject not supported by stream queues queue '${re(q)}' in vhost '/'$`));
  });
}

test('basic.get (ch.get) on a stream closes the connection with 540 NOT_IMPLEMENTED', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const q = await stream(conn);
  await publish(conn, q, ['x']);
  const ch = await h.openChannel(conn);
  await h.expectConnectionClose(conn, () => ch.get(q, { noAck: false }), 540,
    new RegExp(`^NOT_IMPLEMENTED - basic\\.get not supported by stream queues queue '${re(q)}' in vhost '/'$`));
});

test('queue.purge of a stream closes the connection with 540 NOT_IMPLEMENTED', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const q = await stream(conn);
  await publish(conn, q, ['x']);
  const ch = await h.openChannel(conn);
  await h.expectConnectionClose(conn, () => ch.purgeQueue(q), 540,
    new RegExp(`^NOT_IMPLEMENTED - queue\\.purge not supported by stream queues queue '${re(q)}' in vhost '/'$`));
});

// ------------------------------------------------------------------ several consumers

test('several consumers read the stream independently (other connection, same channel)', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const other = await h.connect();
  const q = await stream(conn);
  await publish(conn, q, msgs('m', 5));
  const a = await reader(conn, q, { args: { 'x-stream-offset': 'first' } });
  const b = await reader(other, q, { args: { 'x-stream-offset': 'first' } });
  const same = await h.openChannel(conn); // two consumers on one channel
  const c = await reader(conn, q, { ch: same, args: { 'x-stream-offset': 'first' } });
  const d = await reader(conn, q, { ch: same, args: { 'x-stream-offset': 3 } });
  await publish(conn, q, msgs('m', 2, 5));
  for (const [got, n, what] of [[a, 7, 'a'], [b, 7, 'b'], [c, 7, 'c'], [d, 4, 'd']]) await waitLen(got, n, what);
  await h.sleep(200);
  for (const got of [a, b, c]) {
    assert.deepEqual(offsets(got), range(0, 7));
    assert.deepEqual(h.bodies(got), msgs('m', 7));
  }
  assert.deepEqual(offsets(d), [3, 4, 5, 6]);
  // delivery tags are per channel: the two consumers on `same` share one sequence
  assert.deepEqual([...c, ...d].map((m) => m.fields.deliveryTag).sort((x, y) => x - y), range(1, 12));
});

// ------------------------------------------------------------------ publishing

test('publisher confirms on a stream (ConfirmChannel), also routed through an exchange', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const q = await stream(conn);
  const ch = await h.openChannel(conn, { confirm: true });
  const returned = [];
  ch.on('return', (m) => returned.push(m));
  const acked = [];
  const cb = (what) => (err) => acked.push([what, err]);
  ch.sendToQueue(q, Buffer.from('direct'), { mandatory: true }, cb('direct'));
  await ch.bindQueue(q, 'amq.fanout', '');
  ch.publish('amq.fanout', '', Buffer.from('fanout'), { mandatory: true }, cb('fanout'));
  await h.withTimeout(ch.waitForConfirms(), 5000, 'waitForConfirms');
  await ch.unbindQueue(q, 'amq.fanout', '');
  assert.deepEqual(acked, [['direct', null], ['fanout', null]]);
  assert.deepEqual(returned, []);
  const got = await read(conn, q, 2, { 'x-stream-offset': 'first' });
  assert.deepEqual(got.map((m) => [offsetOf(m), m.content.toString(), m.fields.exchange]),
    [[0, 'direct', ''], [1, 'fanout', 'amq.fanout']]);
});

// ------------------------------------------------------------------ filtering

test('stream filter: every matching message arrives, in order, header intact (superset only)', { timeout: h.T }, async () => {
  // RabbitMQ 3.10 ignores x-stream-filter and delivers everything; >= 3.13
  // filters per chunk (false positives possible); Warren filters exactly.
  // Asserted: each matching message arrives in offset order with its
  // x-stream-filter-value header, and nothing that was not published.
  const conn = await h.connect();
  const q = await stream(conn);
  const published = [['a', '0'], ['b', '1'], [null, '2'], ['a', '3'], ['c', '4'], [null, '5'], ['b', '6'], ['a', '7']];
  const ch = await h.openChannel(conn, { confirm: true });
  for (const [v, body] of published) {
    ch.sendToQueue(q, Buffer.from(body), v ? { headers: { 'x-stream-filter-value': v } } : {});
  }
  await h.withTimeout(ch.waitForConfirms(), 5000, 'waitForConfirms');
  const cases = [
    [{ 'x-stream-filter': 'a' }, (v) => v === 'a'],
    [{ 'x-stream-filter': ['a', 'b'] }, (v) => v === 'a' || v === 'b'],
    [{ 'x-stream-filter': 'a', 'x-stream-match-unfiltered': true }, (v) => v === 'a' || v === null],
  ];
  for (const [args, matches] of cases) {
    const got = await reader(conn, q, { args: { ...args, 'x-stream-offset': 'first' } });
    await until(() => got.some((m) => m.content.toString() === '7'), `last match for ${JSON.stringify(args)}`);
    await h.sleep(200);
    await got.ch.cancel(got.consumerTag);
    for (const m of got) {
      const i = published.findIndex(([, body]) => body === m.content.toString());
      assert.ok(i >= 0, `unexpected message ${m.content}`);
      assert.equal(offsetOf(m), i);
      assert.equal((m.properties.headers || {})['x-stream-filter-value'], published[i][0] || undefined);
    }
    const offs = offsets(got);
    assert.deepEqual(offs, [...new Set(offs)].sort((x, y) => x - y), 'offsets ascending, no duplicates');
    const wanted = published.filter(([v]) => matches(v)).map(([, body]) => body);
    assert.deepEqual(h.bodies(got).filter((b) => wanted.includes(b)), wanted, JSON.stringify(args));
  }
});

// ------------------------------------------------------------------ delete

test('queue.delete of a stream ignores ifUnused/ifEmpty, reports 0 and cancels its consumers (callback gets null)', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const q = await stream(conn);
  await publish(conn, q, msgs('m', 3));
  const got = await reader(conn, q, { args: { 'x-stream-offset': 'first' } });
  await waitLen(got, 3);
  const ch = await h.openChannel(conn);
  assert.deepEqual(await ch.deleteQueue(q, { ifUnused: true, ifEmpty: true }), { messageCount: 0 });
  await until(() => got.cancelled, 'the consumer to be cancelled (consume callback called with null)');
  // the consumer's channel stays open
  await h.sync(got.ch);
  assert.equal(got.ch.isClosed, false);
  await h.expectChannelClose(ch, () => ch.checkQueue(q), 404,
    new RegExp(`^NOT_FOUND - no queue '${re(q)}' in vhost '/'$`));
});
