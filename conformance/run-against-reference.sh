#!/usr/bin/env bash
# Runs signet-conformance against Debian's docker-registry (distribution 2.8.2)
# on a free loopback port with a throwaway config and storage, judged by
# conformance/expected/docker-registry.toml. Exits with the runner's status.
#
# Extra arguments go to signet-conformance (e.g. --junit out.xml --only push).
# SIGNET_CONFORMANCE_BIN overrides the runner binary (default: target/debug).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
bin="${SIGNET_CONFORMANCE_BIN:-}"
if [[ -z "$bin" ]]; then
    target="${CARGO_TARGET_DIR:-$root/target}"
    bin="$target/debug/signet-conformance"
    # Cheap when up to date; never runs a stale runner.
    (cd "$root" && cargo build-all --quiet)
fi
registry="$(command -v docker-registry || true)"
if [[ -z "$registry" ]]; then
    echo "run-against-reference: docker-registry is not installed (apt-get install docker-registry)" >&2
    exit 2
fi

work="$(mktemp -d)"
pid=""
cleanup() {
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
    else
        shuf -i 20000-60000 -n 1
    fi
}

port="$(free_port)"
mkdir -p "$work/storage"
cat >"$work/config.yml" <<YAML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
YAML

"$registry" serve "$work/config.yml" >"$work/registry.log" 2>&1 &
pid=$!

for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "run-against-reference: docker-registry exited early:" >&2
        cat "$work/registry.log" >&2
        exit 2
    fi
    sleep 0.1
done

status=0
"$bin" --url "http://127.0.0.1:$port" \
    --expected "$here/expected/docker-registry.toml" "$@" || status=$?
if [[ $status -ne 0 && -n "${VERBOSE:-}" ]]; then
    echo "--- docker-registry log ---" >&2
    tail -n 50 "$work/registry.log" >&2
fi
exit "$status"
