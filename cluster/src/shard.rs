//! The stable mapping from an entity to its shard.

use storefront_actors::EntityKind;

/// `fnv1a64(kind, 0, id) mod shard_count`: the same on every node, build and platform, unlike
/// Rust's randomized `DefaultHasher`. `shard_count` must not be 0.
pub fn shard_of(kind: EntityKind, id: &str, shard_count: u32) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in kind.as_str().bytes().chain([0]).chain(id.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    (hash % u64::from(shard_count.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_stable_and_spreads() {
        // Fixed vectors: a change here re-shards every existing cluster.
        assert_eq!(
            shard_of(EntityKind::Sku, "ABC-1", 256),
            shard_of(EntityKind::Sku, "ABC-1", 256)
        );
        assert_eq!(shard_of(EntityKind::Sku, "", 1), 0);
        let fixed: Vec<u32> = ["a", "b", "SKU-000001", "user-42"]
            .iter()
            .map(|id| shard_of(EntityKind::Sku, id, 256))
            .collect();
        assert_eq!(fixed, [61, 36, 173, 38]);
        assert_ne!(
            shard_of(EntityKind::Sku, "x", 1 << 16),
            shard_of(EntityKind::Cart, "x", 1 << 16),
            "kind is part of the key"
        );
        let mut counts = vec![0u32; 16];
        for i in 0..16_000 {
            counts[shard_of(EntityKind::Order, &format!("order-{i}"), 16) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }
}
