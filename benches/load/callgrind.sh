#!/usr/bin/env bash
# benches/load/callgrind.sh: instructions per proxied request, counted by callgrind, for one Baton
# binary or two (A/B). A figure that does not depend on how busy the shared machine is, for
# comparing a change against the code before it.
#
# Setup: the nginx origin of run.sh (lib.sh, 100-byte body) on a free 127.0.0.1 port; Baton under
# `valgrind --tool=callgrind` with `--concurrency 1 --disable-hot-restart` (plus `--base-id` and
# `--log-level warn` when its --help lists them) and the Envoy v3 bootstrap run.sh gives it (one
# listener, every request routed to the origin). Baton and the origin run on CPU 0, h2load on CPU 1.
# Only Baton is instrumented: the counts are the instructions Baton's threads execute in user
# space (all threads summed; the kernel's work for its syscalls is not counted).
#
# Modes (h2load, a fixed number of requests, every one must answer 200):
#   h1-keepalive  GET / over HTTP/1.1 keep-alive: h2load --h1 -c50 (50 connections, one request
#                 in flight on each)
#   h1-close      GET / with `Connection: close`: a new TCP connection per request (Baton closes
#                 it after the response; h2load reconnects), h2load --h1 -c10. Baton keeps its
#                 upstream connections, as in run.sh.
#
# Method: after Baton is up, a warm-up of each mode (--warmup requests) so that lazy setup,
# allocator growth and the upstream connection pool are behind us. Then, per mode:
#   callgrind_control --zero            counters to 0
#   h2load ... -n N                     batch 1: N requests
#   callgrind_control --dump            Ir(N)   (a dump also resets the counters)
#   h2load ... -n 2N                    batch 2: 2N requests
#   callgrind_control --dump            Ir(2N)
#   instructions per request = (Ir(2N) - Ir(N)) / N
# The difference cancels what each batch costs once whatever its size: opening and closing
# h2load's connections (keep-alive mode), the first and last request of a batch, the wake-ups
# the control commands cause. What scales with wall time (timers while Baton waits) is not
# cancelled; the script measures Baton idle for a few seconds and prints that rate, so one can
# see it is negligible. The one-batch figure Ir(N)/N is printed to stderr alongside.
# With --runs R the pair of batches is repeated R times (same Baton process) and the median is
# reported. The counts are deterministic up to scheduling (how many requests one epoll wake-up
# finds, which the load on the machine changes): repeated runs of one binary agreed within
# ~0.3% (h1-keepalive) and ~1.5% (h1-close) on the shared 2-core box. Compare figures taken
# with the same options; use --runs 3 for an A/B, and read an h1-close difference under ~1.5%
# as noise.
#
# Output (stdout), one line per mode:  `mode instructions_per_request`; with --baton-b:
# `mode A B B/A`. Progress and details go to stderr. With the defaults a binary takes about
# 30 s (h1-keepalive ~7 s, h1-close ~15 s, the rest Baton's start under valgrind and warm-up).
# Every process started is stopped by its pid (TERM, KILL after 5 s) on any exit; the work dir
# (configs, logs, callgrind dumps) is removed unless --keep. See benches/load/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
LOG_TAG=callgrind
# shellcheck source=benches/load/lib.sh
source "$HERE/lib.sh"

BATON_BIN=""
BATON_B=""
REQUESTS=10000
WARMUP=2000
KA_CONNECTIONS=50
CLOSE_CONNECTIONS=10
RUNS=1
BOOT_OPTS=()  # --filter / --vhost lines for the bootstrap
IDLE_SECS=5
KEEP=0
READY_TIMEOUT=120  # valgrind makes Baton's start slow
BATCH_TIMEOUT=300  # upper bound of one h2load batch

