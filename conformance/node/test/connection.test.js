'use strict';
const { test, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const h = require('./helpers');

afterEach(h.cleanup);

test('connect and close cleanly', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const ch = await h.openChannel(conn);
  await ch.close();
  await conn.close();
  const closeArg = await h.withTimeout(conn.closed);
  assert.equal(closeArg, undefined, 'client-initiated close reports no error');
  assert.deepEqual(conn.errors, []);
});

test('server properties and capabilities', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const props = conn.connection.serverProperties;
  assert.ok(props, 'server properties present');
  assert.ok('product' in props, 'product key present');
  assert.ok('version' in props, 'version key present');
  const caps = props.capabilities;
  assert.equal(typeof caps, 'object');
  for (const cap of [
    'publisher_confirms',
    'exchange_exchange_bindings',
    'basic.nack',
    'consumer_cancel_notify',
    'per_consumer_qos',
    'authentication_failure_close',
    'direct_reply_to',
  ]) {
    assert.equal(caps[cap], true, `capability ${cap}`);
  }
});

test('connection.start offers PLAIN and en_US, version 0-9', { timeout: h.T }, async () => {
  const r = await h.rawHandshake();
  assert.equal(r.start.versionMajor, 0);
  assert.equal(r.start.versionMinor, 9);
  assert.ok(r.start.mechanisms.toString().split(' ').includes('PLAIN'), r.start.mechanisms.toString());
  assert.ok(r.start.locales.toString().split(' ').includes('en_US'));
  // RabbitMQ's defaults: frame_max 131072, channel_max 2047, heartbeat 60.
  assert.equal(r.tune.frameMax, 131072);
  assert.equal(r.tune.channelMax, 2047);
  assert.equal(r.tune.heartbeat, 60);
  assert.ok(r.openOk, 'connection.open-ok received');
});

test('unsupported protocol header: server answers AMQP 0-9-1 header and closes', { timeout: h.T }, async () => {
  // NB RabbitMQ still accepts the legacy 'AMQP\x01\x01\x08\x00' (0-8) and
  // 'AMQP\x01\x01\x09\x01' headers, so use 0-10 and garbage here.
  for (const hdr of ['AMQP\x00\x00\x0a\x00', 'GET / HTTP/1.1\r\n\r\n']) {
    const r = await h.rawHandshake({ protocolHeader: Buffer.from(hdr, 'binary') });
    assert.ok(r.header, 'server sent a protocol header back');
    assert.deepEqual([...r.header], [...Buffer.from('AMQP\x00\x00\x09\x01', 'binary')]);
    assert.equal(r.start, undefined);
  }
});

test('wrong password is refused with 403 ACCESS_REFUSED', { timeout: h.T }, async () => {
  await assert.rejects(
    h.amqp.connect(h.brokerUrl({ pass: 'definitely-wrong-' + crypto.randomBytes(4).toString('hex') })),
    (err) => {
      // amqplib: "Handshake terminated by server: 403 (ACCESS-REFUSED) with message "ACCESS_REFUSED - ..."
      assert.match(err.message, /403/);
      assert.match(h.replyText(err) || '', /^ACCESS_REFUSED/);
      return true;
    },
  );
  // The same, observed at the protocol level (authentication_failure_close).
  const r = await h.rawHandshake({ pass: 'nope' });
  assert.ok(r.close, 'server sent connection.close');
  assert.equal(r.close.replyCode, 403);
  assert.match(r.close.replyText, /^ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN/);
  assert.equal(r.close.classId, 0);
  assert.equal(r.close.methodId, 0);
  assert.equal(r.openOk, undefined);
});

test('wrong password without authentication_failure_close: socket closed, no connection.close', { timeout: h.T }, async () => {
  // RabbitMQ only sends connection.close if the client announced the
  // capability; otherwise it just closes the socket (after a ~3 s delay).
  const r = await h.rawHandshake({ pass: 'nope', authFailureClose: false }, 8000);
  assert.ok(r.start);
  assert.equal(r.close, undefined);
  assert.equal(r.tune, undefined);
  assert.equal(r.openOk, undefined);
});

test('unknown user is refused with 403 ACCESS_REFUSED', { timeout: h.T }, async () => {
  const r = await h.rawHandshake({ user: h.uniq('nouser'), pass: 'x' });
  assert.ok(r.close);
  assert.equal(r.close.replyCode, 403);
  assert.match(r.close.replyText, /^ACCESS_REFUSED/);
});

