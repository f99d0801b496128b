//! What this host offers, as herzog's scheduler sees it.

use common::wire::Resources;
use std::path::Path;

/// Reads the host's CPUs, memory and the free space where `state_dir` lives.
pub(crate) fn probe(slots: u32, queue: u32, state_dir: &Path) -> Resources {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let memory_bytes = sysinfo::System::new()
        .map(|mut s| {
            s.refresh_memory();
            s.total_memory()
        })
        .unwrap_or(0);
    let disk_free_bytes = sysinfo::Disks::new_with_refreshed_list()
        .ok()
        .and_then(|disks| {
            let dir = state_dir.canonicalize().unwrap_or_else(|_| state_dir.to_path_buf());
            disks
                .iter()
                .filter(|d| dir.starts_with(d.mount_point()))
                .max_by_key(|d| d.mount_point().as_os_str().len())
                .map(|d| d.available_space())
        })
        .unwrap_or(0);
    Resources {
        cpus,
        memory_bytes,
        disk_free_bytes,
        slots,
        queue,
        scratch_dir: None,
        ..Resources::default()
    }
}

/// This host's name, made safe as a worker name.
pub(crate) fn host_name() -> String {
    let raw = sysinfo::System::host_name().unwrap_or_else(|_| "worker".to_string());
    common::name::name_from_dir(Path::new(&raw))
}
