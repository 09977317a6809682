//! The checkout saga for each test payment token, stock shortages, cancellation, and
//! reservation expiry by the SKU actor's timer.
// Test code: an unmet expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Node, eventually, fast_settings, order};
use storefront_actors::gateway::PaymentState;
use storefront_actors::order::{FailureReason, OrderStatus};
use storefront_actors::{Clock, DomainError, EntitySettings, StockCommand, StockLevels};
use storefront_cluster::Checkout;
use storefront_events::EventData;
use storefront_events::event::PaymentFailureReason;

const WAIT: Duration = Duration::from_secs(20);

async fn node() -> (tempfile::TempDir, Node) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), fast_settings()).await;
    node.stock_sku("A", 10).await;
    node.stock_sku("B", 10).await;
    (dir, node)
}

async fn checkout(node: &Node, order_id: &str, token: &str) -> storefront_actors::order::OrderView {
    let place = order(order_id, "u1", token, &[("A", 2, "5.00"), ("B", 1, "0.99")]);
    match node.regions.checkout(place, WAIT).await.unwrap() {
        Checkout::Ended(view) => view,
        Checkout::Pending { .. } => panic!("checkout still pending after {WAIT:?}"),
    }
}

async fn levels(node: &Node, sku: &str) -> StockLevels {
    node.regions.stock_levels(sku).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn succeeding_tokens_confirm_commit_stock_and_capture() {
    let (_dir, node) = node().await;
    for (i, token) in ["tok_visa", "tok_mastercard"].into_iter().enumerate() {
        let view = checkout(&node, &format!("o-{i}"), token).await;
        assert_eq!(view.status, OrderStatus::Confirmed, "{token}");
        assert_eq!(view.total.amount().to_string(), "10.99");
        assert!(!view.in_progress);
        let statuses: Vec<_> = view.history.iter().map(|c| c.status).collect();
        assert_eq!(
            statuses,
            [
                OrderStatus::Pending,
                OrderStatus::Reserved,
                OrderStatus::Paid,
                OrderStatus::Confirmed
            ]
        );
        let authorization = view.authorization.expect("authorized");
        assert_eq!(node.gateway.payment_state(&authorization), Some(PaymentState::Captured));
    }
    assert_eq!(levels(&node, "A").await, common::levels(6, 0, 4));
    assert_eq!(levels(&node, "B").await, common::levels(8, 0, 2));
    // order.confirmed went out through the outbox with the events, carrying what a mail shows.
    let confirmed = common::outbox_events(&node, "order.confirmed").await;
    assert_eq!(confirmed.len(), 2);
    let EventData::OrderConfirmed(data) = &confirmed[0].data else { panic!("{confirmed:?}") };
    assert_eq!(data.order_id, "o-0");
    assert_eq!(data.email, "u1@example.com");
    assert_eq!(data.status, "confirmed");
    assert_eq!(data.total.amount, "10.99");
    assert_eq!(data.items.len(), 2);
    assert_eq!(
        (data.items[0].name.as_str(), data.items[0].qty, data.items[0].line_total.amount.as_str()),
        ("Product A", 2, "10.00")
    );
    assert_eq!(data.items[1].unit_price.currency, "USD");
    assert_eq!(data.refund, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_units_sold_emit_stock_low_then_sold_out() {
    let (_dir, node) = node().await;
    // From above the low-stock threshold (5) straight to none.
    node.stock_sku("C", 10).await;
    let place = common::order("o-c", "u1", "tok_visa", &[("C", 10, "1.00")]);
    let Checkout::Ended(view) = node.regions.checkout(place, WAIT).await.unwrap() else {
        panic!("checkout still pending")
    };
    assert_eq!(view.status, OrderStatus::Confirmed);
    let sold_out = common::outbox_events(&node, "stock.sold_out").await;
    assert_eq!(sold_out.len(), 1, "once, when available reached 0");
    let EventData::StockSoldOut(data) = &sold_out[0].data else { panic!("{sold_out:?}") };
    // The reservation took the last units: held, not yet sold.
    assert_eq!((data.sku.as_str(), data.on_hand, data.reserved), ("C", 10, 10));
    let low: Vec<_> = common::outbox_events(&node, "stock.low")
        .await
        .into_iter()
        .filter(|e| matches!(&e.data, EventData::StockLow(d) if d.sku == "C"))
        .collect();
    assert_eq!(low.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declines_fail_the_order_and_release_the_stock() {
    let (_dir, node) = node().await;
    for (token, code) in
        [("tok_chargeDeclined", "card_declined"), ("tok_insufficientFunds", "insufficient_funds")]
    {
        let view = checkout(&node, &format!("o-{token}"), token).await;
        assert_eq!(view.status, OrderStatus::Failed, "{token}");
        assert_eq!(view.failure, Some(FailureReason::PaymentDeclined { code: code.into() }));
        assert_eq!(
            node.gateway.calls(&format!("o-{token}/authorize")),
            1,
            "declines are not retried"
        );
    }
    assert_eq!(levels(&node, "A").await, common::levels(10, 0, 0));
    assert_eq!(levels(&node, "B").await, common::levels(10, 0, 0));
    let failed = common::outbox_events(&node, "payment.failed").await;
    let reasons: Vec<_> = failed
        .iter()
        .map(|e| match &e.data {
            EventData::PaymentFailed(d) => (d.order_id.clone(), d.reason, d.total.amount.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("o-tok_chargeDeclined".into(), PaymentFailureReason::Declined, "10.99".into()),
            (
                "o-tok_insufficientFunds".into(),
                PaymentFailureReason::InsufficientFunds,
                "10.99".into()
            )
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_errors_are_retried_with_one_key_then_compensated() {
    let (_dir, node) = node().await;
    let view = checkout(&node, "o-err", "tok_processingError").await;
    assert_eq!(view.status, OrderStatus::Failed);
    assert_eq!(view.failure, Some(FailureReason::PaymentGatewayError));
    // The forward step tried its attempts with one key; the authorization's outcome is unknown,
    // so the failed order goes on asking by that key (to void what it may hold) after answering.
    let attempts = fast_settings().gateway_max_attempts;
    eventually(WAIT, "the void by key to ask again", || async {
        node.gateway.calls("o-err/authorize") > attempts
    })
    .await;
    assert_eq!(levels(&node, "A").await.available, 10);
    assert_eq!(levels(&node, "B").await.reserved, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_line_fails_the_order_and_holds_nothing() {
    let (_dir, node) = node().await;
    let place = order("o-short", "u1", "tok_visa", &[("A", 3, "1.00"), ("B", 11, "1.00")]);
    let Checkout::Ended(view) = node.regions.checkout(place, WAIT).await.unwrap() else {
        panic!("pending")
    };
    assert_eq!(view.status, OrderStatus::Failed);
    assert_eq!(view.failure, Some(FailureReason::OutOfStock { sku: "B".into(), available: 10 }));
    assert_eq!(view.authorization, None, "no payment was attempted");
    assert_eq!(node.gateway.calls("o-short/authorize"), 0);
    assert_eq!(levels(&node, "A").await.reserved, 0);
    assert_eq!(levels(&node, "B").await.reserved, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_checkout_joins_the_first_and_a_different_one_is_refused() {
    let (_dir, node) = node().await;
    let first = checkout(&node, "o-1", "tok_visa").await;
    let again = checkout(&node, "o-1", "tok_visa").await;
    assert_eq!(first, again);
    assert_eq!(levels(&node, "A").await.sold, 2, "applied once");
    let other = order("o-1", "u1", "tok_visa", &[("A", 1, "5.00")]);
    assert_eq!(
        node.regions.checkout(other, WAIT).await,
        Err(DomainError::OrderConflict("o-1".into()))
    );
    let invalid = order("o-2", "u1", "tok_visa", &[("A", 1, "5.00"), ("A", 1, "5.00")]);
    assert!(matches!(node.regions.checkout(invalid, WAIT).await, Err(DomainError::Invalid { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_confirmed_order_refunds_and_restocks() {
    let (_dir, node) = node().await;
    checkout(&node, "o-c", "tok_visa").await;
    assert_eq!(levels(&node, "A").await.on_hand, 8);
    let cancelled = node.regions.cancel_order("o-c", WAIT).await.unwrap();
    assert_eq!(cancelled.status, OrderStatus::Cancelled);
    assert_eq!(levels(&node, "A").await, common::levels(10, 0, 2));
    assert_eq!(levels(&node, "B").await.on_hand, 10);
    assert_eq!(node.gateway.calls("o-c/refund"), 1);
    // Cancelling again is answered with the cancelled order and changes nothing.
    assert_eq!(
        node.regions.cancel_order("o-c", WAIT).await.unwrap().status,
        OrderStatus::Cancelled
    );
    assert_eq!(levels(&node, "A").await.on_hand, 10);
    let failed = checkout(&node, "o-d", "tok_chargeDeclined").await;
    assert_eq!(failed.status, OrderStatus::Failed);
    assert!(matches!(
        node.regions.cancel_order("o-d", WAIT).await,
        Err(DomainError::InvalidOrderState { .. })
    ));
    assert!(matches!(node.regions.order("nope").await, Err(DomainError::NotFound { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_expire_by_the_actor_timer() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), fast_settings()).await;
    node.stock_sku("T", 5).await;
    let reserve = |id: &str, ttl_ms| StockCommand::Reserve {
        reservation_id: id.into(),
        order_id: "o".into(),
        qty: 2,
        ttl_ms,
    };
    // The long hold first; the short one's own answer shows both held, however slow the
    // machine (a read after it could come after the short one lapsed).
    node.regions.stock("T", reserve("long", 3_600_000)).await.unwrap();
    let both = node.regions.stock("T", reserve("short", 1_000)).await.unwrap();
    assert_eq!((both.reserved, both.available), (4, 1));
    eventually(Duration::from_secs(10), "the short reservation to expire", || async {
        levels(&node, "T").await.reserved == 2
    })
    .await;
    assert_eq!(levels(&node, "T").await, common::levels(5, 2, 0));
    // An expired reservation cannot be committed; the long one still can.
    let commit = |id: &str| StockCommand::Commit { reservation_id: id.into() };
    assert_eq!(
        node.regions.stock("T", commit("short")).await,
        Err(DomainError::ReservationGone("short".into()))
    );
    assert_eq!(node.regions.stock("T", commit("long")).await.unwrap().sold, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_reservation_fails_the_checkout_and_voids_the_payment() {
    let dir = tempfile::tempdir().unwrap();
    // Reservations lapse the moment they are made, so the commit step finds them gone.
    let settings = EntitySettings { reservation_ttl: Duration::ZERO, ..fast_settings() };
    let node = Node::start(dir.path(), settings).await;
    node.stock_sku("A", 10).await;
    let place = order("o-lapse", "u1", "tok_visa", &[("A", 1, "1.00")]);
    let Checkout::Ended(view) = node.regions.checkout(place, WAIT).await.unwrap() else {
        panic!("pending")
    };
    assert_eq!(view.status, OrderStatus::Failed);
    assert_eq!(view.failure, Some(FailureReason::ReservationLapsed));
    let authorization = view.authorization.expect("authorized before the commit failed");
    assert_eq!(node.gateway.payment_state(&authorization), Some(PaymentState::Voided));
    assert_eq!(levels(&node, "A").await, common::levels(10, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_answers_everything_sent_while_it_passivates() {
    // An ended order passivates at once; commands that reach it meanwhile must still be answered,
    // by it or by its successor.
    let (_dir, node) = node().await;
    node.stock_sku("M", 10_000).await;
    for i in 0..200 {
        let order_id = format!("p-{i}");
        let place = order(&order_id, "u1", "tok_visa", &[("M", 1, "1.00")]);
        let Checkout::Ended(first) = node.regions.checkout(place.clone(), WAIT).await.unwrap()
        else {
            panic!("pending")
        };
        let reads: Vec<_> = (0..4)
            .map(|_| {
                let (regions, order_id) = (node.regions.clone(), order_id.clone());
                tokio::spawn(async move { regions.order(&order_id).await })
            })
            .collect();
        let again = node.regions.checkout(place, WAIT).await.unwrap();
        assert_eq!(again, Checkout::Ended(first.clone()), "{order_id}");
        for read in reads {
            assert_eq!(read.await.unwrap().unwrap(), first, "{order_id}");
        }
    }
    assert_eq!(levels(&node, "M").await.sold, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_right_after_the_outcome_completes_while_the_order_passivates() {
    // The cancel may reach the order after it asked to stop: the stop must wait for the
    // cancellation it accepted, not drop it.
    let (_dir, node) = node().await;
    node.stock_sku("M", 10_000).await;
    for i in 0..100 {
        let order_id = format!("c-{i}");
        let place = order(&order_id, "u1", "tok_visa", &[("M", 1, "1.00")]);
        let Checkout::Ended(view) = node.regions.checkout(place, WAIT).await.unwrap() else {
            panic!("pending")
        };
        assert_eq!(view.status, OrderStatus::Confirmed);
        let cancelled = node.regions.cancel_order(&order_id, WAIT).await.unwrap();
        assert_eq!(cancelled.status, OrderStatus::Cancelled, "{order_id}");
    }
    assert_eq!(levels(&node, "M").await.on_hand, 10_000);
}

/// Checks what a user relies on of an ended order against the gateway's ledger: a confirmed order
/// has its money captured; a failed or cancelled one holds none (voided, refunded, or never
/// authorized), whatever the gateway answered along the way.
fn assert_money_consistent(node: &Node, view: &storefront_actors::order::OrderView) {
    let key = format!("{}/authorize", view.order_id);
    let state = match node.gateway.outcome(&key) {
        Some(Ok(authorization)) => node.gateway.payment_state(&authorization),
        _ => None,
    };
    match view.status {
        OrderStatus::Confirmed => {
            assert_eq!(state, Some(PaymentState::Captured), "{} confirmed", view.order_id)
        }
        OrderStatus::Failed | OrderStatus::Cancelled => assert!(
            matches!(state, None | Some(PaymentState::Voided | PaymentState::Refunded)),
            "{} ended {} holding money: {state:?}",
            view.order_id,
            view.status
        ),
        other => panic!("{} has not ended: {other}", view.order_id),
    }
}

async fn ended(
    node: &Node,
    place: storefront_actors::order::PlaceOrder,
) -> storefront_actors::order::OrderView {
    let order_id = place.order_id.clone();
    match node.regions.checkout(place, WAIT).await.unwrap() {
        Checkout::Ended(view) => view,
        Checkout::Pending { .. } => panic!("{order_id} still pending after {WAIT:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_call_that_took_effect_but_never_answered_is_resolved_not_guessed() {
    use storefront_actors::gateway::{Fault, GatewayOp};
    let settings =
        EntitySettings { gateway_timeout: Duration::from_millis(200), ..fast_settings() };
    let attempts = settings.gateway_max_attempts as usize;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), settings.clone()).await;
    node.stock_sku("A", 100).await;
    // Each fault on each operation: "unavailable" after taking effect, on every attempt of one
    // step; and no answer at all, which only the saga's timeout ends.
    let cases = [
        // The hold of unknown outcome is voided by its key, and the order fails.
        (GatewayOp::Authorize, Fault::SucceedThenFail, attempts, OrderStatus::Failed),
        // Timed out once, then asked again by its key: the gateway names the hold.
        (GatewayOp::Authorize, Fault::SucceedThenHang, 1, OrderStatus::Confirmed),
        // The capture is asked again by its key until the gateway answers: never failed.
        (GatewayOp::Capture, Fault::SucceedThenFail, attempts, OrderStatus::Confirmed),
        (GatewayOp::Capture, Fault::SucceedThenHang, 1, OrderStatus::Confirmed),
        // A cancellation's refund likewise.
        (GatewayOp::Refund, Fault::SucceedThenFail, attempts, OrderStatus::Cancelled),
        (GatewayOp::Refund, Fault::SucceedThenHang, 1, OrderStatus::Cancelled),
    ];
    for (i, (op, fault, times, status)) in cases.into_iter().enumerate() {
        let order_id = format!("fault-{i}");
        node.gateway.inject(op, fault, times);
        let mut view = ended(&node, order(&order_id, "u1", "tok_visa", &[("A", 1, "2.00")])).await;
        if op == GatewayOp::Refund {
            view = node.regions.cancel_order(&order_id, WAIT).await.unwrap();
        }
        assert_eq!(view.status, status, "{order_id} ({op:?}, {fault:?}): {view:?}");
        assert_money_consistent(&node, &view);
        if status == OrderStatus::Failed {
            assert_eq!(view.failure, Some(FailureReason::PaymentGatewayError));
        }
    }
    let a = levels(&node, "A").await;
    // Five sold (the failed order's hold was released), and the two cancelled returned theirs.
    assert_eq!((a.on_hand, a.reserved, a.sold), (97, 0, 5), "{a:?}");

    // A void happens when an authorized order fails: here its reservation lapses before the
    // commit. The void that took effect unanswered is asked again until answered.
    let dir = tempfile::tempdir().unwrap();
    let lapsing = EntitySettings { reservation_ttl: Duration::ZERO, ..settings };
    let node = Node::start(dir.path(), lapsing).await;
    node.stock_sku("A", 10).await;
    for (i, (fault, times)) in
        [(Fault::SucceedThenFail, attempts), (Fault::SucceedThenHang, 1)].into_iter().enumerate()
    {
        let order_id = format!("void-{i}");
        node.gateway.inject(GatewayOp::Void, fault, times);
        let view = ended(&node, order(&order_id, "u1", "tok_visa", &[("A", 1, "2.00")])).await;
        assert_eq!(view.status, OrderStatus::Failed, "{order_id}");
        assert_money_consistent(&node, &view);
        let authorization = view.authorization.clone().expect("authorized");
        assert_eq!(node.gateway.payment_state(&authorization), Some(PaymentState::Voided));
    }
    assert_eq!(levels(&node, "A").await, common::levels(10, 0, 0));
}

/// A SKU forgets settled ids after a day; an order that resumes later (a node down that long)
/// must still get the answers its commands had, not "gone" for its own commit or a second
/// return of the same units.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_resumed_after_a_day_gets_the_answers_its_stock_commands_had() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), fast_settings()).await;
    node.stock_sku("A", 10).await;
    let placed_at = storefront_actors::Clock::system().now_ms();
    let of_order = |command| StockCommand::ForOrder { placed_at, command: Box::new(command) };
    let reserve = |id: &str| StockCommand::ReserveFor {
        reservation_id: id.into(),
        order_id: "o-late".into(),
        customer: "u1".into(),
        qty: 2,
        ttl_ms: 60_000,
    };
    let commit = |id: &str| StockCommand::Commit { reservation_id: id.into() };
    let release = |id: &str| StockCommand::Release { reservation_id: id.into() };
    let give_back = StockCommand::Return {
        restock_id: "o-late/1/return".into(),
        qty: 2,
        customer: "u1".into(),
    };
    // Line 0 is sold; line 1 was sold and given back; line 2 was released.
    for command in [
        reserve("o-late/0"),
        commit("o-late/0"),
        reserve("o-late/1"),
        commit("o-late/1"),
        give_back.clone(),
        reserve("o-late/2"),
        release("o-late/2"),
    ] {
        node.regions.stock("A", of_order(command)).await.unwrap();
    }
    assert_eq!(levels(&node, "A").await, common::levels(8, 0, 4));
    node.stop().await;

    // A day and an hour later, the node is back; a restock settles a new id, and with it the
    // SKU forgets the ones settled more than a day before.
    let later = storefront_actors::Clock::system().ahead(Duration::from_secs(25 * 3600));
    let node = Node::start_with_clock(dir.path(), fast_settings(), later).await;
    node.regions
        .stock("A", StockCommand::Restock { restock_id: "next-day".into(), qty: 1 })
        .await
        .unwrap();
    assert_eq!(levels(&node, "A").await, common::levels(9, 0, 4));

    // The order resumes: its commit was done, so it is done (not gone)...
    let committed = node.regions.stock("A", of_order(commit("o-late/0"))).await;
    assert_eq!(committed.map(|l| l.sold), Ok(4), "a commit made a day ago");
    // ...a release of the sold line is refused as committed, so the order gives it back...
    assert_eq!(
        node.regions.stock("A", of_order(release("o-late/0"))).await,
        Err(DomainError::AlreadyCommitted("o-late/0".into()))
    );
    // ...a return made a day ago is not made twice...
    node.regions.stock("A", of_order(give_back)).await.unwrap();
    // ...and the released hold stays gone.
    assert_eq!(
        node.regions.stock("A", of_order(commit("o-late/2"))).await,
        Err(DomainError::ReservationGone("o-late/2".into()))
    );
    assert_eq!(levels(&node, "A").await, common::levels(9, 0, 4));
    // A return the order never made still takes effect.
    let fresh = StockCommand::Return {
        restock_id: "o-late/0/return".into(),
        qty: 2,
        customer: "u1".into(),
    };
    node.regions.stock("A", of_order(fresh)).await.unwrap();
    assert_eq!(levels(&node, "A").await, common::levels(11, 0, 4));
}

/// A placement whose write is still in flight when the wait ends, and then never lands (its
/// node killed, its lease lost), is not answered as pending: a 202 would name an order that
/// never exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placement_that_never_lands_is_not_answered_pending() {
    let dir = tempfile::tempdir().unwrap();
    let (lose, lost) = tokio::sync::watch::channel(false);
    let node = Node::start_with(dir.path(), fast_settings(), Clock::system(), |inner| {
        let lost = Some(("order/o-lost".to_owned(), lost));
        Arc::new(common::Tapped { inner, lost, appends: Arc::default() })
    })
    .await;
    node.stock_sku("A", 10).await;
    let place = order("o-lost", "u1", "tok_visa", &[("A", 1, "1.00")]);
    let answer = node.regions.checkout(place, Duration::ZERO).await;
    assert!(
        !matches!(answer, Ok(Checkout::Pending { .. })),
        "answered {answer:?} while the placement was not written"
    );
    lose.send(true).unwrap();
    eventually(WAIT, "the lost placement's actor to stop", || async {
        matches!(node.regions.order("o-lost").await, Err(DomainError::NotFound { .. }))
    })
    .await;
    assert_eq!(levels(&node, "A").await, common::levels(10, 0, 0));
}

/// A node whose store records every append's stream (see [`common::Tapped`]).
async fn tapped_node(
    dir: &std::path::Path,
    settings: EntitySettings,
) -> (Node, Arc<std::sync::Mutex<Vec<String>>>) {
    let appends = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tap = appends.clone();
    let node = Node::start_with(dir, settings, Clock::system(), move |inner| {
        Arc::new(common::Tapped { inner, lost: None, appends: tap })
    })
    .await;
    node.stock_sku("A", 10).await;
    node.stock_sku("B", 10).await;
    (node, appends)
}

/// A checkout that confirms writes its order twice, placed and ended: the saga's steps are
/// written with its end, not one append each. One that fails writes the decision to compensate
/// (with the steps before it) before compensation acts, then compensation's steps, then its end.
/// Every step is there to read back once the node restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_writes_its_order_twice_placed_and_ended_with_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let (node, appends) = tapped_node(dir.path(), fast_settings()).await;
    let mut ended = Vec::new();
    for (order_id, token, writes) in
        [("o-ok", "tok_visa", 2), ("o-declined", "tok_chargeDeclined", 4)]
    {
        let view = checkout(&node, order_id, token).await;
        let appended = common::appends_to(&appends, &format!("order/{order_id}"));
        assert_eq!(appended, writes, "{view:?}");
        ended.push(view);
    }
    assert_eq!(ended[0].status, OrderStatus::Confirmed);
    assert_eq!(ended[0].history.len(), 4, "placed, reserved, paid, confirmed: {:?}", ended[0]);
    assert_eq!(ended[1].status, OrderStatus::Failed);
    assert_eq!(common::outbox_count(&node, "payment.failed").await, 1);
    node.stop().await;
    let node = Node::start(dir.path(), fast_settings()).await;
    for view in ended {
        assert_eq!(node.regions.order(&view.order_id).await.unwrap(), view, "read back");
    }
    assert_eq!(levels(&node, "A").await, common::levels(8, 0, 2));
}

/// A read of an order whose saga is under way writes the steps it holds and answers: it does not
/// wait for the saga to end (here, a capture that never answers within the test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_read_during_its_saga_answers_with_the_steps_so_far() {
    use storefront_actors::gateway::{Fault, GatewayOp};
    let dir = tempfile::tempdir().unwrap();
    // The capture hangs for far longer than the test waits for anything.
    let settings = EntitySettings { gateway_timeout: Duration::from_secs(3600), ..fast_settings() };
    let (node, _appends) = tapped_node(dir.path(), settings).await;
    node.gateway.inject(GatewayOp::Capture, Fault::SucceedThenHang, 1);
    let place = order("o-slow", "u1", "tok_visa", &[("A", 1, "1.00")]);
    let answer = node.regions.checkout(place, Duration::ZERO).await.unwrap();
    assert!(matches!(answer, Checkout::Pending { .. }), "{answer:?}");
    eventually(WAIT, "the saga to reach its capture", || async {
        node.gateway.calls("o-slow/capture") == 1
    })
    .await;
    let view = tokio::time::timeout(WAIT, node.regions.order("o-slow"))
        .await
        .expect("the read answers while the capture hangs")
        .unwrap();
    assert!(view.in_progress, "{view:?}");
    let statuses: Vec<_> = view.history.iter().map(|c| c.status).collect();
    assert_eq!(statuses, [OrderStatus::Pending, OrderStatus::Reserved, OrderStatus::Paid]);
    // What the read answered is durable: placed, reserved, authorized, committed.
    let durable =
        storefront_storage::Store::read_events(&*node.store, "order/o-slow", 1, 100).await.unwrap();
    assert_eq!(durable.len(), 4, "durable once read: {durable:?}");
    assert_eq!(levels(&node, "A").await, common::levels(9, 0, 1), "committed before the capture");
}

/// Compensation undoes the steps, so it may not act before its decision, and the steps it
/// undoes, are durable: a saga resumed from before it would redo the steps against what it undid
/// (a released reservation refused, the authorization to void forgotten). Here the void hangs;
/// by then the order's journal holds the authorization and the decision to compensate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compensation_acts_only_once_its_decision_and_the_steps_it_undoes_are_durable() {
    use storefront_actors::gateway::{Fault, GatewayOp};
    let dir = tempfile::tempdir().unwrap();
    // Reservations lapse at once (the commit fails), and the void hangs far past the test.
    let settings = EntitySettings {
        reservation_ttl: Duration::ZERO,
        gateway_timeout: Duration::from_secs(3600),
        ..fast_settings()
    };
    let (node, _appends) = tapped_node(dir.path(), settings).await;
    node.gateway.inject(GatewayOp::Void, Fault::SucceedThenHang, 1);
    let place = order("o-undo", "u1", "tok_visa", &[("A", 1, "1.00")]);
    // The caller waits for the outcome (a shorter wait would have the region read the order when
    // it ends, and a read has the order write what it holds).
    let regions = node.regions.clone();
    let _caller =
        tokio::spawn(async move { regions.checkout(place, Duration::from_secs(3600)).await });
    eventually(WAIT, "compensation to void", || async { node.gateway.calls("o-undo/void") == 1 })
        .await;
    // Placed, LineReserved, PaymentAuthorized, CompensationStarted (the release and the void are
    // recorded once both answer): all durable, read from the store, not from the order (a read
    // of the order would have it write what it holds).
    let durable =
        storefront_storage::Store::read_events(&*node.store, "order/o-undo", 1, 100).await.unwrap();
    assert_eq!(durable.len(), 4, "durable before the void: {durable:?}");
}
