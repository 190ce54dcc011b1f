//! The registry of every diagnostic code: what it means, what it protects against, a
//! failing example and the fix. `fabrik explain CODE` prints an entry; `docs/rules.md`
//! and `docs/diagnostics.md` are generated from it, and a test keeps both in step.

pub mod drift;

/// One diagnostic code and its page.
#[derive(Debug)]
pub struct Rule {
    pub code: &'static str,
    /// One line: what the diagnostic says is wrong.
    pub summary: &'static str,
    /// Why it matters: what goes wrong in a cluster that ignores it.
    pub protects: &'static str,
    /// A failing example (YAML), empty when the summary says it all.
    pub example: &'static str,
    /// How to fix it.
    pub fix: &'static str,
}

/// A language or loading code: the summary is the whole page.
const fn lang(code: &'static str, summary: &'static str) -> Rule {
    Rule { code, summary, protects: "", example: "", fix: "" }
}

/// Loading and language codes (`fabrik::load::*`, `fabrik::spec::*`, `fabrik::ref::*`).
pub static LANGUAGE: &[Rule] = &[
    lang("fabrik::load::io", "a path cannot be read (missing, permissions)"),
    lang(
        "fabrik::load::no-files",
        "a directory holds no `*.yaml`, `*.yml` or `*.kdl` file (hidden entries are skipped)",
    ),
    lang("fabrik::load::unknown-extension", "a file given by path is not `.yaml`, `.yml` or `.kdl`"),
    lang(
        "fabrik::load::skipped",
        "a warning naming the entries of a factory directory that are not factory files (hidden entries are skipped without one)",
    ),
    lang(
        "fabrik::load::dangling-link",
        "a link in a factory directory points at nothing: a file of the factory may be missing",
    ),
    lang("fabrik::load::link-loop", "directory links in a factory lead back to a directory being read"),
    lang("fabrik::load::not-a-file", "an entry named like a factory file is a FIFO, socket or device; it is not read"),
    lang(
        "fabrik::load::extension-case",
        "a file named `*.YAML`, `*.Yml`, `*.KDL`…: factory files end in lower-case `.yaml`, `.yml` or `.kdl`",
    ),
    lang("fabrik::load::file-too-large", "a factory file holds more than 16 MiB; it is not read"),
    lang(
        "fabrik::load::factory-too-large",
        "the files of a factory hold more than 64 MiB together; the rest are not read",
    ),
    lang(
        "fabrik::spec::yaml-syntax",
        "the YAML does not parse (indentation, quoting, tabs, several documents in a file)",
    ),
    lang("fabrik::spec::kdl-syntax", "the KDL does not parse (quoting, braces, an unquoted `64GiB`)"),
    lang("fabrik::spec::not-utf8", "the file is not UTF-8 text (binary, or another encoding)"),
    lang("fabrik::spec::empty-file", "the file holds no document (empty, or only comments)"),
    lang("fabrik::spec::alias-limit", "YAML anchors and aliases copy more than a million nodes or 64 MiB in one file"),
    lang(
        "fabrik::spec::too-deep",
        "lists and maps nested deeper than any factory needs (128 levels in YAML, aliases expanded; 32 in KDL), or a KDL `/* */` comment longer than 4,096 pieces, refused before they can exhaust the stack",
    ),
    lang(
        "fabrik::spec::yaml-tag",
        "a YAML tag (`!!str`, `!custom`): fabrik reads plain YAML and refuses tags rather than ignore them",
    ),
    lang("fabrik::spec::missing-version", "the file has no top-level `version`"),
    lang("fabrik::spec::unsupported-version", "`version` is not one this fabrik reads (`1`)"),
    lang("fabrik::spec::unknown-key", "a key the object does not have; the help suggests the closest one"),
    lang("fabrik::spec::duplicate-key", "a key given twice in one object"),
    lang(
        "fabrik::spec::missing-key",
        "a required key is absent (also: a VM whose vCPUs or memory come from nowhere, a key a network kind needs)",
    ),
    lang("fabrik::spec::irrelevant-key", "a key that has no effect given another key (`vni` on a VLAN network)"),
    lang(
        "fabrik::spec::conflicting-keys",
        "two keys that exclude each other (`tenant` and `shared`; `mig` and `time-sliced`)",
    ),
    lang("fabrik::spec::kdl-argument", "a KDL node with an argument it does not take, or more than one"),
    lang(
        "fabrik::spec::wrong-type",
        "a value of the wrong type (a string for an integer, YAML 1.1 `yes` for a boolean, …)",
    ),
    lang(
        "fabrik::spec::unknown-variant",
        "a word that is not one of the allowed values; the help suggests the closest",
    ),
    lang("fabrik::watch::bad-time", "a maintenance window's `start` is not a time of day `HH:MM` (UTC, 24-hour)"),
    lang("fabrik::watch::backoff", "`backoff-base-seconds` is more than `backoff-max-seconds`"),
    lang("fabrik::watch::duplicate", "two files declare `watch`; a factory has one set of watch settings"),
    lang("fabrik::spec::out-of-range", "a number outside its range (VLAN 1–4094, VNI 1–16777215, MTU 68–65535, …)"),
    lang("fabrik::spec::missing-unit", "a size without a unit (`memory: 128`)"),
    lang("fabrik::spec::bad-unit", "a size with an unknown unit (`128GIB`); units follow libvirt"),
    lang("fabrik::spec::bad-size", "a size that is not a number of bytes, or too large"),
    lang("fabrik::spec::bad-page-size", "a hugepage size other than `2M` or `1G`"),
    lang("fabrik::spec::bad-cpuset", "a CPU list that does not parse (`0-27,56-83` is the form)"),
    lang("fabrik::spec::bad-pci-address", "a PCI address that does not parse (`0000:3b:00.0` is the form)"),
    lang("fabrik::spec::bad-mig-profile", "a MIG profile name that does not parse (`3g.71gb`, `1g.18gb+me`)"),
    lang(
        "fabrik::spec::bad-ip-address",
        "an IP address (a host NIC's `ip`, a network's `gateway` or `dns`, a VM NIC's `address`) that is not one IPv4 or IPv6 address (`10.0.0.11`, `fd00::11`), or that carries a prefix length",
    ),
    lang(
        "fabrik::spec::bad-name",
        "a name with characters other than letters, digits, `-`, `_`, `.`, or longer than 63",
    ),
    lang(
        "fabrik::spec::bad-ifname",
        "a Linux interface name that is empty, longer than 15 bytes, `.` or `..`, or has `/`, `:`, whitespace, control or non-ASCII characters",
    ),
    lang(
        "fabrik::spec::bad-subnet",
        "a network's `subnet` that is not an IPv4 or IPv6 subnet with its prefix length (`10.20.0.0/16`), or that has host bits set",
    ),
    lang(
        "fabrik::spec::bad-ip-range",
        "an allocation range that is not `first-last` of two addresses of one family, the first not after the last",
    ),
    lang(
        "fabrik::spec::bad-mac",
        "a NIC's `mac` that is not six hex octets, or is a multicast, broadcast or all-zero address",
    ),
    lang(
        "fabrik::spec::bad-volume-name",
        "a disk's `volume` that is empty, `.` or `..`, longer than 255 bytes, or has `/`, spaces or non-ASCII characters",
    ),
    lang("fabrik::spec::bad-uri", "a host `uri` that is not a libvirt URI"),
    lang(
        "fabrik::spec::partitions-file",
        "a host's `partitions-file` that is not an absolute path, or given without `subnet-manager`",
    ),
    lang(
        "fabrik::spec::control-character",
        "a string or key holds a control character (NUL, newline, tab, escape, DEL, C1, a bidirectional override); only `description` may hold newlines and tabs",
    ),
    lang("fabrik::spec::bad-path", "a pool path that is not absolute"),
    lang("fabrik::spec::reserved-pkey", "an InfiniBand partition key that is reserved (0x7fff, 0x8000)"),
    lang(
        "fabrik::spec::duplicate-name",
        "two objects of one kind with one name, in one file or across files (VM replicas count by their expanded names); both places are shown",
    ),
    lang("fabrik::spec::factory-mismatch", "two files give different `factory` names"),
    lang(
        "fabrik::spec::missing-factory",
        "`plan` or `apply` on a factory with no `factory` name: the name marks every object fabrik makes, so it is never guessed",
    ),
    lang(
        "fabrik::review::outside-tenant",
        "`validate --tenant` was given a changed file that is not that tenant's, or a tenant the factory does not declare (docs/security.md)",
    ),
    lang("fabrik::ref::unknown-host", "a tenant, network, pool or VM names a host that is not defined"),
    lang("fabrik::ref::unknown-tenant", "a VM or network names a tenant that is not defined"),
    lang("fabrik::ref::unknown-network", "a tenant, template or VM names a network that is not defined"),
    lang("fabrik::ref::unknown-template", "a VM names a template that is not defined"),
    lang("fabrik::ref::unknown-image", "a disk names an image that is not defined"),
    lang("fabrik::ref::unknown-pool", "an image or disk names a pool that is not defined"),
    lang("fabrik::ref::unknown-gpu", "a VM pins a GPU address its host does not declare"),
    lang("fabrik::ref::unused-nvlink-domain", "an NVLink domain is declared but no GPU names it (a misspelt name?)"),
    lang("fabrik::ref::gpu-pin-without-host", "a VM pins GPUs by address without naming its host"),
    lang(
        "fabrik::place::no-host",
        "no host can take a VM (CPUs, memory, hugepages, GPUs, MIG instances or its NUMA policy); the help says why for each host tried",
    ),
    lang(
        "fabrik::place::rail-vfs",
        "the multi-GPU VMs placed on a host take more SR-IOV VFs of a GPU's rail (one per GPU and InfiniBand partition) than the rail's `sriov-vfs`",
    ),
    lang("fabrik::graph::cycle", "resources of the desired state need each other to exist first"),
    lang("fabrik::graph::missing-dependency", "a resource needs another that nothing declares on its host"),
    lang(
        "fabrik::plan::name-clash",
        "an object of a name fabrik wants exists on the host and was not made by fabrik (or a pool differs in type or path); fabrik never overwrites it",
    ),
    lang(
        "fabrik::plan::other-factory",
        "an object of a name fabrik wants is marked by another factory; neither touches the other's",
    ),
    lang(
        "fabrik::plan::unreadable-host",
        "a host, or one of its concerns (libvirt, NVML, netlink), could not be read, so nothing is planned from it",
    ),
    lang(
        "fabrik::plan::renamed-volume",
        "a VM of this factory uses the volume an older fabrik named `<vm>-<disk>` for a disk whose name has a `-` (now `<vm>+<disk>`); the help gives the `volume` that keeps it",
    ),
    lang(
        "fabrik::plan::unknown-id",
        "a `--target`, `--exclude` or `--replace` id is malformed or names no resource of the factory (a usage error, exit 64, with the closest ids)",
    ),
    lang("fabrik::plan::created", "the record of what apply created (`created.json`) cannot be read"),
    lang("fabrik::plan::unreadable-object", "libvirt returned a definition fabrik cannot parse"),
    lang(
        "fabrik::plan::cannot-apply",
        "an action apply cannot carry out: `--replace` of a storage pool or a volume (they may hold data), or a deletion of what was not seen on its host",
    ),
    lang("fabrik::plan::missing-gpu", "a declared GPU is not on the host, or cannot do the MIG the factory asks of it"),
    lang(
        "fabrik::plan::missing-nic",
        "a NIC the factory relies on (SR-IOV VFs, a bridge's uplink, a network's physical function) is not on the host, or cannot do SR-IOV",
    ),
    lang(
        "fabrik::plan::partitions-file",
        "the subnet manager's partition file holds fabrik's block marker lines unpaired or twice, so fabrik cannot tell its block from the operator's lines",
    ),
    lang(
        "fabrik::plan::uplink-taken",
        "a bridge network's parent NIC is the port of another bridge the plan keeps, or of one fabrik does not own",
    ),
    lang(
        "fabrik::plan::iommu-group",
        "a passthrough GPU shares its IOMMU group (read from the host) with a device that is not given to the same VM; VFIO hands out whole groups only",
    ),
    lang(
        "fabrik::plan::in-use",
        "a network or bridge the factory no longer needs on a host still carries a domain or port this factory does not manage: its deletion is held back (listed as `held`), never carried out, until that user is detached",
    ),
    lang(
        "fabrik::plan::wrong-nic-kind",
        "an InfiniBand partition's physical function is not an InfiniBand NIC on the host",
    ),
];

