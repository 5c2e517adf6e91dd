'use strict';
// AMQPS through amqplib, as RabbitMQ 3.10 serves it with verify_peer,
// fail_if_no_peer_cert = false and the EXTERNAL mechanism
// (rabbitmq_auth_mechanism_ssl, ssl_cert_login_from = common_name): PLAIN
// over TLS, EXTERNAL with a client certificate (the API shows it), an
// EXTERNAL certificate naming no user, and a server the client does not
// trust. conformance/run.sh sets AMQPS_URL and TLS_DIR (make_certs.py's
// files) for Warren; for RabbitMQ, point them at its TLS listener.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const amqp = require('amqplib');

const MANAGEMENT_URL = process.env.MANAGEMENT_URL || 'http://127.0.0.1:15672';
const { AMQPS_URL, TLS_DIR } = process.env;
const skip = !(AMQPS_URL && TLS_DIR) && 'AMQPS_URL and TLS_DIR not set';
const REFUSED = 'ACCESS_REFUSED - Login was refused using authentication mechanism EXTERNAL. '
  + 'For details see the broker logfile.';

const file = (name) => fs.readFileSync(path.join(TLS_DIR, name));

async function api(method, p, body) {
  const res = await fetch(`${MANAGEMENT_URL}/api${p}`, {
    method,
    headers: {
      authorization: 'Basic ' + Buffer.from('guest:guest').toString('base64'),
      'content-type': 'application/json',
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: res.status === 204 ? null : await res.json().catch(() => null) };
}

/** amqplib over TLS: `ca` trusted, `client` (a make_certs.py name) presented. */
function connect({ ca = 'ca.pem', client, external = false } = {}) {
  const opts = { ca: [file(ca)], servername: '127.0.0.1', timeout: 5000 };
  if (client) {
    opts.cert = file(`${client}.pem`);
    opts.key = file(`${client}.key`);
  }
  if (external) opts.credentials = amqp.credentials.external();
  const url = external ? AMQPS_URL : AMQPS_URL.replace('amqps://', 'amqps://guest:guest@');
  return amqp.connect(url, opts);
}

before(async () => {
  if (skip) return;
  // The user the client certificate names: no password, all permissions.
  await api('PUT', '/users/tls-client', { password_hash: '', tags: '' });
  await api('PUT', '/permissions/%2F/tls-client', { configure: '.*', write: '.*', read: '.*' });
});

after(async () => {
  if (!skip) await api('DELETE', '/users/tls-client');
});

test('PLAIN over TLS: a round trip of a large message', { skip }, async () => {
  const conn = await connect();
  try {
    const ch = await conn.createConfirmChannel();
    const { queue } = await ch.assertQueue('', { exclusive: true });
    const body = Buffer.alloc(300000, 7);
    ch.sendToQueue(queue, body);
    await ch.waitForConfirms();
    const msg = await ch.get(queue, { noAck: true });
    assert.ok(msg && msg.content.equals(body));
  } finally {
    await conn.close();
  }
});

test('EXTERNAL logs in as the certificate CN, shown in the API', { skip }, async () => {
  const conn = await connect({ client: 'tls-client', external: true });
  try {
    const ch = await conn.createChannel();
    await ch.assertQueue('', { exclusive: true });
    let row;
    for (let i = 0; i < 50 && !row; i++) {
      const { body } = await api('GET', '/connections');
      row = (body || []).find((c) => c.user === 'tls-client' && c.ssl && c.ssl_protocol);
      if (!row) await new Promise((r) => setTimeout(r, 200));
    }
    assert.ok(row, 'the connection is listed');
    assert.equal(row.auth_mechanism, 'EXTERNAL');
    assert.equal(row.peer_cert_subject, 'O=Warren conformance,CN=tls-client');
  } finally {
    await conn.close();
  }
});

test('EXTERNAL with a certificate naming no user: 403', { skip }, async () => {
  await assert.rejects(connect({ client: 'tls-stranger', external: true }), (err) => {
    assert.match(err.message, new RegExp(REFUSED.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
    return true;
  });
});

test('a client that does not trust the server fails its handshake', { skip }, async () => {
  await assert.rejects(connect({ ca: 'other-ca.pem' }), (err) => {
    assert.match(String(err.code || err.message), /CERT|certificate|VERIFY/i);
    return true;
  });
});
