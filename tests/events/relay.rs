//! The outbox relay against a real broker: what it publishes, in what order, and where it
//! records how far it got.

use std::sync::Arc;
use std::time::Duration;

use storefront_events::event::{StockLow, UserRegistered};
use storefront_events::relay::{Always, Leadership, Relay, RelayConfig};
use storefront_events::{CloudEvent, EventData};
use storefront_storage::embedded::EmbeddedStore;
use storefront_storage::{AppendRequest, Store, Table};

use crate::broker::{self, Vhost};

/// Appends one entity event carrying `events` in its outbox, as an entity's append does.
async fn append(store: &dyn Store, stream: &str, seq: u64, events: Vec<CloudEvent>) {
    store
        .append(AppendRequest {
            stream: stream.into(),
            expected_seq: seq,
            events: vec![b"e".to_vec()],
            outbox: events.into_iter().map(|e| e.into_outbox().unwrap()).collect(),
            puts: vec![],
            fence: None,
        })
        .await
        .unwrap();
}

fn low(sku: &str, available: u64) -> CloudEvent {
    CloudEvent::new(
        1_700_000_000_000 + available,
        EventData::StockLow(StockLow { sku: sku.into(), available, threshold: 5 }),
    )
}

async fn recorded(store: &dyn Store) -> u64 {
    recorded_as(store, "outbox").await
}

async fn recorded_as(store: &dyn Store, name: &str) -> u64 {
    match store.get(Table::RelayOffsets, name.as_bytes()).await.unwrap() {
        Some(bytes) => u64::from_be_bytes(bytes.try_into().unwrap()),
        None => 0,
    }
}

