//! Idempotency keys: the first final answer to a keyed request is stored durably with a hash of
//! the request, and a retry with the same key gets it back byte for byte.
//!
//! A retry whose request differs is refused (`/problems/idempotency-key-reused`, 422) for as
//! long as the key is kept. A duplicate that arrives while the first is still running is refused
//! rather than made to wait (`/problems/idempotency-in-progress`, 409, with `Retry-After`): the
//! client retries and then gets the stored answer. Two paths:
//! - [`IdempotencyKeys::begin`] (admin writes): the claim is written durably before the request
//!   runs and the answer before it is sent; a claim left behind by a crash is taken over after
//!   [`IdempotencyKeys::stale_after`]; [`IdempotencyKeys::release`] gives a claim up without an
//!   answer (outcome unknown), keeping the key bound to its request.
//! - [`IdempotencyKeys::begin_deferred`] (checkout, whose effects are keyed by an id derived from
//!   the key): nothing is written first; the claim record goes into the request's first atomic
//!   write, and [`IdempotencyKeys::finish`] stores the answer in the background after it is sent
//!   (never over an answer already stored); until it is stored, this node replays it from
//!   memory. A retry of a claim without an answer runs again at once and reaches the same
//!   effects (on another node: the same answer); on one node a duplicate in flight is refused.
//!
//! A key is honoured for [`RETENTION`] (24 hours); after that it may be used for a new request,
//! and [`IdempotencyKeys::sweep_expired`] (run hourly by the server) deletes it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use storefront_actors::Clock;
use storefront_storage::{KeyedWrite, Store, Table};
use tokio::sync::Notify;

/// How long a completed response is kept.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Why a keyed request cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdempotencyError {
    /// Not 1 to 255 printable ASCII characters.
    #[error("idempotency key must be 1 to 255 printable ASCII characters")]
    InvalidKey,
    /// The key was used for a different request.
    #[error("idempotency key reused with a different request")]
    Reused,
    /// The first request with this key is still running.
    #[error("a request with this idempotency key is in progress")]
    InProgress,
    /// The store failed.
    #[error("idempotency store failed: {0}")]
    Backend(String),
}

/// A response as it was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type` header.
    pub content_type: String,
    /// The body (JSON text).
    pub body: String,
}

/// What to do with a keyed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// First time: run it, then [`IdempotencyKeys::complete`] (or [`IdempotencyKeys::release`]).
    Run(Claim),
    /// Seen before: send this response again.
    Replay(StoredResponse),
}

/// The right to run a keyed request and store its response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    key: Vec<u8>,
    claimed: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// Unique per claim, so that two claims of one key in the same millisecond differ and a
    /// taken-over claim can never complete.
    claim_id: String,
    request_sha256: String,
    created_at_ms: u64,
    response: Option<StoredResponse>,
    /// Given up without a final response: a retry of the same request may run it again.
    #[serde(default)]
    released: bool,
}

/// Stores a deferred claim's record, unless an answer is stored already (a run that raced this
/// one stored it first: the first answer stays).
async fn store_answer(store: &dyn Store, claim: &Deferred) -> Result<(), IdempotencyError> {
    let value = serde_json::to_vec(&claim.record).map_err(backend)?;
    let claimed = claim.record.as_claimed()?;
    // The usual cases, without a read: over this claim's own record, or where none was written.
    for expected in [Some(claimed.as_slice()), None] {
        let stored = store
            .compare_and_swap(Table::IdempotencyKeys, &claim.key, expected, Some(&value))
            .await
            .map_err(backend)?;
        if stored {
            return Ok(());
        }
    }
    // Claimed before by another run.
    let current = store.get(Table::IdempotencyKeys, &claim.key).await.map_err(backend)?;
    if let Some(bytes) = &current
        && serde_json::from_slice::<Record>(bytes).is_ok_and(|r| r.response.is_some())
    {
        return Ok(());
    }
    let stored = store
        .compare_and_swap(Table::IdempotencyKeys, &claim.key, current.as_deref(), Some(&value))
        .await
        .map_err(backend)?;
    if stored { Ok(()) } else { Err(IdempotencyError::Backend("record changed meanwhile".into())) }
}

