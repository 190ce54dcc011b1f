//! Typed values of the language: sizes with units, CPU sets, PCI addresses, MIG profile
//! names. Each parses from the text an operator writes and prints back the same way.

use std::fmt;
use std::net::IpAddr;

/// Why a value did not parse: what is wrong, and how to write it instead.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid {
    pub code: &'static str,
    pub message: String,
    pub help: String,
}

fn invalid(code: &'static str, message: impl Into<String>, help: impl Into<String>) -> Invalid {
    Invalid { code, message: message.into(), help: help.into() }
}

/// A number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

/// Units as libvirt reads them (formatdomain.html, "memory"): single letters and `iB`
/// suffixes are powers of 1024, `KB`/`MB`/… are powers of 1000.
const SIZE_UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KiB", 1 << 10),
    ("K", 1 << 10),
    ("KB", 1_000),
    ("MiB", 1 << 20),
    ("M", 1 << 20),
    ("MB", 1_000_000),
    ("GiB", 1 << 30),
    ("G", 1 << 30),
    ("GB", 1_000_000_000),
    ("TiB", 1 << 40),
    ("T", 1 << 40),
    ("TB", 1_000_000_000_000),
];

const SIZE_HELP: &str = "write a number with a unit: B, KiB, MiB, GiB, TiB (or K, M, G, T; KB, MB, GB, TB are powers of 1000), e.g. `128GiB`";

impl ByteSize {
    pub const KIB: u64 = 1 << 10;
    pub const MIB: u64 = 1 << 20;
    pub const GIB: u64 = 1 << 30;

    pub fn parse(text: &str) -> Result<ByteSize, Invalid> {
        let t = text.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = (&t[..split], t[split..].trim());
        if num.is_empty() {
            return Err(invalid("fabrik::spec::bad-size", format!("`{text}` is not a size"), SIZE_HELP));
        }
        if unit.is_empty() {
            return Err(invalid("fabrik::spec::missing-unit", format!("size `{text}` has no unit"), SIZE_HELP));
        }
        let Some(&(_, mult)) = SIZE_UNITS.iter().find(|(u, _)| *u == unit) else {
            let known: Vec<&str> = SIZE_UNITS.iter().map(|(u, _)| *u).collect();
            let help = match crate::diag::suggest(unit, known) {
                Some(s) if s.eq_ignore_ascii_case(unit) => format!("did you mean `{num}{s}`? Units are case-sensitive"),
                Some(s) => format!("did you mean `{num}{s}`? Otherwise {SIZE_HELP}"),
                None => SIZE_HELP.to_string(),
            };
            return Err(invalid("fabrik::spec::bad-unit", format!("unknown size unit `{unit}`"), help));
        };
        let bytes = if num.contains('.') {
            let f: f64 = num
                .parse()
                .map_err(|_| invalid("fabrik::spec::bad-size", format!("`{text}` is not a size"), SIZE_HELP))?;
            let b = f * mult as f64;
            if b.fract() != 0.0 || b >= u64::MAX as f64 {
                return Err(invalid(
                    "fabrik::spec::bad-size",
                    format!("`{text}` is not a whole number of bytes"),
                    SIZE_HELP,
                ));
            }
            b as u64
        } else {
            num.parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(mult))
                .ok_or_else(|| invalid("fabrik::spec::bad-size", format!("size `{text}` is too large"), SIZE_HELP))?
        };
        Ok(ByteSize(bytes))
    }

    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, mult) in [("TiB", 1u64 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if self.0 >= mult && self.0.is_multiple_of(mult) {
                return write!(f, "{}{unit}", self.0 / mult);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// A hugepage size. x86-64 has two: 2 MiB and 1 GiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageSize {
    Size2M,
    Size1G,
}

impl PageSize {
    pub const NAMES: &'static [&'static str] = &["2M", "1G"];

    pub fn parse(text: &str) -> Result<PageSize, Invalid> {
        let help = "x86-64 hugepages are `2M` or `1G`";
        match ByteSize::parse(text) {
            Ok(ByteSize(b)) if b == 2 * ByteSize::MIB => Ok(PageSize::Size2M),
            Ok(ByteSize(b)) if b == ByteSize::GIB => Ok(PageSize::Size1G),
            Ok(_) => Err(invalid("fabrik::spec::bad-page-size", format!("`{text}` is not a hugepage size"), help)),
            Err(e) => Err(Invalid { help: help.to_string(), ..e }),
        }
    }

    pub fn size(self) -> ByteSize {
        match self {
            PageSize::Size2M => ByteSize(2 * ByteSize::MIB),
            PageSize::Size1G => ByteSize(ByteSize::GIB),
        }
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PageSize::Size2M => "2M",
            PageSize::Size1G => "1G",
        })
    }
}

