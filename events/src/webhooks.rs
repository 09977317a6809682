//! Merchant webhooks (EVENTS.md "Webhooks"): subscriptions, their delivery log, the signature,
//! and the workers that deliver.
//!
//! - [`Webhooks`]: the subscriptions (`webhooks` table) and the delivery log (`webhook_deliveries`,
//!   keyed `webhook id / event id`, so a webhook's log reads in event order), as the admin API uses
//!   them; a subscription's URL is checked against the SSRF rules ([`guard`]) when it is created.
//! - [`worker`]: every node with a broker consumes the queue `storefront.webhooks` (competing
//!   consumers) and POSTs each event to the webhooks that want it, signed ([`signature`]).
//!
//! It does not own the HTTP routes (the edge calls [`Webhooks`]).

pub mod guard;
pub mod worker;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use storefront_storage::{Store, Table};

use crate::{EventType, EventsError};

/// A merchant's subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// Its id.
    pub webhook_id: String,
    /// Where events are POSTed.
    pub url: String,
    /// Event type names, or `["*"]` for every type offered to webhooks.
    pub events: Vec<String>,
    /// The merchant's note.
    pub description: Option<String>,
    /// The signing secret (shown once, at creation).
    pub secret: String,
    /// When it was created (RFC 3339 UTC).
    pub created_at: String,
}

impl Webhook {
    /// Whether it wants events of `kind`.
    pub fn wants(&self, kind: EventType) -> bool {
        kind.offered_to_webhooks() && self.events.iter().any(|e| e == "*" || e == kind.as_str())
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not delivered yet; another try is due at `next_attempt_at`.
    Pending,
    /// A 2xx answer came within the timeout.
    Delivered,
    /// Given up: out of tries, or refused by the SSRF rules.
    Failed,
}

/// One event's delivery to one webhook, as the log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The event.
    pub event_id: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Tries so far, the successful one included.
    pub attempts: u32,
    /// The HTTP status of the last try, if one answered.
    pub last_status_code: Option<u16>,
    /// Why the last try failed, if it did.
    pub last_error: Option<String>,
    /// When the next try is due (RFC 3339 UTC), while pending.
    pub next_attempt_at: Option<String>,
}

/// Why a webhook is refused at creation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// `url` is unusable (the text says why).
    #[error("{0}")]
    Url(String),
    /// `events` is unusable (the text says why).
    #[error("{0}")]
    Events(String),
}

/// A new subscription as the admin API takes it.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    /// Where to POST.
    pub url: String,
    /// Event type names or `["*"]`.
    pub events: Vec<String>,
    /// A note.
    pub description: Option<String>,
}

/// The subscriptions and their delivery log. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Webhooks {
    store: Arc<dyn Store>,
    allow_private: bool,
    /// The subscriptions as last read, and when: deliveries read them at most once a second.
    cache: Arc<Mutex<Option<CachedRead>>>,
}

/// A read of every subscription and when it was made.
type CachedRead = (Instant, Arc<Vec<Webhook>>);

/// How long deliveries use a read of the subscriptions: a new or deleted webhook takes effect
/// on every node within this.
const CACHE_FOR: Duration = Duration::from_secs(1);
/// Most webhooks a shop may have.
pub const MAX_WEBHOOKS: usize = 100;

impl Webhooks {
    /// The webhooks in `store`; `allow_private` is `webhooks_allow_private`.
    pub fn new(store: Arc<dyn Store>, allow_private: bool) -> Self {
        Self { store, allow_private, cache: Arc::default() }
    }

    /// Whether loopback and private addresses are allowed.
    pub fn allow_private(&self) -> bool {
        self.allow_private
    }

    /// Checks and stores a new subscription with a fresh secret.
    pub async fn create(&self, new: NewWebhook) -> Result<Result<Webhook, Invalid>, EventsError> {
        if let Err(invalid) = self.check(&new).await {
            return Ok(Err(invalid));
        }
        if self.list().await?.len() >= MAX_WEBHOOKS {
            return Ok(Err(Invalid::Url(format!("at most {MAX_WEBHOOKS} webhooks"))));
        }
        let webhook = Webhook {
            webhook_id: format!("wh_{}", uuid::Uuid::now_v7().simple()),
            url: new.url,
            events: new.events,
            description: new.description,
            secret: new_secret(),
            created_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        };
        let value = serde_json::to_vec(&webhook).map_err(EventsError::encode)?;
        self.store.put(Table::Webhooks, webhook.webhook_id.as_bytes(), &value).await?;
        self.forget();
        Ok(Ok(webhook))
    }

