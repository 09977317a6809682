//! `--compare`: the same flash sale (S units, the same attempts, the same number of concurrent
//! workers) decided by the designs most shops use, and by Storefront's engine without HTTP:
//!
//! - PostgreSQL: `UPDATE stock SET qty = qty - 1 WHERE sku = $1 AND qty >= 1`, one autocommit
//!   statement per attempt, `synchronous_commit = on` (the row lock serializes the buyers);
//! - Redis: a Lua check-and-decrement, with `appendonly yes` and `appendfsync always` set for the
//!   run and the server's settings put back after it;
//! - Storefront's engine in process: the SKU actor's reserve and commit (the stock decision, each
//!   step durable), and the whole checkout saga (order, stock, payment, all durable).
//!
//! Each worker has its own connection and makes one attempt at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use rust_decimal::Decimal;
use storefront_actors::order::{OrderLine, OrderStatus, PlaceOrder};
use storefront_actors::{
    Clock, Currency, DomainError, Money, Quantity, SimulatedGateway, Sku, StockCommand,
};
use storefront_cluster::{Checkout, Regions, RegionsConfig};
use storefront_storage::embedded::EmbeddedStore;
use tokio::time::Instant;

use crate::stats::{Contender, Latency, histogram};

/// The sale every contender decides.
#[derive(Debug, Clone)]
pub struct Sale {
    /// A name for this run's keys.
    pub run: String,
    /// Units.
    pub stock: u64,
    /// Attempts, one unit each.
    pub attempts: u64,
    /// Concurrent workers, each with its own connection.
    pub workers: usize,
}

/// One worker of a contender: decides attempt `i`, true if it bought a unit.
trait Decider: Send + 'static {
    fn attempt(&mut self, i: u64) -> impl Future<Output = anyhow::Result<bool>> + Send;
}

/// Runs `sale` over `deciders` (one per worker), released together.
async fn drive<D: Decider>(name: &str, sale: &Sale, deciders: Vec<D>) -> anyhow::Result<Contender> {
    let next = Arc::new(AtomicU64::new(0));
    let attempts = sale.attempts;
    let start = Instant::now();
    let workers: Vec<_> = deciders
        .into_iter()
        .map(|mut decider| {
            let next = next.clone();
            tokio::spawn(async move {
                let (mut latency, mut sold, mut last_sale) = (histogram(), 0u64, start);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= attempts {
                        return anyhow::Ok((latency, sold, last_sale));
                    }
                    let begun = Instant::now();
                    if decider.attempt(i).await? {
                        sold += 1;
                        last_sale = Instant::now();
                    }
                    latency.saturating_record(begun.elapsed().as_micros().max(1) as u64);
                }
            })
        })
        .collect();
    let (mut latency, mut sold, mut last_sale) = (histogram(), 0, start);
    for worker in workers {
        let (h, n, last) = worker.await.context("a worker panicked")??;
        // Same bounds on both sides: adding cannot fail.
        let _ = latency.add(&h);
        sold += n;
        last_sale = last_sale.max(last);
    }
    let sold_out_s = last_sale.duration_since(start).as_secs_f64();
    let elapsed = start.elapsed().as_secs_f64();
    if sold != sale.stock.min(sale.attempts) {
        bail!("{name} sold {sold} units of {} with {} attempts", sale.stock, sale.attempts);
    }
    Ok(Contender {
        name: name.to_owned(),
        attempts,
        sold,
        attempts_per_s: (attempts as f64 / elapsed).round(),
        sold_out_s: (sold_out_s * 1000.0).round() / 1000.0,
        units_per_s: (sold as f64 / sold_out_s.max(1e-9)).round(),
        latency: Latency::of(&latency),
        http_ratio: None,
        engine_ratio: None,
    })
}

struct Postgres {
    client: tokio_postgres::Client,
    update: tokio_postgres::Statement,
    sku: String,
}

impl Decider for Postgres {
    async fn attempt(&mut self, _i: u64) -> anyhow::Result<bool> {
        Ok(self.client.execute(&self.update, &[&self.sku]).await? == 1)
    }
}

