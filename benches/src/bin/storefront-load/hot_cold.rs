//! `hot-cold`: does a hot SKU under overload slow the checkouts of a cold one? A few connections
//! buy a cold SKU alone first; then the same connections buy it again while all the others buy
//! one hot SKU, far more at once than the node serves (its per-SKU admission turns away what it
//! would not serve within the checkout wait with 429 `/problems/sku-busy`). The report compares
//! the cold checkouts' latency in the two runs.

use std::sync::Arc;

use bytes::Bytes;

use crate::admin::{Account, Api};
use crate::client::Call;
use crate::run::{Measured, Session, Workload};
use crate::stats::{Check, Latency};

/// The endpoint label of the cold SKU's checkouts.
pub const COLD: &str = "POST /v1/checkout (cold SKU)";
/// The same, in the first run (the cold SKU alone).
pub const COLD_ALONE: &str = "POST /v1/checkout (cold SKU, alone)";
/// The endpoint label of the hot SKU's checkouts.
pub const HOT: &str = "POST /v1/checkout (hot SKU)";

/// How much slower the cold SKU's median checkout may be while the hot one is overloaded.
pub const MAX_SLOWDOWN: f64 = 2.0;

/// One run of the scenario: connections below `cold_connections` buy the cold SKU, the rest the
/// hot one.
#[derive(Debug)]
pub struct HotCold {
    cold_connections: usize,
    /// Prefix of this run's idempotency keys.
    keys: String,
    accounts: Arc<[Account]>,
    hot: Bytes,
    cold: Bytes,
}

impl HotCold {
    /// Creates a hot and a cold SKU with `stock` units each and `shoppers` accounts, named after
    /// `run`; the first of the two runs.
    pub async fn set_up(
        api: &Api,
        run: &str,
        stock: u64,
        shoppers: usize,
        cold_connections: usize,
    ) -> anyhow::Result<Self> {
        let price = api.price().await?;
        let (hot, cold) =
            (format!("{}-HOT", run.to_uppercase()), format!("{}-COLD", run.to_uppercase()));
        api.create_product(&hot, "hot-cold", &price, stock).await?;
        api.create_product(&cold, "hot-cold", &price, stock).await?;
        let accounts = api.provision(run, shoppers.max(1)).await?.into();
        Ok(Self {
            cold_connections,
            keys: format!("{run}-alone"),
            accounts,
            hot: Call::one_unit_of(&hot),
            cold: Call::one_unit_of(&cold),
        })
    }

    /// The second run: the same SKUs and shoppers, keys of their own.
    pub fn with_hot(&self, run: &str) -> Self {
        Self {
            cold_connections: self.cold_connections,
            keys: format!("{run}-with-hot"),
            accounts: self.accounts.clone(),
            hot: self.hot.clone(),
            cold: self.cold.clone(),
        }
    }

    /// Compares the cold SKU's checkouts alone and beside the overloaded hot SKU.
    pub fn check(alone: &Measured, with_hot: &Measured) -> Vec<Check> {
        let latency =
            |m: &Measured, label| m.stats.endpoints.get(label).map(|e| Latency::of(&e.latency));
        let outcomes = |m: &Measured, label, outcome: &str| {
            m.stats.endpoints.get(label).and_then(|e| e.outcomes.get(outcome)).copied().unwrap_or(0)
        };
        let mut checks = Vec::new();
        let (Some(before), Some(beside), Some(hot)) =
            (latency(alone, COLD), latency(with_hot, COLD), latency(with_hot, HOT))
        else {
            checks.push(Check::new("both SKUs were bought", false, "no checkouts of one"));
            return checks;
        };
        // Overloaded: buyers turned away, or queued far past what the cold SKU waits alone.
        let busy = outcomes(with_hot, HOT, "429 /problems/sku-busy");
        checks.push(Check::new(
            "the hot SKU was overloaded (429 sku-busy, or p50 >= 10x the cold SKU's alone)",
            busy > 0 || hot.p50_ms >= 10.0 * before.p50_ms,
            format!(
                "{} sold, {busy} answered 429; p50 {} ms, p99 {} ms",
                outcomes(with_hot, HOT, "201"),
                hot.p50_ms,
                hot.p99_ms
            ),
        ));
        let slowdown = beside.p50_ms / before.p50_ms.max(1e-3);
        checks.push(Check::new(
            format!("cold SKU's median checkout beside the hot one <= {MAX_SLOWDOWN}x alone"),
            slowdown <= MAX_SLOWDOWN,
            format!(
                "{slowdown:.2}x: p50 {} ms alone, {} ms beside (p99 {} ms, {} ms); {} of {} sold beside",
                before.p50_ms,
                beside.p50_ms,
                before.p99_ms,
                beside.p99_ms,
                outcomes(with_hot, COLD, "201"),
                with_hot.stats.endpoints.get(COLD).map_or(0, |e| e.latency.len()),
            ),
        ));
        checks
    }
}

impl Workload for HotCold {
    async fn iteration(&self, i: u64, conn: usize, _k: u64, session: &mut Session) {
        let account = &self.accounts[conn % self.accounts.len()];
        let (endpoint, body) =
            if conn < self.cold_connections { (COLD, &self.cold) } else { (HOT, &self.hot) };
        let mut call =
            Call::checkout(account.token.clone(), body.clone(), format!("{}-{i}", self.keys));
        call.endpoint = endpoint;
        session.call(&call).await;
    }
}
