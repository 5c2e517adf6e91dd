'use strict';
const { test, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

afterEach(h.cleanup);

const re = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Drain every message currently in `queue` (basic.get, no-ack) and return the bodies. */
async function drain(ch, queue) {
  const out = [];
  for (;;) {
    const m = await ch.get(queue, { noAck: true });
    if (!m) return out;
    out.push(m.content.toString());
  }
}

test('default exchange routes by queue name', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q1 = await h.tmpQueue(ch, { exclusive: true });
  const q2 = await h.tmpQueue(ch, { exclusive: true });
  ch.publish('', q1, Buffer.from('one'));
  ch.sendToQueue(q2, Buffer.from('two'));
  ch.publish('', h.uniq('nobody'), Buffer.from('lost'));
  await h.waitForCount(ch, q1, 1);
  await h.waitForCount(ch, q2, 1);
  assert.deepEqual(await drain(ch, q1), ['one']);
  assert.deepEqual(await drain(ch, q2), ['two']);
});

test('passive declare of the default exchange "" is refused with 403', { timeout: h.T }, async () => {
  // RabbitMQ refuses even a passive declare of "" (it does not pretend the
  // default exchange can be looked up).
  const { ch } = await h.connectAndChannel();
  await h.expectChannelClose(ch, () => ch.checkExchange(''), 403,
    /^ACCESS_REFUSED - operation not permitted on the default exchange$/);
});

test('exchange.declare of the default exchange "" is refused with 403', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  await h.expectChannelClose(ch, () => ch.assertExchange('', 'direct', { durable: true }), 403,
    /^ACCESS_REFUSED - operation not permitted on the default exchange$/);
});

test('exchange.delete of the default exchange "" is refused with 403', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  await h.expectChannelClose(ch, () => ch.deleteExchange(''), 403,
    /^ACCESS_REFUSED - operation not permitted on the default exchange$/);
});

test('binding a queue to the default exchange is refused with 403', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch);
  await h.expectChannelClose(ch, () => ch.bindQueue(q, '', 'foo'), 403,
    /^ACCESS_REFUSED - operation not permitted on the default exchange$/);
});

test('declaring a new amq.* exchange is refused with 403', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const name = 'amq.' + h.uniq('custom');
  h.trackExchange(name);
  await h.expectChannelClose(ch, () => ch.assertExchange(name, 'direct', { durable: false }), 403,
    new RegExp(`^ACCESS_REFUSED - exchange name '${re(name)}' contains reserved prefix 'amq\\.\\*'$`));
});

test('deleting a pre-declared amq.* exchange is refused with 403', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  await h.expectChannelClose(ch, () => ch.deleteExchange('amq.direct'), 403,
    /^ACCESS_REFUSED - deletion of system exchange 'amq\.direct' in vhost '\/' not allowed$/);
});

test('pre-declared exchanges exist with their types', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  for (const [name, type] of [['amq.direct', 'direct'], ['amq.fanout', 'fanout'], ['amq.topic', 'topic'],
    ['amq.headers', 'headers'], ['amq.match', 'headers']]) {
    await ch.checkExchange(name);
    // identical redeclare is fine (they are durable)
    await ch.assertExchange(name, type, { durable: true });
  }
});

test('redeclaring amq.direct with a different type is refused with 406', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  await h.expectChannelClose(ch, () => ch.assertExchange('amq.direct', 'fanout', { durable: true }), 406,
    /^PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'amq\.direct' in vhost '\/': received 'fanout' but current is 'direct'$/);
});

test('redeclaring amq.direct as non-durable is refused with 406', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  await h.expectChannelClose(ch, () => ch.assertExchange('amq.direct', 'direct', { durable: false }), 406,
    /^PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'amq\.direct' in vhost '\/': received 'false' but current is 'true'$/);
});

test('passive declare of a missing exchange fails with 404', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const name = h.uniq('missing');
  const err = await h.expectChannelClose(ch, () => ch.checkExchange(name), 404,
    new RegExp(`^NOT_FOUND - no exchange '${re(name)}' in vhost '/'$`));
  assert.equal(err.classId, 40);
  assert.equal(err.methodId, 10);
});

