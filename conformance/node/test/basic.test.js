'use strict';
const { test, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const h = require('./helpers');

afterEach(h.cleanup);

const re = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Collect messages delivered to a consumer into an array (acks are up to the caller). */
async function collector(ch, queue, opts = {}) {
  const got = [];
  const cancels = [];
  const ok = await ch.consume(queue, (m) => { if (m === null) cancels.push(null); else got.push(m); }, opts);
  return { got, cancels, consumerTag: ok.consumerTag };
}

async function until(pred, ms = 3000, what = 'condition') {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await h.sleep(10);
  }
}

test('publish and consume', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true });
  ch.sendToQueue(q, Buffer.from('hello'));
  const { messages, consumerTag } = await h.consumeN(ch, q, 1);
  const m = messages[0];
  assert.equal(m.content.toString(), 'hello');
  assert.equal(m.fields.consumerTag, consumerTag);
  assert.equal(m.fields.deliveryTag, 1);
  assert.equal(m.fields.redelivered, false);
  assert.equal(m.fields.exchange, '');
  assert.equal(m.fields.routingKey, q);
  ch.ack(m);
});

test('delivery tags start at 1 and increase per channel, shared by consumers and get', { timeout: h.T }, async () => {
  const { conn, ch } = await h.connectAndChannel();
  const q1 = await h.tmpQueue(ch, { exclusive: true });
  const q2 = await h.tmpQueue(ch, { exclusive: true });
  for (let i = 0; i < 3; i++) { ch.sendToQueue(q1, Buffer.from('a')); ch.sendToQueue(q2, Buffer.from('b')); }
  await h.waitForCount(ch, q1, 3);
  await h.waitForCount(ch, q2, 3);
  const g = await ch.get(q1);
  assert.equal(g.fields.deliveryTag, 1);
  const { messages } = await h.consumeN(ch, q2, 3);
  assert.deepEqual(messages.map((m) => m.fields.deliveryTag), [2, 3, 4]);
  const g2 = await ch.get(q1);
  assert.equal(g2.fields.deliveryTag, 5);
  // another channel has its own sequence
  const ch2 = await h.openChannel(conn);
  const g3 = await ch2.get(q1);
  assert.equal(g3.fields.deliveryTag, 1);
  ch.ackAll();
  ch2.ackAll();
});

test('message properties round-trip', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true });
  const props = {
    contentType: 'application/json',
    contentEncoding: 'gzip',
    deliveryMode: 2,
    priority: 7,
    correlationId: 'corr-123',
    replyTo: 'reply.queue',
    expiration: '60000',
    messageId: 'msg-456',
    timestamp: 1700000000,
    type: 'my.type',
    userId: 'guest',
    appId: 'conformance',
  };
  ch.sendToQueue(q, Buffer.from('{}'), props);
  const m = await h.getOne(ch, q, { noAck: true });
  const p = m.properties;
  for (const [k, v] of Object.entries(props)) assert.deepEqual(p[k], v, `property ${k}`);
  assert.equal(p.clusterId, undefined);
});

test('absent properties stay absent', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true });
  ch.sendToQueue(q, Buffer.from('bare'));
  const m = await h.getOne(ch, q, { noAck: true });
  for (const k of ['contentType', 'contentEncoding', 'deliveryMode', 'priority', 'correlationId', 'replyTo',
    'expiration', 'messageId', 'timestamp', 'type', 'userId', 'appId', 'clusterId']) {
    assert.equal(m.properties[k], undefined, k);
  }
  // amqplib always sends a (possibly empty) headers table
  assert.deepEqual(m.properties.headers, {});
});

