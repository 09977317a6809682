//! Durable state for Storefront, behind one narrow trait.
//!
//! This crate owns [`Store`]: the entity journal (append with an expected sequence number, read from a
//! sequence number), entity snapshots, the transactional outbox written in the same append as the
//! events, and the few keyed tables the read side needs. It owns every backend (one module per backend,
//! each behind its own cargo feature) and the conformance suite they all pass.
//!
//! It does not know what an event means: payloads are opaque bytes encoded by `storefront-actors`.

mod error;
pub mod timed;
mod types;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "embedded")]
pub mod embedded;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "scylla")]
pub mod scylla;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

pub use error::StorageError;
pub use types::{
    AppendRequest, Fence, KeyedWrite, Lease, OutboxEntry, OutboxRecord, Snapshot, StoredEvent,
    Table,
};

/// The one storage interface every backend implements.
///
/// Sequence numbers of a stream start at 1; a stream that was never written has last sequence 0.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Appends `request.events` after `request.expected_seq`, atomically with `request.outbox` and
    /// `request.puts`.
    ///
    /// Fails with [`StorageError::Conflict`] (and writes nothing) when the stream's last sequence is
    /// not `expected_seq`. Returns the new last sequence once the write is durable; never before.
    async fn append(&self, request: AppendRequest) -> Result<u64, StorageError>;

    /// Reads up to `limit` events of `stream` with sequence `>= from_seq`, in order.
    async fn read_events(
        &self,
        stream: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StorageError>;

    /// Stores a snapshot of `stream` as of `snapshot.seq`, replacing an older one.
    async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> Result<(), StorageError>;

    /// The newest snapshot of `stream`, if any.
    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StorageError>;

    /// Outbox entries with a position greater than `after`, oldest first.
    async fn read_outbox(&self, after: u64, limit: usize)
    -> Result<Vec<OutboxEntry>, StorageError>;

    /// Deletes the outbox entries with a position up to `up_to` (published ones past their
    /// retention). Positions stay increasing after it: a later append never reuses one.
    async fn trim_outbox(&self, up_to: u64) -> Result<(), StorageError>;

    /// The value under `key` in `table`.
    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Writes `value` under `key` in `table` durably, replacing any value.
    async fn put(&self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StorageError>;

    /// Removes `key` from `table` durably; removing a missing key is not an error.
    async fn delete(&self, table: Table, key: &[u8]) -> Result<(), StorageError>;

    /// Replaces the value under `key` with `new` (`None` deletes) only if the current value is
    /// `expected` (`None`: absent). Returns whether it did.
    async fn compare_and_swap(
        &self,
        table: Table,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StorageError>;

    /// Up to `limit` entries of `table` whose key starts with `prefix` and sorts after `start_after`
    /// (all of them when `None`), in key order.
    async fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError>;

    /// Every shard lease ever set, by shard.
    async fn leases(&self) -> Result<Vec<Lease>, StorageError>;

    /// Gives `shard`'s lease to `owner` (`None` releases it) if its epoch is still
    /// `expected_epoch` (0: never set), with epoch `expected_epoch + 1`. Returns whether it did.
    /// Once it has, no append fenced with an older epoch succeeds.
    async fn set_lease(
        &self,
        shard: u32,
        expected_epoch: u64,
        owner: Option<&str>,
    ) -> Result<bool, StorageError>;
}

/// Every entry of `table`, in key order, read a page at a time.
pub async fn scan_all(
    store: &dyn Store,
    table: Table,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
    const PAGE: usize = 1000;
    let mut all = Vec::new();
    loop {
        let after = all.last().map(|(key, _): &(Vec<u8>, Vec<u8>)| key.clone());
        let page = store.scan(table, b"", after.as_deref(), PAGE).await?;
        let full = page.len() == PAGE;
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
}

/// Deletes the entries of `table` that `gone` picks (by key and value), each only if it is
/// unchanged since it was read: an entry rewritten meanwhile stays. Returns how many it deleted.
pub async fn sweep(
    store: &dyn Store,
    table: Table,
    gone: impl Fn(&[u8], &[u8]) -> bool,
) -> Result<usize, StorageError> {
    const PAGE: usize = 1000;
    let mut after: Option<Vec<u8>> = None;
    let mut deleted = 0;
    loop {
        let page = store.scan(table, b"", after.as_deref(), PAGE).await?;
        for (key, value) in &page {
            if gone(key, value) && store.compare_and_swap(table, key, Some(value), None).await? {
                deleted += 1;
            }
        }
        match page.last() {
            Some((key, _)) if page.len() == PAGE => after = Some(key.clone()),
            _ => return Ok(deleted),
        }
    }
}

/// Opens the store named by `url` (`embedded` keeps it under `data_dir`).
pub async fn open(url: &str, data_dir: &Path) -> Result<Arc<dyn Store>, StorageError> {
    match Backend::of(url) {
        #[cfg(feature = "embedded")]
        Some(Backend::Embedded) => Ok(Arc::new(embedded::EmbeddedStore::open(data_dir).await?)),
        #[cfg(feature = "postgres")]
        Some(Backend::Postgres) => Ok(Arc::new(postgres::PostgresStore::open(url).await?)),
        #[cfg(feature = "scylla")]
        Some(Backend::Scylla) => Ok(Arc::new(scylla::ScyllaStore::open(url).await?)),
        _ => Err(StorageError::UnsupportedUrl(url.to_owned())),
    }
}

/// Applies the schema of the store named by `url` (idempotent). The embedded store needs none.
pub async fn migrate(url: &str) -> Result<(), StorageError> {
    match Backend::of(url) {
        #[cfg(feature = "embedded")]
        Some(Backend::Embedded) => Ok(()),
        #[cfg(feature = "postgres")]
        Some(Backend::Postgres) => postgres::migrate(url).await,
        #[cfg(feature = "scylla")]
        Some(Backend::Scylla) => scylla::migrate(url).await,
        _ => Err(StorageError::UnsupportedUrl(url.to_owned())),
    }
}

/// Refuses an append no backend takes: an empty stream name or one with NUL, or no events.
pub(crate) fn check_append(request: &AppendRequest) -> Result<(), StorageError> {
    if request.stream.is_empty() || request.stream.contains('\0') {
        return Err(StorageError::Invalid("stream name empty or containing NUL".into()));
    }
    if request.events.is_empty() {
        return Err(StorageError::Invalid("append without events".into()));
    }
    Ok(())
}

/// Refuses a lease given to an empty node id (`None` releases).
pub(crate) fn check_lease_owner(owner: Option<&str>) -> Result<(), StorageError> {
    match owner {
        Some("") => Err(StorageError::Invalid("empty lease owner".into())),
        _ => Ok(()),
    }
}

/// The key range of a prefix scan that resumes after `start_after`: the lower bound, whether it
/// is excluded (a cursor) or included (the prefix), and the upper bound, if the prefix has one.
#[cfg(any(feature = "postgres", feature = "scylla"))]
pub(crate) fn scan_range<'a>(
    prefix: &'a [u8],
    start_after: Option<&'a [u8]>,
) -> (&'a [u8], bool, Option<Vec<u8>>) {
    let (lower, excluded) = match start_after {
        Some(after) if after >= prefix => (after, true),
        _ => (prefix, false),
    };
    (lower, excluded, prefix_end(prefix))
}

/// A sequence (or epoch, or position) as the signed 64-bit integer SQL and CQL store.
#[cfg(any(feature = "postgres", feature = "scylla"))]
pub(crate) fn seq_param(seq: u64) -> Result<i64, StorageError> {
    i64::try_from(seq).map_err(|_| StorageError::Invalid(format!("sequence {seq} out of range")))
}

/// A shard number as the signed 32-bit integer SQL and CQL store.
#[cfg(any(feature = "postgres", feature = "scylla"))]
pub(crate) fn shard_param(shard: u32) -> Result<i32, StorageError> {
    i32::try_from(shard).map_err(|_| StorageError::Invalid(format!("shard {shard} out of range")))
}

/// A stored signed 64-bit sequence read back; a negative one is corrupt (`what` names it).
#[cfg(any(feature = "postgres", feature = "scylla"))]
pub(crate) fn seq_of(value: i64, what: &str) -> Result<u64, StorageError> {
    u64::try_from(value).map_err(|_| StorageError::Corrupt(what.to_owned()))
}

/// The smallest key greater than every key starting with `prefix`, if there is one (the upper
/// bound of a prefix scan).
#[cfg(any(feature = "postgres", feature = "scylla"))]
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// `url` without its password, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The kinds of store a URL can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Embedded,
    Postgres,
    Scylla,
}

impl Backend {
    fn of(url: &str) -> Option<Self> {
        if url == "embedded" {
            Some(Self::Embedded)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else if url.starts_with("scylla://") {
            Some(Self::Scylla)
        } else {
            None
        }
    }
}
