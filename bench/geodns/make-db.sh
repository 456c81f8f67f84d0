#!/usr/bin/env bash
# Builds the benchmark's GeoIP2-City-shaped MaxMind DB and its client list.
#   bench/geodns/make-db.sh [OUT_DIR]      (default: a new temp dir)
# Writes OUT_DIR/bench-city.mmdb and OUT_DIR/clients.csv (subnet,city,lat,lon,country,continent)
# and prints OUT_DIR last. Uses PyPI mmdb-writer in the venv target/bench-venv (created here).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$(mktemp -d "${TMPDIR:-/tmp}/geodns-db.XXXXXX")}
venv=${BENCH_VENV:-$repo/target/bench-venv}

if [[ ! -x $venv/bin/python ]]; then
  echo "make-db: creating venv $venv" >&2
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import mmdb_writer, netaddr' 2>/dev/null; then
  echo "make-db: installing mmdb-writer into $venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'mmdb-writer==0.2.7'
fi
"$venv/bin/python" "$here/make_db.py" "$out" >&2
echo "$out"
