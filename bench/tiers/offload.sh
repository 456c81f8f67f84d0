#!/usr/bin/env bash
# Origin offload with and without a shield (issue 17): CHILDREN child edges in front of an
# origin that counts what it is asked (offload.py origin), under a mixed workload, run twice
# on empty caches with the same requests:
#   direct   children -> origin
#   shield   children -> one shield edge (parents = [shield], fallback = origin) -> origin
# The workload (offload.py load): REQUESTS GETs spread round-robin over the children, all
# with one Host, object IDs drawn Zipf-like (exponent ZIPF_S) over OBJECTS objects; by ID,
# 1 in 20 is `no-store`, 1 in 5 `max-age=SHORT` (revalidated with If-None-Match, 304), the
# rest `max-age=3600`. Paced at RATE requests/s (so that both runs see the short max-ages
# expire on the same clock) by THREADS client threads; each run stops after RUN_SECONDS at
# most.
# Prints, per run: client requests, origin requests (and 304s among them), the offload ratio
# (client requests per origin request), the children's hit share (quicdn_requests_total) and
# the parent hit rate (quicdn_parent_hits_total / quicdn_parent_requests_total, summed over
# the children).
#
#   bench/tiers/offload.sh [EDGE_BIN]     (default target/release/edge)
#
# Env: CHILDREN (3), REQUESTS (20000), RATE (800), RUN_SECONDS (60), OBJECTS (2000),
#      ZIPF_S (1.0), SHORT (2), THREADS (12), SEED (1), WORK (default a new temp dir).
# Needs python3, curl. Runtime: REQUESTS / RATE a run (25 s), plus a few s to start edges.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
EDGE_BIN=${1:-$REPO/target/release/edge}
CHILDREN=${CHILDREN:-3}
REQUESTS=${REQUESTS:-20000}
RUN_SECONDS=${RUN_SECONDS:-60}
OBJECTS=${OBJECTS:-2000}
ZIPF_S=${ZIPF_S:-1.0}
export SHORT=${SHORT:-2}
THREADS=${THREADS:-12}
RATE=${RATE:-800}
SEED=${SEED:-1}
WORK=${WORK:-$(mktemp -d /tmp/quicdn-offload.XXXXXX)}
HOST=offload.bench

for tool in python3 curl; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
[[ -x $EDGE_BIN ]] || { echo "no edge binary at $EDGE_BIN (cargo build --release -p edge)" >&2; exit 1; }

# shellcheck source=bench/http/lib.sh
source "$REPO/bench/http/lib.sh"
# shellcheck source=bench/tiers/lib.sh
source "$HERE/lib.sh"
EDGE_PID=

ORIGIN_PORT=$(free_port)
python3 "$HERE/offload.py" origin "$ORIGIN_PORT" &
PIDS+=($!)
wait_up "http://127.0.0.1:$ORIGIN_PORT/stats" || { echo "origin did not start" >&2; exit 1; }
ORIGIN=http://127.0.0.1:$ORIGIN_PORT

