#!/usr/bin/env bash
# The README's test command: installs what the tests need, then checks formatting and lints
# and runs every test of the workspace. Extra arguments go to `cargo test`
# (e.g. `./scripts/test.sh coalescing` or `./scripts/test.sh -- --nocapture`).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

if [ -n "${CI:-}" ]; then
  export RUST_BACKTRACE=1 CARGO_TERM_COLOR=never
fi

# ---------------------------------------------------------------------------------------------
# Debian packages the tests need. Add to this list when a test starts driving another program.
#   curl, ca-certificates  HTTP clients and trust roots
#   chromium               loads the demo page over HTTP/3 in a real browser
#   python3, python3-venv  runs the independent Python HTTP/3 client (edge/tests/h3_fetch.py)
#   ffmpeg                 makes test videos; ffprobe and ffmpeg seek in them through the edge
#   dnsutils               dig, which queries geodns in its integration tests and the testnet
#   iproute2, iputils-ping the testnet's namespaces, links and routes; round trips
#   unbound                the testnet's recursive resolver per region (ECS via subnetcache)
#   docker-compose         parses docker/compose.yaml (no engine needed) to keep it in step
#   nats-server            the control plane's bus (JetStream): its tests start real servers,
#                          the testnet one per region (clustered); checks docker/nats.conf
PACKAGES=(ca-certificates curl chromium python3 python3-venv ffmpeg dnsutils iproute2
  iputils-ping unbound docker-compose nats-server)
# ---------------------------------------------------------------------------------------------
# PyPI packages, installed into target/test-venv: the Python HTTP/3 client (niquests), and
# the signers the token tests use (botocore's CloudFrontSigner with rsa, akamai-edgeauth).
PY_PACKAGES=(niquests botocore rsa akamai-edgeauth)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
    || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}"
  else
    die "missing Debian packages: ${missing[*]} (run this script as root, install sudo, or" \
      "install them yourself: apt-get install ${missing[*]})"
  fi
fi

command -v cargo >/dev/null 2>&1 \
  || die "cargo not found: install the Rust toolchain (https://rustup.rs) and open a new shell"

venv=target/test-venv
if ! "$venv/bin/python" -c 'import niquests, botocore, rsa, akamai.edgeauth' 2>/dev/null; then
  say "creating $venv with ${PY_PACKAGES[*]}"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
fi

say "cargo fmt --all --check"
cargo fmt --all --check
say "cargo clippy --workspace --all-targets --locked -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
say "cargo test --workspace --locked${*:+ $*}"
cargo test --workspace --locked "$@"
