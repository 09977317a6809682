//! The PostgreSQL backend: the shared store of a multi-node cluster.
//!
//! It owns the schema (`postgres.sql`, applied by [`migrate`]) and a small set of pipelined
//! connections. Every write is one statement, so one transaction and one round trip: an append is
//! a call of the schema's `storefront_append` function, which checks the expected sequence against
//! the stream's head row (two racing writers serialize on that row; the loser writes nothing).
//! A write is acknowledged after PostgreSQL's commit, which is durable with the server's default
//! `synchronous_commit = on`. A server that stops answering fails the calls waiting on it within
//! about 10 s (TCP user timeout and keepalives), and the connection is replaced; a statement the
//! server does not finish within [`STATEMENT_TIMEOUT`] is cancelled by the server itself
//! (`statement_timeout`, unless the URL's `options` set one).
//!
//! Outbox positions are `(writing transaction id << 16) + index`, and [`Store::read_outbox`] only
//! answers rows of transactions older than every transaction still running, so a relay that reads
//! "after position p" never skips a row that commits later with a smaller position.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls, Statement};

use crate::{
    AppendRequest, Lease, OutboxEntry, OutboxRecord, Snapshot, StorageError, Store, StoredEvent,
    Table,
};

/// The schema version [`migrate`] writes and [`PostgresStore::open`] requires.
const SCHEMA_VERSION: i32 = 1;
const SCHEMA: &str = include_str!("postgres.sql");
/// Connections per store unless the URL says `pool_size=N`.
const DEFAULT_POOL_SIZE: usize = 8;
/// How long the server lets one statement run before it cancels it: far above any statement of
/// the store (an append, a page of reads, a trim of the outbox), far below a caller's patience.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Outbox records one append may carry (the low 16 bits of a position).
const MAX_OUTBOX_PER_APPEND: usize = 1 << 16;
/// How long a reader of the outbox waits at most for older transactions to end before it
/// answers the rows it can already vouch for.
const OUTBOX_SETTLE: Duration = Duration::from_secs(2);

/// A store in one PostgreSQL schema (the first of the connection's `search_path`).
pub struct PostgresStore {
    config: tokio_postgres::Config,
    slots: Vec<Mutex<Option<Arc<Conn>>>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("hosts", &self.config.get_hosts())
            .field("pool_size", &self.slots.len())
            .finish()
    }
}

/// One connection with its prepared statements.
struct Conn {
    client: Client,
    statements: Statements,
}

struct Statements {
    append: Statement,
    read_events: Statement,
    save_snapshot: Statement,
    load_snapshot: Statement,
    read_outbox: Statement,
    get: Statement,
    put: Statement,
    delete: Statement,
    insert_absent: Statement,
    update_if: Statement,
    delete_if: Statement,
    /// Scans: lower bound inclusive (the prefix) or exclusive (a cursor), with or without an
    /// upper bound (a prefix of only 0xFF bytes, or none, has no successor).
    scan_from: Statement,
    scan_from_below: Statement,
    scan_after: Statement,
    scan_after_below: Statement,
    leases: Statement,
    /// Sets a lease whose epoch is the expected one (no row: epoch 0).
    claim_new: Statement,
    claim: Statement,
}