usage() {
  cat <<EOF
usage: benches/load/callgrind.sh --baton PATH [--baton-b PATH] [--requests N] [--warmup N]
                                 [--runs R] [--ka-connections N] [--close-connections N] [--keep]
  --baton PATH             the Baton binary to measure (A)
  --baton-b PATH           a second binary (B), measured in the same run; prints B/A per mode
  --requests N             N of the method: batches of N and 2N requests per mode (default $REQUESTS)
  --warmup N               warm-up requests per mode before measuring (default $WARMUP)
  --runs R                 repeat the measurement R times per mode, report the median (default $RUNS)
  --ka-connections N       h2load connections in h1-keepalive (default $KA_CONNECTIONS)
  --close-connections N    h2load connections in h1-close (default $CLOSE_CONNECTIONS)
  --filter LINE            an http_filters line before the router (repeatable), e.g.
                           '- { name: f, typed_config: { "@type": ..., ... } }'
  --vhost LINE             a line in the virtual host (repeatable), e.g. typed_per_filter_config
  --keep                   keep the work dir (configs, logs, callgrind dumps)
Output: one line per mode, "mode instructions_per_request" (with --baton-b: "mode A B B/A").
Exit status: 0 ok; 1 setup or measurement error.
EOF
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --baton) BATON_BIN=${2:?}; shift 2 ;;
    --baton=*) BATON_BIN=${1#*=}; shift ;;
    --baton-b) BATON_B=${2:?}; shift 2 ;;
    --baton-b=*) BATON_B=${1#*=}; shift ;;
    --requests) REQUESTS=${2:?}; shift 2 ;;
    --filter) BOOT_OPTS+=(--filter "${2:?}"); shift 2 ;;
    --vhost) BOOT_OPTS+=(--vhost "${2:?}"); shift 2 ;;
    --requests=*) REQUESTS=${1#*=}; shift ;;
    --warmup) WARMUP=${2:?}; shift 2 ;;
    --warmup=*) WARMUP=${1#*=}; shift ;;
    --runs) RUNS=${2:?}; shift 2 ;;
    --runs=*) RUNS=${1#*=}; shift ;;
    --ka-connections) KA_CONNECTIONS=${2:?}; shift 2 ;;
    --ka-connections=*) KA_CONNECTIONS=${1#*=}; shift ;;
    --close-connections) CLOSE_CONNECTIONS=${2:?}; shift 2 ;;
    --close-connections=*) CLOSE_CONNECTIONS=${1#*=}; shift ;;
    --keep) KEEP=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

[[ -n $BATON_BIN ]] || { usage >&2; die "--baton PATH is required"; }
for v in REQUESTS WARMUP RUNS KA_CONNECTIONS CLOSE_CONNECTIONS; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "--${v,,} must be a whole number, got '${!v}'"
done
((KA_CONNECTIONS >= 1 && CLOSE_CONNECTIONS >= 1)) || die "connections must be at least 1"
((RUNS >= 1)) || die "--runs must be at least 1"
((REQUESTS >= KA_CONNECTIONS && REQUESTS >= CLOSE_CONNECTIONS)) ||
  die "--requests must be at least the number of connections"
((WARMUP == 0 || (WARMUP >= KA_CONNECTIONS && WARMUP >= CLOSE_CONNECTIONS))) ||
  die "--warmup must be 0 or at least the number of connections"
[[ -x $BATON_BIN ]] || die "baton binary not found or not executable: $BATON_BIN"
[[ -z $BATON_B || -x $BATON_B ]] || die "baton binary not found or not executable: $BATON_B"

need_cmd curl curl
need_cmd python3 python3
need_cmd taskset util-linux
need_cmd nginx nginx-light nginx
need_cmd h2load nghttp2-client
need_cmd valgrind valgrind
need_cmd callgrind_control valgrind

WORK=$(mktemp -d "${TMPDIR:-/tmp}/baton-callgrind.XXXXXX")
PIDS=()
install_cleanup

read -r ORIGIN_PORT A_PORT A_ADMIN B_PORT B_ADMIN <<<"$(free_ports 5)"
log "work dir: $WORK; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

origin_conf "$ORIGIN_PORT" 8192 75s "reuseport backlog=4096"
start_origin "$ORIGIN_PORT"

# Total of a callgrind dump: its "totals:" line (first event: Ir). Dumps are found by the label
# given to --dump (their "desc: Trigger: dump LABEL" line), not by their number.
dump_ir() { # dump_ir OUTFILE LABEL
  local f
  for f in "$1".*; do
    [[ -f $f ]] || continue
    if grep -qx "desc: Trigger: dump $2" "$f"; then
      awk '/^totals:/{print $2; exit}' "$f"
      return 0
    fi
  done
  die "no callgrind dump labelled $2 (files: $(ls "$WORK"))"
}

control() { # control PID ARG: callgrind_control ARG PID, bounded
  timeout 60 callgrind_control "$2" "$1" >>"$WORK/control.log" 2>&1 ||
    die "callgrind_control $2 $1 failed: $(tail -n 3 "$WORK/control.log")"
}

tcp_passive_opens() { awk '/^Tcp:/ && $1 == "Tcp:" {n++} n == 2 {print $7; exit}' /proc/net/snmp; }

batch() { # batch MODE PORT N: N requests of MODE, all must answer 200
  local mode=$1 port=$2 n=$3 out args=(--h1 -t1) before after
  out="$WORK/h2load-$mode-$port-$n-$RANDOM.txt"
  case "$mode" in
    h1-keepalive) args+=(-c"$KA_CONNECTIONS") ;;
    h1-close) args+=(-c"$CLOSE_CONNECTIONS" -H 'Connection: close') ;;
  esac
  before=$(tcp_passive_opens)
  timeout "$BATCH_TIMEOUT" taskset -c 1 h2load "${args[@]}" -n "$n" "http://127.0.0.1:$port/" \
    >"$out" 2>&1 || die "h2load failed ($mode, $n requests): $(tail -n 5 "$out" | tr '\n' ' ')"
  after=$(tcp_passive_opens)
  if ! grep -q "^requests: $n total, $n started, $n done, $n succeeded, 0 failed" "$out" ||
    ! grep -q "^status codes: $n 2xx" "$out"; then
    die "$mode: not every one of $n requests answered 200:" \
      "$(grep -E '^(requests|status)' "$out" | tr '\n' ' ')"
  fi
  # Connection: close must mean a connection per request (counted machine-wide, so >= n).
  if [[ $mode == h1-close ]] && ((after - before < n)); then
    die "h1-close: only $((after - before)) connections accepted for $n requests"
  fi
}

