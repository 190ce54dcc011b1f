//! `fabrik::params::*`: a template's parameters are well declared, and every VM made
//! from it gives each a valid value (or the default does), and nothing else.
//!
//! Parameters feed the guest configuration: a value the check lets through ends up in
//! a guest's cloud-init, where a typo is found only when the service does not start.

use regex::Regex;

use super::rules::Rule;
use crate::diag::{Diagnostic, suggest};
use crate::spec::model::{ParamDecl, ParamType, ParamValue, Spec, Template, Vm};
use crate::spec::source::Spanned;

pub static RULES: &[Rule] = &[
    Rule {
        code: "fabrik::params::missing",
        summary: "a VM does not give a value for a parameter of its template that has no default",
        protects: "the guest configuration would be built without the value: the appliance starts unconfigured, or not at all, and only its logs say why",
        example: concat!(
            "templates:\n  - name: vllm\n    vcpus: 8\n    memory: 64GiB\n    params:\n      - { name: model, type: string }\n",
            "vms:\n  - { name: a, tenant: acme, template: vllm }"
        ),
        fix: "give the value in the VM's `params` (`params: { model: meta-llama/Llama-3.1-8B-Instruct }`), or a `default` in the template",
    },
    Rule {
        code: "fabrik::params::unknown",
        summary: "a VM gives a parameter its template does not declare (or the VM has no template)",
        protects: "a misspelt parameter would be ignored, and the VM would silently run with the default the author meant to change",
        example: concat!(
            "templates:\n  - name: vllm\n    vcpus: 8\n    memory: 64GiB\n    params:\n      - { name: port, type: integer, default: 8000 }\n",
            "vms:\n  - { name: a, tenant: acme, template: vllm, params: { prot: 9000 } }"
        ),
        fix: "spell the parameter as the template declares it (the help suggests the closest), or declare it in the template",
    },
    Rule {
        code: "fabrik::params::invalid",
        summary: "a parameter value does not fit its type: a string for an integer, a word not in an enum's `values`, a string the `pattern` does not match",
        protects: "the value would reach the guest's configuration as it is, and the service would refuse it at boot, where nobody reads the error",
        example: concat!(
            "templates:\n  - name: vllm\n    vcpus: 8\n    memory: 64GiB\n    params:\n      - { name: port, type: integer, default: 8000 }\n",
            "vms:\n  - { name: a, tenant: acme, template: vllm, params: { port: \"eighty\" } }"
        ),
        fix: "give a value of the parameter's type; for an enum, one of its `values`; for a pattern, a string the whole pattern matches",
    },
    Rule {
        code: "fabrik::params::bad-default",
        summary: "a parameter's `default` does not fit the parameter's own type, values or pattern",
        protects: "every VM that does not set the parameter would get a value the template itself forbids",
        example: "templates:\n  - name: vllm\n    vcpus: 8\n    memory: 64GiB\n    params:\n      - { name: port, type: integer, default: \"8000\" }",
        fix: "write the default as a value of the type (`default: 8000`, without quotes, for an integer)",
    },
    Rule {
        code: "fabrik::params::bad-pattern",
        summary: "a `pattern` parameter's regular expression does not compile",
        protects: "no value could be checked against it; every VM's value would be refused or, worse, passed unchecked",
        example: "templates:\n  - name: vllm\n    vcpus: 8\n    memory: 64GiB\n    params:\n      - { name: model, type: pattern, pattern: \"[a-z\" }",
        fix: "write the expression in Rust `regex` syntax (it is matched against the whole value, `^…$` implied)",
    },
    Rule {
        code: "fabrik::params::duplicate",
        summary: "a template declares one parameter twice",
        protects: "a VM's value would go to one declaration and the other's type or default would be silently dropped",
        example: "templates:\n  - name: vllm\n    vcpus: 8\n    memory: 64GiB\n    params:\n      - { name: port, type: integer, default: 8000 }\n      - { name: port, type: string }",
        fix: "remove one of the declarations, or rename it",
    },
    Rule {
        code: "fabrik::params::user-data",
        summary: "a template's `user-data` does not render for a VM: an undefined variable (a misspelt parameter), a syntax error, or text that is not `#cloud-config`",
        protects: "the seed could not be built at apply, or, worse, a guest would boot with a configuration its author never wrote",
        example: concat!(
            "templates:\n  - name: vllm\n    vcpus: 8\n    memory: 64GiB\n    params:\n      - { name: model, type: string, default: a/b }\n",
            "    user-data: \"#cloud-config\\nhostname: {{ params.modle }}\"\n",
            "vms:\n  - { name: a, tenant: acme, template: vllm }"
        ),
        fix: "use only `vm` (name, tenant, gpus, macs), `params.<name>` of declared parameters and `ssh_keys`, in minijinja (Jinja2) syntax, and start the text with `#cloud-config`",
    },
];

