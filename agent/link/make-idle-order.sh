#!/usr/bin/env bash
# Regenerates agent/link/idle-order.txt, the symbol ordering file the agent
# is linked with (agent/build.rs): the functions that run while the agent
# starts and sits idle, first and together in .text, then those of unlock,
# get, list, set, remove and lock. Code the agent does not run then stays
# out of its resident memory: the kernel maps code in 64 KiB runs around
# each page touched (fault-around), so a scattered hot set keeps most of
# the binary resident. docs/BENCHMARKS.md §5 has the figures.
#
# Symbol names carry hashes that change with the toolchain, the locked
# dependency versions, and the features Cargo unifies for the packages
# built together; names the linker does not find are skipped. The file is
# therefore made for the build that ships: the packages
# packaging/deb/build-deb.sh and the README build together. CI fails when
# fewer than 90 % of the names are found (agent/link/check-idle-order.sh):
# run this script then (after a toolchain or dependency upgrade).
#
# Needs valgrind (callgrind records every function that runs).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
out=$root/agent/link/idle-order.txt
cargo build --release --locked --quiet -p keyward -p keyward-agent -p pam_keyward \
    --manifest-path "$root/Cargo.toml"
agent=$root/target/release/keyward-agent
cli=$root/target/release/keyward
command -v valgrind >/dev/null || { echo "needs valgrind (apt install valgrind)" >&2; exit 1; }

work=$(mktemp -d)
agent_pid=
cleanup() {
    if [ -n "$agent_pid" ]; then kill "$agent_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

password="order file password 1"
new_home() {
    local home=$work/$1
    mkdir -p "$home/config"
    chmod 700 "$home"
    # The weakest parameters a new account accepts: Argon2id under valgrind.
    printf '[kdf]\nmemory_kib = 19456\niterations = 2\nparallelism = 1\n' >"$home/config/config.toml"
    echo "$home"
}

# start HOME [valgrind args...]: the agent in the background, socket ready.
start() {
    local home=$1
    shift
    rm -f "$home/run/agent.sock"
    KEYWARD_HOME=$home "$@" "$agent" >"$home/agent.log" 2>&1 &
    agent_pid=$!
    for _ in $(seq 1 300); do
        [ -S "$home/run/agent.sock" ] && return 0
        sleep 0.1
    done
    echo "the agent did not start; its log:" >&2
    cat "$home/agent.log" >&2
    exit 1
}

stop() {
    kill -TERM "$agent_pid"
    wait "$agent_pid" 2>/dev/null || true
    agent_pid=
}

kw() { KEYWARD_HOME=$home "$cli" "$@" --no-autostart >/dev/null; }

traced() { start "$home" valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/$1.cg"; }

# 1. Start-up with no account, one status.
home=$(new_home empty)
traced empty
kw status
stop

# 2. Start-up with a locked account, one status (the state after login).
home=$(new_home account)
start "$home"
echo "$password" | kw init --password-stdin --protector file
kw lock
stop
traced locked
kw status
stop

# 3. The everyday operations.
traced busy
echo "$password" | kw unlock --password-stdin
printf 'value' | kw set some/item
kw get some/item
kw list
kw rm some/item
kw lock
stop

# Function names in first-seen order, phase by phase, kept if the binary
# defines them.
nm --defined-only "$agent" | awk '$2 ~ /^[tTwW]$/ { print $3 }' | sort -u >"$work/defined"
for phase in empty locked busy; do
    sed -nE 's/^c?fn=\([0-9]+\) (.+)$/\1/p' "$work/$phase.cg"
done | awk '!seen[$0]++' | awk 'NR == FNR { defined[$0] = 1; next } defined[$0]' "$work/defined" - >"$out"
echo "$(wc -l <"$out") functions written to $out"
