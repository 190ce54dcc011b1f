//! Domains, networks, pools and volumes: libvirt's objects.
//!
//! A domain's definition is compared as normalized XML ([`crate::render::normalize`]),
//! so defaults libvirt adds never show; its power state and autostart are compared
//! apart, because libvirt's XML does not carry them.

use std::collections::BTreeSet;
use std::time::Duration;

use similar::TextDiff;

use super::Out;
use crate::desired::{DesiredHost, DesiredNetwork, DesiredPool, DesiredVm, DesiredVolume, ResourceId, ResourceKind};
use crate::live::{LiveDomain, LiveHost, LivePool, PowerState, RunningDefinition};
use crate::plan::ops::{DomainOp, NetworkOp, Step, StorageOp};
use crate::plan::ownership::Owner;
use crate::plan::{Action, Change, Class, Created, NoticeKind, Op, ops};
use crate::render::{self, normalize};
use crate::spec::model::{PoolKind, Power};

fn power_word(state: PowerState) -> &'static str {
    match state {
        PowerState::Running => "running",
        PowerState::Paused => "paused",
        PowerState::ShutOff => "shut off",
        PowerState::Crashed => "crashed",
        PowerState::Other => "unknown",
    }
}

/// A whole document as a diff from nothing, for objects that do not exist yet.
fn creation_diff(canonical: &str) -> String {
    TextDiff::from_lines("", canonical).unified_diff().context_radius(3).header("live", "desired").to_string()
}

/// The diff of an object made from nothing, from the operation that defines it (a
/// domain's or a network's normalized XML, a volume's as rendered); `None` when `ops`
/// define none of these.
pub fn creation_diff_of(ops: &[Step]) -> Option<String> {
    ops.iter().find_map(|s| match s {
        Step::Domain(DomainOp::Define { xml, .. }) => normalize::domain(xml).ok().map(|c| creation_diff(&c)),
        Step::Network(NetworkOp::Define { xml, .. }) => normalize::network(xml).ok().map(|c| creation_diff(&c)),
        Step::Storage(StorageOp::CreateVolume { xml, .. } | StorageOp::CloneVolume { xml, .. }) => {
            Some(creation_diff(xml))
        }
        _ => None,
    })
}

/// `threads`: whether the VMs may be rendered and compared on threads ahead of the diff
/// (the costly part: rendering, normalizing both documents); otherwise each is, in turn.
/// The plan is the same either way.
pub fn domains(factory: &str, host: &DesiredHost, live: &LiveHost, timeout: Duration, threads: bool, out: &mut Out) {
    let forced = format!("forced off if it has not stopped after {}s", timeout.as_secs());
    let found: Vec<(&DesiredVm, Option<&LiveDomain>)> =
        host.vms.iter().map(|vm| (vm, live.domains.iter().find(|d| d.name == vm.name))).collect();
    // Each VM that has a domain rendered with its UUID and compared with it, side by
    // side; only the rendering and whether it differs are kept (a changed one is
    // compared again below, for its lines: few are, and a host's comparisons are never
    // all held at once).
    let ahead: Vec<Option<Ahead>> = if threads && crate::plan::spread(found.len()) {
        crate::plan::on_threads(&found, |(vm, d)| {
            d.map(|d| {
                let rendered = render_for(factory, host, vm, d);
                let same = normalize::compare(&rendered, &d.xml).is_ok_and(|c| !c.has_changes());
                Ahead { rendered, same }
            })
        })
    } else {
        Vec::new()
    };
    let mut ahead = ahead.into_iter();
    for (vm, d) in &found {
        let ahead = ahead.next().flatten();
        match d {
            None => out.actions.push(create_vm(factory, host, vm)),
            Some(d) => {
                if out.owned(&vm.id, "domain", Owner::of(d.owner.as_ref(), factory)) {
                    let ahead =
                        ahead.unwrap_or_else(|| Ahead { rendered: render_for(factory, host, vm, d), same: false });
                    update_vm(vm, d, ahead, (&forced, timeout), out);
                }
            }
        }
    }
    let desired: BTreeSet<&str> = host.vms.iter().map(|v| v.name.as_str()).collect();
    for d in live.domains.iter().filter(|d| !desired.contains(d.name.as_str())) {
        let id = ResourceId::new(ResourceKind::Vm, &host.name, &d.name);
        out.extra(id, "domain", Owner::of(d.owner.as_ref(), factory), |id| {
            let running = matches!(d.state, PowerState::Running | PowerState::Paused);
            let reason = if running {
                format!("no longer desired: shut down ({forced}) and undefined; its volumes are kept")
            } else {
                "no longer desired: undefined; its volumes are kept".to_string()
            };
            let mut a = Action::new(id, Op::Delete, Class::Live, reason);
            a.changes.push(Change {
                field: "power".into(),
                from: Some(power_word(d.state).into()),
                to: None,
                class: Class::Live,
            });
            a
        });
    }
}