pub fn check(spec: &Spec, out: &mut Vec<Diagnostic>) {
    for t in &spec.templates {
        check_template(t, out);
    }
    for vm in &spec.vms {
        let template = vm.template.as_ref().and_then(|t| spec.template(&t.value));
        let before = out.iter().filter(|d| d.is_error()).count();
        check_vm(vm, template, out);
        // A VM whose values are wrong has been told so; its user-data is tried once they are right.
        if let Some(t) = template
            && out.iter().filter(|d| d.is_error()).count() == before
        {
            check_user_data(spec, vm, t, out);
        }
    }
}

/// Renders the template's user-data for the VM (its first replica's name, no MACs): what
/// fails here would fail for every replica at apply.
fn check_user_data(spec: &Spec, vm: &Vm, t: &Template, out: &mut Vec<Diagnostic>) {
    let Some(text) = &t.user_data else { return };
    let facts = crate::guest::Facts {
        name: vm.instance_names().into_iter().next().unwrap_or_else(|| vm.name.value.clone()),
        tenant: vm.tenant.value.clone(),
        gpus: 0,
        macs: Vec::new(),
    };
    let params = crate::spec::model::params::resolve(&t.params, &vm.params);
    let keys: Vec<String> = spec
        .tenants
        .iter()
        .filter(|x| x.name.value == vm.tenant.value)
        .flat_map(|x| x.ssh_keys.iter())
        .chain(vm.ssh_keys.iter())
        .map(|k| k.value.clone())
        .collect();
    if let Err(e) = crate::guest::config::user_data(&text.value, &facts, &params, &keys) {
        let why = match &e {
            crate::guest::GuestError::Render { message, .. } => message.clone(),
            crate::guest::GuestError::NotCloudConfig { .. } => "it does not start with `#cloud-config`".to_string(),
        };
        out.push(
            Diagnostic::error(
                "fabrik::params::user-data",
                format!(
                    "the user-data of template `{}` does not render for VM `{}`: {why}",
                    t.name.value, vm.name.value
                ),
            )
            .at(text.span, "this template")
            .also(vm.span, "for this VM")
            .help(
                "use only `vm`, `params.<name>` of declared parameters and `ssh_keys`, and start with `#cloud-config`",
            ),
        );
    }
}

/// The compiled pattern of a declaration, anchored at both ends.
fn compiled(decl: &ParamDecl) -> Option<Result<Regex, regex::Error>> {
    let p = decl.pattern.as_ref()?;
    Some(Regex::new(&format!("^(?:{})$", p.value)))
}

fn check_template(t: &Template, out: &mut Vec<Diagnostic>) {
    for (i, decl) in t.params.iter().enumerate() {
        if let Some(first) = t.params[..i].iter().find(|p| p.name.value == decl.name.value) {
            out.push(
                Diagnostic::error(
                    "fabrik::params::duplicate",
                    format!("template `{}` declares parameter `{}` twice", t.name.value, decl.name.value),
                )
                .at(decl.name.span, "declared again here")
                .also(first.name.span, "first declared here")
                .help("remove one of the declarations, or rename it"),
            );
        }
        if let Some(Err(e)) = compiled(decl) {
            let span = decl.pattern.as_ref().map_or(decl.span, |p| p.span);
            let reason = e.to_string();
            let reason = reason.lines().last().unwrap_or_default().trim();
            let first_line = reason.strip_prefix("error: ").unwrap_or(reason).to_string();
            out.push(
                Diagnostic::error(
                    "fabrik::params::bad-pattern",
                    format!("the pattern of parameter `{}` is not a regular expression", decl.name.value),
                )
                .at(span, first_line)
                .help("write it in Rust `regex` syntax; it must match the whole value (`^…$` is implied)"),
            );
            continue;
        }
        if let Some(default) = &decl.default
            && let Some(problem) = misfit(decl, &default.value)
        {
            out.push(
                Diagnostic::error(
                    "fabrik::params::bad-default",
                    format!("the default of parameter `{}` {problem}", decl.name.value),
                )
                .at(default.span, "this default")
                .help(how_to_fit(decl)),
            );
        }
    }
}

