//! Per-SKU admission of checkouts: how many checkouts of each SKU this node has under way, and
//! how many of them it ended in the last second. A checkout of a SKU that has more under way than
//! the node ends within the checkout wait is turned away at once (429 `/problems/sku-busy`, with
//! `Retry-After`), before anything is held, so an overloaded SKU queues only its own buyers and
//! every other SKU's checkouts are served as usual. Each node counts its own checkouts: in a
//! cluster every edge admits its share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use storefront_actors::Sku;
use tokio::time::Instant;

const SECOND: Duration = Duration::from_secs(1);

/// The load of one SKU's checkouts on this node.
#[derive(Debug)]
struct Load {
    under_way: u64,
    ended_this_second: u64,
    ended_last_second: u64,
    second_started: Instant,
}

impl Load {
    fn new(now: Instant) -> Self {
        Load { under_way: 0, ended_this_second: 0, ended_last_second: 0, second_started: now }
    }

    /// Moves the one-second windows on to `now`.
    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.second_started);
        if elapsed < SECOND {
            return;
        }
        self.ended_last_second = if elapsed < 2 * SECOND { self.ended_this_second } else { 0 };
        self.ended_this_second = 0;
        self.second_started = if elapsed < 2 * SECOND { self.second_started + SECOND } else { now };
    }

    /// Checkouts ended per second, as last measured.
    fn served_per_s(&self) -> u64 {
        self.ended_last_second.max(self.ended_this_second)
    }
}

/// Every SKU's load, and when SKUs with nothing left to count were last dropped.
#[derive(Debug)]
struct Loads {
    by_sku: HashMap<Sku, Load>,
    swept: Instant,
}

/// Why a checkout was turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    /// The SKU with too much under way.
    pub sku: Sku,
    /// Checkouts of it under way on this node.
    pub under_way: u64,
    /// Seconds until what is under way is likely served.
    pub retry_after_secs: u64,
}

/// The node's per-SKU admission (cheap to clone: one shared table).
#[derive(Debug, Clone)]
pub struct Admission {
    loads: Arc<Mutex<Loads>>,
    wait: Duration,
    min_admitted: u64,
}

impl Admission {
    /// Admission for checkouts that wait `wait` for their saga, each SKU taking at least
    /// `min_admitted` at once (before it is measured, or however slowly it is served).
    pub fn new(wait: Duration, min_admitted: u64) -> Self {
        let loads = Loads { by_sku: HashMap::new(), swept: Instant::now() };
        Admission { loads: Arc::new(Mutex::new(loads)), wait, min_admitted }
    }

    fn loads(&self) -> MutexGuard<'_, Loads> {
        // A panic while holding this lock leaves only counters behind, which stay usable.
        self.loads.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checkouts of a SKU served at `served_per_s` that may be under way at once: as many as are
    /// ended within the wait.
    fn capacity(&self, served_per_s: u64) -> u64 {
        let within_wait = u128::from(served_per_s) * self.wait.as_millis() / 1000;
        u64::try_from(within_wait).unwrap_or(u64::MAX).max(self.min_admitted)
    }

    /// Admits a checkout of `skus` (each once), or names the first SKU that is too busy. The
    /// checkout counts as under way until the returned [`Admitted`] is dropped.
    pub fn admit<'a>(&self, skus: impl IntoIterator<Item = &'a Sku>) -> Result<Admitted, Busy> {
        let now = Instant::now();
        let mut loads = self.loads();
        let mut admitted = Vec::new();
        for sku in skus {
            let load = loads.by_sku.entry(sku.clone()).or_insert_with(|| Load::new(now));
            load.roll(now);
            let served = load.served_per_s();
            if load.under_way >= self.capacity(served) {
                let busy = Busy {
                    sku: sku.clone(),
                    under_way: load.under_way,
                    retry_after_secs: retry_after(load.under_way, served),
                };
                drop(loads);
                drop(Admitted { admission: self.clone(), skus: admitted, counted: false });
                return Err(busy);
            }
            load.under_way += 1;
            admitted.push(sku.clone());
        }
        Ok(Admitted { admission: self.clone(), skus: admitted, counted: true })
    }

    fn end(&self, skus: &[Sku], counted: bool) {
        let now = Instant::now();
        let mut loads = self.loads();
        for sku in skus {
            let Some(load) = loads.by_sku.get_mut(sku) else { continue };
            load.roll(now);
            load.under_way = load.under_way.saturating_sub(1);
            if counted {
                load.ended_this_second += 1;
            }
        }
        // The table holds only SKUs with something to count, bounded by the SKUs being bought;
        // the others are dropped once a second, not at every checkout's end.
        if now.saturating_duration_since(loads.swept) >= SECOND {
            loads.swept = now;
            loads.by_sku.retain(|_, load| {
                load.roll(now);
                load.under_way > 0 || load.served_per_s() > 0
            });
        }
    }
}

