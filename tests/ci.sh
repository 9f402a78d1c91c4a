#!/bin/sh
# keyward's test command (README: "Run the tests"). CI runs exactly this via .ci/run.
#
# Installs the build dependencies through ./install.sh --deps-only (the list a
# new user's set-up uses: this step is its test), then what only the tests
# need (Debian packages, --no-install-recommends), then checks formatting and
# lints, then runs every test with
# KEYWARD_REQUIRE_SERVICES=1, which turns "skip: service missing" into a failure.
# Must run as root (it installs packages, and the PAM and peer-uid tests create
# users and /etc/pam.d files, which they remove on exit).
set -eu
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "tests/ci.sh must run as root (it installs packages and creates test users); try: sudo $0" >&2
    exit 2
fi

echo "==> build dependencies: ./install.sh --deps-only"
./install.sh --deps-only

# Only what the tests need beyond the build (the build's own list is in install.sh).
PACKAGES="
    argon2 python3-cryptography python3-argon2
    pcscd vsmartcard-vpcd yubico-piv-tool opensc openssl
    dbus dbus-bin gnome-keyring libsecret-tools
    pamtester
    openssh-client openssh-server openssh-tests gnupg pass
    poppler-utils zbar-tools faketime
    systemd
    iproute2 util-linux procps python3-dbus
    man-db
    git syncthing
    xvfb xclip
"
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "==> installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # No package may start a service while installing (openssh-server would
    # start an sshd listening on every address): Debian's policy-rc.d hook.
    policy_added=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        policy_added=1
    fi
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
    [ -n "$policy_added" ] && rm -f /usr/sbin/policy-rc.d
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

echo "==> OpenSSH's agent regression tests (agent, agent-timeout, agent-restrict, agent-subprocess) against keyward"
tests/ssh/regress.sh "$PWD/target/debug"

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
test -x /usr/bin/git-credential-keyward
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -dumpmachine)
test -f "/usr/lib/$multiarch/security/pam_keyward.so"
for page in man1/keyward.1 man1/keyward-init.1 man1/keyward-recovery-code-new.1 \
    man1/keyward-agent.1 man5/keyward.toml.5; do
    test -f "/usr/share/man/$page.gz" || { echo "missing from the package: $page" >&2; exit 1; }
done
verify_dir=$(mktemp -d)
XDG_RUNTIME_DIR=$verify_dir systemd-analyze --user --man=no verify \
    /usr/lib/systemd/user/keyward-agent.socket /usr/lib/systemd/user/keyward-agent.service
rm -rf "$verify_dir"
dpkg -r keyward >/dev/null
test ! -e /usr/bin/keyward
trap - EXIT

echo "==> ./install.sh into a temporary prefix (the README's set-up command, without init)"
prefix=$(mktemp -d)
remove_prefix() { rm -rf "$prefix"; }
trap remove_prefix EXIT
./install.sh --no-init --prefix "$prefix"
"$prefix/bin/keyward" --version
"$prefix/bin/keyward-agent" --version
test -x "$prefix/bin/git-credential-keyward"
for page in man1/keyward.1 man1/keyward-unlock.1 man1/keyward-agent.1 man5/keyward.toml.5; do
    test -s "$prefix/share/man/$page" || { echo "install.sh did not install $page" >&2; exit 1; }
done
MANPATH="$prefix/share/man" man -w keyward.toml >/dev/null
remove_prefix
trap - EXIT

echo "==> all tests passed"