impl Record {
    /// The record as its claim was written, before any answer ([`ClaimWrite::write`]).
    fn as_claimed(&self) -> Result<Vec<u8>, IdempotencyError> {
        let claimed = Record { response: None, released: false, ..self.clone() };
        serde_json::to_vec(&claimed).map_err(backend)
    }

    /// A fresh claim of a key for `request`, at `now`.
    fn claim(request: &str, now: u64) -> Self {
        Self {
            claim_id: uuid::Uuid::now_v7().to_string(),
            request_sha256: request.to_owned(),
            created_at_ms: now,
            response: None,
            released: false,
        }
    }
}

/// The stored record of a key as it stands at `now` for `request`: `None` when there is none or
/// it has expired; refused when the key is bound to another request (for the whole retention).
fn live(
    stored: Option<&[u8]>,
    request: &str,
    now: u64,
) -> Result<Option<Record>, IdempotencyError> {
    let Some(bytes) = stored else { return Ok(None) };
    let record: Record = serde_json::from_slice(bytes).map_err(backend)?;
    if now.saturating_sub(record.created_at_ms) >= RETENTION.as_millis() as u64 {
        return Ok(None);
    }
    if record.request_sha256 != request {
        return Err(IdempotencyError::Reused);
    }
    // A 202 stored by an earlier version is no final answer: the request is asked again.
    if record.response.as_ref().is_some_and(|r| r.status == 202) {
        return Ok(Some(Record { response: None, released: true, ..record }));
    }
    Ok(Some(record))
}

/// A key's record as [`IdempotencyKeys::bound`] found it.
#[derive(Debug, Default)]
struct Seen {
    claimed: bool,
    replay: Option<StoredResponse>,
}

/// The durable table of idempotency keys.
#[derive(Debug, Clone)]
pub struct IdempotencyKeys {
    store: Arc<dyn Store>,
    clock: Clock,
    stale_after: Duration,
    /// Keys whose request runs on this node now, or whose answer is being stored (the deferred
    /// path, see [`Deferred`]).
    running: Running,
    /// Answers sent and not yet stored (see [`IdempotencyKeys::stored_all`]).
    unstored: Arc<(AtomicUsize, Notify)>,
}

/// The deferred path's keys on this node: the request each is bound to, and its answer once
/// sent (until the stored record takes over).
type Running = Arc<Mutex<HashMap<Vec<u8>, Local>>>;

#[derive(Debug)]
struct Local {
    request: String,
    answer: Option<StoredResponse>,
}

/// What to do with a keyed request on the deferred path.
#[derive(Debug)]
pub enum BeginDeferred {
    /// Run it: persist [`Deferred::claim_write`] atomically with the request's first effect,
    /// then [`IdempotencyKeys::finish`].
    Run(Deferred),
    /// Seen before: send this response again.
    Replay(StoredResponse),
}

/// A claim held in memory rather than written first: for a request whose effects are keyed by
/// an id derived from the idempotency key (a checkout's order id), so that running it again
/// after a crash reaches the same effects and gives the same answer. The claim record (binding
/// the key to the request) is written in the same atomic write as the request's first effect,
/// which then answers a retry; a response decided before any effect is stored after it is sent
/// ([`IdempotencyKeys::finish`]). A duplicate on this node meanwhile is refused.
#[derive(Debug)]
pub struct Deferred {
    key: Vec<u8>,
    record: Record,
    running: Running,
    claimed_before: bool,
}

impl Drop for Deferred {
    fn drop(&mut self) {
        // A poisoned set still holds whole keys.
        self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
    }
}

impl Deferred {
    /// Whether the key was claimed before without a stored answer: a retry of a request whose
    /// first run may have had effects (or a crash took its answer).
    pub fn claimed_before(&self) -> bool {
        self.claimed_before
    }

    /// The claim record, to write with the request's first effect.
    pub fn claim_write(&self) -> ClaimWrite {
        ClaimWrite { key: self.key.clone(), record: self.record.clone() }
    }
}

