//! What the twin hands libvirt's test driver in place of fabrik's XML, and back.
//!
//! Domains. The test driver's capabilities list one kind of guest: `<domain
//! type='test'>`, arch `i686`, no machine types. fabrik renders `type='kvm'`, arch
//! `x86_64`, machine `q35`. libvirt 9's test driver defines and runs such a domain anyway
//! (its domains are no longer checked against its capabilities), but older releases
//! refuse it (`No guest options available for arch 'x86_64'`), and a domain that differs
//! from the driver's capabilities is one no release promises to run. So the twin gives the
//! test driver exactly what its capabilities list and leaves everything else byte for
//! byte, so libvirt still judges the rest: schema errors, duplicate names and UUIDs stay
//! libvirt's. The values it replaced are recorded in the document itself, as one element
//! of the twin's own namespace in `<metadata>` (libvirt keeps foreign metadata verbatim,
//! on define and in the node file a reopened twin loads):
//!
//! ```xml
//! <twin:original xmlns:twin="https://fabrik.dev/xmlns/twin/1" type="kvm" arch="x86_64" machine="q35"/>
//! ```
//!
//! On every read the values are put back and the element removed, so what fabrik reads
//! from a twin normalizes like what a real libvirtd returns for the same document.
//!
//! Volumes. The test driver's pools have a fixed 100 GiB and it charges every volume's
//! allocation against them; a volume without `<allocation>` is allocated in full, so an
//! 8 TiB scratch disk is refused. A real `dir` pool makes qcow2 files sparse and the twin
//! does not model a host's disks, so a volume without an allocation gets allocation 0.

use std::ops::Range;

use roxmltree::{Document, Node};

use crate::driver::libvirt::owner::escape;
use crate::driver::libvirt::xml::unit_bytes;

/// The twin's XML namespace, for what it records in a domain's `<metadata>`.
pub const NAMESPACE: &str = "https://fabrik.dev/xmlns/twin/1";
const PREFIX: &str = "twin";
const ELEMENT: &str = "original";
/// The one guest the test driver's capabilities list (`virsh -c test:///default capabilities`).
const TEST_VIRT_TYPE: &str = "test";
const TEST_ARCH: &str = "i686";

/// Byte-range replacements of one document, applied back to front.
struct Edits<'a> {
    text: &'a str,
    edits: Vec<(Range<usize>, String)>,
}

impl<'a> Edits<'a> {
    fn new(text: &'a str) -> Edits<'a> {
        Edits { text, edits: Vec::new() }
    }

    fn replace(&mut self, range: Range<usize>, with: impl Into<String>) {
        self.edits.push((range, with.into()));
    }

    fn insert(&mut self, at: usize, text: impl Into<String>) {
        self.replace(at..at, text);
    }

    /// Removes a range and the whitespace before it (the line an element was on).
    fn remove(&mut self, range: Range<usize>) {
        let start = self.text[..range.start].trim_end().len();
        self.replace(start..range.end, "");
    }

    /// Back to front; edits at one place land in the order they were made.
    fn apply(self) -> String {
        let mut edits: Vec<_> = self.edits.into_iter().enumerate().collect();
        edits.sort_by_key(|(i, (r, _))| std::cmp::Reverse((r.start, *i)));
        let mut out = self.text.to_string();
        for (_, (range, with)) in edits {
            out.replace_range(range, &with);
        }
        out
    }
}

fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|n| n.is_element() && n.tag_name().name() == name && n.tag_name().namespace().is_none())
}

/// Where an element's end tag starts; `None` for an empty-element tag (`<metadata/>`).
fn end_tag(text: &str, node: Node<'_, '_>) -> Option<usize> {
    let range = node.range();
    if text[..range.end].ends_with("/>") {
        return None;
    }
    text[..range.end].rfind("</")
}

/// Where a start tag's attributes end (`<type a='b'|>`), to add one there.
fn after_attributes(text: &str, node: Node<'_, '_>) -> usize {
    let start = node.range().start;
    // Attribute values hold no `>` unescaped, so the first one closes the start tag.
    let close = start + text[start..].find('>').unwrap_or(0);
    if text[..close].ends_with('/') { close - 1 } else { close }
}

