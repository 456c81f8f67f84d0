#!/usr/bin/env bash
# HTTP side-by-side benchmark: the quicdn edge against nginx proxy_cache, Varnish (+ hitch for
# TLS) and Caddy, with nginx serving the files directly as the ceiling, on cache hits over
# HTTP/1.1, HTTP/2 over TLS and HTTP/3, and on the miss path. Everything on 127.0.0.1.
#
#   bench/http/run.sh
#
# Servers (all started here, pinned to SERVER_CPU, stopped by PID on exit):
#   origin   nginx file server (nginx-origin.conf): h1 plain and h2 over TLS; upstream of all
#   edge     target/release/edge (edge.toml): h1 plain, h2 over TLS, h3 on UDP
#   nginx    nginx proxy_cache (nginx-cache.conf): h1 plain, h2 over TLS; the h1/h2 anchor
#   varnish  varnishd -s malloc (varnish.vcl): h1 plain; h2 over TLS through hitch (hitch.conf)
#   caddy    Caddy 2.6 file_server (Caddyfile; no cache module): h2 over TLS, h3; the h3 anchor
# Scenarios (load generator pinned to CLIENT_CPU): h1-1k h1-1m (wrk), h2-1k h2-1m (h2load),
# h3-1k h3-1m (h3load), miss (wrk, a new URL on every request, low concurrency).
# Each measured run: the load generator for DURATION s; server CPU = utime+stime over the
# server's process tree (plus hitch for Varnish over TLS) before/after, divided by requests.
# REPS repetitions, interleaved (server order rotated per repetition); medians reported.
#
# Env: DURATION (10), REPS (3), WARMUP (s of unmeasured load per row first, 2),
#      SERVER_CPU / CLIENT_CPU (1 / 0), SERVERS ("origin edge nginx varnish caddy"),
#      SCENARIOS ("h1-1k h1-1m h2-1k h2-1m h3-1k h3-1m miss"),
#      H1_CONNS (64), H1_CONNS_BIG (16), H2_CONNS (64), H2_STREAMS (10), H2_CONNS_BIG (16),
#      H3_CONNS (64), H3_STREAMS (10), H3_CONNS_BIG (16), MISS_CONNS (1),
#      WORK (work dir, default a new /tmp/quicdn-http-bench.*; kept), SKIP_BUILD=1,
#      EDGE_BIN, H3LOAD_BIN, CERTS_BIN (default target/release/*),
#      EDGE_TEMPLATE (the edge's config template, default edge.toml; edge-rules.toml adds
#      site rules to measure what the filter chain costs on the hit path).
# Output: one Markdown table on stdout; WORK/table.md, WORK/results.jsonl (one JSON line per
# measured run), raw tool outputs and server logs in WORK.
# Runtime with the defaults: about 15 minutes after the build (26 rows x 3 x 10 s + warm-up).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

DURATION=${DURATION:-10}
REPS=${REPS:-3}
WARMUP=${WARMUP:-2}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
SERVERS=${SERVERS:-"origin edge nginx varnish caddy"}
SCENARIOS=${SCENARIOS:-"h1-1k h1-1m h2-1k h2-1m h3-1k h3-1m miss"}
H1_CONNS=${H1_CONNS:-64}
H1_CONNS_BIG=${H1_CONNS_BIG:-16}
H2_CONNS=${H2_CONNS:-64}
H2_STREAMS=${H2_STREAMS:-10}
H2_CONNS_BIG=${H2_CONNS_BIG:-16}
H3_CONNS=${H3_CONNS:-64}
H3_STREAMS=${H3_STREAMS:-10}
H3_CONNS_BIG=${H3_CONNS_BIG:-16}
MISS_CONNS=${MISS_CONNS:-1}
EDGE_BIN=${EDGE_BIN:-$REPO/target/release/edge}
EDGE_TEMPLATE=${EDGE_TEMPLATE:-$HERE/edge.toml}
H3LOAD_BIN=${H3LOAD_BIN:-$REPO/target/release/h3load}
CERTS_BIN=${CERTS_BIN:-$REPO/target/release/certs}

BG_PIDS=()
WARNINGS=()
declare -A UP=() # server (and hitch) -> 1 when running
declare -A PID=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() {
  log "WARNING: $*"
  WARNINGS+=("$*")
}
die() {
  log "ERROR: $*"
  exit 1
}

stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "PID $pid did not stop on SIGTERM: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? i
  # Newest first: hitch before Varnish, the caches before their origin.
  for ((i = ${#BG_PIDS[@]} - 1; i >= 0; i--)); do
    stop_pid "${BG_PIDS[i]}"
  done
  BG_PIDS=()
  if [[ -n ${WORK:-} ]]; then
    log "work dir (configs, logs, raw results): $WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

forget_pid() { # removes a PID from BG_PIDS once it has been waited for
  local keep=() p
  for p in "${BG_PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  BG_PIDS=("${keep[@]}")
}

# --- tools ---------------------------------------------------------------------------------
[[ $(nproc) -ge 2 ]] || die "needs at least 2 CPUs for the server/load-generator pinning (have $(nproc))"
wanted=() # command:package
for s in $SERVERS; do
  case $s in
    origin | nginx) wanted+=(nginx:nginx-light) ;;
    varnish) wanted+=(varnishd:varnish hitch:hitch) ;;
    caddy) wanted+=(caddy:caddy) ;;
  esac
done
wanted+=(wrk:wrk h2load:nghttp2-client curl:curl taskset:util-linux python3:python3)
missing=()
for w in "${wanted[@]}"; do
  cmd=${w%%:*} pkg=${w#*:}
  command -v "$cmd" >/dev/null || [[ -x /usr/sbin/$cmd ]] || [[ " ${missing[*]} " == *" $pkg "* ]] \
    || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    log "installing ${missing[*]}"
    # Debian's varnish/caddy/nginx packages may start their own services (where systemd or
    # init scripts run); ours use their own configs and ports and leave those alone.
    apt-get update -qq >&2 || true
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >&2; then
      for pkg in "${missing[@]}"; do # one at a time: what installs is used
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >&2 \
          || warn "could not install $pkg"
      done
    fi
  else
    warn "missing packages: ${missing[*]} (as root: apt-get install ${missing[*]})"
  fi
fi
have() { command -v "$1" >/dev/null || [[ -x /usr/sbin/$1 ]]; }
have python3 || die "python3 is needed"
have curl || die "curl is needed"
have taskset || die "taskset (util-linux) is needed"
PATH=$PATH:/usr/sbin
REPORT=(python3 "$HERE/report.py")

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  log "cargo build --release -p edge -p certs"
  (cd "$REPO" && cargo build --release -p edge -p certs >&2)
  log "cargo build --release -p h3load"
  (cd "$REPO" && cargo build --release -p h3load >&2) || warn "h3load did not build: no h3 rows"
fi
[[ -x $EDGE_BIN ]] || die "no edge binary at $EDGE_BIN"
[[ -x $CERTS_BIN ]] || die "no certs binary at $CERTS_BIN"
H3LOAD_OK=0
if [[ -x $H3LOAD_BIN ]] && "$H3LOAD_BIN" --help 2>&1 | grep -q -- '--threads'; then
  H3LOAD_OK=1
fi

# --- work dir, objects, certificates, ports, configs ----------------------------------------
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/quicdn-http-bench.XXXXXX")}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
chmod 755 "$WORK" # Varnish's child runs as an unprivileged user inside WORK/varnish
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
mkdir -p "$WORK/www" "$WORK/out" "$WORK/caddy/data" "$WORK/caddy/config"
for d in origin nginx; do mkdir -p "$WORK/$d/tmp"; done
# Random bytes (nothing compresses them); the miss path asks for 1k.bin?miss=UNIQUE.
head -c 1024 /dev/urandom >"$WORK/www/1k.bin"
head -c 1048576 /dev/urandom >"$WORK/www/1m.bin"
chmod 644 "$WORK/www/"*
"$CERTS_BIN" --dir "$WORK/certs" --leaf 'bench=localhost,127.0.0.1' >"$WORK/certs.log"
CERT=$WORK/certs/bench.pem
KEY=$WORK/certs/bench-key.pem
CA=$WORK/certs/ca.pem
cat "$KEY" "$CERT" >"$WORK/certs/hitch.pem"
chmod 600 "$WORK/certs/hitch.pem"

mapfile -t ports < <("${REPORT[@]}" ports 11)
ORIGIN_HTTP_PORT=${ports[0]} ORIGIN_TLS_PORT=${ports[1]}
EDGE_HTTP_PORT=${ports[2]} EDGE_TLS_PORT=${ports[3]} EDGE_ADMIN_PORT=${ports[4]}
NGINX_HTTP_PORT=${ports[5]} NGINX_TLS_PORT=${ports[6]}
VARNISH_HTTP_PORT=${ports[7]} VARNISH_PROXY_PORT=${ports[8]} HITCH_PORT=${ports[9]}
CADDY_PORT=${ports[10]}

render() { # TEMPLATE OUT: each @VAR@ becomes $VAR
  local text var
  text=$(<"$1")
  for var in WORK CERT KEY ORIGIN_HTTP_PORT ORIGIN_TLS_PORT EDGE_HTTP_PORT EDGE_TLS_PORT \
    EDGE_ADMIN_PORT NGINX_HTTP_PORT NGINX_TLS_PORT VARNISH_HTTP_PORT VARNISH_PROXY_PORT \
    HITCH_PORT CADDY_PORT; do
    text=${text//@$var@/${!var}}
  done
  [[ ! $text =~ @[A-Z][A-Z_]+@ ]] || die "unrendered placeholder ${BASH_REMATCH[0]} in $1"
  printf '%s\n' "$text" >"$2"
}
render "$HERE/nginx-origin.conf" "$WORK/origin/nginx.conf"
render "$HERE/nginx-cache.conf" "$WORK/nginx/nginx.conf"
render "$EDGE_TEMPLATE" "$WORK/edge.toml"
render "$HERE/varnish.vcl" "$WORK/varnish.vcl"
render "$HERE/hitch.conf" "$WORK/hitch.conf"
render "$HERE/Caddyfile" "$WORK/caddy/Caddyfile"
if [[ $(id -u) -eq 0 ]] && getent passwd _hitch >/dev/null; then
  echo 'user = "_hitch"' >>"$WORK/hitch.conf" # hitch started as root insists on a user
fi

# --- servers -------------------------------------------------------------------------------
# wait_up NAME URL [curl args]: until URL answers 200 (15 s at most); 1 if it never does.
wait_up() {
  local name=$1 url=$2 i
  shift 2
  for i in $(seq 150); do
    kill -0 "${PID[$name]}" 2>/dev/null || return 1
    if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" 2>/dev/null) == 200 ]]; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

tls_args() { # PORT: curl options for https://localhost:PORT over 127.0.0.1, verified
  printf '%s\n' --cacert "$CA" --resolve "localhost:$1:127.0.0.1"
}

# start NAME LOG CMD...: runs CMD pinned, in the background, recorded for the EXIT trap.
start() {
  local name=$1 logf=$2
  shift 2
  taskset -c "$SERVER_CPU" "$@" >"$logf" 2>&1 &
  PID[$name]=$!
  BG_PIDS+=("$!")
}

server_failed() { # NAME LOG
  warn "$1 did not start (log: $2); its rows are skipped"
  tail -5 "$2" >&2 || true
  stop_pid "${PID[$1]}"
  forget_pid "${PID[$1]}"
  UP[$1]=0
}

want_server() { [[ " $SERVERS " == *" $1 "* ]]; }

log "starting servers on 127.0.0.1, pinned to CPU $SERVER_CPU"
have nginx || die "nginx is needed (the origin)"
start origin "$WORK/origin/stderr.log" nginx -p "$WORK/origin/" -e "$WORK/origin/error.log" \
  -c "$WORK/origin/nginx.conf"
wait_up origin "http://127.0.0.1:$ORIGIN_HTTP_PORT/1k.bin" \
  || die "the origin did not start: $(cat "$WORK/origin/error.log" "$WORK/origin/stderr.log" 2>/dev/null)"
UP[origin]=1

"$EDGE_BIN" --check-config -c "$WORK/edge.toml" >/dev/null || die "the edge rejects $WORK/edge.toml"
start edge "$WORK/edge.log" "$EDGE_BIN" -c "$WORK/edge.toml"
wait_up edge "http://127.0.0.1:$EDGE_ADMIN_PORT/health" \
  || die "the edge did not start: $(tail -5 "$WORK/edge.log")"
UP[edge]=1

if want_server nginx && have nginx; then
  start nginx "$WORK/nginx/stderr.log" nginx -p "$WORK/nginx/" -e "$WORK/nginx/error.log" \
    -c "$WORK/nginx/nginx.conf"
  if wait_up nginx "http://127.0.0.1:$NGINX_HTTP_PORT/1k.bin"; then UP[nginx]=1; else
    server_failed nginx "$WORK/nginx/error.log"
  fi
elif want_server nginx; then
  warn "nginx is not installed: no nginx proxy_cache rows"
fi

if want_server varnish && have varnishd; then
  start varnish "$WORK/varnish.log" varnishd -F -n "$WORK/varnish" \
    -a "127.0.0.1:$VARNISH_HTTP_PORT" -a "127.0.0.1:$VARNISH_PROXY_PORT,PROXY" \
    -f "$WORK/varnish.vcl" -s malloc,256m -p feature=+http2 -T none
  if wait_up varnish "http://127.0.0.1:$VARNISH_HTTP_PORT/1k.bin"; then UP[varnish]=1; else
    server_failed varnish "$WORK/varnish.log"
  fi
  if [[ ${UP[varnish]:-0} == 1 ]] && have hitch; then
    start hitch "$WORK/hitch.log" hitch --config="$WORK/hitch.conf"
    mapfile -t targs < <(tls_args "$HITCH_PORT")
    if wait_up hitch "https://localhost:$HITCH_PORT/1k.bin" "${targs[@]}"; then UP[hitch]=1; else
      server_failed hitch "$WORK/hitch.log"
    fi
  elif [[ ${UP[varnish]:-0} == 1 ]]; then
    warn "hitch is not installed: no Varnish h2 rows"
  fi
elif want_server varnish; then
  warn "varnishd is not installed: no Varnish rows"
fi

if want_server caddy && have caddy; then
  # XDG dirs: Caddy keeps nothing outside WORK. GOMAXPROCS follows the affinity mask (1).
  start caddy "$WORK/caddy/caddy.log" env XDG_DATA_HOME="$WORK/caddy/data" \
    XDG_CONFIG_HOME="$WORK/caddy/config" HOME="$WORK/caddy" \
    caddy run --config "$WORK/caddy/Caddyfile" --adapter caddyfile
  mapfile -t targs < <(tls_args "$CADDY_PORT")
  if wait_up caddy "https://localhost:$CADDY_PORT/1k.bin" "${targs[@]}"; then UP[caddy]=1; else
    server_failed caddy "$WORK/caddy/caddy.log"
  fi
elif want_server caddy; then
  warn "caddy is not installed: no Caddy rows"
fi

running=()
for s in origin edge nginx varnish hitch caddy; do
  [[ ${UP[$s]:-0} == 1 ]] && running+=("$s=${PID[$s]}")
done
log "running: ${running[*]}"
# Everything inherits the affinity set by taskset at exec, but hitch pins its worker to
# CPU (worker index mod cores), i.e. 0, itself: such tasks are moved back to SERVER_CPU.
check_pinning() { # [--fix]
  local s out
  for s in origin edge nginx varnish hitch caddy; do
    [[ ${UP[$s]:-0} == 1 ]] || continue
    out=$("${REPORT[@]}" pinned "$@" "$SERVER_CPU" "${PID[$s]}")
    [[ -z $out ]] || warn "$s set its own CPU affinity: $(echo "$out" | tr '\n' ';')"
  done
}
check_pinning --fix

# --- scenarios -----------------------------------------------------------------------------
# scenario SCENARIO: sets PROTO, OBJ, SIZE, CONNS, STREAMS
scenario() {
  STREAMS=1
  case $1 in
    h1-1k) PROTO=h1 OBJ=1k.bin CONNS=$H1_CONNS ;;
    h1-1m) PROTO=h1 OBJ=1m.bin CONNS=$H1_CONNS_BIG ;;
    h2-1k) PROTO=h2 OBJ=1k.bin CONNS=$H2_CONNS STREAMS=$H2_STREAMS ;;
    h2-1m) PROTO=h2 OBJ=1m.bin CONNS=$H2_CONNS_BIG ;;
    h3-1k) PROTO=h3 OBJ=1k.bin CONNS=$H3_CONNS STREAMS=$H3_STREAMS ;;
    h3-1m) PROTO=h3 OBJ=1m.bin CONNS=$H3_CONNS_BIG ;;
    miss) PROTO=miss OBJ=1k.bin CONNS=$MISS_CONNS ;;
    *) die "unknown scenario $1" ;;
  esac
  SIZE=$(stat -c %s "$WORK/www/$OBJ")
}

