#!/usr/bin/env bash
# Installs what fabrik needs to build and test on a fresh Debian machine (run as root,
# or with sudo available). Safe to run again: it installs only what is missing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Build: a C toolchain and pkg-config for -sys crates, libvirt's headers for the libvirt
# driver. Tests: cloud-init (`cloud-init schema` checks every user-data the examples
# make), util-linux's blkid (reads a seed image's label as cloud-init finds it),
# `virt-xml-validate` (libvirt-clients, with xmllint from libxml2-utils) checks every
# rendered document against libvirt's schemas (tests/hardware_render.rs). libxml2-dev:
# the twins check a domain against libvirt's schema with libvirt's own libxml2, linked
# by name (src/sim/virt/schema.rs).
# protobuf-compiler: the etcd-client crate (`--coordination etcd://…`) compiles etcd's
# gRPC definitions with protoc at build time. etcd-server: tests/ha_testbed.rs and
# benches/ha_handover.rs start their own etcd on loopback (issue 18).
packages=(build-essential pkg-config libvirt-dev libxml2-dev libvirt-clients libxml2-utils cloud-init util-linux protobuf-compiler etcd-server)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is not installed; install a Rust toolchain (1.85 or newer) with rustup" >&2
  exit 1
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then
      rustup component add "$component"
    else
      echo "setup: cargo ${component} is missing and there is no rustup to add it" >&2
      exit 1
    fi
  fi
done
# The real test hosts (libvirtd, QEMU/KVM, namespaces); FABRIK_TESTBED=0 skips them.
if [ "${FABRIK_TESTBED:-1}" != "0" ]; then
  bash "$(dirname "$0")/setup-testbed.sh"
fi
echo "setup: ready ($(cargo --version))" >&2
