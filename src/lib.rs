//! The `storefront` binary's library half: what the command line runs, so that integration
//! tests start a node exactly as `storefront serve` does.
//!
//! - [`node`]: a node's start-up (store, regions, catalog, keys, seed, the event relay, the HTTP
//!   edge) and its orderly stop;
//! - [`notify`]: `storefront notify`'s start-up (settings, store, metrics endpoint);
//! - [`telemetry`]: logs, and traces exported over OTLP when configured.

pub mod node;
pub mod notify;
pub mod telemetry;
