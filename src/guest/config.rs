//! The three NoCloud documents of a VM's seed.
//!
//! user-data is the template's `#cloud-config` text rendered with minijinja (a
//! maintained Jinja2 engine: the syntax cloud-init's own `## template: jinja` user-data
//! uses, with strict undefined variables so a typo fails here and not in the guest);
//! meta-data and network-config are serialized from typed values, never pasted text.
//!
//! The instance-id is the VM's name and a hash of the other two documents: cloud-init
//! runs its per-instance modules (users, keys, `write_files`, `runcmd`) once per
//! instance-id, at boot, so a changed seed takes effect at the VM's next start, and only
//! because its instance-id changed with it. See `docs/language.md`, "Guest configuration".

use std::net::IpAddr;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::spec::model::params::Resolved;
use crate::spec::model::{ParamType, ParamValue};

/// The first line cloud-init requires of cloud-config user-data.
pub const CLOUD_CONFIG_HEADER: &str = "#cloud-config";

/// user-data for a VM whose template gives none: its hostname and the SSH keys.
pub const DEFAULT_USER_DATA: &str = "#cloud-config
hostname: {{ vm.name }}
{%- if ssh_keys %}
ssh_authorized_keys: {{ ssh_keys | tojson }}
{%- endif %}
";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GuestError {
    #[error("the user-data template of VM `{vm}` does not render: {message}")]
    Render { vm: String, message: String },
    #[error("the user-data of VM `{vm}` does not start with `#cloud-config`")]
    NotCloudConfig { vm: String },
}

/// A static address for one NIC: the seam for allocated or declared addresses. `None`
/// in [`NicConfig::address`] is DHCP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticAddress {
    pub address: IpAddr,
    pub prefix: u8,
    pub gateway: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
}

/// One NIC of the guest, matched by its MAC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicConfig {
    pub mac: String,
    /// `None`: DHCP. The address allocator plugs in here.
    pub address: Option<StaticAddress>,
}

/// What the factory knows about a VM that its guest may use.
#[derive(Clone, Debug, Serialize)]
pub struct Facts {
    pub name: String,
    pub tenant: String,
    /// GPUs, MIG instances and time slices the VM gets.
    pub gpus: u32,
    pub macs: Vec<String>,
}

/// The seed's files, as cloud-init reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedFiles {
    pub user_data: String,
    pub meta_data: String,
    pub network_config: String,
    pub instance_id: String,
}

/// The seed of one VM. `template` is the template's `user-data` (or
/// [`DEFAULT_USER_DATA`]); `nics` pairs each MAC with its addressing.
pub fn build(
    template: Option<&str>,
    facts: &Facts,
    params: &[Resolved],
    ssh_keys: &[String],
    nics: &[NicConfig],
) -> Result<SeedFiles, GuestError> {
    let user_data = user_data(template.unwrap_or(DEFAULT_USER_DATA), facts, params, ssh_keys)?;
    let network_config = network_config(nics);
    let mut hashed = user_data.clone().into_bytes();
    hashed.push(0);
    hashed.extend_from_slice(network_config.as_bytes());
    let instance_id = format!("{}-{:016x}", facts.name, crate::hash::fnv1a(&hashed));
    let meta_data = meta_data(&instance_id, &facts.name);
    Ok(SeedFiles { user_data, meta_data, network_config, instance_id })
}

fn value(p: &Resolved) -> minijinja::Value {
    match (&p.value, p.ty) {
        (ParamValue::Str(s), ParamType::String | ParamType::Enum | ParamType::Pattern) => {
            minijinja::Value::from(s.as_str())
        }
        (ParamValue::Int(i), ParamType::Integer) => minijinja::Value::from(*i),
        (ParamValue::Bool(b), ParamType::Boolean) => minijinja::Value::from(*b),
        // A value of the wrong type has been reported by `check::params`; render it as
        // written rather than guess.
        (v, ParamType::String | ParamType::Enum | ParamType::Pattern | ParamType::Integer | ParamType::Boolean) => {
            minijinja::Value::from(v.to_string())
        }
    }
}

/// Renders cloud-config user-data. Variables: `vm` ([`Facts`]), `params` (by name),
/// `ssh_keys`. Use `| tojson` to quote a value safely into YAML.
pub fn user_data(
    template: &str,
    facts: &Facts,
    params: &[Resolved],
    ssh_keys: &[String],
) -> Result<String, GuestError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // minijinja's `tojson` writes an undefined value as `null` even in strict mode: a
    // misspelt `params.modle | tojson` would reach the guest as `null`. This one refuses.
    env.add_filter(
        "tojson",
        |value: &minijinja::Value, indent: Option<minijinja::Value>, args: minijinja::value::Kwargs| {
            if value.is_undefined() {
                return Err(minijinja::Error::new(
                    minijinja::ErrorKind::UndefinedError,
                    "`tojson` of an undefined value (a misspelt parameter or variable?)",
                ));
            }
            minijinja::filters::tojson(value, indent, args)
        },
    );
    let params: std::collections::BTreeMap<&str, minijinja::Value> =
        params.iter().map(|p| (p.name.as_str(), value(p))).collect();
    let render_err = |e: minijinja::Error| GuestError::Render { vm: facts.name.clone(), message: e.to_string() };
    let text = env
        .render_str(
            template,
            minijinja::context! {
                vm => minijinja::value::Serde(facts),
                params => params,
                ssh_keys => minijinja::value::Serde(ssh_keys),
            },
        )
        .map_err(render_err)?;
    // The engine drops the template's last newline; YAML text ends with one.
    let text = if text.ends_with('\n') { text } else { text + "\n" };
    if !text.starts_with(CLOUD_CONFIG_HEADER) {
        return Err(GuestError::NotCloudConfig { vm: facts.name.clone() });
    }
    Ok(text)
}

