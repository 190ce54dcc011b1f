//! VMs that move between hosts. Each host's diff sees half of a move: a VM to create on
//! the new host, and a VM of the factory no longer desired on the old one. [`join`] makes
//! them one `-/+` action on the new host that names the old copy (`moved_from`), so the
//! plan shows one disruptive line and apply stops the old copy before the new one starts
//! (two copies with one name and MAC on one tenant network must never run at once).

use std::collections::{BTreeMap, BTreeSet};

use super::diff::Out;
use super::{Action, Change, Class, Op, Options};
use crate::desired::{ResourceId, ResourceKind};
use crate::live::{LiveHost, PowerState};

/// Joins the deletion and the creation of each moved VM. A name deleted on two hosts and
/// created on a third is joined with the first deletion in host order; the other stays a
/// deletion (its own line, done before anything on its host is created).
pub fn join(out: &mut Out, live: &[LiveHost], options: &Options) {
    // VM deletions by name, in action order: few, so a plan of many creations stays linear.
    let mut deletions: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (j, a) in out.actions.iter().enumerate() {
        if a.id.kind == ResourceKind::Vm && a.op == Op::Delete {
            deletions.entry(a.id.name.as_str()).or_default().push(j);
        }
    }
    if deletions.is_empty() {
        return;
    }
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    let mut joined: BTreeSet<usize> = BTreeSet::new();
    for (i, a) in out.actions.iter().enumerate() {
        if a.id.kind != ResourceKind::Vm || a.op != Op::Create {
            continue;
        }
        let Some(candidates) = deletions.get(a.id.name.as_str()) else { continue };
        let old = candidates.iter().copied().find(|j| out.actions[*j].id.host != a.id.host && !joined.contains(j));
        if let Some(j) = old {
            joined.insert(j);
            pairs.push((i, j));
        }
    }
    for (i, j) in pairs {
        let from = out.actions[j].id.clone();
        let new = out.actions[i].id.clone();
        let reason = reason(&from, &new, live, options);
        let a = &mut out.actions[i];
        *a = Action {
            changes: std::mem::take(&mut a.changes),
            diff: a.diff.take(),
            ..Action::new(new, Op::Replace, Class::Replace, reason)
        };
        a.changes.insert(0, Change::new("host", &from.host, &a.id.host, Class::Replace));
        a.moved_from = Some(from);
    }
    let mut j = 0;
    out.actions.retain(|_| {
        let keep = !joined.contains(&j);
        j += 1;
        keep
    });
}

/// What a move does, in one line: the old copy's fate, then the disks'. Volumes live per
/// host: the new host gets volumes of its own (their creations are lines of their own);
/// the old ones stay, or go where fabrik recorded them as `delete-with-vm`.
fn reason(from: &ResourceId, to: &ResourceId, live: &[LiveHost], options: &Options) -> String {
    let old = live.iter().find(|h| h.name == from.host).and_then(|h| h.domains.iter().find(|d| d.name == from.name));
    let running = old.is_some_and(|d| matches!(d.state, PowerState::Running | PowerState::Paused));
    let stop = if running {
        format!(
            "shut down (forced off if it has not stopped after {}s) and undefined",
            options.shutdown_timeout.as_secs()
        )
    } else {
        "undefined".to_string()
    };
    let mut kept = Vec::new();
    let mut deleted = Vec::new();
    for disk in old.map(|d| d.disks.as_slice()).unwrap_or_default() {
        let Some(source) = disk.source.as_deref().filter(|s| !s.starts_with('/')) else { continue };
        let id = ResourceId::new(ResourceKind::Volume, &from.host, source);
        if options.created.deletable(&id) {
            deleted.push(format!("`{source}`"));
        } else {
            kept.push(format!("`{source}`"));
        }
    }
    let mut disks = Vec::new();
    if !kept.is_empty() {
        disks.push(format!("{} kept", kept.join(", ")));
    }
    if !deleted.is_empty() {
        disks.push(format!("{} deleted (`delete-with-vm`)", deleted.join(", ")));
    }
    let disks = if disks.is_empty() {
        String::new()
    } else {
        format!("; volumes live per host: `{}` gets new ones, on `{}` {}", to.host, from.host, disks.join(", "))
    };
    format!(
        "moves from host `{}` to `{}`: the copy on `{}` is {stop} before this one starts{disks}",
        from.host, to.host, from.host
    )
}
