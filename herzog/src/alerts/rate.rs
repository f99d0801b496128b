//! The rate limit, pure (time is a value in milliseconds of a monotonic clock): at most one
//! message per key (event kind and subject) per window to one recipient. What arrives within
//! the window is held and folded into the next message, which goes when the window ends.
//! Also the retry schedule.

use std::collections::BTreeMap;
use std::time::Duration;

/// One key's state.
#[derive(Debug)]
struct Group<T> {
    /// When its last message went.
    last_sent: Option<u64>,
    /// What waits for the next message, oldest first.
    held: Vec<T>,
}

/// The keys of one recipient.
#[derive(Debug)]
pub(crate) struct Groups<K, T> {
    window_ms: u64,
    groups: BTreeMap<K, Group<T>>,
}

/// What one message carries: `items[..len - 1]` are folded into the last.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Batch<K, T> {
    pub(crate) key: K,
    pub(crate) items: Vec<T>,
}

impl<K: Ord + Clone, T> Groups<K, T> {
    pub(crate) fn new(window: Duration) -> Self {
        Groups {
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            groups: BTreeMap::new(),
        }
    }

    /// Holds `item` for the next message of `key`.
    pub(crate) fn add(&mut self, key: K, item: T) {
        self.groups
            .entry(key)
            .or_insert_with(|| Group {
                last_sent: None,
                held: Vec::new(),
            })
            .held
            .push(item);
    }

    fn due_at(&self, g: &Group<T>) -> u64 {
        g.last_sent.map_or(0, |t| t.saturating_add(self.window_ms))
    }

    /// Whether, at `now`, it holds nothing and no window is open: its recipient's task may end.
    pub(crate) fn is_idle(&mut self, now: u64) -> bool {
        self.forget_quiet(now);
        self.groups.is_empty()
    }

    /// Forgets the keys that hold nothing and whose window is over.
    fn forget_quiet(&mut self, now: u64) {
        let window = self.window_ms;
        self.groups
            .retain(|_, g| !g.held.is_empty() || g.last_sent.is_some_and(|t| now < t.saturating_add(window)));
    }

    /// When the next message may go (`None`: nothing waits).
    pub(crate) fn next_due(&self) -> Option<u64> {
        self.groups
            .values()
            .filter(|g| !g.held.is_empty())
            .map(|g| self.due_at(g))
            .min()
    }

    /// A message that may go at `now`: everything its key holds.
    pub(crate) fn take_due(&mut self, now: u64) -> Option<Batch<K, T>> {
        let key = self
            .groups
            .iter()
            .filter(|(_, g)| !g.held.is_empty() && self.due_at(g) <= now)
            .min_by_key(|(_, g)| self.due_at(g))
            .map(|(k, _)| k.clone())?;
        let g = self.groups.get_mut(&key).expect("found above");
        Some(Batch {
            key,
            items: std::mem::take(&mut g.held),
        })
    }

    /// `key`'s message went at `now`: the next waits a window.
    pub(crate) fn sent(&mut self, key: &K, now: u64) {
        if let Some(g) = self.groups.get_mut(key) {
            g.last_sent = Some(now);
        }
        // Quiet keys are forgotten once their window is over, so the map stays small.
        self.forget_quiet(now);
    }
}

/// The wait before retry `n` (from 1): 1 s, doubling, at most 5 minutes.
pub(crate) fn backoff(n: u32) -> Duration {
    let secs = 1u64.checked_shl(n.saturating_sub(1)).unwrap_or(u64::MAX);
    Duration::from_secs(secs.min(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    #[test]
    fn the_first_goes_at_once_and_a_storm_is_folded_into_one_per_window() {
        let mut g: Groups<&str, u32> = Groups::new(Duration::from_secs(60));
        g.add("web", 1);
        assert_eq!(g.next_due(), Some(0));
        let first = g.take_due(1_000).unwrap();
        assert_eq!(first.items, vec![1]);
        g.sent(&"web", 1_000);
        // Fourteen more within the minute: held, due when the window ends.
        for i in 2..16 {
            g.add("web", i);
        }
        assert_eq!(g.next_due(), Some(1_000 + MIN));
        assert_eq!(g.take_due(30_000), None);
        let second = g.take_due(1_000 + MIN).unwrap();
        assert_eq!(second.items, (2..16).collect::<Vec<_>>());
        g.sent(&"web", 1_000 + MIN);
        assert_eq!(g.next_due(), None);
    }

    #[test]
    fn keys_are_limited_apart() {
        let mut g: Groups<&str, u32> = Groups::new(Duration::from_secs(60));
        g.add("web", 1);
        let b = g.take_due(0).unwrap();
        g.sent(&b.key, 0);
        g.add("web", 2);
        g.add("db", 3);
        // db has sent nothing yet: it goes now, web waits.
        let b = g.take_due(10).unwrap();
        assert_eq!((b.key, b.items), ("db", vec![3]));
        g.sent(&"db", 10);
        assert_eq!(g.take_due(10), None);
        assert_eq!(g.next_due(), Some(MIN));
    }

    #[test]
    fn a_quiet_key_goes_at_once_again_after_its_window() {
        let mut g: Groups<&str, u32> = Groups::new(Duration::from_secs(60));
        g.add("web", 1);
        g.take_due(0).unwrap();
        g.sent(&"web", 0);
        g.add("web", 2);
        assert_eq!(g.take_due(MIN + 5).map(|b| b.items), Some(vec![2]));
        g.sent(&"web", MIN + 5);
        // Long after: forgotten, and the next goes at once.
        g.sent(&"other", 10 * MIN);
        g.add("web", 3);
        assert_eq!(g.next_due(), Some(0));
    }

    #[test]
    fn idle_once_nothing_is_held_and_the_last_window_is_over() {
        let mut g: Groups<&str, u32> = Groups::new(Duration::from_secs(60));
        assert!(g.is_idle(0));
        g.add("web", 1);
        assert!(!g.is_idle(0));
        g.take_due(0).unwrap();
        g.sent(&"web", 0);
        assert!(!g.is_idle(MIN - 1), "its window is open: a new one must wait");
        assert!(g.is_idle(MIN));
    }

    #[test]
    fn retries_back_off_to_five_minutes() {
        let waits: Vec<u64> = (1..=12).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff(200).as_secs(), 300);
    }
}
