//! The ScyllaDB backend, for large clusters. Written against ScyllaDB's documented CQL semantics;
//! its conformance suite runs when `SCYLLA_URI` names a server (none could run where it was
//! written: see the README).
//!
//! - **Appends** are one conditional (lightweight-transaction) batch on the stream's partition of
//!   `journal`: every event row plus the static column `head`, all under `IF head = <expected>`
//!   (`null` for a new stream). Paxos decides each batch once, so of racing writers exactly one
//!   succeeds, and an event is never partial. Stock is never a CQL counter.
//! - **Outbox records and keyed writes** cannot join that batch (a conditional batch stays in one
//!   partition), so they ride in it as an `effects` blob on the append's last row, with their
//!   outbox positions already assigned, and are written to `outbox` and `kv` right after it; the
//!   append is acknowledged only then, and the static column `applied` records it. A writer that
//!   dies in between leaves `applied < head`: the next reader of the stream (an entity recovering
//!   always reads to the end) writes the same effects again, under the same keys.
//! - **Outbox positions** are `microseconds << 8` (strictly increasing within a process), in
//!   buckets of about a minute. A reader answers only positions older than [`OUTBOX_SETTLE`], so
//!   appends in flight and clocks that differ by less than that cannot be skipped.
//! - **Fences**: the shard's lease is read with serial consistency before the batch. The read and
//!   the batch are two Paxos rounds, so a lease move between them lets a stale writer append once;
//!   the expected-sequence condition still makes every append linearizable (PostgreSQL closes
//!   that window with a row lock).
//! - The keyspace is made without tablets (ScyllaDB versions with tablets do not run lightweight
//!   transactions on them).
//! - **Snapshots** are written with `USING TIMESTAMP <seq>`, so the newest wins whatever the
//!   order of the writes. Keyed tables are one partition per table.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::response::query_result::QueryResult;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::{CqlValue, MaybeUnset, Row};
use serde::{Deserialize, Serialize};

use crate::{
    AppendRequest, KeyedWrite, Lease, OutboxEntry, OutboxRecord, Snapshot, StorageError, Store,
    StoredEvent, Table,
};

const SCHEMA_VERSION: i32 = 1;
/// How old an outbox position must be before a reader answers it.
pub const OUTBOX_SETTLE: Duration = Duration::from_secs(5);
/// Outbox positions per bucket: `2^34` units of `2^-8` µs, about 67 s.
const BUCKET_BITS: u32 = 34;

fn backend(err: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(err.to_string())
}

/// `scylla://[user:password@]host:port[,host:port...]/keyspace[?replication_factor=N]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    nodes: Vec<String>,
    keyspace: String,
    credentials: Option<(String, String)>,
    replication_factor: u32,
}

fn parse_url(url: &str) -> Result<Target, StorageError> {
    let invalid = |why: &str| StorageError::Invalid(format!("store url: {why}"));
    let rest = url.strip_prefix("scylla://").ok_or_else(|| invalid("not scylla://"))?;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, keyspace) = rest.split_once('/').ok_or_else(|| invalid("no keyspace"))?;
    let valid_name = keyspace.len() <= 48
        && keyspace.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && keyspace.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        return Err(invalid(
            "the keyspace must be a letter then letters, digits or _ (48 at most)",
        ));
    }
    let (credentials, hosts) = match authority.rsplit_once('@') {
        Some((user, hosts)) => {
            let (user, password) =
                user.split_once(':').ok_or_else(|| invalid("user without password"))?;
            (Some((user.to_owned(), password.to_owned())), hosts)
        }
        None => (None, authority),
    };
    let nodes: Vec<String> =
        hosts.split(',').filter(|h| !h.is_empty()).map(str::to_owned).collect();
    if nodes.is_empty() {
        return Err(invalid("no host"));
    }
    let mut replication_factor = 1;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("replication_factor", n)) => {
                replication_factor = n
                    .parse()
                    .ok()
                    .filter(|n| (1..=9).contains(n))
                    .ok_or_else(|| invalid("replication_factor is 1 to 9"))?;
            }
            _ => return Err(invalid(&format!("unknown parameter `{pair}`"))),
        }
    }
    Ok(Target { nodes, keyspace: keyspace.to_owned(), credentials, replication_factor })
}

