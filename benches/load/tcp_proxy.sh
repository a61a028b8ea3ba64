#!/usr/bin/env bash
# benches/load/tcp_proxy.sh: tcp_proxy throughput against HAProxy (mode tcp) and Envoy 1.40 in
# the same run. The same origin (tcp_bench.py, on CPU 1) behind each proxy (one worker, CPU 0):
#   bulk   one connection carrying BYTES (1 GiB by default) to the origin: MiB/s
#   churn  CONNS connections one after another (connect, one byte each way, close): conn/s
# Each figure is the median of RUNS runs, with the proxy's CPU time (user + system, from
# /proc/<pid>/stat) per GiB and per 1,000 connections next to it. Only 127.0.0.1 is used.
# The client is Python: for churn it, not the proxy, may be the bound (compare the CPU columns).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
LOG_TAG=tcp-proxy
# shellcheck source=benches/load/lib.sh
source "$HERE/lib.sh"

BYTES=$((1 << 30))
CONNS=10000
RUNS=3
BATON_BIN=""
KEEP=0
READY_TIMEOUT=60
PIDS=()

usage() {
  cat <<USAGE
usage: benches/load/tcp_proxy.sh [--bytes N] [--conns N] [--runs N] [--baton PATH] [--keep]
  --bytes N    bytes of the bulk transfer (default $BYTES)
  --conns N    connections of the churn loop (default $CONNS)
  --runs N     runs of each, the median reported (default $RUNS)
  --baton PATH use this baton binary instead of building it (cargo build --release)
  --keep       keep the work directory
USAGE
}

while (($#)); do
  case $1 in
    --bytes) BYTES=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --baton) BATON_BIN=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

WORK=$(mktemp -d /tmp/baton-tcp-proxy.XXXXXX)
install_cleanup
ensure_baton
need_cmd haproxy haproxy
ENVOY=$(ensure_envoy)

read -r -a PORTS <<<"$(free_ports 4)"
ORIGIN=${PORTS[0]}
LISTEN=${PORTS[1]}
ADMIN=${PORTS[2]}

cat >"$WORK/bootstrap.yaml" <<YAML
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: $ADMIN}}
static_resources:
  listeners:
  - name: tcp
    address: {socket_address: {address: 127.0.0.1, port_value: $LISTEN}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: origin
  clusters:
  - name: origin
    type: STATIC
    connect_timeout: 1s
    circuit_breakers: {thresholds: [{max_connections: 100000}]}
    load_assignment:
      cluster_name: origin
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $ORIGIN}}}
YAML

cat >"$WORK/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn 8000
defaults
  mode tcp
  timeout connect 1s
  timeout client 60s
  timeout server 60s
listen tcp
  bind 127.0.0.1:$LISTEN
  server origin 127.0.0.1:$ORIGIN
CFG

taskset -c 1 python3 "$HERE/tcp_bench.py" origin "$ORIGIN" >"$WORK/origin.log" 2>&1 </dev/null &
PIDS+=("$!")
for _ in $(seq 1 100); do
  grep -q ready "$WORK/origin.log" 2>/dev/null && break
  sleep 0.1
done
grep -q ready "$WORK/origin.log" || die "the origin did not start: $(cat "$WORK/origin.log")"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

wait_listening() { # wait_listening PID: the proxy accepts on LISTEN
  local deadline=$(($(date +%s) + READY_TIMEOUT))
  while (($(date +%s) < deadline)); do
    alive "$1" || return 1
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $LISTEN), timeout=1).close()" \
      2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

measure() { # measure NAME PID: prints one result line per run, "bulk|churn secs cpu_secs"
  local name=$1 pid=$2 hz t0 t1 s
  hz=$(getconf CLK_TCK)
  wait_listening "$pid" || die "$name did not listen: $(tail -5 "$WORK/$name.log")"
  # Warm-up.
  taskset -c 1 python3 "$HERE/tcp_bench.py" churn "$LISTEN" 200 >/dev/null
  for _ in $(seq 1 "$RUNS"); do
    t0=$(ticks "$pid")
    s=$(taskset -c 1 python3 "$HERE/tcp_bench.py" bulk "$LISTEN" "$BYTES")
    t1=$(ticks "$pid")
    echo "$name bulk $s $(((t1 - t0)))" >>"$WORK/results"
    t0=$(ticks "$pid")
    s=$(taskset -c 1 python3 "$HERE/tcp_bench.py" churn "$LISTEN" "$CONNS")
    t1=$(ticks "$pid")
    echo "$name churn $s $(((t1 - t0)))" >>"$WORK/results"
  done
}

: >"$WORK/results"
start_bg baton "$BATON_BIN" -c "$WORK/bootstrap.yaml" --concurrency 1 --disable-hot-restart \
  --log-level warn
measure baton "$LAST_PID"
stop_tree "$LAST_PID"

start_bg envoy "$ENVOY" -c "$WORK/bootstrap.yaml" --concurrency 1 --disable-hot-restart \
  --log-level warn
measure envoy "$LAST_PID"
stop_tree "$LAST_PID"

start_bg haproxy haproxy -f "$WORK/haproxy.cfg" -db
measure haproxy "$LAST_PID"
stop_tree "$LAST_PID"

python3 - "$WORK/results" "$BYTES" "$CONNS" "$(getconf CLK_TCK)" <<'PY'
import statistics, sys
path, nbytes, conns, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = {}
for line in open(path):
    name, kind, secs, ticks = line.split()
    rows.setdefault((name, kind), []).append((float(secs), int(ticks) / hz))
gib = nbytes / (1 << 30)
print(f"tcp_proxy: bulk {nbytes} bytes on one connection, churn {conns} connections; medians")
print(f"{'proxy':8} {'bulk MiB/s':>11} {'CPU s/GiB':>10} {'churn conn/s':>13} {'CPU ms/1k conn':>15}")
for name in ("baton", "envoy", "haproxy"):
    b = rows.get((name, "bulk"), [])
    c = rows.get((name, "churn"), [])
    if not b or not c:
        continue
    bs = statistics.median(s for s, _ in b)
    bc = statistics.median(t for _, t in b)
    cs = statistics.median(s for s, _ in c)
    cc = statistics.median(t for _, t in c)
    print(f"{name:8} {nbytes / (1 << 20) / bs:11.0f} {bc / gib:10.2f} {conns / cs:13.0f} "
          f"{cc / conns * 1e6:15.1f}")
PY
