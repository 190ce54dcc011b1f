//! The plan: what fabrik would change to make the hosts match the desired state.
//!
//! [`plan`] is pure: it takes the [`Desired`] state, the observed [`LiveHost`]s and the
//! operator's [`Options`], and returns a [`Plan`] value — actions in dependency order,
//! each with its class and reason, the objects it leaves alone, the errors that stop
//! it, and a fingerprint of every live object it read so a saved plan can tell when it
//! has gone stale ([`file`]). [`diff`] compares one kind of resource at a time;
//! [`moves`] joins a VM's deletion on one host and creation on another into one move;
//! [`ownership`] decides what fabrik may touch; [`in_use`] holds back the deletion of a
//! network or bridge that something fabrik does not own still uses; [`output`] renders a plan for people
//! (human, markdown) and programs (JSON); [`converged`] makes, for tests and
//! benchmarks, the live state of hosts that already match.

pub mod class;
pub mod converged;
pub mod diff;
pub mod document;
pub mod file;
pub mod in_use;
pub mod iommu;
pub mod legacy;
pub mod locate;
pub mod moves;
pub mod ops;
pub mod output;
pub mod ownership;
pub mod seeds;

use std::borrow::{Borrow, Cow};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

pub use class::{Class, Op};
pub use converged::converged;
pub use ownership::Created;

use crate::desired::{Desired, ResourceId, ResourceKind};
use crate::graph::Graph;
use crate::live::LiveHost;

/// The version of the plan document (`--format json`, `--out`).
pub const FORMAT: &str = "fabrik-plan/2";

/// What the operator asked for beyond the desired state.
#[derive(Clone, Debug)]
pub struct Options {
    /// Plan only these resources and what they need (empty: everything).
    pub targets: Vec<ResourceId>,
    /// Leave these resources and everything that needs them out.
    pub excludes: Vec<ResourceId>,
    /// Replace these resources even if nothing changed.
    pub replace: Vec<ResourceId>,
    /// What fabrik recorded creating (volumes it may delete).
    pub created: Created,
    /// How long a VM gets to shut down before apply forces it off (shown in the plan).
    pub shutdown_timeout: std::time::Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            targets: Vec::new(),
            excludes: Vec::new(),
            replace: Vec::new(),
            created: Created::default(),
            shutdown_timeout: ops::SHUTDOWN_TIMEOUT_DEFAULT,
        }
    }
}

/// One field that differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub field: String,
    /// What the host has; `None` when the object is absent.
    pub from: Option<String>,
    /// What the desired state says; `None` when the object goes.
    pub to: Option<String>,
    pub class: Class,
}

impl Change {
    pub fn new(field: &str, from: impl ToString, to: impl ToString, class: Class) -> Change {
        Change { field: field.to_string(), from: Some(from.to_string()), to: Some(to.to_string()), class }
    }
}

/// One resource's action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub id: ResourceId,
    pub op: Op,
    /// The most disruptive class of its changes.
    pub class: Class,
    /// `+`, `~`, `-/+`, `-` or `!`.
    pub symbol: String,
    /// One line: why, in the operator's words.
    pub reason: String,
    pub changes: Vec<Change>,
    /// The unified diff of the normalized libvirt XML, live → desired, of an update or
    /// a replace. A creation has none: its whole definition is in its ops, and shown as a
    /// diff from there ([`Action::shown_diff`]), so a plan holds no XML twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// A VM moved between hosts: its copy on the old host (`vm:<old host>/<name>`), shut
    /// down and undefined before this one starts ([`moves`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<ResourceId>,
    /// What apply does, in order: the executor's only input ([`ops`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ops: Vec<ops::Step>,
    /// A move's operations on the old host (`moved_from`'s), run before `ops`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moved_from_ops: Vec<ops::Step>,
}

impl Action {
    pub fn new(id: ResourceId, op: Op, class: Class, reason: impl Into<String>) -> Action {
        Action {
            symbol: op.symbol(class).to_string(),
            id,
            op,
            class,
            reason: reason.into(),
            changes: Vec::new(),
            diff: None,
            moved_from: None,
            ops: Vec::new(),
            moved_from_ops: Vec::new(),
        }
    }

