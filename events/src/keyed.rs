//! Per-key async locks: in this process, one holder per key at a time (a message redelivered
//! while its first copy is still being handled waits for it). Entries go once unused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OwnedMutexGuard;

type Locks = Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>;

/// Locks by key.
#[derive(Debug, Default, Clone)]
pub(crate) struct KeyedLocks {
    locks: Locks,
}

/// A held key; released (and forgotten when no one waits) on drop.
#[derive(Debug)]
pub(crate) struct KeyedGuard {
    guard: Option<OwnedMutexGuard<()>>,
    mutex: Arc<tokio::sync::Mutex<()>>,
    key: String,
    locks: Locks,
}

impl KeyedLocks {
    /// Waits until `key` is free, then holds it.
    pub(crate) async fn lock(&self, key: String) -> KeyedGuard {
        let mutex = self
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_default()
            .clone();
        let guard = mutex.clone().lock_owned().await;
        KeyedGuard { guard: Some(guard), mutex, key, locks: self.locks.clone() }
    }
}

impl Drop for KeyedGuard {
    fn drop(&mut self) {
        self.guard.take();
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        // The map's reference and this guard's: no one else holds or waits for the key. Anyone
        // new takes the map's lock first, so this cannot race them.
        if Arc::strong_count(&self.mutex) == 2 {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_has_one_holder_and_is_forgotten_when_free() {
        let locks = KeyedLocks::default();
        let first = locks.lock("a".into()).await;
        let other = locks.lock("b".into()).await;
        let waiting = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.lock("a".into()).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a held key waits");
        drop(first);
        drop(waiting.await);
        drop(other);
        assert!(locks.locks.lock().unwrap_or_else(PoisonError::into_inner).is_empty());
    }
}
