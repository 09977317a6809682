//! Where Storefront's entities live.
//!
//! This crate owns the stable shard function ([`shard_of`]), the [`ShardRegion`] of each entity
//! kind (entity actors started on demand under a supervisor, passivated when idle, restarted after
//! a crash without touching their siblings), and [`Regions`], the three regions of a node wired
//! together (the order saga reaches SKUs through the SKU region). Cluster membership, leases and
//! remote regions arrive here with the cluster step; callers already address entities only by id.
//!
//! It does not own what entities do: that is `storefront-actors`.

mod call;
mod error;
mod fenced;
pub mod metrics;
mod ownership;
mod region;
mod regions;
mod remote;
mod shard;
mod stock_feed;
mod transport;

pub use error::ClusterError;
pub use ownership::{
    ClusterStatus, ClusterView, Member, MemberStatus, NodeStatus, Ownership, OwnershipConfig,
    ShardHost, observe, rendezvous,
};
pub use region::ShardRegion;
pub use regions::{Checkout, Regions, RegionsConfig};
pub use shard::shard_of;
pub use transport::{TlsFiles, TransportConfig};
