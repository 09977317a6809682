//! The embedded backend: a `fjall` database under the data dir, for a single node.
//!
//! fjall was chosen over redb by the `journal_backends` benchmark (numbers in `BENCHMARKS.md`):
//! its write-ahead journal makes a durable commit cheaper than redb's copy-on-write B-tree commit.
//!
//! Group commit: every write goes through one writer thread. It takes every write waiting in its
//! queue (up to [`MAX_GROUP`]), applies them to one fjall write batch (later writes of a group see
//! earlier ones: see `GroupBatch`), commits it atomically with one fsync
//! (`PersistMode::SyncAll`), and only then answers each caller. A write that fails its own check
//! (a sequence conflict) is answered with that error and leaves the others of its group untouched.
//! Point reads (`get`, `load_snapshot`, a stream's head) run on the caller's thread; scans and
//! journal reads run on tokio's blocking pool (a journal read only when the stream's head shows
//! events to read). Both read a snapshot.
//!
//! The writer remembers the stream heads and shard leases it last wrote or read ([`Known`]): only
//! it writes them, so an append checks its expected sequence and its fence without a lookup in
//! the store (two per append, each a search of a memtable of every stream and, for a new stream,
//! of every table's filter). What it remembers is forgotten when a commit fails.
//!
//! Layout: `journal` holds one record per append, keyed `stream 0x00 first-seq(u64 BE)`, with the
//! framed events of that append; a stream's last sequence lives in `heads`. A read from sequence
//! `n` starts at the last record whose first sequence is at most `n`. Stream names may not
//! contain a NUL byte.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use async_trait::async_trait;
use fjall::{
    KeyspaceCreateOptions, PersistMode, Readable, SingleWriterTxDatabase, SingleWriterTxKeyspace,
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    AppendRequest, Lease, OutboxEntry, OutboxRecord, Snapshot, StorageError, Store, StoredEvent,
    Table,
};

/// Most writes one transaction takes.
pub const MAX_GROUP: usize = 8192;
/// Writes that may wait for the writer thread before callers are held back.
const QUEUE_DEPTH: usize = 65_536;
/// Most stream heads the writer remembers (about 100 bytes each); past it, it starts afresh.
const HEADS_KNOWN: usize = 100_000;

/// Counters of the writer thread, for tests and metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed (one fsync each).
    pub commits: AtomicU64,
    /// Writes answered.
    pub writes: AtomicU64,
}

/// The keyspaces of the database.
#[derive(Clone)]
struct Keyspaces {
    db: SingleWriterTxDatabase,
    journal: SingleWriterTxKeyspace,
    heads: SingleWriterTxKeyspace,
    snapshots: SingleWriterTxKeyspace,
    outbox: SingleWriterTxKeyspace,
    /// shard (u32 big endian) -> `[epoch u64 big endian][owner]` (no owner: released).
    leases: SingleWriterTxKeyspace,
    tables: Vec<(Table, SingleWriterTxKeyspace)>,
}

impl Keyspaces {
    fn table(&self, table: Table) -> &SingleWriterTxKeyspace {
        // Every `Table` gets a keyspace at open (`Table::ALL`), so the lookup cannot miss; the
        // fallback only keeps this total.
        self.tables.iter().find(|(t, _)| *t == table).map_or(&self.journal, |(_, ks)| ks)
    }
}

/// The embedded store. Cheap to share behind an `Arc`; dropping the last handle stops the writer
/// thread after it has answered every queued write.
pub struct EmbeddedStore {
    keyspaces: Keyspaces,
    writes: Option<mpsc::Sender<WriteOp>>,
    writer: Option<JoinHandle<()>>,
    stats: Arc<WriterStats>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").field("stats", &self.stats).finish()
    }
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
    /// Removes these outbox positions.
    TrimOutbox(Vec<u64>),
    Cas {
        table: Table,
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    },
    Lease {
        shard: u32,
        expected_epoch: u64,
        owner: Option<String>,
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

fn journal_key(stream: &str, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 9);
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn u64_of(bytes: &[u8], what: &str) -> Result<u64, StorageError> {
    let head: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StorageError::Corrupt(what.into()))?;
    Ok(u64::from_be_bytes(head))
}

