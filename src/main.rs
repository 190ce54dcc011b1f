//! The `fabrik` binary: see `fabrik::cli`.
//!
//! Its allocator is mimalloc: planning allocates and frees many small strings and trees
//! per VM, and at 10,000 hosts mimalloc plans in 10–20% less time and ~10% less memory than
//! glibc's malloc (docs/bench.md). It is built without transparent huge pages
//! (`no_thp`, Cargo.toml) and two of its options are set before anything else runs, so
//! that memory fabrik frees goes back to the system as with glibc's malloc: with
//! mimalloc's defaults an `apply --sim` of 1,000 hosts, whose threads free what others
//! allocated, peaked at ~1.1 GiB instead of ~470 MiB.

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` and `mi_option_purge_delay` in mimalloc 3.x's
/// `mi_option_t` (libmimalloc-sys is pinned in Cargo.toml for these numbers).
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> std::process::ExitCode {
    // SAFETY: setting an option is a plain store mimalloc reads on its next use; nothing
    // else runs yet.
    unsafe {
        // Commit arena memory as it is used, not a whole arena at once.
        libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
        // Give freed pages back at once (the default waits 1 s).
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
    }
    fabrik::cli::main()
}
