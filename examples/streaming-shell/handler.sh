#!/usr/bin/env bash
# streaming-shell: each line of the request body comes back upper-cased and numbered the
# moment it is read, then `?ticks=N` adds N lines one second apart (at most 30). Every
# line reaches the client as soon as it is printed: fwatchdog's streaming mode does not
# buffer.
set -euo pipefail

n=0
while IFS= read -r line || [ -n "$line" ]; do
  n=$((n + 1))
  printf '%d: %s\n' "$n" "${line^^}"
done
printf 'read %d lines (%s %s)\n' "$n" "${Http_Method:-?}" "${Http_Path:-/}"

ticks=0
if [[ "${Http_Query:-}" =~ (^|&)ticks=([0-9]+) ]]; then
  ticks=${BASH_REMATCH[2]}
fi
if ((ticks > 30)); then ticks=30; fi
for ((i = 1; i <= ticks; i++)); do
  sleep 1
  printf 'tick %d at %s\n' "$i" "$(date -u +%H:%M:%S)"
done
