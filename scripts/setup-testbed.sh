#!/usr/bin/env bash
# Installs what the real test hosts need (tests/testbed/testbed.sh): libvirtd with the
# QEMU driver, QEMU for x86 with KVM, iproute2 for network namespaces, dnsmasq for
# libvirt networks; QEMU for aarch64 (TCG) with its UEFI (AAVMF) for Grace-shaped guests
# (tests/aarch64_testbed.rs); busybox, SYSLINUX, mtools, dosfstools and cpio to build the
# appliance guest's boot disk (tests/testbed/guest-image.sh). Run as root (or with sudo). Safe to run again: it installs only what
# is missing and creates only what does not exist.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

packages=(
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
  qemu-system-x86 iproute2 iptables dnsmasq-base util-linux procps
  qemu-system-arm qemu-efi-aarch64
  busybox-static syslinux syslinux-common mtools dosfstools cpio
)

missing=()
for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-testbed: installing ${missing[*]}" >&2
  as_root apt-get update -qq
  # qemu-utils is deliberately not in this list: some machines carry a newer qemu-utils
  # from outside Debian's lists, and naming it beside qemu-system-x86 makes apt refuse
  # ("held broken packages"). Installing qemu-system-x86 alone replaces it; qemu-img
  # comes back below, from Debian, in its own apt-get.
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# qemu-img: libvirt's dir pools use it for qcow2 volumes and for cloning.
if ! command -v qemu-img >/dev/null 2>&1; then
  echo "setup-testbed: installing qemu-utils" >&2
  as_root apt-get install -y -qq --no-install-recommends qemu-utils >/dev/null
fi

# libvirtd's QEMU driver runs guests as libvirt-qemu:kvm and refuses to start without
# them: Debian builds it with libvirt-qemu:libvirt-qemu as the default user and group and
# resolves both before it reads qemu.conf, so the `libvirt-qemu` group must exist too.
# libvirt-daemon-system creates them; without it (we do not install its systemd units)
# nothing does.
getent group kvm >/dev/null || as_root groupadd --system kvm
getent group libvirt-qemu >/dev/null || as_root groupadd --system libvirt-qemu
if ! getent passwd libvirt-qemu >/dev/null; then
  as_root useradd --system --no-create-home --home-dir /var/lib/libvirt \
    --shell /usr/sbin/nologin --gid kvm libvirt-qemu
fi
if [ -e /dev/kvm ]; then
  as_root chgrp kvm /dev/kvm
  as_root chmod 0660 /dev/kvm
fi

# Hugepages: guests with `<memoryBacking><hugepages/>` need 2 MiB pages reserved and
# hugetlbfs mounted before libvirtd starts. A small pool (128 MiB) is enough for the
# tests' tiny guests and costs little; FABRIK_TESTBED_HUGEPAGES overrides the count.
hugepages="${FABRIK_TESTBED_HUGEPAGES:-64}"
nr_file=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
if [ -w "$nr_file" ] || [ "$(id -u)" -ne 0 ]; then
  current="$(cat "$nr_file" 2>/dev/null || echo 0)"
  if [ "$current" -lt "$hugepages" ]; then
    echo "$hugepages" | as_root tee "$nr_file" >/dev/null || echo "setup-testbed: could not reserve hugepages" >&2
  fi
fi
if ! grep -qs ' /dev/hugepages hugetlbfs ' /proc/mounts; then
  as_root mkdir -p /dev/hugepages
  as_root mount -t hugetlbfs hugetlbfs /dev/hugepages || echo "setup-testbed: could not mount hugetlbfs" >&2
fi

# The distribution's own libvirtd (if its units started one) is not used by the tests;
# each test host runs a private one. Leave the system's alone.
if [ ! -e /dev/kvm ]; then
  echo "setup-testbed: /dev/kvm is missing: guests cannot run under KVM on this machine" >&2
fi
echo "setup-testbed: ready ($(libvirtd --version 2>/dev/null | head -1), $(qemu-system-x86_64 --version | head -1))" >&2
