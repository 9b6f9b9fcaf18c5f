#!/usr/bin/env bash
# Signet's whole test run: installs what the tests drive, builds once (debug), checks
# formatting, lints and the compose file, runs every unit, storage-suite and integration
# test, the API and client suites again against two replicas on PostgreSQL and S3, the
# benchmark harnesses and the soak in smoke mode, then the conformance runner against Signet, against
# two Signet replicas behind a load balancer, and against the reference registry.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step's name, and the time the one before it took (the run's profile, for the
# README's figures and for finding what grew).
started=$SECONDS
last_step=""
step() {
  if [[ -n $last_step ]]; then
    printf '== %s: %d s\n' "$last_step" $((SECONDS - step_started))
  fi
  last_step=$*
  step_started=$SECONDS
  printf '\n== %s\n' "$*"
}
finish() {
  local status=$?
  [[ -n $last_step ]] && printf '== %s: %d s\n' "$last_step" $((SECONDS - step_started))
  printf '== total: %d s (exit %d)\n' $((SECONDS - started)) "$status"
}
trap finish EXIT

# Runs one step with a time bound far above its usual duration, so a hang fails the run
# with the step's name instead of eating the whole budget: bounded MINUTES COMMAND...
bounded() {
  local minutes=$1 status=0
  shift
  timeout --kill-after=30s "${minutes}m" "$@" || status=$?
  if ((status == 124 || status == 137)); then
    echo "test.sh: step did not finish within $minutes minutes: $*" >&2
  fi
  return "$status"
}

step "installing test dependencies"
bounded 20 scripts/install-test-deps.sh

step "the installer, against empty environments (a new venv, an empty node_modules, no packages)"
bounded 10 scripts/check-installer.sh

step "formatting"
bounded 5 cargo fmt --all -- --check

step "building"
bounded 45 cargo build-all

step "lints"
bounded 30 cargo clippy --workspace --all-targets -- -D warnings

step "compose deployment"
bounded 5 deploy/check-compose.sh

step "unit, storage and integration tests"
bounded 35 cargo nextest run --workspace --no-fail-fast

step "the api tests again against two replicas on PostgreSQL and S3 behind a load balancer"
SIGNET_TEST_REPLICAS=1 bounded 25 scripts/with-scaleout-services.sh \
  cargo nextest run --workspace --profile replicas

step "benchmark harness, smoke mode (the full run is python3 bench/bench.py)"
bounded 10 python3 bench/bench.py --smoke --debug --no-build

step "sync benchmark harness, smoke mode (the full run is python3 bench/sync_bench.py)"
bounded 10 python3 bench/sync_bench.py --smoke --debug --no-build

step "scale-out benchmark harness, smoke mode (the full run is python3 bench/scaleout.py)"
bounded 5 python3 bench/scaleout.py --smoke --debug --no-build

step "cost-growth benchmark harness, smoke mode (the full run is python3 bench/growth.py)"
bounded 5 python3 bench/growth.py --smoke --debug --no-build

step "export/import benchmark harness, smoke mode (the full run is python3 bench/transfer_bench.py)"
bounded 5 python3 bench/transfer_bench.py --smoke --debug --no-build

step "soak, smoke mode (the full run is python3 bench/soak.py)"
bounded 10 python3 bench/soak.py --smoke --out bench/results/soak-smoke-latest.json

step "faults across replicas under load, smoke mode (the full run is python3 bench/chaos.py)"
bounded 10 python3 bench/chaos.py --smoke --debug --no-build

step "conformance: Signet"
bounded 10 conformance/run-against-signet.sh

step "conformance: two Signet replicas on PostgreSQL and S3 behind a load balancer"
bounded 15 conformance/run-against-replicas.sh

step "conformance: the reference registry (docker-registry)"
bounded 10 conformance/run-against-reference.sh
