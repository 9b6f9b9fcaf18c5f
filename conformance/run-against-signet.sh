#!/usr/bin/env bash
# Starts Signet on a free loopback port with a fresh data folder, runs the conformance
# runner against it with Signet's (empty) expected-failures file, and stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}/debug
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
mkfifo "$work/out"
"$target/signet" serve --listen 127.0.0.1:0 --data-dir "$work/data" >"$work/out" 2>"$work/signet.log" &
pid=$!
read -r line <"$work/out"
addr=${line#listening on }
cat "$work/out" >/dev/null &
"$target/signet-conformance" --url "http://$addr" \
  --expected conformance/expected/signet.toml "$@"
