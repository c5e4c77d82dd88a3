'use strict';
// Helpers for Node.js functions run by fwatchdog (shipped with the node template).
//
//   const { get_secret } = require('../sdk');   // from function/handler.js
//   const apiKey = get_secret('api-key');

const fs = require('fs');
const path = require('path');

const DEFAULT_SECRET_MOUNT_PATH = '/var/openfaas/secrets';
const DOCKER_SECRETS_PATH = '/run/secrets';

function secretPaths(name) {
  const base = process.env.secret_mount_path || DEFAULT_SECRET_MOUNT_PATH;
  return [
    path.join(base, name), // OpenFaaS / Kubernetes projected volume
    path.join(base, name, name), // faas-cli generate for Knative (one dir per secret)
    path.join(DOCKER_SECRETS_PATH, name), // Docker / Compose secrets
  ];
}

// The value of secret `name`, surrounding white space trimmed. Lookup order:
// $secret_mount_path/NAME (default /var/openfaas/secrets), $secret_mount_path/NAME/NAME,
// /run/secrets/NAME. Read on every call, so rotation is picked up. Throws unless a
// default is given.
function get_secret(name, ...fallback) {
  if (!name || name.includes('/') || name === '.' || name === '..') {
    throw new Error(`invalid secret name: ${JSON.stringify(name)}`);
  }
  const tried = secretPaths(name);
  for (const p of tried) {
    let st;
    try {
      st = fs.statSync(p);
    } catch (_) {
      continue;
    }
    if (st.isFile()) return fs.readFileSync(p, 'utf8').trim();
  }
  if (fallback.length > 0) return fallback[0];
  const err = new Error(`secret ${JSON.stringify(name)} not found (tried ${tried.join(', ')})`);
  err.code = 'ENOENT';
  throw err;
}

// The watchdog's boolean: true/1/yes/on, any case.
function isTrue(value) {
  return ['true', '1', 'yes', 'on'].includes(String(value || '').trim().toLowerCase());
}

module.exports = { get_secret, getSecret: get_secret, secretPaths, isTrue };
