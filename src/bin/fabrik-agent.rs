//! `fabrik-agent`: what `fabrik agent` does (serve this host's GPUs and links over
//! stdin/stdout, see `fabrik::driver::agent`), as a binary of its own that does not load
//! libvirt. The agent never calls libvirt, but `fabrik` links it, and every start of
//! `fabrik` resolves the symbols of the ≈57 libraries libvirt brings (libvirt.so is
//! bound at load time): ≈7 ms of CPU for each agent a plan or apply starts. This binary
//! takes the same arguments as `fabrik agent` and speaks the same protocol.

use clap::Parser;

/// Serve this host's GPUs (NVML) and links (netlink) over stdin/stdout for a fabrik on
/// another machine; the same as `fabrik agent`.
#[derive(Parser, Debug)]
#[command(name = "fabrik-agent", version = env!("FABRIK_VERSION"))]
struct Cli {
    #[command(flatten)]
    args: fabrik::cli::agent::Args,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    std::process::ExitCode::from(fabrik::cli::agent::run(&cli.args))
}
