//! What an attempt asks of a worker and what a worker's attempts hold, and whether one more
//! fits: pure arithmetic the scheduler and the machine share.
//!
//! A worker runs at most `slots` of the attempts herzog dispatched to it at once (the rest
//! wait in its queue of starts and run as slots free up, in an order herzog does not control).
//! So herzog admits a start only if *any* `slots` of the attempts it then holds fit together:
//! the `slots` largest requests (CPUs, and separately memory) must fit what it offers. A
//! queued start thus holds its request too whenever it is among the largest, and a queue of
//! equal requests is free as long as `slots` of them fit (the common case: 1 CPU each and no
//! more slots than CPUs), so short attempts keep the queue that hides herzog's round trip.

use std::collections::BTreeMap;

/// What one attempt packs by: whole CPUs and bytes of memory (0: none asked for).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Size {
    pub(crate) cpus: u32,
    pub(crate) memory: u64,
}

impl Size {
    /// What the requests of a project's attempt pack by (1 CPU when none was asked for).
    pub(crate) fn of(r: &common::requests::Requests) -> Size {
        Size {
            cpus: r.packing_cpus(),
            memory: r.packing_memory(),
        }
    }

    /// Whether it fits in `room` alone.
    pub(crate) fn within(self, room: Size) -> bool {
        self.cpus <= room.cpus && self.memory <= room.memory
    }

    /// `8 CPUs / 64 GiB` (memory left out when none is asked for).
    pub(crate) fn show(self) -> String {
        let cpus = common::count(u64::from(self.cpus), "CPU");
        if self.memory == 0 {
            cpus
        } else {
            format!("{cpus} / {}", common::requests::show_bytes(self.memory))
        }
    }

    /// `4 CPUs / 16 GiB`, always both: what a worker offers.
    pub(crate) fn show_offer(self) -> String {
        format!(
            "{} / {}",
            common::count(u64::from(self.cpus), "CPU"),
            common::requests::show_bytes(self.memory)
        )
    }
}

/// The requests of the attempts a worker holds (running and queued), as two multisets
/// (value → how many), so the largest few are read in O(distinct values).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Held {
    cpus: BTreeMap<u32, u32>,
    /// Requests of 0 bytes are not kept: they add nothing.
    memory: BTreeMap<u64, u32>,
    count: u32,
    /// The sums of all its requests.
    total: (u64, u128),
}

impl Held {
    /// Nothing held.
    pub(crate) const fn new() -> Held {
        Held {
            cpus: BTreeMap::new(),
            memory: BTreeMap::new(),
            count: 0,
            total: (0, 0),
        }
    }

    /// Holds one more attempt of `size`.
    pub(crate) fn add(&mut self, size: Size) {
        *self.cpus.entry(size.cpus).or_default() += 1;
        if size.memory > 0 {
            *self.memory.entry(size.memory).or_default() += 1;
        }
        self.count += 1;
        self.total.0 += u64::from(size.cpus);
        self.total.1 += u128::from(size.memory);
    }

    /// Lets go of one attempt of `size` (one it holds).
    pub(crate) fn remove(&mut self, size: Size) {
        fn dec<K: Ord>(map: &mut BTreeMap<K, u32>, k: K) {
            if let Some(n) = map.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&k);
                }
            }
        }
        dec(&mut self.cpus, size.cpus);
        if size.memory > 0 {
            dec(&mut self.memory, size.memory);
        }
        self.count = self.count.saturating_sub(1);
        self.total.0 = self.total.0.saturating_sub(u64::from(size.cpus));
        self.total.1 = self.total.1.saturating_sub(u128::from(size.memory));
    }

    /// How many attempts it holds.
    #[cfg(test)]
    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    /// The most `slots` of its attempts, with `extra` among them when given, use at once:
    /// the sum of the `slots` largest CPU requests and, separately, memory requests.
    pub(crate) fn peak(&self, slots: u32, extra: Option<Size>) -> (u64, u128) {
        (
            top(&self.cpus, slots, extra.map(|e| e.cpus)) as u64,
            top(&self.memory, slots, extra.map(|e| e.memory).filter(|m| *m > 0)),
        )
    }

    /// Whether one more attempt of `size` fits with these in `room` on `slots` slots.
    pub(crate) fn fits(&self, slots: u32, room: Size, size: Size) -> bool {
        if slots == 0 || !size.within(room) {
            return false;
        }
        let (cpus, memory) = self.peak(slots, Some(size));
        cpus <= u64::from(room.cpus) && memory <= u128::from(room.memory)
    }

    /// How far one more of `size` is from fitting in `room`: 0 when it fits, else what must
    /// end first, as the sum over CPUs and memory of what is missing with every attempt it
    /// holds (queued ones too: they run before it) as a part of what is offered.
    pub(crate) fn shortfall(&self, slots: u32, room: Size, size: Size) -> f64 {
        if self.fits(slots, room, size) {
            return 0.0;
        }
        let cpus = self.total.0 + u64::from(size.cpus);
        let memory = self.total.1 + u128::from(size.memory);
        let part = |need: f64, have: f64| {
            if need <= have {
                0.0
            } else {
                (need - have) / have.max(1.0)
            }
        };
        part(cpus as f64, f64::from(room.cpus)) + part(memory as f64, room.memory as f64)
    }
}