/// Largest memtable of the journal before it is flushed to a table.
const JOURNAL_MEMTABLE_BYTES: u64 = 16 * 1024 * 1024;
/// Largest memtable of a keyspace every checkout writes (heads, outbox, order lists, keys).
const BUSY_MEMTABLE_BYTES: u64 = 4 * 1024 * 1024;
/// Largest memtable of any other keyspace.
const MEMTABLE_BYTES: u64 = 2 * 1024 * 1024;

/// The memtable size of table `table`: what a node's memtables may hold is their sum (22
/// keyspaces at fjall's 64 MiB default would be 1.4 GiB).
fn memtable_bytes(table: Table) -> u64 {
    match table {
        Table::Orders | Table::OrdersByUser | Table::IdempotencyKeys | Table::OpenOrders => {
            BUSY_MEMTABLE_BYTES
        }
        _ => MEMTABLE_BYTES,
    }
}

/// fjall's flush and compaction threads (fjall's own default from four cores up). Its default
/// on two cores is two, and then its first worker, which leaves compactions to the others so as
/// to be free for flushes, takes a queued compaction and queues it again for as long as no other
/// worker is free: a busy loop after most flushes (each queues one compaction per worker), which
/// took 5.5% of the node's CPU in a third checkout run, more as the store grew. With three workers
/// to compact, it loops only while all three are busy (BENCHMARKS.md, Step 8, third part). One
/// worker would not loop, but can deadlock: it would wait to queue a flush on a channel full of
/// rotation requests that only it reads.
const FJALL_WORKERS: usize = 4;

impl EmbeddedStore {
    /// Opens (or creates) the store under `data_dir`.
    pub async fn open(data_dir: &Path) -> Result<Self, StorageError> {
        let path = data_dir.join("store");
        let keyspaces = tokio::task::spawn_blocking(move || -> Result<Keyspaces, StorageError> {
            let db = SingleWriterTxDatabase::builder(&path)
                .worker_threads(FJALL_WORKERS)
                .open()
                .map_err(StorageError::backend)?;
            // Smaller memtables than fjall's 64 MiB default, sized by how much each keyspace is
            // written: with 22 keyspaces the default lets memtables alone take over a gigabyte,
            // and lookups in them slow as they grow. (A keyspace keeps the size it was created
            // with.)
            let open = |name: &str, bytes: u64| {
                db.keyspace(name, || KeyspaceCreateOptions::default().max_memtable_size(bytes))
                    .map_err(StorageError::backend)
            };
            let tables = Table::ALL
                .iter()
                .map(|t| Ok((*t, open(t.name(), memtable_bytes(*t))?)))
                .collect::<Result<_, StorageError>>()?;
            Ok(Keyspaces {
                journal: open("journal", JOURNAL_MEMTABLE_BYTES)?,
                heads: open("heads", BUSY_MEMTABLE_BYTES)?,
                snapshots: open("snapshots", BUSY_MEMTABLE_BYTES)?,
                outbox: open("outbox", BUSY_MEMTABLE_BYTES)?,
                leases: open("leases", MEMTABLE_BYTES)?,
                tables,
                db,
            })
        })
        .await
        .map_err(StorageError::backend)??;
        let next_outbox = match keyspaces.outbox.inner().last_key_value() {
            Some(guard) => u64_of(&guard.key().map_err(StorageError::backend)?, "outbox key")? + 1,
            None => 1,
        };
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let stats = Arc::new(WriterStats::default());
        let writer = Writer {
            keyspaces: keyspaces.clone(),
            next_outbox,
            known: Known::new(HEADS_KNOWN),
            stats: stats.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("storefront-journal".into())
            .spawn(move || writer.run(rx))
            .map_err(StorageError::backend)?;
        Ok(Self { keyspaces, writes: Some(tx), writer: Some(writer), stats })
    }

    /// The writer thread's counters.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    async fn write(&self, write: Write) -> Result<Written, StorageError> {
        let (reply, answer) = oneshot::channel();
        let writes = self.writes.as_ref().ok_or(StorageError::Closed)?;
        writes.send(WriteOp { write, reply }).await.map_err(|_| StorageError::Closed)?;
        answer.await.map_err(|_| StorageError::Closed)?
    }

