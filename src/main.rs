//! The `fabrik` binary: see `fabrik::cli`.

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    fabrik::cli::main()
}
