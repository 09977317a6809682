//! Storefront's HTTP edge.
//!
//! This crate will own the warp server of the v1 API contract (`../shared/design/API.md`). Today it
//! owns the one mapping every handler will use: domain errors to RFC 9457 problem documents with a
//! stable `type` ([`Problem`], [`ToProblem`]). It does not own what the errors mean.

mod problem;

pub use problem::{CONTENT_TYPE, FieldError, Problem, ToProblem};