/// A deferred claim's record, serialized only if it is written: most attempts of a sale are
/// answered before any effect (out of stock), and then nothing is written under the key.
#[derive(Debug, Clone)]
pub struct ClaimWrite {
    key: Vec<u8>,
    record: Record,
}

impl ClaimWrite {
    /// The claim record as a write.
    pub fn write(&self) -> Result<KeyedWrite, IdempotencyError> {
        Ok(KeyedWrite {
            table: Table::IdempotencyKeys,
            key: self.key.clone(),
            value: Some(self.record.as_claimed()?),
        })
    }
}

fn backend(err: impl std::fmt::Display) -> IdempotencyError {
    IdempotencyError::Backend(err.to_string())
}

/// Whether `key` is a valid idempotency key: 1 to 255 printable ASCII characters.
pub fn valid_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// Where the record of `key` for the caller `scope` lives.
fn store_key(scope: &str, key: &str) -> Result<Vec<u8>, IdempotencyError> {
    if !valid_key(key) {
        return Err(IdempotencyError::InvalidKey);
    }
    Ok(format!("{scope}\n{key}").into_bytes())
}

/// SHA-256 of a request's identity (method, path, body), hex. (`sha2` uses the CPU's SHA
/// instructions where it has them: a checkout takes three of these.)
pub fn request_hash(method: &str, path: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    for part in [method.as_bytes(), b"\n", path.as_bytes(), b"\n", body] {
        hash.update(part);
    }
    hex::encode(hash.finalize())
}

impl IdempotencyKeys {
    /// Keys in `store`; an unfinished claim older than `stale_after` may be taken over.
    pub fn new(store: Arc<dyn Store>, clock: Clock, stale_after: Duration) -> Self {
        Self { store, clock, stale_after, running: Arc::default(), unstored: Arc::default() }
    }

    /// How long an unfinished claim blocks duplicates.
    pub fn stale_after(&self) -> Duration {
        self.stale_after
    }

    /// Claims `key` within `scope` (the caller) for a request with hash `request`, or returns
    /// the stored response of an earlier identical request.
    pub async fn begin(
        &self,
        scope: &str,
        key: &str,
        request: &str,
    ) -> Result<Begin, IdempotencyError> {
        let store_key = store_key(scope, key)?;
        let now = self.clock.now_ms();
        let fresh = serde_json::to_vec(&Record::claim(request, now)).map_err(backend)?;
        loop {
            let current =
                self.store.get(Table::IdempotencyKeys, &store_key).await.map_err(backend)?;
            if let Some(record) = live(current.as_deref(), request, now)? {
                let stale =
                    now.saturating_sub(record.created_at_ms) >= self.stale_after.as_millis() as u64;
                match record.response {
                    Some(response) => return Ok(Begin::Replay(response)),
                    None if !record.released && !stale => {
                        return Err(IdempotencyError::InProgress);
                    }
                    // Released, or left behind by a crash: this retry takes it over.
                    None => {}
                }
            }
            let claimed = self
                .store
                .compare_and_swap(
                    Table::IdempotencyKeys,
                    &store_key,
                    current.as_deref(),
                    Some(&fresh),
                )
                .await
                .map_err(backend)?;
            if claimed {
                return Ok(Begin::Run(Claim { key: store_key, claimed: fresh }));
            }
            // Someone else claimed or completed it meanwhile: look again.
        }
    }

    /// Stores the response of a claimed request, durably, before it is sent.
    pub async fn complete(
        &self,
        claim: Claim,
        response: StoredResponse,
    ) -> Result<(), IdempotencyError> {
        let mut record: Record = serde_json::from_slice(&claim.claimed).map_err(backend)?;
        record.response = Some(response);
        let done = serde_json::to_vec(&record).map_err(backend)?;
        let stored = self
            .store
            .compare_and_swap(Table::IdempotencyKeys, &claim.key, Some(&claim.claimed), Some(&done))
            .await
            .map_err(backend)?;
        if stored {
            Ok(())
        } else {
            Err(IdempotencyError::Backend("claim lost (taken over as stale)".into()))
        }
    }

