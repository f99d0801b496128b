//! Requests in the machine: whether a project's attempts can fit any worker (refused at `hz
//! action`, else held with the reason), and what `hz progress` warns of (requests not
//! enforced where they run). The packing itself is the scheduler's ([`crate::scheduler`]).

use super::*;

/// What a worker's attempts may use: what it offers less its services' requests.
pub(super) fn room(offer: Size, services: Option<&Size>) -> Size {
    let s = services.copied().unwrap_or_default();
    Size {
        cpus: offer.cpus.saturating_sub(s.cpus),
        memory: offer.memory.saturating_sub(s.memory),
    }
}

impl Machine {
    /// The workers that ever registered (a placeholder restored from a running attempt has
    /// no slots and is not one).
    fn registered(&self) -> impl Iterator<Item = &Worker> {
        self.workers.values().filter(|w| w.resources.slots > 0)
    }

    /// Why attempts of `size` fit no registered worker, when none can ever hold them:
    /// the largest worker's figures (largest in what falls short: CPUs unless some worker has
    /// enough of them, then memory), or `None` while no worker has registered.
    fn no_worker_fits(&self, size: Size) -> Option<Result<(), ApiError>> {
        if self
            .registered()
            .any(|w| w.resources.slots > 0 && size.within(w.offer()))
        {
            return Some(Ok(()));
        }
        let cpus_enough = self.registered().any(|w| w.offer().cpus >= size.cpus);
        let largest = self.registered().max_by(|a, b| {
            let (x, y) = (a.offer(), b.offer());
            let key = |s: Size| {
                if cpus_enough {
                    (s.memory, u64::from(s.cpus))
                } else {
                    (u64::from(s.cpus), s.memory)
                }
            };
            // Ties to the first name.
            key(x).cmp(&key(y)).then(b.name.cmp(&a.name))
        })?;
        Some(Err(ApiError::NoWorkerFits {
            request: size.show(),
            largest: largest.offer().show_offer(),
            worker: largest.name.clone(),
        }))
    }

    /// `hz action`: a project whose attempts fit no registered worker is refused; with no
    /// worker registered yet it is accepted (and held until one can fit it).
    pub(super) fn check_fits(&self, spec: &RunSpec) -> Result<(), ApiError> {
        self.no_worker_fits(Size::of(&spec.requests)).unwrap_or(Ok(()))
    }

    /// Why `p` waits for a worker that can hold its attempts, if it does.
    pub(super) fn waits_for_fit(&self, p: &Project) -> Option<String> {
        let size = Size::of(&p.spec.requests);
        match self.no_worker_fits(size) {
            Some(Ok(())) => self.services_leave_too_little(size),
            Some(Err(e)) => Some(format!("waiting: {e}")),
            None => Some(format!(
                "waiting: no worker can fit {}: none has registered",
                size.show()
            )),
        }
    }

    /// Why attempts of `size`, which fit some worker's offer, fit no worker beside the
    /// services placed there: the worker with the most room left, if none can.
    fn services_leave_too_little(&self, size: Size) -> Option<String> {
        let services = self.services.requested();
        let rooms: Vec<(&Worker, Size)> = self
            .registered()
            .map(|w| (w, room(w.offer(), services.get(w.name.as_str()))))
            .collect();
        if rooms.iter().any(|(_, r)| size.within(*r)) {
            return None;
        }
        // Ties to the first name.
        let (most, left) = rooms
            .iter()
            .max_by(|(a, x), (b, y)| (x.cpus, x.memory).cmp(&(y.cpus, y.memory)).then(b.name.cmp(&a.name)))?;
        Some(format!(
            "waiting: no worker can fit {} beside its services: the most room is {} ({})",
            size.show(),
            left.show_offer(),
            most.name
        ))
    }

    /// What `hz progress` warns of for `p`: its CPU or memory requests are not enforced on
    /// the workers that run its attempts without limits.
    pub(super) fn warnings(&self, p: &Project) -> Vec<String> {
        let r = &p.spec.requests;
        if r.cpus.is_none() && r.memory_bytes.is_none() {
            return Vec::new();
        }
        let mut on: BTreeMap<&str, u64> = BTreeMap::new();
        for w in self.workers.values() {
            if w.resources.limits != common::requests::LimitSupport::None {
                continue;
            }
            let n = w
                .running
                .iter()
                .filter(|a| self.live.get(a).is_some_and(|l| l.project == p.id))
                .count() as u64;
            if n > 0 {
                on.insert(w.name.as_str(), n);
            }
        }
        on.into_iter()
            .map(|(worker, n)| {
                format!(
                    "{} on {worker}, whose kinski enforces no limits (limits: none): its --cpus and --mem only pack there",
                    common::count(n, "attempt")
                )
            })
            .collect()
    }
}
