//! `fabrik::scope::*`: a tenant's file reaches only its tenant.
//!
//! A tenant-scoped file may declare that tenant's VMs and templates, referring to
//! shared objects by name. Hosts, NVLink domains, networks, pools, images and tenants
//! (with their hosts, networks and quotas) are the operator's. `docs/security.md` states
//! the model; [`Scope`](crate::spec::model::Scope) says how a file gets its scope.

use std::collections::HashMap;

use super::rules::Rule;
use crate::diag::Diagnostic;
use crate::spec::model::{Scope, Spec};
use crate::spec::source::{Span, Spanned};

pub static RULES: &[Rule] = &[
    Rule {
        code: "fabrik::scope::operator-only",
        summary: "a tenant's file declares a host, NVLink domain, network, pool, image or tenant (a quota), or names the factory",
        protects: "a tenant admin, who may merge changes to their own files, adding hosts whose agent runs commands on the operator's machine, networks or storage for others, or raising their own quota",
        example: "scope: { tenant: acme }\ntenants:\n  - { name: acme, hosts: [gpu01], quota: { vcpus: 4096 } }",
        fix: "move the object to an operator's file (outside `tenants/<name>/`), reviewed by the operators",
    },
    Rule {
        code: "fabrik::scope::foreign-vm",
        summary: "a tenant's file declares a VM of another tenant",
        protects: "one tenant creating, resizing or deleting VMs charged to another",
        example: "scope: { tenant: acme }\nvms:\n  - { name: x, tenant: globex, vcpus: 2, memory: 4GiB }",
        fix: "declare the VM in its own tenant's files, or give it this file's tenant",
    },
    Rule {
        code: "fabrik::scope::foreign-template",
        summary: "a VM uses a template that another tenant's file declares",
        protects: "one tenant changing the shape of another tenant's (or the operator's) VMs by editing a template they use",
        example: "# tenants/acme/templates.yaml declares `small`\nvms:\n  - { name: x, tenant: globex, template: small }",
        fix: "use a template from an operator's file or from the VM's own tenant's files",
    },
    Rule {
        code: "fabrik::scope::layout",
        summary: "a file in `tenants/<name>/` declares a scope other than that tenant",
        protects: "a tenant admin, who owns the directory, making one of its files the operator's by saying so",
        example: "# tenants/acme/vms.yaml\nscope: operator",
        fix: "write `scope: { tenant: <name> }` or leave `scope` out; move operator files out of `tenants/<name>/`",
    },
];

/// Where each tenant-scoped file is, by file.
fn tenants_of(spec: &Spec) -> HashMap<crate::spec::source::FileId, String> {
    spec.scopes.iter().filter_map(|s| Some((s.file, s.effective().tenant()?.to_string()))).collect()
}

/// Whether a tenant's file declares any host: an error of its own
/// (`fabrik::scope::operator-only`), and a host no one may open before the checks have
/// run (`fabrik plan` reads the operator's hosts while it checks the factory).
pub fn tenant_declares_a_host(spec: &Spec) -> bool {
    let tenant_files = tenants_of(spec);
    !tenant_files.is_empty() && spec.hosts.iter().any(|h| tenant_files.contains_key(&h.name.span.file))
}

