//! sysfs: SR-IOV VF counts of NICs and hugepage pools per NUMA node. Every function
//! takes the sysfs root, so a namespace's own sysfs (or a test's tree) can stand in.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::socket::errno_error;
use crate::driver::{DriverError, ErrorKind, Result};
use crate::live::LiveHugepages;
use crate::spec::types::PageSize;

fn read_number(path: &Path) -> io::Result<u64> {
    let text = fs::read_to_string(path)?;
    text.trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("`{}` is not a number", text.trim())))
}

fn io_error(e: io::Error, what: String) -> DriverError {
    match e.raw_os_error() {
        Some(raw) => errno_error(Errno::from_raw(raw), format!("{what}: {e}")),
        None => DriverError::new(ErrorKind::Failed, format!("{what}: {e}")),
    }
}

/// Where a NIC's VFs sit on PCI: its PCI address (the `device` link) and the VF offset
/// and stride; `None` without SR-IOV or on a device that is not PCI.
pub(super) fn sriov_pci(sysfs: &Path, nic: &str) -> Option<crate::live::SriovPci> {
    let device = sysfs.join("class/net").join(nic).join("device");
    let target = fs::read_link(&device).ok()?;
    let pf = crate::spec::types::PciAddress::parse(target.file_name()?.to_str()?).ok()?;
    let offset = u16::try_from(read_number(&device.join("sriov_offset")).ok()?).ok()?;
    let stride = u16::try_from(read_number(&device.join("sriov_stride")).ok()?).ok()?;
    Some(crate::live::SriovPci { pf, offset, stride })
}

/// The VFs configured on a NIC, or `None` when it has no SR-IOV capability.
pub(super) fn sriov_vfs(sysfs: &Path, nic: &str) -> Option<u32> {
    let path = sysfs.join("class/net").join(nic).join("device/sriov_numvfs");
    read_number(&path).ok().and_then(|n| u32::try_from(n).ok())
}

/// Sets a NIC's VF count. The kernel changes it only from or to 0, so a change between
/// two non-zero counts is refused here rather than silently removing the VFs in use.
pub(super) fn set_sriov_vfs(sysfs: &Path, nic: &str, count: u32) -> Result<()> {
    let netdev = sysfs.join("class/net").join(nic);
    if !netdev.exists() {
        return Err(DriverError::new(ErrorKind::NotFound, format!("link `{nic}` does not exist")));
    }
    let path = netdev.join("device/sriov_numvfs");
    let current = match read_number(&path) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(DriverError::new(
                ErrorKind::Unsupported,
                format!("link `{nic}` has no SR-IOV capability (no sriov_numvfs in sysfs)"),
            ));
        }
        Err(e) => return Err(io_error(e, format!("reading the VF count of `{nic}`"))),
    };
    check_sriov_change(nic, current, count, read_number(&netdev.join("device/sriov_totalvfs")).ok())?;
    if current == u64::from(count) {
        return Ok(());
    }
    fs::write(&path, format!("{count}\n")).map_err(|e| io_error(e, format!("setting {count} VFs on `{nic}`")))
}

/// The rules the kernel applies to a VF count change, shared with the simulated links.
pub fn check_sriov_change(nic: &str, current: u64, count: u32, total: Option<u64>) -> Result<()> {
    if let Some(total) = total.filter(|&t| u64::from(count) > t) {
        return Err(DriverError::new(
            ErrorKind::Refused,
            format!("link `{nic}` supports at most {total} VFs, not {count}"),
        )
        .with_code("ERANGE"));
    }
    if current != 0 && count != 0 && current != u64::from(count) {
        return Err(DriverError::new(
            ErrorKind::Refused,
            format!(
                "link `{nic}` has {current} VFs; the kernel changes the count only from or to 0 \
                 (set 0 first, which removes the VFs)"
            ),
        )
        .with_code("EBUSY"));
    }
    Ok(())
}

fn size_of_dir(name: &str) -> Option<PageSize> {
    match name.strip_prefix("hugepages-")?.strip_suffix("kB")? {
        "2048" => Some(PageSize::Size2M),
        "1048576" => Some(PageSize::Size1G),
        _ => None,
    }
}

fn dir_of_size(size: PageSize) -> &'static str {
    match size {
        PageSize::Size2M => "hugepages-2048kB",
        PageSize::Size1G => "hugepages-1048576kB",
    }
}

/// The hugepage directories of each NUMA node; a kernel without NUMA has only the
/// global pools, reported as node 0.
fn node_dirs(sysfs: &Path) -> Vec<(u32, PathBuf)> {
    let mut nodes: Vec<(u32, PathBuf)> = fs::read_dir(sysfs.join("devices/system/node"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let id = name.to_str()?.strip_prefix("node")?.parse().ok()?;
            Some((id, entry.path().join("hugepages")))
        })
        .collect();
    if nodes.is_empty() {
        nodes.push((0, sysfs.join("kernel/mm/hugepages")));
    }
    nodes.sort();
    nodes
}