    async fn check(&self, new: &NewWebhook) -> Result<(), Invalid> {
        let url =
            reqwest::Url::parse(&new.url).map_err(|e| Invalid::Url(format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Invalid::Url("must be http or https".into()));
        }
        if new.url.len() > 2000 {
            return Err(Invalid::Url("at most 2000 bytes".into()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Invalid::Url("must not carry credentials".into()));
        }
        let host = url.host_str().ok_or_else(|| Invalid::Url("has no host".into()))?;
        let port = url.port_or_known_default().unwrap_or(80);
        guard::resolve_checked(host, port, self.allow_private)
            .await
            .map_err(|unfit| Invalid::Url(unfit.to_string()))?;
        if new.events.is_empty() || new.events.len() > EventType::ALL.len() {
            return Err(Invalid::Events("one or more event types, or [\"*\"]".into()));
        }
        for name in &new.events {
            match EventType::parse(name) {
                _ if name == "*" && new.events.len() == 1 => {}
                Some(kind) if kind.offered_to_webhooks() => {}
                Some(kind) => {
                    return Err(Invalid::Events(format!("{kind} is never offered to webhooks")));
                }
                None => return Err(Invalid::Events(format!("unknown event type `{name}`"))),
            }
        }
        Ok(())
    }

    /// Every subscription, oldest first.
    pub async fn list(&self) -> Result<Vec<Webhook>, EventsError> {
        let rows = self.store.scan(Table::Webhooks, b"", None, MAX_WEBHOOKS * 2).await?;
        rows.iter()
            .map(|(_, value)| serde_json::from_slice(value).map_err(EventsError::decode))
            .collect()
    }

    /// Deletes a subscription; answers whether it existed.
    pub async fn delete(&self, webhook_id: &str) -> Result<bool, EventsError> {
        let existed = self.store.get(Table::Webhooks, webhook_id.as_bytes()).await?.is_some();
        if existed {
            self.store.delete(Table::Webhooks, webhook_id.as_bytes()).await?;
            self.forget();
        }
        Ok(existed)
    }

    /// Whether the subscription exists.
    pub async fn exists(&self, webhook_id: &str) -> Result<bool, EventsError> {
        Ok(self.store.get(Table::Webhooks, webhook_id.as_bytes()).await?.is_some())
    }

    /// Up to `limit` deliveries of a webhook, in event order, after the event `cursor`; and the
    /// cursor of the next page, if there is one.
    pub async fn deliveries(
        &self,
        webhook_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<Delivery>, Option<String>), EventsError> {
        let prefix = format!("{webhook_id}/");
        let after = cursor.map(|c| format!("{prefix}{c}"));
        let rows = self
            .store
            .scan(
                Table::WebhookDeliveries,
                prefix.as_bytes(),
                after.as_deref().map(str::as_bytes),
                limit + 1,
            )
            .await?;
        let mut items = rows
            .iter()
            .map(|(_, value)| serde_json::from_slice(value).map_err(EventsError::decode))
            .collect::<Result<Vec<Delivery>, _>>()?;
        let next = (items.len() > limit).then(|| {
            items.truncate(limit);
            items.last().map(|d| d.event_id.clone())
        });
        Ok((items, next.flatten()))
    }

    /// The delivery of `event_id` to `webhook_id`, if any try was made.
    pub async fn delivery(
        &self,
        webhook_id: &str,
        event_id: &str,
    ) -> Result<Option<Delivery>, EventsError> {
        let key = format!("{webhook_id}/{event_id}");
        match self.store.get(Table::WebhookDeliveries, key.as_bytes()).await? {
            Some(value) => Ok(Some(serde_json::from_slice(&value).map_err(EventsError::decode)?)),
            None => Ok(None),
        }
    }

    /// Records where the delivery of `delivery.event_id` to `webhook_id` stands.
    pub async fn record(&self, webhook_id: &str, delivery: &Delivery) -> Result<(), EventsError> {
        let key = format!("{webhook_id}/{}", delivery.event_id);
        let value = serde_json::to_vec(delivery).map_err(EventsError::encode)?;
        Ok(self.store.put(Table::WebhookDeliveries, key.as_bytes(), &value).await?)
    }

    /// The subscriptions that want `kind`, from a read at most [`CACHE_FOR`] old.
    pub async fn wanting(&self, kind: EventType) -> Result<Vec<Webhook>, EventsError> {
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            cache.as_ref().filter(|(at, _)| at.elapsed() < CACHE_FOR).map(|(_, all)| all.clone())
        };
        let all = match cached {
            Some(all) => all,
            None => {
                let all = Arc::new(self.list().await?);
                *self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some((Instant::now(), all.clone()));
                all
            }
        };
        Ok(all.iter().filter(|w| w.wants(kind)).cloned().collect())
    }

