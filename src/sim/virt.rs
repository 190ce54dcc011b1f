//! The libvirt side of a twin: libvirt's `test:///` driver.

use std::path::Path;

use crate::driver::{DriverError, ErrorKind, Virt};
use crate::spec::model::Host;

/// Opens the twin's libvirt. Until the libvirt driver lands this says so plainly.
pub fn open(_dir: &Path, host: &Host) -> Result<Box<dyn Virt>, DriverError> {
    Err(DriverError::new(
        ErrorKind::Unsupported,
        format!("no simulated libvirt for `{}` in this build", host.name.value),
    ))
}
