//! The kinski binary prints its help.
//!
//! Being an integration test of this package, this file makes `cargo test` build the kinski
//! binary, which the `tests` crate starts; the binary's refusals of bad input are tested
//! there (tests/tests/daemon_cli.rs).

use std::process::Command;

#[test]
fn help_names_the_exit_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_kinski"))
        .arg("--help")
        .output()
        .expect("kinski runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Exit codes"), "{text}");
}
