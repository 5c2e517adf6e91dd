'use strict';
// Direct reply-to (amq.rabbitmq.reply-to), recorded against RabbitMQ 3.10.
const { test, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

afterEach(h.cleanup);

test('direct reply-to: the reply reaches the requesting channel without a queue', { timeout: h.T }, async () => {
  const { ch: server } = await h.connectAndChannel();
  const q = await h.tmpQueue(server, { exclusive: true });
  await server.consume(q, (msg) => {
    server.sendToQueue(msg.properties.replyTo, Buffer.from('pong'), { correlationId: msg.properties.correlationId });
    server.ack(msg);
  });
  const { ch: client } = await h.connectAndChannel();
  const reply = new Promise((resolve) => {
    client.consume('amq.rabbitmq.reply-to', resolve, { noAck: true });
  });
  await h.sync(client);
  const ok = await client.checkQueue('amq.rabbitmq.reply-to');
  assert.equal(ok.consumerCount, 1);
  client.sendToQueue(q, Buffer.from('ping'), { replyTo: 'amq.rabbitmq.reply-to', correlationId: 'c-7' });
  const m = await h.withTimeout(reply, 5000, 'reply');
  assert.equal(m.content.toString(), 'pong');
  assert.equal(m.properties.correlationId, 'c-7');
  assert.equal(m.fields.exchange, '');
  assert.match(m.fields.routingKey, /^amq\.rabbitmq\.reply-to\./);
});

test('direct reply-to: publishing with reply_to before consuming is a channel error (406)', { timeout: h.T }, async () => {
  const { ch } = await h.connectAndChannel();
  const q = await h.tmpQueue(ch, { exclusive: true });
  await h.expectChannelClose(ch, () => {
    ch.sendToQueue(q, Buffer.from('x'), { replyTo: 'amq.rabbitmq.reply-to' });
  }, 406, /fast reply consumer does not exist/);
});
