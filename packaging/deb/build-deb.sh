#!/bin/sh
# Builds keyward's Debian package: the agent, the CLI, the PAM module (in the
# multiarch security directory), the systemd user units, man pages and shell
# completions. Plain dpkg-deb: no extra tooling to install.
#
#   packaging/deb/build-deb.sh            # release build, writes target/debian/keyward_<version>_<arch>.deb
#   PROFILE=dev packaging/deb/build-deb.sh   # faster, unoptimised (for quick checks only)
#
# Install: sudo dpkg -i target/debian/keyward_*.deb   Remove: sudo dpkg -r keyward
set -eu
cd "$(dirname "$0")/../.."

PROFILE=${PROFILE:-release}
case "$PROFILE" in
    release) profile_dir=release ;;
    dev) profile_dir=debug ;;
    *) echo "PROFILE must be release or dev" >&2; exit 2 ;;
esac
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -dumpmachine)

echo "==> building keyward $version ($PROFILE) for $arch"
cargo build --locked --profile "$PROFILE" -p keyward -p keyward-agent -p pam_keyward
bin=target/$profile_dir

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/usr/lib/$multiarch/security" \
    "$stage/usr/lib/systemd/user" "$stage/usr/share/man/man1" "$stage/usr/share/man/man5" "$stage/usr/share/man/man8" \
    "$stage/usr/share/bash-completion/completions" "$stage/usr/share/zsh/vendor-completions" \
    "$stage/usr/share/fish/vendor_completions.d" "$stage/usr/share/doc/keyward" \
    "$stage/usr/share/pam-configs"

install -m 0755 "$bin/keyward" "$bin/keyward-agent" "$bin/git-credential-keyward" "$stage/usr/bin/"
strip --strip-unneeded "$stage/usr/bin/keyward" "$stage/usr/bin/keyward-agent" \
    "$stage/usr/bin/git-credential-keyward" 2>/dev/null || true
install -m 0644 "$bin/libpam_keyward.so" "$stage/usr/lib/$multiarch/security/pam_keyward.so"
strip --strip-unneeded "$stage/usr/lib/$multiarch/security/pam_keyward.so" 2>/dev/null || true
install -m 0644 packaging/systemd/keyward-agent.service packaging/systemd/keyward-agent.socket \
    "$stage/usr/lib/systemd/user/"
# Every page (keyward(1), one per command, keyward-agent(1), keyward.toml(5)),
# made by the binary being shipped.
"$bin/keyward" manpage --dir "$stage/man" > /dev/null
for page in "$stage"/man/*.[15]; do
    section=${page##*.}
    gzip -9n < "$page" > "$stage/usr/share/man/man$section/$(basename "$page").gz"
done
rm -rf "$stage/man"
if [ -f packaging/pam/pam_keyward.8 ]; then
    gzip -9n < packaging/pam/pam_keyward.8 > "$stage/usr/share/man/man8/pam_keyward.8.gz"
fi
if [ -f packaging/pam/pam-configs/keyward ]; then
    install -m 0644 packaging/pam/pam-configs/keyward "$stage/usr/share/pam-configs/keyward"
fi
"$bin/keyward" completions bash > "$stage/usr/share/bash-completion/completions/keyward"
"$bin/keyward" completions zsh > "$stage/usr/share/zsh/vendor-completions/_keyward"
"$bin/keyward" completions fish > "$stage/usr/share/fish/vendor_completions.d/keyward.fish"
install -m 0644 README.md docs/SECURITY.md docs/PROTOCOL.md "$stage/usr/share/doc/keyward/"
cat > "$stage/usr/share/doc/keyward/copyright" <<COPY
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: keyward
License: MIT or Apache-2.0
COPY

size=$(du -sk "$stage/usr" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: keyward
Version: $version
Architecture: $arch
Maintainer: keyward developers <keyward@example.invalid>
Installed-Size: $size
Depends: libc6, libgcc-s1, libpam0g, libpcsclite1
Recommends: pcscd
Suggests: gnome-keyring, yubikey-manager
Section: utils
Priority: optional
Description: hardware-backed key agent: your secrets, unlocked once
 keyward-agent holds one user's unlocked secrets in locked memory and serves
 them to local programs over a private socket. Unlocking needs a Master
 Password and a Secret Key, which the device keeps wrapped by a YubiKey (PIV),
 the OS keychain, or a 0600 file. Recovery codes and a printable Emergency Kit
 get a locked-out user back in. Includes the keyward CLI, the PAM module
 pam_keyward.so (unlock at login) and systemd user units (socket activation).
CONTROL
(cd "$stage" && find usr -type f -exec md5sum {} + > DEBIAN/md5sums)

mkdir -p target/debian
out="target/debian/keyward_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$out" >/dev/null
echo "$out"