    /// The subscription `webhook_id`, fresh from the store.
    pub async fn get(&self, webhook_id: &str) -> Result<Option<Webhook>, EventsError> {
        match self.store.get(Table::Webhooks, webhook_id.as_bytes()).await? {
            Some(value) => Ok(Some(serde_json::from_slice(&value).map_err(EventsError::decode)?)),
            None => Ok(None),
        }
    }

    fn forget(&self) {
        *self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

/// A fresh signing secret: `whsec_` and 32 random bytes in hex (two UUIDv4s' worth of the OS's
/// randomness).
fn new_secret() -> String {
    let bytes: Vec<u8> = uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .chain(uuid::Uuid::new_v4().as_bytes())
        .copied()
        .collect();
    format!("whsec_{}", hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `Storefront-Signature` header: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "t.body")>`,
/// the key being the secret's UTF-8 bytes.
pub fn signature(secret: &str, unix_seconds: u64, body: &[u8]) -> String {
    let mut signed = format!("{unix_seconds}.").into_bytes();
    signed.extend_from_slice(body);
    let mac = hmac_sha256::HMAC::mac(&signed, secret.as_bytes());
    format!("t={unix_seconds},v1={}", hex(&mac))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body_in_hex() {
        // Computed independently, with Python's hmac:
        // hmac.new(b"whsec_test", b'1700000000.{"id":"e1"}', hashlib.sha256).hexdigest()
        assert_eq!(
            signature("whsec_test", 1_700_000_000, br#"{"id":"e1"}"#),
            "t=1700000000,v1=6a85cb117c993612a34c72b4cfb5a16baed25a80d26e298ce0e6671320fd07c8"
        );
    }

    #[test]
    fn a_star_matches_every_type_but_password_resets() {
        let webhook = |events: &[&str]| Webhook {
            webhook_id: "w".into(),
            url: "https://example.com".into(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            description: None,
            secret: "s".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
        };
        let all = webhook(&["*"]);
        assert!(all.wants(EventType::OrderConfirmed) && all.wants(EventType::StockSoldOut));
        assert!(!all.wants(EventType::PasswordResetRequested));
        let some = webhook(&["order.confirmed"]);
        assert!(some.wants(EventType::OrderConfirmed) && !some.wants(EventType::OrderCancelled));
    }

    #[tokio::test]
    async fn creation_checks_the_url_and_the_event_types() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(storefront_storage::embedded::EmbeddedStore::open(dir.path()).await.unwrap());
        let strict = Webhooks::new(store.clone(), false);
        let new = |url: &str, events: &[&str]| NewWebhook {
            url: url.into(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            description: None,
        };
        for (url, events) in [
            ("ftp://example.com/hook", &["*"][..]),
            ("http://127.0.0.1:9/hook", &["*"]),
            ("http://localhost:9/hook", &["*"]),
            ("http://10.0.0.1/hook", &["*"]),
            ("http://169.254.169.254/latest", &["*"]),
            ("http://[fe80::1]/hook", &["*"]),
            ("https://93.184.216.34/hook", &["order.shipped"]),
            ("https://93.184.216.34/hook", &["user.password_reset_requested"]),
            ("https://93.184.216.34/hook", &["*", "order.confirmed"]),
            ("https://93.184.216.34/hook", &[]),
        ] {
            assert!(strict.create(new(url, events)).await.unwrap().is_err(), "{url} {events:?}");
        }
        let created = strict.create(new("https://93.184.216.34/hook", &["order.confirmed"])).await;
        let created = created.unwrap().unwrap();
        assert!(created.secret.starts_with("whsec_") && created.secret.len() == 6 + 64);
        let relaxed = Webhooks::new(store, true);
        assert!(relaxed.create(new("http://127.0.0.1:9/hook", &["*"])).await.unwrap().is_ok());
        let refused = relaxed.create(new("http://169.254.169.254/", &["*"])).await.unwrap();
        assert!(refused.is_err(), "link-local stays refused");
        assert_eq!(relaxed.list().await.unwrap().len(), 2);
    }
}