# port SERVER PROTO: the port a server answers PROTO on (empty: it does not)
port() {
  case $1:$2 in
    origin:h1 | origin:miss) echo "$ORIGIN_HTTP_PORT" ;;
    origin:h2) echo "$ORIGIN_TLS_PORT" ;;
    edge:h1 | edge:miss) echo "$EDGE_HTTP_PORT" ;;
    edge:h2 | edge:h3) echo "$EDGE_TLS_PORT" ;;
    nginx:h1 | nginx:miss) echo "$NGINX_HTTP_PORT" ;;
    nginx:h2) echo "$NGINX_TLS_PORT" ;;
    varnish:h1 | varnish:miss) echo "$VARNISH_HTTP_PORT" ;;
    varnish:h2) [[ ${UP[hitch]:-0} == 1 ]] && echo "$HITCH_PORT" ;;
    caddy:h2 | caddy:h3) echo "$CADDY_PORT" ;;
  esac
  return 0
}

# server_pids SERVER PROTO: the process trees whose CPU counts for this row
server_pids() {
  local pids=("${PID[$1]}")
  [[ $1:$2 == varnish:h2 ]] && pids+=("${PID[hitch]}")
  echo "${pids[@]}"
}

# servers_for SCENARIO: the running servers that take part, in table order
servers_for() {
  local s p out=()
  scenario "$1"
  for s in origin edge nginx varnish caddy; do
    want_server "$s" || [[ $s == origin || $s == edge ]] || continue
    [[ ${UP[$s]:-0} == 1 ]] || continue
    p=$(port "$s" "$PROTO")
    [[ -n $p ]] && out+=("$s")
  done
  echo "${out[@]}"
}

