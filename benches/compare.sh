#!/usr/bin/env bash
# keygate vs nginx checking X-API-Key against a `map`, in front of the same upstream,
# in the same run, on loopback. Run with `make compare`.
#
#   benches/compare.sh [--rounds N] [--duration SECONDS] [--keys N] [--connections N]
#                      [--no-redis] [--smoke] [--profile] [--instructions] [--keygate BIN]
#                      [--keep-callgrind DIR]
#
# What runs (everything on 127.0.0.1, free ports, one temporary folder, all killed on exit):
#   upstream      nginx, 1 worker, `return 200` with a small fixed body
#   nginx-map     nginx, 1 worker, `map $http_x_api_key` of the same keys, proxy_pass with
#                 keepalive to the upstream. nginx's map cannot hash, so it maps the RAW
#                 secrets: it does strictly less than keygate (no SHA-256, no checksum, no
#                 policy, no identity headers).
#   keygate       release build, embedded (SQLite) store holding the keys
#   keygate-redis release build, Redis store holding the same keys (unless --no-redis)
#   …-limited     the same keygate on a route with `rate_limit: 1000/s` per key, never
#                 reached (each key gets a share of the load): on the embedded store each
#                 gateway counts its own; on Redis the fleet counts (leases, issue 19)
#   hyper-floor   examples/hyper_floor.rs: the cheapest proxy the same stack makes (hyper 1
#                 server and client, tokio, one upstream connection per client connection,
#                 same allocator and runtime shape) with no key check, no policy, no headers
#                 added or removed, no log. Not a contender: the floor under keygate, to tell
#                 the stack's own cost from keygate's work on top of it.
# The keys are real keygate keys, created through `lifecycle::create` (what
# `keygate keys create` runs) by `examples/bulk_keys.rs`, then the same records are
# inserted into Redis.
#
# Load: wrk, HTTP/1.1, keep-alive, --connections (32) connections, one thread, a Lua script
# rotating over the keys. Pinning: on a machine with N cores, the proxies, the upstream and
# redis share core 0 and wrk runs alone on the others, so the generator never takes the
# proxy's CPU (on 2 cores: proxy + upstream on core 0, wrk on core 1; the upstream nginx
# shares the proxy's core, for every target alike). Rounds are interleaved (nginx, keygate,
# keygate-redis, nginx, ...) so drift on a shared machine hits every target; the table
# gives the median over rounds. "proxy CPU" is the proxy process's own user + system time
# per request (/proc/PID/stat; nginx's worker, keygate with all its threads): steadier
# than req/s on a noisy machine, since the upstream's share of the core is left out.
# Every round must have zero errors and zero non-2xx answers, or the script fails.
#
# Both proxies log each request: nginx to a buffered access log, keygate its access line
# to stderr (redirected to a file).
#
# --smoke: 1 round of 1 s with 50 keys; checks the rig works end to end, measures nothing.
# --profile: also samples keygate (embedded) with `perf record` during its first round and
#            prints the top symbols (perf: apt-get install linux-perf).
# --instructions: also counts the user-space instructions each proxy executes per request
#            (all its threads) under valgrind's callgrind, counting only during one wrk run
#            of --duration seconds after a 1 s warm-up. Unlike req/s, the count does not move
#            with the machine's load, so it compares builds and proxies on a shared machine.
#            valgrind hides SHA-NI, so keygate's SHA-256 runs in software there; that share
#            is printed apart.
# --keygate BIN: measure this keygate binary instead of the fresh release build, to compare
#            two builds in the same conditions (copy the old build's target/release/keygate
#            aside, then run once with it and once without).
# --keep-callgrind DIR: with --instructions, keep each proxy's callgrind dump in DIR (for
#            callgrind_annotate: which functions a change made dearer).
set -euo pipefail

ROUNDS=3
DURATION=5
NKEYS=1000
CONNS=32
REDIS=1
PROFILE=0
INSTRUCTIONS=0
KEYGATE_BIN=
KEEP_CG=
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --keys) NKEYS=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --no-redis) REDIS=0; shift ;;
    --profile) PROFILE=1; shift ;;
    --instructions) INSTRUCTIONS=1; shift ;;
    --keygate) KEYGATE_BIN=$(realpath "$2"); shift 2 ;;
    --keep-callgrind) KEEP_CG=$(realpath "$2"); shift 2 ;;
    --smoke) ROUNDS=1; DURATION=1; NKEYS=50; shift ;;
    -h|--help) sed -n '2,53p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
ROOT=$PWD

