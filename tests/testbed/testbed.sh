#!/usr/bin/env bash
# Private libvirt hosts on one machine, for tests that need what only a real host shows.
#
#   testbed.sh start  [-n NAME] HOST...   start hosts (idempotent: running ones are kept)
#   testbed.sh stop   [-n NAME] [HOST...] stop hosts (all of the testbed when none named)
#   testbed.sh status [-n NAME]           one line per host: name, state, URI, address
#   testbed.sh uri    [-n NAME] HOST      the host's libvirt URI
#   testbed.sh guest  [-n NAME] HOST      define and start a tiny KVM guest, print its start time
#   testbed.sh kill-libvirtd  [-n NAME] HOST  SIGKILL the host's libvirtd; guests, state stay
#   testbed.sh start-libvirtd [-n NAME] HOST  start its libvirtd again on the same state
#
# A testbed is a set of hosts sharing a name (default `tb`). Each host is
#   - a network namespace `fabrik-<name>-<host>` with `lo` and `eth0`;
#   - a mount namespace (`unshare -m`) with tmpfs on /run and /etc/libvirt, /run/libvirt,
#     /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt bind-mounted from
#     `<dir>/<name>/<host>/` (dir: $FABRIK_TESTBED_DIR, default /tmp/fabrik-testbed);
#     /run/libvirt (running guests' status) outlives the daemon, so a libvirtd killed and
#     started again (`kill-libvirtd`, `start-libvirtd`) finds its running guests, as on
#     a real host;
#   - its own libvirtd (QEMU driver), whose sockets live in the host's directory, so it is
#     reachable from outside its namespaces at
#     `qemu:///system?socket=<dir>/<name>/<host>/libvirt-sock`.
# The hosts' `eth0` are joined by veth pairs to a bridge in a hub namespace
# `fabrik-<name>`, with addresses 10.77.0.<i>/24 (i: the host's position, from 1), so they
# reach each other (for VXLAN between them).
#
# `stop` kills every process in a host's network namespace (libvirtd, QEMU, dnsmasq),
# deletes the namespace and the host's directory: nothing is left for the next run to
# trip on. A host whose libvirtd died is cleaned up and started again by `start`.
#
# Output: `start` and `status` print `host state uri address netns` per host on stdout;
# progress and errors go to stderr. Exit status 0 on success.
set -euo pipefail

base_dir="${FABRIK_TESTBED_DIR:-/tmp/fabrik-testbed}"
name=tb
# Seconds to wait for a libvirtd to answer; the QEMU driver probes QEMU's capabilities
# at its first start, which takes a few seconds on a slow machine.
ready_timeout_s="${FABRIK_TESTBED_TIMEOUT:-60}"
subnet=10.77.0
# Shared by all testbeds on the machine, kept across runs.
caps_cache="$base_dir/qemu-caps"
qemu_wrapper="$base_dir/bin/qemu-system-x86_64"
halt_firmware="$base_dir/bin/halt-bios.bin"

say() { echo "testbed: $*" >&2; }
die() { say "$*"; exit 1; }

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