/// Host CPUs, as a sorted set of CPU numbers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct CpuSet(Vec<u32>);

/// More CPUs than any server has; refusing larger sets keeps `0-4294967295` from
/// allocating gigabytes.
const CPU_ID_LIMIT: u32 = 65_536;

impl CpuSet {
    pub fn parse(text: &str) -> Result<CpuSet, Invalid> {
        let help = "write CPU numbers and ranges separated by commas, e.g. `0-27,56-83`";
        let bad = |what: String| invalid("fabrik::spec::bad-cpuset", what, help);
        let mut cpus = Vec::new();
        for part in text.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(bad(format!("`{text}` has an empty item")));
            }
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part, part),
            };
            let num = |s: &str| s.parse::<u32>().ok().filter(|&n| n < CPU_ID_LIMIT);
            let (Some(lo), Some(hi)) = (num(lo), num(hi)) else {
                return Err(bad(format!("`{part}` is not a CPU number or range")));
            };
            if lo > hi {
                return Err(invalid(
                    "fabrik::spec::bad-cpuset",
                    format!("range `{part}` runs backwards"),
                    format!("write the lower CPU first: `{hi}-{lo}`"),
                ));
            }
            cpus.extend(lo..=hi);
        }
        cpus.sort_unstable();
        cpus.dedup();
        Ok(CpuSet(cpus))
    }

    pub fn from_cpus(mut cpus: Vec<u32>) -> CpuSet {
        cpus.sort_unstable();
        cpus.dedup();
        CpuSet(cpus)
    }

    pub fn cpus(&self) -> &[u32] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, cpu: u32) -> bool {
        self.0.binary_search(&cpu).is_ok()
    }
}

impl fmt::Display for CpuSet {
    /// Prints ranges the way libvirt and the kernel do: `0-3,8,10-11`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut i = 0;
        while i < self.0.len() {
            let start = self.0[i];
            let mut end = start;
            while i + 1 < self.0.len() && self.0[i + 1] == end + 1 {
                i += 1;
                end += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?
            } else {
                write!(f, "{start}-{end}")?
            }
            i += 1;
        }
        Ok(())
    }
}

/// A PCI address, `domain:bus:device.function`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    pub domain: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl PciAddress {
    pub fn parse(text: &str) -> Result<PciAddress, Invalid> {
        let help = "write a PCI address as `domain:bus:device.function` in hex, e.g. `0000:3b:00.0` (see `lspci -D`)";
        let bad = || invalid("fabrik::spec::bad-pci-address", format!("`{text}` is not a PCI address"), help);
        let (rest, function) = text.rsplit_once('.').ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [d, b, s] => (*d, *b, *s),
            [b, s] => ("0000", *b, *s),
            _ => return Err(bad()),
        };
        let hex = |s: &str, max_len: usize| {
            (!s.is_empty() && s.len() <= max_len).then(|| u32::from_str_radix(s, 16).ok()).flatten()
        };
        let (Some(domain), Some(bus), Some(device), Some(function)) =
            (hex(domain, 4), hex(bus, 2), hex(device, 2), hex(function, 1))
        else {
            return Err(bad());
        };
        if device > 0x1f || function > 7 {
            return Err(invalid(
                "fabrik::spec::bad-pci-address",
                format!("`{text}` is out of range: device is at most 1f and function at most 7"),
                help,
            ));
        }
        Ok(PciAddress { domain: domain as u16, bus: bus as u8, device: device as u8, function: function as u8 })
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{:x}", self.domain, self.bus, self.device, self.function)
    }
}

