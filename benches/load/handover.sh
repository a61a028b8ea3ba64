#!/usr/bin/env bash
# benches/load/handover.sh: the connection-handover benchmark of issue #9. Through one proxy
# generation, a client opens KEEPALIVE idle HTTP/1.1 keep-alive connections (one request each)
# and WEBSOCKETS WebSockets (one echo each); then the proxy is hot restarted and the client keeps
# probing every connection (one more request / echo, several rounds over ~2 s after cutover and
# once more after the old generation exited). Reports, per case: keep-alive connections still
# open / closed by the server / errors, WebSockets alive / cut, time from the restart to cutover
# and from cutover to the old generation's exit, and Baton's handover counters.
# Cases: baton (handover on, the default), baton-off (--disable-connection-handover: today's
# drain), envoy (its hot restart: the parent lives until --parent-shutdown-time-s).
# Only 127.0.0.1 is ever used. See benches/load/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
LOG_TAG=handover
# shellcheck source=benches/load/lib.sh
source "$HERE/lib.sh"

KEEPALIVE=5000
WEBSOCKETS=200
ONLY="baton,baton-off,envoy"
BATON_BIN=""
DRAIN_S=30
PARENT_S=60
ENVOY_DRAIN_S=5
ENVOY_PARENT_S=10
ROUNDS=5
KEEP=0
OUT=""
READY_TIMEOUT=10

usage() {
  cat <<EOF
usage: benches/load/handover.sh [--keepalive N] [--websockets N] [--only LIST] [--baton PATH]
                                [--drain-time-s S] [--parent-shutdown-time-s S]
                                [--envoy-drain-time-s S] [--envoy-parent-shutdown-time-s S]
                                [--rounds N] [--out FILE] [--keep]
  --keepalive N     idle HTTP/1.1 keep-alive connections (default $KEEPALIVE)
  --websockets N    idle WebSockets (default $WEBSOCKETS)
  --only LIST       comma-separated subset of baton,baton-off,envoy (default: all)
                    baton: handover on (default); baton-off: --disable-connection-handover;
                    envoy: Envoy's hot restart
  --baton PATH      use this baton binary instead of building it (cargo build --release)
  --drain-time-s S, --parent-shutdown-time-s S
                    Baton's drain flags, both generations (default $DRAIN_S, $PARENT_S): long,
                    so that the old generation's exit measures the handover, not a timeout
  --envoy-drain-time-s S, --envoy-parent-shutdown-time-s S
                    Envoy's (default $ENVOY_DRAIN_S, $ENVOY_PARENT_S): its parent lives until
                    the parent shutdown time whatever it holds, then cuts what is left
  --rounds N        probe rounds from cutover on, 0.5 s apart (default $ROUNDS), plus one before
                    cutover and one after the old generation exited
  --out FILE        results JSON (default: \$TMPDIR/baton-handover-<time>.json)
  --keep            keep the work dir (configs, logs, client output)
Env: ENVOY_BIN=PATH to use a specific envoy binary.
Exit status: 0 ok; 3 a selected case could not run (still reported); 1 setup error.
EOF
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --keepalive) KEEPALIVE=${2:?}; shift 2 ;;
    --websockets) WEBSOCKETS=${2:?}; shift 2 ;;
    --only) ONLY=${2:?}; shift 2 ;;
    --baton) BATON_BIN=${2:?}; shift 2 ;;
    --drain-time-s) DRAIN_S=${2:?}; shift 2 ;;
    --parent-shutdown-time-s) PARENT_S=${2:?}; shift 2 ;;
    --envoy-drain-time-s) ENVOY_DRAIN_S=${2:?}; shift 2 ;;
    --envoy-parent-shutdown-time-s) ENVOY_PARENT_S=${2:?}; shift 2 ;;
    --rounds) ROUNDS=${2:?}; shift 2 ;;
    --out) OUT=${2:?}; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
for v in KEEPALIVE WEBSOCKETS DRAIN_S PARENT_S ENVOY_DRAIN_S ENVOY_PARENT_S ROUNDS; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
((WEBSOCKETS <= 100000)) || die "--websockets: at most 100000"

