# benches/load/restart-mode.sh: the `--restart` mode of run.sh (sourced by it, not run alone).
# shellcheck shell=bash
# Under wrk keep-alive, wrk Connection: close and h2load (Baton and Envoy), each proxy is
# restarted RESTARTS times INTERVAL s apart: Baton by hot restart (same --base-id, the next
# --restart-epoch), Envoy by its hot restart (same flags, --drain-time-s RESTART_DRAIN_S
# --parent-shutdown-time-s RESTART_DRAIN_S+2), nginx by SIGHUP to its master. Prints the errors
# (wrk socket errors + non-2xx; h2load "failed", which already includes its "errored" and
# "timeout", plus streams started but never done), the requests served against a run of the same length with no restart, and for
# Baton the time from starting epoch K+1 to it serving and how long epoch K lived after that
# (from the "restart phase" log lines).
#
# h2load never reconnects an HTTP/2 connection after a GOAWAY (nghttp2 refuses new streams on
# it and h2load gives the connection up), so one h2load would only see the first restart: under
# restarts a fresh h2load starts 1 s before each restart and runs until the next one starts.
#
# Env: RESTART_TOOLS (default "wrk-keepalive wrk-close h2load") picks the loads;
# RESTART_DRAIN_S (default 1) the drain time, e.g. 3 with --interval 2 for restarts closer
# together than the drain.

RESTART_DRAIN_S=${RESTART_DRAIN_S:-1}
[[ $RESTART_DRAIN_S =~ ^[0-9]+$ ]] || die "RESTART_DRAIN_S must be a whole number"
RESTART_PARENT_S=$((RESTART_DRAIN_S + 2))

# parse_load TOOL RESTARTED FILE...: "requests errors", summed over the files.
parse_load() {
  local tool=$1 restarted=$2 f req=0 err=0 r e
  shift 2
  for f in "$@"; do
    read -r r e <<<"$(parse_one "$tool" "$f" "$restarted")"
    if ((e < 0 || err < 0)); then err=-1; else err=$((err + e)); fi
    req=$((req + r))
  done
  echo "$req $err"
}

# parse_one TOOL FILE RESTARTED: "requests errors" of one run; errors -1 when the summary is
# missing.
parse_one() {
  python3 - "$1" "$2" "$3" <<'EOF'
import re, sys
tool, text, restarted = sys.argv[1], open(sys.argv[2]).read(), sys.argv[3] == "1"
if tool == "wrk":
    m = re.search(r"(\d+) requests in", text)
    req = int(m.group(1)) if m else 0
    err = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        err += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        err += int(m.group(1))
    print(req, err)
else:
    # "errored" (stream closed with an error) and "timeout" are subsets of "failed" (which also
    # counts non-2xx answers): adding them up would count one lost request two or three times.
    # Streams cut by a connection closing under them are in none of these (h2load drops them
    # silently): they are "started" but not "done". Under restarts every h2load runs past the
    # drain window, so by its end each connection has been drained and nothing is in flight.
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", text)
    if m:
        g = [int(x) for x in m.groups()]
        print(g[3], g[4] + (g[1] - g[2] if restarted else 0))
    else:
        print(0, -1)
EOF
}

# load_bg TOOL PORT SECS OUT: the load generator in the background on CPU 1 (LOAD_PID).
load_bg() {
  local tool=$1 port=$2 secs=$3 out=$4 url="http://127.0.0.1:$2/"
  case "$tool" in
    wrk-keepalive) taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${secs}s" "$url" >"$out" 2>&1 & ;;
    wrk-close) taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${secs}s" -H 'Connection: close' "$url" >"$out" 2>&1 & ;;
    h2load) taskset -c 1 h2load -t1 -c"$H2_CLIENTS" -m"$H2_STREAMS" -D"$secs" "$url" >"$out" 2>&1 & ;;
  esac
  LOAD_PID=$!
}

RBATON_ID=$((RANDOM % 1000 + 3000))
RENVOY_ID=$((RANDOM % 1000 + 4000))
declare -a GEN_PIDS=()

# start_gen PROXY EPOCH: start one generation (or the nginx master); its pid in LAST_PID.
start_gen() {
  local proxy=$1 epoch=$2
  case "$proxy" in
    baton)
      # --rollback-window-s 0: the old generation's "terminated" is timed, which a rollback
      # window (10 s by default) would hold back after it has drained.
      start_bg "baton-e$epoch" "$BATON_BIN" -c "$WORK/baton.yaml" --concurrency 1 \
        --base-id "$RBATON_ID" --restart-epoch "$epoch" --drain-time-s "$RESTART_DRAIN_S" \
        --parent-shutdown-time-s "$RESTART_PARENT_S" --rollback-window-s 0 --log-level info ;;
    envoy)
      start_bg "envoy-e$epoch" "$ENVOY" -c "$WORK/envoy.yaml" --concurrency 1 \
        --base-id "$RENVOY_ID" --restart-epoch "$epoch" --drain-time-s "$RESTART_DRAIN_S" \
        --parent-shutdown-time-s "$RESTART_PARENT_S" --log-level warn ;;
    nginx)
      start_bg nginx nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx.conf" ;;
  esac
  GEN_PIDS+=("$LAST_PID")
}

proxy_port() {
  case "$1" in baton) echo "$BATON_PORT" ;; envoy) echo "$ENVOY_PORT" ;; nginx) echo "$NGINX_PORT" ;; esac
}

