#!/bin/sh
# keyward's test command (README: "Run the tests"). CI runs exactly this via .ci/run.
#
# Installs what the tests need (Debian packages, --no-install-recommends), then
# checks formatting and lints, then runs every test with
# KEYWARD_REQUIRE_SERVICES=1, which turns "skip: service missing" into a failure.
# Must run as root (it installs packages, and the PAM and peer-uid tests create
# users and /etc/pam.d files, which they remove on exit).
set -eu
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "tests/ci.sh must run as root (it installs packages and creates test users); try: sudo $0" >&2
    exit 2
fi

PACKAGES="
    argon2 python3-cryptography python3-argon2
    pcscd libpcsclite-dev vsmartcard-vpcd yubico-piv-tool opensc openssl
    dbus dbus-bin libdbus-1-dev gnome-keyring libsecret-tools
    libpam0g-dev pamtester
    openssh-client gnupg
    poppler-utils zbar-tools faketime
    systemd
    iproute2 util-linux procps python3-dbus
    pkg-config
"
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "==> installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

echo "==> cargo fmt --check"
cargo fmt --all --check

echo "==> cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> building binaries"
cargo build --workspace --bins --locked

echo "==> cargo test (services required)"
export KEYWARD_REQUIRE_SERVICES=1
cargo test --workspace --locked

echo "==> stack scrub sizes, measured in the optimised build too"
cargo test --release --locked -p keyward-agent --lib stack_ -- --nocapture

echo "==> fuzzing (bounded: 10 s per target)"
tests/fuzz/run.sh 10

echo "==> Debian package: build, install, run, remove"
deb=$(packaging/deb/build-deb.sh | tail -n 1)
remove_package() { dpkg -r keyward >/dev/null 2>&1 || true; }
trap remove_package EXIT
agent/link/check-idle-order.sh target/release/keyward-agent
dpkg -i "$deb" >/dev/null
/usr/bin/keyward --version
/usr/bin/keyward-agent --version
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -dumpmachine)
test -f "/usr/lib/$multiarch/security/pam_keyward.so"
test -f /usr/share/man/man1/keyward.1.gz
verify_dir=$(mktemp -d)
XDG_RUNTIME_DIR=$verify_dir systemd-analyze --user --man=no verify \
    /usr/lib/systemd/user/keyward-agent.socket /usr/lib/systemd/user/keyward-agent.service
rm -rf "$verify_dir"
dpkg -r keyward >/dev/null
test ! -e /usr/bin/keyward
trap - EXIT

echo "==> all tests passed"
