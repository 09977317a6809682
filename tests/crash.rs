//! A node is SIGKILLed mid-load (twice) and restarted on the same data dir: every acknowledged
//! reservation and confirmed order is there, nothing is applied twice, and every checkout that
//! was in flight ends confirmed or failed with its stock released.
// Test code: an unmet expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{Node, fast_settings, order};
use storefront_actors::order::OrderStatus;
use storefront_actors::{DomainError, StockCommand};
use storefront_cluster::Checkout;

const CHILD_DIR: &str = "STOREFRONT_CRASH_CHILD_DIR";
const CHILD_ROUND: &str = "STOREFRONT_CRASH_CHILD_ROUND";
const RESERVE_SKUS: usize = 4;
const CHECKOUT_SKUS: usize = 3;
const CHECKOUT_STOCK: u64 = 1_000;
const RESERVE_STOCK: u64 = 100_000;
const ROUNDS: usize = 2;

fn reserve_sku(k: usize) -> String {
    format!("R-{k}")
}

fn checkout_sku(k: usize) -> String {
    format!("C-{k}")
}

/// The lines of checkout `n`: one or two SKUs, 1 to 3 units each (deterministic).
fn checkout_lines(n: usize) -> Vec<(String, u32)> {
    let first = n % CHECKOUT_SKUS;
    let mut lines = vec![(checkout_sku(first), 1 + (n % 3) as u32)];
    if n.is_multiple_of(2) {
        lines.push((checkout_sku((first + 1) % CHECKOUT_SKUS), 1));
    }
    lines
}

fn emit(line: String) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// The child: a node under load until it is killed (or 120 s pass).
async fn child(dir: &str, round: usize) {
    let node = Arc::new(Node::start(dir.as_ref(), fast_settings()).await);
    for k in 0..RESERVE_SKUS {
        node.stock_sku(&reserve_sku(k), RESERVE_STOCK).await;
    }
    for k in 0..CHECKOUT_SKUS {
        node.stock_sku(&checkout_sku(k), CHECKOUT_STOCK).await;
    }
    emit("READY".into());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while tokio::time::Instant::now() < deadline {
                let id = format!("res-{round}-{worker}-{i}");
                let sku = reserve_sku(i % RESERVE_SKUS);
                let command = StockCommand::Reserve {
                    reservation_id: id.clone(),
                    order_id: id.clone(),
                    qty: 1,
                    ttl_ms: 3_600_000,
                };
                node.regions.stock(&sku, command).await.unwrap();
                emit(format!("RESERVED {sku} {id}"));
                i += 1;
            }
        }));
    }
    for worker in 0..16 {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while tokio::time::Instant::now() < deadline {
                let n = worker * 1_000_000 + i;
                let order_id = format!("ord-{round}-{n}");
                let token = if n % 5 == 4 { "tok_chargeDeclined" } else { "tok_visa" };
                let lines = checkout_lines(n);
                let lines: Vec<(&str, u32, &str)> =
                    lines.iter().map(|(s, q)| (s.as_str(), *q, "2.50")).collect();
                emit(format!("START {order_id} {n}"));
                let place = order(&order_id, "crash-user", token, &lines);
                match node.regions.checkout(place, Duration::from_secs(60)).await.unwrap() {
                    Checkout::Ended(view) => emit(format!("ENDED {order_id} {}", view.status)),
                    Checkout::Pending { .. } => panic!("checkout pending for a minute"),
                }
                i += 1;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[derive(Default)]
struct Seen {
    reserved: BTreeMap<String, BTreeSet<String>>,
    started: BTreeMap<String, usize>,
    ended: BTreeMap<String, String>,
}

fn run_child_until_killed(dir: &str, round: usize, seen: &mut Seen) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "killed_node_loses_nothing_acknowledged",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .env(CHILD_ROUND, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (mut reservations, mut confirmations, mut killed) = (0, 0, false);
    // After the kill, what the child printed before it died is still read: those are
    // acknowledgements too, and every checkout it placed was announced by a START line first.
    for line in stdout.lines() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["RESERVED", sku, id] => {
                seen.reserved.entry(sku.to_string()).or_default().insert(id.to_string());
                reservations += 1;
            }
            ["START", order_id, n] => {
                seen.started.insert(order_id.to_string(), n.parse().unwrap());
            }
            ["ENDED", order_id, status] => {
                seen.ended.insert(order_id.to_string(), status.to_string());
                confirmations += usize::from(*status == "confirmed");
            }
            _ => continue,
        }
        if !killed && reservations >= 2_000 && confirmations >= 100 {
            child.kill().unwrap();
            killed = true;
        }
    }
    child.wait().unwrap();
    assert!(killed, "round {round}: the child stopped before it was killed");
}

