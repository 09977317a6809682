//! The one error type of the actors crate.

use storefront_storage::StorageError;

use crate::money::Currency;

/// Why a domain command or value was refused, or could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum DomainError {
    /// A money amount that is not a valid decimal for its currency.
    #[error("invalid amount: {0}")]
    InvalidMoney(String),
    /// An ISO 4217 code this shop does not support.
    #[error("unknown currency `{0}`")]
    UnknownCurrency(String),
    /// Two amounts in different currencies were combined.
    #[error("currency mismatch: {left} and {right}")]
    CurrencyMismatch {
        /// The left operand's currency.
        left: Currency,
        /// The right operand's currency.
        right: Currency,
    },
    /// An FX rate is missing or not positive.
    #[error("invalid exchange rate: {0}")]
    InvalidRate(String),
    /// An amount or count does not fit.
    #[error("amount out of range")]
    Overflow,
    /// A field that does not pass validation.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field, for example `qty`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// Not enough available stock.
    #[error("out of stock: {sku} has {available} available, {requested} requested")]
    OutOfStock {
        /// The SKU.
        sku: String,
        /// Units asked for.
        requested: u64,
        /// Units available.
        available: u64,
    },
    /// The reservation expired or was released (or never existed).
    #[error("reservation {0} is no longer held")]
    ReservationGone(String),
    /// The reservation was already committed and cannot be released.
    #[error("reservation {0} is already committed")]
    AlreadyCommitted(String),
    /// Setting on-hand stock below what is reserved.
    #[error("on hand {on_hand} would be below the {reserved} reserved")]
    BelowReserved {
        /// The requested on-hand level.
        on_hand: u64,
        /// Units currently reserved.
        reserved: u64,
    },
    /// The entity does not exist.
    #[error("{kind} {id} not found")]
    NotFound {
        /// Entity kind.
        kind: std::borrow::Cow<'static, str>,
        /// Entity id.
        id: String,
    },
    /// An order id was reused for a different order.
    #[error("order {0} exists with different contents")]
    OrderConflict(String),
    /// The order is not in a state that allows the request.
    #[error("order {order_id} is {status} and cannot be {action}")]
    InvalidOrderState {
        /// The order.
        order_id: String,
        /// Its status.
        status: String,
        /// What was asked.
        action: std::borrow::Cow<'static, str>,
    },
    /// The entity could not be reached or stopped before answering: the outcome is unknown, and a
    /// retry with the same ids is safe.
    #[error("entity unavailable: {0}")]
    Unavailable(String),
    /// The entity's shard is moving to another node: the command was not run, and may be sent
    /// again to the new owner.
    #[error("{0} is moving to another node")]
    Moved(String),
    /// The store failed; nothing was acknowledged.
    #[error("storage failed: {0}")]
    Storage(String),
    /// A reservation would take a customer past the SKU's purchase limit.
    #[error("purchase limit of sku {sku}: {limit} per customer, {bought} already held or bought")]
    PurchaseLimit {
        /// The SKU.
        sku: String,
        /// Units one customer may buy.
        limit: u64,
        /// Units the customer holds or has bought.
        bought: u64,
    },
}

impl From<StorageError> for DomainError {
    fn from(err: StorageError) -> Self {
        match err {
            // Nothing was written, and the shard has another holder now: the command may be
            // sent there.
            StorageError::Fenced { shard, .. } => {
                DomainError::Moved(format!("an entity of shard {shard}"))
            }
            other => DomainError::Storage(other.to_string()),
        }
    }
}

impl From<storefront_events::EventsError> for DomainError {
    fn from(err: storefront_events::EventsError) -> Self {
        // An event that cannot be encoded fails its append: nothing is acknowledged without it.
        DomainError::Storage(err.to_string())
    }
}
