//! Resource ids: `kind:host/name`, stable across runs, the keys of graph, plan and
//! ownership marks (`vm:gpu01/acme-vllm-0`, `mig:gpu01/0000:1b:00.0/3g.71gb@4`).

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceKind {
    Host,
    Gpu,
    Mig,
    Hugepages,
    /// The SR-IOV virtual functions of a physical NIC (`vfs:gpu01/stor0`).
    Vfs,
    Link,
    Network,
    Pool,
    Volume,
    Vm,
    /// The factory's InfiniBand partitions in a subnet manager's partition file
    /// (`partitions:sm01/opensm`).
    Partitions,
}

impl ResourceKind {
    pub fn word(self) -> &'static str {
        match self {
            ResourceKind::Host => "host",
            ResourceKind::Gpu => "gpu",
            ResourceKind::Mig => "mig",
            ResourceKind::Hugepages => "hugepages",
            ResourceKind::Vfs => "vfs",
            ResourceKind::Link => "link",
            ResourceKind::Network => "net",
            ResourceKind::Pool => "pool",
            ResourceKind::Volume => "volume",
            ResourceKind::Vm => "vm",
            ResourceKind::Partitions => "partitions",
        }
    }

    /// Every kind, in the order the graph creates them.
    pub const ALL: [ResourceKind; 11] = [
        ResourceKind::Host,
        ResourceKind::Gpu,
        ResourceKind::Mig,
        ResourceKind::Hugepages,
        ResourceKind::Vfs,
        ResourceKind::Link,
        ResourceKind::Network,
        ResourceKind::Pool,
        ResourceKind::Volume,
        ResourceKind::Vm,
        ResourceKind::Partitions,
    ];

    fn from_word(w: &str) -> Option<ResourceKind> {
        Self::ALL.into_iter().find(|k| k.word() == w)
    }
}

/// `kind:host/name`; the name may itself contain `/` (`0000:1b:00.0/3g.71gb@4`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceId {
    pub kind: ResourceKind,
    pub host: String,
    pub name: String,
}

impl ResourceId {
    pub fn new(kind: ResourceKind, host: impl Into<String>, name: impl Into<String>) -> ResourceId {
        ResourceId { kind, host: host.into(), name: name.into() }
    }

    pub fn parse(text: &str) -> Option<ResourceId> {
        let (kind, rest) = text.split_once(':')?;
        let (host, name) = rest.split_once('/')?;
        let kind = ResourceKind::from_word(kind)?;
        (!host.is_empty() && !name.is_empty()).then(|| ResourceId { kind, host: host.into(), name: name.into() })
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.kind.word(), self.host, self.name)
    }
}

impl Serialize for ResourceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ResourceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        ResourceId::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a resource id")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for text in ["vm:gpu01/acme-vllm-0", "mig:gpu01/0000:1b:00.0/3g.71gb@4", "net:gpu01/acme"] {
            assert_eq!(ResourceId::parse(text).unwrap().to_string(), text);
        }
        assert!(ResourceId::parse("vm:gpu01").is_none());
        assert!(ResourceId::parse("nope:gpu01/x").is_none());
    }
}

/// Natural order of names: runs of digits compare as numbers, so `vm-9 < vm-10 <
/// vm-100` (a plain string order gives `vm-709, vm-71, vm-710`). Equal numbers with
/// different zero padding fall back to the plain order, so the order stays total.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let dx = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let dy = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (nx, ny) = (trim_zeros(&x[..dx]), trim_zeros(&y[..dy]));
                let o = nx.len().cmp(&ny.len()).then_with(|| nx.cmp(ny));
                if o != Ordering::Equal {
                    return o;
                }
                (x, y) = (&x[dx..], &y[dy..]);
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                (x, y) = (&x[1..], &y[1..]);
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    &digits[zeros..]
}

impl ResourceId {
    /// Kind, then host, then name, the names in [`natural_cmp`] order — except PCI
    /// addresses (GPUs and MIG slices keep theirs), which are
    /// fixed-width hexadecimal: their plain order is their numeric one.
    pub fn natural_cmp(&self, other: &ResourceId) -> std::cmp::Ordering {
        let names = match self.kind {
            ResourceKind::Gpu | ResourceKind::Mig => self.name.cmp(&other.name),
            ResourceKind::Host
            | ResourceKind::Hugepages
            | ResourceKind::Vfs
            | ResourceKind::Link
            | ResourceKind::Network
            | ResourceKind::Pool
            | ResourceKind::Volume
            | ResourceKind::Vm
            | ResourceKind::Partitions => natural_cmp(&self.name, &other.name),
        };
        self.kind.cmp(&other.kind).then_with(|| natural_cmp(&self.host, &other.host)).then(names)
    }
}

#[cfg(test)]
mod natural_tests {
    use super::natural_cmp;

    #[test]
    fn numbers_in_names_sort_by_value() {
        let mut v = vec!["vm-710", "vm-71", "vm-709", "vm-9", "vm-100", "vm-10", "gpu02", "gpu1"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["gpu1", "gpu02", "vm-9", "vm-10", "vm-71", "vm-100", "vm-709", "vm-710"]);
        assert!(natural_cmp("a01", "a1").is_ne(), "the order stays total");
    }
}
