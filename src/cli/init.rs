//! `fabrik init [DIR]`: a small, valid starter factory to edit, and the JSON Schema beside
//! it so that an editor completes and checks keys from the first keystroke.

use std::path::{Path, PathBuf};

use super::exit;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to write the factory (created if missing; existing files are never overwritten).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The factory's name, carried by every ownership mark (default: the directory's name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

/// The file the editor reads the schema from; `factory.yaml`'s first line points at it.
pub const SCHEMA_FILE: &str = "fabrik.schema.json";
pub const FACTORY_FILE: &str = "factory.yaml";

/// The starter factory: one host, one tenant with a quota, its network and one VM.
pub fn starter(name: &str) -> String {
    format!(
        "# yaml-language-server: $schema={SCHEMA_FILE}
# A starter factory written by `fabrik init`. Check it with `fabrik validate`, see what
# it would change with `fabrik plan --sim` (simulated hosts), and read docs/language.md.
version: 1
factory: {name}

# The KVM hosts fabrik manages. `uri` is any libvirt URI (`qemu+ssh://root@gpu01/system`).
hosts:
  - name: kvm01
    uri: qemu:///system
    numa-nodes:
      - id: 0
        cpus: 0-15
        memory: 64GiB
    reserved-cpus: 0-1

# A tenant may use only its hosts and networks, within its quota.
tenants:
  - name: demo
    hosts: [kvm01]
    networks: [demo-net]
    quota:
      vcpus: 8
      memory: 16GiB
      vms: 2

networks:
  - name: demo-net
    purpose: tenant
    kind: bridge
    tenant: demo
    bridge: br-demo

vms:
  - name: demo-vm
    tenant: demo
    vcpus: 2
    memory: 4GiB
    nics: [demo-net]
"
    )
}

/// The factory name for a directory: its file name when that is a valid name.
pub fn default_name(dir: &Path) -> String {
    let from_dir = std::fs::canonicalize(dir)
        .ok()
        .or_else(|| Some(dir.to_path_buf()))
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
    match from_dir {
        Some(n) if valid_name(&n) => n,
        _ => "factory".to_string(),
    }
}

pub fn run(args: &Args) -> u8 {
    let name = args.name.clone().unwrap_or_else(|| default_name(&args.dir));
    if !valid_name(&name) {
        eprintln!(
            "error: `{name}` is not a valid factory name\n  help: use letters, digits, `-`, `_` and `.`, starting with a letter or digit"
        );
        return exit::USAGE;
    }
    let files = [(FACTORY_FILE, starter(&name)), (SCHEMA_FILE, super::schema::render_json() + "\n")];
    for (file, _) in &files {
        let path = args.dir.join(file);
        if path.exists() {
            eprintln!("error: {} exists already; fabrik init never overwrites a file", path.display());
            eprintln!("  help: run it in an empty directory, or remove the file first");
            return exit::INVALID;
        }
    }
    if let Err(e) = std::fs::create_dir_all(&args.dir) {
        eprintln!("error: cannot create {}: {e}", args.dir.display());
        return exit::INVALID;
    }
    for (file, text) in &files {
        let path = args.dir.join(file);
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return exit::INVALID;
        }
        eprintln!("wrote {}", path.display());
    }
    eprintln!("next: fabrik validate {}", args.dir.display());
    exit::OK
}

/// The decoder's rule for names (`Decoder::name`), for the default drawn from a directory.
fn valid_name(s: &str) -> bool {
    s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}
