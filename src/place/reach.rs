//! Which hosts a VM's networks and pools reach: a network or pool with `hosts` exists
//! only there, and a network with a `parent` only where the host declares that NIC.
//! Placement puts a VM only on a host they all reach, so the plan never needs a network
//! or volume that nothing declares on the VM's host.

use std::collections::{HashMap, HashSet};

use super::fit::Misfit;
use crate::spec::effective::Effective;
use crate::spec::model::{Image, Network, Spec};

/// The hosts of every network and pool that names some, by name, built once.
pub(super) struct Reach<'a> {
    spec: &'a Spec,
    networks: HashMap<&'a str, (&'a Network, Option<HashSet<usize>>)>,
    pools: HashMap<&'a str, HashSet<usize>>,
    images: HashMap<&'a str, &'a Image>,
}

impl<'a> Reach<'a> {
    pub(super) fn new(spec: &'a Spec, by_name: &HashMap<&str, usize>) -> Reach<'a> {
        let hosts = |names: &[crate::spec::source::Spanned<String>]| -> HashSet<usize> {
            names.iter().filter_map(|h| by_name.get(h.value.as_str()).copied()).collect()
        };
        let mut networks = HashMap::with_capacity(spec.networks.len());
        for n in &spec.networks {
            let on = (!n.hosts.is_empty()).then(|| hosts(&n.hosts));
            networks.entry(n.name.value.as_str()).or_insert((n, on));
        }
        let mut pools = HashMap::new();
        for p in spec.pools.iter().filter(|p| !p.hosts.is_empty()) {
            pools.entry(p.name.value.as_str()).or_insert_with(|| hosts(&p.hosts));
        }
        let mut images = HashMap::with_capacity(spec.images.len());
        for i in &spec.images {
            images.entry(i.name.value.as_str()).or_insert(i);
        }
        Reach { spec, networks, pools, images }
    }

    /// Whether host `h` has every network and pool the VM uses; the first that is
    /// missing otherwise.
    pub(super) fn check(&self, e: &Effective<'_>, h: usize) -> Result<(), Misfit> {
        let host = &self.spec.hosts[h];
        for nic in e.nic_list() {
            let Some((net, on)) = self.networks.get(nic.network.value.as_str()) else { continue };
            if on.as_ref().is_some_and(|on| !on.contains(&h)) {
                return Err(Misfit::NotOnHost { what: "network", name: net.name.value.clone() });
            }
            if let Some(parent) = &net.parent
                && !host.nics.iter().any(|n| n.name.value == parent.value)
            {
                return Err(Misfit::NoParent { network: net.name.value.clone(), parent: parent.value.clone() });
            }
        }
        for disk in e.disks().map(Vec::as_slice).unwrap_or_default() {
            let image = disk.image.as_ref().and_then(|i| self.images.get(i.value.as_str()));
            let pools =
                disk.pool.as_ref().map(|p| p.value.as_str()).into_iter().chain(image.map(|i| i.pool.value.as_str()));
            for pool in pools {
                if self.pools.get(pool).is_some_and(|on| !on.contains(&h)) {
                    return Err(Misfit::NotOnHost { what: "pool", name: pool.to_string() });
                }
            }
        }
        Ok(())
    }
}
