#!/usr/bin/env bash
# Warren with its management API on, and a client polling /api/queues once
# a second for as long as it runs: a stand-in binary for
#   python3 benches/compare.py --baseline benches/with_api_polling.sh
# whose second table then gives Warren (API off) as ratios of Warren with
# the API on and polled (1.00: the API costs nothing). Takes the flags
# compare.py passes, with the HTTP ports replaced by a free one.
set -euo pipefail
bin="$(cd "$(dirname "$0")/.." && pwd)/target/release/warren"
args=()
skip=0
for a in "$@"; do
  if [ "$skip" = 1 ]; then skip=0; continue; fi
  case "$a" in
    --management-port|--prometheus-port) skip=1 ;;
    *) args+=("$a") ;;
  esac
done
if [ "${1:-}" = "--help" ]; then exec "$bin" --help; fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" "${args[@]}" --management-port "$port" --prometheus-port 0 &
child=$!
trap 'kill -TERM $child 2>/dev/null; wait $child 2>/dev/null' TERM INT EXIT
(
  while kill -0 "$child" 2>/dev/null; do
    curl -s -o /dev/null -u guest:guest "http://127.0.0.1:$port/api/queues" || true
    sleep 1
  done
) &
wait "$child"