test('identical redeclare of an exchange succeeds', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const x = await h.tmpExchange(ch, 'topic', { autoDelete: false });
  await ch.assertExchange(x, 'topic', { durable: false });
  await ch.checkExchange(x);
});

for (const [what, opts, re2] of [
  ['type', ['fanout', { durable: false }], /^PRECONDITION_FAILED - inequivalent arg 'type' for exchange '[^']+' in vhost '\/': received 'fanout' but current is 'direct'$/],
  ['durable', ['direct', { durable: true }], /^PRECONDITION_FAILED - inequivalent arg 'durable' for exchange '[^']+' in vhost '\/': received 'true' but current is 'false'$/],
  ['auto_delete', ['direct', { durable: false, autoDelete: true }], /^PRECONDITION_FAILED - inequivalent arg 'auto_delete' for exchange '[^']+' in vhost '\/': received 'true' but current is 'false'$/],
  ['internal', ['direct', { durable: false, internal: true }], /^PRECONDITION_FAILED - inequivalent arg 'internal' for exchange '[^']+' in vhost '\/': received 'true' but current is 'false'$/],
]) {
  test(`redeclaring an exchange with a different ${what} is refused with 406`, { timeout: h.T }, async () => {
    const { ch } = await h.connectAndChannel();
    const x = await h.tmpExchange(ch, 'direct');
    await h.expectChannelClose(ch, () => ch.assertExchange(x, ...opts), 406, re2);
  });
}

test('redeclaring an exchange with a different alternate-exchange argument is refused with 406', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const x = await h.tmpExchange(ch, 'direct', { alternateExchange: 'amq.fanout' });
  await h.expectChannelClose(ch, () => ch.assertExchange(x, 'direct', { durable: false, alternateExchange: 'amq.topic' }), 406,
    /^PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange '[^']+' in vhost '\/'/);
});

test('exchange.delete ifUnused fails with 406 while the exchange has bindings', { timeout: h.T }, async () => {
  const { conn, ch } = await h.connectAndChannel();
  const x = await h.tmpExchange(ch, 'fanout');
  const q = await h.tmpQueue(ch, { exclusive: true });
  await ch.bindQueue(q, x, '');
  await h.expectChannelClose(ch, () => ch.deleteExchange(x, { ifUnused: true }), 406,
    new RegExp(`^PRECONDITION_FAILED - exchange '${re(x)}' in vhost '/' in use$`));
  const ch2 = await h.openChannel(conn);
  await ch2.checkExchange(x); // still there
  await ch2.unbindQueue(q, x, '');
  await ch2.deleteExchange(x, { ifUnused: true });
  await h.expectChannelClose(ch2, () => ch2.checkExchange(x), 404, /^NOT_FOUND/);
});

test('exchange.delete ifUnused succeeds when the exchange is only a binding destination', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const src = await h.tmpExchange(ch, 'fanout');
  const dst = await h.tmpExchange(ch, 'fanout');
  await ch.bindExchange(dst, src, '');
  await ch.deleteExchange(dst, { ifUnused: true });
  await h.expectChannelClose(ch, () => ch.checkExchange(dst), 404, /^NOT_FOUND/);
});

test('deleting a missing exchange succeeds', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  await ch.deleteExchange(h.uniq('missing'));
  await ch.deleteExchange(h.uniq('missing'), { ifUnused: true });
  await ch.checkExchange('amq.direct'); // channel still open
});

test('deleting an exchange removes its bindings', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const x = await h.tmpExchange(ch, 'fanout');
  const q = await h.tmpQueue(ch, { exclusive: true });
  await ch.bindQueue(q, x, '');
  await ch.deleteExchange(x);
  await ch.assertExchange(x, 'fanout', { durable: false });
  ch.publish(x, '', Buffer.from('after recreate'));
  await h.sync(ch);
  assert.equal((await ch.checkQueue(q)).messageCount, 0);
});

test('auto-delete exchange is deleted when its last binding is removed', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const x = await h.tmpExchange(ch, 'fanout', { autoDelete: true });
  const q = await h.tmpQueue(ch, { exclusive: true });
  await ch.checkExchange(x); // not deleted just because it never had bindings
  await ch.bindQueue(q, x, '');
  await ch.unbindQueue(q, x, '');
  await h.expectChannelClose(ch, () => ch.checkExchange(x), 404, /^NOT_FOUND/);
});