test('header field types round-trip', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true });
  const bytes = crypto.randomBytes(16);
  const headers = {
    str: 'hello ✓ unicode',
    emptyStr: '',
    int8: -5, // encoded as 'b'
    int16: 1000, // 's'
    int32: 100000, // 'I'
    int64: 2 ** 40, // 'l'
    negInt64: -(2 ** 40),
    double: 3.14159,
    float: { '!': 'float', value: 1.5 },
    uint8: { '!': 'unsignedbyte', value: 200 },
    uint16: { '!': 'unsignedshort', value: 60000 },
    uint32: { '!': 'unsignedint', value: 4000000000 },
    boolTrue: true,
    boolFalse: false,
    nothing: null,
    timestamp: { '!': 'timestamp', value: 1700000000 },
    decimal: { '!': 'decimal', value: { places: 2, digits: 12345 } },
    bytes,
    nested: { a: 1, b: 'two', c: { deeper: [1, 'x', true] } },
    array: [1, 'two', 3.5, false, null, { k: 'v' }, [1, 2]],
    emptyArray: [],
    emptyTable: {},
  };
  ch.sendToQueue(q, Buffer.from('h'), { headers });
  const m = await h.getOne(ch, q, { noAck: true });
  const got = m.properties.headers;
  const expected = {
    ...headers,
    // amqplib decodes these tagged types back to their {'!': ...} form
    float: 1.5,
    uint8: 200,
    uint16: 60000,
    uint32: 4000000000,
  };
  assert.deepEqual(Object.keys(got).sort(), Object.keys(expected).sort());
  for (const k of Object.keys(expected)) {
    if (Buffer.isBuffer(expected[k])) {
      assert.ok(Buffer.isBuffer(got[k]), `${k} is a Buffer`);
      assert.ok(got[k].equals(expected[k]), `${k} bytes equal`);
    } else {
      assert.deepEqual(got[k], expected[k], `header ${k}`);
    }
  }
});

test('bodies of 0 bytes, exactly one frame, one byte over, 1 MB', { timeout: h.T }, async () => {
  const { conn, ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true });
  const fm = conn.connection.frameMax; // 131072 with RabbitMQ
  const sizes = [0, 1, fm - 8, fm - 7, fm * 3 + 17, 1024 * 1024];
  const sent = sizes.map((n) => crypto.randomBytes(n));
  sent.forEach((b) => ch.sendToQueue(q, b));
  const { messages } = await h.consumeN(ch, q, sizes.length, { noAck: true });
  assert.deepEqual(messages.map((m) => m.content.length), sizes);
  messages.forEach((m, i) => assert.ok(m.content.equals(sent[i]), `body ${i} (${sizes[i]} bytes) byte-exact`));
});

test('mandatory unroutable message is returned with 312 NO_ROUTE', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const x = await h.tmpExchange(ch, 'direct');
  const ret = h.waitFor(ch, 'return');
  ch.publish(x, 'no.such.key', Buffer.from('bounce'), {
    mandatory: true, messageId: 'm1', headers: { h: 'v' }, contentType: 'text/plain',
  });
  const m = await ret;
  assert.equal(m.fields.replyCode, 312);
  assert.equal(m.fields.replyText, 'NO_ROUTE');
  assert.equal(m.fields.exchange, x);
  assert.equal(m.fields.routingKey, 'no.such.key');
  assert.equal(m.content.toString(), 'bounce');
  assert.equal(m.properties.messageId, 'm1');
  assert.equal(m.properties.contentType, 'text/plain');
  assert.deepEqual(m.properties.headers, { h: 'v' });
  assert.equal(ch.isClosed, false);
});

test('mandatory publish to the default exchange with no such queue is returned', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const ret = h.waitFor(ch, 'return');
  const qn = h.uniq('noq');
  ch.sendToQueue(qn, Buffer.from('x'), { mandatory: true });
  const m = await ret;
  assert.equal(m.fields.replyCode, 312);
  assert.equal(m.fields.replyText, 'NO_ROUTE');
  assert.equal(m.fields.exchange, '');
  assert.equal(m.fields.routingKey, qn);
});