impl Statements {
    async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        let scan = |lower: &str, upper: bool| {
            format!(
                "SELECT key, value FROM kv WHERE tbl = $1 AND key {lower} $2 {} ORDER BY key LIMIT $3",
                if upper { "AND key < $4" } else { "" }
            )
        };
        Ok(Self {
            append: client
                .prepare(
                    "SELECT applied, head, fenced \
                     FROM storefront_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .await?,
            read_events: client
                .prepare(
                    "SELECT seq, payload FROM journal WHERE stream = $1 AND seq >= $2 \
                     ORDER BY seq LIMIT $3",
                )
                .await?,
            save_snapshot: client
                .prepare(
                    "INSERT INTO snapshots (stream, seq, state) VALUES ($1, $2, $3) \
                     ON CONFLICT (stream) DO UPDATE SET seq = excluded.seq, state = excluded.state \
                     WHERE snapshots.seq < excluded.seq",
                )
                .await?,
            load_snapshot: client
                .prepare("SELECT seq, state FROM snapshots WHERE stream = $1")
                .await?,
            read_outbox: client
                .prepare(
                    "SELECT position, event_id, topic, payload, \
                     (position >> 16) < pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
                     FROM outbox WHERE position > $1 ORDER BY position LIMIT $2",
                )
                .await?,
            get: client.prepare("SELECT value FROM kv WHERE tbl = $1 AND key = $2").await?,
            put: client
                .prepare(
                    "INSERT INTO kv (tbl, key, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (tbl, key) DO UPDATE SET value = excluded.value",
                )
                .await?,
            delete: client.prepare("DELETE FROM kv WHERE tbl = $1 AND key = $2").await?,
            insert_absent: client
                .prepare(
                    "INSERT INTO kv (tbl, key, value) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .await?,
            update_if: client
                .prepare("UPDATE kv SET value = $4 WHERE tbl = $1 AND key = $2 AND value = $3")
                .await?,
            delete_if: client
                .prepare("DELETE FROM kv WHERE tbl = $1 AND key = $2 AND value = $3")
                .await?,
            scan_from: client.prepare(&scan(">=", false)).await?,
            scan_from_below: client.prepare(&scan(">=", true)).await?,
            scan_after: client.prepare(&scan(">", false)).await?,
            scan_after_below: client.prepare(&scan(">", true)).await?,
            leases: client
                .prepare("SELECT shard, owner, epoch FROM shard_leases ORDER BY shard")
                .await?,
            claim_new: client
                .prepare(
                    "INSERT INTO shard_leases (shard, owner, epoch) VALUES ($1, $2, 1) \
                     ON CONFLICT DO NOTHING",
                )
                .await?,
            claim: client
                .prepare(
                    "UPDATE shard_leases SET owner = $2, epoch = epoch + 1 \
                     WHERE shard = $1 AND epoch = $3",
                )
                .await?,
        })
    }
}

/// Splits our own `pool_size` parameter off a store URL; the rest is for `tokio-postgres`.
fn parse_url(url: &str) -> Result<(tokio_postgres::Config, usize), StorageError> {
    let invalid = |reason: String| StorageError::Invalid(format!("store url: {reason}"));
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut pool_size = DEFAULT_POOL_SIZE;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("pool_size", n)) => {
                pool_size = n
                    .parse()
                    .ok()
                    .filter(|n| (1..=256).contains(n))
                    .ok_or_else(|| invalid(format!("pool_size `{n}` is not 1 to 256")))?;
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() { base.to_owned() } else { format!("{base}?{}", rest.join("&")) };
    let mut config: tokio_postgres::Config =
        url.parse().map_err(|e: tokio_postgres::Error| invalid(e.to_string()))?;
    // A server that stops answering (a dead host, a cut link) fails the calls waiting on it in
    // seconds, and its connection is replaced, instead of TCP retrying for many minutes; the URL
    // may set its own.
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    let options = config.get_options().unwrap_or_default();
    if !options.contains("statement_timeout") {
        let timeout = STATEMENT_TIMEOUT.as_millis();
        config.options(format!("{options} -c statement_timeout={timeout}").trim());
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(Duration::from_secs(10));
    }
    if config.get_keepalives_interval().is_none() {
        config
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3);
    }
    Ok((config, pool_size))
}

async fn connect(config: &tokio_postgres::Config) -> Result<Client, StorageError> {
    let (client, connection) = config.connect(NoTls).await.map_err(StorageError::backend)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "postgres connection ended");
        }
    });
    Ok(client)
}

/// Applies the schema to the store at `url` (idempotent; concurrent runs wait for each other).
pub async fn migrate(url: &str) -> Result<(), StorageError> {
    let (config, _) = parse_url(url)?;
    let mut client = connect(&config).await?;
    let tx = client.transaction().await.map_err(StorageError::backend)?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('storefront_migrate'))", &[])
        .await
        .map_err(StorageError::backend)?;
    tx.batch_execute(SCHEMA).await.map_err(StorageError::backend)?;
    tx.execute("DELETE FROM storefront_schema", &[]).await.map_err(StorageError::backend)?;
    tx.execute("INSERT INTO storefront_schema (version) VALUES ($1)", &[&SCHEMA_VERSION])
        .await
        .map_err(StorageError::backend)?;
    tx.commit().await.map_err(StorageError::backend)
}

