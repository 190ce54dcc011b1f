//! `fabrik import`: adopting domains that no factory marks yet.
//!
//! For each unmarked domain on the factory's hosts, [`declare`] writes the VM
//! declaration that describes it (explicit sizing, its disks' volumes, its NICs' MACs).
//! [`survey`] then adds those declarations to the factory, builds the desired state
//! and plans against the hosts as they would be once marked: a domain is adopted only
//! when that plan leaves it (and its volumes) unchanged, so marking it restarts nothing
//! and the next `fabrik plan` shows no change for it. Everything else is refused, with
//! the reasons. Marking is a metadata update of the saved and the running definition
//! ([`crate::driver::Virt::set_domain_mark`]), never a redefine.
//!
//! A domain the factory already declares by name (today a `fabrik::plan::name-clash`)
//! is adopted the same way, with nothing to add to the files.
//!
//! Pure: the factory and the observed hosts in, a [`Survey`] out.

pub mod declare;

use std::path::PathBuf;

use crate::desired::{Desired, ResourceId, ResourceKind};
use crate::diag::Diagnostic;
use crate::driver::libvirt::owner;
use crate::live::{LiveHost, Ownership};
use crate::plan::ownership::{Owner, describe_factory};
use crate::spec::model::Spec;
use crate::spec::source::{FileId, Sources, Syntax};

pub use declare::VmDecl;

/// What the operator asked to import.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// Only these hosts (empty: every host of the factory).
    pub hosts: Vec<String>,
    /// Only these domains (empty: every domain not marked by this factory).
    pub domains: Vec<String>,
    /// The tenant of the declared VMs (default: told from their networks).
    pub tenant: Option<String>,
}

/// A domain fabrik can adopt without changing it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Adoption {
    pub host: String,
    pub domain: String,
    pub id: ResourceId,
    /// The declaration to add to the factory; `None` when the factory declares it already.
    pub declaration: Option<VmDecl>,
    /// The `<fabrik:owner …>` element to set in its metadata.
    pub mark: String,
    /// What the next plan will still do for it that is no restart (autostart).
    pub notes: Vec<String>,
}

/// A domain fabrik will not adopt, and why.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Refusal {
    pub host: String,
    pub domain: String,
    pub reasons: Vec<String>,
}

/// What import found on the hosts.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Survey {
    pub adoptions: Vec<Adoption>,
    pub refusals: Vec<Refusal>,
    /// Domains this factory marks already: (host, domain).
    pub already_ours: Vec<(String, String)>,
}

impl Survey {
    /// The declarations to add, in host and domain order.
    pub fn declarations(&self) -> Vec<VmDecl> {
        self.adoptions.iter().filter_map(|a| a.declaration.clone()).collect()
    }
}

/// Why no survey could be made: the factory (with the declarations added) has errors.
pub struct Invalid {
    pub diags: Vec<Diagnostic>,
    /// The factory's sources, with the declarations' file added, to render `diags`.
    pub sources: Sources,
}

/// The name the declarations' file has in diagnostics.
pub const DECLARATIONS_FILE: &str = "<fabrik import>.yaml";

/// Times the adoptable set is narrowed before giving up: each round drops the domains the
/// trial plan would change, and the rest are planned again without them (one domain's
/// declaration can shift another's derived values, such as an allocated address).
const ROUNDS_MAX: usize = 8;

