# Shared by bench/geodns/run.sh and compare-answers.sh (sourced, not run).
# Sets up a work dir, the tools, the test database, twin configs for geodns and gdnsd, and
# starts/stops both servers on 127.0.0.1. Every process started here is recorded and stopped
# by PID from the EXIT trap.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/../.." && pwd)
GEODNS_BIN=${GEODNS_BIN:-$REPO/target/release/geodns}
# Server on one core, load generator on another (2-core machines: 1 and 0).
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
BG_PIDS=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 50); do
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
  local rc=$? pid
  for pid in "${BG_PIDS[@]}"; do
    stop_pid "$pid"
  done
  BG_PIDS=()
  if [[ -n ${WORK:-} ]]; then
    log "work dir (configs, logs, raw results): $WORK"
  fi
  exit "$rc"
}

bench_init() {
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/geodns-bench.XXXXXX")}
  mkdir -p "$WORK"
  if [[ $(nproc) -lt 2 ]]; then
    die "needs at least 2 CPUs for the server/load-generator pinning (have $(nproc))"
  fi
}

ensure_tools() {
  local missing=() pkg
  command -v gdnsd >/dev/null || missing+=(gdnsd)
  command -v dnsperf >/dev/null || missing+=(dnsperf)
  command -v dig >/dev/null || missing+=(dnsutils)
  command -v taskset >/dev/null || missing+=(util-linux)
  if ((${#missing[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]}: apt-get install ${missing[*]} (as root)"
    log "installing ${missing[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    # The Debian package may start its own gdnsd via systemd where systemd runs; ours uses
    # its own config dir and ports, so that one is left alone.
  fi
  command -v python3 >/dev/null || die "python3 is needed"
}

build_geodns() {
  if [[ ${SKIP_BUILD:-0} == 1 && -x $GEODNS_BIN ]]; then
    return
  fi
  log "cargo build --release -p geodns"
  (cd "$REPO" && cargo build --release -p geodns >&2)
}

# A port free for both UDP and TCP on 127.0.0.1 (the kernel picks it; small race, fine here).
free_port() {
  python3 - <<'EOF'
import socket
for _ in range(50):
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.bind(("127.0.0.1", 0))
    port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        t.close()
        continue
    u.close()
    t.close()
    print(port)
    break
else:
    raise SystemExit("no free port")
EOF
}

prepare() {
  "$BENCH_DIR/make-db.sh" "$WORK" >/dev/null
  DB=$WORK/bench-city.mmdb
  CLIENTS=$WORK/clients.csv
  GEODNS_PORT=$(free_port)
  GEODNS_ADMIN_PORT=$(free_port)
  GDNSD_PORT=$(free_port)
  python3 "$BENCH_DIR/gen_configs.py" "$WORK" "$BENCH_DIR/pops.csv" "$DB" \
    "$GEODNS_PORT" "$GEODNS_ADMIN_PORT" "$GDNSD_PORT"
  "$GEODNS_BIN" --config "$WORK/geodns.toml" --check-config >/dev/null \
    || die "geodns rejects $WORK/geodns.toml"
  gdnsd -c "$WORK/gdnsd" checkconf >"$WORK/gdnsd-checkconf.log" 2>&1 \
    || { cat "$WORK/gdnsd-checkconf.log" >&2; die "gdnsd rejects $WORK/gdnsd/config"; }
}

# wait_dns NAME PID PORT: until the server answers ns1.cdn.test (10 s at most).
wait_dns() {
  local name=$1 pid=$2 port=$3 i
  for i in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || die "$name (PID $pid) exited; log: $WORK/$name.log"
    if [[ $(dig @127.0.0.1 -p "$port" +time=1 +tries=1 +short ns1.cdn.test A 2>/dev/null) == 192.0.2.53 ]]; then
      return 0
    fi
    sleep 0.1
  done
  die "$name does not answer on 127.0.0.1:$port; log: $WORK/$name.log"
}

start_servers() {
  # Pinned before exec: geodns's tokio runtime sizes itself from the affinity mask (1 worker).
  taskset -c "$SERVER_CPU" "$GEODNS_BIN" --config "$WORK/geodns.toml" >"$WORK/geodns.log" 2>&1 &
  GEODNS_PID=$!
  BG_PIDS+=("$GEODNS_PID")
  # gdnsd 3.x: `start` is the foreground action (there is no -f); -c is the config dir.
  taskset -c "$SERVER_CPU" gdnsd -c "$WORK/gdnsd" start >"$WORK/gdnsd.log" 2>&1 &
  GDNSD_PID=$!
  BG_PIDS+=("$GDNSD_PID")
  wait_dns geodns "$GEODNS_PID" "$GEODNS_PORT"
  wait_dns gdnsd "$GDNSD_PID" "$GDNSD_PORT"
  log "geodns PID $GEODNS_PID on 127.0.0.1:$GEODNS_PORT, gdnsd PID $GDNSD_PID on 127.0.0.1:$GDNSD_PORT (CPU $SERVER_CPU)"
}

# The POP name of an address in pops.csv, or the address itself.
pop_of() {
  awk -F, -v a="$1" 'NR > 1 && ($4 == a || $5 == a) { print $1; found = 1 } END { if (!found) print (a == "" ? "-" : a) }' \
    "$BENCH_DIR/pops.csv"
}