test('non-mandatory unroutable message is silently dropped', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const returned = [];
  ch.on('return', (m) => returned.push(m));
  ch.publish('amq.direct', h.uniq('nobody'), Buffer.from('x'));
  await h.sync(ch);
  await h.sleep(100);
  assert.deepEqual(returned, []);
  assert.equal(ch.isClosed, false);
});

test('consume with a server-generated consumer tag', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true });
  const ok1 = await ch.consume(q, () => {});
  const ok2 = await ch.consume(q, () => {});
  assert.match(ok1.consumerTag, /^amq\.ctag-[A-Za-z0-9_-]{22}$/);
  assert.match(ok2.consumerTag, /^amq\.ctag-/);
  assert.notEqual(ok1.consumerTag, ok2.consumerTag);
  assert.equal((await ch.checkQueue(q)).consumerCount, 2);
});

test('consume from a missing queue fails with 404', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = h.uniq('missing');
  await h.expectChannelClose(ch, () => ch.consume(q, () => {}), 404,
    new RegExp(`^NOT_FOUND - no queue '${re(q)}' in vhost '/'$`));
});

test('basic.get from a missing queue fails with 404', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = h.uniq('missing');
  await h.expectChannelClose(ch, () => ch.get(q), 404,
    new RegExp(`^NOT_FOUND - no queue '${re(q)}' in vhost '/'$`));
});

test('exclusive consumer: a second consumer is refused with 403', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const ch = await h.openChannel(conn);
  const q = await h.tmpQueue(ch);
  await ch.consume(q, () => {}, { exclusive: true });
  const ch2 = await h.openChannel(conn);
  await h.expectChannelClose(ch2, () => ch2.consume(q, () => {}), 403,
    new RegExp(`^ACCESS_REFUSED - queue '${re(q)}' in vhost '/' in exclusive use$`));
  // and from another connection, even asking for exclusive itself
  const other = await h.connect();
  const och = await h.openChannel(other);
  await h.expectChannelClose(och, () => och.consume(q, () => {}, { exclusive: true }), 403,
    new RegExp(`^ACCESS_REFUSED - queue '${re(q)}' in vhost '/' in exclusive use$`));
});

test('exclusive consume on a queue that already has a consumer is refused with 403', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const ch = await h.openChannel(conn);
  const q = await h.tmpQueue(ch);
  await ch.consume(q, () => {});
  const ch2 = await h.openChannel(conn);
  await h.expectChannelClose(ch2, () => ch2.consume(q, () => {}, { exclusive: true }), 403,
    new RegExp(`^ACCESS_REFUSED - queue '${re(q)}' in vhost '/' in exclusive use$`));
});

test('cancel stops deliveries; cancelling an unknown tag is fine', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true });
  const c = await collector(ch, q, { noAck: true });
  ch.sendToQueue(q, Buffer.from('1'));
  await until(() => c.got.length === 1);
  const res = await ch.rpc(h.defs.BasicCancel, { consumerTag: c.consumerTag, nowait: false }, h.defs.BasicCancelOk);
  assert.deepEqual(res, { consumerTag: c.consumerTag });
  ch.sendToQueue(q, Buffer.from('2'));
  await h.waitForCount(ch, q, 1);
  assert.equal(c.got.length, 1);
  assert.equal((await ch.checkQueue(q)).consumerCount, 0);
  const res2 = await ch.rpc(h.defs.BasicCancel, { consumerTag: 'no-such-tag', nowait: false }, h.defs.BasicCancelOk);
  assert.deepEqual(res2, { consumerTag: 'no-such-tag' });
});

test('server sends basic.cancel when the queue is deleted', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const ch = await h.openChannel(conn);
  const q = await h.tmpQueue(ch);
  const c = await collector(ch, q);
  const cancelEv = h.waitFor(ch, 'cancel');
  const other = await h.openChannel(conn);
  await other.deleteQueue(q);
  const fields = await cancelEv;
  assert.equal(fields.consumerTag, c.consumerTag);
  await until(() => c.cancels.length === 1, 3000, 'consumer callback with null');
  assert.equal(ch.isClosed, false, 'channel stays open');
  await ch.checkExchange('amq.direct');
});