    /// The deferred path's [`IdempotencyKeys::begin`]: nothing is written now (see [`Deferred`]).
    /// A duplicate running on another node is not seen here: both reach the same keyed effects
    /// and give the same answer.
    pub async fn begin_deferred(
        &self,
        scope: &str,
        key: &str,
        request: &str,
    ) -> Result<BeginDeferred, IdempotencyError> {
        let store_key = store_key(scope, key)?;
        let now = self.clock.now_ms();
        let seen = self.bound(&store_key, request, now).await?;
        if let Some(replay) = seen.replay {
            return Ok(BeginDeferred::Replay(replay));
        }
        {
            // A poisoned map still holds whole entries.
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            match running.get(&store_key) {
                Some(local) if local.request != request => return Err(IdempotencyError::Reused),
                Some(Local { answer: Some(answer), .. }) => {
                    return Ok(BeginDeferred::Replay(answer.clone()));
                }
                Some(Local { answer: None, .. }) => return Err(IdempotencyError::InProgress),
                None => {
                    let local = Local { request: request.to_owned(), answer: None };
                    running.insert(store_key.clone(), local);
                }
            }
        }
        let record = Record::claim(request, now);
        let claim = Deferred {
            key: store_key,
            record,
            running: self.running.clone(),
            claimed_before: seen.claimed,
        };
        if seen.claimed {
            // Claimed before: by a run still going on here (refused above), one that ended
            // without a final response, one on a node that stopped, or one whose answer was
            // stored since the read above: look again now that this key is ours here.
            if let Some(replay) = self.bound(&claim.key, request, now).await?.replay {
                return Ok(BeginDeferred::Replay(replay));
            }
        }
        Ok(BeginDeferred::Run(claim))
    }