fn create_vm(factory: &str, host: &DesiredHost, vm: &DesiredVm) -> Action {
    let xml = render::domain(factory, host, vm);
    let start = vm.power == Power::Running;
    let mut reason = if start {
        format!("define domain `{}` and start it", vm.name)
    } else {
        format!("define domain `{}`", vm.name)
    };
    let addresses: Vec<String> =
        vm.nics.iter().filter_map(|n| Some(format!("{} on `{}`", n.address.as_ref()?, n.network))).collect();
    if !addresses.is_empty() {
        let word = if addresses.len() == 1 { "address" } else { "addresses" };
        reason.push_str(&format!(", {word} {}", addresses.join(", ")));
    }
    let volatile = vm.boot_volatile();
    if start && !volatile.is_empty() {
        reason.push_str(&format!(
            "; autostart off: it needs {}, which fabrik rebuilds after a reboot before starting it",
            volatile.join(", ")
        ));
    }
    let mut a = Action::new(vm.id.clone(), Op::Create, Class::Live, reason);
    // No `diff`: the definition is in the `define` op, shown as a diff from there
    // ([`Action::shown_diff`]): a plan holds each definition once.
    a.ops = ops::vm_create(vm.name.clone(), xml, vm.autostart, vm.power);
    a
}

/// A VM's definition as rendered to redefine its domain: with the domain's UUID.
fn render_for(factory: &str, host: &DesiredHost, vm: &DesiredVm, live: &LiveDomain) -> String {
    render::domain::domain_with_uuid(factory, host, vm, Some(&live.uuid))
}

/// A VM's definition rendered for its domain ([`render_for`]), and whether it was found
/// to normalize to the domain's own (`false`: not compared yet, changed, or unreadable).
struct Ahead {
    rendered: String,
    same: bool,
}

