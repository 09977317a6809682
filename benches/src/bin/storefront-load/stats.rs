//! What a run measured: latency histograms and outcomes per endpoint, the per-second timeline,
//! the live progress line, and the report (a table on the terminal, the same as JSON in a file).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// A latency histogram in microseconds, 1 µs to 10 minutes at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5).
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// A coarser latency histogram in microseconds (2 significant digits, 1 µs to 10 minutes): about
/// 24 KB against 170 KB at 3 digits, for the one of each second of the run.
pub fn coarse_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5).
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 600_000_000, 2).expect("valid histogram bounds")
}

/// The endpoint whose `201` is a sale (one unit in `flash-sale`).
pub const CHECKOUT: &str = "POST /v1/checkout";

/// Latencies and outcomes of one endpoint.
#[derive(Debug)]
pub struct EndpointStats {
    /// Microseconds from (intended) send to the whole answer read.
    pub latency: Histogram<u64>,
    /// Count by outcome: `201`, `409 /problems/out-of-stock`, `error: timeout`, ...
    pub outcomes: BTreeMap<String, u64>,
}

/// Everything the run measured (one for the whole run, shared by its connections).
#[derive(Debug, Default)]
pub struct Stats {
    /// By endpoint, e.g. `POST /v1/checkout`.
    pub endpoints: BTreeMap<&'static str, EndpointStats>,
    /// The same requests (and the iterations) by second of the run.
    pub timeline: Timeline,
}

impl Stats {
    /// Records one request of `endpoint`, answered (or given up on) `at` after the release.
    pub fn record(
        &mut self,
        endpoint: &'static str,
        outcome: String,
        latency: Duration,
        at: Duration,
    ) {
        let micros = latency.as_micros().max(1) as u64;
        let second = self.timeline.second(at);
        second.requests += 1;
        if outcome.starts_with('2') {
            second.ok += 1;
        }
        if endpoint == CHECKOUT && outcome == "201" {
            second.sold += 1;
        }
        second.latency.saturating_record(micros);
        let stats = self
            .endpoints
            .entry(endpoint)
            .or_insert_with(|| EndpointStats { latency: histogram(), outcomes: BTreeMap::new() });
        stats.latency.saturating_record(micros);
        *stats.outcomes.entry(outcome).or_default() += 1;
    }

    /// Requests recorded, over all endpoints.
    pub fn requests(&self) -> u64 {
        self.endpoints.values().map(|e| e.latency.len()).sum()
    }

    /// Requests answered 5xx or not answered at all.
    pub fn failed(&self) -> u64 {
        self.count_outcomes("5") + self.count_outcomes("error")
    }

    /// Requests whose outcome label starts with `prefix` (a status like `5`, or `error`).
    pub fn count_outcomes(&self, prefix: &str) -> u64 {
        self.endpoints
            .values()
            .flat_map(|e| e.outcomes.iter())
            .filter(|(outcome, _)| outcome.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }
}

/// One second of the run: what ended in it.
#[derive(Debug)]
pub struct Second {
    /// Iterations that ended (attempts, reads, cart-and-checkouts).
    pub iterations: u64,
    /// Requests answered or given up on.
    pub requests: u64,
    /// Requests answered 2xx.
    pub ok: u64,
    /// `POST /v1/checkout` answered 201: in `flash-sale`, the units sold.
    pub sold: u64,
    /// Latencies of those requests, microseconds ([`coarse_histogram`]).
    pub latency: Histogram<u64>,
}

impl Second {
    fn new() -> Self {
        Self { iterations: 0, requests: 0, ok: 0, sold: 0, latency: coarse_histogram() }
    }
}

/// The run by whole seconds since the release: second `i` holds what ended in `[i, i + 1)`.
#[derive(Debug, Default)]
pub struct Timeline {
    /// From the release on, up to the last second anything ended in.
    pub seconds: Vec<Second>,
}

impl Timeline {
    /// The whole second `at` (after the release) falls in.
    pub fn index(at: Duration) -> usize {
        at.as_secs() as usize
    }

    /// The second `at` falls in, added (with any before it) if not there yet.
    fn second(&mut self, at: Duration) -> &mut Second {
        self.at_index(Self::index(at))
    }

    fn at_index(&mut self, index: usize) -> &mut Second {
        if index >= self.seconds.len() {
            self.seconds.resize_with(index + 1, Second::new);
        }
        &mut self.seconds[index]
    }

