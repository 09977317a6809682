//! `/v1/auth/*` and `/v1/me`: accounts, tokens, the caller.

use std::sync::Arc;

use http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::auth::AuthError;
use crate::extract::Req;
use crate::reply::{ApiError, ApiResponse, ApiResult};

/// `POST /v1/auth/register` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// Email address (its case does not matter).
    #[schema(format = "email")]
    pub email: String,
    /// At least 10 characters.
    #[schema(min_length = 10, max_length = 1024)]
    pub password: String,
    /// Display name.
    pub name: Option<String>,
}

/// `POST /v1/auth/login` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// Email address.
    pub email: String,
    /// Password.
    pub password: String,
}

/// `POST /v1/auth/refresh` and `/v1/auth/logout` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// A refresh token from login or an earlier refresh.
    pub refresh_token: String,
}

/// `POST /v1/auth/password` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    /// The password now.
    pub current_password: String,
    /// The new one: at least 10 characters.
    #[schema(min_length = 10, max_length = 1024)]
    pub new_password: String,
}

/// `POST /v1/auth/password-reset` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// The account's email address.
    #[schema(format = "email")]
    pub email: String,
}

/// `POST /v1/auth/password-reset/confirm` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetConfirm {
    /// The token from the reset mail.
    pub token: String,
    /// The new password: at least 10 characters.
    #[schema(min_length = 10, max_length = 1024)]
    pub new_password: String,
}

/// `POST /v1/admin/users` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Provision {
    /// The password every account of this call gets (at least 10 characters); hashed once.
    #[schema(min_length = 10, max_length = 1024)]
    pub password: String,
    /// The accounts, 1 to [`MAX_PROVISION`].
    pub users: Vec<ProvisionUser>,
}

/// One account to provision.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProvisionUser {
    /// Email address.
    #[schema(format = "email")]
    pub email: String,
    /// Display name.
    pub name: Option<String>,
}

/// Most accounts one `POST /v1/admin/users` creates.
pub const MAX_PROVISION: usize = 1000;

/// A provisioned account with an access token, so a load tool needs no login per account.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Provisioned {
    /// The new user.
    pub user_id: String,
    /// Its normalized email.
    pub email: String,
    /// An access token of the account (customer role).
    pub access_token: String,
}

/// `POST /v1/admin/users` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProvisionResponse {
    /// The accounts created, in the order asked.
    pub users: Vec<Provisioned>,
    /// The emails that already belonged to an account (nothing created for them).
    pub taken: Vec<String>,
    /// Seconds the access tokens are valid.
    pub expires_in: u64,
}

/// A token pair.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    /// HS256 JWT, sent as `Authorization: Bearer ...`.
    pub access_token: String,
    /// Single use: exchange it at `/v1/auth/refresh` for a new pair.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds the access token is valid.
    pub expires_in: u64,
}

/// `GET /v1/me`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    /// The user.
    pub user_id: String,
    /// Email.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// `customer`, `admin`.
    pub roles: Vec<&'static str>,
}

#[utoipa::path(post, operation_id = "auth_register", path = "/v1/auth/register", tag = "auth", request_body = Register,
    responses((status = 201, description = "Registered: `{user_id}`"),
        (status = 400, description = "Bad email, weak password (< 10 characters): `/problems/validation`"),
        (status = 409, description = "`/problems/email-taken`"),
        (status = 429, description = "`/problems/rate-limited`, with `Retry-After`")))]
/// Registers a customer.
pub async fn register(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let body: Register = req.json()?;
    if body.name.as_ref().is_some_and(|n| n.chars().count() > 200) {
        return Err(ApiError::validation("name", "at most 200 characters"));
    }
    let user = state.users.register(&body.email, &body.password, body.name.as_deref()).await?;
    super::created(&serde_json::json!({ "user_id": user.user_id }))
}

/// An answer that carries tokens: no cache (a browser's, a proxy's) may keep it.
fn no_store(answer: ApiResponse) -> ApiResponse {
    answer.with_header("cache-control", HeaderValue::from_static("no-store"))
}

async fn pair(state: &AppState, user_id: &str, roles: &[crate::auth::Role]) -> ApiResult {
    let access_token = state.tokens.issue(user_id, roles)?;
    let refresh_token = state.refresh.issue(user_id).await?;
    super::ok(&TokenPair {
        access_token,
        refresh_token,
        token_type: "Bearer",
        expires_in: state.tokens.ttl().as_secs(),
    })
    .map(no_store)
}

