//! The InfiniBand partition membership of the factory → OpenSM's `partitions.conf`.
//!
//! One entry per `ib-partition` network that has VM ports: its pkey (the low 15 bits:
//! OpenSM takes membership from each member, not from the pkey's top bit) and the port
//! GUID of every VF fabrik gives a VM on it ([`crate::desired::ib`]), full or limited as
//! the network's `membership` says. The default partition makes every other port a
//! limited member, and only the subnet manager's own port full: ports of two tenants
//! can never reach each other through it, only through a partition both are in.
//!
//! On a host that declares `subnet-manager: opensm`, fabrik keeps this text in a block
//! of the partition file between two marker lines ([`with_block`]); lines outside the
//! block are the operator's and are never changed (a partition of the operator's, a
//! storage pkey, stays). The block holds the default partition, so the operator's
//! lines must not define it again. The hook for subnet managers other than OpenSM
//! (UFM's REST API takes the same pkey → GUID list) is in docs/hardware.md.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::desired::ib::IbPort;
use crate::desired::{Desired, DesiredHost};
use crate::spec::model::Membership;

/// The 15 bits of a pkey that name its partition (bit 15 is the membership bit).
const PKEY_BASE_MASK: u16 = 0x7fff;

/// A partition's network name and its ports, each with its host's name.
type Partition<'a> = (String, Vec<(&'a str, &'a IbPort)>);

/// The `partitions.conf` of the factory, deterministic (partitions by pkey, members by
/// GUID).
pub fn partitions_conf(desired: &Desired) -> String {
    partitions_conf_of(&desired.factory, &desired.hosts)
}

/// [`partitions_conf`] of a factory's hosts.
pub fn partitions_conf_of(factory: &str, hosts: &[DesiredHost]) -> String {
    let mut by_pkey: BTreeMap<u16, Partition<'_>> = BTreeMap::new();
    for host in hosts {
        for port in &host.ib_ports {
            let entry = by_pkey.entry(port.pkey & PKEY_BASE_MASK).or_insert_with(|| (port.network.clone(), Vec::new()));
            entry.1.push((host.name.as_str(), port));
        }
    }
    let mut out = String::new();
    let _ = writeln!(out, "# OpenSM partitions.conf of factory `{factory}`, written by fabrik: do not edit.");
    let _ = writeln!(out, "# Every port is a limited member of the default partition; only the SM's is full.");
    let _ = writeln!(out, "Default=0x7fff, ipoib : ALL=limited, SELF=full ;");
    for (pkey, (network, mut ports)) in by_pkey {
        ports.sort_by_key(|(_, p)| p.port_guid);
        let _ = writeln!(out);
        let _ = writeln!(out, "# {network}: {} port(s)", ports.len());
        let _ = writeln!(out, "{}=0x{pkey:04x}, ipoib :", partition_name(&network));
        let last = ports.len() - 1;
        for (i, (host, p)) in ports.iter().enumerate() {
            let member = match p.membership {
                Membership::Full => "full",
                Membership::Limited => "limited",
            };
            let sep = if i == last { " ;" } else { "," };
            let _ = writeln!(out, "  {}={member}{sep} # {host}/{} nic {} on {}", p.port_guid, p.vm, p.nic, p.pf);
        }
    }
    out
}

/// OpenSM partition names are words: letters, digits, `_`, `-`, `.` pass; anything else
/// becomes `_` (fabrik's network names are already such words).
fn partition_name(network: &str) -> String {
    network.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') { c } else { '_' }).collect()
}

/// The line that opens fabrik's block in a partition file.
fn begin_marker(factory: &str) -> String {
    format!("# BEGIN fabrik `{factory}`: kept by fabrik; an edit here is drift and is overwritten")
}

/// The line that closes it.
fn end_marker(factory: &str) -> String {
    format!("# END fabrik `{factory}`")
}

/// A partition file whose block fabrik cannot tell apart from the operator's lines.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what}: fabrik's block is not closed or is there twice")]
pub struct MalformedBlock {
    pub what: String,
}

