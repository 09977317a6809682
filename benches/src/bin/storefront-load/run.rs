//! The driver: holds the connections, releases them at one instant, and runs a workload's
//! iterations over them until the count or the duration is reached, whichever comes first.
//!
//! Closed loop: each connection starts its next iteration when the last one ends (the load is the
//! concurrency). Open loop: iteration `i` is due at `start + i / rate`; a connection takes the next
//! due iteration, waits for its time, and the latency counts from when it was due, so a server
//! that falls behind shows it in the latencies (no coordinated omission), not in a lower rate.
//!
//! Every request is recorded, under the run's one lock, by endpoint and by second of the run
//! ([`crate::stats::Timeline`]); a connection counts its ended iterations by second on its own and
//! adds them to the timeline the next time it holds that lock anyway, so counting them takes none.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use tokio::time::Instant;

use crate::client::{Answer, Call, Conn, Failure, Target};
use crate::stats::{Progress, Stats, Timeline};

/// Connections being opened at once (keeps the server's accept queue from overflowing).
const OPENING_AT_ONCE: usize = 256;

/// Opens a connection to `target` and has it answer one `GET /healthz` (not measured), so the
/// server has accepted it and served on it before the clock starts: a connection still waiting in
/// the server's accept queue at release would count its wait as the first request's latency.
async fn open_warm(target: Arc<Target>, timeout: Duration) -> Result<Conn, Failure> {
    let mut conn = Conn::open(target).await?;
    let answer = conn.send(&Call::get("warm-up", "/healthz".to_owned()), timeout).await?;
    if answer.status == 200 { Ok(conn) } else { Err(Failure::Connect) }
}

/// How much load, for how long.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Connections held (closed loop: the concurrency).
    pub connections: usize,
    /// Iterations at most.
    pub iterations: u64,
    /// Time at most: no iteration starts after it.
    pub duration: Duration,
    /// Iterations per second (open loop), or `None` (closed loop).
    pub rate: Option<f64>,
    /// How long one request may take before it counts as failed.
    pub timeout: Duration,
}

/// What a scenario does in one iteration.
pub trait Workload: Send + Sync + 'static {
    /// Runs iteration `i`, which is the `k`-th of connection `conn`, through `session`.
    fn iteration(
        &self,
        i: u64,
        conn: usize,
        k: u64,
        session: &mut Session,
    ) -> impl Future<Output = ()> + Send;
}

/// A connection, recording into the run's statistics.
#[derive(Debug)]
pub struct Session {
    conn: Conn,
    /// One for the whole run: a histogram per connection would be 10,000 histograms of 180 KB
    /// each to allocate at the release (seconds of page faults that stalled the tool).
    stats: Arc<Mutex<Stats>>,
    progress: Arc<Progress>,
    timeout: Duration,
    due: Option<Instant>,
    /// The release: the timeline's second 0 starts here.
    start: Instant,
    /// Iterations ended and not yet on the timeline: (second of the run, count), oldest first.
    ended: Vec<(usize, u64)>,
}

impl Session {
    /// Sends `call`, records its latency and outcome, and returns the answer if there was one.
    /// The first call of an open-loop iteration counts from when the iteration was due.
    pub async fn call(&mut self, call: &Call) -> Option<Answer> {
        let start = self.due.take().unwrap_or_else(Instant::now);
        let result = self.conn.send(call, self.timeout).await;
        let now = Instant::now();
        let latency = now.saturating_duration_since(start);
        match result {
            Ok(answer) => {
                self.progress.count(Some(answer.status));
                let outcome = match answer.problem.then(|| problem_type(&answer.body)).flatten() {
                    Some(kind) => format!("{} {kind}", answer.status),
                    None => answer.status.to_string(),
                };
                self.record(call.endpoint, outcome, latency, now);
                Some(answer)
            }
            Err(failure) => {
                self.progress.count(None);
                self.record(call.endpoint, failure.label().to_owned(), latency, now);
                None
            }
        }
    }
}

