//! Rebuilds herzog when a migration is added or changed (include_dir does not tell cargo).

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
