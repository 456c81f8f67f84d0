#!/usr/bin/env bash
# Which POP do geodns and gdnsd give each client network of the benchmark DB, and is it the
# nearest by great-circle distance? Starts both servers on 127.0.0.1 with the twin configs of
# run.sh, asks each `dig +subnet=NET +short www.cdn.test A` (NET: the first /24 of an IPv4
# client network, the first /56 of an IPv6 one), plus a query without ECS (client 127.0.0.1)
# and ECS for networks missing from the DB (both expect the fallback POP, the first in
# pops.csv). Prints a table and a summary line of mismatches; exits 0 whatever they are.
#
#   bench/geodns/compare-answers.sh      (env: WORK, SKIP_BUILD=1, GEODNS_BIN as in run.sh)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_init
ensure_tools
build_geodns
prepare
start_servers

# ask PORT ECS: "POP<TAB>scope" for www.cdn.test A (ECS "none": no option sent).
ask() {
  local port=$1 ecs=$2 opt=() addr scope
  [[ $ecs == none ]] || opt=(+subnet="$ecs")
  addr=$(dig @127.0.0.1 -p "$port" +time=2 +tries=1 +short "${opt[@]}" www.cdn.test A | head -n1)
  scope=$(dig @127.0.0.1 -p "$port" +time=2 +tries=1 "${opt[@]}" www.cdn.test A \
    | awk '/CLIENT-SUBNET:/ { n = split($NF, p, "/"); print p[n] }')
  printf '%s\t%s\n' "$(pop_of "$addr")" "${scope:--}"
}

# The network dig sends: first /24 (IPv4) or /56 (IPv6) of the client network.
ecs_of() {
  python3 -c 'import ipaddress, sys
n = ipaddress.ip_network(sys.argv[1])
p = 24 if n.version == 4 else 56
print(n if n.prefixlen >= p else next(n.subnets(new_prefix=p)))' "$1"
}

ANSWERS=$WORK/answers.tsv
: >"$ANSWERS"
while IFS=, read -r subnet _; do
  [[ $subnet == subnet ]] && continue
  ecs=$(ecs_of "$subnet")
  printf '%s\t%s\t%s\t%s\n' "$subnet" "$ecs" "$(ask "$GEODNS_PORT" "$ecs")" "$(ask "$GDNSD_PORT" "$ecs")" >>"$ANSWERS"
done <"$CLIENTS"
for extra in none 192.0.2.0/24 2001:db8:ff00::/56; do
  label=$extra
  [[ $extra == none ]] && label="127.0.0.1 (no ECS)"
  printf '%s\t%s\t%s\t%s\n' "$label" "$extra" "$(ask "$GEODNS_PORT" "$extra")" "$(ask "$GDNSD_PORT" "$extra")" >>"$ANSWERS"
done

echo
echo "www.cdn.test A per client network (geodns $("$GEODNS_BIN" --version 2>/dev/null | awk '{ print $2 }')," \
  "$(gdnsd -h 2>&1 | awk '/^gdnsd version/ { print "gdnsd " $3 }'), $(date -u +%Y-%m-%dT%H:%MZ))"
echo
python3 "$BENCH_DIR/report.py" compare "$BENCH_DIR/pops.csv" "$CLIENTS" "$ANSWERS"