/// The document the test driver accepts. A document that is not XML, or not a domain,
/// is passed on as it is: libvirt's answer to it is the twin's.
pub fn domain_to_test(xml: &str) -> String {
    let Ok(doc) = Document::parse(xml) else { return xml.to_string() };
    let root = doc.root_element();
    if !root.has_tag_name("domain") || end_tag(xml, root).is_none() {
        return xml.to_string();
    }
    let mut edits = Edits::new(xml);
    let mut original: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = root.attribute_node("type").filter(|a| a.value() != TEST_VIRT_TYPE) {
        original.push(("type", a.value()));
        edits.replace(a.range_value(), TEST_VIRT_TYPE);
    }
    if let Some(t) = child(root, "os").and_then(|os| child(os, "type")) {
        if let Some(a) = t.attribute_node("arch").filter(|a| a.value() != TEST_ARCH) {
            original.push(("arch", a.value()));
            edits.replace(a.range_value(), TEST_ARCH);
        }
        if let Some(a) = t.attribute_node("machine") {
            original.push(("machine", a.value()));
            edits.remove(a.range());
        }
    }
    if original.is_empty() {
        return xml.to_string();
    }
    let attrs: String = original.iter().map(|(n, v)| format!(" {n}=\"{}\"", escape(v))).collect();
    let mark = format!("<{PREFIX}:{ELEMENT} xmlns:{PREFIX}=\"{NAMESPACE}\"{attrs}/>");
    match child(root, "metadata") {
        Some(m) => match end_tag(xml, m) {
            Some(end) => edits.insert(end, mark),
            None => edits.replace(m.range(), format!("<metadata>{mark}</metadata>")),
        },
        None => {
            // After `<name>` when there is one, as libvirt writes it; anywhere is valid.
            let at = child(root, "name").map_or_else(|| after_attributes(xml, root) + 1, |n| n.range().end);
            edits.insert(at, format!("<metadata>{mark}</metadata>"));
        }
    }
    edits.apply()
}

/// What the test driver returned, with the values the twin replaced put back and its
/// record removed. A document without a record is returned as it is.
pub fn domain_from_test(xml: &str) -> String {
    let Ok(doc) = Document::parse(xml) else { return xml.to_string() };
    let root = doc.root_element();
    let Some(metadata) = child(root, "metadata") else { return xml.to_string() };
    let is_mark = |n: &Node<'_, '_>| n.is_element() && n.tag_name().namespace() == Some(NAMESPACE);
    let Some(mark) = metadata.children().find(is_mark) else { return xml.to_string() };
    let mut edits = Edits::new(xml);
    if let (Some(value), Some(a)) = (mark.attribute("type"), root.attribute_node("type")) {
        edits.replace(a.range_value(), escape(value));
    }
    if let Some(t) = child(root, "os").and_then(|os| child(os, "type")) {
        for name in ["arch", "machine"] {
            let Some(value) = mark.attribute(name) else { continue };
            match t.attribute_node(name) {
                Some(a) => edits.replace(a.range_value(), escape(value)),
                None => edits.insert(after_attributes(xml, t), format!(" {name}='{}'", escape(value))),
            }
        }
    }
    let others = metadata.children().filter(|n| n.is_element() && !is_mark(n)).count();
    edits.remove(if others == 0 { metadata.range() } else { mark.range() });
    edits.apply()
}

/// A volume as the test driver creates it: sparse unless the document says otherwise.
pub fn volume_to_test(xml: &str) -> String {
    let Ok(doc) = Document::parse(xml) else { return xml.to_string() };
    let root = doc.root_element();
    if !root.has_tag_name("volume") || child(root, "allocation").is_some() {
        return xml.to_string();
    }
    let Some(end) = end_tag(xml, root) else { return xml.to_string() };
    let mut edits = Edits::new(xml);
    edits.insert(end, "<allocation unit='bytes'>0</allocation>");
    edits.apply()
}

/// A volume document's `<capacity>` in bytes (libvirt's default unit is bytes).
pub fn volume_capacity(xml: &str) -> Option<u64> {
    let doc = Document::parse(xml).ok()?;
    let c = child(doc.root_element(), "capacity")?;
    let n: u64 = c.text()?.trim().parse().ok()?;
    n.checked_mul(unit_bytes(c.attribute("unit").unwrap_or("bytes"))?)
}