async fn pg_connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {url}"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// The sale decided by a PostgreSQL row lock.
pub async fn postgres(url: &str, sale: &Sale) -> anyhow::Result<Contender> {
    let admin = pg_connect(url).await?;
    admin
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS storefront_load_stock (sku text PRIMARY KEY, qty bigint NOT NULL)",
        )
        .await?;
    let fsync: String = admin.query_one("SHOW fsync", &[]).await?.get(0);
    if fsync != "on" {
        bail!(
            "PostgreSQL runs with fsync = {fsync}: its commits are not durable, no fair baseline"
        );
    }
    let sku = format!("{}-pg", sale.run);
    admin
        .execute(
            "INSERT INTO storefront_load_stock (sku, qty) VALUES ($1, $2)",
            &[&sku, &(sale.stock as i64)],
        )
        .await?;
    let mut deciders = Vec::with_capacity(sale.workers);
    for _ in 0..sale.workers {
        let client = pg_connect(url)
            .await
            .context("one connection per worker (raise max_connections or lower --workers)")?;
        client.batch_execute("SET synchronous_commit = on").await?;
        let update = client
            .prepare("UPDATE storefront_load_stock SET qty = qty - 1 WHERE sku = $1 AND qty >= 1")
            .await?;
        deciders.push(Postgres { client, update, sku: sku.clone() });
    }
    let result = drive("PostgreSQL row lock (synchronous_commit on)", sale, deciders).await;
    let left: i64 = admin
        .query_one("SELECT qty FROM storefront_load_stock WHERE sku = $1", &[&sku])
        .await?
        .get(0);
    admin.execute("DELETE FROM storefront_load_stock WHERE sku = $1", &[&sku]).await?;
    let result = result?;
    if left as u64 != sale.stock - result.sold {
        bail!("PostgreSQL left {left} units after selling {} of {}", result.sold, sale.stock);
    }
    Ok(result)
}

/// Takes a unit if one is left: 1 if taken, 0 if sold out.
const TAKE_ONE: &str = r"
local left = tonumber(redis.call('GET', KEYS[1]) or '0')
if left >= 1 then
  redis.call('DECR', KEYS[1])
  return 1
end
return 0
";

struct Redis {
    conn: redis::aio::MultiplexedConnection,
    script: redis::Script,
    key: String,
}

impl Decider for Redis {
    async fn attempt(&mut self, _i: u64) -> anyhow::Result<bool> {
        let taken: i64 = self.script.key(&self.key).invoke_async(&mut self.conn).await?;
        Ok(taken == 1)
    }
}

async fn redis_config(
    conn: &mut redis::aio::MultiplexedConnection,
    name: &str,
) -> anyhow::Result<String> {
    let pair: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query_async(conn).await?;
    pair.get(1).cloned().with_context(|| format!("Redis has no setting {name}"))
}

async fn redis_set(
    conn: &mut redis::aio::MultiplexedConnection,
    name: &str,
    value: &str,
) -> anyhow::Result<()> {
    redis::cmd("CONFIG").arg("SET").arg(name).arg(value).query_async::<()>(conn).await?;
    Ok(())
}

