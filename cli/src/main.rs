//! The `hz` binary: everything lives in the `cli` library.

/// jemalloc, as herzog's binary: `hz local` runs herzog and kinski in this process.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
