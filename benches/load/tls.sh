#!/usr/bin/env bash
# benches/load/tls.sh: TLS termination, Baton against nginx, with the same ECDSA P-256
# certificate, one worker each, in front of the same cleartext nginx origin (100-byte body).
# Proxies and origin are pinned to CPU 0, wrk to CPU 1. Measures:
#   keep-alive  HTTPS requests/s on long-lived TLS connections (wrk, HTTP/1.1);
#   handshakes  new TLS connections/s: every request on a new connection (wrk with
#               `Connection: close`; wrk does not resume sessions, so each is a full handshake).
# Prints a table with Baton/nginx ratios. Only 127.0.0.1 is used; every process started is
# stopped by pid on exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
LOG_TAG=tls
# shellcheck source=benches/load/lib.sh
source "$HERE/lib.sh"

DURATION=10
CONNECTIONS=50
WARMUP=2
BATON_BIN=""
KEEP=0
READY_TIMEOUT=10

usage() {
  cat <<EOF
usage: benches/load/tls.sh [--duration SECS] [--connections N] [--warmup SECS] [--baton PATH] [--keep]
  --duration SECS   measured time of each wrk run (default $DURATION)
  --connections N   wrk connections (default $CONNECTIONS)
  --warmup SECS     warm-up before each measured run (default $WARMUP)
  --baton PATH      use this baton binary instead of building it (cargo build --release)
  --keep            keep the work dir (configs, logs, wrk output)
EOF
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --duration) DURATION=${2:?}; shift 2 ;;
    --connections) CONNECTIONS=${2:?}; shift 2 ;;
    --warmup) WARMUP=${2:?}; shift 2 ;;
    --baton) BATON_BIN=${2:?}; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
for v in DURATION CONNECTIONS WARMUP; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "--${v,,} must be a whole number, got '${!v}'"
done

for c in nginx wrk openssl curl python3 taskset; do
  command -v "$c" >/dev/null 2>&1 || die "$c is needed (Debian: nginx-light, wrk, openssl, curl, python3, util-linux)"
done
nginx -V 2>&1 | grep -q -- '--with-http_ssl_module' || die "this nginx has no ssl module"

ensure_baton

WORK=$(mktemp -d "${TMPDIR:-/tmp}/baton-tls.XXXXXX")
PIDS=()
install_cleanup
read -r ORIGIN_PORT BATON_PORT BATON_ADMIN NGINX_PORT <<<"$(free_ports 4)"

log "work dir: $WORK; ports origin=$ORIGIN_PORT baton=$BATON_PORT nginx=$NGINX_PORT"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" >/dev/null 2>&1 || die "openssl could not make a certificate"

origin_conf "$ORIGIN_PORT" 8192 "" backlog=4096
mkdir -p "$WORK/nginx"
nginx_conf_head "$WORK/nginx" on 8192 >"$WORK/nginx.conf"
cat >>"$WORK/nginx.conf" <<EOF
  upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT ssl backlog=4096;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
envoy_bootstrap "$BATON_PORT" "$BATON_ADMIN" "$ORIGIN_PORT" \
  --tls "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/baton.yaml"

start_origin "$ORIGIN_PORT"

declare -A RESULT=()
measure() { # measure PROXY PORT: keep-alive and handshake rates into RESULT
  local proxy=$1 port=$2 url out mode
  url="https://127.0.0.1:$port/"
  for mode in keepalive handshake; do
    local hdr=()
    [[ $mode == handshake ]] && hdr=(-H "Connection: close")
    timeout $((WARMUP + 30)) taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "${hdr[@]}" "$url" \
      >/dev/null 2>&1 || true
    out="$WORK/wrk-$proxy-$mode.txt"
    timeout $((DURATION + 30)) taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "${hdr[@]}" \
      "$url" >"$out" 2>&1 || die "wrk failed against $proxy: $(tail -n 3 "$out" | tr '\n' ' ')"
    RESULT[$proxy.$mode]=$(awk '/^Requests\/sec:/{print $2}' "$out")
    RESULT[$proxy.$mode.errors]=$(awk '/Socket errors|Non-2xx/{print}' "$out" | tr '\n' ' ')
    log "$proxy $mode: ${RESULT[$proxy.$mode]} req/s ${RESULT[$proxy.$mode.errors]}"
  done
}

start_bg baton "$BATON_BIN" -c "$WORK/baton.yaml" --concurrency 1 \
  --use-dynamic-base-id
BATON_PID=$LAST_PID
wait_ready "$BATON_PID" "https://127.0.0.1:$BATON_PORT/" -k || die "baton did not start: $(tail -n 5 "$WORK/baton.log")"
measure baton "$BATON_PORT"
TLS_STATS=$(curl -s "http://127.0.0.1:$BATON_ADMIN/stats" | grep -E '\.ssl\.(handshake|connection_error|versions|ciphers)' | grep -v ': 0$' || true)
stop_pids "$BATON_PID"

start_bg nginx nginx -c "$WORK/nginx.conf" -p "$WORK/nginx"
NGINX_PID=$LAST_PID
wait_ready "$NGINX_PID" "https://127.0.0.1:$NGINX_PORT/" -k || die "nginx did not start"
measure nginx "$NGINX_PORT"

ratio() { python3 -c "import sys; a,b=float(sys.argv[1] or 0),float(sys.argv[2] or 0); print(f'{a/b:.2f}x' if b else '-')" "$1" "$2"; }
printf '\nTLS (ECDSA P-256, %s connections, %ss, one worker each)\n' "$CONNECTIONS" "$DURATION"
printf '%-12s %14s %14s %10s\n' mode baton nginx ratio
for mode in keepalive handshake; do
  printf '%-12s %14s %14s %10s\n' "$mode" "${RESULT[baton.$mode]}" "${RESULT[nginx.$mode]}" \
    "$(ratio "${RESULT[baton.$mode]}" "${RESULT[nginx.$mode]}")"
done
printf '\nbaton TLS stats:\n%s\n' "$TLS_STATS"
