//! Password resets: single-use tokens, kept only as their SHA-256, valid for 30 minutes.
//!
//! A request for a known account writes the token's hash (with its user and expiry) and the
//! `user.password_reset_requested` event, which carries the token itself for the mail, in one
//! append: a token exists exactly when its mail can go. An account gets one token a minute at
//! most, so no one can flood its mailbox. Redeeming deletes the record by compare-and-swap, so of
//! two concurrent redemptions one wins; an unknown, spent or expired token is one error.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use storefront_actors::Clock;
use storefront_events::event::PasswordResetRequested;
use storefront_events::{CloudEvent, EventData};
use storefront_storage::{AppendRequest, KeyedWrite, Store, Table};

use super::{AuthError, User, random_hex, sha256_hex};

/// How long a reset token works.
pub const RESET_TTL: Duration = Duration::from_secs(30 * 60);
/// The least time between two reset tokens of one account.
const MIN_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    user_id: String,
    expires_at_ms: u64,
}

/// Issues and redeems password-reset tokens.
#[derive(Debug, Clone)]
pub struct PasswordResets {
    store: Arc<dyn Store>,
    clock: Clock,
}

fn backend(err: impl std::fmt::Display) -> AuthError {
    AuthError::Backend(err.to_string())
}

/// Where the time of an account's last reset token is kept.
fn last_key(user_id: &str) -> Vec<u8> {
    format!("user/{user_id}").into_bytes()
}

impl PasswordResets {
    /// Resets kept in `store`, timed by `clock`.
    pub fn new(store: Arc<dyn Store>, clock: Clock) -> Self {
        Self { store, clock }
    }

    /// Issues a reset token for `user` and the event that mails it, unless one was issued less
    /// than a minute ago. Returns whether it issued one.
    pub async fn request(&self, user: &User) -> Result<bool, AuthError> {
        let now = self.clock.now_ms();
        let last = self.store.get(Table::PasswordResets, &last_key(&user.user_id)).await;
        let last = last.map_err(backend)?.and_then(|at| String::from_utf8_lossy(&at).parse().ok());
        if last.is_some_and(|last: u64| now < last.saturating_add(MIN_INTERVAL.as_millis() as u64))
        {
            return Ok(false);
        }
        let token = random_hex(32);
        let hash = sha256_hex(&token);
        let expires_at_ms = now + RESET_TTL.as_millis() as u64;
        let expires_at = UNIX_EPOCH + Duration::from_millis(expires_at_ms);
        let event = CloudEvent::new(
            now,
            EventData::PasswordResetRequested(PasswordResetRequested {
                user_id: user.user_id.clone(),
                email: user.email.clone(),
                token,
                expires_at: humantime::format_rfc3339_seconds(expires_at).to_string(),
            }),
        );
        let record = Record { user_id: user.user_id.clone(), expires_at_ms };
        self.store
            .append(AppendRequest {
                stream: format!("password-reset/{hash}"),
                expected_seq: 0,
                events: vec![br#"{"requested":true}"#.to_vec()],
                outbox: vec![event.into_outbox().map_err(backend)?],
                puts: vec![
                    KeyedWrite {
                        table: Table::PasswordResets,
                        key: hash.into_bytes(),
                        value: Some(serde_json::to_vec(&record).map_err(backend)?),
                    },
                    KeyedWrite {
                        table: Table::PasswordResets,
                        key: last_key(&user.user_id),
                        value: Some(now.to_string().into_bytes()),
                    },
                ],
                fence: None,
            })
            .await
            .map_err(backend)?;
        Ok(true)
    }

    /// Deletes expired tokens and the times of requests over a minute old; returns how many.
    pub async fn sweep(&self) -> Result<usize, AuthError> {
        let now = self.clock.now_ms();
        let interval = MIN_INTERVAL.as_millis() as u64;
        storefront_storage::sweep(&*self.store, Table::PasswordResets, |key, value| {
            if key.starts_with(b"user/") {
                String::from_utf8_lossy(value)
                    .parse::<u64>()
                    .is_ok_and(|at| at.saturating_add(interval) <= now)
            } else {
                serde_json::from_slice::<Record>(value).is_ok_and(|r| r.expires_at_ms <= now)
            }
        })
        .await
        .map_err(backend)
    }

    /// Spends `token`: the account it resets, or [`AuthError::InvalidResetToken`] when it is
    /// unknown, spent or expired.
    pub async fn redeem(&self, token: &str) -> Result<String, AuthError> {
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AuthError::InvalidResetToken);
        }
        let key = sha256_hex(&token.to_ascii_lowercase()).into_bytes();
        let stored = self
            .store
            .get(Table::PasswordResets, &key)
            .await
            .map_err(backend)?
            .ok_or(AuthError::InvalidResetToken)?;
        let record: Record = serde_json::from_slice(&stored).map_err(backend)?;
        if self.clock.now_ms() >= record.expires_at_ms {
            return Err(AuthError::InvalidResetToken);
        }
        let spent = self
            .store
            .compare_and_swap(Table::PasswordResets, &key, Some(&stored), None)
            .await
            .map_err(backend)?;
        if spent { Ok(record.user_id) } else { Err(AuthError::InvalidResetToken) }
    }
}

