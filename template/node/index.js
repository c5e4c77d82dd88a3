'use strict';
// node template entry point (fwatchdog mode=http): a persistent server using Node's own
// http module. fwatchdog starts it once (fprocess="node index.js") and proxies every request
// to upstream_url, where it listens (default http://127.0.0.1:3000; "unix:/path" works too).
//
// function/handler.js exports async (event, context) => result, where
//   event.body    string (UTF-8), or a Buffer when RAW_BODY=true
//   event.headers lower-cased header names, event.method, event.path, event.query, event.rawQuery
//   context.status(code), context.headers({...}), context.hostname, context.get_secret(name)
// and result is { statusCode, body, headers }, a string, a Buffer, a JSON-able value, or an
// object whose body is a stream.Readable / async iterable, streamed chunk by chunk.

const http = require('http');
const os = require('os');
const { Readable } = require('stream');
const { pipeline } = require('stream/promises');
const sdk = require('./sdk');

let fn = require('./function/handler');
if (typeof fn !== 'function' && fn && typeof fn.handle === 'function') fn = fn.handle;
if (typeof fn !== 'function') {
  console.error('node: function/handler.js must export a function (event, context) => result');
  process.exit(1);
}

const RAW_BODY = sdk.isTrue(process.env.RAW_BODY);
const utf8 = new TextDecoder('utf-8', { fatal: true });

class Context {
  constructor() {
    this.statusCode = 200;
    this.headerValues = {};
    this.hostname = process.env.HOSTNAME || os.hostname();
  }
  status(code) {
    this.statusCode = code;
    return this;
  }
  headers(values) {
    Object.assign(this.headerValues, values);
    return this;
  }
  get_secret(name, ...fallback) {
    return sdk.get_secret(name, ...fallback);
  }
}

function isEnvelope(v) {
  return v !== null && typeof v === 'object' && !Buffer.isBuffer(v) && !Array.isArray(v) &&
    !(v instanceof Readable) && ('statusCode' in v || 'body' in v || 'headers' in v);
}

function isStream(v) {
  return v instanceof Readable ||
    (v !== null && typeof v === 'object' && !Buffer.isBuffer(v) && !Array.isArray(v) &&
      typeof v[Symbol.asyncIterator] === 'function');
}

function hasHeader(headers, name) {
  return Object.keys(headers).some((k) => k.toLowerCase() === name);
}

function textError(res, status, message) {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = Buffer.from(message + '\n');
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': body.length });
  res.end(body);
}

async function send(req, res, result, context) {
  let status = context.statusCode;
  const headers = { ...context.headerValues };
  let body = result;
  if (isEnvelope(result)) {
    if (result.statusCode !== undefined) status = Number(result.statusCode);
    Object.assign(headers, result.headers || {});
    body = result.body;
  }
  let contentType = null;
  let payload;
  if (body === undefined || body === null) {
    payload = Buffer.alloc(0);
  } else if (typeof body === 'string') {
    payload = Buffer.from(body, 'utf8');
    contentType = 'text/plain; charset=utf-8';
  } else if (Buffer.isBuffer(body) || body instanceof Uint8Array) {
    payload = Buffer.from(body);
    contentType = 'application/octet-stream';
  } else if (isStream(body)) {
    payload = body;
    contentType = 'application/octet-stream';
  } else {
    payload = Buffer.from(JSON.stringify(body), 'utf8');
    contentType = 'application/json';
  }
  if (contentType && !hasHeader(headers, 'content-type') && !(Buffer.isBuffer(payload) && payload.length === 0)) {
    headers['Content-Type'] = contentType;
  }
  if (Buffer.isBuffer(payload)) {
    headers['Content-Length'] = payload.length;
    res.writeHead(status, headers);
    res.end(req.method === 'HEAD' ? undefined : payload);
    return;
  }
  res.writeHead(status, headers);
  res.flushHeaders();
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  const source = payload instanceof Readable ? payload : Readable.from(payload);
  try {
    await pipeline(source, res);
  } catch (err) {
    if (!res.destroyed && !res.writableFinished) {
      console.error('node: streamed body failed:', err);
      res.destroy(err); // no final chunk: the client sees an incomplete response
    }
  }
}

async function handle(req, res) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const raw = Buffer.concat(chunks);
  let body = raw;
  if (!RAW_BODY) {
    try {
      body = utf8.decode(raw);
    } catch (_) {
      textError(res, 400, 'request body is not valid UTF-8; send text, or set RAW_BODY=true to receive the body as a Buffer');
      return;
    }
  }
  const url = new URL(req.url, 'http://localhost');
  const event = {
    body,
    headers: req.headers,
    method: req.method,
    path: url.pathname,
    query: Object.fromEntries(url.searchParams),
    rawQuery: url.search.replace(/^\?/, ''),
  };
  const context = new Context();
  let result;
  try {
    result = await fn(event, context);
  } catch (err) {
    console.error('node: function handler failed:', err);
    textError(res, 500, `function handler failed: ${err && err.name ? err.name : 'Error'} (see the function's logs)`);
    return;
  }
  await send(req, res, result, context);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    console.error('node: request failed:', err);
    textError(res, 500, 'internal error in the node template (see the function\'s logs)');
  });
});
server.keepAliveTimeout = 65000;
server.headersTimeout = 66000;
server.requestTimeout = 0; // fwatchdog enforces read/exec timeouts

const upstream = process.env.upstream_url || process.env.http_upstream_url || 'http://127.0.0.1:3000';
function onListening() {
  console.error(`node: listening on ${upstream} (RAW_BODY=${RAW_BODY})`);
}
if (upstream.startsWith('unix:')) {
  const socketPath = upstream.slice('unix:'.length).replace(/^\/\//, '');
  try {
    require('fs').unlinkSync(socketPath);
  } catch (_) { /* not there */ }
  server.listen(socketPath, onListening);
} else {
  const u = new URL(upstream);
  server.listen(Number(u.port) || 80, u.hostname || '127.0.0.1', onListening);
}

function shutdown() {
  server.close(() => process.exit(0));
  if (server.closeIdleConnections) server.closeIdleConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
