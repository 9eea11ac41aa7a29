#!/usr/bin/env bash
# Builds the Debian package target/debian/capstan_<version>-1_amd64.deb with dpkg-deb, from a
# capstan binary that is already built. `make deb` builds the release binary and runs this.
#
#   packaging/build-deb.sh                                  # target/release/capstan + images
#   BIN=target/debug/capstan NO_IMAGES=1 packaging/build-deb.sh   # quick build, for tests
#
# Environment:
#   BIN=FILE      the capstan binary (default target/release/capstan); the package holds a
#                 stripped copy
#   OUT=DIR       where the .deb goes (default target/debian); the script prints its path
#   NO_IMAGES=1   leave out /usr/share/capstan/images (otherwise `docker save` of capstan/busybox,
#                 capstan/redis and capstan/http from the local engine; `make images` builds them)
#   SOURCE_DATE_EPOCH  timestamp of the files (default: the last git commit's)
#
# Needs dpkg-deb, strip (binutils), gzip, and dpkg-shlibdeps (dpkg-dev) or objdump for Depends.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

die() { echo "build-deb: $*" >&2; exit 1; }

for tool in dpkg-deb strip gzip; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (apt-get install dpkg binutils gzip)"
done

# The version of the workspace: [workspace.package] version in the root Cargo.toml.
version=$(awk '
  /^\[/ { section = $0 }
  section == "[workspace.package]" && $1 == "version" { gsub(/[" ]/, "", $3); print $3; exit }
' "$root/Cargo.toml")
[ -n "$version" ] || die "no [workspace.package] version in $root/Cargo.toml"
# DEB_REVISION (default 1) lets the upgrade tests build a newer package of the same tree.
revision=${DEB_REVISION:-1}
case "$revision" in ''|*[!0-9]*) die "DEB_REVISION must be a number, not $revision" ;; esac
debversion="$version-$revision"

# The changelog is kept by hand; its newest entry must be this version (revision 1).
changelog_version=$(sed -n '1s/^capstan (\([^)]*\)).*/\1/p' "$here/debian/changelog")
[ "$changelog_version" = "$version-1" ] \
  || die "packaging/debian/changelog starts with $changelog_version, not $version-1: add an entry for $version-1"

bin=${BIN:-$root/target/release/capstan}
[ -f "$bin" ] || die "no capstan binary at $bin: build it (cargo build --release --bin capstan, or make deb), or set BIN="
objdump -f "$bin" 2>/dev/null | grep -q 'x86-64' || die "$bin is not an x86-64 ELF binary"
out=${OUT:-$root/target/debian}
mkdir -p "$out"
out=$(cd "$out" && pwd)

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

work=$(mktemp -d "${TMPDIR:-/tmp}/capstan-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
# dpkg-shlibdeps wants the debhelper layout: debian/control and the tree in debian/<package>.
pkg="$work/debian/capstan"
mkdir -p "$pkg"
chmod 0755 "$work" "$work/debian" "$pkg"
umask 022

# Files on an installed node (docs/ARCHITECTURE.md, install design).
install -D -m 0755 "$bin" "$pkg/usr/bin/capstan"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$pkg/usr/bin/capstan"
install -d -m 0755 "$pkg/usr/lib/systemd/system"
install -m 0644 "$here"/systemd/*.service "$here"/systemd/*.target "$here"/systemd/*.path "$pkg/usr/lib/systemd/system/"
# What capstan-upgrade.service runs (capstan cluster upgrade).
install -D -m 0755 "$here/upgrade-node" "$pkg/usr/lib/capstan/upgrade-node"
install -D -m 0644 "$here/config.yaml" "$pkg/etc/capstan/config.yaml"
install -D -m 0755 "$here/install.sh" "$pkg/usr/share/capstan/install.sh"
install -D -m 0755 "$here/capstan-uninstall" "$pkg/usr/sbin/capstan-uninstall"
install -D -m 0644 "$here/debian/copyright" "$pkg/usr/share/doc/capstan/copyright"
gzip -9n <"$here/debian/changelog" >"$pkg/usr/share/doc/capstan/changelog.Debian.gz"
chmod 0644 "$pkg/usr/share/doc/capstan/changelog.Debian.gz"
install -d -m 0755 "$pkg/usr/share/man/man1"
gzip -9n <"$here/capstan.1" >"$pkg/usr/share/man/man1/capstan.1.gz"
chmod 0644 "$pkg/usr/share/man/man1/capstan.1.gz"
install -d -m 0755 "$pkg/usr/share/man/man8"
gzip -9n <"$here/capstan-uninstall.8" >"$pkg/usr/share/man/man8/capstan-uninstall.8.gz"
chmod 0644 "$pkg/usr/share/man/man8/capstan-uninstall.8.gz"
# lintian findings that are wrong for this package, each with its reason (lint-deb.sh).
install -D -m 0644 "$here/debian/lintian-overrides" "$pkg/usr/share/lintian/overrides/capstan"

if [ "${NO_IMAGES:-}" != 1 ]; then
  images=(capstan/busybox capstan/redis capstan/http)
  command -v docker >/dev/null 2>&1 || die "docker is missing: install docker.io, or set NO_IMAGES=1"
  for image in "${images[@]}"; do
    docker image inspect "$image" >/dev/null 2>&1 || die "no image $image in the local engine: run make images (or set NO_IMAGES=1)"
  done
  install -d -m 0755 "$pkg/usr/share/capstan/images"
  docker save -o "$pkg/usr/share/capstan/images/capstan-images.tar" "${images[@]}"
  chmod 0644 "$pkg/usr/share/capstan/images/capstan-images.tar"
fi

# Depends: what the binary links (libc6, libgcc-s1 and their minimum versions), and systemd.
if command -v dpkg-shlibdeps >/dev/null 2>&1; then
  printf 'Source: capstan\n\nPackage: capstan\nArchitecture: amd64\n' >"$work/debian/control"
  shlibs=$(cd "$work" && dpkg-shlibdeps -O -e debian/capstan/usr/bin/capstan 2>/dev/null)
  shlibs=${shlibs#shlibs:Depends=}
else
  # Without dpkg-dev: the newest GLIBC_ symbol version the binary needs, and libgcc_s.
  command -v objdump >/dev/null 2>&1 || die "need dpkg-shlibdeps (dpkg-dev) or objdump (binutils) to compute Depends"
  glibc=$(objdump -T "$pkg/usr/bin/capstan" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
  [ -n "$glibc" ] || die "cannot find the glibc version $bin needs"
  shlibs="libc6 (>= $glibc)"
  for needed in $(objdump -p "$pkg/usr/bin/capstan" | awk '$1 == "NEEDED" { print $2 }'); do
    case "$needed" in
      libc.so.6 | libm.so.6 | libpthread.so.0 | libdl.so.2 | librt.so.1 | ld-linux-x86-64.so.2) ;;
      libgcc_s.so.1) shlibs="$shlibs, libgcc-s1 (>= 4.2)" ;;
      *) die "$bin links $needed: install dpkg-dev so dpkg-shlibdeps can name its package" ;;
    esac
  done
fi
[ -n "$shlibs" ] || die "could not compute the binary's library dependencies"
depends="$shlibs, systemd"

installed_size=$(du -sk --apparent-size "$pkg" | cut -f1)

install -d -m 0755 "$pkg/DEBIAN"
sed -e "s/@VERSION@/$debversion/" -e "s/@DEPENDS@/$depends/" -e "s/@INSTALLED_SIZE@/$installed_size/" \
  "$here/debian/control.in" >"$pkg/DEBIAN/control"
install -m 0644 "$here/debian/conffiles" "$pkg/DEBIAN/conffiles"
for script in postinst prerm postrm; do
  install -m 0755 "$here/debian/$script" "$pkg/DEBIAN/$script"
done
# md5sums of every file but the conffiles (all of /etc; dpkg keeps their hashes itself), as
# dh_md5sums does.
(cd "$pkg" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' \
  | LC_ALL=C sort -z | xargs -0 md5sum) >"$pkg/DEBIAN/md5sums"
chmod 0644 "$pkg/DEBIAN/md5sums"

deb="$out/capstan_${debversion}_amd64.deb"
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
echo "$deb"