#[cfg(test)]
mod tests {
    use storefront_events::EventType;
    use storefront_storage::embedded::EmbeddedStore;

    use super::*;

    async fn setup(dir: &tempfile::TempDir) -> (Arc<dyn Store>, PasswordResets, User) {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
        let users = super::super::Users::new(store.clone());
        let user =
            users.register("reset@example.com", "correct horse battery", None).await.unwrap();
        (store.clone(), PasswordResets::new(store, Clock::system()), user)
    }

    /// The token the request's event carries (what the mail shows).
    async fn mailed_token(store: &Arc<dyn Store>) -> String {
        let outbox = store.read_outbox(0, 100).await.unwrap();
        let record = outbox
            .iter()
            .rev()
            .find(|r| r.record.topic == EventType::PasswordResetRequested.as_str())
            .expect("no reset event in the outbox");
        let event: serde_json::Value = serde_json::from_slice(&record.record.payload).unwrap();
        event["data"]["token"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn a_reset_token_is_hashed_at_rest_single_use_and_one_a_minute() {
        let dir = tempfile::tempdir().unwrap();
        let (store, resets, user) = setup(&dir).await;
        assert!(resets.request(&user).await.unwrap());
        let token = mailed_token(&store).await;
        // At rest only its hash: no key or value of the table holds the token.
        for (key, value) in store.scan(Table::PasswordResets, b"", None, 100).await.unwrap() {
            let row =
                format!("{}{}", String::from_utf8_lossy(&key), String::from_utf8_lossy(&value));
            assert!(!row.contains(&token), "the token is stored as is: {row}");
        }
        // A second request within the minute issues nothing.
        assert!(!resets.request(&user).await.unwrap());
        assert_eq!(resets.redeem(&token).await.unwrap(), user.user_id);
        assert_eq!(resets.redeem(&token).await, Err(AuthError::InvalidResetToken));
        for bad in ["", "0".repeat(64).as_str(), "not a token", &"g".repeat(64)] {
            assert_eq!(resets.redeem(bad).await, Err(AuthError::InvalidResetToken), "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_token_expires_after_30_minutes() {
        let dir = tempfile::tempdir().unwrap();
        let (store, resets, user) = setup(&dir).await;
        assert!(resets.request(&user).await.unwrap());
        let token = mailed_token(&store).await;
        tokio::time::advance(RESET_TTL).await;
        assert_eq!(resets.redeem(&token).await, Err(AuthError::InvalidResetToken));
        // A new one is issued (the minute has passed), and works.
        assert!(resets.request(&user).await.unwrap());
        let fresh = mailed_token(&store).await;
        tokio::time::advance(RESET_TTL - Duration::from_secs(1)).await;
        assert_eq!(resets.redeem(&fresh).await.unwrap(), user.user_id);
        // Swept: the first (expired) token and the time of the last request.
        assert_eq!(resets.sweep().await.unwrap(), 2);
        assert!(store.scan(Table::PasswordResets, b"", None, 10).await.unwrap().is_empty());
    }
}