#[utoipa::path(post, operation_id = "auth_login", path = "/v1/auth/login", tag = "auth", request_body = Login,
    responses((status = 200, body = TokenPair),
        (status = 401, description = "`/problems/invalid-credentials` (also for an unknown email)"),
        (status = 429, description = "`/problems/rate-limited`")))]
/// Logs in.
pub async fn login(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let body: Login = req.json()?;
    let user = state.users.authenticate(&body.email, &body.password).await?;
    pair(&state, &user.user_id, &user.roles).await
}

#[utoipa::path(post, operation_id = "auth_refresh", path = "/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenPair),
        (status = 401, description = "`/problems/invalid-refresh-token`: unknown, expired, revoked, or spent (a spent token revokes its whole family)")))]
/// Exchanges a refresh token for a new pair; the old one is spent.
pub async fn refresh(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let body: RefreshRequest = req.json()?;
    let rotated = state.refresh.rotate(&body.refresh_token).await?;
    let user = state.users.get(&rotated.user_id).await?.ok_or(AuthError::Revoked)?;
    let access_token = state.tokens.issue(&user.user_id, &user.roles)?;
    super::ok(&TokenPair {
        access_token,
        refresh_token: rotated.token,
        token_type: "Bearer",
        expires_in: state.tokens.ttl().as_secs(),
    })
    .map(no_store)
}

#[utoipa::path(post, operation_id = "auth_logout", path = "/v1/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204, description = "The token's family is revoked"),
        (status = 401, description = "`/problems/invalid-refresh-token`: not a token of ours")))]
/// Logs out: revokes the refresh token's family.
pub async fn logout(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let body: RefreshRequest = req.json()?;
    state.refresh.revoke(&body.refresh_token).await?;
    Ok(ApiResponse::empty(StatusCode::NO_CONTENT))
}

#[utoipa::path(post, operation_id = "auth_password", path = "/v1/auth/password", tag = "auth", security(("bearer" = [])),
    request_body = ChangePassword,
    responses((status = 204, description = "Changed; every refresh-token family of the user is revoked"),
        (status = 400, description = "`current_password` wrong, or `new_password` weak: `/problems/validation`")))]
/// Changes the caller's password, and logs out every session.
pub async fn change_password(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let me = state.customer(&req).await?;
    let body: ChangePassword = req.json()?;
    check_new_password(&body.new_password)?;
    state.users.check_password(&me.user_id, &body.current_password).await?;
    replace_password(&state, &me.user_id, &body.new_password).await
}

/// 400 naming `new_password` when it breaks the password rules.
fn check_new_password(password: &str) -> Result<(), ApiError> {
    crate::auth::validate_password(password)
        .map_err(|e| ApiError::validation("new_password", e.to_string()))
}

/// Sets `user_id`'s password and ends every session of the user: 204. Sessions end first, so a
/// crash in between leaves the old password with no session, never the new one with the old
/// sessions alive.
async fn replace_password(state: &AppState, user_id: &str, password: &str) -> ApiResult {
    state.refresh.revoke_user(user_id).await?;
    state.users.set_password(user_id, password).await?;
    Ok(ApiResponse::empty(StatusCode::NO_CONTENT))
}

#[utoipa::path(post, operation_id = "auth_logout_all", path = "/v1/auth/logout-all", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "Every refresh-token family of the user is revoked")))]
/// Logs out everywhere: revokes every refresh-token family of the caller.
pub async fn logout_all(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let me = state.customer(&req).await?;
    req.no_fields()?;
    state.refresh.revoke_user(&me.user_id).await?;
    Ok(ApiResponse::empty(StatusCode::NO_CONTENT))
}

#[utoipa::path(post, operation_id = "auth_password_reset", path = "/v1/auth/password-reset", tag = "auth",
    request_body = ResetRequest,
    responses((status = 202, description = "Always, for known and unknown emails alike: a known one gets a mail with a single-use token valid for 30 minutes (at most one a minute)"),
        (status = 400, description = "Not an email address: `/problems/validation`"),
        (status = 429, description = "`/problems/rate-limited`, with `Retry-After`")))]
