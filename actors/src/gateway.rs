//! Payments through a gateway trait, and the simulated gateway used by default.
//!
//! Only Stripe-style tokens cross this boundary: no card number, expiry or CVC ever reaches
//! Storefront. Every operation carries an idempotency key: the gateway applies a key once and
//! answers a repeat with the first outcome, so the saga can retry after an error or a crash.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::Money;

/// Why a gateway call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum GatewayError {
    /// The card was declined: final, not retried.
    #[error("payment declined: {0}")]
    Declined(String),
    /// The gateway failed or could not be reached: the outcome is unknown, retry with the key.
    #[error("payment gateway error: {0}")]
    Unavailable(String),
}

/// A payment provider.
#[async_trait]
pub trait PaymentGateway: Send + Sync + std::fmt::Debug + 'static {
    /// Places a hold of `amount` on the payment method behind `token`; returns the authorization id.
    async fn authorize(
        &self,
        key: &str,
        token: &str,
        amount: &Money,
    ) -> Result<String, GatewayError>;
    /// Collects an authorization; returns the capture id.
    async fn capture(
        &self,
        key: &str,
        authorization: &str,
        amount: &Money,
    ) -> Result<String, GatewayError>;
    /// Cancels an uncaptured authorization.
    async fn void(&self, key: &str, authorization: &str) -> Result<(), GatewayError>;
    /// Returns captured money; returns the refund id.
    async fn refund(
        &self,
        key: &str,
        capture: &str,
        amount: &Money,
    ) -> Result<String, GatewayError>;
}

/// In-process stand-in for a card gateway, driven by the contract's test tokens:
/// `tok_visa` and `tok_mastercard` succeed, `tok_chargeDeclined` and `tok_insufficientFunds`
/// decline, `tok_processingError` fails with a gateway error on every attempt. Any other token is
/// declined as invalid. Its ledger lives in memory, but like a real gateway (whose ledger outlives
/// our restarts) it recognizes its own authorizations after a restart: an authorization id is
/// derived from the idempotency key and carries the authorized amount, so a saga resumed by a new
/// process can still capture it.
///
/// Tests inject faults per operation ([`SimulatedGateway::inject`]): a call that takes effect and
/// then answers "unavailable", or never answers, as a real gateway does when the response to a
/// call it applied is lost.
#[derive(Debug, Default)]
pub struct SimulatedGateway {
    ledger: Mutex<Ledger>,
}

/// A gateway operation, to inject a fault into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GatewayOp {
    /// [`PaymentGateway::authorize`].
    Authorize,
    /// [`PaymentGateway::capture`].
    Capture,
    /// [`PaymentGateway::void`].
    Void,
    /// [`PaymentGateway::refund`].
    Refund,
}

/// What an injected fault does to a call that succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call takes effect, then answers [`GatewayError::Unavailable`]: its outcome is
    /// unknown to the caller.
    SucceedThenFail,
    /// The call takes effect, then never answers: only the caller's timeout ends it.
    SucceedThenHang,
}

#[derive(Debug, Default)]
struct Ledger {
    /// Calls and outcome per idempotency key (one map: a call looks a key up once).
    keys: HashMap<String, KeyRecord>,
    /// Authorization id -> (amount, captured, voided).
    authorizations: HashMap<String, Authorization>,
    /// Keys, authorization and capture ids in the order they were first seen, each with its
    /// kind (which says the maps that hold it), to forget them after [`RETENTION`] as a real
    /// gateway forgets idempotency keys.
    seen: VecDeque<(tokio::time::Instant, Remembered, String)>,
    next_id: u64,
    /// Capture id -> its authorization id, to mark refunds.
    captures: HashMap<String, String>,
    /// Faults waiting for the next successful calls of an operation.
    faults: HashMap<GatewayOp, VecDeque<Fault>>,
    /// Operations whose calls wait (see [`SimulatedGateway::hold`]).
    held: HashMap<GatewayOp, watch::Receiver<()>>,
}

/// Calls of an operation wait while this is held ([`SimulatedGateway::hold`]); dropping it lets
/// them go on.
#[derive(Debug)]
pub struct Held {
    /// Dropped with this: the held calls see their channel closed and go on.
    release: watch::Sender<()>,
}

impl Held {
    /// How many calls are waiting on this hold now (each holds a receiver; the ledger one more).
    pub fn waiting(&self) -> usize {
        self.release.receiver_count().saturating_sub(1)
    }
}

/// How long the simulated gateway remembers an idempotency key or an authorization.
pub const RETENTION: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The most keys and ids the simulated gateway remembers (the oldest go first): it lives in the
/// node's memory, which a long sale must not fill. What it forgets it still answers as a real
/// gateway would: an authorization is recognized by its id, a refund of a forgotten capture goes
/// through.
pub const MAX_REMEMBERED: usize = 100_000;

