//! The kinds of entity: one vocabulary for stream names, shard keys, region hosts, API
//! parameters, metric labels and event subjects.

use serde::{Deserialize, Serialize};

/// A kind of entity actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    /// A SKU's stock counter (`SkuStockActor`).
    Sku,
    /// A customer's cart (`CartActor`).
    Cart,
    /// An order and its checkout saga (`OrderActor`).
    Order,
}

impl EntityKind {
    /// Every kind.
    pub const ALL: [EntityKind; 3] = [EntityKind::Sku, EntityKind::Cart, EntityKind::Order];

    /// The kind's name: `sku`, `cart`, `order`. Part of every stream name and shard key, so it
    /// never changes.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Sku => "sku",
            EntityKind::Cart => "cart",
            EntityKind::Order => "order",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<EntityKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The journal stream of the entity `id` of this kind: `<kind>/<id>`.
    pub fn stream(self, id: &str) -> String {
        format!("{}/{id}", self.as_str())
    }

    /// The kind's position in [`EntityKind::ALL`], for per-kind arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for EntityKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_streams_and_indexes_agree() {
        for (i, kind) in EntityKind::ALL.into_iter().enumerate() {
            assert_eq!(kind.index(), i);
            assert_eq!(EntityKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EntityKind::Sku.stream("HOT-1"), "sku/HOT-1");
        assert_eq!(EntityKind::parse("user"), None);
    }
}
