#!/usr/bin/env bash
# check-idle-order.sh AGENT_BINARY: how many of the names in
# agent/link/idle-order.txt the binary defines. Fails under 90 %: the
# ordering no longer takes (see make-idle-order.sh, which regenerates it).
set -euo pipefail
binary=${1:?usage: check-idle-order.sh AGENT_BINARY}
order=$(cd "$(dirname "$0")" && pwd)/idle-order.txt
total=$(grep -c . "$order")
found=$(nm --defined-only "$binary" | awk '$2 ~ /^[tTwW]$/ { print $3 }' |
    awk 'NR == FNR { defined[$0] = 1; next } defined[$0]' - "$order" | grep -c . || true)
percent=$((100 * found / total))
echo "idle-order.txt: $found of $total functions found in $binary ($percent %)"
if [ "$percent" -lt 90 ]; then
    echo "the agent's symbol ordering is stale: run agent/link/make-idle-order.sh" >&2
    exit 1
fi
