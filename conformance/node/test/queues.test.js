'use strict';
const { test, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

afterEach(h.cleanup);

const re = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Poll (passive declare on fresh channels) until `q` is gone (404). */
async function waitForQueueGone(conn, q, msg, ms = 3000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const c = await h.openChannel(conn);
    try {
      await c.checkQueue(q);
    } catch (e) {
      assert.equal(e.code, 404);
      return;
    }
    assert.ok(Date.now() < deadline, msg);
    await c.close();
    await h.sleep(50);
  }
}

test('server-named queue gets an amq.gen- name', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const ok = await ch.assertQueue('', { exclusive: true, durable: false });
  h.trackQueue(ok.queue);
  assert.match(ok.queue, /^amq\.gen-[A-Za-z0-9_-]{22}$/);
  assert.equal(ok.messageCount, 0);
  assert.equal(ok.consumerCount, 0);
  const ok2 = await ch.assertQueue('', { exclusive: true, durable: false });
  h.trackQueue(ok2.queue);
  assert.notEqual(ok2.queue, ok.queue);
});

test('client-named queue with amq. prefix is refused with 403', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const name = 'amq.' + h.uniq('q');
  h.trackQueue(name);
  await h.expectChannelClose(ch, () => ch.assertQueue(name, { durable: false }), 403,
    new RegExp(`^ACCESS_REFUSED - queue name '${re(name)}' contains reserved prefix 'amq\\.\\*'$`));
});

test('passive declare of a missing queue fails with 404', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const name = h.uniq('missing');
  await h.expectChannelClose(ch, () => ch.checkQueue(name), 404,
    new RegExp(`^NOT_FOUND - no queue '${re(name)}' in vhost '/'$`));
});

test('declare-ok reports ready message count and consumer count', { timeout: h.T }, async () => {
  const { conn, ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch);
  for (let i = 0; i < 5; i++) ch.sendToQueue(q, Buffer.from(String(i)));
  let ok = await h.waitForCount(ch, q, 5);
  assert.deepEqual(ok, { queue: q, messageCount: 5, consumerCount: 0 });
  // a non-passive identical redeclare reports the same
  ok = await ch.assertQueue(q, { durable: false });
  assert.deepEqual(ok, { queue: q, messageCount: 5, consumerCount: 0 });
  // one consumer with prefetch 1 holds one unacked message: it is not counted
  const cch = await h.openChannel(conn);
  await cch.prefetch(1);
  await h.consumeN(cch, q, 1);
  ok = await h.waitForCount(ch, q, 4);
  assert.deepEqual(ok, { queue: q, messageCount: 4, consumerCount: 1 });
});

test('redeclare with different durable is refused with 406', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch);
  await h.expectChannelClose(ch, () => ch.assertQueue(q, { durable: true }), 406,
    new RegExp(`^PRECONDITION_FAILED - inequivalent arg 'durable' for queue '${re(q)}' in vhost '/': received 'true' but current is 'false'$`));
});

test('redeclare with different auto_delete is refused with 406', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch);
  await h.expectChannelClose(ch, () => ch.assertQueue(q, { durable: false, autoDelete: true }), 406,
    new RegExp(`^PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue '${re(q)}' in vhost '/': received 'true' but current is 'false'$`));
});

test('redeclare with a different x-message-ttl argument is refused with 406', { timeout: h.T }, async () => {
  const { conn, ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { messageTtl: 60000 });
  await h.expectChannelClose(ch, () => ch.assertQueue(q, { durable: false, messageTtl: 30000 }), 406,
    new RegExp(`^PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '${re(q)}' in vhost '/': received '30000' but current is '60000'$`));
  const ch2 = await h.openChannel(conn);
  await h.expectChannelClose(ch2, () => ch2.assertQueue(q, { durable: false }), 406,
    new RegExp(`^PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '${re(q)}' in vhost '/': received none but current is the value '60000' of type 'signedint'$`));
});