    /// A point read, on the caller's thread: it is a memtable or block-cache hit almost always,
    /// and handing it to another thread and back costs more than the read itself (the flash-sale
    /// profile in BENCHMARKS.md). Reads that may touch many blocks use [`EmbeddedStore::read`].
    fn point_read<T>(
        &self,
        f: impl FnOnce(&Keyspaces, &fjall::Snapshot) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let snapshot = self.keyspaces.db.read_tx();
        f(&self.keyspaces, &snapshot)
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Keyspaces, &fjall::Snapshot) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let keyspaces = self.keyspaces.clone();
        tokio::task::spawn_blocking(move || {
            let snapshot = keyspaces.db.read_tx();
            f(&keyspaces, &snapshot)
        })
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

struct Writer {
    keyspaces: Keyspaces,
    next_outbox: u64,
    known: Known,
    stats: Arc<WriterStats>,
}

/// The stream heads and shard leases as the writer last wrote or read them, including the writes
/// of the group under way. Only the writer writes heads and leases, so these are the stored
/// values as long as every group they saw commits: on a failed commit they are forgotten. Heads
/// are bounded (past `max_heads` they are forgotten together before a group, never within one,
/// where they are the only record of the group's heads; the busy streams come back with their
/// next append); leases are one per shard.
#[derive(Debug, Default)]
struct Known {
    heads: HashMap<String, u64>,
    max_heads: usize,
    /// shard -> (epoch, whether it has an owner).
    leases: HashMap<u32, (u64, bool)>,
}

impl Known {
    fn new(max_heads: usize) -> Self {
        Self { max_heads, ..Self::default() }
    }

    fn note_head(&mut self, stream: &str, last: u64) {
        if let Some(head) = self.heads.get_mut(stream) {
            *head = last;
            return;
        }
        self.heads.insert(stream.to_owned(), last);
    }

    /// Forgets the heads once past the bound: between groups, never within one, where they are
    /// what later appends read back of earlier ones.
    fn start_group(&mut self) {
        if self.heads.len() >= self.max_heads {
            self.heads.clear();
        }
    }

    fn forget(&mut self) {
        self.heads.clear();
        self.leases.clear();
    }
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
            self.stats.writes.fetch_add(group.len() as u64, Ordering::Relaxed);
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

    /// Applies a group in one atomic batch. The outer error fails the whole group (nothing was
    /// committed); inner errors belong to single writes that were skipped.
    fn commit_group(
        &mut self,
        group: &[WriteOp],
    ) -> Result<Vec<Result<Written, StorageError>>, StorageError> {
        let first_outbox = self.next_outbox;
        self.known.start_group();
        let ks = self.keyspaces.clone();
        let mut batch = GroupBatch::new(&ks, group.len());
        let mut results = Vec::with_capacity(group.len());
        for op in group {
            let result = match &op.write {
                Write::Append(request) => self.append(&mut batch, request).map(Written::Appended),
                Write::Snapshot { stream, snapshot } => {
                    batch.save_snapshot(stream, snapshot).map(|()| Written::Done)
                }
                Write::Put { table, key, value } => {
                    batch.put(*table, key, Some(value));
                    Ok(Written::Done)
                }
                Write::Delete { table, key } => {
                    batch.put(*table, key, None);
                    Ok(Written::Done)
                }
                Write::TrimOutbox(positions) => {
                    for position in positions {
                        batch.batch.remove(ks.outbox.inner(), position.to_be_bytes().as_slice());
                    }
                    Ok(Written::Done)
                }
                Write::Cas { table, key, expected, new } => batch
                    .cas(*table, key, expected.as_deref(), new.as_deref())
                    .map(Written::Swapped),
                Write::Lease { shard, expected_epoch, owner } => self
                    .set_lease(&mut batch, *shard, *expected_epoch, owner.as_deref())
                    .map(Written::Swapped),
            };
            match result {
                Err(
                    err @ (StorageError::Conflict { .. }
                    | StorageError::Fenced { .. }
                    | StorageError::Invalid(_)),
                ) => results.push(Err(err)),
                Err(err) => {
                    self.next_outbox = first_outbox;
                    self.known.forget();
                    return Err(err);
                }
                Ok(written) => results.push(Ok(written)),
            }
        }
        if let Err(err) = batch.batch.commit() {
            self.next_outbox = first_outbox;
            self.known.forget();
            return Err(StorageError::backend(err));
        }
        Ok(results)
    }

