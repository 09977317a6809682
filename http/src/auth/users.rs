//! Users: plain stored records (read-mostly, not actors), unique by normalized email.
//!
//! Registration writes the user record, then claims the email by compare-and-swap: of two
//! concurrent registrations of one email exactly one wins, and a crash between the two writes
//! leaves only an unreachable record, never a claimed email without a user.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use storefront_events::event::UserRegistered;
use storefront_events::{CloudEvent, EventData};
use storefront_storage::{AppendRequest, KeyedWrite, Store, Table};

use super::passwords::{hash_password, validate_password, verify_password};
use super::{AuthError, Role};

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Stable id.
    pub user_id: String,
    /// Normalized (lower-case) email.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// Roles.
    pub roles: Vec<Role>,
    password_hash: String,
}

/// The user directory.
#[derive(Debug, Clone)]
pub struct Users {
    store: Arc<dyn Store>,
}

/// Normalizes and checks an email address: 3 to 254 bytes, one `@` between a non-empty local part
/// and a domain with a dot, no spaces or control characters.
pub fn normalize_email(email: &str) -> Result<String, AuthError> {
    let email = email.trim().to_lowercase();
    let valid = (3..=254).contains(&email.len())
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        };
    if valid { Ok(email) } else { Err(AuthError::InvalidEmail) }
}

fn backend(err: impl std::fmt::Display) -> AuthError {
    AuthError::Backend(err.to_string())
}

/// Verified against when the email is unknown, so both answers take as long.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2gJ3HV5ASV2cyQrYvb7ZzUc2dO0mYWqBXMVT6y+Yl0U";

impl Users {
    /// The directory in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Registers a customer; fails with [`AuthError::EmailTaken`] if the email is in use.
    pub async fn register(
        &self,
        email: &str,
        password: &str,
        name: Option<&str>,
    ) -> Result<User, AuthError> {
        self.create(email, password, name, vec![Role::Customer]).await
    }

    /// Creates customer accounts that share one password, hashed once: the fast way to set up
    /// many accounts at a time (load tests, imports). Each account is created as registration
    /// creates it; the answer for each email is its user or why it was not created.
    pub async fn provision(
        &self,
        accounts: Vec<(String, Option<String>)>,
        password: &str,
    ) -> Result<Vec<Result<User, AuthError>>, AuthError> {
        validate_password(password)?;
        let password_hash = hash_password(password.to_owned()).await?;
        let creations = accounts.into_iter().map(|(email, name)| {
            let password_hash = password_hash.clone();
            async move {
                let user = User {
                    user_id: uuid::Uuid::now_v7().to_string(),
                    email: normalize_email(&email)?,
                    name,
                    roles: vec![Role::Customer],
                    password_hash,
                };
                self.claim(user).await
            }
        });
        Ok(futures::future::join_all(creations).await)
    }

    async fn create(
        &self,
        email: &str,
        password: &str,
        name: Option<&str>,
        roles: Vec<Role>,
    ) -> Result<User, AuthError> {
        let email = normalize_email(email)?;
        validate_password(password)?;
        let user = User {
            user_id: uuid::Uuid::now_v7().to_string(),
            email: email.clone(),
            name: name.map(str::to_owned),
            roles,
            password_hash: hash_password(password.to_owned()).await?,
        };
        self.claim(user).await
    }

