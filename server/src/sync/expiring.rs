//! What a pull-through route remembers between pulls (when a tag was last checked
//! upstream, which names upstream lacks), bounded in age and in size: an entry counts
//! for `ttl`, and at `capacity` entries the expired ones go, then the oldest, so a caller
//! asking for endless made-up names cannot grow the server's memory.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Expiring<K> {
    entries: Mutex<HashMap<K, Instant>>,
    ttl: Duration,
    capacity: usize,
}

impl<K: Hash + Eq + Clone> Expiring<K> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Expiring {
            entries: Mutex::new(HashMap::new()),
            ttl,
            capacity: capacity.max(1),
        }
    }

    /// Whether `key` was marked less than `ttl` ago.
    pub fn fresh(&self, key: &K) -> bool {
        self.lock()
            .get(key)
            .is_some_and(|at| at.elapsed() < self.ttl)
    }

    /// Marks `key` now, making room first if the map is full.
    pub fn mark(&self, key: K) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let ttl = self.ttl;
            entries.retain(|_, at| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(key, Instant::now());
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Instant>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_map_stays_bounded() {
        let map = Expiring::new(Duration::from_secs(60), 3);
        for k in 0..10 {
            map.mark(k);
            assert!(map.len() <= 3);
        }
        // The newest are kept, the oldest went.
        assert!(map.fresh(&9) && map.fresh(&8) && map.fresh(&7));
        assert!(!map.fresh(&0));

        let short = Expiring::new(Duration::from_millis(1), 10);
        short.mark("a");
        std::thread::sleep(Duration::from_millis(5));
        assert!(!short.fresh(&"a"));
        let off = Expiring::new(Duration::ZERO, 10);
        off.mark("a");
        assert_eq!(off.len(), 0);
    }
}
