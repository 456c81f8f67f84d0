#!/usr/bin/env bash
# Runs the fuzz targets one after another, each for a bounded time, and prints a table.
#
#   fuzz/run.sh [SECONDS] [TARGET...]     default: 60 s each, every target
#
# SECONDS goes to libFuzzer's -max_total_time; on top of that every run is killed SECONDS+300 s
# after it started, so nothing here can run unbounded (a single input hanging for 30 s is
# reported by libFuzzer as a timeout crash). Exits 1 if any target crashed (or did not run);
# the artifact path of each crash is in the table and in fuzz/logs/TARGET.log. Columns: libFuzzer's
# executions and exec/s (final stats), cov (edges covered) and ft (features) from its last status
# line, corpus (files in fuzz/corpus/TARGET after the run: seeds are not copied there), crashes.
#
# Environment: FUZZ_SANITIZER (address | none; default: address when it builds, else none),
# FUZZ_RSS_MB (libFuzzer -rss_limit_mb, default 4096). Builds and runs under `nice -n 15`.
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); nightly-only flags (-Zsanitizer) are
# enabled on a stable toolchain with RUSTC_BOOTSTRAP=1.
set -u -o pipefail

cd "$(dirname "$0")"
secs="${1:-60}"
shift || true
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
    echo "usage: $0 [SECONDS] [TARGET...]" >&2
    exit 2
fi
all=(range policy meta dns_udp dns_zone edge_config geodns_config)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")

export RUSTC_BOOTSTRAP=1
triple="$(rustc -vV | sed -n 's/^host: //p')"
bindir="target/$triple/release"

# Builds every target (release, debug assertions and overflow checks on: cargo-fuzz's default).
build() {
    nice -n 15 cargo fuzz build -s "$1"
}
san="${FUZZ_SANITIZER:-}"
if [ -z "$san" ]; then
    if build address; then
        san=address
    else
        echo "address sanitizer build failed; building with -s none" >&2
        san=none
        build none || exit 1
    fi
else
    build "$san" || exit 1
fi

mkdir -p logs target/tmp
# The DNS targets write their GeoIP database under TMPDIR.
export TMPDIR="$PWD/target/tmp"
failed=0
rows=()
for t in "${targets[@]}"; do
    bin="$bindir/$t"
    log="logs/$t.log"
    mkdir -p "corpus/$t" "artifacts/$t" "seeds/$t"
    before="$(ls "artifacts/$t" | sort)"
    start=$(date +%s)
    # New inputs go to corpus/T (the first directory); seeds/T is read only.
    timeout --kill-after=30 $((secs + 300)) nice -n 15 "$bin" "corpus/$t" "seeds/$t" \
        -max_total_time="$secs" -timeout=30 -rss_limit_mb="${FUZZ_RSS_MB:-4096}" \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1
    rc=$?
    elapsed=$(($(date +%s) - start))
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
    if [ -z "$execs" ]; then
        # No final stats (a crash): the last status line has the count.
        last="$(grep -E '^#[0-9]+' "$log" | tail -1)"
        execs="$(sed -E 's/^#([0-9]+).*/\1/' <<<"$last")"
        rate="$(sed -nE 's/.*exec\/s: ([0-9]+).*/\1/p' <<<"$last")"
    fi
    # Coverage (cov: edges) and features (ft:) from libFuzzer's last status line.
    status="$(grep -E '^#[0-9]+.* cov: ' "$log" | tail -1)"
    cov="$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$status")"
    ft="$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$status")"
    corpus="$(find "corpus/$t" -type f | wc -l)"
    new="$(comm -13 <(echo "$before") <(ls "artifacts/$t" | sort) | sed "s|^|artifacts/$t/|")"
    crashes="$(grep -c . <<<"$new")"
    if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
        failed=1
        [ "$crashes" -eq 0 ] && new="exit $rc, no artifact: see $log"
    fi
    rows+=("$(printf '%-14s %12s %8s %7s %7s %8s %7s %6ss  %s' "$t" "${execs:-?}" "${rate:-?}" \
        "${cov:-?}" "${ft:-?}" "$corpus" "$crashes" "$elapsed" "$(tr '\n' ' ' <<<"$new")")")
    echo "$t: rc=$rc execs=${execs:-?} exec/s=${rate:-?} crashes=$crashes (${elapsed}s, log $log)" >&2
done
rm -rf target/tmp

echo
echo "sanitizer: $san, -max_total_time=$secs per target, rustc $(rustc -V | cut -d' ' -f2)"
printf '%-14s %12s %8s %7s %7s %8s %7s %7s  %s\n' target execs exec/s cov ft corpus crashes time \
    artifacts
for r in "${rows[@]}"; do echo "$r"; done
exit "$failed"
