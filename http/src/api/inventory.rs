//! `/v1/inventory/*` and `/v1/admin/inventory/*`: stock levels, restocks, and the live stream.
//!
//! The stream (`GET /v1/inventory/stream?sku=a,b`; without `sku`, every SKU) is server-sent
//! events fed by the SKU actors through the node's [`StockFeed`](storefront_actors::StockFeed):
//! first one `stock` event per requested SKU with its levels now, then one per change, coalesced
//! to at most one per SKU every 100 ms (the latest levels win). A client that does not read fast
//! enough falls behind the feed's ring and is disconnected; the actors never wait for a client.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use serde::Deserialize;
use storefront_actors::{Sku, StockCommand, StockUpdate};
use tokio::sync::{broadcast, watch};
use warp::Reply;
use warp::sse::Event;

use super::{LevelsView, known_sku};
use crate::app::AppState;
use crate::edge::StreamPermit;
use crate::extract::Req;
use crate::reply::{ApiError, ApiResult};

/// How often a SKU's changes are sent at most.
pub const COALESCE: Duration = Duration::from_millis(100);
/// Most SKUs one stream may name.
pub const MAX_STREAM_SKUS: usize = 100;

/// `POST /v1/admin/inventory/{sku}/restock` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Restock {
    /// Units to add, at least 1.
    #[schema(minimum = 1)]
    pub qty: u64,
}

/// `PUT /v1/admin/inventory/{sku}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStock {
    /// The new on-hand level (not below what is reserved).
    pub on_hand: u64,
}

#[utoipa::path(get, operation_id = "inventory_get", path = "/v1/inventory/{sku}", tag = "inventory", params(("sku" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$")),
    responses((status = 200, body = LevelsView), (status = 404, description = "No product has this SKU")))]
/// A SKU's stock levels.
pub async fn get(sku: String, state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    req?;
    let sku = known_sku(&state, &sku).await?;
    let levels = state.regions.stock_levels(sku.as_str()).await?;
    super::ok(&LevelsView::new(sku.as_str(), levels))
}

/// An admin's stock command on `sku`, made idempotent by the `Idempotency-Key` when one is given
/// (the response is stored, and the command's id derives from the key, so the SKU actor applies a
/// retry once too).
async fn admin_stock_write(
    state: &AppState,
    req: &Req,
    admin: &str,
    sku: &Sku,
    (method, path): (&str, &str),
    command: impl FnOnce(String) -> StockCommand,
) -> ApiResult {
    let key = req.idempotency_key()?;
    let id = match key {
        Some(key) => format!("{method} {path}/{admin}/{key}"),
        None => format!("{method} {path}/{}", uuid::Uuid::now_v7()),
    };
    super::idempotent(state, admin, key, req, method, path, || async {
        let levels = state.regions.stock(sku.as_str(), command(id)).await?;
        super::ok(&LevelsView::new(sku.as_str(), levels))
    })
    .await
}

#[utoipa::path(post, operation_id = "inventory_restock", path = "/v1/admin/inventory/{sku}/restock", tag = "inventory", security(("bearer" = [])),
    request_body = Restock, params(("sku" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$")),
    responses((status = 200, body = LevelsView), (status = 400, description = "`qty` not a whole number >= 1"),
        (status = 404, description = "No product has this SKU")))]
/// Adds units on hand (admin).
pub async fn restock(sku: String, state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let admin = state.admin(&req).await?;
    let body: Restock = req.json()?;
    if body.qty == 0 {
        return Err(ApiError::validation("qty", "must be at least 1"));
    }
    let sku = known_sku(&state, &sku).await?;
    let path = format!("/v1/admin/inventory/{sku}/restock");
    admin_stock_write(&state, &req, &admin.user_id, &sku, ("POST", &path), |restock_id| {
        StockCommand::Restock { restock_id, qty: body.qty }
    })
    .await
}

#[utoipa::path(put, operation_id = "inventory_set", path = "/v1/admin/inventory/{sku}", tag = "inventory", security(("bearer" = [])),
    request_body = SetStock, params(("sku" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$")),
    responses((status = 200, body = LevelsView), (status = 409, description = "`/problems/below-reserved`"),
        (status = 404, description = "No product has this SKU")))]
/// Sets units on hand (admin).
pub async fn set(sku: String, state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let admin = state.admin(&req).await?;
    let body: SetStock = req.json()?;
    let sku = known_sku(&state, &sku).await?;
    let path = format!("/v1/admin/inventory/{sku}");
    admin_stock_write(&state, &req, &admin.user_id, &sku, ("PUT", &path), |set_id| {
        StockCommand::Set { set_id, on_hand: body.on_hand }
    })
    .await
}

#[utoipa::path(get, operation_id = "inventory_stream", path = "/v1/inventory/stream", tag = "inventory",
    params(("sku" = Option<String>, Query, description = "Comma-separated SKUs (at most 100); all SKUs when absent")),
    responses((status = 200, content_type = "text/event-stream",
        description = "`event: stock` with data `{sku, on_hand, reserved, available}`: the current levels of each named SKU first, then changes, at most one per SKU per 100 ms"),
        (status = 404, description = "A named SKU that no product has")))]
