//! Storefront's entities as event-sourced actors.
//!
//! This crate owns what an entity does: the domain values ([`Money`], [`Currency`], [`Sku`],
//! [`Quantity`]), the three entity actors ([`SkuStockActor`], [`CartActor`], [`OrderActor`] with the
//! checkout saga), the [`PaymentGateway`] trait with its simulated gateway, and the event-sourcing
//! pipeline they share (validate, record events, write them in one append, then reply).
//!
//! It does not own where entities live: shards, regions, supervision and (later) remote routing are
//! `storefront-cluster`'s. The order saga reaches SKUs only through the [`StockPort`] trait.

mod clock;
mod codec;
mod entity;
mod error;
mod feed;
mod ids;
mod journal;
mod kind;
pub mod metrics;
mod money;

pub mod cart;
pub mod gateway;
pub mod order;
pub mod sku;
pub mod trace;

pub use cart::{CartActor, CartArgs, CartMsg};
pub use clock::Clock;
pub use entity::{EntityMsg, EntitySettings, Internal, Passivation};
pub use error::DomainError;
pub use feed::{FEED_CAPACITY, StockFeed, StockUpdate};
pub use gateway::{GatewayError, Held, PaymentGateway, SimulatedGateway};
pub use ids::{Quantity, Sku};
pub use kind::EntityKind;
pub use money::{Currency, FxRates, Money};
pub use order::{OrderActor, OrderArgs, OrderMsg, OrderSummary, StockPort};
pub use sku::{SkuStockActor, SkuStockArgs, SkuStockMsg, StockCommand, StockLevels};
