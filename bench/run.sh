#!/usr/bin/env bash
# Every side-by-side benchmark in one command: HTTP (quicdn edge against nginx proxy_cache,
# Varnish + hitch, Caddy and the origin itself; bench/http) and DNS (geodns against gdnsd;
# bench/geodns). Each installs what it needs, stops what it starts and prints its table with
# ratios measured in the same run. Environment variables are passed through (DURATION, REPS,
# SERVER_CPU, CLIENT_CPU, SKIP_BUILD; see each script's header). Not a test.
set -euo pipefail
dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$dir/http/run.sh"
"$dir/geodns/run.sh"
