'use strict';
// Shared helpers for the AMQP 0-9-1 conformance suite.
//
// The expectations in this suite were recorded against RabbitMQ 3.10; the
// suite is meant to run unchanged against any broker that claims to be a
// drop-in replacement. The broker is selected with AMQP_URL.

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const net = require('node:net');
const amqp = require('amqplib');
const defs = require('amqplib/lib/defs');
const frame = require('amqplib/lib/frame');

const AMQP_URL = process.env.AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/';
const T = 10000; // default per-test timeout (ms)
const EVENT_TIMEOUT = 5000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A unique, random name: `prefix.<16 hex chars>`. */
function uniq(prefix = 'conf') {
  return `${prefix}.${crypto.randomBytes(8).toString('hex')}`;
}

/** AMQP_URL with extra query parameters and/or credentials/vhost replaced. */
function brokerUrl({ params, user, pass, vhost } = {}) {
  const u = new URL(AMQP_URL);
  if (user !== undefined) u.username = encodeURIComponent(user);
  if (pass !== undefined) u.password = encodeURIComponent(pass);
  if (vhost !== undefined) u.pathname = '/' + encodeURIComponent(vhost);
  for (const [k, v] of Object.entries(params || {})) u.searchParams.set(k, String(v));
  return u.toString();
}

/** Parsed pieces of AMQP_URL for the raw-socket client. */
function brokerAddr() {
  const u = new URL(AMQP_URL);
  let vhost = decodeURIComponent(u.pathname.replace(/^\//, ''));
  if (vhost === '') vhost = '/';
  return {
    host: u.hostname || '127.0.0.1',
    port: Number(u.port || 5672),
    user: decodeURIComponent(u.username || 'guest'),
    pass: decodeURIComponent(u.password || 'guest'),
    vhost,
  };
}

// ---------------------------------------------------------------------------
// Connection / channel tracking, so every test can clean up after itself.

const openConnections = new Set();
const queuesToDelete = new Set();
const exchangesToDelete = new Set();

/**
 * Connect with amqplib. The returned connection always has an 'error'
 * listener (amqplib would otherwise throw) and records:
 *   conn.errors  - 'error' events
 *   conn.closed  - promise resolving with the 'close' event argument
 */
async function connect(opts = {}) {
  const conn = await amqp.connect(brokerUrl(opts), opts.socketOptions);
  conn.errors = [];
  conn.on('error', (e) => conn.errors.push(e));
  conn.isClosed = false;
  conn.closed = new Promise((resolve) => conn.once('close', (e) => { conn.isClosed = true; resolve(e); }));
  openConnections.add(conn);
  return conn;
}

function instrumentChannel(ch) {
  ch.errors = [];
  ch.on('error', (e) => ch.errors.push(e));
  ch.isClosed = false;
  ch.closed = new Promise((resolve) => ch.once('close', () => { ch.isClosed = true; resolve(); }));
  return ch;
}

/** Open a channel (optionally a confirm channel) with an error listener attached. */
async function openChannel(conn, { confirm = false } = {}) {
  const ch = confirm ? await conn.createConfirmChannel() : await conn.createChannel();
  return instrumentChannel(ch);
}

/** Connect and open one channel. */
async function connectAndChannel(opts = {}) {
  const conn = await connect(opts);
  const ch = await openChannel(conn, opts);
  return { conn, ch };
}

async function safeClose(conn) {
  openConnections.delete(conn);
  if (conn.isClosed) return;
  try {
    await Promise.race([conn.close(), sleep(2000)]);
  } catch (_) { /* already closed */ }
}

/** Remember a queue / exchange to delete in cleanup(). */
function trackQueue(name) { queuesToDelete.add(name); return name; }
function trackExchange(name) { exchangesToDelete.add(name); return name; }

/**
 * Declare a fresh non-durable queue with a unique name; it is deleted in
 * cleanup(). Returns the queue name.
 */
async function tmpQueue(ch, opts = {}, prefix = 'q') {
  const name = opts.name !== undefined ? opts.name : uniq(prefix);
  const o = { durable: false, ...opts };
  delete o.name;
  const ok = await ch.assertQueue(name, o);
  trackQueue(ok.queue);
  return ok.queue;
}

/** Declare a fresh non-durable exchange; deleted in cleanup(). */
async function tmpExchange(ch, type, opts = {}, prefix = 'x') {
  const name = uniq(prefix);
  trackExchange(name);
  await ch.assertExchange(name, type, { durable: false, ...opts });
  return name;
}

/** Close every connection opened by connect() and delete tracked entities. */
async function cleanup() {
  for (const conn of [...openConnections]) await safeClose(conn);
  if (queuesToDelete.size === 0 && exchangesToDelete.size === 0) return;
  let conn;
  try {
    conn = await amqp.connect(AMQP_URL);
    conn.on('error', () => {});
    for (const q of queuesToDelete) {
      const ch = instrumentChannel(await conn.createChannel());
      try { await ch.deleteQueue(q); await ch.close(); } catch (_) { /* ignore */ }
    }
    for (const x of exchangesToDelete) {
      const ch = instrumentChannel(await conn.createChannel());
      try { await ch.deleteExchange(x); await ch.close(); } catch (_) { /* ignore */ }
    }
  } catch (_) {
    /* broker gone: nothing more to do */
  } finally {
    queuesToDelete.clear();
    exchangesToDelete.clear();
    if (conn) { try { await conn.close(); } catch (_) { /* ignore */ } }
  }
}

// ---------------------------------------------------------------------------
// Events and errors

/** Resolve with the first argument of the next `event`, or reject after `ms`. */
function waitFor(emitter, event, ms = EVENT_TIMEOUT) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.removeListener(event, on);
      reject(new Error(`timed out after ${ms} ms waiting for '${event}'`));
    }, ms);
    function on(arg) { clearTimeout(timer); resolve(arg); }
    emitter.once(event, on);
  });
}

