#!/usr/bin/env bash
# Seek workload benchmark: how fast the edge answers mid-file seeks in a ~100 MB MP4, cold and
# warm, and how many bytes it pulls from the origin for the bytes clients read, per slice size.
#
#   ./bench/seek.sh [VIDEO.mp4]
#
# Everything runs on 127.0.0.1: nginx (bench/nginx-origin.conf) as the origin on :18080, the
# release edge on :18081 (http), :18443 (https) and :18090 (admin), and for the "wan" origin a
# small shaping proxy on :18082 in front of nginx; all started and stopped here by PID.
# Environment:
#   SLICE_SIZES   slice sizes to compare (default "512KiB 1MiB 2MiB 4MiB")
#   READ_AHEAD    cache.slice_read_ahead for the edge (default 0); rows show "+raN"
#   ORIGINS       "loopback" (nginx directly) and/or "wan" (through the shaper); default both
#   WAN_RTT_MS    round-trip time the shaper adds (default 20)
#   WAN_MBIT      origin bandwidth per connection through the shaper (default 100)
#   SEEKS         seek points per curl phase (default 8)
#   FF_SEEKS      ffmpeg -ss seeks per run (default 4)
#   VIDEO         the video (also the first argument); default: generated once into
#                 target/bench/seek-100MB.mp4 (60 s, 720p25 H.264 13 Mbit/s + AAC, faststart)
# Needs: cargo, curl, ffmpeg/ffprobe, nginx (installed with apt-get when missing and root).
# Runtime: about 1.5 minutes on 2 cores with the defaults, plus the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SLICE_SIZES=${SLICE_SIZES:-"512KiB 1MiB 2MiB 4MiB"}
READ_AHEAD=${READ_AHEAD:-0}
ORIGINS=${ORIGINS:-"loopback wan"}
WAN_RTT_MS=${WAN_RTT_MS:-20}
WAN_MBIT=${WAN_MBIT:-100}
SEEKS=${SEEKS:-8}
FF_SEEKS=${FF_SEEKS:-4}
VIDEO=${1:-${VIDEO:-}}

ORIGIN_ADDR=127.0.0.1:18080
SHAPER_ADDR=127.0.0.1:18082
EDGE_HTTP=127.0.0.1:18081
EDGE_HTTPS=127.0.0.1:18443
EDGE_ADMIN=127.0.0.1:18090
READ=2097152 # bytes a client reads after each seek (2 MiB)

say() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# --- prerequisites -------------------------------------------------------------------------
need_pkgs=()
command -v curl >/dev/null || need_pkgs+=(curl)
command -v python3 >/dev/null || need_pkgs+=(python3)
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || need_pkgs+=(ffmpeg)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_pkgs+=(nginx-light)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    say "installing ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
  else
    die "missing packages: ${need_pkgs[*]} (sudo apt-get install ${need_pkgs[*]})"
  fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

for addr in "$ORIGIN_ADDR" "$SHAPER_ADDR" "$EDGE_HTTP" "$EDGE_HTTPS" "$EDGE_ADMIN"; do
  if curl -s -o /dev/null --max-time 1 "http://$addr/"; then
    die "something already listens on $addr; stop it first"
  fi
done

say "building the edge (release)"
cargo build --release -p edge --quiet
EDGE_BIN=$ROOT/target/release/edge

if [ -z "$VIDEO" ]; then
  VIDEO=$ROOT/target/bench/seek-100MB.mp4
  if [ ! -s "$VIDEO" ]; then
    say "generating $VIDEO (about 10 s)"
    mkdir -p "$(dirname "$VIDEO")"
    ffmpeg -nostdin -v error -y \
      -f lavfi -i testsrc2=size=1280x720:rate=25 \
      -f lavfi -i sine=frequency=440:sample_rate=48000 -t 60 \
      -c:v libx264 -preset ultrafast -b:v 13M -maxrate 13M -bufsize 26M -g 50 \
      -pix_fmt yuv420p -c:a aac -movflags +faststart "$VIDEO.tmp.mp4"
    mv "$VIDEO.tmp.mp4" "$VIDEO"
  fi
fi
[ -s "$VIDEO" ] || die "no video at $VIDEO"
VIDEO=$(realpath "$VIDEO")
SIZE=$(stat -c %s "$VIDEO")
DURATION=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$VIDEO")

