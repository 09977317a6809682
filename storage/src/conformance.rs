//! The conformance suite every backend passes unchanged.
//!
//! A backend's tests implement [`Harness`] (a fresh, private location and a way to open a store
//! there) and invoke [`store_conformance_tests!`](crate::store_conformance_tests), which expands to
//! one test per property below. The crash test re-runs the test binary as a child writer, SIGKILLs
//! it mid-load, and checks what a fresh process reads back.
// Test-support code: an unmet expectation is a failed test, so it unwraps like a test does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::{
    AppendRequest, Fence, KeyedWrite, Lease, OutboxRecord, Snapshot, StorageError, Store, Table,
};

/// How a backend's tests give the suite stores.
pub trait Harness: Send + Sync + 'static {
    /// A new location no other test uses (a directory, a schema, a keyspace).
    fn fresh_location() -> impl Future<Output = String> + Send;
    /// Opens a store at `location`; opening the same location again sees the same data.
    fn open(location: &str) -> impl Future<Output = Arc<dyn Store>> + Send;
    /// Deletes `location` and everything in it, once no store is open there.
    fn remove(location: &str) -> impl Future<Output = ()> + Send;
}

/// Expands to the whole suite as tests of the calling module, for the given [`Harness`] type, each
/// test with the given attributes (for example `#[ignore = "needs a server"]`).
#[macro_export]
macro_rules! store_conformance_tests {
    ($harness:ty $(, #[$attr:meta])*) => {
        $crate::store_conformance_tests!(@async $harness, [$(#[$attr])*],
            appends_and_reads_in_order,
            rejects_a_sequence_conflict_and_writes_nothing,
            lets_exactly_one_of_racing_writers_win,
            reads_from_an_offset_with_a_limit,
            keeps_the_newest_snapshot,
            writes_the_outbox_with_the_events,
            trims_the_outbox_and_never_reuses_a_position,
            writes_keyed_puts_with_the_events,
            serves_keyed_tables,
            keeps_everything_across_a_reopen,
            fences_appends_by_shard_lease
        );

        #[test]
        $(#[$attr])*
        fn killed_writer_never_leaves_a_partial_event() {
            $crate::conformance::killed_writer_never_leaves_a_partial_event::<$harness>(
                module_path!(),
                "killed_writer_never_leaves_a_partial_event",
            );
        }
    };
    (@async $harness:ty, $attrs:tt, $($name:ident),*) => {
        $( $crate::store_conformance_tests!(@one $harness, $attrs, $name); )*
    };
    (@one $harness:ty, [$(#[$attr:meta])*], $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn $name() {
            use $crate::conformance::Harness as _;
            let location = <$harness>::fresh_location().await;
            $crate::conformance::$name::<$harness>(&location).await;
            <$harness>::remove(&location).await;
        }
    };
}

/// An append of `events` to `stream`, expecting its head at `expected_seq`.
pub fn append(stream: &str, expected_seq: u64, events: &[&[u8]]) -> AppendRequest {
    AppendRequest {
        stream: stream.to_owned(),
        expected_seq,
        events: events.iter().map(|e| e.to_vec()).collect(),
        outbox: vec![],
        puts: vec![],
        fence: None,
    }
}

fn payloads(events: &[crate::StoredEvent]) -> Vec<(u64, &[u8])> {
    events.iter().map(|e| (e.seq, e.payload.as_slice())).collect()
}

/// Appends get consecutive sequences from 1 and read back in order, per stream.
pub async fn appends_and_reads_in_order<H: Harness>(location: &str) {
    let store = H::open(location).await;
    assert_eq!(store.append(append("a", 0, &[b"a1", b"a2"])).await.unwrap(), 2);
    assert_eq!(store.append(append("b", 0, &[b"b1"])).await.unwrap(), 1);
    assert_eq!(store.append(append("a", 2, &[b"a3"])).await.unwrap(), 3);
    let a = store.read_events("a", 1, usize::MAX).await.unwrap();
    assert_eq!(payloads(&a), vec![(1, &b"a1"[..]), (2, b"a2"), (3, b"a3")]);
    let b = store.read_events("b", 0, usize::MAX).await.unwrap();
    assert_eq!(payloads(&b), vec![(1, &b"b1"[..])]);
    assert!(store.read_events("never-written", 1, 10).await.unwrap().is_empty());
    // A stream name that is a prefix of another is a different stream.
    assert_eq!(store.append(append("a/x", 0, &[b"x"])).await.unwrap(), 1);
    assert_eq!(store.read_events("a", 1, usize::MAX).await.unwrap().len(), 3);
}

/// An append with the wrong expected sequence fails with the actual one and changes nothing.
pub async fn rejects_a_sequence_conflict_and_writes_nothing<H: Harness>(location: &str) {
    let store = H::open(location).await;
    store.append(append("s", 0, &[b"1"])).await.unwrap();
    for expected in [0, 2, 7] {
        let mut request = append("s", expected, &[b"stale"]);
        request.outbox.push(OutboxRecord {
            event_id: format!("conflict-{expected}"),
            topic: "t".into(),
            payload: vec![],
        });
        request.puts.push(KeyedWrite {
            table: Table::OpenOrders,
            key: b"s".to_vec(),
            value: Some(vec![]),
        });
        match store.append(request).await {
            Err(StorageError::Conflict { stream, expected: e, actual }) => {
                assert_eq!((stream.as_str(), e, actual), ("s", expected, 1));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    assert_eq!(payloads(&store.read_events("s", 1, 10).await.unwrap()), vec![(1, &b"1"[..])]);
    assert!(store.read_outbox(0, 10).await.unwrap().is_empty());
    assert_eq!(store.get(Table::OpenOrders, b"s").await.unwrap(), None);
    assert!(matches!(store.append(append("s", 1, &[])).await, Err(StorageError::Invalid(_))));
}

/// Of many writers appending at the same expected sequence, exactly one succeeds.
pub async fn lets_exactly_one_of_racing_writers_win<H: Harness>(location: &str) {
    let store = H::open(location).await;
    let racers: Vec<_> = (0..32u8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.append(append("hot", 0, &[&[i]])).await })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, racer) in racers.into_iter().enumerate() {
        match racer.await.unwrap() {
            Ok(1) => winners.push(i as u8),
            Err(StorageError::Conflict { actual: 1, .. }) => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1);
    let events = store.read_events("hot", 1, 10).await.unwrap();
    assert_eq!(payloads(&events), vec![(1, &[winners[0]][..])]);
}

/// Reads start at any sequence, inside or between appends, and stop at the limit.
pub async fn reads_from_an_offset_with_a_limit<H: Harness>(location: &str) {
    let store = H::open(location).await;
    let mut seq = 0;
    let mut expected = Vec::new();
    for batch in 1..=10u64 {
        let events: Vec<Vec<u8>> =
            (0..batch).map(|i| (seq + i + 1).to_le_bytes().to_vec()).collect();
        let refs: Vec<&[u8]> = events.iter().map(Vec::as_slice).collect();
        seq = store.append(append("s", seq, &refs)).await.unwrap();
        expected.extend(events);
    }
    assert_eq!(seq, 55);
    for from in [1, 2, 7, 11, 30, 54, 55] {
        let read = store.read_events("s", from, usize::MAX).await.unwrap();
        assert_eq!(read.len() as u64, 56 - from, "from {from}");
        for (event, want_seq) in read.iter().zip(from..) {
            assert_eq!(event.seq, want_seq);
            assert_eq!(event.payload, expected[(want_seq - 1) as usize]);
        }
    }
    let window = store.read_events("s", 13, 5).await.unwrap();
    assert_eq!(window.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![13, 14, 15, 16, 17]);
    assert!(store.read_events("s", 56, 10).await.unwrap().is_empty());
    assert!(store.read_events("s", 1, 0).await.unwrap().is_empty());
}

/// The newest snapshot wins; an older one never replaces it.
pub async fn keeps_the_newest_snapshot<H: Harness>(location: &str) {
    let store = H::open(location).await;
    assert_eq!(store.load_snapshot("s").await.unwrap(), None);
    let at = |seq: u64| Snapshot { seq, state: format!("state@{seq}").into_bytes() };
    store.save_snapshot("s", at(10)).await.unwrap();
    store.save_snapshot("s", at(20)).await.unwrap();
    store.save_snapshot("s", at(15)).await.unwrap();
    assert_eq!(store.load_snapshot("s").await.unwrap(), Some(at(20)));
    assert_eq!(store.load_snapshot("other").await.unwrap(), None);
}

/// Outbox records land with their events, in order, with increasing positions.
pub async fn writes_the_outbox_with_the_events<H: Harness>(location: &str) {
    let store = H::open(location).await;
    let record = |id: &str| OutboxRecord {
        event_id: id.to_owned(),
        topic: "order.confirmed".to_owned(),
        payload: format!("{{\"id\":\"{id}\"}}").into_bytes(),
    };
    let mut first = append("o1", 0, &[b"e"]);
    first.outbox = vec![record("a"), record("b")];
    store.append(first).await.unwrap();
    let mut second = append("o2", 0, &[b"e"]);
    second.outbox = vec![record("c")];
    store.append(second).await.unwrap();
    let all = store.read_outbox(0, 100).await.unwrap();
    let ids: Vec<_> = all.iter().map(|e| e.record.event_id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(all[0].record, record("a"));
    let rest = store.read_outbox(all[0].position, 1).await.unwrap();
    assert_eq!(rest.iter().map(|e| e.record.event_id.as_str()).collect::<Vec<_>>(), ["b"]);
    assert!(store.read_outbox(all[2].position, 10).await.unwrap().is_empty());
}

/// Trimming drops the entries up to a position; later appends, after a reopen too, still get
/// higher positions than any ever given.
pub async fn trims_the_outbox_and_never_reuses_a_position<H: Harness>(location: &str) {
    let record =
        |id: &str| OutboxRecord { event_id: id.into(), topic: "t".into(), payload: vec![] };
    let highest = {
        let store = H::open(location).await;
        let mut request = append("o1", 0, &[b"e"]);
        request.outbox = vec![record("a"), record("b"), record("c")];
        store.append(request).await.unwrap();
        let all = store.read_outbox(0, 10).await.unwrap();
        store.trim_outbox(all[1].position).await.unwrap();
        let left = store.read_outbox(0, 10).await.unwrap();
        assert_eq!(left.iter().map(|e| e.record.event_id.as_str()).collect::<Vec<_>>(), ["c"]);
        store.trim_outbox(all[2].position).await.unwrap();
        let left = store.read_outbox(0, 10).await.unwrap();
        assert!(left.len() <= 1, "the newest record may be kept as the high-water mark");
        all[2].position
    };
    let store = H::open(location).await;
    let mut next = append("o2", 0, &[b"e"]);
    next.outbox = vec![record("d")];
    store.append(next).await.unwrap();
    let after = store.read_outbox(highest, 10).await.unwrap();
    assert_eq!(after.iter().map(|e| e.record.event_id.as_str()).collect::<Vec<_>>(), ["d"]);
}

/// Keyed writes carried by an append land with it: set and delete.
pub async fn writes_keyed_puts_with_the_events<H: Harness>(location: &str) {
    let store = H::open(location).await;
    store.put(Table::OpenOrders, b"old", b"").await.unwrap();
    let mut request = append("order/1", 0, &[b"placed"]);
    request.puts = vec![
        KeyedWrite {
            table: Table::OpenOrders,
            key: b"order/1".to_vec(),
            value: Some(b"open".to_vec()),
        },
        KeyedWrite {
            table: Table::OrdersByUser,
            key: b"u1/order/1".to_vec(),
            value: Some(vec![1]),
        },
        KeyedWrite { table: Table::OpenOrders, key: b"old".to_vec(), value: None },
    ];
    store.append(request).await.unwrap();
    assert_eq!(
        store.get(Table::OpenOrders, b"order/1").await.unwrap().as_deref(),
        Some(&b"open"[..])
    );
    assert_eq!(store.get(Table::OrdersByUser, b"u1/order/1").await.unwrap(), Some(vec![1]));
    assert_eq!(store.get(Table::OpenOrders, b"old").await.unwrap(), None);
}

/// Get, put, delete, compare-and-swap and prefix scans with a cursor.
pub async fn serves_keyed_tables<H: Harness>(location: &str) {
    let store = H::open(location).await;
    let t = Table::Products;
    assert_eq!(store.get(t, b"k").await.unwrap(), None);
    store.put(t, b"k", b"v1").await.unwrap();
    store.put(t, b"k", b"v2").await.unwrap();
    assert_eq!(store.get(t, b"k").await.unwrap().as_deref(), Some(&b"v2"[..]));
    assert_eq!(store.get(Table::Users, b"k").await.unwrap(), None, "tables are separate");
    store.delete(t, b"k").await.unwrap();
    store.delete(t, b"k").await.unwrap();
    assert_eq!(store.get(t, b"k").await.unwrap(), None);

    let e = Table::UserEmails;
    assert!(store.compare_and_swap(e, b"a@x", None, Some(b"u1")).await.unwrap());
    assert!(!store.compare_and_swap(e, b"a@x", None, Some(b"u2")).await.unwrap());
    assert!(!store.compare_and_swap(e, b"a@x", Some(b"u9"), Some(b"u2")).await.unwrap());
    assert_eq!(store.get(e, b"a@x").await.unwrap().as_deref(), Some(&b"u1"[..]));
    assert!(store.compare_and_swap(e, b"a@x", Some(b"u1"), Some(b"u2")).await.unwrap());
    assert!(store.compare_and_swap(e, b"a@x", Some(b"u2"), None).await.unwrap());
    assert_eq!(store.get(e, b"a@x").await.unwrap(), None);

    let o = Table::OrdersByUser;
    for key in ["u1/o3", "u1/o1", "u2/o1", "u1/o2", "u0/o9"] {
        store.put(o, key.as_bytes(), key.as_bytes()).await.unwrap();
    }
    let keys = |rows: Vec<(Vec<u8>, Vec<u8>)>| {
        rows.into_iter().map(|(k, _)| String::from_utf8(k).unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(keys(store.scan(o, b"u1/", None, 10).await.unwrap()), ["u1/o1", "u1/o2", "u1/o3"]);
    assert_eq!(keys(store.scan(o, b"u1/", None, 2).await.unwrap()), ["u1/o1", "u1/o2"]);
    assert_eq!(keys(store.scan(o, b"u1/", Some(b"u1/o2"), 10).await.unwrap()), ["u1/o3"]);
    assert!(store.scan(o, b"u1/", Some(b"u1/o3"), 10).await.unwrap().is_empty());
    assert!(store.scan(o, b"u3/", None, 10).await.unwrap().is_empty());
    assert_eq!(store.scan(o, b"", None, 100).await.unwrap().len(), 5);
}

/// Everything written is there after the store is closed and opened again.
pub async fn keeps_everything_across_a_reopen<H: Harness>(location: &str) {
    {
        let store = H::open(location).await;
        let mut request = append("s", 0, &[b"1", b"2"]);
        request.outbox.push(OutboxRecord {
            event_id: "e".into(),
            topic: "t".into(),
            payload: vec![],
        });
        store.append(request).await.unwrap();
        store.save_snapshot("s", Snapshot { seq: 2, state: b"two".to_vec() }).await.unwrap();
        store.put(Table::Users, b"u", b"user").await.unwrap();
    }
    let store = H::open(location).await;
    assert_eq!(store.read_events("s", 1, 10).await.unwrap().len(), 2);
    assert_eq!(store.load_snapshot("s").await.unwrap().map(|s| s.seq), Some(2));
    assert_eq!(store.get(Table::Users, b"u").await.unwrap().as_deref(), Some(&b"user"[..]));
    let outbox = store.read_outbox(0, 10).await.unwrap();
    assert_eq!(outbox.len(), 1);
    // Positions keep increasing after a reopen.
    let mut next = append("s", 2, &[b"3"]);
    next.outbox.push(OutboxRecord { event_id: "f".into(), topic: "t".into(), payload: vec![] });
    store.append(next).await.unwrap();
    let outbox = store.read_outbox(0, 10).await.unwrap();
    assert_eq!(outbox.len(), 2);
    assert!(outbox[1].position > outbox[0].position);
}

/// Leases move by epoch, and an append fenced with an epoch that is no longer its shard's writes
/// nothing: a node that lost a shard cannot write to it, whatever it believes.
pub async fn fences_appends_by_shard_lease<H: Harness>(location: &str) {
    let store = H::open(location).await;
    assert!(store.leases().await.unwrap().is_empty());
    assert!(store.set_lease(7, 0, Some("node-a")).await.unwrap());
    assert!(!store.set_lease(7, 0, Some("node-b")).await.unwrap(), "epoch 0 is gone");
    let fenced = |seq: u64, epoch: u64| {
        let mut request = append("sku/x", seq, &[b"e"]);
        request.fence = Some(Fence { shard: 7, epoch });
        request.outbox.push(OutboxRecord {
            event_id: format!("{seq}"),
            topic: "t".into(),
            payload: vec![],
        });
        request
    };
    assert_eq!(store.append(fenced(0, 1)).await.unwrap(), 1);
    // node-b takes the shard over: node-a's epoch 1 no longer writes.
    assert!(store.set_lease(7, 1, Some("node-b")).await.unwrap());
    match store.append(fenced(1, 1)).await {
        Err(StorageError::Fenced { shard: 7, epoch: 1 }) => {}
        other => panic!("expected the append to be fenced, got {other:?}"),
    }
    assert_eq!(store.read_events("sku/x", 1, 10).await.unwrap().len(), 1);
    assert_eq!(store.read_outbox(0, 10).await.unwrap().len(), 1);
    assert_eq!(store.append(fenced(1, 2)).await.unwrap(), 2);
    // Released: nobody writes, not even with the last epoch.
    assert!(store.set_lease(7, 2, None).await.unwrap());
    assert!(matches!(store.append(fenced(2, 2)).await, Err(StorageError::Fenced { .. })));
    assert!(matches!(store.append(fenced(2, 3)).await, Err(StorageError::Fenced { .. })));
    // A shard never leased fences every epoch.
    let mut never = append("sku/y", 0, &[b"e"]);
    never.fence = Some(Fence { shard: 9, epoch: 0 });
    assert!(matches!(store.append(never).await, Err(StorageError::Fenced { shard: 9, .. })));
    assert!(store.set_lease(3, 0, Some("node-c")).await.unwrap());
    let leases = store.leases().await.unwrap();
    assert_eq!(
        leases,
        vec![
            Lease { shard: 3, owner: Some("node-c".into()), epoch: 1 },
            Lease { shard: 7, owner: None, epoch: 3 },
        ]
    );
}

const CHILD_ENV: &str = "STOREFRONT_CONFORMANCE_CHILD";
const CRASH_STREAMS: usize = 4;
const KILL_ROUNDS: usize = 3;
const ACKS_BEFORE_KILL: usize = 150;

/// An event that proves its own integrity: `[seq: u64][len: u32][len bytes of a seq pattern]`.
fn crash_event(seq: u64) -> Vec<u8> {
    let len = (seq as usize * 977) % 16_384;
    let mut event = Vec::with_capacity(12 + len);
    event.extend_from_slice(&seq.to_le_bytes());
    event.extend_from_slice(&(len as u32).to_le_bytes());
    event.extend((0..len).map(|j| (seq as usize * 31 + j) as u8));
    event
}

/// A writer is SIGKILLed while appending (several times, on the same location); every append it
/// acknowledged is read back, sequences have no gaps, no event is partial, and the outbox holds
/// exactly one record per durable append.
pub fn killed_writer_never_leaves_a_partial_event<H: Harness>(module: &str, test: &str) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    if let Ok(location) = std::env::var(CHILD_ENV) {
        runtime.block_on(crash_child::<H>(&location));
        std::process::exit(0);
    }
    let location = runtime.block_on(H::fresh_location());
    // libtest names a test by its module path without the crate name.
    let test_path = match module.split_once("::") {
        Some((_, rest)) => format!("{rest}::{test}"),
        None => test.to_owned(),
    };
    let mut acked = [0u64; CRASH_STREAMS];
    for round in 0..KILL_ROUNDS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([test_path.as_str(), "--exact", "--include-ignored", "--nocapture"])
            .arg("--test-threads=1")
            .env(CHILD_ENV, &location)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut acks = 0;
        for line in stdout.lines() {
            let line = line.unwrap();
            let Some(rest) = line.strip_prefix("ack ") else {
                continue;
            };
            let (stream, seq) = rest.split_once(' ').unwrap();
            let (stream, seq): (usize, u64) = (stream.parse().unwrap(), seq.parse().unwrap());
            acked[stream] = acked[stream].max(seq);
            acks += 1;
            if acks == ACKS_BEFORE_KILL {
                child.kill().unwrap();
                break;
            }
        }
        child.wait().unwrap();
        assert_eq!(acks, ACKS_BEFORE_KILL, "round {round}: the writer stopped early");
    }
    runtime.block_on(async {
        let store = H::open(&location).await;
        let mut durable_appends = 0;
        for (stream, &acked) in acked.iter().enumerate() {
            let events =
                store.read_events(&format!("crash/{stream}"), 1, usize::MAX).await.unwrap();
            assert!(events.len() as u64 >= acked, "stream {stream} lost acknowledged events");
            for (event, seq) in events.iter().zip(1..) {
                assert_eq!(event.seq, seq, "stream {stream} has a gap");
                assert_eq!(
                    event.payload,
                    crash_event(seq),
                    "stream {stream} event {seq} is partial"
                );
            }
            durable_appends += events.iter().filter(|e| e.seq % 3 == 0).count();
        }
        let outbox = store.read_outbox(0, usize::MAX).await.unwrap();
        assert_eq!(outbox.len(), durable_appends, "outbox and journal disagree");
        drop(store);
        H::remove(&location).await;
    });
}

/// Appends batches to [`CRASH_STREAMS`] streams concurrently, printing each acknowledgement,
/// until killed (or for at most 120 s). Each append is 3 events and carries one outbox record.
async fn crash_child<H: Harness>(location: &str) {
    let store = H::open(location).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    let writers: Vec<_> = (0..CRASH_STREAMS)
        .map(|stream| {
            let store = store.clone();
            tokio::spawn(async move {
                let name = format!("crash/{stream}");
                let mut seq = store.read_events(&name, 1, usize::MAX).await.unwrap().len() as u64;
                while tokio::time::Instant::now() < deadline {
                    let events = (seq + 1..=seq + 3).map(crash_event).collect();
                    let outbox = vec![OutboxRecord {
                        event_id: format!("{name}/{}", seq + 3),
                        topic: "crash".into(),
                        payload: vec![],
                    }];
                    let request = AppendRequest {
                        stream: name.clone(),
                        expected_seq: seq,
                        events,
                        outbox,
                        puts: vec![],
                        fence: None,
                    };
                    seq = store.append(request).await.unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {stream} {seq}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
}