impl PostgresStore {
    /// Connects to the store at `url` (`postgres://user:password@host:port/db`, libpq parameters
    /// such as `options=-csearch_path%3Dshop` allowed, plus `pool_size=N`), whose schema
    /// [`migrate`] must have applied.
    pub async fn open(url: &str) -> Result<Self, StorageError> {
        let (config, pool_size) = parse_url(url)?;
        let client = connect(&config).await?;
        let version: Option<i32> = match client
            .query_opt("SELECT max(version) FROM storefront_schema", &[])
            .await
        {
            Ok(row) => row.and_then(|r| r.get(0)),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => None,
            Err(e) => return Err(StorageError::backend(e)),
        };
        if version != Some(SCHEMA_VERSION) {
            return Err(StorageError::Schema(format!(
                "the PostgreSQL schema is at version {} and this build needs {SCHEMA_VERSION}: \
                 run `storefront migrate --store <url>`",
                version.map_or("none".to_owned(), |v| v.to_string())
            )));
        }
        let statements = Statements::prepare(&client).await.map_err(StorageError::backend)?;
        let mut slots: Vec<_> = (0..pool_size).map(|_| Mutex::new(None)).collect();
        slots[0] = Mutex::new(Some(Arc::new(Conn { client, statements })));
        Ok(Self { config, slots, next: AtomicUsize::new(0) })
    }

    /// A live connection, round robin; a closed one is replaced.
    async fn conn(&self) -> Result<Arc<Conn>, StorageError> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let mut slot = slot.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.client.is_closed()) {
            return Ok(conn.clone());
        }
        let client = connect(&self.config).await?;
        let statements = Statements::prepare(&client).await.map_err(StorageError::backend)?;
        let conn = Arc::new(Conn { client, statements });
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[async_trait]
impl Store for PostgresStore {
    async fn append(&self, request: AppendRequest) -> Result<u64, StorageError> {
        crate::check_append(&request)?;
        if request.outbox.len() > MAX_OUTBOX_PER_APPEND {
            return Err(StorageError::Invalid(format!(
                "{} outbox records in one append (at most {MAX_OUTBOX_PER_APPEND})",
                request.outbox.len()
            )));
        }
        let expected = crate::seq_param(request.expected_seq)?;
        let events: Vec<&[u8]> = request.events.iter().map(Vec::as_slice).collect();
        let ids: Vec<&str> = request.outbox.iter().map(|r| r.event_id.as_str()).collect();
        let topics: Vec<&str> = request.outbox.iter().map(|r| r.topic.as_str()).collect();
        let payloads: Vec<&[u8]> = request.outbox.iter().map(|r| r.payload.as_slice()).collect();
        let tables: Vec<&str> = request.puts.iter().map(|w| w.table.name()).collect();
        let keys: Vec<&[u8]> = request.puts.iter().map(|w| w.key.as_slice()).collect();
        let values: Vec<Option<&[u8]>> = request.puts.iter().map(|w| w.value.as_deref()).collect();
        let fence_shard = request.fence.map(|f| crate::shard_param(f.shard)).transpose()?;
        let fence_epoch = request.fence.map(|f| crate::seq_param(f.epoch)).transpose()?;
        let conn = self.conn().await?;
        let row = conn
            .client
            .query_one(
                &conn.statements.append,
                &[
                    &request.stream,
                    &expected,
                    &events,
                    &ids,
                    &topics,
                    &payloads,
                    &tables,
                    &keys,
                    &values,
                    &fence_shard,
                    &fence_epoch,
                ],
            )
            .await
            .map_err(StorageError::backend)?;
        let applied: bool = row.get(0);
        if let (true, Some(fence)) = (row.get::<_, bool>(2), request.fence) {
            return Err(StorageError::Fenced { shard: fence.shard, epoch: fence.epoch });
        }
        let head = crate::seq_of(row.get(1), "stream head")?;
        if applied {
            Ok(head)
        } else {
            Err(StorageError::Conflict {
                stream: request.stream,
                expected: request.expected_seq,
                actual: head,
            })
        }
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
        let conn = self.conn().await?;
        let rows = conn
            .client
            .query(&conn.statements.read_events, &[&stream, &from, &limit_param(limit)])
            .await
            .map_err(StorageError::backend)?;
        rows.into_iter()
            .map(|row| {
                Ok(StoredEvent { seq: crate::seq_of(row.get(0), stream)?, payload: row.get(1) })
            })
            .collect()
    }

