'use strict';
// The classic OpenFaaS node handler, called once per request in a process that stays warm
// (fwatchdog worker mode), so work done at load time (clients, caches) is shared by requests.
// context is the request body: a string, or a Buffer when RAW_BODY=true. Give the result to
// callback(err, result) or return it: a string or a Buffer is sent as is, anything else as
// JSON. Request metadata is in process.env: Http_Method, Http_Path, Http_Query, Http_<Header>.
// Secrets: const { get_secret } = require('../sdk'); get_secret('name').
module.exports = async (context, callback) => {
  return context;
};