/// A host's address on an interface: IPv4 or IPv6, without a prefix length (the
/// interface's subnet is the host's business; fabrik needs only the address).
pub fn parse_ip(text: &str) -> Result<IpAddr, Invalid> {
    let help = "write one IPv4 or IPv6 address, e.g. `10.0.0.11` or `fd00::11`";
    let t = text.trim();
    if let Some((addr, _)) = t.split_once('/')
        && addr.trim().parse::<IpAddr>().is_ok()
    {
        return Err(invalid(
            "fabrik::spec::bad-ip-address",
            format!("`{text}` has a prefix length"),
            format!("write the address alone, without the prefix: `{}`", addr.trim()),
        ));
    }
    t.parse::<IpAddr>()
        .map_err(|_| invalid("fabrik::spec::bad-ip-address", format!("`{text}` is not an IP address"), help))
}

/// A MIG profile name as NVIDIA writes them (`nvidia-smi mig -lgip`): `<n>g.<mem>gb`
/// with an optional media-extension suffix `+me`, `+me.all` or `-me`. Whether the
/// profile exists on a given GPU model is for the checks to say.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MigProfileName {
    pub compute_slices: u8,
    pub memory_gb: u16,
    pub suffix: MigSuffix,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MigSuffix {
    None,
    /// `+me`: with one media engine set (NVDEC, NVJPG, OFA).
    Me,
    /// `+me.all`: with all media engines.
    MeAll,
    /// `-me`: explicitly without media engines.
    NoMe,
}

impl MigProfileName {
    pub fn parse(text: &str) -> Result<MigProfileName, Invalid> {
        let help = "MIG profiles look like `3g.71gb` or `1g.18gb+me` (see `nvidia-smi mig -lgip`)";
        let bad = || invalid("fabrik::spec::bad-mig-profile", format!("`{text}` is not a MIG profile name"), help);
        let (base, suffix) = if let Some(b) = text.strip_suffix("+me.all") {
            (b, MigSuffix::MeAll)
        } else if let Some(b) = text.strip_suffix("+me") {
            (b, MigSuffix::Me)
        } else if let Some(b) = text.strip_suffix("-me") {
            (b, MigSuffix::NoMe)
        } else {
            (text, MigSuffix::None)
        };
        let (g, mem) = base.split_once('.').ok_or_else(bad)?;
        let compute_slices =
            g.strip_suffix('g').and_then(|n| n.parse::<u8>().ok()).filter(|n| (1..=8).contains(n)).ok_or_else(bad)?;
        let memory_gb =
            mem.strip_suffix("gb").and_then(|n| n.parse::<u16>().ok()).filter(|&n| n > 0).ok_or_else(bad)?;
        Ok(MigProfileName { compute_slices, memory_gb, suffix })
    }
}

impl fmt::Display for MigProfileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}g.{}gb", self.compute_slices, self.memory_gb)?;
        f.write_str(match self.suffix {
            MigSuffix::None => "",
            MigSuffix::Me => "+me",
            MigSuffix::MeAll => "+me.all",
            MigSuffix::NoMe => "-me",
        })
    }
}

/// These values serialize as the text an operator would write.
macro_rules! serialize_as_text {
    ($($t:ty),+) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )+};
}

serialize_as_text!(ByteSize, PageSize, CpuSet, PciAddress, MigProfileName);

/// ... and deserialize from it (live state, the agent's protocol, saved plans).
macro_rules! deserialize_from_text {
    ($($t:ty),+) => {$(
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                <$t>::parse(&text).map_err(|e| serde::de::Error::custom(e.message))
            }
        }
    )+};
}

