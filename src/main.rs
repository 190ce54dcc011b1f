//! The `fabrik` binary: see `fabrik::cli`.

fn main() -> std::process::ExitCode {
    fabrik::cli::main()
}
