//! Storefront's HTTP edge.
//!
//! This crate will own the warp server of the v1 API contract (`../shared/design/API.md`). Built so
//! far, for its handlers to use:
//! - [`Problem`] and [`ToProblem`]: errors as RFC 9457 documents with a stable `type`;
//! - [`auth`]: Argon2id passwords, the user directory, HS256 access tokens with key rotation,
//!   rotating refresh-token families;
//! - [`idempotency`]: durable idempotency keys;
//! - [`catalog`]: products and their embedded full-text index, and the demo catalog.
//!
//! It does not own what domain errors mean, nor stock, carts and orders (the entity actors).

pub mod auth;
pub mod catalog;
pub mod idempotency;
mod problem;

pub use problem::{CONTENT_TYPE, FieldError, Problem, ToProblem};