/// What the gateway holds for one idempotency key.
#[derive(Debug, Default)]
struct KeyRecord {
    /// Calls, repeats included.
    calls: u32,
    /// The first outcome that was not a gateway error (those are tried again).
    outcome: Option<Result<String, GatewayError>>,
}

/// What a remembered string is, and so which of the ledger's maps hold it.
#[derive(Debug, Clone, Copy)]
enum Remembered {
    /// An idempotency key: in `keys`.
    Key,
    /// An authorization id: in `authorizations`.
    Authorization,
    /// A capture id: in `captures`.
    Capture,
}

#[derive(Debug)]
struct Authorization {
    amount: Money,
    captured: bool,
    voided: bool,
    refunded: bool,
}

/// What the simulated gateway holds for one authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentState {
    /// Held, not captured.
    Authorized,
    /// Collected.
    Captured,
    /// Released without capture.
    Voided,
    /// Collected, then given back.
    Refunded,
}

impl SimulatedGateway {
    /// A gateway with an empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many times an operation with `key` was called (repeats included).
    pub fn calls(&self, key: &str) -> u32 {
        self.lock().keys.get(key).map_or(0, |k| k.calls)
    }

    /// The state of an authorization.
    pub fn payment_state(&self, authorization: &str) -> Option<PaymentState> {
        self.lock().authorizations.get(authorization).map(|a| {
            match (a.captured, a.voided, a.refunded) {
                (_, true, _) => PaymentState::Voided,
                (true, false, true) => PaymentState::Refunded,
                (true, false, false) => PaymentState::Captured,
                (false, false, _) => PaymentState::Authorized,
            }
        })
    }

    /// The first recorded answer to the call with `key` (an authorization's id, say), if any.
    pub fn outcome(&self, key: &str) -> Option<Result<String, GatewayError>> {
        self.lock().keys.get(key).and_then(|k| k.outcome.clone())
    }

    /// Makes each of the next `times` successful calls of `op` end with `fault`.
    pub fn inject(&self, op: GatewayOp, fault: Fault, times: usize) {
        self.lock().faults.entry(op).or_default().extend(std::iter::repeat_n(fault, times));
    }

    /// Makes every call of `op` wait, before it takes effect, until the returned [`Held`] is
    /// dropped: a test's way to keep a saga at one step for as long as it needs.
    pub fn hold(&self, op: GatewayOp) -> Held {
        let (release, held) = watch::channel(());
        self.lock().held.insert(op, held);
        Held { release }
    }

    /// Waits while calls of `op` are held.
    async fn unless_held(&self, op: GatewayOp) {
        let held = self.lock().held.get(&op).cloned();
        if let Some(mut held) = held {
            // Ends with an error once the `Held` is dropped: nothing is ever sent on it.
            let _ = held.changed().await;
        }
    }

    /// The answer a caller gets to a call of `op` whose outcome is `outcome`: a successful one
    /// meets the next injected fault, if any.
    async fn answer<T>(
        &self,
        op: GatewayOp,
        outcome: Result<T, GatewayError>,
    ) -> Result<T, GatewayError> {
        let value = outcome?;
        let fault = self.lock().faults.get_mut(&op).and_then(VecDeque::pop_front);
        match fault {
            None => Ok(value),
            Some(Fault::SucceedThenFail) => {
                Err(GatewayError::Unavailable("timed out after it took effect".into()))
            }
            Some(Fault::SucceedThenHang) => std::future::pending().await,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // A poisoned ledger only means a panic elsewhere mid-update of plain maps; keep serving.
        self.ledger.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `op` once per key; repeats answer with the recorded outcome. Gateway errors are not
    /// recorded, so a retry with the same key tries again.
    fn once(
        &self,
        key: &str,
        op: impl FnOnce(&mut Ledger) -> Result<String, GatewayError>,
    ) -> Result<String, GatewayError> {
        let mut ledger = self.lock();
        let record = ledger.keys.entry(key.to_owned()).or_default();
        record.calls += 1;
        if let Some(outcome) = &record.outcome {
            return outcome.clone();
        }
        let first_call = record.calls == 1;
        if first_call {
            ledger.remember(Remembered::Key, key.to_owned());
        }
        let outcome = op(&mut ledger);
        if !matches!(outcome, Err(GatewayError::Unavailable(_)))
            && let Some(record) = ledger.keys.get_mut(key)
        {
            record.outcome = Some(outcome.clone());
        }
        ledger.forget_expired();
        outcome
    }
}

/// `auth_{minor units}_{currency}_{fnv64 of the key}`: recognizable without the ledger.
fn authorization_id(key: &str, amount: &Money) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let minor = amount.minor_units().unwrap_or(0);
    format!("auth_{minor}_{}_{hash:016x}", amount.currency())
}

/// The amount an authorization id of [`authorization_id`]'s form was issued for.
fn parse_authorization(id: &str) -> Option<Money> {
    let mut parts = id.strip_prefix("auth_")?.split('_');
    let minor: i64 = parts.next()?.parse().ok()?;
    let currency = crate::Currency::parse(parts.next()?).ok()?;
    let hash = parts.next()?;
    (hash.len() == 16 && parts.next().is_none()).then(|| Money::from_minor(minor, currency))
}

impl Ledger {
    /// The authorization `id` for `amount`, recorded (and remembered for [`RETENTION`]) if new.
    fn authorization(&mut self, id: &str, amount: Money) -> &mut Authorization {
        if !self.authorizations.contains_key(id) {
            self.remember(Remembered::Authorization, id.to_owned());
        }
        self.authorizations.entry(id.to_owned()).or_insert(Authorization {
            amount,
            captured: false,
            voided: false,
            refunded: false,
        })
    }

