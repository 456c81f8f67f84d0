#!/usr/bin/env bash
# GeoDNS benchmark: quicdn geodns against gdnsd 3 (geoip plugin, city auto mode) on the same
# zone, the same 6 POPs and the same test MaxMind DB, both on 127.0.0.1 only.
#
#   bench/geodns/run.sh
#
# Env: DURATION (s per measured run, default 10), REPS (default 3), WARMUP (s, default 2),
#      CLIENTS_N / OUTSTANDING (dnsperf -c / -q, default 4 / 200), SERVER_CPU / CLIENT_CPU
#      (default 1 / 0), WORK (work dir, default a new temp dir), SKIP_BUILD=1,
#      GEODNS_BIN (default target/release/geodns).
#
# Scenarios: plain = www.cdn.test A/AAAA without EDNS plus static names (SOA, NS, TXT, MX, A,
# AAAA); ecs = www.cdn.test (3/4 A, 1/4 AAAA) with an ECS option for a random /24 or /56 of
# the client networks, sent through dnsperf -B. Each measured run: dnsperf for DURATION
# seconds; server CPU (utime+stime from /proc/PID/stat) over the run / queries completed.
# REPS repetitions interleaved (server order alternates), medians reported.
# Runtime with the defaults: about 2.5 minutes after the build.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10}
REPS=${REPS:-3}
WARMUP=${WARMUP:-2}
CLIENTS_N=${CLIENTS_N:-4}
OUTSTANDING=${OUTSTANDING:-200}

bench_init
ensure_tools
build_geodns
prepare
python3 "$BENCH_DIR/dnswire.py" plain "$WORK/plain.txt"
python3 "$BENCH_DIR/dnswire.py" ecs "$CLIENTS" "$WORK/ecs.bin" --count 20000 --seed 1
start_servers

# --- do both answer, and alike? ---------------------------------------------------------
log "checking answers with dig"
mismatch=0
while read -r name qtype; do
  a=$(dig @127.0.0.1 -p "$GEODNS_PORT" +time=2 +tries=1 +short "$name" "$qtype" | sort | tr '\n' ' ')
  b=$(dig @127.0.0.1 -p "$GDNSD_PORT" +time=2 +tries=1 +short "$name" "$qtype" | sort | tr '\n' ' ')
  [[ -n $a ]] || die "geodns gives no answer for $name $qtype"
  [[ -n $b ]] || die "gdnsd gives no answer for $name $qtype"
  if [[ $a != "$b" ]]; then
    log "answers differ for $name $qtype: geodns [$a] gdnsd [$b]"
    mismatch=$((mismatch + 1))
  fi
done <"$WORK/plain.txt"
for subnet in 10.1.0.0/24 10.6.0.0/24 2001:db8:4::/56; do
  a=$(dig @127.0.0.1 -p "$GEODNS_PORT" +time=2 +tries=1 +short +subnet="$subnet" www.cdn.test A)
  b=$(dig @127.0.0.1 -p "$GDNSD_PORT" +time=2 +tries=1 +short +subnet="$subnet" www.cdn.test A)
  log "www.cdn.test A, ECS $subnet: geodns $(pop_of "$a"), gdnsd $(pop_of "$b")"
done
log "plain query mix: $mismatch answer set(s) differ between the servers"
# The -B file: framing and ECS encoding as the servers see it.
python3 "$BENCH_DIR/dnswire.py" probe 127.0.0.1 "$GEODNS_PORT" "$WORK/ecs.bin" --count 200 >&2
python3 "$BENCH_DIR/dnswire.py" probe 127.0.0.1 "$GDNSD_PORT" "$WORK/ecs.bin" --count 200 >&2

# --- load ------------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # utime + stime of the whole process (all threads)
  awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

# dnsperf_run PORT SCENARIO SECONDS OUTFILE
dnsperf_run() {
  local port=$1 scenario=$2 secs=$3 out=$4 args=()
  case $scenario in
    plain) args=(-d "$WORK/plain.txt") ;;
    ecs) args=(-B -d "$WORK/ecs.bin") ;;
  esac
  taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" "${args[@]}" -l "$secs" \
    -c "$CLIENTS_N" -q "$OUTSTANDING" -T 1 -t 1 >"$out" 2>&1 &
  local pid=$!
  BG_PIDS+=("$pid")
  wait "$pid" || { cat "$out" >&2; die "dnsperf failed (port $port, $scenario)"; }
}

RESULTS=$WORK/results.tsv
printf 'rep\tserver\tscenario\tqps\tavg_latency_s\tcompleted\tlost\tcpu_s\n' >"$RESULTS"

# measure REP SERVER PID PORT SCENARIO
measure() {
  local rep=$1 server=$2 pid=$3 port=$4 scenario=$5 out t0 t1
  out=$WORK/dnsperf-$server-$scenario-$rep.txt
  t0=$(cpu_ticks "$pid")
  dnsperf_run "$port" "$scenario" "$DURATION" "$out"
  t1=$(cpu_ticks "$pid")
  kill -0 "$pid" 2>/dev/null || die "$server exited during the run; log: $WORK/$server.log"
  awk -v rep="$rep" -v server="$server" -v scenario="$scenario" \
    -v cpu="$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" 'BEGIN { print (b - a) / hz }')" '
    /Queries completed:/ { completed = $3 }
    /Queries lost:/ { lost = $3 }
    /Queries per second:/ { qps = $4 }
    /Average Latency \(s\):/ { lat = $4 }
    END { printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", rep, server, scenario, qps, lat, completed, lost, cpu }
  ' "$out" | tee -a "$RESULTS" >&2
}

log "warm-up: ${WARMUP}s per server and scenario"
for scenario in plain ecs; do
  dnsperf_run "$GEODNS_PORT" "$scenario" "$WARMUP" "$WORK/warmup-geodns-$scenario.txt"
  dnsperf_run "$GDNSD_PORT" "$scenario" "$WARMUP" "$WORK/warmup-gdnsd-$scenario.txt"
done

log "measuring: $REPS x (plain, ecs) x (geodns, gdnsd), ${DURATION}s each, dnsperf -c $CLIENTS_N -q $OUTSTANDING on CPU $CLIENT_CPU"
for rep in $(seq "$REPS"); do
  for scenario in plain ecs; do
    if ((rep % 2)); then order=(geodns gdnsd); else order=(gdnsd geodns); fi
    for server in "${order[@]}"; do
      if [[ $server == geodns ]]; then
        measure "$rep" geodns "$GEODNS_PID" "$GEODNS_PORT" "$scenario"
      else
        measure "$rep" gdnsd "$GDNSD_PID" "$GDNSD_PORT" "$scenario"
      fi
    done
  done
done

peak_rss() { awk '/^VmHWM:/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$1/status"; }
echo
echo "geodns $("$GEODNS_BIN" --version 2>/dev/null | awk '{ print $2 }') vs $(gdnsd -h 2>&1 | awk '/^gdnsd version/ { print "gdnsd " $3 }'), $(dnsperf -h 2>&1 | awk '/^Version/ { print "dnsperf " $2 }');" \
  "$(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "server on CPU $SERVER_CPU, dnsperf on CPU $CLIENT_CPU (-c $CLIENTS_N -q $OUTSTANDING -T 1);" \
  "medians of $REPS interleaved ${DURATION}s runs"
echo
python3 "$BENCH_DIR/report.py" bench "$RESULTS"
echo
echo "peak RSS: geodns $(peak_rss "$GEODNS_PID"), gdnsd $(peak_rss "$GDNSD_PID")"
