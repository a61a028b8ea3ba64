#!/usr/bin/env bash
# benches/load/run.sh: whole-process load comparison of Baton against nginx, HAProxy and Envoy.
# Every proxy runs with one worker in front of the same nginx origin (100-byte body), pinned with
# the origin to CPU 0 while the load generator runs on CPU 1. Measures idle RSS, HTTP/1.1
# keep-alive and Connection: close throughput/latency with wrk, and h2c with h2load.
# Only 127.0.0.1 is ever used. See benches/load/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
LOG_TAG=load
# shellcheck source=benches/load/lib.sh
source "$HERE/lib.sh"

DURATION=10
CONNECTIONS=50
ONLY="baton,nginx,haproxy,envoy"
BATON_BIN=""
WARMUP=2
RUNS=1
H2_CLIENTS=10
H2_STREAMS=10
READY_TIMEOUT=10
KEEP=0
BATON_SHM=0
OUT=""
RESTART=0
RESTARTS=10
INTERVAL=2

usage() {
  cat <<EOF
usage: benches/load/run.sh [--duration SECS] [--connections N] [--only LIST] [--baton PATH]
                           [--runs N] [--warmup SECS] [--out FILE] [--keep]
  --duration SECS   measured time of each wrk/h2load run (default $DURATION)
  --connections N   wrk connections (default $CONNECTIONS); h2load uses $H2_CLIENTS x $H2_STREAMS
  --only LIST       comma-separated subset of baton,nginx,haproxy,envoy (default: all)
  --baton PATH      use this baton binary instead of building it (cargo build --release)
  --runs N          repeat each measured run N times; the table shows medians (default $RUNS)
  --warmup SECS     warm-up before each measured run (default $WARMUP)
  --out FILE        where to write the results JSON (default: \$TMPDIR/baton-load-<time>.json)
  --keep            keep the work dir (configs, logs, raw tool output) for inspection
  --baton-shm-stats run Baton with hot restart on (stats in the shared-memory region) instead of
                    --disable-hot-restart (stats in process memory): compare the two runs
  --restart         restart mode (benches/load/restart-mode.sh): restart each proxy under load
  --restarts N      restarts per run in restart mode (default $RESTARTS)
  --interval SECS   seconds between restarts in restart mode (default $INTERVAL)
Env: ENVOY_BIN=PATH to use a specific envoy binary.
Exit status: 0 ok; 3 a selected proxy did not come up (still reported); 1 setup error.
EOF
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --duration) DURATION=${2:?}; shift 2 ;;
    --duration=*) DURATION=${1#*=}; shift ;;
    --connections) CONNECTIONS=${2:?}; shift 2 ;;
    --connections=*) CONNECTIONS=${1#*=}; shift ;;
    --only) ONLY=${2:?}; shift 2 ;;
    --only=*) ONLY=${1#*=}; shift ;;
    --baton) BATON_BIN=${2:?}; shift 2 ;;
    --baton=*) BATON_BIN=${1#*=}; shift ;;
    --runs) RUNS=${2:?}; shift 2 ;;
    --runs=*) RUNS=${1#*=}; shift ;;
    --warmup) WARMUP=${2:?}; shift 2 ;;
    --warmup=*) WARMUP=${1#*=}; shift ;;
    --out) OUT=${2:?}; shift 2 ;;
    --out=*) OUT=${1#*=}; shift ;;
    --keep) KEEP=1; shift ;;
    --baton-shm-stats) BATON_SHM=1; shift ;;
    --restart) RESTART=1; shift ;;
    --restarts) RESTARTS=${2:?}; shift 2 ;;
    --restarts=*) RESTARTS=${1#*=}; shift ;;
    --interval) INTERVAL=${2:?}; shift 2 ;;
    --interval=*) INTERVAL=${1#*=}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

for v in DURATION CONNECTIONS RUNS WARMUP RESTARTS INTERVAL; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "--${v,,} must be a whole number, got '${!v}'"
done
((DURATION >= 1)) || die "--duration must be at least 1"
((CONNECTIONS >= 1)) || die "--connections must be at least 1"
((RUNS >= 1)) || die "--runs must be at least 1"

declare -A WANT=()
IFS=',' read -r -a _only <<<"$ONLY"
for p in "${_only[@]}"; do
  case "$p" in
    baton | nginx | haproxy | envoy) WANT[$p]=1 ;;
    "") ;;
    *) die "--only: unknown proxy '$p' (known: baton,nginx,haproxy,envoy)" ;;
  esac
