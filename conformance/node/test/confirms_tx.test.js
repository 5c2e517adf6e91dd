'use strict';
const { test, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

afterEach(h.cleanup);

const { defs } = h;
const txSelect = (ch) => ch.rpc(defs.TxSelect, {}, defs.TxSelectOk);
const txCommit = (ch) => ch.rpc(defs.TxCommit, {}, defs.TxCommitOk);
const txRollback = (ch) => ch.rpc(defs.TxRollback, {}, defs.TxRollbackOk);
const confirmSelect = (ch) => ch.rpc(defs.ConfirmSelect, { nowait: false }, defs.ConfirmSelectOk);

// ---------------------------------------------------------------- confirms

test('confirm channel acks every publish', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const ch = await h.openChannel(conn, { confirm: true });
  const q = await h.tmpQueue(ch, { exclusive: true });
  const acks = [];
  ch.on('ack', (f) => acks.push(f));
  const results = [];
  const N = 50;
  for (let i = 0; i < N; i++) ch.sendToQueue(q, Buffer.from(String(i)), {}, (err) => results.push(err));
  await h.withTimeout(ch.waitForConfirms(), 5000, 'waitForConfirms');
  assert.equal(results.length, N);
  assert.ok(results.every((e) => e === null), 'all acked');
  // the acks (possibly 'multiple') cover exactly delivery tags 1..N
  const maxTag = Math.max(...acks.map((a) => a.deliveryTag));
  assert.equal(maxTag, N);
  assert.equal((await h.waitForCount(ch, q, N)).messageCount, N);
});

test('confirms are sent for unroutable messages too (mandatory: basic.return first)', { timeout: h.T }, async () => {
  const ch = await h.openChannel(await h.connect(), { confirm: true });
  const events = [];
  ch.on('return', (m) => events.push(['return', m.content.toString()]));
  ch.on('ack', (f) => events.push(['ack', f.deliveryTag]));
  ch.publish('amq.direct', h.uniq('nobody'), Buffer.from('unroutable-mandatory'), { mandatory: true });
  ch.publish('amq.direct', h.uniq('nobody'), Buffer.from('unroutable'));
  await h.withTimeout(ch.waitForConfirms(), 5000, 'waitForConfirms');
  assert.deepEqual(events, [['return', 'unroutable-mandatory'], ['ack', 1], ['ack', 2]]);
});

test('confirm.select twice is fine', { timeout: h.T }, async () => {
  const ch = await h.openChannel(await h.connect(), { confirm: true });
  assert.deepEqual(await confirmSelect(ch), {});
});

test('confirm.select on a transactional channel is refused with 406', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  await txSelect(ch);
  await h.expectChannelClose(ch, () => confirmSelect(ch), 406,
    /^PRECONDITION_FAILED - cannot switch from tx to confirm mode$/);
});

test('tx.select on a confirm channel is refused with 406', { timeout: h.T }, async () => {
  const ch = await h.openChannel(await h.connect(), { confirm: true });
  await h.expectChannelClose(ch, () => txSelect(ch), 406,
    /^PRECONDITION_FAILED - cannot switch from confirm to tx mode$/);
});

// ------------------------------------------------------------ transactions

test('tx: committed publishes are delivered, rolled-back ones are not', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const ch = await h.openChannel(conn);
  const observer = await h.openChannel(conn);
  const q = await h.tmpQueue(ch, { exclusive: true });
  assert.deepEqual(await txSelect(ch), {});
  ch.sendToQueue(q, Buffer.from('rolled-back'));
  await h.sleep(100);
  assert.equal((await observer.checkQueue(q)).messageCount, 0, 'not visible before commit');
  assert.deepEqual(await txRollback(ch), {});
  assert.equal((await observer.checkQueue(q)).messageCount, 0);
  ch.sendToQueue(q, Buffer.from('committed-1'));
  ch.sendToQueue(q, Buffer.from('committed-2'));
  await h.sleep(100);
  assert.equal((await observer.checkQueue(q)).messageCount, 0, 'not visible before commit');
  assert.deepEqual(await txCommit(ch), {});
  await h.waitForCount(observer, q, 2);
  const bodies = [];
  for (let i = 0; i < 2; i++) bodies.push((await observer.get(q, { noAck: true })).content.toString());
  assert.deepEqual(bodies, ['committed-1', 'committed-2']);
  // the channel stays transactional: a new transaction starts after commit
  ch.sendToQueue(q, Buffer.from('pending'));
  await h.sleep(100);
  assert.equal((await observer.checkQueue(q)).messageCount, 0);
  await ch.close(); // closing the channel discards the open transaction
  await h.sleep(100);
  assert.equal((await observer.checkQueue(q)).messageCount, 0);
});

test('tx: acks inside a rolled-back transaction are not applied', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const setup = await h.openChannel(conn);
  const q = await h.tmpQueue(setup, { exclusive: true });
  setup.sendToQueue(q, Buffer.from('m1'));
  setup.sendToQueue(q, Buffer.from('m2'));
  await h.waitForCount(setup, q, 2);
  const ch = await h.openChannel(conn);
  await txSelect(ch);
  const m1 = await ch.get(q);
  const m2 = await ch.get(q);
  ch.ack(m1);
  await txRollback(ch);
  // m1 is still unacked (not requeued by the rollback): nothing ready
  assert.equal((await setup.checkQueue(q)).messageCount, 0);
  ch.ack(m2);
  await txCommit(ch);
  // now close the channel: m1 (never acked effectively) comes back, m2 does not
  await ch.close();
  await h.waitForCount(setup, q, 1);
  const back = await setup.get(q, { noAck: true });
  assert.equal(back.content.toString(), 'm1');
  assert.equal(back.fields.redelivered, true);
});

test('tx: acks are applied on commit', { timeout: h.T }, async () => {
  const conn = await h.connect();
  const setup = await h.openChannel(conn);
  const q = await h.tmpQueue(setup, { exclusive: true });
  setup.sendToQueue(q, Buffer.from('m'));
  await h.waitForCount(setup, q, 1);
  const ch = await h.openChannel(conn);
  await txSelect(ch);
  const m = await ch.get(q);
  ch.ack(m);
  await txCommit(ch);
  await ch.close();
  await h.sleep(100);
  assert.equal((await setup.checkQueue(q)).messageCount, 0);
});

test('tx.commit / tx.rollback without tx.select are refused with 406', { timeout: h.T }, async () => {
  const conn = await h.connect();
  let ch = await h.openChannel(conn);
  await h.expectChannelClose(ch, () => txCommit(ch), 406, /^PRECONDITION_FAILED - channel is not transactional$/);
  ch = await h.openChannel(conn);
  await h.expectChannelClose(ch, () => txRollback(ch), 406, /^PRECONDITION_FAILED - channel is not transactional$/);
});

test('tx: a mandatory unroutable publish is returned at commit time', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  await txSelect(ch);
  const returned = [];
  ch.on('return', (m) => returned.push(m.content.toString()));
  ch.publish('amq.direct', h.uniq('nobody'), Buffer.from('bounce'), { mandatory: true });
  await h.sleep(200);
  assert.deepEqual(returned, [], 'not returned before commit');
  await txCommit(ch);
  // the basic.return arrives before tx.commit-ok
  assert.deepEqual(returned, ['bounce']);
});
