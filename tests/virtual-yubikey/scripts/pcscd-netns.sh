#!/bin/sh
# Runs pcscd inside the private network and mount namespace it is started in:
#   unshare --net --mount --propagation private sh pcscd-netns.sh DIR MODE
#
# - The loopback interface comes up, so vpcd's listeners (0.0.0.0:35963 and
#   :35964) exist only in this namespace, never on the host's interfaces.
# - DIR/run is bind-mounted over /run/pcscd in this mount namespace only, so
#   pcscd's socket (/run/pcscd/pcscd.comm) and pid file land in DIR/run and do
#   not clash with any other pcscd. (pcscd 1.9 ignores PCSCLITE_CSOCK_NAME;
#   its clients honour it, so they reach this pcscd with
#   PCSCLITE_CSOCK_NAME=DIR/run/pcscd.comm.)
# - MODE "stdin": pcscd runs in the background; when our stdin reaches end of
#   file (the test process that holds the other end died or let go), pcscd is
#   stopped. MODE "exec": this shell becomes pcscd (the caller kills it by PID).
#
# pcscd's log goes to DIR/pcscd.log; set VIRTUAL_YUBIKEY_LOG_APDU=1 to log
# every APDU (PINs and keys included: test values only).
set -eu
dir=$1
mode=${2:-stdin}

ip link set lo up
mkdir -p /run/pcscd
mount --bind "$dir/run" /run/pcscd

set -- --foreground --info
if [ "${VIRTUAL_YUBIKEY_LOG_APDU:-0}" = 1 ]; then
    set -- "$@" --apdu
fi

if [ "$mode" = exec ]; then
    echo $$ > "$dir/pcscd.pid"
    exec pcscd "$@" > "$dir/pcscd.log" 2>&1 < /dev/null
fi

pcscd "$@" > "$dir/pcscd.log" 2>&1 < /dev/null &
pcscd_pid=$!
echo "$pcscd_pid" > "$dir/pcscd.pid"
cat > /dev/null || true
kill "$pcscd_pid" 2> /dev/null || true
wait "$pcscd_pid" 2> /dev/null || true