/// NoCloud meta-data.
pub fn meta_data(instance_id: &str, hostname: &str) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "kebab-case")]
    struct Meta<'a> {
        instance_id: &'a str,
        local_hostname: &'a str,
    }
    serde_yaml::to_string(&Meta { instance_id, local_hostname: hostname }).unwrap_or_default()
}

#[derive(Serialize)]
struct NetworkV2 {
    version: u8,
    ethernets: std::collections::BTreeMap<String, Ethernet>,
}

#[derive(Serialize)]
struct Ethernet {
    #[serde(rename = "match")]
    matches: Match,
    #[serde(rename = "set-name")]
    set_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    dhcp4: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    addresses: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<Route>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nameservers: Option<Nameservers>,
}

#[derive(Serialize)]
struct Match {
    macaddress: String,
}

#[derive(Serialize)]
struct Route {
    to: &'static str,
    via: String,
}

#[derive(Serialize)]
struct Nameservers {
    addresses: Vec<String>,
}

/// network-config version 2: every NIC matched by MAC, named `nic<i>` in the VM's
/// order, DHCP unless it has a [`StaticAddress`].
pub fn network_config(nics: &[NicConfig]) -> String {
    let ethernets = nics
        .iter()
        .enumerate()
        .map(|(i, nic)| {
            let name = format!("nic{i}");
            let e = match &nic.address {
                None => Ethernet {
                    matches: Match { macaddress: nic.mac.clone() },
                    set_name: name.clone(),
                    dhcp4: Some(true),
                    addresses: Vec::new(),
                    routes: Vec::new(),
                    nameservers: None,
                },
                Some(a) => Ethernet {
                    matches: Match { macaddress: nic.mac.clone() },
                    set_name: name.clone(),
                    dhcp4: None,
                    addresses: vec![format!("{}/{}", a.address, a.prefix)],
                    routes: a.gateway.iter().map(|g| Route { to: "default", via: g.to_string() }).collect(),
                    nameservers: (!a.dns.is_empty())
                        .then(|| Nameservers { addresses: a.dns.iter().map(ToString::to_string).collect() }),
                },
            };
            (name, e)
        })
        .collect();
    serde_yaml::to_string(&NetworkV2 { version: 2, ethernets }).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts { name: "a-0".into(), tenant: "acme".into(), gpus: 1, macs: vec!["02:00:00:00:00:01".into()] }
    }

    fn param(name: &str, ty: ParamType, value: ParamValue, secret: bool) -> Resolved {
        Resolved { name: name.into(), ty, value, secret }
    }

    #[test]
    fn an_undefined_variable_is_an_error_not_an_empty_string() {
        let e = user_data("#cloud-config\nx: {{ params.modle }}\n", &facts(), &[], &[]).unwrap_err();
        assert!(matches!(e, GuestError::Render { .. }), "{e:?}");
    }

    #[test]
    fn an_undefined_variable_through_tojson_is_an_error_too() {
        let e = user_data("#cloud-config\nx: {{ params.modle | tojson }}\n", &facts(), &[], &[]).unwrap_err();
        assert!(matches!(e, GuestError::Render { .. }), "{e:?}");
    }

    #[test]
    fn user_data_must_be_cloud_config() {
        let e = user_data("runcmd: []\n", &facts(), &[], &[]).unwrap_err();
        assert_eq!(e, GuestError::NotCloudConfig { vm: "a-0".into() });
    }

    #[test]
    fn parameters_keep_their_types() {
        let p = [
            param("port", ParamType::Integer, ParamValue::Int(8000), false),
            param("on", ParamType::Boolean, ParamValue::Bool(true), false),
        ];
        let text =
            user_data("#cloud-config\nx: {{ params.port + 1 }} {{ params.on | tojson }}\n", &facts(), &p, &[]).unwrap();
        assert_eq!(text, "#cloud-config\nx: 8001 true\n");
    }

    #[test]
    fn a_changed_parameter_changes_the_instance_id() {
        let nics = [NicConfig { mac: "02:00:00:00:00:01".into(), address: None }];
        let t = "#cloud-config\nx: {{ params.m | tojson }}\n";
        let one =
            build(Some(t), &facts(), &[param("m", ParamType::String, ParamValue::Str("a".into()), false)], &[], &nics);
        let two =
            build(Some(t), &facts(), &[param("m", ParamType::String, ParamValue::Str("b".into()), false)], &[], &nics);
        let (one, two) = (one.unwrap(), two.unwrap());
        assert_ne!(one.instance_id, two.instance_id);
        assert!(one.meta_data.contains(&one.instance_id));
    }

    #[test]
    fn a_static_address_replaces_dhcp() {
        let nics = [NicConfig {
            mac: "02:00:00:00:00:01".into(),
            address: Some(StaticAddress {
                address: "10.0.0.5".parse().unwrap(),
                prefix: 24,
                gateway: Some("10.0.0.1".parse().unwrap()),
                dns: vec!["10.0.0.2".parse().unwrap()],
            }),
        }];
        let text = network_config(&nics);
        assert!(text.contains("- 10.0.0.5/24") && text.contains("via: 10.0.0.1") && !text.contains("dhcp4"), "{text}");
    }
}