# --- tools -----------------------------------------------------------------------------
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ "$REDIS" = 1 ]; then command -v redis-server >/dev/null 2>&1 || need+=(redis-server); fi
if [ "$INSTRUCTIONS" = 1 ]; then command -v callgrind_control >/dev/null 2>&1 || need+=(valgrind); fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "compare: installing ${need[*]} with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "compare: missing ${need[*]}; install them first" >&2
    exit 1
  fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

CORES=$(nproc)
if [ "$CORES" -lt 2 ]; then
  echo "compare: needs at least 2 cores (proxy and load generator apart)" >&2
  exit 1
fi
PROXY_CPUS=0
LOAD_CPUS=1-$((CORES - 1))

echo "compare: building keygate, bulk_keys and hyper_floor (release)" >&2
cargo build --release --quiet --bin keygate --example bulk_keys --example hyper_floor
KEYGATE=${KEYGATE_BIN:-$ROOT/target/release/keygate}
FLOOR=$ROOT/target/release/examples/hyper_floor
BULK=$ROOT/target/release/examples/bulk_keys

# --- processes, cleaned up whatever happens ------------------------------------------------
DIR=$(mktemp -d "${TMPDIR:-/tmp}/keygate-compare.XXXXXX")
# keygate watches its policy's folder for edits: its configs and policy live in $DIR/etc,
# apart from the logs, or every access-log write would wake the watcher.
mkdir -p "$DIR/etc"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits (at most 10 s) until something answers on 127.0.0.1:$1.
wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "compare: nothing listening on port $1; logs in $DIR:" >&2
  tail -n 20 "$DIR"/*.log >&2 || true
  exit 1
}

UP=$(free_port); NGX=$(free_port); KG=$(free_port); KG_ADMIN=$(free_port)
KGR=$(free_port); KGR_ADMIN=$(free_port); RP=$(free_port); FL=$(free_port)

nginx_conf() { # $1 name, $2 http body
  mkdir -p "$DIR/$1"
  cat >"$DIR/$1/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $DIR/$1/nginx.pid;
error_log $DIR/$1.log warn;
events { worker_connections 4096; }
http {
  client_body_temp_path $DIR/$1/body;
  proxy_temp_path $DIR/$1/proxy;
  fastcgi_temp_path $DIR/$1/fastcgi;
  uwsgi_temp_path $DIR/$1/uwsgi;
  scgi_temp_path $DIR/$1/scgi;
  keepalive_requests 1000000;
  map_hash_bucket_size 128;
  map_hash_max_size 65536;
$2
}
EOF
}

# Upstream: a small fixed body, no logging.
nginx_conf upstream "
  access_log off;
  server {
    listen 127.0.0.1:$UP;
    location / { default_type text/plain; return 200 \"hello from upstream\n\"; }
  }"
taskset -c "$PROXY_CPUS" "$NGINX" -p "$DIR/upstream" -c "$DIR/upstream/nginx.conf" &
PIDS+=($!)
wait_port "$UP"

# --- keys -----------------------------------------------------------------------------
cat >"$DIR/etc/policy.yaml" <<'EOF'
version: 1
scopes:
  items:read: Read items
locations: [hq]
routes:
  - name: health
    path: /health
    public: true
  - name: items
    methods: [GET]
    path: /v1/items/{*rest}
    scopes: [items:read]
  - name: limited
    methods: [GET]
    path: /v1/limited/{*rest}
    scopes: [items:read]
    rate_limit: 1000/s
default: deny
EOF
keygate_conf() { # $1 file, $2 listen, $3 admin, $4 store block
  cat >"$1" <<EOF
listen: 127.0.0.1:$2
upstream:
  url: http://127.0.0.1:$UP
admin:
  listen: 127.0.0.1:$3
store:
$4
cache:
  ttl: 60s
  negative_ttl: 5s
  max_entries: 1000000
keys:
  prefix: kg_
  header: X-API-Key
policy: policy.yaml
log:
  format: text
  level: info
EOF
}
keygate_conf "$DIR/etc/embedded.yaml" "$KG" "$KG_ADMIN" "  kind: embedded
  path: $DIR/keygate.db"
configs=(--config "$DIR/etc/embedded.yaml")
if [ "$REDIS" = 1 ]; then
  taskset -c "$PROXY_CPUS" redis-server --bind 127.0.0.1 --port "$RP" --save '' \
    --appendonly no --dir "$DIR" --logfile "$DIR/redis.log" &
  PIDS+=($!)
  wait_port "$RP"
  keygate_conf "$DIR/etc/redis.yaml" "$KGR" "$KGR_ADMIN" "  kind: redis
  url: redis://127.0.0.1:$RP/0"
  configs+=(--config "$DIR/etc/redis.yaml")
fi
echo "compare: creating $NKEYS keys" >&2
"$BULK" "${configs[@]}" --count "$NKEYS" --scope items:read --out "$DIR/keys.txt"

# --- the proxies ---------------------------------------------------------------------------
{
  echo "  map \$http_x_api_key \$key_ok {"
  echo "    default 0;"
  sed 's/.*/    "&" 1;/' "$DIR/keys.txt"
  echo "  }"
} >"$DIR/map.conf"
nginx_conf nginx-map "
  access_log $DIR/nginx-map/access.log combined buffer=64k flush=1s;
  upstream api { server 127.0.0.1:$UP; keepalive 64; }
  include $DIR/map.conf;
  server {
    listen 127.0.0.1:$NGX;
    location / {
      if (\$key_ok = 0) { return 401; }
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header X-API-Key \"\";
      proxy_pass http://api;
    }
  }"
