#!/usr/bin/env bash
# benches/load/compress.sh: gzip compression throughput, Baton's compressor filter next to nginx's
# gzip module at the same level and window, in the same run. One nginx origin serves a SIZE-byte
# text/plain file (generated log-like lines, compressible about 4:1); each proxy (one worker,
# pinned to CPU 0) compresses it for every request of wrk (CPU 1, Accept-Encoding: gzip). Reports,
# as medians of RUNS runs each: uncompressed MB/s through the proxy and the proxy's CPU time
# (user + system from /proc/<pid>/stat) per uncompressed MB. Only 127.0.0.1 is used. See
# benches/load/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
LOG_TAG=compress
# shellcheck source=benches/load/lib.sh
source "$HERE/lib.sh"

SIZE=65536
LEVEL=6
DURATION=10
RUNS=3
CONNECTIONS=10
BATON_BIN=""
KEEP=0
READY_TIMEOUT=60
PIDS=()

usage() {
  cat <<USAGE
usage: benches/load/compress.sh [--size BYTES] [--level 1-9] [--duration S] [--runs N]
                                [--connections N] [--baton PATH] [--keep]
  --size BYTES     the response body, uncompressed (default $SIZE)
  --level N        gzip level for both proxies (default $LEVEL, zlib's and Envoy's default)
  --duration S     each measured run (default $DURATION)
  --runs N         runs per proxy, alternating; medians are shown (default $RUNS)
  --connections N  wrk connections (default $CONNECTIONS)
  --baton PATH     use this baton binary instead of building it (cargo build --release)
  --keep           keep the work directory
USAGE
}

while (($#)); do
  case $1 in
    --size) SIZE=$2; shift 2 ;;
    --level) LEVEL=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --baton) BATON_BIN=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

need_cmd nginx nginx-light nginx
need_cmd wrk wrk
need_cmd curl curl
WORK=$(mktemp -d /tmp/baton-compress.XXXXXX)
install_cleanup
ensure_baton

read -r ORIGIN NGINX BATON ADMIN <<<"$(free_ports 4)"

# The body: log-like lines, varied enough that gzip works for it.
mkdir -p "$WORK/www"
python3 - "$SIZE" "$WORK/www/body.txt" <<'PY'
import random, sys
size, path = int(sys.argv[1]), sys.argv[2]
rng = random.Random(19)
words = ["GET", "POST", "/api/v1/items", "/static/app.js", "user", "session", "ok", "error",
         "timeout", "cache", "hit", "miss", "upstream", "downstream", "bytes", "latency"]
out = []
n = 0
while n < size:
    line = "%06d %s %s id=%d took=%.3fms %s\n" % (
        len(out), rng.choice(words), rng.choice(words), rng.randrange(10**6),
        rng.random() * 100, " ".join(rng.choice(words) for _ in range(4)))
    out.append(line)
    n += len(line)
open(path, "w").write("".join(out)[:size])
PY

mkdir -p "$WORK/origin" "$WORK/nginx"
{
  nginx_conf_head "$WORK/origin" off 1024
  cat <<EOF
  server {
    listen 127.0.0.1:$ORIGIN;
    location / { root $WORK/www; default_type text/plain; }
  }
}
EOF
} >"$WORK/origin.conf"
start_bg origin taskset -c 1 nginx -p "$WORK/origin" -e "$WORK/origin/error.log" -c "$WORK/origin.conf"
wait_ready "$LAST_PID" "http://127.0.0.1:$ORIGIN/body.txt" || die "origin did not come up"