need_root() { [ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces, mounts)"; }

check_tools() {
  local missing=()
  for t in ip unshare libvirtd virsh qemu-system-x86_64; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  [ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}: run scripts/setup-testbed.sh"
}

valid_name() {
  # Interface and namespace names stay short and plain: `fabrik-<name>-<host>`.
  [[ "$1" =~ ^[a-z0-9][a-z0-9_]{0,15}$ ]] || die "bad name \`$1\`: use 1-16 of a-z, 0-9, _"
}

tb_dir() { echo "$base_dir/$name"; }
host_dir() { echo "$base_dir/$name/$1"; }
host_ns() { echo "fabrik-$name-$1"; }
hub_ns() { echo "fabrik-$name"; }
host_uri() { echo "qemu:///system?socket=$(host_dir "$1")/libvirt-sock"; }

ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

# The host's position in the testbed, kept in a file so addresses stay stable across
# starts and stops of other hosts.
host_index() {
  local h=$1 f
  f="$(tb_dir)/index"
  touch "$f"
  local i
  i=$(awk -v h="$h" '$1 == h {print $2}' "$f")
  if [ -z "$i" ]; then
    i=$(awk 'BEGIN {m = 0} {if ($2 > m) m = $2} END {print m + 1}' "$f")
    [ "$i" -le 250 ] || die "too many hosts in testbed $name"
    echo "$h $i" >>"$f"
  fi
  echo "$i"
}

host_address() { echo "$subnet.$(host_index "$1")"; }

libvirtd_pid() {
  local f
  f="$(host_dir "$1")/libvirtd.pid"
  [ -s "$f" ] || return 1
  local pid
  pid=$(cat "$f")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

answers() { virsh -q -c "$(host_uri "$1")" version >/dev/null 2>&1; }

ensure_hub() {
  local hub
  hub=$(hub_ns)
  if ! ns_exists "$hub"; then
    ip netns add "$hub"
  fi
  ip -n "$hub" link set lo up
  if ! ip -n "$hub" link show br0 >/dev/null 2>&1; then
    ip -n "$hub" link add br0 type bridge
  fi
  ip -n "$hub" link set br0 up
}

write_config() {
  local d=$1
  mkdir -p "$d/etc/qemu" "$d/lib" "$d/log" "$d/cache" "$d/run"
  # Sockets in the host's directory, so clients outside the mount namespace reach them;
  # only root may connect, without polkit (there is no D-Bus in the namespace).
  cat >"$d/etc/libvirtd.conf" <<EOF
unix_sock_dir = "$d"
unix_sock_group = "root"
unix_sock_ro_perms = "0770"
unix_sock_rw_perms = "0770"
auth_unix_ro = "none"
auth_unix_rw = "none"
listen_tls = 0
listen_tcp = 0
log_level = 3
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
  # QEMU's stdio to plain files rather than virtlogd (one daemon per host is enough);
  # no security driver (no AppArmor profiles for these paths); guests run as
  # libvirt-qemu:kvm as on a real host.
  cat >"$d/etc/qemu.conf" <<'EOF'
stdio_handler = "file"
security_driver = "none"
user = "libvirt-qemu"
group = "kvm"
EOF
}

# QEMU as the hosts' libvirtd runs it: its PATH finds this wrapper first, so it is the
# emulator of every domain that names none (fabrik's); domains naming
# /usr/bin/qemu-system-x86_64 run QEMU unchanged. It makes two changes, for what guests
# without an OS on nested KVM (QEMU 7.2, kernel 6.18) do and no test looks at:
# - `-cpu host` gets `arch-capabilities=off`: QEMU cannot give such a guest the host's
#   ARCH_CAPABILITIES MSR ("failed to set MSR 0x10a"), so no guest of
#   `<cpu mode='host-passthrough'/>`, the CPU fabrik renders, would start;
# - a guest with BIOS firmware (no `<loader>`) runs `halt_firmware` instead of SeaBIOS:
#   its reset vector is `cli; hlt`, so the vCPU sleeps for good. With no disk to boot,
#   SeaBIOS polls its timer between retries and iPXE from the NICs' option ROM spins
#   and soon dies of a KVM emulation failure; either keeps a vCPU busy, and 50 such
#   guests saturate this 2-CPU machine, so every later start (fabrik's or virsh's) waits
#   for CPU. With the halting firmware 50 guests leave the machine ~99% idle.
# A guest with an OS keeps SeaBIOS: one that fabrik gave a cloud-init seed (a disk whose
# volume is `<vm>+cidata`, a name only fabrik's seeds have) is meant to boot and read it
# (tests/guest_testbed.rs). Where the machine's KVM is PVM (`kvm_pvm`, a nested
# hypervisor that runs SeaBIOS but not a stock kernel's switch out of real mode: the
# kernel stops after "Probing EDD"), such a guest runs under TCG instead (`-accel tcg`,
# `-cpu max`): slower, but the same libvirt domain, disks, NIC and bridge.
# Called with the machine-wide caps lock held.
write_qemu_wrapper() {
  local real tmp
  real=$(command -v qemu-system-x86_64)
  mkdir -p "$(dirname "$qemu_wrapper")"
  # 64 KiB (QEMU's smallest BIOS), mapped below 4 GiB: its last 16 bytes are the reset
  # vector, where the CPU starts in real mode: cli (fa), hlt (f4), jmp back to hlt (eb fd).
  tmp=$(mktemp)
  { head -c 65520 /dev/zero; printf '\xfa\xf4\xeb\xfd'; head -c 12 /dev/zero; } >"$tmp"
  replace_if_changed "$tmp" "$halt_firmware" 644 || true
  tmp=$(mktemp)
  # The real binary's mtime is in the text: a new QEMU writes a new wrapper. Only a
  # guest (`-name`) gets the firmware, not libvirt's capability probe; not one with its
  # own (`-bios`, or UEFI in pflash).
  cat >"$tmp" <<EOF
#!/bin/bash
# Written by tests/testbed/testbed.sh for $real of $(stat -c %Y "$real").
args=()
prev=
guest=
firmware=
os=
for a in "\$@"; do
  case "\$a" in *'+cidata"'*) os=1 ;; esac
done
tcg=
if [ -n "\$os" ] && [ -d /sys/module/kvm_pvm ]; then tcg=1; fi
for a in "\$@"; do
  if [ "\$prev" = -cpu ] && [[ "\$a" == host* ]]; then
    if [ -n "\$tcg" ]; then a=max; else a="\$a,arch-capabilities=off"; fi
  fi
  if [ -n "\$tcg" ]; then
    if [ "\$prev" = -accel ] && [ "\$a" = kvm ]; then a=tcg; fi
    a=\${a/accel=kvm/accel=tcg}
  fi
  case "\$a" in -name) guest=1 ;; -bios | *if=pflash*) firmware=1 ;; esac
  args+=("\$a")
  prev=\$a
