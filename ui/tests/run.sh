#!/usr/bin/env bash
# Runs the browser tests of the management UI: starts Warren (fresh data
# directory, free ports) and drives Debian's chromium with playwright-core,
# and Debian's firefox-esr with puppeteer-core (firefox.test.js). Installs
# the pinned npm packages first. Needs /usr/bin/chromium and
# /usr/bin/firefox-esr (apt packages `chromium`, `firefox-esr`; .ci/run
# installs them).
#
# Usage: ui/tests/run.sh [path-to-warren-binary]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${1:-$root/target/debug/warren}
browser=${CHROMIUM:-$(command -v chromium || true)}
if [ -z "$browser" ]; then
  echo "ui tests: chromium not found (apt-get install chromium)"; exit 1
fi
firefox=${FIREFOX:-$(command -v firefox-esr || command -v firefox || true)}
if [ -z "$firefox" ]; then
  echo "ui tests: firefox not found (apt-get install firefox-esr)"; exit 1
fi
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error) || exit 1

datadir=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi
  rm -rf "$datadir"
}
trap cleanup EXIT
# A free port below Linux's ephemeral range (the `--port 0` listener's).
read -r mport < <(python3 -c 'import random, socket
while True:
    p = random.randrange(20000, 32000)
    try:
        with socket.socket() as s: s.bind(("127.0.0.1", p))
    except OSError: continue
    print(p); break')
"$bin" --port 0 --data-dir "$datadir/data" --log-level warn,warren=info \
  --management-port "$mport" --prometheus-port 0 >"$datadir/warren.log" 2>&1 &
pid=$!
port=""
for _ in $(seq 1 100); do
  port=$(grep -o 'addr=127.0.0.1:[0-9]*' "$datadir/warren.log" 2>/dev/null | head -1 | cut -d: -f2)
  [ -n "$port" ] && break
  sleep 0.1
done
if [ -z "$port" ]; then echo "warren did not start:"; cat "$datadir/warren.log"; exit 1; fi
export WARREN_UI_URL="http://127.0.0.1:$mport" AMQP_URL="amqp://guest:guest@127.0.0.1:$port/%2F"
export CHROMIUM="$browser" FIREFOX="$firefox" WARREN_PERF="${WARREN_PERF:-$root/target/debug/warren-perf}"
echo "ui tests: Warren on $port, UI on $mport"
status=0
(cd "$here" && timeout 600 node --test --test-concurrency=1 ./*.test.js) || status=1
if ! kill -0 "$pid" 2>/dev/null; then
  echo "warren died during the ui tests:"; tail -50 "$datadir/warren.log"; status=1
fi
exit $status
