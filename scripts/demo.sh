#!/usr/bin/env bash
# Sets everything up and runs h3gate in front of the bundled demo HTTP/1.1
# app: dependencies, build, development certificates, the demo app on
# 127.0.0.1:8080 and h3gate on UDP $H3GATE_PORT (default 8443). Ctrl-C
# stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${H3GATE_PORT:-8443}
APP_PORT=${H3GATE_APP_PORT:-8080}
bash scripts/deps.sh
bash scripts/build.sh build
bash certs/make-certs.sh certs/out >/dev/null
mkdir -p build/demo
cat > build/demo/h3gate.ini <<INI
[server]
log_level = info
access_log = -
admin = 127.0.0.1:9901

[listener]
address = 127.0.0.1
port = $PORT
cert = $PWD/certs/out/server.crt
key = $PWD/certs/out/server.key

[upstream]
server = 127.0.0.1:$APP_PORT
INI
/usr/bin/python3 docker/demo-app/app.py --host 127.0.0.1 --port "$APP_PORT" &
app=$!
trap 'kill $app 2>/dev/null; wait $app 2>/dev/null' EXIT
cat <<MSG

h3gate listens on UDP 127.0.0.1:$PORT (HTTP/3) in front of the demo app on
127.0.0.1:$APP_PORT. Fetch a page over HTTP/3 from another terminal:

  /usr/bin/python3 scripts/h3get.py --cacert certs/out/ca.crt https://localhost:$PORT/

or with ngtcp2's example client (it does not verify certificates):

  gtlsclient --exit-on-all-streams-close 127.0.0.1 $PORT https://localhost:$PORT/

Metrics: curl http://127.0.0.1:9901/metrics    Stop: Ctrl-C

MSG
build/h3gate -c build/demo/h3gate.ini