done
if [ -n "\$guest" ] && [ -z "\$firmware" ] && [ -z "\$os" ]; then args+=(-bios "$halt_firmware"); fi
exec $real "\${args[@]}"
EOF
  # libvirt's cached capabilities hold the emulator's ctime: a new wrapper, a new probe.
  if replace_if_changed "$tmp" "$qemu_wrapper" 755; then rm -rf "$caps_cache"; fi
}

# Moves file $1 over $2 with mode $3 when their contents differ (status 0), else drops
# $1 (status 1), so a file others read is rewritten only when it changes.
replace_if_changed() {
  if cmp -s "$1" "$2"; then
    rm -f "$1"
    return 1
  fi
  chmod "$3" "$1"
  mv "$1" "$2"
}

start_host() {
  local h=$1
  local d ns hub addr i
  d=$(host_dir "$h")
  ns=$(host_ns "$h")
  hub=$(hub_ns)

  if libvirtd_pid "$h" >/dev/null && ns_exists "$ns" && answers "$h"; then
    say "$h: already running"
    return 0
  fi
  # Anything half there (a dead libvirtd, a namespace without a daemon) goes first.
  stop_host "$h" quiet

  i=$(host_index "$h")
  addr="$subnet.$i"
  mkdir -p "$d"
  write_config "$d"
  # libvirtd probes QEMU's capabilities at its first start (seconds of the start time);
  # what one host probed is valid for every host on this machine (libvirt checks the
  # QEMU binary, its own version and the kernel before it trusts the cache). While there
  # is no cache, one host at a time probes (fd 8 holds the machine-wide lock until this
  # host is up) and the others then copy its result.
  mkdir -p "$base_dir"
  exec 8>"$base_dir/qemu-caps.lock"
  flock 8
  write_qemu_wrapper
  if [ -d "$caps_cache" ]; then
    cp -a "$caps_cache/." "$d/cache/"
    exec 8>&-
  fi

  # Each step is checked: this function runs on the left of `||`, where `set -e` does not
  # stop it (a failed step once left a restarted host without its eth0).
  ip netns add "$ns" || { say "$h: cannot add namespace $ns"; return 1; }
  ip -n "$ns" link set lo up || return 1
  # The veth end of an earlier run of this host goes with its namespace, but the kernel
  # deletes it asynchronously: a quick restart could find `h$i` still in the hub.
  ip -n "$hub" link del "h$i" 2>/dev/null || true
  # The veth pair is made inside the hub namespace and its far end moved into the host's,
  # so no name is ever taken in the machine's own namespace.
  ip -n "$hub" link add "h$i" type veth peer name eth0 netns "$ns" || { say "$h: cannot add veth h$i"; return 1; }
  ip -n "$hub" link set "h$i" master br0 up || return 1
  ip -n "$ns" addr add "$addr/24" dev eth0 || return 1
  ip -n "$ns" link set eth0 up || return 1

  if ! launch_libvirtd "$h"; then
    stop_host "$h" quiet
    return 1
  fi
  if [ ! -d "$caps_cache" ] && [ -d "$d/cache/qemu/capabilities" ]; then
    mkdir -p "$caps_cache.tmp.$$"
    cp -a "$d/cache/qemu" "$caps_cache.tmp.$$/"
    mv -T "$caps_cache.tmp.$$" "$caps_cache" 2>/dev/null || rm -rf "$caps_cache.tmp.$$"
  fi
  exec 8>&-
  say "$h: started ($(host_uri "$h"))"
}

