//! `search`: shoppers searching the catalog with the words its products use, one or two words a
//! query, each answer carrying the facets of every result; a share of the queries with a typo
//! (two neighbouring letters of a word of five or more swapped).

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
    /// Queries per 1,000 with a typo.
    typo_permille: u64,
}

impl Search {
    /// Samples the words of the catalog's names and descriptions.
    pub async fn set_up(api: &Api, typo_share: f64) -> anyhow::Result<Self> {
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
        let typo_permille = (typo_share.clamp(0.0, 1.0) * 1000.0).round() as u64;
        Ok(Self { words: words.into_iter().collect(), typo_permille })
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
        let mut first = self.words[((r >> 1) % n) as usize].clone();
        let typo = (r >> 41) % 1000 < self.typo_permille && first.len() >= 5 && first.is_ascii();
        if typo {
            let at = ((r >> 51) as usize) % (first.len() - 1);
            let mut letters = first.into_bytes();
            letters.swap(at, at + 1);
            first = String::from_utf8_lossy(&letters).into_owned();
        }
        let endpoint = match (r & 1 == 0, typo) {
            (true, false) => "GET /v1/products?q=one",
            (false, false) => "GET /v1/products?q=two",
            (true, true) => "GET /v1/products?q=one (typo)",
            (false, true) => "GET /v1/products?q=two (typo)",
        };
        let q = if r & 1 == 0 {
            first
        } else {
            format!("{first}+{}", self.words[((r >> 21) % n) as usize])
        };
        session.call(&Call::get(endpoint, format!("/v1/products?q={q}&limit=20"))).await;
    }
}