test('unknown vhost is refused with 530 NOT_ALLOWED', { timeout: h.T }, async () => {
  const vhost = h.uniq('novhost');
  // amqplib reports this only as "Expected ConnectionOpenOk; got <ConnectionClose ...>"
  await assert.rejects(h.amqp.connect(h.brokerUrl({ vhost })));
  const r = await h.rawHandshake({ vhost });
  assert.ok(r.close, 'server sent connection.close');
  assert.equal(r.close.replyCode, 530);
  assert.match(r.close.replyText, /^NOT_ALLOWED/);
  assert.match(r.close.replyText, new RegExp(`vhost ${vhost.replace(/\./g, '\\.')} not found`));
  assert.equal(r.close.classId, 10);
  assert.equal(r.close.methodId, 40); // connection.open
});

test('heartbeat negotiation: heartbeat=1 keeps an idle connection alive', { timeout: h.T }, async () => {
  const conn = await h.connect({ params: { heartbeat: 1 } });
  assert.equal(conn.connection.heartbeat, 1);
  const ch = await h.openChannel(conn);
  const q = await h.tmpQueue(ch, { exclusive: true });
  await h.sleep(3000);
  assert.equal(conn.isClosed, false);
  ch.sendToQueue(q, Buffer.from('after idle'));
  const m = await h.getOne(ch, q, { noAck: true });
  assert.equal(m.content.toString(), 'after idle');
  assert.deepEqual(conn.errors, []);
});

test('frameMax negotiation: 4096 and a 100 KB body round-trips byte-exact', { timeout: h.T }, async () => {
  const conn = await h.connect({ params: { frameMax: 4096 } });
  assert.equal(conn.connection.frameMax, 4096);
  const ch = await h.openChannel(conn);
  const q = await h.tmpQueue(ch, { exclusive: true });
  const body = crypto.randomBytes(100 * 1024);
  ch.sendToQueue(q, body);
  const { messages } = await h.consumeN(ch, q, 1, { noAck: true });
  assert.equal(messages[0].content.length, body.length);
  assert.ok(messages[0].content.equals(body), 'body is byte-exact');
});

test('many channels on one connection', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const N = 200;
  const chans = [];
  for (let i = 0; i < N; i++) chans.push(await h.openChannel(conn));
  const ids = new Set(chans.map((c) => c.ch));
  assert.equal(ids.size, N, 'distinct channel numbers');
  const ch0 = chans[0];
  const q = await h.tmpQueue(ch0, { exclusive: true });
  chans.forEach((c, i) => c.sendToQueue(q, Buffer.from(String(i))));
  await Promise.all(chans.map((c) => h.sync(c)));
  const ok = await h.waitForCount(ch0, q, N);
  assert.equal(ok.messageCount, N);
  // closing half of them leaves the others usable
  for (let i = 0; i < N; i += 2) await chans[i].close();
  const ok2 = await chans[1].checkQueue(q);
  assert.equal(ok2.messageCount, N);
  assert.equal(conn.isClosed, false);
});

test('tune-ok with channel_max 0 (above the server limit) is refused', { timeout: h.T }, async () => {
  // RabbitMQ treats 0 ("no limit") as exceeding its channel_max of 2047 and
  // drops the connection (observed: socket closed after ~3 s, no
  // connection.close): no connection.open-ok is ever sent.
  const r = await h.rawHandshake({ channelMax: 0 }, 8000);
  assert.ok(r.tune);
  assert.equal(r.openOk, undefined);
});

test('tune-ok with frame_max below 4096 is refused', { timeout: h.T }, async () => {
  const r = await h.rawHandshake({ frameMax: 1024 }, 8000);
  assert.ok(r.tune);
  assert.equal(r.openOk, undefined);
});

test('connection.update-secret is answered and the connection goes on', { timeout: h.T }, async () => {
  // amqplib's updateSecret (credential rotation): RabbitMQ 3.10 answers
  // update-secret-ok; channels keep working.
  const { conn, ch } = await h.connectAndChannel();
  const { pass } = h.brokerAddr();
  await conn.updateSecret(Buffer.from(pass), 'rotation');
  const q = await h.tmpQueue(ch, { exclusive: true });
  ch.sendToQueue(q, Buffer.from('after'));
  await h.waitForCount(ch, q, 1);
  assert.equal(conn.isClosed, false);
});
