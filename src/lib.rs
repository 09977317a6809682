//! The `storefront` binary's library half: what the command line runs, so that integration
//! tests start a node exactly as `storefront serve` does.
//!
//! - [`node`]: a node's start-up (store, regions, catalog, keys, seed, the event relay, the HTTP
//!   edge) and its orderly stop;
//! - [`notify`]: `storefront notify`'s start-up (settings, store, metrics endpoint).

pub mod node;
pub mod notify;