taskset -c "$PROXY_CPUS" "$NGINX" -p "$DIR/nginx-map" -c "$DIR/nginx-map/nginx.conf" &
NGX_MASTER=$!
PIDS+=($!)
wait_port "$NGX"
NGX_WORKER=$(pgrep -P "$NGX_MASTER" | head -n1)

taskset -c "$PROXY_CPUS" "$FLOOR" "127.0.0.1:$FL" "127.0.0.1:$UP" 2>"$DIR/hyper-floor.log" &
FL_PID=$!
PIDS+=($!)
wait_port "$FL"

taskset -c "$PROXY_CPUS" "$KEYGATE" serve --config "$DIR/etc/embedded.yaml" \
  >"$DIR/keygate.out" 2>"$DIR/keygate.log" &
KG_PID=$!
PIDS+=($!)
wait_port "$KG"
# name:port:pid:path (the process whose CPU time is the proxy's: nginx's worker, keygate
# itself; the path the load asks for, less the key's number)
targets=("nginx-map:$NGX:$NGX_WORKER:/v1/items/" "hyper-floor:$FL:$FL_PID:/v1/items/"
  "keygate:$KG:$KG_PID:/v1/items/" "keygate-limited:$KG:$KG_PID:/v1/limited/")
if [ "$REDIS" = 1 ]; then
  taskset -c "$PROXY_CPUS" "$KEYGATE" serve --config "$DIR/etc/redis.yaml" \
    >"$DIR/keygate-redis.out" 2>"$DIR/keygate-redis.log" &
  KGR_PID=$!
  PIDS+=($!)
  wait_port "$KGR"
  targets+=("keygate-redis:$KGR:$KGR_PID:/v1/items/" "keygate-redis-limited:$KGR:$KGR_PID:/v1/limited/")
fi

