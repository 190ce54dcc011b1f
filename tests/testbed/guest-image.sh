#!/usr/bin/env bash
# Builds the testbed's appliance guest: a bootable raw disk image holding Debian's cloud
# kernel, an initramfs of busybox with `guest-init` as /init, and SYSLINUX to boot them
# from BIOS (SeaBIOS boots the disk; fabrik renders no direct kernel boot, so the disk is
# bootable as a cloud image is). Prints the image's path on stdout.
#
#   guest-image.sh            build once, cached in $FABRIK_TESTBED_DIR/guest/<key>/
#
# The key is the kernel package's version and a hash of this script, `guest-init` and the
# busybox binary: a change to any of them builds a new image, an unchanged one is reused
# (CI builds it once per machine). Needs: apt-get (to download the kernel package, which
# is not installed), dpkg-deb, cpio, gzip, busybox-static, syslinux, mtools, dosfstools
# (scripts/setup-testbed.sh installs them).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
base_dir="${FABRIK_TESTBED_DIR:-/tmp/fabrik-testbed}"
say() { echo "guest-image: $*" >&2; }
die() { say "$*"; exit 1; }

for t in apt-get apt-cache dpkg-deb cpio gzip busybox syslinux mcopy mkfs.vfat sha256sum; do
  command -v "$t" >/dev/null 2>&1 || die "missing $t: run scripts/setup-testbed.sh"
done

# The cloud flavour: smaller than the generic kernel, and made for virtio guests.
kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
[ -n "$kpkg" ] || die "apt knows no linux-image-cloud-amd64 (run apt-get update)"
kver=$(apt-cache policy "$kpkg" | awk '/Candidate:/ {print $2}')
busybox_bin=$(command -v busybox)
key=$(cat "$0" "$here/guest-init" "$busybox_bin" | sha256sum | cut -c1-12)
out="$base_dir/guest/$kpkg-$kver-$key"
if [ -s "$out/disk.img" ]; then
  echo "$out/disk.img"
  exit 0
fi

mkdir -p "$base_dir/guest"
work=$(mktemp -d "$base_dir/guest/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
say "building $out/disk.img from $kpkg $kver"
# apt's sandbox user cannot write to root's temporary directories; the download is a
# signed package from the machine's own apt lists either way.
(cd "$work" && apt-get download -qq -o APT::Sandbox::User=root "$kpkg=$kver" >&2)
dpkg-deb -x "$work"/linux-image-*.deb "$work/pkg"
modules=$(echo "$work"/pkg/lib/modules/*/kernel)

# The modules the guest needs for its virtio disk and NIC and for the seed's FAT. There
# is no modprobe in the guest: each is insmod-ed after what its `depends=` names.
wanted="virtio_pci virtio_blk virtio_net vfat nls_cp437 nls_ascii"
root="$work/root"
mkdir -p "$root/bin" "$root/modules"
order=""
add_module() {
  local m=$1 f d
  case " $order " in *" $m "*) return 0 ;; esac
  f=$(find "$modules" -name "$m.ko" | head -n 1)
  [ -n "$f" ] || die "$kpkg has no $m.ko"
  for d in $(grep -a -o 'depends=[a-z0-9_,-]*' "$f" | head -n 1 | cut -d= -f2 | tr ',' ' '); do
    add_module "$d"
  done
  cp "$f" "$root/modules/"
  order="$order $m"
}
for m in $wanted; do add_module "$m"; done
echo $order | tr ' ' '\n' >"$root/modules.order"
cp "$busybox_bin" "$root/bin/busybox"
install -m 0755 "$here/guest-init" "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) >"$work/initrd.gz"

cat >"$work/syslinux.cfg" <<'EOF'
DEFAULT guest
PROMPT 0
TIMEOUT 0
LABEL guest
  KERNEL vmlinuz
  INITRD initrd.gz
  APPEND console=ttyS0 panic=-1 quiet
EOF
# A FAT filesystem over the whole disk (no partition table): SeaBIOS loads its boot
# sector, which SYSLINUX wrote, as it would a partition's.
kernel=$(echo "$work"/pkg/boot/vmlinuz-*)
mib=$(( ($(stat -c %s "$kernel") + $(stat -c %s "$work/initrd.gz")) / 1048576 + 8 ))
truncate -s "${mib}M" "$work/disk.img"
mkfs.vfat -n FABRIKBOOT "$work/disk.img" >/dev/null
syslinux --install "$work/disk.img"
mcopy -i "$work/disk.img" "$kernel" ::vmlinuz
mcopy -i "$work/disk.img" "$work/initrd.gz" ::initrd.gz
mcopy -i "$work/disk.img" "$work/syslinux.cfg" ::syslinux.cfg
mkdir -p "$out"
mv "$work/disk.img" "$out/disk.img.tmp"
mv "$out/disk.img.tmp" "$out/disk.img"
echo "$out/disk.img"
