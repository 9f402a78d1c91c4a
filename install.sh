#!/bin/sh
# keyward's set-up on a fresh machine (README: "Set up"): installs the build
# dependencies (Debian/Ubuntu, with apt; through sudo when not root), checks
# the Rust toolchain, builds the release binaries, installs keyward and
# keyward-agent where your PATH finds them with their man pages, then runs
# `keyward init`.
#
#   ./install.sh                 # ~/.local/bin (as root: /usr/local/bin), then keyward init
#   ./install.sh --prefix DIR    # DIR/bin and DIR/share/man instead
#   ./install.sh --no-init       # do not run keyward init afterwards
#   ./install.sh --deps-only     # install the build dependencies and stop (tests/ci.sh)
#
# Rust: 1.89 or newer (the workspace's rust-version; edition 2024), with cargo.
# Debian's packaged rustc is older: install it with rustup (https://rustup.rs).
# The PAM module is built too (the build the Debian package ships) but not
# installed: see packaging/pam/README.md, or packaging/deb/build-deb.sh.
set -eu
cd "$(dirname "$0")"

# What the build needs: a C toolchain and linker (gcc, libc6-dev), pkg-config
# and libpcsclite-dev for pcsc-sys (YubiKeys), libpam0g-dev for the PAM
# module (links libpam), libdbus-1-dev for D-Bus (keychain, logind).
BUILD_PACKAGES="gcc libc6-dev pkg-config libpcsclite-dev libpam0g-dev libdbus-1-dev"

usage() {
    sed -n '2,16s/^# \{0,1\}//p' "$0"
}

deps_only=no
run_init=yes
prefix=
while [ $# -gt 0 ]; do
    case "$1" in
        --deps-only) deps_only=yes ;;
        --no-init) run_init=no ;;
        --prefix)
            [ $# -ge 2 ] || { echo "install.sh: --prefix needs a directory" >&2; exit 2; }
            prefix=$2
            shift
            ;;
        --prefix=*) prefix=${1#--prefix=} ;;
        -h | --help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

say() { printf '==> %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "installing packages needs root, and sudo is not installed: run as root: $*"
    fi
}

install_deps() {
    if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-query >/dev/null 2>&1; then
        echo "install.sh: not a Debian/Ubuntu system (no apt-get): install the equivalents of" >&2
        echo "  $BUILD_PACKAGES" >&2
        [ "$deps_only" = yes ] && exit 1
        return 0
    fi
    missing=
    for p in $BUILD_PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing="$missing $p"
    done
    if [ -z "$missing" ]; then
        say "build dependencies already installed"
        return 0
    fi
    say "installing build dependencies:$missing"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # shellcheck disable=SC2086
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

# The minimum Rust version: the workspace's rust-version.
min_rust() {
    sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml | head -n 1
}

# version_ge A B: whether dotted version A >= B.
version_ge() {
    [ "$(printf '%s\n%s\n' "$2" "$1" | sort -t. -k1,1n -k2,2n -k3,3n | head -n 1)" = "$2" ]
}

check_rust() {
    need=$(min_rust)
    if ! command -v cargo >/dev/null 2>&1 || ! command -v rustc >/dev/null 2>&1; then
        die "cargo and rustc $need or newer are needed: install them with rustup (https://rustup.rs), then run ./install.sh again"
    fi
    have=$(rustc --version | awk '{print $2}')
    have=${have%%-*}
    version_ge "$have" "$need" ||
        die "rustc $have is too old: keyward needs $need or newer (rustup update)"
    say "rustc $have (keyward needs $need or newer)"
}

install_deps
[ "$deps_only" = yes ] && exit 0

check_rust
say "building (release): keyward, keyward-agent, pam_keyward"
cargo build --release --locked -p keyward -p keyward-agent -p pam_keyward

if [ -z "$prefix" ]; then
    if [ "$(id -u)" = 0 ]; then prefix=/usr/local; else prefix=$HOME/.local; fi
fi
bindir=$prefix/bin
mandir=$prefix/share/man
say "installing into $bindir and $mandir"
install -d "$bindir" "$mandir/man1" "$mandir/man5"
# git-credential-keyward: what git runs for `credential.helper = keyward`.
install -m 0755 target/release/keyward target/release/keyward-agent target/release/git-credential-keyward "$bindir/"
pages=$(mktemp -d)
trap 'rm -rf "$pages"' EXIT
target/release/keyward manpage --dir "$pages" >/dev/null
install -m 0644 "$pages"/*.1 "$mandir/man1/"
install -m 0644 "$pages"/*.5 "$mandir/man5/"
rm -rf "$pages"
trap - EXIT

case ":$PATH:" in
    *":$bindir:"*) ;;
    *)
        echo "install.sh: note: $bindir is not on your PATH; add it, e.g. in ~/.profile:" >&2
        # shellcheck disable=SC2016
        printf '  export PATH="%s:$PATH"\n' "$bindir" >&2
        ;;
esac
say "installed: $("$bindir/keyward" --version) ($bindir/keyward, $bindir/keyward-agent; man keyward)"

if [ "$run_init" = no ]; then
    exit 0
fi
if ! [ -t 0 ] || ! [ -t 1 ]; then
    say "not on a terminal: run \`keyward init\` yourself to create your account"
    exit 0
fi
if "$bindir/keyward" status --json 2>/dev/null | grep -q '"state":"uninitialized"'; then
    say "keyward init"
    exec "$bindir/keyward" init
fi
say "not running keyward init: an account exists already or the agent did not answer (keyward status)"