/// `forced`: the shutdown timeout, in words and as it is.
fn update_vm(vm: &DesiredVm, live: &LiveDomain, ahead: Ahead, (forced, timeout): (&str, Duration), out: &mut Out) {
    let Ahead { rendered, same } = ahead;
    // Every field but these is part of the rendered definition, compared as XML below.
    let DesiredVm {
        id,
        name: _,
        tenant: _,
        vcpus: _,
        memory: _,
        hugepages: _,
        vcpu_pins: _,
        emulator_pin: _,
        numa_node: _,
        numa_cells: _,
        gpus: _,
        mig: _,
        time_sliced: _,
        nics: _,
        disks: _,
        firmware: _,
        power,
        autostart,
        seed,
        spec_hash: _,
    } = vm;
    let running = matches!(live.state, PowerState::Running | PowerState::Paused);
    let stays_running = running && *power == Power::Running;
    let mut changes = Vec::new();
    let mut reasons = Vec::new();
    let mut diff = None;
    // Rendered once, with the live domain's UUID: compared, and written if it changed.
    match if same { Ok(None) } else { normalize::compare(&rendered, &live.xml).map(Some) } {
        Err(e) => {
            out.error(
                "fabrik::plan::unreadable-object",
                id,
                format!("the definition of domain `{}` on host `{}` cannot be read: {e}", live.name, id.host),
                "libvirt returned XML fabrik cannot parse; report it with the domain's XML",
            );
            return;
        }
        Ok(Some(cmp)) if cmp.has_changes() => {
            let lines = cmp.changes();
            let elements = changed_elements(&lines);
            let mark_only = elements.iter().all(|e| e == "metadata" || e.starts_with("fabrik:"));
            let class = if stays_running && !mark_only { Class::RestartNow } else { Class::NextRestart };
            let moved = address_changes(vm, live);
            let reseed = crate::guest::volume::change(seed.as_deref(), &live.xml);
            if let Some((from, to)) = &reseed {
                changes.push(Change::new("seed", from, to, Class::NextRestart));
            }
            for e in &elements {
                let side = |sign: &str| {
                    lines
                        .iter()
                        .find(|l| l.starts_with(sign) && element_of(l) == Some(e.as_str()))
                        .map(|l| l[2..].to_string())
                };
                changes.push(Change { field: e.clone(), from: side("- "), to: side("+ "), class });
            }
            reasons.push(match class {
                Class::RestartNow => {
                    format!("definition changed ({}); the running VM restarts ({forced})", elements.join(", "))
                }
                _ if mark_only && reseed.is_some() => "cloud-init seed changed: rewritten, read by the guest at its \
                                                        next boot; nothing restarts"
                    .to_string(),
                _ if mark_only && !moved.is_empty() => {
                    format!("address changed ({moved}); definition rewritten, nothing restarts")
                }
                _ if mark_only => "ownership mark out of date; definition rewritten, nothing restarts".to_string(),
                _ => format!("definition changed ({}); takes effect at its next start", elements.join(", ")),
            });
            diff = Some(cmp.unified());
        }
        Ok(_) => {}
    }
    // A guest runs the definition it was started with: one older than the saved
    // definition (an apply stopped between a redefine and the restart) is a pending
    // restart, whatever the saved definition says.
    if stays_running
        && let Some(running) = &live.running
        && changes.iter().all(|c| c.class != Class::RestartNow)
    {
        let stale = running.differences(&RunningDefinition::of(live));
        if !stale.is_empty() {
            let fields: Vec<&str> = stale.iter().map(|(f, _, _)| *f).collect();
            for (field, have, want) in stale {
                changes.push(Change::new(&format!("running {field}"), have, want, Class::RestartNow));
            }
            reasons.push(format!(
                "runs an older definition than its saved one ({}): an earlier restart did not finish; the running \
                 VM restarts ({forced})",
                fields.join(", ")
            ));
        }
    }
    // Every change so far is to the definition (saved, or the one the guest runs).
    let definition = !changes.is_empty();
    match (power, live.state) {
        (Power::Running, PowerState::Running) | (Power::Stopped, PowerState::ShutOff) => {}
        (Power::Running, PowerState::Paused) => {
            changes.push(Change::new("power", "paused", "running", Class::Live));
            reasons.push("paused out of band: resume".into());
        }
        (Power::Running, state @ (PowerState::ShutOff | PowerState::Crashed | PowerState::Other)) => {
            changes.push(Change::new("power", power_word(state), "running", Class::Live));
            reasons.push(format!("{} out of band: start", power_word(state)));
        }
        (
            Power::Stopped,
            state @ (PowerState::Running | PowerState::Paused | PowerState::Crashed | PowerState::Other),
        ) => {
            changes.push(Change::new("power", power_word(state), "shut off", Class::Live));
            reasons.push(format!("shut down ({forced})"));
        }
    }
    if live.autostart != *autostart {
        changes.push(Change::new("autostart", live.autostart, autostart, Class::Live));
        reasons.push(format!("autostart {}", if *autostart { "on" } else { "off" }));
    }
    if !changes.is_empty() {
        let mut a = Action::update(id.clone(), changes, reasons.join("; "));
        a.diff = diff;
        let restart = definition && a.class == Class::RestartNow;
        a.ops = ops::vm_update(
            &vm.name,
            definition.then_some(rendered),
            restart,
            (*power, live.state),
            (live.autostart != *autostart).then_some(*autostart),
            timeout,
        );
        out.actions.push(a);
    }
}

