//! Accounts, tokens and roles.

use jwt_simple::prelude::*;
use serde_json::json;

use crate::helpers::{KEY_ID, KEY_SECRET, spawn_app};

#[tokio::test]
async fn register_login_refresh_rotation_and_logout() {
    let app = spawn_app().await;
    let body = json!({"email": "Ann@Example.com", "password": "ten chars!", "name": "Ann"});
    let user_id = app.post("/v1/auth/register", None, &body).await.ok(201)["user_id"].clone();
    assert!(user_id.is_string());
    app.post(
        "/v1/auth/register",
        None,
        &json!({"email": "ann@example.com", "password": "another password"}),
    )
    .await
    .problem(409, "/problems/email-taken");
    let weak = app
        .post("/v1/auth/register", None, &json!({"email": "bob@example.com", "password": "short"}))
        .await
        .problem(400, "/problems/validation");
    assert_eq!(weak["errors"][0]["field"], "password");
    let bad_email = app
        .post(
            "/v1/auth/register",
            None,
            &json!({"email": "not-an-email", "password": "long enough pw"}),
        )
        .await
        .problem(400, "/problems/validation");
    assert_eq!(bad_email["errors"][0]["field"], "email");

    let pair = app.login("ANN@example.com", "ten chars!").await;
    assert_eq!(pair["token_type"], "Bearer");
    assert_eq!(pair["expires_in"], 900);
    let access = pair["access_token"].as_str().unwrap();
    let me = app.get("/v1/me", Some(access)).await.ok(200);
    assert_eq!(me["user_id"], user_id);
    assert_eq!(me["email"], "ann@example.com");
    assert_eq!(me["name"], "Ann");
    assert_eq!(me["roles"], json!(["customer"]));

    let wrong = app
        .post(
            "/v1/auth/login",
            None,
            &json!({"email": "ann@example.com", "password": "wrong password"}),
        )
        .await;
    let unknown = app
        .post(
            "/v1/auth/login",
            None,
            &json!({"email": "nobody@example.com", "password": "wrong password"}),
        )
        .await;
    let (wrong, unknown) = (
        wrong.problem(401, "/problems/invalid-credentials"),
        unknown.problem(401, "/problems/invalid-credentials"),
    );
    assert_eq!(wrong["detail"], unknown["detail"], "an unknown email is not told apart");

    // Rotation: the old refresh token is spent; reusing it revokes the whole family.
    let first = pair["refresh_token"].as_str().unwrap();
    let second = app.post("/v1/auth/refresh", None, &json!({"refresh_token": first})).await.ok(200);
    let second_refresh = second["refresh_token"].as_str().unwrap();
    assert_ne!(second_refresh, first);
    app.get("/v1/me", Some(second["access_token"].as_str().unwrap())).await.ok(200);
    app.post("/v1/auth/refresh", None, &json!({"refresh_token": first}))
        .await
        .problem(401, "/problems/invalid-refresh-token");
    app.post("/v1/auth/refresh", None, &json!({"refresh_token": second_refresh}))
        .await
        .problem(401, "/problems/invalid-refresh-token");

    // Logout revokes the family of a fresh login.
    let pair = app.login("ann@example.com", "ten chars!").await;
    let refresh = pair["refresh_token"].as_str().unwrap();
    let out = app.post("/v1/auth/logout", None, &json!({"refresh_token": refresh})).await;
    assert_eq!(out.status, 204);
    app.post("/v1/auth/refresh", None, &json!({"refresh_token": refresh}))
        .await
        .problem(401, "/problems/invalid-refresh-token");
}

fn forged(key: &HS256Key, roles: &[&str], valid_for: Duration, issued_secs_ago: u64) -> String {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Roles {
        roles: Vec<String>,
    }
    let mut claims = Claims::with_custom_claims(
        Roles { roles: roles.iter().map(|r| (*r).to_owned()).collect() },
        valid_for,
    )
    .with_subject("someone");
    let now = Clock::now_since_epoch();
    claims.issued_at = Some(now - Duration::from_secs(issued_secs_ago));
    claims.invalid_before = claims.issued_at;
    claims.expires_at = Some(now - Duration::from_secs(issued_secs_ago) + valid_for);
    key.authenticate(claims).unwrap()
}