# Starts the host's libvirtd in its network namespace (which must exist) on the state in
# its directory, and waits until it answers.
launch_libvirtd() {
  local h=$1 d ns
  d=$(host_dir "$h")
  ns=$(host_ns "$h")

  # `ip netns exec` enters the network namespace (and remounts /sys for it); `unshare -m`
  # gives the daemon its own mounts, private, so nothing here shows outside. hugetlbfs
  # stays visible (it is mounted before), for guests backed by hugepages.
  local script
  script="set -e
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/lock /run/libvirt /etc/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt
mount --bind '$d/run' /run/libvirt
mount --bind '$d/etc' /etc/libvirt
mount --bind '$d/lib' /var/lib/libvirt
mount --bind '$d/log' /var/log/libvirt
mount --bind '$d/cache' /var/cache/libvirt
export PATH='$(dirname "$qemu_wrapper")':\"\$PATH\"
exec libvirtd --config /etc/libvirt/libvirtd.conf --pid-file /run/libvirtd.pid"
  # setsid: the daemon outlives this script and its terminal; its pid is the one of
  # `ip` (each step execs the next). It must not inherit the locks (fds 8 and 9), or the
  # next `stop` would wait for it forever.
  setsid ip netns exec "$ns" unshare -m --propagation private sh -c "$script" \
    </dev/null >>"$d/daemon.out" 2>&1 8>&- 9>&- &
  echo $! >"$d/libvirtd.pid"

  local waited=0
  until answers "$h"; do
    if ! libvirtd_pid "$h" >/dev/null; then
      say "$h: libvirtd exited; its output:"
      tail -20 "$d/daemon.out" >&2 || true
      tail -20 "$d/log/libvirtd.log" >&2 2>/dev/null || true
      return 1
    fi
    if [ "$waited" -ge $((ready_timeout_s * 10)) ]; then
      say "$h: libvirtd did not answer within ${ready_timeout_s}s"
      tail -20 "$d/log/libvirtd.log" >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
}

# SIGKILL of one host's libvirtd, as a crash: its guests, networks and state stay.
cmd_kill_libvirtd() {
  [ $# -eq 1 ] || usage
  need_root
  local h=$1 pid waited=0
  pid=$(libvirtd_pid "$h") || die "$h: no libvirtd running"
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = libvirtd ] || die "$h: pid $pid is not libvirtd"
  kill -s KILL "$pid"
  while kill -0 "$pid" 2>/dev/null; do
    [ "$waited" -lt 100 ] || die "$h: libvirtd $pid did not exit"
    sleep 0.1
    waited=$((waited + 1))
  done
  say "$h: libvirtd $pid killed"
}

# A new libvirtd for a host whose daemon is gone, on the same namespace and state.
cmd_start_libvirtd() {
  [ $# -eq 1 ] || usage
  need_root
  local h=$1
  ns_exists "$(host_ns "$h")" || die "$h: no namespace $(host_ns "$h") (use \`start\`)"
  ! libvirtd_pid "$h" >/dev/null || die "$h: libvirtd is running"
  (
    flock 9
    launch_libvirtd "$h" || exit 1
  ) 9>"$(tb_dir).lock" || die "$h: libvirtd did not start"
  say "$h: libvirtd started again"
  print_host "$h"
}

kill_ns_processes() {
  local ns=$1 pids sig
  for sig in TERM TERM TERM TERM TERM TERM TERM TERM TERM TERM KILL KILL KILL KILL KILL; do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -n "$pids" ] || return 0
    # shellcheck disable=SC2086
    kill -s "$sig" $pids 2>/dev/null || true
    sleep 0.2
  done
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  [ -z "$pids" ] || say "processes still in $ns: $pids"
}

