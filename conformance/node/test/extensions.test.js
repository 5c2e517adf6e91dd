'use strict';
// RabbitMQ queue extensions that Warren does not implement yet: priority
// queues (x-max-priority). Recorded against RabbitMQ 3.10. conformance/run.sh
// leaves this file out when it runs against Warren (set
// CONFORMANCE_EXTENSIONS=1 to include it). TTL, dead-lettering and length
// limits, which Warren implements, are in ttl_dlx_limits.test.js.
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