pub(super) fn hugepages(sysfs: &Path) -> Result<Vec<LiveHugepages>> {
    let mut pools = Vec::new();
    for (numa_node, dir) in node_dirs(sysfs) {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Some(size) = entry.file_name().to_str().and_then(size_of_dir) else { continue };
            let read = |file: &str| {
                read_number(&entry.path().join(file))
                    .map_err(|e| io_error(e, format!("reading {file} of {size} hugepages on node {numa_node}")))
            };
            pools.push(LiveHugepages { numa_node, size, total: read("nr_hugepages")?, free: read("free_hugepages")? });
        }
    }
    pools.sort_by_key(|p| (p.numa_node, p.size.size()));
    Ok(pools)
}

/// Sets a node's pool and reads it back: the kernel allocates what it can and says
/// nothing, so a short allocation is an error here.
pub(super) fn set_hugepages(sysfs: &Path, numa_node: u32, size: PageSize, count: u64) -> Result<()> {
    let Some((_, dir)) = node_dirs(sysfs).into_iter().find(|(id, _)| *id == numa_node) else {
        return Err(DriverError::new(ErrorKind::NotFound, format!("NUMA node {numa_node} does not exist")));
    };
    let pool = dir.join(dir_of_size(size));
    if !pool.exists() {
        return Err(DriverError::new(
            ErrorKind::Unsupported,
            format!("the kernel has no {size} hugepages on node {numa_node} (no {} in sysfs)", pool.display()),
        ));
    }
    let path = pool.join("nr_hugepages");
    let what = || format!("setting {count} {size} hugepages on node {numa_node}");
    fs::write(&path, format!("{count}\n")).map_err(|e| io_error(e, what()))?;
    let got = read_number(&path).map_err(|e| io_error(e, what()))?;
    if got != count {
        return Err(DriverError::new(
            ErrorKind::Refused,
            format!("{}: the kernel allocated {got} (not enough free contiguous memory)", what()),
        )
        .with_code("ENOMEM"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn hugepages_are_read_per_node_and_size() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(r, "devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages", "8\n");
        write(r, "devices/system/node/node1/hugepages/hugepages-2048kB/free_hugepages", "6\n");
        write(r, "devices/system/node/node0/hugepages/hugepages-1048576kB/nr_hugepages", "2\n");
        write(r, "devices/system/node/node0/hugepages/hugepages-1048576kB/free_hugepages", "2\n");
        write(r, "devices/system/node/node0/hugepages/hugepages-64kB/nr_hugepages", "1\n");
        let pools = hugepages(r).unwrap();
        let brief: Vec<_> = pools.iter().map(|p| (p.numa_node, p.size, p.total, p.free)).collect();
        assert_eq!(brief, vec![(0, PageSize::Size1G, 2, 2), (1, PageSize::Size2M, 8, 6)]);

        set_hugepages(r, 1, PageSize::Size2M, 16).unwrap();
        assert_eq!(
            read_number(&r.join("devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages")).unwrap(),
            16
        );
        assert_eq!(set_hugepages(r, 3, PageSize::Size2M, 1).unwrap_err().kind, ErrorKind::NotFound);
        assert_eq!(set_hugepages(r, 1, PageSize::Size1G, 1).unwrap_err().kind, ErrorKind::Unsupported);
    }

    #[test]
    fn a_kernel_without_numa_reports_node_0() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), "kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "4\n");
        write(root.path(), "kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "4\n");
        assert_eq!(hugepages(root.path()).unwrap()[0].numa_node, 0);
    }

    #[test]
    fn sriov_counts_change_only_through_zero() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(r, "class/net/eth0/device/sriov_numvfs", "0\n");
        write(r, "class/net/eth0/device/sriov_totalvfs", "8\n");
        fs::create_dir_all(r.join("class/net/veth0")).unwrap();
        assert_eq!(sriov_vfs(r, "eth0"), Some(0));
        assert_eq!(sriov_vfs(r, "veth0"), None);
        set_sriov_vfs(r, "eth0", 4).unwrap();
        assert_eq!(sriov_vfs(r, "eth0"), Some(4));
        set_sriov_vfs(r, "eth0", 4).unwrap();
        assert_eq!(set_sriov_vfs(r, "eth0", 2).unwrap_err().kind, ErrorKind::Refused);
        assert_eq!(set_sriov_vfs(r, "eth0", 9).unwrap_err().kind, ErrorKind::Refused);
        assert_eq!(set_sriov_vfs(r, "veth0", 1).unwrap_err().kind, ErrorKind::Unsupported);
        assert_eq!(set_sriov_vfs(r, "eth9", 1).unwrap_err().kind, ErrorKind::NotFound);
    }
}
