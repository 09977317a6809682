//! Password hashing with Argon2id, OWASP's minimum: 19 MiB of memory, 2 passes, 1 lane.
//!
//! Hashing costs tens of milliseconds of CPU on purpose, so it runs on tokio's blocking pool.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use super::AuthError;

/// Shortest accepted password, in characters.
pub const MIN_LEN: usize = 10;
/// Longest accepted password, in bytes (bounds the hashing input).
pub const MAX_LEN: usize = 1024;

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
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        argon2()?
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| AuthError::Backend(e.to_string()))
    })
    .await
    .map_err(|e| AuthError::Backend(e.to_string()))?
}

/// Whether `password` matches the PHC string `stored`.
pub async fn verify_password(password: String, stored: String) -> Result<bool, AuthError> {
    tokio::task::spawn_blocking(move || {
        let hash = PasswordHash::new(&stored).map_err(|e| AuthError::Backend(e.to_string()))?;
        Ok(argon2()?.verify_password(password.as_bytes(), &hash).is_ok())
    })
    .await
    .map_err(|e| AuthError::Backend(e.to_string()))?
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

    #[test]
    fn rules() {
        assert!(validate_password("123456789").is_err());
        assert!(validate_password("1234567890").is_ok());
        assert!(validate_password("ééééééééééé").is_ok(), "characters, not bytes");
        assert!(validate_password(&"x".repeat(MAX_LEN + 1)).is_err());
    }
}
