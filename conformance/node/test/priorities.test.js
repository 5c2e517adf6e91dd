'use strict';
// Priority queues (x-max-priority), recorded against RabbitMQ 3.10.
const { test, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

afterEach(h.cleanup);

test('priority queue delivers higher priorities first', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true, maxPriority: 10 });
  ch.sendToQueue(q, Buffer.from('low'), { priority: 1 });
  ch.sendToQueue(q, Buffer.from('none'));
  ch.sendToQueue(q, Buffer.from('high'), { priority: 9 });
  ch.sendToQueue(q, Buffer.from('mid'), { priority: 5 });
  ch.sendToQueue(q, Buffer.from('high2'), { priority: 9 });
  await h.waitForCount(ch, q, 5);
  const out = [];
  for (let i = 0; i < 5; i++) out.push((await ch.get(q, { noAck: true })).content.toString());
  assert.deepEqual(out, ['high', 'high2', 'mid', 'low', 'none']);
});

test('priority queue: a priority above x-max-priority counts as the maximum; requeue keeps the order', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true, maxPriority: 3 });
  ch.sendToQueue(q, Buffer.from('p3'), { priority: 3 });
  ch.sendToQueue(q, Buffer.from('p200'), { priority: 200 });
  ch.sendToQueue(q, Buffer.from('p1'), { priority: 1 });
  await h.waitForCount(ch, q, 3);
  const first = await h.getOne(ch, q);
  assert.equal(first.content.toString(), 'p3');
  ch.nack(first, false, true);
  await h.sync(ch);
  const out = [];
  for (let i = 0; i < 3; i++) out.push((await h.getOne(ch, q, { noAck: true })).content.toString());
  assert.deepEqual(out, ['p3', 'p200', 'p1']);
});