stop_gens() {
  local p
  for p in "${GEN_PIDS[@]}"; do alive "$p" && stop_tree "$p"; done
  GEN_PIDS=()
  # A chain ended by signals may leave its shared memory behind.
  rm -f "/dev/shm/baton_$RBATON_ID" "/dev/shm/envoy_shared_memory_$((RENVOY_ID * 10))"
}

# restart_run PROXY TOOL RESTARTS: one run; prints "requests errors".
restart_run() {
  local proxy=$1 tool=$2 n=$3 port secs out master k d outs=() pids=() p
  port=$(proxy_port "$proxy")
  secs=$((RESTARTS * INTERVAL + 2))
  out="$WORK/restart-$proxy-$tool-$n.txt"
  rm -f "$WORK"/baton-e*.log "$out"*
  start_gen "$proxy" 0
  master=$LAST_PID
  wait_ready "$master" "http://127.0.0.1:$port/" || { echo "0 -1"; stop_gens; return; }
  if [[ $tool == h2load && $n -gt 0 ]]; then
    # One h2load per restart (see the top of this file), each running past the drain window
    # of its restart (once its connections are drained it is idle, so runs may overlap).
    for ((k = 1; k <= n; k++)); do
      d=$((INTERVAL > RESTART_DRAIN_S + 2 ? INTERVAL : RESTART_DRAIN_S + 2))
      ((k == n && d < INTERVAL + 2)) && d=$((INTERVAL + 2))
      load_bg "$tool" "$port" "$d" "$out.$k"
      pids+=("$LOAD_PID")
      outs+=("$out.$k")
      sleep 1
      restart_one "$proxy" "$k" "$master"
      ((INTERVAL > 1)) && sleep $((INTERVAL - 1))
    done
  else
    load_bg "$tool" "$port" "$secs" "$out"
    pids+=("$LOAD_PID")
    outs+=("$out")
    sleep 1
    for ((k = 1; k <= n; k++)); do
      restart_one "$proxy" "$k" "$master"
      sleep "$INTERVAL"
    done
  fi
  for p in "${pids[@]}"; do wait "$p" || true; done
  [[ $proxy == baton && $n -gt 0 ]] && baton_timings "$n" >>"$WORK/baton-timings.txt"
  stop_gens
  parse_load "${tool%%-*}" "$((n > 0 ? 1 : 0))" "${outs[@]}"
}

# restart_one PROXY K MASTER: the K-th restart.
restart_one() {
  case "$1" in
    nginx) kill -HUP "$3" ;;
    *) start_gen "$1" "$2" ;;
  esac
}

# baton_timings N: per epoch K+1, ms from "starting" to "serving", and ms epoch K lived after.
baton_timings() {
  local k logs=()
  for ((k = 0; k <= $1; k++)); do logs+=("$WORK/baton-e$k.log"); done
  restart_phases "${logs[@]}" | python3 -c '
import json, sys
phases = [json.loads(line) for line in sys.stdin]
serve, lived = [], []
for k in range(1, len(phases)):
    cur, old = phases[k], phases[k - 1]
    if "starting" in cur and "serving" in cur:
        serve.append((cur["serving"] - cur["starting"]) * 1000)
        if "terminated" in old:
            lived.append((old["terminated"] - cur["serving"]) * 1000)
print(" ".join(f"{x:.1f}" for x in serve), "|", " ".join(f"{x:.1f}" for x in lived))'
}

restart_mode() {
  local proxies=() tools proxy tool base got
  wants baton && proxies+=(baton)
  wants envoy && [[ -n $ENVOY ]] && proxies+=(envoy)
  wants nginx && proxies+=(nginx)
  : >"$WORK/baton-timings.txt"
  printf '\n%-7s %-14s %9s %9s %9s %9s\n' proxy load restarts errors served "vs-none"
  for proxy in "${proxies[@]}"; do
    read -r -a tools <<<"${RESTART_TOOLS:-wrk-keepalive wrk-close h2load}"
    for tool in "${tools[@]}"; do
      [[ $proxy == nginx && $tool == h2load ]] && continue
      log "restart mode: $proxy $tool: no-restart run, then $RESTARTS restarts ${INTERVAL}s apart"
      read -r base _ <<<"$(restart_run "$proxy" "$tool" 0)"
      read -r got err <<<"$(restart_run "$proxy" "$tool" "$RESTARTS")"
      printf '%-7s %-14s %9s %9s %9s %8s%%\n' "$proxy" "$tool" "$RESTARTS" "$err" "$got" \
        "$(python3 -c "import sys; b,g=int(sys.argv[1]),int(sys.argv[2]); print(f'{(g-b)*100/b:+.1f}' if b else 'n/a')" "$base" "$got")"
    done
  done
  if [[ -s $WORK/baton-timings.txt ]]; then
    python3 - "$WORK/baton-timings.txt" <<'EOF'
import statistics, sys
serve, lived = [], []
for line in open(sys.argv[1]):
    a, _, b = line.partition("|")
    serve += [float(x) for x in a.split()]
    lived += [float(x) for x in b.split()]
def fmt(xs):
    return f"median {statistics.median(xs):.1f} ms, max {max(xs):.1f} ms (n={len(xs)})" if xs else "n/a"
print(f"\nbaton: epoch K+1 start -> serving: {fmt(serve)}")
print(f"baton: epoch K lived after K+1 served: {fmt(lived)}")
EOF
  fi
}
