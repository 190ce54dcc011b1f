//! Canonical forms of libvirt XML, so that what fabrik rendered and what libvirt returns
//! for it compare equal unless something really differs.
//!
//! libvirt rewrites every document it is given: it adds a UUID, a `placement`, the
//! emulator's path, a USB and a SATA controller, PCIe root ports and their addresses, a
//! memballoon, PS/2 input, `check`/`migratable` on the CPU, default lifecycle actions,
//! and converts units. Terraform's provider and NixVirt show those as changes; fabrik
//! must not. Normalizing keeps everything fabrik sets and drops, per element, what only
//! libvirt (or a running guest) adds:
//!
//! | where | dropped or rewritten |
//! |---|---|
//! | `<domain>` | `id`; `<uuid>`, `<genid>`, `<resource>`, `<seclabel>`, `<pm>`, `<currentMemory>` equal to `<memory>`, `<clock offset='utc'/>`, lifecycle actions that are the defaults (destroy, restart, destroy) |
//! | `<metadata>` | everything not in fabrik's namespace |
//! | sizes | `<memory>`, `<currentMemory>`, `<maxMemory>`, `<page size>`, `<cell memory>` → bytes, `unit='B'` |
//! | CPU lists | `cpuset`, `nodeset`, `cpus` → kernel range syntax (`0-3,8`) |
//! | `<vcpu>` | `placement='static'` |
//! | `<cpu>` | `check`, `migratable` |
//! | `<os>` | versioned machine (`pc-q35-7.2` → `q35`, `virt-7.2` → `virt`); the path of an `<nvram>` libvirt made from its `template`; with `firmware='efi'`, the `<loader>`, `<nvram>` and `<firmware>` libvirt picks |
//! | devices | `<emulator>`, `<alias>`, `<memballoon>`, PS/2 `<input>`, `<audio type='none'>`, spicevmc channels, controllers (all but fabrik's PCIe expander buses, their root ports and SCSI controllers), device addresses (all but those on fabrik's expander buses and their root ports) |
//! | interfaces | tap `<target>`, `portid`, a running network's `bridge`, libvirt's default `rtl8139` model, and (when compared with [`compare`]) a MAC or a model the desired side did not set |
//! | consoles | libvirt's `isa-serial` (x86) and `system-serial`/`pl011` (Arm) target type and model, the pty path of a running guest |
//! | disks | `<backingStore>` libvirt probed, a running disk's `index` |
//! | mdev hostdevs | `display='off'` |
//!
//! What remains is sorted where order carries no meaning: attributes by name, children
//! by element name (stable, so disks and NICs keep their order among themselves),
//! controllers by type and index.

use std::borrow::Cow;
use std::collections::BTreeSet;

use roxmltree::{Document, Node, StringStorage};
use similar::{ChangeTag, TextDiff};

use crate::driver::libvirt::owner;
use crate::render::xml::escape_into;
use crate::spec::types::CpuSet;

#[derive(Debug, thiserror::Error)]
#[error("cannot read {what} XML")]
pub struct NormalizeError {
    pub what: &'static str,
    #[source]
    pub source: roxmltree::Error,
}

/// An XML element in the canonical form: attributes sorted, text trimmed. Names and
/// values borrow from the document read where they can (most are left as they are).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element<'a> {
    pub name: Cow<'a, str>,
    pub attrs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    pub text: Cow<'a, str>,
    pub children: Vec<Element<'a>>,
}

