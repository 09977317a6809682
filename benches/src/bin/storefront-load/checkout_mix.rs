//! `checkout-mix`: shoppers fill carts with a few of many SKUs and check them out.
//!
//! Each connection has shoppers of its own (a cart is changed by one connection only), and each
//! iteration adds one to three SKUs, one unit each, then checks the cart out.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use rust_decimal::Decimal;

use crate::admin::{Account, Api};
use crate::client::Call;
use crate::run::{Session, Workload};
use crate::splitmix;
use crate::stats::{Check, Stats};

/// The SKUs and shoppers of the mix.
#[derive(Debug)]
pub struct CheckoutMix {
    run: String,
    skus: Vec<String>,
    stock: u64,
    accounts: Vec<Account>,
    connections: usize,
    /// The price of every SKU (all the same), to count an order's units from its total.
    unit_price: Decimal,
    /// Units of the checkouts answered 201 (their totals over the unit price).
    units_confirmed: AtomicU64,
    checkout: Bytes,
}

impl CheckoutMix {
    /// Creates `skus` SKUs with `stock` units each and `shoppers` accounts (at least one per
    /// connection).
    pub async fn set_up(
        api: &Api,
        run: &str,
        skus: usize,
        stock: u64,
        shoppers: usize,
        connections: usize,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            shoppers >= connections,
            "checkout-mix needs at least one shopper per connection ({shoppers} < {connections})"
        );
        anyhow::ensure!(skus >= 3, "checkout-mix needs at least 3 SKUs");
        let price = api.price().await?;
        let names: Vec<String> =
            (0..skus).map(|k| format!("{}-MIX-{k}", run.to_uppercase())).collect();
        futures::stream::iter(names.iter())
            .map(|sku| api.create_product(sku, "checkout-mix", &price, stock))
            .buffer_unordered(8)
            .try_collect::<()>()
            .await?;
        let unit_price: Decimal = price["amount"].as_str().unwrap_or_default().parse()?;
        Ok(Self {
            unit_price,
            run: run.to_owned(),
            skus: names,
            stock,
            accounts: api.provision(run, shoppers).await?,
            connections,
            units_confirmed: AtomicU64::new(0),
            checkout: Bytes::from_static(br#"{"payment_token":"tok_visa"}"#),
        })
    }

    /// Checks: no server error or unanswered request, nothing left held, and the stock that left
    /// the shelves is exactly the units of the checkouts answered 201.
    pub async fn check(&self, api: &Api, stats: &Stats) -> anyhow::Result<Vec<Check>> {
        let failed = stats.failed();
        let mut checks = vec![Check::new(
            "no 5xx and no request unanswered",
            failed == 0,
            format!("{failed} failed"),
        )];
        let levels: Vec<_> = futures::stream::iter(self.skus.iter())
            .map(|sku| api.levels(sku))
            .buffered(16)
            .try_collect()
            .await?;
        let reserved: u64 = levels.iter().map(|l| l.reserved).sum();
        checks.push(Check::new(
            "nothing left reserved",
            reserved == 0,
            format!("{reserved} units reserved"),
        ));
        let sold: u64 = levels.iter().map(|l| self.stock - l.on_hand.min(self.stock)).sum();
        let confirmed = self.units_confirmed.load(Ordering::Relaxed);
        checks.push(Check::new(
            "units gone from stock == units of checkouts answered 201",
            failed == 0 && sold == confirmed,
            format!("{sold} gone from stock, {confirmed} in confirmed checkouts"),
        ));
        Ok(checks)
    }
}

impl Workload for CheckoutMix {
    async fn iteration(&self, i: u64, conn: usize, k: u64, session: &mut Session) {
        let own = (self.accounts.len() - conn).div_ceil(self.connections) as u64;
        let account = &self.accounts[conn + (k % own) as usize * self.connections];
        let r = splitmix(i);
        let lines = 1 + r % 3;
        let first = (r >> 8) as usize % self.skus.len();
        for line in 0..lines as usize {
            let sku = &self.skus[(first + line) % self.skus.len()];
            let body = Bytes::from(format!(r#"{{"sku":"{sku}","qty":1}}"#));
            let add = Call::post(
                "POST /v1/cart/items",
                "/v1/cart/items".into(),
                account.token.clone(),
                body,
            );
            session.call(&add).await;
        }
        let checkout = Call::checkout(
            account.token.clone(),
            self.checkout.clone(),
            format!("{}-{i}", self.run),
        );
        if let Some(answer) = session.call(&checkout).await
            && answer.status == 201
        {
            let total =
                serde_json::from_slice::<serde_json::Value>(&answer.body).ok().and_then(|v| {
                    v["total"]["amount"].as_str().and_then(|a| a.parse::<Decimal>().ok())
                });
            let units = total.and_then(|t| u64::try_from(t / self.unit_price).ok()).unwrap_or(0);
            self.units_confirmed.fetch_add(units, Ordering::Relaxed);
        }
    }
}
