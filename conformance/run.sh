#!/usr/bin/env bash
# Runs the third-party client suites (amqplib, pika) against a freshly
# started Warren on a free port, then stops it. Installs the suites' pinned
# packages first (npm ci, pip install -r). Exit status: non-zero if any suite
# failed.
#
# Usage: conformance/run.sh [path-to-warren-binary]
# With AMQP_URL set, runs against that broker instead (e.g. RabbitMQ:
#   AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2F conformance/run.sh); its
# management API and metrics are then MANAGEMENT_URL and PROMETHEUS_URL
# (default RabbitMQ's ports 15672 and 15692), and the TLS suites run with
# AMQPS_URL and TLS_DIR set (see conformance/python/test_tls.py).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
bin=${1:-$root/target/debug/warren}

(cd "$here/node" && npm ci --no-audit --no-fund --loglevel=error) || exit 1
pipi() { python3 -m pip install --quiet --disable-pip-version-check "$@"; }
# Debian's own Python refuses system-wide installs; pyenv's and venvs don't.
pipi -r "$here/python/requirements.txt" 2>/dev/null \
  || pipi --break-system-packages -r "$here/python/requirements.txt" || exit 1

# rabbitmqadmin v2 (the management API's Rust CLI), pinned, built once
# into .tools/ (a few minutes on a clean machine).
tools="$root/.tools"
if [ ! -x "$tools/bin/rabbitmqadmin" ]; then
  # A debug build: the crate's release profile (LTO, one codegen unit) takes
  # several minutes longer and the tests need no speed from it.
  cargo install --quiet --debug --locked --version 2.35.0 --root "$tools" rabbitmqadmin || exit 1
fi
export RABBITMQADMIN_V2="$tools/bin/rabbitmqadmin"

pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi
  [ -n "${datadir:-}" ] && rm -rf "$datadir"
}
trap cleanup EXIT

if [ -z "${AMQP_URL:-}" ]; then
  datadir=$(mktemp -d)
  log="$datadir/warren.log"
  # AMQPS on a free port with the certificates of make_certs.py, verifying
  # client certificates as the TLS suites expect (see test_tls.py).
  export TLS_DIR="$datadir/tls"
  python3 "$here/make_certs.py" "$TLS_DIR" || exit 1
  cat >"$datadir/warren.toml" <<EOF
auth_mechanisms = ["PLAIN", "AMQPLAIN", "EXTERNAL"]
[tls]
port = 0
cert_file = "$TLS_DIR/server.pem"
key_file = "$TLS_DIR/server.key"
ca_file = "$TLS_DIR/ca.pem"
verify_peer = true
EOF
  # The HTTP listeners need real ports (0 turns them off): two free ones,
  # below Linux's ephemeral range so that the `--port 0` listeners cannot
  # be handed the same ones.
  read -r mport pport < <(python3 -c 'import random, socket
ports = []
while len(ports) < 2:
    p = random.randrange(20000, 32000)
    try:
        with socket.socket() as s: s.bind(("127.0.0.1", p))
    except OSError: continue
    if p not in ports: ports.append(p)
print(*ports)')
  "$bin" --config "$datadir/warren.toml" --port 0 --data-dir "$datadir/data" --log-level warn,warren=info \
    --management-port "$mport" --prometheus-port "$pport" >"$log" 2>&1 &
  pid=$!
  port="" tport=""
  # The AMQP line comes first, then one line per other listener.
  for _ in $(seq 1 100); do
    port=$(grep -o 'addr=127.0.0.1:[0-9]*' "$log" 2>/dev/null | head -1 | cut -d: -f2)
    tport=$(grep 'amqp/ssl' "$log" 2>/dev/null | grep -o 'addr=127.0.0.1:[0-9]*' | head -1 | cut -d: -f2)
    [ -n "$port" ] && [ -n "$tport" ] && break
    sleep 0.1
  done
  if [ -z "$port" ] || [ -z "$tport" ]; then
    echo "warren did not start:"; cat "$log"; exit 1
  fi
  export AMQP_URL="amqp://guest:guest@127.0.0.1:$port/%2F"
  export AMQPS_URL="amqps://127.0.0.1:$tport/%2F"
  export MANAGEMENT_URL="http://127.0.0.1:$mport" PROMETHEUS_URL="http://127.0.0.1:$pport"
  echo "conformance: Warren on port $port, AMQPS on $tport"
fi

status=0
echo "== amqplib suite"
# Files named extensions* (none today) would cover RabbitMQ features Warren
# does not implement yet; they run only with CONFORMANCE_EXTENSIONS=1.
node_files=$(cd "$here/node" && ls test/*.test.js | { if [ -n "${CONFORMANCE_EXTENSIONS:-}" ]; then cat; else grep -v extensions; fi; })
(cd "$here/node" && timeout 600 node --test --test-concurrency=1 $node_files) || status=1
echo "== pika suite"
py_ignore=""
if [ -z "${CONFORMANCE_EXTENSIONS:-}" ] && [ -e "$here/python/test_extensions.py" ]; then
  py_ignore="--ignore=test_extensions.py"
fi
(cd "$here/python" && timeout 600 python3 -m pytest -q $py_ignore) || status=1
if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
  echo "warren died during the conformance run:"; tail -50 "$log"; status=1
fi
exit $status