#[cfg(test)]
impl Admission {
    /// Checkouts of `sku` under way on this node.
    fn under_way(&self, sku: &Sku) -> u64 {
        self.loads().by_sku.get(sku).map_or(0, |load| load.under_way)
    }

    /// SKUs with checkouts under way or ended in the last two seconds (what the table holds).
    fn tracked(&self) -> usize {
        self.loads().by_sku.len()
    }
}

/// Seconds until `under_way` checkouts are served at `served_per_s`: at least 1, at most 60.
fn retry_after(under_way: u64, served_per_s: u64) -> u64 {
    if served_per_s == 0 { 1 } else { under_way.div_ceil(served_per_s).clamp(1, 60) }
}

/// A checkout under way: it counts against its SKUs until dropped.
#[derive(Debug)]
pub struct Admitted {
    admission: Admission,
    skus: Vec<Sku>,
    /// Whether its end counts as served (not for a checkout given back unserved).
    counted: bool,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.end(&self.skus, self.counted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sku(s: &str) -> Sku {
        Sku::parse(s).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_sku_is_turned_away_while_another_is_admitted() {
        let admission = Admission::new(Duration::from_millis(500), 2);
        let (hot, cold) = (sku("HOT-1"), sku("COLD-1"));
        let first = admission.admit([&hot]).unwrap();
        let _second = admission.admit([&hot]).unwrap();
        let busy = admission.admit([&hot]).unwrap_err();
        assert_eq!((busy.sku.as_str(), busy.under_way, busy.retry_after_secs), ("HOT-1", 2, 1));
        // A checkout of both is turned away as a whole: the cold SKU keeps nothing counted.
        assert_eq!(admission.admit([&cold, &hot]).unwrap_err().sku, hot);
        assert_eq!(admission.under_way(&cold), 0);
        let _cold = admission.admit([&cold]).unwrap();
        drop(first);
        assert_eq!(admission.under_way(&hot), 1);
        let _third = admission.admit([&hot]).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_sku_served_fast_takes_what_it_ends_within_the_wait() {
        let admission = Admission::new(Duration::from_millis(500), 2);
        let hot = sku("HOT-1");
        // 10 checkouts ended within a second: 5 may be under way within a 500 ms wait.
        for _ in 0..10 {
            drop(admission.admit([&hot]).unwrap());
        }
        tokio::time::advance(Duration::from_millis(1100)).await;
        let held: Vec<_> = (0..5).map(|_| admission.admit([&hot]).unwrap()).collect();
        let busy = admission.admit([&hot]).unwrap_err();
        assert_eq!((busy.under_way, busy.retry_after_secs), (5, 1));
        drop(held);
        // Two quiet seconds later the rate is forgotten, and so is the SKU.
        tokio::time::advance(Duration::from_secs(3)).await;
        drop(admission.admit([&sku("OTHER-1")]).unwrap());
        assert_eq!(admission.tracked(), 1, "only the SKU ended this second is held");
    }

    #[test]
    fn retry_after_is_the_time_to_serve_what_is_under_way() {
        assert_eq!(retry_after(2_000, 1_000), 2);
        assert_eq!(retry_after(10, 1_000), 1);
        assert_eq!(retry_after(1_000_000, 10), 60);
        assert_eq!(retry_after(5, 0), 1);
    }
}