test('binding to a missing exchange or a missing queue fails with 404', { timeout: h.T }, async () => {
  const conn = await h.connect();
  let ch = await h.openChannel(conn);
  const q = await h.tmpQueue(ch, { exclusive: true });
  const nox = h.uniq('nox');
  await h.expectChannelClose(ch, () => ch.bindQueue(q, nox, 'rk'), 404,
    new RegExp(`^NOT_FOUND - no exchange '${re(nox)}' in vhost '/'$`));
  ch = await h.openChannel(conn);
  const noq = h.uniq('noq');
  await h.expectChannelClose(ch, () => ch.bindQueue(noq, 'amq.direct', 'rk'), 404,
    new RegExp(`^NOT_FOUND - no queue '${re(noq)}' in vhost '/'$`));
  ch = await h.openChannel(conn);
  await h.expectChannelClose(ch, () => ch.bindExchange(nox, 'amq.direct', 'rk'), 404,
    new RegExp(`^NOT_FOUND - no exchange '${re(nox)}' in vhost '/'$`));
});

test('unbinding a binding that does not exist succeeds', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true });
  await ch.unbindQueue(q, 'amq.direct', h.uniq('never-bound'));
  await ch.checkQueue(q);
});

test('direct exchange routes on exact routing key only, one copy per queue', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const x = await h.tmpExchange(ch, 'direct');
  const qa = await h.tmpQueue(ch, { exclusive: true });
  const qb = await h.tmpQueue(ch, { exclusive: true });
  await ch.bindQueue(qa, x, 'a');
  await ch.bindQueue(qa, x, 'both');
  await ch.bindQueue(qb, x, 'b');
  await ch.bindQueue(qb, x, 'both');
  await ch.bindQueue(qb, x, 'b'); // duplicate binding is a no-op
  for (const k of ['a', 'b', 'both', 'A', 'a.b', '', 'c']) ch.publish(x, k, Buffer.from(k));
  await h.sync(ch);
  assert.deepEqual(await drain(ch, qa), ['a', 'both']);
  assert.deepEqual(await drain(ch, qb), ['b', 'both']);
});

test('fanout exchange ignores the routing key', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const x = await h.tmpExchange(ch, 'fanout');
  const q1 = await h.tmpQueue(ch, { exclusive: true });
  const q2 = await h.tmpQueue(ch, { exclusive: true });
  await ch.bindQueue(q1, x, 'whatever');
  await ch.bindQueue(q2, x, '');
  await ch.bindQueue(q2, x, 'second'); // second binding: still one copy
  ch.publish(x, 'k1', Buffer.from('m1'));
  ch.publish(x, '', Buffer.from('m2'));
  await h.sync(ch);
  assert.deepEqual(await drain(ch, q1), ['m1', 'm2']);
  assert.deepEqual(await drain(ch, q2), ['m1', 'm2']);
});

test('topic exchange matching (*, #, empty words, empty key)', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const x = await h.tmpExchange(ch, 'topic');
  const patterns = ['a.b.c', 'a.*.c', 'a.#', '#', '*', 'a.#.c', '#.c', '*.*', '', 'a.*', '#.#', 'a..c', '*.b.#'];
  const keys = ['a.b.c', 'a.c', 'a', '', 'a.b', 'a..c', 'a.x.y.c', 'b.c', '.', 'a.b.c.d', 'x.b'];
  const queues = {};
  for (const p of patterns) {
    queues[p] = await h.tmpQueue(ch, { exclusive: true });
    await ch.bindQueue(queues[p], x, p);
  }
  for (const k of keys) ch.publish(x, k, Buffer.from(k));
  await h.sync(ch);
  const got = {};
  for (const p of patterns) got[p] = await drain(ch, queues[p]);
  // Observed RabbitMQ 3.10 results (words are split on '.', empty words are
  // words; '#' matches zero or more words, '*' exactly one, possibly empty).
  assert.deepEqual(got, {
    'a.b.c': ['a.b.c'],
    'a.*.c': ['a.b.c', 'a..c'],
    'a.#': ['a.b.c', 'a.c', 'a', 'a.b', 'a..c', 'a.x.y.c', 'a.b.c.d'],
    '#': keys,
    '*': ['a'],
    'a.#.c': ['a.b.c', 'a.c', 'a..c', 'a.x.y.c'],
    '#.c': ['a.b.c', 'a.c', 'a..c', 'a.x.y.c', 'b.c'],
    '*.*': ['a.c', 'a.b', 'b.c', '.', 'x.b'],
    '': [''],
    'a.*': ['a.c', 'a.b'],
    '#.#': keys,
    'a..c': ['a..c'],
    '*.b.#': ['a.b.c', 'a.b', 'a.b.c.d', 'x.b'],
  });
});