impl<'a> Element<'a> {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_ref())
    }

    fn remove_attr(&mut self, name: &str) {
        self.attrs.retain(|(n, _)| n != name);
    }

    fn set_attr(&mut self, name: &str, value: String) {
        match self.attrs.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = Cow::Owned(value),
            None => self.attrs.push((Cow::Owned(name.to_string()), Cow::Owned(value))),
        }
    }

    fn child(&self, name: &str) -> Option<&Element<'a>> {
        self.children.iter().find(|c| c.name == name)
    }

    fn child_mut(&mut self, name: &str) -> Option<&mut Element<'a>> {
        self.children.iter_mut().find(|c| c.name == name)
    }

    fn remove_children(&mut self, name: &str) {
        self.children.retain(|c| c.name != name);
    }

    fn is(&self, name: &str, attrs: &[(&str, &str)]) -> bool {
        self.name == name && attrs.iter().all(|(n, v)| self.attr(n) == Some(v))
    }

    /// Canonical text: two-space indentation, single-quoted attributes.
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out
    }

    fn write(&self, out: &mut String, depth: usize) {
        indent(out, depth);
        out.push('<');
        out.push_str(&self.name);
        for (n, v) in &self.attrs {
            out.push(' ');
            out.push_str(n);
            out.push_str("='");
            escape_into(out, v);
            out.push('\'');
        }
        if self.children.is_empty() && self.text.is_empty() {
            out.push_str("/>\n");
        } else if self.children.is_empty() {
            out.push('>');
            escape_into(out, &self.text);
            out.push_str("</");
            out.push_str(&self.name);
            out.push_str(">\n");
        } else {
            out.push_str(">\n");
            for c in &self.children {
                c.write(out, depth + 1);
            }
            indent(out, depth);
            out.push_str("</");
            out.push_str(&self.name);
            out.push_str(">\n");
        }
    }
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

/// Reads a document into elements: fabrik's namespace under its prefix, other namespaced
/// elements dropped (they are other tools' metadata), whitespace-only text dropped.
fn read<'a>(xml: &'a str, what: &'static str) -> Result<Element<'a>, NormalizeError> {
    let doc = Document::parse(xml).map_err(|source| NormalizeError { what, source })?;
    Ok(element(doc.root_element()).expect("the root element is in no namespace or fabrik's"))
}

/// A string of the document: borrowed from its text unless the parser had to rewrite it
/// (entities, normalised whitespace in attributes).
fn cow<'a>(s: &StringStorage<'a>) -> Cow<'a, str> {
    match s {
        StringStorage::Borrowed(s) => Cow::Borrowed(s),
        StringStorage::Owned(s) => Cow::Owned(s.to_string()),
    }
}

fn element<'a>(node: Node<'_, 'a>) -> Option<Element<'a>> {
    let mut attrs = Vec::new();
    let name = match node.tag_name().namespace() {
        None => Cow::Borrowed(node.tag_name().name()),
        Some(owner::NAMESPACE) => {
            attrs.push((Cow::Owned(format!("xmlns:{}", owner::PREFIX)), Cow::Borrowed(owner::NAMESPACE)));
            Cow::Owned(format!("{}:{}", owner::PREFIX, node.tag_name().name()))
        }
        Some(_) => return None,
    };
    attrs.extend(node.attributes().map(|a| (Cow::Borrowed(a.name()), cow(a.value_storage()))));
    let mut texts = node.children().filter(|c| c.is_text()).filter_map(|c| c.text_storage());
    let text = match (texts.next(), texts.next()) {
        (None, _) => Cow::Borrowed(""),
        (Some(StringStorage::Borrowed(t)), None) => Cow::Borrowed(t.trim()),
        (Some(first), second) => {
            let mut all = String::from(first.as_str());
            all.extend(second.into_iter().chain(texts).map(|t| t.as_str()));
            Cow::Owned(all.trim().to_string())
        }
    };
    let children = node.children().filter(|c| c.is_element()).filter_map(element).collect();
    Some(Element { name, attrs, text, children })
}

/// Rewrites a size (the element's text, or one attribute) to bytes. Domain sizes default
/// to KiB. A size that does not parse is left as it is, so it still shows in a diff.
fn to_bytes(e: &mut Element, attr: Option<&str>) {
    let unit = e.attr("unit").unwrap_or("KiB").to_string();
    let Some(mult) = crate::driver::libvirt::xml::unit_bytes(&unit) else { return };
    let value = match attr {
        Some(a) => e.attr(a).map(str::to_string),
        None => Some(e.text.to_string()),
    };
    let Some(n) = value.and_then(|v| v.trim().parse::<u64>().ok()) else { return };
    let bytes = n.saturating_mul(mult).to_string();
    match attr {
        Some(a) => e.set_attr(a, bytes),
        None => e.text = Cow::Owned(bytes),
    }
    e.set_attr("unit", "B".to_string());
}

