//! `search`: shoppers searching the catalog with the words its products use, one or two words a
//! query, each answer carrying the facets of every result.

use anyhow::Context;

use crate::admin::Api;
use crate::client::Call;
use crate::run::{Session, Workload};
use crate::splitmix;
use crate::stats::{Check, Stats};

/// Products whose words are sampled at set-up.
const SAMPLE: usize = 2_000;

/// The words searched for.
#[derive(Debug)]
pub struct Search {
    words: Vec<String>,
}

impl Search {
    /// Samples the words of the catalog's names and descriptions.
    pub async fn set_up(api: &Api) -> anyhow::Result<Self> {
        let mut words = std::collections::BTreeSet::new();
        let mut cursor: Option<String> = None;
        let mut sampled = 0;
        while sampled < SAMPLE {
            let (items, next) =
                api.page::<serde_json::Value>("/v1/products?limit=100", cursor.as_deref()).await?;
            for item in &items {
                for field in ["name", "description"] {
                    let text = item[field].as_str().context(field)?;
                    words.extend(
                        text.split(|c: char| !c.is_alphanumeric())
                            .filter(|w| w.len() >= 3)
                            .map(str::to_lowercase),
                    );
                }
            }
            sampled += items.len();
            if next.is_none() {
                break;
            }
            cursor = next;
        }
        anyhow::ensure!(!words.is_empty(), "the catalog is empty: nothing to search for");
        eprintln!("search: {} words from {sampled} products", words.len());
        Ok(Self { words: words.into_iter().collect() })
    }

    /// Search checks: every search answered 200.
    pub fn check(stats: &Stats) -> Vec<Check> {
        let requests = stats.requests();
        let ok = stats.count_outcomes("200");
        vec![Check::new("every search answered 200", ok == requests, format!("{ok} of {requests}"))]
    }
}

impl Workload for Search {
    async fn iteration(&self, i: u64, _conn: usize, _k: u64, session: &mut Session) {
        let r = splitmix(i);
        let n = self.words.len() as u64;
        let first = &self.words[((r >> 1) % n) as usize];
        let (endpoint, q) = if r & 1 == 0 {
            ("GET /v1/products?q=one", first.clone())
        } else {
            ("GET /v1/products?q=two", format!("{first}+{}", self.words[((r >> 21) % n) as usize]))
        };
        session.call(&Call::get(endpoint, format!("/v1/products?q={q}&limit=20"))).await;
    }
}