test('topic exchange delivers one copy when several bindings of a queue match', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true });
  const x = await h.tmpExchange(ch, 'topic');
  await ch.bindQueue(q, x, 'a.*');
  await ch.bindQueue(q, x, '#');
  await ch.bindQueue(q, x, 'a.b');
  ch.publish(x, 'a.b', Buffer.from('once'));
  await h.sync(ch);
  assert.deepEqual(await drain(ch, q), ['once']);
});

test('headers exchange: x-match all / any / no keys', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const x = await h.tmpExchange(ch, 'headers');
  const qAll = await h.tmpQueue(ch, { exclusive: true });
  const qAny = await h.tmpQueue(ch, { exclusive: true });
  const qEmptyAll = await h.tmpQueue(ch, { exclusive: true });
  const qEmptyAny = await h.tmpQueue(ch, { exclusive: true });
  const qDefault = await h.tmpQueue(ch, { exclusive: true });
  await ch.bindQueue(qAll, x, '', { 'x-match': 'all', color: 'red', size: 'big' });
  await ch.bindQueue(qAny, x, '', { 'x-match': 'any', color: 'red', size: 'big' });
  await ch.bindQueue(qEmptyAll, x, '', { 'x-match': 'all' });
  await ch.bindQueue(qEmptyAny, x, '', { 'x-match': 'any' });
  await ch.bindQueue(qDefault, x, '', { color: 'red', size: 'big' }); // default is all
  const msgs = {
    both: { color: 'red', size: 'big' },
    'both+extra': { color: 'red', size: 'big', shape: 'round' },
    color: { color: 'red' },
    wrong: { color: 'blue', size: 'small' },
    'wrong-value': { color: 'red', size: 'small' },
    none: undefined,
  };
  for (const [body, headers] of Object.entries(msgs)) ch.publish(x, 'ignored', Buffer.from(body), { headers });
  await h.sync(ch);
  assert.deepEqual(await drain(ch, qAll), ['both', 'both+extra']);
  assert.deepEqual(await drain(ch, qDefault), ['both', 'both+extra']);
  assert.deepEqual(await drain(ch, qAny), ['both', 'both+extra', 'color', 'wrong-value']);
  // x-match all with no keys matches everything; any with no keys matches nothing
  assert.deepEqual(await drain(ch, qEmptyAll), Object.keys(msgs));
  assert.deepEqual(await drain(ch, qEmptyAny), []);
});

test('headers exchange: values compare by type and value, x- headers in bindings are ignored', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const x = await h.tmpExchange(ch, 'headers');
  const qNum = await h.tmpQueue(ch, { exclusive: true });
  const qX = await h.tmpQueue(ch, { exclusive: true });
  await ch.bindQueue(qNum, x, '', { 'x-match': 'all', n: 42 });
  await ch.bindQueue(qX, x, '', { 'x-match': 'all', 'x-custom': 'foo', k: 'v' });
  ch.publish(x, '', Buffer.from('num'), { headers: { n: 42 } });
  ch.publish(x, '', Buffer.from('str'), { headers: { n: '42' } });
  ch.publish(x, '', Buffer.from('kv'), { headers: { k: 'v' } });
  ch.publish(x, '', Buffer.from('kv+x'), { headers: { k: 'v', 'x-custom': 'foo' } });
  await h.sync(ch);
  assert.deepEqual(await drain(ch, qNum), ['num']);
  assert.deepEqual(await drain(ch, qX), ['kv', 'kv+x']);
});