/// Surveys the hosts: every domain asked for, adopted or refused.
pub fn survey(spec: &Spec, sources: &Sources, live: &[LiveHost], request: &Request) -> Result<Survey, Invalid> {
    let invalid = |diags: Vec<Diagnostic>| Invalid { diags, sources: sources.clone() };
    let factory = spec.factory.as_ref().map(|f| f.value.clone()).unwrap_or_default();
    let base = crate::desired::build(spec).map_err(invalid)?;
    let mut survey = Survey::default();
    // Candidates: (host, domain, declaration if the factory lacks one).
    let mut candidates: Vec<(String, String, Option<VmDecl>)> = Vec::new();
    for l in live {
        if !request.hosts.is_empty() && !request.hosts.contains(&l.name) {
            continue;
        }
        let Some(host) = base.hosts.iter().find(|h| h.name == l.name) else { continue };
        if !l.read("libvirt") {
            survey.refusals.push(Refusal {
                host: l.name.clone(),
                domain: "*".into(),
                reasons: l
                    .errors
                    .iter()
                    .filter(|e| e.concern == "libvirt")
                    .map(|e| format!("its libvirt could not be read: {}", e.error))
                    .collect(),
            });
            continue;
        }
        for d in &l.domains {
            if !request.domains.is_empty() && !request.domains.contains(&d.name) {
                continue;
            }
            let refuse = |reasons| Refusal { host: l.name.clone(), domain: d.name.clone(), reasons };
            match Owner::of(d.owner.as_ref(), &factory) {
                Owner::Ours => survey.already_ours.push((l.name.clone(), d.name.clone())),
                Owner::Other(f) => survey.refusals.push(refuse(vec![format!(
                    "it is marked by {}: fabrik never takes another factory's domain; import it with that factory's \
                     files, or remove the mark by hand if that factory is gone",
                    describe_factory(&f)
                )])),
                Owner::Unmarked if host.vms.iter().any(|v| v.name == d.name) => {
                    candidates.push((l.name.clone(), d.name.clone(), None));
                }
                Owner::Unmarked => match declare::declare(spec, l, d, request.tenant.as_deref()) {
                    Ok(decl) => candidates.push((l.name.clone(), d.name.clone(), Some(decl))),
                    Err(reasons) => survey.refusals.push(refuse(reasons)),
                },
            }
        }
    }
    for missing in request.domains.iter().filter(|n| !live.iter().any(|l| l.domains.iter().any(|d| &d.name == *n))) {
        survey.refusals.push(Refusal {
            host: "*".into(),
            domain: missing.clone(),
            reasons: vec!["no host of the factory has a domain of this name".into()],
        });
    }
    for _ in 0..ROUNDS_MAX {
        let decls: Vec<VmDecl> = candidates.iter().filter_map(|(_, _, d)| d.clone()).collect();
        let (trial_spec, trial_sources, mut diags, places) = with_declarations(spec, sources, &decls);
        diags.extend(crate::check::run(&trial_spec));
        diags.retain(Diagnostic::is_error);
        if !diags.is_empty() {
            // An error inside one declaration (a quota, the host's CPUs, a name) refuses
            // that domain; the others are tried again without it. Any other error stops.
            let file = FileId(sources.len() as u32);
            let of = |d: &Diagnostic| {
                let at = d.primary.as_ref().filter(|l| l.span.file == file)?;
                places.iter().position(|p| p.contains(&(at.span.start as usize)))
            };
            if diags.iter().any(|d| of(d).is_none()) {
                return Err(Invalid { diags, sources: trial_sources });
            }
            let declared: Vec<usize> =
                candidates.iter().enumerate().filter(|(_, c)| c.2.is_some()).map(|(i, _)| i).collect();
            let mut why: std::collections::BTreeMap<usize, Vec<String>> = std::collections::BTreeMap::new();
            for d in &diags {
                let Some(i) = of(d) else { continue };
                let help = d.help.as_ref().map(|h| format!("; {h}")).unwrap_or_default();
                why.entry(declared[i])
                    .or_default()
                    .push(format!("with its declaration the factory is invalid: {} ({}){help}", d.message, d.code));
            }
            for (i, reasons) in why.into_iter().rev() {
                let (host, domain, _) = candidates.remove(i);
                survey.refusals.push(Refusal { host, domain, reasons });
            }
            continue;
        }
        let desired = crate::desired::build(&trial_spec).map_err(|diags| Invalid { diags, sources: trial_sources })?;
        let adopted = adopt(&desired, live, &candidates);
        let (ok, changed): (Vec<_>, Vec<_>) = adopted.into_iter().partition(|(_, why)| why.is_empty());
        if changed.is_empty() {
            survey.adoptions = ok.into_iter().map(|(a, _)| a).collect();
            return Ok(survey);
        }
        for (a, why) in changed {
            candidates.retain(|(h, d, _)| !(h == &a.host && d == &a.domain));
            survey.refusals.push(Refusal { host: a.host, domain: a.domain, reasons: why });
        }
    }
    for (host, domain, _) in candidates {
        survey.refusals.push(Refusal {
            host,
            domain,
            reasons: vec![
                "the declarations of the domains around it kept changing; import it alone (`--domain`)".into(),
            ],
        });
    }
    Ok(survey)
}