    async fn save_snapshot(&self, stream: &str, snapshot: Snapshot) -> Result<(), StorageError> {
        let seq = crate::seq_param(snapshot.seq)?;
        let conn = self.conn().await?;
        conn.client
            .execute(&conn.statements.save_snapshot, &[&stream, &seq, &snapshot.state])
            .await
            .map_err(StorageError::backend)?;
        Ok(())
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StorageError> {
        let conn = self.conn().await?;
        let row = conn
            .client
            .query_opt(&conn.statements.load_snapshot, &[&stream])
            .await
            .map_err(StorageError::backend)?;
        row.map(|row| Ok(Snapshot { seq: crate::seq_of(row.get(0), stream)?, state: row.get(1) }))
            .transpose()
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
        let deadline = tokio::time::Instant::now() + OUTBOX_SETTLE;
        let mut pause = Duration::from_millis(1);
        loop {
            let conn = self.conn().await?;
            let rows = conn
                .client
                .query(&conn.statements.read_outbox, &[&after, &limit_param(limit)])
                .await
                .map_err(StorageError::backend)?;
            let unsettled = rows.iter().any(|row| !row.get::<_, bool>(4));
            // A row of a transaction newer than one still running may be followed, once that
            // one commits, by a row with a smaller position: answer only the rows before it,
            // after waiting a little for the older transactions (appends are short; a long
            // transaction anywhere on the server holds the outbox back up to this wait).
            if unsettled && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
                continue;
            }
            return rows
                .into_iter()
                .take_while(|row| row.get::<_, bool>(4))
                .map(|row| {
                    Ok(OutboxEntry {
                        position: crate::seq_of(row.get(0), "outbox position")?,
                        record: OutboxRecord {
                            event_id: row.get(1),
                            topic: row.get(2),
                            payload: row.get(3),
                        },
                    })
                })
                .collect();
        }
    }

    async fn trim_outbox(&self, up_to: u64) -> Result<(), StorageError> {
        let up_to = crate::seq_param(up_to)?;
        let conn = self.conn().await?;
        conn.client
            .execute("DELETE FROM outbox WHERE position <= $1", &[&up_to])
            .await
            .map_err(StorageError::backend)?;
        Ok(())
    }

