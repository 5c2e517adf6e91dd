'use strict';
// Permissions over AMQP as RabbitMQ 3.10 enforces them, through amqplib:
// every method against a user whose configure, write and read regexes each
// cover different names, with the refusal codes and texts, a topic
// permission, and connection.open to a vhost without permissions. The user
// and vhost are made through the management API (MANAGEMENT_URL; RabbitMQ's
// default port otherwise), so the suite runs against Warren and RabbitMQ.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const h = require('./helpers');

const MANAGEMENT_URL = process.env.MANAGEMENT_URL || 'http://127.0.0.1:15672';
const RUN = crypto.randomBytes(4).toString('hex');
const USER = `conf-perm-js-${RUN}`;
const PASS = `pw-${RUN}`;
const CLOSED_VHOST = `conf-perm-js-closed-${RUN}`;
const KINDS = ['conf', 'write', 'read', 'none'];

/** cp-<kind>-<what>-<run>: the user's regexes match on the kind. */
const name = (kind, what) => `cp-${kind}-${what}-${RUN}`;
const re = (s) => new RegExp('^' + s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&') + '$');

async function api(method, path, body) {
  const { user, pass } = h.brokerAddr();
  const res = await fetch(`${MANAGEMENT_URL}/api${path}`, {
    method,
    headers: {
      authorization: 'Basic ' + Buffer.from(`${user}:${pass}`).toString('base64'),
      'content-type': 'application/json',
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status >= 300 && method !== 'DELETE') {
    throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
  }
}

before(async () => {
  await api('PUT', `/users/${USER}`, { password: PASS, tags: '' });
  await api('PUT', `/permissions/%2F/${USER}`,
    { configure: '^cp-conf-', write: '^cp-write-', read: '^cp-read-' });
  await api('PUT', `/vhosts/${encodeURIComponent(CLOSED_VHOST)}`, {});
  const { conn, ch } = await h.connectAndChannel();
  for (const kind of KINDS) {
    await ch.assertQueue(name(kind, 'q'));
    await ch.assertExchange(name(kind, 'x'), 'direct');
  }
  await h.safeClose(conn);
});

after(async () => {
  const { conn, ch } = await h.connectAndChannel();
  for (const kind of KINDS) {
    await ch.deleteQueue(name(kind, 'q'));
    await ch.deleteExchange(name(kind, 'x'));
  }
  await h.safeClose(conn);
  await api('DELETE', `/users/${USER}`);
  await api('DELETE', `/vhosts/${encodeURIComponent(CLOSED_VHOST)}`);
});

const refused = (kind, resource) =>
  re(`ACCESS_REFUSED - access to ${kind} '${resource}' in vhost '/' refused for user '${USER}'`);

// [what, action on an amqplib channel, null if allowed or [kind, resource] refused]
const CASES = [
  ['declare a queue it may configure', (c) => c.assertQueue(name('conf', 'q2')), null],
  ['declare a queue it may not configure', (c) => c.assertQueue(name('none', 'q2')),
    ['queue', name('none', 'q2')]],
  ['declare passively a queue it has no permission on', (c) => c.checkQueue(name('none', 'q')), null],
  ['delete a queue it may not configure', (c) => c.deleteQueue(name('read', 'q')),
    ['queue', name('read', 'q')]],
  ['purge a queue it may read', (c) => c.purgeQueue(name('read', 'q')), null],
  ['purge a queue it may not read', (c) => c.purgeQueue(name('conf', 'q')), ['queue', name('conf', 'q')]],
  ['declare an exchange it may not configure', (c) => c.assertExchange(name('none', 'x2'), 'fanout'),
    ['exchange', name('none', 'x2')]],
  ['delete an exchange it may not configure', (c) => c.deleteExchange(name('read', 'x')),
    ['exchange', name('read', 'x')]],
  ['publish to an exchange it may write', (c) => { c.publish(name('write', 'x'), 'k', Buffer.from('m')); }, null],
  ['publish to an exchange it may not write', (c) => { c.publish(name('read', 'x'), 'k', Buffer.from('m')); },
    ['exchange', name('read', 'x')]],
  ['publish to the default exchange', (c) => { c.sendToQueue(name('write', 'q'), Buffer.from('m')); },
    ['exchange', 'amq.default']],
  ['bind a queue it may write to an exchange it may read',
    (c) => c.bindQueue(name('write', 'q'), name('read', 'x'), 'k'), null],
  ['bind a queue it may not write', (c) => c.bindQueue(name('read', 'q'), name('read', 'x'), 'k'),
    ['queue', name('read', 'q')]],
  ['bind from an exchange it may not read', (c) => c.bindQueue(name('write', 'q'), name('write', 'x'), 'k'),
    ['exchange', name('write', 'x')]],
  ['bind an exchange it may not write', (c) => c.bindExchange(name('read', 'x'), name('read', 'x'), 'k'),
    ['exchange', name('read', 'x')]],
  ['get from a queue it may not read', (c) => c.get(name('write', 'q')), ['queue', name('write', 'q')]],
  ['consume a queue it may read', (c) => c.consume(name('read', 'q'), () => {}), null],
  ['consume a queue it may not read', (c) => c.consume(name('write', 'q'), () => {}),
    ['queue', name('write', 'q')]],
];

for (const [what, action, outcome] of CASES) {
  test(what, { timeout: h.T }, async () => {
    const { conn, ch } = await h.connectAndChannel({ user: USER, pass: PASS });
    try {
      if (outcome === null) {
        await action(ch);
        await ch.checkQueue(name('none', 'q')); // a round trip surfaces a refused publish
        assert.equal(ch.isClosed, false);
      } else {
        await h.expectChannelClose(ch, () => action(ch), 403, refused(...outcome));
      }
    } finally {
      await h.safeClose(conn);
    }
  });
}

test('opening a vhost without permissions is 530', { timeout: h.T }, async () => {
  // amqplib reports only "Expected ConnectionOpenOk"; the raw handshake
  // shows the close itself.
  await assert.rejects(h.connect({ user: USER, pass: PASS, vhost: CLOSED_VHOST }),
    /Expected ConnectionOpenOk; got <ConnectionClose channel:0>/);
  const r = await h.rawHandshake({ user: USER, pass: PASS, vhost: CLOSED_VHOST });
  assert.ok(r.close, 'server sent connection.close');
  assert.equal(r.close.replyCode, 530);
  assert.match(r.close.replyText,
    re(`NOT_ALLOWED - access to vhost '${CLOSED_VHOST}' refused for user '${USER}'`));
  assert.equal(r.openOk, undefined);
});

test('a wrong password is refused', { timeout: h.T }, async () => {
  await assert.rejects(h.connect({ user: USER, pass: 'wrong' }), /ACCESS.REFUSED/);
});
