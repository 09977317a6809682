//! Refresh tokens: opaque, single use, rotated on every refresh, kept durably in the store.
//!
//! A token is `{id}.{secret}`; the store keeps only a SHA-256 of the secret. Each login starts a
//! family; each refresh spends its token (by compare-and-swap, so two concurrent refreshes cannot
//! both succeed) and issues the next one in the same family. Presenting a spent token means it
//! leaked: the whole family is revoked, including the token the thief or the user got next.
//! A password change, a reset or a logout everywhere revokes every family of the user at once: a
//! marker keeps when, and a family that started no later is revoked.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use storefront_actors::Clock;
use storefront_storage::{Store, Table};

use super::{AuthError, random_hex, sha256_hex};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    user_id: String,
    family: String,
    secret_sha256: String,
    expires_at_ms: u64,
    spent: bool,
    /// When the family's first token was issued. (Records from before it was kept read as 0: a
    /// revocation of all of the user's families covers them.)
    #[serde(default)]
    family_started_ms: u64,
}

/// The outcome of a successful refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// Whose token it was.
    pub user_id: String,
    /// The next refresh token of the family.
    pub token: String,
}

/// Issues, rotates and revokes refresh tokens.
#[derive(Debug, Clone)]
pub struct RefreshTokens {
    store: Arc<dyn Store>,
    ttl: Duration,
    clock: Clock,
}

fn token_key(id: &str) -> Vec<u8> {
    format!("token/{id}").into_bytes()
}

fn family_key(family: &str) -> Vec<u8> {
    format!("family/{family}").into_bytes()
}

/// Where the time of the last revocation of all of a user's families is kept.
fn user_key(user_id: &str) -> Vec<u8> {
    format!("user/{user_id}").into_bytes()
}

fn backend(err: impl std::fmt::Display) -> AuthError {
    AuthError::Backend(err.to_string())
}

impl RefreshTokens {
    /// Refresh tokens in `store`, each valid for `ttl` unless spent or revoked first.
    pub fn new(store: Arc<dyn Store>, ttl: Duration, clock: Clock) -> Self {
        Self { store, ttl, clock }
    }

    /// The first token of a new family for `user_id` (a login).
    pub async fn issue(&self, user_id: &str) -> Result<String, AuthError> {
        // A family starts after the user's last revocation, even within its millisecond.
        let started = match self.revoked_until(user_id).await? {
            Some(until) => self.clock.now_ms().max(until + 1),
            None => self.clock.now_ms(),
        };
        self.mint(user_id, &random_hex(16), started).await
    }

    /// Spends `token` and returns the next one of its family.
    pub async fn rotate(&self, token: &str) -> Result<Rotated, AuthError> {
        let (key, stored, record) = self.load(token).await?;
        if record.spent {
            self.revoke_family(&record.family).await?;
            return Err(AuthError::Reused);
        }
        if self.clock.now_ms() >= record.expires_at_ms {
            return Err(AuthError::Expired);
        }
        let spent =
            serde_json::to_vec(&Record { spent: true, ..record.clone() }).map_err(backend)?;
        let swapped = self
            .store
            .compare_and_swap(Table::RefreshTokens, &key, Some(&stored), Some(&spent))
            .await
            .map_err(backend)?;
        if !swapped {
            // Spent by a concurrent refresh: the same token was used twice.
            self.revoke_family(&record.family).await?;
            return Err(AuthError::Reused);
        }
        let token = self.mint(&record.user_id, &record.family, record.family_started_ms).await?;
        Ok(Rotated { user_id: record.user_id, token })
    }

