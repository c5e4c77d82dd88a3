'use strict';
// Called once per request. event.body is a string (a Buffer when RAW_BODY=true); also
// event.headers, event.method, event.path, event.query. Return { statusCode, body, headers },
// a string, a Buffer, a JSON-able value, or an object whose body is a stream to stream it.
// Secrets: const { get_secret } = require('../sdk'); get_secret('name').
module.exports = async (event, context) => {
  if ((event.method === 'GET' || event.method === 'HEAD') && event.body.length === 0) {
    return { statusCode: 200, body: 'Hello from fwatchdog node\n', headers: { 'Content-Type': 'text/plain; charset=utf-8' } };
  }
  // Echo the request body back, with the request's Content-Type.
  return {
    statusCode: 200,
    body: event.body,
    headers: { 'Content-Type': event.headers['content-type'] || 'application/octet-stream' },
  };
};
