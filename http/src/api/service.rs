//! Service endpoints: liveness, readiness, metrics, the OpenAPI document, the admin dashboard.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use serde::Serialize;
use storefront_storage::Table;

use crate::app::AppState;
use crate::reply::{ApiResponse, ApiResult};

/// `GET /healthz`: the process is up.
pub async fn healthz() -> ApiResult {
    super::ok(&serde_json::json!({"status": "ok"}))
}

#[derive(Debug, Serialize)]
struct Readiness {
    status: &'static str,
    reasons: Vec<String>,
}

/// `GET /readyz`: 200 when the store answers, the node reaches most of the live members the
/// store shows (itself included), and it is not stopping or gone; else 503 with reasons.
pub async fn readyz(state: Arc<AppState>) -> ApiResult {
    let reasons = unready_reasons(&state).await;
    if reasons.is_empty() {
        super::ok(&Readiness { status: "ready", reasons })
    } else {
        ApiResponse::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &Readiness { status: "not_ready", reasons },
        )
    }
}

/// Why this node cannot serve now (none when it can): what `/readyz` and `storefront_ready` say.
async fn unready_reasons(state: &AppState) -> Vec<String> {
    let mut reasons = Vec::new();
    if *state.stopping.borrow() {
        reasons.push("the node is shutting down".to_owned());
    }
    if let Some(ownership) = state.regions.ownership() {
        if ownership.is_leaving() {
            reasons.push("the node has left the cluster".to_owned());
        }
        let (reached, live) = ownership.reach();
        if 2 * reached <= live {
            reasons.push(format!(
                "cluster: reaches {reached} of the {live} live members (itself included)"
            ));
        }
    }
    match tokio::time::timeout(Duration::from_secs(2), state.store.get(Table::Settings, b"ready"))
        .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => reasons.push(format!("storage: {e}")),
        Err(_) => reasons.push("storage: no answer within 2 s".to_owned()),
    }
    reasons
}

/// `GET /metrics` on the API's address: the Prometheus text exposition, unless it has its own.
pub async fn metrics(state: Arc<AppState>) -> ApiResult {
    if state.metrics_apart {
        return Err(crate::reply::ApiError::not_found("metrics are served on their own address"));
    }
    exposition(state).await
}

/// `GET /metrics` on the metrics address (`http.metrics_addr`).
pub async fn exposition(state: Arc<AppState>) -> ApiResult {
    let ready = unready_reasons(&state).await.is_empty();
    let text = crate::metrics::render(&state.metrics, &state.regions, ready);
    Ok(ApiResponse {
        status: StatusCode::OK,
        content_type: Some("text/plain; version=0.0.4; charset=utf-8"),
        body: text.into(),
        headers: Vec::new(),
    })
}

/// `GET /openapi.json`: the OpenAPI 3.1 document generated from the handlers' annotations.
pub async fn openapi() -> ApiResult {
    Ok(ApiResponse {
        status: StatusCode::OK,
        content_type: Some(crate::reply::JSON),
        body: crate::openapi::document().into(),
        headers: Vec::new(),
    })
}

/// The page's policy: its own inline script and style, requests to this origin only, and never
/// framed (no clickjacking of an admin's session).
const DASHBOARD_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// `GET /admin`: the dashboard page (it logs in with the API itself).
pub async fn dashboard() -> ApiResult {
    Ok(ApiResponse {
        status: StatusCode::OK,
        content_type: Some("text/html; charset=utf-8"),
        body: include_str!("dashboard.html").into(),
        headers: vec![
            ("content-security-policy", HeaderValue::from_static(DASHBOARD_POLICY)),
            ("x-content-type-options", HeaderValue::from_static("nosniff")),
        ],
    })
}