    fn append<'g>(
        &mut self,
        batch: &mut GroupBatch<'g>,
        request: &'g AppendRequest,
    ) -> Result<u64, StorageError> {
        crate::check_append(request)?;
        if let Some(fence) = request.fence {
            let held = self.lease(fence.shard)?;
            if !matches!(held, Some((epoch, true)) if epoch == fence.epoch) {
                return Err(StorageError::Fenced { shard: fence.shard, epoch: fence.epoch });
            }
        }
        let ks = &self.keyspaces;
        let actual = match self.known.heads.get(&request.stream) {
            Some(head) => *head,
            None => match ks
                .heads
                .inner()
                .get(request.stream.as_bytes())
                .map_err(StorageError::backend)?
            {
                Some(v) => u64_of(v.as_ref(), "stream head")?,
                None => 0,
            },
        };
        if actual != request.expected_seq {
            return Err(StorageError::Conflict {
                stream: request.stream.clone(),
                expected: request.expected_seq,
                actual,
            });
        }
        let first = actual + 1;
        let last = actual + request.events.len() as u64;
        let writes = &mut batch.batch;
        writes.insert(ks.heads.inner(), request.stream.as_bytes(), last.to_be_bytes().as_slice());
        self.known.note_head(&request.stream, last);
        writes.insert(
            ks.journal.inner(),
            journal_key(&request.stream, first),
            frame(&request.events),
        );
        for record in &request.outbox {
            writes.insert(
                ks.outbox.inner(),
                self.next_outbox.to_be_bytes().as_slice(),
                encode_outbox(record),
            );
            self.next_outbox += 1;
        }
        for write in &request.puts {
            batch.put(write.table, &write.key, write.value.as_deref());
        }
        Ok(last)
    }

    /// A shard's lease as `(epoch, has an owner)`, if it was ever set. Leases set in the group
    /// under way are known.
    fn lease(&mut self, shard: u32) -> Result<Option<(u64, bool)>, StorageError> {
        if let Some(lease) = self.known.leases.get(&shard) {
            return Ok(Some(*lease));
        }
        let stored = self
            .keyspaces
            .leases
            .inner()
            .get(shard.to_be_bytes().as_slice())
            .map_err(StorageError::backend)?
            .map(|value| decode_lease(&value))
            .transpose()?
            .map(|(epoch, owner)| (epoch, owner.is_some()));
        if let Some(lease) = stored {
            self.known.leases.insert(shard, lease);
        }
        Ok(stored)
    }

    fn set_lease(
        &mut self,
        batch: &mut GroupBatch<'_>,
        shard: u32,
        expected_epoch: u64,
        owner: Option<&str>,
    ) -> Result<bool, StorageError> {
        let epoch = self.lease(shard)?.map_or(0, |(epoch, _)| epoch);
        if epoch != expected_epoch {
            return Ok(false);
        }
        let mut value = (epoch + 1).to_be_bytes().to_vec();
        value.extend_from_slice(owner.unwrap_or_default().as_bytes());
        batch.batch.insert(self.keyspaces.leases.inner(), shard.to_be_bytes().as_slice(), value);
        self.known.leases.insert(shard, (epoch + 1, owner.is_some()));
        Ok(true)
    }
}

/// A table and a key in it.
type TableKey<'g> = (Table, &'g [u8]);