/// The element named on a `- <memory …>` / `+ <memory …>` change line.
fn element_of(line: &str) -> Option<&str> {
    let rest = line.get(2..)?.trim_start().strip_prefix('<')?;
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let end = rest.find(|c: char| c.is_whitespace() || c == '>' || c == '/').unwrap_or(rest.len());
    Some(&rest[..end]).filter(|e| !e.is_empty())
}

/// The elements that changed, in order of first appearance.
fn changed_elements(lines: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in lines.iter().filter_map(|l| element_of(l)) {
        if !out.iter().any(|o| o == e) {
            out.push(e.to_string());
        }
    }
    out
}

pub fn networks(factory: &str, host: &DesiredHost, live: &LiveHost, out: &mut Out) {
    for net in &host.networks {
        let DesiredNetwork { id, name, kind, tenant: _, bridge, pf, vlan: _, mtu: _ } = net;
        let xml = render::network(factory, net);
        let Some(l) = live.networks.iter().find(|n| &n.name == name) else {
            let via = bridge.as_deref().or(pf.as_deref()).unwrap_or(name);
            let a =
                Action::new(id.clone(), Op::Create, Class::Live, format!("define and start {kind} network on `{via}`"));
            // The definition is the `define` op's ([`Action::shown_diff`]).
            out.actions.push(a);
            continue;
        };
        if !out.owned(id, "network", Owner::of(l.owner.as_ref(), factory)) {
            continue;
        }
        let (want, have) = match (normalize::network(&xml), normalize::network(&l.xml)) {
            (Ok(w), Ok(h)) => (w, h),
            (Err(e), _) | (_, Err(e)) => {
                out.error(
                    "fabrik::plan::unreadable-object",
                    id,
                    format!("the definition of network `{name}` on host `{}` cannot be read: {e}", id.host),
                    "libvirt returned XML fabrik cannot parse; report it with the network's XML",
                );
                continue;
            }
        };
        if want != have {
            let diff = TextDiff::from_lines(&have, &want)
                .unified_diff()
                .context_radius(3)
                .header("live", "desired")
                .to_string();
            let mut a = Action::new(
                id.clone(),
                Op::Replace,
                Class::Replace,
                "definition changed: undefined, defined again and restarted (VMs on its bridge keep their ports)",
            );
            a.changes.push(Change::new("definition", "live", "desired", Class::Replace));
            a.diff = Some(diff);
            out.actions.push(a);
            continue;
        }
        let mut changes = Vec::new();
        if !l.active {
            changes.push(Change::new("active", false, true, Class::Live));
        }
        if !l.autostart {
            changes.push(Change::new("autostart", false, true, Class::Live));
        }
        if !changes.is_empty() {
            let reason = changes.iter().map(|c| format!("{} on", c.field)).collect::<Vec<_>>().join("; ");
            out.actions.push(Action::update(id.clone(), changes, reason));
        }
    }
    let desired: BTreeSet<&str> = host.networks.iter().map(|n| n.name.as_str()).collect();
    for n in live.networks.iter().filter(|n| !desired.contains(n.name.as_str())) {
        let id = ResourceId::new(ResourceKind::Network, &host.name, &n.name);
        out.extra(id, "network", Owner::of(n.owner.as_ref(), factory), |id| {
            Action::new(id, Op::Delete, Class::Live, "no longer desired: stopped and undefined")
        });
    }
}

fn pool_kind_word(kind: PoolKind) -> &'static str {
    match kind {
        PoolKind::Dir => "dir",
        PoolKind::Logical => "logical",
        PoolKind::Netfs => "netfs",
    }
}

