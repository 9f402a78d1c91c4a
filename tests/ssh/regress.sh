#!/bin/sh
# Runs OpenSSH's own agent regression tests (Debian's openssh-tests: the
# suite of the installed OpenSSH) against keyward, through
# tests/ssh/keyward-as-ssh-agent. The four scripts share no state, so they
# run side by side, each in a directory of its own.
#
#   tests/ssh/regress.sh [BIN_DIR]     (BIN_DIR: where keyward and keyward-agent are)
#
# Exits non-zero if a test fails or the suite is missing. sshd is started by
# the suite itself (`sshd -i` through ProxyCommand: no listening socket).
set -u
cd "$(dirname "$0")/../.."
export KEYWARD_BIN="${1:-$PWD/target/debug}"
runner=/usr/lib/openssh/regress/run-tests
if [ ! -x "$runner" ]; then
    echo "regress.sh: $runner is missing: install openssh-tests (tests/ci.sh does)" >&2
    exit 2
fi
# sshd refuses to start without its privilege separation directory.
[ -d /run/sshd ] || install -d -m 0755 /run/sshd

work=$(mktemp -d /tmp/keyward-ssh-regress.XXXXXX)
trap 'rm -rf "$work"' EXIT
tests="agent agent-timeout agent-restrict agent-subprocess"
pids=""
for t in $tests; do
    mkdir "$work/$t"
    (
        timeout 900 "$runner" "$work/$t" t-exec SUDO= LTESTS="$t" \
            TEST_SSH_SSHAGENT="$PWD/tests/ssh/keyward-as-ssh-agent" >"$work/$t.log" 2>&1
        echo $? >"$work/$t.rc"
    ) &
    pids="$pids $!"
done
# shellcheck disable=SC2086
wait $pids
failed=0
for t in $tests; do
    rc=$(cat "$work/$t.rc" 2>/dev/null || echo 99)
    if [ "$rc" = 0 ] && grep -q '^ok ' "$work/$t.log"; then
        echo "  ok   $t ($(grep '^ok ' "$work/$t.log"))"
    else
        echo "  FAIL $t (exit $rc):" >&2
        tail -n 40 "$work/$t.log" >&2
        failed=1
    fi
done
exit $failed