tool_ok() { # PROTO: is its load generator there?
  case $1 in
    h1 | miss) have wrk ;;
    h2) have h2load ;;
    h3) [[ $H3LOAD_OK == 1 ]] ;;
  esac
}

active=()
for sc in $SCENARIOS; do
  scenario "$sc"
  if ! tool_ok "$PROTO"; then
    case $PROTO in
      h3) warn "h3load ($H3LOAD_BIN) is missing or not usable yet: no $sc rows" ;;
      *) warn "no load generator for $sc: its rows are skipped" ;;
    esac
    continue
  fi
  active+=("$sc")
done
((${#active[@]})) || die "no scenario can run"

# --- warm the caches and check that they hit ----------------------------------------------
# hit_kind SERVER HEADERS_FILE: "hit", "miss", or "-" for servers that are not caches
hit_kind() {
  case $1 in
    edge) grep -qiE '^cache-status:.*; *hit' "$2" && echo hit || echo miss ;;
    nginx) grep -qiE '^x-cache-status: *hit' "$2" && echo hit || echo miss ;;
    varnish) grep -qiE '^x-varnish: *[0-9]+ +[0-9]+' "$2" && echo hit || echo miss ;;
    *) echo - ;;
  esac
}

warm_check() { # SERVER PROTO
  local server=$1 proto=$2 p url obj i code kind args=() h=$WORK/out/warm-headers
  p=$(port "$server" "$proto")
  case $proto in
    h1) url="http://127.0.0.1:$p" ;;
    h2)
      url="https://localhost:$p"
      mapfile -t args < <(tls_args "$p")
      args+=(--http2)
      ;;
    *) return 0 ;; # h3: the same cache as h2 (Debian's curl has no HTTP/3); miss: nothing to warm
  esac
  for obj in 1k.bin 1m.bin; do
    for i in 1 2 3; do
      code=$(curl -s -o /dev/null -D "$h" -w '%{http_code} %{size_download} %{http_version}' \
        "${args[@]}" "$url/$obj") || code="curl-failed"
      read -r st sz ver <<<"$code"
      [[ $st == 200 && $sz == "$(stat -c %s "$WORK/www/$obj")" ]] \
        || warn "$server $proto /$obj: status/size $code"
      [[ $proto != h2 || $ver == 2 ]] || warn "$server $proto /$obj: curl got HTTP/$ver, not 2"
      if ((i >= 2)); then
        kind=$(hit_kind "$server" "$h")
        [[ $kind != miss ]] || warn "$server $proto /$obj: response $i is not a cache hit: $(tr -d '\r' <"$h" | grep -iE '^(cache-status|x-cache-status|x-varnish|age):' | tr '\n' ' ')"
      fi
    done
    log "  $server $proto /$obj: $(hit_kind "$server" "$h") ($(tr -d '\r' <"$h" | grep -iE '^(cache-status|x-cache-status|x-varnish):' | head -1))"
  done
}

