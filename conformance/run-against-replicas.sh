#!/usr/bin/env bash
# Runs the conformance runner against two Signet replicas behind a round-robin nginx:
# a throwaway PostgreSQL cluster and SeaweedFS bucket (scripts/with-scaleout-services.sh)
# shared by both replicas, every service on free loopback ports with its files in one
# temporary folder, all torn down at the end. Exits with the runner's status (2 when a
# service is missing or fails).
#
# Needs target/debug/signet and target/debug/signet-conformance (cargo build), and the
# scale-out services (scripts/install-test-deps.sh): PostgreSQL, `weed`, nginx.
# Extra arguments go to signet-conformance (e.g. --junit out.xml --only push).
set -euo pipefail
self=$(realpath "$0")
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}/debug
fail() { echo "run-against-replicas: $*" >&2; exit 2; }
for bin in "$target/signet" "$target/signet-conformance"; do
  [[ -x $bin ]] || fail "$bin is missing (cargo build-all)"
done
# PostgreSQL and SeaweedFS come from scripts/with-scaleout-services.sh (started here
# unless the caller already runs under it).
if [[ -z ${SIGNET_TEST_DATABASE_URL:-} || -z ${SIGNET_TEST_S3_ENDPOINT:-} ]]; then
  exec scripts/with-scaleout-services.sh "$self" "$@"
fi
nginx=$(command -v nginx) || fail "nginx is not installed (scripts/install-test-deps.sh)"

work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Free loopback ports: ask the kernel for N of them at once.
free_ports() {
  python3 -c 'import socket,sys
s=[socket.socket() for _ in range(int(sys.argv[1]))]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))' "$1"
}

cat >"$work/signet.toml" <<EOF
[gc]
interval_secs = 0
[storage]
metadata_url = "$SIGNET_TEST_DATABASE_URL"
[storage.s3]
endpoint = "$SIGNET_TEST_S3_ENDPOINT"
bucket = "$SIGNET_TEST_S3_BUCKET"
access_key_id = "$SIGNET_TEST_S3_KEY"
secret_access_key = "$SIGNET_TEST_S3_SECRET"
allow_http = true
EOF

# Two replicas; each reports its address on its first line of output.
addrs=()
for name in a b; do
  mkfifo "$work/$name.out"
  "$target/signet" --config "$work/signet.toml" serve --listen 127.0.0.1:0 \
    --data-dir "$work/$name" >"$work/$name.out" 2>"$work/$name.log" &
  pids+=($!)
  read -r -t 60 line <"$work/$name.out" || fail "replica $name did not start: $(cat "$work/$name.log")"
  addrs+=("${line#listening on }")
  cat "$work/$name.out" >/dev/null &
  pids+=($!)
done

# nginx, round robin over both, streaming bodies both ways.
read -r lb_port < <(free_ports 1)
user_line=""
[[ $(id -u) == 0 ]] && user_line="user root;"
cat >"$work/nginx.conf" <<EOF
$user_line
daemon off;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 512; }
http {
  access_log $work/nginx-access.log;
  client_body_temp_path $work/nginx-body;
  proxy_temp_path $work/nginx-proxy;
  fastcgi_temp_path $work/nginx-fastcgi;
  uwsgi_temp_path $work/nginx-uwsgi;
  scgi_temp_path $work/nginx-scgi;
  upstream signet { server ${addrs[0]}; server ${addrs[1]}; }
  server {
    listen 127.0.0.1:$lb_port;
    client_max_body_size 0;
    location / {
      proxy_pass http://signet;
      proxy_http_version 1.1;
      proxy_set_header Host \$http_host;
      proxy_set_header Connection "";
      proxy_request_buffering off;
      proxy_buffering off;
      proxy_next_upstream off;
    }
  }
}
EOF
"$nginx" -c "$work/nginx.conf" -p "$work" 2>"$work/nginx.log" &
pids+=($!)
ready=""
for _ in $(seq 1 50); do
  if curl -sf -o /dev/null "http://127.0.0.1:$lb_port/v2/"; then ready=1; break; fi
  sleep 0.2
done
[[ -n $ready ]] || fail "nginx did not start: $(cat "$work/nginx.log" "$work/nginx-error.log" 2>/dev/null)"
echo "run-against-replicas: nginx 127.0.0.1:$lb_port -> ${addrs[*]}" >&2

status=0
"$target/signet-conformance" --url "http://127.0.0.1:$lb_port" \
  --expected conformance/expected/signet.toml "$@" || status=$?
if [[ $status != 0 ]]; then
  # Which replica answered what: the first lines of each log help tell cross-replica
  # problems from plain failures.
  for name in a b; do echo "--- replica $name (last lines)" >&2; tail -5 "$work/$name.log" >&2; done
fi
exit $status
