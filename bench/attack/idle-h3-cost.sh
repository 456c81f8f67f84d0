#!/usr/bin/env bash
# What one idle HTTP/3 connection costs the edge: RSS per connection with N idle QUIC
# connections (h3idle, handshake only), and with --heaptrack the live heap per connection by
# allocation site (needs heaptrack and an edge built without mimalloc, since heaptrack sees
# only malloc: see bench/attack/README.md). Loopback only; one edge, bounded in time (~45 s).
#
#   bench/attack/idle-h3-cost.sh [-n 2000] [--edge BIN] [--heaptrack]
set -euo pipefail
n=2000
target=${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/target}
edge=$target/release/edge
h3idle=$target/release/h3idle
heap=0
while [ $# -gt 0 ]; do
    case $1 in
        -n) n=$2; shift 2 ;;
        --edge) edge=$2; shift 2 ;;
        --heaptrack) heap=1; shift ;;
        *) echo "usage: $0 [-n N] [--edge BIN] [--heaptrack]" >&2; exit 2 ;;
    esac
done
[ -x "$edge" ] && [ -x "$h3idle" ] || {
    echo "build first: cargo build --release -p edge -p h3load" >&2
    exit 2
}
work=$(mktemp -d)
edge_pid=""
cleanup() {
    [ -n "$edge_pid" ] && kill "$edge_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
read -r https http admin < <(python3 -c '
import socket
ss=[socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1",0))
print(*[s.getsockname()[1] for s in ss])')
cat > "$work/edge.toml" <<TOML
[listen]
https = "127.0.0.1:$https"
http = "127.0.0.1:$http"
admin = "127.0.0.1:$admin"
max_connections_per_ip = 1000000
[quic]
max_connections = 1000000
retry_above = 1000000
idle_timeout = "5m"
[cache]
dir = "$work/cache"
[log]
filter = "warn"
TOML
rss() { awk '/VmRSS/{print $2}' "/proc/$edge_pid/status"; }
if [ "$heap" = 1 ]; then
    heaptrack -o "$work/heap" "$edge" --config "$work/edge.toml" >"$work/edge.log" 2>&1 &
    sleep 2
    edge_pid=$(pgrep -n -f -- "$edge --config $work/edge.toml")
else
    "$edge" --config "$work/edge.toml" >"$work/edge.log" 2>&1 &
    edge_pid=$!
    sleep 1
fi
# Warm up (first handshakes allocate the endpoint's own tables), then the baseline.
"$h3idle" --connect "127.0.0.1:$https" -c 20 --hold 1 >/dev/null 2>&1
sleep 2
base=$(rss)
"$h3idle" --connect "127.0.0.1:$https" -c "$n" --hold 25 \
    --bind 127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5 >"$work/idle.json" 2>&1 &
idle_pid=$!
sleep 20
held=$(rss)
wait "$idle_pid" || true
est=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["established"])' "$work/idle.json")
echo "idle h3 connections: $est of $n established; RSS $((base / 1024)) MB -> $((held / 1024)) MB; $(((held - base) * 1024 / est)) B per connection"
if [ "$heap" = 1 ]; then
    kill "$edge_pid"
    edge_pid=""
    wait || true
    heaptrack_print "$work"/heap.*zst --flamegraph-cost-type peak -F "$work/heap.folded" >/dev/null 2>&1
    python3 - "$work/heap.folded" "$est" <<'PY'
import collections, re, sys
# Frames that only say how memory was allocated, not who asked for it.
plumbing = re.compile(r"\((alloc|boxed|raw_vec|mod|vec|spec_\w+|clone|function|arc|sync|unix|rc|map|raw|string|slice|iterator|into_iter|option|result|cell|core|harness|unsafe_cell|future|panicking|panic|unwind_safe|task|context|local|scoped|worker|runtime|pool|backtrace|lifecycle|set|poll_fn|select|pin|join)\.rs\)$|clone3|pthread")
sites = collections.Counter()
for line in open(sys.argv[1]):
    stack, _, size = line.rstrip().rpartition(" ")
    frames = [f for f in stack.split(";") if not plumbing.search(f)]
    sites[" < ".join(reversed(frames[-4:]))] += int(size)
n = int(sys.argv[2])
print(f"live heap at the peak: {sum(sites.values()) / n:.0f} B per connection (the edge's own tables included); largest sites:")
for site, size in sites.most_common(15):
    print(f"{size / n:8.0f} B  {site[:150]}")
PY
fi