test('get / get-empty with message counts', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true });
  assert.equal(await ch.get(q), false);
  for (const b of ['a', 'b', 'c']) ch.sendToQueue(q, Buffer.from(b));
  await h.waitForCount(ch, q, 3);
  const m1 = await ch.get(q, { noAck: true });
  assert.equal(m1.content.toString(), 'a');
  assert.equal(m1.fields.messageCount, 2, 'messages remaining after this one');
  assert.equal(m1.fields.redelivered, false);
  assert.equal(m1.fields.exchange, '');
  assert.equal(m1.fields.routingKey, q);
  const m2 = await ch.get(q);
  assert.equal(m2.fields.messageCount, 1);
  const m3 = await ch.get(q, { noAck: true });
  assert.equal(m3.fields.messageCount, 0);
  assert.equal(await ch.get(q), false);
  ch.ack(m2);
});

test('requeued messages go back to their original position with redelivered=true', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true });
  for (const b of ['1', '2', '3', '4', '5']) ch.sendToQueue(q, Buffer.from(b));
  await h.waitForCount(ch, q, 5);
  const m1 = await ch.get(q);
  const m2 = await ch.get(q);
  const m3 = await ch.get(q);
  ch.reject(m2, true);
  await h.waitForCount(ch, q, 3);
  ch.nack(m3, false, true);
  ch.nack(m1, false, true);
  await h.waitForCount(ch, q, 5);
  const out = [];
  for (let i = 0; i < 5; i++) {
    const m = await ch.get(q, { noAck: true });
    out.push([m.content.toString(), m.fields.redelivered]);
  }
  assert.deepEqual(out, [['1', true], ['2', true], ['3', true], ['4', false], ['5', false]]);
});

test('nack multiple with requeue keeps FIFO order', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true });
  for (let i = 0; i < 6; i++) ch.sendToQueue(q, Buffer.from(String(i)));
  const { messages, consumerTag } = await h.consumeN(ch, q, 6);
  await ch.cancel(consumerTag);
  ch.nack(messages[3], true, true); // 0..3 back
  await h.waitForCount(ch, q, 4);
  ch.nack(messages[5], true, true); // 4..5 back
  await h.waitForCount(ch, q, 6);
  const out = [];
  for (let i = 0; i < 6; i++) {
    const m = await ch.get(q, { noAck: true });
    out.push(m.content.toString() + (m.fields.redelivered ? 'r' : ''));
  }
  assert.deepEqual(out, ['0r', '1r', '2r', '3r', '4r', '5r']);
});

test('ack multiple acks everything up to the tag; reject/nack without requeue drop', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true });
  for (let i = 0; i < 6; i++) ch.sendToQueue(q, Buffer.from(String(i)));
  const { messages, consumerTag } = await h.consumeN(ch, q, 6);
  await ch.cancel(consumerTag);
  ch.ack(messages[2], true); // 0,1,2
  ch.reject(messages[3], false); // dropped
  ch.nack(messages[5], true, false); // 4,5 dropped
  await h.sync(ch);
  // nothing left unacked or ready: recover would redeliver any unacked
  await ch.recover();
  await h.sleep(100);
  assert.equal((await ch.checkQueue(q)).messageCount, 0);
  assert.equal(ch.isClosed, false);
});

test('ack of an unknown delivery tag closes the channel with 406', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const err = await h.expectChannelClose(ch, () => ch.ack({ fields: { deliveryTag: 42 } }), 406,
    /^PRECONDITION_FAILED - unknown delivery tag 42$/);
  assert.equal(err.classId, 60);
  assert.equal(err.methodId, 80); // basic.ack
});

