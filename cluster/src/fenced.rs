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