test('exchange-to-exchange bindings: bind, route, unbind', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const src = await h.tmpExchange(ch, 'topic');
  const dst = await h.tmpExchange(ch, 'direct');
  const q = await h.tmpQueue(ch, { exclusive: true });
  await ch.bindQueue(q, dst, 'k.1');
  await ch.bindExchange(dst, src, 'k.*');
  ch.publish(src, 'k.1', Buffer.from('via-src'));
  ch.publish(src, 'k.2', Buffer.from('src-no-dst-binding'));
  ch.publish(src, 'z.1', Buffer.from('src-no-match'));
  ch.publish(dst, 'k.1', Buffer.from('direct-to-dst'));
  await h.sync(ch);
  assert.deepEqual(await drain(ch, q), ['via-src', 'direct-to-dst']);
  await ch.unbindExchange(dst, src, 'k.*');
  ch.publish(src, 'k.1', Buffer.from('after-unbind'));
  await h.sync(ch);
  assert.deepEqual(await drain(ch, q), []);
});

test('exchange-to-exchange cycles deliver a single copy', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const x1 = await h.tmpExchange(ch, 'fanout');
  const x2 = await h.tmpExchange(ch, 'fanout');
  const q = await h.tmpQueue(ch, { exclusive: true });
  await ch.bindExchange(x2, x1, '');
  await ch.bindExchange(x1, x2, '');
  await ch.bindQueue(q, x1, '');
  await ch.bindQueue(q, x2, '');
  ch.publish(x1, '', Buffer.from('one'));
  await h.sync(ch);
  assert.deepEqual(await drain(ch, q), ['one']);
});

test('alternate-exchange receives unroutable messages', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const ae = await h.tmpExchange(ch, 'fanout');
  const x = await h.tmpExchange(ch, 'direct', { alternateExchange: ae });
  const qMain = await h.tmpQueue(ch, { exclusive: true });
  const qAe = await h.tmpQueue(ch, { exclusive: true });
  await ch.bindQueue(qMain, x, 'routed');
  await ch.bindQueue(qAe, ae, '');
  const returned = [];
  ch.on('return', (m) => returned.push(m.content.toString()));
  ch.publish(x, 'routed', Buffer.from('r'), { mandatory: true });
  ch.publish(x, 'unrouted', Buffer.from('u'), { mandatory: true });
  await h.sync(ch);
  assert.deepEqual(await drain(ch, qMain), ['r']);
  const m = await h.getOne(ch, qAe, { noAck: true });
  assert.equal(m.content.toString(), 'u');
  assert.equal(m.fields.exchange, x, 'delivered with the original exchange name');
  assert.equal(m.fields.routingKey, 'unrouted');
  assert.deepEqual(returned, [], 'no basic.return when the AE routed it');
});

test('alternate-exchange that does not exist: message is dropped / returned', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const x = await h.tmpExchange(ch, 'direct', { alternateExchange: h.uniq('missing-ae') });
  const ret = h.waitFor(ch, 'return');
  ch.publish(x, 'nowhere', Buffer.from('u'), { mandatory: true });
  const m = await ret;
  assert.equal(m.fields.replyCode, 312);
  assert.equal(m.fields.replyText, 'NO_ROUTE');
});

test('publishing to an internal exchange is refused with 403', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const x = await h.tmpExchange(ch, 'fanout', { internal: true });
  await h.expectChannelClose(ch, () => { ch.publish(x, '', Buffer.from('nope')); }, 403,
    new RegExp(`^ACCESS_REFUSED - cannot publish to internal exchange '${re(x)}' in vhost '/'$`));
});

test('an internal exchange still routes messages arriving via an exchange binding', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const internal = await h.tmpExchange(ch, 'fanout', { internal: true });
  const front = await h.tmpExchange(ch, 'fanout');
  const q = await h.tmpQueue(ch, { exclusive: true });
  await ch.bindQueue(q, internal, '');
  await ch.bindExchange(internal, front, '');
  ch.publish(front, '', Buffer.from('through'));
  await h.sync(ch);
  assert.deepEqual(await drain(ch, q), ['through']);
});
