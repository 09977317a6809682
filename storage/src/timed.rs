//! A deadline on every call of a store: a backend that stops answering (a stalled disk, a lock
//! held elsewhere, a server that hangs) fails the call after the timeout instead of holding a
//! request or an entity forever. A call that timed out may still take effect: callers treat it
//! as any backend failure of unknown outcome (an entity stops and rebuilds from its journal; a
//! keyed request is retried by its key).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{AppendRequest, Lease, OutboxEntry, Snapshot, StorageError, Store, StoredEvent, Table};

/// `inner` with every call under `timeout`.
#[derive(Debug)]
pub struct Timed {
    inner: Arc<dyn Store>,
    timeout: Duration,
}

impl Timed {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, timeout: Duration) -> Self {
        Self { inner, timeout }
    }

    async fn within<T>(
        &self,
        call: &str,
        answer: impl Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        tokio::time::timeout(self.timeout, answer).await.unwrap_or_else(|_| {
            Err(StorageError::Backend(format!("{call} did not answer within {:?}", self.timeout)))
        })
    }
}

#[async_trait]
impl Store for Timed {
    async fn append(&self, request: AppendRequest) -> Result<u64, StorageError> {
        self.within("append", self.inner.append(request)).await
    }

    async fn read_events(
        &self,
        stream: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        self.within("read_events", self.inner.read_events(stream, from_seq, limit)).await
    }

    async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> Result<(), StorageError> {
        self.within("save_snapshot", self.inner.save_snapshot(stream, snapshot)).await
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StorageError> {
        self.within("load_snapshot", self.inner.load_snapshot(stream)).await
    }

    async fn read_outbox(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StorageError> {
        self.within("read_outbox", self.inner.read_outbox(after, limit)).await
    }

    async fn trim_outbox(&self, up_to: u64) -> Result<(), StorageError> {
        self.within("trim_outbox", self.inner.trim_outbox(up_to)).await
    }

    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.within("get", self.inner.get(table, key)).await
    }

    async fn put(&self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.within("put", self.inner.put(table, key, value)).await
    }

    async fn delete(&self, table: Table, key: &[u8]) -> Result<(), StorageError> {
        self.within("delete", self.inner.delete(table, key)).await
    }

    async fn compare_and_swap(
        &self,
        table: Table,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StorageError> {
        self.within("compare_and_swap", self.inner.compare_and_swap(table, key, expected, new))
            .await
    }

    async fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
        self.within("scan", self.inner.scan(table, prefix, start_after, limit)).await
    }

    async fn leases(&self) -> Result<Vec<Lease>, StorageError> {
        self.within("leases", self.inner.leases()).await
    }

    async fn set_lease(
        &self,
        shard: u32,
        expected_epoch: u64,
        owner: Option<&str>,
    ) -> Result<bool, StorageError> {
        self.within("set_lease", self.inner.set_lease(shard, expected_epoch, owner)).await
    }
}