async fn connect(target: &Target) -> Result<Session, StorageError> {
    let mut builder = SessionBuilder::new().known_nodes(&target.nodes);
    if let Some((user, password)) = &target.credentials {
        builder = builder.user(user, password);
    }
    builder.build().await.map_err(backend)
}

/// The schema, one statement each, in `keyspace`.
fn schema(keyspace: &str) -> Vec<String> {
    [
        "CREATE TABLE IF NOT EXISTS {ks}.storefront_schema (id int PRIMARY KEY, version int)",
        "CREATE TABLE IF NOT EXISTS {ks}.journal (stream text, seq bigint, payload blob, \
         effects blob, head bigint static, applied bigint static, PRIMARY KEY (stream, seq))",
        "CREATE TABLE IF NOT EXISTS {ks}.snapshots (stream text PRIMARY KEY, seq bigint, state blob)",
        "CREATE TABLE IF NOT EXISTS {ks}.outbox (bucket bigint, position bigint, event_id text, \
         topic text, payload blob, PRIMARY KEY (bucket, position))",
        "CREATE TABLE IF NOT EXISTS {ks}.outbox_buckets (id int, bucket bigint, \
         PRIMARY KEY (id, bucket))",
        "CREATE TABLE IF NOT EXISTS {ks}.kv (tbl text, key blob, value blob, PRIMARY KEY (tbl, key))",
        "CREATE TABLE IF NOT EXISTS {ks}.shard_leases (shard int PRIMARY KEY, owner text, epoch bigint)",
    ]
    .iter()
    .map(|s| s.replace("{ks}", keyspace))
    .collect()
}

/// Creates the keyspace (if missing) and applies the schema to the store at `url`.
pub async fn migrate(url: &str) -> Result<(), StorageError> {
    let target = parse_url(url)?;
    let session = connect(&target).await?;
    let keyspace = format!(
        "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = \
         {{'class': 'NetworkTopologyStrategy', 'replication_factor': {}}}",
        target.keyspace, target.replication_factor
    );
    // Lightweight transactions need a keyspace without tablets on the ScyllaDB versions that
    // have them; a version without tablets refuses the option, and needs none.
    let without_tablets = format!("{keyspace} AND tablets = {{'enabled': false}}");
    match session.query_unpaged(without_tablets, ()).await {
        Ok(_) => {}
        Err(e) if e.to_string().to_lowercase().contains("tablets") => {
            session.query_unpaged(keyspace, ()).await.map_err(backend)?;
        }
        Err(e) => return Err(backend(e)),
    }
    for statement in schema(&target.keyspace) {
        session.query_unpaged(statement, ()).await.map_err(backend)?;
    }
    let version = format!(
        "INSERT INTO {}.storefront_schema (id, version) VALUES (0, {SCHEMA_VERSION})",
        target.keyspace
    );
    session.query_unpaged(version, ()).await.map_err(backend)?;
    Ok(())
}

/// What an append writes besides its events, with its outbox positions assigned.
#[derive(Debug, Serialize, Deserialize)]
struct Effects {
    outbox: Vec<(i64, String, String, Vec<u8>)>,
    puts: Vec<KeyedWrite>,
}

struct Statements {
    append_row: PreparedStatement,
    head_of: PreparedStatement,
    effects_of: PreparedStatement,
    mark_applied: PreparedStatement,
    read_events: PreparedStatement,
    save_snapshot: PreparedStatement,
    load_snapshot: PreparedStatement,
    outbox_insert: PreparedStatement,
    bucket_insert: PreparedStatement,
    buckets_from: PreparedStatement,
    outbox_read: PreparedStatement,
    outbox_drop_bucket: PreparedStatement,
    bucket_forget: PreparedStatement,
    outbox_trim: PreparedStatement,
    get: PreparedStatement,
    serial_get: PreparedStatement,
    put: PreparedStatement,
    delete: PreparedStatement,
    insert_absent: PreparedStatement,
    update_if: PreparedStatement,
    delete_if: PreparedStatement,
    scan_from: PreparedStatement,
    scan_from_below: PreparedStatement,
    scan_after: PreparedStatement,
    scan_after_below: PreparedStatement,
    leases: PreparedStatement,
    lease_of: PreparedStatement,
    lease_new: PreparedStatement,
    lease_move: PreparedStatement,
}

