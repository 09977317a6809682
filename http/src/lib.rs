//! Storefront's HTTP edge: the warp server of the v1 API contract (`../shared/design/API.md`).
//!
//! - [`app`]: the state handlers share, and the server that serves it and stops on shutdown;
//! - [`routes`]: the route table; [`api`]: one handler module per resource;
//! - [`extract`] and [`reply`]: reading requests strictly, answering with problem documents;
//! - [`auth`]: Argon2id passwords, the user directory, HS256 access tokens with key rotation,
//!   rotating refresh-token families;
//! - [`idempotency`], [`ratelimit`], [`fx`], [`catalog`] (products and their tantivy index),
//!   [`metrics`], [`openapi`], [`seed`].
//!
//! It does not own what domain errors mean, nor stock, carts and orders (the entity actors), nor
//! where entities live (the regions), nor a node's start-up (the binary's `node` module).

pub mod admission;
pub mod api;
pub mod app;
pub mod auth;
pub mod catalog;
pub mod edge;
pub mod extract;
pub mod fx;
pub mod idempotency;
pub mod metrics;
pub mod openapi;
mod problem;
pub mod ratelimit;
pub mod redis;
pub mod reply;
pub mod routes;
pub mod seed;
pub mod serve;

pub use app::{App, AppState};
pub use problem::{CONTENT_TYPE, FieldError, Problem, ProblemType, ToProblem};