    /// An action made of field changes; its class is the most disruptive one's.
    pub fn update(id: ResourceId, changes: Vec<Change>, reason: impl Into<String>) -> Action {
        let class = changes.iter().map(|c| c.class).max().unwrap_or(Class::Live);
        Action { changes, ..Action::new(id, Op::Update, class, reason) }
    }

    /// The diff shown with `--diff`: the recorded one, or for an object made from nothing
    /// (a creation, a moved VM's new copy) its whole definition, from the op that defines it.
    pub fn shown_diff(&self) -> Option<std::borrow::Cow<'_, str>> {
        if let Some(d) = &self.diff {
            return Some(std::borrow::Cow::Borrowed(d));
        }
        if self.op != Op::Create && self.moved_from.is_none() {
            return None;
        }
        diff::virt::creation_diff_of(&self.ops).map(std::borrow::Cow::Owned)
    }

    fn set_class(&mut self, class: Class) {
        self.class = class;
        self.symbol = self.op.symbol(class).to_string();
    }
}

/// Why an object on a host is listed without an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoticeKind {
    /// Not made by fabrik; never touched (shown with `--show-unmanaged`).
    Unmanaged,
    /// Marked by another factory; never touched.
    OtherFactory,
    /// No longer desired but kept: it may hold data (a volume), or fabrik cannot prove it
    /// made it (a pool).
    Kept,
    /// No longer desired, but its deletion is held back: a guest or port fabrik does not
    /// own still uses it ([`in_use`], `fabrik::plan::in-use`).
    Held,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub id: ResourceId,
    pub kind: NoticeKind,
    pub reason: String,
    /// The code that explains it (`fabrik explain CODE`), for a notice that has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// Something that stops the plan: apply refuses a plan with errors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanError {
    /// `fabrik::plan::name-clash`, …
    pub code: String,
    pub id: ResourceId,
    pub message: String,
    pub help: String,
    /// Where the resource is declared, when the factory's files declare it: filled in
    /// by [`locate::locate_errors`] once the plan is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<locate::Location>,
}

/// The counts of the summary line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Creates, and replaces (which also count as destroys).
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
    pub vm_restarts: usize,
    pub gpu_relayouts: usize,
    pub data_destroyed: usize,
}

/// A plan: a value, rendered and saved by others; apply carries it out. Its document
/// (`--format json`, `--out`) is one [`HostPlan`] per host ([`document`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Plan {
    pub format: String,
    pub factory: String,
    /// Hash of the desired state the plan was made from.
    pub desired_hash: String,
    /// In the order apply carries them out: deletions first (dependents before what they
    /// need), then creations and updates in the graph's creation order.
    pub actions: Vec<Action>,
    pub errors: Vec<PlanError>,
    pub notices: Vec<Notice>,
    pub summary: Summary,
    /// Every live object read, and every desired one expected absent (`absent`), by key.
    pub fingerprints: BTreeMap<String, file::Fingerprint>,
    /// Each declared host's libvirt connection (its URI, credentials masked when printed
    /// or saved), by host name.
    pub connections: BTreeMap<String, String>,
    /// Where the plan was made from, recorded in a saved plan (`--out`) so that
    /// `fabrik apply plan.json` reads the same factory and hosts with the same options.
    pub origin: Option<Origin>,
}

/// The host of a fingerprint's key (`kind:host/name`).
fn key_host(key: &str) -> Option<&str> {
    key.split_once(':').and_then(|(_, rest)| rest.split_once('/')).map(|(h, _)| h)
}

/// One host's part of a plan ([`Plan::host_plans`]), as the plan document holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostPlan<'a> {
    pub host: &'a str,
    /// The libvirt URI the plan read the host through (none for a host the factory no
    /// longer declares).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<&'a str>,
    /// What was read from this host, by key.
    pub fingerprints: BTreeMap<&'a str, file::Fingerprint>,
    /// In plan order, each with its operations.
    pub actions: Vec<&'a Action>,
    pub errors: Vec<&'a PlanError>,
    pub notices: Vec<&'a Notice>,
}

