'use strict';
// RabbitMQ queue extensions (TTL, length limits, dead-lettering, priorities,
// reject-publish). Recorded against RabbitMQ 3.10. Warren builds these in a
// later issue; until then conformance/run.sh leaves this file out when it
// runs against Warren (set CONFORMANCE_EXTENSIONS=1 to include it).
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

test('publisher confirm nack for a rejected publish (x-overflow reject-publish)', { timeout: h.T }, async () => {
  const ch = await h.openChannel(await h.connect(), { confirm: true });
  const q = await h.tmpQueue(ch, { exclusive: true, maxLength: 1, overflow: 'reject-publish' });
  const results = [];
  const nacks = [];
  ch.on('nack', (f) => nacks.push(f.deliveryTag));
  ch.sendToQueue(q, Buffer.from('fits'), {}, (err) => results.push(err === null ? 'ack' : 'nack'));
  ch.sendToQueue(q, Buffer.from('overflows'), {}, (err) => results.push(err === null ? 'ack' : 'nack'));
  await assert.rejects(h.withTimeout(ch.waitForConfirms(), 5000, 'waitForConfirms'));
  await h.sleep(50);
  assert.deepEqual(results, ['ack', 'nack']);
  assert.deepEqual(nacks, [2]);
  assert.equal((await ch.checkQueue(q)).messageCount, 1);
});

test('x-message-ttl expires messages', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true, messageTtl: 100 });
  ch.sendToQueue(q, Buffer.from('short-lived'));
  await h.sleep(400);
  assert.equal(await ch.get(q, { noAck: true }), false);
});

test('per-message expiration expires the message', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true });
  ch.sendToQueue(q, Buffer.from('short'), { expiration: '100' });
  ch.sendToQueue(q, Buffer.from('long'), { expiration: '60000' });
  await h.sleep(400);
  const m = await ch.get(q, { noAck: true });
  assert.equal(m.content.toString(), 'long');
  assert.equal(m.properties.expiration, '60000');
  assert.equal(await ch.get(q, { noAck: true }), false);
});

test('x-max-length drops from the head by default', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true, maxLength: 2 });
  for (const b of ['1', '2', '3', '4']) ch.sendToQueue(q, Buffer.from(b));
  await h.waitForCount(ch, q, 2);
  assert.equal((await ch.get(q, { noAck: true })).content.toString(), '3');
  assert.equal((await ch.get(q, { noAck: true })).content.toString(), '4');
});

test('dead-lettering of a rejected message', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const dlx = await h.tmpExchange(ch, 'fanout');
  const dlq = await h.tmpQueue(ch, { exclusive: true });
  await ch.bindQueue(dlq, dlx, '');
  const q = await h.tmpQueue(ch, { exclusive: true, deadLetterExchange: dlx });
  ch.sendToQueue(q, Buffer.from('dead'));
  const m = await h.getOne(ch, q);
  ch.reject(m, false);
  const d = await h.getOne(ch, dlq, { noAck: true });
  assert.equal(d.content.toString(), 'dead');
  const death = d.properties.headers['x-death'];
  assert.ok(Array.isArray(death));
  assert.equal(death[0].queue, q);
  assert.equal(death[0].reason, 'rejected');
  assert.equal(death[0].count, 1);
  assert.equal(death[0].exchange, '');
  assert.deepEqual(death[0]['routing-keys'], [q]);
});