/// The text of fabrik's block in `file` (without its marker lines); `None` when the
/// file has none.
pub fn managed_block<'a>(file: &'a str, factory: &str) -> Result<Option<&'a str>, MalformedBlock> {
    let (begin, end) = (begin_marker(factory), end_marker(factory));
    let lines: Vec<(usize, &str)> = line_starts(file);
    let opens: Vec<usize> = lines.iter().filter(|(_, l)| l.trim_end() == begin).map(|(at, _)| *at).collect();
    let closes: Vec<usize> = lines.iter().filter(|(_, l)| l.trim_end() == end).map(|(at, _)| *at).collect();
    match (opens.as_slice(), closes.as_slice()) {
        ([], []) => Ok(None),
        ([open], [close]) if open < close => {
            let body = open + begin.len() + 1;
            Ok(Some(file.get(body.min(*close)..*close).unwrap_or("")))
        }
        _ => Err(MalformedBlock {
            what: format!("the partition file holds {} begin and {} end line(s)", opens.len(), closes.len()),
        }),
    }
}

/// `file` with fabrik's block set to `block` (appended after the operator's lines when
/// there is none; a missing file is just the block). Every line outside the block is
/// kept byte for byte.
pub fn with_block(file: Option<&str>, factory: &str, block: &str) -> Result<String, MalformedBlock> {
    let (begin, end) = (begin_marker(factory), end_marker(factory));
    let body = if block.is_empty() || block.ends_with('\n') { block.to_string() } else { format!("{block}\n") };
    let framed = format!("{begin}\n{body}{end}\n");
    let Some(file) = file else { return Ok(framed) };
    match managed_block(file, factory)? {
        None => {
            let sep = if file.is_empty() || file.ends_with('\n') { "" } else { "\n" };
            Ok(format!("{file}{sep}{framed}"))
        }
        Some(old) => {
            let start = old.as_ptr() as usize - file.as_ptr() as usize - begin.len() - 1;
            let after = old.as_ptr() as usize - file.as_ptr() as usize + old.len() + end.len();
            let rest = file.get(after..).unwrap_or("");
            let rest = rest.strip_prefix('\n').unwrap_or(rest);
            Ok(format!("{}{framed}{rest}", &file[..start]))
        }
    }
}

/// Each line of `text` with the byte offset it starts at.
fn line_starts(text: &str) -> Vec<(usize, &str)> {
    let mut at = 0;
    text.split_inclusive('\n')
        .map(|l| {
            let start = at;
            at += l.len();
            (start, l.strip_suffix('\n').unwrap_or(l))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_is_added_replaced_and_nothing_else_is_touched() {
        let block = "Default=0x7fff, ipoib : ALL=limited, SELF=full ;\n";
        assert_eq!(
            with_block(None, "ai", block).unwrap(),
            format!("{}\n{block}{}\n", begin_marker("ai"), end_marker("ai"))
        );
        let theirs = "# the operator's storage partition\nstorage=0x0100, ipoib : ALL=full ;";
        let added = with_block(Some(theirs), "ai", block).unwrap();
        assert!(added.starts_with(&format!("{theirs}\n# BEGIN")), "{added}");
        assert_eq!(managed_block(&added, "ai").unwrap(), Some(block));
        // A hand edit inside the block is seen, and rewriting keeps the lines around it.
        let edited = added.replace("ALL=limited", "ALL=full") + "# a line after\n";
        assert_ne!(managed_block(&edited, "ai").unwrap(), Some(block));
        let fixed = with_block(Some(&edited), "ai", block).unwrap();
        assert_eq!(fixed, format!("{added}# a line after\n"));
        assert_eq!(with_block(Some(&fixed), "ai", block).unwrap(), fixed, "stable");
        // Another factory's block is another block.
        assert_eq!(managed_block(&fixed, "other").unwrap(), None);
        let broken = fixed.replace(&end_marker("ai"), "");
        assert!(managed_block(&broken, "ai").is_err());
        assert!(with_block(Some(&broken), "ai", block).is_err());
    }
}