/// The factory, hosts and options a saved plan was made with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The factory's file or directory, as given (relative to where fabrik ran).
    pub path: String,
    /// Made against the simulated twins in this state folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twins: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replace: Vec<String>,
    /// The shutdown timeout the plan's lines show, in seconds.
    pub shutdown_timeout_s: u64,
    /// Where apply keeps its lock and `created.json` for these hosts (absolute), so a
    /// plan applied after the factory moved uses the same records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The factory's files as they were planned (paths relative to `path`), so that the
    /// plan is self-contained: `fabrik apply plan.json` reads these when `path` is gone.
    /// Credentials are masked in them ([`Origin::masked`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SavedSource>,
    /// Some of the files' credentials (a URI's password, an agent's key) were masked:
    /// such a plan needs the factory's own files to connect.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub masked: bool,
}

/// One file of the factory, kept in a saved plan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSource {
    /// Relative to the origin's `path` (for a single-file factory, its file name).
    pub path: String,
    pub text: String,
}

impl Plan {
    /// Whether applying the plan would change anything.
    pub fn has_changes(&self) -> bool {
        !self.actions.is_empty()
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The actions on one host, in plan order.
    pub fn on_host<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a Action> + 'a {
        self.actions.iter().filter(move |a| a.id.host == host)
    }

    /// The plan of each host it touches, in natural host order: the per-host view a
    /// reconcile of one host (the watch loop's unit) works from. A moved VM is in its
    /// new host's plan (its old copy's operations are its `moved_from_ops`).
    /// Every host the plan read or touches is there, one with nothing to do too (its
    /// fingerprints keep a saved plan honest about it).
    pub fn host_plans(&self) -> Vec<HostPlan<'_>> {
        let mut hosts: BTreeSet<&str> = self.hosts().into_iter().collect();
        hosts.extend(self.connections.keys().map(String::as_str));
        hosts.extend(self.fingerprints.keys().filter_map(|k| key_host(k)));
        let mut hosts: Vec<&str> = hosts.into_iter().collect();
        hosts.sort_by(|a, b| crate::desired::id::natural_cmp(a, b));
        let mut plans: Vec<HostPlan<'_>> = hosts
            .iter()
            .map(|&host| HostPlan {
                host,
                connection: self.connections.get(host).map(String::as_str),
                fingerprints: BTreeMap::new(),
                actions: Vec::new(),
                errors: Vec::new(),
                notices: Vec::new(),
            })
            .collect();
        // Each action, error and notice goes to its host's plan in one pass, in plan
        // order (a scan of all of them per host was hosts × actions).
        let at: HashMap<&str, usize> = hosts.iter().enumerate().map(|(i, h)| (*h, i)).collect();
        for a in &self.actions {
            if let Some(&i) = at.get(a.id.host.as_str()) {
                plans[i].actions.push(a);
            }
        }
        for e in &self.errors {
            if let Some(&i) = at.get(e.id.host.as_str()) {
                plans[i].errors.push(e);
            }
        }
        for n in &self.notices {
            if let Some(&i) = at.get(n.id.host.as_str()) {
                plans[i].notices.push(n);
            }
        }
        for (k, v) in &self.fingerprints {
            if let Some(i) = key_host(k).and_then(|h| at.get(h)) {
                plans[*i].fingerprints.insert(k.as_str(), *v);
            }
        }
        plans
    }

    /// The hosts the plan has actions, errors or notices for, in natural order
    /// (`gpu9` before `gpu10`).
    pub fn hosts(&self) -> Vec<&str> {
        let mut hosts: BTreeSet<&str> = self.actions.iter().map(|a| a.id.host.as_str()).collect();
        hosts.extend(self.errors.iter().map(|e| e.id.host.as_str()));
        hosts.extend(self.notices.iter().map(|n| n.id.host.as_str()));
        let mut hosts: Vec<&str> = hosts.into_iter().collect();
        hosts.sort_by(|a, b| crate::desired::id::natural_cmp(a, b));
        hosts
    }
}

/// Compares the desired state with the live hosts.
pub fn plan(desired: &Desired, live: &[LiveHost], options: &Options) -> Plan {
    plan_in(Cow::Borrowed(desired), Graph::of(desired).ok(), live, options)
}

/// [`plan`] with the desired state's graph already built (the CLI builds it first, to
/// refuse a cycle before reading any host).
pub fn plan_with(desired: &Desired, graph: &Graph, live: &[LiveHost], options: &Options) -> Plan {
    plan_in(Cow::Borrowed(desired), Some(graph), live, options)
}