#[test]
fn killed_node_loses_nothing_acknowledged() {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        let round = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
        runtime.block_on(child(&dir, round));
        std::process::exit(0);
    }
    let dir = tempfile::tempdir().unwrap();
    let dir_text = dir.path().to_str().unwrap().to_owned();
    let mut seen = Seen::default();
    for round in 0..ROUNDS {
        run_child_until_killed(&dir_text, round, &mut seen);
    }
    runtime.block_on(async {
        let node = Node::start(dir.path(), fast_settings()).await;
        let r = &node.regions;

        // Every acknowledged reservation is held: committing each succeeds exactly once.
        for (sku, ids) in &seen.reserved {
            let before = r.stock_levels(sku).await.unwrap();
            assert_eq!(before.sold, 0);
            assert!(before.reserved >= ids.len() as u64, "{sku}: acknowledged reservations lost");
            for (n, id) in ids.iter().enumerate() {
                let commit = StockCommand::Commit { reservation_id: id.clone() };
                let once = r
                    .stock(sku, commit.clone())
                    .await
                    .unwrap_or_else(|e| panic!("{sku} {id}: {e}"));
                assert_eq!(once.sold, n as u64 + 1, "{sku} {id}: not sold exactly once");
                // Applied once: a repeat changes nothing.
                let again = r.stock(sku, commit).await.unwrap();
                assert_eq!(again, once, "{sku} {id}: a repeated commit was applied again");
            }
            let after = r.stock_levels(sku).await.unwrap();
            assert_eq!(after.sold, ids.len() as u64);
            assert_eq!(after.on_hand + after.sold, RESERVE_STOCK, "{sku}: units not conserved");
        }

        // Every checkout that was started ends confirmed or failed; acknowledged ones as acknowledged.
        let mut sold = [0u64; CHECKOUT_SKUS];
        let mut unknown = 0;
        for (order_id, n) in &seen.started {
            let outcome = r.order_outcome(order_id, Duration::from_secs(30)).await;
            let view = match outcome {
                Ok(view) => view,
                // Killed before its first event was durable: never acknowledged, nothing held.
                Err(DomainError::NotFound { .. }) => {
                    assert!(
                        !seen.ended.contains_key(order_id),
                        "{order_id} was acknowledged, then lost"
                    );
                    unknown += 1;
                    continue;
                }
                Err(err) => panic!("{order_id}: {err}"),
            };
            assert!(
                matches!(view.status, OrderStatus::Confirmed | OrderStatus::Failed),
                "{order_id} ended {:?}",
                view.status
            );
            if let Some(acknowledged) = seen.ended.get(order_id) {
                assert_eq!(
                    &view.status.to_string(),
                    acknowledged,
                    "{order_id} changed after acknowledgement"
                );
            }
            if view.status == OrderStatus::Confirmed {
                for (sku, qty) in checkout_lines(*n) {
                    let k: usize = sku[2..].parse().unwrap();
                    sold[k] += u64::from(qty);
                }
            }
        }
        // Stock was committed once per confirmed line (no order here fails after its commit, so
        // none is given back) and nothing is left reserved.
        for (k, sold) in sold.iter().enumerate() {
            let levels = r.stock_levels(&checkout_sku(k)).await.unwrap();
            assert_eq!(levels.sold, *sold, "C-{k}: sold differs from confirmed orders");
            assert_eq!(levels.reserved, 0, "C-{k}: stock still held by ended sagas");
            assert_eq!(levels.on_hand, CHECKOUT_STOCK - sold);
        }
        let in_flight = seen.started.len() - seen.ended.len();
        eprintln!(
            "verified {} orders ({in_flight} in flight at a kill, {unknown} never durable)",
            seen.started.len()
        );
        node.stop().await;
    });
}
