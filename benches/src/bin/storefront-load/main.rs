//! `storefront-load`: the load tool of flash-sale teams and operators. It drives one or several
//! Storefront nodes over HTTP with a scenario (`flash-sale`, `browse`, `search`, `checkout-mix`,
//! `hot-cold`, `stock-broadcast`), closed or open loop, always bounded by a count and a duration;
//! prints a progress line, then a table, and writes the same as JSON, and charts per second of the
//! run as an HTML page; checks the outcome through the API and exits non-zero when a check fails.
//! `flash-sale --compare` also decides the same sale with PostgreSQL, Redis and Storefront's engine
//! in process. How to run it: BENCHMARKS.md.

mod admin;
mod broadcast;
mod browse;
mod checkout_mix;
mod client;
mod compare;
mod flash_sale;
mod hot_cold;
mod report;
mod run;
mod search;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::admin::Api;
use crate::client::Target;
use crate::run::Plan;
use crate::stats::{Contender, Latency, Memory, Report, Stats};

/// The allocator the `storefront` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "storefront-load",
    version,
    about = "Load and flash-sale tool for Storefront nodes"
)]
struct Cli {
    /// Node URLs, used round-robin (comma-separated or repeated).
    #[arg(
        long = "url",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    urls: Vec<String>,
    /// Keep-alive connections held (closed loop: the concurrency). Up to the open-file limit,
    /// which the tool raises to its hard limit.
    #[arg(long, default_value_t = 256, global = true)]
    connections: usize,
    /// Open loop: iterations started per second (default: closed loop).
    #[arg(long, global = true)]
    rate: Option<f64>,
    /// The run stops starting iterations after this long, whatever the count.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, global = true)]
    duration: Duration,
    /// A request without an answer after this long counts as failed.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    timeout: Duration,
    /// The shop's admin (set-up and checks).
    #[arg(long, env = "STOREFRONT_ADMIN_EMAIL", global = true)]
    admin_email: Option<String>,
    /// The admin's password.
    #[arg(long, env = "STOREFRONT_ADMIN_PASSWORD", hide_env_values = true, global = true)]
    admin_password: Option<String>,
    /// Also write the report as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Also write the report as one self-contained HTML page (SVG charts, no scripts, nothing
    /// fetched) to this file: attempts, units sold and p50/p99 latency per second, outcomes, and
    /// the `--compare` contenders.
    #[arg(long, value_name = "FILE.html", global = true)]
    report: Option<PathBuf>,
    /// The server's process id, to report its memory (same machine only).
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Shoppers each try to buy one unit of a hot SKU, all released at one instant.
    FlashSale {
        /// Shoppers (accounts), one attempt each.
        #[arg(long, default_value_t = 10_000)]
        shoppers: usize,
        /// Units of the hot SKU.
        #[arg(long, default_value_t = 1_000)]
        stock: u64,
        /// Also decide the same sale with PostgreSQL, Redis and the engine in process.
        #[arg(long)]
        compare: bool,
        /// Concurrent workers of each `--compare` contender (one connection each).
        #[arg(long, default_value_t = 64)]
        workers: usize,
        /// PostgreSQL for `--compare` (a libpq connection string). The variables are not named
        /// `STOREFRONT_*`: a node refuses to start with a `STOREFRONT_` variable it does not know.
        #[arg(
            long,
            env = "LOAD_PG_URL",
            default_value = "host=127.0.0.1 user=postgres dbname=postgres"
        )]
        pg: String,
        /// The sale opens once this file no longer exists (after the set-up): a script holds it
        /// while what the set-up started settles (the welcome mails of the new accounts, say).
        #[arg(long)]
        hold_while: Option<PathBuf>,
        /// Redis for `--compare`.
        #[arg(long, env = "LOAD_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
        redis: String,
    },
    /// Product reads and full-text searches over the catalog.
    Browse {
        /// Requests at most.
        #[arg(long, default_value_t = 100_000)]
        requests: u64,
        /// Share of searches (0 to 1); the rest read a product.
        #[arg(long, default_value_t = 0.2)]
        search_share: f64,
    },
    /// Full-text searches of one or two of the catalog's own words, each answered with facets.
    Search {
        /// Searches at most.
        #[arg(long, default_value_t = 100_000)]
        searches: u64,
        /// Share of queries with a typo (0 to 1).
        #[arg(long, default_value_t = 0.0)]
        typo_share: f64,
    },
    /// Carts filled with 1 to 3 of many SKUs, then checked out.
    CheckoutMix {
        /// Cart-and-checkout iterations at most.
        #[arg(long, default_value_t = 10_000)]
        checkouts: u64,
        /// SKUs to spread over.
        #[arg(long, default_value_t = 100)]
        skus: usize,
        /// Units of each SKU.
        #[arg(long, default_value_t = 1_000_000)]
        stock: u64,
        /// Shoppers (at least one per connection).
        #[arg(long, default_value_t = 1_000)]
        shoppers: usize,
    },
    /// A cold SKU's checkouts alone, then beside a hot SKU bought by every other connection
    /// (more than it serves within the checkout wait): how much the hot one slows the cold one.
    HotCold {
        /// Connections (of `--connections`) that buy the cold SKU.
        #[arg(long, default_value_t = 16)]
        cold_connections: usize,
        /// Units of each SKU.
        #[arg(long, default_value_t = 10_000_000)]
        stock: u64,
        /// Shoppers, used round-robin by the connections.
        #[arg(long, default_value_t = 64)]
        shoppers: usize,
    },
    /// Against two or more nodes of one cluster (`--url A,B`): how soon every node's stock
    /// stream shows a restock and a sell-out made through the first, and that every node then
    /// answers a checkout 409.
    StockBroadcast {
        /// Rounds of restock, sale and sold-out checkouts.
        #[arg(long, default_value_t = 100)]
        rounds: u64,
        /// Pause before each change.
        #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
        gap: Duration,
    },
}

