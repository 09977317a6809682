//! Password hashing with Argon2id, OWASP's minimum: 19 MiB of memory, 2 passes, 1 lane.
//!
//! Hashing costs tens of milliseconds of CPU on purpose, so it runs on tokio's blocking pool, at
//! most one hash per core at a time: 512 logins at once would otherwise take 512 blocking threads
//! and about 10 GiB. The bound is process-wide (a static), as the memory and cores it guards are:
//! whoever hashes waits for a turn.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use super::AuthError;

/// Shortest accepted password, in characters.
pub const MIN_LEN: usize = 10;
/// Longest accepted password, in bytes (bounds the hashing input).
pub const MAX_LEN: usize = 1024;

/// Turns to hash: one per core.
fn turns() -> &'static Semaphore {
    static TURNS: OnceLock<Semaphore> = OnceLock::new();
    TURNS.get_or_init(|| {
        Semaphore::new(std::thread::available_parallelism().map_or(2, std::num::NonZero::get))
    })
}

/// Hashes running now, and the most ever at once (for the test of the bound).
static RUNNING: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Runs `hash` on the blocking pool when a turn is free.
async fn hashing<T: Send + 'static>(
    hash: impl FnOnce() -> Result<T, AuthError> + Send + 'static,
) -> Result<T, AuthError> {
    // The semaphore is never closed.
    let _turn = turns().acquire().await.map_err(|e| AuthError::Backend(e.to_string()))?;
    tokio::task::spawn_blocking(move || {
        let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
        PEAK.fetch_max(now, Ordering::SeqCst);
        let result = hash();
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        result
    })
    .await
    .map_err(|e| AuthError::Backend(e.to_string()))?
}

fn argon2() -> Result<Argon2<'static>, AuthError> {
    let params =
        Params::new(19 * 1024, 2, 1, None).map_err(|e| AuthError::Backend(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Checks the password rules: at least [`MIN_LEN`] characters, at most [`MAX_LEN`] bytes.
pub fn validate_password(password: &str) -> Result<(), AuthError> {
    if password.chars().count() < MIN_LEN {
        return Err(AuthError::WeakPassword(format!("at least {MIN_LEN} characters")));
    }
    if password.len() > MAX_LEN {
        return Err(AuthError::WeakPassword(format!("at most {MAX_LEN} bytes")));
    }
    Ok(())
}

/// Hashes a password into a PHC string (algorithm, parameters, salt and hash).
pub async fn hash_password(password: String) -> Result<String, AuthError> {
    hashing(move || {
        let salt = SaltString::generate(&mut OsRng);
        argon2()?
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| AuthError::Backend(e.to_string()))
    })
    .await
}

/// Whether `password` matches the PHC string `stored`.
pub async fn verify_password(password: String, stored: String) -> Result<bool, AuthError> {
    hashing(move || {
        let hash = PasswordHash::new(&stored).map_err(|e| AuthError::Backend(e.to_string()))?;
        Ok(argon2()?.verify_password(password.as_bytes(), &hash).is_ok())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_with_argon2id_at_owasp_parameters_and_verifies() {
        let hash = hash_password("correct horse battery".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(verify_password("correct horse battery".into(), hash.clone()).await.unwrap());
        assert!(!verify_password("correct horse batterY".into(), hash.clone()).await.unwrap());
        let again = hash_password("correct horse battery".into()).await.unwrap();
        assert_ne!(hash, again, "every hash has its own salt");
        assert!(verify_password("x".into(), "not a phc string".into()).await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_one_hash_per_core_runs_at_once() {
        let hash = hash_password("correct horse battery".into()).await.unwrap();
        let logins: Vec<_> = (0..64)
            .map(|_| tokio::spawn(verify_password("correct horse battery".into(), hash.clone())))
            .collect();
        for login in logins {
            assert!(login.await.unwrap().unwrap());
        }
        let cores = std::thread::available_parallelism().unwrap().get();
        let peak = PEAK.load(Ordering::SeqCst);
        assert!((1..=cores).contains(&peak), "{peak} hashes ran at once on {cores} cores");
    }

    #[test]
    fn rules() {
        assert!(validate_password("123456789").is_err());
        assert!(validate_password("1234567890").is_ok());
        assert!(validate_password("ééééééééééé").is_ok(), "characters, not bytes");
        assert!(validate_password(&"x".repeat(MAX_LEN + 1)).is_err());
    }
}
