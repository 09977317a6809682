//! The saga runner: the I/O of one saga step (stock commands to SKU actors, payment calls to the
//! gateway), with the saga's retry policy. What a step is, and what its outcome records, is the
//! state machine's ([`super::state`]); the actor runs one step at a time, in a task.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;

use super::state::{PlaceOrder, Step, StepOutcome, Void, is_transient, order_total};
use crate::entity::EntitySettings;
use crate::gateway::{GatewayError, PaymentGateway};
use crate::sku::{StockCommand, StockLevels};
use crate::{DomainError, Money};

/// Attempts for one stock command that fails for want of the SKU's actor or store.
const STOCK_ATTEMPTS: u32 = 5;
/// The longest wait between compensation retries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How the saga reaches SKU actors, wherever they live.
#[async_trait]
pub trait StockPort: Send + Sync + std::fmt::Debug + 'static {
    /// Sends `command` to the SKU's actor and waits for its durable answer.
    async fn stock(&self, sku: &str, command: StockCommand) -> Result<StockLevels, DomainError>;
}

/// The wait before retry number `attempt` (from 0): the base doubled per attempt, capped.
pub(super) fn retry_backoff(settings: &EntitySettings, attempt: u32) -> Duration {
    settings.gateway_retry_base.saturating_mul(1 << attempt.min(10)).min(MAX_BACKOFF)
}

/// Runs one step's I/O, with the saga's retry policy.
pub(super) struct StepRunner {
    pub(super) order: Arc<PlaceOrder>,
    /// When the order was placed (ms), which SKUs need to answer a late resume.
    pub(super) placed_at: u64,
    pub(super) stock: Arc<dyn StockPort>,
    pub(super) gateway: Arc<dyn PaymentGateway>,
    pub(super) settings: EntitySettings,
}

impl StepRunner {
    fn reservation_id(&self, line: usize) -> String {
        format!("{}/{line}", self.order.order_id)
    }

    fn key(&self, operation: &str) -> String {
        format!("{}/{operation}", self.order.order_id)
    }

    pub(super) async fn run(self, step: Step) -> StepOutcome {
        let total = order_total(&self.order).unwrap_or_else(|_| Money::zero(self.order.currency));
        match step {
            Step::Reserve(lines) => {
                let ttl_ms = self.settings.reservation_ttl.as_millis() as u64;
                StepOutcome::Reserved(
                    self.each_line(lines, |this, line| StockCommand::ReserveFor {
                        reservation_id: this.reservation_id(line),
                        order_id: this.order.order_id.clone(),
                        customer: this.order.user_id.clone(),
                        qty: u64::from(this.order.lines[line].qty.get()),
                        ttl_ms,
                    })
                    .await,
                )
            }
            Step::Commit(lines) => StepOutcome::Committed(
                self.each_line(lines, |this, line| StockCommand::Commit {
                    reservation_id: this.reservation_id(line),
                })
                .await,
            ),
            Step::Authorize => {
                let (key, token) = (self.key("authorize"), self.order.payment_token.clone());
                StepOutcome::Authorized(
                    self.pay(|gw| {
                        let (key, token) = (key.clone(), token.clone());
                        async move { gw.authorize(&key, &token, &total).await }
                    })
                    .await,
                )
            }
            Step::Capture(authorization) => {
                let key = self.key("capture");
                StepOutcome::Captured(
                    self.pay(|gw| {
                        let (key, authorization) = (key.clone(), authorization.clone());
                        async move { gw.capture(&key, &authorization, &total).await }
                    })
                    .await,
                )
            }
            Step::Compensate { release, give_back, void, refund } => {
                let released = self
                    .each_line(release, |this, line| StockCommand::Release {
                        reservation_id: this.reservation_id(line),
                    })
                    .await;
                let returned = self
                    .each_line(give_back, |this, line| StockCommand::Return {
                        restock_id: format!("{}/return", this.reservation_id(line)),
                        qty: u64::from(this.order.lines[line].qty.get()),
                        customer: this.order.user_id.clone(),
                    })
                    .await;
                let voided = match void {
                    Some(void) => Some(self.void(void, &total).await),
                    None => None,
                };
                let refunded = match refund {
                    Some(capture) => {
                        let key = self.key("refund");
                        Some(
                            self.pay(|gw| {
                                let (key, capture) = (key.clone(), capture.clone());
                                async move { gw.refund(&key, &capture, &total).await }
                            })
                            .await,
                        )
                    }
                    None => None,
                };
                StepOutcome::Compensated { released, returned, voided, refunded }
            }
        }
    }

    /// Sends one stock command per line, concurrently, retrying while the SKU is unreachable.
    /// Each goes as the order's ([`StockCommand::ForOrder`]), so a SKU answers it as it did
    /// before however long ago that was.
    async fn each_line(
        &self,
        lines: Vec<usize>,
        command: impl Fn(&Self, usize) -> StockCommand,
    ) -> Vec<(usize, Result<StockLevels, DomainError>)> {
        let calls = lines.into_iter().map(|line| {
            let sku = self.order.lines[line].sku.to_string();
            let command = StockCommand::ForOrder {
                placed_at: self.placed_at,
                command: Box::new(command(self, line)),
            };
            async move {
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match self.stock.stock(&sku, command.clone()).await {
                        Err(err) if is_transient(&err) && attempt < STOCK_ATTEMPTS => {
                            tokio::time::sleep(retry_backoff(&self.settings, attempt)).await;
                        }
                        result => return (line, result),
                    }
                }
            }
        });
        join_all(calls).await
    }

    /// Voids an authorization; one of unknown outcome is first asked again by its key, which
    /// names it (or declines: then nothing is held).
    async fn void(&self, void: Void, total: &Money) -> Result<(), GatewayError> {
        let authorization = match void {
            Void::Authorization(authorization) => authorization,
            Void::ByKey => {
                let (key, token) = (self.key("authorize"), self.order.payment_token.clone());
                let asked = self
                    .pay(|gw| {
                        let (key, token) = (key.clone(), token.clone());
                        async move { gw.authorize(&key, &token, total).await }
                    })
                    .await;
                match asked {
                    Ok(authorization) => authorization,
                    Err(GatewayError::Declined(_)) => return Ok(()),
                    Err(unavailable) => return Err(unavailable),
                }
            }
        };
        let key = self.key("void");
        self.pay(|gw| {
            let (key, authorization) = (key.clone(), authorization.clone());
            async move { gw.void(&key, &authorization).await }
        })
        .await
    }

    /// Calls the gateway, retrying gateway errors (not declines) with the same idempotency key.
    /// Each call is under the gateway timeout: one that outlasts it has an unknown outcome, as
    /// a gateway error does.
    async fn pay<T, F, Fut>(&self, call: F) -> Result<T, GatewayError>
    where
        F: Fn(Arc<dyn PaymentGateway>) -> Fut,
        Fut: Future<Output = Result<T, GatewayError>>,
    {
        let timeout = self.settings.gateway_timeout;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let answer =
                tokio::time::timeout(timeout, call(self.gateway.clone())).await.unwrap_or_else(
                    |_| Err(GatewayError::Unavailable(format!("no answer within {timeout:?}"))),
                );
            match answer {
                Err(GatewayError::Unavailable(why))
                    if attempt < self.settings.gateway_max_attempts =>
                {
                    tracing::debug!(order_id = %self.order.order_id, attempt, %why, "gateway error, retrying");
                    tokio::time::sleep(retry_backoff(&self.settings, attempt - 1)).await;
                }
                result => return result,
            }
        }
    }
}
