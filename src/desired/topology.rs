//! The host's NUMA topology mirrored into a guest beyond its CPU cells: CPU-less cells
//! for the GPU memory of the VM's GPUs (GB200), and distances between cells.
//!
//! On a GB200 host each GPU's HBM is a NUMA node without CPUs; the driver onlines it as
//! system memory and in-guest MIG places its instances' memory on such nodes. A VM given
//! the GPU gets a guest cell of no vCPUs and no guest RAM for each of the GPU's memory
//! nodes, so the guest kernel has the node ids to online that memory into (as KubeVirt's
//! and virt-manager's GB200 work do).

use crate::desired::GuestCell;
use crate::spec::model::Host;
use crate::spec::types::{ByteSize, CpuSet, PciAddress};

/// Distance of a node to itself, as ACPI's SLIT and Linux define it.
const LOCAL_DISTANCE: u32 = 10;

/// Appends a memory-only cell for every host node declared as the memory of one of
/// `gpus`, numbered after the CPU cells, in host node order.
pub fn add_memory_cells(host: &Host, gpus: impl Iterator<Item = PciAddress>, cells: &mut Vec<GuestCell>) {
    let gpus: Vec<PciAddress> = gpus.collect();
    let mut nodes: Vec<u32> = host
        .numa_nodes
        .iter()
        .filter(|n| n.gpu.as_ref().is_some_and(|g| gpus.contains(&g.value)))
        .map(|n| n.id.value)
        .collect();
    nodes.sort_unstable();
    for node in nodes {
        let id = cells.len() as u32;
        cells.push(GuestCell {
            id,
            vcpus: CpuSet::default(),
            memory: ByteSize(0),
            host_node: node,
            distances: Vec::new(),
        });
    }
}

/// Gives every cell its distances to the others from the host nodes they mirror, when
/// the host declares a distance row for each of those nodes; otherwise none.
pub fn add_distances(host: &Host, cells: &mut [GuestCell]) {
    let row = |node: u32| {
        host.numa_nodes.iter().find(|n| n.id.value == node).and_then(|n| n.distances.as_ref()).map(|d| &d.value)
    };
    let mut table = Vec::with_capacity(cells.len());
    for cell in cells.iter() {
        let Some(r) = row(cell.host_node) else { return };
        let mut out = Vec::with_capacity(cells.len());
        for other in cells.iter() {
            let d = if other.id == cell.id {
                LOCAL_DISTANCE
            } else {
                match r.get(other.host_node as usize) {
                    Some(&d) => d,
                    None => return,
                }
            };
            out.push(d);
        }
        table.push(out);
    }
    for (cell, d) in cells.iter_mut().zip(table) {
        cell.distances = d;
    }
}
