//! `/v1/admin/cluster*`: where entities live. On a single node every shard is this node's; the
//! multi-node membership, handoff and `leave` come with the cluster (Step 4).

use std::sync::Arc;

use serde::Serialize;
use storefront_cluster::shard_of;

use crate::Problem;
use crate::app::AppState;
use crate::extract::Req;
use crate::reply::{ApiError, ApiResult};

#[derive(Debug, Serialize)]
struct NodeView {
    node_id: String,
    addr: Option<String>,
    status: &'static str,
    shards: u32,
}

#[utoipa::path(get, operation_id = "cluster_status", path = "/v1/admin/cluster", tag = "cluster", security(("bearer" = [])),
    responses((status = 200, description = "`{node_id, nodes: [{node_id, addr, status, shards}], shard_count, shards_by_node}`")))]
/// The cluster's nodes and who owns how many shards (admin).
pub async fn status(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    state.admin(&req).await?;
    let node = NodeView {
        node_id: state.node_id.clone(),
        addr: None,
        status: "up",
        shards: state.shard_count,
    };
    super::ok(&serde_json::json!({
        "node_id": state.node_id,
        "nodes": [node],
        "shard_count": state.shard_count,
        "shards_by_node": { state.node_id.clone(): state.shard_count },
    }))
}

#[utoipa::path(get, operation_id = "cluster_locate", path = "/v1/admin/cluster/locate", tag = "cluster", security(("bearer" = [])),
    params(("kind" = String, Query, description = "`sku`, `cart` or `order`"), ("id" = String, Query)),
    responses((status = 200, description = "`{kind, id, shard, node_id}`"), (status = 400, description = "Bad kind or missing id")))]
/// Where an entity lives now (admin).
pub async fn locate(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    state.admin(&req).await?;
    let query = req.query()?;
    let kind = match query.get("kind") {
        Some(kind @ ("sku" | "cart" | "order")) => kind,
        _ => return Err(ApiError::validation("kind", "one of sku, cart, order")),
    };
    let id = query.get("id").ok_or_else(|| ApiError::validation("id", "required"))?;
    super::ok(&serde_json::json!({
        "kind": kind,
        "id": id,
        "shard": shard_of(kind, id, state.shard_count),
        "node_id": state.node_id,
    }))
}

#[utoipa::path(post, operation_id = "cluster_leave", path = "/v1/admin/cluster/leave", tag = "cluster", security(("bearer" = [])),
    responses((status = 409, description = "`/problems/last-node`: a node alone has no one to hand its shards to")))]
/// Hands this node's shards off and leaves (admin).
pub async fn leave(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    state.admin(&req).await?;
    req.no_fields()?;
    Err(ApiError::new(Problem::new(
        "/problems/last-node",
        "No node to hand off to",
        409,
        "this node is a cluster of one: there is no other node to take its shards",
    )))
}
