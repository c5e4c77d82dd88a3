'use strict';
// node-classic template entry point (fwatchdog mode=worker): OpenFaaS's classic `node`
// handler, kept warm. fwatchdog starts `node index.js` `workers` times and keeps each
// process; this file loads function/handler.js once, says it is ready on descriptor 3, then
// answers requests one after another (docs/worker-protocol.md: a JSON head line and
// `length` body bytes on stdin, the same back on descriptor 3).
//
// function/handler.js exports (context, callback) => ..., as in the classic template:
//   context   the request body, a string (a Buffer when RAW_BODY=true)
//   callback  callback(err, result)
// and the result is what is passed to callback, or what the function returns (or its
// promise resolves to). A string or a Buffer is sent as is, anything else as JSON followed
// by a newline (console.log(JSON.stringify(result)), as the classic template printed it);
// undefined or null is an empty 200. Request metadata is in process.env: Http_Method,
// Http_Path, Http_Query, Http_<Header>. What the handler prints goes to the log.

const fs = require('fs');
const sdk = require('./sdk');

const RESPONSES = 3; // descriptor 3: the ready line, then the responses

let fn = require('./function/handler');
if (typeof fn !== 'function' && fn && typeof fn.handle === 'function') fn = fn.handle;
if (typeof fn !== 'function') {
  console.error('node-classic: function/handler.js must export a function (context, callback)');
  process.exit(1);
}

const RAW_BODY = sdk.isTrue(process.env.RAW_BODY);
const utf8 = new TextDecoder('utf-8', { fatal: true });
const baseEnv = { ...process.env };
let requestEnv = [];

// ---------------------------------------------------------------------------- output

const pause = new Int32Array(new SharedArrayBuffer(4));

// The whole buffer to descriptor 3, synchronously: a response is complete before the
// next request is read. EAGAIN (should the descriptor be non-blocking) waits and retries.
function writeAll(buf) {
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(RESPONSES, buf, off, buf.length - off);
    } catch (err) {
      if (err.code === 'EAGAIN') {
        Atomics.wait(pause, 0, 0, 1);
        continue;
      }
      if (err.code === 'EPIPE') process.exit(0); // the watchdog is gone: nobody to answer
      throw err;
    }
  }
}

function send(status, headers, body) {
  const head = JSON.stringify({ status, headers, length: body.length }) + '\n';
  writeAll(Buffer.concat([Buffer.from(head, 'utf8'), body]));
}

function textError(status, message) {
  return [status, [['Content-Type', 'text/plain; charset=utf-8']], Buffer.from(message + '\n')];
}

function handlerFailed(err) {
  const name = err && err.name ? err.name : 'Error';
  return textError(500, `function handler failed: ${name} (see the function's logs)`);
}

// ---------------------------------------------------------------------------- a request

function setEnv(env) {
  for (const key of requestEnv) {
    if (key in baseEnv) process.env[key] = baseEnv[key];
    else delete process.env[key];
  }
  for (const key of Object.keys(process.env)) {
    if (key.startsWith('Http_') && !(key in baseEnv)) delete process.env[key];
  }
  for (const [key, value] of Object.entries(env)) process.env[key] = String(value);
  requestEnv = Object.keys(env);
}

// The handler's result, however it gives it: callback(err, result), a returned value, or
// a promise. The first answer wins. A function that declares the callback parameter and
// returns (or resolves to) undefined is waited for until it calls the callback, as the
// classic template did (its process printed whatever the callback got, whenever).
function callHandler(context) {
  return new Promise((resolve, reject) => {
    let done = false;
    const settle = (err, result) => {
      if (done) return;
      done = true;
      if (err) reject(err);
      else resolve(result);
    };
    const callback = (err, result) => settle(err, result);
    const wantsCallback = fn.length >= 2;
    let returned;
    try {
      returned = fn(context, callback);
    } catch (err) {
      settle(err || new Error('the handler threw ' + String(err)));
      return;
    }
    if (returned && typeof returned.then === 'function') {
      returned.then(
        (value) => {
          if (value !== undefined || !wantsCallback) settle(null, value);
        },
        (err) => settle(err || new Error('the handler rejected with ' + String(err))),
      );
    } else if (returned !== undefined || !wantsCallback) {
      settle(null, returned);
    }
  });
}

