//! Storefront's benchmarks (in `benches/`; figures in BENCHMARKS.md) and what they share: a
//! node's core in process on a fresh embedded store.
#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark set-up: a failure ends the run

use std::sync::Arc;

use storefront_actors::{Clock, EntitySettings, SimulatedGateway};
use storefront_cluster::{Regions, RegionsConfig};
use storefront_storage::embedded::EmbeddedStore;

/// A 2-worker runtime (the machine has 2 cores) and a node's regions on a temporary store.
#[derive(Debug)]
pub struct BenchNode {
    /// The runtime everything runs on.
    pub runtime: tokio::runtime::Runtime,
    /// The node's regions.
    pub regions: Regions,
    _dir: tempfile::TempDir,
}

impl BenchNode {
    /// Starts the regions with `settings` on a fresh store.
    pub fn start(settings: EntitySettings) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let regions = runtime.block_on(async {
            let store = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
            let config = RegionsConfig { settings, ..RegionsConfig::default() };
            Regions::start(store, Arc::new(SimulatedGateway::new()), Clock::system(), config)
                .await
                .unwrap()
        });
        Self { runtime, regions, _dir: dir }
    }
}