fn int(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Everywhere in the tree: CPU lists in range syntax, PCI addresses in libvirt's hex
/// widths (`domain` defaults to 0), `<alias>` gone.
fn everywhere(e: &mut Element) {
    for (n, v) in &mut e.attrs {
        if matches!(n.as_ref(), "cpuset" | "nodeset" | "cpus")
            && let Ok(set) = CpuSet::parse(v)
        {
            *v = Cow::Owned(set.to_string());
        }
    }
    let pci = e.name == "address" && (e.attr("type").is_none_or(|t| t == "pci")) && e.attr("bus").is_some();
    if pci && e.attr("uuid").is_none() {
        if e.attr("domain").is_none() {
            e.set_attr("domain", "0".into());
        }
        for (n, width) in [("domain", 4), ("bus", 2), ("slot", 2), ("function", 1)] {
            if let Some(v) = e.attr(n).and_then(int) {
                e.set_attr(n, format!("0x{v:0width$x}"));
            }
        }
        if e.attr("multifunction") == Some("off") {
            e.remove_attr("multifunction");
        }
    }
    e.remove_children("alias");
    for c in &mut e.children {
        everywhere(c);
    }
}

fn sort(e: &mut Element) {
    e.attrs.sort();
    for c in &mut e.children {
        sort(c);
    }
    // By name; controllers by type, then index. Borrowed keys: a sort compares each
    // element several times. `sort_by` is stable, as `sort_by_key` was.
    fn key<'e>(c: &'e Element<'_>) -> (u64, &'e str) {
        let controller = c.name == "controller";
        let index = if controller { c.attr("index").and_then(int).unwrap_or(0) } else { 0 };
        let kind = if controller { c.attr("type").unwrap_or("") } else { "" };
        (index, kind)
    }
    e.children.sort_by(|a, b| {
        a.name.cmp(&b.name).then_with(|| {
            let ((ai, ak), (bi, bk)) = (key(a), key(b));
            ak.cmp(bk).then(ai.cmp(&bi))
        })
    });
}

/// The canonical form of a domain's XML (see the module's table).
pub fn domain_element(xml: &str) -> Result<Element<'_>, NormalizeError> {
    let mut d = read(xml, "domain")?;
    d.remove_attr("id");
    d.remove_attr("xmlns:fabrik");
    for name in ["uuid", "genid", "resource", "seclabel", "pm"] {
        d.remove_children(name);
    }
    if let Some(m) = d.child_mut("metadata") {
        m.children.retain(|c| c.name.starts_with(&format!("{}:", owner::PREFIX)));
    }
    d.children.retain(|c| !(c.name == "metadata" && c.children.is_empty()));
    for c in &mut d.children {
        match c.name.as_ref() {
            "memory" | "currentMemory" | "maxMemory" => to_bytes(c, None),
            "vcpu" if c.attr("placement") == Some("static") => c.remove_attr("placement"),
            _ => {}
        }
    }
    let memory = d.child("memory").map(|m| m.text.clone());
    d.children.retain(|c| {
        !(c.name == "currentMemory" && Some(&c.text) == memory.as_ref()
            || c.is("clock", &[("offset", "utc")]) && c.children.is_empty() && c.attrs.len() == 1
            || c.name == "on_poweroff" && c.text == "destroy"
            || c.name == "on_reboot" && c.text == "restart"
            || c.name == "on_crash" && c.text == "destroy")
    });
    if let Some(page) = d.child_mut("memoryBacking").and_then(|m| m.child_mut("hugepages")) {
        for p in page.children.iter_mut().filter(|p| p.name == "page") {
            to_bytes(p, Some("size"));
        }
    }
    if let Some(cpu) = d.child_mut("cpu") {
        cpu.remove_attr("check");
        cpu.remove_attr("migratable");
        if let Some(numa) = cpu.child_mut("numa") {
            for cell in numa.children.iter_mut().filter(|c| c.name == "cell") {
                to_bytes(cell, Some("memory"));
            }
        }
    }
    if let Some(os) = d.child_mut("os") {
        if let Some(t) = os.child_mut("type")
            && let Some(machine) = t.attr("machine")
        {
            let base = if machine.starts_with("pc-q35-") {
                Some("q35")
            } else if machine.starts_with("pc-i440fx-") {
                Some("pc")
            } else if machine.starts_with("virt-") {
                Some("virt")
            } else {
                None
            };
            if let Some(base) = base {
                t.set_attr("machine", base.into());
            }
        }
        if os.attr("firmware") == Some("efi") {
            for name in ["loader", "nvram", "firmware"] {
                os.remove_children(name);
            }
        }
        // A variable store made from a template: libvirt names its file after the VM.
        if let Some(nvram) = os.child_mut("nvram")
            && nvram.attr("template").is_some()
        {
            nvram.text = Cow::Borrowed("");
        }
    }
    if let Some(devices) = d.child_mut("devices") {
        normalize_devices(devices);
    }
    everywhere(&mut d);
    sort(&mut d);
    Ok(d)
}