test('double ack closes the channel with 406', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch);
  ch.sendToQueue(q, Buffer.from('x'));
  const m = await h.getOne(ch, q);
  ch.ack(m);
  await h.expectChannelClose(ch, () => ch.ack(m), 406, /^PRECONDITION_FAILED - unknown delivery tag 1$/);
});

test('reject / nack of an unknown delivery tag closes the channel with 406', { timeout: h.T }, async () => {
  const conn = await h.connect();
  let ch = await h.openChannel(conn);
  let err = await h.expectChannelClose(ch, () => ch.reject({ fields: { deliveryTag: 7 } }, true), 406,
    /^PRECONDITION_FAILED - unknown delivery tag 7$/);
  assert.equal(err.methodId, 90); // basic.reject
  ch = await h.openChannel(conn);
  err = await h.expectChannelClose(ch, () => ch.nack({ fields: { deliveryTag: 9 } }, false, true), 406,
    /^PRECONDITION_FAILED - unknown delivery tag 9$/);
  assert.equal(err.methodId, 120); // basic.nack
});

test('ack of a no-ack delivery is an unknown delivery tag (406)', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch);
  ch.sendToQueue(q, Buffer.from('x'));
  const m = await h.getOne(ch, q, { noAck: true });
  assert.equal(m.fields.deliveryTag, 1);
  await h.expectChannelClose(ch, () => ch.ack(m), 406, /^PRECONDITION_FAILED - unknown delivery tag 1$/);
});

test('ack multiple with tag 0 acks everything outstanding', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true });
  for (let i = 0; i < 4; i++) ch.sendToQueue(q, Buffer.from(String(i)));
  await h.waitForCount(ch, q, 4);
  for (let i = 0; i < 4; i++) assert.ok(await ch.get(q));
  ch.ackAll();
  await ch.recover();
  await h.sleep(100);
  assert.equal((await ch.checkQueue(q)).messageCount, 0);
  assert.equal(ch.isClosed, false);
});

test('basic.recover redelivers unacked messages with redelivered=true', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true });
  const c = await collector(ch, q);
  for (const b of ['a', 'b', 'c']) ch.sendToQueue(q, Buffer.from(b));
  await until(() => c.got.length === 3);
  ch.ack(c.got[1]);
  assert.deepEqual(await ch.recover(), {});
  await until(() => c.got.length === 5, 3000, 'redeliveries');
  const again = c.got.slice(3).map((m) => [m.content.toString(), m.fields.redelivered]);
  assert.deepEqual(again, [['a', true], ['c', true]]);
  assert.ok(c.got[3].fields.deliveryTag > 3, 'redeliveries get new delivery tags');
  ch.ackAll();
});

test('per-consumer prefetch limits unacked deliveries per consumer', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true });
  for (let i = 0; i < 10; i++) ch.sendToQueue(q, Buffer.from(String(i)));
  await h.waitForCount(ch, q, 10);
  await ch.prefetch(3, false);
  const c1 = await collector(ch, q);
  const c2 = await collector(ch, q);
  await until(() => c1.got.length + c2.got.length >= 6);
  await h.sleep(200);
  assert.equal(c1.got.length, 3);
  assert.equal(c2.got.length, 3);
  ch.ack(c1.got[0]);
  await until(() => c1.got.length === 4);
  await h.sleep(200);
  assert.equal(c1.got.length, 4);
  assert.equal(c2.got.length, 3);
  ch.ackAll();
});

test('global prefetch limits unacked deliveries across the channel', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true });
  for (let i = 0; i < 10; i++) ch.sendToQueue(q, Buffer.from(String(i)));
  await h.waitForCount(ch, q, 10);
  await ch.prefetch(3, true);
  const c1 = await collector(ch, q);
  const c2 = await collector(ch, q);
  await until(() => c1.got.length + c2.got.length >= 3);
  await h.sleep(300);
  assert.equal(c1.got.length + c2.got.length, 3);
  const first = c1.got[0] || c2.got[0];
  ch.ack(first);
  await until(() => c1.got.length + c2.got.length === 4);
  await h.sleep(200);
  assert.equal(c1.got.length + c2.got.length, 4);
  ch.ackAll();
});