    /// Notes that `id`, of `kind`, was first seen now.
    fn remember(&mut self, kind: Remembered, id: String) {
        self.seen.push_back((tokio::time::Instant::now(), kind, id));
    }

    /// Drops what was first seen more than [`RETENTION`] ago, and the oldest past
    /// [`MAX_REMEMBERED`] (keys, authorization and capture ids share the queue; each is removed
    /// from the maps of its kind only: a full ledger forgets as much as it learns per call).
    fn forget_expired(&mut self) {
        let now = tokio::time::Instant::now();
        while let Some((at, _, _)) = self.seen.front() {
            if now.duration_since(*at) < RETENTION && self.seen.len() <= MAX_REMEMBERED {
                break;
            }
            if let Some((_, kind, id)) = self.seen.pop_front() {
                match kind {
                    Remembered::Key => {
                        self.keys.remove(&id);
                    }
                    Remembered::Authorization => {
                        self.authorizations.remove(&id);
                    }
                    Remembered::Capture => {
                        self.captures.remove(&id);
                    }
                }
            }
        }
    }

    fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_{:08}", self.next_id)
    }
}

#[async_trait]
impl PaymentGateway for SimulatedGateway {
    async fn authorize(
        &self,
        key: &str,
        token: &str,
        amount: &Money,
    ) -> Result<String, GatewayError> {
        self.unless_held(GatewayOp::Authorize).await;
        let outcome = self.once(key, |ledger| match token {
            "tok_visa" | "tok_mastercard" => {
                let id = authorization_id(key, amount);
                ledger.authorization(&id, *amount);
                Ok(id)
            }
            "tok_chargeDeclined" => Err(GatewayError::Declined("card_declined".into())),
            "tok_insufficientFunds" => Err(GatewayError::Declined("insufficient_funds".into())),
            "tok_processingError" => Err(GatewayError::Unavailable("processing_error".into())),
            _ => Err(GatewayError::Declined("invalid_token".into())),
        });
        self.answer(GatewayOp::Authorize, outcome).await
    }

    async fn capture(
        &self,
        key: &str,
        authorization: &str,
        amount: &Money,
    ) -> Result<String, GatewayError> {
        self.unless_held(GatewayOp::Capture).await;
        let outcome = self.once(key, |ledger| {
            let issued = parse_authorization(authorization)
                .ok_or_else(|| GatewayError::Declined("no_such_authorization".into()))?;
            let auth = ledger.authorization(authorization, issued);
            if auth.voided
                || amount.amount() > auth.amount.amount()
                || amount.currency() != auth.amount.currency()
            {
                return Err(GatewayError::Declined("capture_not_allowed".into()));
            }
            auth.captured = true;
            let capture = ledger.new_id("cap");
            ledger.remember(Remembered::Capture, capture.clone());
            ledger.captures.insert(capture.clone(), authorization.to_owned());
            Ok(capture)
        });
        self.answer(GatewayOp::Capture, outcome).await
    }

    async fn void(&self, key: &str, authorization: &str) -> Result<(), GatewayError> {
        self.unless_held(GatewayOp::Void).await;
        let outcome = self.once(key, |ledger| {
            if let Some(auth) = ledger.authorizations.get_mut(authorization)
                && !auth.captured
            {
                auth.voided = true;
            }
            Ok(String::new())
        });
        self.answer(GatewayOp::Void, outcome).await.map(drop)
    }

