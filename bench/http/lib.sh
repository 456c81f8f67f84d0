# Shared by bench/http/hit-instructions.sh and bench/control/purge-load.sh (sourced, not
# run): processes stopped by PID on exit, free loopback ports, waiting for a listener, and
# the small Python origin both put in front of the edge.

PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_up CURL_ARGS...: until the URL answers 2xx (at most 60 s).
wait_up() {
  local i
  for i in $(seq 300); do
    curl -fsS -o /dev/null "$@" 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}

# start_origin DIR: serves DIR on a free port with `Cache-Control: max-age=3600`, sets
# ORIGIN_PORT, and returns once it answers for /1k.bin.
start_origin() {
  ORIGIN_PORT=$(free_port)
  cat >"$WORK/origin.py" <<'PY'
import http.server, sys
class H(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def end_headers(self):
        self.send_header("Cache-Control", "max-age=3600")
        super().end_headers()
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])),
    lambda *a: H(*a, directory=sys.argv[2])).serve_forever()
PY
  python3 "$WORK/origin.py" "$ORIGIN_PORT" "$1" &
  PIDS+=($!)
  wait_up "http://127.0.0.1:$ORIGIN_PORT/1k.bin" || { echo "origin did not start" >&2; exit 1; }
}