fn normalize_devices(devices: &mut Element) {
    // fabrik's PCI topology: its expander buses and the root ports on them.
    let index = |c: &Element| c.attr("index").and_then(int);
    let expanders: BTreeSet<u64> = devices
        .children
        .iter()
        .filter(|c| c.is("controller", &[("model", "pcie-expander-bus")]))
        .filter_map(index)
        .collect();
    let on_expander = |c: &Element| {
        c.child("address").and_then(|a| a.attr("bus")).and_then(int).is_some_and(|b| expanders.contains(&b))
    };
    let ports: BTreeSet<u64> = devices
        .children
        .iter()
        .filter(|c| c.is("controller", &[("model", "pcie-root-port")]) && on_expander(c))
        .filter_map(index)
        .collect();
    let kept_bus = |b: u64| expanders.contains(&b) || ports.contains(&b);

    devices.children.retain(|c| match c.name.as_ref() {
        "emulator" | "memballoon" => false,
        "input" => c.attr("bus") != Some("ps2"),
        "audio" => c.attr("type") != Some("none"),
        "channel" => c.attr("type") != Some("spicevmc"),
        "controller" => match (c.attr("type"), c.attr("model")) {
            (Some("pci"), Some("pcie-expander-bus")) => true,
            (Some("pci"), Some("pcie-root-port")) => on_expander(c),
            (Some("scsi"), _) => true,
            _ => false,
        },
        _ => true,
    });
    for dev in &mut devices.children {
        // A device's own guest address: kept only on fabrik's buses.
        let keep_address = dev.child("address").is_some_and(|a| {
            a.attr("type").is_none_or(|t| t == "pci") && a.attr("bus").and_then(int).is_some_and(kept_bus)
        });
        if !keep_address || dev.is("controller", &[("model", "pcie-expander-bus")]) {
            dev.remove_children("address");
        }
        match dev.name.as_ref() {
            "controller" => {
                dev.remove_children("model");
                if dev.attr("model") == Some("pcie-root-port") {
                    dev.remove_children("target");
                }
                if dev.attr("type") == Some("scsi") {
                    dev.remove_attr("index");
                }
            }
            "interface" => {
                dev.remove_children("target");
                let network = dev.attr("type") == Some("network");
                if let Some(source) = dev.child_mut("source") {
                    source.remove_attr("portid");
                    if network {
                        source.remove_attr("bridge");
                    }
                }
                dev.children.retain(|c| !c.is("model", &[("type", "rtl8139")]));
            }
            "serial" | "console" => {
                dev.remove_attr("tty");
                if dev.attr("type") == Some("pty") {
                    dev.remove_children("source");
                }
                if let Some(t) = dev.child_mut("target") {
                    // x86's ISA serial port and Arm `virt`'s PL011: what libvirt picks.
                    if matches!(t.attr("type"), Some("isa-serial" | "system-serial")) {
                        t.remove_attr("type");
                    }
                    t.children
                        .retain(|c| !c.is("model", &[("name", "isa-serial")]) && !c.is("model", &[("name", "pl011")]));
                }
            }
            "disk" => {
                dev.remove_children("backingStore");
                if let Some(source) = dev.child_mut("source") {
                    source.remove_attr("index");
                }
            }
            "hostdev" if dev.attr("type") == Some("mdev") && dev.attr("display") == Some("off") => {
                dev.remove_attr("display");
            }
            _ => {}
        }
    }
}