/** Reject if `promise` does not settle within `ms`. */
function withTimeout(promise, ms = EVENT_TIMEOUT, what = 'operation') {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * The reply-text of a channel.close/connection.close as reported by amqplib.
 * (amqplib's basic.get rejects with the raw close frame rather than an Error.)
 */
function replyText(err) {
  if (err && err.fields && typeof err.fields.replyText === 'string') return err.fields.replyText;
  const m = /with message "([\s\S]*)"$/.exec(err && err.message ? err.message : '');
  return m ? m[1] : undefined;
}

/** The reply-code of a close error (see replyText). */
function replyCode(err) {
  if (err && err.fields && typeof err.fields.replyCode === 'number') return err.fields.replyCode;
  return err ? err.code : undefined;
}

function checkClose(err, code, textRe, where) {
  assert.ok(err, `${where}: expected an error`);
  const got = replyCode(err);
  assert.equal(got, code, `${where}: expected reply code ${code}, got ${got} (${err.message || replyText(err)})`);
  if (textRe) {
    const text = replyText(err);
    assert.match(text === undefined ? '' : text, textRe, `${where}: reply text ${JSON.stringify(text)}`);
  }
}

/**
 * Expect the server to close channel `ch` with `code` (and reply text matching
 * `textRe`). `action` is an optional promise or function returning a promise
 * (e.g. an RPC that triggers the error; it must reject with the same code), or
 * a function doing something asynchronous (publish, ack) that triggers it.
 * Returns the error.
 */
async function expectChannelClose(ch, action, code, textRe) {
  const errP = ch.errors.length ? Promise.resolve(ch.errors[ch.errors.length - 1]) : waitFor(ch, 'error');
  const closeP = ch.isClosed ? Promise.resolve() : waitFor(ch, 'close');
  if (action) {
    const p = typeof action === 'function' ? action() : action;
    if (p && typeof p.then === 'function') {
      let rejected = null;
      try { await withTimeout(p, EVENT_TIMEOUT, 'rpc'); } catch (e) { rejected = e; }
      assert.ok(rejected, 'expected the operation to fail');
      checkClose(rejected, code, textRe, 'rpc rejection');
    }
  }
  const err = await errP;
  checkClose(err, code, textRe, 'channel error');
  await closeP;
  assert.equal(ch.isClosed, true);
  return err;
}

/**
 * Expect the server to close connection `conn` with `code` (and reply text
 * matching `textRe`). `action` may be a promise or function; if it returns a
 * promise, it must reject (with anything: amqplib rejects pending RPCs with
 * "Channel ended" on connection close). Returns the error.
 */
async function expectConnectionClose(conn, action, code, textRe) {
  const closeP = conn.closed;
  if (action) {
    const p = typeof action === 'function' ? action() : action;
    if (p && typeof p.then === 'function') {
      let rejected = null;
      try { await withTimeout(p, EVENT_TIMEOUT, 'rpc'); } catch (e) { rejected = e; }
      assert.ok(rejected, 'expected the operation to fail');
    }
  }
  const err = await withTimeout(closeP, EVENT_TIMEOUT, 'connection close');
  checkClose(err, code, textRe, 'connection close');
  openConnections.delete(conn);
  return err;
}

// ---------------------------------------------------------------------------
// Messages

/**
 * Consume from `queue` until `n` messages arrived (or timeout). Returns
 * { messages, consumerTag }. The consumer is left running unless
 * opts.cancel is true.
 */
async function consumeN(ch, queue, n, opts = {}, ms = EVENT_TIMEOUT) {
  const messages = [];
  let done;
  const finished = new Promise((r) => { done = r; });
  if (n === 0) done();
  const { cancel, ...consumeOpts } = opts;
  const ok = await ch.consume(queue, (m) => {
    if (m === null) return;
    messages.push(m);
    if (messages.length === n) done();
  }, consumeOpts);
  await withTimeout(finished, ms, `receiving ${n} messages from ${queue} (got ${messages.length})`);
  if (cancel) await ch.cancel(ok.consumerTag);
  return { messages, consumerTag: ok.consumerTag };
}

/** basic.get with a short poll loop (a just-published message may lag). */
async function getOne(ch, queue, opts = {}, ms = 2000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const m = await ch.get(queue, opts);
    if (m) return m;
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
}

/** Wait until the queue reports `count` ready messages (passive declare). */
async function waitForCount(ch, queue, count, ms = EVENT_TIMEOUT) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await ch.checkQueue(queue);
    if (last.messageCount === count) return last;
    if (Date.now() > deadline) {
      assert.fail(`queue ${queue}: expected ${count} messages, have ${last.messageCount}`);
    }
    await sleep(25);
  }
}

