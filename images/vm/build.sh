#!/usr/bin/env bash
# shellcheck disable=SC2016 # the mmdebstrap hooks are single-quoted on purpose: mmdebstrap expands $1
# Builds the Capstan VM image, a BIOS-bootable qcow2, offline from Debian's packages, the way
# that works on the build machines (no KVM, no device-mapper, no partition scan on loop
# devices, no vfat; see ../shared/reference/packaging-trials.md §2):
#   mmdebstrap rootfs → `mke2fs -d` ext4 partition → MBR + extlinux → `qemu-img convert` qcow2.
# Inside: the cloud kernel, systemd, networkd (DHCP), Docker, the capstan package when DEB is
# given (kept in /var/cache/capstan/capstan.deb for the installer), capstan-bootstrap and its
# first-boot unit, which reads /etc/capstan/bootstrap.env (cloud-init's write_files in the full
# variant) or the QEMU fw_cfg entry opt/capstan/bootstrap.env, and prints
# "capstan: node ready (role=...)" on the serial console.
#
#   images/vm/build.sh                       # lean variant (no cloud-init), no package
#   DEB=target/debian/capstan_0.1.0-1_amd64.deb VARIANT=full images/vm/build.sh
#
# Environment: DEB (the .deb to put inside), VARIANT=lean|full (full adds cloud-init),
# OUT (default target/images), SUITE (default bookworm), COMPRESS=0 for a faster, larger qcow2,
# FREE_MIB (free room in the root filesystem beyond the rootfs's own, default 3072).
# Writes OUT/capstan-<version>[-lean].qcow2 and its .sha256. Needs root, mmdebstrap, e2fsprogs,
# fdisk (sfdisk), extlinux, syslinux-common and qemu-utils.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
die() { echo "vm-image: $*" >&2; exit 1; }
say() { echo "vm-image: $*" >&2; }

VARIANT=${VARIANT:-lean}
SUITE=${SUITE:-bookworm}
OUT=${OUT:-$root/target/images}
COMPRESS=${COMPRESS:-1}
DEB=${DEB:-}
case "$VARIANT" in lean | full) ;; *) die "VARIANT is lean or full, not $VARIANT" ;; esac
[ -z "$DEB" ] || [ -f "$DEB" ] || die "no package $DEB"
[ "$(id -u)" -eq 0 ] || die "run as root (mke2fs -d keeps ownership, extlinux needs a loop mount)"
for tool in mmdebstrap mke2fs sfdisk extlinux qemu-img; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (apt-get install mmdebstrap e2fsprogs fdisk extlinux syslinux-common qemu-utils)"
done
mbr=/usr/lib/EXTLINUX/mbr.bin
[ -f "$mbr" ] || die "$mbr is missing (apt-get install extlinux syslinux-common)"

version=$(awk '/^\[/ { s = $0 } s == "[workspace.package]" && /^version *=/ { gsub(/[" ]/, "", $3); print $3; exit }' "$root/Cargo.toml")
[ -n "$version" ] || die "no [workspace.package] version in Cargo.toml"
name=capstan-$version
[ "$VARIANT" = full ] || name=$name-lean