/// The canonical text of a domain's XML.
pub fn domain(xml: &str) -> Result<String, NormalizeError> {
    Ok(domain_element(xml)?.to_xml())
}

/// The canonical form of a network's XML: its UUID, the MAC libvirt gives a bridge it
/// makes, and the VF list and connection count of an active hostdev pool dropped.
pub fn network(xml: &str) -> Result<String, NormalizeError> {
    let mut n = read(xml, "network")?;
    n.remove_attr("connections");
    n.remove_attr("xmlns:fabrik");
    n.remove_children("uuid");
    n.remove_children("mac");
    if let Some(m) = n.child_mut("metadata") {
        m.children.retain(|c| c.name.starts_with(&format!("{}:", owner::PREFIX)));
    }
    if let Some(f) = n.child_mut("forward") {
        f.remove_children("address");
        f.remove_children("interface");
    }
    everywhere(&mut n);
    sort(&mut n);
    Ok(n.to_xml())
}

/// A desired and a live domain in canonical form, side by side. Their canonical text
/// ([`Comparison::desired`], [`Comparison::live`]) is written only when asked for: most
/// domains compared are unchanged, and equal trees have equal text.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Comparison<'a> {
    want: Element<'a>,
    have: Element<'a>,
}

/// Normalizes both sides. A MAC address libvirt generated (the desired interface at the
/// same position has none) is dropped from the live side: fabrik always sets MACs, so
/// this only matters for documents rendered by hand. So is a NIC `<model>` libvirt chose
/// for an interface fabrik gives none (an SR-IOV VF): `virtio` on Arm's `virt` machine.
pub fn compare<'a>(desired: &'a str, live: &'a str) -> Result<Comparison<'a>, NormalizeError> {
    let want = domain_element(desired)?;
    let mut have = domain_element(live)?;
    let interfaces = |d: &Element, child: &str| -> Vec<bool> {
        d.child("devices")
            .map(|devs| {
                devs.children.iter().filter(|c| c.name == "interface").map(|i| i.child(child).is_some()).collect()
            })
            .unwrap_or_default()
    };
    let (has_mac, has_model) = (interfaces(&want, "mac"), interfaces(&want, "model"));
    if let Some(devs) = have.child_mut("devices") {
        for (i, iface) in devs.children.iter_mut().filter(|c| c.name == "interface").enumerate() {
            if !has_mac.get(i).copied().unwrap_or(true) {
                iface.remove_children("mac");
            }
            if !has_model.get(i).copied().unwrap_or(true) {
                iface.remove_children("model");
            }
        }
    }
    Ok(Comparison { want, have })
}

