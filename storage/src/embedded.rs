//! The embedded backend: one `redb` file under the data dir, for a single node.
//!
//! redb was chosen over fjall by the `journal_backends` benchmark (numbers in `BENCHMARKS.md`).
//!
//! Group commit: every write goes through one writer thread. It takes every write waiting in its
//! queue (up to [`MAX_GROUP`]), applies them in one redb transaction, commits it with one fsync
//! (`Durability::Immediate`), and only then answers each caller. A write that fails its own check
//! (a sequence conflict) is answered with that error and leaves the others of its group untouched.
//! Reads run on tokio's blocking pool against redb's MVCC read transactions.
//!
//! Journal layout: one record per append, keyed by `(stream, first sequence)`, holding the framed
//! events of that append; a stream's last sequence lives in `heads`. A read from sequence `n` starts
//! at the last record whose first sequence is at most `n`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use async_trait::async_trait;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    AppendRequest, OutboxEntry, OutboxRecord, Snapshot, StorageError, Store, StoredEvent, Table,
};

/// Most writes one transaction takes.
pub const MAX_GROUP: usize = 8192;
/// Writes that may wait for the writer thread before callers are held back.
const QUEUE_DEPTH: usize = 65_536;
/// The database file inside the data dir.
const FILE_NAME: &str = "storefront.redb";

const JOURNAL: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("journal");
const HEADS: TableDefinition<&str, u64> = TableDefinition::new("heads");
const SNAPSHOTS: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("snapshots");
const OUTBOX: TableDefinition<u64, (&str, &str, &[u8])> = TableDefinition::new("outbox");

fn kv_table(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table.name())
}

/// Counters of the writer thread, for tests and metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed (one fsync each).
    pub commits: AtomicU64,
    /// Writes answered.
    pub writes: AtomicU64,
}

/// The embedded store. Cheap to share behind an `Arc`; dropping the last handle stops the writer
/// thread after it has answered every queued write.
#[derive(Debug)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    writes: Option<mpsc::Sender<WriteOp>>,
    writer: Option<JoinHandle<()>>,
    stats: Arc<WriterStats>,
}

#[derive(Debug)]
enum Write {
    Append(AppendRequest),
    Snapshot {
        stream: String,
        snapshot: Snapshot,
    },
    Put {
        table: Table,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        table: Table,
        key: Vec<u8>,
    },
    Cas {
        table: Table,
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    },
}

#[derive(Debug)]
enum Written {
    Appended(u64),
    Done,
    Swapped(bool),
}

#[derive(Debug)]
struct WriteOp {
    write: Write,
    reply: oneshot::Sender<Result<Written, StorageError>>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store under `data_dir`.
    pub async fn open(data_dir: &Path) -> Result<Self, StorageError> {
        let data_dir = data_dir.to_owned();
        let db = tokio::task::spawn_blocking(move || -> Result<Database, StorageError> {
            std::fs::create_dir_all(&data_dir).map_err(StorageError::backend)?;
            let db = Database::create(data_dir.join(FILE_NAME)).map_err(StorageError::backend)?;
            let txn = db.begin_write().map_err(StorageError::backend)?;
            {
                txn.open_table(JOURNAL).map_err(StorageError::backend)?;
                txn.open_table(HEADS).map_err(StorageError::backend)?;
                txn.open_table(SNAPSHOTS).map_err(StorageError::backend)?;
                txn.open_table(OUTBOX).map_err(StorageError::backend)?;
                for table in Table::ALL {
                    txn.open_table(kv_table(table))
                        .map_err(StorageError::backend)?;
                }
            }
            txn.commit().map_err(StorageError::backend)?;
            Ok(db)
        })
        .await
        .map_err(StorageError::backend)??;
        let db = Arc::new(db);
        let next_outbox = last_outbox_position(&db)? + 1;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let stats = Arc::new(WriterStats::default());
        let writer = Writer {
            db: db.clone(),
            next_outbox,
            stats: stats.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("storefront-journal".into())
            .spawn(move || writer.run(rx))
            .map_err(StorageError::backend)?;
        Ok(Self {
            db,
            writes: Some(tx),
            writer: Some(writer),
            stats,
        })
    }

    /// The writer thread's counters.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    async fn write(&self, write: Write) -> Result<Written, StorageError> {
        let (reply, answer) = oneshot::channel();
        let writes = self.writes.as_ref().ok_or(StorageError::Closed)?;
        writes
            .send(WriteOp { write, reply })
            .await
            .map_err(|_| StorageError::Closed)?;
        answer.await.map_err(|_| StorageError::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(StorageError::backend)?
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the queue lets the writer answer what is queued and exit.
        self.writes.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn last_outbox_position(db: &Database) -> Result<u64, StorageError> {
    let txn = db.begin_read().map_err(StorageError::backend)?;
    let table = txn.open_table(OUTBOX).map_err(StorageError::backend)?;
    Ok(table
        .last()
        .map_err(StorageError::backend)?
        .map(|(k, _)| k.value())
        .unwrap_or(0))
}

struct Writer {
    db: Arc<Database>,
    next_outbox: u64,
    stats: Arc<WriterStats>,
}

impl Writer {
    fn run(mut self, mut queue: mpsc::Receiver<WriteOp>) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while let Some(first) = queue.blocking_recv() {
            group.push(first);
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(op) => group.push(op),
                    Err(_) => break,
                }
            }
            let outcome = self.commit_group(&group);
            self.stats.commits.fetch_add(1, Ordering::Relaxed);
            self.stats
                .writes
                .fetch_add(group.len() as u64, Ordering::Relaxed);
            match outcome {
                Ok(results) => {
                    for (op, result) in group.drain(..).zip(results) {
                        let _ = op.reply.send(result);
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, writes = group.len(), "journal commit failed");
                    for op in group.drain(..) {
                        let _ = op.reply.send(Err(StorageError::Backend(err.to_string())));
                    }
                }
            }
        }
    }