/// The families of expert checks, in the order `docs/rules.md` lists them.
pub const FAMILIES: &[(&str, &str)] = &[
    ("mig", "MIG geometry: layouts that the GPU can really hold"),
    ("gpu", "Exclusive assignment: a GPU, MIG instance or VF goes to one VM"),
    ("numa", "NUMA alignment: CPUs, memory, hugepages and devices on one node"),
    ("host", "Hosts: the CPU architecture their VMs are rendered for"),
    ("fabric", "Fabric: NVLink domains and their partitions, the VXLAN underlay, and MTUs over the hosts' NICs"),
    ("capacity", "Capacity: what the hosts declare is enough for the VMs"),
    ("quota", "Quotas: tenants stay within their limits"),
    ("isolation", "Tenant isolation: hosts, networks and GPU sharing"),
    ("address", "Addresses: subnets, gateways, allocation ranges and the addresses of VM NICs"),
    ("params", "Template parameters: declared well, and given a valid value by every VM"),
    ("endpoint", "Service endpoints: reachable at an address of every VM that serves them"),
    ("image", "Images: what apply fetches is pinned by its SHA-256"),
    ("scope", "Scopes: a tenant's file declares only that tenant's VMs and templates"),
    ("trust", "Trust: what a factory can make fabrik run on the operator's machine"),
];

