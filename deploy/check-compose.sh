#!/usr/bin/env bash
# Validates docker-compose.yml (syntax, schema, interpolation) without a docker engine:
# `docker-compose config -q` only parses. Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v docker-compose >/dev/null 2>&1; then
  echo "docker-compose is not installed (scripts/install-test-deps.sh installs it)" >&2
  exit 1
fi
docker-compose -f docker-compose.yml config -q
for f in deploy/nginx.conf deploy/seaweedfs-s3.json Dockerfile; do
  [ -s "$f" ] || { echo "$f is missing" >&2; exit 1; }
done
python3 -m json.tool deploy/seaweedfs-s3.json >/dev/null
echo "docker-compose.yml is valid"