test('redeclare with an equal x-message-ttl of another integer type is accepted', { timeout: h.T }, async () => {
  // RabbitMQ compares the numeric value: signedint 60000 == long 60000.
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { messageTtl: 60000 });
  await ch.assertQueue(q, { durable: false, arguments: { 'x-message-ttl': { '!': 'long', value: 60000 } } });
});

test('redeclare with a different exclusive flag is refused with 405 (even on the same connection)', { timeout: h.T }, async () => {
  // NB RabbitMQ answers RESOURCE_LOCKED here, not PRECONDITION_FAILED.
  const conn = await h.connect();
  let ch = await h.openChannel(conn);
  const shared = await h.tmpQueue(ch);
  const excl = await h.tmpQueue(ch, { exclusive: true });
  const lockedRe = (q) => new RegExp(`^RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '${re(q)}' in vhost '/'\\. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration\\.$`);
  await h.expectChannelClose(ch, () => ch.assertQueue(shared, { durable: false, exclusive: true }), 405, lockedRe(shared));
  ch = await h.openChannel(conn);
  await h.expectChannelClose(ch, () => ch.assertQueue(excl, { durable: false, exclusive: false }), 405, lockedRe(excl));
  ch = await h.openChannel(conn);
  await ch.assertQueue(excl, { durable: false, exclusive: true });
});

test('an invalid x-message-ttl type is refused with 406', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const name = h.uniq('q');
  h.trackQueue(name);
  await h.expectChannelClose(ch, () => ch.assertQueue(name, { durable: false, arguments: { 'x-message-ttl': 'soon' } }), 406,
    new RegExp(`^PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue '${re(name)}' in vhost '/'`));
});

test('exclusive queue: other connections get 405 RESOURCE_LOCKED', { timeout: h.T }, async () => {
  const owner = await h.connect();
  const och = await h.openChannel(owner);
  const q = await h.tmpQueue(och, { exclusive: true });
  const other = await h.connect();
  const lockedRe = new RegExp(`^RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '${re(q)}' in vhost '/'`);
  const ops = {
    declare: (ch) => ch.assertQueue(q, { durable: false, exclusive: true }),
    passive: (ch) => ch.checkQueue(q),
    consume: (ch) => ch.consume(q, () => {}),
    get: (ch) => ch.get(q),
    purge: (ch) => ch.purgeQueue(q),
    bind: (ch) => ch.bindQueue(q, 'amq.fanout', ''),
    delete: (ch) => ch.deleteQueue(q),
  };
  for (const [name, op] of Object.entries(ops)) {
    const ch = await h.openChannel(other);
    const err = await h.expectChannelClose(ch, () => op(ch), 405, lockedRe);
    assert.equal(err.code, 405, name);
  }
  // publishing to it from another connection is allowed
  const pch = await h.openChannel(other);
  pch.sendToQueue(q, Buffer.from('hello'));
  await h.sync(pch);
  assert.equal((await h.waitForCount(och, q, 1)).messageCount, 1);
  assert.equal(other.isClosed, false);
});

test('exclusive queue is deleted when its connection closes', { timeout: h.T }, async () => {
  const owner = await h.connect();
  const och = await h.openChannel(owner);
  const q = await h.tmpQueue(och, { exclusive: true });
  const checker = await h.connect();
  await h.safeClose(owner);
  // deletion is asynchronous with respect to the close-ok
  await waitForQueueGone(checker, q, 'exclusive queue still exists after its connection closed');
});

test('exclusive queue survives closing the declaring channel', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const ch1 = await h.openChannel(conn);
  const q = await h.tmpQueue(ch1, { exclusive: true });
  await ch1.close();
  const ch2 = await h.openChannel(conn);
  assert.equal((await ch2.checkQueue(q)).queue, q);
});

test('auto-delete queue is deleted when its last consumer cancels, not before', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const ch = await h.openChannel(conn);
  const q = await h.tmpQueue(ch, { autoDelete: true });
  // never had a consumer: stays
  await h.sleep(100);
  await ch.checkQueue(q);
  const c1 = await ch.consume(q, () => {});
  const c2 = await ch.consume(q, () => {});
  await ch.cancel(c1.consumerTag);
  assert.equal((await ch.checkQueue(q)).consumerCount, 1);
  await ch.cancel(c2.consumerTag);
  await waitForQueueGone(conn, q, 'auto-delete queue still exists');
});