pub fn check(spec: &Spec, out: &mut Vec<Diagnostic>) {
    for s in &spec.scopes {
        if let (Some(layout), Some(declared)) = (&s.layout, &s.declared)
            && declared.value != Scope::Tenant(layout.clone())
        {
            out.push(
                Diagnostic::error(
                    "fabrik::scope::layout",
                    format!("a file in `tenants/{layout}/` belongs to tenant `{layout}`, but says {}", declared.value),
                )
                .at(declared.span, "the directory decides the scope")
                .help(format!(
                    "write `scope: {{ tenant: {layout} }}` or remove `scope`; an operator's file lives outside `tenants/<name>/`"
                )),
            );
        }
    }
    let tenant_files = tenants_of(spec);
    if tenant_files.is_empty() {
        return;
    }
    let tenant_of = |span: Span| tenant_files.get(&span.file).map(String::as_str);
    for s in &spec.scopes {
        if let (Some(span), Some(t)) = (s.factory, s.effective().tenant()) {
            out.push(
                Diagnostic::error(
                    "fabrik::scope::operator-only",
                    format!("tenant `{t}`'s file names the factory, which only an operator's file may"),
                )
                .at(span, "the factory's name is the operator's")
                .help("remove `factory` from this file; name the factory in an operator's file"),
            );
        }
    }
    // The watch settings decide what runs on every host unattended: the operator's.
    if let Some(w) = &spec.watch
        && let Some(t) = tenant_of(w.span)
    {
        out.push(
            Diagnostic::error(
                "fabrik::scope::operator-only",
                format!("tenant `{t}`'s file declares `watch`, which only an operator's file may"),
            )
            .at(w.span, "the watch settings are the operator's")
            .help("move `watch` to an operator's file (outside `tenants/<name>/`)"),
        );
    }
    let not_yours = |out: &mut Vec<Diagnostic>, kind: &str, name: &Spanned<String>| {
        if let Some(t) = tenant_of(name.span) {
            out.push(operator_only(t, kind, name));
        }
    };
    for h in &spec.hosts {
        not_yours(out, "host", &h.name);
        if let (Some(t), Some(agent)) = (tenant_of(h.name.span), &h.agent) {
            out.push(
                Diagnostic::error(
                    "fabrik::trust::tenant-agent",
                    format!("tenant `{t}`'s file gives host `{}` an agent command", h.name.value),
                )
                .at(agent.span, "fabrik would run this on the operator's machine")
                .help("only an operator's file names commands fabrik runs; move the host to an operator's file"),
            );
        }
    }
    for d in &spec.nvlink_domains {
        not_yours(out, "NVLink domain", &d.name);
    }
    for n in &spec.networks {
        not_yours(out, "network", &n.name);
    }
    for p in &spec.pools {
        not_yours(out, "pool", &p.name);
    }
    for i in &spec.images {
        not_yours(out, "image", &i.name);
    }
    for t in &spec.tenants {
        let Some(owner) = tenant_of(t.name.span) else { continue };
        let mut d = operator_only(owner, "tenant", &t.name);
        if let Some(span) = t.quota.as_ref().and_then(|q| q.span) {
            d = d.also(span, "a tenant's quota is set by the operator");
        }
        out.push(d);
    }
    for vm in &spec.vms {
        if let Some(t) = tenant_of(vm.name.span)
            && vm.tenant.value != t
        {
            out.push(
                Diagnostic::error(
                    "fabrik::scope::foreign-vm",
                    format!("tenant `{t}`'s file declares VM `{}` of tenant `{}`", vm.name.value, vm.tenant.value),
                )
                .at(vm.tenant.span, format!("this file may declare only tenant `{t}`'s VMs"))
                .help(format!("declare the VM in tenant `{}`'s files, or make it `tenant: {t}`", vm.tenant.value)),
            );
        }
        let Some(template) = &vm.template else { continue };
        // Every template of that name: a duplicate is reported elsewhere, and must not
        // hide a foreign one.
        for owner in spec.templates.iter().filter(|x| x.name.value == template.value).filter_map(|x| tenant_of(x.span))
        {
            if owner != vm.tenant.value {
                out.push(
                    Diagnostic::error(
                        "fabrik::scope::foreign-template",
                        format!(
                            "VM `{}` of tenant `{}` uses template `{}` of tenant `{owner}`",
                            vm.name.value, vm.tenant.value, template.value
                        ),
                    )
                    .at(template.span, format!("tenant `{owner}` can change this template"))
                    .help("use a template from an operator's file or from the VM's own tenant's files"),
                );
            }
        }
    }
}

fn operator_only(tenant: &str, kind: &str, name: &Spanned<String>) -> Diagnostic {
    Diagnostic::error(
        "fabrik::scope::operator-only",
        format!("tenant `{tenant}`'s file declares {kind} `{}`, which only an operator's file may", name.value),
    )
    .at(name.span, format!("a {kind} is the operator's"))
    .help(format!(
        "a tenant's file declares only its VMs and templates; move this {kind} to an operator's file (outside `tenants/<name>/`)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_in_a_tenants_file_is_seen_before_the_checks() {
        let operators = crate::spec::load::load(std::path::Path::new("fixtures/scopes"));
        assert!(!operators.spec.hosts.is_empty(), "the fixture declares hosts");
        assert!(!tenant_declares_a_host(&operators.spec), "fixtures/scopes: every host is the operator's");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("tenants/acme")).unwrap();
        std::fs::copy("fixtures/scopes/operator.yaml", root.join("operator.yaml")).unwrap();
        std::fs::write(
            root.join("tenants/acme/hosts.yaml"),
            "version: 1\nhosts:\n  - name: evil\n    uri: \"qemu+tcp://evil.invalid/system\"\n    numa-nodes: [{ id: 0, cpus: 0-1, memory: 1GiB }]\n",
        )
        .unwrap();
        let loaded = crate::spec::load::load(root);
        assert!(!loaded.diags.iter().any(crate::diag::Diagnostic::is_error), "{:?}", loaded.diags);
        assert!(tenant_declares_a_host(&loaded.spec));
    }
}