    /// Applies a group in one transaction. The outer error fails the whole group (nothing was
    /// committed); inner errors belong to single writes that were skipped.
    fn commit_group(
        &mut self,
        group: &[WriteOp],
    ) -> Result<Vec<Result<Written, StorageError>>, StorageError> {
        let first_outbox = self.next_outbox;
        let mut txn = self.db.begin_write().map_err(StorageError::backend)?;
        txn.set_durability(Durability::Immediate)
            .map_err(StorageError::backend)?;
        let mut results = Vec::with_capacity(group.len());
        for op in group {
            let result = match &op.write {
                Write::Append(request) => self.append(&txn, request).map(Written::Appended),
                Write::Snapshot { stream, snapshot } => {
                    save_snapshot(&txn, stream, snapshot).map(|()| Written::Done)
                }
                Write::Put { table, key, value } => {
                    put(&txn, *table, key, Some(value)).map(|()| Written::Done)
                }
                Write::Delete { table, key } => {
                    put(&txn, *table, key, None).map(|()| Written::Done)
                }
                Write::Cas {
                    table,
                    key,
                    expected,
                    new,
                } => cas(&txn, *table, key, expected.as_deref(), new.as_deref())
                    .map(Written::Swapped),
            };
            match result {
                Err(err @ (StorageError::Conflict { .. } | StorageError::Invalid(_))) => {
                    results.push(Err(err))
                }
                Err(err) => {
                    self.next_outbox = first_outbox;
                    return Err(err);
                }
                Ok(written) => results.push(Ok(written)),
            }
        }
        if let Err(err) = txn.commit() {
            self.next_outbox = first_outbox;
            return Err(StorageError::backend(err));
        }
        Ok(results)
    }

    fn append(
        &mut self,
        txn: &WriteTransaction,
        request: &AppendRequest,
    ) -> Result<u64, StorageError> {
        if request.stream.is_empty() {
            return Err(StorageError::Invalid("empty stream name".into()));
        }
        if request.events.is_empty() {
            return Err(StorageError::Invalid("append without events".into()));
        }
        let mut heads = txn.open_table(HEADS).map_err(StorageError::backend)?;
        let actual = heads
            .get(request.stream.as_str())
            .map_err(StorageError::backend)?
            .map_or(0, |v| v.value());
        if actual != request.expected_seq {
            return Err(StorageError::Conflict {
                stream: request.stream.clone(),
                expected: request.expected_seq,
                actual,
            });
        }
        let first = actual + 1;
        let last = actual + request.events.len() as u64;
        heads
            .insert(request.stream.as_str(), last)
            .map_err(StorageError::backend)?;
        let mut journal = txn.open_table(JOURNAL).map_err(StorageError::backend)?;
        let framed = frame(&request.events);
        journal
            .insert((request.stream.as_str(), first), framed.as_slice())
            .map_err(StorageError::backend)?;
        if !request.outbox.is_empty() {
            let mut outbox = txn.open_table(OUTBOX).map_err(StorageError::backend)?;
            for record in &request.outbox {
                outbox
                    .insert(
                        self.next_outbox,
                        (
                            record.event_id.as_str(),
                            record.topic.as_str(),
                            record.payload.as_slice(),
                        ),
                    )
                    .map_err(StorageError::backend)?;
                self.next_outbox += 1;
            }
        }
        for write in &request.puts {
            put(txn, write.table, &write.key, write.value.as_deref())?;
        }
        Ok(last)
    }
}

