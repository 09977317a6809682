//! `/v1/admin/webhooks*`: merchants' webhook subscriptions and their delivery log (EVENTS.md).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use storefront_events::webhooks::{Delivery, Invalid, NewWebhook, Webhook};

use super::Page;
use crate::app::AppState;
use crate::extract::Req;
use crate::reply::{ApiError, ApiResponse, ApiResult};

/// `POST /v1/admin/webhooks` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// `http` or `https`; its host must not be, or resolve to, a loopback, private, link-local
    /// or unspecified address (loopback and private ones allowed with `webhooks_allow_private`).
    pub url: String,
    /// Event types, or `["*"]` for every type offered to webhooks.
    pub events: Vec<String>,
    /// A note (at most 500 characters).
    pub description: Option<String>,
}

/// A webhook as listed (never with its secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    /// Its id.
    pub webhook_id: String,
    /// Where events are POSTed.
    pub url: String,
    /// Its event types.
    pub events: Vec<String>,
    /// Its note.
    pub description: Option<String>,
    /// When it was created.
    pub created_at: String,
}

/// A webhook just created: the only answer that shows its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedWebhook {
    /// Its id.
    pub webhook_id: String,
    /// Where events are POSTed.
    pub url: String,
    /// Its event types.
    pub events: Vec<String>,
    /// The signing secret: `Storefront-Signature` is an HMAC-SHA256 keyed with its UTF-8 bytes.
    pub secret: String,
    /// When it was created.
    pub created_at: String,
}

/// One delivery in the log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    /// The event.
    pub event_id: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Tries, the successful one included.
    pub attempts: u32,
    /// The HTTP status of the last try.
    pub last_status_code: Option<u16>,
    /// Why the last try failed.
    pub last_error: Option<String>,
    /// When the next try is due, while pending.
    pub next_attempt_at: Option<String>,
}

impl From<Webhook> for WebhookView {
    fn from(w: Webhook) -> Self {
        Self {
            webhook_id: w.webhook_id,
            url: w.url,
            events: w.events,
            description: w.description,
            created_at: w.created_at,
        }
    }
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        let status = serde_json::to_value(d.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        Self {
            event_id: d.event_id,
            kind: d.kind,
            status,
            attempts: d.attempts,
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            next_attempt_at: d.next_attempt_at,
        }
    }
}

fn unknown(webhook_id: &str) -> ApiError {
    ApiError::not_found(format!("no webhook {webhook_id}"))
}

#[utoipa::path(post, operation_id = "webhooks_create", path = "/v1/admin/webhooks", tag = "webhooks", security(("bearer" = [])),
    request_body = CreateWebhook,
    responses((status = 201, body = CreatedWebhook), (status = 400, description = "`/problems/validation`: a refused URL or event type")))]
/// Subscribes an endpoint to events (admin); the answer shows the signing secret, once.
pub async fn create(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let admin = state.admin(&req).await?;
    let body: CreateWebhook = req.json()?;
    if body.description.as_ref().is_some_and(|d| d.chars().count() > 500) {
        return Err(ApiError::validation("description", "at most 500 characters"));
    }
    let key = req.idempotency_key()?;
    super::idempotent(&state, &admin.user_id, key, &req, "POST", "/v1/admin/webhooks", || async {
        let new = NewWebhook { url: body.url, events: body.events, description: body.description };
        match state.webhooks.create(new).await? {
            Ok(w) => super::created(&CreatedWebhook {
                webhook_id: w.webhook_id,
                url: w.url,
                events: w.events,
                secret: w.secret,
                created_at: w.created_at,
            }),
            Err(Invalid::Url(why)) => Err(ApiError::validation("url", why)),
            Err(Invalid::Events(why)) => Err(ApiError::validation("events", why)),
        }
    })
    .await
}

#[utoipa::path(get, operation_id = "webhooks_list", path = "/v1/admin/webhooks", tag = "webhooks", security(("bearer" = [])),
    responses((status = 200, description = "`{items: [{webhook_id, url, events, description, created_at}]}` (secrets are never shown)")))]
/// The webhooks (admin).
pub async fn list(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    state.admin(&req).await?;
    let items: Vec<WebhookView> =
        state.webhooks.list().await?.into_iter().map(WebhookView::from).collect();
    super::ok(&serde_json::json!({ "items": items }))
}

#[utoipa::path(delete, operation_id = "webhooks_delete", path = "/v1/admin/webhooks/{webhook_id}", tag = "webhooks", security(("bearer" = [])),
    params(("webhook_id" = String, Path)),
    responses((status = 204, description = "Deleted: no more deliveries start"), (status = 404, description = "No such webhook")))]
/// Deletes a webhook (admin).
pub async fn delete(
    webhook_id: String,
    state: Arc<AppState>,
    req: Result<Req, ApiError>,
) -> ApiResult {
    let req = req?;
    state.admin(&req).await?;
    if state.webhooks.delete(&webhook_id).await? {
        Ok(ApiResponse::empty(warp::http::StatusCode::NO_CONTENT))
    } else {
        Err(unknown(&webhook_id))
    }
}

#[utoipa::path(get, operation_id = "webhooks_deliveries", path = "/v1/admin/webhooks/{webhook_id}/deliveries", tag = "webhooks", security(("bearer" = [])),
    params(("webhook_id" = String, Path), ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "`{items: [{event_id, type, status, attempts, last_status_code, last_error, next_attempt_at}], next_cursor}`, oldest event first"),
        (status = 404, description = "No such webhook")))]
/// A webhook's delivery log (admin).
pub async fn deliveries(
    webhook_id: String,
    state: Arc<AppState>,
    req: Result<Req, ApiError>,
) -> ApiResult {
    let req = req?;
    state.admin(&req).await?;
    let query = req.query()?;
    let limit = query.limit()?;
    if !state.webhooks.exists(&webhook_id).await? {
        return Err(unknown(&webhook_id));
    }
    let (items, next_cursor) =
        state.webhooks.deliveries(&webhook_id, limit, query.get("cursor")).await?;
    super::ok(&Page {
        items: items.into_iter().map(DeliveryView::from).collect::<Vec<_>>(),
        next_cursor,
    })
}
