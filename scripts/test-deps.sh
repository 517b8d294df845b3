#!/usr/bin/env bash
# Installs what the test suite needs when it is missing: curl (the demo test runs its
# printed curl lines), redis-server (Redis registry tests), chromium (console tests) and
# nginx (forward-auth in front of a real nginx).
# As root it uses apt-get; otherwise it says exactly what to install and fails, so no
# test is ever skipped silently.
set -euo pipefail

need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "make test: installing ${need[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "make test: missing ${need[*]}; install them first, e.g. sudo apt-get install ${need[*]}" >&2
  exit 1
fi
