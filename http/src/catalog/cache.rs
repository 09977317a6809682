//! Search pages cached in Redis: the ids and facets a search found, under a key of the catalog
//! version and the whole search, so a catalog change is never answered from an older page (the
//! new version makes new keys; old ones expire). Stock states reach the cache within its TTL.
//! Items are always read from the node's catalog and their levels from the SKU actors.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::Digest;
use storefront_actors::Currency;

use super::price::PriceBucket;
use super::search::SearchQuery;
use crate::redis::Redis;

/// What a search found, as cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Found {
    pub(super) ids: Vec<String>,
    pub(super) next_cursor: Option<String>,
    pub(super) categories: Vec<(String, u64)>,
    pub(super) prices: Vec<PriceBucket>,
    pub(super) in_stock: (u64, u64),
}

/// The cache.
#[derive(Debug)]
pub(super) struct SearchCache {
    redis: Arc<Redis>,
    ttl: Duration,
}

impl SearchCache {
    pub(super) fn new(redis: Arc<Redis>, ttl: Duration) -> Self {
        Self { redis, ttl }
    }

    /// The key of `query` at catalog `version`, shown in `currency`.
    pub(super) fn key(&self, version: u64, query: &SearchQuery, currency: Currency) -> String {
        // The index's query holds every input of the result but the display currency.
        let search = format!("{query:?}/{currency}");
        let digest = sha2::Sha256::digest(search.as_bytes());
        let hex = hex::encode(digest);
        format!("storefront:search:{version}:{hex}")
    }

    /// The cached page, if Redis has it and answers in time.
    pub(super) async fn get(&self, key: &str) -> Option<Found> {
        let bytes: Option<Vec<u8>> = self
            .redis
            .run("search cache read", |mut connection| async move {
                ::redis::cmd("GET").arg(key).query_async(&mut connection).await
            })
            .await?;
        // An entry this version cannot read is a miss (it is overwritten).
        serde_json::from_slice(&bytes?).ok()
    }

    /// Stores a page in the background (the answer does not wait for it).
    pub(super) fn put(&self, key: String, found: &Found) {
        let Ok(bytes) = serde_json::to_vec(found) else { return };
        let (redis, ttl) = (self.redis.clone(), self.ttl.as_millis() as u64);
        tokio::spawn(async move {
            redis
                .run("search cache write", |mut connection| async move {
                    ::redis::cmd("SET")
                        .arg(&key)
                        .arg(bytes)
                        .arg("PX")
                        .arg(ttl)
                        .query_async::<()>(&mut connection)
                        .await
                })
                .await;
        });
    }
}