async function prefetchScenario(settings, expectedTotal) {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true });
  for (let i = 0; i < 10; i++) ch.sendToQueue(q, Buffer.from(String(i)));
  await h.waitForCount(ch, q, 10);
  for (const [count, global] of settings) await ch.prefetch(count, global);
  const c1 = await collector(ch, q);
  const c2 = await collector(ch, q);
  // Until the deliveries the limits allow have arrived (a slow machine may
  // take longer than the quiet wait), then a quiet wait for any extra.
  const deadline = Date.now() + 5000;
  while (c1.got.length + c2.got.length < expectedTotal && Date.now() < deadline) await h.sleep(20);
  await h.sleep(400);
  const res = [c1.got.length, c2.got.length];
  ch.ackAll();
  return res;
}

test('per-consumer prefetch after global prefetch: both limits apply', { timeout: h.T }, async () => {
  // qos(3, global=false) then qos(4, global=true): consumer 1 takes 3, the
  // channel-wide limit of 4 leaves 1 for consumer 2.
  assert.deepEqual(await prefetchScenario([[3, false], [4, true]], 4), [3, 1]);
});

test('global prefetch set BEFORE a per-consumer prefetch still applies', { timeout: h.T }, async () => {
  // Deliberate difference from RabbitMQ 3.10, which drops the channel-wide
  // limit when basic.qos(global=false) follows basic.qos(global=true) (there
  // qos(4, true) then qos(3, false) gives [3, 3]). Warren enforces both
  // limits whatever the order (see shared/RABBITMQ-NOTES.md), so this test
  // fails against RabbitMQ by design; run.sh skips it there.
  if (process.env.CONFORMANCE_TARGET === 'rabbitmq') return;
  assert.deepEqual(await prefetchScenario([[4, true], [3, false]], 4), [3, 1]);
  assert.deepEqual(await prefetchScenario([[2, true], [3, false]], 2), [2, 0]);
});

test('prefetch does not apply to no-ack consumers', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true });
  for (let i = 0; i < 10; i++) ch.sendToQueue(q, Buffer.from(String(i)));
  await ch.prefetch(1);
  const { messages } = await h.consumeN(ch, q, 10, { noAck: true });
  assert.equal(messages.length, 10);
});

test('competing consumers receive messages round-robin', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const ch = await h.openChannel(conn);
  const q = await h.tmpQueue(ch, { exclusive: true });
  const cA = await h.openChannel(conn);
  const cB = await h.openChannel(conn);
  const a = await collector(cA, q, { noAck: true });
  const b = await collector(cB, q, { noAck: true });
  for (let i = 0; i < 10; i++) ch.sendToQueue(q, Buffer.from(String(i)));
  await until(() => a.got.length + b.got.length === 10);
  const aBodies = h.bodies(a.got).map(Number);
  const bBodies = h.bodies(b.got).map(Number);
  assert.equal(aBodies.length, 5);
  assert.equal(bBodies.length, 5);
  // strictly alternating: one consumer gets the even, the other the odd ones
  const evens = [0, 2, 4, 6, 8];
  const odds = [1, 3, 5, 7, 9];
  assert.ok(
    (JSON.stringify(aBodies) === JSON.stringify(evens) && JSON.stringify(bBodies) === JSON.stringify(odds)) ||
    (JSON.stringify(aBodies) === JSON.stringify(odds) && JSON.stringify(bBodies) === JSON.stringify(evens)),
    `round-robin: a=${aBodies} b=${bBodies}`);
});

test('user_id must match the authenticated user (406 otherwise)', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch);
  await h.expectChannelClose(ch, () => { ch.sendToQueue(q, Buffer.from('x'), { userId: 'mallory' }); }, 406,
    /^PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user was 'guest'$/);
});