/// After marking: what is wrong with each adoption on the hosts as read again (`live`):
/// a mark that is not there, or a plan of the factory with the declarations added that
/// still changes the domain or its volumes. Empty: every adoption took.
pub fn verify(spec: &Spec, sources: &Sources, live: &[LiveHost], survey: &Survey) -> Vec<String> {
    if survey.adoptions.is_empty() {
        return Vec::new();
    }
    let (trial, _, diags, _) = with_declarations(spec, sources, &survey.declarations());
    if let Some(d) = diags.iter().find(|d| d.is_error()) {
        return vec![format!("the declarations do not load: {}", d.message)];
    }
    let desired = match crate::desired::build(&trial) {
        Ok(d) => d,
        Err(diags) => {
            return diags.into_iter().map(|d| format!("the declarations do not build: {}", d.message)).collect();
        }
    };
    let plan = crate::plan::plan(&desired, live, &crate::plan::Options::default());
    let mut problems = Vec::new();
    for a in &survey.adoptions {
        let domain = live.iter().find(|l| l.name == a.host).and_then(|l| l.domains.iter().find(|d| d.name == a.domain));
        let Some(domain) = domain else {
            problems.push(format!("`{}` on host `{}` is gone", a.domain, a.host));
            continue;
        };
        let id = a.id.to_string();
        if domain.owner.as_ref().map(|o| (o.factory.as_str(), o.resource.as_str())) != Some((&desired.factory, &id)) {
            problems.push(format!("`{}` on host `{}` does not carry the mark fabrik set", a.domain, a.host));
            continue;
        }
        let volumes: Vec<ResourceId> = desired
            .hosts
            .iter()
            .filter(|h| h.name == a.host)
            .flat_map(|h| h.vms.iter().filter(|v| v.name == a.domain))
            .flat_map(|v| v.disks.iter().map(|k| crate::desired::storage::volume_id(&a.host, &k.pool, &k.volume)))
            .collect();
        let mut notes = Vec::new();
        for why in remaining(&plan, &a.id, &volumes, &mut notes) {
            problems.push(format!("`{}` on host `{}`: {why}", a.domain, a.host));
        }
    }
    problems
}

/// The factory with the declarations added as one more file, and the byte range of each
/// declaration in that file.
fn with_declarations(
    spec: &Spec,
    sources: &Sources,
    decls: &[VmDecl],
) -> (Spec, Sources, Vec<Diagnostic>, Vec<std::ops::Range<usize>>) {
    let mut spec = spec.clone();
    let mut sources = sources.clone();
    if decls.is_empty() {
        return (spec, sources, Vec::new(), Vec::new());
    }
    let (text, places) = declare::yaml_with_places(decls);
    let id = FileId(sources.len() as u32);
    let (file, file_spec, diags) =
        crate::spec::load::parse_file(id, PathBuf::from(DECLARATIONS_FILE), Syntax::Yaml, text.into_bytes());
    sources.add(file);
    let mut diags = diags;
    spec.merge(file_spec, &mut diags);
    (spec, sources, diags, places)
}