impl Statements {
    async fn prepare(session: &Session, ks: &str) -> Result<Self, StorageError> {
        let prepare = |cql: String, serial: bool| async move {
            let mut statement = session.prepare(cql).await.map_err(backend)?;
            statement.set_consistency(Consistency::Quorum);
            if serial {
                statement.set_consistency(Consistency::Serial);
            }
            statement.set_serial_consistency(Some(SerialConsistency::Serial));
            Ok::<_, StorageError>(statement)
        };
        let scan = |lower: &str, upper: bool| {
            format!(
                "SELECT key, value FROM {ks}.kv WHERE tbl = ? AND key {lower} ? {} LIMIT ?",
                if upper { "AND key < ?" } else { "" }
            )
        };
        Ok(Self {
            append_row: prepare(
                format!(
                    "UPDATE {ks}.journal SET payload = ?, effects = ?, head = ? \
                     WHERE stream = ? AND seq = ? IF head = ?"
                ),
                false,
            )
            .await?,
            head_of: prepare(
                format!("SELECT head, applied FROM {ks}.journal WHERE stream = ? LIMIT 1"),
                true,
            )
            .await?,
            effects_of: prepare(
                format!("SELECT effects FROM {ks}.journal WHERE stream = ? AND seq = ?"),
                false,
            )
            .await?,
            // Timestamped with the head it records, so a late repair never moves it back.
            mark_applied: prepare(
                format!("UPDATE {ks}.journal USING TIMESTAMP ? SET applied = ? WHERE stream = ?"),
                false,
            )
            .await?,
            read_events: prepare(
                format!("SELECT seq, payload FROM {ks}.journal WHERE stream = ? AND seq >= ?"),
                false,
            )
            .await?,
            save_snapshot: prepare(
                format!(
                    "INSERT INTO {ks}.snapshots (stream, seq, state) VALUES (?, ?, ?) \
                     USING TIMESTAMP ?"
                ),
                false,
            )
            .await?,
            load_snapshot: prepare(
                format!("SELECT seq, state FROM {ks}.snapshots WHERE stream = ?"),
                false,
            )
            .await?,
            outbox_insert: prepare(
                format!(
                    "INSERT INTO {ks}.outbox (bucket, position, event_id, topic, payload) \
                     VALUES (?, ?, ?, ?, ?)"
                ),
                false,
            )
            .await?,
            bucket_insert: prepare(
                format!("INSERT INTO {ks}.outbox_buckets (id, bucket) VALUES (0, ?)"),
                false,
            )
            .await?,
            buckets_from: prepare(
                format!("SELECT bucket FROM {ks}.outbox_buckets WHERE id = 0 AND bucket >= ?"),
                false,
            )
            .await?,
            outbox_read: prepare(
                format!(
                    "SELECT position, event_id, topic, payload FROM {ks}.outbox \
                     WHERE bucket = ? AND position > ? AND position <= ? LIMIT ?"
                ),
                false,
            )
            .await?,
            outbox_drop_bucket: prepare(format!("DELETE FROM {ks}.outbox WHERE bucket = ?"), false)
                .await?,
            bucket_forget: prepare(
                format!("DELETE FROM {ks}.outbox_buckets WHERE id = 0 AND bucket = ?"),
                false,
            )
            .await?,
            outbox_trim: prepare(
                format!("DELETE FROM {ks}.outbox WHERE bucket = ? AND position <= ?"),
                false,
            )
            .await?,
            get: prepare(format!("SELECT value FROM {ks}.kv WHERE tbl = ? AND key = ?"), false)
                .await?,
            serial_get: prepare(
                format!("SELECT value FROM {ks}.kv WHERE tbl = ? AND key = ?"),
                true,
            )
            .await?,
            put: prepare(format!("INSERT INTO {ks}.kv (tbl, key, value) VALUES (?, ?, ?)"), false)
                .await?,
            delete: prepare(format!("DELETE FROM {ks}.kv WHERE tbl = ? AND key = ?"), false)
                .await?,
            insert_absent: prepare(
                format!("INSERT INTO {ks}.kv (tbl, key, value) VALUES (?, ?, ?) IF NOT EXISTS"),
                false,
            )
            .await?,
            update_if: prepare(
                format!("UPDATE {ks}.kv SET value = ? WHERE tbl = ? AND key = ? IF value = ?"),
                false,
            )
            .await?,
            delete_if: prepare(
                format!("DELETE FROM {ks}.kv WHERE tbl = ? AND key = ? IF value = ?"),
                false,
            )
            .await?,
            scan_from: prepare(scan(">=", false), false).await?,
            scan_from_below: prepare(scan(">=", true), false).await?,
            scan_after: prepare(scan(">", false), false).await?,
            scan_after_below: prepare(scan(">", true), false).await?,
            leases: prepare(format!("SELECT shard, owner, epoch FROM {ks}.shard_leases"), false)
                .await?,
            lease_of: prepare(
                format!("SELECT owner, epoch FROM {ks}.shard_leases WHERE shard = ?"),
                true,
            )
            .await?,
            lease_new: prepare(
                format!(
                    "INSERT INTO {ks}.shard_leases (shard, owner, epoch) VALUES (?, ?, 1) \
                     IF NOT EXISTS"
                ),
                false,
            )
            .await?,
            lease_move: prepare(
                format!(
                    "UPDATE {ks}.shard_leases SET owner = ?, epoch = ? WHERE shard = ? IF epoch = ?"
                ),
                false,
            )
            .await?,
        })
    }
}