/// A deterministic spread of `i` over 64 bits (SplitMix64), to pick products, SKUs and shares.
pub fn splitmix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("storefront-load: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("storefront-load: a check failed");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("storefront-load: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the scenario; whether every check held.
async fn run(cli: Cli) -> anyhow::Result<bool> {
    let limit = rlimit::increase_nofile_limit(u64::MAX).context("raising the open-file limit")?;
    let needed = cli.connections as u64 + 256;
    anyhow::ensure!(
        limit >= needed,
        "{} connections need about {needed} open files; the hard limit is {limit} (raise it, e.g. `ulimit -Hn`)",
        cli.connections
    );
    anyhow::ensure!(cli.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(cli.rate.is_none_or(|r| r > 0.0), "--rate must be above 0");
    let mut targets = Vec::new();
    for url in &cli.urls {
        targets.push(Arc::new(Target::resolve(url).await?));
    }
    let (email, password) = match (&cli.admin_email, &cli.admin_password) {
        (Some(email), Some(password)) => (email, password),
        _ => anyhow::bail!(
            "set --admin-email and --admin-password (or STOREFRONT_ADMIN_EMAIL/STOREFRONT_ADMIN_PASSWORD)"
        ),
    };
    let api = Api::login(&targets[0].url, email, password).await?;
    let run_id = format!(
        "ld{:x}{:x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs(),
        std::process::id()
    );
    let plan = |iterations| Plan {
        connections: cli.connections,
        iterations,
        duration: cli.duration,
        rate: cli.rate,
        timeout: cli.timeout,
    };
    let set_up = Instant::now();
    let (name, measured, checks, compare, setup_s) = match cli.scenario {
        Scenario::FlashSale {
            shoppers,
            stock,
            compare,
            workers,
            ref pg,
            ref redis,
            ref hold_while,
        } => {
            let sale_run =
                Arc::new(flash_sale::FlashSale::set_up(&api, &run_id, stock, shoppers).await?);
            let setup_s = set_up.elapsed().as_secs_f64();
            eprintln!(
                "flash-sale: {} on sale, {} shoppers ready in {setup_s:.1} s",
                stock,
                sale_run.shoppers()
            );
            if let Some(file) = hold_while {
                eprintln!("flash-sale: held while {} exists", file.display());
                while file.exists() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            let measured =
                run::run("flash-sale", &targets, &plan(sale_run.shoppers()), sale_run.clone())
                    .await?;
            let mut checks = sale_run.check(&api, measured.iterations).await?;
            let failed = measured.stats.failed();
            checks.push(stats::Check::new(
                "no 5xx and no attempt unanswered",
                failed == 0,
                format!("{failed} failed"),
            ));
            let contenders = if compare {
                let sale = compare::Sale {
                    run: run_id.clone(),
                    stock,
                    attempts: measured.iterations,
                    workers,
                };
                let sold_out =
                    sale_run.last_sale().map(|t| t.saturating_duration_since(measured.start));
                contenders(&sale, &measured, sold_out, pg, redis).await?
            } else {
                Vec::new()
            };
            ("flash-sale", measured, checks, contenders, setup_s)
        }
        Scenario::Browse { requests, search_share } => {
            let browse = Arc::new(browse::Browse::set_up(&api, search_share).await?);
            let setup_s = set_up.elapsed().as_secs_f64();
            let measured = run::run("browse", &targets, &plan(requests), browse).await?;
            let checks = browse::Browse::check(&measured.stats);
            ("browse", measured, checks, Vec::new(), setup_s)
        }
        Scenario::Search { searches, typo_share } => {
            let search = Arc::new(search::Search::set_up(&api, typo_share).await?);
            let setup_s = set_up.elapsed().as_secs_f64();
            let measured = run::run("search", &targets, &plan(searches), search).await?;
            let checks = search::Search::check(&measured.stats);
            ("search", measured, checks, Vec::new(), setup_s)
        }
        Scenario::CheckoutMix { checkouts, skus, stock, shoppers } => {
            let mix = Arc::new(
                checkout_mix::CheckoutMix::set_up(
                    &api,
                    &run_id,
                    skus,
                    stock,
                    shoppers,
                    cli.connections,
                )
                .await?,
            );
            let setup_s = set_up.elapsed().as_secs_f64();
            let measured =
                run::run("checkout-mix", &targets, &plan(checkouts), mix.clone()).await?;
            let checks = mix.check(&api, &measured.stats).await?;
            ("checkout-mix", measured, checks, Vec::new(), setup_s)
        }
        Scenario::HotCold { cold_connections, stock, shoppers } => {
            anyhow::ensure!(
                (1..cli.connections).contains(&cold_connections),
                "--cold-connections must be at least 1 and below --connections"
            );
            let alone = Arc::new(
                hot_cold::HotCold::set_up(&api, &run_id, stock, shoppers, cold_connections).await?,
            );
            let setup_s = set_up.elapsed().as_secs_f64();
            let cold_only = Plan { connections: cold_connections, ..plan(u64::MAX) };
            let mut before =
                run::run("hot-cold: cold SKU alone", &targets, &cold_only, alone.clone()).await?;
            let with_hot = Arc::new(alone.with_hot(&run_id));
            let mut measured =
                run::run("hot-cold: beside the hot SKU", &targets, &plan(u64::MAX), with_hot)
                    .await?;
            let mut checks = hot_cold::HotCold::check(&before, &measured);
            let failed = before.stats.failed() + measured.stats.failed();
            checks.push(stats::Check::new(
                "no 5xx and no checkout unanswered",
                failed == 0,
                format!("{failed} failed"),
            ));
            if let Some(cold) = before.stats.endpoints.remove(hot_cold::COLD) {
                measured.stats.endpoints.insert(hot_cold::COLD_ALONE, cold);
            }
            ("hot-cold", measured, checks, Vec::new(), setup_s)
        }
        Scenario::StockBroadcast { rounds, gap } => {
            let (measured, checks) =
                broadcast::run(&api, &targets, &run_id, rounds, gap, cli.timeout).await?;
            let setup_s = set_up.elapsed().saturating_sub(measured.elapsed).as_secs_f64();
            ("stock-broadcast", measured, checks, Vec::new(), setup_s)
        }
    };
    let report = Report {
        scenario: name,
        mode: if cli.rate.is_some() { "open" } else { "closed" },
        rate: cli.rate,
        connections: cli.connections,
        nodes: targets.iter().map(|t| t.url.clone()).collect(),
        setup_s: (setup_s * 10.0).round() / 10.0,
        duration_s: (measured.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        iterations: measured.iterations,
        iterations_per_s: (measured.iterations as f64 / measured.elapsed.as_secs_f64().max(1e-9))
            .round(),
        endpoints: Report::endpoints(&measured.stats, measured.elapsed),
        checks,
        compare,
        server_memory: cli.server_pid.map(Memory::read).transpose()?,
    };
    // The report is this tool's output.
    #[allow(clippy::print_stdout)]
    {
        println!("{}", report.table());
    }
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &cli.report {
        report::write(path, &report, &measured.stats.timeline)?;
    }
    Ok(report.passed())
}

/// The HTTP sale just run, then the same sale decided by the engine in process, PostgreSQL and
/// Redis, with the ratios.
async fn contenders(
    sale: &compare::Sale,
    measured: &run::Measured,
    sold_out: Option<Duration>,
    pg: &str,
    redis: &str,
) -> anyhow::Result<Vec<Contender>> {
    eprintln!(
        "compare: the same sale ({} units, {} attempts, {} workers each)",
        sale.stock, sale.attempts, sale.workers
    );
    let http = http_contender(sale, &measured.stats, measured.elapsed, sold_out);
    let stock = compare::engine_stock(sale).await.context("engine (SKU reserve+commit)")?;
    let saga = compare::engine_saga(sale).await.context("engine (checkout saga)")?;
    let postgres = compare::postgres(pg, sale).await.context("PostgreSQL baseline")?;
    let redis = compare::redis(redis, sale).await.context("Redis baseline")?;
    let (http_rate, engine_rate) = (http.attempts_per_s, stock.attempts_per_s);
    let mut all = vec![http, stock, saga, postgres, redis];
    for c in &mut all {
        c.http_ratio = Some(http_rate / c.attempts_per_s.max(1e-9));
        c.engine_ratio = Some(engine_rate / c.attempts_per_s.max(1e-9));
    }
    Ok(all)
}

/// The HTTP sale as a contender row.
fn http_contender(
    sale: &compare::Sale,
    stats: &Stats,
    elapsed: Duration,
    sold_out: Option<Duration>,
) -> Contender {
    let checkout = stats.endpoints.get(stats::CHECKOUT);
    let sold = checkout.and_then(|e| e.outcomes.get("201")).copied().unwrap_or(0);
    let sold_out_s = sold_out.unwrap_or(elapsed).as_secs_f64();
    Contender {
        name: "Storefront over HTTP (this run)".to_owned(),
        attempts: sale.attempts,
        sold,
        attempts_per_s: (sale.attempts as f64 / elapsed.as_secs_f64().max(1e-9)).round(),
        sold_out_s: (sold_out_s * 1000.0).round() / 1000.0,
        units_per_s: (sold as f64 / sold_out_s.max(1e-9)).round(),
        latency: checkout
            .map_or(Latency { p50_ms: 0.0, p95_ms: 0.0, p99_ms: 0.0, max_ms: 0.0 }, |e| {
                Latency::of(&e.latency)
            }),
        http_ratio: None,
        engine_ratio: None,
    }
}
