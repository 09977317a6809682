//! A password reset the whole way, through a real node, the broker, `storefront notify` and a
//! real SMTP server: the mail carries a token that sets a new password once, and ends every
//! session of the account; an unknown email is answered alike and mailed nothing.

use std::sync::Arc;

use serde_json::json;
use storefront_config::Secret;
use storefront_events::notify::Notifier;
use storefront_storage::embedded::EmbeddedStore;

use crate::broker::Vhost;
use crate::helpers;
use crate::notify::{run, settings};
use crate::smtp::Smtp;

/// The reset token in a mail's text: the line of 64 hex digits.
fn token_in(mail: &str) -> Option<String> {
    mail.lines()
        .map(str::trim)
        .find(|l| l.len() == 64 && l.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_mail_sets_a_new_password_once_and_ends_every_session() {
    let vhost = Vhost::new();
    let smtp = Smtp::start().await;
    let (_conn, channel) = vhost.bound_queue("audit", "#").await;
    storefront_events::notify::declare(&channel).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = helpers::test_config(&dir.path().join("node"));
    config.events.amqp_url = Some(Secret::new(vhost.url()));
    let app = helpers::start(config).await;
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("notify")).await.unwrap());
    let notifier =
        run(Notifier::new(settings(&vhost, Some(smtp.url()), dir.path()), store).unwrap());

    app.customer("reset-me@example.com").await;
    let session = app.login("reset-me@example.com", "a-good-password").await;
    let unknown =
        app.post("/v1/auth/password-reset", None, &json!({"email": "nobody@example.com"})).await;
    let known =
        app.post("/v1/auth/password-reset", None, &json!({"email": "Reset-Me@example.com"})).await;
    assert_eq!(unknown.status, 202);
    assert_eq!(known.status, 202);
    assert_eq!(unknown.text, known.text, "known and unknown emails are answered alike");

    crate::eventually("the reset mail", || async {
        smtp.mails().iter().any(|m| m.contains("reset-me@example.com") && token_in(m).is_some())
    })
    .await;
    let mails = smtp.mails();
    assert!(!mails.iter().any(|m| m.contains("nobody@example.com")), "mailed an unknown email");
    let token = mails
        .iter()
        .filter(|m| m.contains("reset-me@example.com"))
        .find_map(|m| token_in(m))
        .unwrap();

    let confirm = json!({"token": token, "new_password": "a-newer-password"});
    let done = app.post("/v1/auth/password-reset/confirm", None, &confirm).await;
    assert_eq!(done.status, 204, "{}", done.text);
    // Single use.
    app.post("/v1/auth/password-reset/confirm", None, &confirm)
        .await
        .problem(400, "/problems/invalid-reset-token");
    // The session from before is over; the old password is gone, the new one logs in.
    app.post(
        "/v1/auth/refresh",
        None,
        &json!({"refresh_token": session["refresh_token"].as_str().unwrap()}),
    )
    .await
    .problem(401, "/problems/invalid-refresh-token");
    app.post(
        "/v1/auth/login",
        None,
        &json!({"email": "reset-me@example.com", "password": "a-good-password"}),
    )
    .await
    .problem(401, "/problems/invalid-credentials");
    app.login("reset-me@example.com", "a-newer-password").await;
    notifier.stop().await;
}
