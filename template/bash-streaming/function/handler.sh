#!/usr/bin/env bash
# Called once per request: the request body is on stdin, stdout streams to the client.
# Request metadata: $Http_Method, $Http_Path, $Http_Query, $Http_Content_Type, ...
# Secrets: value="$(get_secret my-secret)".
set -euo pipefail

# Echo the request body back as it arrives (byte for byte).
cat
