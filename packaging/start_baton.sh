#!/bin/sh
# Start script for a restarter in the style of Envoy's hot-restarter.py, which runs this script
# with RESTART_EPOCH set (0 first, +1 on each SIGHUP). Baton needs nothing else:
#
#   python3 hot-restarter.py /etc/baton/start_baton.sh
#
# `baton restarter` does the same job without this script and, unlike hot-restarter.py, leaves
# the serving generation alone when a new one fails (see OPERATING.md).
set -e
: "${RESTART_EPOCH:?RESTART_EPOCH must be set by the restarter}"
exec /usr/bin/baton \
    -c "${BATON_CONFIG:-/etc/baton/baton.yaml}" \
    --base-id "${BATON_BASE_ID:-0}" \
    --restart-epoch "$RESTART_EPOCH" \
    --drain-time-s 60 \
    --parent-shutdown-time-s 90