    async fn refund(
        &self,
        key: &str,
        capture: &str,
        _amount: &Money,
    ) -> Result<String, GatewayError> {
        self.unless_held(GatewayOp::Refund).await;
        let outcome = self.once(key, |ledger| {
            if capture.is_empty() {
                return Err(GatewayError::Declined("no_such_capture".into()));
            }
            if let Some(authorization) = ledger.captures.get(capture).cloned()
                && let Some(auth) = ledger.authorizations.get_mut(&authorization)
            {
                auth.refunded = true;
            }
            Ok(ledger.new_id("re"))
        });
        self.answer(GatewayOp::Refund, outcome).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Currency;

    #[tokio::test(start_paused = true)]
    async fn keys_are_forgotten_after_the_retention() {
        let gw = SimulatedGateway::new();
        let ten = Money::parse("10", Currency::USD).unwrap();
        let auth = gw.authorize("old", "tok_visa", &ten).await.unwrap();
        tokio::time::advance(RETENTION + std::time::Duration::from_secs(1)).await;
        gw.authorize("new", "tok_visa", &ten).await.unwrap();
        assert_eq!(gw.calls("old"), 0, "the old key is forgotten");
        assert_eq!(gw.payment_state(&auth), None);
        assert_eq!(gw.calls("new"), 1);
        // A forgotten authorization is still recognized by its id.
        assert!(gw.capture("old/capture", &auth, &ten).await.is_ok());
    }

    /// The ledger lives in the node's memory: a long sale must not grow it without end (before,
    /// captures were never forgotten, and nothing was forgotten within a day).
    #[tokio::test]
    async fn the_ledger_is_bounded_and_still_answers_what_it_forgot() {
        let gw = SimulatedGateway::new();
        let ten = Money::parse("10", Currency::USD).unwrap();
        let first = gw.authorize("o-0/authorize", "tok_visa", &ten).await.unwrap();
        let first_capture = gw.capture("o-0/capture", &first, &ten).await.unwrap();
        for n in 1..=MAX_REMEMBERED / 2 {
            let auth = gw.authorize(&format!("o-{n}/authorize"), "tok_visa", &ten).await.unwrap();
            gw.capture(&format!("o-{n}/capture"), &auth, &ten).await.unwrap();
        }
        {
            let ledger = gw.lock();
            let sizes = [
                ledger.seen.len(),
                ledger.keys.len(),
                ledger.authorizations.len(),
                ledger.captures.len(),
            ];
            assert!(sizes.iter().all(|&n| n <= MAX_REMEMBERED), "{sizes:?}");
        }
        assert_eq!(gw.calls("o-0/authorize"), 0, "the oldest key is forgotten");
        // What it forgot it still answers: the authorization by its id, the capture's refund.
        assert!(gw.capture("o-0/capture-again", &first, &ten).await.is_ok());
        assert!(gw.refund("o-0/refund", &first_capture, &ten).await.is_ok());
    }

    #[tokio::test]
    async fn tokens_behave_as_documented_and_keys_are_idempotent() {
        let gw = SimulatedGateway::new();
        let ten = Money::parse("10", Currency::USD).unwrap();
        let a = gw.authorize("k1", "tok_visa", &ten).await.unwrap();
        assert_eq!(
            gw.authorize("k1", "tok_visa", &ten).await.unwrap(),
            a,
            "same key, same outcome"
        );
        assert_ne!(gw.authorize("k2", "tok_mastercard", &ten).await.unwrap(), a);
        assert_eq!(gw.payment_state(&a), Some(PaymentState::Authorized));
        let c = gw.capture("k1/capture", &a, &ten).await.unwrap();
        // A new process (empty ledger) still recognizes its authorizations, and only for their amount.
        let restarted = SimulatedGateway::new();
        assert!(restarted.capture("k1/capture-again", &a, &ten).await.is_ok());
        let eleven = Money::parse("11", Currency::USD).unwrap();
        assert!(restarted.capture("k1/too-much", &a, &eleven).await.is_err());
        assert!(restarted.capture("k1/forged", "auth_1000_USD_nothex", &ten).await.is_err());
        assert_eq!(gw.capture("k1/capture", &a, &ten).await.unwrap(), c);
        assert_eq!(gw.payment_state(&a), Some(PaymentState::Captured));
        assert!(matches!(
            gw.authorize("k3", "tok_chargeDeclined", &ten).await,
            Err(GatewayError::Declined(_))
        ));
        assert!(matches!(
            gw.authorize("k4", "tok_insufficientFunds", &ten).await,
            Err(GatewayError::Declined(_))
        ));
        assert!(matches!(
            gw.authorize("k5", "4242424242424242", &ten).await,
            Err(GatewayError::Declined(_))
        ));
        for _ in 0..3 {
            assert!(matches!(
                gw.authorize("k6", "tok_processingError", &ten).await,
                Err(GatewayError::Unavailable(_))
            ));
        }
        assert_eq!(gw.calls("k6"), 3);
        let b = gw.authorize("k7", "tok_visa", &ten).await.unwrap();
        assert_eq!(gw.calls("k7"), 1);
        gw.void("k7/void", &b).await.unwrap();
        assert_eq!(gw.payment_state(&b), Some(PaymentState::Voided));
        assert!(gw.capture("k7/capture", &b, &ten).await.is_err());
    }
}