fn config(vhost: &Vhost) -> RelayConfig {
    RelayConfig { poll: Duration::from_millis(5), ..RelayConfig::new(vhost.url()) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_the_outbox_in_order_as_persistent_confirmed_cloudevents() {
    let vhost = Vhost::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
    let (_conn, channel) = vhost.bound_queue("all", "#").await;
    let events: Vec<CloudEvent> = (1..=300).map(|i| low("HOT-1", i)).collect();
    for (seq, chunk) in events.chunks(100).enumerate() {
        append(store.as_ref(), "sku/HOT-1", seq as u64, chunk.to_vec()).await;
    }
    let relay = Relay::start(store.clone(), Arc::new(Always), config(&vhost));
    let got = broker::take(&channel, "all", 300, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 300);
    for (message, sent) in got.iter().zip(&events) {
        let p = &message.delivery.properties;
        assert_eq!(message.delivery.routing_key.as_str(), "stock.low");
        assert_eq!(message.delivery.exchange.as_str(), "storefront.events");
        assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some(sent.id.as_str()));
        assert_eq!(p.kind().as_ref().map(|s| s.as_str()), Some("stock.low"));
        assert_eq!(p.content_type().as_ref().map(|s| s.as_str()), Some("application/json"));
        assert_eq!(p.app_id().as_ref().map(|s| s.as_str()), Some("storefront"));
        assert_eq!(*p.delivery_mode(), Some(2), "persistent");
        assert_eq!(*p.timestamp(), Some(sent.time_ms / 1000));
        assert_eq!(&CloudEvent::parse(&message.delivery.data).unwrap(), sent, "in order");
    }
    let last = store.read_outbox(0, usize::MAX).await.unwrap().last().unwrap().position;
    crate::eventually("the position recorded after the confirms", || async {
        recorded(store.as_ref()).await == last
    })
    .await;
    relay.stop().await;
    // A relay started again resumes from the recorded position: nothing is published twice.
    let more = low("HOT-2", 1);
    append(store.as_ref(), "sku/HOT-2", 0, vec![more.clone()]).await;
    let relay = Relay::start(store.clone(), Arc::new(Always), config(&vhost));
    let got = broker::take(&channel, "all", 2, Duration::from_secs(3)).await;
    assert_eq!(got.len(), 1, "only the new event");
    assert_eq!(CloudEvent::parse(&got[0].delivery.data).unwrap(), more);
    relay.stop().await;
}

/// Leadership a test turns on and off.
#[derive(Debug, Default)]
struct Switch(std::sync::atomic::AtomicBool);

impl Leadership for Switch {
    fn may_publish(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_publishes_and_a_new_leader_resumes_where_the_old_one_stopped() {
    let vhost = Vhost::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
    let (_conn, channel) = vhost.bound_queue("all", "#").await;
    let (a, b) = (Arc::new(Switch::default()), Arc::new(Switch::default()));
    let relay_a = Relay::start(store.clone(), a.clone(), config(&vhost));
    let relay_b = Relay::start(store.clone(), b.clone(), config(&vhost));
    let registered = |i: u32| {
        CloudEvent::new(
            1_700_000_000_000,
            EventData::UserRegistered(UserRegistered {
                user_id: format!("u{i}"),
                email: format!("u{i}@example.com"),
                name: None,
            }),
        )
    };
    append(store.as_ref(), "user/u1", 0, vec![registered(1)]).await;
    assert!(broker::take(&channel, "all", 1, Duration::from_millis(300)).await.is_empty());
    a.0.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(broker::take(&channel, "all", 1, Duration::from_secs(10)).await.len(), 1);
    let position = store.read_outbox(0, 1).await.unwrap()[0].position;
    crate::eventually("a's position", || async { recorded(store.as_ref()).await == position })
        .await;
    // The lease moves from a to b.
    a.0.store(false, std::sync::atomic::Ordering::SeqCst);
    b.0.store(true, std::sync::atomic::Ordering::SeqCst);
    append(store.as_ref(), "user/u2", 0, vec![registered(2)]).await;
    let got = broker::take(&channel, "all", 2, Duration::from_secs(3)).await;
    assert_eq!(got.len(), 1, "u1 is not published again: {got:?}");
    assert!(matches!(
        CloudEvent::parse(&got[0].delivery.data).unwrap().data,
        EventData::UserRegistered(UserRegistered { ref user_id, .. }) if user_id == "u2"
    ));
    relay_a.stop().await;
    relay_b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_only_delays_the_outbox() {
    let vhost = Vhost::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
    append(store.as_ref(), "sku/A", 0, vec![low("A", 1)]).await;
    let metrics = storefront_http::metrics::install_recorder().unwrap();
    let failures =
        || crate::metric(&metrics, "storefront_events_relay_failures_total{stage=\"connect\"}");
    let before = failures();
    // Nothing listens on port 9 here: every connection attempt fails at once.
    let nowhere = RelayConfig {
        name: "stranded".into(),
        ..RelayConfig::new("amqp://guest:guest@127.0.0.1:9/%2f")
    };
    let relay = Relay::start(store.clone(), Arc::new(Always), nowhere);
    crate::eventually("two failed connection attempts", || async { failures() >= before + 2.0 })
        .await;
    assert_eq!(
        recorded_as(store.as_ref(), "stranded").await,
        0,
        "nothing confirmed, nothing recorded"
    );
    let lag = "storefront_events_relay_lag{relay=\"stranded\"}";
    assert!(crate::metric(&metrics, lag) > 0.0, "the lag shows it");
    relay.stop().await;
    let (_conn, channel) = vhost.bound_queue("all", "#").await;
    let config = RelayConfig { name: "stranded".into(), ..config(&vhost) };
    let relay = Relay::start(store.clone(), Arc::new(Always), config);
    assert_eq!(broker::take(&channel, "all", 1, Duration::from_secs(10)).await.len(), 1);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_declares_the_exchange_before_any_event() {
    let vhost = Vhost::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
    let relay = Relay::start(store, Arc::new(Always), config(&vhost));
    crate::eventually("the exchange, durable topic", || async {
        let (_conn, channel) = vhost.channel().await;
        let passive = lapin::options::ExchangeDeclareOptions {
            passive: true,
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                "storefront.events".into(),
                lapin::ExchangeKind::Topic,
                passive,
                lapin::types::FieldTable::default(),
            )
            .await
            .is_ok()
    })
    .await;
    relay.stop().await;
}