stop_host() {
  local h=$1 quiet=${2:-}
  local d ns
  d=$(host_dir "$h")
  ns=$(host_ns "$h")
  if ns_exists "$ns"; then
    kill_ns_processes "$ns"
    ip netns del "$ns" 2>/dev/null || true
  fi
  # A daemon that never entered the namespace (failed early) is ended by its pid.
  local pid
  if pid=$(libvirtd_pid "$h"); then
    kill -s KILL "$pid" 2>/dev/null || true
  fi
  # The veth end in the hub went away with the host's namespace.
  if [ -d "$d" ]; then
    rm -rf "$d"
  fi
  [ -n "$quiet" ] || say "$h: stopped"
}

tb_hosts() {
  local f
  f="$(tb_dir)/index"
  [ -f "$f" ] && awk '{print $1}' "$f"
  return 0
}

print_host() {
  local h=$1 state=stopped
  if ns_exists "$(host_ns "$h")" && libvirtd_pid "$h" >/dev/null; then
    if answers "$h"; then state=running; else state=unresponsive; fi
  fi
  echo "$h $state $(host_uri "$h") $(host_address "$h") $(host_ns "$h")"
}

cmd_start() {
  [ $# -gt 0 ] || usage
  need_root
  check_tools
  for h in "$@"; do valid_name "$h"; done
  mkdir -p "$(tb_dir)"
  (
    # One start or stop at a time per testbed: parallel tests may start the same one.
    flock 9
    ensure_hub
    local failed=0
    for h in "$@"; do start_host "$h" || failed=1; done
    for h in "$@"; do print_host "$h"; done
    exit "$failed"
  ) 9>"$(tb_dir).lock"
}

cmd_stop() {
  need_root
  [ -d "$(tb_dir)" ] || ns_exists "$(hub_ns)" || return 0
  mkdir -p "$(tb_dir)"
  (
    flock 9
    local hosts=("$@") all=0
    if [ ${#hosts[@]} -eq 0 ]; then
      all=1
      mapfile -t hosts < <(tb_hosts)
      # Namespaces of this testbed that the index forgot (a crashed run) go too.
      while read -r ns _; do
        case "$ns" in "fabrik-$name-"*) hosts+=("${ns#fabrik-"$name"-}") ;; esac
      done < <(ip netns list)
    fi
    if [ ${#hosts[@]} -gt 0 ]; then
      mapfile -t hosts < <(printf '%s\n' "${hosts[@]}" | sort -u)
    fi
    for h in "${hosts[@]}"; do stop_host "$h"; done
    if [ "$all" -eq 1 ]; then
      if ns_exists "$(hub_ns)"; then
        kill_ns_processes "$(hub_ns)"
        ip netns del "$(hub_ns)" || true
      fi
      rm -rf "$(tb_dir)"
    fi
  ) 9>"$(tb_dir).lock"
  if [ $# -eq 0 ]; then rm -f "$(tb_dir).lock"; fi
}

cmd_status() {
  local hosts
  mapfile -t hosts < <(tb_hosts)
  for h in "${hosts[@]}"; do print_host "$h"; done
}

cmd_guest() {
  [ $# -eq 1 ] || usage
  local h=$1 uri gname=fabrik-tiny xml t0 t1
  uri=$(host_uri "$h")
  [ -e /dev/kvm ] || die "/dev/kvm is missing"
  xml=$(mktemp)
  cat >"$xml" <<EOF
<domain type='kvm'>
  <name>$gname</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator><console type='pty'/></devices>
</domain>
EOF
  virsh -q -c "$uri" destroy "$gname" >/dev/null 2>&1 || true
  virsh -q -c "$uri" undefine "$gname" >/dev/null 2>&1 || true
  virsh -q -c "$uri" define "$xml" >/dev/null
  rm -f "$xml"
  t0=$(date +%s.%N)
  virsh -q -c "$uri" start "$gname" >/dev/null
  t1=$(date +%s.%N)
  echo "$gname $(virsh -q -c "$uri" domstate "$gname") start_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')"
}

[ $# -gt 0 ] || usage
cmd=$1
shift
while [ $# -gt 0 ]; do
  case "$1" in
    -n | --name) name=$2; shift 2 ;;
    *) break ;;
  esac
done
valid_name "$name"

case "$cmd" in
  start) cmd_start "$@" ;;
  stop) cmd_stop "$@" ;;
  status) cmd_status ;;
  uri) [ $# -eq 1 ] || usage; host_uri "$1" ;;
  guest) cmd_guest "$@" ;;
  kill-libvirtd) cmd_kill_libvirtd "$@" ;;
  start-libvirtd) cmd_start_libvirtd "$@" ;;
  *) usage ;;
esac