/// The sum of the `n` largest of `map` (value → count) and `extra`.
fn top<K: Copy + Ord + Into<u128>>(map: &BTreeMap<K, u32>, n: u32, mut extra: Option<K>) -> u128 {
    let mut left = n;
    let mut sum: u128 = 0;
    for (&v, &count) in map.iter().rev() {
        if left == 0 {
            break;
        }
        if let Some(e) = extra
            && e >= v
        {
            sum += e.into();
            left -= 1;
            extra = None;
        }
        let take = count.min(left);
        sum += v.into() * u128::from(take);
        left -= take;
    }
    if left > 0
        && let Some(e) = extra
    {
        sum += e.into();
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: Size = Size { cpus: 1, memory: 0 };

    fn room(cpus: u32, gib: u64) -> Size {
        Size {
            cpus,
            memory: gib << 30,
        }
    }

    #[test]
    fn a_queue_of_equal_requests_is_free_while_the_slots_fit() {
        let mut h = Held::default();
        for _ in 0..10 {
            assert!(h.fits(2, room(2, 1), ONE));
            h.add(ONE);
        }
        // Two CPUs for two slots: a 2-CPU attempt would run beside one of them.
        assert!(!h.fits(2, room(2, 1), Size { cpus: 2, memory: 0 }));
        // Fewer CPUs than slots: only as many as the CPUs.
        let mut h = Held::default();
        h.add(ONE);
        assert!(!h.fits(2, room(1, 1), ONE));
    }

    #[test]
    fn the_largest_requests_are_what_count() {
        let mut h = Held::default();
        h.add(Size {
            cpus: 1,
            memory: 1 << 30,
        });
        h.add(Size { cpus: 3, memory: 0 });
        h.add(ONE);
        assert_eq!(h.peak(2, None), (4, 1 << 30));
        assert_eq!(
            h.peak(
                2,
                Some(Size {
                    cpus: 2,
                    memory: 2 << 30
                })
            ),
            (5, 3 << 30)
        );
        assert_eq!(h.peak(5, None), (5, 1 << 30));
        h.remove(Size { cpus: 3, memory: 0 });
        assert_eq!(h.peak(2, None), (2, 1 << 30));
        assert_eq!(h.count(), 2);
        assert!(h.fits(
            2,
            room(4, 2),
            Size {
                cpus: 3,
                memory: 1 << 30
            }
        ));
        assert!(!h.fits(
            2,
            room(4, 2),
            Size {
                cpus: 3,
                memory: (1 << 30) + 1
            }
        ));
        assert!(!Held::default().fits(0, room(4, 2), ONE), "no slots, no start");
    }

    #[test]
    fn shortfall_is_zero_where_it_fits_and_grows_with_what_is_missing() {
        let mut h = Held::default();
        h.add(ONE);
        let two = Size { cpus: 2, memory: 0 };
        assert_eq!(h.shortfall(2, room(4, 1), two), 0.0);
        assert_eq!(h.shortfall(2, room(2, 1), two), 0.5);
        h.add(ONE);
        assert_eq!(h.shortfall(2, room(2, 1), two), 1.0, "both must end");
        assert_eq!(h.shortfall(3, room(2, 1), two), 1.0);
        assert_eq!(two.show(), "2 CPUs");
        assert_eq!(room(4, 16).show_offer(), "4 CPUs / 16 GiB");
    }
}
