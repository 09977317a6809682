//! `/v1/admin/cluster*`: the cluster's members, where an entity lives, and a node's leave.

use std::sync::Arc;
use std::time::Duration;

use storefront_actors::EntityKind;
use storefront_cluster::{Ownership, shard_of};

use crate::app::AppState;
use crate::extract::Req;
use crate::reply::{ApiError, ApiResult};
use crate::{Problem, ProblemType};

/// How long a leave may take to hand every shard off.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(60);

fn ownership(state: &AppState) -> Result<&Ownership, ApiError> {
    state.regions.ownership().ok_or_else(|| {
        ApiError::new(Problem::new(
            ProblemType::Unavailable,
            "this node runs without cluster membership",
        ))
    })
}

#[utoipa::path(get, operation_id = "cluster_status", path = "/v1/admin/cluster", tag = "cluster", security(("bearer" = [])),
    responses((status = 200, description = "`{node_id, nodes: [{node_id, addr, http_addr, status, shards}], shard_count, shards_by_node, unowned_shards}`; `status` is `up`, `leaving` or `down`")))]
/// The cluster's nodes and who holds how many shards (admin).
pub async fn status(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    state.admin(&req).await?;
    let ownership = ownership(&state)?;
    super::ok(&ownership.view().status(Some(ownership.node_id()), state.shard_count))
}

#[utoipa::path(get, operation_id = "cluster_locate", path = "/v1/admin/cluster/locate", tag = "cluster", security(("bearer" = [])),
    params(("kind" = String, Query, description = "`sku`, `cart` or `order`"), ("id" = String, Query)),
    responses((status = 200, description = "`{kind, id, shard, node_id}`; `node_id` is null while the shard moves"), (status = 400, description = "Bad kind or missing id")))]
/// Where an entity lives now (admin).
pub async fn locate(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    state.admin(&req).await?;
    let query = req.query()?;
    let kind = query
        .get("kind")
        .and_then(EntityKind::parse)
        .ok_or_else(|| ApiError::validation("kind", "one of sku, cart, order"))?;
    let id = query.get("id").ok_or_else(|| ApiError::validation("id", "required"))?;
    let shard = shard_of(kind, id, state.shard_count);
    super::ok(&serde_json::json!({
        "kind": kind,
        "id": id,
        "shard": shard,
        "node_id": ownership(&state)?.owner_of(shard),
    }))
}

#[utoipa::path(post, operation_id = "cluster_leave", path = "/v1/admin/cluster/leave", tag = "cluster", security(("bearer" = [])),
    responses((status = 200, description = "`{node_id, status: \"left\", shards}`: every shard handed off; the node keeps forwarding requests until it is stopped"),
        (status = 409, description = "`/problems/last-node`: no other node is up to take the shards"),
        (status = 503, description = "`/problems/unavailable`: the handoff did not finish within 60 s")))]
/// Hands this node's shards off and leaves (admin).
pub async fn leave(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    state.admin(&req).await?;
    req.no_fields()?;
    let ownership = ownership(&state)?;
    if !ownership.has_peers() {
        return Err(ApiError::new(Problem::new(
            ProblemType::LastNode,
            "no other node of the cluster is up to take this node's shards",
        )));
    }
    let remaining = ownership.leave(LEAVE_TIMEOUT).await;
    if remaining > 0 {
        return Err(ApiError::new(Problem::new(
            ProblemType::Unavailable,
            format!("{remaining} shards are still held after 60 s; the leave goes on"),
        )));
    }
    super::ok(&serde_json::json!({
        "node_id": ownership.node_id(),
        "status": "left",
        "shards": 0,
    }))
}
