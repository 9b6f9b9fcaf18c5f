#!/usr/bin/env bash
# Signet's whole test run: installs what the tests drive, builds once (debug), checks
# formatting, lints and the compose file, runs every unit, storage-suite and integration
# test, the API and client suites again against two replicas on PostgreSQL and S3, the
# benchmark harnesses and the soak in smoke mode, then the conformance runner against Signet, against
# two Signet replicas behind a load balancer, and against the reference registry.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "installing test dependencies"
scripts/install-test-deps.sh

step "formatting"
cargo fmt --all -- --check

step "building"
cargo build --workspace --bins --tests

step "lints"
cargo clippy --workspace --all-targets -- -D warnings

step "compose deployment"
deploy/check-compose.sh

step "unit, storage and integration tests"
cargo nextest run --workspace --no-fail-fast

step "the api tests again against two replicas on PostgreSQL and S3 behind a load balancer"
SIGNET_TEST_REPLICAS=1 scripts/with-scaleout-services.sh \
  cargo nextest run -p signet-api-tests --profile replicas

step "benchmark harness, smoke mode (the full run is python3 bench/bench.py)"
python3 bench/bench.py --smoke --debug

step "sync benchmark harness, smoke mode (the full run is python3 bench/sync_bench.py)"
python3 bench/sync_bench.py --smoke --debug --no-build

step "soak, smoke mode (the full run is python3 bench/soak.py)"
python3 bench/soak.py --smoke --out bench/results/soak-smoke-latest.json

step "conformance: Signet"
conformance/run-against-signet.sh

step "conformance: two Signet replicas on PostgreSQL and S3 behind a load balancer"
conformance/run-against-replicas.sh

step "conformance: the reference registry (docker-registry)"
conformance/run-against-reference.sh