/// One group's writes: the fjall batch that commits them atomically, and those a later write of
/// the group reads back (the batch itself cannot be read before it commits): table entries, for
/// a compare-and-swap, and snapshots' sequences. Stream heads and leases are read back from
/// [`Known`]; nothing else is read by a write. (A fjall write transaction would read its own
/// writes, but it stages each in a memtable of its own before the same batch: twice the
/// inserts, on the writer thread every durable write waits for; BENCHMARKS.md, Step 8, seventh
/// part.)
struct GroupBatch<'g> {
    ks: &'g Keyspaces,
    batch: fjall::OwnedWriteBatch,
    /// Table entries written so far in this group, in order (`None`: removed).
    tables: Vec<(TableKey<'g>, Option<&'g [u8]>)>,
    /// The same by key, built when a write of the group first reads one back (most groups never
    /// do, and hashing every write cost 8,600 instructions per checkout).
    tables_by_key: Option<HashMap<TableKey<'g>, Option<&'g [u8]>>>,
    /// Snapshots saved so far in this group: stream -> its sequence.
    snapshots: HashMap<&'g str, u64>,
}

impl<'g> GroupBatch<'g> {
    fn new(ks: &'g Keyspaces, writes: usize) -> Self {
        Self {
            ks,
            batch: fjall::OwnedWriteBatch::with_capacity(ks.db.inner().clone(), writes)
                .durability(Some(PersistMode::SyncAll)),
            tables: Vec::new(),
            tables_by_key: None,
            snapshots: HashMap::new(),
        }
    }

    fn put(&mut self, table: Table, key: &'g [u8], value: Option<&'g [u8]>) {
        let keyspace = self.ks.table(table).inner();
        match value {
            Some(value) => self.batch.insert(keyspace, key, value),
            None => self.batch.remove(keyspace, key),
        }
        match &mut self.tables_by_key {
            Some(by_key) => {
                by_key.insert((table, key), value);
            }
            None => self.tables.push(((table, key), value)),
        }
    }

    /// A table entry as this group has left it so far.
    fn get(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let tables = &mut self.tables;
        let by_key = self.tables_by_key.get_or_insert_with(|| tables.drain(..).collect());
        match by_key.get(&(table, key)) {
            Some(written) => Ok(written.map(<[u8]>::to_vec)),
            None => Ok(self
                .ks
                .table(table)
                .inner()
                .get(key)
                .map_err(StorageError::backend)?
                .map(|v| v.to_vec())),
        }
    }

    fn cas(
        &mut self,
        table: Table,
        key: &'g [u8],
        expected: Option<&[u8]>,
        new: Option<&'g [u8]>,
    ) -> Result<bool, StorageError> {
        if self.get(table, key)?.as_deref() != expected {
            return Ok(false);
        }
        self.put(table, key, new);
        Ok(true)
    }

    /// Saves a snapshot unless a newer one of its stream is saved.
    fn save_snapshot(&mut self, stream: &'g str, snapshot: &Snapshot) -> Result<(), StorageError> {
        let saved = match self.snapshots.get(stream) {
            Some(seq) => Some(*seq),
            None => match self
                .ks
                .snapshots
                .inner()
                .get(stream.as_bytes())
                .map_err(StorageError::backend)?
            {
                Some(v) => Some(u64_of(v.as_ref(), "snapshot")?),
                None => None,
            },
        };
        if saved.is_none_or(|seq| seq <= snapshot.seq) {
            let mut value = snapshot.seq.to_be_bytes().to_vec();
            value.extend_from_slice(&snapshot.state);
            self.batch.insert(self.ks.snapshots.inner(), stream.as_bytes(), value);
            self.snapshots.insert(stream, snapshot.seq);
        }
        Ok(())
    }
}

fn decode_lease(value: &[u8]) -> Result<(u64, Option<String>), StorageError> {
    let epoch = u64_of(value, "lease")?;
    let owner = String::from_utf8(value[8..].to_vec())
        .map_err(|_| StorageError::Corrupt("lease owner".into()))?;
    Ok((epoch, (!owner.is_empty()).then_some(owner)))
}

