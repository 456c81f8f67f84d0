# shellcheck shell=bash
# Shared by bench/tiers/shield-cost.sh and offload.sh (sourced, after bench/http/lib.sh,
# whose PIDS, cleanup, free_port and wait_up these use): edge configs for children and
# shields, starting and stopping an edge, reading its metrics. Needs EDGE_BIN.

# edge_conf NAME HTTP_PORT ADMIN_PORT DIR ORIGIN_URL [PARENT_URL [BYPASS_PATH]]: writes
# DIR/edge.toml: one site for every host from ORIGIN_URL, with the parent (and a bypass
# rule on BYPASS_PATH) if given; the cache in DIR/cache, starting empty. `listen.https`
# gets a free loopback port too: left out, it is not off but 0.0.0.0:8443, which the second
# edge on the host cannot bind (its certificate is the edge's own self-signed one).
edge_conf() {
  local name=$1 hp=$2 ap=$3 dir=$4 origin=$5 parent=${6:-} bypass=${7:-} tp
  tp=$(free_port)
  mkdir -p "$dir"
  rm -rf "$dir/cache"
  {
    printf 'name = "%s"\n[listen]\nhttp = "127.0.0.1:%s"\nadmin = "127.0.0.1:%s"\n' "$name" "$hp" "$ap"
    printf 'https = "127.0.0.1:%s"\n' "$tp"
    printf '[cache]\ndir = "%s/cache"\n[log]\nfilter = "warn"\naccess_log = false\n' "$dir"
    printf '[[site]]\nhosts = ["*"]\norigin = "%s"\n' "$origin"
    [[ -z $parent ]] || printf 'parents = [{ url = "%s" }]\nparent_balance = "hash"\nfallback = "origin"\n' "$parent"
    [[ -z $bypass ]] || printf '[[site.rule]]\npath = "%s"\nbypass = true\n' "$bypass"
  } >"$dir/edge.toml"
}

# start_edge DIR ADMIN_PORT [WRAPPER...]: runs the edge of DIR/edge.toml (under WRAPPER, e.g.
# valgrind), sets EDGE_PID, returns once its admin listener answers.
start_edge() {
  local dir=$1 ap=$2
  shift 2
  "$@" "${EDGE_BIN:?}" --config "$dir/edge.toml" >"$dir/edge.log" 2>&1 &
  EDGE_PID=$!
  PIDS+=("$EDGE_PID")
  wait_up "http://127.0.0.1:$ap/health" || { echo "edge did not start (see $dir/edge.log)" >&2; exit 1; }
}

# stop_pid PID: stops one process this script started.
stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# metric ADMIN_PORT NAME [LABEL_MATCH]: the sum of a metric's series (those whose labels
# contain LABEL_MATCH), 0 if none.
metric() {
  curl -fsS "http://127.0.0.1:$1/metrics" \
    | awk -v name="$2" -v match_="${3:-}" '
        index($0, name) == 1 && (substr($0, length(name) + 1, 1) ~ /[{ ]/) && index($0, match_) { n += $NF }
        END { printf "%d\n", n }'
}
