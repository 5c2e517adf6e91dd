'use strict';
const { test, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

afterEach(h.cleanup);

async function until(pred, what, ms = 3000) {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await h.sleep(10);
  }
}

/**
 * Publish 1..6 to a fresh shared queue; a prefetch-3 consumer on a separate
 * connection takes 1,2,3, acks 2 and so receives 4. Then `end(conn, ch)`
 * drops the consumer, and everything is read back from another connection.
 */
async function scenario(end) {
  const observerConn = await h.connect();
  const obs = await h.openChannel(observerConn);
  const q = await h.tmpQueue(obs);
  for (let i = 1; i <= 6; i++) obs.sendToQueue(q, Buffer.from(String(i)));
  await h.waitForCount(obs, q, 6);

  const conn = await h.connect();
  const ch = await h.openChannel(conn);
  await ch.prefetch(3);
  const got = [];
  await ch.consume(q, (m) => { if (m) got.push(m); });
  await until(() => got.length === 3, '3 deliveries');
  await h.sleep(100);
  assert.deepEqual(h.bodies(got), ['1', '2', '3'], 'prefetch 3 holds back the rest');
  ch.ack(got[1]);
  await until(() => got.length === 4, 'a 4th delivery after one ack');
  assert.equal(got[3].content.toString(), '4');
  assert.equal((await obs.checkQueue(q)).messageCount, 2, 'ready messages while 1,3,4 are unacked');

  await end(conn, ch);

  await h.waitForCount(obs, q, 5);
  const out = [];
  for (let i = 0; i < 5; i++) {
    const m = await obs.get(q, { noAck: true });
    out.push(m.content.toString() + (m.fields.redelivered ? 'r' : ''));
  }
  // unacked messages return to their original positions, ahead of 5,6
  assert.deepEqual(out, ['1r', '3r', '4r', '5', '6']);
}

test('unacked messages of a closed channel are requeued in order with redelivered=true', { timeout: h.T }, async () => {
  await scenario(async (conn, ch) => { await ch.close(); });
});

test('unacked messages of a closed connection are requeued in order with redelivered=true', { timeout: h.T }, async () => {
  await scenario(async (conn) => { await h.safeClose(conn); });
});

test('unacked messages of a dropped TCP connection are requeued in order with redelivered=true', { timeout: h.T }, async () => {
  await scenario(async (conn) => {
    conn.connection.stream.destroy(new Error('simulated network failure'));
    await h.withTimeout(conn.closed, 3000, 'client notices the drop');
  });
});

test('unacked messages of a channel closed by a soft error are requeued', { timeout: h.T }, async () => {
  await scenario(async (conn, ch) => {
    await h.expectChannelClose(ch, () => ch.checkQueue(h.uniq('missing')), 404, /^NOT_FOUND/);
  });
});

test('unacked messages of a connection closed by a hard error are requeued', { timeout: h.T }, async () => {
  await scenario(async (conn, ch) => {
    await h.expectConnectionClose(conn, () => ch.assertExchange(h.uniq('x'), 'bogus-type', { durable: false }), 503, /^COMMAND_INVALID/);
  });
});

test('unacked basic.get messages are requeued when the channel closes', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const obs = await h.openChannel(conn);
  const q = await h.tmpQueue(obs, { exclusive: true });
  for (const b of ['a', 'b', 'c']) obs.sendToQueue(q, Buffer.from(b));
  await h.waitForCount(obs, q, 3);
  const ch = await h.openChannel(conn);
  const ma = await ch.get(q);
  const mb = await ch.get(q);
  assert.equal(ma.fields.redelivered, false);
  assert.equal(mb.fields.redelivered, false);
  await ch.close();
  await h.waitForCount(obs, q, 3);
  const out = [];
  for (let i = 0; i < 3; i++) {
    const m = await obs.get(q, { noAck: true });
    out.push(m.content.toString() + (m.fields.redelivered ? 'r' : ''));
  }
  assert.deepEqual(out, ['ar', 'br', 'c']);
});

test('redelivered messages go to a waiting consumer on another channel', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const setup = await h.openChannel(conn);
  const q = await h.tmpQueue(setup, { exclusive: true });
  const first = await h.openChannel(conn);
  // a consumer with prefetch 1 on `first` takes the message
  await first.prefetch(1);
  const firstGot = [];
  await first.consume(q, (m) => firstGot.push(m));
  setup.sendToQueue(q, Buffer.from('x'));
  const deadline = Date.now() + 3000;
  while (firstGot.length < 1 && Date.now() < deadline) await h.sleep(10);
  assert.equal(firstGot.length, 1);
  const second = await h.openChannel(conn);
  const secondGot = [];
  await second.consume(q, (m) => secondGot.push(m), { noAck: true });
  await first.close();
  const d2 = Date.now() + 3000;
  while (secondGot.length < 1 && Date.now() < d2) await h.sleep(10);
  assert.equal(secondGot.length, 1);
  assert.equal(secondGot[0].content.toString(), 'x');
  assert.equal(secondGot[0].fields.redelivered, true);
});