/// Asks for a password-reset mail.
pub async fn password_reset(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let body: ResetRequest = req.json()?;
    crate::auth::normalize_email(&body.email)?;
    // The answer neither waits for nor tells what happens next, so a known and an unknown email
    // are answered alike, and as fast.
    tokio::spawn(async move {
        let issued = match state.users.find(&body.email).await {
            Ok(Some(user)) => state.resets.request(&user).await.map(drop),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(error) = issued {
            tracing::warn!(%error, "a password-reset request failed");
        }
    });
    Ok(ApiResponse::empty(StatusCode::ACCEPTED))
}

#[utoipa::path(post, operation_id = "auth_password_reset_confirm", path = "/v1/auth/password-reset/confirm", tag = "auth",
    request_body = ResetConfirm,
    responses((status = 204, description = "The password is set; every refresh-token family of the user is revoked"),
        (status = 400, description = "`/problems/invalid-reset-token` (unknown, spent or expired), or a weak password: `/problems/validation`"),
        (status = 429, description = "`/problems/rate-limited`, with `Retry-After`")))]
/// Sets a new password with a reset token.
pub async fn password_reset_confirm(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let body: ResetConfirm = req.json()?;
    check_new_password(&body.new_password)?;
    let user_id = state.resets.redeem(&body.token).await?;
    replace_password(&state, &user_id, &body.new_password).await
}

#[utoipa::path(post, operation_id = "auth_provision", path = "/v1/admin/users", tag = "auth", security(("bearer" = [])),
    request_body = Provision,
    responses((status = 201, body = ProvisionResponse),
        (status = 400, description = "Bad email, weak password, no users or more than 1,000, an email twice: `/problems/validation`")))]
/// Creates many customer accounts at once, sharing one password, each with an access token.
///
/// For load tests and imports: registration hashes every password (tens of milliseconds of CPU on
/// purpose), which makes setting up thousands of accounts take minutes; here the password is
/// hashed once per call. The accounts are ordinary: they log in with that password.
pub async fn provision(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let admin = state.admin(&req).await?;
    let body: Provision = req.json()?;
    if body.users.is_empty() || body.users.len() > MAX_PROVISION {
        return Err(ApiError::validation("users", format!("1 to {MAX_PROVISION} accounts")));
    }
    let mut emails = Vec::with_capacity(body.users.len());
    let mut seen = std::collections::HashSet::new();
    for (i, user) in body.users.iter().enumerate() {
        let email = crate::auth::normalize_email(&user.email)
            .map_err(|e| ApiError::validation(format!("users[{i}].email"), e.to_string()))?;
        emails.push(email.clone());
        if !seen.insert(email) {
            return Err(ApiError::validation(format!("users[{i}].email"), "given twice"));
        }
        if user.name.as_ref().is_some_and(|n| n.chars().count() > 200) {
            return Err(ApiError::validation(format!("users[{i}].name"), "at most 200 characters"));
        }
    }
    let key = req.idempotency_key()?;
    super::idempotent(&state, &admin.user_id, key, &req, "POST", "/v1/admin/users", || async {
        let accounts = body.users.into_iter().map(|u| (u.email, u.name)).collect();
        let mut answer = ProvisionResponse {
            users: Vec::new(),
            taken: Vec::new(),
            expires_in: state.tokens.ttl().as_secs(),
        };
        let created = state.users.provision(accounts, &body.password).await?;
        for (created, email) in created.into_iter().zip(emails) {
            match created {
                Ok(user) => answer.users.push(Provisioned {
                    access_token: state.tokens.issue(&user.user_id, &user.roles)?,
                    user_id: user.user_id,
                    email: user.email,
                }),
                Err(crate::auth::AuthError::EmailTaken) => answer.taken.push(email),
                Err(e) => return Err(e.into()),
            }
        }
        super::created(&answer)
    })
    .await
    .map(no_store)
}

#[utoipa::path(get, operation_id = "auth_me", path = "/v1/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, description = "`/problems/unauthorized`")))]
/// The caller.
pub async fn me(state: Arc<AppState>, req: Result<Req, ApiError>) -> ApiResult {
    let req = req?;
    let principal = state.caller(&req).await?;
    let user = state
        .users
        .get(&principal.user_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the token's user no longer exists"))?;
    super::ok(&Me {
        user_id: user.user_id,
        email: user.email,
        name: user.name,
        roles: user.roles.iter().map(|r| r.as_str()).collect(),
    })
}
