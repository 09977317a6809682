//! The demo catalog seeded on a node's first start (unless `--no-demo-data`): deterministic, so
//! every fresh shop has the same products, SKUs and prices.

use storefront_actors::{Currency, Money, Sku};

use super::NewProduct;

/// The demo's categories.
pub const CATEGORIES: [&str; 8] =
    ["audio", "books", "coffee", "garden", "kitchen", "outdoor", "toys", "wearables"];

const ADJECTIVES: [&str; 16] = [
    "compact",
    "classic",
    "rugged",
    "silent",
    "bright",
    "wireless",
    "organic",
    "vintage",
    "smart",
    "foldable",
    "premium",
    "recycled",
    "portable",
    "hand-made",
    "heavy-duty",
    "minimal",
];

fn nouns(category: &str) -> [&'static str; 4] {
    match category {
        "audio" => ["headphones", "speaker", "turntable", "microphone"],
        "books" => ["novel", "cookbook", "atlas", "field guide"],
        "coffee" => ["espresso blend", "grinder", "pour-over kettle", "cold brew kit"],
        "garden" => ["planter", "pruning shears", "hose reel", "seed set"],
        "kitchen" => ["chef knife", "cast-iron pan", "stand mixer", "cutting board"],
        "outdoor" => ["tent", "headlamp", "backpack", "sleeping bag"],
        "toys" => ["puzzle", "building set", "kite", "board game"],
        _ => ["watch", "fitness band", "sunglasses", "rain jacket"],
    }
}

/// `count` demo products priced in `currency` (the shop's base currency).
pub fn products(count: usize, currency: Currency) -> Vec<NewProduct> {
    (0..count)
        .map(|i| {
            let category = CATEGORIES[i % CATEGORIES.len()];
            let adjective = ADJECTIVES[(i / CATEGORIES.len()) % ADJECTIVES.len()];
            let noun = nouns(category)[(i / (CATEGORIES.len() * ADJECTIVES.len())) % 4];
            let model = i + 100;
            // Proven invariant: `DEMO-` and five or more digits always form a valid SKU.
            let sku = Sku::parse(&format!("DEMO-{i:05}")).unwrap_or_else(|_| unreachable!());
            // 4.99 to 204.98 in the currency's minor units scaled to two decimals.
            let cents = 499 + (i as i64 * 7919) % 20_000;
            let minor = cents * 10_i64.pow(currency.minor_digits()) / 100;
            NewProduct {
                sku,
                name: format!("{} {noun} {model}", capitalize(adjective)),
                description: format!(
                    "A {adjective} {noun} from our {category} range, model {model}. \
                     Ships in recyclable packaging; two-year warranty."
                ),
                category: category.to_owned(),
                price: Money::from_minor(minor, currency),
                max_per_customer: None,
            }
        })
        .collect()
}

/// The demo's starting stock for product `i`: 10 to 209 units.
pub fn initial_stock(i: usize) -> u64 {
    10 + (i as u64 * 37) % 200
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}
