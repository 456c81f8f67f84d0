#!/usr/bin/env bash
# What a shield hit costs the shield, against a client hit of the same 1 KiB object
# (issue 17): instructions per request counted by callgrind, the method of
# bench/http/hit-instructions.sh.
#
#   bench/tiers/shield-cost.sh [EDGE_BIN]     (default target/release/edge)
#
# The shield runs under `valgrind --tool=callgrind` in front of the small Python origin of
# bench/http/lib.sh. A child edge (native, not counted) has the shield as its parent and a
# site rule `bypass = true` on /1k.bin, so it keeps nothing and sends every request on, as a
# child sends a miss. After WARM requests each way the shield's counters are zeroed, N
# requests are sent (`h2load --h1 -n N -c CONNS`) and the counters dumped, three times:
#   client    h2load straight to the shield: a client hit
#   replayed  the same, with the header fields a child adds (captured first) sent by h2load
#   child     h2load to the child, which sends each request to the shield over its pool
# The shield's metrics must count N hits each time. The script prints each figure against
# the client hit, the functions whose instructions per request differ most (callgrind_annotate),
# and the request a child sends: before the measurement a child is pointed at capture.py, and
# its request for a miss and for a bypassed path are recorded and compared.
#
# Env: N (10000), CONNS (4), WARM (200), TOP (12 functions), WORK (default a new temp dir).
# Needs valgrind, h2load (nghttp2-client), python3, curl. Runtime: about 20 s.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
EDGE_BIN=${1:-$REPO/target/release/edge}
N=${N:-10000}
CONNS=${CONNS:-4}
WARM=${WARM:-200}
TOP=${TOP:-12}
WORK=${WORK:-$(mktemp -d /tmp/quicdn-shield-cost.XXXXXX)}

for tool in valgrind callgrind_control callgrind_annotate h2load python3 curl; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
[[ -x $EDGE_BIN ]] || { echo "no edge binary at $EDGE_BIN (cargo build --release -p edge)" >&2; exit 1; }

# shellcheck source=bench/http/lib.sh
source "$REPO/bench/http/lib.sh"
# shellcheck source=bench/tiers/lib.sh
source "$HERE/lib.sh"
EDGE_PID=

mkdir -p "$WORK/www"
head -c 1024 /dev/urandom >"$WORK/www/1k.bin"
start_origin "$WORK/www"
ORIGIN=http://127.0.0.1:$ORIGIN_PORT

# h1load COUNT URL [H2LOAD_ARGS...]: prints the number of 2xx answers.
h1load() {
  local count=$1 url=$2
  shift 2
  h2load --h1 -n "$count" -c "$CONNS" "$@" "$url" >"$WORK/load.out" 2>&1
  awk '/status codes:/ { print $3 }' "$WORK/load.out"
}

# --- what a child sends ---------------------------------------------------------------------
CAP_PORT=$(free_port)
python3 "$HERE/capture.py" "$CAP_PORT" "$WORK/captured.jsonl" &
cap_pid=$!
PIDS+=("$cap_pid")
wait_up "http://127.0.0.1:$CAP_PORT/ready"
: >"$WORK/captured.jsonl"
hp=$(free_port) ap=$(free_port)
edge_conf capture-child "$hp" "$ap" "$WORK/capture-child" "$ORIGIN" "http://127.0.0.1:$CAP_PORT" "/pass/*"
start_edge "$WORK/capture-child" "$ap"
CONNS=1 h1load 1 "http://127.0.0.1:$CAP_PORT/client" >/dev/null
CONNS=1 h1load 1 "http://127.0.0.1:$hp/miss" >/dev/null
CONNS=1 h1load 1 "http://127.0.0.1:$hp/pass/1k.bin" >/dev/null
stop_pid "$EDGE_PID"
stop_pid "$cap_pid"
# The child's added fields, as h2load arguments (Host is h2load's own).
mapfile -t REPLAY < <(python3 - "$WORK/captured.jsonl" <<'PY'
import json, sys
passed = [json.loads(l) for l in open(sys.argv[1])][2]
for k, v in passed["headers"]:
    if k.lower() != "host":
        print("-H")
        print(f"{k}: {v}")
PY
)

# --- the shield under callgrind, the child in front ------------------------------------------
SHIELD_HP=$(free_port) SHIELD_AP=$(free_port)
edge_conf shield "$SHIELD_HP" "$SHIELD_AP" "$WORK/shield" "$ORIGIN"
start_edge "$WORK/shield" "$SHIELD_AP" valgrind --tool=callgrind \
  --callgrind-out-file="$WORK/shield/callgrind.out"