#[tokio::test]
async fn bad_tokens_are_refused_and_roles_are_enforced() {
    let app = spawn_app().await;
    let customer = app.customer("carl@example.com").await;
    app.get("/v1/me", None).await.problem(401, "/problems/unauthorized");
    app.get("/v1/admin/orders", Some(&customer)).await.problem(403, "/problems/forbidden");
    app.get("/v1/admin/cluster", Some(&customer)).await.problem(403, "/problems/forbidden");

    let right_key = HS256Key::from_bytes(KEY_SECRET.as_bytes()).with_key_id(KEY_ID);
    // A token we signed is accepted (the forging helper itself is right)...
    let genuine = forged(&right_key, &["customer"], Duration::from_mins(15), 0);
    app.get("/v1/orders", Some(&genuine)).await.ok(200);
    // ...expired beyond the leeway is not,
    let expired = forged(&right_key, &["customer"], Duration::from_mins(15), 3600);
    app.get("/v1/orders", Some(&expired)).await.problem(401, "/problems/unauthorized");
    // nor one signed with another key under our key id,
    let wrong_key =
        HS256Key::from_bytes(b"another secret of at least 32 bytes!!").with_key_id(KEY_ID);
    let wrong = forged(&wrong_key, &["customer", "admin"], Duration::from_mins(15), 0);
    app.get("/v1/admin/orders", Some(&wrong)).await.problem(401, "/problems/unauthorized");
    // nor a tampered one (roles edited, signature kept),
    let parts: Vec<&str> = customer.split('.').collect();
    let payload = Base64UrlSafeNoPadding::decode_to_vec(parts[1], None).unwrap();
    let mut payload: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    payload["roles"] = json!(["customer", "admin"]);
    let payload =
        Base64UrlSafeNoPadding::encode_to_string(serde_json::to_vec(&payload).unwrap()).unwrap();
    let tampered = format!("{}.{}.{}", parts[0], payload, parts[2]);
    app.get("/v1/admin/orders", Some(&tampered)).await.problem(401, "/problems/unauthorized");
    // nor `alg: none`,
    let header = Base64UrlSafeNoPadding::encode_to_string(
        json!({"alg": "none", "typ": "JWT", "kid": KEY_ID}).to_string(),
    )
    .unwrap();
    let none = format!("{header}.{payload}.");
    app.get("/v1/admin/orders", Some(&none)).await.problem(401, "/problems/unauthorized");
    // nor garbage.
    app.get("/v1/me", Some("not.a.token")).await.problem(401, "/problems/unauthorized");
    // The scheme name is case-insensitive.
    let lower = format!("bearer {customer}");
    app.send(reqwest::Method::GET, "/v1/me", None, None, &[("authorization", &lower)])
        .await
        .ok(200);
}

#[tokio::test]
async fn logins_are_rate_limited_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path());
    config.rate_limit.auth_per_minute = 3;
    let app = crate::helpers::start(config).await;
    let body = json!({"email": "x@example.com", "password": "wrong password"});
    for _ in 0..3 {
        app.post("/v1/auth/login", None, &body).await.problem(401, "/problems/invalid-credentials");
    }
    let limited = app.post("/v1/auth/login", None, &body).await;
    limited.problem(429, "/problems/rate-limited");
    let retry_after: u64 =
        limited.headers["retry-after"].to_str().unwrap().parse().expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // Other routes are not under the auth limit.
    app.get("/v1/products", None).await.ok(200);
}

#[tokio::test]
async fn admins_provision_many_accounts_at_once_with_tokens() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let ann = app.customer("ann@example.com").await;
    let users: Vec<_> =
        (0..300).map(|n| json!({"email": format!("shopper-{n}@load.test")})).collect();
    let body = json!({"password": "shared password", "users": users});
    app.post("/v1/admin/users", Some(&ann), &body).await.problem(403, "/problems/forbidden");
    app.post("/v1/admin/users", None, &body).await.problem(401, "/problems/unauthorized");

    let created = app.post("/v1/admin/users", Some(&admin), &body).await.ok(201);
    let accounts = created["users"].as_array().unwrap();
    assert_eq!(accounts.len(), 300);
    assert_eq!(created["taken"], json!([]));
    assert_eq!(created["expires_in"], 900);
    let ids: std::collections::HashSet<_> = accounts.iter().map(|a| a["user_id"].clone()).collect();
    assert_eq!(ids.len(), 300, "every account its own user");
    // Each token is its account's, and each account logs in with the shared password.
    let last = &accounts[299];
    let me = app.get("/v1/me", Some(last["access_token"].as_str().unwrap())).await.ok(200);
    assert_eq!(me["user_id"], last["user_id"]);
    assert_eq!(me["email"], "shopper-299@load.test");
    assert_eq!(me["roles"], json!(["customer"]));
    app.login("SHOPPER-7@load.test", "shared password").await;

    // Emails in use (here or by a registered customer) are reported, not created again.
    let again = json!({"password": "shared password", "users": [
        {"email": "shopper-1@load.test"}, {"email": "ann@example.com"}, {"email": "new@load.test"}]});
    let answer = app.post("/v1/admin/users", Some(&admin), &again).await.ok(201);
    assert_eq!(answer["taken"], json!(["shopper-1@load.test", "ann@example.com"]));
    assert_eq!(answer["users"].as_array().unwrap().len(), 1);
    assert_eq!(answer["users"][0]["email"], "new@load.test");

    for (bad, field) in [
        (json!({"password": "shared password", "users": []}), "users"),
        (json!({"password": "short", "users": [{"email": "x@load.test"}]}), "password"),
        (json!({"password": "shared password", "users": [{"email": "nope"}]}), "users[0].email"),
        (
            json!({"password": "shared password", "users": [{"email": "a@load.test"}, {"email": "A@load.test"}]}),
            "users[1].email",
        ),
    ] {
        let problem = app
            .post("/v1/admin/users", Some(&admin), &bad)
            .await
            .problem(400, "/problems/validation");
        assert_eq!(problem["errors"][0]["field"], field, "{bad}");
    }
    let too_many: Vec<_> = (0..1001).map(|n| json!({"email": format!("m{n}@l.io")})).collect();
    app.post(
        "/v1/admin/users",
        Some(&admin),
        &json!({"password": "shared password", "users": too_many}),
    )
    .await
    .problem(400, "/problems/validation");
}