log "warming the caches (every object 3 times; responses 2 and 3 must be hits)"
for proto in h1 h2; do
  for s in origin edge nginx varnish caddy; do
    [[ ${UP[$s]:-0} == 1 && -n $(port "$s" "$proto") ]] || continue
    warm_check "$s" "$proto"
  done
done
# The miss path's URLs (1k.bin?miss=...) must really miss: one never asked for, twice.
for s in edge nginx varnish; do
  [[ ${UP[$s]:-0} == 1 ]] || continue
  url="http://127.0.0.1:$(port "$s" miss)/1k.bin?miss=check-$RANDOM$RANDOM"
  curl -s -o /dev/null -D "$WORK/out/miss-headers" "$url" || true
  kind=$(hit_kind "$s" "$WORK/out/miss-headers")
  [[ $kind == miss ]] || warn "$s: a new miss-path URL was answered as a $kind"
  curl -s -o /dev/null -D "$WORK/out/miss-headers" "$url" || true
  kind=$(hit_kind "$s" "$WORK/out/miss-headers")
  [[ $kind == hit ]] || warn "$s: a miss-path URL asked again was not a hit"
done

# --- load ----------------------------------------------------------------------------------
# load SERVER SCENARIO SECONDS TAG: runs the load generator; leaves WORK/out/TAG.{out,log,rusage}
load() {
  local server=$1 sc=$2 secs=$3 tag=$4 p cmd pid rc=0
  scenario "$sc"
  p=$(port "$server" "$PROTO")
  local out=$WORK/out/$tag.out lg=$WORK/out/$tag.log ru=$WORK/out/$tag.rusage
  case $PROTO in
    h1) cmd=(wrk -t1 -c"$CONNS" -d"${secs}s" --timeout 10s -s "$HERE/wrk-report.lua"
      "http://127.0.0.1:$p/$OBJ") ;;
    miss) cmd=(wrk -t1 -c"$CONNS" -d"${secs}s" --timeout 10s -s "$HERE/wrk-unique.lua"
      "http://127.0.0.1:$p/$OBJ" -- "$tag") ;;
    h2) cmd=(h2load -t1 -c"$CONNS" -m"$STREAMS" -D "$secs" --log-file="$lg"
      --connect-to="127.0.0.1:$p" "https://localhost:$p/$OBJ") ;;
    h3) cmd=("$H3LOAD_BIN" --url "https://localhost:$p/$OBJ" --connect "127.0.0.1:$p" --ca "$CA"
      -c "$CONNS" -s "$STREAMS" -d "$secs" --warmup 0 --expect-status 200
      --expect-length "$SIZE" --threads 1 --json) ;;
  esac
  rm -f "$lg"
  "${REPORT[@]}" run "$ru" -- timeout -k 5 $((secs + 60)) taskset -c "$CLIENT_CPU" "${cmd[@]}" \
    >"$out" 2>&1 &
  pid=$!
  BG_PIDS+=("$pid")
  wait "$pid" || rc=$?
  forget_pid "$pid"
  return "$rc"
}

