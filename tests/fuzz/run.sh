#!/bin/sh
# Bounded fuzzing of every keyward fuzz target (README.md in this directory).
#
#   tests/fuzz/run.sh [SECONDS_PER_TARGET]        # default 10: about 1.5 minutes
#
# Installs cargo-fuzz if missing, builds all targets (stable toolchain with
# RUSTC_BOOTSTRAP=1), runs each for SECONDS_PER_TARGET seconds from the
# committed seeds (seeds/<target>) and the local corpus (corpus/<target>,
# not committed), prints the executions per target, and exits non-zero if
# any target crashes, hangs (over 10 s on one input), runs out of memory or
# fails to run. A crashing input is left in artifacts/<target>/.
#
# Environment:
#   FUZZ_SANITIZER   none (default) or address. "none" builds in about 2/3
#                    of the time and runs 2-6x more inputs per second; the
#                    code under test is safe Rust, whose bounds and overflow
#                    checks are on in fuzz builds either way. "address" adds
#                    AddressSanitizer and a 256 MiB cap on any single
#                    allocation (libFuzzer's -malloc_limit_mb needs a
#                    sanitizer's allocator hooks).
#   FUZZ_TARGETS     space-separated subset of targets (default: all).
#   FUZZ_JOBS        cargo build jobs (default 2).
#   FUZZ_TARGET_DIR  where to build (default tests/fuzz/target; a directory
#                    outside the clone keeps builds warm across CI runs).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
seconds=${1:-10}
sanitizer=${FUZZ_SANITIZER:-none}
targets=${FUZZ_TARGETS:-"frame request response vault secret_key recovery_code items apdu applet ssh"}
jobs=${FUZZ_JOBS:-2}
triple=$(rustc -vV | sed -n 's/^host: //p')

case "$seconds" in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET]" >&2; exit 2 ;;
esac
case "$sanitizer" in
    none | address) ;;
    *) echo "FUZZ_SANITIZER must be none or address" >&2; exit 2 ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

export RUSTC_BOOTSTRAP=1 # cargo-fuzz passes nightly-only flags (-Z sanitizer, ...)
target_dir="${FUZZ_TARGET_DIR:-$here/target}/$sanitizer"
echo "==> building fuzz targets (sanitizer: $sanitizer)"
start=$(date +%s)
CARGO_BUILD_JOBS=$jobs cargo fuzz build --fuzz-dir "$here" -s "$sanitizer" \
    --target-dir "$target_dir"
echo "    built in $(($(date +%s) - start)) s"

bin_dir="$target_dir/$triple/release"
extra=""
if [ "$sanitizer" = address ]; then
    extra="-malloc_limit_mb=256"
fi

failed=""
total=0
echo "==> fuzzing each target for $seconds s"
for t in $targets; do
    mkdir -p "$here/corpus/$t" "$here/artifacts/$t"
    log="$here/artifacts/$t/last-run.log"
    rc=0
    # shellcheck disable=SC2086
    "$bin_dir/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 $extra \
        -print_final_stats=1 -artifact_prefix="$here/artifacts/$t/" \
        "$here/corpus/$t" "$here/seeds/$t" >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    corpus=$(find "$here/corpus/$t" -type f | wc -l)
    if [ "$rc" = 0 ]; then
        printf '    %-14s %10s execs  cov %6s  corpus %5s  ok\n' "$t" "${execs:-?}" "${cov:-?}" "$corpus"
        total=$((total + ${execs:-0}))
    else
        printf '    %-14s %10s execs  FAILED (exit %s)\n' "$t" "${execs:-?}" "$rc"
        tail -n 40 "$log" | sed 's/^/        /'
        echo "        artifacts: $(ls "$here/artifacts/$t" | grep -v last-run.log | tr '\n' ' ')"
        failed="$failed $t"
    fi
done

if [ -n "$failed" ]; then
    echo "fuzzing FAILED:$failed" >&2
    echo "reproduce: $bin_dir/<target> <artifact>; minimise: RUSTC_BOOTSTRAP=1 cargo fuzz tmin --fuzz-dir $here -s $sanitizer --target-dir $target_dir <target> <artifact>" >&2
    exit 1
fi
echo "==> fuzzing: $total executions, no crash"
