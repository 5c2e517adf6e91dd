'use strict';
// Message TTL, dead-lettering and queue length limits: the RabbitMQ queue
// arguments x-message-ttl, x-dead-letter-exchange, x-dead-letter-routing-key,
// x-max-length, x-max-length-bytes and x-overflow, and the per-message
// `expiration` property. Recorded against RabbitMQ 3.10.8 (x-death as in 3.10:
// one entry per {queue, reason}, most recent first; no x-last-death-* headers).
const { test, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const frame = require('amqplib/lib/frame');
const h = require('./helpers');

afterEach(h.cleanup);

// ---------------------------------------------------------------- helpers

/** A fanout dead-letter exchange with one queue bound to it. */
async function deadLetterTarget(ch) {
  const dlx = await h.tmpExchange(ch, 'fanout', {}, 'dlx');
  const dlq = await h.tmpQueue(ch, { exclusive: true }, 'dlq');
  await ch.bindQueue(dlq, dlx, '');
  return { dlx, dlq };
}

/** basic.get that fails the test if nothing arrives within `ms`. */
async function mustGet(ch, queue, opts = {}, ms = 3000) {
  const m = await h.getOne(ch, queue, opts, ms);
  assert.ok(m, `expected a message on ${queue} within ${ms} ms`);
  return m;
}

const xDeath = (m) => (m.properties.headers || {})['x-death'];
const deathSummary = (m) => (xDeath(m) || []).map((d) => [d.queue, d.reason, d.count]);

/** Seconds since the epoch of an amqplib-decoded timestamp ({'!': 'timestamp', value}). */
function timestampSeconds(v) {
  assert.equal(typeof v, 'object');
  assert.equal(v['!'], 'timestamp');
  return v.value;
}

/**
 * Record the raw payload of every content-header frame received on `conn`,
 * so that a test can look at field-table value types, which amqplib's
 * decoder drops (a 64-bit 'l' and a 32-bit 'I' both become a JS number).
 */
function captureContentHeaders(conn) {
  const c = conn.connection;
  const orig = c.recvFrame;
  const payloads = [];
  c.recvFrame = function recvFrameSpy() {
    const f = frame.parseFrame(this.rest);
    if (f && f.type === 2) payloads.push(Buffer.from(f.payload));
    return orig.call(this); // recurses through this.recvFrame when it must read more
  };
  return payloads;
}

const FIXED_SIZES = { t: 1, b: 1, B: 1, s: 2, u: 2, I: 4, i: 4, f: 4, L: 8, d: 8, D: 5, V: 0 };

/** Decode one field value keeping its type tag: [{ tag, value }, nextOffset]. */
function typedValue(b, off) {
  const tag = String.fromCharCode(b[off++]);
  switch (tag) {
    case 'S':
    case 'x': {
      const n = b.readUInt32BE(off);
      return [{ tag, value: b.toString('utf8', off + 4, off + 4 + n) }, off + 4 + n];
    }
    case 'l': return [{ tag, value: Number(b.readBigInt64BE(off)) }, off + 8];
    case 'T': return [{ tag, value: Number(b.readBigUInt64BE(off)) }, off + 8];
    case 'A': {
      const end = off + 4 + b.readUInt32BE(off);
      const value = [];
      off += 4;
      while (off < end) { let v; [v, off] = typedValue(b, off); value.push(v); }
      return [{ tag, value }, end];
    }
    case 'F': {
      const [value, end] = typedTable(b, off);
      return [{ tag, value }, end];
    }
    default:
      assert.ok(tag in FIXED_SIZES, `unknown field type tag ${JSON.stringify(tag)}`);
      return [{ tag }, off + FIXED_SIZES[tag]];
  }
}

/** Decode a field table keeping type tags: [{ key: { tag, value } }, nextOffset]. */
function typedTable(b, off) {
  const end = off + 4 + b.readUInt32BE(off);
  const out = {};
  off += 4;
  while (off < end) {
    const klen = b[off];
    const key = b.toString('utf8', off + 1, off + 1 + klen);
    off += 1 + klen;
    [out[key], off] = typedValue(b, off);
  }
  return [out, end];
}

/** The headers table (type-tagged) of a raw basic content-header payload. */
function typedHeaders(payload) {
  let off = 12; // class-id, weight, body size
  const flags = payload.readUInt16BE(off);
  off += 2;
  if (flags & 0x8000) off += 1 + payload[off]; // content-type
  if (flags & 0x4000) off += 1 + payload[off]; // content-encoding
  if (!(flags & 0x2000)) return undefined;
  return typedTable(payload, off)[0];
}

// ---------------------------------------------------------------- TTL

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

test('x-message-ttl and per-message expiration: the lower one wins', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  // queue TTL lower than the message's expiration
  const qa = await h.tmpQueue(ch, { exclusive: true, messageTtl: 100 });
  ch.sendToQueue(qa, Buffer.from('queue-ttl-wins'), { expiration: '60000' });
  // message expiration lower than the queue TTL; a message without one stays
  const qb = await h.tmpQueue(ch, { exclusive: true, messageTtl: 60000 });
  ch.sendToQueue(qb, Buffer.from('message-ttl-wins'), { expiration: '100' });
  ch.sendToQueue(qb, Buffer.from('stays'));
  await h.waitForCount(ch, qa, 0, 3000);
  await h.waitForCount(ch, qb, 1, 3000);
  assert.equal((await ch.get(qb, { noAck: true })).content.toString(), 'stays');
});