    /// Counts, and empties, a connection's ended iterations: (second [`Timeline::index`], count).
    pub fn add_ended(&mut self, ended: &mut Vec<(usize, u64)>) {
        for (index, n) in ended.drain(..) {
            self.at_index(index).iterations += n;
        }
    }
}

/// Live counters for the progress line.
#[derive(Debug, Default)]
pub struct Progress {
    /// Iterations done (an attempt, a browse request, a cart-and-checkout).
    pub done: AtomicU64,
    /// Requests answered 2xx, 3xx, 4xx, 5xx, and not answered.
    pub by_class: [AtomicU64; 5],
}

impl Progress {
    /// Counts a request's outcome (`None`: no answer).
    pub fn count(&self, status: Option<u16>) {
        let class = match status {
            Some(status) => usize::from((status / 100).clamp(2, 5) - 2),
            None => 4,
        };
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Prints a progress line to stderr every second until `until` resolves.
    pub async fn report_until(self: Arc<Self>, label: String, until: impl Future<Output = ()>) {
        let tty = std::io::stderr().is_terminal();
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut last = 0;
        tokio::pin!(until);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut until => break,
            }
            let done = self.done.load(Ordering::Relaxed);
            let [ok, redirect, client, server, failed] =
                self.by_class.each_ref().map(|c| c.load(Ordering::Relaxed));
            let line = format!(
                "{label} {:>6.1}s  {done:>9} done  {:>8}/s  2xx {ok}  4xx {client}  5xx {server}  no answer {failed}{}",
                start.elapsed().as_secs_f64(),
                done - last,
                if redirect > 0 { format!("  3xx {redirect}") } else { String::new() },
            );
            last = done;
            if tty {
                eprint!("\r{line}  ");
            } else {
                eprintln!("{line}");
            }
        }
        if tty {
            eprintln!();
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl Latency {
    /// The percentiles of `h` (microseconds).
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| (us as f64 / 1000.0 * 100.0).round() / 100.0;
        Self {
            p50_ms: ms(h.value_at_quantile(0.50)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

/// One endpoint in the report.
#[derive(Debug, Serialize)]
pub struct EndpointReport {
    /// Requests.
    pub requests: u64,
    /// Requests per second of the measured time.
    pub per_s: f64,
    /// Latency.
    #[serde(flatten)]
    pub latency: Latency,
    /// Count by outcome.
    pub outcomes: BTreeMap<String, u64>,
}

/// One check after the run.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it held.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

impl Check {
    /// A check that `ok`, with what was found.
    pub fn new(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Self {
        Self { name: name.into(), ok, detail: detail.into() }
    }
}

/// One contender of `--compare`: the same sale decided by another design.
#[derive(Debug, Clone, Serialize)]
pub struct Contender {
    /// Which design.
    pub name: String,
    /// Attempts made.
    pub attempts: u64,
    /// Units sold.
    pub sold: u64,
    /// Attempts per second.
    pub attempts_per_s: f64,
    /// Seconds from release until the last unit was sold: how long buyers wait to learn whether
    /// they got one.
    pub sold_out_s: f64,
    /// Units sold per second until then.
    pub units_per_s: f64,
    /// Latency of one attempt.
    #[serde(flatten)]
    pub latency: Latency,
    /// What Storefront over HTTP does per second, divided by this one's.
    pub http_ratio: Option<f64>,
    /// What Storefront's engine in process does per second, divided by this one's.
    pub engine_ratio: Option<f64>,
}

/// The server's memory, from `/proc/PID/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// The server process.
    pub pid: u32,
    /// Resident set at the end of the run, MiB.
    pub rss_mib: f64,
    /// Peak resident set of the process's life so far, MiB.
    pub peak_rss_mib: f64,
}

impl Memory {
    /// Reads the memory of process `pid`.
    pub fn read(pid: u32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> anyhow::Result<f64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .ok_or_else(|| anyhow::anyhow!("/proc/{pid}/status has no {name}"))?;
            let kib: f64 =
                line.trim_start_matches(name).trim().trim_end_matches("kB").trim().parse()?;
            Ok((kib / 1024.0 * 10.0).round() / 10.0)
        };
        Ok(Self { pid, rss_mib: field("VmRSS:")?, peak_rss_mib: field("VmHWM:")? })
    }
}

/// The whole report of a run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `flash-sale`, `browse` or `checkout-mix`.
    pub scenario: &'static str,
    /// `closed` (fixed concurrency) or `open` (arrival rate).
    pub mode: &'static str,
    /// Target arrival rate (open loop), per second.
    pub rate: Option<f64>,
    /// Connections held.
    pub connections: usize,
    /// The node URLs, used round-robin.
    pub nodes: Vec<String>,
    /// Seconds spent setting up (accounts, products) before the clock started.
    pub setup_s: f64,
    /// Seconds from release to the last answer.
    pub duration_s: f64,
    /// Iterations done (attempts, reads, cart-and-checkouts).
    pub iterations: u64,
    /// Iterations per second.
    pub iterations_per_s: f64,
    /// Per endpoint.
    pub endpoints: BTreeMap<&'static str, EndpointReport>,
    /// What the scenario checked after the run.
    pub checks: Vec<Check>,
    /// The baselines of `--compare`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub compare: Vec<Contender>,
    /// The server's memory (`--server-pid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_memory: Option<Memory>,
}

impl Report {
    /// The per-endpoint part of the report for `stats` measured over `elapsed`.
    pub fn endpoints(stats: &Stats, elapsed: Duration) -> BTreeMap<&'static str, EndpointReport> {
        let secs = elapsed.as_secs_f64().max(1e-9);
        stats
            .endpoints
            .iter()
            .map(|(name, e)| {
                let report = EndpointReport {
                    requests: e.latency.len(),
                    per_s: (e.latency.len() as f64 / secs).round(),
                    latency: Latency::of(&e.latency),
                    outcomes: e.outcomes.clone(),
                };
                (*name, report)
            })
            .collect()
    }

    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The report as a table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mode = match self.rate {
            Some(rate) => format!("open loop at {rate}/s"),
            None => "closed loop".to_owned(),
        };
        out += &format!(
            "{}: {} connections, {mode}, {} node(s): {}\n",
            self.scenario,
            self.connections,
            self.nodes.len(),
            self.nodes.join(", ")
        );
        out += &format!(
            "set-up {:.1} s; {} iterations in {:.2} s = {:.0}/s\n\n",
            self.setup_s, self.iterations, self.duration_s, self.iterations_per_s
        );
        out += &format!(
            "{:<34} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            "endpoint", "requests", "per s", "p50 ms", "p95 ms", "p99 ms", "max ms"
        );
        for (name, e) in &self.endpoints {
            out += &format!(
                "{name:<34} {:>9} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
                e.requests,
                e.per_s,
                e.latency.p50_ms,
                e.latency.p95_ms,
                e.latency.p99_ms,
                e.latency.max_ms
            );
            for (outcome, n) in &e.outcomes {
                out += &format!("    {outcome:<30} {n:>9}\n");
            }
        }
        if !self.compare.is_empty() {
            out += &format!(
                "\n{:<42} {:>9} {:>6} {:>10} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8}\n",
                "the same sale decided by",
                "attempts",
                "sold",
                "attempts/s",
                "sold out",
                "units/s",
                "p50 ms",
                "p99 ms",
                "max ms",
                "HTTP x",
                "engine x"
            );
            let ratio = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{r:.1}"));
            for c in &self.compare {
                out += &format!(
                    "{:<42} {:>9} {:>6} {:>10.0} {:>8.2}s {:>8.0} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>8}\n",
                    c.name,
                    c.attempts,
                    c.sold,
                    c.attempts_per_s,
                    c.sold_out_s,
                    c.units_per_s,
                    c.latency.p50_ms,
                    c.latency.p99_ms,
                    c.latency.max_ms,
                    ratio(c.http_ratio),
                    ratio(c.engine_ratio)
                );
            }
        }
        if let Some(m) = &self.server_memory {
            out += &format!(
                "\nserver (pid {}): resident {:.1} MiB now, peak {:.1} MiB\n",
                m.pid, m.rss_mib, m.peak_rss_mib
            );
        }
        if !self.checks.is_empty() {
            out += "\nchecks:\n";
            for c in &self.checks {
                out += &format!(
                    "  [{}] {}: {}\n",
                    if c.ok { " ok " } else { "FAIL" },
                    c.name,
                    c.detail
                );
            }
        }
        out
    }
}