/// Every code fabrik can report.
pub fn all() -> impl Iterator<Item = &'static Rule> {
    LANGUAGE.iter().chain(super::CHECKS.iter().flat_map(|family| family.iter())).chain(drift::RULES)
}

pub fn find(code: &str) -> Option<&'static Rule> {
    let code = code.trim();
    all().find(|r| r.code == code || r.code.strip_prefix("fabrik::") == Some(code))
}

/// The page `fabrik explain` prints.
pub fn page(r: &Rule) -> String {
    let mut out = format!("{}\n\n{}\n", r.code, r.summary);
    if !r.protects.is_empty() {
        out.push_str(&format!("\nWhy it matters\n  {}\n", r.protects));
    }
    if !r.example.is_empty() {
        out.push_str("\nFails\n");
        for line in r.example.lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    if !r.fix.is_empty() {
        out.push_str(&format!("\nFix\n  {}\n", r.fix));
    }
    out
}

/// `docs/diagnostics.md`: the loading, language and reference codes.
pub fn diagnostics_markdown() -> String {
    let mut out = String::from(
        "# Diagnostics\n\n\
         Every problem fabrik finds in a factory is a diagnostic with a stable code, the file, line and \
         column it is about, and a `help:` line. Codes never change meaning; tools may match on them \
         (`fabrik validate --format json` carries them in `code`), and `fabrik explain CODE` prints an \
         entry. This page lists the codes of loading, the language and references; the expert checks \
         are in [rules.md](rules.md). Generated from `src/check/rules.rs`; do not edit by hand.\n",
    );
    for (prefix, title, note) in [
        ("fabrik::load::", "Loading", ""),
        ("fabrik::spec::", "The language", ""),
        (
            "fabrik::ref::",
            "References",
            "References are checked once every file decodes cleanly, so a typo in one place does not \
             cascade into unknown references elsewhere.\n\n",
        ),
        (
            "fabrik::review::",
            "Reviews",
            "`fabrik validate --tenant NAME --changed PATH…` checks a tenant's pull request ([security.md](security.md)).\n\n",
        ),
        (
            "fabrik::drift::",
            "Drift",
            "`fabrik inventory` compares each host's declared hardware with what the host reports.\n\n",
        ),
        ("fabrik::watch::", "Watch settings", "The factory's `watch:` section ([watch.md](watch.md)).\n\n"),
    ] {
        out.push_str(&format!("\n## {title}: `{prefix}*`\n\n{note}| code | meaning |\n|---|---|\n"));
        for r in all().filter(|r| r.code.starts_with(prefix)) {
            out.push_str(&format!("| `{}` | {} |\n", r.code, r.summary.replace('|', "\\|")));
        }
    }
    out
}

/// `docs/rules.md`: every expert check, by family.
pub fn rules_markdown() -> String {
    let mut out = String::from(
        "# Rules\n\nThe expert checks `fabrik validate` runs once a factory's files decode cleanly. \
         Generated from `src/check/rules.rs`; do not edit by hand. \
         `fabrik explain CODE` prints one entry.\n",
    );
    for (family, title) in FAMILIES {
        out.push_str(&format!("\n## {title}\n"));
        for r in all().filter(|r| r.code.split("::").nth(1) == Some(family)) {
            out.push_str(&format!("\n### `{}`\n\n{}\n", r.code, r.summary));
            if !r.protects.is_empty() {
                out.push_str(&format!("\n**Protects against:** {}\n", r.protects));
            }
            if !r.example.is_empty() {
                out.push_str(&format!("\n**Fails:**\n\n```yaml\n{}\n```\n", r.example.trim_end()));
            }
            if !r.fix.is_empty() {
                out.push_str(&format!("\n**Fix:** {}\n", r.fix));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for r in all() {
            assert!(seen.insert(r.code), "{} listed twice", r.code);
            let parts: Vec<&str> = r.code.split("::").collect();
            assert!(parts.len() == 3 && parts[0] == "fabrik", "{}", r.code);
            assert!(!r.summary.is_empty(), "{} has no summary", r.code);
        }
    }

    #[test]
    fn expert_rules_have_whole_pages() {
        for r in all().filter(|r| FAMILIES.iter().any(|(f, _)| r.code.split("::").nth(1) == Some(f))) {
            assert!(
                !r.protects.is_empty() && !r.example.is_empty() && !r.fix.is_empty(),
                "{} needs protects, example and fix",
                r.code
            );
        }
    }

    #[test]
    fn find_accepts_the_short_form() {
        assert_eq!(find("spec::unknown-key").map(|r| r.code), Some("fabrik::spec::unknown-key"));
        assert!(find("fabrik::nope::nothing").is_none());
    }
}
