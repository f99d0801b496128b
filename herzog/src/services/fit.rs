//! Services' requests (`cpus`, `mem`) against workers' capacity: an instance is placed only
//! on a worker whose offer, less what the services there ask for, holds it, preferring one
//! where the attempts it holds leave room too; what the placed instances ask for is taken
//! from what the scheduler packs attempts into. A service that declares neither takes
//! nothing, as before.

use super::Services;
use crate::scheduler::Size;
use common::services::ServiceSpec;
use std::collections::BTreeMap;

/// A connected worker as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Host {
    pub(crate) name: String,
    /// The CPUs and memory it offers.
    pub(crate) offer: Size,
    /// The most the attempts it holds use at once.
    pub(crate) attempts: Size,
}

impl Host {
    /// A worker with room for anything (tests of placement alone).
    #[cfg(test)]
    pub(crate) fn unlimited(name: &str) -> Host {
        Host {
            name: name.to_string(),
            offer: Size {
                cpus: u32::MAX,
                memory: u64::MAX,
            },
            attempts: Size::default(),
        }
    }

    /// Whether `need` fits beside services asking `used` here, and whether it also fits
    /// beside the attempts running here now.
    pub(crate) fn fits(&self, used: Size, need: Size) -> (bool, bool) {
        let left = Size {
            cpus: self.offer.cpus.saturating_sub(used.cpus),
            memory: self.offer.memory.saturating_sub(used.memory),
        };
        let now = Size {
            cpus: left.cpus.saturating_sub(self.attempts.cpus),
            memory: left.memory.saturating_sub(self.attempts.memory),
        };
        (need.within(left), need.within(now))
    }
}

/// What each instance of `spec` asks for: only what it declares.
pub(crate) fn request(spec: &ServiceSpec) -> Size {
    Size {
        cpus: spec.cpus.unwrap_or(0),
        memory: spec.mem.map_or(0, |m| m.as_u64()),
    }
}

impl Services {
    /// What the instances placed on each worker (and those still stopping there) ask for,
    /// by worker; workers whose services ask for nothing are left out.
    pub(crate) fn requested(&self) -> BTreeMap<String, Size> {
        let mut by: BTreeMap<String, Size> = BTreeMap::new();
        for (id, kept) in self.instances() {
            let Some(spec) = self.file().services.get(&id.service) else {
                continue;
            };
            let need = request(spec);
            if need == Size::default() {
                continue;
            }
            for p in kept.placed.iter().chain(kept.draining.iter()) {
                let s = by.entry(p.worker.clone()).or_default();
                s.cpus = s.cpus.saturating_add(need.cpus);
                s.memory = s.memory.saturating_add(need.memory);
            }
        }
        by
    }
}
