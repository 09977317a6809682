//! `stock-broadcast`: how soon every node of a cluster learns a SKU's stock change made through
//! one of them. Each node's `GET /v1/inventory/stream` is held open for one SKU; each round
//! restocks one unit through the first node and times when every stream shows it, buys it through
//! the first node and times when every stream shows the SKU sold out, then tries a checkout
//! through every node, which each edge answers 409 from what it learned.
//!
//! Changes are spaced by `gap`: a stream sends a SKU's first change after a quiet spell at once
//! and later ones at most every 100 ms (the cluster's forwarding, every 50 ms), so a gap of 0
//! measures changes that follow each other closely, and a gap above 100 ms each one on its own.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::admin::{Account, Api};
use crate::client::{Call, Conn, Target};
use crate::run::Measured;
use crate::stats::{Check, Stats};

/// How long a node's stream may take to show a change before the round counts it as missed.
const GIVE_UP: Duration = Duration::from_secs(5);

/// How long a new product may take to reach every node's catalog, with room to spare.
const CATALOG_SPREAD: Duration = Duration::from_secs(10);

/// How soon every node should know of a restock (issue 13).
pub const WITHIN: Duration = Duration::from_millis(100);

/// A `stock` event seen on node `node`'s stream: the SKU's available units, and when it arrived.
#[derive(Debug)]
struct Seen {
    node: usize,
    available: u64,
    at: Instant,
}

/// The endpoint labels of one node (leaked once per node: a handful per run).
#[derive(Debug, Clone, Copy)]
struct Labels {
    restock_seen: &'static str,
    sold_out_seen: &'static str,
    sold_out_checkout: &'static str,
}

impl Labels {
    fn of(node: usize) -> Self {
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        let n = node + 1;
        Self {
            restock_seen: leak(format!("restock seen on node {n}'s stream")),
            sold_out_seen: leak(format!("sold out seen on node {n}'s stream")),
            sold_out_checkout: leak(format!("POST /v1/checkout at node {n}, sold out")),
        }
    }
}

/// Runs `rounds` rounds over `targets` (at least two nodes of one cluster).
pub async fn run(
    api: &Api,
    targets: &[Arc<Target>],
    run: &str,
    rounds: u64,
    gap: Duration,
    timeout: Duration,
) -> anyhow::Result<(Measured, Vec<Check>)> {
    if targets.len() < 2 {
        bail!("stock-broadcast needs the URLs of at least two nodes of one cluster");
    }
    let sku = format!("{}-BCAST", run.to_uppercase());
    api.create_product(&sku, "stock-broadcast", &api.price().await?, 0).await?;
    let shopper: Account =
        api.provision(run, 1).await?.into_iter().next().context("no shopper created")?;
    let body = Call::one_unit_of(&sku);
    let (tx, mut seen) = mpsc::unbounded_channel();
    for (node, target) in targets.iter().enumerate() {
        subscribe(node, &target.url, &sku, tx.clone()).await?;
    }
    let mut conns = Vec::new();
    for target in targets {
        conns.push(Conn::open(target.clone()).await.map_err(|f| anyhow::anyhow!(f.label()))?);
    }
    let labels: Vec<Labels> = (0..targets.len()).map(Labels::of).collect();
    let mut stats = Stats::default();
    let mut missed = 0;
    let mut not_409 = Vec::new();
    let start = Instant::now();
    for round in 0..rounds {
        tokio::time::sleep(gap).await;
        let restocked = Instant::now();
        api.restock(&sku, 1).await?;
        missed += await_everywhere(&mut seen, &mut stats, &labels, 1, restocked, start, |l| {
            l.restock_seen
        })
        .await?;

        tokio::time::sleep(gap).await;
        let bought = Instant::now();
        let call =
            Call::checkout(shopper.token.clone(), body.clone(), format!("{run}-buy-{round}"));
        let answer = conns[0].send(&call, timeout).await.map_err(|f| anyhow::anyhow!(f.label()))?;
        if answer.status != 201 {
            bail!("round {round}: buying the restocked unit answered {}", answer.status);
        }
        missed +=
            await_everywhere(&mut seen, &mut stats, &labels, 0, bought, start, |l| l.sold_out_seen)
                .await?;

        for (node, conn) in conns.iter_mut().enumerate() {
            let call = Call::checkout(
                shopper.token.clone(),
                body.clone(),
                format!("{run}-sold-out-{round}-{node}"),
            );
            let sent = Instant::now();
            let answer = conn.send(&call, timeout).await.map_err(|f| anyhow::anyhow!(f.label()))?;
            let out_of_stock = answer.problem
                && answer.status == 409
                && String::from_utf8_lossy(&answer.body).contains("/problems/out-of-stock");
            let outcome = if out_of_stock {
                "409 /problems/out-of-stock".to_owned()
            } else {
                not_409.push(format!("node {}: {}", node + 1, answer.status));
                answer.status.to_string()
            };
            stats.record(labels[node].sold_out_checkout, outcome, sent.elapsed(), start.elapsed());
        }
    }
    let elapsed = start.elapsed();
    let mut checks = vec![
        Check::new(
            "every node's stream showed every change",
            missed == 0,
            format!("{missed} changes not shown within {GIVE_UP:?}"),
        ),
        Check::new(
            "a sold-out SKU is answered 409 by every node",
            not_409.is_empty(),
            if not_409.is_empty() { "all 409".to_owned() } else { not_409.join(", ") },
        ),
    ];
    for l in &labels {
        let p99 = stats
            .endpoints
            .get(l.restock_seen)
            .map_or(u64::MAX, |e| e.latency.value_at_quantile(0.99));
        checks.push(Check::new(
            format!("{}: p99 within {} ms of the restock", l.restock_seen, WITHIN.as_millis()),
            p99 <= WITHIN.as_micros() as u64,
            format!("p99 {:.1} ms", p99 as f64 / 1000.0),
        ));
    }
    Ok((Measured { start, stats, elapsed, iterations: rounds }, checks))
}

