//! The one source of time for entities.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds, advanced by tokio's monotonic clock from the moment it was created.
///
/// Because it follows `tokio::time`, a test that pauses or advances tokio's time moves this clock
/// too (and with it reservation expiry and idle timers), with no sleeping.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall_at_start_ms: u64,
    start: tokio::time::Instant,
}

impl Clock {
    /// A clock reading the system time now. Needs a tokio runtime.
    pub fn system() -> Self {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        Self { wall_at_start_ms: wall.as_millis() as u64, start: tokio::time::Instant::now() }
    }

    /// This clock, `by` ahead: a node as it will be that much later.
    pub fn ahead(self, by: Duration) -> Self {
        Self { wall_at_start_ms: self.wall_at_start_ms + by.as_millis() as u64, ..self }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.wall_at_start_ms + self.start.elapsed().as_millis() as u64
    }
}