/// A store in one ScyllaDB keyspace.
pub struct ScyllaStore {
    session: Session,
    statements: Statements,
    /// The last outbox position this process assigned.
    last_position: std::sync::Mutex<i64>,
}

impl std::fmt::Debug for ScyllaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaStore").finish_non_exhaustive()
    }
}

fn limit_param(limit: usize) -> i32 {
    i32::try_from(limit).unwrap_or(i32::MAX)
}

fn micros_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

fn bucket_of(position: i64) -> i64 {
    position >> BUCKET_BITS
}

/// The outcome of a conditional statement: whether it applied, and the row's `column` as found
/// (ScyllaDB answers `[applied]` first, then the columns of the condition).
fn lwt_outcome(
    result: QueryResult,
    column: &str,
) -> Result<(bool, Option<CqlValue>), StorageError> {
    let rows = result.into_rows_result().map_err(backend)?;
    let specs = rows.column_specs();
    let applied_at = specs.get_by_name("[applied]").map(|(i, _)| i).unwrap_or(0);
    let column_at = specs.get_by_name(column).map(|(i, _)| i);
    let row: Row = rows.first_row().map_err(backend)?;
    let applied = row
        .columns
        .get(applied_at)
        .cloned()
        .flatten()
        .and_then(|v| v.as_boolean())
        .ok_or_else(|| StorageError::Corrupt("lightweight transaction answer".into()))?;
    let value = column_at.and_then(|i| row.columns.get(i).cloned().flatten());
    Ok((applied, value))
}

