//! `browse`: product reads and full-text searches over the catalog, as shoppers browsing.

use anyhow::Context;

use crate::admin::Api;
use crate::client::Call;
use crate::run::{Session, Workload};
use crate::splitmix;
use crate::stats::{Check, Stats};

/// Products read through the catalog list at set-up.
const SAMPLE: usize = 2_000;

/// The catalog sample browsed.
#[derive(Debug)]
pub struct Browse {
    products: Vec<String>,
    words: Vec<String>,
    /// Searches per 1,000 iterations; the rest read a product.
    search_permille: u64,
}

impl Browse {
    /// Samples the catalog: product ids, and words of their names to search for.
    pub async fn set_up(api: &Api, search_share: f64) -> anyhow::Result<Self> {
        let mut products = Vec::new();
        let mut words = std::collections::BTreeSet::new();
        let mut cursor: Option<String> = None;
        while products.len() < SAMPLE {
            let (items, next) =
                api.page::<serde_json::Value>("/v1/products?limit=100", cursor.as_deref()).await?;
            for item in &items {
                products.push(item["product_id"].as_str().context("product_id")?.to_owned());
                let name = item["name"].as_str().unwrap_or_default();
                words.extend(
                    name.split(|c: char| !c.is_alphanumeric())
                        .filter(|w| w.len() >= 4)
                        .map(str::to_lowercase),
                );
            }
            if next.is_none() {
                break;
            }
            cursor = next;
        }
        anyhow::ensure!(
            !products.is_empty(),
            "the catalog is empty: nothing to browse (start the server with its demo data, or create products)"
        );
        let words: Vec<String> = words.into_iter().collect();
        let search_permille = (search_share.clamp(0.0, 1.0) * 1000.0).round() as u64;
        anyhow::ensure!(
            search_permille == 0 || !words.is_empty(),
            "no words to search for in the product names"
        );
        Ok(Self { products, words, search_permille })
    }

    /// Browsing checks: every request answered 200.
    pub fn check(stats: &Stats) -> Vec<Check> {
        let requests = stats.requests();
        let ok = stats.count_outcomes("200");
        vec![Check::new(
            "every request answered 200",
            ok == requests,
            format!("{ok} of {requests}"),
        )]
    }
}

impl Workload for Browse {
    async fn iteration(&self, i: u64, _conn: usize, _k: u64, session: &mut Session) {
        let r = splitmix(i);
        let call = if r % 1000 < self.search_permille {
            let word = &self.words[(r >> 10) as usize % self.words.len()];
            Call::get("GET /v1/products?q=", format!("/v1/products?q={word}&limit=20"))
        } else {
            let id = &self.products[(r >> 10) as usize % self.products.len()];
            Call::get("GET /v1/products/{id}", format!("/v1/products/{id}"))
        };
        session.call(&call).await;
    }
}