/** Round-trip to the broker so that everything published before is routed. */
async function sync(ch) {
  // A passive exchange.declare is a cheap synchronous method; the broker
  // processes a channel's methods in order, so every earlier publish on this
  // channel has been routed when the reply arrives.
  await ch.checkExchange('amq.direct');
}

const bodies = (msgs) => msgs.map((m) => m.content.toString());

// ---------------------------------------------------------------------------
// A tiny raw AMQP client for the handshake, where amqplib hides the close
// code (e.g. connection.close in reply to connection.open).

/**
 * Perform the opening handshake on a raw socket.
 * Returns { start, tune, openOk, close, header, elapsed } where `close` is the
 * fields of a connection.close sent by the server (if any), `header` is the
 * raw bytes the server sent if it rejected the protocol header, `elapsed` the
 * ms until the socket ended. The client announces the
 * authentication_failure_close capability unless authFailureClose is false.
 */
function rawHandshake({ user, pass, vhost, protocolHeader, heartbeat = 0, frameMax, channelMax, authFailureClose = true } = {}, ms = EVENT_TIMEOUT) {
  const addr = brokerAddr();
  user = user !== undefined ? user : addr.user;
  pass = pass !== undefined ? pass : addr.pass;
  vhost = vhost !== undefined ? vhost : addr.vhost;
  return new Promise((resolve, reject) => {
    const result = {};
    let buf = Buffer.alloc(0);
    let settled = false;
    const t0 = Date.now();
    const socket = net.connect(addr.port, addr.host);
    const timer = setTimeout(() => finish(new Error('raw handshake timed out')), ms);
    function finish(err) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      result.elapsed = Date.now() - t0;
      socket.destroy();
      if (err) reject(err); else resolve(result);
    }
    function send(id, fields) { socket.write(defs.encodeMethod(id, 0, fields)); }
    socket.on('connect', () => {
      socket.write(protocolHeader || Buffer.from(frame.PROTOCOL_HEADER, 'binary'));
    });
    // The server may reset the socket right after its last frame; what was
    // received so far is the result.
    socket.on('error', (e) => finish(result.start || result.header ? null : e));
    socket.on('close', () => finish(null));
    socket.on('data', (data) => {
      buf = Buffer.concat([buf, data]);
      if (!result.start && buf.length >= 8 && buf.subarray(0, 4).toString() === 'AMQP') {
        result.header = Buffer.from(buf.subarray(0, 8));
        buf = buf.subarray(8);
        return; // server will close the socket
      }
      for (;;) {
        let f;
        try { f = frame.parseFrame(buf); } catch (e) { return finish(e); }
        if (!f) return;
        buf = f.rest;
        const fr = frame.decodeFrame(f);
        if (process.env.RAW_DEBUG) console.error("raw <-", fr.id, fr.fields); // debugging aid
        if (fr.id === defs.ConnectionStart) {
          result.start = fr.fields;
          send(defs.ConnectionStartOk, {
            clientProperties: {
              product: 'conformance-raw',
              capabilities: { authentication_failure_close: authFailureClose },
            },
            mechanism: 'PLAIN',
            response: Buffer.from(`\u0000${user}\u0000${pass}`),
            locale: 'en_US',
          });
        } else if (fr.id === defs.ConnectionTune) {
          result.tune = fr.fields;
          send(defs.ConnectionTuneOk, {
            channelMax: channelMax !== undefined ? channelMax : fr.fields.channelMax,
            frameMax: frameMax !== undefined ? frameMax : fr.fields.frameMax,
            heartbeat,
          });
          send(defs.ConnectionOpen, { virtualHost: vhost, capabilities: '', insist: false });
        } else if (fr.id === defs.ConnectionOpenOk) {
          result.openOk = fr.fields;
          send(defs.ConnectionClose, { replyCode: 200, replyText: 'bye', classId: 0, methodId: 0 });
        } else if (fr.id === defs.ConnectionClose) {
          result.close = fr.fields;
          send(defs.ConnectionCloseOk, {});
          return finish(null);
        } else if (fr.id === defs.ConnectionCloseOk) {
          return finish(null);
        }
      }
    });
  });
}

module.exports = {
  amqp,
  defs,
  AMQP_URL,
  T,
  sleep,
  uniq,
  brokerUrl,
  brokerAddr,
  connect,
  openChannel,
  connectAndChannel,
  instrumentChannel,
  safeClose,
  cleanup,
  trackQueue,
  trackExchange,
  tmpQueue,
  tmpExchange,
  waitFor,
  withTimeout,
  replyText,
  replyCode,
  expectChannelClose,
  expectConnectionClose,
  consumeN,
  getOne,
  waitForCount,
  sync,
  bodies,
  rawHandshake,
};
