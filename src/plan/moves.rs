//! VMs that move between hosts. Each host's diff sees half of a move: a VM to create on
//! the new host, and a VM of the factory no longer desired on the old one. [`join`] makes
//! them one `-/+` action on the new host that names the old copy (`moved_from`), so the
//! plan shows one disruptive line and apply stops the old copy before the new one starts
//! (two copies with one name and MAC on one tenant network must never run at once).

use super::diff::Out;
use super::{Action, Change, Class, Op, Options};
use crate::desired::{ResourceId, ResourceKind};
use crate::live::{LiveHost, PowerState};

/// Joins the deletion and the creation of each moved VM. A name deleted on two hosts and
/// created on a third is joined with the first deletion in host order; the other stays a
/// deletion (its own line, done before anything on its host is created).
pub fn join(out: &mut Out, live: &[LiveHost], options: &Options) {
    let creations: Vec<usize> = (0..out.actions.len())
        .filter(|&i| out.actions[i].id.kind == ResourceKind::Vm && out.actions[i].op == Op::Create)
        .collect();
    let mut joined = Vec::new();
    for i in creations {
        let new = out.actions[i].id.clone();
        let old = (0..out.actions.len()).find(|&j| {
            let a = &out.actions[j];
            a.id.kind == ResourceKind::Vm
                && a.op == Op::Delete
                && a.id.name == new.name
                && a.id.host != new.host
                && !joined.contains(&j)
        });
        let Some(j) = old else { continue };
        joined.push(j);
        let from = out.actions[j].id.clone();
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
    joined.sort_unstable();
    for j in joined.into_iter().rev() {
        out.actions.remove(j);
    }
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