deserialize_from_text!(ByteSize, PageSize, CpuSet, PciAddress, MigProfileName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_libvirt_units() {
        assert_eq!(ByteSize::parse("128GiB").unwrap().bytes(), 128 << 30);
        assert_eq!(ByteSize::parse("1G").unwrap().bytes(), 1 << 30);
        assert_eq!(ByteSize::parse("2GB").unwrap().bytes(), 2_000_000_000);
        assert_eq!(ByteSize::parse("1.5GiB").unwrap().bytes(), 3 << 29);
        assert_eq!(ByteSize::parse("128").unwrap_err().code, "fabrik::spec::missing-unit");
        let e = ByteSize::parse("128GIB").unwrap_err();
        assert_eq!(e.code, "fabrik::spec::bad-unit");
        assert_eq!(e.help, "did you mean `128GiB`? Units are case-sensitive");
        assert_eq!(ByteSize::parse("99999999999TiB").unwrap_err().code, "fabrik::spec::bad-size");
        assert_eq!(ByteSize(1 << 40).to_string(), "1TiB");
        assert_eq!(ByteSize(1536 << 20).to_string(), "1536MiB");
    }

    #[test]
    fn page_sizes() {
        assert_eq!(PageSize::parse("1G").unwrap(), PageSize::Size1G);
        assert_eq!(PageSize::parse("2MiB").unwrap(), PageSize::Size2M);
        let e = PageSize::parse("4K").unwrap_err();
        assert_eq!(e.code, "fabrik::spec::bad-page-size");
        assert_eq!(e.message, "`4K` is not a hugepage size", "the size as written, not as normalized");
    }

    #[test]
    fn cpusets_round_trip() {
        let s = CpuSet::parse("0-3, 8,10-11,2").unwrap();
        assert_eq!(s.len(), 7);
        assert_eq!(s.to_string(), "0-3,8,10-11");
        assert_eq!(CpuSet::parse("3-1").unwrap_err().help, "write the lower CPU first: `1-3`");
        assert!(CpuSet::parse("0-4294967295").is_err());
        assert!(CpuSet::parse("a").is_err());
        assert!(CpuSet::parse("1,,2").is_err());
    }

    #[test]
    fn pci_addresses() {
        let a = PciAddress::parse("0000:3b:00.0").unwrap();
        assert_eq!(a.to_string(), "0000:3b:00.0");
        assert_eq!(PciAddress::parse("3b:00.0").unwrap(), a);
        assert!(PciAddress::parse("0000:3b:20.0").is_err());
        assert!(PciAddress::parse("0000:3b:00.8").is_err());
        assert!(PciAddress::parse("gpu0").is_err());
    }

    #[test]
    fn ip_addresses() {
        assert_eq!(parse_ip("10.0.0.11").unwrap().to_string(), "10.0.0.11");
        assert_eq!(parse_ip("fd00::11").unwrap().to_string(), "fd00::11");
        let e = parse_ip("10.0.0.11/24").unwrap_err();
        assert_eq!(e.code, "fabrik::spec::bad-ip-address");
        assert_eq!(e.help, "write the address alone, without the prefix: `10.0.0.11`");
        assert_eq!(parse_ip("10.0.0.256").unwrap_err().message, "`10.0.0.256` is not an IP address");
        assert!(parse_ip("fe01").is_err());
    }

    #[test]
    fn mig_profile_names() {
        for name in ["3g.71gb", "1g.18gb+me", "1g.12gb+me.all", "1g.12gb-me", "7g.141gb"] {
            assert_eq!(MigProfileName::parse(name).unwrap().to_string(), name);
        }
        assert!(MigProfileName::parse("3g71gb").is_err());
        assert!(MigProfileName::parse("0g.10gb").is_err());
        assert!(MigProfileName::parse("3g.71GB").is_err());
    }
}
