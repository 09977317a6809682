//! `storefront notify`'s start-up: the notifier's settings from the configuration, its store of
//! what was sent, and its `/metrics` endpoint.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use storefront_config::Config;
use storefront_events::notify::sms::SmsSettings;
use storefront_events::notify::{Notifier, NotifySettings};
use warp::Filter;

/// The notifier `config` describes, its store opened (`<data_dir>/notify` when embedded, so a
/// node may share the data dir).
pub async fn start(config: &Config) -> anyhow::Result<Notifier> {
    let amqp_url = config
        .events
        .amqp_url
        .as_ref()
        .context("the notifier needs the broker: give --amqp or STOREFRONT_EVENTS__AMQP_URL")?;
    let n = &config.notify;
    let sms = match (&n.sms_url, &n.sms_account, &n.sms_token, &n.sms_from) {
        (Some(base_url), Some(account), Some(token), Some(from)) => Some(SmsSettings {
            base_url: base_url.clone(),
            account: account.clone(),
            token: token.expose().to_owned(),
            from: from.clone(),
        }),
        _ => None,
    };
    let settings = NotifySettings {
        amqp_url: amqp_url.expose().to_owned(),
        mail_from: n.mail_from.clone(),
        smtp_url: n.smtp_url.as_ref().map(|u| u.expose().to_owned()),
        mail_dir: config.data_dir.join("mail"),
        sms,
        max_attempts: n.max_attempts,
        retry_base: n.retry_base(),
        prefetch: n.prefetch,
        send_timeout: n.send_timeout(),
        templates_dir: n.templates_dir.clone(),
    };
    let store_dir = config.data_dir.join("notify");
    std::fs::create_dir_all(&store_dir)
        .with_context(|| format!("cannot create {}", store_dir.display()))?;
    let store = storefront_storage::open(&config.store, &store_dir).await.with_context(|| {
        format!("cannot open the store `{}`", storefront_storage::redact_url(&config.store))
    })?;
    Ok(Notifier::new(settings, store)?)
}

/// Serves the process's metrics at `http://<addr>/metrics`; answers where it listens.
pub async fn serve_metrics(addr: &str) -> anyhow::Result<SocketAddr> {
    let handle = storefront_http::metrics::install_recorder()
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    storefront_events::metrics::zero_initialise_notifier();
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("invalid config key `notify.metrics_addr`: `{addr}`"))?;
    let handle = Arc::new(handle);
    let route = warp::path!("metrics").and(warp::get()).map(move || {
        warp::reply::with_header(
            handle.render(),
            "content-type",
            "text/plain; version=0.0.4; charset=utf-8",
        )
    });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(warp::serve(route).incoming(listener).run());
    Ok(bound)
}
