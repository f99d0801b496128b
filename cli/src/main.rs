//! The `hz` binary: everything lives in the `cli` library.

fn main() -> std::process::ExitCode {
    cli::main()
}