done
((${#WANT[@]} > 0)) || die "--only selected no proxy"
wants() { [[ -n ${WANT[$1]:-} ]]; }

# ---------------------------------------------------------------------------------------------
# Tools: install what is missing (quietly, idempotently).
# ---------------------------------------------------------------------------------------------
need_cmd curl curl
need_cmd python3 python3
need_cmd taskset util-linux
need_cmd nginx nginx-light nginx # the origin is always nginx
need_cmd wrk wrk
need_cmd h2load nghttp2-client
if wants haproxy; then need_cmd haproxy haproxy; fi

envoy_or_skip

if wants baton; then
  ensure_baton
fi
((${#WANT[@]} > 0)) || die "nothing left to measure"

# ---------------------------------------------------------------------------------------------
# Work dir, process bookkeeping and cleanup.
# ---------------------------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/baton-load.XXXXXX")
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
[[ -n $OUT ]] || OUT="${TMPDIR:-/tmp}/baton-load-$STAMP.json"
RECORDS="$WORK/records.jsonl"
: >"$RECORDS"
PIDS=()
FAILED=()
install_cleanup

read -r ORIGIN_PORT BATON_PORT BATON_ADMIN NGINX_PORT NGINX_H2_PORT HAPROXY_PORT HAPROXY_H2_PORT \
  ENVOY_PORT ENVOY_ADMIN <<<"$(free_ports 9)"

body_len() { curl -s --max-time 2 "$@" 2>/dev/null | wc -c; }

rss_json() { # rss_json ROOT_PID ROLE_OF_ROOT ROLE_OF_CHILDREN KEY: JSON list of processes + RSS
  local root=$1 role0=$2 role1=$3 pids p first=1 rss comm role threads
  mapfile -t pids < <(
    echo "$root"
    descendants "$root"
  )
  printf '['
  for p in "${pids[@]}"; do
    rss=$(awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2>/dev/null) || rss=""
    [[ -n $rss ]] || continue
    comm=$(cat "/proc/$p/comm" 2>/dev/null || echo "?")
    threads=$(awk '/^Threads:/{print $2}' "/proc/$p/status" 2>/dev/null) || threads=""
    [[ -n $threads ]] || threads=0
    role=$role1
    [[ $p == "$root" ]] && role=$role0
    ((first)) || printf ','
    first=0
    printf '{"pid":%s,"role":"%s","comm":"%s","threads":%s,"%s":%s}' "$p" "$role" "$comm" \
      "$threads" "$4" "$rss"
  done
  printf ']'
}

log "work dir: $WORK"
log "ports: origin=$ORIGIN_PORT baton=$BATON_PORT nginx=$NGINX_PORT/$NGINX_H2_PORT(h2)" \
  "haproxy=$HAPROXY_PORT/$HAPROXY_H2_PORT(h2) envoy=$ENVOY_PORT"

# ---------------------------------------------------------------------------------------------
# Configs.
# ---------------------------------------------------------------------------------------------
origin_conf "$ORIGIN_PORT" 8192 75s "reuseport backlog=4096"
mkdir -p "$WORK/nginx"

NGINX_VERSION=$(nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
NGINX_H2=""
if nginx -V 2>&1 | grep -q -- '--with-http_v2_module'; then
  if printf '%s\n%s\n' "1.25.1" "$NGINX_VERSION" | sort -V -C; then
    NGINX_H2="listen 127.0.0.1:$NGINX_H2_PORT; http2 on;"
  else
    # Before 1.25.1 an http2 listener without ssl speaks h2c with prior knowledge only.
    NGINX_H2="listen 127.0.0.1:$NGINX_H2_PORT http2;"
  fi
fi
nginx_location='location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }'
nginx_conf_head "$WORK/nginx" on 8192 >"$WORK/nginx.conf"
cat >>"$WORK/nginx.conf" <<EOF
  upstream origin {
    server 127.0.0.1:$ORIGIN_PORT;
    keepalive 64;
    keepalive_requests 100000;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT backlog=4096;
    $nginx_location
  }
EOF
if [[ -n $NGINX_H2 ]]; then
  cat >>"$WORK/nginx.conf" <<EOF
  server {
    $NGINX_H2
    http2_max_requests 100000;
    $nginx_location
  }
EOF
fi
echo "}" >>"$WORK/nginx.conf"

cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 30s
frontend fe
  bind 127.0.0.1:$HAPROXY_PORT
  bind 127.0.0.1:$HAPROXY_H2_PORT proto h2
  default_backend origin
backend origin
  server o1 127.0.0.1:$ORIGIN_PORT
EOF

envoy_bootstrap "$BATON_PORT" "$BATON_ADMIN" "$ORIGIN_PORT" >"$WORK/baton.yaml"
envoy_bootstrap "$ENVOY_PORT" "$ENVOY_ADMIN" "$ORIGIN_PORT" >"$WORK/envoy.yaml"

# ---------------------------------------------------------------------------------------------
# Measurement.
# ---------------------------------------------------------------------------------------------
record() { printf '%s\n' "$1" >>"$RECORDS"; }
skip() { # skip PROXY MODE REASON
  log "SKIPPING $1 $2: $3"
  record "$(python3 -c 'import json,sys; print(json.dumps({"type":"skip","proxy":sys.argv[1],"mode":sys.argv[2],"reason":sys.argv[3]}))' "$1" "$2" "$3")"
}

run_wrk() { # run_wrk PROXY MODE PORT [wrk header args...]
  local proxy=$1 mode=$2 port=$3 url i out
  shift 3
  url="http://127.0.0.1:$port/"
  log "$proxy $mode: warm-up ${WARMUP}s, then ${RUNS}x wrk -t1 -c$CONNECTIONS -d${DURATION}s"
  if ((WARMUP > 0)); then
    timeout $((WARMUP + 30)) taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "$@" "$url" \
      >/dev/null 2>&1 || true
  fi
  for ((i = 1; i <= RUNS; i++)); do
    out="$WORK/wrk-$proxy-$mode-$i.txt"
    if ! timeout $((DURATION + 30)) taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" \
      --latency -s "$HERE/wrk-report.lua" "$@" "$url" >"$out" 2>&1; then
      skip "$proxy" "$mode" "wrk failed: $(tail -n 3 "$out" | tr '\n' ' ')"
      return 0
    fi
    record "{\"type\":\"run\",\"proxy\":\"$proxy\",\"mode\":\"$mode\",\"tool\":\"wrk\",\"run\":$i,\"out\":\"$out\"}"
  done
}

run_h2() { # run_h2 PROXY PORT
  local proxy=$1 port=$2 url i out lg
  url="http://127.0.0.1:$port/"
  if ! curl -s -o /dev/null --max-time 2 --http2-prior-knowledge -w '%{http_code}' "$url" \
    2>/dev/null | grep -q '^200$'; then
    skip "$proxy" h2 "no 200 over h2c (prior knowledge) on port $port"
    return 0
  fi
  log "$proxy h2: ${RUNS}x h2load -c$H2_CLIENTS -m$H2_STREAMS -D$DURATION (warm-up ${WARMUP}s)"
  for ((i = 1; i <= RUNS; i++)); do
    out="$WORK/h2load-$proxy-$i.txt"
    lg="$WORK/h2load-$proxy-$i.log"
    if ! timeout $((DURATION + WARMUP + 30)) taskset -c 1 h2load -t1 -c"$H2_CLIENTS" \
      -m"$H2_STREAMS" -D"$DURATION" --warm-up-time="$WARMUP" --log-file="$lg" "$url" \
      >"$out" 2>&1; then
      skip "$proxy" h2 "h2load failed: $(tail -n 3 "$out" | tr '\n' ' ')"
      return 0
    fi
    record "{\"type\":\"run\",\"proxy\":\"$proxy\",\"mode\":\"h2\",\"tool\":\"h2load\",\"run\":$i,\"out\":\"$out\",\"log\":\"$lg\"}"
  done
}

measure() { # measure PROXY PID PORT H2_PORT ROOT_ROLE CHILD_ROLE VERSION
  local proxy=$1 pid=$2 port=$3 h2port=$4 role0=$5 role1=$6 version=$7 n idle after
  if ! wait_ready "$pid" "http://127.0.0.1:$port/"; then
    local why="no 200 within ${READY_TIMEOUT}s"
    alive "$pid" || why="exited before serving"
    FAILED+=("$proxy")
    skip "$proxy" all "$why (log: $(tail -n 5 "$WORK/$proxy.log" | tr '\n' ' '))"
    stop_tree "$pid"
    return 0
  fi
  n=$(body_len "http://127.0.0.1:$port/")
  [[ $n -eq 100 ]] || log "WARNING: $proxy returned a $n-byte body, expected 100"
  sleep 1
  idle=$(rss_json "$pid" "$role0" "$role1" rss_kb_idle)
  log "$proxy ready (pid $pid); idle RSS: $idle"

  run_wrk "$proxy" h1-keepalive "$port"
  run_wrk "$proxy" h1-close "$port" -H 'Connection: close'
  if [[ -n $h2port ]]; then run_h2 "$proxy" "$h2port"; fi

  after=$(rss_json "$pid" "$role0" "$role1" rss_kb_after)
  record "$(python3 - "$proxy" "$version" "$idle" "$after" <<'EOF'
import json, sys
idle, after = json.loads(sys.argv[3]), json.loads(sys.argv[4])
by_pid = {p["pid"]: p for p in after}
for p in idle:
    if p["pid"] in by_pid:
        p["rss_kb_after"] = by_pid[p["pid"]]["rss_kb_after"]
print(json.dumps({"type": "proxy", "proxy": sys.argv[1], "version": sys.argv[2], "processes": idle}))
EOF
)"
  stop_tree "$pid"
}

# The origin stays up for the whole run.
start_origin "$ORIGIN_PORT"
[[ $(body_len "http://127.0.0.1:$ORIGIN_PORT/") -eq 100 ]] || die "origin body is not 100 bytes"

record "$(python3 -c 'import json,sys; print(json.dumps({"type":"meta","duration_s":int(sys.argv[1]),"connections":int(sys.argv[2]),"runs":int(sys.argv[3]),"warmup_s":int(sys.argv[4]),"h2_clients":int(sys.argv[5]),"h2_streams":int(sys.argv[6]),"started":sys.argv[7],"nproc":int(sys.argv[8]),"kernel":sys.argv[9],"loadavg_at_start":sys.argv[10]}))' \
  "$DURATION" "$CONNECTIONS" "$RUNS" "$WARMUP" "$H2_CLIENTS" "$H2_STREAMS" "$STAMP" "$(nproc)" "$(uname -r)" \
  "$(cut -d' ' -f1-3 /proc/loadavg)")"
log "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (a busy machine skews every figure)"

if ((RESTART)); then
  # shellcheck source=benches/load/restart-mode.sh
  source "$HERE/restart-mode.sh"
  restart_mode
  stop_tree "$ORIGIN_PID"
  exit 0
fi

if wants baton; then
  BATON_FLAGS=(--concurrency 1)
  BATON_HELP=$("$BATON_BIN" --help 2>&1 || true)
  if grep -q -- '--base-id' <<<"$BATON_HELP"; then
    BATON_FLAGS+=(--base-id $((RANDOM % 1000 + 1000)))
  else
    log "baton --help does not list --base-id; not passing it"
  fi
  if ((BATON_SHM)); then
    log "baton keeps hot restart on: stats in the shared-memory region"
  elif grep -q -- '--disable-hot-restart' <<<"$BATON_HELP"; then
    BATON_FLAGS+=(--disable-hot-restart)
  else
    log "baton --help does not list --disable-hot-restart; not passing it"
  fi
  # Same log level as Envoy gets below, so neither pays for info logging.
  if grep -q -- '--log-level' <<<"$BATON_HELP"; then BATON_FLAGS+=(--log-level warn); fi
  start_bg baton "$BATON_BIN" -c "$WORK/baton.yaml" "${BATON_FLAGS[@]}"
  measure baton "$LAST_PID" "$BATON_PORT" "$BATON_PORT" main worker \
    "$("$BATON_BIN" --version 2>&1 | head -n 1 || true)"
fi

if wants nginx; then
  start_bg nginx nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx.conf"
  pid=$LAST_PID
  if [[ -z $NGINX_H2 ]]; then
    skip nginx h2 "nginx $NGINX_VERSION has no http_v2 module"
    measure nginx "$pid" "$NGINX_PORT" "" master worker "nginx $NGINX_VERSION"
  else
    measure nginx "$pid" "$NGINX_PORT" "$NGINX_H2_PORT" master worker "nginx $NGINX_VERSION"
  fi
fi

if wants haproxy; then
  start_bg haproxy haproxy -db -f "$WORK/haproxy.cfg"
  measure haproxy "$LAST_PID" "$HAPROXY_PORT" "$HAPROXY_H2_PORT" main worker \
    "$(haproxy -v 2>&1 | head -n 1)"
fi

if wants envoy; then
  start_bg envoy "$ENVOY" -c "$WORK/envoy.yaml" --concurrency 1 \
    --base-id $((RANDOM % 1000 + 2000)) --disable-hot-restart --log-level warn
  measure envoy "$LAST_PID" "$ENVOY_PORT" "$ENVOY_PORT" main worker \
    "$("$ENVOY" --version 2>&1 | grep -o 'version: [^ ]*' | head -n 1)"
fi

stop_tree "$ORIGIN_PID"
echo
python3 "$HERE/report.py" "$RECORDS" "$OUT"
if ((${#FAILED[@]})); then
  log "did not come up: ${FAILED[*]}"
  exit 3
fi
