#!/usr/bin/env bash
# Stops what vcard-up.sh started in DIR: the cards, then pcscd (each by the
# PID recorded in DIR, and only if that PID still runs the program we
# started), and removes DIR.
#
#   vcard-down.sh DIR
set -uo pipefail

dir=${1:?usage: vcard-down.sh DIR}
[ -e "$dir/.vcard" ] || { echo "vcard-down.sh: $dir was not made by vcard-up.sh" >&2; exit 2; }

# stop PIDFILE NAME: kill the PID if its command is NAME, wait up to 5 s.
stop() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 0
    [ -n "$pid" ] || return 0
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 0
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        [ -e "/proc/$pid" ] || return 0
        [ "$(cat "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f3)" = Z ] && return 0
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
}

for f in "$dir"/card-*.pid; do
    [ -e "$f" ] && stop "$f" virtual-yubike   # comm is cut at 15 characters
done
stop "$dir/pcscd.pid" pcscd
rm -rf -- "$dir"