/// The sale decided by a Redis Lua script with every write fsynced (`appendfsync always`).
pub async fn redis(url: &str, sale: &Sale) -> anyhow::Result<Contender> {
    let client = redis::Client::open(url).with_context(|| format!("Redis URL {url}"))?;
    let mut admin = client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connecting to Redis at {url}"))?;
    let (appendonly, appendfsync) = (
        redis_config(&mut admin, "appendonly").await?,
        redis_config(&mut admin, "appendfsync").await?,
    );
    redis_set(&mut admin, "appendonly", "yes").await?;
    redis_set(&mut admin, "appendfsync", "always").await?;
    let result = async {
        // Turning the AOF on rewrites it in the background first; wait until it is written.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let info: String =
                redis::cmd("INFO").arg("persistence").query_async(&mut admin).await?;
            if info.contains("aof_enabled:1")
                && info.contains("aof_rewrite_in_progress:0")
                && !info.contains("aof_rewrite_scheduled:1")
            {
                break;
            }
            if Instant::now() >= deadline {
                bail!("Redis did not finish turning its AOF on within a minute");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let key = format!("storefront-load:{}:stock", sale.run);
        redis::cmd("SET").arg(&key).arg(sale.stock).query_async::<()>(&mut admin).await?;
        let mut deciders = Vec::with_capacity(sale.workers);
        for _ in 0..sale.workers {
            // A connection per worker, as the PostgreSQL workers have.
            let conn = client.get_multiplexed_async_connection().await?;
            deciders.push(Redis { conn, script: redis::Script::new(TAKE_ONE), key: key.clone() });
        }
        let outcome = drive("Redis Lua (appendfsync always)", sale, deciders).await;
        let left: i64 = redis::cmd("GET").arg(&key).query_async(&mut admin).await?;
        redis::cmd("DEL").arg(&key).query_async::<()>(&mut admin).await?;
        let outcome = outcome?;
        if left as u64 != sale.stock - outcome.sold {
            bail!("Redis left {left} units after selling {} of {}", outcome.sold, sale.stock);
        }
        Ok(outcome)
    }
    .await;
    redis_set(&mut admin, "appendfsync", &appendfsync).await?;
    redis_set(&mut admin, "appendonly", &appendonly).await?;
    result
}

/// The hot SKU of the engine's sale.
const HOT: &str = "HOT";

/// Decides `sale` on a node's regions in process, on a fresh embedded store in a temporary
/// directory, with [`HOT`] stocked with the sale's units and one `decider` per worker.
async fn on_engine<D: Decider>(
    name: &str,
    sale: &Sale,
    decider: impl Fn(&Regions) -> D,
) -> anyhow::Result<Contender> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(EmbeddedStore::open(dir.path()).await?);
    let regions = Regions::start(
        store,
        Arc::new(SimulatedGateway::new()),
        Clock::system(),
        RegionsConfig::default(),
    )
    .await?;
    regions
        .stock(HOT, StockCommand::Restock { restock_id: "initial".into(), qty: sale.stock })
        .await?;
    let deciders = (0..sale.workers).map(|_| decider(&regions)).collect();
    let result = drive(name, sale, deciders).await;
    regions.shutdown(Duration::from_secs(10)).await;
    result
}

struct StockDecision {
    regions: Regions,
    sku: String,
}

impl Decider for StockDecision {
    async fn attempt(&mut self, i: u64) -> anyhow::Result<bool> {
        let reservation_id = format!("r{i}");
        let reserve = StockCommand::Reserve {
            reservation_id: reservation_id.clone(),
            order_id: format!("o{i}"),
            qty: 1,
            ttl_ms: 600_000,
        };
        match self.regions.stock(&self.sku, reserve).await {
            Ok(_) => {
                self.regions.stock(&self.sku, StockCommand::Commit { reservation_id }).await?;
                Ok(true)
            }
            Err(DomainError::OutOfStock { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

struct Saga {
    regions: Regions,
    line: OrderLine,
}

impl Decider for Saga {
    async fn attempt(&mut self, i: u64) -> anyhow::Result<bool> {
        let order = PlaceOrder {
            order_id: format!("o{i}"),
            user_id: format!("u{i}"),
            lines: vec![self.line.clone()],
            currency: Currency::USD,
            fx_rate: None,
            payment_token: "tok_visa".into(),
            shipping_address: None,
            email: format!("u{i}@example.com"),
            catalog_version: 0,
        };
        match self.regions.checkout(order, Duration::from_secs(60)).await? {
            Checkout::Ended(view) if view.status == OrderStatus::Confirmed => Ok(true),
            Checkout::Ended(view) if view.status == OrderStatus::Failed => Ok(false),
            other => bail!("order o{i} did not end within a minute: {other:?}"),
        }
    }
}

/// The sale decided by Storefront's SKU actor in process: reserve, then commit, each durable.
pub async fn engine_stock(sale: &Sale) -> anyhow::Result<Contender> {
    on_engine("Storefront engine: SKU reserve+commit", sale, |regions| StockDecision {
        regions: regions.clone(),
        sku: HOT.to_owned(),
    })
    .await
}

/// The sale decided by Storefront's whole checkout saga in process.
pub async fn engine_saga(sale: &Sale) -> anyhow::Result<Contender> {
    let line = OrderLine {
        sku: Sku::parse(HOT)?,
        qty: Quantity::new(1)?,
        unit_price: Money::parse(&Decimal::new(1999, 2).to_string(), Currency::USD)?,
        name: "Hot product".into(),
        product_version: 0,
    };
    on_engine("Storefront engine: checkout saga", sale, |regions| Saga {
        regions: regions.clone(),
        line: line.clone(),
    })
    .await
}