    /// Revokes the family of `token` (a logout).
    pub async fn revoke(&self, token: &str) -> Result<(), AuthError> {
        match self.load(token).await {
            Ok((_, _, record)) => self.revoke_family(&record.family).await,
            // Logging out with a token of a revoked family changes nothing.
            Err(AuthError::Revoked) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Revokes every family of `user_id` started until now (a password change or reset, a
    /// logout everywhere): their tokens stop working; a login afterwards starts a new family.
    pub async fn revoke_user(&self, user_id: &str) -> Result<(), AuthError> {
        let now = self.clock.now_ms().to_string();
        self.store
            .put(Table::RefreshTokens, &user_key(user_id), now.as_bytes())
            .await
            .map_err(backend)
    }

    /// The token's record, checked: known, secret matching, family not revoked.
    async fn load(&self, token: &str) -> Result<(Vec<u8>, Vec<u8>, Record), AuthError> {
        let invalid = || AuthError::InvalidToken("unknown refresh token".into());
        let (id, secret) = token.split_once('.').ok_or_else(invalid)?;
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        let key = token_key(id);
        let stored = self
            .store
            .get(Table::RefreshTokens, &key)
            .await
            .map_err(backend)?
            .ok_or_else(invalid)?;
        let record: Record = serde_json::from_slice(&stored).map_err(backend)?;
        if record.secret_sha256 != sha256_hex(secret) {
            return Err(invalid());
        }
        if self
            .store
            .get(Table::RefreshTokens, &family_key(&record.family))
            .await
            .map_err(backend)?
            .is_some()
        {
            return Err(AuthError::Revoked);
        }
        let revoked_until = self.revoked_until(&record.user_id).await?;
        if revoked_until.is_some_and(|until| record.family_started_ms <= until) {
            return Err(AuthError::Revoked);
        }
        Ok((key, stored, record))
    }

    /// When every family of `user_id` was last revoked, if ever.
    async fn revoked_until(&self, user_id: &str) -> Result<Option<u64>, AuthError> {
        let at = self.store.get(Table::RefreshTokens, &user_key(user_id)).await.map_err(backend)?;
        Ok(at.and_then(|at| String::from_utf8_lossy(&at).parse().ok()))
    }

    async fn revoke_family(&self, family: &str) -> Result<(), AuthError> {
        // The marker keeps when: it may go once every token of the family has expired.
        let now = self.clock.now_ms().to_string();
        self.store
            .put(Table::RefreshTokens, &family_key(family), now.as_bytes())
            .await
            .map_err(backend)
    }

    /// Deletes what can no longer matter: tokens past their expiry (spent or not), and a
    /// revocation marker (of a family or of all of a user's) once every token it covers has
    /// expired, a refresh TTL after it was made. Returns how many records it deleted.
    pub async fn sweep(&self) -> Result<usize, AuthError> {
        let now = self.clock.now_ms();
        let ttl = self.ttl.as_millis() as u64;
        storefront_storage::sweep(&*self.store, Table::RefreshTokens, |key, value| {
            if key.starts_with(b"token/") {
                serde_json::from_slice::<Record>(value).is_ok_and(|r| r.expires_at_ms <= now)
            } else {
                // A marker from before markers kept their time reads as no time: it stays.
                String::from_utf8_lossy(value)
                    .parse::<u64>()
                    .is_ok_and(|at| at.saturating_add(ttl) <= now)
            }
        })
        .await
        .map_err(backend)
    }

    async fn mint(
        &self,
        user_id: &str,
        family: &str,
        family_started_ms: u64,
    ) -> Result<String, AuthError> {
        let (id, secret) = (random_hex(16), random_hex(32));
        let record = Record {
            user_id: user_id.to_owned(),
            family: family.to_owned(),
            secret_sha256: sha256_hex(&secret),
            expires_at_ms: self.clock.now_ms().saturating_add(self.ttl.as_millis() as u64),
            spent: false,
            family_started_ms,
        };
        let value = serde_json::to_vec(&record).map_err(backend)?;
        self.store.put(Table::RefreshTokens, &token_key(&id), &value).await.map_err(backend)?;
        Ok(format!("{id}.{secret}"))
    }
}

#[cfg(test)]
mod tests {
    use storefront_storage::embedded::EmbeddedStore;

    use super::*;

    async fn refresh_tokens(dir: &tempfile::TempDir, ttl: Duration) -> RefreshTokens {
        let store = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
        RefreshTokens::new(store, ttl, Clock::system())
    }

    #[tokio::test]
    async fn rotation_spends_each_token_once_and_reuse_revokes_the_family() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = refresh_tokens(&dir, Duration::from_secs(3600)).await;
        let first = tokens.issue("u1").await.unwrap();
        let second = tokens.rotate(&first).await.unwrap();
        assert_eq!(second.user_id, "u1");
        let third = tokens.rotate(&second.token).await.unwrap();
        // The first token again: reuse. The whole family dies, the newest token included.
        assert_eq!(tokens.rotate(&first).await, Err(AuthError::Reused));
        assert_eq!(tokens.rotate(&third.token).await, Err(AuthError::Revoked));
        // Another family is untouched.
        let other = tokens.issue("u1").await.unwrap();
        assert!(tokens.rotate(&other).await.is_ok());
    }

    #[tokio::test]
    async fn concurrent_refreshes_of_one_token_cannot_both_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = refresh_tokens(&dir, Duration::from_secs(3600)).await;
        let token = tokens.issue("u1").await.unwrap();
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let (tokens, token) = (tokens.clone(), token.clone());
                tokio::spawn(async move { tokens.rotate(&token).await })
            })
            .collect();
        let mut won = 0;
        for racer in racers {
            if racer.await.unwrap().is_ok() {
                won += 1;
            }
        }
        // The first to spend it wins; every other sees it spent (and revokes the family, which
        // does not undo the winner's answer).
        assert_eq!(won, 1, "{won} refreshes of one token succeeded");
    }

    #[tokio::test]
    async fn logout_revokes_and_bad_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = refresh_tokens(&dir, Duration::from_secs(3600)).await;
        let token = tokens.issue("u1").await.unwrap();
        let next = tokens.rotate(&token).await.unwrap().token;
        tokens.revoke(&next).await.unwrap();
        assert_eq!(tokens.rotate(&next).await, Err(AuthError::Revoked));
        tokens.revoke(&next).await.unwrap();
        let (id, _) = next.split_once('.').unwrap();
        let wrong_secret = format!("{id}.{}", "0".repeat(64));
        for bad in ["", "nodot", "zz.zz", wrong_secret.as_str(), &"a".repeat(5000)] {
            assert!(
                matches!(tokens.rotate(bad).await, Err(AuthError::InvalidToken(_))),
                "{bad:.20}"
            );
        }
    }

    #[tokio::test]
    async fn revoking_a_user_ends_every_family_it_had_and_no_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = refresh_tokens(&dir, Duration::from_secs(3600)).await;
        let phone = tokens.issue("u1").await.unwrap();
        let laptop = tokens.rotate(&tokens.issue("u1").await.unwrap()).await.unwrap().token;
        let someone_else = tokens.issue("u2").await.unwrap();
        tokens.revoke_user("u1").await.unwrap();
        assert_eq!(tokens.rotate(&phone).await, Err(AuthError::Revoked));
        assert_eq!(tokens.rotate(&laptop).await, Err(AuthError::Revoked));
        assert!(tokens.rotate(&someone_else).await.is_ok());
        // A login right after (within the same millisecond, too) starts a family that works.
        let fresh = tokens.issue("u1").await.unwrap();
        let next = tokens.rotate(&fresh).await.unwrap().token;
        assert!(tokens.rotate(&next).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn spent_and_expired_tokens_and_old_markers_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = refresh_tokens(&dir, Duration::from_secs(3600)).await;
        let spent = tokens.issue("u1").await.unwrap();
        let live = tokens.rotate(&spent).await.unwrap().token;
        let doomed = tokens.issue("u2").await.unwrap();
        tokens.revoke(&doomed).await.unwrap();
        tokens.revoke_user("u3").await.unwrap();
        assert_eq!(tokens.sweep().await.unwrap(), 0, "nothing has expired yet");
        tokio::time::advance(Duration::from_secs(1800)).await;
        let fresh = tokens.issue("u1").await.unwrap();
        tokio::time::advance(Duration::from_secs(1801)).await;
        // Gone: the three first tokens, the family marker and the user marker.
        assert_eq!(tokens.sweep().await.unwrap(), 5);
        let left = tokens.store.scan(Table::RefreshTokens, b"", None, 100).await.unwrap();
        assert_eq!(left.len(), 1, "only the fresh token is left");
        assert!(tokens.rotate(&fresh).await.is_ok());
        assert!(tokens.rotate(&live).await.is_err());
    }

    #[tokio::test]
    async fn expired_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = refresh_tokens(&dir, Duration::ZERO).await;
        let token = tokens.issue("u1").await.unwrap();
        assert_eq!(tokens.rotate(&token).await, Err(AuthError::Expired));
    }

    #[tokio::test]
    async fn tokens_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let token =
            refresh_tokens(&dir, Duration::from_secs(3600)).await.issue("u1").await.unwrap();
        let reopened = refresh_tokens(&dir, Duration::from_secs(3600)).await;
        assert_eq!(reopened.rotate(&token).await.unwrap().user_id, "u1");
    }
}