# nginx: gzip on the proxied response at LEVEL, its default window (32 KiB, 15 bits).
{
  nginx_conf_head "$WORK/nginx" off 1024
  cat <<EOF
  upstream origin { server 127.0.0.1:$ORIGIN; keepalive 32; }
  server {
    listen 127.0.0.1:$NGINX;
    gzip on;
    gzip_comp_level $LEVEL;
    gzip_types text/plain;
    gzip_proxied any;
    gzip_min_length 30;
    gzip_vary on;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
} >"$WORK/nginx.conf"

# Baton: the compressor filter with gzip at the same level and window.
cat >"$WORK/baton.yaml" <<EOF
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: $ADMIN}}
static_resources:
  listeners:
  - address: {socket_address: {address: 127.0.0.1, port_value: $BATON}}
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
              routes: [{match: {prefix: "/"}, route: {cluster: origin}}]
          http_filters:
          - name: envoy.filters.http.compressor
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
              compressor_library:
                name: gzip
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip
                  compression_level: COMPRESSION_LEVEL_$LEVEL
                  window_bits: 15
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: origin
    type: STATIC
    load_assignment:
      cluster_name: origin
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $ORIGIN}}}}]}]
EOF

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run NAME PID PORT: one measured wrk run; appends "name MB/s CPU-ms/MB ratio" to results.
run() {
  local name=$1 pid=$2 port=$3 t0 t1 reqs
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d2s -H 'Accept-Encoding: gzip' \
    "http://127.0.0.1:$port/body.txt" >/dev/null
  t0=$(cpu_ticks "$pid")
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -H 'Accept-Encoding: gzip' \
    "http://127.0.0.1:$port/body.txt" >"$WORK/wrk-$name.txt"
  t1=$(cpu_ticks "$pid")
  reqs=$(awk '/requests in/ {print $1}' "$WORK/wrk-$name.txt")
  python3 - "$name" "$reqs" "$SIZE" "$DURATION" "$t0" "$t1" "$(getconf CLK_TCK)" \
    "$(curl -s -H 'Accept-Encoding: gzip' "http://127.0.0.1:$port/body.txt" | wc -c)" \
    >>"$WORK/results.txt" <<'PY'
import sys
name, reqs, size, secs, t0, t1, hz, out = sys.argv[1:]
mb = int(reqs) * int(size) / 1e6
cpu = (int(t1) - int(t0)) / int(hz)
print(name, f"{mb / float(secs):.1f}", f"{cpu / mb * 1000:.2f}", f"{int(size) / int(out):.2f}")
PY
}

start_bg nginx nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx.conf"
NGINX_PID=$LAST_PID
wait_ready "$NGINX_PID" "http://127.0.0.1:$NGINX/body.txt" || die "nginx did not come up"
start_bg baton "$BATON_BIN" -c "$WORK/baton.yaml" --concurrency 1 --base-id 48213 -l warning
BATON_PID=$LAST_PID
wait_ready "$BATON_PID" "http://127.0.0.1:$BATON/body.txt" ||
  die "baton did not come up: $(cat "$WORK/baton.log")"
for port in "$NGINX" "$BATON"; do
  enc=$(curl -s -D - -o /dev/null -H 'Accept-Encoding: gzip' "http://127.0.0.1:$port/body.txt" |
    tr -d '\r' | awk -F': ' 'tolower($1) == "content-encoding" {print $2}')
  [[ $enc == gzip ]] || die "port $port does not compress (content-encoding: '$enc')"
  curl -s --compressed "http://127.0.0.1:$port/body.txt" | cmp -s - "$WORK/www/body.txt" ||
    die "port $port: the decompressed body differs from the origin's"
done

: >"$WORK/results.txt"
for ((i = 1; i <= RUNS; i++)); do
  log "run $i/$RUNS"
  run nginx "$NGINX_PID" "$NGINX"
  run baton "$BATON_PID" "$BATON"
done

python3 - "$WORK/results.txt" "$SIZE" "$LEVEL" "$RUNS" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
print(f"gzip level {sys.argv[3]}, {sys.argv[2]}-byte text body, medians of {sys.argv[4]} runs "
      "(one proxy worker on CPU 0, wrk on CPU 1)")
print(f"{'proxy':8} {'MB/s in':>9} {'CPU ms/MB':>10} {'ratio':>6}")
for name in ("nginx", "baton"):
    r = [x for x in rows if x[0] == name]
    med = lambda i: statistics.median(float(x[i]) for x in r)
    print(f"{name:8} {med(1):9.1f} {med(2):10.2f} {med(3):6.2f}")
PY
