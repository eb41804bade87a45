//! A u64-keyed map split over independent locks, so unrelated requests do not contend.

use std::collections::HashMap;

use parking_lot::RwLock;

const SHARDS: usize = 64;

pub struct ShardedMap<V> {
    shards: Vec<RwLock<HashMap<u64, V>>>,
}

impl<V: Clone> Default for ShardedMap<V> {
    fn default() -> Self {
        ShardedMap {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
        }
    }
}

impl<V: Clone> ShardedMap<V> {
    fn shard(&self, key: u64) -> &RwLock<HashMap<u64, V>> {
        let h = key ^ (key >> 48) ^ (key >> 17);
        &self.shards[(h as usize) % SHARDS]
    }

    pub fn get(&self, key: u64) -> Option<V> {
        self.shard(key).read().get(&key).cloned()
    }

    /// Inserts unless present; returns the value now in the map.
    pub fn get_or_insert(&self, key: u64, value: V) -> V {
        self.shard(key).write().entry(key).or_insert(value).clone()
    }

    pub fn insert(&self, key: u64, value: V) {
        self.shard(key).write().insert(key, value);
    }

    pub fn remove(&self, key: u64) -> Option<V> {
        self.shard(key).write().remove(&key)
    }

    /// Runs `f` on the shard holding `key`, under its write lock: for a read-and-change that
    /// must not race with other changes of that key.
    pub fn update<R>(&self, key: u64, f: impl FnOnce(&mut HashMap<u64, V>) -> R) -> R {
        f(&mut self.shard(key).write())
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    pub fn values(&self) -> Vec<V> {
        self.shards
            .iter()
            .flat_map(|s| s.read().values().cloned().collect::<Vec<_>>())
            .collect()
    }
}