declare -A RESULT=()
MODES=(h1-keepalive h1-close)
measure() { # measure LABEL BINARY PORT ADMIN
  local label=$1 bin=$2 port=$3 admin=$4 help flags=(--concurrency 1) pid cg mode t0 t1 ir1 ir2 idle
  local r tag per runs
  help=$("$bin" --help 2>&1 || true)
  grep -q -- '--disable-hot-restart' <<<"$help" || die "$bin: --help does not list --disable-hot-restart"
  flags+=(--disable-hot-restart)
  if grep -q -- '--base-id' <<<"$help"; then flags+=(--base-id $((RANDOM % 1000 + 3000))); fi
  if grep -q -- '--log-level' <<<"$help"; then flags+=(--log-level warn); fi
  envoy_bootstrap "$port" "$admin" "$ORIGIN_PORT" "${BOOT_OPTS[@]}" >"$WORK/baton-$label.yaml"
  cg="$WORK/callgrind-$label.out"
  log "$label: $bin ($("$bin" --version 2>&1 | head -n 1 || true))"
  start_bg "baton-$label" valgrind --tool=callgrind --callgrind-out-file="$cg" \
    "$bin" -c "$WORK/baton-$label.yaml" "${flags[@]}"
  pid=$LAST_PID
  if ! wait_ready "$pid" "http://127.0.0.1:$port/"; then
    local why="did not serve within ${READY_TIMEOUT}s"
    alive "$pid" || why="exited before serving"
    die "$label: baton $why: $(grep -v '^==[0-9]*==' "$WORK/baton-$label.log" | tail -n 5 | tr '\n' ' ')"
  fi
  if ((WARMUP > 0)); then
    log "$label: warm-up, $WARMUP requests per mode"
    batch h1-keepalive "$port" "$WARMUP"
    batch h1-close "$port" "$WARMUP"
  fi

  control "$pid" --zero
  sleep "$IDLE_SECS"
  control "$pid" --dump=idle
  idle=$(dump_ir "$cg" idle)
  log "$label: idle: $((idle / IDLE_SECS)) instructions/s"

  for mode in "${MODES[@]}"; do
    runs=()
    for ((r = 1; r <= RUNS; r++)); do
      tag="$mode-r$r"
      t0=$(date +%s.%N)
      control "$pid" --zero
      batch "$mode" "$port" "$REQUESTS"
      control "$pid" --dump="$tag-n1"
      batch "$mode" "$port" $((2 * REQUESTS))
      control "$pid" --dump="$tag-n2"
      t1=$(date +%s.%N)
      ir1=$(dump_ir "$cg" "$tag-n1")
      ir2=$(dump_ir "$cg" "$tag-n2")
      per=$(((ir2 - ir1 + REQUESTS / 2) / REQUESTS))
      runs+=("$per")
      log "$label $mode run $r: Ir($REQUESTS)=$ir1 Ir($((2 * REQUESTS)))=$ir2 -> $per per request" \
        "(one batch: $(((ir1 + REQUESTS / 2) / REQUESTS))); $(python3 -c "print(f'{$t1 - $t0:.1f}')") s"
    done
    RESULT[$label,$mode]=$(printf '%s\n' "${runs[@]}" | sort -n | awk '{v[NR] = $1}
      END {print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2 + 0.5)}')
    ((RUNS == 1)) || log "$label $mode: median of $RUNS runs: ${RESULT[$label,$mode]} (${runs[*]})"
  done
  stop_tree "$pid"
}

measure A "$BATON_BIN" "$A_PORT" "$A_ADMIN"
if [[ -n $BATON_B ]]; then measure B "$BATON_B" "$B_PORT" "$B_ADMIN"; fi
stop_tree "$ORIGIN_PID"

log "instructions per request (Ir, callgrind; (Ir(2N) - Ir(N)) / N, N = $REQUESTS$(
  ((RUNS == 1)) || echo ", median of $RUNS runs"))"
for mode in "${MODES[@]}"; do
  if [[ -n $BATON_B ]]; then
    printf '%s %s %s %s\n' "$mode" "${RESULT[A,$mode]}" "${RESULT[B,$mode]}" \
      "$(python3 -c "print(f'{${RESULT[B,$mode]} / ${RESULT[A,$mode]}:.4f}')")"
  else
    printf '%s %s\n' "$mode" "${RESULT[A,$mode]}"
  fi
done