# --- load ----------------------------------------------------------------------------------
cat >"$DIR/rotate.lua" <<EOF
-- Rotates over the keys; each wrk thread starts at its own offset.
local keys = {}
for line in io.lines("$DIR/keys.txt") do keys[#keys + 1] = line end
local i = math.random(#keys)
local path = os.getenv("KG_PATH") or "/v1/items/"
request = function()
  i = i % #keys + 1
  return wrk.format("GET", path .. i, { ["X-API-Key"] = keys[i] })
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %.1f %.1f\n",
    summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
EOF

# CPU time (user + system, all threads) a process has used, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

run_wrk() { # $1 port, $2 seconds, [$3 path] → "requests duration_us errors non2xx p50_us p99_us"
  KG_PATH=${3:-/v1/items/} taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"$2"s --timeout 2s -s "$DIR/rotate.lua" \
    "http://127.0.0.1:$1/" | sed -n 's/^RESULT //p'
}

# One check per target that a key passes and a missing key is refused, then a warm-up
# pass (fills keygate's cache, opens the upstream keep-alive pools).
key1=$(head -n1 "$DIR/keys.txt")
for t in "${targets[@]}"; do
  IFS=: read -r name port pid path <<<"$t"
  ok=$(curl -s -o /dev/null -w '%{http_code}' -H "X-API-Key: $key1" "http://127.0.0.1:$port${path}1")
  no=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port${path}1")
  want_no=401
  [ "$name" = hyper-floor ] && want_no=200 # checks nothing, by design
  if [ "$ok" != 200 ] || [ "$no" != "$want_no" ]; then
    echo "compare: $name answered $ok with a key and $no without (want 200, $want_no)" >&2
    exit 1
  fi
  run_wrk "$port" 1 "$path" >/dev/null
done

echo "compare: $ROUNDS round(s) of ${DURATION}s per target, $CONNS connections, $NKEYS keys;" \
  "proxies on cpu $PROXY_CPUS, wrk on cpu $LOAD_CPUS" >&2
: >"$DIR/results"
for r in $(seq "$ROUNDS"); do
  for t in "${targets[@]}"; do
    IFS=: read -r name port pid path <<<"$t"
    if [ "$PROFILE" = 1 ] && [ "$r" = 1 ] && [ "$name" = keygate ]; then
      taskset -c "$LOAD_CPUS" perf record -q -F 999 -o "$DIR/perf.data" -p "$KG_PID" \
        -- sleep "$DURATION" >/dev/null 2>&1 &
    fi
    t0=$(cpu_ticks "$pid")
    read -r n dur errs non2xx p50 p99 < <(run_wrk "$port" "$DURATION" "$path")
    t1=$(cpu_ticks "$pid")
    if [ "$errs" != 0 ] || [ "$non2xx" != 0 ]; then
      echo "compare: round $r $name: $errs socket errors, $non2xx non-2xx answers" >&2
      exit 1
    fi
    rps=$(awk -v n="$n" -v d="$dur" 'BEGIN { printf "%.0f", n / (d / 1e6) }')
    cpu=$(awk -v t=$((t1 - t0)) -v hz="$TICK" -v n="$n" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    printf '  round %d %-14s %8s req/s  p50 %7.0f us  p99 %7.0f us  cpu %5s us/req\n' \
      "$r" "$name" "$rps" "$p50" "$p99" "$cpu" >&2
    echo "$name $rps $p50 $p99 $cpu" >>"$DIR/results"
  done
done

# --- table: median per target, ratios against nginx-map -------------------------------------
echo
echo "keygate vs nginx-map: $(date -u +%Y-%m-%d), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')),"
echo "$ROUNDS x ${DURATION}s rounds, $CONNS connections, $NKEYS keys, median of rounds"
echo
python3 - "$DIR/results" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, rps, p50, p99, cpu = line.split()
    rows.setdefault(name, []).append((float(rps), float(p50), float(p99), float(cpu)))
med = {n: tuple(statistics.median(v[i] for v in vs) for i in range(4)) for n, vs in rows.items()}
base = med["nginx-map"]
print("| target | req/s | p50 (µs) | p99 (µs) | proxy CPU (µs/req) | req/s ÷ nginx | p99 ÷ nginx | CPU ÷ nginx |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for name, (rps, p50, p99, cpu) in med.items():
    print(f"| {name} | {rps:,.0f} | {p50:.0f} | {p99:.0f} | {cpu:.1f} | {rps / base[0]:.2f} | {p99 / base[2]:.2f} | {cpu / base[3]:.2f} |")
EOF

if [ "$PROFILE" = 1 ]; then
  wait_for_perf=0
  while [ ! -s "$DIR/perf.data" ] && [ $wait_for_perf -lt 50 ]; do sleep 0.1; wait_for_perf=$((wait_for_perf + 1)); done
  sleep 1
  echo
  echo "keygate (embedded), top symbols by self time during round 1:"
  perf report -i "$DIR/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | head -45
fi

# --- instructions per request (callgrind) --------------------------------------------------
if [ "$INSTRUCTIONS" = 1 ]; then
  # Runs the command under callgrind on the proxies' core with counting off, warms it up,
  # counts over one wrk run, and prints "requests instructions software-sha256-instructions".
  count_instructions() { # $1 name, $2 port, $3 path, then the command
    local name=$1 port=$2 path=$3 out="$DIR/callgrind-$1.out"
    shift 3
    taskset -c "$PROXY_CPUS" valgrind --tool=callgrind --instr-atstart=no \
      --callgrind-out-file="$out" "$@" >"$DIR/$name-cg.stdout" 2>"$DIR/$name-cg.log" &
    local vg=$!
    PIDS+=($vg)
    wait_port "$port"
    callgrind_control -i on "$vg" >/dev/null 2>&1
    run_wrk "$port" 1 "$path" >/dev/null
    callgrind_control -z "$vg" >/dev/null 2>&1
    local n dur errs non2xx p50 p99
    read -r n dur errs non2xx p50 p99 < <(run_wrk "$port" "$DURATION" "$path")
    callgrind_control -i off "$vg" >/dev/null 2>&1
    callgrind_control -d "$vg" >/dev/null 2>&1
    kill "$vg" 2>/dev/null || true
    wait "$vg" 2>/dev/null || true
    if [ "$errs" != 0 ] || [ "$non2xx" != 0 ]; then
      echo "compare: $name under callgrind: $errs socket errors, $non2xx non-2xx answers" >&2
      exit 1
    fi
    # The dump taken after zeroing: its totals are what ran during the counted wrk run.
    local dump total sha
    dump=$(ls -t "$out".* | head -n1)
    if [ -n "$KEEP_CG" ]; then mkdir -p "$KEEP_CG" && cp "$dump" "$KEEP_CG/callgrind-$name.out"; fi
    total=$(awk '/^totals:/ { print $2; exit }' "$dump")
    sha=$(callgrind_annotate "$dump" 2>/dev/null |
      awk '/sha2::sha256::/ { gsub(",", "", $1); s += $1 } END { print s + 0 }')
    echo "$n $total $sha"
  }
  echo
  echo "instructions per request (callgrind, user space, all threads; ${DURATION}s of wrk each):"
  echo
  CG_NGX=$(free_port); CG_KG=$(free_port); CG_KG_ADMIN=$(free_port); CG_FL=$(free_port)
  sed -e "s/^daemon off;/daemon off;\nmaster_process off;/" \
    -e "s#$DIR/nginx-map/nginx.pid#$DIR/nginx-map/cg.pid#" \
    -e "s/127.0.0.1:$NGX;/127.0.0.1:$CG_NGX;/" "$DIR/nginx-map/nginx.conf" >"$DIR/nginx-map/cg.conf"
  sed -e "s/^listen: .*/listen: 127.0.0.1:$CG_KG/" -e "s/^  listen: .*/  listen: 127.0.0.1:$CG_KG_ADMIN/" \
    "$DIR/etc/embedded.yaml" >"$DIR/etc/embedded-cg.yaml"
  read -r n_ngx ir_ngx _ < <(count_instructions nginx-map "$CG_NGX" /v1/items/ \
    "$NGINX" -p "$DIR/nginx-map" -c "$DIR/nginx-map/cg.conf")
  read -r n_fl ir_fl _ < <(count_instructions hyper-floor "$CG_FL" /v1/items/ \
    "$FLOOR" "127.0.0.1:$CG_FL" "127.0.0.1:$UP")
  read -r n_kg ir_kg sha_kg < <(count_instructions keygate "$CG_KG" /v1/items/ \
    "$KEYGATE" serve --config "$DIR/etc/embedded-cg.yaml")
  # The limited route: on the embedded store (each gateway counts), and on Redis (the
  # fleet counts), each in a fresh process.
  limited=()
  read -r n ir sha < <(count_instructions keygate-limited "$CG_KG" /v1/limited/ \
    "$KEYGATE" serve --config "$DIR/etc/embedded-cg.yaml")
  limited+=("keygate-limited $n $ir $sha")
  if [ "$REDIS" = 1 ]; then
    sed -e "s/^listen: .*/listen: 127.0.0.1:$CG_KG/" -e "s/^  listen: .*/  listen: 127.0.0.1:$CG_KG_ADMIN/" \
      "$DIR/etc/redis.yaml" >"$DIR/etc/redis-cg.yaml"
    read -r n ir sha < <(count_instructions keygate-redis-limited "$CG_KG" /v1/limited/ \
      "$KEYGATE" serve --config "$DIR/etc/redis-cg.yaml")
    limited+=("keygate-redis-limited $n $ir $sha")
  fi
  python3 - "$n_ngx" "$ir_ngx" "$n_fl" "$ir_fl" "$n_kg" "$ir_kg" "$sha_kg" <<'EOF'
import sys
n_ngx, ir_ngx, n_fl, ir_fl, n_kg, ir_kg, sha_kg = map(int, sys.argv[1:])
ngx, fl, kg, sha = ir_ngx / n_ngx, ir_fl / n_fl, ir_kg / n_kg, sha_kg / n_kg
print("| target | requests counted | instructions / request | ÷ nginx |")
print("|---|---:|---:|---:|")
print(f"| nginx-map | {n_ngx:,} | {ngx:,.0f} | 1.00 |")
print(f"| hyper-floor | {n_fl:,} | {fl:,.0f} | {fl / ngx:.2f} |")
print(f"| keygate | {n_kg:,} | {kg:,.0f} | {kg / ngx:.2f} |")
print(f"| keygate, less software SHA-256 ({sha:,.0f}) | | {kg - sha:,.0f} | {(kg - sha) / ngx:.2f} |")
EOF
  for row in "${limited[@]}"; do
    read -r name n ir sha <<<"$row"
    python3 -c "import sys; n, ir = int(sys.argv[2]), int(sys.argv[3]); print(f'| {sys.argv[1]} | {n:,} | {ir / n:,.0f} | |')" "$name" "$n" "$ir"
  done
fi
