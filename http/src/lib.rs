//! Storefront's HTTP edge.
//!
//! This crate will own the warp server of the v1 API contract (`../shared/design/API.md`). Today it
//! owns what every handler will use: domain errors as RFC 9457 problem documents with a stable
//! `type` ([`Problem`], [`ToProblem`]), and the credentials' cryptography ([`auth`]: Argon2id
//! passwords, HS256 access tokens with key rotation, rotating refresh-token families), and durable
//! idempotency keys ([`idempotency`]), and the catalog with its search index ([`catalog`]). It
//! does not
//! own what the errors mean, nor users' records.

pub mod auth;
pub mod catalog;
pub mod idempotency;
mod problem;

pub use problem::{CONTENT_TYPE, FieldError, Problem, ToProblem};