/// [`plan_with`] for a caller that no longer needs the desired state and its graph: the
/// desired state becomes the planned one in place instead of being copied, and the
/// graph is freed once the actions are ordered (a plan of 10,000 hosts holds one
/// desired state, not two). `graph` is `None` when the desired state has a cycle.
pub fn plan_owned(desired: Desired, graph: Option<Graph>, live: &[LiveHost], options: &Options) -> Plan {
    plan_in(Cow::Owned(desired), graph, live, options)
}

/// The desired state as a plan's actions see it: the MACs and addresses the running VMs
/// have kept, the seeds hashed with them, InfiniBand ports at their VFs' PCI addresses
/// (a pure function of the files and the hosts, so a saved plan's seeds are built again
/// from it, [`seeds::fill`]).
pub fn as_planned(desired: &Desired, live: &[LiveHost]) -> Desired {
    let mut planned = desired.clone();
    plan_in_place(&mut planned, live);
    planned
}

/// [`as_planned`] of `desired` itself, changed in place step by step (each step reads
/// what the one before made).
fn plan_in_place(planned: &mut Desired, live: &[LiveHost]) {
    crate::desired::mac::keep_live_in(planned, live);
    crate::desired::addr::keep_live_in(planned, live);
    crate::desired::ib::on_hosts_in(planned, live);
    crate::desired::vgpu::on_hosts_in(planned, live);
    crate::guest::volume::rehash_in(planned);
}

/// Without a graph (it has a cycle, reported elsewhere) actions keep the diff's order
/// and targeting is not applied.
fn plan_in<G: Borrow<Graph>>(
    desired: Cow<'_, Desired>,
    graph: Option<G>,
    live: &[LiveHost],
    options: &Options,
) -> Plan {
    // The plan's hash is of the files' desired state, so a saved plan is checked against
    // the files; its actions keep the MACs the running VMs have (the executor does the same).
    let desired_hash = desired_hash(&desired);
    let mut planned = desired.into_owned();
    plan_in_place(&mut planned, live);
    let planned = &planned;
    // The fingerprints (every live object serialized and hashed, byte by byte) depend on
    // nothing the diff makes. A plan of few hosts diffs them on one core, one after
    // another: the fingerprints are taken on a thread beside it, so the plan takes the
    // diff's wall time rather than the sum (`fabrik plan` of one host). A plan of many
    // hosts already diffs on every core: its fingerprints come after, once the diff's
    // and the graph's memory is given back (issue 14's bounded memory).
    let fingerprints = || file::fingerprints(planned, live);
    std::thread::scope(|s| {
        let beside = if !spread(planned.hosts.len()) && cores() > 1 {
            std::thread::Builder::new().spawn_scoped(s, fingerprints).ok()
        } else {
            None
        };
        let mut plan = diffed(planned, graph, live, options);
        plan.desired_hash = desired_hash;
        plan.fingerprints = match beside {
            Some(handle) => handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            None => fingerprints(),
        };
        plan
    })
}