/// A volume document with its `<capacity>` set to `bytes`.
pub fn with_volume_capacity(xml: &str, bytes: u64) -> String {
    let Ok(doc) = Document::parse(xml) else { return xml.to_string() };
    let root = doc.root_element();
    let capacity = format!("<capacity unit='bytes'>{bytes}</capacity>");
    let mut edits = Edits::new(xml);
    match (child(root, "capacity"), end_tag(xml, root)) {
        (Some(c), _) => edits.replace(c.range(), capacity),
        (None, Some(end)) => edits.insert(end, capacity),
        (None, None) => return xml.to_string(),
    }
    edits.apply()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENDERED: &str = "<domain type='kvm'>
  <name>v</name>
  <memory unit='KiB'>65536</memory>
  <os firmware='efi'>
    <type arch='x86_64' machine='q35'>hvm</type>
  </os>
</domain>
";

    #[test]
    fn a_domain_becomes_what_the_test_driver_lists_and_comes_back() {
        let test = domain_to_test(RENDERED);
        assert!(test.starts_with("<domain type='test'>"), "{test}");
        assert!(test.contains("<type arch='i686'>hvm</type>"), "{test}");
        assert!(
            test.contains(&format!(
                "<name>v</name><metadata><twin:original xmlns:twin=\"{NAMESPACE}\" type=\"kvm\" arch=\"x86_64\" machine=\"q35\"/></metadata>"
            )),
            "{test}"
        );
        assert_eq!(domain_from_test(&test), RENDERED);
    }

    #[test]
    fn the_record_joins_existing_metadata_and_leaves_it() {
        let with_mark = RENDERED.replace("<name>v</name>", "<name>v</name><metadata><x:y xmlns:x='urn:x'/></metadata>");
        let test = domain_to_test(&with_mark);
        assert!(test.contains("<x:y xmlns:x='urn:x'/><twin:original"), "{test}");
        assert_eq!(domain_from_test(&test), with_mark);
        let empty = RENDERED.replace("<name>v</name>", "<name>v</name><metadata/>");
        assert_eq!(domain_from_test(&domain_to_test(&empty)), RENDERED, "an emptied <metadata/> goes");
    }

    #[test]
    fn libvirts_own_rewrite_is_restored() {
        // libvirt drops nothing the twin recorded, but writes its own attribute order.
        let test = domain_to_test(RENDERED);
        let returned = test.replace("<type arch='i686'>", "<type arch='i686' machine='pc'>");
        assert!(domain_from_test(&returned).contains("<type arch='x86_64' machine='q35'>hvm</type>"));
        let dropped = test.replace("<type arch='i686'>", "<type>");
        assert!(domain_from_test(&dropped).contains("<type arch='x86_64' machine='q35'>hvm</type>"));
        let empty = test.replace("<type arch='i686'>hvm</type>", "<type arch='i686'/>");
        assert!(domain_from_test(&empty).contains("<type arch='x86_64' machine='q35'/>"));
    }

    #[test]
    fn what_the_test_driver_takes_as_it_is_is_left() {
        let test = "<domain type='test'><name>t</name><os><type arch='i686'>hvm</type></os></domain>";
        assert_eq!(domain_to_test(test), test);
        assert_eq!(domain_from_test(test), test);
        for broken in ["<domain type='kvm'>", "<network><name>n</name></network>", "<domain type='kvm'/>"] {
            assert_eq!(domain_to_test(broken), broken);
        }
    }

    #[test]
    fn volumes_are_sparse_unless_told() {
        let vol = "<volume><name>a</name><capacity unit='GiB'>8</capacity></volume>";
        assert_eq!(
            volume_to_test(vol),
            "<volume><name>a</name><capacity unit='GiB'>8</capacity><allocation unit='bytes'>0</allocation></volume>"
        );
        let allocated = "<volume><name>a</name><allocation>5</allocation></volume>";
        assert_eq!(volume_to_test(allocated), allocated);
        assert_eq!(volume_capacity(vol), Some(8 << 30));
        assert_eq!(volume_capacity(&with_volume_capacity(vol, 1 << 40)), Some(1 << 40));
    }
}