test('auto-delete queue is deleted when the consuming channel closes', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const ch = await h.openChannel(conn);
  const q = await h.tmpQueue(ch, { autoDelete: true });
  const cch = await h.openChannel(conn);
  await cch.consume(q, () => {});
  await cch.close();
  await waitForQueueGone(conn, q, 'auto-delete queue still exists');
});

test('queue bind / unbind', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true });
  const x = await h.tmpExchange(ch, 'direct');
  assert.deepEqual(await ch.bindQueue(q, x, 'rk'), {});
  await ch.bindQueue(q, x, 'rk'); // idempotent
  ch.publish(x, 'rk', Buffer.from('1'));
  await h.sync(ch);
  assert.equal((await h.waitForCount(ch, q, 1)).messageCount, 1);
  assert.deepEqual(await ch.unbindQueue(q, x, 'rk'), {});
  ch.publish(x, 'rk', Buffer.from('2'));
  await h.sync(ch);
  assert.equal((await ch.checkQueue(q)).messageCount, 1);
});

test('purge returns the number of messages purged (unacked ones are kept)', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true });
  for (let i = 0; i < 7; i++) ch.sendToQueue(q, Buffer.from(String(i)));
  await h.waitForCount(ch, q, 7);
  const held = await ch.get(q); // one unacked
  assert.ok(held);
  assert.deepEqual(await ch.purgeQueue(q), { messageCount: 6 });
  assert.deepEqual(await ch.purgeQueue(q), { messageCount: 0 });
  ch.nack(held, false, true); // back into the queue
  assert.equal((await h.waitForCount(ch, q, 1)).messageCount, 1);
});

test('queue.delete returns the message count', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch);
  for (let i = 0; i < 3; i++) ch.sendToQueue(q, Buffer.from(String(i)));
  await h.waitForCount(ch, q, 3);
  assert.deepEqual(await ch.deleteQueue(q), { messageCount: 3 });
  await h.expectChannelClose(ch, () => ch.checkQueue(q), 404, /^NOT_FOUND/);
});

test('queue.delete ifUnused fails with 406 while there is a consumer', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const ch = await h.openChannel(conn);
  const q = await h.tmpQueue(ch);
  const { consumerTag } = await ch.consume(q, () => {});
  const other = await h.openChannel(conn);
  await h.expectChannelClose(other, () => other.deleteQueue(q, { ifUnused: true }), 406,
    new RegExp(`^PRECONDITION_FAILED - queue '${re(q)}' in vhost '/' in use$`));
  await ch.cancel(consumerTag);
  assert.deepEqual(await ch.deleteQueue(q, { ifUnused: true }), { messageCount: 0 });
});

test('queue.delete ifEmpty fails with 406 while there are messages', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const ch = await h.openChannel(conn);
  const q = await h.tmpQueue(ch);
  ch.sendToQueue(q, Buffer.from('x'));
  await h.waitForCount(ch, q, 1);
  const other = await h.openChannel(conn);
  await h.expectChannelClose(other, () => other.deleteQueue(q, { ifEmpty: true }), 406,
    new RegExp(`^PRECONDITION_FAILED - queue '${re(q)}' in vhost '/' not empty$`));
  await ch.purgeQueue(q);
  assert.deepEqual(await ch.deleteQueue(q, { ifEmpty: true }), { messageCount: 0 });
});

test('deleting a missing queue succeeds with message count 0', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  assert.deepEqual(await ch.deleteQueue(h.uniq('missing')), { messageCount: 0 });
  assert.deepEqual(await ch.deleteQueue(h.uniq('missing'), { ifUnused: true, ifEmpty: true }), { messageCount: 0 });
  await ch.checkExchange('amq.direct');
});