/// The plan of `desired` (as planned) against `live`, its hash and fingerprints left
/// empty ([`plan_in`] takes them beside).
fn diffed<G: Borrow<Graph>>(desired: &Desired, graph: Option<G>, live: &[LiveHost], options: &Options) -> Plan {
    // The first live host of each name, as a search from the front would find it.
    let by_name = crate::live::by_name(live);
    // Each host's diff depends on no other host: they are made side by side and joined
    // in host order, so the result is the one a single thread would give. Too few hosts
    // to spread are diffed here one after another, their VMs compared on threads instead
    // (`fabrik plan` of one host of 96 VMs).
    let vm_threads = !spread(desired.hosts.len());
    let per_host = on_threads(&desired.hosts, |host| {
        let mut out = diff::Out::default();
        out.present.wanted = !options.replace.is_empty();
        match by_name.get(host.name.as_str()) {
            Some(l) => diff::host(&desired.factory, host, l, options, vm_threads, &mut out),
            None => out.errors.push(PlanError {
                code: "fabrik::plan::unreadable-host".into(),
                id: ResourceId::new(ResourceKind::Host, &host.name, &host.name),
                message: format!("host `{}` was not observed", host.name),
                help: "check that the host is reachable, then plan again".into(),
                at: None,
            }),
        }
        out
    });
    let mut out = diff::Out::default();
    for host_out in per_host {
        let diff::Out { actions, errors, notices, present } = host_out;
        out.actions.extend(actions);
        out.errors.extend(errors);
        out.notices.extend(notices);
        out.present.ids.extend(present.ids);
    }
    moves::join(&mut out, live, options);
    for action in &mut out.actions {
        if options.replace.contains(&action.id) && action.op == Op::Update {
            action.op = Op::Replace;
            action.reason = format!("replace requested (--replace); {}", action.reason);
            action.set_class(action.class.max(Class::Replace));
        }
    }
    for id in &options.replace {
        if !out.actions.iter().any(|a| &a.id == id) && out.present.ids.contains(id) {
            out.actions.push(Action::new(id.clone(), Op::Replace, Class::Replace, "replace requested (--replace)"));
        }
    }
    let mut actions = {
        let graph = graph.as_ref().map(Borrow::borrow);
        // The place of each action's resource in the creation order, for the actions'
        // order: not made when there is nothing to order (a plan with nothing to do), and
        // kept only for the resources an action is about (the order of all of them is
        // ~600,000 entries at 10,000 hosts; issue 14's bounded memory).
        let order: HashMap<&ResourceId, usize> = match graph {
            Some(g) if !out.actions.is_empty() => {
                let acted: HashSet<&ResourceId> = out.actions.iter().map(|a| &a.id).collect();
                g.creation_order()
                    .into_iter()
                    .enumerate()
                    .filter(|(_, id)| acted.contains(id))
                    .map(|(i, id)| (id, i))
                    .collect()
            }
            Some(_) | None => HashMap::new(),
        };
        let mut actions = out.actions;
        actions.sort_by(|a, b| sort_key(a, &order).cmp(&sort_key(b, &order)));
        match graph {
            Some(g) => target(actions, g, options),
            None => actions,
        }
    };
    // A graph handed over is not needed any more: freed before the fingerprints.
    drop(graph);
    let desired_of: HashMap<&str, &crate::desired::DesiredHost> =
        desired.hosts.iter().map(|h| (h.name.as_str(), h)).collect();
    for action in &mut actions {
        let (dhost, lhost) =
            (desired_of.get(action.id.host.as_str()).copied(), by_name.get(action.id.host.as_str()).copied());
        if let Some(old) = &action.moved_from {
            let away = Action::new(old.clone(), Op::Delete, Class::Replace, "moves");
            let lhost = by_name.get(old.host.as_str()).copied();
            action.moved_from_ops =
                ops::for_action(&desired.factory, None, lhost, &away, options.shutdown_timeout).unwrap_or_default();
        }
        match ops::for_action(&desired.factory, dhost, lhost, action, options.shutdown_timeout) {
            Ok(steps) => action.ops = steps,
            Err(e) => out.errors.push(PlanError {
                code: "fabrik::plan::cannot-apply".into(),
                id: action.id.clone(),
                message: e.message,
                help: e.help,
                at: None,
            }),
        }
    }
    let summary = summarize(&actions);
    out.errors.extend(legacy::renamed_volumes(desired, live));
    out.notices.sort_by(|a, b| (&a.id, a.kind).cmp(&(&b.id, b.kind)));
    out.errors.sort_by(|a, b| (&a.id, &a.code).cmp(&(&b.id, &b.code)));
    Plan {
        format: FORMAT.to_string(),
        factory: desired.factory.clone(),
        desired_hash: String::new(),
        actions,
        errors: out.errors,
        notices: out.notices,
        summary,
        fingerprints: BTreeMap::new(),
        connections: desired.hosts.iter().map(|h| (h.name.clone(), h.uri.clone())).collect(),
        origin: None,
    }
}

/// Deletions first, dependents before what they need (VMs, then volumes, MIG instances,
/// networks, links…); then everything else in creation order.
fn sort_key<'a>(a: &'a Action, order: &HashMap<&ResourceId, usize>) -> (u8, usize, &'a ResourceId) {
    match a.op {
        Op::Delete => (0, usize::from(u8::MAX) - deletion_rank(a.id.kind), &a.id),
        Op::Create | Op::Update | Op::Replace => (1, order.get(&a.id).copied().unwrap_or(usize::MAX), &a.id),
    }
}