# --- processes -----------------------------------------------------------------------------
TMP=$(mktemp -d /tmp/quicdn-seek-bench.XXXXXX)
NGINX_PID=
EDGE_PID=
SHAPER_PID=
cleanup() {
  if [ -n "$EDGE_PID" ]; then kill -TERM "$EDGE_PID" 2>/dev/null || true; fi
  if [ -n "$SHAPER_PID" ]; then kill -TERM "$SHAPER_PID" 2>/dev/null || true; fi
  if [ -n "$NGINX_PID" ]; then kill -QUIT "$NGINX_PID" 2>/dev/null || true; fi
  for pid in $EDGE_PID $SHAPER_PID $NGINX_PID; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$TMP/nginx/www" "$TMP/nginx/logs" "$TMP/nginx/tmp"
ln -s "$VIDEO" "$TMP/nginx/www/v.mp4"
NGINX_LOG=$TMP/nginx/logs/access.log
"$NGINX" -p "$TMP/nginx/" -e "$TMP/nginx/logs/error.log" -c "$ROOT/bench/nginx-origin.conf" &
NGINX_PID=$!

wait_http() { # URL: up to 10 s
  for _ in $(seq 100); do
    curl -s -o /dev/null --max-time 1 -r 0-0 "$1" && return 0
    sleep 0.1
  done
  return 1
}
wait_http "http://$ORIGIN_ADDR/v.mp4" || die "nginx did not start: $(cat "$TMP/nginx/logs/error.log")"
[ "$(curl -s -o /dev/null -w '%{http_code}' -r 0-0 "http://$ORIGIN_ADDR/v.mp4")" = 206 ] \
  || die "the origin does not answer ranges"

# A TCP proxy that makes nginx look far away: every chunk is delivered RTT/2 after it
# arrived, in order, and each direction is paced to the bandwidth (per connection). Bounded
# queues keep backpressure end to end, so nginx's byte counts stay what the edge received.
cat >"$TMP/shaper.py" <<'PY'
import asyncio, sys, time

listen_port, up_host, up_port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
delay, rate = float(sys.argv[4]), float(sys.argv[5])  # seconds one way, bytes/s


async def pipe(reader, writer):
    queue = asyncio.Queue(maxsize=16)

    async def pump():
        while True:
            data = await reader.read(65536)
            await queue.put((time.monotonic(), data))
            if not data:
                return

    task = asyncio.ensure_future(pump())
    free_at = 0.0
    try:
        while True:
            arrived, data = await queue.get()
            if not data:
                break
            due = max(arrived + delay, free_at)
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            writer.write(data)
            await writer.drain()
            free_at = max(due, time.monotonic()) + len(data) / rate
    finally:
        task.cancel()
        writer.close()


async def handle(client_reader, client_writer):
    try:
        up_reader, up_writer = await asyncio.open_connection(up_host, up_port)
    except OSError:
        client_writer.close()
        return
    both = [asyncio.ensure_future(pipe(client_reader, up_writer)),
            asyncio.ensure_future(pipe(up_reader, client_writer))]
    await asyncio.wait(both, return_when=asyncio.FIRST_EXCEPTION)
    for t in both:
        t.cancel()
    await asyncio.gather(*both, return_exceptions=True)


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()

asyncio.run(main())
PY

start_edge() { # SLICE ORIGIN_URL: a fresh edge with an empty cache
  local slice=$1 origin=$2
  stop_edge
  rm -rf "$TMP/cache"
  cat >"$TMP/edge.toml" <<EOF
name = "bench-edge"

[listen]
http = "$EDGE_HTTP"
https = "$EDGE_HTTPS"
admin = "$EDGE_ADMIN"

[quic]
enabled = false

[cache]
dir = "$TMP/cache"
slice_size = "$slice"
slice_read_ahead = $READ_AHEAD

[log]
access_log = false

[[site]]
hosts = ["*"]
origin = "$origin"
EOF
  "$EDGE_BIN" -c "$TMP/edge.toml" 2>>"$TMP/edge.log" &
  EDGE_PID=$!
  wait_http "http://$EDGE_ADMIN/health" || die "the edge did not start: $(tail -5 "$TMP/edge.log")"
}

stop_edge() {
  if [ -n "$EDGE_PID" ]; then
    kill -TERM "$EDGE_PID" 2>/dev/null || true
    wait "$EDGE_PID" 2>/dev/null || true
    EDGE_PID=
  fi
}

metric() { # NAME: a sample from the edge's /metrics
  curl -s "http://$EDGE_ADMIN/metrics" | awk -v m="$1" '$1 == m { v = $2 } END { print v + 0 }'
}

origin_bytes() { # body bytes nginx has sent so far (logged when each response ends)
  awk '{ s += $4 } END { printf "%d\n", s }' "$NGINX_LOG"
}

settle() { # waits until the edge has stopped fetching (a slice under way is always completed)
  local last now
  last=$(metric quicdn_origin_fetched_bytes_total)
  for _ in $(seq 50); do
    sleep 0.3
    now=$(metric quicdn_origin_fetched_bytes_total)
    [ "$now" = "$last" ] && break
    last=$now
  done
  sleep 0.1 # nginx writes its log line as the response ends
}

ms_stats() { # seconds on stdin -> "p50/max" in ms
  sort -g | awk '{ v[NR] = $1 * 1000 } END { printf "%.0f/%.0f", v[int((NR + 1) / 2)], v[NR] }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

seek_points() { # SEEKS offsets spread over the file, not slice-aligned
  awk -v n="$SEEKS" -v size="$SIZE" -v r="$READ" \
    'BEGIN { for (i = 0; i < n; i++) { p = int((size - r) * (i + 0.5) / n) + 12345; print p } }'
}

# curl_ranges URL KIND: one request per seek point; prints "ttfb_seconds client_bytes" lines.
# KIND=closed: Range N-(N+2MiB-1), read to the end. KIND=open: Range N-, drop the connection
# after 2 MiB (what players do).
curl_ranges() {
  local url=$1 kind=$2 n code out
  for n in $(seek_points); do
    if [ "$kind" = closed ]; then
      out=$(curl -s -o /dev/null -r "$n-$((n + READ - 1))" \
        -w '%{http_code} %{time_starttransfer} %{size_download} %{time_total}' "$url")
      code=${out%% *}
      [ "$code" = 206 ] || die "range $n-: status $code"
      echo "${out#* }"
    else
      # curl stops with "write error" once head has its 2 MiB; -w goes to stderr meanwhile.
      { curl -s -N -r "$n-" -w '%{stderr}%{time_starttransfer} %{size_download}\n' "$url" \
        | head -c "$READ" >/dev/null; } 2>&1 || true
    fi
  done
}

# ff_seeks URL: FF_SEEKS `ffmpeg -ss T -i URL -t 1 -f null -`; prints "seconds bytes_read".
ff_seeks() {
  local url=$1 t start end read_bytes log=$TMP/ffmpeg.log
  for t in $(awk -v n="$FF_SEEKS" -v d="$DURATION" \
    'BEGIN { for (i = 0; i < n; i++) printf "%.1f\n", d * (i + 0.5) / n }'); do
    start=$(date +%s%N)
    ffmpeg -nostdin -v verbose -ss "$t" -i "$url" -t 1 -f null - >/dev/null 2>"$log" \
      || die "ffmpeg -ss $t failed: $(grep -i error "$log" | tail -3)"
    end=$(date +%s%N)
    read_bytes=$(sed -n 's/.*Statistics: \([0-9]*\) bytes read.*/\1/p' "$log" | awk '{ s += $1 } END { print s + 0 }')
    echo "$(((end - start) / 1000000)) $read_bytes"
  done
}

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

say "video: $VIDEO ($SIZE bytes, ${DURATION}s); seeks: $SEEKS curl points, $FF_SEEKS ffmpeg"
ROWS=()
FMT='%-10s %-11s %11s %11s %10s %5s %8s %11s %5s %8s %6s %7s %12s %7s'
url="http://$EDGE_HTTP/v.mp4"
ra_label=""
[ "$READ_AHEAD" -gt 0 ] && ra_label="+ra$READ_AHEAD"
for profile in $ORIGINS; do
  case $profile in
    loopback)
      origin="http://$ORIGIN_ADDR"
      label=loopback
      ;;
    wan)
      if [ -z "$SHAPER_PID" ]; then
        python3 "$TMP/shaper.py" "${SHAPER_ADDR##*:}" "${ORIGIN_ADDR%%:*}" "${ORIGIN_ADDR##*:}" \
          "$(awk -v r="$WAN_RTT_MS" 'BEGIN { print r / 2000 }')" \
          "$(awk -v m="$WAN_MBIT" 'BEGIN { print m * 125000 }')" 2>>"$TMP/shaper.log" &
        SHAPER_PID=$!
        wait_http "http://$SHAPER_ADDR/v.mp4" || die "the shaper did not start: $(cat "$TMP/shaper.log")"
      fi
      origin="http://$SHAPER_ADDR"
      label="${WAN_RTT_MS}ms/${WAN_MBIT}M"
      ;;
    *) die "unknown origin profile $profile (loopback or wan)" ;;
  esac
  for slice in $SLICE_SIZES; do
    say "origin $label, slice $slice"

    # 1. Cold, then warm: 2 MiB ranges at each seek point.
    start_edge "$slice" "$origin"
    o0=$(origin_bytes)
    curl_ranges "$url" closed >"$TMP/cold"
    settle
    o1=$(origin_bytes)
    curl_ranges "$url" closed >"$TMP/warm"
    settle
    o2=$(origin_bytes)
    cold_client=$(awk '{ s += $2 } END { print s }' "$TMP/cold")
    cold_ttfb=$(awk '{ print $1 }' "$TMP/cold" | ms_stats)
    cold_total=$(awk '{ print $3 }' "$TMP/cold" | ms_stats)
    warm_ttfb=$(awk '{ print $1 }' "$TMP/warm" | ms_stats)
    closed_ratio=$(ratio $((o1 - o0)) "$cold_client")
    warm_origin=$((o2 - o1))

    # 2. Open-ended ranges dropped after 2 MiB, on a cold cache.
    start_edge "$slice" "$origin"
    o0=$(origin_bytes)
    curl_ranges "$url" open >"$TMP/open"
    settle
    o1=$(origin_bytes)
    open_client=$(awk '{ s += $2 } END { print s }' "$TMP/open")
    open_ttfb=$(awk '{ print $1 }' "$TMP/open" | ms_stats)
    open_ratio=$(ratio $((o1 - o0)) "$open_client")

    # 3. ffmpeg -ss seeks, on a cold cache.
    start_edge "$slice" "$origin"
    o0=$(origin_bytes)
    ff_seeks "$url" >"$TMP/ff"
    settle
    o1=$(origin_bytes)
    ff_read=$(awk '{ s += $2 } END { print s }' "$TMP/ff")
    ff_ms=$(awk '{ s += $1 } END { printf "%.0f", s / NR }' "$TMP/ff")
    ff_origin=$(mib $(((o1 - o0) / FF_SEEKS)))
    ff_ratio=$(ratio $((o1 - o0)) "$ff_read")
    # The same seeks again: what the cache does not have yet.
    ff_seeks "$url" >"$TMP/ff-warm"
    settle
    o2=$(origin_bytes)
    ff_warm_ms=$(awk '{ s += $1 } END { printf "%.0f", s / NR }' "$TMP/ff-warm")
    ff_warm_origin=$(mib $((o2 - o1)))
    stop_edge

    ROWS+=("$(printf "$FMT" \
      "$label" "$slice$ra_label" "$cold_ttfb" "$cold_total" "$warm_ttfb" "$closed_ratio" "$warm_origin" \
      "$open_ttfb" "$open_ratio" "$ff_origin" "$ff_ratio" "$ff_ms" "$ff_warm_origin" "$ff_warm_ms")")
  done