tool_of() { case $1 in h1 | miss) echo wrk ;; h2) echo h2load ;; h3) echo h3load ;; esac }

# measure REP SERVER SCENARIO
measure() {
  local rep=$1 server=$2 sc=$3 c0 c1 tag pids rc=0
  scenario "$sc"
  tag=$sc-$server-r$rep
  read -r -a pids <<<"$(server_pids "$server" "$PROTO")"
  c0=$("${REPORT[@]}" cpu "${pids[@]}")
  load "$server" "$sc" "$DURATION" "$tag" || rc=$?
  c1=$("${REPORT[@]}" cpu "${pids[@]}")
  ((rc == 0)) || warn "$tag: $(tool_of "$PROTO") exited with $rc (see $WORK/out/$tag.out)"
  local p
  for p in "${pids[@]}"; do
    kill -0 "$p" 2>/dev/null || die "$server (PID $p) exited during $tag; logs in $WORK"
  done
  "${REPORT[@]}" record --tool "$(tool_of "$PROTO")" --out "$WORK/out/$tag.out" \
    --log "$WORK/out/$tag.log" --rusage "$WORK/out/$tag.rusage" --rep "$rep" --scenario "$sc" \
    --server "$server" --size "$SIZE" --cpu-ticks $((c1 - c0)) >>"$RESULTS"
  "${REPORT[@]}" show "$RESULTS"
}

