#!/usr/bin/env bash
# The registry at 1,000 and at 1,000,000 keys: cache-miss (one by_hash query) and cache-hit
# cost, measured on the same sample of keys before and after the store grows.
#
#   benches/scale.sh [--keys 1000000] [--sample 5000] [--no-redis | --no-embedded]
#
# Keys go in with examples/bulk_keys.rs --direct: one KeyStore::insert per key (one SQLite
# transaction each, 8 concurrent Redis inserts), no audit events. Everything lives in a
# temporary folder and a redis-server on a free loopback port, removed on exit.
set -euo pipefail

TOTAL=1000000
SAMPLE=5000
REDIS=1
EMBEDDED=1
while [ $# -gt 0 ]; do
  case "$1" in
    --keys) TOTAL=$2; shift 2 ;;
    --sample) SAMPLE=$2; shift 2 ;;
    --no-redis) REDIS=0; shift ;;
    --no-embedded) EMBEDDED=0; shift ;;
    *) echo "scale.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
cargo build --release --quiet --example bulk_keys --example store_scale
BULK=target/release/examples/bulk_keys
SCALE=target/release/examples/store_scale

DIR=$(mktemp -d "${TMPDIR:-/tmp}/keygate-scale.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

printf 'version: 1\nscopes:\n  items:read: Read\nroutes:\n  - name: items\n    path: /v1/{*rest}\n    scopes: [items:read]\ndefault: deny\n' >"$DIR/policy.yaml"
conf() { # $1 file, $2 store block
  printf 'listen: 127.0.0.1:1\nupstream:\n  url: http://127.0.0.1:1\nstore:\n%s\npolicy: policy.yaml\n' "$2" >"$1"
}
conf "$DIR/embedded.yaml" "  kind: embedded
  path: $DIR/keygate.db"
stores=()
if [ "$EMBEDDED" = 1 ]; then stores+=(embedded); fi
if [ "$REDIS" = 1 ]; then
  RP=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --bind 127.0.0.1 --port "$RP" --save '' --appendonly no --dir "$DIR" \
    --logfile "$DIR/redis.log" &
  PIDS+=($!)
  for _ in $(seq 100); do redis-cli -p "$RP" ping >/dev/null 2>&1 && break; sleep 0.1; done
  conf "$DIR/redis.yaml" "  kind: redis
  url: redis://127.0.0.1:$RP/0"
  stores+=(redis)
fi


for s in "${stores[@]}"; do
  "$BULK" --direct --config "$DIR/$s.yaml" --count "$SAMPLE" --scope items:read --out "$DIR/$s-first.txt" 2>/dev/null
done
# The same sample file per store: bulk_keys made separate keys per store here.
measure_store() { # $1 store, $2 label
  printf '%-9s %-14s ' "$1" "$2"
  "$SCALE" --config "$DIR/$1.yaml" --keys "$DIR/$1-first.txt" --sample "$SAMPLE"
}
for s in "${stores[@]}"; do measure_store "$s" "$SAMPLE keys"; done
for s in "${stores[@]}"; do
  t0=$(date +%s)
  "$BULK" --direct --config "$DIR/$s.yaml" --count $((TOTAL - SAMPLE)) --scope items:read --out "$DIR/$s-rest.txt"
  echo "$s: $((TOTAL - SAMPLE)) more keys inserted in $(( $(date +%s) - t0 )) s" >&2
done
for s in "${stores[@]}"; do measure_store "$s" "$TOTAL keys"; done
[ "$EMBEDDED" = 0 ] || ls -l "$DIR"/keygate.db* | awk '{ s += $5 } END { printf "embedded store on disk: %.0f MiB\n", s / 1048576 }'