sources=/etc/apt/sources.list.d/debian.sources
[ -f "$sources" ] || sources=/etc/apt/sources.list
mkdir -p "$OUT"
work=$(mktemp -d "${TMPDIR:-/tmp}/capstan-vm.XXXXXX")
mnt=
cleanup() {
  if [ -n "$mnt" ] && mountpoint -q "$mnt"; then umount "$mnt" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

packages=linux-image-cloud-amd64,systemd-sysv,udev,kmod,iproute2,iputils-ping,netbase,ca-certificates,curl,sudo,e2fsprogs,initramfs-tools,systemd-resolved,libnss-myhostname,util-linux,docker.io,iptables,nftables,openssh-server
[ "$VARIANT" = lean ] || packages=$packages,cloud-init,python3

hooks=(
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --customize-hook='echo capstan-node > "$1/etc/hostname"'
  # Every VM makes its own ssh host keys and machine id.
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*'
  --customize-hook='chroot "$1" systemctl enable ssh-keygen-firstboot.service'
  --customize-hook="upload '$root/terraform/modules/core/files/capstan-bootstrap.sh' /usr/local/sbin/capstan-bootstrap"
  --customize-hook='chmod 0755 "$1/usr/local/sbin/capstan-bootstrap"'
  --customize-hook="upload '$here/files/capstan-firstboot.service' /etc/systemd/system/capstan-firstboot.service"
  --customize-hook="upload '$here/files/20-dhcp.network' /etc/systemd/network/20-dhcp.network"
  --customize-hook='chroot "$1" systemctl enable capstan-firstboot.service systemd-networkd.service systemd-resolved.service'
  --customize-hook='echo qemu_fw_cfg > "$1/etc/modules-load.d/capstan-fw-cfg.conf"'
  # A NIC without DHCP must not hold the boot up for two minutes.
  --customize-hook='mkdir -p "$1/etc/systemd/system/systemd-networkd-wait-online.service.d" && printf "[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=20\n" > "$1/etc/systemd/system/systemd-networkd-wait-online.service.d/any.conf"'
  --customize-hook='printf "LABEL=capstan-root / ext4 defaults,errors=remount-ro 0 1\n" > "$1/etc/fstab"'
)
# ssh host keys, once, on first boot.
cat >"$work/ssh-keygen-firstboot.service" <<'UNIT'
[Unit]
Description=Make this machine's ssh host keys
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
UNIT
hooks=(--customize-hook="upload '$work/ssh-keygen-firstboot.service' /etc/systemd/system/ssh-keygen-firstboot.service" "${hooks[@]}")
if [ -n "$DEB" ]; then
  hooks+=(
    --customize-hook='mkdir -p "$1/var/cache/capstan"'
    --customize-hook="upload '$DEB' /var/cache/capstan/capstan.deb"
    --customize-hook='chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends /var/cache/capstan/capstan.deb'
  )
fi

say "rootfs ($VARIANT, $SUITE) with mmdebstrap"
TMPDIR=$work mmdebstrap --quiet --variant=minbase --include="$packages" "${hooks[@]}" \
  "$SUITE" "$work/rootfs" "$sources"

# extlinux boots the kernel and initrd by their real names.
kernel=$(find "$work/rootfs/boot" -maxdepth 1 -name "vmlinuz-*" -printf "%f\n" | sort -V | tail -n 1)
initrd=initrd.img-${kernel#vmlinuz-}
[ -f "$work/rootfs/boot/$initrd" ] || die "no /boot/$initrd in the rootfs"
mkdir -p "$work/rootfs/boot/extlinux"
cat >"$work/rootfs/boot/extlinux/extlinux.conf" <<CONF
DEFAULT capstan
TIMEOUT 1
PROMPT 0
LABEL capstan
  LINUX /boot/$kernel
  INITRD /boot/$initrd
  APPEND root=LABEL=capstan-root rw console=tty0 console=ttyS0,115200n8 net.ifnames=0
CONF

# The partition: the rootfs's size plus room (`capstan doctor` wants 2 GiB free for /var/lib;
# unused blocks cost nothing in the qcow2), then the disk: 1 MiB for the MBR, the partition.
used_mib=$(du -sm "$work/rootfs" | cut -f1)
part_mib=$((used_mib + used_mib / 2 + ${FREE_MIB:-3072}))
say "ext4 partition of $part_mib MiB (rootfs $used_mib MiB)"
mke2fs -q -t ext4 -L capstan-root -d "$work/rootfs" "$work/part.raw" "${part_mib}M"
rm -rf "$work/rootfs"
truncate -s $(((part_mib + 1) * 1024 * 1024)) "$work/disk.raw"
printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$work/disk.raw"
dd if="$work/part.raw" of="$work/disk.raw" bs=1M seek=1 conv=notrunc status=none
rm -f "$work/part.raw"
mnt=$work/mnt
mkdir -p "$mnt"
mount -o loop,offset=1048576 "$work/disk.raw" "$mnt"
extlinux --install "$mnt/boot/extlinux" >/dev/null
umount "$mnt"
mnt=
dd if="$mbr" of="$work/disk.raw" bs=440 count=1 conv=notrunc status=none

say "qcow2"
args=(convert -O qcow2)
[ "$COMPRESS" = 0 ] || args+=(-c)
qemu-img "${args[@]}" "$work/disk.raw" "$OUT/$name.qcow2.part"
mv "$OUT/$name.qcow2.part" "$OUT/$name.qcow2"
(cd "$OUT" && sha256sum "$name.qcow2" >"$name.qcow2.sha256")
say "wrote $OUT/$name.qcow2 ($(du -h "$OUT/$name.qcow2" | cut -f1))"
echo "$OUT/$name.qcow2"