test('per-message TTL only takes effect at the head of the queue', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const { dlx, dlq } = await deadLetterTarget(ch);
  const q = await h.tmpQueue(ch, { exclusive: true, deadLetterExchange: dlx });
  ch.sendToQueue(q, Buffer.from('long'), { expiration: '60000' });
  ch.sendToQueue(q, Buffer.from('short'), { expiration: '50' });
  await h.sleep(300);
  // 'short' has expired but sits behind 'long': still counted, not dead-lettered
  assert.equal((await ch.checkQueue(q)).messageCount, 2);
  assert.equal((await ch.checkQueue(dlq)).messageCount, 0);
  assert.equal((await ch.get(q, { noAck: true })).content.toString(), 'long');
  // now at the head, it goes
  assert.equal(await ch.get(q, { noAck: true }), false);
  const d = await mustGet(ch, dlq, { noAck: true });
  assert.equal(d.content.toString(), 'short');
  assert.deepEqual(deathSummary(d), [[q, 'expired', 1]]);
  assert.equal((await ch.checkQueue(q)).messageCount, 0);
});

test('TTL 0: delivered to a waiting consumer, expired when nobody is there', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const { dlx, dlq } = await deadLetterTarget(ch);
  const q = await h.tmpQueue(ch, { exclusive: true, messageTtl: 0, deadLetterExchange: dlx });
  ch.sendToQueue(q, Buffer.from('nobody-home'));
  await h.sync(ch);
  assert.equal((await ch.checkQueue(q)).messageCount, 0);
  assert.equal(await ch.get(q, { noAck: true }), false);
  const d = await mustGet(ch, dlq, { noAck: true });
  assert.equal(d.content.toString(), 'nobody-home');
  assert.deepEqual(deathSummary(d), [[q, 'expired', 1]]);
  // per-message expiration "0" on a queue without TTL: same
  const plain = await h.tmpQueue(ch, { exclusive: true });
  ch.sendToQueue(plain, Buffer.from('gone'), { expiration: '0' });
  ch.sendToQueue(plain, Buffer.from('after'));
  await h.waitForCount(ch, plain, 1);
  assert.equal((await ch.get(plain, { noAck: true })).content.toString(), 'after');
  // with a consumer waiting, the message is delivered
  const got = [];
  await ch.consume(q, (m) => { if (m) got.push(m); }, { noAck: true });
  ch.sendToQueue(q, Buffer.from('someone-home'));
  const deadline = Date.now() + 3000;
  while (got.length === 0 && Date.now() < deadline) await h.sleep(10);
  assert.deepEqual(h.bodies(got), ['someone-home']);
  assert.equal((await ch.checkQueue(dlq)).messageCount, 0);
});

// ------------------------------------------------------- dead-lettering

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

