//! Fuzzes the path checks: a name accepted as a child of a directory never leaves it, and a
//! path accepted as clean has no `..`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::{Component, Path};

fuzz_target!(|data: &[u8]| {
    let name = String::from_utf8_lossy(data);
    let base = Path::new("/base/dir");
    if let Ok(p) = common::paths::child(base, &name) {
        assert_eq!(p.parent(), Some(base), "{name:?} left its directory");
        assert!(common::paths::clean_absolute(&p).is_ok());
    }
    let path = Path::new(name.as_ref());
    if common::paths::clean_absolute(path).is_ok() {
        assert!(path.is_absolute());
        assert!(!path.components().any(|c| matches!(c, Component::ParentDir)));
    }
});
