#!/usr/bin/env bash
# Starts a private pcscd (vsmartcard's vpcd readers) with virtual YubiKeys in
# it, for shell test scripts and by hand. The same setup as the Rust harness
# (virtual_yubikey::harness): pcscd and cards run in their own network and
# mount namespace, so vpcd's 0.0.0.0 listeners never reach the host and the
# pcscd socket is private; clients find it through PCSCLITE_CSOCK_NAME.
#
#   vcard-up.sh [OPTIONS] -- COMMAND [ARGS...]
#       Run COMMAND with PCSCLITE_CSOCK_NAME (and VCARD_DIR) exported, then
#       tear everything down (also on failure or Ctrl-C). Exit status: COMMAND's.
#   vcard-up.sh [OPTIONS]
#       Start, print the environment to export, and leave it running:
#           eval "$(tests/virtual-yubikey/scripts/vcard-up.sh)"
#           yubico-piv-tool -r Virtual -a status
#           tests/virtual-yubikey/scripts/vcard-down.sh "$VCARD_DIR"
#
# OPTIONS
#   --card SERIAL[:READER[:STATEFILE]]  a card (repeatable; READER 0 or 1;
#                       default: one card, serial 10000001, reader 0)
#   --no-card           pcscd only
#   --card-arg ARG      extra argument for every card, e.g.
#                       --card-arg --version --card-arg 5.7.1 (repeatable)
#   --dir DIR           working directory (default: a new /tmp/vcard-XXXXXX)
#   --timeout SECS      how long to wait for pcscd and each card (default 20)
#   --tools             also install yubico-piv-tool, opensc and openssl
#
# A touch: `touch DIR/touch-READER`, or `kill -USR1 $(cat DIR/card-READER.pid)`.
# Needs root (unshare, nsenter, mount --bind); installs missing packages
# with apt-get. The card binary is $VIRTUAL_YUBIKEY_BIN, or built with cargo.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)

cards=()
card_args=()
no_card=0
dir=
timeout=20
tools=0
while [ $# -gt 0 ]; do
    case $1 in
        --card) cards+=("$2"); shift 2 ;;
        --no-card) no_card=1; shift ;;
        --card-arg) card_args+=("$2"); shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        --tools) tools=1; shift ;;
        --) shift; break ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "vcard-up.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ ${#cards[@]} -eq 0 ] && [ $no_card = 0 ]; then
    cards=(10000001:0)
fi

die() { echo "vcard-up.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (unshare --net --mount, mount --bind, nsenter)"

# Packages, installed only if missing.
packages=(pcscd vsmartcard-vpcd iproute2 util-linux)
[ $tools = 1 ] && packages+=(yubico-piv-tool opensc openssl)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "vcard-up.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}" >&2 \
        || { apt-get update >&2 && apt-get install -y --no-install-recommends "${missing[@]}" >&2; } \
        || die "could not install ${missing[*]}"
fi

# The card binary.
bin=${VIRTUAL_YUBIKEY_BIN:-}
if [ -z "$bin" ]; then
    bin=$(cd "$repo" && cargo build -q -p virtual-yubikey --bin virtual-yubikey --message-format=json \
        | grep -o '"executable":"[^"]*/virtual-yubikey"' | tail -n 1 | cut -d'"' -f4) \
        || die "cargo build -p virtual-yubikey failed"
fi
[ -x "$bin" ] || die "no card binary (set VIRTUAL_YUBIKEY_BIN or run from a cargo workspace)"

if [ -z "$dir" ]; then
    dir=$(mktemp -d /tmp/vcard-XXXXXX)
else
    mkdir -p "$dir"
fi
dir=$(cd "$dir" && pwd)
mkdir -p "$dir/run"
touch "$dir/.vcard"   # vcard-down.sh only deletes directories with this mark
socket=$dir/run/pcscd.comm

down() { "$here/vcard-down.sh" "$dir"; }

# From here on, a failure tears down what was started.
trap 'down' EXIT
trap 'exit 130' INT TERM

# pcscd: the namespace wrapper execs it, so $! is pcscd's PID.
unshare --net --mount --propagation private sh "$here/pcscd-netns.sh" "$dir" exec \
    < /dev/null > /dev/null 2> "$dir/netns.log" &
pcscd_pid=$!
echo "$pcscd_pid" > "$dir/pcscd.pid"
PCSCLITE_CSOCK_NAME=$socket "$bin" pcsc-wait --reader 0 --state listed --timeout "$timeout" \
    || die "pcscd did not come up; see $dir/pcscd.log and $dir/netns.log"

for spec in "${cards[@]}"; do
    IFS=: read -r serial reader state <<< "$spec"
    reader=${reader:-0}
    args=(card --serial "$serial" --reader "$reader" --touch-file "$dir/touch-$reader")
    [ -n "${state:-}" ] && args+=(--state "$state")
    nsenter --net="/proc/$pcscd_pid/ns/net" -- "$bin" "${args[@]}" "${card_args[@]}" \
        < /dev/null > /dev/null 2> "$dir/card-$reader.log" &
    echo $! > "$dir/card-$reader.pid"
    PCSCLITE_CSOCK_NAME=$socket "$bin" pcsc-wait --reader "$reader" --state present --timeout "$timeout" \
        || die "card $serial not detected on reader $reader; see $dir/card-$reader.log"
done

if [ $# -gt 0 ]; then
    export PCSCLITE_CSOCK_NAME=$socket VCARD_DIR=$dir
    status=0
    "$@" || status=$?
    exit $status
fi

# Detached: keep everything running and tell the caller how to use and stop it.
trap - EXIT INT TERM
cat <<EOF
export PCSCLITE_CSOCK_NAME=$socket
export VCARD_DIR=$dir
# stop with: $here/vcard-down.sh $dir
EOF