/// Each candidate with its mark, and what the plan would still change once it carries
/// that mark (empty: it can be adopted).
fn adopt(
    desired: &Desired,
    live: &[LiveHost],
    candidates: &[(String, String, Option<VmDecl>)],
) -> Vec<(Adoption, Vec<String>)> {
    // The marks are those the plan would write: of the desired state as the plan sees it
    // (MACs and addresses the hosts have kept).
    let kept = crate::desired::addr::keep_live(&crate::desired::mac::keep_live(desired, live), live);
    let mut marked = live.to_vec();
    let mut out = Vec::new();
    for (host, domain, decl) in candidates {
        let vm = kept.hosts.iter().find(|h| &h.name == host).and_then(|h| h.vms.iter().find(|v| &v.name == domain));
        let Some(vm) = vm else {
            let id = ResourceId::new(ResourceKind::Vm, host, domain);
            let why = vec!["the declaration places no VM of this name on this host".to_string()];
            out.push((
                Adoption {
                    host: host.clone(),
                    domain: domain.clone(),
                    id,
                    declaration: decl.clone(),
                    mark: String::new(),
                    notes: Vec::new(),
                },
                Err(why),
            ));
            continue;
        };
        let ownership = Ownership {
            factory: desired.factory.clone(),
            resource: vm.id.to_string(),
            spec_hash: vm.spec_hash.clone(),
        };
        let records = crate::desired::addr::records(vm);
        let mark = owner::render_with_addresses(&ownership, &records);
        if let Some(d) =
            marked.iter_mut().find(|l| &l.name == host).and_then(|l| l.domains.iter_mut().find(|d| &d.name == domain))
        {
            d.xml = with_mark(&d.xml, &mark);
            d.owner = Some(ownership);
            d.addresses = records;
        }
        let volumes: Vec<ResourceId> =
            vm.disks.iter().map(|k| crate::desired::storage::volume_id(host, &k.pool, &k.volume)).collect();
        out.push((
            Adoption {
                host: host.clone(),
                domain: domain.clone(),
                id: vm.id.clone(),
                declaration: decl.clone(),
                mark,
                notes: Vec::new(),
            },
            Ok(volumes),
        ));
    }
    let plan = crate::plan::plan(desired, &marked, &crate::plan::Options::default());
    out.into_iter()
        .map(|(mut a, volumes)| match volumes {
            Err(why) => (a, why),
            Ok(volumes) => {
                let why = remaining(&plan, &a.id, &volumes, &mut a.notes);
                (a, why)
            }
        })
        .collect()
}

/// What `plan` still does for a VM and its volumes: reasons to refuse it, and `notes`
/// for what changes without a restart and without touching the guest's definition.
pub fn remaining(
    plan: &crate::plan::Plan,
    vm: &ResourceId,
    volumes: &[ResourceId],
    notes: &mut Vec<String>,
) -> Vec<String> {
    let mut why = Vec::new();
    for e in plan.errors.iter().filter(|e| &e.id == vm || volumes.contains(&e.id)) {
        why.push(format!("the plan would stop on it: {} ({})", e.message, e.code));
    }
    for a in plan.actions.iter().filter(|a| &a.id == vm || volumes.contains(&a.id)) {
        let fields: Vec<&str> = a.changes.iter().map(|c| c.field.as_str()).collect();
        if &a.id == vm && !fields.is_empty() && fields.iter().all(|f| *f == "autostart") {
            notes.push(format!("the next apply sets {}", a.reason));
            continue;
        }
        let what = if &a.id == vm { "its definition".to_string() } else { format!("its volume `{}`", a.id) };
        let fields = if fields.is_empty() { String::new() } else { format!(" [{}]", fields.join(", ")) };
        why.push(format!(
            "fabrik would still change {what}: {}{fields}; adopting it would mean a change on the next apply, so it is \
             left alone: make the domain match or declare it by hand",
            a.reason
        ));
    }
    why
}