done

echo
echo "Seek workload: $(basename "$VIDEO"), $SIZE bytes, ${DURATION}s; $(nproc) CPUs;" \
  "$SEEKS seek points; each client reads $((READ / 1048576)) MiB per seek"
printf "$FMT\n" "origin" "slice" "cold TTFB" "cold 2MiB" "warm TTFB" "2MiB" "warm" \
  "open TTFB" "open" "ffmpeg" "ffmpeg" "ffmpeg" "ffmpeg again" "again"
printf "$FMT\n" "" "" "p50/max ms" "p50/max ms" "p50/max ms" "o/c" "origin B" \
  "p50/max ms" "o/c" "MiB/seek" "o/read" "ms/seek" "origin MiB" "ms/seek"
for row in "${ROWS[@]}"; do echo "$row"; done
cat <<'EOF'

cold/warm TTFB: curl time_starttransfer for Range N-(N+2MiB-1) on an empty cache, then again;
  cold 2MiB: time to the last byte of those cold ranges (what read-ahead can shorten).
2MiB o/c: origin body bytes / client bytes for those cold ranges. warm origin: origin bytes
  for the warm pass (0 = all from cache).
open: Range N- dropped after 2 MiB (as players do), cold cache; o/c = origin / client bytes.
ffmpeg: ffmpeg -ss T -i URL -t 1 -f null - at FF_SEEKS points, cold cache: origin MiB per
  seek, origin bytes / bytes ffmpeg read, wall time per seek. ffmpeg again: the same seeks
  once more: origin MiB fetched in all (0 = all from cache), wall time per seek.
EOF
