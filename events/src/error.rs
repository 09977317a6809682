//! The crate's one error enum.

/// What can go wrong with events.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// An event could not be turned into JSON.
    #[error("cannot encode an event: {0}")]
    Encode(String),
    /// A body is not an event of the contract.
    #[error("not a storefront event: {0}")]
    Decode(String),
    /// The broker refused, failed or could not be reached.
    #[error("broker: {0}")]
    Broker(String),
    /// A notification template is missing, unreadable or broken.
    #[error("template {0}")]
    Template(String),
    /// A mail or text message could not be sent.
    #[error("send failed: {0}")]
    Send(String),
    /// A setting is unusable (the message names it).
    #[error("{0}")]
    Config(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] storefront_storage::StorageError),
}

impl EventsError {
    pub(crate) fn encode(e: impl std::fmt::Display) -> Self {
        Self::Encode(e.to_string())
    }

    pub(crate) fn decode(e: impl std::fmt::Display) -> Self {
        Self::Decode(e.to_string())
    }

    pub(crate) fn send(e: impl std::fmt::Display) -> Self {
        Self::Send(e.to_string())
    }

    pub(crate) fn broker(e: impl std::fmt::Display) -> Self {
        Self::Broker(e.to_string())
    }
}