/// The live stock stream.
pub async fn stream(
    state: Arc<AppState>,
    req: Result<Req, ApiError>,
) -> Result<warp::reply::Response, ApiError> {
    let req = req?;
    let query = req.query()?;
    let wanted: Option<Vec<Sku>> = match query.get("sku") {
        None => None,
        Some(list) => {
            let raw: Vec<&str> = list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
            if raw.len() > MAX_STREAM_SKUS {
                return Err(ApiError::validation("sku", format!("at most {MAX_STREAM_SKUS} SKUs")));
            }
            let mut skus = Vec::with_capacity(raw.len());
            for sku in raw {
                skus.push(known_sku(&state, sku).await?);
            }
            Some(skus)
        }
    };
    let Some(permit) = state.streams.open(state.edge.bucket(&req), &state.edge) else {
        let detail = "too many open streams: from this client, or in all; retry later";
        return Err(super::rate_limited(detail, 5));
    };
    // Subscribe before reading the current levels, so no change falls between the two.
    let updates = state.feed.subscribe();
    let mut ready = VecDeque::new();
    for sku in wanted.iter().flatten() {
        let levels = state.regions.stock_levels(sku.as_str()).await?;
        ready.push_back(LevelsView::new(sku.as_str(), levels));
    }
    let filter = wanted.map(|skus| skus.iter().map(|s| s.as_str().to_owned()).collect());
    let events = stock_events(updates, filter, ready, state.stopping.clone(), permit);
    let keep_alive = warp::sse::keep_alive().interval(Duration::from_secs(15));
    Ok(warp::sse::reply(keep_alive.stream(events)).into_response())
}

/// A stream's state between events.
struct Coalescer {
    updates: broadcast::Receiver<StockUpdate>,
    filter: Option<HashSet<String>>,
    ready: VecDeque<LevelsView>,
    pending: BTreeMap<Arc<str>, storefront_actors::StockLevels>,
    tick: tokio::time::Interval,
    stopping: watch::Receiver<bool>,
    /// The stream's place under the caps (and in the `storefront_sse_clients` gauge).
    _permit: StreamPermit,
}

fn event(levels: &LevelsView) -> Result<Event, Infallible> {
    // `LevelsView` is strings and numbers: it always serializes.
    Ok(Event::default().event("stock").data(serde_json::to_string(levels).unwrap_or_default()))
}

/// The events of one stream (see the module doc); it ends when the client falls behind, the
/// feed closes, or the node stops.
pub fn stock_events(
    updates: broadcast::Receiver<StockUpdate>,
    filter: Option<HashSet<String>>,
    ready: VecDeque<LevelsView>,
    stopping: watch::Receiver<bool>,
    permit: StreamPermit,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + Sync + 'static {
    let mut tick = tokio::time::interval(COALESCE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = Coalescer {
        updates,
        filter,
        ready,
        pending: BTreeMap::new(),
        tick,
        stopping,
        _permit: permit,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(levels) = st.ready.pop_front() {
                return Some((event(&levels), st));
            }
            if *st.stopping.borrow() {
                return None;
            }
            tokio::select! {
                _ = st.stopping.changed() => return None,
                update = st.updates.recv() => match update {
                    Ok(StockUpdate { sku, levels, .. }) => {
                        if st.filter.as_ref().is_none_or(|f| f.contains(&*sku)) {
                            st.pending.insert(sku, levels);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::info!(missed, "stock stream client too slow; disconnecting it");
                        return None;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = st.tick.tick(), if !st.pending.is_empty() => {
                    let pending = std::mem::take(&mut st.pending);
                    st.ready.extend(pending.iter().map(|(sku, levels)| LevelsView::new(sku, *levels)));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use storefront_actors::{StockFeed, StockLevels};

    use super::*;
    use crate::edge::{EdgeSettings, Streams};

    fn permit() -> StreamPermit {
        let edge = EdgeSettings { max_streams_per_ip: 1, max_streams: 1, ..Default::default() };
        Streams::default().open([127, 0, 0, 1].into(), &edge).unwrap()
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_the_feed_is_dropped_and_publishing_never_waits() {
        let feed = StockFeed::default();
        let (_stop, stopping) = watch::channel(false);
        let stream = stock_events(feed.subscribe(), None, VecDeque::new(), stopping, permit());
        let levels = StockLevels { on_hand: 1, reserved: 0, available: 1, sold: 0 };
        // Publishing more than the ring holds to a reader that is not reading returns at once.
        for _ in 0..storefront_actors::FEED_CAPACITY + 10 {
            feed.publish(StockUpdate { sku: Arc::from("A"), levels, seq: 1, from_peer: false });
        }
        let mut stream = std::pin::pin!(stream);
        assert!(stream.next().await.is_none(), "the lagging reader's stream ends");
    }

    #[tokio::test]
    async fn a_stream_ends_when_the_node_stops() {
        let feed = StockFeed::default();
        let (stop, stopping) = watch::channel(false);
        let ready = VecDeque::from([LevelsView::new(
            "A",
            StockLevels { on_hand: 2, reserved: 1, available: 1, sold: 0 },
        )]);
        let mut stream =
            std::pin::pin!(stock_events(feed.subscribe(), None, ready, stopping, permit()));
        assert!(stream.next().await.is_some(), "the current levels come first");
        stop.send(true).unwrap();
        assert!(stream.next().await.is_none());
    }
}
