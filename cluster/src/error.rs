//! The one error type of the cluster crate.

use storefront_actors::DomainError;
use storefront_actors::EntityKind;
use storefront_storage::StorageError;

/// Why a command could not be delivered to its entity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// The entity did not answer in time: the command may still take effect.
    #[error("{kind} {id} did not answer within {timeout_ms} ms")]
    Timeout {
        /// Entity kind.
        kind: EntityKind,
        /// Entity id.
        id: String,
        /// The time allowed.
        timeout_ms: u64,
    },
    /// The entity stopped before answering (a crash or a failed write): outcome unknown.
    #[error("{kind} {id} stopped before answering")]
    Dropped {
        /// Entity kind.
        kind: EntityKind,
        /// Entity id.
        id: String,
    },
    /// Too many commands are waiting for this entity to restart.
    #[error("{kind} {id} is overloaded")]
    Overloaded {
        /// Entity kind.
        kind: EntityKind,
        /// Entity id.
        id: String,
    },
    /// The entity actor could not be spawned.
    #[error("cannot start {kind} {id}: {reason}")]
    Spawn {
        /// Entity kind.
        kind: EntityKind,
        /// Entity id.
        id: String,
        /// Why.
        reason: String,
    },
    /// This node does not hold the entity's shard (it is elsewhere, or moving).
    #[error("{kind} {id} is in shard {shard}, which this node does not hold")]
    NotOwner {
        /// Entity kind.
        kind: EntityKind,
        /// Entity id.
        id: String,
        /// Its shard.
        shard: u32,
    },
    /// The region's supervisor could not start, or the store failed.
    #[error("region failure: {0}")]
    Region(String),
}

impl From<ClusterError> for DomainError {
    fn from(err: ClusterError) -> Self {
        DomainError::Unavailable(err.to_string())
    }
}

impl From<StorageError> for ClusterError {
    fn from(err: StorageError) -> Self {
        ClusterError::Region(err.to_string())
    }
}