impl ScyllaStore {
    /// Connects to the keyspace at `url`, whose schema [`migrate`] must have applied.
    pub async fn open(url: &str) -> Result<Self, StorageError> {
        let target = parse_url(url)?;
        let session = connect(&target).await?;
        let query =
            format!("SELECT version FROM {}.storefront_schema WHERE id = 0", target.keyspace);
        let version = match session.query_unpaged(query, ()).await {
            Ok(result) => result
                .into_rows_result()
                .map_err(backend)?
                .maybe_first_row::<(i32,)>()
                .map_err(backend)?
                .map(|(v,)| v),
            // A keyspace or table that does not exist yet: not migrated.
            Err(e)
                if e.to_string().contains("unconfigured table")
                    || e.to_string().contains("does not exist") =>
            {
                None
            }
            Err(e) => return Err(backend(e)),
        };
        if version != Some(SCHEMA_VERSION) {
            return Err(StorageError::Schema(format!(
                "the ScyllaDB schema is at version {} and this build needs {SCHEMA_VERSION}: \
                 run `storefront migrate --store <url>`",
                version.map_or("none".to_owned(), |v| v.to_string())
            )));
        }
        let statements = Statements::prepare(&session, &target.keyspace).await?;
        Ok(Self { session, statements, last_position: std::sync::Mutex::new(0) })
    }

    /// A fresh outbox position, above every one this process gave before.
    fn next_position(&self) -> i64 {
        // Only ever held for this arithmetic; a poisoned lock still holds a usable number.
        let mut last = self.last_position.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *last = (*last + 1).max(micros_now() << 8);
        *last
    }

    /// Writes an append's outbox records and keyed writes (again, after a writer died: the same
    /// keys), then records that `stream` has them up to `head`.
    async fn apply_effects(
        &self,
        stream: &str,
        head: i64,
        effects: &Effects,
    ) -> Result<(), StorageError> {
        let s = &self.statements;
        for (position, event_id, topic, payload) in &effects.outbox {
            self.session
                .execute_unpaged(&s.bucket_insert, (bucket_of(*position),))
                .await
                .map_err(backend)?;
            self.session
                .execute_unpaged(
                    &s.outbox_insert,
                    (bucket_of(*position), position, event_id, topic, payload),
                )
                .await
                .map_err(backend)?;
        }
        for write in &effects.puts {
            let name = write.table.name();
            match &write.value {
                Some(value) => {
                    self.session.execute_unpaged(&s.put, (name, &write.key, value)).await
                }
                None => self.session.execute_unpaged(&s.delete, (name, &write.key)).await,
            }
            .map_err(backend)?;
        }
        self.session
            .execute_unpaged(&s.mark_applied, (head, head, stream))
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// If the last append of `stream` was written but its effects were not (its writer died),
    /// writes them now.
    async fn repair(&self, stream: &str) -> Result<(), StorageError> {
        let s = &self.statements;
        let result = self.session.execute_unpaged(&s.head_of, (stream,)).await.map_err(backend)?;
        let rows = result.into_rows_result().map_err(backend)?;
        let Some((Some(head), applied)) =
            rows.maybe_first_row::<(Option<i64>, Option<i64>)>().map_err(backend)?
        else {
            return Ok(());
        };
        if applied.unwrap_or(0) >= head {
            return Ok(());
        }
        let result =
            self.session.execute_unpaged(&s.effects_of, (stream, head)).await.map_err(backend)?;
        let rows = result.into_rows_result().map_err(backend)?;
        let effects = match rows.maybe_first_row::<(Option<Vec<u8>>,)>().map_err(backend)? {
            Some((Some(bytes),)) => postcard::from_bytes::<Effects>(&bytes)
                .map_err(|_| StorageError::Corrupt(format!("effects of {stream}")))?,
            _ => Effects { outbox: Vec::new(), puts: Vec::new() },
        };
        self.apply_effects(stream, head, &effects).await
    }
}

#[async_trait]
impl Store for ScyllaStore {
    async fn append(&self, request: AppendRequest) -> Result<u64, StorageError> {
        crate::check_append(&request)?;
        let s = &self.statements;
        if let Some(fence) = request.fence {
            let shard = crate::shard_param(fence.shard)?;
            let result =
                self.session.execute_unpaged(&s.lease_of, (shard,)).await.map_err(backend)?;
            let rows = result.into_rows_result().map_err(backend)?;
            let held = rows.maybe_first_row::<(Option<String>, i64)>().map_err(backend)?;
            if !matches!(held, Some((Some(_), epoch)) if epoch == crate::seq_param(fence.epoch)?) {
                return Err(StorageError::Fenced { shard: fence.shard, epoch: fence.epoch });
            }
        }
        let expected = crate::seq_param(request.expected_seq)?;
        let head = expected + request.events.len() as i64;
        let effects = Effects {
            outbox: request
                .outbox
                .iter()
                .map(|r| {
                    (self.next_position(), r.event_id.clone(), r.topic.clone(), r.payload.clone())
                })
                .collect(),
            puts: request.puts.clone(),
        };
        let encoded = postcard::to_stdvec(&effects).map_err(backend)?;
        let condition = (expected > 0).then_some(expected);
        let mut batch = Batch::new(BatchType::Logged);
        batch.set_consistency(Consistency::Quorum);
        batch.set_serial_consistency(Some(SerialConsistency::Serial));
        let mut values = Vec::with_capacity(request.events.len());
        for (i, event) in request.events.iter().enumerate() {
            batch.append_statement(s.append_row.clone());
            let seq = expected + 1 + i as i64;
            let effects =
                if seq == head { MaybeUnset::Set(encoded.clone()) } else { MaybeUnset::Unset };
            values.push((event.clone(), effects, head, request.stream.as_str(), seq, condition));
        }
        let result = self.session.batch(&batch, values).await.map_err(backend)?;
        let (applied, found) = lwt_outcome(result, "head")?;
        if !applied {
            let actual = found.and_then(|v| v.as_bigint()).unwrap_or(0);
            return Err(StorageError::Conflict {
                stream: request.stream,
                expected: request.expected_seq,
                actual: crate::seq_of(actual, "stream head")?,
            });
        }
        self.apply_effects(&request.stream, head, &effects).await?;
        crate::seq_of(head, "stream head")
    }