test('nack with requeue=false dead-letters like reject (multiple too)', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const { dlx, dlq } = await deadLetterTarget(ch);
  const q = await h.tmpQueue(ch, { exclusive: true, deadLetterExchange: dlx });
  ch.sendToQueue(q, Buffer.from('n1'));
  ch.sendToQueue(q, Buffer.from('n2'));
  await mustGet(ch, q);
  const second = await mustGet(ch, q);
  ch.nack(second, true, false); // multiple, no requeue
  await h.waitForCount(ch, dlq, 2, 3000);
  const d1 = await mustGet(ch, dlq, { noAck: true });
  const d2 = await mustGet(ch, dlq, { noAck: true });
  assert.deepEqual([d1.content.toString(), d2.content.toString()], ['n1', 'n2']);
  for (const d of [d1, d2]) {
    assert.deepEqual(deathSummary(d), [[q, 'rejected', 1]]);
    assert.equal(xDeath(d)[0].exchange, '');
    assert.deepEqual(xDeath(d)[0]['routing-keys'], [q]);
    assert.equal(d.properties.headers['x-first-death-reason'], 'rejected');
  }
  assert.equal((await ch.checkQueue(q)).messageCount, 0);
});

test('x-dead-letter-routing-key replaces the routing key (x-death keeps the original)', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const dlx = await h.tmpExchange(ch, 'direct', {}, 'dlx');
  const parked = await h.tmpQueue(ch, { exclusive: true }, 'parked');
  const byOriginalKey = await h.tmpQueue(ch, { exclusive: true }, 'orig');
  await ch.bindQueue(parked, dlx, 'parked');
  const q = await h.tmpQueue(ch, { exclusive: true, deadLetterExchange: dlx, deadLetterRoutingKey: 'parked' });
  await ch.bindQueue(byOriginalKey, dlx, q);
  ch.sendToQueue(q, Buffer.from('rerouted'));
  ch.reject(await mustGet(ch, q), false);
  const d = await mustGet(ch, parked, { noAck: true });
  assert.equal(d.content.toString(), 'rerouted');
  assert.equal(d.fields.exchange, dlx);
  assert.equal(d.fields.routingKey, 'parked');
  assert.deepEqual(deathSummary(d), [[q, 'rejected', 1]]);
  assert.deepEqual(xDeath(d)[0]['routing-keys'], [q]);
  assert.equal(xDeath(d)[0].exchange, '');
  assert.equal((await ch.checkQueue(byOriginalKey)).messageCount, 0);
});

test('expired message dead-lettered with reason expired and original-expiration; expiration removed', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const { dlx, dlq } = await deadLetterTarget(ch);
  const q = await h.tmpQueue(ch, { exclusive: true, deadLetterExchange: dlx });
  const before = Math.floor(Date.now() / 1000);
  ch.sendToQueue(q, Buffer.from('ttl'), { expiration: '100', messageId: 'm-ttl', headers: { h: 'v' } });
  const d = await mustGet(ch, dlq, { noAck: true });
  assert.equal(d.content.toString(), 'ttl');
  assert.equal(d.fields.exchange, dlx);
  assert.equal(d.fields.routingKey, q);
  assert.equal(d.properties.expiration, undefined);
  assert.equal(d.properties.messageId, 'm-ttl');
  const hdr = d.properties.headers;
  assert.equal(hdr.h, 'v');
  assert.equal(hdr['x-first-death-queue'], q);
  assert.equal(hdr['x-first-death-reason'], 'expired');
  assert.equal(hdr['x-first-death-exchange'], '');
  const death = hdr['x-death'];
  assert.equal(death.length, 1);
  const e = death[0];
  assert.deepEqual(Object.keys(e).sort(),
    ['count', 'exchange', 'original-expiration', 'queue', 'reason', 'routing-keys', 'time']);
  assert.equal(e.queue, q);
  assert.equal(e.reason, 'expired');
  assert.equal(e.count, 1);
  assert.equal(e.exchange, '');
  assert.deepEqual(e['routing-keys'], [q]);
  assert.equal(e['original-expiration'], '100');
  const t = timestampSeconds(e.time);
  assert.ok(t >= before - 5 && t <= Date.now() / 1000 + 5, `x-death time ${t}`);
  assert.equal((await ch.checkQueue(q)).messageCount, 0);
});

