//! Authorization decisions remembered until they expire (the token's `exp`, capped), bounded in size:
//! when full, expired entries go first, then the entries that expire soonest.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

pub struct DecisionCache<K, V> {
    entries: HashMap<K, (V, Instant)>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V: Copy> DecisionCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        DecisionCache { entries: HashMap::new(), capacity: capacity.max(1) }
    }

    /// The decision for `key` if it is still valid at `now`.
    pub fn get(&mut self, key: &K, now: Instant) -> Option<V> {
        match self.entries.get(key) {
            Some((value, until)) if *until > now => Some(*value),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Remembers `value` for `key` until `until`.
    pub fn put(&mut self, key: K, value: V, until: Instant) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            let now = Instant::now();
            self.entries.retain(|_, (_, expires)| *expires > now);
            if self.entries.len() >= self.capacity {
                let soonest =
                    self.entries.iter().min_by_key(|(_, (_, expires))| *expires).map(|(k, _)| k.clone());
                if let Some(soonest) = soonest {
                    self.entries.remove(&soonest);
                }
            }
        }
        self.entries.insert(key, (value, until));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_decision_holds_until_it_expires() {
        let mut cache = DecisionCache::new(10);
        let now = Instant::now();
        cache.put("a", true, now + Duration::from_secs(5));
        assert_eq!(cache.get(&"a", now), Some(true));
        assert_eq!(cache.get(&"a", now + Duration::from_secs(5)), None);
        assert_eq!(cache.len(), 0, "an expired entry is dropped when found");
        assert_eq!(cache.get(&"b", now), None);
    }

    #[test]
    fn a_full_cache_drops_the_expired_then_the_soonest_to_expire() {
        let mut cache = DecisionCache::new(2);
        let now = Instant::now();
        cache.put(1, 'a', now + Duration::from_secs(50));
        cache.put(2, 'b', now + Duration::from_secs(10));
        cache.put(3, 'c', now + Duration::from_secs(30));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&2, now), None, "the soonest to expire went");
        assert_eq!(cache.get(&1, now), Some('a'));
        assert_eq!(cache.get(&3, now), Some('c'));
        // Replacing an existing key never evicts another.
        cache.put(3, 'd', now + Duration::from_secs(30));
        assert_eq!(cache.get(&1, now), Some('a'));
        assert_eq!(cache.get(&3, now), Some('d'));
    }
}