    async fn read_events(
        &self,
        stream: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let from = crate::seq_param(from_seq)?;
        let pager = self
            .session
            .execute_iter(self.statements.read_events.clone(), (stream, from))
            .await
            .map_err(backend)?;
        let rows: Vec<(i64, Option<Vec<u8>>)> = pager
            .rows_stream::<(i64, Option<Vec<u8>>)>()
            .map_err(backend)?
            .take(limit)
            .try_collect()
            .await
            .map_err(backend)?;
        if rows.len() < limit {
            // A reader that reached the end finishes an append whose writer died.
            self.repair(stream).await?;
        }
        rows.into_iter()
            .map(|(seq, payload)| {
                Ok(StoredEvent {
                    seq: crate::seq_of(seq, stream)?,
                    payload: payload.unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> Result<(), StorageError> {
        let seq = crate::seq_param(snapshot.seq)?;
        self.session
            .execute_unpaged(&self.statements.save_snapshot, (stream, seq, &snapshot.state, seq))
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StorageError> {
        let result = self
            .session
            .execute_unpaged(&self.statements.load_snapshot, (stream,))
            .await
            .map_err(backend)?;
        let rows = result.into_rows_result().map_err(backend)?;
        rows.maybe_first_row::<(i64, Vec<u8>)>()
            .map_err(backend)?
            .map(|(seq, state)| Ok(Snapshot { seq: crate::seq_of(seq, stream)?, state }))
            .transpose()
    }

    /// Whole buckets below `up_to`'s go at once (partition deletes); in its own bucket, a range
    /// delete. Positions are time-based, so they never repeat.
    async fn trim_outbox(&self, up_to: u64) -> Result<(), StorageError> {
        let up_to = crate::seq_param(up_to)?;
        let s = &self.statements;
        let pager =
            self.session.execute_iter(s.buckets_from.clone(), (0_i64,)).await.map_err(backend)?;
        let buckets: Vec<(i64,)> =
            pager.rows_stream::<(i64,)>().map_err(backend)?.try_collect().await.map_err(backend)?;
        let last = bucket_of(up_to);
        for (bucket,) in buckets.into_iter().filter(|(b,)| *b <= last) {
            if bucket < last {
                self.session
                    .execute_unpaged(&s.outbox_drop_bucket, (bucket,))
                    .await
                    .map_err(backend)?;
                self.session.execute_unpaged(&s.bucket_forget, (bucket,)).await.map_err(backend)?;
            } else {
                self.session
                    .execute_unpaged(&s.outbox_trim, (bucket, up_to))
                    .await
                    .map_err(backend)?;
            }
        }
        Ok(())
    }

    async fn read_outbox(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StorageError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let after = crate::seq_param(after)?;
        let s = &self.statements;
        // Records not yet settled wait (at most the settling time) rather than be answered out
        // of order.
        let deadline = tokio::time::Instant::now() + OUTBOX_SETTLE;
        loop {
            let settled = (micros_now() - OUTBOX_SETTLE.as_micros() as i64) << 8;
            let pager = self
                .session
                .execute_iter(s.buckets_from.clone(), (bucket_of(after),))
                .await
                .map_err(backend)?;
            let buckets: Vec<(i64,)> = pager
                .rows_stream::<(i64,)>()
                .map_err(backend)?
                .try_collect()
                .await
                .map_err(backend)?;
            let mut out = Vec::new();
            let mut unsettled = false;
            for (bucket,) in buckets {
                let want = limit - out.len();
                let result = self
                    .session
                    .execute_unpaged(&s.outbox_read, (bucket, after, i64::MAX, limit_param(want)))
                    .await
                    .map_err(backend)?;
                let rows = result.into_rows_result().map_err(backend)?;
                for row in rows.rows::<(i64, String, String, Vec<u8>)>().map_err(backend)? {
                    let (position, event_id, topic, payload) = row.map_err(backend)?;
                    if position > settled {
                        unsettled = true;
                        break;
                    }
                    out.push(OutboxEntry {
                        position: crate::seq_of(position, "outbox position")?,
                        record: OutboxRecord { event_id, topic, payload },
                    });
                }
                if unsettled || out.len() >= limit {
                    break;
                }
            }
            if unsettled && out.len() < limit && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            return Ok(out);
        }
    }

    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let result = self
            .session
            .execute_unpaged(&self.statements.get, (table.name(), key))
            .await
            .map_err(backend)?;
        let rows = result.into_rows_result().map_err(backend)?;
        Ok(rows.maybe_first_row::<(Vec<u8>,)>().map_err(backend)?.map(|(v,)| v))
    }

    async fn put(&self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.session
            .execute_unpaged(&self.statements.put, (table.name(), key, value))
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn delete(&self, table: Table, key: &[u8]) -> Result<(), StorageError> {
        self.session
            .execute_unpaged(&self.statements.delete, (table.name(), key))
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn compare_and_swap(
        &self,
        table: Table,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StorageError> {
        let s = &self.statements;
        let name = table.name();
        let result = match (expected, new) {
            (None, Some(new)) => {
                self.session.execute_unpaged(&s.insert_absent, (name, key, new)).await
            }
            (Some(old), Some(new)) => {
                self.session.execute_unpaged(&s.update_if, (new, name, key, old)).await
            }
            (Some(old), None) => self.session.execute_unpaged(&s.delete_if, (name, key, old)).await,
            (None, None) => {
                let result = self
                    .session
                    .execute_unpaged(&s.serial_get, (name, key))
                    .await
                    .map_err(backend)?;
                let rows = result.into_rows_result().map_err(backend)?;
                return Ok(rows.maybe_first_row::<(Vec<u8>,)>().map_err(backend)?.is_none());
            }
        }
        .map_err(backend)?;
        Ok(lwt_outcome(result, "value")?.0)
    }

    async fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let s = &self.statements;
        let (name, limit) = (table.name(), limit_param(limit));
        let (lower, excluded, upper) = crate::scan_range(prefix, start_after);
        let session = &self.session;
        let result = match (excluded, upper) {
            (true, Some(end)) => {
                session.execute_unpaged(&s.scan_after_below, (name, lower, end, limit)).await
            }
            (true, None) => session.execute_unpaged(&s.scan_after, (name, lower, limit)).await,
            (false, Some(end)) => {
                session.execute_unpaged(&s.scan_from_below, (name, lower, end, limit)).await
            }
            (false, None) => session.execute_unpaged(&s.scan_from, (name, lower, limit)).await,
        }
        .map_err(backend)?;
        let rows = result.into_rows_result().map_err(backend)?;
        rows.rows::<(Vec<u8>, Vec<u8>)>()
            .map_err(backend)?
            .map(|row| row.map_err(backend))
            .collect()
    }

    async fn leases(&self) -> Result<Vec<Lease>, StorageError> {
        let pager =
            self.session.execute_iter(self.statements.leases.clone(), ()).await.map_err(backend)?;
        let rows: Vec<(i32, Option<String>, i64)> =
            pager.rows_stream().map_err(backend)?.try_collect().await.map_err(backend)?;
        let mut leases = rows
            .into_iter()
            .map(|(shard, owner, epoch)| {
                Ok(Lease {
                    shard: u32::try_from(shard)
                        .map_err(|_| StorageError::Corrupt("lease shard".into()))?,
                    owner,
                    epoch: crate::seq_of(epoch, "lease epoch")?,
                })
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        leases.sort_by_key(|l| l.shard);
        Ok(leases)
    }

    async fn set_lease(
        &self,
        shard: u32,
        expected_epoch: u64,
        owner: Option<&str>,
    ) -> Result<bool, StorageError> {
        crate::check_lease_owner(owner)?;
        let shard = crate::shard_param(shard)?;
        let s = &self.statements;
        let result = if expected_epoch == 0 {
            self.session.execute_unpaged(&s.lease_new, (shard, owner)).await
        } else {
            let expected = crate::seq_param(expected_epoch)?;
            self.session
                .execute_unpaged(&s.lease_move, (owner, expected + 1, shard, expected))
                .await
        }
        .map_err(backend)?;
        Ok(lwt_outcome(result, "epoch")?.0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{ScyllaStore, migrate, parse_url};
    use crate::Store;
    use crate::conformance::Harness;

    #[test]
    fn parses_store_urls() {
        let target = parse_url("scylla://u:p@a:9042,b:9042/shop?replication_factor=3").unwrap();
        assert_eq!(target.nodes, ["a:9042", "b:9042"]);
        assert_eq!(target.keyspace, "shop");
        assert_eq!(target.credentials, Some(("u".into(), "p".into())));
        assert_eq!(target.replication_factor, 3);
        for bad in
            ["scylla://a:9042", "scylla://a:9042/1shop", "scylla:///shop", "scylla://a/s?x=1"]
        {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    /// A keyspace per test on the server `SCYLLA_URI` names (`host:port`).
    #[derive(Debug)]
    struct Scylla;

    fn server() -> String {
        std::env::var("SCYLLA_URI").expect("SCYLLA_URI")
    }

    impl Harness for Scylla {
        async fn fresh_location() -> String {
            format!(
                "storefront_test_{}_{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
                    % 1_000_000_000_000
            )
        }

        async fn open(location: &str) -> Arc<dyn Store> {
            let url = format!("scylla://{}/{location}", server());
            migrate(&url).await.expect("migrate");
            Arc::new(ScyllaStore::open(&url).await.expect("open the scylla store"))
        }

        async fn remove(location: &str) {
            let target = parse_url(&format!("scylla://{}/{location}", server())).unwrap();
            let session = super::connect(&target).await.unwrap();
            session.query_unpaged(format!("DROP KEYSPACE {location}"), ()).await.unwrap();
        }
    }

    /// The conformance suite, when a server is configured; run with
    /// `SCYLLA_URI=127.0.0.1:9042 cargo test -p storefront-storage scylla -- --ignored`.
    mod conformance {
        crate::store_conformance_tests!(
            super::Scylla,
            #[ignore = "needs a ScyllaDB server: set SCYLLA_URI=host:port and pass --ignored"]
        );
    }
}