test('retry pattern: reject -> wait queue with TTL -> back to work; x-death after three rounds', { timeout: h.T }, async () => {
  const { conn, ch } = await h.connectAndChannel();
  const rawHeaders = captureContentHeaders(conn);
  const workX = await h.tmpExchange(ch, 'direct', {}, 'work');
  const retryX = await h.tmpExchange(ch, 'direct', {}, 'retry');
  const work = await h.tmpQueue(ch, { exclusive: true, deadLetterExchange: retryX }, 'work');
  const wait = await h.tmpQueue(ch, { exclusive: true, messageTtl: 50, deadLetterExchange: workX }, 'wait');
  await ch.bindQueue(work, workX, 'task');
  await ch.bindQueue(wait, retryX, 'task');
  const before = Math.floor(Date.now() / 1000);
  ch.publish(workX, 'task', Buffer.from('job'), { messageId: 'job-1' });
  for (let round = 1; round <= 3; round++) {
    const m = await mustGet(ch, work);
    assert.equal(m.content.toString(), 'job');
    assert.deepEqual(deathSummary(m),
      round === 1 ? [] : [[wait, 'expired', round - 1], [work, 'rejected', round - 1]],
      `x-death at the start of round ${round}`);
    ch.reject(m, false);
  }
  const m = await mustGet(ch, work, { noAck: true });
  assert.equal(m.content.toString(), 'job');
  assert.equal(m.properties.messageId, 'job-1');
  assert.equal(m.fields.exchange, workX);
  assert.equal(m.fields.routingKey, 'task');
  const hdr = m.properties.headers;
  assert.deepEqual(Object.keys(hdr).sort(),
    ['x-death', 'x-first-death-exchange', 'x-first-death-queue', 'x-first-death-reason']);
  assert.equal(hdr['x-first-death-queue'], work);
  assert.equal(hdr['x-first-death-reason'], 'rejected');
  assert.equal(hdr['x-first-death-exchange'], workX);
  const death = hdr['x-death'];
  assert.equal(death.length, 2);
  const [expired, rejected] = death; // most recent first
  for (const e of death) {
    assert.deepEqual(Object.keys(e).sort(), ['count', 'exchange', 'queue', 'reason', 'routing-keys', 'time']);
    const t = timestampSeconds(e.time);
    assert.ok(t >= before - 5 && t <= Date.now() / 1000 + 5, `x-death time ${t}`);
  }
  assert.equal(expired.queue, wait);
  assert.equal(expired.reason, 'expired');
  assert.equal(expired.count, 3);
  assert.equal(expired.exchange, retryX);
  assert.deepEqual(expired['routing-keys'], ['task']);
  assert.equal(rejected.queue, work);
  assert.equal(rejected.reason, 'rejected');
  assert.equal(rejected.count, 3);
  assert.equal(rejected.exchange, workX);
  assert.deepEqual(rejected['routing-keys'], ['task']);
  // wire types: x-death is an array of tables; count a signed 64-bit integer
  // ('l'), time a timestamp ('T'), the names long strings ('S')
  const typed = typedHeaders(rawHeaders[rawHeaders.length - 1]);
  assert.equal(typed['x-death'].tag, 'A');
  assert.equal(typed['x-first-death-queue'].tag, 'S');
  assert.equal(typed['x-first-death-reason'].tag, 'S');
  assert.equal(typed['x-first-death-exchange'].tag, 'S');
  assert.equal(typed['x-death'].value.length, 2);
  for (const entry of typed['x-death'].value) {
    assert.equal(entry.tag, 'F');
    const e = entry.value;
    assert.deepEqual({ tag: e.count.tag, value: e.count.value }, { tag: 'l', value: 3 });
    assert.equal(e.time.tag, 'T');
    for (const k of ['queue', 'reason', 'exchange']) assert.equal(e[k].tag, 'S', k);
    assert.equal(e['routing-keys'].tag, 'A');
    assert.deepEqual(e['routing-keys'].value, [{ tag: 'S', value: 'task' }]);
  }
});

