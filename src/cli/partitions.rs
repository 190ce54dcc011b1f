//! `fabrik partitions`: the InfiniBand partition membership of a factory as OpenSM's
//! `partitions.conf`, for the subnet manager (see docs/hardware.md).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::exit;
use crate::check;
use crate::diag::render;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A factory file, or a directory of them.
    #[arg(default_value = ".", env = "FABRIK_FACTORY")]
    pub path: PathBuf,
}

pub fn run(args: &Args) -> u8 {
    match partitions_text(&args.path) {
        Ok(text) => {
            super::out::print(&text);
            exit::OK
        }
        Err(text) => {
            let _ = std::io::stderr().write_all(text.as_bytes());
            exit::INVALID
        }
    }
}

/// The `partitions.conf` text, or the diagnostics (rendered) that stopped it.
pub fn partitions_text(path: &Path) -> Result<String, String> {
    let v = check::validate(path);
    let style = super::style_for_stderr();
    if !v.is_valid() {
        return Err(super::validate::human(&v, path, style));
    }
    let desired = crate::desired::build(&v.spec)
        .map_err(|diags| diags.iter().map(|d| render::human(d, &v.sources, style) + "\n").collect::<String>())?;
    Ok(crate::render::opensm::partitions_conf(&desired))
}