declare -A WANT=()
IFS=',' read -r -a _only <<<"$ONLY"
for c in "${_only[@]}"; do
  case "$c" in
    baton | baton-off | envoy) WANT[$c]=1 ;;
    "") ;;
    *) die "--only: unknown case '$c' (known: baton,baton-off,envoy)" ;;
  esac
done
((${#WANT[@]} > 0)) || die "--only selected no case"
wants() { [[ -n ${WANT[$1]:-} ]]; }

# Every connection is a file descriptor in the client and in the proxy (plus its upstream side).
NEED_FDS=$((2 * (KEEPALIVE + WEBSOCKETS) + 1024))
if (($(ulimit -Sn) < NEED_FDS)); then
  ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
  (($(ulimit -Sn) >= NEED_FDS)) ||
    log "WARNING: open files limit $(ulimit -Sn) < $NEED_FDS: connections may fail to open"
fi

need_cmd curl curl
need_cmd python3 python3
need_cmd taskset util-linux
need_cmd nginx nginx-light nginx

envoy_or_skip

HANDOVER_FLAG=1
if wants baton || wants baton-off; then
  ensure_baton
  if ! "$BATON_BIN" --help 2>&1 | grep -q -- --disable-connection-handover; then
    HANDOVER_FLAG=0
    log "this baton has no --disable-connection-handover (no connection handover yet):" \
      "running only the handover-off case, which is its plain drain"
    if wants baton; then
      unset 'WANT[baton]'
      WANT[baton-off]=1
    fi
  fi
fi
((${#WANT[@]} > 0)) || die "nothing left to measure"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/baton-handover.XXXXXX")
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
[[ -n $OUT ]] || OUT="${TMPDIR:-/tmp}/baton-handover-$STAMP.json"
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
PIDS=()
FAILED=()
install_cleanup

read -r ORIGIN_PORT WS_PORT BATON_PORT BATON_ADMIN ENVOY_PORT ENVOY_ADMIN <<<"$(free_ports 6)"
BATON_ID=$((RANDOM % 1000 + 5000))
ENVOY_ID=$((RANDOM % 1000 + 6000))
log "work dir: $WORK; ports: origin=$ORIGIN_PORT ws-origin=$WS_PORT baton=$BATON_PORT" \
  "envoy=$ENVOY_PORT; open files limit $(ulimit -Sn)"

# ---------------------------------------------------------------------------------------------
# Origins and the proxy config.
# ---------------------------------------------------------------------------------------------
origin_conf "$ORIGIN_PORT" 16384 3600s backlog=4096

# The bootstrap of Baton and Envoy: idle connections and tunnels live an hour; WebSockets (/ws)
# go to the ws origin; no circuit breaker limits the many connections.
proxy_yaml() { # proxy_yaml LISTEN_PORT ADMIN_PORT
  envoy_bootstrap "$1" "$2" "$ORIGIN_PORT" \
    --hcm 'common_http_protocol_options: { idle_timeout: 3600s }' \
    --hcm 'stream_idle_timeout: 3600s' \
    --hcm 'upgrade_configs:' --hcm '- upgrade_type: websocket' \
    --cluster-option 'circuit_breakers: { thresholds: [ { max_connections: 1000000, max_pending_requests: 1000000, max_requests: 1000000 } ] }' \
    --route /ws ws "$WS_PORT" 'timeout: 0s'
}
proxy_yaml "$BATON_PORT" "$BATON_ADMIN" >"$WORK/baton.yaml"
proxy_yaml "$ENVOY_PORT" "$ENVOY_ADMIN" >"$WORK/envoy.yaml"
if wants baton || wants baton-off; then
  "$BATON_BIN" --mode validate -c "$WORK/baton.yaml" >"$WORK/baton-validate.log" 2>&1 ||
    die "baton rejects the config: $(tail -n 5 "$WORK/baton-validate.log")"
fi

start_origin "$ORIGIN_PORT"
start_bg ws-origin python3 "$HERE/ws_origin.py" "$WS_PORT"
wait_ready "$LAST_PID" "http://127.0.0.1:$WS_PORT/" || die "WebSocket origin did not come up: $(cat "$WORK/ws-origin.log")"

# ---------------------------------------------------------------------------------------------
# One case: generation 0, the client's connections, generation 1, the client's verdict.
# ---------------------------------------------------------------------------------------------
declare -a GEN_PIDS=()
start_gen() { # start_gen CASE EPOCH: one proxy generation; pid in LAST_PID
  local cs=$1 epoch=$2 extra=()
  case "$cs" in
    baton | baton-off)
      [[ $cs == baton-off && $HANDOVER_FLAG -eq 1 ]] && extra=(--disable-connection-handover)
      # --rollback-window-s 0: this times the old generation's exit, which a rollback window
      # (10 s by default) would hold back after it has drained.
      start_bg "$cs-e$epoch" "$BATON_BIN" -c "$WORK/baton.yaml" --concurrency 1 \
        --base-id "$BATON_ID" --restart-epoch "$epoch" --drain-time-s "$DRAIN_S" \
        --parent-shutdown-time-s "$PARENT_S" --rollback-window-s 0 --log-level info \
        "${extra[@]}" ;;
    envoy)
      start_bg "envoy-e$epoch" "$ENVOY" -c "$WORK/envoy.yaml" --concurrency 1 \
        --base-id "$ENVOY_ID" --restart-epoch "$epoch" --drain-time-s "$ENVOY_DRAIN_S" \
        --parent-shutdown-time-s "$ENVOY_PARENT_S" --log-level info ;;
  esac
  GEN_PIDS+=("$LAST_PID")
}
stop_gens() {
  local p
  for p in "${GEN_PIDS[@]}"; do alive "$p" && stop_tree "$p"; done
  GEN_PIDS=()
  # A chain ended by signals may leave its shared memory behind.
  rm -f "/dev/shm/baton_$BATON_ID" "/dev/shm/envoy_shared_memory_$((ENVOY_ID * 10))"
}
cleanup_hook() { rm -f "/dev/shm/baton_$BATON_ID" "/dev/shm/envoy_shared_memory_$((ENVOY_ID * 10))"; }
record_fail() { # record_fail CASE REASON
  log "case $1 FAILED: $2"
  FAILED+=("$1")
  python3 -c 'import json,sys; print(json.dumps({"case":sys.argv[1],"failed":sys.argv[2]}))' \
    "$1" "$2" >>"$RESULTS"
}

# baton_log_timings CASE: JSON with ms from epoch 1 "starting" to "serving", and ms from epoch 1
# "serving" to epoch 0 "terminated" (the "restart phase" log lines, as restart-mode.sh reads them).
baton_log_timings() {
  restart_phases "$WORK/$1-e0.log" "$WORK/$1-e1.log" | python3 -c '
import json, sys
old, new = (json.loads(line) for line in sys.stdin)
res = {}
if "starting" in new and "serving" in new:
    res["log_start_to_serving_ms"] = round((new["serving"] - new["starting"]) * 1000, 1)
    if "terminated" in old:
        res["log_old_terminated_after_serving_ms"] = round((old["terminated"] - new["serving"]) * 1000, 1)
print(json.dumps(res))'
}

# baton_counters: JSON of the handover counters from the new generation's admin /stats.
# Falls back to `baton stats --base-id` (the shared region) when the admin does not answer.
baton_counters() {
  {
    curl -sf --max-time 5 "http://127.0.0.1:$BATON_ADMIN/stats" 2>/dev/null ||
      timeout 10 "$BATON_BIN" stats --base-id "$BATON_ID" 2>/dev/null || true
  } | python3 -c '
import json, sys
want = ("server.connections_handed_over", "server.connections_received",
        "server.total_connections", "server.parent_connections")
out = {}
for line in sys.stdin:
    k, _, v = line.partition(":")
    if k.strip() in want:
        try:
            out[k.strip()] = int(v.strip())
        except ValueError:
            pass
print(json.dumps(out))'
}

run_case() { # run_case CASE
  local cs=$1 port admin old client_pid deadline ready="$WORK/$1.ready" go="$WORK/$1.go"
  case "$cs" in
    envoy) port=$ENVOY_PORT admin=$ENVOY_ADMIN ;;
    *) port=$BATON_PORT admin=$BATON_ADMIN ;;
  esac
  local parent=$PARENT_S
  [[ $cs == envoy ]] && parent=$ENVOY_PARENT_S
  log "case $cs: generation 0, then $KEEPALIVE keep-alive connections and $WEBSOCKETS WebSockets"
  start_gen "$cs" 0
  old=$LAST_PID
  if ! wait_ready "$old" "http://127.0.0.1:$port/"; then
    record_fail "$cs" "generation 0 did not serve (log: $(tail -n 3 "$WORK/$cs-e0.log" | tr '\n' ' '))"
    stop_gens
    return 0
  fi
  # The client on CPU 1 (the proxies and origins are on CPU 0).
  taskset -c 1 python3 "$HERE/handover_client.py" --port "$port" --admin "$admin" \
    --old-pid "$old" --epoch 1 --keepalive "$KEEPALIVE" --websockets "$WEBSOCKETS" \
    --rounds "$ROUNDS" --ready-file "$ready" --go-file "$go" --exit-timeout $((parent + 30)) \
    >"$WORK/$cs.client.json" 2>"$WORK/$cs.client.log" </dev/null &
  client_pid=$!
  PIDS+=("$client_pid")
  deadline=$(($(date +%s) + 300))
  while [[ ! -s $ready ]]; do
    if ! alive "$client_pid" || (($(date +%s) > deadline)); then
      record_fail "$cs" "client did not get its connections up: $(tail -n 3 "$WORK/$cs.client.log" | tr '\n' ' ')"
      stop_tree "$client_pid"
      stop_gens
      return 0
    fi
    sleep 0.1
  done
  log "case $cs: connections up ($(cat "$ready")); settling 1 s, then the hot restart"
  sleep 1
  local t0
  t0=$(date +%s.%N)
  start_gen "$cs" 1
  echo "$t0 $LAST_PID" >"$go.tmp"
  mv "$go.tmp" "$go"
  log "case $cs: generation 1 started; the client probes until the old generation exits" \
    "(at most $((parent + 30)) s)"
  wait "$client_pid" || true
  local counters="{}" timings="{}"
  if [[ $cs != envoy ]]; then
    counters=$(baton_counters)
    timings=$(baton_log_timings "$cs")
  fi
  python3 - "$cs" "$WORK/$cs.client.json" "$counters" "$timings" "$parent" >>"$RESULTS" <<'EOF'
import json, sys
case, path, counters, timings, parent = sys.argv[1:6]
try:
    res = json.loads(open(path).read().strip().splitlines()[-1])
except (OSError, ValueError, IndexError) as e:
    res = {"failed": f"no client result: {e}"}
res.update({"case": case, "parent_shutdown_time_s": int(parent), "counters": json.loads(counters)})
res.update(json.loads(timings))
print(json.dumps(res))
EOF
  if ! python3 -c 'import json,sys; r=json.loads(sys.argv[1]); sys.exit(0 if "failed" not in r and r.get("cutover") else 1)' \
    "$(tail -n 1 "$RESULTS")"; then
    log "case $cs: no result, or generation 1 never served (logs: $WORK/$cs-e1.log, $WORK/$cs.client.log)"
    FAILED+=("$cs")
  fi
  stop_gens
  local p keep=()
  for p in "${PIDS[@]}"; do [[ $p == "$client_pid" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

log "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (a busy machine skews every figure)"
for c in baton baton-off envoy; do
  if wants "$c"; then run_case "$c"; fi
done

echo
python3 - "$RESULTS" "$OUT" "$HANDOVER_FLAG" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
handover = sys.argv[3] == "1"
labels = {
    "baton": "baton (handover on)",
    "baton-off": "baton --disable-connection-handover" if handover else "baton (no handover in this binary: drain)",
    "envoy": "envoy (hot restart)",
}
DETAILS = (  # result key, what a line of it says (samples joined with "; ")
    ("keepalive_closed_detail", "keep-alive closed (when/how)"),
    ("keepalive_closed_ms_after_cutover", "keep-alive closes, ms after cutover"),
    ("keepalive_error_samples", "keep-alive errors"),
    ("ws_cut_detail", "WebSockets cut (when/how)"),
    ("ws_cut_ms_after_cutover", "WebSocket cuts, ms after cutover"),
    ("ws_cut_samples", "WebSocket cuts"),
)
def g(r, k, d="-"):
    v = r.get(k)
    return d if v is None else v
hdr = f"{'case':<42} {'ka open':>8} {'closed':>7} {'errors':>7} {'ws alive':>9} {'cut':>5} {'start->cut ms':>14} {'old exit ms':>12} {'handed over':>12} {'received':>9}"
print(hdr)
for r in rows:
    name = labels.get(r["case"], r["case"])
    if "failed" in r:
        print(f"{name:<42} FAILED: {r['failed']}")
        continue
    c = r.get("counters", {})
    print(f"{name:<42} {g(r,'keepalive_open'):>8} {g(r,'keepalive_closed'):>7} {g(r,'keepalive_errors'):>7} "
          f"{g(r,'ws_alive'):>9} {g(r,'ws_cut'):>5} {g(r,'go_to_cutover_ms'):>14} "
          f"{g(r,'old_exit_after_cutover_ms'):>12} {c.get('server.connections_handed_over','-'):>12} "
          f"{c.get('server.connections_received','-'):>9}")
print()
for r in rows:
    if "failed" in r:
        continue
    name = labels.get(r["case"], r["case"])
    print(f"{name}:")
    print(f"  opened {r['keepalive_opened']}/{r['keepalive_wanted']} keep-alive, "
          f"{r['websockets_opened']}/{r['websockets_wanted']} WebSockets in {r['setup_s']} s"
          f" (setup errors {r['setup_errors']}{': ' + '; '.join(r['setup_error_samples']) if r['setup_error_samples'] else ''})")
    print(f"  answered in the final round (after the old generation exited, or the wait ended): "
          f"{r['final_answered_http']} keep-alive, {r['final_answered_ws']} WebSockets")
    for key, what in DETAILS:
        if r.get(key):
            v = r[key]
            print(f"  {what}: {'; '.join(v) if key.endswith('_samples') else v}")
    if r.get("cutover") is None:
        why = " (it exited)" if r.get("new_generation_exited_before_serving") else ""
        print(f"  generation 1 never reported restart epoch 1 and LIVE on the admin's /server_info{why}")
    if r.get("old_exit") is None:
        print(f"  the old generation had not exited when the client stopped waiting")
    if "log_start_to_serving_ms" in r:
        print(f"  restart phase log: start->serving {r['log_start_to_serving_ms']} ms, old terminated "
              f"{r.get('log_old_terminated_after_serving_ms', '-')} ms after serving")
    if r["case"] == "envoy":
        print(f"  envoy --parent-shutdown-time-s {r['parent_shutdown_time_s']}")
    if r.get("counters"):
        print(f"  counters: {r['counters']}")
    if r["case"] == "baton":
        ok = (r.get("keepalive_errors") == 0 and r.get("ws_cut") == 0
              and r.get("old_exit_after_cutover_ms") is not None and r["old_exit_after_cutover_ms"] <= 1000)
        print(f"  issue #9 target (0 errors, 0 tunnels cut, old generation gone <= 1 s after cutover): "
              f"{'MET' if ok else 'MISSED'}")
json.dump({"results": rows}, open(sys.argv[2], "w"), indent=1)
print(f"\nresults JSON: {sys.argv[2]}")
EOF
stop_tree "$ORIGIN_PID"
if ((${#FAILED[@]})); then
  log "could not run: ${FAILED[*]}"
  exit 3
fi