/// `[len u32][event_id][len u32][topic][payload]`, little endian lengths.
fn encode_outbox(record: &OutboxRecord) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(8 + record.event_id.len() + record.topic.len() + record.payload.len());
    for part in [record.event_id.as_bytes(), record.topic.as_bytes()] {
        out.extend_from_slice(&(part.len() as u32).to_le_bytes());
        out.extend_from_slice(part);
    }
    out.extend_from_slice(&record.payload);
    out
}

fn decode_outbox(bytes: &[u8]) -> Result<OutboxRecord, StorageError> {
    let corrupt = || StorageError::Corrupt("outbox record".into());
    let mut rest = bytes;
    let mut part = || -> Result<String, StorageError> {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(corrupt)?;
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err(corrupt());
        }
        let (text, tail) = tail.split_at(len);
        rest = tail;
        String::from_utf8(text.to_vec()).map_err(|_| corrupt())
    };
    let event_id = part()?;
    let topic = part()?;
    Ok(OutboxRecord { event_id, topic, payload: rest.to_vec() })
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
            other => Err(StorageError::Backend(format!("writer answered {other:?} to an append"))),
        }
    }

    async fn read_events(
        &self,
        stream: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        // A stream's head says whether there is anything from `from_seq` on: a point read (its
        // bloom filters answer a new stream, such as every new order's, without touching a
        // table), where the scan below seeks into every table of the journal, more of them as
        // the store grows.
        let head = self.point_read(|ks, snapshot| {
            snapshot.get(ks.heads.inner(), stream.as_bytes()).map_err(StorageError::backend)
        })?;
        match head {
            None => return Ok(Vec::new()),
            Some(head) if u64_of(&head, "head")? < from_seq => return Ok(Vec::new()),
            Some(_) => {}
        }
        let stream = stream.to_owned();
        self.read(move |ks, snapshot| {
            let from_seq = from_seq.max(1);
            // The record holding `from_seq` is the last one starting at or before it.
            let start = match snapshot
                .range(ks.journal.inner(), journal_key(&stream, 0)..=journal_key(&stream, from_seq))
                .next_back()
            {
                Some(guard) => guard.key().map_err(StorageError::backend)?.to_vec(),
                None => journal_key(&stream, from_seq),
            };
            let mut out = Vec::new();
            for guard in snapshot.range(ks.journal.inner(), start..=journal_key(&stream, u64::MAX))
            {
                let (key, value) = guard.into_inner().map_err(StorageError::backend)?;
                let first = u64_of(&key[stream.len() + 1..], "journal key")?;
                for (i, payload) in unframe(&stream, &value)?.into_iter().enumerate() {
                    let seq = first + i as u64;
                    if seq < from_seq {
                        continue;
                    }
                    if out.len() == limit {
                        return Ok(out);
                    }
                    out.push(StoredEvent { seq, payload: payload.to_vec() });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> Result<(), StorageError> {
        self.write(Write::Snapshot { stream: stream.to_owned(), snapshot }).await.map(drop)
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StorageError> {
        self.point_read(|ks, snapshot| {
            match snapshot
                .get(ks.snapshots.inner(), stream.as_bytes())
                .map_err(StorageError::backend)?
            {
                Some(value) => Ok(Some(Snapshot {
                    seq: u64_of(&value, "snapshot")?,
                    state: value[8..].to_vec(),
                })),
                None => Ok(None),
            }
        })
    }

    async fn read_outbox(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StorageError> {
        self.read(move |ks, snapshot| {
            let from = after.saturating_add(1).to_be_bytes();
            let mut out = Vec::new();
            for guard in snapshot.range(ks.outbox.inner(), from.as_slice()..).take(limit) {
                let (key, value) = guard.into_inner().map_err(StorageError::backend)?;
                out.push(OutboxEntry {
                    position: u64_of(&key, "outbox key")?,
                    record: decode_outbox(&value)?,
                });
            }
            Ok(out)
        })
        .await
    }

    /// Keeps the newest record whatever `up_to` says: positions are counted on from it at the
    /// next open, so a trimmed-empty outbox would start them over.
    async fn trim_outbox(&self, up_to: u64) -> Result<(), StorageError> {
        loop {
            let positions = self
                .read(move |ks, snapshot| {
                    let newest = match snapshot.last_key_value(ks.outbox.inner()) {
                        Some(guard) => {
                            u64_of(&guard.key().map_err(StorageError::backend)?, "outbox key")?
                        }
                        None => return Ok(Vec::new()),
                    };
                    let last = up_to.min(newest.saturating_sub(1)).to_be_bytes();
                    let mut positions = Vec::new();
                    for guard in snapshot.range(ks.outbox.inner(), ..=last.as_slice()).take(10_000)
                    {
                        positions.push(u64_of(
                            &guard.key().map_err(StorageError::backend)?,
                            "outbox key",
                        )?);
                    }
                    Ok(positions)
                })
                .await?;
            if positions.is_empty() {
                return Ok(());
            }
            self.write(Write::TrimOutbox(positions)).await?;
        }
    }

    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.point_read(|ks, snapshot| {
            Ok(snapshot
                .get(ks.table(table).inner(), key)
                .map_err(StorageError::backend)?
                .map(|v| v.to_vec()))
        })
    }

    async fn put(&self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.write(Write::Put { table, key: key.to_vec(), value: value.to_vec() }).await.map(drop)
    }

    async fn delete(&self, table: Table, key: &[u8]) -> Result<(), StorageError> {
        self.write(Write::Delete { table, key: key.to_vec() }).await.map(drop)
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
            other => Err(StorageError::Backend(format!("writer answered {other:?} to a swap"))),
        }
    }

    async fn leases(&self) -> Result<Vec<Lease>, StorageError> {
        self.read(|ks, snapshot| {
            let mut out = Vec::new();
            for guard in snapshot.iter(ks.leases.inner()) {
                let (key, value) = guard.into_inner().map_err(StorageError::backend)?;
                let shard: [u8; 4] = key
                    .as_ref()
                    .try_into()
                    .map_err(|_| StorageError::Corrupt("lease key".into()))?;
                let (epoch, owner) = decode_lease(&value)?;
                out.push(Lease { shard: u32::from_be_bytes(shard), owner, epoch });
            }
            Ok(out)
        })
        .await
    }

    async fn set_lease(
        &self,
        shard: u32,
        expected_epoch: u64,
        owner: Option<&str>,
    ) -> Result<bool, StorageError> {
        crate::check_lease_owner(owner)?;
        let write = Write::Lease { shard, expected_epoch, owner: owner.map(str::to_owned) };
        match self.write(write).await? {
            Written::Swapped(set) => Ok(set),
            other => Err(StorageError::Backend(format!("writer answered {other:?} to a lease"))),
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
        self.read(move |ks, snapshot| {
            let lower = match start_after {
                Some(after) if after.as_slice() >= prefix.as_slice() => {
                    std::ops::Bound::Excluded(after)
                }
                _ => std::ops::Bound::Included(prefix.clone()),
            };
            let mut out = Vec::new();
            for guard in snapshot
                .range::<Vec<u8>, _>(ks.table(table).inner(), (lower, std::ops::Bound::Unbounded))
            {
                let (key, value) = guard.into_inner().map_err(StorageError::backend)?;
                if !key.starts_with(&prefix) || out.len() == limit {
                    break;
                }
                out.push((key.to_vec(), value.to_vec()));
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

    use super::{EmbeddedStore, Known};
    use crate::conformance::{Harness, append};
    use crate::{Snapshot, Store, Table};

    /// A fresh temporary directory per store, removed by the suite when a test is done.
    #[derive(Debug)]
    struct Embedded;

    impl Harness for Embedded {
        async fn fresh_location() -> String {
            let dir = tempfile::tempdir().expect("temp dir").keep();
            dir.to_string_lossy().into_owned()
        }

        async fn open(location: &str) -> Arc<dyn Store> {
            Arc::new(EmbeddedStore::open(location.as_ref()).await.expect("open embedded store"))
        }

        async fn remove(location: &str) {
            tokio::fs::remove_dir_all(location).await.expect("remove the test store");
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
                    store.append(append(&format!("s/{i}"), 0, &[&[1, 2, 3]])).await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), 1);
        }
        let commits = store.stats().commits.load(Ordering::Relaxed);
        assert_eq!(store.stats().writes.load(Ordering::Relaxed), appends);
        assert!(commits < appends / 2, "{commits} commits for {appends} concurrent appends");
    }

    /// A group is committed as one batch, which cannot be read before it commits: a write that
    /// reads (a compare-and-swap, a snapshot's check for a newer one) must still see the writes
    /// of its group before it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_of_one_group_see_the_writes_before_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
        let racers = 2_000u32;
        let swaps: Vec<_> = (0..racers)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mine = i.to_be_bytes();
                    let won = store
                        .compare_and_swap(Table::IdempotencyKeys, b"hot", None, Some(&mine))
                        .await
                        .unwrap();
                    store
                        .save_snapshot("s", Snapshot { seq: u64::from(i), state: mine.to_vec() })
                        .await
                        .unwrap();
                    won.then_some(mine)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for swap in swaps {
            winners.extend(swap.await.unwrap());
        }
        let commits = store.stats().commits.load(Ordering::Relaxed);
        assert!(commits < u64::from(racers), "{commits} commits: no group was shared");
        assert_eq!(winners.len(), 1, "of racing swaps from nothing, exactly one wins");
        let stored = store.get(Table::IdempotencyKeys, b"hot").await.unwrap();
        assert_eq!(stored.as_deref(), Some(&winners[0][..]));
        let newest = store.load_snapshot("s").await.unwrap().unwrap();
        assert_eq!(newest.seq, u64::from(racers - 1), "an older snapshot replaced a newer one");
    }

    /// Two writes of one key in one group: the later one is what is stored, before and after a
    /// reopen (which replays the journal's batches).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_key_written_twice_in_a_group_keeps_the_later_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
        let pairs = 500u32;
        let tasks: Vec<_> = (0..pairs)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let key = format!("k/{i}");
                    // `join` polls in order, so the put is queued before the delete.
                    let (put, delete) = tokio::join!(
                        store.put(Table::IdempotencyKeys, key.as_bytes(), b"v"),
                        store.delete(Table::IdempotencyKeys, key.as_bytes()),
                    );
                    put.unwrap();
                    delete.unwrap();
                    let stream = format!("s/{i}");
                    let (first, second) = tokio::join!(
                        store.append(append(&stream, 0, &[&[1]])),
                        store.append(append(&stream, 1, &[&[1]])),
                    );
                    assert_eq!((first.unwrap(), second.unwrap()), (1, 2));
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let (writes, commits) = (
            store.stats().writes.load(Ordering::Relaxed),
            store.stats().commits.load(Ordering::Relaxed),
        );
        assert!(commits < writes / 2, "{commits} commits for {writes} writes");
        let store = match Arc::try_unwrap(store) {
            Ok(store) => store,
            Err(_) => panic!("the store is still shared"),
        };
        drop(store);
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        for i in 0..pairs {
            let key = format!("k/{i}");
            assert_eq!(store.get(Table::IdempotencyKeys, key.as_bytes()).await.unwrap(), None);
            let head = store.append(append(&format!("s/{i}"), 2, &[&[1]])).await.unwrap();
            assert_eq!(head, 3, "stream s/{i}");
        }
    }

    #[test]
    fn remembers_a_bounded_number_of_stream_heads() {
        let mut known = Known::new(3);
        for (i, stream) in ["a", "b", "c"].into_iter().enumerate() {
            known.note_head(stream, i as u64 + 1);
        }
        // A head it holds is updated in place, even at the bound.
        known.note_head("a", 7);
        assert_eq!(known.heads.len(), 3);
        assert_eq!(known.heads.get("a"), Some(&7));
        // Within a group nothing is forgotten, past the bound too.
        known.note_head("d", 1);
        assert_eq!(known.heads.len(), 4);
        // Before the next group they are forgotten together (and read from the store again).
        known.start_group();
        assert!(known.heads.is_empty());
        known.note_head("e", 1);
        known.start_group();
        assert_eq!(known.heads.get("e"), Some(&1));
    }
}
