//! What this host offers, as herzog's scheduler sees it.

use crate::Capacity;
use common::requests::LimitSupport;
use common::wire::Resources;
use std::path::Path;

/// Reads the host's CPUs (unless `capacity` names them), its CPU model and speed, memory and
/// the free space where `state_dir` lives.
/// `limits` is what this kinski's cgroups enforce.
pub(crate) fn probe(slots: u32, queue: u32, state_dir: &Path, capacity: Capacity, limits: LimitSupport) -> Resources {
    let cpus = capacity.cpus.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
    });
    let system = sysinfo::System::new().ok().map(|mut s| {
        s.refresh_memory();
        s.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing().with_frequency());
        s
    });
    let memory_bytes = system.as_ref().map_or(0, |s| s.total_memory());
    let (cpu_model, cpu_mhz) = system
        .as_ref()
        .and_then(|s| s.cpus().first().map(|c| (c.brand().trim().to_string(), c.frequency())))
        .unwrap_or_default();
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
        reserved_cpus: capacity.reserve_cpus,
        reserved_memory_bytes: capacity.reserve_memory_bytes,
        limits,
        cpu_model,
        cpu_mhz,
    }
}

/// This host's name, made safe as a worker name.
pub(crate) fn host_name() -> String {
    let raw = sysinfo::System::host_name().unwrap_or_else(|_| "worker".to_string());
    common::name::name_from_dir(Path::new(&raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_cpu_count_and_the_reserves_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let capacity = Capacity {
            cpus: Some(7),
            reserve_cpus: 1,
            reserve_memory_bytes: 1 << 30,
        };
        let r = probe(2, 64, dir.path(), capacity, LimitSupport::Cgroup1);
        assert_eq!((r.cpus, r.offered_cpus()), (7, 6));
        assert_eq!(r.reserved_memory_bytes, 1 << 30);
        assert_eq!(r.limits, LimitSupport::Cgroup1);
        assert!(r.memory_bytes > 1 << 30, "{r:?}");
        assert!(!r.cpu_model.is_empty(), "{r:?}");
        let host = probe(2, 64, dir.path(), Capacity::default(), LimitSupport::None);
        assert_eq!(host.cpus as usize, std::thread::available_parallelism().unwrap().get());
    }
}
