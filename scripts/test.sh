#!/usr/bin/env bash
# The README's test command: installs what the tests need, then checks formatting and lints
# and runs every test. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive: chromium (HTTP/3 in a real browser), curl, python3-venv
# (for the Python QUIC client).
PACKAGES=(ca-certificates curl chromium python3 python3-venv)
# PyPI packages for the Python HTTP/3 client test, installed into target/test-venv.
PY_PACKAGES=(niquests)

say() { printf '==> %s\n' "$*"; }

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  elif command -v sudo >/dev/null; then
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "error: missing Debian packages: ${missing[*]} (run as root or install them)" >&2
    exit 1
  fi
fi

command -v cargo >/dev/null || { echo "error: cargo not found: install Rust (rustup)" >&2; exit 1; }

venv=target/test-venv
if ! "$venv/bin/python" -c 'import niquests' 2>/dev/null; then
  say "making $venv with ${PY_PACKAGES[*]}"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
fi

if [ -n "${CI:-}" ]; then
  export CARGO_TERM_COLOR=never RUST_BACKTRACE=1
fi

say "cargo fmt --check"
cargo fmt --all --check
say "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
say "cargo test"
cargo test --workspace --locked "$@"