    async fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let conn = self.conn().await?;
        let row = conn
            .client
            .query_opt(&conn.statements.get, &[&table.name(), &key])
            .await
            .map_err(StorageError::backend)?;
        Ok(row.map(|row| row.get(0)))
    }

    async fn put(&self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        let conn = self.conn().await?;
        conn.client
            .execute(&conn.statements.put, &[&table.name(), &key, &value])
            .await
            .map_err(StorageError::backend)?;
        Ok(())
    }

    async fn delete(&self, table: Table, key: &[u8]) -> Result<(), StorageError> {
        let conn = self.conn().await?;
        conn.client
            .execute(&conn.statements.delete, &[&table.name(), &key])
            .await
            .map_err(StorageError::backend)?;
        Ok(())
    }

    async fn compare_and_swap(
        &self,
        table: Table,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StorageError> {
        let conn = self.conn().await?;
        let s = &conn.statements;
        let name = table.name();
        let changed = match (expected, new) {
            (None, Some(new)) => conn.client.execute(&s.insert_absent, &[&name, &key, &new]).await,
            (Some(old), Some(new)) => {
                conn.client.execute(&s.update_if, &[&name, &key, &old, &new]).await
            }
            (Some(old), None) => conn.client.execute(&s.delete_if, &[&name, &key, &old]).await,
            (None, None) => {
                let row = conn
                    .client
                    .query_opt(&s.get, &[&name, &key])
                    .await
                    .map_err(StorageError::backend)?;
                return Ok(row.is_none());
            }
        }
        .map_err(StorageError::backend)?;
        Ok(changed == 1)
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
        let conn = self.conn().await?;
        let s = &conn.statements;
        let (name, limit) = (table.name(), limit_param(limit));
        let (lower, excluded, upper) = crate::scan_range(prefix, start_after);
        let rows = match (excluded, upper) {
            (true, Some(end)) => {
                conn.client.query(&s.scan_after_below, &[&name, &lower, &limit, &end]).await
            }
            (true, None) => conn.client.query(&s.scan_after, &[&name, &lower, &limit]).await,
            (false, Some(end)) => {
                conn.client.query(&s.scan_from_below, &[&name, &lower, &limit, &end]).await
            }
            (false, None) => conn.client.query(&s.scan_from, &[&name, &lower, &limit]).await,
        }
        .map_err(StorageError::backend)?;
        Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    async fn leases(&self) -> Result<Vec<Lease>, StorageError> {
        let conn = self.conn().await?;
        let rows =
            conn.client.query(&conn.statements.leases, &[]).await.map_err(StorageError::backend)?;
        rows.into_iter()
            .map(|row| {
                Ok(Lease {
                    shard: u32::try_from(row.get::<_, i32>(0))
                        .map_err(|_| StorageError::Corrupt("lease shard".into()))?,
                    owner: row.get(1),
                    epoch: crate::seq_of(row.get(2), "lease epoch")?,
                })
            })
            .collect()
    }

    async fn set_lease(
        &self,
        shard: u32,
        expected_epoch: u64,
        owner: Option<&str>,
    ) -> Result<bool, StorageError> {
        crate::check_lease_owner(owner)?;
        let shard = crate::shard_param(shard)?;
        let conn = self.conn().await?;
        let s = &conn.statements;
        let changed = if expected_epoch == 0 {
            conn.client.execute(&s.claim_new, &[&shard, &owner]).await
        } else {
            conn.client
                .execute(&s.claim, &[&shard, &owner, &crate::seq_param(expected_epoch)?])
                .await
        }
        .map_err(StorageError::backend)?;
        Ok(changed == 1)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{PostgresStore, migrate};
    use crate::Store;
    use crate::conformance::Harness;
    use crate::prefix_end;

    /// The server the tests use: `TEST_POSTGRES_URL`, or the local one with trust auth.
    fn server_url() -> String {
        std::env::var("TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
    }

    fn in_schema(schema: &str) -> String {
        let url = server_url();
        let joiner = if url.contains('?') { '&' } else { '?' };
        format!("{url}{joiner}options=-csearch_path%3D{schema}")
    }

    async fn admin() -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&server_url(), tokio_postgres::NoTls)
            .await
            .expect("connect to the test PostgreSQL (TEST_POSTGRES_URL)");
        tokio::spawn(connection);
        client
    }

    /// A fresh schema per test, dropped by the suite when the test is done.
    #[derive(Debug)]
    struct Postgres;

    impl Harness for Postgres {
        async fn fresh_location() -> String {
            let schema = format!(
                "storefront_test_{}_{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            );
            admin().await.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
            schema
        }

        async fn open(location: &str) -> Arc<dyn Store> {
            let url = in_schema(location);
            migrate(&url).await.expect("migrate");
            Arc::new(PostgresStore::open(&url).await.expect("open the postgres store"))
        }

        async fn remove(location: &str) {
            admin().await.batch_execute(&format!("DROP SCHEMA {location} CASCADE")).await.unwrap();
        }
    }

    crate::store_conformance_tests!(Postgres);

    #[tokio::test]
    async fn refuses_a_schema_that_was_not_migrated() {
        let schema = Postgres::fresh_location().await;
        let err = PostgresStore::open(&in_schema(&schema)).await.unwrap_err();
        assert!(err.to_string().contains("storefront migrate"), "{err}");
        Postgres::remove(&schema).await;
    }

    #[tokio::test]
    async fn a_call_the_server_holds_fails_after_the_stores_timeout_and_works_once_free() {
        use crate::Table;
        let schema = Postgres::fresh_location().await;
        let timeout = std::time::Duration::from_millis(300);
        let store = crate::timed::Timed::new(Postgres::open(&schema).await, timeout);
        store.put(Table::Settings, b"k", b"v1").await.unwrap();
        // Another session holds the table: the store's write waits on its lock.
        let holder = admin().await;
        let lock = format!("BEGIN; LOCK TABLE {schema}.kv IN ACCESS EXCLUSIVE MODE");
        holder.batch_execute(&lock).await.unwrap();
        let err = store.put(Table::Settings, b"k", b"v2").await.unwrap_err();
        assert!(err.to_string().contains("did not answer within"), "{err}");
        holder.batch_execute("ROLLBACK").await.unwrap();
        store.put(Table::Settings, b"k", b"v3").await.unwrap();
        assert_eq!(store.get(Table::Settings, b"k").await.unwrap().as_deref(), Some(&b"v3"[..]));
        Postgres::remove(&schema).await;
    }

    #[tokio::test]
    async fn every_statement_runs_under_a_timeout_and_the_urls_options_are_kept() {
        let (config, _) = super::parse_url(&in_schema("storefront_probe")).unwrap();
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let show = |what: &'static str| {
            let client = &client;
            async move { client.query_one(what, &[]).await.unwrap().get::<_, String>(0) }
        };
        assert_eq!(show("SHOW statement_timeout").await, "30s");
        assert_eq!(show("SHOW search_path").await, "storefront_probe");
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"u1/"), Some(b"u10".to_vec()));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_end(b""), None);
    }
}
