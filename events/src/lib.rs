//! Storefront's events out.
//!
//! This crate owns everything that leaves the cluster as an event:
//! - [`event`]: the vocabulary of EVENTS.md (event types, their `data`, the CloudEvents envelope)
//!   that entities write to the outbox in the same append as their state change;
//! - [`amqp`]: the RabbitMQ side (the `storefront.events` exchange, connections with back-off);
//! - [`relay`]: the outbox relay that publishes a node's outbox with publisher confirms;
//! - [`notify`]: `storefront notify`, the notification service (mail, text messages);
//! - [`webhooks`]: merchants' subscriptions, their delivery log, and the nodes' delivery workers.
//!
//! It does not own when events happen (the entities in `storefront-actors`) or where the relay
//! runs in a cluster (the binary hands it a [`relay::Leadership`] backed by a shard lease).

pub mod amqp;
mod error;
pub mod event;
mod keyed;
pub mod metrics;
pub mod notify;
pub mod relay;
pub mod webhooks;

pub use error::EventsError;
pub use event::{CloudEvent, EventData, EventType};