/// Higher goes first when deleting: dependents before what they need (apply orders its
/// deletions by it too).
pub(crate) fn deletion_rank(kind: ResourceKind) -> usize {
    match kind {
        ResourceKind::Vm => 8,
        ResourceKind::Partitions => 8,
        ResourceKind::Volume => 7,
        ResourceKind::Mig => 6,
        ResourceKind::Network => 5,
        ResourceKind::Link => 4,
        ResourceKind::Pool => 3,
        ResourceKind::Vfs => 2,
        ResourceKind::Hugepages => 2,
        ResourceKind::Gpu => 1,
        ResourceKind::Host => 0,
    }
}

/// `--target`: the targets and everything they need. `--exclude`: drops the excluded
/// and everything that needs them.
fn target(actions: Vec<Action>, graph: &Graph, options: &Options) -> Vec<Action> {
    let closure = |start: &[ResourceId], next: &dyn Fn(&ResourceId) -> Vec<ResourceId>| {
        let mut seen: BTreeSet<ResourceId> = start.iter().cloned().collect();
        let mut todo: Vec<ResourceId> = start.to_vec();
        while let Some(id) = todo.pop() {
            for n in next(&id) {
                if seen.insert(n.clone()) {
                    todo.push(n);
                }
            }
        }
        seen
    };
    let wanted = (!options.targets.is_empty())
        .then(|| closure(&options.targets, &|id| graph.dependencies(id).into_iter().cloned().collect()));
    let excluded = closure(&options.excludes, &|id| graph.dependents(id).into_iter().cloned().collect());
    actions
        .into_iter()
        .filter(|a| wanted.as_ref().is_none_or(|w| w.contains(&a.id)) && !excluded.contains(&a.id))
        .collect()
}

fn summarize(actions: &[Action]) -> Summary {
    let mut s = Summary::default();
    for a in actions {
        match a.op {
            Op::Create => s.add += 1,
            Op::Update => s.change += 1,
            Op::Replace => {
                s.add += 1;
                s.destroy += 1;
            }
            Op::Delete => s.destroy += 1,
        }
        match a.class {
            Class::RestartNow if a.id.kind == ResourceKind::Vm => s.vm_restarts += 1,
            // A move stops the guest on one host and starts it on another.
            Class::Replace if a.moved_from.is_some() => s.vm_restarts += 1,
            Class::GpuRelayout => s.gpu_relayouts += 1,
            Class::DestroysData => s.data_destroyed += 1,
            Class::Live | Class::NextRestart | Class::RestartNow | Class::Replace => {}
        }
    }
    s
}

/// FNV-1a over the desired state's JSON: equal for the same desired state, byte for byte.
pub fn desired_hash(desired: &Desired) -> String {
    crate::hash::fingerprint(desired)
}

/// Planning a factory this small is not worth a thread.
const THREADS_MIN_ITEMS: usize = 16;

/// Whether [`on_threads`] spreads `items` items over threads (or runs them here, in order).
pub(crate) fn spread(items: usize) -> bool {
    items >= THREADS_MIN_ITEMS && cores() > 1
}

/// The threads this process may run at once, asked once (the standard library reads the
/// cgroup's files each time).
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `f` of every item, on as many threads as there are cores, in the order of `items`.
/// Runs on the calling thread alone for a few items, or when no thread can be started.
pub(crate) fn on_threads<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if !spread(items.len()) {
        return items.iter().map(f).collect();
    }
    let threads = cores().min(items.len());
    let f = &f;
    let run = move |chunk: &[T]| chunk.iter().map(f).collect::<Vec<R>>();
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let rest: Vec<_> = items[chunk..]
            .chunks(chunk)
            .map(|c| std::thread::Builder::new().spawn_scoped(s, move || run(c)).map_err(|_| c))
            .collect();
        let mut out = run(&items[..chunk]);
        for part in rest {
            match part {
                Ok(handle) => match handle.join() {
                    Ok(results) => out.extend(results),
                    Err(panic) => std::panic::resume_unwind(panic),
                },
                Err(c) => out.extend(run(c)),
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_threads_keeps_the_order_of_the_items() {
        for n in [0, 1, THREADS_MIN_ITEMS - 1, THREADS_MIN_ITEMS, 1001] {
            let items: Vec<usize> = (0..n).collect();
            let names = on_threads(&items, |i| format!("host{i}"));
            assert_eq!(names, items.iter().map(|i| format!("host{i}")).collect::<Vec<_>>());
        }
    }
}
