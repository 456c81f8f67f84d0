#!/usr/bin/env bash
# The attack suite: starts the release edge (and geodns) on 127.0.0.1 with a config and an
# origin of its own, runs each attack while a normal client keeps fetching a cached object,
# and prints one table row per attack with a PASS/FAIL verdict. See bench/attack/README.md.
#
#   bench/attack/run.sh                 # every attack (~4 min after the build)
#   bench/attack/run.sh --quick         # smaller counts, CI-friendly smoke run (~2 min)
#   bench/attack/run.sh --only NAME     # one attack (comma-separated list for several)
#   bench/attack/run.sh --list          # the attack names
#
# Environment: EDGE_BIN, GEODNS_BIN, H3IDLE_BIN (binaries; default CARGO_TARGET_DIR/release/,
# CARGO_TARGET_DIR defaulting to target/), SKIP_BUILD=1, COMMIT (label for the table), WORK
# (work dir, default a new /tmp/quicdn-attack.*; kept), ATTACK_VENV (default
# target/attack-venv), RESULTS (table file; default bench/attack/results-DATE[-quick|-only].md,
# RESULTS=0 writes none).
#
# Loopback only. Everything it starts is stopped by PID on exit; a tmpfs it mounted for the
# full-disk attack is unmounted. Needs root for that tmpfs (the attack is skipped otherwise).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"

quick=0
only=""
list=0
args=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --only) only="${2:-}"; shift ;;
        --only=*) only="${1#--only=}" ;;
        --list) list=1 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

say() { echo "[attack] $*" >&2; }

# Tools: dig (dnsutils) for the DNS attack, python3 with venv.
if ! command -v dig >/dev/null || ! python3 -m venv --help >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing dnsutils python3-venv"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsutils python3-venv >/dev/null ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsutils python3-venv >/dev/null; }
    else
        say "need dig (dnsutils) and python3-venv"
    fi
fi

VENV="${ATTACK_VENV:-$REPO/target/attack-venv}"
if ! "$VENV/bin/python" -c 'import h2, hpack' 2>/dev/null; then
    say "creating the Python venv $VENV (h2)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q 'h2>=4.1,<5'
fi
PY="$VENV/bin/python"

if [ "$list" = 1 ]; then
    exec "$PY" "$HERE/suite.py" --list --work /nonexistent --edge-bin x --geodns-bin x --h3idle-bin x
fi

if [ "${SKIP_BUILD:-0}" != 1 ] && { [ -z "${EDGE_BIN:-}" ] || [ -z "${GEODNS_BIN:-}" ] || [ -z "${H3IDLE_BIN:-}" ]; }; then
    say "building edge, geodns, h3load (h3idle) in $TARGET_DIR"
    (cd "$REPO" && CARGO_TARGET_DIR="$TARGET_DIR" nice -n 15 cargo build --release -p edge -p geodns -p h3load)
fi
EDGE_BIN="${EDGE_BIN:-$TARGET_DIR/release/edge}"
GEODNS_BIN="${GEODNS_BIN:-$TARGET_DIR/release/geodns}"
H3IDLE_BIN="${H3IDLE_BIN:-$TARGET_DIR/release/h3idle}"
for b in "$EDGE_BIN" "$GEODNS_BIN" "$H3IDLE_BIN"; do
    [ -x "$b" ] || { echo "run.sh: $b is missing (build it, or set EDGE_BIN/GEODNS_BIN/H3IDLE_BIN)" >&2; exit 1; }
done

# 10,000 connections on each side, plus the edge's cache files.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
say "open files limit $(ulimit -n)"
[ "$(id -u)" = 0 ] || say "not root: the full-disk attack (tmpfs) will be skipped"

WORK="${WORK:-$(mktemp -d /tmp/quicdn-attack.XXXXXX)}"
mkdir -p "$WORK"
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    if mountpoint -q "$WORK/tmpfs-cache" 2>/dev/null; then
        umount "$WORK/tmpfs-cache" || true
    fi
}
trap cleanup EXIT

if [ -n "${COMMIT:-}" ]; then
    commit="$COMMIT"
else
    commit="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    if [ -n "$(git -C "$REPO" status --porcelain -- edge geodns shared 2>/dev/null)" ]; then
        commit="$commit+uncommitted"
    fi
fi

suffix=""
[ "$quick" = 1 ] && suffix="-quick"
[ -n "$only" ] && suffix="$suffix-only"
RESULTS="${RESULTS:-$HERE/results-$(date +%F)$suffix.md}"
res_args=()
[ "$RESULTS" != 0 ] && res_args=(--results "$RESULTS")

say "work dir $WORK, commit $commit"
rc=0
"$PY" "$HERE/suite.py" "${args[@]}" --work "$WORK" --edge-bin "$EDGE_BIN" \
    --geodns-bin "$GEODNS_BIN" --h3idle-bin "$H3IDLE_BIN" --commit "$commit" \
    "${res_args[@]}" || rc=$?
exit "$rc"