fn save_snapshot(
    txn: &WriteTransaction,
    stream: &str,
    snapshot: &Snapshot,
) -> Result<(), StorageError> {
    let mut table = txn.open_table(SNAPSHOTS).map_err(StorageError::backend)?;
    let newer = table
        .get(stream)
        .map_err(StorageError::backend)?
        .is_some_and(|v| v.value().0 > snapshot.seq);
    if !newer {
        table
            .insert(stream, (snapshot.seq, snapshot.state.as_slice()))
            .map_err(StorageError::backend)?;
    }
    Ok(())
}

fn put(
    txn: &WriteTransaction,
    table: Table,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(), StorageError> {
    let mut table = txn
        .open_table(kv_table(table))
        .map_err(StorageError::backend)?;
    match value {
        Some(value) => table.insert(key, value).map(drop),
        None => table.remove(key).map(drop),
    }
    .map_err(StorageError::backend)
}

fn cas(
    txn: &WriteTransaction,
    table: Table,
    key: &[u8],
    expected: Option<&[u8]>,
    new: Option<&[u8]>,
) -> Result<bool, StorageError> {
    let current = {
        let table = txn
            .open_table(kv_table(table))
            .map_err(StorageError::backend)?;
        table
            .get(key)
            .map_err(StorageError::backend)?
            .map(|v| v.value().to_vec())
    };
    if current.as_deref() != expected {
        return Ok(false);
    }
    put(txn, table, key, new)?;
    Ok(true)
}

/// `[count: u32][len: u32, bytes]*`, little endian.
fn frame(events: &[Vec<u8>]) -> Vec<u8> {
    let size = 4 + events.iter().map(|e| 4 + e.len()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for event in events {
        out.extend_from_slice(&(event.len() as u32).to_le_bytes());
        out.extend_from_slice(event);
    }
    out
}

fn unframe<'a>(stream: &str, mut bytes: &'a [u8]) -> Result<Vec<&'a [u8]>, StorageError> {
    let corrupt = || StorageError::Corrupt(format!("journal of {stream}"));
    let take_u32 = |bytes: &mut &[u8]| -> Result<usize, StorageError> {
        let (head, rest) = bytes.split_first_chunk::<4>().ok_or_else(corrupt)?;
        *bytes = rest;
        Ok(u32::from_le_bytes(*head) as usize)
    };
    let count = take_u32(&mut bytes)?;
    let mut events = Vec::with_capacity(count);
    for _ in 0..count {
        let len = take_u32(&mut bytes)?;
        if bytes.len() < len {
            return Err(corrupt());
        }
        let (event, rest) = bytes.split_at(len);
        events.push(event);
        bytes = rest;
    }
    if !bytes.is_empty() {
        return Err(corrupt());
    }
    Ok(events)
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn append(&self, request: AppendRequest) -> Result<u64, StorageError> {
        match self.write(Write::Append(request)).await? {
            Written::Appended(last) => Ok(last),
            other => Err(StorageError::Backend(format!(
                "writer answered {other:?} to an append"
            ))),
        }
    }

    async fn read_events(
        &self,
        stream: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        let stream = stream.to_owned();
        self.read(move |db| {
            let txn = db.begin_read().map_err(StorageError::backend)?;
            let journal = txn.open_table(JOURNAL).map_err(StorageError::backend)?;
            let from_seq = from_seq.max(1);
            // The record holding `from_seq` is the last one starting at or before it.
            let start = journal
                .range((stream.as_str(), 0)..=(stream.as_str(), from_seq))
                .map_err(StorageError::backend)?
                .next_back()
                .transpose()
                .map_err(StorageError::backend)?
                .map_or(from_seq, |(k, _)| k.value().1);
            let mut out = Vec::new();
            for entry in journal
                .range((stream.as_str(), start)..=(stream.as_str(), u64::MAX))
                .map_err(StorageError::backend)?
            {
                let (key, value) = entry.map_err(StorageError::backend)?;
                let first = key.value().1;
                for (i, payload) in unframe(&stream, value.value())?.into_iter().enumerate() {
                    let seq = first + i as u64;
                    if seq < from_seq {
                        continue;
                    }
                    if out.len() == limit {
                        return Ok(out);
                    }
                    out.push(StoredEvent {
                        seq,
                        payload: payload.to_vec(),
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> Result<(), StorageError> {
        self.write(Write::Snapshot {
            stream: stream.to_owned(),
            snapshot,
        })
        .await
        .map(drop)
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StorageError> {
        let stream = stream.to_owned();
        self.read(move |db| {
            let txn = db.begin_read().map_err(StorageError::backend)?;
            let table = txn.open_table(SNAPSHOTS).map_err(StorageError::backend)?;
            Ok(table
                .get(stream.as_str())
                .map_err(StorageError::backend)?
                .map(|v| {
                    let (seq, state) = v.value();
                    Snapshot {
                        seq,
                        state: state.to_vec(),
                    }
                }))
        })
        .await
    }

    async fn read_outbox(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StorageError> {
        self.read(move |db| {
            let txn = db.begin_read().map_err(StorageError::backend)?;
            let table = txn.open_table(OUTBOX).map_err(StorageError::backend)?;
            let mut out = Vec::new();
            for entry in table
                .range(after.saturating_add(1)..)
                .map_err(StorageError::backend)?
                .take(limit)
            {
                let (position, value) = entry.map_err(StorageError::backend)?;
                let (event_id, topic, payload) = value.value();
                out.push(OutboxEntry {
                    position: position.value(),
                    record: OutboxRecord {
                        event_id: event_id.to_owned(),
                        topic: topic.to_owned(),
                        payload: payload.to_vec(),
                    },
                });
            }
            Ok(out)
        })
        .await
    }

    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let key = key.to_vec();
        self.read(move |db| {
            let txn = db.begin_read().map_err(StorageError::backend)?;
            let table = txn
                .open_table(kv_table(table))
                .map_err(StorageError::backend)?;
            Ok(table
                .get(key.as_slice())
                .map_err(StorageError::backend)?
                .map(|v| v.value().to_vec()))
        })
        .await
    }

    async fn put(&self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.write(Write::Put {
            table,
            key: key.to_vec(),
            value: value.to_vec(),
        })
        .await
        .map(drop)
    }

    async fn delete(&self, table: Table, key: &[u8]) -> Result<(), StorageError> {
        self.write(Write::Delete {
            table,
            key: key.to_vec(),
        })
        .await
        .map(drop)
    }

    async fn compare_and_swap(
        &self,
        table: Table,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StorageError> {
        let write = Write::Cas {
            table,
            key: key.to_vec(),
            expected: expected.map(<[u8]>::to_vec),
            new: new.map(<[u8]>::to_vec),
        };
        match self.write(write).await? {
            Written::Swapped(swapped) => Ok(swapped),
            other => Err(StorageError::Backend(format!(
                "writer answered {other:?} to a swap"
            ))),
        }
    }

    async fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
        let prefix = prefix.to_vec();
        let start_after = start_after.map(<[u8]>::to_vec);
        self.read(move |db| {
            let txn = db.begin_read().map_err(StorageError::backend)?;
            let table = txn
                .open_table(kv_table(table))
                .map_err(StorageError::backend)?;
            let lower = match &start_after {
                Some(after) if after.as_slice() >= prefix.as_slice() => {
                    std::ops::Bound::Excluded(after.as_slice())
                }
                _ => std::ops::Bound::Included(prefix.as_slice()),
            };
            let mut out = Vec::new();
            let range = table
                .range::<&[u8]>((lower, std::ops::Bound::Unbounded))
                .map_err(StorageError::backend)?;
            for entry in range {
                let (key, value) = entry.map_err(StorageError::backend)?;
                if !key.value().starts_with(&prefix) || out.len() == limit {
                    break;
                }
                out.push((key.value().to_vec(), value.value().to_vec()));
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use super::EmbeddedStore;
    use crate::conformance::Harness;
    use crate::{AppendRequest, Store};

    /// A fresh temporary directory per store; kept on disk until the test process ends.
    #[derive(Debug)]
    struct Embedded;

    impl Harness for Embedded {
        async fn fresh_location() -> String {
            let dir = tempfile::tempdir().expect("temp dir").keep();
            dir.to_string_lossy().into_owned()
        }

        async fn open(location: &str) -> Arc<dyn Store> {
            Arc::new(
                EmbeddedStore::open(location.as_ref())
                    .await
                    .expect("open embedded store"),
            )
        }
    }

    crate::store_conformance_tests!(Embedded);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_arriving_together_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
        let appends = 2_000;
        let tasks: Vec<_> = (0..appends)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .append(AppendRequest {
                            stream: format!("s/{i}"),
                            expected_seq: 0,
                            events: vec![vec![1, 2, 3]],
                            outbox: vec![],
                            puts: vec![],
                        })
                        .await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), 1);
        }
        let commits = store.stats().commits.load(Ordering::Relaxed);
        assert_eq!(store.stats().writes.load(Ordering::Relaxed), appends);
        assert!(
            commits < appends / 2,
            "{commits} commits for {appends} concurrent appends"
        );
    }
}
