#!/usr/bin/env bash
# bash-streaming template entry point (fwatchdog mode=streaming).
#
# fwatchdog runs `bash index.sh` once per request, with the request body on stdin; what the
# handler prints reaches the client as it is written. stdin is always the raw bytes
# (RAW_BODY needs no handling here). Request metadata: Http_Method, Http_Path, Http_Query,
# Http_Content_Type, ... Secrets: get_secret NAME (defined here, exported to the handler).

# get_secret NAME: print the secret's value, surrounding white space trimmed. Lookup order:
# $secret_mount_path/NAME (default /var/openfaas/secrets), $secret_mount_path/NAME/NAME,
# /run/secrets/NAME. Returns 1 (with a message on stderr) when none exists.
get_secret() {
  local name="${1:-}" base="${secret_mount_path:-/var/openfaas/secrets}" f v
  case "$name" in
    '' | */* | . | ..)
      echo "get_secret: invalid secret name '$name'" >&2
      return 2
      ;;
  esac
  for f in "$base/$name" "$base/$name/$name" "/run/secrets/$name"; do
    if [ -f "$f" ]; then
      v="$(cat -- "$f")" || return 1
      v="${v#"${v%%[![:space:]]*}"}"
      v="${v%"${v##*[![:space:]]}"}"
      printf '%s' "$v"
      return 0
    fi
  done
  echo "get_secret: secret '$name' not found (tried $base/$name, $base/$name/$name, /run/secrets/$name)" >&2
  return 1
}
export -f get_secret

# Sourced (`. /home/app/index.sh`): define get_secret only, for other scripts and tests.
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
  return 0
fi

cd "$(dirname -- "${BASH_SOURCE[0]}")/function" || exit 1
exec bash ./handler.sh "$@"