shield_pid=$EDGE_PID
CHILD_HP=$(free_port) CHILD_AP=$(free_port)
edge_conf child "$CHILD_HP" "$CHILD_AP" "$WORK/child" "$ORIGIN" "http://127.0.0.1:$SHIELD_HP" "/1k.bin"
start_edge "$WORK/child" "$CHILD_AP"

shield_hits() { metric "$SHIELD_AP" quicdn_requests_total 'cache="hit"'; }

declare -A RESULT=() DUMP=() DONE=()
KINDS=(client replayed child)
for kind in "${KINDS[@]}"; do
  case $kind in
    client | replayed) url="http://127.0.0.1:$SHIELD_HP/1k.bin" ;;
    child) url="http://127.0.0.1:$CHILD_HP/1k.bin" ;;
  esac
  args=()
  [[ $kind != replayed ]] || args=("${REPLAY[@]}")
  h1load "$WARM" "$url" "${args[@]}" >/dev/null
  before=$(shield_hits)
  callgrind_control -z "$shield_pid" >/dev/null
  done=$(h1load "$N" "$url" "${args[@]}")
  rm -f "$WORK/shield"/callgrind.out.*
  callgrind_control -d "$kind" "$shield_pid" >/dev/null
  dumps=("$WORK/shield"/callgrind.out.*)
  mv "${dumps[0]}" "$WORK/shield/$kind.callgrind"
  DUMP[$kind]=$WORK/shield/$kind.callgrind
  hits=$(($(shield_hits) - before))
  ir=$(awk '/^(summary|totals):/ { ir = $2 } END { print ir }' "${DUMP[$kind]}")
  [[ -n $done && $done -gt 0 && -n $ir ]] || { echo "$kind: no result (see $WORK/load.out)" >&2; exit 1; }
  [[ $hits == "$done" ]] || echo "WARNING: $kind: $done answers but $hits shield hits" >&2
  RESULT[$kind]=$((ir / done)) DONE[$kind]=$done
  echo "$kind: $done requests, $hits shield hits, $ir instructions, $((ir / done)) per request" >&2
done

label() {
  case $1 in
    client) echo "client hit (h2load to the shield)" ;;
    replayed) echo "the child's header fields, replayed by h2load" ;;
    child) echo "shield hit (through a real child, bypass rule)" ;;
  esac
}
echo "shield: $("$EDGE_BIN" --version 2>/dev/null | awk '{ print $2 }') at $(git -C "$REPO" rev-parse --short HEAD), $(date -u +%Y-%m-%d); h2load --h1 -n $N -c $CONNS"
echo
echo "| 1 KiB hit at the shield (h1) | instructions per request | × client hit |"
echo "|---|---|---|"
for kind in "${KINDS[@]}"; do
  printf '| %s | %s | %s |\n' "$(label "$kind")" "${RESULT[$kind]}" \
    "$(awk -v v="${RESULT[$kind]}" -v b="${RESULT[client]}" 'BEGIN { printf "%.3f", v / b }')"
done
echo
echo "A: client hit, B: shield hit through a child."
python3 "$HERE/irdiff.py" "$TOP" "${DUMP[client]}:${DONE[client]}" "${DUMP[child]}:${DONE[child]}"
echo
python3 - "$WORK/captured.jsonl" <<'PY'
import json, sys
client, miss, passed = (json.loads(l) for l in open(sys.argv[1]))
def fields(r):
    return [(k.lower(), v) for k, v in r["headers"]]
print("What the shield is sent (captured; the client is h2load --h1):")
print()
print("| field | client | child (bypass rule) |")
print("|---|---|---|")
c, p = dict(fields(client)), fields(passed)
names = list(dict.fromkeys([k for k, _ in fields(client)] + [k for k, _ in p]))
for n in names:
    pv = ", ".join(v for k, v in p if k == n)
    print(f"| {n} | {c.get(n, '')} | {pv} |")
print()
same = [kv for kv in fields(miss) if kv[0] != "host"] == [kv for kv in p if kv[0] != "host"]
print("A child's miss request and its bypass request carry "
      + ("the same fields, in the same order." if same else
         f"different fields: miss {fields(miss)} / bypass {p}"))
PY
