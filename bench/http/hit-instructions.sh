#!/usr/bin/env bash
# Instructions per 1 KiB cache hit, counted by callgrind: a repeatable measure of the hit
# path's CPU, for changes whose cost is below the noise of run.sh's timed runs (this host's
# CPU time per request moves by up to 9 % between runs of one binary; an instruction count
# does not move). It compares edge builds and configs in one run and prints each against the
# first:
#
#   bench/http/hit-instructions.sh LABEL=EDGE_BIN:TEMPLATE [LABEL=EDGE_BIN:TEMPLATE ...]
#   e.g. before=/tmp/old/edge:bench/http/edge.toml now=target/release/edge:bench/http/edge.toml \
#        rules=target/release/edge:bench/http/edge-rules.toml
#
# Each edge runs under `valgrind --tool=callgrind` in front of a small Python origin serving
# /1k.bin (1024 random bytes, max-age=3600). After one miss and WARM hits per protocol, its
# counters are zeroed, the load runs, and its counters are dumped: instructions / requests.
# Load (a fixed count, so the window holds nothing else): h1 `h2load --h1 -n N -c CONNS`,
# h2 over TLS `h2load -n N -c CONNS -m STREAMS`, h3 `h3load` for H3_SECONDS (its count of
# completed requests is the divisor; QUIC handshakes happen before the counters are zeroed).
#
# Env: N (10000), CONNS (4), STREAMS (10), WARM (200), H3_SECONDS (10), PROTOCOLS ("h1 h2 h3"),
#      H3LOAD_BIN, CERTS_BIN (default target/release/*), WORK (default a new temp dir).
# Needs valgrind, h2load (nghttp2-client), python3, curl. Runtime: about a minute a label.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
N=${N:-10000}
CONNS=${CONNS:-4}
STREAMS=${STREAMS:-10}
WARM=${WARM:-200}
H3_SECONDS=${H3_SECONDS:-10}
PROTOCOLS=${PROTOCOLS:-"h1 h2 h3"}
H3LOAD_BIN=${H3LOAD_BIN:-$REPO/target/release/h3load}
CERTS_BIN=${CERTS_BIN:-$REPO/target/release/certs}
WORK=${WORK:-$(mktemp -d /tmp/quicdn-hit-instr.XXXXXX)}

(($# > 0)) || { sed -n '2,21p' "$0" >&2; exit 2; }
for tool in valgrind callgrind_control h2load python3 curl; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
[[ -x $CERTS_BIN ]] || { echo "no certs binary at $CERTS_BIN (cargo build --release -p certs)" >&2; exit 1; }
if [[ " $PROTOCOLS " == *" h3 "* && ! -x $H3LOAD_BIN ]]; then
  echo "no h3load at $H3LOAD_BIN (cargo build --release -p h3load)" >&2
  exit 1
fi

source "$HERE/lib.sh"

mkdir -p "$WORK/www"
head -c 1024 /dev/urandom >"$WORK/www/1k.bin"
"$CERTS_BIN" --dir "$WORK/certs" --leaf 'bench=localhost,127.0.0.1' >"$WORK/certs.log"
CERT=$WORK/certs/bench.pem KEY=$WORK/certs/bench-key.pem CA=$WORK/certs/ca.pem
start_origin "$WORK/www"

# load PROTO HTTP_PORT TLS_PORT COUNT: prints the number of completed 2xx requests.
load() {
  local proto=$1 http=$2 tls=$3 count=$4 out=$WORK/load.out
  case $proto in
    h1) h2load --h1 -n "$count" -c "$CONNS" "http://127.0.0.1:$http/1k.bin" >"$out" 2>&1 ;;
    h2) h2load -n "$count" -c "$CONNS" -m "$STREAMS" --connect-to="127.0.0.1:$tls" \
      "https://localhost:$tls/1k.bin" >"$out" 2>&1 ;;
    h3) "$H3LOAD_BIN" --url "https://localhost:$tls/1k.bin" --connect "127.0.0.1:$tls" \
      --ca "$CA" -c "$CONNS" -s "$STREAMS" -d "$count" --warmup 0 --expect-status 200 \
      --expect-length 1024 --threads 1 --json >"$out" 2>&1 ;;
  esac
  case $proto in
    h1 | h2) awk '/status codes:/ { print $3 }' "$out" ;;
    h3) python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print(r["requests"])' "$out" ;;
  esac
}

# Total instructions of the last dump in a callgrind output file.
total_ir() { awk '/^(summary|totals):/ { ir = $2 } END { print ir }' "$1"; }

declare -A RESULT=()
LABELS=()
for spec in "$@"; do
  label=${spec%%=*} rest=${spec#*=}
  bin=${rest%%:*} template=${rest#*:}
  LABELS+=("$label")
  hp=$(free_port) tp=$(free_port) ap=$(free_port)
  dir=$WORK/$label
  mkdir -p "$dir"
  sed -e "s|@EDGE_HTTP_PORT@|$hp|; s|@EDGE_TLS_PORT@|$tp|; s|@EDGE_ADMIN_PORT@|$ap|" \
    -e "s|@CERT@|$CERT|; s|@KEY@|$KEY|; s|@WORK@|$dir|; s|@ORIGIN_HTTP_PORT@|$ORIGIN_PORT|" \
    "$template" >"$dir/edge.toml"
  valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
    "$bin" --config "$dir/edge.toml" >"$dir/edge.log" 2>&1 &
  edge_pid=$!
  PIDS+=("$edge_pid")
  wait_up "http://127.0.0.1:$hp/1k.bin" || { echo "$label: edge did not start (see $dir/edge.log)" >&2; exit 1; }
  for proto in $PROTOCOLS; do
    # Warm: the connections' first requests, the memory tier, every lazily built path.
    if [[ $proto == h3 ]]; then load h3 "$hp" "$tp" 2 >/dev/null; else load "$proto" "$hp" "$tp" "$WARM" >/dev/null; fi
    callgrind_control -z "$edge_pid" >/dev/null
    if [[ $proto == h3 ]]; then done=$(load h3 "$hp" "$tp" "$H3_SECONDS"); else done=$(load "$proto" "$hp" "$tp" "$N"); fi
    rm -f "$dir"/callgrind.out.*
    callgrind_control -d "$proto" "$edge_pid" >/dev/null
    dump=$(ls -t "$dir"/callgrind.out.* | head -1)
    ir=$(total_ir "$dump")
    [[ -n $done && $done -gt 0 && -n $ir ]] || { echo "$label $proto: no result (see $WORK/load.out)" >&2; exit 1; }
    RESULT[$label,$proto]=$((ir / done))
    echo "$label $proto: $done requests, $ir instructions, $((ir / done)) per request" >&2
  done
  kill "$edge_pid" 2>/dev/null || true
  wait "$edge_pid" 2>/dev/null || true
done

first=${LABELS[0]}
printf '| instructions per 1 KiB hit |'
for label in "${LABELS[@]}"; do printf ' %s |' "$label"; done
printf '\n|---|'
for _ in "${LABELS[@]}"; do printf -- '---|'; done
printf '\n'
for proto in $PROTOCOLS; do
  printf '| %s |' "$proto"
  for label in "${LABELS[@]}"; do
    v=${RESULT[$label,$proto]} b=${RESULT[$first,$proto]}
    if [[ $label == "$first" ]]; then printf ' %s |' "$v"
    else printf ' %s (%+.1f %%) |' "$v" "$(awk -v v="$v" -v b="$b" 'BEGIN { print (v - b) * 100 / b }')"; fi
  done
  printf '\n'
done