test('expiry-only dead-letter cycle back into the same queue is dropped; a rejected one is not', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  // expiry: DLX = default exchange, DLRK = the queue itself
  const loop = h.uniq('cycle');
  await h.tmpQueue(ch, {
    name: loop,
    exclusive: true,
    arguments: { 'x-message-ttl': 50, 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': loop },
  });
  ch.sendToQueue(loop, Buffer.from('loops'));
  await h.sleep(300);
  for (let i = 0; i < 5; i++) {
    assert.equal((await ch.checkQueue(loop)).messageCount, 0, 'expired message was not re-queued');
    await h.sleep(30);
  }
  assert.equal(await ch.get(loop, { noAck: true }), false);
  // rejection: allowed to come back to the same queue, again and again
  const back = h.uniq('reject-back');
  await h.tmpQueue(ch, {
    name: back,
    exclusive: true,
    arguments: { 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': back },
  });
  ch.sendToQueue(back, Buffer.from('again'));
  ch.reject(await mustGet(ch, back), false);
  const m1 = await mustGet(ch, back);
  assert.equal(m1.content.toString(), 'again');
  assert.equal(m1.fields.redelivered, false);
  assert.deepEqual(deathSummary(m1), [[back, 'rejected', 1]]);
  assert.equal(xDeath(m1)[0].exchange, '');
  assert.deepEqual(xDeath(m1)[0]['routing-keys'], [back]);
  ch.reject(m1, false);
  const m2 = await mustGet(ch, back, { noAck: true });
  assert.deepEqual(deathSummary(m2), [[back, 'rejected', 2]]);
});

// --------------------------------------------------------- length limits

test('x-max-length drops from the head by default', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true, maxLength: 2 });
  for (const b of ['1', '2', '3', '4']) ch.sendToQueue(q, Buffer.from(b));
  await h.waitForCount(ch, q, 2);
  assert.equal((await ch.get(q, { noAck: true })).content.toString(), '3');
  assert.equal((await ch.get(q, { noAck: true })).content.toString(), '4');
});

test('x-max-length drop-head dead-letters the head with reason maxlen', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const { dlx, dlq } = await deadLetterTarget(ch);
  const q = await h.tmpQueue(ch, { exclusive: true, maxLength: 2, overflow: 'drop-head', deadLetterExchange: dlx });
  for (const b of ['1', '2', '3']) ch.sendToQueue(q, Buffer.from(b));
  const d = await mustGet(ch, dlq, { noAck: true });
  assert.equal(d.content.toString(), '1');
  assert.deepEqual(deathSummary(d), [[q, 'maxlen', 1]]);
  assert.equal(xDeath(d)[0].exchange, '');
  assert.deepEqual(xDeath(d)[0]['routing-keys'], [q]);
  assert.equal(d.properties.headers['x-first-death-reason'], 'maxlen');
  assert.equal((await ch.checkQueue(q)).messageCount, 2);
  assert.equal((await ch.get(q, { noAck: true })).content.toString(), '2');
  assert.equal((await ch.get(q, { noAck: true })).content.toString(), '3');
});

test('x-max-length-bytes counts body bytes and drops from the head', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true, arguments: { 'x-max-length-bytes': 10 } });
  for (const b of ['aaaa', 'bbbb', 'cccc']) ch.sendToQueue(q, Buffer.from(b));
  await h.waitForCount(ch, q, 2);
  assert.equal((await ch.get(q, { noAck: true })).content.toString(), 'bbbb');
  assert.equal((await ch.get(q, { noAck: true })).content.toString(), 'cccc');
  // exactly at the limit is allowed
  ch.sendToQueue(q, Buffer.from('0123456789'));
  await h.waitForCount(ch, q, 1);
  assert.equal((await ch.get(q, { noAck: true })).content.toString(), '0123456789');
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

