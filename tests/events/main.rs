//! Events out against the local RabbitMQ (a virtual host per test): the outbox relay, the
//! notification service (with a real SMTP server and a local SMS gateway), webhook delivery (to
//! local endpoints).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod broker;
mod checkout;
#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
mod notify;
mod observability;
mod password_reset;
mod process;
mod receiver;
mod relay;
mod sms;
mod smtp;
mod webhooks;

/// Waits (up to 20 s) until `check` holds.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The value of the sample `name` (with its labels, as exposed) in the exposition; 0 if absent.
pub fn metric(handle: &metrics_exporter_prometheus::PrometheusHandle, name: &str) -> f64 {
    handle
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}
