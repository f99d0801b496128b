//! Fuzzes the cluster config parser: any input gives a config or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = common::config::ClusterConfig::parse(&text, std::path::Path::new("fuzz.toml"));
});