test('x-overflow reject-publish without confirms drops the message silently (not dead-lettered)', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const { dlx, dlq } = await deadLetterTarget(ch);
  const q = await h.tmpQueue(ch, { exclusive: true, maxLength: 1, overflow: 'reject-publish', deadLetterExchange: dlx });
  for (const b of ['kept', 'dropped-1', 'dropped-2']) ch.sendToQueue(q, Buffer.from(b));
  // RabbitMQ: a passive declare right after basic.publish can overtake the
  // enqueue (pika saw 0 here), so wait for the first and then re-check.
  await h.waitForCount(ch, q, 1);
  await h.sleep(100);
  assert.equal((await ch.checkQueue(q)).messageCount, 1);
  assert.equal((await ch.checkQueue(dlq)).messageCount, 0);
  assert.equal(ch.isClosed, false);
  assert.deepEqual(ch.errors, []);
  assert.equal((await ch.get(q, { noAck: true })).content.toString(), 'kept');
  // room again: the next publish is accepted
  ch.sendToQueue(q, Buffer.from('after'));
  assert.equal((await mustGet(ch, q, { noAck: true })).content.toString(), 'after');
});

test('x-overflow reject-publish-dlx: publisher gets a nack and the message is dead-lettered (maxlen)', { timeout: h.T }, async () => {
  const ch = await h.openChannel(await h.connect(), { confirm: true });
  const { dlx, dlq } = await deadLetterTarget(ch);
  const q = await h.tmpQueue(ch, { exclusive: true, maxLength: 1, overflow: 'reject-publish-dlx', deadLetterExchange: dlx });
  const results = [];
  ch.sendToQueue(q, Buffer.from('fits'), {}, (err) => results.push(err === null ? 'ack' : 'nack'));
  ch.sendToQueue(q, Buffer.from('overflows'), {}, (err) => results.push(err === null ? 'ack' : 'nack'));
  await assert.rejects(h.withTimeout(ch.waitForConfirms(), 5000, 'waitForConfirms'));
  await h.sleep(50);
  assert.deepEqual(results, ['ack', 'nack']);
  const d = await mustGet(ch, dlq, { noAck: true });
  assert.equal(d.content.toString(), 'overflows');
  assert.deepEqual(deathSummary(d), [[q, 'maxlen', 1]]);
  assert.equal(xDeath(d)[0].exchange, '');
  assert.deepEqual(xDeath(d)[0]['routing-keys'], [q]);
  assert.equal((await ch.checkQueue(q)).messageCount, 1);
  assert.equal((await ch.get(q, { noAck: true })).content.toString(), 'fits');
});

// ------------------------------------------------------ queue expiry (x-expires)

/** Passive declare on a throwaway channel: true if the queue exists, else the close error. */
async function queueExists(conn, queue) {
  const ch = await h.openChannel(conn);
  try {
    await ch.checkQueue(queue);
    await ch.close();
    return true;
  } catch (e) {
    return e;
  }
}

// A passive declare counts as use and renews the lease in RabbitMQ, so these
// tests sleep past x-expires and then look once (polling would keep the
// queue alive).
test('x-expires deletes an unused queue (messages in it do not count as use)', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const ch = await h.openChannel(conn);
  const q = await h.tmpQueue(ch, { expires: 300 }, 'expires');
  ch.sendToQueue(q, Buffer.from('left behind'));
  await h.sync(ch);
  await h.sleep(800);
  const err = await queueExists(conn, q);
  assert.notEqual(err, true, 'queue still exists after x-expires');
  assert.equal(h.replyCode(err), 404);
  assert.match(h.replyText(err), /^NOT_FOUND - no queue/);
});

test('x-expires: a queue with a consumer is kept; once cancelled it expires', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const ch = await h.openChannel(conn);
  const q = await h.tmpQueue(ch, { expires: 300 }, 'expires');
  const { consumerTag } = await ch.consume(q, () => {}, { noAck: true });
  await h.sleep(800);
  assert.equal(await queueExists(conn, q), true, 'queue with a consumer was deleted');
  await ch.cancel(consumerTag);
  await h.sleep(800);
  const err = await queueExists(conn, q);
  assert.notEqual(err, true, 'queue still exists after the consumer left');
  assert.equal(h.replyCode(err), 404);
});