    /// Claims `user`'s email, then creates the account: its record and its `user.registered`
    /// event in one append (stream `user/<id>`), so an account exists exactly when its event
    /// does. A claim whose account was never written (a crash between the two: its account is
    /// still missing a minute after its id was made) is taken over.
    async fn claim(&self, user: User) -> Result<User, AuthError> {
        let email = user.email.as_bytes();
        let id = user.user_id.as_bytes();
        let claimed = match self.store.get(Table::UserEmails, email).await.map_err(backend)? {
            None => self.store.compare_and_swap(Table::UserEmails, email, None, Some(id)).await,
            Some(owner) if self.abandoned(&String::from_utf8_lossy(&owner)).await? => {
                self.store.compare_and_swap(Table::UserEmails, email, Some(&owner), Some(id)).await
            }
            Some(_) => Ok(false),
        }
        .map_err(backend)?;
        if !claimed {
            return Err(AuthError::EmailTaken);
        }
        let registered = CloudEvent::new(
            now_ms(),
            EventData::UserRegistered(UserRegistered {
                user_id: user.user_id.clone(),
                email: user.email.clone(),
                name: user.name.clone(),
            }),
        );
        let value = serde_json::to_vec(&user).map_err(backend)?;
        self.store
            .append(AppendRequest {
                stream: format!("user/{}", user.user_id),
                expected_seq: 0,
                events: vec![br#"{"registered":true}"#.to_vec()],
                outbox: vec![registered.into_outbox().map_err(backend)?],
                puts: vec![KeyedWrite {
                    table: Table::Users,
                    key: id.to_vec(),
                    value: Some(value),
                }],
                fence: None,
            })
            .await
            .map_err(backend)?;
        Ok(user)
    }

    /// Whether the email claim of `owner` was left by a registration that never wrote its
    /// account: none exists, and its id (a UUIDv7, so it tells when it was made) is over a minute
    /// old, far longer than a registration takes.
    async fn abandoned(&self, owner: &str) -> Result<bool, AuthError> {
        let made_ms = uuid::Uuid::parse_str(owner)
            .ok()
            .and_then(|id| id.get_timestamp())
            .map(|t| t.to_unix())
            .map(|(secs, nanos)| secs * 1000 + u64::from(nanos / 1_000_000));
        let old = made_ms.is_some_and(|made| now_ms().saturating_sub(made) > 60_000);
        Ok(old && self.get(owner).await?.is_none())
    }

    /// The user with these credentials; the same error for an unknown email and a wrong password.
    pub async fn authenticate(&self, email: &str, password: &str) -> Result<User, AuthError> {
        let user = match normalize_email(email) {
            Ok(email) => self.by_email(&email).await?,
            Err(_) => None,
        };
        let stored = user.as_ref().map_or(DUMMY_HASH, |u| u.password_hash.as_str()).to_owned();
        let matches = verify_password(password.to_owned(), stored).await?;
        match user {
            Some(user) if matches => Ok(user),
            _ => Err(AuthError::InvalidCredentials),
        }
    }

    /// A user by id.
    pub async fn get(&self, user_id: &str) -> Result<Option<User>, AuthError> {
        match self.store.get(Table::Users, user_id.as_bytes()).await.map_err(backend)? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(backend)?)),
            None => Ok(None),
        }
    }

    /// Makes sure `email` is an admin: creates the account with `password` if there is none,
    /// and keeps an admin account made so before (and its password). An account someone
    /// registered is never made an admin ([`AuthError::EmailTaken`]): whoever registered the
    /// address first would otherwise log in as admin with their own password.
    pub async fn ensure_admin(&self, email: &str, password: &str) -> Result<User, AuthError> {
        let normalized = normalize_email(email)?;
        // A registration in flight (its email claimed, its account not yet written) is waited
        // for, up to 5 s.
        for _ in 0..100 {
            match self.by_email(&normalized).await? {
                Some(user) if user.roles.contains(&Role::Admin) => return Ok(user),
                Some(_) => return Err(AuthError::EmailTaken),
                None => {}
            }
            match self.create(email, password, None, vec![Role::Customer, Role::Admin]).await {
                // Claimed meanwhile: by another node's admin set-up, or by a registration.
                Err(AuthError::EmailTaken) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
        Err(AuthError::EmailTaken)
    }

    /// The account of `email` (in any case), if there is one.
    pub async fn find(&self, email: &str) -> Result<Option<User>, AuthError> {
        self.by_email(&normalize_email(email)?).await
    }

    /// `user_id`'s account, if `password` is its password ([`AuthError::WrongPassword`] if not).
    pub async fn check_password(&self, user_id: &str, password: &str) -> Result<User, AuthError> {
        let user = self.get(user_id).await?.ok_or(AuthError::WrongPassword)?;
        if verify_password(password.to_owned(), user.password_hash.clone()).await? {
            Ok(user)
        } else {
            Err(AuthError::WrongPassword)
        }
    }

    /// Sets the password of `user_id` (a change or a reset). The record is replaced by
    /// compare-and-swap, so a concurrent change of another field is not lost.
    pub async fn set_password(&self, user_id: &str, password: &str) -> Result<(), AuthError> {
        validate_password(password)?;
        let password_hash = hash_password(password.to_owned()).await?;
        let key = user_id.as_bytes();
        for _ in 0..10 {
            let stored =
                self.store.get(Table::Users, key).await.map_err(backend)?.ok_or_else(|| {
                    AuthError::InvalidToken("the token's user no longer exists".into())
                })?;
            let mut user: User = serde_json::from_slice(&stored).map_err(backend)?;
            user.password_hash.clone_from(&password_hash);
            let value = serde_json::to_vec(&user).map_err(backend)?;
            let swapped = self
                .store
                .compare_and_swap(Table::Users, key, Some(&stored), Some(&value))
                .await
                .map_err(backend)?;
            if swapped {
                return Ok(());
            }
        }
        Err(backend("the account changed under ten attempts to set its password"))
    }

    async fn by_email(&self, email: &str) -> Result<Option<User>, AuthError> {
        match self.store.get(Table::UserEmails, email.as_bytes()).await.map_err(backend)? {
            Some(id) => self.get(&String::from_utf8_lossy(&id)).await,
            None => Ok(None),
        }
    }
}

/// Milliseconds since the Unix epoch, by this machine's clock.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use storefront_storage::embedded::EmbeddedStore;

    use super::*;

    async fn users(dir: &tempfile::TempDir) -> Users {
        Users::new(Arc::new(EmbeddedStore::open(dir.path()).await.unwrap()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_registration_writes_its_account_and_user_registered_together_once() {
        let dir = tempfile::tempdir().unwrap();
        let users = users(&dir).await;
        let ann = users.register("Ann@Example.com", "long enough pw", Some("Ann")).await.unwrap();
        assert_eq!(
            users.register("ann@example.com", "long enough pw", None).await.map(|_| ()),
            Err(AuthError::EmailTaken)
        );
        let outbox = users.store.read_outbox(0, 10).await.unwrap();
        assert_eq!(outbox.len(), 1, "a refused registration emits nothing");
        let event = CloudEvent::parse(&outbox[0].record.payload).unwrap();
        assert_eq!(
            event.data,
            EventData::UserRegistered(UserRegistered {
                user_id: ann.user_id.clone(),
                email: "ann@example.com".into(),
                name: Some("Ann".into()),
            })
        );
        assert_eq!(users.get(&ann.user_id).await.unwrap(), Some(ann));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_email_claim_whose_account_was_never_written_is_taken_over_once_stale() {
        let dir = tempfile::tempdir().unwrap();
        let users = users(&dir).await;
        // A registration that crashed between its claim and its account, two minutes ago.
        let made = uuid::Timestamp::from_unix(uuid::NoContext, now_ms() / 1000 - 120, 0);
        let stale = uuid::Uuid::new_v7(made).to_string();
        users.store.put(Table::UserEmails, b"cid@example.com", stale.as_bytes()).await.unwrap();
        // A fresh one (a registration still running) is not taken.
        let fresh = uuid::Uuid::now_v7().to_string();
        users.store.put(Table::UserEmails, b"dee@example.com", fresh.as_bytes()).await.unwrap();
        assert!(users.register("cid@example.com", "long enough pw", None).await.is_ok());
        assert_eq!(
            users.register("dee@example.com", "long enough pw", None).await.map(|_| ()),
            Err(AuthError::EmailTaken)
        );
    }

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(normalize_email("  Ann@Example.COM ").unwrap(), "ann@example.com");
        for bad in
            ["", "ann", "ann@", "@example.com", "ann@example", "a b@c.d", "a@b@c.d", "ann@.com"]
        {
            assert_eq!(normalize_email(bad), Err(AuthError::InvalidEmail), "{bad}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn register_login_and_uniqueness() {
        let dir = tempfile::tempdir().unwrap();
        let users = users(&dir).await;
        let ann = users.register("Ann@Example.com", "long enough pw", Some("Ann")).await.unwrap();
        assert_eq!(ann.roles, [Role::Customer]);
        assert_eq!(
            users.register("ann@example.com", "another long pw", None).await,
            Err(AuthError::EmailTaken)
        );
        assert!(matches!(
            users.register("bob@example.com", "short", None).await,
            Err(AuthError::WeakPassword(_))
        ));
        assert_eq!(users.authenticate("ANN@example.com", "long enough pw").await.unwrap(), ann);
        assert_eq!(
            users.authenticate("ann@example.com", "wrong password").await,
            Err(AuthError::InvalidCredentials)
        );
        assert_eq!(
            users.authenticate("nobody@example.com", "long enough pw").await,
            Err(AuthError::InvalidCredentials)
        );
        assert_eq!(users.get(&ann.user_id).await.unwrap(), Some(ann));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_registrations_of_one_email_have_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let users = users(&dir).await;
        let racers: Vec<_> = (0..4)
            .map(|i| {
                let users = users.clone();
                tokio::spawn(async move {
                    users.register("race@example.com", &format!("password-{i}-xyz"), None).await
                })
            })
            .collect();
        let mut winners = Vec::new();
        for racer in racers {
            match racer.await.unwrap() {
                Ok(user) => winners.push(user),
                Err(err) => assert_eq!(err, AuthError::EmailTaken),
            }
        }
        assert_eq!(winners.len(), 1);
        let login = users.by_email("race@example.com").await.unwrap().unwrap();
        assert_eq!(login.user_id, winners[0].user_id);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn provisioned_accounts_log_in_with_the_shared_password() {
        let dir = tempfile::tempdir().unwrap();
        let users = users(&dir).await;
        users.register("taken@example.com", "somebody's password", None).await.unwrap();
        let accounts = ["a1@example.com", "Taken@example.com", "a2@example.com", "not an email"]
            .map(|email| (email.to_owned(), None))
            .to_vec();
        let created = users.provision(accounts, "shared password").await.unwrap();
        assert_eq!(created[1], Err(AuthError::EmailTaken));
        assert_eq!(created[3], Err(AuthError::InvalidEmail));
        for (i, email) in [(0, "a1@example.com"), (2, "a2@example.com")] {
            let user = created[i].clone().unwrap();
            assert_eq!(user.roles, [Role::Customer]);
            assert_eq!(users.authenticate(email, "shared password").await.unwrap(), user);
        }
        assert!(users.authenticate("taken@example.com", "somebody's password").await.is_ok());
        assert!(matches!(
            users.provision(vec![("b@example.com".into(), None)], "short").await,
            Err(AuthError::WeakPassword(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_admin_is_created_or_kept() {
        let dir = tempfile::tempdir().unwrap();
        let users = users(&dir).await;
        let admin = users.ensure_admin("root@example.com", "admin password 1").await.unwrap();
        assert!(admin.roles.contains(&Role::Admin));
        // Kept at the next start, password unchanged even if the configured one changed.
        let again = users.ensure_admin("root@example.com", "admin password 2").await.unwrap();
        assert_eq!(again.user_id, admin.user_id);
        assert!(users.authenticate("root@example.com", "admin password 1").await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_address_someone_registered_is_never_made_an_admin() {
        let dir = tempfile::tempdir().unwrap();
        let users = users(&dir).await;
        // Someone registers the address before an operator configures it as the admin's.
        let mallory = users.register("ops@example.com", "mallory's password", None).await.unwrap();
        assert_eq!(
            users.ensure_admin("ops@example.com", "the operator's password").await.map(|_| ()),
            Err(AuthError::EmailTaken)
        );
        let kept = users.get(&mallory.user_id).await.unwrap().unwrap();
        assert_eq!(kept.roles, [Role::Customer], "not promoted");
        let login = users.authenticate("ops@example.com", "mallory's password").await.unwrap();
        assert!(!login.roles.contains(&Role::Admin));
    }
}
