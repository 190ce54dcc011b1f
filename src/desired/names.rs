//! Names fabrik derives on a host — bridges, VLAN uplinks, VXLAN devices, volumes —
//! unique by construction, never by luck or truncation.
//!
//! * A device name that fits Linux's 15 bytes is kept as it reads (`br-acme`,
//!   `eth1.300`). One that does not is cut and given a stable 40-bit hash of its whole
//!   identity (`br-acm-k3x9q2mf`), so two long names that share a beginning stay apart.
//!   What hashing cannot rule out — a derived name equal to a declared one, or to a NIC —
//!   is rejected offline by `fabrik::isolation::shared-device` and
//!   `fabrik::isolation::device-is-nic`.
//! * A volume is `<vm>-<disk>` when the disk's name has no `-`, else `<vm>+<disk>`. Names
//!   never hold `+`, so the pair can always be read back from the volume name: two disks
//!   never resolve to one volume, and every volume named before this scheme whose disk
//!   had no `-` keeps its name.

/// Linux interface names are at most 15 bytes (IFNAMSIZ 16, with the NUL).
pub const IFNAME_MAX_LEN: usize = 15;
/// Base-32 characters of the hash a shortened name ends with: 40 bits, so ten thousand
/// long names on one host collide with odds below one in ten million.
const HASH_CHARS: usize = 8;
/// Lowercase letters and digits, without the ones read alike (`0`/`o`, `1`/`l`).
const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// The stable hash of an identity, as [`HASH_CHARS`] base-32 characters.
pub fn short_hash(identity: &str) -> String {
    let h = mix(crate::hash::fnv1a(identity.as_bytes()));
    (0..HASH_CHARS).map(|i| ALPHABET[((h >> (5 * i)) & 31) as usize] as char).collect()
}

/// splitmix64's finalizer: FNV-1a's low bits depend weakly on the last bytes; this
/// spreads every input bit over the whole word.
pub(crate) fn mix(mut h: u64) -> u64 {
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The derived bridge of a network: `br-<name>`, or `br-<start>-<hash>` when that is
/// longer than 15 bytes.
pub fn bridge(network: &str) -> String {
    let full = format!("br-{network}");
    if full.len() <= IFNAME_MAX_LEN {
        return full;
    }
    let hash = short_hash(&format!("bridge\0{network}"));
    let room = IFNAME_MAX_LEN - "br-".len() - 1 - HASH_CHARS;
    format!("br-{}-{hash}", cut(network, room))
}

/// The VLAN device over `parent`: `<parent>.<id>`, or `<start>-<hash>.<id>` when that is
/// longer than 15 bytes (never the bare `vlan<id>`: two NICs carry VLAN 300 apart).
pub fn vlan(parent: &str, id: u16) -> String {
    let full = format!("{parent}.{id}");
    if full.len() <= IFNAME_MAX_LEN {
        return full;
    }
    let hash = short_hash(&format!("vlan\0{parent}\0{id}"));
    let room = IFNAME_MAX_LEN - 1 - HASH_CHARS - 1 - id.to_string().len();
    let start = cut(parent, room);
    if start.is_empty() { format!("{hash}.{id}") } else { format!("{start}-{hash}.{id}") }
}

/// The VXLAN device of a VNI: `vx<vni>`, at most 10 bytes. A VNI is unique in a factory
/// (`fabrik::isolation::duplicate-vni`), so the name is too.
pub fn vxlan(vni: u32) -> String {
    format!("vx{vni}")
}

/// The volume of a VM's disk (see the module comment).
pub fn volume(vm: &str, disk: &str) -> String {
    if disk.contains('-') { format!("{vm}+{disk}") } else { format!("{vm}-{disk}") }
}

/// The name a volume had before [`volume`] (`<vm>-<disk>`); a live VM still using it
/// keeps it where no other disk or image claims it.
pub fn legacy_volume(vm: &str, disk: &str) -> String {
    format!("{vm}-{disk}")
}

/// The longest start of `s` of at most `bytes` bytes, cut at a character boundary.
fn cut(s: &str, bytes: usize) -> &str {
    let mut end = bytes.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Whether `name` is a name the kernel accepts for an interface: 1 to 15 bytes, not `.`
/// or `..`, without `/`, `:`, whitespace or control characters (`dev_valid_name`).
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IFNAME_MAX_LEN
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_graphic() && c != '/' && c != ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_read_as_before() {
        assert_eq!(bridge("acme"), "br-acme");
        assert_eq!(bridge("acme-net-ab"), "br-acme-net-ab");
        assert_eq!(vlan("eth1", 300), "eth1.300");
        assert_eq!(vxlan(10001), "vx10001");
    }

    #[test]
    fn long_names_keep_their_identity() {
        let a = bridge("acme-training-fabric-east");
        let b = bridge("acme-training-fabric-west");
        assert_ne!(a, b);
        assert_eq!(a.len(), IFNAME_MAX_LEN);
        assert!(a.starts_with("br-acm-"), "{a}");
        let (x, y) = (vlan("enp65s0f0np0", 300), vlan("enp65s0f1np1", 300));
        assert_ne!(x, y);
        assert!(x.ends_with(".300") && x.len() <= IFNAME_MAX_LEN, "{x}");
        assert!(valid_ifname(&x) && valid_ifname(&a));
        assert_eq!(vlan("enp65s0f0np0", 4094).len(), IFNAME_MAX_LEN);
    }

    #[test]
    fn volumes_read_back_unambiguously() {
        assert_eq!(volume("acme-vllm-0", "root"), "acme-vllm-0-root");
        assert_ne!(volume("globex", "vllm-0-root"), volume("globex-vllm-0", "root"));
        assert_eq!(volume("globex", "vllm-0-root"), "globex+vllm-0-root");
    }

    #[test]
    fn kernel_name_limits() {
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "a\tb", "sixteen-chars-xx"] {
            assert!(!valid_ifname(bad), "{bad:?}");
        }
        assert!(valid_ifname("br-acme"));
    }
}
