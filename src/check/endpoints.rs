//! `fabrik::endpoint::network`: a template's endpoint is reached at the address of the
//! VM's NIC on the endpoint's network, so every VM made from the template must have a
//! NIC on it. Without one the endpoint has no URL: `fabrik inventory` and `fabrik status`
//! could only say "no address", after the VM was made.

use super::rules::Rule;
use crate::diag::Diagnostic;
use crate::spec::model::Spec;

pub static RULES: &[Rule] = &[Rule {
    code: "fabrik::endpoint::network",
    summary: "a template's endpoint names a network on which a VM made from the template has no NIC",
    protects: "the service would be unreachable by design: the endpoint has no address to be listed or probed at, and tenants would be told of no way in",
    example: concat!(
        "templates:\n  - name: vllm\n    vcpus: 8\n    memory: 64GiB\n",
        "    endpoints:\n      - { name: api, port: 8000, network: acme-net }\n",
        "vms:\n  - { name: a, tenant: acme, template: vllm, nics: [acme-other] }"
    ),
    fix: "give the VM (or the template) a NIC on the endpoint's network, or name in the endpoint the network the service listens on",
}];

pub fn check(spec: &Spec, out: &mut Vec<Diagnostic>) {
    for e in spec.effective_vms() {
        let Some(template) = e.template else { continue };
        let nics = e.nic_list();
        for ep in &template.endpoints {
            if nics.iter().any(|n| n.network.value == ep.network.value) {
                continue;
            }
            let on: Vec<String> = nics.iter().map(|n| format!("`{}`", n.network.value)).collect();
            let has = if on.is_empty() { "no NIC".to_string() } else { format!("NICs on {} only", on.join(", ")) };
            let mut d = Diagnostic::error(
                "fabrik::endpoint::network",
                format!(
                    "endpoint `{}` of template `{}` is reached on network `{}`, but VM `{}` has {has}",
                    ep.name.value, template.name.value, ep.network.value, e.vm.name.value
                ),
            )
            .at(ep.network.span, "the endpoint's network");
            d = match e.nics() {
                Some(list) if !list.is_empty() => d.also(list[0].span, "the VM's NICs"),
                _ => d.also(e.vm.span, "this VM"),
            };
            out.push(d.help(format!(
                "add a NIC on `{}` to the VM's `nics` (or the template's), or name the network the service listens on in the endpoint",
                ep.network.value
            )));
        }
    }
}