    /// Ends a deferred claim: stores the final `response` (or, with `None`, releases the key for
    /// a retry of the same request), in the background, so the answer need not wait for it.
    /// Until the write is durable, a retry on this node is answered from memory.
    pub fn finish(&self, mut claim: Deferred, response: Option<StoredResponse>) {
        if let Some(local) =
            self.running.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&claim.key)
        {
            local.answer.clone_from(&response);
        }
        claim.record.released = response.is_none();
        claim.record.response = response;
        let store = self.store.clone();
        let unstored = self.unstored.clone();
        unstored.0.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let written = store_answer(&*store, &claim).await;
            if let Err(e) = written {
                // The effects are keyed: a retry recomputes the same answer from them.
                tracing::warn!(error = %e, "idempotency record not stored");
            }
            drop(claim);
            unstored.0.fetch_sub(1, Ordering::SeqCst);
            unstored.1.notify_waiters();
        });
    }

    /// Waits until every answer already sent on the deferred path is stored (a stopping node
    /// waits for this before it closes the store).
    pub async fn stored_all(&self) {
        let (count, notify) = &*self.unstored;
        loop {
            let notified = notify.notified();
            if count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// What the store says of `key` for `request`: refused if bound to another request, else its
    /// stored answer, and whether it was claimed at all (unexpired records only).
    async fn bound(&self, key: &[u8], request: &str, now: u64) -> Result<Seen, IdempotencyError> {
        let current = self.store.get(Table::IdempotencyKeys, key).await.map_err(backend)?;
        Ok(match live(current.as_deref(), request, now)? {
            Some(record) => Seen { claimed: true, replay: record.response },
            None => Seen::default(),
        })
    }

    /// Deletes the records older than [`RETENTION`]; returns how many.
    pub async fn sweep_expired(&self) -> Result<usize, IdempotencyError> {
        let now = self.clock.now_ms();
        let retention = RETENTION.as_millis() as u64;
        storefront_storage::sweep(&*self.store, Table::IdempotencyKeys, |_, value| {
            serde_json::from_slice::<Record>(value)
                .is_ok_and(|record| now.saturating_sub(record.created_at_ms) >= retention)
        })
        .await
        .map_err(backend)
    }

    /// Gives a claim up without a final response (the outcome is not known yet, or nothing was
    /// done): the key stays bound to this request, and a retry of the same request runs it again.
    pub async fn release(&self, claim: Claim) -> Result<(), IdempotencyError> {
        let mut record: Record = serde_json::from_slice(&claim.claimed).map_err(backend)?;
        record.released = true;
        let released = serde_json::to_vec(&record).map_err(backend)?;
        self.store
            .compare_and_swap(
                Table::IdempotencyKeys,
                &claim.key,
                Some(&claim.claimed),
                Some(&released),
            )
            .await
            .map(drop)
            .map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use storefront_storage::embedded::EmbeddedStore;

    use super::*;

    fn created(body: &str) -> StoredResponse {
        StoredResponse { status: 201, content_type: "application/json".into(), body: body.into() }
    }

    async fn keys(dir: &tempfile::TempDir, stale_after: Duration) -> IdempotencyKeys {
        let store = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
        IdempotencyKeys::new(store, Clock::system(), stale_after)
    }

    /// The hash is the one stored records were made with (`printf 'POST\n/v1/checkout\n{..}' |
    /// sha256sum`): a node of another version recognizes a retry of the same request.
    #[test]
    fn a_request_hash_is_the_sha256_of_method_path_and_body() {
        assert_eq!(
            request_hash("POST", "/v1/checkout", br#"{"payment_token":"tok_visa"}"#),
            "c5074ccb92168e4f4d6da4c0128953623e52a3517a3873747ffd80488cd87345"
        );
    }

    #[tokio::test]
    async fn the_first_response_is_replayed_and_a_different_request_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys(&dir, Duration::from_secs(60)).await;
        let request = request_hash("POST", "/v1/checkout", br#"{"payment_token":"tok_visa"}"#);
        let Begin::Run(claim) = keys.begin("user-1", "k-1", &request).await.unwrap() else {
            panic!("replay")
        };
        assert_eq!(keys.begin("user-1", "k-1", &request).await, Err(IdempotencyError::InProgress));
        keys.complete(claim, created(r#"{"order_id":"o1"}"#)).await.unwrap();
        assert_eq!(
            keys.begin("user-1", "k-1", &request).await,
            Ok(Begin::Replay(created(r#"{"order_id":"o1"}"#)))
        );
        let other = request_hash("POST", "/v1/checkout", br#"{"payment_token":"tok_mastercard"}"#);
        assert_eq!(keys.begin("user-1", "k-1", &other).await, Err(IdempotencyError::Reused));
        // Keys belong to their caller.
        assert!(matches!(keys.begin("user-2", "k-1", &other).await, Ok(Begin::Run(_))));
    }

    #[tokio::test]
    async fn invalid_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys(&dir, Duration::from_secs(60)).await;
        for bad in ["", "tab\tkey", "é", &"k".repeat(256)] {
            assert_eq!(
                keys.begin("u", bad, "h").await,
                Err(IdempotencyError::InvalidKey),
                "{bad:.10}"
            );
        }
        assert!(keys.begin("u", &"k".repeat(255), "h").await.is_ok());
    }

    #[tokio::test]
    async fn released_and_stale_claims_can_run_again_but_only_for_their_request() {
        let dir = tempfile::tempdir().unwrap();
        let long = keys(&dir, Duration::from_secs(3600)).await;
        let Begin::Run(claim) = long.begin("u", "k", "h").await.unwrap() else { panic!("replay") };
        assert_eq!(long.begin("u", "k", "h").await, Err(IdempotencyError::InProgress));
        long.release(claim).await.unwrap();
        // Released: still bound to its request, and a retry of that request runs again.
        assert_eq!(long.begin("u", "k", "other").await, Err(IdempotencyError::Reused));
        let Begin::Run(claim) = long.begin("u", "k", "h").await.unwrap() else { panic!("replay") };
        long.release(claim).await.unwrap();
        drop(long);
        let keys = keys(&dir, Duration::ZERO).await;
        let Begin::Run(first) = keys.begin("u", "k", "h").await.unwrap() else { panic!("replay") };
        // With no grace, an unfinished claim is stale at once and taken over; the first loses it.
        let Begin::Run(second) = keys.begin("u", "k", "h").await.unwrap() else { panic!("replay") };
        assert!(keys.complete(first, created("{}")).await.is_err());
        keys.complete(second, created("{}")).await.unwrap();
        assert_eq!(keys.begin("u", "k", "h").await, Ok(Begin::Replay(created("{}"))));
        assert_eq!(keys.begin("u", "k", "other").await, Err(IdempotencyError::Reused));
    }

    #[tokio::test]
    async fn responses_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let keys = keys(&dir, Duration::from_secs(60)).await;
            let Begin::Run(claim) = keys.begin("u", "k", "h").await.unwrap() else {
                panic!("replay")
            };
            keys.complete(claim, created("{\"a\":1}")).await.unwrap();
        }
        let keys = keys(&dir, Duration::from_secs(60)).await;
        assert_eq!(keys.begin("u", "k", "h").await, Ok(Begin::Replay(created("{\"a\":1}"))));
    }

    #[test]
    fn a_claim_answered_later_still_names_the_bytes_its_claim_wrote() {
        // `store_answer` swaps the answer in over the claim's own record, found by its bytes.
        let mut record = Record::claim("h", 7);
        let written = record.as_claimed().unwrap();
        record.response = Some(created("{}"));
        record.released = true;
        assert_eq!(record.as_claimed().unwrap(), written);
        assert_ne!(serde_json::to_vec(&record).unwrap(), written);
    }

    #[tokio::test]
    async fn a_deferred_claim_refuses_duplicates_and_its_response_is_stored_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys(&dir, Duration::from_secs(60)).await;
        let BeginDeferred::Run(claim) = keys.begin_deferred("u", "k", "h").await.unwrap() else {
            panic!("replay")
        };
        assert_eq!(
            keys.begin_deferred("u", "k", "h").await.unwrap_err(),
            IdempotencyError::InProgress
        );
        // The claim record goes with the request's first effect (here: written alone).
        let write = claim.claim_write().write().unwrap();
        keys.store.put(write.table, &write.key, write.value.as_deref().unwrap()).await.unwrap();
        assert_eq!(
            keys.begin_deferred("u", "k", "other").await.unwrap_err(),
            IdempotencyError::Reused
        );
        keys.finish(claim, Some(created("{\"order\":1}")));
        // Replayable from the moment it is sent, though it is stored in the background.
        let Ok(BeginDeferred::Replay(replayed)) = keys.begin_deferred("u", "k", "h").await else {
            panic!("a retry right after the answer was not given it")
        };
        assert_eq!(replayed, created("{\"order\":1}"));
        assert_eq!(
            keys.begin_deferred("u", "k", "other").await.unwrap_err(),
            IdempotencyError::Reused
        );
        keys.stored_all().await;
        let Ok(BeginDeferred::Replay(stored)) = keys.begin_deferred("u", "k", "h").await else {
            panic!("not stored")
        };
        assert_eq!(stored, replayed);
    }

    #[tokio::test(start_paused = true)]
    async fn keys_older_than_the_retention_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys(&dir, Duration::from_secs(60)).await;
        let Begin::Run(old) = keys.begin("u", "old", "h").await.unwrap() else { panic!("replay") };
        keys.complete(old, created("{}")).await.unwrap();
        tokio::time::advance(RETENTION - Duration::from_secs(1)).await;
        let Begin::Run(young) = keys.begin("u", "young", "h").await.unwrap() else {
            panic!("replay")
        };
        keys.complete(young, created("{}")).await.unwrap();
        assert_eq!(keys.sweep_expired().await.unwrap(), 0, "nothing is a day old yet");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(keys.sweep_expired().await.unwrap(), 1);
        assert_eq!(keys.begin("u", "young", "h").await, Ok(Begin::Replay(created("{}"))));
        assert!(matches!(keys.begin("u", "old", "other").await, Ok(Begin::Run(_))));
    }
}
