//! The one error type of the storage crate.

/// What a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The stream's last sequence was not the one the writer expected: another writer got there
    /// first. Nothing was written.
    #[error("sequence conflict on stream {stream}: expected {expected}, found {actual}")]
    Conflict {
        /// The stream appended to.
        stream: String,
        /// The last sequence the writer expected.
        expected: u64,
        /// The last sequence the store holds.
        actual: u64,
    },
    /// The append was fenced: its shard's lease has moved on from the writer's epoch. Nothing was
    /// written; the writer no longer owns the shard.
    #[error("append to shard {shard} fenced: lease epoch {epoch} is no longer current")]
    Fenced {
        /// The shard.
        shard: u32,
        /// The epoch the writer held.
        epoch: u64,
    },
    /// The request itself is not valid (for example an empty stream name or an empty append).
    #[error("invalid storage request: {0}")]
    Invalid(String),
    /// A stored record could not be decoded.
    #[error("corrupt record in {0}")]
    Corrupt(String),
    /// The backend failed (I/O, connection, transaction).
    #[error("storage backend failed: {0}")]
    Backend(String),
    /// The store is shutting down and takes no more writes.
    #[error("store is closed")]
    Closed,
    /// The store's schema is missing or from another version (`storefront migrate` applies it).
    #[error("{0}")]
    Schema(String),
    /// No backend is built in for this store URL.
    #[error("unsupported store url `{0}`")]
    UnsupportedUrl(String),
}

impl StorageError {
    pub(crate) fn backend(err: impl std::fmt::Display) -> Self {
        Self::Backend(err.to_string())
    }
}
