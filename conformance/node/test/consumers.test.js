'use strict';
// Consumer-side RabbitMQ extensions: single active consumer
// (x-single-active-consumer), consumer priorities (x-priority consume
// argument) and the x-cancel-on-ha-failover consume argument. Recorded
// against RabbitMQ 3.10.8 (classic queues).
//
// When the active consumer of a single-active-consumer queue is cancelled
// while its channel still holds unacked messages, the next consumer starts
// only once those are settled (so requeued ones keep their place). RabbitMQ
// 3.10 waits for a requeue even when the old channel acks instead; Warren
// also starts the next consumer on an ack. Only the requeue case is tested.
const { test, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

afterEach(h.cleanup);

/** Start a consumer that records every delivery in the returned array. */
async function recorder(ch, queue, opts = {}) {
  const got = [];
  const ok = await ch.consume(queue, (m) => { if (m) got.push(m); }, opts);
  got.consumerTag = ok.consumerTag;
  return got;
}

/** Wait until `arr` has `n` entries (fails the test after `ms`). */
async function waitLen(arr, n, what, ms = 3000) {
  const deadline = Date.now() + ms;
  while (arr.length < n) {
    if (Date.now() > deadline) assert.fail(`${what}: expected ${n} deliveries, got ${arr.length}`);
    await h.sleep(10);
  }
}

// ------------------------------------------------- single active consumer

test('single active consumer: only the first consumer gets messages; after it cancels the second takes over', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const chA = await h.openChannel(conn);
  const chB = await h.openChannel(conn);
  const q = await h.tmpQueue(chA, { arguments: { 'x-single-active-consumer': true } }, 'sac');
  const a = await recorder(chA, q);
  const b = await recorder(chB, q);
  assert.equal((await chA.checkQueue(q)).consumerCount, 2);
  for (const s of ['m0', 'm1', 'm2']) chA.sendToQueue(q, Buffer.from(s));
  await waitLen(a, 3, 'first consumer');
  await h.sleep(200);
  assert.deepEqual(h.bodies(a), ['m0', 'm1', 'm2']);
  assert.deepEqual(h.bodies(b), [], 'the waiting consumer got messages');
  chA.ackAll();
  await chA.cancel(a.consumerTag);
  for (const s of ['m3', 'm4']) chA.sendToQueue(q, Buffer.from(s));
  await waitLen(b, 2, 'second consumer');
  await h.sleep(100);
  assert.deepEqual(h.bodies(b), ['m3', 'm4']);
  assert.deepEqual(h.bodies(a), ['m0', 'm1', 'm2']);
  assert.equal((await chA.checkQueue(q)).consumerCount, 1);
});

test('single active consumer: messages the first consumer requeues after cancelling go to the second', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const chA = await h.openChannel(conn);
  const chB = await h.openChannel(conn);
  const q = await h.tmpQueue(chA, { arguments: { 'x-single-active-consumer': true } }, 'sac');
  await chA.prefetch(2);
  const a = await recorder(chA, q);
  const b = await recorder(chB, q, { noAck: true });
  for (let i = 0; i < 5; i++) chA.sendToQueue(q, Buffer.from(`m${i}`));
  await waitLen(a, 2, 'first consumer');
  await h.sleep(200);
  // the active consumer is at its prefetch limit; the other one still gets nothing
  assert.deepEqual(h.bodies(a), ['m0', 'm1']);
  assert.deepEqual(h.bodies(b), []);
  assert.equal((await chA.checkQueue(q)).messageCount, 3);
  await chA.cancel(a.consumerTag);
  chA.nackAll(true);
  await waitLen(b, 5, 'second consumer');
  await h.sleep(100);
  // The cancelled consumer still held m0, m1: the next one starts only once
  // they are settled, so the requeued ones keep their place.
  const seen = b.map((m) => [m.content.toString(), m.fields.redelivered]);
  assert.deepEqual(seen, [['m0', true], ['m1', true], ['m2', false], ['m3', false], ['m4', false]]);
  assert.deepEqual(h.bodies(a), ['m0', 'm1']);
});