# run MODE: one run on empty caches; leaves WORK/MODE.json.
run() {
  local mode=$1 edges=() admins=() addrs=() parent='' i hp ap dir
  curl -fsS -X POST "$ORIGIN/reset" >/dev/null
  if [[ $mode == shield ]]; then
    hp=$(free_port) ap=$(free_port)
    edge_conf shield "$hp" "$ap" "$WORK/$mode/shield" "$ORIGIN"
    start_edge "$WORK/$mode/shield" "$ap"
    edges+=("$EDGE_PID")
    parent=http://127.0.0.1:$hp
    SHIELD_AP=$ap
  fi
  for i in $(seq "$CHILDREN"); do
    hp=$(free_port) ap=$(free_port) dir=$WORK/$mode/child-$i
    edge_conf "child-$i" "$hp" "$ap" "$dir" "$ORIGIN" "$parent"
    start_edge "$dir" "$ap"
    edges+=("$EDGE_PID") admins+=("$ap") addrs+=("127.0.0.1:$hp")
  done
  python3 "$HERE/offload.py" load "$HOST" "$(IFS=,; echo "${addrs[*]}")" "$REQUESTS" \
    "$RATE" "$RUN_SECONDS" "$OBJECTS" "$ZIPF_S" "$SEED" "$THREADS" >"$WORK/$mode.load.json"
  local requests=0 hits=0 preq=0 phit=0 fallbacks=0 shield_fetches=0
  for ap in "${admins[@]}"; do
    requests=$((requests + $(metric "$ap" quicdn_requests_total)))
    hits=$((hits + $(metric "$ap" quicdn_requests_total 'cache="hit"')))
    preq=$((preq + $(metric "$ap" quicdn_parent_requests_total)))
    phit=$((phit + $(metric "$ap" quicdn_parent_hits_total)))
    fallbacks=$((fallbacks + $(metric "$ap" quicdn_parent_fallbacks_total)))
  done
  [[ $mode != shield ]] || shield_fetches=$(metric "$SHIELD_AP" quicdn_cache_origin_fetches_total)
  curl -fsS "$ORIGIN/stats" >"$WORK/$mode.origin.json"
  python3 - "$WORK/$mode.load.json" "$WORK/$mode.origin.json" "$requests" "$hits" "$preq" \
    "$phit" "$fallbacks" "$shield_fetches" >"$WORK/$mode.json" <<'PY'
import json, sys
load, origin = (json.load(open(p)) for p in sys.argv[1:3])
keys = ["edge_requests", "edge_hits", "parent_requests", "parent_hits", "parent_fallbacks",
        "shield_origin_fetches"]
print(json.dumps({"load": load, "origin": origin,
                  **{k: int(v) for k, v in zip(keys, sys.argv[3:])}}))
PY
  for i in "${edges[@]}"; do stop_pid "$i"; done
  echo "$mode: done ($WORK/$mode.json)" >&2
}

run direct
run shield

python3 - "$WORK/direct.json" "$WORK/shield.json" "$CHILDREN" "$OBJECTS" "$ZIPF_S" "$SHORT" <<'PY'
import json, sys
runs = {"children → origin": json.load(open(sys.argv[1])),
        "children → shield → origin": json.load(open(sys.argv[2]))}
children, objects, s, short = sys.argv[3:7]
first = next(iter(runs.values()))["load"]
share = {k: v / sum(first["by_class"].values()) for k, v in first["by_class"].items()}
print(f"{children} children, {first['planned']} requests planned at {first['rate']:.0f}/s, Zipf s={s} over {objects} "
      f"objects; requests by class: " + ", ".join(f"{k} {v:.1%}" for k, v in share.items())
      + f" (short: max-age={short})")
print()
print("| run | client requests (failed) | seconds | origin requests (304) | offload ratio | "
      "child hits | parent hit rate (cacheable only) |")
print("|---|---|---|---|---|---|---|")
for name, r in runs.items():
    load, origin = r["load"], r["origin"]
    ratio = load["ok"] / max(origin["requests"], 1)
    hits = r["edge_hits"] / max(r["edge_requests"], 1)
    cacheable = r["parent_requests"] - origin["uncacheable"]
    parent = (f"{r['parent_hits'] / r['parent_requests']:.1%} of {r['parent_requests']} "
              f"({r['parent_hits'] / max(cacheable, 1):.1%} of {cacheable})"
              if r["parent_requests"] else "-")
    print(f"| {name} | {load['ok']} ({load['failed']}) | {load['seconds']} | "
          f"{origin['requests']} ({origin['not_modified']}) | {ratio:.2f} | {hits:.1%} | {parent} |")
print()
print("| origin requests by class | " + " | ".join(runs) + " |")
print("|---|" + "---|" * len(runs))
for kind in first["by_class"]:
    clients = first["by_class"][kind]
    cells = [f"{r['origin'][kind]} ({clients / max(r['origin'][kind], 1):.2f})" for r in runs.values()]
    print(f"| {kind} ({clients} client requests) | " + " | ".join(cells) + " |")
print()
print("Offload ratio: client requests answered 2xx per origin request (304s included). Child "
      "hits: quicdn_requests_total cache=\"hit\" over all, summed over the children. Parent hit "
      "rate: quicdn_parent_hits_total / quicdn_parent_requests_total, summed over the children; "
      "in brackets without the uncacheable requests, which pass through the shield. By class, "
      "in brackets: client requests (planned) per origin request.")
shield = runs["children → shield → origin"]
if shield["parent_fallbacks"]:
    print(f"\nparent fallbacks to the origin: {shield['parent_fallbacks']}")
PY
