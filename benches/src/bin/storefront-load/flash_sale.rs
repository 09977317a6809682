//! `flash-sale`: V shoppers, each with an account and a token, try to buy one unit of a hot SKU
//! with S units, all released at one instant; then the outcome is checked through the API.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::admin::{Account, Api};
use crate::client::Call;
use crate::run::{Session, Workload};
use crate::stats::Check;

/// The sale being run.
#[derive(Debug)]
pub struct FlashSale {
    /// The hot SKU.
    pub sku: String,
    /// Its units.
    pub stock: u64,
    run: String,
    accounts: Vec<Account>,
    body: Bytes,
    /// Orders answered 201 (confirmed) and 202 (pending), by the attempt that made them.
    answered: Mutex<Answered>,
}

#[derive(Debug, Default)]
struct Answered {
    confirmed: Vec<String>,
    pending: Vec<String>,
    /// When the last 201 arrived.
    last_sale: Option<Instant>,
}

impl FlashSale {
    /// Creates the hot SKU with `stock` units and `shoppers` accounts, named after `run`.
    pub async fn set_up(api: &Api, run: &str, stock: u64, shoppers: usize) -> anyhow::Result<Self> {
        let sku = format!("{}-HOT", run.to_uppercase());
        api.create_product(&sku, "flash-sale", &api.price().await?, stock).await?;
        let accounts = api.provision(run, shoppers).await?;
        Ok(Self {
            body: Call::one_unit_of(&sku),
            sku,
            stock,
            run: run.to_owned(),
            accounts,
            answered: Mutex::default(),
        })
    }

    /// Shoppers (one attempt each).
    pub fn shoppers(&self) -> u64 {
        self.accounts.len() as u64
    }

    fn answered(&self) -> std::sync::MutexGuard<'_, Answered> {
        // A worker that panicked while holding the lock ends the run anyway (its join fails).
        self.answered.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// When the last attempt answered 201 ended.
    pub fn last_sale(&self) -> Option<Instant> {
        self.answered().last_sale
    }

    /// Checks the outcome through the API after `attempts` attempts: exactly `min(S, attempts)`
    /// orders confirmed, nothing left held, on-hand units down by what was sold, and every
    /// confirmed order readable.
    pub async fn check(&self, api: &Api, attempts: u64) -> anyhow::Result<Vec<Check>> {
        let mut checks = Vec::new();
        // Orders answered 202, and any whose answer was lost, are still running: wait (bounded)
        // until nothing is held for the SKU.
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut levels = api.levels(&self.sku).await?;
        while levels.reserved > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            levels = api.levels(&self.sku).await?;
        }
        let users: HashSet<String> = self.accounts.iter().map(|a| a.user_id.clone()).collect();
        let confirmed = api.orders_of(&users, "confirmed").await?;
        let expected = self.stock.min(attempts);
        checks.push(Check::new(
            "confirmed orders == min(stock, attempts)",
            confirmed.len() as u64 == expected,
            format!("{} confirmed, min({}, {attempts}) = {expected}", confirmed.len(), self.stock),
        ));
        checks.push(Check::new(
            "nothing left reserved",
            levels.reserved == 0,
            format!("reserved {}", levels.reserved),
        ));
        if attempts >= self.stock {
            checks.push(Check::new(
                "sold out: available == 0",
                levels.available == 0,
                format!("available {}", levels.available),
            ));
        }
        checks.push(Check::new(
            "on hand == stock - sold",
            levels.on_hand + confirmed.len() as u64 == self.stock,
            format!("on hand {}, stock {}, sold {}", levels.on_hand, self.stock, confirmed.len()),
        ));
        let listed: HashSet<&str> = confirmed.iter().map(|o| o.order_id.as_str()).collect();
        let (acknowledged, pending) = {
            let answered = self.answered();
            (answered.confirmed.clone(), answered.pending.len())
        };
        let missing: Vec<&String> =
            acknowledged.iter().filter(|id| !listed.contains(id.as_str())).collect();
        checks.push(Check::new(
            "every order answered 201 is listed as confirmed",
            missing.is_empty(),
            format!(
                "{} answered 201 ({pending} answered 202), {} of them not listed{}",
                acknowledged.len(),
                missing.len(),
                missing.first().map_or(String::new(), |id| format!(", e.g. {id}"))
            ),
        ));
        let unreadable = api
            .unreadable(confirmed.iter().map(|o| o.order_id.clone()).collect(), "confirmed", 32)
            .await?;
        checks.push(Check::new(
            "every confirmed order reads back as confirmed",
            unreadable.is_empty(),
            format!(
                "{} read, {} did not{}",
                confirmed.len(),
                unreadable.len(),
                unreadable.first().map_or(String::new(), |e| format!(", e.g. {e}"))
            ),
        ));
        Ok(checks)
    }
}

impl Workload for FlashSale {
    async fn iteration(&self, i: u64, _conn: usize, _k: u64, session: &mut Session) {
        let Some(account) = self.accounts.get(i as usize) else { return };
        let call =
            Call::checkout(account.token.clone(), self.body.clone(), format!("{}-{i}", self.run));
        let Some(answer) = session.call(&call).await else { return };
        if answer.status == 201 || answer.status == 202 {
            let order_id = serde_json::from_slice::<serde_json::Value>(&answer.body)
                .ok()
                .and_then(|v| v["order_id"].as_str().map(str::to_owned));
            if let Some(order_id) = order_id {
                let mut answered = self.answered();
                if answer.status == 201 {
                    answered.confirmed.push(order_id);
                    answered.last_sale = Some(Instant::now());
                } else {
                    answered.pending.push(order_id);
                }
            }
        }
    }
}
