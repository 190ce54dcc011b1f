//! fabrik's ownership mark on libvirt objects: one element in fabrik's XML namespace
//! inside `<metadata>`, rendered when an object is made and read back when it is observed.
//!
//! ```xml
//! <metadata>
//!   <fabrik:owner xmlns:fabrik="https://fabrik.dev/xmlns/1"
//!                 factory="ai-factory" resource="vm:gpu01/acme-vllm-0" spec-hash="…"/>
//! </metadata>
//! ```
//!
//! libvirt keeps foreign-namespace metadata of domains and networks verbatim. Storage
//! pools and volumes have no `<metadata>` element (libvirt drops it at define), so they
//! cannot carry the mark; their `owner` always reads `None`.

use roxmltree::Node;

use crate::live::Ownership;

/// fabrik's XML namespace. The trailing number is the mark's version: a change to its
/// shape gets a new namespace, so old marks stay readable.
pub const NAMESPACE: &str = "https://fabrik.dev/xmlns/1";
/// The prefix fabrik writes; readers match on the namespace, never on the prefix.
pub const PREFIX: &str = "fabrik";
/// The element's local name.
pub const ELEMENT: &str = "owner";

/// The `<fabrik:owner …/>` element, to place inside an object's `<metadata>`.
pub fn render(owner: &Ownership) -> String {
    let Ownership { factory, resource, spec_hash } = owner;
    format!(
        "<{PREFIX}:{ELEMENT} xmlns:{PREFIX}=\"{NAMESPACE}\" factory=\"{}\" resource=\"{}\" spec-hash=\"{}\"/>",
        escape(factory),
        escape(resource),
        escape(spec_hash)
    )
}

/// The whole `<metadata>` element holding the mark.
pub fn render_metadata(owner: &Ownership) -> String {
    format!("<metadata>{}</metadata>", render(owner))
}

/// The element recording NIC `nic`'s address, a child of a domain's mark (libvirt keeps
/// one metadata element per namespace, so the records live inside the mark):
/// `<fabrik:address nic="0" ip="10.20.0.7"/>`. It is read back ([`addresses`]) so a VM
/// keeps its address whatever else changes in the files.
pub const ADDRESS: &str = "address";

/// The mark of a domain with the address records of its NICs inside it; the plain mark
/// ([`render`]) when there are none.
pub fn render_with_addresses(owner: &Ownership, addresses: &[(u32, std::net::IpAddr)]) -> String {
    render_with_records(owner, addresses, None)
}

/// The element recording the SHA-256 of the VM's cloud-init seed, a child of its mark:
/// `<fabrik:seed sha256="…"/>`. Read back ([`seed`]) so a plan sees a changed seed.
pub const SEED: &str = "seed";

/// The mark with its address records and seed hash inside it; the plain mark ([`render`])
/// when there are none.
pub fn render_with_records(owner: &Ownership, addresses: &[(u32, std::net::IpAddr)], seed: Option<&str>) -> String {
    let mark = render(owner);
    if addresses.is_empty() && seed.is_none() {
        return mark;
    }
    let mut records: String =
        addresses.iter().map(|(nic, ip)| format!("<{PREFIX}:{ADDRESS} nic=\"{nic}\" ip=\"{ip}\"/>")).collect();
    if let Some(sha) = seed {
        records.push_str(&format!("<{PREFIX}:{SEED} sha256=\"{}\"/>", escape(sha)));
    }
    format!("{}>{records}</{PREFIX}:{ELEMENT}>", mark.trim_end_matches("/>"))
}

/// The seed hash recorded in a domain's mark, from the domain's XML.
pub fn seed(xml: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let mark = mark(doc.root_element())?;
    mark.children()
        .find(|n| n.is_element() && n.tag_name().namespace() == Some(NAMESPACE) && n.tag_name().name() == SEED)
        .and_then(|n| n.attribute("sha256"))
        .map(str::to_string)
}

/// A mark as rendered here ([`render_with_addresses`]), in the form libvirt's
/// `virDomainSetMetadata` takes: libvirt puts the element in the namespace itself (the
/// `key` and `uri` it is given) and refuses one that declares the prefix already, so
/// the root goes without prefix and declaration; the records inside name the namespace
/// as their default, and read back in it.
pub fn for_set_metadata(mark: &str) -> String {
    mark.replacen(&format!("<{PREFIX}:{ELEMENT} xmlns:{PREFIX}=\"{NAMESPACE}\""), &format!("<{ELEMENT}"), 1)
        .replace(&format!("</{PREFIX}:{ELEMENT}>"), &format!("</{ELEMENT}>"))
        .replace(&format!("<{PREFIX}:{ADDRESS} "), &format!("<{ADDRESS} xmlns=\"{NAMESPACE}\" "))
}

