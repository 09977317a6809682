//! Black-box tests of the v1 API over real HTTP: each starts the real server on port 0 with a
//! fresh data dir (`helpers::spawn_app`) and talks to it with an HTTP client.
// Test code: an unmet expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod cart;
mod catalog;
mod checkout;
mod helpers;
mod ops;
mod redis;
mod webhooks;