/// A domain's XML with fabrik's mark in its `<metadata>` (made if it has none), as
/// libvirt returns it after [`crate::driver::Virt::set_domain_mark`].
pub fn with_mark(xml: &str, mark: &str) -> String {
    if let Some(i) = xml.find("<metadata>") {
        let at = i + "<metadata>".len();
        return format!("{}{mark}{}", &xml[..at], &xml[at..]);
    }
    if let Some(i) = xml.find("<metadata/>") {
        return format!("{}<metadata>{mark}</metadata>{}", &xml[..i], &xml[i + "<metadata/>".len()..]);
    }
    match xml.find("</name>") {
        Some(i) => {
            let at = i + "</name>".len();
            format!("{}<metadata>{mark}</metadata>{}", &xml[..at], &xml[at..])
        }
        None => xml.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::{LivePool, LiveVolume, PowerState};
    use crate::spec::types::ByteSize;

    const FACTORY: &str = "version: 1
factory: lab
hosts:
  - name: h1
    uri: qemu:///system
    numa-nodes: [{ id: 0, cpus: 0-15, memory: 64GiB }]
tenants:
  - name: demo
    hosts: [h1]
    networks: [demo-net]
    quota: { vcpus: 8, memory: 16GiB, vms: 4 }
networks:
  - { name: demo-net, purpose: tenant, kind: bridge, tenant: demo, bridge: br-demo }
pools:
  - { name: vms, type: dir, path: /var/lib/vms }
";

    const VM: &str = "vms:
  - name: old
    tenant: demo
    host: h1
    vcpus: 2
    memory: 1GiB
    cpu-policy: shared
    numa: none
    firmware: uefi
    nics: [{ network: demo-net, mac: \"52:54:00:00:00:07\" }]
    disks: [{ name: vda, pool: vms, volume: old-root, size: 8GiB }]
";

    fn load(text: &str) -> (Spec, Sources) {
        let mut sources = Sources::default();
        let (_, spec, diags) =
            crate::spec::load::load_bytes(&mut sources, "f.yaml".into(), Syntax::Yaml, text.as_bytes().to_vec());
        assert!(diags.iter().all(|d| !d.is_error()), "{diags:#?}");
        let checks: Vec<_> = crate::check::run(&spec).into_iter().filter(Diagnostic::is_error).collect();
        assert!(checks.is_empty(), "{checks:#?}");
        (spec, sources)
    }

    /// The host as a person left it: `old` defined from exactly what fabrik renders for
    /// `VM`, without the mark, running, autostarted, with its volume in the pool.
    fn host_with_old_domain() -> LiveHost {
        let (spec, _) = load(&format!("{FACTORY}{VM}"));
        let desired = crate::desired::build(&spec).unwrap();
        let (host, vm) = (&desired.hosts[0], &desired.hosts[0].vms[0]);
        let xml = crate::render::domain(&desired.factory, host, vm);
        let mark = owner::render_with_addresses(
            &Ownership {
                factory: desired.factory.clone(),
                resource: vm.id.to_string(),
                spec_hash: vm.spec_hash.clone(),
            },
            &crate::desired::addr::records(vm),
        );
        let xml = xml.replace(&mark, "");
        let domain = crate::driver::libvirt::xml::domain(&xml, PowerState::Running, true).unwrap();
        assert!(domain.owner.is_none());
        LiveHost {
            name: "h1".into(),
            domains: vec![domain],
            pools: vec![LivePool {
                name: "vms".into(),
                uuid: "u".into(),
                kind: "dir".into(),
                path: Some("/var/lib/vms".into()),
                active: true,
                autostart: true,
                capacity: ByteSize(1 << 40),
                available: ByteSize(1 << 39),
                volumes: vec![LiveVolume {
                    name: "old-root".into(),
                    path: "/var/lib/vms/old-root".into(),
                    capacity: ByteSize(8 << 30),
                    allocation: ByteSize(1 << 20),
                    format: Some("qcow2".into()),
                    owner: None,
                }],
                owner: None,
                xml: String::new(),
            }],
            ..LiveHost::default()
        }
    }

    #[test]
    fn an_unmarked_domain_gets_the_declaration_it_was_rendered_from() {
        let live = [host_with_old_domain()];
        let (spec, sources) = load(FACTORY);
        let survey = survey(&spec, &sources, &live, &Request::default()).unwrap_or_else(|i| panic!("{:#?}", i.diags));
        assert!(survey.refusals.is_empty(), "{:#?}", survey.refusals);
        let [adoption] = survey.adoptions.as_slice() else { panic!("{survey:#?}") };
        assert_eq!(adoption.id.to_string(), "vm:h1/old");
        assert!(adoption.mark.contains("factory=\"lab\"") && adoption.mark.contains("resource=\"vm:h1/old\""));
        // The printed declaration reads back as the one the domain was rendered from.
        let (with, _) =
            load(&format!("{FACTORY}{}", declare::yaml(&survey.declarations()).replace("version: 1\n", "")));
        let (orig, _) = load(&format!("{FACTORY}{VM}"));
        let hash = |s: &Spec| crate::desired::build(s).unwrap().hosts[0].vms[0].spec_hash.clone();
        assert_eq!(hash(&with), hash(&orig));
    }

    #[test]
    fn autostart_off_is_adopted_with_a_note_not_refused() {
        let mut host = host_with_old_domain();
        host.domains[0].autostart = false;
        let (spec, sources) = load(FACTORY);
        let survey = survey(&spec, &sources, &[host], &Request::default()).unwrap_or_else(|i| panic!("{:#?}", i.diags));
        let [adoption] = survey.adoptions.as_slice() else { panic!("{survey:#?}") };
        assert_eq!(adoption.notes.len(), 1, "{adoption:#?}");
        assert!(adoption.notes[0].contains("autostart on"), "{adoption:#?}");
    }

    #[test]
    fn a_domain_the_factory_declares_is_adopted_with_nothing_to_add() {
        let live = [host_with_old_domain()];
        let (spec, sources) = load(&format!("{FACTORY}{VM}"));
        let survey = survey(&spec, &sources, &live, &Request::default()).unwrap_or_else(|i| panic!("{:#?}", i.diags));
        let [adoption] = survey.adoptions.as_slice() else { panic!("{survey:#?}") };
        assert!(adoption.declaration.is_none());
        assert!(survey.declarations().is_empty());
    }

    #[test]
    fn a_domain_another_factory_marks_or_that_differs_is_refused_with_reasons() {
        let mut host = host_with_old_domain();
        let mut differs = host.domains[0].clone();
        differs.name = "odd".into();
        differs.xml = differs.xml.replace("<name>old</name>", "<name>odd</name>").replace("q35", "pc");
        differs.interfaces[0].mac = Some("52:54:00:00:00:08".into());
        differs.xml = differs.xml.replace("52:54:00:00:00:07", "52:54:00:00:00:08");
        differs.disks.clear();
        differs.xml = differs.xml.replace("<disk", "<!--").replace("</disk>", "-->");
        host.domains[0].owner =
            Some(Ownership { factory: "elsewhere".into(), resource: "vm:h1/old".into(), spec_hash: "0".into() });
        host.domains.push(differs);
        let (spec, sources) = load(FACTORY);
        let survey = survey(&spec, &sources, &[host], &Request::default()).unwrap_or_else(|i| panic!("{:#?}", i.diags));
        assert!(survey.adoptions.is_empty(), "{survey:#?}");
        let reasons = |name: &str| {
            survey.refusals.iter().find(|r| r.domain == name).map(|r| r.reasons.join("; ")).unwrap_or_default()
        };
        assert!(reasons("old").contains("factory `elsewhere`"), "{survey:#?}");
        assert!(reasons("odd").contains("fabrik would still change its definition"), "{survey:#?}");
    }

    #[test]
    fn the_mark_goes_into_metadata_whatever_is_there() {
        let mark =
            "<fabrik:owner xmlns:fabrik='https://fabrik.dev/xmlns/1' factory='f' resource='vm:h/a' spec-hash='1'/>";
        for xml in [
            "<domain><name>a</name><memory>1</memory></domain>",
            "<domain><name>a</name><metadata/><memory>1</memory></domain>",
            "<domain><name>a</name><metadata><x:y xmlns:x='urn:x'/></metadata></domain>",
        ] {
            let got = owner::parse_xml(&with_mark(xml, mark)).expect("a mark");
            assert_eq!(got.resource, "vm:h/a", "{xml}");
        }
    }
}