total_rows=0
for sc in "${active[@]}"; do
  read -r -a ss <<<"$(servers_for "$sc")"
  total_rows=$((total_rows + ${#ss[@]}))
done
log "plan: $total_rows rows x $REPS reps x ${DURATION}s (+ ${WARMUP}s warm-up per row):" \
  "about $(((total_rows * (REPS * (DURATION + 2) + WARMUP + 2) + 59) / 60)) min"

if ((WARMUP > 0)); then
  log "warm-up: ${WARMUP}s of load per row (not measured)"
  for sc in "${active[@]}"; do
    for s in $(servers_for "$sc"); do
      load "$s" "$sc" "$WARMUP" "warmup-$sc-$s" \
        || warn "warm-up $sc $s: load generator exited with an error (see $WORK/out/warmup-$sc-$s.out)"
    done
  done
fi

log "measuring: $REPS x ${DURATION}s per row, server on CPU $SERVER_CPU, load generator on CPU $CLIENT_CPU"
for rep in $(seq "$REPS"); do
  for sc in "${active[@]}"; do
    read -r -a ss <<<"$(servers_for "$sc")"
    n=${#ss[@]}
    for ((i = 0; i < n; i++)); do # rotated by one server per repetition
      measure "$rep" "${ss[(i + rep - 1) % n]}" "$sc"
    done
  done
done

check_pinning # after the runs: did anything move?

# --- report --------------------------------------------------------------------------------
ver() { "$@" 2>&1 | head -1 || true; }
{
  echo "quicdn edge $("$EDGE_BIN" --version 2>/dev/null | awk '{ print $2 }') at $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null)$(cd "$REPO" && [[ -n $(git status --porcelain -- edge shared 2>/dev/null) ]] && echo ' (uncommitted changes under edge/ or shared/)') vs" \
    "$(ver nginx -v | sed 's/.*: //'), $(ver varnishd -V | grep -o 'varnish-[0-9.]*') + $(ver hitch --version), caddy $(ver caddy version | awk '{ print $1 }');" \
    "$(ver wrk --version | awk '{ print "wrk " $2 }'), $(ver h2load --version | awk '{ print $2 }')$([[ $H3LOAD_OK == 1 ]] && echo ', h3load')"
  echo "$(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), Linux $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ);" \
    "server on CPU $SERVER_CPU, load generator on CPU $CLIENT_CPU; medians of $REPS interleaved ${DURATION}s runs after ${WARMUP}s warm-up"
  echo "load: h1 wrk -t1 -c$H1_CONNS (1 MiB: -c$H1_CONNS_BIG); h2 h2load -t1 -c$H2_CONNS -m$H2_STREAMS (1 MiB: -c$H2_CONNS_BIG -m1);" \
    "h3 h3load --threads 1 -c$H3_CONNS -s$H3_STREAMS (1 MiB: -c$H3_CONNS_BIG -s1); miss: wrk -t1 -c$MISS_CONNS, a new URL per request"
  echo
  "${REPORT[@]}" table "$RESULTS"
  echo
  echo "Server CPU: utime+stime of the server's whole process tree (Varnish over TLS: + hitch) over the run ÷ requests completed."
  echo "CPU × anchor: median over repetitions of the ratio to the anchor in the same repetition (nginx proxy_cache for h1/h2/miss, Caddy for h3)."
  echo "MB = 10^6 bytes of response bodies. Client CPU: the load generator's own (h3load's figure for h3, else getrusage), util = share of its core."
  echo "p50 added: miss-path p50 minus the origin's p50 in the same repetition."
  if ((${#WARNINGS[@]})); then
    echo
    echo "Warnings:"
    for w in "${WARNINGS[@]}"; do echo "- $w"; done
  fi
} >"$WORK/table.md"
echo
cat "$WORK/table.md"