/// Pools and volumes, under the rule of [`crate::plan::ownership`]: made when absent,
/// used as they are when present, a pool never deleted, a volume deleted only when
/// fabrik recorded making it as deletable.
pub fn storage(host: &DesiredHost, live: &LiveHost, created: &Created, out: &mut Out) {
    for pool in &host.pools {
        let DesiredPool { id, name, kind, path, source: _ } = pool;
        let Some(l) = live.pools.iter().find(|p| &p.name == name) else {
            out.actions.push(Action::new(
                id.clone(),
                Op::Create,
                Class::Live,
                format!("define, build and start {kind} pool at {path}"),
            ));
            continue;
        };
        let same_path = l.path.as_deref().map(|p| p.trim_end_matches('/')) == Some(path.trim_end_matches('/'));
        if l.kind != pool_kind_word(*kind) || !same_path {
            out.error(
                "fabrik::plan::name-clash",
                id,
                format!(
                    "pool `{name}` on host `{}` is a {} pool at {}, not the {kind} pool at {path} the factory declares",
                    id.host,
                    l.kind,
                    l.path.as_deref().unwrap_or("no path")
                ),
                "fabrik never redefines an existing pool: rename the pool in the factory, or change the host's",
            );
            continue;
        }
        out.present.insert(id.clone());
        // An apply stopped between a pool's start and its autostart leaves it running
        // but not started with the host: both are compared.
        let mut changes = Vec::new();
        if !l.active {
            changes.push(Change::new("active", false, true, Class::Live));
        }
        if !l.autostart {
            changes.push(Change::new("autostart", false, true, Class::Live));
        }
        if !changes.is_empty() {
            let reason = changes
                .iter()
                .map(|c| if c.field == "active" { "start" } else { "autostart on" })
                .collect::<Vec<_>>()
                .join("; ");
            out.actions.push(Action::update(id.clone(), changes, reason));
        }
    }
    for vol in &host.volumes {
        volume(vol, live, out);
    }
    // Volumes no desired resource names.
    let desired: BTreeSet<&ResourceId> = host.volumes.iter().map(|v| &v.id).collect();
    for p in &live.pools {
        for v in &p.volumes {
            let id = ResourceId::new(ResourceKind::Volume, &host.name, format!("{}/{}", p.name, v.name));
            if desired.contains(&id) {
                continue;
            }
            if created.deletable(&id) {
                let mut a = Action::new(
                    id,
                    Op::Delete,
                    Class::DestroysData,
                    "no longer desired, made by fabrik as `delete-with-vm`: its data is deleted",
                );
                a.changes.push(Change {
                    field: "capacity".into(),
                    from: Some(v.capacity.to_string()),
                    to: None,
                    class: Class::DestroysData,
                });
                out.actions.push(a);
            } else if created.contains(&id) {
                out.notice(
                    id,
                    NoticeKind::Kept,
                    "no longer desired; kept because it may hold data (the disk did not say `delete-with-vm`)",
                );
            } else {
                out.notice(id, NoticeKind::Unmanaged, "volume fabrik has no record of making");
            }
        }
    }
    let desired_pools: BTreeSet<&str> = host.pools.iter().map(|p| p.name.as_str()).collect();
    for p in live.pools.iter().filter(|p| !desired_pools.contains(p.name.as_str())) {
        out.notice(
            ResourceId::new(ResourceKind::Pool, &host.name, &p.name),
            NoticeKind::Unmanaged,
            "pool not declared; fabrik never deletes pools",
        );
    }
}