test('single active consumer: closing the active consumer\'s channel hands everything to the next one', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const chA = await h.openChannel(conn);
  const chB = await h.openChannel(conn);
  const q = await h.tmpQueue(chA, { arguments: { 'x-single-active-consumer': true } }, 'sac');
  await chA.prefetch(2);
  const a = await recorder(chA, q);
  const b = await recorder(chB, q, { noAck: true });
  for (let i = 0; i < 5; i++) chB.sendToQueue(q, Buffer.from(`m${i}`));
  await waitLen(a, 2, 'first consumer');
  await h.sleep(200);
  assert.deepEqual(h.bodies(b), []);
  await chA.close();
  await waitLen(b, 5, 'second consumer');
  // the closed channel's unacked m0, m1 are requeued in their original
  // place before the next consumer gets anything
  assert.deepEqual(h.bodies(b), ['m0', 'm1', 'm2', 'm3', 'm4']);
  assert.deepEqual(b.map((m) => m.fields.redelivered), [true, true, false, false, false]);
  assert.equal((await chB.checkQueue(q)).consumerCount, 1);
});

// ------------------------------------------------------ consumer priorities

test('consumer priority: the higher-priority consumer gets all messages while it can take them', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const chLow = await h.openChannel(conn);
  const chHigh = await h.openChannel(conn);
  const q = await h.tmpQueue(chLow, { exclusive: true }, 'cprio');
  // the low-priority consumer subscribes first
  const low = await recorder(chLow, q, { noAck: true, priority: 1 });
  const high = await recorder(chHigh, q, { noAck: true, priority: 10 });
  for (let i = 0; i < 6; i++) chLow.sendToQueue(q, Buffer.from(`m${i}`));
  await waitLen(high, 6, 'high-priority consumer');
  await h.sleep(100);
  assert.deepEqual(h.bodies(high), ['m0', 'm1', 'm2', 'm3', 'm4', 'm5']);
  assert.deepEqual(h.bodies(low), []);
});

test('consumer priority with prefetch: the lower-priority consumer only gets what the higher one cannot take', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const chLow = await h.openChannel(conn);
  const chHigh = await h.openChannel(conn);
  const q = await h.tmpQueue(chLow, { exclusive: true }, 'cprio');
  await chLow.prefetch(10);
  await chHigh.prefetch(2);
  const low = await recorder(chLow, q, { priority: 0 });
  const high = await recorder(chHigh, q, { priority: 10 });
  for (let i = 0; i < 5; i++) chLow.sendToQueue(q, Buffer.from(`m${i}`));
  await waitLen(low, 3, 'low-priority consumer');
  await h.sleep(100);
  assert.deepEqual(h.bodies(high), ['m0', 'm1']);
  assert.deepEqual(h.bodies(low), ['m2', 'm3', 'm4']);
  // room again on the high-priority consumer: the next message goes there
  chHigh.ack(high[0]);
  await h.sync(chHigh);
  chLow.sendToQueue(q, Buffer.from('m5'));
  await waitLen(high, 3, 'high-priority consumer');
  await h.sleep(100);
  assert.deepEqual(h.bodies(high), ['m0', 'm1', 'm5']);
  assert.deepEqual(h.bodies(low), ['m2', 'm3', 'm4']);
});

test('consumer priority: a negative x-priority ranks below the default (0)', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const chNeg = await h.openChannel(conn);
  const chDef = await h.openChannel(conn);
  const q = await h.tmpQueue(chNeg, { exclusive: true }, 'cprio');
  const neg = await recorder(chNeg, q, { noAck: true, priority: -5 });
  const def = await recorder(chDef, q, { noAck: true });
  for (let i = 0; i < 4; i++) chNeg.sendToQueue(q, Buffer.from(`m${i}`));
  await waitLen(def, 4, 'default-priority consumer');
  await h.sleep(100);
  assert.deepEqual(h.bodies(neg), []);
});

// ----------------------------------------------------- x-cancel-on-ha-failover

test('x-cancel-on-ha-failover consume argument is accepted', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true });
  const got = await recorder(ch, q, { noAck: true, arguments: { 'x-cancel-on-ha-failover': true } });
  assert.match(got.consumerTag, /.+/);
  assert.equal((await ch.checkQueue(q)).consumerCount, 1);
  ch.sendToQueue(q, Buffer.from('hello'));
  await waitLen(got, 1, 'consumer');
  assert.equal(got[0].content.toString(), 'hello');
  await ch.cancel(got.consumerTag);
  assert.equal(ch.isClosed, false);
  assert.deepEqual(ch.errors, []);
});