fn check_vm(vm: &Vm, template: Option<&Template>, out: &mut Vec<Diagnostic>) {
    let decls: &[ParamDecl] = template.map_or(&[], |t| &t.params);
    for setting in &vm.params {
        let Some(decl) = decls.iter().find(|d| d.name.value == setting.name.value) else {
            out.push(unknown(vm, template, &setting.name));
            continue;
        };
        if let Some(problem) = misfit(decl, &setting.value.value) {
            out.push(
                Diagnostic::error(
                    "fabrik::params::invalid",
                    format!("VM `{}`: parameter `{}` {problem}", vm.name.value, decl.name.value),
                )
                .at(setting.value.span, "this value")
                .also(decl.ty.span, format!("declared `{}` here", decl.ty.value))
                .help(how_to_fit(decl)),
            );
        }
    }
    let Some(t) = template else { return };
    for decl in decls {
        if decl.default.is_some() || vm.params.iter().any(|s| s.name.value == decl.name.value) {
            continue;
        }
        let at = vm.template.as_ref().map_or(vm.name.span, |t| t.span);
        let what = decl.description.as_ref().map(|d| format!(" ({})", d.value)).unwrap_or_default();
        out.push(
            Diagnostic::error(
                "fabrik::params::missing",
                format!(
                    "VM `{}` gives no value for parameter `{}` of template `{}`",
                    vm.name.value, decl.name.value, t.name.value
                ),
            )
            .at(at, "made from this template")
            .also(decl.name.span, format!("`{}` declared here, without a default", decl.name.value))
            .help(format!("give `{}` in the VM's `params`: a {}{what}", decl.name.value, decl.ty.value)),
        );
    }
}

fn unknown(vm: &Vm, template: Option<&Template>, name: &Spanned<String>) -> Diagnostic {
    let why = match template {
        Some(t) => format!("which template `{}` does not declare", t.name.value),
        None => "but has no template".to_string(),
    };
    let d = Diagnostic::error(
        "fabrik::params::unknown",
        format!("VM `{}` gives parameter `{}`, {why}", vm.name.value, name.value),
    )
    .at(name.span, "not a parameter of the template");
    let Some(t) = template else {
        return d.help("parameters come from a template's `params`; give the VM a `template`, or drop `params`");
    };
    let names: Vec<&str> = t.params.iter().map(|p| p.name.value.as_str()).collect();
    match suggest(&name.value, names.iter().copied()) {
        Some(s) => d.help(format!("did you mean `{s}`?")),
        None if names.is_empty() => {
            d.help(format!("template `{}` declares no parameters; drop `params`", t.name.value))
        }
        None => d.help(format!(
            "template `{}` declares {}",
            t.name.value,
            names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// What is wrong with a value for a declaration, as the end of a sentence; `None` when
/// it fits. Never quotes a secret's value.
fn misfit(decl: &ParamDecl, value: &ParamValue) -> Option<String> {
    let shown = |v: &ParamValue| if decl.secret { "the secret value".to_string() } else { format!("`{v}`") };
    match (decl.ty.value, value) {
        (ParamType::String, ParamValue::Str(_))
        | (ParamType::Integer, ParamValue::Int(_))
        | (ParamType::Boolean, ParamValue::Bool(_)) => None,
        (ParamType::Enum, ParamValue::Str(s)) => {
            (!decl.values.iter().any(|v| v.value == *s)).then(|| format!("is {}, not one of its values", shown(value)))
        }
        (ParamType::Pattern, ParamValue::Str(s)) => match compiled(decl) {
            Some(Ok(re)) if !re.is_match(s) => Some(format!("is {}, which its pattern does not match", shown(value))),
            Some(Ok(_) | Err(_)) | None => None,
        },
        (ParamType::String | ParamType::Enum | ParamType::Pattern, ParamValue::Int(_) | ParamValue::Bool(_))
        | (ParamType::Integer, ParamValue::Str(_) | ParamValue::Bool(_))
        | (ParamType::Boolean, ParamValue::Str(_) | ParamValue::Int(_)) => {
            Some(format!("must be {}, found {}", expected(decl.ty.value), value.kind()))
        }
    }
}

fn expected(ty: ParamType) -> &'static str {
    match ty {
        ParamType::String | ParamType::Enum | ParamType::Pattern => "a string",
        ParamType::Integer => "an integer",
        ParamType::Boolean => "a boolean",
    }
}

fn how_to_fit(decl: &ParamDecl) -> String {
    match decl.ty.value {
        ParamType::String => "give a string (in quotes if it looks like a number or a boolean)".to_string(),
        ParamType::Integer => "give a whole number, without quotes".to_string(),
        ParamType::Boolean => "give `true` or `false` (`#true` or `#false` in KDL)".to_string(),
        ParamType::Enum => format!(
            "give one of {}",
            decl.values.iter().map(|v| format!("`{}`", v.value)).collect::<Vec<_>>().join(", ")
        ),
        ParamType::Pattern => format!(
            "give a string that `{}` matches as a whole",
            decl.pattern.as_ref().map_or("", |p| p.value.as_str())
        ),
    }
}