// [status, headers, body] for a result; an empty body carries no Content-Type.
function toResponse(result) {
  let body;
  let type;
  if (result === undefined || result === null) {
    body = Buffer.alloc(0);
  } else if (typeof result === 'string') {
    body = Buffer.from(result, 'utf8');
    type = process.env.content_type || 'text/plain; charset=utf-8';
  } else if (Buffer.isBuffer(result) || result instanceof Uint8Array) {
    body = Buffer.from(result);
    type = process.env.content_type || 'application/octet-stream';
  } else {
    const json = JSON.stringify(result);
    if (json === undefined) throw new TypeError(`cannot send a ${typeof result} as the response`);
    body = Buffer.from(json + '\n', 'utf8');
    type = 'application/json';
  }
  return [200, body.length > 0 ? [['Content-Type', type]] : [], body];
}

async function answer(head, body) {
  setEnv(head.env || {});
  let context = body;
  if (!RAW_BODY) {
    try {
      context = utf8.decode(body);
    } catch (_) {
      return textError(400, 'request body is not valid UTF-8; send text, or set RAW_BODY=true to receive the body as a Buffer');
    }
  }
  try {
    return toResponse(await callHandler(context));
  } catch (err) {
    console.error('node-classic: function handler failed:', err);
    return handlerFailed(err);
  }
}

// ---------------------------------------------------------------------------- input

// stdin is read as bytes and cut into requests: a head line (up to "\n"), then exactly
// `length` body bytes. Either may arrive in any number of pieces, and a piece may hold the
// end of one request and the start of the next.
class Requests {
  constructor(onRequest) {
    this.onRequest = onRequest;
    this.chunks = [];
    this.size = 0;
    this.head = null;
  }

  push(chunk) {
    this.chunks.push(chunk);
    this.size += chunk.length;
    for (;;) {
      if (this.head === null) {
        const line = this.takeLine();
        if (line === null) return;
        const head = JSON.parse(line.toString('utf8'));
        if (!Number.isSafeInteger(head.length) || head.length < 0) {
          throw new Error('request head without a valid length: ' + line.toString('utf8').slice(0, 200));
        }
        this.head = head;
      }
      if (this.size < this.head.length) return;
      const body = this.take(this.head.length);
      const head = this.head;
      this.head = null;
      this.onRequest(head, body);
    }
  }

  // The bytes up to the first newline (dropped), or null while there is none.
  takeLine() {
    let seen = 0;
    for (const c of this.chunks) {
      const i = c.indexOf(0x0a);
      if (i >= 0) {
        const line = this.take(seen + i + 1);
        return line.subarray(0, line.length - 1);
      }
      seen += c.length;
    }
    return null;
  }

  take(n) {
    const parts = [];
    let need = n;
    while (need > 0) {
      const c = this.chunks[0];
      if (c.length <= need) {
        parts.push(c);
        this.chunks.shift();
        need -= c.length;
      } else {
        parts.push(c.subarray(0, need));
        this.chunks[0] = c.subarray(need);
        need = 0;
      }
    }
    this.size -= n;
    return parts.length === 1 ? parts[0] : Buffer.concat(parts, n);
  }
}

// One request at a time, in order (fwatchdog sends the next only after the answer).
const queue = [];
let busy = false;
let ended = false;

async function drain() {
  if (busy) return;
  busy = true;
  while (queue.length > 0) {
    const [head, body] = queue.shift();
    const [status, headers, payload] = await answer(head, body);
    send(status, headers, payload);
  }
  busy = false;
  if (ended) process.exit(0);
}

const requests = new Requests((head, body) => {
  queue.push([head, body]);
  drain().catch((err) => {
    console.error('node-classic: cannot answer:', err);
    process.exit(1);
  });
});

process.stdin.on('data', (chunk) => {
  try {
    requests.push(chunk);
  } catch (err) {
    console.error('node-classic: bad request stream:', err.message);
    process.exit(1);
  }
});
// A promise a handler dropped, rejected: logged. (The classic template's process ended with
// its request; a worker's lives on, so one stray rejection must not end it.)
process.on('unhandledRejection', (err) => {
  console.error('node-classic: unhandled promise rejection:', err);
});
process.stdin.on('end', () => {
  ended = true;
  if (!busy) process.exit(0);
});

writeAll(Buffer.from('{"ready":true}\n'));
