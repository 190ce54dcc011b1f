//! Desired resources → libvirt XML, and libvirt XML → a canonical form for comparison.
//!
//! Rendering is pure and deterministic: the same desired value always gives the same
//! bytes, so a rendered document can be hashed, snapshot-tested and diffed. Every object
//! carries fabrik's ownership mark ([`crate::driver::libvirt::owner`]). [`normalize`]
//! brings a rendered document and the one libvirt returns for it to the same canonical
//! text, so that a diff of the two shows only real changes, never libvirt's defaults.

pub mod domain;
pub mod network;
pub mod normalize;
pub mod opensm;
pub mod storage;
mod xml;

pub use domain::domain;
pub use network::network;
pub use storage::{pool, volume};

use serde::Serialize;

/// A stable hash of a desired value, for the ownership mark of objects whose desired
/// type has no `spec_hash` of its own (networks). FNV-1a over the value's JSON: not
/// cryptographic, it only tells "rendered from the same desired value" apart.
pub fn spec_hash(value: &impl Serialize) -> String {
    crate::hash::fingerprint(value)
}