impl Comparison<'_> {
    /// The desired domain's canonical text.
    pub fn desired(&self) -> String {
        self.want.to_xml()
    }

    /// The live domain's canonical text.
    pub fn live(&self) -> String {
        self.have.to_xml()
    }

    /// Whether the canonical texts differ. Equal trees write equal text, so only unequal
    /// ones are written and compared (text beside child elements is not written: trees
    /// that differ only there are equal).
    pub fn has_changes(&self) -> bool {
        self.want != self.have && self.desired() != self.live()
    }

    /// A unified diff, live → desired (what apply would change).
    pub fn unified(&self) -> String {
        TextDiff::from_lines(self.live().as_str(), self.desired().as_str())
            .unified_diff()
            .context_radius(3)
            .header("live", "desired")
            .to_string()
    }

    /// Just the changed lines, trimmed: `- ` what the live side has, `+ ` what the
    /// desired side has.
    pub fn changes(&self) -> Vec<String> {
        TextDiff::from_lines(self.live().as_str(), self.desired().as_str())
            .iter_all_changes()
            .filter_map(|c| match c.tag() {
                ChangeTag::Equal => None,
                ChangeTag::Delete => Some(format!("- {}", c.value().trim())),
                ChangeTag::Insert => Some(format!("+ {}", c.value().trim())),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENDERED: &str = "<domain type='kvm'><name>v</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
        <cputune><vcpupin vcpu='0' cpuset='0,1'/></cputune><cpu mode='host-passthrough'/>
        <devices><interface type='bridge'><source bridge='br0'/><model type='virtio'/></interface></devices></domain>";

    /// The shape of what libvirt returns for `RENDERED`, running.
    const LIVE: &str = "<domain type='kvm' id='7'><name>v</name><uuid>8c5c</uuid>
        <metadata><other:x xmlns:other='urn:other'/></metadata>
        <memory unit='KiB'>65536</memory><currentMemory unit='KiB'>65536</currentMemory>
        <vcpu placement='static'>1</vcpu><cputune><vcpupin vcpu='0' cpuset='0-1'/></cputune>
        <resource><partition>/machine</partition></resource>
        <cpu mode='host-passthrough' check='none' migratable='on'/>
        <clock offset='utc'/><on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
        <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
          <controller type='usb' index='0' model='qemu-xhci'><alias name='usb'/></controller>
          <controller type='pci' index='1' model='pcie-root-port'><model name='pcie-root-port'/><target chassis='1' port='0x10'/>
            <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/></controller>
          <interface type='bridge'><mac address='52:54:00:12:34:56'/><source bridge='br0'/><target dev='vnet0'/>
            <model type='virtio'/><alias name='net0'/><address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></interface>
          <input type='mouse' bus='ps2'><alias name='input0'/></input><audio id='1' type='none'/>
          <memballoon model='virtio'><address type='pci' domain='0x0000' bus='0x05' slot='0x00' function='0x0'/></memballoon>
        </devices><seclabel type='none' model='none'/></domain>";

    #[test]
    fn libvirt_defaults_are_not_changes() {
        let cmp = compare(RENDERED, LIVE).unwrap();
        assert!(!cmp.has_changes(), "{}", cmp.unified());
        assert!(cmp.desired().contains("<memory unit='B'>67108864</memory>"), "{}", cmp.desired());
    }

    #[test]
    fn a_mac_fabrik_set_is_compared() {
        let with_mac = RENDERED.replace("<source bridge", "<mac address='52:54:00:fa:00:01'/><source bridge");
        let cmp = compare(&with_mac, LIVE).unwrap();
        assert_eq!(cmp.changes(), ["- <mac address='52:54:00:12:34:56'/>", "+ <mac address='52:54:00:fa:00:01'/>"]);
    }

    #[test]
    fn text_is_what_the_text_nodes_hold_trimmed() {
        let e = read("<a> x <!-- c --> y &amp; <b>z</b> </a>", "test").unwrap();
        assert_eq!(e.text, "x  y &");
        assert_eq!(e.children[0].text, "z");
        let e = read("<a attr='1 &lt; 2'> plain </a>", "test").unwrap();
        assert_eq!((e.text.as_ref(), e.attr("attr")), ("plain", Some("1 < 2")));
    }

    #[test]
    fn unparsable_xml_is_an_error() {
        let e = domain("<domain>").unwrap_err();
        assert_eq!(e.to_string(), "cannot read domain XML");
    }
}