test('x-expires: basic.get counts as use', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { expires: 300 }, 'expires');
  for (let i = 0; i < 8; i++) {
    await h.sleep(100);
    await ch.get(q, { noAck: true });
  }
  assert.equal((await ch.checkQueue(q)).messageCount, 0);
});

test('x-expires must be a positive integer (406)', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = h.trackQueue(h.uniq('expires'));
  await h.expectChannelClose(ch, ch.assertQueue(q, { expires: 0 }), 406,
    /^PRECONDITION_FAILED - invalid arg 'x-expires' for queue/);
});

// ------------------------------------------ delivery limit (quorum queues)

// RabbitMQ 3.10 supports x-delivery-limit only on quorum queues (durable, not
// exclusive, not auto-delete); x-delivery-count is added at delivery time.
test('x-delivery-limit (quorum queue): basic.get + nack requeue until dead-lettered with reason delivery_limit', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const dlq = await h.tmpQueue(ch, {}, 'dl-dlq');
  const q = await h.tmpQueue(ch, {
    durable: true,
    arguments: {
      'x-queue-type': 'quorum',
      'x-delivery-limit': 2,
      'x-dead-letter-exchange': '',
      'x-dead-letter-routing-key': dlq,
    },
  }, 'dl-qq');
  ch.sendToQueue(q, Buffer.from('poison'), { headers: { app: 'v' } });
  const counts = [];
  const redelivered = [];
  for (let i = 0; i < 3; i++) {
    const m = await mustGet(ch, q);
    assert.equal(m.content.toString(), 'poison');
    assert.equal(m.properties.headers.app, 'v');
    counts.push(m.properties.headers['x-delivery-count']);
    redelivered.push(m.fields.redelivered);
    ch.nack(m, false, true);
  }
  // basic.get in RabbitMQ 3.10 shows x-delivery-count from the first delivery on
  assert.deepEqual(counts, [0, 1, 2], 'x-delivery-count on deliveries 1..3');
  assert.deepEqual(redelivered, [false, true, true]);
  // the third return exceeds the limit of 2: dead-lettered, not redelivered
  const d = await mustGet(ch, dlq, { noAck: true });
  assert.equal(await ch.get(q, { noAck: true }), false);
  assert.equal(d.content.toString(), 'poison');
  assert.equal(d.fields.exchange, '');
  assert.equal(d.fields.routingKey, dlq);
  assert.equal(d.fields.redelivered, false);
  assert.deepEqual(deathSummary(d), [[q, 'delivery_limit', 1]]);
  assert.equal(xDeath(d)[0].exchange, '');
  assert.deepEqual(xDeath(d)[0]['routing-keys'], [q]);
  const hdr = d.properties.headers;
  assert.equal(hdr.app, 'v');
  assert.equal(hdr['x-first-death-reason'], 'delivery_limit');
  assert.equal(hdr['x-first-death-queue'], q);
  assert.equal(hdr['x-first-death-exchange'], '');
  assert.equal(hdr['x-delivery-count'], undefined, 'dead-lettered message carries x-delivery-count');
  assert.equal((await ch.checkQueue(q)).messageCount, 0);
  await ch.deleteQueue(q);
});

test('x-delivery-limit (quorum queue): with basic.consume the first delivery has no x-delivery-count', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const dlq = await h.tmpQueue(ch, {}, 'dl-dlq');
  const q = await h.tmpQueue(ch, {
    durable: true,
    arguments: {
      'x-queue-type': 'quorum',
      'x-delivery-limit': 2,
      'x-dead-letter-exchange': '',
      'x-dead-letter-routing-key': dlq,
    },
  }, 'dl-qq');
  await ch.prefetch(1);
  const seen = [];
  await ch.consume(q, (m) => {
    if (!m) return;
    seen.push([m.fields.redelivered, (m.properties.headers || {})['x-delivery-count']]);
    ch.nack(m, false, true);
  });
  ch.sendToQueue(q, Buffer.from('poison'));
  const d = await mustGet(ch, dlq, { noAck: true });
  assert.deepEqual(seen, [[false, undefined], [true, 1], [true, 2]]);
  assert.deepEqual(deathSummary(d), [[q, 'delivery_limit', 1]]);
  await ch.deleteQueue(q);
});