#[tokio::test]
async fn token_answers_are_never_cached_and_the_admin_page_is_locked_down() {
    let app = spawn_app().await;
    let body = json!({"email": "dora@example.com", "password": "ten chars!"});
    app.post("/v1/auth/register", None, &body).await.ok(201);
    let login = app.post("/v1/auth/login", None, &body).await;
    assert_eq!(login.status.as_u16(), 200);
    let refresh = login.json()["refresh_token"].as_str().unwrap().to_owned();
    let refreshed = app.post("/v1/auth/refresh", None, &json!({"refresh_token": refresh})).await;
    assert_eq!(refreshed.status.as_u16(), 200);
    let admin = app.admin().await;
    let provisioned = app
        .post(
            "/v1/admin/users",
            Some(&admin),
            &json!({"password": "shared password", "users": [{"email": "eve@example.com"}]}),
        )
        .await;
    assert_eq!(provisioned.status.as_u16(), 201);
    for answer in [&login, &refreshed, &provisioned] {
        let cache = answer.headers.get("cache-control").and_then(|v| v.to_str().ok());
        assert_eq!(cache, Some("no-store"), "{}", answer.text);
    }
    let page = app.get("/admin", None).await;
    assert_eq!(page.status.as_u16(), 200);
    let policy = page.headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert_eq!(page.headers["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn a_password_change_and_logout_all_end_every_session() {
    let app = spawn_app().await;
    let access = app.customer("sessions@example.com").await;
    let phone = app.login("sessions@example.com", "a-good-password").await;
    let laptop = app.login("sessions@example.com", "a-good-password").await;
    let refresh = |pair: &serde_json::Value| json!({"refresh_token": pair["refresh_token"]});
    let change =
        |current: &str, new: &str| json!({"current_password": current, "new_password": new});

    let wrong = app
        .post("/v1/auth/password", Some(&access), &change("not-the-password", "a-newer-password"))
        .await
        .problem(400, "/problems/validation");
    assert_eq!(wrong["errors"][0]["field"], "current_password");
    let weak = app
        .post("/v1/auth/password", Some(&access), &change("a-good-password", "short"))
        .await
        .problem(400, "/problems/validation");
    assert_eq!(weak["errors"][0]["field"], "new_password");
    app.post("/v1/auth/password", None, &change("a-good-password", "a-newer-password"))
        .await
        .problem(401, "/problems/unauthorized");
    // Neither failed attempt ended a session.
    let phone = app.post("/v1/auth/refresh", None, &refresh(&phone)).await.ok(200);

    let changed = app
        .post("/v1/auth/password", Some(&access), &change("a-good-password", "a-newer-password"))
        .await;
    assert_eq!(changed.status, 204, "{}", changed.text);
    for pair in [&phone, &laptop] {
        app.post("/v1/auth/refresh", None, &refresh(pair))
            .await
            .problem(401, "/problems/invalid-refresh-token");
    }
    app.post(
        "/v1/auth/login",
        None,
        &json!({"email": "sessions@example.com", "password": "a-good-password"}),
    )
    .await
    .problem(401, "/problems/invalid-credentials");

    // Logout everywhere: both new sessions end; a login afterwards works.
    let one = app.login("sessions@example.com", "a-newer-password").await;
    let two = app.login("sessions@example.com", "a-newer-password").await;
    let out = app.post("/v1/auth/logout-all", Some(&access), &json!({})).await;
    assert_eq!(out.status, 204, "{}", out.text);
    for pair in [&one, &two] {
        app.post("/v1/auth/refresh", None, &refresh(pair))
            .await
            .problem(401, "/problems/invalid-refresh-token");
    }
    let three = app.login("sessions@example.com", "a-newer-password").await;
    app.post("/v1/auth/refresh", None, &refresh(&three)).await.ok(200);

    // A reset confirmation with a made-up token changes nothing.
    app.post(
        "/v1/auth/password-reset/confirm",
        None,
        &json!({"token": "ab".repeat(32), "new_password": "a-third-password"}),
    )
    .await
    .problem(400, "/problems/invalid-reset-token");
}