impl Session {
    /// Records a request that ended at `now`, and the iterations ended since the last one.
    fn record(&mut self, endpoint: &'static str, outcome: String, latency: Duration, now: Instant) {
        // A worker that panicked while recording ends the run anyway (its join fails).
        let mut stats = self.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        stats.record(endpoint, outcome, latency, now.saturating_duration_since(self.start));
        stats.timeline.add_ended(&mut self.ended);
    }

    /// Counts an iteration that just ended, without the lock (see [`Session::record`]).
    fn iteration_ended(&mut self) {
        let second = Timeline::index(Instant::now().saturating_duration_since(self.start));
        match self.ended.last_mut() {
            Some((last, n)) if *last == second => *n += 1,
            _ => self.ended.push((second, 1)),
        }
    }

    /// Adds the iterations not yet on the timeline (at the end of the connection's run).
    fn flush(&mut self) {
        if !self.ended.is_empty() {
            let mut stats = self.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            stats.timeline.add_ended(&mut self.ended);
        }
    }
}

/// The `type` of a problem+json body.
fn problem_type(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Problem {
        r#type: String,
    }
    serde_json::from_slice::<Problem>(body).ok().map(|p| p.r#type)
}

/// What a run measured.
#[derive(Debug)]
pub struct Measured {
    /// When the connections were released.
    pub start: Instant,
    /// Everything recorded.
    pub stats: Stats,
    /// From release to the last answer.
    pub elapsed: Duration,
    /// Iterations done.
    pub iterations: u64,
}

/// Opens `plan.connections` connections over `targets` (round-robin), releases them at one
/// instant and runs `workload` by `plan`.
pub async fn run<W: Workload>(
    label: &str,
    targets: &[Arc<Target>],
    plan: &Plan,
    workload: Arc<W>,
) -> anyhow::Result<Measured> {
    let opened: Vec<Result<Conn, _>> = futures::stream::iter(0..plan.connections)
        .map(|c| open_warm(targets[c % targets.len()].clone(), plan.timeout))
        .buffer_unordered(OPENING_AT_ONCE)
        .collect()
        .await;
    let failed = opened.iter().filter(|c| c.is_err()).count();
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} connections could not be opened and answer GET /healthz (is the server up? its and this process's open-file limits?)",
            plan.connections
        );
    }
    let progress = Arc::new(Progress::default());
    let stats = Arc::new(Mutex::new(Stats::default()));
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(50);
    let deadline = start + plan.duration;
    let mut workers = Vec::with_capacity(plan.connections);
    for (c, conn) in opened.into_iter().flatten().enumerate() {
        let mut session = Session {
            conn,
            stats: stats.clone(),
            progress: progress.clone(),
            timeout: plan.timeout,
            due: None,
            start,
            ended: Vec::new(),
        };
        let (workload, next, plan) = (workload.clone(), next.clone(), plan.clone());
        workers.push(tokio::spawn(async move {
            tokio::time::sleep_until(start).await;
            let mut k = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= plan.iterations || Instant::now() >= deadline {
                    break;
                }
                if let Some(rate) = plan.rate {
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    if due >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(due).await;
                    session.due = Some(due);
                }
                workload.iteration(i, c, k, &mut session).await;
                session.iteration_ended();
                session.progress.done.fetch_add(1, Ordering::Relaxed);
                k += 1;
            }
            let end = Instant::now();
            session.flush();
            end
        }));
    }
    let all = futures::future::join_all(workers);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let reporter = tokio::spawn(progress.clone().report_until(label.to_owned(), async {
        let _ = rx.await;
    }));
    let results = all.await;
    let _ = tx.send(());
    reporter.await.context("progress line")?;
    let mut last = start;
    for result in results {
        last = last.max(result.context("a load worker panicked")?);
    }
    let stats =
        std::mem::take(&mut *stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    Ok(Measured {
        start,
        stats,
        elapsed: last.saturating_duration_since(start),
        iterations: progress.done.load(Ordering::Relaxed),
    })
}