fn volume(vol: &DesiredVolume, live: &LiveHost, out: &mut Out) {
    let DesiredVolume { id, pool, name, capacity, format, image, deletable: _ } = vol;
    let found =
        live.pools.iter().find(|p| &p.name == pool).and_then(|p: &LivePool| p.volumes.iter().find(|v| &v.name == name));
    let Some(l) = found else {
        let what = match (image, capacity) {
            (Some(i), _) if i.pool == *pool && i.volume == *name => format!("import image from {}", i.source),
            (Some(i), _) => format!("create {format} volume from image `{}`", i.volume),
            (None, _) if crate::guest::volume::is_seed(name) => {
                "create the cloud-init seed volume and write the seed".into()
            }
            (None, Some(c)) => format!("create empty {format} volume of {c}"),
            (None, None) => format!("create empty {format} volume"),
        };
        let a = Action::new(id.clone(), Op::Create, Class::Live, what);
        // The definition is the `create-volume` op's ([`Action::shown_diff`]).
        out.actions.push(a);
        return;
    };
    out.present.insert(id.clone());
    if let Some(c) = capacity
        && c.bytes() > l.capacity.bytes()
    {
        out.actions.push(Action::update(
            id.clone(),
            vec![Change::new("capacity", l.capacity, c, Class::Live)],
            format!("grow from {} to {c} (the guest grows its file system)", l.capacity),
        ));
    }
}

/// The NIC addresses a VM's mark records that the desired state changes: `NIC 0 on
/// `acme-net`: 10.20.0.11 → 10.20.0.12`, joined; empty when none changes.
fn address_changes(vm: &DesiredVm, live: &LiveDomain) -> String {
    let mut out = Vec::new();
    for (k, nic) in vm.nics.iter().enumerate() {
        let want = nic.address.as_ref().map(|a| a.ip);
        let have = live.addresses.iter().find(|(i, _)| *i as usize == k).map(|(_, ip)| *ip);
        if want != have {
            let word = |ip: Option<std::net::IpAddr>| ip.map_or_else(|| "none".to_string(), |ip| ip.to_string());
            out.push(format!("NIC {k} on `{}`: {} → {}", nic.network, word(have), word(want)));
        }
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::types::ByteSize;

    /// One host of 40 VMs, some changed, one unreadable, one stopped out of band: its VMs
    /// rendered and compared on threads ahead give the diff made one VM at a time.
    #[test]
    fn compared_ahead_on_threads_or_one_at_a_time_the_diff_is_the_same() {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ai-factory"));
        let v = crate::check::validate(path);
        assert!(v.is_valid());
        let mut d = crate::desired::build(&v.spec).expect("the example builds");
        let host = d.hosts.iter_mut().max_by_key(|h| h.vms.len()).expect("the example has hosts");
        let base = host.vms.clone();
        for i in 0..40 - base.len() {
            let mut vm = base[i % base.len()].clone();
            vm.name = format!("{}-{i}", vm.name);
            vm.id = ResourceId::new(ResourceKind::Vm, &host.name, &vm.name);
            host.vms.push(vm);
        }
        let name = host.name.clone();
        let mut live = crate::plan::converged(&d);
        let host = d.hosts.iter_mut().find(|h| h.name == name).unwrap();
        for vm in host.vms.iter_mut().step_by(7) {
            vm.memory = ByteSize(vm.memory.bytes() * 2);
        }
        let l = live.iter_mut().find(|h| h.name == name).unwrap();
        l.domains[3].xml = "<domain><unclosed></domain>".into();
        l.domains[5].state = PowerState::ShutOff;
        let (host, l) = (&*host, &*l);
        // Spread over threads wherever the machine has two cores or more.
        assert!(crate::plan::spread(host.vms.len()) || crate::plan::cores() == 1);
        let diff = |threads| {
            let mut out = Out::default();
            domains(&d.factory, host, l, Duration::from_secs(60), threads, &mut out);
            format!("{:?}\n{:?}\n{:?}\n{:?}", out.actions, out.errors, out.notices, out.present)
        };
        let (ahead, one_by_one) = (diff(true), diff(false));
        assert!(ahead.contains("definition changed") && ahead.contains("cannot be read"), "{ahead}");
        assert_eq!(ahead, one_by_one);
    }
}
