//! Membership and shard leases between two nodes in one process, over the local PostgreSQL (the
//! shared store of a cluster): a join splits the shards, a leave hands them over, a node whose
//! heartbeat stops loses its shards to the others, and its appends are fenced.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use storefront_cluster::{Ownership, OwnershipConfig, ShardHost};
use storefront_storage::postgres::{PostgresStore, migrate};
use storefront_storage::{AppendRequest, Fence, StorageError, Store};

const SHARDS: u32 = 64;
const T: Duration = Duration::from_secs(20);

fn server_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

async fn admin() -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(&server_url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// A store in a fresh PostgreSQL schema, and the schema's name.
async fn fresh_store() -> (Arc<dyn Store>, String) {
    let client = admin().await;
    let schema = format!(
        "storefront_ownership_{}_{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    );
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let url = format!("{}?options=-csearch_path%3D{schema}", server_url());
    migrate(&url).await.unwrap();
    (Arc::new(PostgresStore::open(&url).await.unwrap()), schema)
}

/// Remembers which shards were started and stopped on a node.
#[derive(Default)]
struct Host {
    started: Mutex<Vec<u32>>,
    stopped: Mutex<Vec<u32>>,
}

#[async_trait]
impl ShardHost for Host {
    async fn stop_shard(&self, shard: u32) {
        self.stopped.lock().unwrap().push(shard);
    }
    async fn shards_started(&self, shards: &[u32]) {
        self.started.lock().unwrap().extend_from_slice(shards);
    }
}

async fn node(store: &Arc<dyn Store>, id: &str) -> (Ownership, Arc<Host>) {
    let ownership = Ownership::new(
        store.clone(),
        OwnershipConfig {
            node_id: id.to_owned(),
            cluster_addr: None,
            http_addr: format!("{id}:8080"),
            shard_count: SHARDS,
            heartbeat: Duration::from_millis(100),
            member_ttl: Duration::from_millis(800),
        },
    );
    let host = Arc::new(Host::default());
    ownership.join(host.clone()).await.unwrap();
    (ownership, host)
}

fn held(node: &Ownership) -> HashSet<u32> {
    (0..SHARDS).filter(|&s| node.epoch(s).is_some()).collect()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn fenced_append(shard: u32, epoch: u64) -> AppendRequest {
    AppendRequest {
        stream: format!("probe/{shard}"),
        expected_seq: 0,
        events: vec![b"e".to_vec()],
        outbox: vec![],
        puts: vec![],
        fence: Some(Fence { shard, epoch }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_split_on_join_move_on_leave_and_fail_over_with_fencing() {
    let (store, schema) = fresh_store().await;
    let (a, a_host) = node(&store, "node-a").await;
    assert_eq!(held(&a).len(), SHARDS as usize, "a node alone holds every shard at once");

    let (b, b_host) = node(&store, "node-b").await;
    eventually("the shards to split between a and b", || {
        let (on_a, on_b) = (held(&a), held(&b));
        on_a.is_disjoint(&on_b) && on_a.len() + on_b.len() == SHARDS as usize && !on_b.is_empty()
    })
    .await;
    let on_b = held(&b);
    // Rendezvous: about half move, and each moved shard was stopped on a before b started it.
    assert!((16..=48).contains(&on_b.len()), "{} shards moved to b", on_b.len());
    let stopped_on_a: HashSet<u32> = a_host.stopped.lock().unwrap().iter().copied().collect();
    assert_eq!(stopped_on_a, on_b);
    let started_on_b: HashSet<u32> = b_host.started.lock().unwrap().iter().copied().collect();
    assert_eq!(started_on_b, on_b);
    // Both nodes agree on every shard's owner.
    eventually("both views to agree", || {
        (0..SHARDS).all(|s| a.owner_of(s).is_some() && a.owner_of(s) == b.owner_of(s))
    })
    .await;

    // a stops beating (as a hung or killed process would): b takes everything over, and an
    // append a makes under its old epoch is refused by the store.
    let (shard, a_epoch) = held(&a).into_iter().map(|s| (s, a.epoch(s).unwrap())).next().unwrap();
    a.stop().await;
    eventually("b to hold every shard", || held(&b).len() == SHARDS as usize).await;
    match store.append(fenced_append(shard, a_epoch)).await {
        Err(StorageError::Fenced { .. }) => {}
        other => panic!("a stale holder's append must be fenced, got {other:?}"),
    }
    let b_epoch = b.epoch(shard).unwrap();
    assert!(b_epoch > a_epoch);
    assert_eq!(store.append(fenced_append(shard, b_epoch)).await.unwrap(), 1);

    // A third node joins and b leaves: everything ends on c, handed off (not expired).
    let (c, _) = node(&store, "node-c").await;
    eventually("c to take its share", || !held(&c).is_empty()).await;
    assert_eq!(b.leave(T).await, 0, "b handed every shard off");
    eventually("c to hold every shard", || held(&c).len() == SHARDS as usize).await;
    let view = c.view();
    let status = |id: &str| view.members.iter().find(|m| m.node_id == id).map(|m| m.status);
    assert_eq!(status("node-c"), Some(storefront_cluster::MemberStatus::Up));
    assert_eq!(status("node-b"), Some(storefront_cluster::MemberStatus::Leaving));
    assert_eq!(status("node-a"), Some(storefront_cluster::MemberStatus::Down));
    b.stop().await;
    c.stop().await;
    admin().await.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
}