/// Waits until every node's stream has shown `available` units, recording for each how long
/// after `since` it did under `label`; how many nodes did not within [`GIVE_UP`].
async fn await_everywhere(
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    stats: &mut Stats,
    labels: &[Labels],
    available: u64,
    since: Instant,
    start: Instant,
    label: impl Fn(&Labels) -> &'static str,
) -> anyhow::Result<usize> {
    let mut waiting: Vec<bool> = vec![true; labels.len()];
    let give_up = since + GIVE_UP;
    while waiting.iter().any(|w| *w) {
        let event = match tokio::time::timeout_at(give_up, seen.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => bail!("every stock stream ended"),
            Err(_) => break,
        };
        if event.available == available && waiting[event.node] {
            waiting[event.node] = false;
            let latency = event.at.saturating_duration_since(since);
            stats.record(label(&labels[event.node]), "seen".to_owned(), latency, start.elapsed());
        }
    }
    for (node, _) in waiting.iter().enumerate().filter(|(_, w)| **w) {
        stats.record(label(&labels[node]), "error: not seen".to_owned(), GIVE_UP, start.elapsed());
    }
    Ok(waiting.iter().filter(|w| **w).count())
}

/// Opens node `node`'s stock stream of `sku` at `url` and forwards its events to `tx` until the
/// stream ends.
async fn subscribe(
    node: usize,
    url: &str,
    sku: &str,
    tx: mpsc::UnboundedSender<Seen>,
) -> anyhow::Result<()> {
    // A node learns of a product made through another within the catalog's spread (API.md:
    // 2 s); until then its stream answers 404 for the SKU.
    let give_up = Instant::now() + CATALOG_SPREAD;
    let response = loop {
        let response = reqwest::Client::new()
            .get(format!("{url}/v1/inventory/stream?sku={sku}"))
            .send()
            .await
            .with_context(|| format!("opening {url}'s stock stream"))?;
        match response.status() {
            reqwest::StatusCode::NOT_FOUND if Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            status if status.is_success() => break response,
            status => bail!("{url}'s stock stream answered {status}"),
        }
    };
    let mut body = response.bytes_stream();
    tokio::spawn(async move {
        let mut buffer = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            let at = Instant::now();
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            for available in complete_events(&mut buffer) {
                if tx.send(Seen { node, available, at }).is_err() {
                    return;
                }
            }
        }
    });
    Ok(())
}

/// Takes the complete server-sent events off the front of `buffer` (each ends with a blank
/// line) and returns the available units their `data:` lines carry.
fn complete_events(buffer: &mut String) -> Vec<u64> {
    #[derive(serde::Deserialize)]
    struct Stock {
        available: u64,
    }
    let mut found = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let event: String = buffer.drain(..end + 2).collect();
        let data = event.lines().find_map(|l| l.strip_prefix("data:"));
        if let Some(stock) = data.and_then(|d| serde_json::from_str::<Stock>(d.trim()).ok()) {
            found.push(stock.available);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_events_are_taken_and_a_partial_one_is_kept() {
        let mut buffer = String::from(
            "event:stock\ndata:{\"sku\":\"A\",\"on_hand\":1,\"reserved\":0,\"available\":1}\n\n\
             :keep-alive\n\nevent:stock\ndata:{\"sku\":\"A\",\"available\":0",
        );
        assert_eq!(complete_events(&mut buffer), vec![1]);
        assert!(buffer.starts_with("event:stock\ndata:"), "the partial event waits: {buffer}");
        buffer.push_str("}\n\n");
        assert_eq!(complete_events(&mut buffer), vec![0]);
        assert!(buffer.is_empty());
    }
}
