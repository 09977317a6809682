//! The store as a node's entities see it: every journal append carries the lease epoch at which
//! this node holds the entity's shard, so the store refuses it once the shard has moved on,
//! whatever this node believes. Everything else passes through.

use std::sync::Arc;

use async_trait::async_trait;
use storefront_actors::EntityKind;
use storefront_storage::{
    AppendRequest, Fence, Lease, OutboxEntry, Snapshot, StorageError, Store, StoredEvent, Table,
};

use crate::Ownership;
use crate::shard::shard_of;

/// A store whose appends are fenced by this node's shard leases.
#[derive(Debug)]
pub(crate) struct FencedStore {
    inner: Arc<dyn Store>,
    ownership: Ownership,
}

impl FencedStore {
    pub(crate) fn new(inner: Arc<dyn Store>, ownership: Ownership) -> Self {
        Self { inner, ownership }
    }
}

#[async_trait]
impl Store for FencedStore {
    async fn append(&self, mut request: AppendRequest) -> Result<u64, StorageError> {
        let stream = request.stream.clone();
        // Entity streams are `kind/id`, as the actors name them.
        let (kind, id) = request
            .stream
            .split_once('/')
            .and_then(|(kind, id)| Some((EntityKind::parse(kind)?, id)))
            .ok_or_else(|| {
                StorageError::Invalid(format!("stream `{}` is not kind/id", request.stream))
            })?;
        let shard = shard_of(kind, id, self.ownership.shard_count());
        let outcome = match self.ownership.epoch(shard) {
            Some(epoch) => {
                request.fence = Some(Fence { shard, epoch });
                self.inner.append(request).await
            }
            None => Err(StorageError::Fenced { shard, epoch: 0 }),
        };
        if let Err(StorageError::Fenced { shard, epoch }) = &outcome {
            tracing::warn!(shard, epoch, stream = %stream, "append fenced: the shard's lease moved on");
            metrics::counter!(crate::metrics::APPENDS_FENCED_TOTAL).increment(1);
        }
        outcome
    }

    async fn read_events(
        &self,
        stream: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        self.inner.read_events(stream, from_seq, limit).await
    }

    async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> Result<(), StorageError> {
        self.inner.save_snapshot(stream, snapshot).await
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StorageError> {
        self.inner.load_snapshot(stream).await
    }

    async fn trim_outbox(&self, up_to: u64) -> Result<(), StorageError> {
        self.inner.trim_outbox(up_to).await
    }

    async fn read_outbox(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StorageError> {
        self.inner.read_outbox(after, limit).await
    }

    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get(table, key).await
    }

    async fn put(&self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.inner.put(table, key, value).await
    }

    async fn delete(&self, table: Table, key: &[u8]) -> Result<(), StorageError> {
        self.inner.delete(table, key).await
    }

    async fn compare_and_swap(
        &self,
        table: Table,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StorageError> {
        self.inner.compare_and_swap(table, key, expected, new).await
    }

    async fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
        self.inner.scan(table, prefix, start_after, limit).await
    }

    async fn leases(&self) -> Result<Vec<Lease>, StorageError> {
        self.inner.leases().await
    }

    async fn set_lease(
        &self,
        shard: u32,
        expected_epoch: u64,
        owner: Option<&str>,
    ) -> Result<bool, StorageError> {
        self.inner.set_lease(shard, expected_epoch, owner).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use storefront_storage::embedded::EmbeddedStore;

    use super::*;
    use crate::{OwnershipConfig, ShardHost};

    /// Shards without entities: this test appends itself.
    struct NoEntities;

    #[async_trait]
    impl ShardHost for NoEntities {
        async fn stop_shard(&self, _: u32) {}
        async fn shards_started(&self, _: &[u32]) {}
    }

    fn append(expected_seq: u64) -> AppendRequest {
        AppendRequest {
            stream: "sku/HOT-1".into(),
            expected_seq,
            events: vec![b"event".to_vec()],
            outbox: Vec::new(),
            puts: Vec::new(),
            fence: None,
        }
    }

    /// A node that slept through its lease (SIGSTOP, a long pause) still believes it holds the
    /// shard when it wakes, until its next round; its appends carry the epoch it holds, so the
    /// store refuses them once another node has taken the lease, and writes nothing of them.
    #[tokio::test]
    async fn a_node_whose_lease_moved_on_cannot_append() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
        let config = OwnershipConfig {
            node_id: "a".into(),
            cluster_addr: None,
            http_addr: "127.0.0.1:8080".into(),
            shard_count: 4,
            // No round runs during the test: the node never notices on its own.
            heartbeat: Duration::from_secs(3600),
            member_ttl: Duration::from_secs(3 * 3600),
        };
        let ownership = Ownership::new(store.clone(), config);
        ownership.join(Arc::new(NoEntities)).await.unwrap();
        let fenced = FencedStore::new(store.clone(), ownership.clone());
        let shard = shard_of(EntityKind::Sku, "HOT-1", 4);
        let held = ownership.epoch(shard).expect("a node alone claims every shard");
        assert_eq!(fenced.append(append(0)).await.unwrap(), 1);
        // Another node takes the lease while this one sleeps.
        assert!(store.set_lease(shard, held, Some("b")).await.unwrap());
        assert_eq!(ownership.epoch(shard), Some(held), "it has not noticed yet");
        assert!(
            matches!(fenced.append(append(1)).await, Err(StorageError::Fenced { .. })),
            "an append at an epoch the store has moved past"
        );
        assert_eq!(store.read_events("sku/HOT-1", 1, 10).await.unwrap().len(), 1);
        ownership.stop().await;
    }
}
