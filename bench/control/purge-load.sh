#!/usr/bin/env bash
# Hits while purging: 1 KiB hits over h1 (wrk, fixed connections, RUN seconds) on one edge,
# first alone, then while PURGE_RATE URL purges per second (default 1000) go to its admin API
# for the same time, each naming another cached object. Prints hit req/s, p50/p99 and errors
# for both runs and the p99 ratio (issue 16's goal: no failed hit, p99 at most 2x).
#
#   bench/control/purge-load.sh [EDGE_BIN]     (default target/release/edge)
#
# Env: RUN (10 s), CONNS (8), PURGE_RATE (1000), OBJECTS (2000, cached before the purges so
# that they remove something), WORK (a new temp dir). Needs wrk, python3, curl.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
EDGE_BIN=${1:-$REPO/target/release/edge}
RUN=${RUN:-10}
CONNS=${CONNS:-8}
PURGE_RATE=${PURGE_RATE:-1000}
OBJECTS=${OBJECTS:-2000}
WORK=${WORK:-$(mktemp -d /tmp/quicdn-purge-load.XXXXXX)}

for tool in wrk python3 curl; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
[[ -x $EDGE_BIN ]] || { echo "no edge binary at $EDGE_BIN (cargo build --release -p edge)" >&2; exit 1; }

source "$REPO/bench/http/lib.sh"

mkdir -p "$WORK/www/p"
head -c 1024 /dev/urandom >"$WORK/www/1k.bin"
for i in $(seq 0 $((OBJECTS - 1))); do echo "object $i" >"$WORK/www/p/$i"; done
start_origin "$WORK/www"

HP=$(free_port) AP=$(free_port)
cat >"$WORK/edge.toml" <<TOML
name = "bench-edge"
[listen]
http = "127.0.0.1:$HP"
admin = "127.0.0.1:$AP"
[cache]
dir = "$WORK/edge-cache"
[log]
filter = "warn"
access_log = false
[[site]]
hosts = ["*"]
origin = "http://127.0.0.1:$ORIGIN_PORT"
TOML
"$EDGE_BIN" --config "$WORK/edge.toml" >"$WORK/edge.log" 2>&1 &
PIDS+=($!)
wait_up "http://127.0.0.1:$HP/1k.bin" || { echo "edge did not start (see $WORK/edge.log)" >&2; exit 1; }

# Cache the objects the purges will name (under the host 127.0.0.1, as wrk sends it).
python3 - "$HP" "$OBJECTS" <<'PY'
import http.client, sys
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
for i in range(int(sys.argv[2])):
    conn.request("GET", f"/p/{i}", headers={"host": "127.0.0.1"})
    conn.getresponse().read()
PY

hits() {
  wrk -t1 -c"$CONNS" -d"${RUN}s" -s "$REPO/bench/http/wrk-report.lua" \
    "http://127.0.0.1:$HP/1k.bin" | awk '/^JSON /{ sub(/^JSON /, ""); print }'
}
wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$HP/1k.bin" >/dev/null
alone=$(hits)
python3 "$HERE/purge_load.py" "127.0.0.1:$AP" "$PURGE_RATE" "$RUN" '127.0.0.1/p/{}' >"$WORK/purges.out" &
purger=$!
PIDS+=("$purger")
loaded=$(hits)
wait "$purger" || true
purges=$(awk '/^JSON /{ sub(/^JSON /, ""); print }' "$WORK/purges.out")
python3 - "$alone" "$loaded" "$purges" <<'PY'
import json, sys
alone, loaded, purges = (json.loads(a) for a in sys.argv[1:4])
def row(name, r):
    errors = r["connect_errors"] + r["read_errors"] + r["write_errors"] + r["status_errors"] + r["timeouts"]
    rps = r["requests"] / (r["duration_us"] / 1e6)
    print(f"| {name} | {rps:,.0f} | {r['p50_us']/1e3:.2f} | {r['p99_us']/1e3:.2f} | {errors} |")
print("| 1 KiB hits over h1 | req/s | p50 ms | p99 ms | failed |")
print("|---|---|---|---|---|")
row("alone", alone)
row(f"with {purges['rate']:.0f} purges/s", loaded)
print()
print(f"purges: {purges['sent']} sent, {purges['ok']} answered 200, {purges['failed']} failed, "
      f"API answer p50 {purges['p50_ms']} ms, p99 {purges['p99_ms']} ms")
print(f"hit p99 with purges / alone: {loaded['p99_us'] / max(alone['p99_us'], 1):.2f}x")
PY
