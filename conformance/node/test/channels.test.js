'use strict';
const { test, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

afterEach(h.cleanup);

test('channel open and close, reuse of the connection', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const ch1 = await h.openChannel(conn);
  await ch1.close();
  assert.equal(ch1.isClosed, true);
  const ch2 = await h.openChannel(conn);
  const q = await h.tmpQueue(ch2, { exclusive: true });
  const ok = await ch2.checkQueue(q);
  assert.equal(ok.queue, q);
  await ch2.close();
  assert.equal(conn.isClosed, false);
});

test('soft error (passive declare of a missing queue) closes only the channel', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const ch = await h.openChannel(conn);
  const other = await h.openChannel(conn);
  const missing = h.uniq('missing');
  const err = await h.expectChannelClose(ch, () => ch.checkQueue(missing), 404,
    new RegExp(`^NOT_FOUND - no queue '${missing.replace(/\./g, '\\.')}' in vhost '/'$`));
  assert.equal(err.classId, 50); // queue
  assert.equal(err.methodId, 10); // declare
  // the closed channel cannot be used any more
  assert.throws(() => ch.sendToQueue('x', Buffer.from('x')), /Channel closed/);
  // the connection and the other channel are still fine
  assert.equal(conn.isClosed, false);
  const q = await h.tmpQueue(other, { exclusive: true });
  const ch3 = await h.openChannel(conn);
  assert.equal((await ch3.checkQueue(q)).queue, q);
  assert.deepEqual(conn.errors, []);
});

test('a channel can be reopened after a soft error and the old channel number is reused', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const ch = await h.openChannel(conn);
  const num = ch.ch;
  await h.expectChannelClose(ch, () => ch.checkExchange(h.uniq('nox')), 404, /^NOT_FOUND - no exchange/);
  const ch2 = await h.openChannel(conn);
  assert.equal(ch2.ch, num);
  await ch2.checkExchange('amq.fanout');
});

test('hard error: exchange.declare with unknown type closes the connection with 503', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const ch = await h.openChannel(conn);
  const other = await h.openChannel(conn);
  const name = h.uniq('x');
  h.trackExchange(name);
  const err = await h.expectConnectionClose(conn,
    () => ch.assertExchange(name, 'no-such-type', { durable: false }),
    503, /^COMMAND_INVALID - unknown exchange type 'no-such-type'$/);
  assert.ok(err);
  assert.equal(ch.isClosed, true);
  assert.equal(other.isClosed, true);
  assert.equal(conn.errors.length, 1);
  assert.equal(conn.errors[0].code, 503);
});

test('hard error: basic.qos with prefetch_size != 0 closes the connection with 540', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const ch = await h.openChannel(conn);
  await h.expectConnectionClose(conn,
    () => ch.rpc(h.defs.BasicQos, { prefetchSize: 1000, prefetchCount: 0, global: false }, h.defs.BasicQosOk),
    540, /^NOT_IMPLEMENTED - prefetch_size!=0 \(1000\)$/);
});

test('basic.qos global=true and global=false both succeed', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  assert.deepEqual(await ch.prefetch(10, true), {});
  assert.deepEqual(await ch.prefetch(5, false), {});
  assert.deepEqual(await ch.prefetch(0, false), {});
});

test('hard error: a duplicate consumer tag on one channel closes the connection with 530', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const ch = await h.openChannel(conn);
  const q = await h.tmpQueue(ch, { exclusive: true });
  const tag = h.uniq('ctag');
  const ok = await ch.consume(q, () => {}, { consumerTag: tag });
  assert.equal(ok.consumerTag, tag);
  await h.expectConnectionClose(conn, () => ch.consume(q, () => {}, { consumerTag: tag }),
    530, new RegExp(`^NOT_ALLOWED - attempt to reuse consumer tag '${tag.replace(/\./g, '\\.')}'$`));
});

test('the same consumer tag on two different channels is fine', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const ch1 = await h.openChannel(conn);
  const ch2 = await h.openChannel(conn);
  const q = await h.tmpQueue(ch1, { exclusive: true });
  const tag = h.uniq('ctag');
  assert.equal((await ch1.consume(q, () => {}, { consumerTag: tag })).consumerTag, tag);
  assert.equal((await ch2.consume(q, () => {}, { consumerTag: tag })).consumerTag, tag);
  const ok = await ch1.checkQueue(q);
  assert.equal(ok.consumerCount, 2);
});

test('soft error: publishing to a missing exchange closes the channel with 404', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const ch = await h.openChannel(conn);
  const x = h.uniq('nox');
  await h.expectChannelClose(ch, () => { ch.publish(x, 'rk', Buffer.from('x')); }, 404,
    new RegExp(`^NOT_FOUND - no exchange '${x.replace(/\./g, '\\.')}' in vhost '/'$`));
  assert.equal(ch.errors[0].classId, 60); // basic
  assert.equal(ch.errors[0].methodId, 40); // publish
  assert.equal(conn.isClosed, false);
});

test('soft error on one channel does not affect consumers on another', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const good = await h.openChannel(conn);
  const bad = await h.openChannel(conn);
  const q = await h.tmpQueue(good, { exclusive: true });
  const got = [];
  await good.consume(q, (m) => got.push(m.content.toString()), { noAck: true });
  await h.expectChannelClose(bad, () => bad.checkQueue(h.uniq('missing')), 404, /^NOT_FOUND/);
  good.sendToQueue(q, Buffer.from('still-here'));
  const deadline = Date.now() + 3000;
  while (got.length < 1 && Date.now() < deadline) await h.sleep(20);
  assert.deepEqual(got, ['still-here']);
});