/// The address records inside a domain's mark; a record that does not parse is skipped
/// (that NIC is then allocated afresh, as if never recorded).
pub fn addresses(root: Node<'_, '_>) -> Vec<(u32, std::net::IpAddr)> {
    let Some(mark) = mark(root) else { return Vec::new() };
    mark.children()
        .filter(|n| n.is_element() && n.tag_name().namespace() == Some(NAMESPACE) && n.tag_name().name() == ADDRESS)
        .filter_map(|n| Some((n.attribute("nic")?.parse().ok()?, n.attribute("ip")?.parse().ok()?)))
        .collect()
}

fn mark<'a, 'i>(root: Node<'a, 'i>) -> Option<Node<'a, 'i>> {
    let metadata = root.children().find(|n| n.is_element() && n.tag_name().name() == "metadata")?;
    metadata
        .children()
        .find(|n| n.is_element() && n.tag_name().namespace() == Some(NAMESPACE) && n.tag_name().name() == ELEMENT)
}

/// The mark of an object, from its root element (`<domain>`, `<network>`). An element in
/// fabrik's namespace that lacks an attribute is not a mark: the object is then treated
/// as unowned, so fabrik never changes it.
pub fn parse(root: Node<'_, '_>) -> Option<Ownership> {
    let metadata = root.children().find(|n| n.is_element() && n.tag_name().name() == "metadata")?;
    let mark = metadata
        .children()
        .find(|n| n.is_element() && n.tag_name().namespace() == Some(NAMESPACE) && n.tag_name().name() == ELEMENT)?;
    Some(Ownership {
        factory: mark.attribute("factory")?.to_string(),
        resource: mark.attribute("resource")?.to_string(),
        spec_hash: mark.attribute("spec-hash")?.to_string(),
    })
}

/// The mark in an object's XML text, if any (`None` also when the XML does not parse).
pub fn parse_xml(xml: &str) -> Option<Ownership> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    parse(doc.root_element())
}

/// Escapes text for an XML attribute value in double quotes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Ownership {
        Ownership {
            factory: "ai-factory".into(),
            resource: "vm:gpu01/acme-vllm-0".into(),
            spec_hash: "sha256:0f<&>\"'".into(),
        }
    }

    #[test]
    fn the_form_for_libvirt_reads_back_the_same() {
        let recs = [(0, "10.20.0.7".parse().unwrap())];
        let mark = render_with_addresses(&owner(), &recs);
        let plain = for_set_metadata(&mark);
        assert!(plain.starts_with("<owner ") && !plain.contains("xmlns:fabrik"), "{plain}");
        // What libvirt returns: the root in the namespace under fabrik's prefix.
        let back = plain
            .replacen("<owner ", &format!("<{PREFIX}:{ELEMENT} xmlns:{PREFIX}=\"{NAMESPACE}\" "), 1)
            .replace("</owner>", "</fabrik:owner>");
        let xml = format!("<domain><metadata>{back}</metadata></domain>");
        let doc = roxmltree::Document::parse(&xml).unwrap();
        assert_eq!(parse(doc.root_element()), Some(owner()));
        assert_eq!(addresses(doc.root_element()), recs);
    }

    #[test]
    fn render_then_parse_round_trips() {
        let xml = format!("<domain><name>x</name>{}</domain>", render_metadata(&owner()));
        assert_eq!(parse_xml(&xml), Some(owner()));
    }

    #[test]
    fn matches_namespace_not_prefix() {
        let xml = format!(
            "<network><metadata><other xmlns='urn:x'/><f:owner xmlns:f='{NAMESPACE}' factory='a' resource='net:h/n' spec-hash='1'/></metadata></network>"
        );
        let got = parse_xml(&xml).unwrap();
        assert_eq!(got.resource, "net:h/n");
        let foreign = "<domain><metadata><fabrik:owner xmlns:fabrik='https://example.com/x' factory='a' resource='b' spec-hash='c'/></metadata></domain>";
        assert_eq!(parse_xml(foreign), None);
    }

    #[test]
    fn address_records_round_trip_and_bad_ones_are_skipped() {
        let recs = [(0, "10.20.0.7".parse().unwrap()), (2, "fd00::9".parse().unwrap())];
        let xml = format!(
            "<domain><metadata>{}</metadata></domain>",
            render_with_addresses(&owner(), &recs)
                .replace("</fabrik:owner>", "<fabrik:address nic='x' ip='1.2.3.4'/></fabrik:owner>")
        );
        let doc = roxmltree::Document::parse(&xml).unwrap();
        assert_eq!(addresses(doc.root_element()), recs);
        assert_eq!(parse(doc.root_element()), Some(owner()));
    }

    #[test]
    fn incomplete_mark_is_no_mark() {
        let xml =
            format!("<domain><metadata><fabrik:owner xmlns:fabrik='{NAMESPACE}' factory='a'/></metadata></domain>");
        assert_eq!(parse_xml(&xml), None);
        assert_eq!(parse_xml("<domain><name>x</name></domain>"), None);
    }
}
